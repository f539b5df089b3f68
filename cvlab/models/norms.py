"""Normalization and activation factories. Contract (DESIGN §4.3): `factory(num_channels) -> nn.Module` on NCHW.

`make_norm(cfg)` resolves a name once; backbones only ever see the factory. Every registered builder carries
its `NormTraits` (`NORMS[name].traits`), and so does every factory, with two more attributes:
- `adjusted`: {channels: groups used} for every group count that had to change (reported once by the caller);
- `replaces_bias`: whether the layer has its own shift, which makes the preceding conv's bias redundant.
`weight` is not a layer: its factory gives Identity and `build_model` reparametrizes every conv/linear.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
        x = F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)  # a constant shape: exports
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


@dataclass(frozen=True)
class NormTraits:
    """What the rest of cvlab needs to know about a norm, so nothing switches on its name.
    - `uses_batch_stats`: normalizes with statistics over the batch (cannot train at batch size 1; has running
      statistics for eval, a train/eval gap, and a number of values per statistic that shrinks with the batch);
    - `position`: where its paper puts it relative to the activation (`model.norm.position` overrides);
    - `first_stages`: the paper normalizes only the first N conv stages (AlexNet's LRN; AlexNet honours it);
    - `replaces_bias`: has its own shift, so the conv before it needs no bias;
    - `grouped`: group norm, whose degenerate layers (one group = LN, one channel per group = IN) are reported;
    - `reparametrizes`: not a layer but a reparametrization of every conv/linear (weight norm);
    - `syncs_across_ranks`: takes its statistics over every process's batch under torchrun (SyncBatchNorm);
    - `relaxation`: the `model.norm` key of a step-counted relaxation schedule (batch renorm's r/d warm-up),
      which a run with k× the steps stretches k×;
    - `baseline`: the norm others are measured against (compare-norms' "Δ vs" column)."""

    uses_batch_stats: bool = False
    position: str = "before_act"
    first_stages: int | None = None
    replaces_bias: bool = True
    grouped: bool = False
    reparametrizes: bool = False
    syncs_across_ranks: bool = False
    relaxation: str | None = None
    baseline: bool = False


def _register(**traits):
    """Attach the norm's traits to its builder (the registry stays a plain dict of functions)."""
    def wrap(builder):
        builder.traits = NormTraits(**traits)
        return builder
    return wrap


def _factory(fn: Callable[[int], nn.Module], traits: NormTraits) -> NormFactory:
    """`fn` as a factory: its modules are marked `norm_slot` (identities included, so probes find every place a
    norm sits), and it carries `adjusted`, `traits` and `replaces_bias`."""
    def factory(c: int) -> nn.Module:
        m = fn(c)
        m.norm_slot = True
        return m

    factory.adjusted = fn.adjusted = {}  # type: ignore[attr-defined]  (the same dict: `fn` writes to its own)
    factory.traits = traits  # type: ignore[attr-defined]
    factory.replaces_bias = traits.replaces_bias  # type: ignore[attr-defined]
    return factory


def values_per_statistic(m: nn.Module, shape: tuple[int, int, int, int]) -> int | None:
    """How many values each mean/variance of `m` is taken over for an input of `shape` (B, C, H, W): BN N·H·W,
    GN (C/G)·H·W (LN = GN(1): C·H·W), IN H·W, channels-only LN C; None for layers without such statistics."""
    b, c, h, w = shape
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return b * h * w
    if isinstance(m, nn.GroupNorm):
        return c // m.num_groups * h * w
    if isinstance(m, nn.InstanceNorm2d):
        return h * w
    if isinstance(m, LayerNorm2d):
        return c
    return None


def degenerate_groups(model: nn.Module) -> dict[str, str]:
    """{layer name: 'instance' | 'layer'} for every GroupNorm made by group norm that has one channel per group
    (it is instance norm) or one group (it is layer norm)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.GroupNorm) and getattr(m, "norm_slot", False):
            if m.num_groups == m.num_channels:
                out[name] = "instance"
            elif m.num_groups == 1:
                out[name] = "layer"
    return out


@_register(uses_batch_stats=True, baseline=True)
def _batch(cfg: NormCfg) -> NormFactory:
    """BatchNorm2d (Ioffe & Szegedy 2015): batch statistics in training, running ones at eval."""
    return _factory(lambda c: nn.BatchNorm2d(c), _batch.traits)


@_register(uses_batch_stats=True, syncs_across_ranks=True)
def _sync_batch(cfg: NormCfg) -> NormFactory:
    """SyncBatchNorm under torchrun on GPUs: batch statistics over the global batch, not each GPU's. Built as
    plain BatchNorm2d (same weights, so checkpoints, eval and export see plain BN); the training engine converts
    it when it runs distributed on CUDA."""
    return _factory(lambda c: nn.BatchNorm2d(c), _sync_batch.traits)


@_register(uses_batch_stats=True, relaxation="renorm_warmup")
def _batch_renorm(cfg: NormCfg) -> NormFactory:
    """Batch Renormalization (Ioffe 2017): BatchNorm corrected towards running statistics."""
    return _factory(lambda c: BatchRenorm2d(c, warmup=cfg.renorm_warmup), _batch_renorm.traits)


def group_count(channels: int, groups: int, min_per_group: int) -> int:
    """The largest divisor of `channels` that is at most `groups` and leaves at least `min_per_group` channels
    in each group (1 when even one group has fewer: then it is layer norm)."""
    return _largest_divisor(channels, max(1, min(groups, channels // min_per_group)))


@_register(grouped=True)
def _group(cfg: NormCfg) -> NormFactory:
    """GroupNorm (Wu & He 2018): `groups` (or `channels_per_group`), reduced to a divisor when needed."""
    def factory(c: int) -> nn.Module:
        if cfg.channels_per_group:
            g = _largest_divisor(c, max(1, c // cfg.channels_per_group))
            changed = g * cfg.channels_per_group != c
        else:
            g = group_count(c, cfg.groups, cfg.min_channels_per_group)
            changed = g != cfg.groups
        if changed:
            factory.adjusted[c] = g  # type: ignore[attr-defined]
        return nn.GroupNorm(g, c)

    return _factory(factory, _group.traits)


@_register()
def _layer(cfg: NormCfg) -> NormFactory:
    """GroupNorm(1, C): the Group Normalization paper's LayerNorm over (C, H, W), per-channel affine."""
    return _factory(lambda c: nn.GroupNorm(1, c), _layer.traits)


@_register()
def _layer_channels(cfg: NormCfg) -> NormFactory:
    """LayerNorm over the channels at each position (ConvNeXt's LayerNorm2d)."""
    return _factory(LayerNorm2d, _layer_channels.traits)


@_register()
def _instance(cfg: NormCfg) -> NormFactory:
    """InstanceNorm2d with a learned affine (PyTorch's default has none)."""
    return _factory(lambda c: nn.InstanceNorm2d(c, affine=True), _instance.traits)


@_register(position="after_act", first_stages=2, replaces_bias=False)
def _lrn(cfg: NormCfg) -> NormFactory:
    """AlexNet's local response norm: b = a / (k + α·Σ a²)^β over n=5 channels, k=2, α=1e-4, β=0.75."""
    # PyTorch divides alpha by the window size n; the paper does not. So the paper's α=1e-4 is alpha=5e-4 here.
    # Krizhevsky et al. 2012 apply it after the ReLU of conv 1 and 2 only (the traits; AlexNet follows them).
    return _factory(lambda c: nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0), _lrn.traits)


@_register(replaces_bias=False, reparametrizes=True)
def _weight(cfg: NormCfg) -> NormFactory:
    """Weight normalization (Salimans & Kingma 2016) on every conv/linear; no normalization layer."""
    return _factory(lambda c: nn.Identity(), _weight.traits)


@_register(replaces_bias=False)
def _none(cfg: NormCfg) -> NormFactory:
    """No normalization."""
    return _factory(lambda c: nn.Identity(), _none.traits)


NORMS: dict[str, Callable[[NormCfg], NormFactory]] = {
    "batch": _batch, "sync_batch": _sync_batch, "batch_renorm": _batch_renorm, "group": _group, "layer": _layer,
    "layer_channels": _layer_channels, "instance": _instance, "lrn": _lrn, "weight": _weight, "none": _none,
}


def traits(name: str) -> NormTraits:
    """The registered norm's traits (CvlabError naming the valid norms for an unknown one)."""
    if name not in NORMS:
        raise CvlabError(f"model.norm.name: unknown norm {name!r} (valid: {', '.join(NORMS)})")
    return NORMS[name].traits  # type: ignore[attr-defined]


def resolved_position(cfg: NormCfg) -> str:
    """`model.norm.position` when set, else the norm's published position."""
    return cfg.position or traits(cfg.name).position


ACTS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}


def make_norm(cfg: NormCfg) -> NormFactory:
    traits(cfg.name)  # an unknown name fails here, listing the valid ones
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
