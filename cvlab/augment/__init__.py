"""Batched augmentation on the training device: photometric, geometric, text warps and a learned warp.

`AUGMENTS` maps an op name (the `op` of an `augment` list item) to its class; `build_pipeline` turns the
experiment's list into one callable `Pipeline(images, generator)`. Every op keeps shape, dtype and the [0, 1]
range, and draws its randomness only from the generator it is given.
"""

from __future__ import annotations

from ..errors import CvlabError
from .base import Op, Pipeline, step_generator
from .geometric import Affine, Elastic, Perspective, Rotate
from .learned import LearnedWarp
from .photometric import ColorJitter, GaussianBlur, Invert, Jpeg, MotionBlur, Noise
from .preview import preview_grid, sample_images
from .textwarp import TextDistort, TextPerspective, TextStretch

AUGMENTS: dict[str, type[Op]] = {
    "rotate": Rotate, "affine": Affine, "perspective": Perspective, "elastic": Elastic,
    "text_distort": TextDistort, "text_stretch": TextStretch, "text_perspective": TextPerspective,
    "gaussian_blur": GaussianBlur, "motion_blur": MotionBlur, "color_jitter": ColorJitter, "noise": Noise,
    "invert": Invert, "jpeg": Jpeg, "learned": LearnedWarp,
}


def build_pipeline(specs) -> Pipeline:
    """The experiment's `augment` list (validated specs) -> a Pipeline, ops in list order."""
    ops = []
    for i, spec in enumerate(specs):
        cls = AUGMENTS.get(spec.op)
        if cls is None:
            raise CvlabError(f"augment[{i}].op: {spec.op!r} has no implementation (valid: {', '.join(AUGMENTS)})")
        ops.append(cls(spec))
    return Pipeline(ops)


__all__ = ["AUGMENTS", "Op", "Pipeline", "build_pipeline", "preview_grid", "sample_images", "step_generator"]
