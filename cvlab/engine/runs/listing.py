"""`cvlab runs`: every run under a folder with its state (running, finished, interrupted, failed, empty), and
removing the empty ones."""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ...errors import CvlabError
from .directory import LOCK, STATUS, lock_owner, read_json, read_lock


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


__all__ = ["LOCK", "RunInfo", "clean_runs", "list_runs", "run_info"]
