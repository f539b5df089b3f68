"""The `augment` section: an ordered list of ops, each a spec with a literal `op` and its own parameters.

Add an op by writing its spec here, putting it in `AUGMENT_SPECS`, and registering its class in
`cvlab.augment.AUGMENTS` under the same name. Units are chosen so one YAML works at any image size: angles in
degrees, distances as shares of the image (or of one text segment), probabilities per image.
"""

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from .base import Section


def _check_range(name: str, r: tuple, low: float | None = None) -> None:
    if r[0] > r[1]:
        raise ValueError(f"{name} must be [low, high] with low <= high, got {list(r)}")
    if low is not None and r[0] < low:
        raise ValueError(f"{name} must be >= {low}, got {list(r)}")


class OpSpec(Section):
    p: float = Field(0.5, ge=0, le=1, description="probability of applying the op to each image of a batch")


# --- geometric

class RotateSpec(OpSpec):
    op: Literal["rotate"] = "rotate"
    degrees: float = Field(5.0, ge=0, le=180, description="angle drawn from [-degrees, degrees]")


class AffineSpec(OpSpec):
    op: Literal["affine"] = "affine"
    scale: tuple[float, float] = Field((0.9, 1.1), description="isotropic scale drawn from [low, high]")
    shear: float = Field(10.0, ge=0, lt=80, description="horizontal shear (italic slant) in degrees, ±shear")
    translate: float = Field(0.05, ge=0, le=0.5, description="shift up to this share of width and height")

    @model_validator(mode="after")
    def _ranges(self):
        _check_range("scale", self.scale, low=0.05)
        return self


class PerspectiveSpec(OpSpec):
    op: Literal["perspective"] = "perspective"
    distortion: float = Field(0.2, ge=0, le=0.9, description="each corner moves inward up to this share of "
                                                             "half the width and half the height")


class ElasticSpec(OpSpec):
    op: Literal["elastic"] = "elastic"
    alpha: float = Field(1.0, ge=0, description="displacement strength (normalized image units)")
    sigma: float = Field(8.0, gt=0, description="smoothness of the displacement field in pixels")


# --- text warps (Learn to Augment, Luo et al. CVPR 2020): fiducial points on the top and bottom borders

Warp = Annotated[Literal["tps", "mls"], Field(description="tps: thin-plate spline; mls: similarity moving least "
                                                         "squares, the deformation of the authors' augmentation tool")]
Magnitudes = Annotated[Literal["cvlab", "authors"], Field(
    description="authors: the moves of the authors' tool (Text-Image-Augmentation) instead of `radius`: distort "
    "corners inward by up to 1/3 of a segment's width, inner points ±1/6 of it in x and y; stretch ±0.4 of a "
    "segment (as cvlab's default); perspective corners by up to half the height")]


class TextDistortSpec(OpSpec):
    op: Literal["text_distort"] = "text_distort"
    magnitudes: Magnitudes = "cvlab"
    warp: Warp = "tps"
    segments: int = Field(4, ge=1, le=64, description="the borders are cut into this many segments")
    radius: float = Field(0.25, ge=0, le=0.5, description="max move of a corner point (inner points: half), as a "
                                                          "share of the image height; inward, so points stay inside")


class TextStretchSpec(OpSpec):
    op: Literal["text_stretch"] = "text_stretch"
    magnitudes: Magnitudes = "cvlab"
    warp: Warp = "tps"
    segments: int = Field(4, ge=1, le=64)
    radius: float = Field(0.4, ge=0, lt=0.5, description="max horizontal move of each inner boundary, as a "
                                                         "share of the segment width (< 0.5 keeps glyph order)")


class TextPerspectiveSpec(OpSpec):
    op: Literal["text_perspective"] = "text_perspective"
    magnitudes: Magnitudes = "cvlab"
    warp: Warp = "tps"
    segments: int = Field(4, ge=1, le=64)
    radius: float = Field(0.3, ge=0, lt=0.5, description="max vertical move of each corner toward the other "
                                                         "row, as a share of the image height")


# --- photometric

class GaussianBlurSpec(OpSpec):
    op: Literal["gaussian_blur"] = "gaussian_blur"
    sigma: tuple[float, float] = Field((0.1, 1.2), description="blur sigma in pixels drawn from [low, high]")

    @model_validator(mode="after")
    def _ranges(self):
        _check_range("sigma", self.sigma, low=0.01)
        return self


class MotionBlurSpec(OpSpec):
    op: Literal["motion_blur"] = "motion_blur"
    kernel: int = Field(5, ge=3, le=31, description="kernel length in pixels (odd)")
    angle: float = Field(90.0, ge=0, le=180, description="motion direction drawn from [-angle, angle] degrees")

    @model_validator(mode="after")
    def _odd(self):
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, got {self.kernel}")
        return self


class ColorJitterSpec(OpSpec):
    op: Literal["color_jitter"] = "color_jitter"
    brightness: float = Field(0.3, ge=0, le=1, description="add a value drawn from [-brightness, brightness]")
    contrast: float = Field(0.3, ge=0, le=1, description="scale around the image mean by [1-c, 1+c]")
    gamma: float = Field(0.2, ge=0, le=2, description="raise to exp(g), g drawn from [-gamma, gamma]")


class NoiseSpec(OpSpec):
    op: Literal["noise"] = "noise"
    std: float = Field(0.05, ge=0, le=1, description="std of additive Gaussian noise on the 0..1 scale")


class InvertSpec(OpSpec):
    op: Literal["invert"] = "invert"


class JpegSpec(OpSpec):
    op: Literal["jpeg"] = "jpeg"
    quality: tuple[float, float] = Field((30, 90), description="JPEG quality drawn from [low, high] (1-100)")

    @model_validator(mode="after")
    def _ranges(self):
        _check_range("quality", self.quality, low=1)
        if self.quality[1] > 100:
            raise ValueError(f"quality must be <= 100, got {list(self.quality)}")
        return self


# --- learned

class LearnedSpec(OpSpec):
    """Fiducial-point moves predicted by an agent network trained jointly with the recognizer."""

    op: Literal["learned"] = "learned"
    warp: Warp = "tps"
    p: float = Field(1.0, ge=0, le=1, description="probability of applying the op to each image of a batch")
    segments: int = Field(4, ge=1, le=64)
    radius: float = Field(0.25, ge=0, le=0.5, description="max move of each fiducial point, as a share of the "
                                                          "image height")
    lr: float = Field(1e-3, gt=0, description="the agent's Adam learning rate")
    explore: float = Field(0.5, gt=0, le=1, description="exploration: the share of the agent's own per-point moves "
                           "changed to another move, giving the alternative it is compared with (our default; "
                           "the paper perturbs the prediction without a published rate)")


AUGMENT_SPECS = (RotateSpec, AffineSpec, PerspectiveSpec, ElasticSpec, TextDistortSpec, TextStretchSpec,
                 TextPerspectiveSpec, GaussianBlurSpec, MotionBlurSpec, ColorJitterSpec, NoiseSpec, InvertSpec,
                 JpegSpec, LearnedSpec)
AugmentSpec = Annotated[Union[AUGMENT_SPECS], Field(discriminator="op")]  # noqa: UP007
AUGMENT_OPS = tuple(s.model_fields["op"].default for s in AUGMENT_SPECS)
