"""Interrupted runs resume to the same end as an uninterrupted one: Ctrl-C (checkpoint on the way out) and
SIGKILL at random moments is the drill in test_drill.py."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_experiment

from cvlab.config import load_config
from cvlab.engine.train.loop import train

STEPS = 160
EXP = tiny_experiment(train={"steps": STEPS, "eval_every": 40}, log={"every": 5, "image_grid": 2})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ref")
    train(load_config(raw=EXP), run_dir)
    return run_dir


def _start(exp_path: Path, runs: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "cvlab.cli", "train", str(exp_path), "--runs-dir", str(runs),
                             "--name", "r"], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def _wait_for(proc: subprocess.Popen, predicate, timeout=120) -> None:
    deadline = time.time() + timeout
    for line in proc.stderr:
        if predicate(line):
            return
        assert time.time() < deadline, "run did not reach the expected point"
    raise AssertionError(f"run ended early with code {proc.wait()}")


def _resume(run_dir: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "cvlab.cli", "train", "--resume", str(run_dir)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr


def _same_end(run_dir: Path, reference: Path) -> None:
    ref_m = json.loads((reference / "metrics.json").read_text())
    got_m = json.loads((run_dir / "metrics.json").read_text())
    assert got_m["step"] == ref_m["step"] == STEPS
    assert got_m["datasets"] == ref_m["datasets"]
    ref_w = torch.load(reference / "checkpoints" / "last.pt", weights_only=False)["model"]
    got_w = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(ref_w[k], got_w[k]) for k in ref_w)


def _step_of(line: str) -> int:
    return int(line.split()[1].split("/")[0]) if line.startswith("step ") and "/" in line.split()[1] else -1


def test_ctrl_c_saves_and_resume_matches_uninterrupted(reference, tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(EXP))
    proc = _start(exp, tmp_path / "runs")
    _wait_for(proc, lambda line: 10 <= _step_of(line) < STEPS - 40)
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait() == 130
    assert "cvlab train --resume" in rest and "Traceback" not in rest
    (run_dir,) = (tmp_path / "runs" / "r").iterdir()
    stopped_at = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["step"]
    assert 10 <= stopped_at < STEPS
    _resume(run_dir)
    _same_end(run_dir, reference)



def _cut_checkpoints(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A real training checkpoint (a run's last.pt) and copies of it cut off at many points: a copy that
    stopped, a full disk, a download that broke."""
    from cvlab.engine.runs.checkpoint import save_checkpoint

    full = tmp_path / "full.pt"
    save_checkpoint({"model": {"w": torch.randn(256, 256), "b": torch.zeros(256)}, "step": 3,
                     "rng": {"numpy": __import__("numpy").random.get_state()}}, full)
    data = full.read_bytes()
    cuts = []
    for i, n in enumerate([0, 3, 100, 1405, 4215, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1]):
        cuts.append(tmp_path / f"cut{i}.pt")
        cuts[-1].write_bytes(data[:n])
    return full, cuts


def test_a_truncated_checkpoint_is_said_plainly(tmp_path):
    from cvlab.engine.runs.checkpoint import load_checkpoint
    from cvlab.errors import CvlabError

    full, cuts = _cut_checkpoints(tmp_path)
    assert load_checkpoint(full)["step"] == 3
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    for path in [*cuts, text]:
        with pytest.raises(CvlabError) as e:
            load_checkpoint(path)
        assert str(e.value) == f"{path}: not a complete checkpoint (truncated or not a torch file)"


def test_eval_and_resume_of_a_truncated_checkpoint_are_one_line_exit_2(tmp_path, cli):
    from cvlab.config import dump_config

    cfg = load_config(raw=tiny_experiment())
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(cfg))
    _, cuts = _cut_checkpoints(tmp_path)
    for name in ("best.pt", "last.pt"):
        (run / "checkpoints" / name).write_bytes(cuts[4].read_bytes())  # the cut that said "[Errno 22]"
    for args, ckpt in ((("eval", run), "best.pt"), (("train", "--resume", run), "last.pt")):
        code, _, err = cli(*args)
        (line,) = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and line == (f"error: {run / 'checkpoints' / ckpt}: not a complete checkpoint "
                                      f"(truncated or not a torch file)"), err
