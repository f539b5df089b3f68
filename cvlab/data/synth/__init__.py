"""Synthetic words by the MJSynth recipe (Jaderberg et al. 2014, "Synthetic Data and Artificial Neural Networks
for Natural Scene Text Recognition"), rendered on the fly. Sample i of a given seed is a pure function of
(seed, i): every run, every DataLoader worker and every resume sees the same pixels for the same index.

The stages, in order, each switchable in the `synth` spec (`p: 0`): font rendering (a wide pool of faces,
random size, tracking, weight, curved baseline), case drawn apart from the word, border/shadow layers, natural
colour pairs, projective distortion, procedural background and blending, a tight crop with cut-off neighbour
glyphs, and degradations (lighting, blur, low resolution, noise, JPEG)."""

from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import Dataset

from ...config.data import ImageCfg, SynthSpec
from ...config.synth import STAGES
from ..charset import case_fold
from ..image import to_tensor
from ..report import DataReport
from . import degrade
from .background import blend, texture
from .colors import outline_color, text_colors
from .device import finish_one
from .fonts import Face, family_group, find_fonts, font_pool, load_font
from .layout import homography, render_text, tight_crop, warp
from .recipe import Recipe, draw_recipe
from .words import TextSource, builtin_words, lexicon

__all__ = ["SynthWords", "builtin_words", "lexicon", "find_fonts", "family_group"]

PUNCTUATION = ".-:%"  # drawn in mixed tokens and numbers (and left out of labels the charset cannot encode)
_SOURCE_KEY = 0x5EED  # a shared source's generators: [seed, run, key, stage], never a sample's [seed, index]


class Streams(NamedTuple):
    own: np.random.Generator
    text: np.random.Generator
    font: np.random.Generator
    glyphs: np.random.Generator
    distort: np.random.Generator
    crop: np.random.Generator
    color: np.random.Generator
    background: np.random.Generator
    shadow: np.random.Generator
    border: np.random.Generator
    blend: np.random.Generator
    degrade: np.random.Generator
    grain: np.random.Generator


def _shift(a: np.ndarray, dx: int, dy: int) -> np.ndarray:
    out = np.zeros_like(a)
    h, w = a.shape
    out[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] = a[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    return out


def _blur_mask(a: np.ndarray, sigma: float) -> np.ndarray:
    img = Image.fromarray((a * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(sigma))
    return np.asarray(img, dtype=np.float32) / 255.0


def _dilate(a: np.ndarray, r: int) -> np.ndarray:
    """Max over a (2r+1)-square, separably: 4r shifted maxima, far cheaper than PIL's rank filter."""
    out = a.copy()
    for d in range(1, r + 1):
        out[:, d:] = np.maximum(out[:, d:], a[:, :-d])
        out[:, :-d] = np.maximum(out[:, :-d], a[:, d:])
    rows = out.copy()
    for d in range(1, r + 1):
        out[d:] = np.maximum(out[d:], rows[:-d])
        out[:-d] = np.maximum(out[:-d], rows[d:])
    return out


class SynthWords(Dataset):
    def __init__(self, spec: SynthSpec, charset: str, image: ImageCfg):
        self.spec, self.image = spec, image
        fold = case_fold(charset)
        self.texts = TextSource(spec.words, spec.case, charset, fold=fold, min_len=spec.min_len, max_len=spec.max_len)
        symbols = "".join(c for c in charset if not c.isspace())
        draws = set(symbols) | {c.upper() for c in symbols} | {c.lower() for c in symbols}
        if self.texts.sources != ["random"] and not self.texts.cjk:  # East Asian text is drawn as labelled
            draws |= set(PUNCTUATION)
        cased = fold("Aa") == "Aa" and any(c.isalpha() for c in symbols)
        # East Asian charsets: faces chosen per text among those that cover it (fonts.FontPool)
        self.pool, pool_notes = font_pool("".join(sorted(draws)), tuple(spec.fonts), cased)
        self.faces, self.families, self._by_family = self.pool.faces, self.pool.families, self.pool.by_family
        pool_notes += tuple(self.texts.restrict(self.pool))
        lo, hi = spec.font_size
        self.sizes = sorted({int(round(s)) for s in np.linspace(lo, hi, 3)})  # few sizes: few cached fonts
        self.neighbour_chars = self.pool.shared("".join(sorted(draws - set(PUNCTUATION))))
        self._cache: dict = {}
        self._ramped: dict = {}  # curriculum level -> the spec at that level
        # said at train start: a machine without the font packages would otherwise render with few faces
        self.report = DataReport(spec.name or spec.type, samples=spec.size)
        self.report.note(f"rendering with {len(self.faces)} fonts from {len(self.families)} families")
        for line in pool_notes:  # faces skipped (a symbol missing; capitals only), characters no face draws
            self.report.note(line)
        self.report.note(f"text: {self.texts.describe()}")
        off = [s for s in STAGES if getattr(spec, s).p == 0]
        if off:
            self.report.note(f"stages off: {', '.join(off)}")
        if (c := spec.curriculum).samples:
            self.report.note(f"curriculum: stages at {c.start:.0%} of their probability and labels of at most "
                             f"{c.max_len} characters at sample 0, the full recipe from sample {c.samples:,}")

    def __len__(self) -> int:
        return self.spec.size

    @property
    def GROUP_KEYS(self) -> tuple[str, ...]:  # noqa: N802  (the dataset families' attribute)
        return ("source",) if self.spec.same_source > 1 else ()

    def group_key(self, index: int, by: str) -> int:
        return index // self.spec.same_source

    def label(self, index: int) -> str:
        """Sample `index`'s label without rendering it (the first draws of the generator `render` uses)."""
        return self.texts(self.streams(index).text, self.cap_at(index))[1]

    @property
    def ordered(self) -> bool:
        """Whether training must read this set in index order (a curriculum ramps with the index)."""
        return self.spec.curriculum.samples > 0

    def _ramp(self, index: int) -> float | None:
        """Sample `index`'s place in the curriculum (0 to 1, in steps of 1/100), None past it or without one."""
        n = self.spec.curriculum.samples
        return None if not n or index >= n else (index * 100 // n) / 100

    def spec_at(self, index: int) -> SynthSpec:
        """The spec sample `index` is rendered with: the spec itself, or inside a curriculum every stage's
        probability (and that of cut-off neighbour glyphs) scaled from `curriculum.start` up to its own."""
        t = self._ramp(index)
        if t is None:
            return self.spec
        if t not in self._ramped:
            s, c = self.spec, self.spec.curriculum
            k = c.start + (1 - c.start) * t
            upd = {st: getattr(s, st).model_copy(update={"p": getattr(s, st).p * k}) for st in STAGES}
            upd["crop"] = s.crop.model_copy(update={"neighbour_p": s.crop.neighbour_p * k})
            self._ramped[t] = s.model_copy(update=upd)
        return self._ramped[t]

    def cap_at(self, index: int) -> int | None:
        """The longest label sample `index` may have inside a curriculum (None: the spec's own max_len)."""
        t = self._ramp(index)
        if t is None:
            return None
        lo = self.spec.curriculum.max_len
        return int(round(lo + (self.spec.max_len - lo) * t))

    def source(self, index: int) -> str:
        return f"synth seed {self.spec.seed} #{index}"

    def __getstate__(self):  # font objects stay in the process that made them
        return {**self.__dict__, "_cache": {}}

    def _font(self, face: Face, size: int, rng: np.random.Generator):
        key = (face.path, face.index, size)
        if key not in self._cache:
            self._cache[key] = load_font(face.path, size, face.index)
        font = self._cache[key]
        if face.axes:  # variable font: a weight (and width, where there is one) of its own for this image
            values = []
            for name, lo, hi, default in face.axes:
                low = name.lower()
                if self.spec.weight and low.startswith("weight"):
                    values.append(float(rng.uniform(lo, hi)))
                elif self.spec.weight and low.startswith("width"):
                    values.append(float(rng.uniform(max(lo, 75), max(hi, 75))))
                else:
                    values.append(float(default))
            font.set_variation_by_axes(values)
        return font

    def _pick_font(self, rng: np.random.Generator, text: str | None = None):
        face = self.pool.pick(rng, text)  # family first: no family dominates; a face that draws all of `text`
        return self._font(face, self.sizes[rng.integers(len(self.sizes))], rng)

    def _second_word(self, rng: np.random.Generator):
        """(font, text) of the background's cut-off neighbouring line: the font first where any face draws any
        text, the text first where faces differ in what they cover."""
        if self.pool.full:
            return self._pick_font(rng), self.texts(rng)[0]
        text = self.texts(rng)[0]
        return self._pick_font(rng, text), text

    def streams(self, index: int) -> Streams:
        """The random streams sample `index` draws from. Alone (`same_source: 1`) one generator seeded by
        (seed, index) serves every stage, in order. With `same_source: k` the k samples of a run
        (index // k) share a generator per stage (font, glyph layout, distortion, crop, colours, background,
        shadow, border, blending, degradations): one source, photographed k times. The word (unless `same_word`)
        and the noise grain stay each sample's own."""
        s = self.spec
        own = np.random.default_rng([s.seed, index])
        if s.same_source <= 1:
            return Streams(*([own] * len(Streams._fields)))
        run = index // s.same_source

        def source(stage: int) -> np.random.Generator:
            return np.random.default_rng([s.seed, run, _SOURCE_KEY, stage])

        return Streams(own, source(0) if s.same_word else own, *(source(i) for i in range(1, 11)), own)

    def render(self, index: int, *, recipe: bool = False) -> tuple[Image.Image | Recipe, str, np.random.Generator]:
        """(image, label, the sample's own generator). `recipe`: the glyph layer alone, with every later stage
        drawn as parameters (recipe.py), for the device to finish (device.py): (Recipe, label, generator)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        s = self.spec_at(index)
        r = self.streams(index)
        text, label = self.texts(r.text, self.cap_at(index))
        font = self._pick_font(r.font, text)

        # 1-2. glyphs with tracking and a curved baseline; neighbour glyphs for a cut-off edge
        nb = ["", ""]
        if r.glyphs.random() < s.crop.neighbour_p:
            for side in ([0], [1], [0, 1])[r.glyphs.integers(3)]:
                nb[side] = "".join(self.neighbour_chars[i] for i in r.glyphs.integers(
                    len(self.neighbour_chars), size=int(r.glyphs.integers(1, 3))))
        curve = float(r.glyphs.uniform(-s.curve.amount, s.curve.amount)) if r.glyphs.random() < s.curve.p else 0.0
        layer_img, text_h = render_text(text, font, r.glyphs, kerning=s.kerning, curve=curve, neighbours=(nb[0], nb[1]))
        # 4. projective distortion of the text layer (before cropping, so the crop is around the warped ink)
        if r.distort.random() < s.distort.p:
            d = s.distort
            layer_img = warp(layer_img, homography(*layer_img.size, r.distort, perspective=d.perspective, rotate=d.rotate,
                                                   shear=d.shear, text_h=text_h))
        # 6. a tight crop around the word's ink
        T = tight_crop(layer_img, r.crop, margin_y=s.crop.margin_y, margin_x=s.crop.margin_x, cut_left=bool(nb[0]),
                       cut_right=bool(nb[1]))
        if recipe:  # device_stages: the same draws from here on, as numbers
            return draw_recipe(self, s, r, T, text_h), label, r.own
        h, w = T.shape

        # 3. colours, border and shadow layers
        bg, fg = text_colors(s.color, r.color)
        if r.background.random() < s.background.p:  # 5. the background the text sits on
            base = texture(h, w, r.background, base=bg, kinds=s.background.kinds, fg=fg,
                           second_word=lambda: self._second_word(r.background))
        else:
            base = np.broadcast_to(bg, (h, w, 3)).astype(np.float32)
        img = base
        if r.shadow.random() < s.shadow.p:
            dx, dy = (r.shadow.uniform(*s.shadow.offset, size=2) * text_h
                      * r.shadow.choice([-1, 1], 2, p=[0.3, 0.7])).astype(int)
            S = _shift(T, int(dx), int(dy))
            if (sigma := r.shadow.uniform(*s.shadow.blur) * text_h) > 0.3:
                S = _blur_mask(S, sigma)
            shade = np.clip(bg * r.shadow.uniform(0.0, 0.45), 0, 255)
            img = img + (S * r.shadow.uniform(0.5, 0.95))[..., None] * (shade - img)
        if r.border.random() < s.border.p:
            width = max(1, int(round(r.border.uniform(*s.border.width) * text_h)))
            B = _dilate(T, width)
            img = img + B[..., None] * (outline_color(bg, fg, r.border) - img)
        img = img + T[..., None] * (fg - img)
        if r.blend.random() < s.background.p:  # natural blending over every layer, text included
            tex = texture(h, w, r.blend, base=bg, kinds=[k for k in s.background.kinds if k != "word"] or ["noise"],
                          fg=fg)
            img = blend(img, tex, r.blend, float(r.blend.uniform(*s.background.blend)))

        # 7. degradations, sized in output pixels
        scale = h / self.image.height
        d = r.degrade
        if d.random() < s.lighting.p:
            img = degrade.lighting(img, d, float(d.uniform(*s.lighting.strength)))
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        if d.random() < s.blur.p:
            pil = degrade.blur(pil, float(d.uniform(*s.blur.sigma)), scale)
        if d.random() < s.lowres.p:
            pil = degrade.lowres(pil, float(d.uniform(*s.lowres.scale)) / max(1.0, scale))
        if d.random() < s.noise.p:
            std = float(d.uniform(*s.noise.std))  # the sensor's noise level is the source's; its grain each image's
            pil = Image.fromarray(degrade.noise(np.asarray(pil, dtype=np.float32), r.grain, std).astype(np.uint8))
        if d.random() < s.jpeg.p:
            pil = degrade.jpeg(pil, int(d.integers(s.jpeg.quality[0], s.jpeg.quality[1] + 1)))
        return pil, label, r.own

    deferred = False  # device_stages: hand out recipes (loaders.train_loader/eval_loader), finished per batch

    def deferred_view(self) -> SynthWords:
        """The same set, its items recipes for the loader to finish on the training device (device.Pending)."""
        view = copy.copy(self)
        view.deferred = True
        return view

    def __getitem__(self, index: int) -> tuple[torch.Tensor | Recipe, str]:
        if self.spec.device_stages:
            rec, label, _ = self.render(index, recipe=True)
            return (rec if self.deferred else finish_one(rec)), label
        img, label, _ = self.render(index)
        return to_tensor(img, self.image), label
