"""The `data` section: charset, image geometry, and the train/val/test dataset lists.

Each dataset entry is one spec model with a literal `type`; add a family by writing its spec here and putting it
in `DATASET_SPECS`. The loaders that read these specs live in `cvlab.data`.
"""

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from .base import Section


class ImageCfg(Section):
    height: int = Field(32, ge=8, description="input height in pixels")
    width: int = Field(100, ge=8, description="input width in pixels (the maximum width with keep_ratio)")
    channels: Literal[1, 3] = 1
    resize: Literal["fixed", "keep_ratio"] = Field(
        "fixed", description="fixed: stretch to height×width; keep_ratio: scale to height, pad right to width"
    )


class SpecBase(Section):
    name: str | None = Field(None, description="display name in tables and TensorBoard tags (default: derived)")
    limit: int | None = Field(None, ge=1, description="use only the first N samples")


class SynthSpec(SpecBase):
    """Words rendered on the fly; sample i of a given seed is always the same image."""

    type: Literal["synth"] = "synth"
    size: int = Field(100_000, ge=1, description="number of distinct samples (indices 0..size-1)")
    seed: int = Field(0, description="train and val splits differ by seed")
    dict_ratio: float = Field(0.5, ge=0, le=1, description="share of dictionary words; the rest are random strings")
    min_len: int = Field(3, ge=1)
    max_len: int = Field(10, ge=1)
    font_size: tuple[int, int] = Field((26, 34), description="font size range in pixels before resizing")
    fonts: list[str] = Field(default_factory=list, description="extra .ttf/.otf files or folders; `system` adds the system fonts")
    noise: float = Field(0.03, ge=0, le=1, description="std of Gaussian pixel noise on a 0..1 scale")
    color: Literal["random", "dark_on_light"] = "random"

    @model_validator(mode="after")
    def _ranges(self):
        if self.min_len > self.max_len:
            raise ValueError(f"min_len ({self.min_len}) is larger than max_len ({self.max_len})")
        if self.font_size[0] > self.font_size[1] or self.font_size[0] < 6:
            raise ValueError(f"font_size must be [low, high] with 6 <= low <= high, got {list(self.font_size)}")
        return self


# Every dataset family's spec; `type` selects one.
DATASET_SPECS = (SynthSpec,)
DatasetSpec = Annotated[Union[DATASET_SPECS], Field(discriminator="type")]  # noqa: UP007
DATASET_TYPES = tuple(s.model_fields["type"].default for s in DATASET_SPECS)


class CharsetFile(Section):
    file: str = Field(description="UTF-8 text file; every character except newlines is a symbol")


class DataCfg(Section):
    charset: str | CharsetFile = Field(
        "lower36", description="preset (digits, lower36, alnum62, printable94, gb2312-l1), literal characters, or {file: path}"
    )
    image: ImageCfg = ImageCfg()
    train: list[DatasetSpec] = Field(default_factory=lambda: [SynthSpec(seed=0)])
    val: list[DatasetSpec] = Field(default_factory=lambda: [SynthSpec(name="synth_val", size=1000, seed=1)])
    test: list[DatasetSpec] = Field(default_factory=list)
    workers: int = Field(0, ge=0, description="DataLoader worker processes (0 = load in the main process)")
