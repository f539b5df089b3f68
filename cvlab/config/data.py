"""The `data` section: charset, image geometry, and the train/val/test dataset lists.

Each dataset entry is one spec model with a literal `type`; add a family by writing its spec here and putting it
in `DATASET_SPECS`. The loaders that read these specs live in `cvlab.data`.
"""

from typing import Annotated, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from .base import Section
from .spec import SpecBase
from .synth import SynthSpec


class ImageCfg(Section):
    height: int = Field(32, ge=8, description="input height in pixels")
    width: int = Field(100, ge=8, description="input width in pixels (the maximum width with keep_ratio)")
    channels: Literal[1, 3] = 1
    resize: Literal["fixed", "keep_ratio"] = Field(
        "fixed", description="fixed: stretch to height×width; keep_ratio: scale to height, pad right to width"
    )
    interpolation: Literal["bilinear", "bicubic"] = Field(
        "bilinear", description="resampling filter of the resize (bicubic: DTRB's, set by cvlab import dtrb)")


class FileSpec(SpecBase):
    """A dataset read from disk as its authors distribute it (REFERENCE §1)."""

    root: str = Field(description="folder where the original archive was unpacked (original names kept)")
    strict: bool = Field(True, description="malformed annotation line: error with file:line (false: skip and count)")

    @property
    def root_path(self):
        from pathlib import Path

        return Path(self.root).expanduser()


class LmdbSpec(FileSpec):
    """Standard text-recognition LMDB (num-samples, image-%09d, label-%09d; 1-based), found recursively."""

    type: Literal["lmdb"] = "lmdb"
    split: str | None = Field(None, description="sub-folder of root to read (e.g. evaluation/IIIT5k_3000)")


class FolderSpec(FileSpec):
    """A folder of images with a label file of `relative/path<TAB>label` lines."""

    type: Literal["folder"] = "folder"
    labels: str = Field("gt.txt", description="label file, relative to root (or absolute)")
    images: str | None = Field(None, description="folder the image paths are relative to (default: root)")


class Iiit5kSpec(FileSpec):
    type: Literal["iiit5k"] = "iiit5k"
    split: Literal["train", "test"] = "test"
    labels: str | None = Field(None, description="the .mat file (default: traindata.mat / testdata.mat in root)")
    images: str | None = Field(None, description="folder ImgName paths are relative to (default: root)")


class SvtSpec(FileSpec):
    type: Literal["svt"] = "svt"
    split: Literal["train", "test"] = "test"
    labels: str | None = Field(None, description="the XML file (default: train.xml / test.xml in root)")
    images: str | None = Field(None, description="folder imageName paths are relative to (default: root)")


class _IcdarSpec(FileSpec):
    split: Literal["train", "test"] = "test"
    labels: str | None = Field(None, description="GT file (default: the original name for the split)")
    images: str | None = Field(None, description="folder of word_N.png crops (default: the original name)")
    subset_file: str | None = Field(None, description="keep only the image names listed (one per line)")

    @field_validator("subset", mode="before", check_fields=False)
    @classmethod
    def _subset_text(cls, v):
        return str(v) if isinstance(v, int) else v  # YAML reads `subset: 857` as a number


class Ic13Spec(_IcdarSpec):
    type: Literal["ic13"] = "ic13"
    subset: Literal["full", "1015", "857"] = Field(
        "full", description="1015: only alphanumeric labels; 857: also at least 3 characters"
    )


class Ic15Spec(_IcdarSpec):
    type: Literal["ic15"] = "ic15"
    subset: Literal["full", "1811"] = Field("full", description="1811 is a fixed list: needs subset_file")

    @model_validator(mode="after")
    def _fixed_list(self):
        if self.subset == "1811" and not self.subset_file:
            raise ValueError("subset 1811 is a fixed list, not a rule: give subset_file (one image name a line)")
        return self


class IamSpec(FileSpec):
    type: Literal["iam"] = "iam"
    level: Literal["words", "lines"] = "lines"
    split: str | None = Field(None, description="a split list file, or its name in splits_dir (test -> testset.txt)")
    splits_dir: str | None = Field(None, description="folder holding the split lists (default: root)")
    labels: str | None = Field(None, description="annotation file (default: ascii/words.txt or ascii/lines.txt)")
    images: str | None = Field(None, description="image folder (default: words/ or lines/ in root)")
    keep_err: bool = Field(True, description="keep rows marked `err` (lines: always fine; words: box may be bad)")


class RimesSpec(FileSpec):
    type: Literal["rimes"] = "rimes"
    level: Literal["words", "lines"] = "lines"
    split: Literal["train", "val", "test"] = "test"
    labels: str | None = Field(None, description="XML (lines) or GT text file (words); default: original name")
    images: str | None = Field(None, description="folder of the page/word images (default: searched in root)")


class _CasiaSpec(FileSpec):
    split: Literal["train", "test"] | None = Field(
        None, description="the official split: the folders below root named *trn*/*train* or *tst*/*test* "
        "(HWDB1.1trn_gnt, HWDB2.0Test, ...); default: every file below root (or root itself, a file)")


class CasiaGntSpec(_CasiaSpec):
    """CASIA-HWDB1.x isolated characters: `.gnt` files (root: one file, or a folder read recursively)."""

    type: Literal["casia_gnt"] = "casia_gnt"


class CasiaDgrlSpec(_CasiaSpec):
    """CASIA-HWDB2.x text lines: `.dgrl` page files (root: one file, or a folder read recursively)."""

    type: Literal["casia_dgrl"] = "casia_dgrl"
    garbage_lines: Literal["keep", "drop"] = Field(
        "keep", description="a line whose label holds garbage marks (0xFFFF) or undecodable codes: keep it with "
        "those removed from the label, or drop it (counted either way)")


# Every dataset family's spec; `type` selects one.
DATASET_SPECS = (SynthSpec, LmdbSpec, FolderSpec, Iiit5kSpec, SvtSpec, Ic13Spec, Ic15Spec, IamSpec, RimesSpec,
                 CasiaGntSpec, CasiaDgrlSpec)
DatasetSpec = Annotated[Union[DATASET_SPECS], Field(discriminator="type")]  # noqa: UP007
DATASET_TYPES = tuple(s.model_fields["type"].default for s in DATASET_SPECS)


class CharsetFile(Section):
    file: str = Field(description="UTF-8 text file; every character except newlines is a symbol")


class CharsetChars(Section):
    chars: str = Field(description="the symbols themselves, in order (duplicates removed)")

    @field_validator("chars")
    @classmethod
    def _not_empty(cls, chars):
        if not chars:
            raise ValueError("must not be empty (write the symbols, e.g. {chars: '0123456789'}, or use a preset)")
        return chars


# Charset presets by name (the characters are built in cvlab.data.charset). A bare string must be one of these:
# a typo of a preset ("lower37") must not silently become a 7-symbol literal charset.
CHARSET_PRESETS = ("digits", "lower36", "alnum62", "printable94", "gb2312-l1")
CHARSET_FORMS = ("preset", "chars", "file")  # the union's tags; error keys leave them out (config.load)


def _charset_form(v) -> str | None:
    """Which form a charset is written in, so a mistake is reported against that form alone (a plain union
    reports every member's complaint: four lines for `{chars: ""}`)."""
    if isinstance(v, str):
        return "preset"
    if isinstance(v, (CharsetChars, CharsetFile)):
        return "chars" if isinstance(v, CharsetChars) else "file"
    if isinstance(v, dict) and ("chars" in v or "file" in v):
        return "file" if "chars" not in v else "chars"
    return None


CharsetSpec = Annotated[
    Union[Annotated[str, Tag("preset")], Annotated[CharsetChars, Tag("chars")],  # noqa: UP007
          Annotated[CharsetFile, Tag("file")]],
    Discriminator(_charset_form, custom_error_type="charset_form",
                  custom_error_message=f"expected a preset ({', '.join(CHARSET_PRESETS)}), {{chars: literal "
                                       f"characters}} or {{file: path}}")]


class DataCfg(Section):
    charset: CharsetSpec = Field(
        "lower36", description="preset (digits, lower36, alnum62, printable94, gb2312-l1), {chars: literal characters}, "
        "or {file: path}"
    )
    image: ImageCfg = ImageCfg()
    train: list[DatasetSpec] = Field(default_factory=lambda: [SynthSpec(seed=0)])
    val: list[DatasetSpec] = Field(default_factory=lambda: [SynthSpec(name="synth_val", size=1000, seed=1)])
    test: list[DatasetSpec] = Field(default_factory=list)
    workers: int = Field(0, ge=0, description="DataLoader worker processes (0 = load in the main process)")
    max_label_length: int | None = Field(
        None, ge=1, description="drop training labels longer than this (DTRB's batch_max_length; default: only what "
        "the head cannot fit: CTC frames, attention max_length), counted in the data report")
    group_by: Literal["none", "source", "writer", "form", "page", "image"] = Field(
        "none", description="train batches of groups of group_size samples that share this (synth: source, with "
        "same_source; iam: form; rimes lines: page; svt: image): non-i.i.d. batches, as real data read in order")
    group_size: int = Field(2, ge=2, description="samples per group with group_by (batch_size must be a multiple)")

    @field_validator("charset")
    @classmethod
    def _known_preset(cls, charset):
        if isinstance(charset, str) and charset not in CHARSET_PRESETS:
            raise ValueError(f"{charset!r} is not a preset (valid: {', '.join(CHARSET_PRESETS)}); write literal "
                             f"characters as {{chars: {charset!r}}}, or a file as {{file: path}}")
        return charset

    @field_validator("train")
    @classmethod
    def _train_not_distorted(cls, specs):
        for i, spec in enumerate(specs):
            if spec.augment:
                raise ValueError(f"item {i} has `augment`: per-dataset ops make a fixed distorted val/test set; training "
                                 "augmentation is the experiment's top-level `augment:` list (fresh draws each step)")
        return specs
