"""Backbones, norms, sequence stages and heads. Never imports cvlab.data."""

from .build import BACKBONES, TRANSFORMS, Built, Recognizer, build_model
from .heads import HEADS
from .norms import ACTS, NORMS
from .sequence import SEQUENCES

__all__ = ["ACTS", "BACKBONES", "HEADS", "NORMS", "SEQUENCES", "TRANSFORMS", "Built", "Recognizer",
           "build_model"]
