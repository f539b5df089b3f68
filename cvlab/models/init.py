"""Initial weights (`model.init`): `build_model` applies one of `INITS` to the built model, before weight norm
reparametrizes (its g is taken from the initial weight).

- `he`: He et al. 2015 as torchvision's VGG and ResNet do it: every convolution kaiming normal with fan_out and
  the ReLU gain (std = sqrt(2 / (out_channels · kernel area))), its bias 0; every norm's affine weight 1 and
  bias 0. Linear layers, recurrent layers and heads keep PyTorch's default: torchvision's own choices there
  differ (VGG's N(0, 0.01) classifier, ResNet's default fc) and neither is about a sequence stage.
- `dtrb`: DTRB's train.py loop over `named_parameters()`: every bias 0, every weight kaiming normal with fan_in
  and the ReLU gain (conv, linear and LSTM matrices alike), 1 where that fails (a 1-D norm weight). The TPS point
  regressor keeps the identity warp its module starts with, as DTRB skips `localization_fc2`.
- `torch`: PyTorch's defaults, untouched (every run saved before `model.init` existed).

A module marked `keep_plain_weight` (TPS's regressor: zero weight, bias = the base points) is never touched.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .norms import LayerNorm2d

# every norm layer with a per-channel affine (BatchNorm, BatchRenorm and InstanceNorm derive from _NormBase)
_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, LayerNorm2d)


def _kept(model: nn.Module) -> set[int]:
    """ids of the parameters of modules whose initialisation is part of what they compute."""
    return {id(p) for m in model.modules() if getattr(m, "keep_plain_weight", False) for p in m.parameters()}


def he_init(model: nn.Module) -> None:
    """torchvision's VGG/ResNet init: conv kaiming normal (fan_out, ReLU), conv bias 0; norm weight 1, bias 0."""
    for m in model.modules():
        if getattr(m, "keep_plain_weight", False):
            continue
        if isinstance(m, nn.modules.conv._ConvNd):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORM_LAYERS) and getattr(m, "weight", None) is not None:
            nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


def dtrb_init(model: nn.Module) -> None:
    """DTRB's train.py, name by name: 'bias' -> 0, 'weight' -> kaiming_normal_ (fan_in, a=0), 1 if that fails."""
    kept = _kept(model)
    for name, param in model.named_parameters():
        if id(param) in kept:  # DTRB: `if 'localization_fc2' in name: continue`
            continue
        if "bias" in name:  # LSTM's bias_ih_l0 and bias_hh_l0 too
            nn.init.constant_(param, 0.0)
        elif "weight" in name:
            if param.dim() < 2:  # kaiming needs a fan; DTRB's `except` fills BatchNorm's weight with 1
                nn.init.ones_(param)
            else:
                nn.init.kaiming_normal_(param)


def torch_init(model: nn.Module) -> None:
    """PyTorch's defaults: nothing to do."""


INITS: dict[str, Callable[[nn.Module], None]] = {"he": he_init, "dtrb": dtrb_init, "torch": torch_init}
