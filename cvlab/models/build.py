"""`build_model(cfg, num_classes)`: the one place names become modules."""

from __future__ import annotations

import torch
from torch import nn

from ..config.model import ModelCfg
from ..errors import CvlabError
from .heads import HEADS
from .norms import make_act, make_norm
from .sequence import SEQUENCES
from .vgg import VGG

BACKBONES = {"vgg": VGG}
DEFAULT_HIDDEN = {"tiny": 96, "small": 192, "standard": 256}


class Recognizer(nn.Module):
    """image (B, C, H, W) in [0, 1] -> backbone -> width sequence -> sequence stage -> head."""

    def __init__(self, backbone: nn.Module, sequence: nn.Module, head: nn.Module, dropout: float = 0.0):
        super().__init__()
        self.backbone, self.sequence, self.head = backbone, sequence, head
        self.dropout = nn.Dropout(dropout)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        f = self.backbone(images * 2.0 - 1.0)           # [0, 1] -> [-1, 1]; (B, C, H', W')
        f = f.mean(dim=2)                                # (B, C, H', W') -> (B, C, W'): collapse the height
        return f.transpose(1, 2)                         # (B, C, W') -> (B, T=W', C)

    def forward(self, images, targets=None, lengths=None):
        x = self.sequence(self.features(images))        # (B, T, C_seq)
        return self.head(self.dropout(x), targets, lengths)

    def loss(self, logits, targets, lengths):
        return self.head.loss(logits, targets, lengths)

    def decode(self, logits):
        return self.head.decode(logits)


def build_model(cfg: ModelCfg, num_classes: int, in_channels: int = 1) -> Recognizer:
    for key, name, table in (("model.backbone.name", cfg.backbone.name, BACKBONES),
                             ("model.sequence.name", cfg.sequence.name, SEQUENCES),
                             ("model.head.name", cfg.head.name, HEADS)):
        if name not in table:
            raise CvlabError(f"{key}: unknown {name!r} (valid: {', '.join(table)})")
    norm, act = make_norm(cfg.norm), make_act(cfg.act)
    backbone = BACKBONES[cfg.backbone.name](in_channels, cfg.backbone.size, norm, act, cfg.norm.position,
                                           cfg.backbone.norm_at)
    hidden = cfg.sequence.hidden or DEFAULT_HIDDEN[cfg.backbone.size]
    sequence = SEQUENCES[cfg.sequence.name](backbone.out_channels, hidden, cfg.sequence.layers)
    head = HEADS[cfg.head.name](sequence.out_channels, num_classes)
    model = Recognizer(backbone, sequence, head, cfg.dropout)
    model.norm_adjustments = dict(getattr(norm, "adjusted", {}))
    return model
