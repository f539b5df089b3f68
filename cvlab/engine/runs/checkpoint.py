"""Checkpoints (model, optimizer, scheduler, scaler, step, RNG states), always written atomically."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

from ...atomic import atomic_write
from ...errors import CvlabError


def save_checkpoint(state: dict, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(state, f))


def kept_checkpoint(ckpt_dir: Path, step: int) -> Path:
    """Where `train.keep_checkpoints` keeps the state of `step`: checkpoints/step_<N>.pt."""
    return Path(ckpt_dir) / f"step_{step}.pt"


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    if not path.is_file():
        raise CvlabError(f"{path}: checkpoint not found")
    return read_torch_file(path, map_location=map_location, weights_only=False)


_ZIP = b"PK\x03\x04"  # torch.save's zip container


def read_torch_file(path: Path, *, map_location="cpu", weights_only: bool = False):
    """torch.load, with every way a file can fail said in one plain line (CvlabError naming the file): torch's
    own texts (miniz internals, `[Errno 22] Invalid argument` from a cut-off record, a weights-only refusal
    with ANSI codes and advice about torch versions) are not for a user of cvlab."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CvlabError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as e:  # noqa: BLE001  (torch raises anything from a damaged file)
        if weights_only and head.startswith(_ZIP) and "unsupported global" in str(e).lower():
            raise CvlabError(f"{path}: not a plain state dict: it holds Python objects besides tensors (e.g. a "
                             f"training checkpoint's RNG state), which are not unpickled from a foreign file") \
                from None
        if isinstance(e, (ImportError, AttributeError)) and head.startswith(_ZIP):  # a complete file of classes
            raise CvlabError(f"{path}: a torch file of Python classes this installation does not have "
                             f"({_plain(e)})") from None
        raise CvlabError(f"{path}: not a complete checkpoint (truncated or not a torch file)") from None


def _plain(e: Exception) -> str:
    """An exception's first line, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(e)).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0]}" if text else e.__class__.__name__


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
