"""`build_model(cfg, num_classes)`: the one place names become modules."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..config.model import ModelCfg
from ..errors import CvlabError
from .alexnet import AlexNet
from .googlenet import GoogLeNet
from .heads import HEADS
from .init import INITS
from .norms import apply_weight_norm, degenerate_groups, make_act, make_norm, resolved_position
from .resnet import ResNet
from .sequence import SEQUENCES
from .tps import TPS, DtrbTPS
from .vgg import VGG

BACKBONES = {"alexnet": AlexNet, "vgg": VGG, "googlenet": GoogLeNet, "resnet": ResNet}
TRANSFORMS = {"none": None, "tps": TPS, "tps_dtrb": DtrbTPS}
DEFAULT_HIDDEN = {"tiny": 96, "small": 192, "standard": 256}


class Recognizer(nn.Module):
    """image (B, C, H, W) in [0, 1] -> [transform] -> backbone -> width sequence -> sequence stage -> head."""

    def __init__(self, backbone: nn.Module, sequence: nn.Module, head: nn.Module, dropout: float = 0.0,
                 transform: nn.Module | None = None):
        super().__init__()
        self.transform = transform if transform is not None else nn.Identity()
        self.backbone, self.sequence, self.head = backbone, sequence, head
        self.dropout = nn.Dropout(dropout)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.transform(images * 2.0 - 1.0)          # [0, 1] -> [-1, 1]; rectified, same size
        f = self.backbone(x)                             # (B, C, H', W')
        f = f.mean(dim=2)                                # (B, C, H', W') -> (B, C, W'): collapse the height
        return f.transpose(1, 2)                         # (B, C, W') -> (B, T=W', C)

    def forward(self, images, targets=None, lengths=None):
        x = self.sequence(self.features(images))        # (B, T, C_seq)
        return self.head(self.dropout(x), targets, lengths)

    def loss(self, logits, targets, lengths):
        return self.head.loss(logits, targets, lengths)

    def decode(self, logits):
        return self.head.decode(logits)


def _lookup(key: str, name: str, table: dict):
    if name not in table:
        raise CvlabError(f"{key}: unknown {name!r} (valid: {', '.join(table)})")
    return table[name]


class Built(NamedTuple):
    """`build_model`'s result: the model and what building it had to change, for the caller to report.
    - `adjustments`: {channels: groups used} for every group count group norm had to change;
    - `degenerate`: {layer name: 'instance' | 'layer'} for every group norm layer that is one of those."""

    model: Recognizer
    adjustments: dict[int, int]
    degenerate: dict[str, str]


def build_model(cfg: ModelCfg, num_classes: int, in_channels: int = 1) -> Built:
    backbone_cls = _lookup("model.backbone.name", cfg.backbone.name, BACKBONES)
    sequence_cls = _lookup("model.sequence.name", cfg.sequence.name, SEQUENCES)
    head_cls = _lookup("model.head.name", cfg.head.name, HEADS)
    transform_cls = _lookup("model.transform", cfg.transform, TRANSFORMS)
    init = _lookup("model.init", cfg.init, INITS)
    norm, act = make_norm(cfg.norm), make_act(cfg.act)
    position = resolved_position(cfg.norm)  # the norm's published position unless model.norm.position says
    transform = transform_cls(in_channels, cfg.backbone, norm, act, position) if transform_cls else None
    backbone = backbone_cls(in_channels, cfg.backbone, norm, act, position)
    hidden = cfg.sequence.hidden or max(8, round(DEFAULT_HIDDEN[cfg.backbone.size] * cfg.backbone.width))
    sequence = sequence_cls(backbone.out_channels, hidden, cfg.sequence.layers)
    head = head_cls.from_cfg(sequence.out_channels, num_classes, cfg.head)
    model = Recognizer(backbone, sequence, head, cfg.dropout, transform)
    init(model)  # before weight norm: its g is the norm of the initial weight
    if hasattr(model.head, "init_blank"):  # model.init: dtrb zeroes every bias
        model.head.init_blank()
    if norm.traits.reparametrizes:
        apply_weight_norm(model)
    degenerate = degenerate_groups(model) if norm.traits.grouped else {}
    return Built(model, dict(norm.adjusted), degenerate)
