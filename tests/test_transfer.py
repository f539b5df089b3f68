"""`train.keep_checkpoints` keeps the state of the steps it names, and benchmarks/transfer.py trains one run,
scores each kept checkpoint on the synthetic val set and a real-crop folder, prints the table and reuses
everything on a rerun. Tiny runs on a tiny folder written here; no figure is asserted."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_experiment
from PIL import Image, ImageDraw

from cvlab.config import Experiment, load_config
from cvlab.engine.runs.checkpoint import kept_checkpoint
from cvlab.engine.train.loop import train
from cvlab.errors import CvlabError

ROOT = Path(__file__).resolve().parent.parent


def test_keep_checkpoints_writes_the_state_of_each_named_step(tmp_path):
    exp = tiny_experiment(train={"steps": 3, "eval_every": 5, "checkpoint_every": 2, "keep_checkpoints": [4, 2, 2, 9]})
    cfg = Experiment.model_validate(exp)
    assert cfg.train.keep_checkpoints == [2, 4, 9]  # sorted, once each
    train(cfg, tmp_path / "run")
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step_*.pt")) == ["step_2.pt"]
    # resumed further (train.steps may change on a resume): the kept steps on the way are written too
    train(Experiment.model_validate({**exp, "train": {**exp["train"], "steps": 5}}), tmp_path / "run", resume=True)
    assert sorted(p.name for p in ckpts.glob("step_*.pt")) == ["step_2.pt", "step_4.pt"]  # 9 is never reached
    for step in (2, 4):
        state = torch.load(kept_checkpoint(ckpts, step), map_location="cpu", weights_only=False)
        assert state["step"] == step and state["samples"] == step * 4
    last = torch.load(ckpts / "last.pt", map_location="cpu", weights_only=False)
    assert last["step"] == 5


def test_keep_checkpoints_refuses_step_zero_and_may_change_on_resume(tmp_path, write_exp):
    with pytest.raises(CvlabError, match="train.keep_checkpoints"):
        load_config(write_exp(tiny_experiment(train={"keep_checkpoints": [0, 3]})))
    from cvlab.engine.runs.resume import RESUMABLE
    assert "train.keep_checkpoints" in RESUMABLE  # which steps are kept does not change what is trained


def _real_folder(root: Path) -> Path:
    """Three word crops drawn with PIL's default font: a stand-in for real crops, in the folder layout."""
    root.mkdir(parents=True)
    lines = []
    for i, word in enumerate(("cat", "sun", "ab")):
        img = Image.new("L", (64, 32), 230)
        ImageDraw.Draw(img).text((6, 10), word, fill=20)
        img.save(root / f"{i}.png")
        lines.append(f"{i}.png\t{word}")
    (root / "gt.txt").write_text("\n".join(lines) + "\n")
    return root


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("transfer_bench", ROOT / "benchmarks" / "transfer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_transfer_benchmark_end_to_end_and_resumable(tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    # the quickstart's recipe (style mjsynth) at a tiny size: the stages exist for --ablate to switch off
    exp.write_text(yaml.safe_dump(tiny_experiment(
        data={"train": [{"type": "synth", "size": 256, "seed": 0, "max_len": 5}],
              "val": [{"type": "synth", "name": "synth_val", "size": 8, "seed": 1, "max_len": 5}]},
        train={"steps": 100, "batch_size": 4, "eval_every": 100, "warmup_steps": 1, "threads": 1},
        log={"every": 2, "image_grid": 0, "tensorboard": False})))
    real = _real_folder(tmp_path / "real")
    out = tmp_path / "out"
    bench = _load_benchmark()
    argv = [str(exp), "--at", "8,20", "--real", f"folder:{real}", "--out", str(out), "--ablate", "curve"]

    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert "machine: " in text and "torch " in text and "commit " in text
    table = json.loads((out / "transfer.json").read_text())
    rows = table["rows"]
    assert [(r["samples"], r["steps"]) for r in rows] == [(8, 2), (20, 5)]  # samples = steps × batch
    for r in rows:
        assert r["status"] == "finished" and r["wall_s"] is not None
        assert r["synth_samples"] == 8 and r["real_samples"] == 3 and 0 <= r["real_cer"]
        assert f"{r['real_correct']}/3" in text
    run_dir = Path(rows[0]["run_dir"])
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.pt")) == ["step_2.pt", "step_5.pt"]
    assert table["machine"]["torch"] == torch.__version__
    assert (out / "transfer.csv").read_text().count("\n") == 3  # header and two points
    ablation = json.loads((out / "ablation.json").read_text())["rows"]
    assert [(r["run"], r["steps"]) for r in ablation] == [("full", 5), ("no-curve", 5)]
    assert ablation[0]["run_dir"] == rows[-1]["run_dir"]  # the curve's run is the ablation's reference

    # a rerun trains and evaluates nothing again: same table, no new evaluation folder
    evals = sorted((run_dir / "eval").iterdir())
    assert bench.main(argv) == 0
    again = capsys.readouterr().out
    assert "already finished" in again
    assert json.loads((out / "transfer.json").read_text())["rows"] == rows
    assert sorted((run_dir / "eval").iterdir()) == evals
