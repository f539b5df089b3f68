"""`--backend onnxruntime` and the int8 path: onnxruntime fp32 reads what torch reads (eval and predict), the
int8 export reports numbers that eval reproduces, every backend's evaluation has a key of its own, and bad
input (a missing extra, a bad --calibration, no int8 file) is one line, exit 2."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys

import pytest
import torch
import yaml
from conftest import tiny_experiment
from data_fixtures import make_folder

from cvlab.config import Experiment
from cvlab.engine.eval.records import history, latest
from cvlab.models import build_model

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A run as training leaves it (config.yaml, checkpoints/best.pt), untrained, 10 val images; predictions of
    6-13 characters, a different one for each image (the smallest gap between a frame's best two classes is
    0.0026, far above float rounding)."""
    exp = tiny_experiment()
    exp["data"]["val"][0]["size"] = 10
    exp["model"]["backbone"].update(width=0.25)
    exp["model"]["sequence"] = {"name": "none"}  # untrained, a BiLSTM reads every image alike (the same letter)
    cfg = Experiment.model_validate(exp)
    torch.manual_seed(0)
    model = build_model(cfg.model, 37).model
    with torch.no_grad():  # no blank, clear winners: each image reads as a different string, no near ties
        model.head.fc.weight.mul_(20)
        model.head.fc.bias.zero_()
        model.head.fc.bias[0] = -20.0
    run = tmp_path_factory.mktemp("backends") / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    torch.save({"model": model.state_dict(), "step": 3}, run / "checkpoints" / "best.pt")
    return run


@pytest.fixture
def run(base_run, tmp_path):
    """A fresh copy: no eval history, no export."""
    return shutil.copytree(base_run, tmp_path / "run")


def _predictions(folder, ev) -> list[dict]:
    rows = []
    for r in ev["datasets"].values():
        with open(folder / r["predictions"], encoding="utf-8") as f:
            rows += list(csv.DictReader(f))
    return rows


def test_onnxruntime_eval_reads_what_torch_reads(run, cli):
    code, _, err = cli("eval", run)
    assert code == 0, err
    torch_ev, torch_dir = latest(run)
    code, out, err = cli("eval", run, "--backend", "onnxruntime")
    assert code == 0, err
    # exported first, saying so in one line; the same predictions, counted against the recorded torch evaluation
    assert err.count("exporting ") == 1 and "(missing)" in err and (run / "export" / "best.onnx").is_file()
    assert "val: 0 of 10 predictions differ from the torch evaluation eval/" in err  # notes: stderr into a pipe
    ort_ev, ort_dir = latest(run)
    assert ort_ev["backend"] == {"name": "onnxruntime", "precision": "fp32", "exact": True,
                                 "model": str(run / "export" / "best.onnx"), "threads": torch.get_num_threads()}
    assert torch_ev["backend"]["name"] == "torch" and ort_dir.parent != torch_dir.parent
    assert "+onnxruntime-fp32_" in ort_dir.parent.name and "onnxruntime" not in torch_dir.parent.name
    a, b = _predictions(torch_dir, torch_ev), _predictions(ort_dir, ort_ev)
    assert [r["prediction"] for r in a] == [r["prediction"] for r in b] and len(a) == 10
    assert all(r["prediction"] for r in a) and len({r["prediction"] for r in a}) > 5  # real readings, not blanks
    assert [float(r["confidence"]) for r in a] == pytest.approx([float(r["confidence"]) for r in b], abs=1e-4)
    # fresh: not exported again; a checkpoint written after the export: exported again
    code, _, err = cli("eval", run, "--backend", "onnxruntime")
    assert code == 0 and "exporting" not in err
    ckpt = run / "checkpoints" / "best.pt"
    later = (run / "export" / "best.onnx").stat().st_mtime + 5
    os.utime(ckpt, (later, later))
    code, _, err = cli("eval", run, "--backend", "onnxruntime")
    assert code == 0 and "older than the checkpoint" in err, err


def test_check_runs_torch_beside_onnxruntime(run, cli):
    code, out, err = cli("eval", run, "--backend", "onnxruntime", "--check")
    assert code == 0, err
    assert "val: 0 of 10 predictions differ from torch fp32" in err
    ev, folder = latest(run)
    assert ev["datasets"]["val"]["check"]["differ"] == 0
    rows = _predictions(folder, ev)
    assert all(r["reference"] == r["prediction"] for r in rows)
    code, _, err = cli("eval", run, "--check")
    assert code == 2 and "--backend onnxruntime" in err


def test_predict_onnxruntime_matches_torch(run, cli, tmp_path):
    from cvlab.engine.predict import predict

    images = make_folder(tmp_path / "f")
    torch_rows = predict(run, [str(images)])
    ort_rows = predict(run, [str(images)], backend="onnxruntime", check=True)
    assert [r["text"] for r in ort_rows] == [r["text"] for r in torch_rows]
    assert all(r["torch_text"] == r["text"] for r in ort_rows if "error" not in r)
    code, out, err = cli("predict", run, images, "--backend", "onnxruntime", "--check", "--out", tmp_path / "p.csv")
    assert code == 0, err
    assert "onnxruntime: 0 of 3 predictions differ from torch" in err
    with open(tmp_path / "p.csv", encoding="utf-8") as f:
        got = list(csv.DictReader(f))
    assert [r["text"] for r in got] == [r["text"] for r in torch_rows] and "torch_text" in got[0]


def _reported(out: str) -> tuple[float, float, int, int]:
    acc = next(x for x in out.splitlines() if x.startswith("word accuracy on val"))
    changed = next(x for x in out.splitlines() if x.startswith("predictions changed by int8: "))
    fp32 = float(acc.split("fp32 ")[1].split(" %")[0])
    int8 = float(acc.split("int8 ")[1].split(" %")[0])
    n, total = changed.removeprefix("predictions changed by int8: ").split(" of ")
    return fp32, int8, int(n), int(total)


def test_int8_export_and_eval(run, cli):
    code, out, err = cli("eval", run, "--backend", "onnxruntime", "--int8")  # nothing quantized yet
    assert code == 2 and "--quantize int8" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli("export", run, "--quantize", "int8", "--calibration-n", "6")
    assert code == 0, err
    path = run / "export" / "best.int8.onnx"
    assert path.is_file() and path.stat().st_size < (run / "export" / "best.onnx").stat().st_size
    assert "static QDQ, calibrated on 6 images" in out
    fp32, int8, changed, total = _reported(out)
    assert total == 10 and 0 <= changed <= total
    meta = json.loads((run / "export" / "best.int8.onnx.json").read_text())
    assert meta["quantization"]["method"] == "static" and meta["checkpoint"]["step"] == 3
    # the int8 model computes nearly fp32's logits (a sane bound: a broken calibration gives noise)
    from cvlab.engine.backend import ort_forward, session

    x = torch.rand(4, 1, 32, 64, generator=torch.Generator().manual_seed(0))
    a, b = ort_forward(session(run / "export" / "best.onnx"))(x), ort_forward(session(path))(x)
    assert float((a - b).abs().max() / a.abs().max()) < 0.2
    # eval reproduces the reported numbers; it says int8 is not exact and counts the differences from torch
    assert cli("eval", run)[0] == 0
    code, out, err = cli("eval", run, "--backend", "onnxruntime", "--int8", "--format", "json")
    assert code == 0, err
    (row,) = [r for r in json.loads(out) if r["dataset"] == "val"]
    ev, folder = latest(run)
    assert ev["backend"]["precision"] == "int8" and not ev["backend"]["exact"]
    assert 100 * ev["datasets"]["val"]["word_acc"] == pytest.approx(int8, abs=0.006)
    assert ev["datasets"]["val"]["check"]["differ"] == changed  # vs the torch evaluation, as export counted
    assert "not exact" in err and f"val: {changed} of 10 predictions differ from the torch evaluation" in err
    assert row["samples"] == 10
    # torch, onnxruntime fp32 and int8: three keys, none overwriting another
    assert cli("eval", run, "--backend", "onnxruntime")[0] == 0
    keys = [h["key"] for h in history(run)]
    assert len(keys) == 3 and len(set(keys)) == 3
    assert [h.get("backend", {}).get("precision") for h in history(run)] == ["fp32", "int8", "fp32"]
    assert [h["backend"]["name"] for h in history(run)] == ["torch", "onnxruntime", "onnxruntime"]


def test_int8_dynamic_and_out(run, cli, tmp_path):
    code, out, err = cli("export", run, "--quantize", "int8", "--int8-method", "dynamic", "--out", tmp_path / "q.onnx")
    assert code == 0, err
    assert (tmp_path / "q.onnx").is_file() and "(int8, dynamic)" in out
    assert json.loads((tmp_path / "q.onnx.json").read_text())["quantization"]["calibration_images"] == 0


def _one_error_line(err: str) -> str:
    (line,) = [x for x in err.splitlines() if x.strip()]
    assert line.startswith("error:") and "Traceback" not in err
    return line


def test_bad_input_is_one_line_exit_2(run, cli, monkeypatch):
    for args, named in [
        (("export", run, "--quantize", "int8", "--calibration", "nosuchtype:somewhere"), "--calibration nosuchtype:somewhere"),
        (("export", run, "--quantize", "int8", "--calibration", f"folder:{run}/nothing"), f"{run}/nothing"),
        (("export", run, "--quantize", "int4"), "--quantize int4"),
        (("export", run, "--format", "torchscript", "--quantize", "int8"), "--format onnx"),
        (("export", run, "--calibration", "synth"), "--quantize int8"),
        (("export", run, "--quantize", "int8", "--int8-method", "fast"), "--int8-method fast"),
        (("eval", run, "--backend", "tensorrt"), "--backend tensorrt"),
        (("eval", run, "--int8"), "--backend onnxruntime"),
        (("eval", run, "--backend", "onnxruntime", "--no-fold-bn"), "torch backend"),
    ]:
        code, _, err = cli(*args)
        assert code == 2 and named in _one_error_line(err), (args, err)
    assert not (run / "export" / "best.int8.onnx").exists() and not (run / "eval").exists()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the export extra were not installed
    for args in (("eval", run, "--backend", "onnxruntime"), ("predict", run, run, "--backend", "onnxruntime"),
                 ("export", run, "--quantize", "int8")):
        code, _, err = cli(*args)
        assert code == 2 and "pip install 'cvlab[export]'" in _one_error_line(err), (args, err)


def test_read_ahead_keeps_order_and_raises_a_reading_error_at_its_batch():
    from cvlab.engine.eval.evaluate import read_ahead

    class Loader:
        num_workers = 0

        def __iter__(self):
            yield 1
            yield 2
            raise ValueError("batch 3 unreadable")

    got = []
    with pytest.raises(ValueError, match="batch 3"):
        for b in read_ahead(Loader()):
            got.append(b)
    assert got == [1, 2]
    assert list(read_ahead([[0], [1]])) == [[0], [1]]
