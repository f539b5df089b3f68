"""What every backbone shares: the channel-width scaling of `size` and `width`."""

from __future__ import annotations

from ..config.model import BackboneCfg

SIZE_SCALE = {"tiny": 0.25, "small": 0.5, "standard": 1.0}


def scaled(channels: int, cfg: BackboneCfg) -> int:
    """A paper's channel count scaled by `size` and `width` (at least 1)."""
    return max(1, round(channels * SIZE_SCALE[cfg.size] * cfg.width))
