"""ResNet (He et al. 2016) for text lines: basic or bottleneck residual blocks with 1×1 conv + norm projection
shortcuts wherever the shape changes.

- `depth: 18 | 34 | 50`: the ImageNet stages ([2,2,2,2], [3,4,6,3] basic, [3,4,6,3] bottleneck; 64-128-256-512
  channels, ×4 for bottleneck) after a 7×7/2 conv + 3×3/2 pool stem (H/4 × W/4); stages 2-4 stride (2, 1), so
  32×100 gives 1×25.
- `depth: text`: the [1,2,5,3] ResNet of the four-stage scene-text framework (Baek et al. 2019, after FAN):
  32-64 stem, stages of 128-256-512-512 channels, each followed by a 3×3 conv, pools 2×2, 2×2, (2,1), then two
  2×2 convs; 32×100 gives 512×1×26.

Norm position applies to the convs inside a branch; the conv that feeds the residual sum is always followed by
its norm, and the activation comes after the sum, as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..config.model import BackboneCfg
from .common import scaled
from .norms import NormFactory, conv_norm_act


def _conv_norm(cin: int, cout: int, k: int, s, p, norm: NormFactory) -> nn.Sequential:
    bias = not norm.traits.replaces_bias
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, p, bias=bias), norm(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride, norm: NormFactory, act, position: str):
        super().__init__()
        cout = planes * self.expansion
        self.branch = self._branch(cin, planes, cout, stride, norm, act, position)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else _conv_norm(cin, cout, 1, stride, 0, norm)
        self.act = act()

    @staticmethod
    def _branch(cin, planes, cout, stride, norm, act, position) -> nn.Sequential:
        return nn.Sequential(conv_norm_act(cin, planes, 3, stride, 1, norm, act, position),
                             _conv_norm(planes, cout, 3, 1, 1, norm))

    def forward(self, x):
        return self.act(self.branch(x) + self.shortcut(x))


class Bottleneck(BasicBlock):
    expansion = 4

    @staticmethod
    def _branch(cin, planes, cout, stride, norm, act, position) -> nn.Sequential:
        return nn.Sequential(conv_norm_act(cin, planes, 1, 1, 0, norm, act, position),
                             conv_norm_act(planes, planes, 3, stride, 1, norm, act, position),
                             _conv_norm(planes, cout, 1, 1, 0, norm))


IMAGENET = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3))}


class ResNet(nn.Module):
    """ResNet-18/34/50 or the [1,2,5,3] text ResNet, height pooled away, width kept at W/4 or more."""

    def __init__(self, in_channels: int, cfg: BackboneCfg, norm: NormFactory, act: Callable[[], nn.Module],
                 position: str = "before_act"):
        super().__init__()
        self._cna = lambda cin, cout, k, s, p: conv_norm_act(cin, cout, k, s, p, norm, act, position)
        self._stage = lambda block, cin, planes, n, stride: self._blocks(block, cin, planes, n, stride, norm, act,
                                                                         position)
        depth = cfg.resolved_depth
        self.features = self._text(in_channels, cfg) if depth == "text" else self._imagenet(in_channels, cfg, depth)
        self.dropout = nn.Dropout(cfg.dropout or 0.0)
        del self._cna, self._stage  # builders only: keep the module free of closures

    @staticmethod
    def _blocks(block, cin, planes, n, stride, norm, act, position) -> tuple[nn.Sequential, int]:
        layers = []
        for i in range(n):
            layers.append(block(cin, planes, stride if i == 0 else 1, norm, act, position))
            cin = planes * block.expansion
        return nn.Sequential(*layers), cin

    def _imagenet(self, cin: int, cfg: BackboneCfg, depth: int) -> nn.Sequential:
        block, counts = IMAGENET[depth]
        c = scaled(64, cfg)
        layers: list[nn.Module] = [self._cna(cin, c, 7, 2, 3), nn.MaxPool2d(3, 2, 1)]  # (B, 64, H/4, W/4)
        for i, n in enumerate(counts):
            stage, c = self._stage(block, c, scaled(64 * 2 ** i, cfg), n, 1 if i == 0 else (2, 1))
            layers.append(stage)                                   # (B, C_i, H/2^(2+i), W/4)
        self.out_channels = c
        return nn.Sequential(*layers)

    def _text(self, cin: int, cfg: BackboneCfg) -> nn.Sequential:
        c = [scaled(w, cfg) for w in (32, 64, 128, 256, 512, 512)]
        s1, c1 = self._stage(BasicBlock, c[1], c[2], 1, 1)
        s2, c2 = self._stage(BasicBlock, c1, c[3], 2, 1)
        s3, c3 = self._stage(BasicBlock, c2, c[4], 5, 1)
        s4, c4 = self._stage(BasicBlock, c3, c[5], 3, 1)
        self.out_channels = c[5]
        return nn.Sequential(
            self._cna(cin, c[0], 3, 1, 1), self._cna(c[0], c[1], 3, 1, 1),
            nn.MaxPool2d(2, 2),                                    # (B, 64, H/2, W/2)
            s1, self._cna(c1, c1, 3, 1, 1),
            nn.MaxPool2d(2, 2),                                    # (B, 128, H/4, W/4)
            s2, self._cna(c2, c2, 3, 1, 1),
            nn.MaxPool2d(2, (2, 1), (0, 1)),                       # (B, 256, H/8, W/4+1)
            s3, self._cna(c3, c3, 3, 1, 1),
            s4,
            self._cna(c4, c4, 2, (2, 1), (0, 1)),                  # (B, 512, H/16, W/4+2)
            self._cna(c4, c4, 2, 1, 0),                            # (B, 512, H/16-1, W/4+1)
        )

    def forward(self, x):
        return self.dropout(self.features(x))
