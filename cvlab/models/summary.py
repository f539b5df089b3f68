"""A per-layer table of a model for `cvlab models show`: output shapes, parameters, norms, multiply-adds.

One eval-mode forward of a single zero image of the configured size, with hooks on every module. Multiply-adds
count convolutions, linear layers and recurrent cells (per call: the attention decoder's loop is counted per
step); norms, activations and pooling are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .norms import BatchRenorm2d, LayerNorm2d


@dataclass
class Summary:
    rows: list[tuple[str, str, str, int, str]] = field(default_factory=list)  # name, type, shape, params, norm
    params: int = 0
    trainable: int = 0
    macs: int = 0


def describe_norm(m: nn.Module) -> str | None:
    if isinstance(m, BatchRenorm2d):
        return "BatchRenorm"
    if isinstance(m, nn.BatchNorm2d):
        return "BatchNorm"
    if isinstance(m, nn.GroupNorm):
        return "LayerNorm=GN(1)" if m.num_groups == 1 else f"GN({m.num_groups}×{m.num_channels // m.num_groups})"
    if isinstance(m, LayerNorm2d):
        return "LayerNorm(C)"
    if isinstance(m, nn.InstanceNorm2d):
        return "InstanceNorm"
    if isinstance(m, nn.LocalResponseNorm):
        return "LRN"
    if nn.utils.parametrize.is_parametrized(m, "weight"):
        return "WeightNorm"
    return None


def _macs(m: nn.Module, inputs, out) -> int:
    if isinstance(m, nn.Conv2d):
        return out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    if isinstance(m, (nn.LSTM, nn.GRU)):
        gates = 4 if isinstance(m, nn.LSTM) else 3
        x = inputs[0]
        steps = x.shape[0] * x.shape[1]  # batch_first or not: B*T cell applications per direction
        dirs = 2 if m.bidirectional else 1
        total, cin = 0, m.input_size
        for _ in range(m.num_layers):
            total += steps * dirs * gates * m.hidden_size * (cin + m.hidden_size)
            cin = m.hidden_size * dirs
        return total
    if isinstance(m, (nn.LSTMCell, nn.GRUCell)):
        gates = 4 if isinstance(m, nn.LSTMCell) else 3
        return inputs[0].shape[0] * gates * m.hidden_size * (m.input_size + m.hidden_size)
    return 0


def _shape(out) -> str:
    t = out[0] if isinstance(out, (tuple, list)) else out
    return "×".join(map(str, t.shape[1:])) if isinstance(t, torch.Tensor) else "-"


@torch.no_grad()
def summarize(model: nn.Module, input_shape: tuple[int, int, int], depth: int = 3) -> Summary:
    """Rows for modules `depth` levels down (and shallower leaves); totals for a (C, H, W) input, batch 1."""
    named = [(n, m) for n, m in model.named_modules() if n and "parametrizations" not in n]
    shapes: dict[str, str] = {}
    macs = {"total": 0}
    hooks = []
    for name, m in named:
        def hook(mod, inputs, out, name=name):
            shapes[name] = _shape(out)
            macs["total"] += _macs(mod, inputs, out)
        hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
        macs["total"] = 0
        model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)

    s = Summary(params=sum(p.numel() for p in model.parameters()),
                trainable=sum(p.numel() for p in model.parameters() if p.requires_grad), macs=macs["total"])
    for name, m in named:
        level = name.count(".") + 1
        leaf = all(n == "parametrizations" for n, _ in m.named_children())  # a weight-normed conv is a leaf
        if level == depth or (leaf and level < depth):
            norms = sorted({d for sub in m.modules() if (d := describe_norm(sub))})
            params = sum(p.numel() for p in m.parameters())
            s.rows.append((name, type(m).__name__, shapes.get(name, "-"), params, ", ".join(norms)))
    return s
