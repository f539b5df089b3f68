"""What every backbone shares: the channel-width scaling of `size` and `width`; and `buffers_kept`, for code
that runs a model in train mode without meaning to train it (preflight, compare-norms' probes)."""

from __future__ import annotations

import contextlib

import torch

from ..config.model import BackboneCfg

SIZE_SCALE = {"tiny": 0.25, "small": 0.5, "standard": 1.0}


def scaled(channels: int, cfg: BackboneCfg) -> int:
    """A paper's channel count scaled by `size` and `width` (at least 1)."""
    return max(1, round(channels * SIZE_SCALE[cfg.size] * cfg.width))


@contextlib.contextmanager
def buffers_kept(model: torch.nn.Module):
    """Put every buffer (batch-norm running statistics, counters) back as it was on the way out, and the
    model's train/eval mode."""
    saved = {k: b.clone() for k, b in model.named_buffers()}
    was_training = model.training
    try:
        yield model
    finally:
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(saved[k])
        model.train(was_training)
