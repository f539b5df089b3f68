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
    """An output that cannot be written (read-only folder, a file where a folder should be, a full disk) is the
    user's to fix: CvlabError naming the path, never a traceback."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise CvlabError(f"{path}: cannot write ({e.strerror or e}); choose a writable location or free space") \
            from None
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


def write_text_atomic(text: str, path: Path) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    if not path.is_file():
        raise CvlabError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise CvlabError(f"{path}: not a readable cvlab checkpoint ({e.__class__.__name__}: {e})") from None


def load_model_state(model: torch.nn.Module, weights: dict, path: Path) -> None:
    """Load `weights` into `model`, or say which tensors do not fit (a checkpoint of another model/config)."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    extra = [k for k in weights if k not in own]
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in weights and hasattr(weights[k], "shape") and tuple(weights[k].shape) != tuple(v.shape)]
    if missing or extra or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} tensors differ in shape (checkpoint vs config), e.g. {'; '.join(shapes[:3])}")
        if missing:
            parts.append(f"{len(missing)} missing, e.g. {', '.join(missing[:3])}")
        if extra:
            parts.append(f"{len(extra)} unexpected, e.g. {', '.join(extra[:3])}")
        raise CvlabError(f"{path}: the checkpoint is of a different model than the config builds: {'; '.join(parts)}; "
                         f"use the config it was trained with (model.* and data.charset must match)")
    model.load_state_dict(weights)


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
