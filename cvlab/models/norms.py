"""Normalization and activation factories. Contract (DESIGN §4.3): `factory(num_channels) -> nn.Module` on NCHW.

`make_norm(cfg)` resolves a name once; backbones only ever see the factory. Factories carry two attributes:
- `adjusted`: {channels: groups used} for every group count that had to change (reported once by the caller);
- `replaces_bias`: whether the layer has its own shift, which makes the preceding conv's bias redundant.
`weight` is not a layer: its factory gives Identity and `build_model` reparametrizes every conv/linear.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config.model import NormCfg
from ..errors import CvlabError

NormFactory = Callable[[int], nn.Module]


def _largest_divisor(channels: int, at_most: int) -> int:
    return max(g for g in range(1, min(channels, at_most) + 1) if channels % g == 0)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels at each position (ConvNeXt's LayerNorm2d): works at any H×W."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)                         # (B, C, H, W) -> (B, H, W, C)
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)                      # (B, H, W, C) -> (B, C, H, W)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class BatchRenorm2d(nn.BatchNorm2d):
    """Batch Renormalization (Ioffe 2017): batch statistics corrected towards the running ones by r and d
    (no gradient through them), so training and inference agree even on small batches. r_max grows 1 -> 3 and
    d_max 0 -> 5 linearly over `warmup` batches, as the paper relaxes them; eval is plain BatchNorm."""

    def __init__(self, channels: int, r_max: float = 3.0, d_max: float = 5.0, warmup: int = 1000):
        super().__init__(channels, momentum=0.01)
        self.r_max, self.d_max, self.warmup = r_max, d_max, warmup

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        t = min(1.0, float(self.num_batches_tracked) / self.warmup)
        r_max, d_max = 1.0 + (self.r_max - 1.0) * t, self.d_max * t
        xf = x.float()
        mean = xf.mean(dim=(0, 2, 3))
        var = xf.var(dim=(0, 2, 3), unbiased=False)
        std = (var + self.eps).sqrt()
        run_std = (self.running_var + self.eps).sqrt()
        r = (std.detach() / run_std).clamp(1.0 / r_max, r_max)
        d = ((mean.detach() - self.running_mean) / run_std).clamp(-d_max, d_max)
        y = (xf - mean[:, None, None]) / std[:, None, None] * r[:, None, None] + d[:, None, None]
        y = y * self.weight[:, None, None] + self.bias[:, None, None]
        with torch.no_grad():
            n = x.numel() / x.shape[1]
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / max(1.0, n - 1), self.momentum)
            self.num_batches_tracked += 1
        return y.to(x.dtype)


def _factory(fn: Callable[[int], nn.Module], replaces_bias: bool = True) -> NormFactory:
    fn.adjusted = {}  # type: ignore[attr-defined]
    fn.replaces_bias = replaces_bias  # type: ignore[attr-defined]
    return fn


def _batch(cfg: NormCfg) -> NormFactory:
    """BatchNorm2d (Ioffe & Szegedy 2015): batch statistics in training, running ones at eval."""
    return _factory(lambda c: nn.BatchNorm2d(c))


def _sync_batch(cfg: NormCfg) -> NormFactory:
    """SyncBatchNorm under torchrun on GPUs: batch statistics over the global batch, not each GPU's. Built as
    plain BatchNorm2d (same weights, so checkpoints, eval and export see plain BN); the training engine converts
    it when it runs distributed on CUDA."""
    return _factory(lambda c: nn.BatchNorm2d(c))


def _batch_renorm(cfg: NormCfg) -> NormFactory:
    """Batch Renormalization (Ioffe 2017): BatchNorm corrected towards running statistics."""
    return _factory(lambda c: BatchRenorm2d(c))


def _group(cfg: NormCfg) -> NormFactory:
    """GroupNorm (Wu & He 2018): `groups` (or `channels_per_group`), reduced to a divisor when needed."""
    def factory(c: int) -> nn.Module:
        if cfg.channels_per_group:
            g = _largest_divisor(c, max(1, c // cfg.channels_per_group))
            changed = g * cfg.channels_per_group != c
        else:
            g = _largest_divisor(c, cfg.groups)
            changed = g != cfg.groups
        if changed:
            factory.adjusted[c] = g  # type: ignore[attr-defined]
        return nn.GroupNorm(g, c)

    return _factory(factory)


def _layer(cfg: NormCfg) -> NormFactory:
    """GroupNorm(1, C): the Group Normalization paper's LayerNorm over (C, H, W), per-channel affine."""
    return _factory(lambda c: nn.GroupNorm(1, c))


def _layer_channels(cfg: NormCfg) -> NormFactory:
    """LayerNorm over the channels at each position (ConvNeXt's LayerNorm2d)."""
    return _factory(LayerNorm2d)


def _instance(cfg: NormCfg) -> NormFactory:
    """InstanceNorm2d with a learned affine (PyTorch's default has none)."""
    return _factory(lambda c: nn.InstanceNorm2d(c, affine=True))


def _lrn(cfg: NormCfg) -> NormFactory:
    """AlexNet's local response norm: b = a / (k + α·Σ a²)^β over n=5 channels, k=2, α=1e-4, β=0.75."""
    # PyTorch divides alpha by the window size n; the paper does not. So the paper's α=1e-4 is alpha=5e-4 here.
    return _factory(lambda c: nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0), replaces_bias=False)


def _weight(cfg: NormCfg) -> NormFactory:
    """Weight normalization (Salimans & Kingma 2016) on every conv/linear; no normalization layer."""
    return _factory(lambda c: nn.Identity(), replaces_bias=False)


def _none(cfg: NormCfg) -> NormFactory:
    """No normalization."""
    return _factory(lambda c: nn.Identity(), replaces_bias=False)


NORMS: dict[str, Callable[[NormCfg], NormFactory]] = {
    "batch": _batch, "sync_batch": _sync_batch, "batch_renorm": _batch_renorm, "group": _group, "layer": _layer,
    "layer_channels": _layer_channels, "instance": _instance, "lrn": _lrn, "weight": _weight, "none": _none,
}

ACTS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
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


def apply_weight_norm(model: nn.Module) -> int:
    """Reparametrize every conv/linear weight as g·v/‖v‖ (per output unit); returns how many layers.
    Layers marked `keep_plain_weight` are skipped: a zero-initialised weight (TPS's point regressor) has no
    direction, and g·v/‖v‖ would be 0/0."""
    n = 0
    for m in list(model.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not getattr(m, "keep_plain_weight", False):
            nn.utils.parametrizations.weight_norm(m, name="weight", dim=0)
            n += 1
    return n


def conv_norm_act(cin: int, cout: int, k, s, p, norm: NormFactory | None, act: Callable[[], nn.Module],
                  position: str = "before_act") -> nn.Sequential:
    """conv -> norm -> act, or conv -> act -> norm. The conv drops its bias only when a norm with its own shift
    follows it directly (before_act); after the activation the bias still shapes what the activation sees."""
    if norm is None:
        return nn.Sequential(nn.Conv2d(cin, cout, k, s, p), act())
    bias = not (getattr(norm, "replaces_bias", True) and position == "before_act")
    layers = [nn.Conv2d(cin, cout, k, s, p, bias=bias), norm(cout), act()]
    if position == "after_act":
        layers[1], layers[2] = layers[2], layers[1]
    return nn.Sequential(*layers)
