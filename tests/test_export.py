"""`cvlab export`: ONNX (run by onnxruntime) and TorchScript give the native logits at two widths, for every
backbone, every norm, TPS and both heads; `--verify` scores the val sets both ways."""

from __future__ import annotations

import sys

import pytest
import torch
import yaml
from conftest import tiny_experiment

from cvlab.config import Experiment
from cvlab.engine.export import ExportMismatch, check_widths, export_model, plain_model, runner
from cvlab.models import build_model
from cvlab.models.norms import NORMS

pytest.importorskip("onnxruntime")

H, WIDTHS = 32, (32, 48)
TINY = {"size": "tiny", "width": 0.25}
CASES = [  # (id, model section): every backbone with batch norm, every norm on VGG, TPS, the attention head
    *[(f"{b}-batch", {"backbone": {"name": b, **TINY}}) for b in ("alexnet", "vgg", "googlenet", "resnet")],
    *[(f"vgg-{n}", {"backbone": {"name": "vgg", **TINY}, "norm": {"name": n}}) for n in NORMS if n != "batch"],
    ("tps-vgg-attention", {"transform": "tps", "backbone": {"name": "vgg", **TINY},
                           "head": {"name": "attention", "hidden": 8, "max_length": 4}}),
]

# TorchScript records the same trace as ONNX: checked on VGG, weight norm (folded), TPS + attention
TORCHSCRIPT = [c for c in CASES if c[0] in ("vgg-batch", "vgg-weight", "tps-vgg-attention")]


def _model(section: dict) -> torch.nn.Module:
    cfg = Experiment.model_validate({"model": {"sequence": {"hidden": 8, "layers": 1}, **section}})
    torch.manual_seed(0)
    model = build_model(cfg.model, 12).model.eval()
    with torch.no_grad():  # running statistics that are not the identity, so they must be exported right
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                t.uniform_(-0.3, 0.3)
    return plain_model(model)


@pytest.mark.parametrize("section,fmt", [(c, "onnx") for c in CASES] + [(c, "torchscript") for c in TORCHSCRIPT],
                         ids=[f"{c[0]}-onnx" for c in CASES] + [f"{c[0]}-torchscript" for c in TORCHSCRIPT])
def test_export_matches_native_at_two_widths(tmp_path, section, fmt):
    section = section[1]
    model = _model(section)
    path = tmp_path / f"m.{fmt}"
    export_model(model, path, fmt, torch.rand(2, 1, H, WIDTHS[0]))
    diffs = check_widths(model, runner(path, fmt), channels=1, height=H, widths=WIDTHS, tolerance=1e-4)
    assert set(diffs) == set(WIDTHS) and max(diffs.values()) <= 1e-4


def test_a_frozen_width_is_caught():
    model = _model({"backbone": {"name": "vgg", **TINY}})
    frozen = lambda x: model(x[..., :WIDTHS[0]])  # noqa: E731  (what an exporter that fixed the width computes)
    with pytest.raises(ExportMismatch, match="at width 48 .*fixed a size"):
        check_widths(model, frozen, channels=1, height=H, widths=WIDTHS, tolerance=1e-4)


def _run(tmp_path) -> str:
    """A run directory as training leaves it: config.yaml and checkpoints/best.pt."""
    exp = tiny_experiment()
    exp["data"]["val"][0]["size"] = 4
    exp["model"]["backbone"].update(width=0.25)
    cfg = Experiment.model_validate(exp)
    torch.manual_seed(0)
    model = build_model(cfg.model, 37).model
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    torch.save({"model": model.state_dict(), "step": 3}, run / "checkpoints" / "best.pt")
    return run


def test_cli_exports_and_verifies_on_the_val_sets(tmp_path, cli):
    run = _run(tmp_path)
    code, out, err = cli("export", run, "--format", "onnx", "--verify")
    assert code == 0, err
    assert (run / "export" / "best.onnx").is_file() and (run / "export" / "best.onnx.json").is_file()
    assert "onnx vs native" in out and "\nval\t" in out and "width 64" in out and "width 96" in out
    code, out, err = cli("export", run, "--format", "torchscript", "--out", tmp_path / "m.pt")
    assert code == 0 and (tmp_path / "m.pt").is_file(), err
    code, _, err = cli("export", run, "--format", "tflite")
    assert code == 2 and "--format tflite" in err


def test_missing_extra_is_named(tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    code, _, err = cli("export", _run(tmp_path), "--format", "onnx")
    assert code == 2 and "cvlab[export]" in err


def _unwritable_for_anyone() -> str | None:
    """A folder that refuses new files even to root (/proc/self), or None where there is none."""
    import os

    return "/proc/self" if os.path.isdir("/proc/self") and not os.access("/proc/self", os.W_OK) else None


def test_an_unwritable_out_is_one_line_exit_2_before_any_work(tmp_path, cli):
    """`--out afile/m.onnx` (a parent that is a file), a folder nobody may write to, a folder given as the file,
    and a run whose export/ folder cannot be made: one error line naming the path, no traceback, no file."""
    import os

    run = _run(tmp_path)
    blocker = tmp_path / "afile"
    blocker.write_text("")
    outs = [(blocker / "m.onnx", str(blocker)), (tmp_path, f"--out {tmp_path}: is a folder")]
    if (proc := _unwritable_for_anyone()) is not None:
        outs.append((f"{proc}/m.onnx", proc))
    for out, named in outs:
        for fmt in ("onnx", "torchscript"):
            before = sorted(tmp_path.rglob("*"))
            code, stdout, err = cli("export", run, "--format", fmt, "--out", out)
            assert code == 2 and "Traceback" not in err and named in err, (out, err)
            (line,) = [ln for ln in err.splitlines() if ln.strip()]  # one line, nothing else on stderr
            assert line.startswith("error:"), err
            assert "written" not in stdout and sorted(tmp_path.rglob("*")) == before
    (run / "export").write_text("")  # what a read-only run looks like to the default output: nowhere to write
    code, _, err = cli("export", run, "--format", "torchscript")
    assert code == 2 and str(run / "export") in err and "--out" in err and "Traceback" not in err, err
    (run / "export").unlink()
    run.chmod(0o555)
    try:
        if os.access(run, os.W_OK):
            return  # root: permission bits do not stop it (the file-parent and /proc cases above do)
        code, _, err = cli("export", run, "--format", "torchscript")
        assert code == 2 and str(run) in err and "Traceback" not in err, err
    finally:
        run.chmod(0o755)


def test_export_writes_atomically(tmp_path):
    """The model file appears whole or not at all: no temp file is left beside it."""
    model = _model({"backbone": {"name": "vgg", **TINY}})
    path = tmp_path / "sub" / "m.torchscript.pt"
    export_model(model, path, "torchscript", torch.rand(2, 1, H, WIDTHS[0]))
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    check_widths(model, runner(path, "torchscript"), channels=1, height=H, widths=WIDTHS, tolerance=1e-4)
