"""Checkpoints and small JSON files, always written atomically (temp file in the same folder, fsync, rename)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from ..errors import CvlabError


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def save_checkpoint(state: dict, path: Path) -> None:
    _atomic_write(path, lambda f: torch.save(state, f))


def write_json(obj, path: Path) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()))


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    if not path.is_file():
        raise CvlabError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise CvlabError(f"{path}: not a readable cvlab checkpoint ({e.__class__.__name__}: {e})") from None


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
