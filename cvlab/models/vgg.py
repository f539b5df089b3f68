"""The CRNN VGG stack (Shi et al. 2016, as in clovaai's deep-text-recognition-benchmark).

`standard` is the published shape: 64-128-256-256-512-512-512 channels, norm after conv 5 and 6 only (`norm_at:
crnn`), a final 2×2 conv; a 32×100 input gives a 512×1×24 map. `norm_at: all` normalizes every conv but the last.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .norms import NormFactory, conv_norm_act

WIDTHS = {
    "tiny": (16, 32, 64, 64, 96, 96, 128),
    "small": (32, 64, 128, 128, 256, 256, 256),
    "standard": (64, 128, 256, 256, 512, 512, 512),
}


class VGG(nn.Module):
    def __init__(self, in_channels: int, size: str, norm: NormFactory, act: Callable[[], nn.Module],
                 position: str = "before_act", norm_at: str = "crnn"):
        super().__init__()
        c = WIDTHS[size]
        normed = {4, 5} if norm_at == "crnn" else {0, 1, 2, 3, 4, 5}

        def block(i: int, cin: int) -> nn.Sequential:
            return conv_norm_act(cin, c[i], 3, 1, 1, norm if i in normed else None, act, position)

        self.features = nn.Sequential(
            block(0, in_channels), nn.MaxPool2d(2, 2),             # (B, c0, H/2, W/2)
            block(1, c[0]), nn.MaxPool2d(2, 2),                    # (B, c1, H/4, W/4)
            block(2, c[1]), block(3, c[2]),
            nn.MaxPool2d((2, 1), (2, 1)),                          # (B, c3, H/8, W/4)
            block(4, c[3]), block(5, c[4]),
            nn.MaxPool2d((2, 1), (2, 1)),                          # (B, c5, H/16, W/4)
            nn.Conv2d(c[5], c[6], 2, 1, 0), act(),                 # (B, c6, H/16-1, W/4-1)
        )
        self.out_channels = c[6]

    def forward(self, x):
        return self.features(x)
