"""Batch norm folded into the convolution before it, for inference (`cvlab eval`, `cvlab predict`).

In eval mode a batch norm directly after a convolution is an affine map per channel, so the pair is one
convolution: with s = γ / √(σ² + ε) (running variance σ², running mean μ),

    BN(conv(x)) = s · (W ∗ x + b − μ) + β = (s · W) ∗ x + (s · (b − μ) + β)

`fold_batch_norms(model)` returns a copy in which every such pair is that one convolution followed by an
Identity; the model it is given (and so every checkpoint) is untouched. Folding is exact up to float rounding
(the products are formed in float64 and rounded once to the weights' dtype).

What folds: a `nn.Conv2d` (not reparametrized, e.g. by weight norm) followed directly, in the same
`nn.Sequential`, by a batch norm in eval mode that normalizes with running statistics (BatchNorm2d and the
norms built on it: sync, ghost, renorm, all plain BN at eval). A norm after the activation (position
`after_act`) does not follow the conv directly and stays; group, layer and instance norms have no running
statistics and stay.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and not parametrize.is_parametrized(conv)
            and isinstance(bn, _BatchNorm) and not bn.training and bn.track_running_stats
            and bn.running_mean is not None and bn.running_var is not None
            and bn.num_features == conv.out_channels)


def foldable_pairs(model: nn.Module) -> list[tuple[str, int]]:
    """(name of the Sequential, index of the conv in it) for every conv -> batch-norm pair that folds."""
    out = []
    for name, seq in model.named_modules():
        if isinstance(seq, nn.Sequential):
            children = list(seq)
            out += [(name, i) for i in range(len(children) - 1) if _foldable(children[i], children[i + 1])]
    return out


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: _BatchNorm) -> nn.Conv2d:
    """One convolution computing bn(conv(x)) in eval mode (a new module; `conv` and `bn` are untouched)."""
    w = conv.weight.detach().double()
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(mean)
    s = gamma / torch.sqrt(var + bn.eps)  # (C_out,)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.copy_((w * s.reshape(-1, 1, 1, 1)).to(conv.weight.dtype))  # (C_out, C_in/g, kh, kw) scaled per row
    fused.bias.copy_(((b - mean) * s + beta).to(conv.weight.dtype))
    if conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous():
        fused.weight.data = fused.weight.data.contiguous(memory_format=torch.channels_last)  # as it was
    fused.train(conv.training)
    return fused


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """A copy of `model` (in eval mode, as inference runs it) with every foldable conv -> batch-norm pair folded
    into one convolution and the norm replaced by an Identity; `model` itself when nothing folds. The count is
    `len(foldable_pairs(model))`."""
    pairs = foldable_pairs(model)
    if not pairs:
        return model
    folded = copy.deepcopy(model)
    modules = dict(folded.named_modules())
    for name, i in pairs:
        seq = modules[name]
        seq[i] = fold_conv_bn(seq[i], seq[i + 1])
        ident = nn.Identity()
        ident.norm_slot = getattr(seq[i + 1], "norm_slot", False)  # probes still find where the norm sat
        ident.folded = True
        seq[i + 1] = ident
    return folded
