"""The engine owns runs: `start_run` and `resume_run` are what the CLI, compare-norms and notebooks call, so
every run gets the same complete directory; `list_runs` / `clean_runs` are behind `cvlab runs`."""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Experiment, load_saved_config
from ..errors import CvlabError
from .progress import NullProgress, Progress
from .rundir import LOCK, STATUS, check_writable, lock_owner, new_run_dir, read_json, read_lock, refuse


def start_run(cfg: Experiment, runs_dir: Path = Path("runs"), name: str | None = None,
              progress: Progress | None = None, probe=None) -> tuple[Path, dict]:
    """Check everything (config, data, device, model), then create `runs_dir/<name>/<timestamp>/` and train
    in it. Returns (run directory, final metrics). Bad input fails before the folder exists."""
    from . import dist
    from .session import prepare
    from .train import train

    ctx = dist.context(cfg.train.device, cfg.train.dist_timeout)
    progress = (progress or NullProgress()) if ctx.main else NullProgress()
    if name:
        cfg = cfg.model_copy(deep=True)
        try:
            cfg.name = name
        except ValueError:  # pydantic's ValidationError: the name becomes a folder name
            raise CvlabError(f"--name {name}: use letters, digits, '.', '_' and '-' only") from None
    ctx.run_on_main(lambda: check_writable(runs_dir, "--runs-dir"), "checking --runs-dir")
    session = prepare(cfg, progress)
    # under torchrun rank 0 names the folder (a timestamp) and every rank trains "in" it; only rank 0 writes
    run_dir = ctx.run_on_main(lambda: new_run_dir(runs_dir, cfg.name), "creating the run directory")
    progress.message(f"run directory: {run_dir}")
    try:
        return run_dir, train(cfg, run_dir, progress, probe=probe, session=session)
    finally:
        if ctx.main and not run_dir.exists():  # removed as never checkpointed: drop runs/<name>/ too if now empty
            with contextlib.suppress(OSError):
                run_dir.parent.rmdir()


def resume_run(run_dir: Path, overrides: list[str] | tuple[str, ...] = (), progress: Progress | None = None,
               probe=None) -> tuple[Experiment, dict]:
    """Continue `run_dir` from its config.yaml and checkpoints/last.pt. `overrides` may change only the
    schedule-like keys (engine.resume.RESUMABLE); everything is checked before any file is written."""
    from .train import train

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CvlabError(f"--resume {run_dir}: not a run directory (no config.yaml)")
    owner = lock_owner(run_dir)
    if owner is not None:
        raise refuse(run_dir, owner)
    cfg = load_saved_config(run_dir / "config.yaml", overrides)
    return cfg, train(cfg, run_dir, progress, resume=True, probe=probe)


# --------------------------------------------------------------------------------------------- listing

@dataclass
class RunInfo:
    path: Path
    name: str
    status: str  # running | finished | interrupted | failed | empty
    step: int
    steps: int
    best: float | None
    wall_s: float | None
    reason: str = ""


def _run_dirs(root: Path) -> list[Path]:
    root = Path(root)
    if (root / "config.yaml").is_file() or (root / "checkpoints").is_dir():
        return [root]
    found = {p.parent for p in root.rglob("config.yaml")} | {p.parent for p in root.rglob("checkpoints")}
    return sorted(p for p in found if (p / "checkpoints").is_dir() or (p / "env.json").is_file())


def run_info(run_dir: Path) -> RunInfo:
    run_dir = Path(run_dir)
    cfg = read_yaml_quiet(run_dir / "config.yaml")
    steps = int(cfg.get("train", {}).get("steps") or 0) if isinstance(cfg.get("train"), dict) else 0
    metrics, status = read_json(run_dir / "metrics.json"), read_json(run_dir / STATUS)
    ckpts = sorted((run_dir / "checkpoints").glob("*.pt"))
    step = _checkpoint_step(run_dir / "checkpoints" / "last.pt")  # newer than metrics.json between evals
    if step < 0:
        step = int(metrics.get("step") or 0)
    wall = status.get("wall_s")
    lock = read_lock(run_dir)
    if lock is not None and lock_owner(run_dir) is not None:
        state = "running"
        started = lock.get("started")
        wall = (wall or 0) + (time.time() - started if isinstance(started, (int, float)) else 0)
    elif not ckpts:
        state = "empty"  # never reached a checkpoint: nothing to resume (`cvlab runs clean` removes it)
    elif lock is not None:
        state = "interrupted"  # the lock of a process that is gone: killed, or the machine went down
    elif status.get("status") == "finished" and step >= steps:
        state = "finished"
    elif status.get("status") in ("failed", "diverged"):
        state = "failed"
    else:
        state = "interrupted"
    best = metrics.get("best_word_acc")
    return RunInfo(run_dir, str(cfg.get("name", run_dir.parent.name)), state, max(step, 0), steps,
                   best if isinstance(best, (int, float)) and best >= 0 else None, wall, status.get("reason", ""))


def _checkpoint_step(path: Path) -> int:
    if not path.is_file():
        return -1
    try:
        import torch

        return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True).get("step", -1))
    except Exception:  # noqa: BLE001  (a truncated file: listed as unknown, never a crash)
        return -1


def read_yaml_quiet(path: Path) -> dict:
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return raw if isinstance(raw, dict) else {}
    except (OSError, ValueError, yaml.YAMLError):
        return {}


def list_runs(root: Path = Path("runs")) -> list[RunInfo]:
    root = Path(root)
    if not root.exists():
        raise CvlabError(f"{root}: no such folder (runs are created under --runs-dir, default runs/)")
    if not root.is_dir():
        raise CvlabError(f"{root}: not a folder of runs")
    return [run_info(p) for p in _run_dirs(root)]


def clean_runs(runs: list[RunInfo]) -> list[Path]:
    """Delete the `empty` runs among `runs` (never checkpointed, not running); returns what was removed."""
    removed = []
    for r in runs:
        if r.status == "empty" and lock_owner(r.path) is None:
            shutil.rmtree(r.path, ignore_errors=True)
            with contextlib.suppress(OSError):
                r.path.parent.rmdir()
            removed.append(r.path)
    return removed


__all__ = ["LOCK", "RunInfo", "clean_runs", "list_runs", "resume_run", "run_info", "start_run"]
