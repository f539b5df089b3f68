"""AlexNet (Krizhevsky et al. 2012), the five conv stages of the single-GPU variant torchvision made standard:
11×11 (64) -> 5×5 (192) -> 3×3 (384) -> 3×3 (256) -> 3×3 (256), overlapping 3×3 max-pools, dropout before what
follows (the paper's classifier dropout).

Re-strided for text lines: conv 1 strides 2 instead of 4 and the first pool halves both axes (W/4 reached), the
later pools stride (2, 1) so the height keeps shrinking while the width stays at W/4 (32×100 -> 2×25).
Where the norm goes follows its traits: a norm published for the first N conv stages only (LRN, N = 2: "response
normalization layers follow the first and second convolutional layers", after the ReLU) normalizes those, and
every other norm follows every conv. `norm_at: all` puts any norm after every conv.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..config.model import BackboneCfg
from .common import scaled
from .norms import NormFactory, conv_norm_act


class AlexNet(nn.Module):
    """AlexNet's five conv stages (64-192-384-256-256), re-strided to keep W/4 columns."""

    def __init__(self, in_channels: int, cfg: BackboneCfg, norm: NormFactory, act: Callable[[], nn.Module],
                 position: str = "before_act"):
        super().__init__()
        c = [scaled(w, cfg) for w in (64, 192, 384, 256, 256)]

        first = None if cfg.norm_at == "all" else norm.traits.first_stages
        self.normed = set(range(5)) if first is None else set(range(first))  # conv stages with a norm

        def block(i: int, cin: int, cout: int, k: int, s, p: int) -> nn.Sequential:
            return conv_norm_act(cin, cout, k, s, p, norm if i in self.normed else None, act, position)

        self.features = nn.Sequential(
            block(0, in_channels, c[0], 11, 2, 5),                 # (B, c0, H/2, W/2)
            nn.MaxPool2d(3, 2, 1),                                 # (B, c0, H/4, W/4)
            block(1, c[0], c[1], 5, 1, 2),
            nn.MaxPool2d(3, (2, 1), 1),                            # (B, c1, H/8, W/4)
            block(2, c[1], c[2], 3, 1, 1),
            block(3, c[2], c[3], 3, 1, 1),
            block(4, c[3], c[4], 3, 1, 1),
            nn.MaxPool2d(3, (2, 1), 1),                            # (B, c4, H/16, W/4)
            nn.Dropout(0.5 if cfg.dropout is None else cfg.dropout),
        )
        self.out_channels = c[4]

    def forward(self, x):
        return self.features(x)
