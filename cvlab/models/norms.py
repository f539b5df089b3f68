"""Normalization and activation factories. Contract (DESIGN §4.3): `factory(num_channels) -> nn.Module` on NCHW.

`make_norm(cfg)` resolves a name once; backbones only ever see the factory (a `NormFactory`). Every registry
entry (`NORMS[name]`, a `Norm`) pairs a builder with its `NormTraits`, and so does every factory, with one more
field: `adjusted`, {channels: groups used} for every group count that had to change (reported once by
`build_model`'s caller).
`weight` is not a layer: its factory gives Identity and `build_model` reparametrizes every conv/linear.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config.model import NormCfg
from ..errors import CvlabError


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


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are taken over consecutive groups of `ghost` samples of the batch:
    what `ghost` images on each of batch/ghost devices compute without SyncBN (the Group Normalization paper's
    "batch size" is images per GPU). The running statistics follow the first group alone, as rank 0's do under
    DDP (its buffers are the ones a checkpoint keeps and other ranks receive at the next broadcast), so a run
    with a ghost batch b checkpoints what a torchrun of batch/b processes of b would. Eval is plain BatchNorm;
    the weights and buffers are BatchNorm2d's, so checkpoints, export and eval do not see a difference."""

    def __init__(self, channels: int, ghost: int):
        super().__init__(channels)
        self.ghost = ghost

    def forward(self, x):
        if not self.training or x.shape[0] <= self.ghost:
            return super().forward(x)
        self.num_batches_tracked += 1
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        chunks = x.split(self.ghost)  # (b, C, H, W) each; a short last chunk is one smaller device
        out = [F.batch_norm(chunks[0], self.running_mean, self.running_var, self.weight, self.bias, True,
                            momentum, self.eps)]
        out += [F.batch_norm(c, None, None, self.weight, self.bias, True, 0.0, self.eps) for c in chunks[1:]]
        return torch.cat(out)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost={self.ghost}"


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


# A builder turns the config into `make(channels) -> nn.Module`; it writes every group count it had to change
# into `adjusted` (the factory's own dict), and every other builder ignores it.
Builder = Callable[[NormCfg, dict[int, int]], Callable[[int], nn.Module]]


@dataclass(frozen=True)
class Norm:
    """A registry entry: the builder and the traits of one norm."""

    build: Builder
    traits: NormTraits

    @property
    def doc(self) -> str:
        """The first line of the builder's docstring (what `cvlab models list` shows)."""
        return ((self.build.__doc__ or "").strip().splitlines() or [""])[0]


@dataclass(frozen=True)
class NormFactory:
    """The norm a model receives: `factory(channels)` builds the layer and marks it `norm_slot` (identities
    included, so probes find every place a norm sits). `adjusted` is filled while the model is built (the dict
    is mutable although the factory is not)."""

    make: Callable[[int], nn.Module]
    traits: NormTraits
    adjusted: dict[int, int] = field(default_factory=dict)

    def __call__(self, channels: int) -> nn.Module:
        m = self.make(channels)
        m.norm_slot = True
        return m


def values_per_statistic(m: nn.Module, shape: tuple[int, int, int, int]) -> int | None:
    """How many values each mean/variance of `m` is taken over for an input of `shape` (B, C, H, W): BN N·H·W
    (N: the ghost batch where there is one), GN (C/G)·H·W (LN = GN(1): C·H·W), IN H·W, channels-only LN C; None for
    layers without such statistics."""
    b, c, h, w = shape
    if isinstance(m, GhostBatchNorm2d):
        return min(b, m.ghost) * h * w
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


def _batch(cfg: NormCfg, adjusted: dict[int, int]) -> Callable[[int], nn.Module]:
    """BatchNorm2d (Ioffe & Szegedy 2015): batch statistics in training, running ones at eval; with
    `ghost_batch: b`, statistics per group of b samples, as on several devices without SyncBN."""
    if cfg.ghost_batch:
        return lambda c: GhostBatchNorm2d(c, cfg.ghost_batch)
    return lambda c: nn.BatchNorm2d(c)


def _sync_batch(cfg: NormCfg, adjusted: dict[int, int]) -> Callable[[int], nn.Module]:
    """SyncBatchNorm under torchrun on GPUs: batch statistics over the global batch, not each GPU's. Built as
    plain BatchNorm2d (same weights, so checkpoints, eval and export see plain BN); the training engine converts
    it when it runs distributed on CUDA."""
    return lambda c: nn.BatchNorm2d(c)


def _batch_renorm(cfg: NormCfg, adjusted: dict[int, int]) -> Callable[[int], nn.Module]:
    """Batch Renormalization (Ioffe 2017): BatchNorm corrected towards running statistics."""
    return lambda c: BatchRenorm2d(c, warmup=cfg.renorm_warmup)


def group_count(channels: int, groups: int, min_per_group: int) -> int:
    """The largest divisor of `channels` that is at most `groups` and leaves at least `min_per_group` channels
    in each group (1 when even one group has fewer: then it is layer norm)."""
    return _largest_divisor(channels, max(1, min(groups, channels // min_per_group)))


def _group(cfg: NormCfg, adjusted: dict[int, int]) -> Callable[[int], nn.Module]:
    """GroupNorm (Wu & He 2018): `groups` (or `channels_per_group`), reduced to a divisor when needed."""
    def make(c: int) -> nn.Module:
        if cfg.channels_per_group:
            g = _largest_divisor(c, max(1, c // cfg.channels_per_group))
            changed = g * cfg.channels_per_group != c
        else:
            g = group_count(c, cfg.groups, cfg.min_channels_per_group)
            changed = g != cfg.groups
        if changed:
            adjusted[c] = g
        return nn.GroupNorm(g, c)

    return make


def _layer(cfg: NormCfg, adjusted: dict[int, int]) -> Callable[[int], nn.Module]:
    """GroupNorm(1, C): the Group Normalization paper's LayerNorm over (C, H, W), per-channel affine."""
    return lambda c: nn.GroupNorm(1, c)


def _layer_channels(cfg: NormCfg, adjusted: dict[int, int]) -> Callable[[int], nn.Module]:
    """LayerNorm over the channels at each position (ConvNeXt's LayerNorm2d)."""
    return LayerNorm2d


def _instance(cfg: NormCfg, adjusted: dict[int, int]) -> Callable[[int], nn.Module]:
    """InstanceNorm2d with a learned affine (PyTorch's default has none)."""
    return lambda c: nn.InstanceNorm2d(c, affine=True)


def _lrn(cfg: NormCfg, adjusted: dict[int, int]) -> Callable[[int], nn.Module]:
    """AlexNet's local response norm: b = a / (k + α·Σ a²)^β over n=5 channels, k=2, α=1e-4, β=0.75."""
    # PyTorch divides alpha by the window size n; the paper does not. So the paper's α=1e-4 is alpha=5e-4 here.
    # Krizhevsky et al. 2012 apply it after the ReLU of conv 1 and 2 only (the traits; AlexNet follows them).
    return lambda c: nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)


def _weight(cfg: NormCfg, adjusted: dict[int, int]) -> Callable[[int], nn.Module]:
    """Weight normalization (Salimans & Kingma 2016) on every conv/linear; no normalization layer."""
    return lambda c: nn.Identity()


def _none(cfg: NormCfg, adjusted: dict[int, int]) -> Callable[[int], nn.Module]:
    """No normalization."""
    return lambda c: nn.Identity()


NORMS: dict[str, Norm] = {
    "batch": Norm(_batch, NormTraits(uses_batch_stats=True, baseline=True)),
    "sync_batch": Norm(_sync_batch, NormTraits(uses_batch_stats=True, syncs_across_ranks=True)),
    "batch_renorm": Norm(_batch_renorm, NormTraits(uses_batch_stats=True, relaxation="renorm_warmup")),
    "group": Norm(_group, NormTraits(grouped=True)),
    "layer": Norm(_layer, NormTraits()),
    "layer_channels": Norm(_layer_channels, NormTraits()),
    "instance": Norm(_instance, NormTraits()),
    "lrn": Norm(_lrn, NormTraits(position="after_act", first_stages=2, replaces_bias=False)),
    "weight": Norm(_weight, NormTraits(replaces_bias=False, reparametrizes=True)),
    "none": Norm(_none, NormTraits(replaces_bias=False)),
}


def traits(name: str) -> NormTraits:
    """The registered norm's traits (CvlabError naming the valid norms for an unknown one)."""
    if name not in NORMS:
        raise CvlabError(f"model.norm.name: unknown norm {name!r} (valid: {', '.join(NORMS)})")
    return NORMS[name].traits


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
    """The configured norm's factory (CvlabError naming the valid norms for an unknown name)."""
    norm_traits = traits(cfg.name)  # an unknown name fails here, listing the valid ones
    adjusted: dict[int, int] = {}  # the builder writes to the factory's own dict
    return NormFactory(NORMS[cfg.name].build(cfg, adjusted), norm_traits, adjusted)


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
    bias = not (norm.traits.replaces_bias and position == "before_act")
    layers = [nn.Conv2d(cin, cout, k, s, p, bias=bias), norm(cout), act()]
    if position == "after_act":
        layers[1], layers[2] = layers[2], layers[1]
    return nn.Sequential(*layers)
