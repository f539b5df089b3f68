"""Normalization factories. Contract (DESIGN §4.3): `factory(num_channels) -> nn.Module` acting on NCHW.

`make_norm(cfg)` resolves a name once; backbones only ever see the factory. Every adjustment a factory makes
(e.g. a group count reduced to divide the channels) is recorded in `factory.adjusted` so it can be reported.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..config.model import NormCfg
from ..errors import CvlabError

NormFactory = Callable[[int], nn.Module]


def _largest_divisor(channels: int, at_most: int) -> int:
    return max(g for g in range(1, min(channels, at_most) + 1) if channels % g == 0)


def _batch(cfg: NormCfg) -> NormFactory:
    return nn.BatchNorm2d


def _group(cfg: NormCfg) -> NormFactory:
    def factory(c: int) -> nn.Module:
        g = _largest_divisor(c, cfg.groups)
        if g != cfg.groups:
            factory.adjusted[c] = g  # type: ignore[attr-defined]
        return nn.GroupNorm(g, c)

    factory.adjusted = {}  # type: ignore[attr-defined]
    return factory


def _none(cfg: NormCfg) -> NormFactory:
    return lambda c: nn.Identity()


NORMS: dict[str, Callable[[NormCfg], NormFactory]] = {"batch": _batch, "group": _group, "none": _none}

ACTS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True),
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


def make_norm(cfg: NormCfg) -> NormFactory:
    if cfg.name not in NORMS:
        raise CvlabError(f"model.norm.name: unknown norm {cfg.name!r} (valid: {', '.join(NORMS)})")
    return NORMS[cfg.name](cfg)


def make_act(name: str) -> Callable[[], nn.Module]:
    if name not in ACTS:
        raise CvlabError(f"model.act: unknown activation {name!r} (valid: {', '.join(ACTS)})")
    return ACTS[name]


def conv_norm_act(cin: int, cout: int, k, s, p, norm: NormFactory | None, act: Callable[[], nn.Module],
                  position: str = "before_act") -> nn.Sequential:
    """conv -> norm -> act (or conv -> act -> norm). A normalized conv has no bias: the norm's shift replaces it."""
    if norm is None:
        return nn.Sequential(nn.Conv2d(cin, cout, k, s, p), act())
    layers = [nn.Conv2d(cin, cout, k, s, p, bias=False), norm(cout), act()]
    if position == "after_act":
        layers[1], layers[2] = layers[2], layers[1]
    return nn.Sequential(*layers)
