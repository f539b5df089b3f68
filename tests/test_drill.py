"""The SIGKILL drill: a run killed at random moments (during startup, mid-step, mid-checkpoint, during the final
evaluation) and resumed each time ends exactly where an uninterrupted run of the same seed ends: the same
weights, optimizer state and metrics.json, one run directory, nothing left over. A second `--resume` on the live
run is refused (exit 2, naming the lock holder). CVLAB_DRILL_KILLS (default 3) sets the number of kills, CVLAB_DRILL_SEED the moments."""

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from conftest import tiny_experiment

from cvlab.config import load_config
from cvlab.engine.runs.directory import LOCK
from cvlab.engine.runs.listing import list_runs
from cvlab.engine.train.loop import train

STEPS = 24
EXP = tiny_experiment(train={"steps": STEPS, "eval_every": 8, "checkpoint_every": 2},
                      log={"every": 1, "image_grid": 0})
KILLS = int(os.environ.get("CVLAB_DRILL_KILLS", "3"))
SEED = int(os.environ.get("CVLAB_DRILL_SEED", "13"))


def _cvlab(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cvlab.cli", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)


def _step_of(line: str) -> int:
    parts = line.split()
    return int(parts[1].split("/")[0]) if len(parts) > 1 and parts[0] == "step" and "/" in parts[1] else -1


def _kill_at(proc: subprocess.Popen, target: int, delay: float, on_step=None) -> list[str]:
    """SIGKILL `proc` `delay` seconds after its first stderr line (target < 0: during startup) or after the
    progress line of step >= `target`. Returns what it printed (it may also have finished first)."""
    lines = []
    for line in proc.stderr:
        lines.append(line)
        step = _step_of(line)
        if on_step is not None and step >= 0:
            on_step(proc)
            on_step = None
        if target < 0 or step >= target:
            break
    time.sleep(delay)
    proc.kill()
    proc.wait()
    lines += proc.stderr.read().splitlines(keepends=True)
    proc.stderr.close()
    return lines


def _run_dirs(runs: Path) -> list[Path]:
    return sorted((runs / "r").iterdir()) if (runs / "r").is_dir() else []


def _last_step(run_dir: Path) -> int:
    last = run_dir / "checkpoints" / "last.pt"
    return torch.load(last, weights_only=False)["step"] if last.is_file() else 0


def _refused_while_live(runs: Path, proc: subprocess.Popen, cli) -> None:
    """A second writer on the live run: exit 2 naming the lock holder; the run's files and process untouched."""
    (run_dir,) = _run_dirs(runs)
    config = (run_dir / "config.yaml").read_bytes()
    code, _, err = cli("train", "--resume", run_dir, "--set", f"train.steps={STEPS + 8}")
    assert code == 2 and "being trained by another process" in err and f"pid {proc.pid}" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert (run_dir / "config.yaml").read_bytes() == config
    assert proc.poll() is None
    assert [r.status for r in list_runs(runs)] == ["running"]


def test_sigkill_at_random_moments_resumes_to_the_uninterrupted_end(tmp_path, cli):
    reference = tmp_path / "ref"
    train(load_config(raw=EXP), reference)

    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(EXP))
    runs = tmp_path / "runs"
    rng = random.Random(SEED)
    refused: list = []
    history = []
    for kill in range(KILLS):
        dirs = _run_dirs(runs)
        assert len(dirs) <= 1, f"kill {kill}: duplicated run directories {dirs}"
        if dirs and not (dirs[0] / "config.yaml").is_file():
            # killed between creating the folder and writing its config: listed as empty, removed by clean
            assert [r.status for r in list_runs(runs)] == ["empty"]
            assert cli("runs", "clean", runs, "--yes")[0] == 0
            dirs = []
        start = _last_step(dirs[0]) if dirs else 0
        proc = _cvlab("train", "--resume", dirs[0]) if dirs else _cvlab("train", exp, "--runs-dir", runs,
                                                                        "--name", "r")
        # a moment: startup (before the run folder may exist), or any step from here to the end, then a
        # random fraction of a step (mid-step, mid-checkpoint write, the final evaluation)
        target = rng.choice([-1, *range(start + 1, STEPS + 1)])
        delay = rng.uniform(0, 0.3) if target < 0 else rng.uniform(0, 0.05)
        on_step = None
        if not refused and target >= 0:  # once, while a run trains: a concurrent --resume is refused
            def on_step(p):
                _refused_while_live(runs, p, cli)
                refused.append(p.pid)
        lines = _kill_at(proc, target, delay, on_step)
        history.append((start, target, round(delay, 3), proc.returncode))
        assert not any("Traceback" in line for line in lines), "".join(lines)

    dirs = _run_dirs(runs)
    assert len(dirs) <= 1, f"duplicated run directories {dirs}"
    if dirs and (dirs[0] / "config.yaml").is_file():
        code, _, err = cli("train", "--resume", dirs[0])
    else:  # every kill came before the run had a config: start it (once) and let it finish
        if dirs:
            assert cli("runs", "clean", runs, "--yes")[0] == 0
        code, _, err = cli("train", exp, "--runs-dir", runs, "--name", "r")
    assert code == 0, (history, err)

    (run_dir,) = _run_dirs(runs)  # no run lost, none duplicated
    ref_m = json.loads((reference / "metrics.json").read_text())
    got_m = json.loads((run_dir / "metrics.json").read_text())
    assert got_m == ref_m and got_m["step"] == STEPS, history
    for name in ("last.pt", "best.pt"):
        ref = torch.load(reference / "checkpoints" / name, weights_only=False)
        got = torch.load(run_dir / "checkpoints" / name, weights_only=False)
        assert got["step"] == ref["step"] and got["best"] == ref["best"], (name, history)
        assert ref["model"].keys() == got["model"].keys()
        assert all(torch.equal(ref["model"][k], got["model"][k]) for k in ref["model"]), (name, history)
        ref_opt, got_opt = ref["optimizer"]["state"], got["optimizer"]["state"]
        assert all(torch.equal(ref_opt[i][k], got_opt[i][k]) for i in ref_opt for k in ref_opt[i]), (name, history)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]  # no temp files
    assert not (run_dir / LOCK).exists()
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    assert [(r.status, r.step) for r in list_runs(runs)] == [("finished", STEPS)]
    assert refused or all(target < 0 for _, target, _, _ in history)  # checked unless no kill reached a step
