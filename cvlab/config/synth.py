"""The `type: synth` dataset spec: the MJSynth recipe (Jaderberg et al. 2014) stage by stage.

Each stage has its own block with a probability `p` (per image) and its parameters; `p: 0` switches a stage off.
`style: plain` switches every stage off that the YAML does not set explicitly: flat colours, no border, shadow,
distortion, texture or degradation, loose margins (the renderer as it was before the recipe). Sizes are shares of
the rendered text height, so one YAML works at any font size.
"""

from typing import Literal

from pydantic import Field, model_validator

from .augment import _check_range
from .base import Section
from .spec import SpecBase


class Stage(Section):
    p: float = Field(0.5, ge=0, le=1, description="probability that the stage runs on an image")


def _stage(cls, p: float):
    return Field(default_factory=lambda: cls(p=p))


class WordsCfg(Section):
    """What is written: shares of each source (normalised; a source the charset cannot write is skipped)."""

    lexicon: float = Field(0.7, ge=0, description="English words (the 90k most frequent, as MJSynth's 90k)")
    random: float = Field(0.1, ge=0, description="random strings over the charset")
    digits: float = Field(0.1, ge=0, description="numbers: years, prices, phone-like groups")
    mixed: float = Field(0.1, ge=0, description="mixed tokens: 3rdAve, tetley.co.uk, A4, 24h, No.5")
    builtin_only: bool = Field(False, description="use the small built-in word list (1,087 words) only")


class CaseCfg(Section):
    """Case is drawn independently of the word, since lower36 folds case at scoring: the model must see capitals
    even when it never emits them. Shares are normalised."""

    lower: float = Field(0.3, ge=0)
    upper: float = Field(0.35, ge=0)
    title: float = Field(0.3, ge=0, description="Capitalised")
    random: float = Field(0.05, ge=0, description="each letter's case drawn at random")


class CurveCfg(Stage):
    amount: float = Field(0.35, ge=0, le=2, description="baseline bend at the word's ends, in text heights")


class BorderCfg(Stage):
    width: tuple[float, float] = Field((0.04, 0.12), description="outline width, share of the text height")


class ShadowCfg(Stage):
    offset: tuple[float, float] = Field((0.03, 0.12), description="shadow shift, share of the text height")
    blur: tuple[float, float] = Field((0.0, 0.08), description="shadow softness, share of the text height")


class DistortCfg(Stage):
    perspective: float = Field(0.12, ge=0, le=0.5, description="corner jitter, share of the text height")
    rotate: float = Field(4.0, ge=0, le=45, description="rotation drawn from [-rotate, rotate] degrees")
    shear: float = Field(0.15, ge=0, le=1, description="italic-like slant drawn from [-shear, shear]")


BackgroundKind = Literal["gradient", "noise", "shapes", "stripes", "word"]


class BackgroundCfg(Stage):
    kinds: list[BackgroundKind] = Field(
        default_factory=lambda: ["gradient", "noise", "shapes", "stripes", "word"],
        description="procedural textures to draw from (1-2 per image)")
    blend: tuple[float, float] = Field((0.05, 0.3), description="strength of the texture blended over the text")


class CropCfg(Section):
    margin_y: tuple[float, float] = Field((0.0, 0.12), description="top/bottom margin, share of the ink's height")
    margin_x: tuple[float, float] = Field((0.0, 0.3), description="left/right margin, share of the ink's height")
    neighbour_p: float = Field(0.2, ge=0, le=1, description="probability of a cut-off glyph at an edge")


class BlurCfg(Stage):
    sigma: tuple[float, float] = Field((0.3, 1.2), description="Gaussian sigma in output pixels (32 px height)")


class NoiseCfg(Stage):
    std: tuple[float, float] = Field((0.01, 0.06), description="Gaussian pixel noise on a 0..1 scale")


class JpegCfg(Stage):
    quality: tuple[int, int] = Field((15, 80), description="JPEG quality drawn from [low, high]")


class LowresCfg(Stage):
    scale: tuple[float, float] = Field((0.3, 0.7), description="down-sample factor before up-sampling back")


class LightingCfg(Stage):
    strength: tuple[float, float] = Field((0.15, 0.5), description="depth of the uneven-lighting gradient")


class CurriculumCfg(Section):
    """From clean short words to the full recipe over the first `samples` training samples (Bengio et al. 2009's
    curriculum, as used to shorten CTC's all-blank plateau). Sample i's place in the ramp is i / samples: with a
    curriculum the training stream reads the synthetic set in index order (its samples are i.i.d. by
    construction, so order costs nothing), and sample i stays a pure function of (seed, i)."""

    samples: int = Field(0, ge=0, description="length of the ramp in training samples; 0 = no curriculum")
    start: float = Field(0.0, ge=0, le=1, description="every stage's probability at sample 0, as a share of its own")
    max_len: int = Field(4, ge=1, description="longest label at sample 0; the cap grows linearly to the spec's max_len")


STAGES = ("curve", "border", "shadow", "distort", "background", "blur", "noise", "jpeg", "lowres", "lighting")


class SynthSpec(SpecBase):
    """Words rendered on the fly by the MJSynth recipe; sample i of a given seed is always the same image."""

    type: Literal["synth"] = "synth"
    size: int = Field(100_000, ge=1, description="number of distinct samples (indices 0..size-1)")
    seed: int = Field(0, description="train and val splits differ by seed")
    style: Literal["mjsynth", "plain"] = Field(
        "mjsynth", description="plain: every stage not set in the YAML is off (flat, clean, loose crops)")
    min_len: int = Field(1, ge=1)
    max_len: int = Field(12, ge=1, description="12 fits any label in the 24 CTC frames of a 100 px wide CRNN")
    words: WordsCfg = WordsCfg()
    case: CaseCfg = CaseCfg()
    fonts: list[str] = Field(default_factory=list, description="extra .ttf/.otf files or folders; `system` adds the system fonts")
    font_size: tuple[int, int] = Field((22, 34), description="font size range in pixels before resizing")
    kerning: tuple[float, float] = Field((-0.03, 0.2), description="extra space between glyphs, share of the size")
    weight: bool = Field(True, description="random weight on variable fonts (thin to black)")
    color: Literal["natural", "random", "dark_on_light"] = Field(
        "natural", description="natural: sign-like text/background pairs with jitter; random: any legible pair")
    curve: CurveCfg = _stage(CurveCfg, 0.15)
    border: BorderCfg = _stage(BorderCfg, 0.15)
    shadow: ShadowCfg = _stage(ShadowCfg, 0.2)
    distort: DistortCfg = _stage(DistortCfg, 0.7)
    background: BackgroundCfg = _stage(BackgroundCfg, 0.8)
    crop: CropCfg = CropCfg()
    blur: BlurCfg = _stage(BlurCfg, 0.4)
    noise: NoiseCfg = _stage(NoiseCfg, 0.5)
    jpeg: JpegCfg = _stage(JpegCfg, 0.3)
    lowres: LowresCfg = _stage(LowresCfg, 0.25)
    lighting: LightingCfg = _stage(LightingCfg, 0.35)
    same_source: int = Field(
        1, ge=1, description="k consecutive samples (a run: index // k) share every style draw: font, size, weight, "
        "kerning, colours, layout, stages and their parameters, as crops of one photograph; 1 = independent")
    same_word: bool = Field(False, description="with same_source > 1: the run's samples share their word as well "
                            "(only the noise grain differs)")
    device_stages: bool = Field(
        False, description="render only the glyph layer (text mask, label, per-sample stage parameters) on the CPU; "
        "colours, border, shadow, textures, blending and degradations run batched on the training device "
        "(docs/synthetic-data.md, Rendering on the training device)")
    curriculum: CurriculumCfg = CurriculumCfg()

    @model_validator(mode="before")
    @classmethod
    def _plain_style(cls, data):
        if isinstance(data, dict) and data.get("style") == "plain":
            data = dict(data)
            for stage in STAGES:
                data.setdefault(stage, {"p": 0.0})
            data.setdefault("crop", {"margin_y": (0.05, 0.2), "margin_x": (0.1, 0.4), "neighbour_p": 0.0})
            data.setdefault("color", "random")
            data.setdefault("case", {"lower": 1.0, "upper": 0.0, "title": 0.0, "random": 0.0})
        return data

    @model_validator(mode="after")
    def _ranges(self):
        if self.min_len > self.max_len:
            raise ValueError(f"min_len ({self.min_len}) is larger than max_len ({self.max_len})")
        _check_range("font_size", self.font_size, low=6)
        _check_range("kerning", self.kerning)
        for name, r in (("border.width", self.border.width), ("shadow.offset", self.shadow.offset),
                        ("shadow.blur", self.shadow.blur), ("background.blend", self.background.blend),
                        ("crop.margin_y", self.crop.margin_y), ("crop.margin_x", self.crop.margin_x),
                        ("blur.sigma", self.blur.sigma), ("noise.std", self.noise.std),
                        ("jpeg.quality", self.jpeg.quality), ("lowres.scale", self.lowres.scale),
                        ("lighting.strength", self.lighting.strength)):
            _check_range(name, r, low=0)
        if not 1 <= self.jpeg.quality[1] <= 95:
            raise ValueError("jpeg.quality must lie in [1, 95]")
        if self.lowres.scale[0] <= 0.05 or self.lowres.scale[1] > 1:
            raise ValueError("lowres.scale must lie in (0.05, 1]")
        if sum(self.words.model_dump(exclude={"builtin_only"}).values()) <= 0:
            raise ValueError("words: at least one source needs a share above 0")
        if sum(self.case.model_dump().values()) <= 0:
            raise ValueError("case: at least one style needs a share above 0")
        if self.curriculum.samples and self.same_source > 1:
            raise ValueError("curriculum: not with same_source (a curriculum reads the set in index order; shared "
                             "sources are grouped by the sampler)")
        return self
