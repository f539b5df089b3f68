"""VGG backbones: the CRNN stack (Shi et al. 2016, as in clovaai's deep-text-recognition-benchmark) and
VGG-11/16 (Simonyan & Zisserman 2015, configurations A and D) re-strided for text lines.

`depth: crnn`, `size: standard` is the published shape: 64-128-256-256-512-512-512 channels, norm after conv 5
and 6 only (`norm_at: crnn`), a final unpadded 2×2 conv as in DTRB's VGG_FeatureExtractor, so a 32×100 input
gives 512×1×24 (W/4 − 1 frames) and 8,451,621 parameters with 37 classes: DTRB's network, layer for layer. Tiny
and small use the same layers with fewer channels, so frames do not depend on the size. VGG-11/16 keep the first two 2×2 pools and make the other three (2, 1) pools, so the
width stays W/4 while the height reaches H/32; they normalize every conv.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..config.model import BackboneCfg
from .common import scaled
from .norms import NormFactory, conv_norm_act

CRNN_WIDTHS = {
    "tiny": (16, 32, 64, 64, 96, 96, 128),
    "small": (32, 64, 128, 128, 256, 256, 256),
    "standard": (64, 128, 256, 256, 512, 512, 512),
}
# VGG configurations A (11) and D (16): channels, "M" = max-pool.
DEEP = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


class VGG(nn.Module):
    """VGG: the CRNN stack (depth crnn) or VGG-11/16, height pooled away, width kept at W/4."""

    def __init__(self, in_channels: int, cfg: BackboneCfg, norm: NormFactory, act: Callable[[], nn.Module],
                 position: str = "before_act"):
        super().__init__()
        depth = cfg.resolved_depth
        self.features = self._crnn(in_channels, cfg, norm, act, position) if depth == "crnn" else \
            self._deep(in_channels, cfg, norm, act, position, DEEP[depth])
        self.dropout = nn.Dropout(cfg.dropout or 0.0)

    def _crnn(self, cin, cfg, norm, act, position) -> nn.Sequential:
        c = [max(1, round(w * cfg.width)) for w in CRNN_WIDTHS[cfg.size]]
        normed = {4, 5} if (cfg.norm_at or "crnn") == "crnn" else {0, 1, 2, 3, 4, 5}

        def block(i: int, cin: int) -> nn.Sequential:
            return conv_norm_act(cin, c[i], 3, 1, 1, norm if i in normed else None, act, position)

        self.out_channels = c[6]
        return nn.Sequential(
            block(0, cin), nn.MaxPool2d(2, 2),                     # (B, c0, H/2, W/2)
            block(1, c[0]), nn.MaxPool2d(2, 2),                    # (B, c1, H/4, W/4)
            block(2, c[1]), block(3, c[2]),
            nn.MaxPool2d((2, 1), (2, 1)),                          # (B, c3, H/8, W/4)
            block(4, c[3]), block(5, c[4]),
            nn.MaxPool2d((2, 1), (2, 1)),                          # (B, c5, H/16, W/4)
            nn.Conv2d(c[5], c[6], 2, 1, 0), act(),                 # (B, c6, H/16-1, W/4-1)
        )

    def _deep(self, cin, cfg, norm, act, position, plan) -> nn.Sequential:
        layers: list[nn.Module] = []
        pools = 0
        for item in plan:
            if item == "M":
                # the first two pools halve both axes; the rest only the height: (B, C, H/2^k, W/4)
                layers.append(nn.MaxPool2d(2, 2) if pools < 2 else nn.MaxPool2d((2, 1), (2, 1)))
                pools += 1
            else:
                cout = scaled(item, cfg)
                layers.append(conv_norm_act(cin, cout, 3, 1, 1, norm, act, position))
                cin = cout
        self.out_channels = cin
        return nn.Sequential(*layers)                              # (B, C, H/32, W/4)

    def forward(self, x):
        return self.dropout(self.features(x))
