"""Run directories: `runs/<name>/<timestamp>/`, self-contained (config.yaml, env.json, events, checkpoints)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from .. import __version__
from ..errors import CvlabError
from .checkpoint import write_json


def new_run_dir(runs_dir: Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(runs_dir) / name / stamp
    path, i = base, 1
    while path.exists():
        path = base.with_name(f"{stamp}-{i}")
        i += 1
    (path / "checkpoints").mkdir(parents=True)
    return path


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def write_env(run_dir: Path, device: str, seed: int, argv: list[str] | None = None) -> None:
    """env.json; a resumed run appends its command line and time to `resumed`."""
    path = run_dir / "env.json"
    argv = list(sys.argv if argv is None else argv)
    if path.exists():
        env = json.loads(path.read_text())
        env.setdefault("resumed", []).append({"command": argv, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    else:
        commit = _git("rev-parse", "HEAD")
        env = {
            "command": argv,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "cvlab": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "git_commit": commit,
            "git_dirty": bool(_git("status", "--porcelain")) if commit else None,
            "device": device,
            "cuda_device": torch.cuda.get_device_name() if device.startswith("cuda") else None,
            "threads": torch.get_num_threads(),
            "seed": seed,
        }
    write_json(env, path)


def resolve_run(path: Path) -> Path:
    """A run directory, or a folder of runs (e.g. runs/quickstart): the newest run in it with a checkpoint."""
    path = Path(path)
    if (path / "config.yaml").is_file():
        return path
    if path.is_dir():
        runs = sorted((p.parent.parent for p in path.glob("*/checkpoints/*.pt")), key=lambda p: p.name)
        if runs:
            return runs[-1]
    raise CvlabError(f"{path}: not a run directory (no config.yaml) and no run with checkpoints below it")
