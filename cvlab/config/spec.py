"""What every dataset spec has: a display name, a sample limit, and the fixed distortions of a val/test copy."""

from pydantic import Field, field_validator

from .augment import AugmentSpec
from .base import Section


class SpecBase(Section):
    name: str | None = Field(None, description="display name in tables and TensorBoard tags (default: derived)")
    limit: int | None = Field(None, ge=1, description="use only the first N samples")
    augment: list[AugmentSpec] = Field(
        default_factory=list, description="val/test only: distort this set's images with these ops, the same way "
        "on every run (each image's draw is seeded by its index), to score robustness on a distorted copy")

    @field_validator("augment")
    @classmethod
    def _fixed_ops_only(cls, ops):
        for i, op in enumerate(ops):
            if op.op == "learned":
                raise ValueError(f"item {i} is `learned`, which adapts to the recognizer during training; a fixed "
                                 "distorted set needs ops with fixed distributions (rotate, text_distort, ...)")
        return ops
