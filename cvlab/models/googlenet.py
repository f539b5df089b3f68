"""GoogLeNet (Szegedy et al. 2015): stem + nine Inception modules with the paper's channel widths, scaled by
`size`/`width`. Each module has four branches: 1×1; 1×1 -> 3×3; 1×1 -> 3×3 -> 3×3 (Inception v2's factorized
5×5, keeping the paper's 5×5 widths); 3×3 max-pool -> 1×1. Branch outputs are concatenated.

Re-strided for text lines: the stem reaches H/4 × W/4 (conv 7×7/2, pool 3×3/2) and the pools after stage 3 and 4
stride (2, 1), so 32×100 gives 2×25 at 1024 channels. The paper's 1×1 -> 3×3 stem convs are kept. Branch
widths such as 16, 24 and 48 are not divisible by 32: group norm adjusts them (reported).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..config.model import BackboneCfg
from .common import scaled
from .norms import NormFactory, conv_norm_act

# (1×1, 3×3 reduce, 3×3, 5×5 reduce, 5×5, pool proj) per module, from the paper's Table 1.
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64), "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}


class Inception(nn.Module):
    def __init__(self, cin: int, widths: tuple[int, ...], conv: Callable[..., nn.Module]):
        super().__init__()
        c1, r3, c3, r5, c5, cp = widths
        self.b1 = conv(cin, c1, 1, 1, 0)
        self.b2 = nn.Sequential(conv(cin, r3, 1, 1, 0), conv(r3, c3, 3, 1, 1))
        self.b3 = nn.Sequential(conv(cin, r5, 1, 1, 0), conv(r5, c5, 3, 1, 1), conv(c5, c5, 3, 1, 1))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv(cin, cp, 1, 1, 0))
        self.out_channels = c1 + c3 + c5 + cp

    def forward(self, x):
        # four (B, c_i, H, W) -> (B, c1+c3+c5+cp, H, W)
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)


class GoogLeNet(nn.Module):
    """GoogLeNet: stem + Inception 3a-5b (four branches), height pooled to H/16, width kept at W/4."""

    def __init__(self, in_channels: int, cfg: BackboneCfg, norm: NormFactory, act: Callable[[], nn.Module],
                 position: str = "before_act"):
        super().__init__()

        def conv(cin: int, cout: int, k: int, s, p) -> nn.Sequential:
            return conv_norm_act(cin, cout, k, s, p, norm, act, position)

        c64, c192 = scaled(64, cfg), scaled(192, cfg)
        self.stem = nn.Sequential(
            conv(in_channels, c64, 7, 2, 3),                       # (B, 64, H/2, W/2)
            nn.MaxPool2d(3, 2, 1),                                 # (B, 64, H/4, W/4)
            conv(c64, c64, 1, 1, 0),
            conv(c64, c192, 3, 1, 1),                              # (B, 192, H/4, W/4)
        )
        layers: list[nn.Module] = []
        cin = c192
        for name, widths in INCEPTION.items():
            module = Inception(cin, tuple(scaled(w, cfg) for w in widths), conv)
            layers.append(module)
            cin = module.out_channels
            if name in ("3b", "4e"):
                layers.append(nn.MaxPool2d(3, (2, 1), 1))          # (B, C, H/2^k, W/4): height only
        self.inception = nn.Sequential(*layers)                    # (B, 1024, H/16, W/4)
        self.dropout = nn.Dropout(cfg.dropout or 0.0)
        self.out_channels = cin

    def forward(self, x):
        return self.dropout(self.inception(self.stem(x)))
