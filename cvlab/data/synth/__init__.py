"""Synthetic words by the MJSynth recipe (Jaderberg et al. 2014, "Synthetic Data and Artificial Neural Networks
for Natural Scene Text Recognition"), rendered on the fly. Sample i of a given seed is a pure function of
(seed, i): every run, every DataLoader worker and every resume sees the same pixels for the same index.

The stages, in order, each switchable in the `synth` spec (`p: 0`): font rendering (a wide pool of faces,
random size, tracking, weight, curved baseline), case drawn apart from the word, border/shadow layers, natural
colour pairs, projective distortion, procedural background and blending, a tight crop with cut-off neighbour
glyphs, and degradations (lighting, blur, low resolution, noise, JPEG)."""

from __future__ import annotations

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
from .fonts import Face, family_group, find_fonts, load_font, scan_fonts
from .layout import homography, render_text, tight_crop, warp
from .words import TextSource, builtin_words, lexicon

__all__ = ["SynthWords", "builtin_words", "lexicon", "find_fonts", "family_group"]

PUNCTUATION = ".-:%"  # drawn in mixed tokens and numbers (and left out of labels the charset cannot encode)


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
        if self.texts.sources != ["random"]:
            draws |= set(PUNCTUATION)
        cased = fold("Aa") == "Aa" and any(c.isalpha() for c in symbols)
        self.faces, skipped = scan_fonts("".join(sorted(draws)), tuple(spec.fonts), cased)
        self.families = sorted({family_group(f) for f in self.faces})
        self._by_family = {fam: [f for f in self.faces if f.family == fam] for fam in self.families}
        lo, hi = spec.font_size
        self.sizes = sorted({int(round(s)) for s in np.linspace(lo, hi, 3)})  # few sizes: few cached fonts
        self.neighbour_chars = "".join(sorted(draws - set(PUNCTUATION)))
        self._cache: dict = {}
        # said at train start: a machine without the font packages would otherwise render with few faces
        self.report = DataReport(spec.name or spec.type, samples=spec.size)
        self.report.note(f"rendering with {len(self.faces)} fonts from {len(self.families)} families")
        if skipped:  # a face without some symbol (or, for a cased charset, without lower-case letters)
            self.report.note(f"{len(skipped)} fonts skipped: they cannot draw every symbol needed "
                             f"(e.g. {', '.join(skipped[:3])})")
        self.report.note(f"text: {self.texts.describe()}")
        off = [s for s in STAGES if getattr(spec, s).p == 0]
        if off:
            self.report.note(f"stages off: {', '.join(off)}")

    def __len__(self) -> int:
        return self.spec.size

    def label(self, index: int) -> str:
        """Sample `index`'s label without rendering it (the first draws of the generator `render` uses)."""
        return self.texts(np.random.default_rng([self.spec.seed, index]))[1]

    def source(self, index: int) -> str:
        return f"synth seed {self.spec.seed} #{index}"

    def __getstate__(self):  # font objects stay in the process that made them
        return {**self.__dict__, "_cache": {}}

    def _font(self, face: Face, size: int, rng: np.random.Generator):
        key = (face.path, size)
        if key not in self._cache:
            self._cache[key] = load_font(face.path, size)
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

    def _pick_font(self, rng: np.random.Generator):
        faces = self._by_family[self.families[rng.integers(len(self.families))]]  # family first: no family dominates
        return self._font(faces[rng.integers(len(faces))], self.sizes[rng.integers(len(self.sizes))], rng)

    def render(self, index: int) -> tuple[Image.Image, str, np.random.Generator]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        s = self.spec
        rng = np.random.default_rng([s.seed, index])
        text, label = self.texts(rng)
        font = self._pick_font(rng)

        # 1-2. glyphs with tracking and a curved baseline; neighbour glyphs for a cut-off edge
        nb = ["", ""]
        if rng.random() < s.crop.neighbour_p:
            for side in ([0], [1], [0, 1])[rng.integers(3)]:
                nb[side] = "".join(self.neighbour_chars[i] for i in rng.integers(len(self.neighbour_chars),
                                                                                  size=int(rng.integers(1, 3))))
        curve = float(rng.uniform(-s.curve.amount, s.curve.amount)) if rng.random() < s.curve.p else 0.0
        layer_img, text_h = render_text(text, font, rng, kerning=s.kerning, curve=curve, neighbours=(nb[0], nb[1]))
        # 4. projective distortion of the text layer (before cropping, so the crop is around the warped ink)
        if rng.random() < s.distort.p:
            d = s.distort
            layer_img = warp(layer_img, homography(*layer_img.size, rng, perspective=d.perspective, rotate=d.rotate,
                                                   shear=d.shear, text_h=text_h))
        # 6. a tight crop around the word's ink
        T = tight_crop(layer_img, rng, margin_y=s.crop.margin_y, margin_x=s.crop.margin_x, cut_left=bool(nb[0]),
                       cut_right=bool(nb[1]))
        h, w = T.shape

        # 3. colours, border and shadow layers
        bg, fg = text_colors(s.color, rng)
        if rng.random() < s.background.p:  # 5. the background the text sits on
            base = texture(h, w, rng, base=bg, kinds=s.background.kinds, fg=fg,
                           second_word=lambda: (self._pick_font(rng), self.texts(rng)[0]))
        else:
            base = np.broadcast_to(bg, (h, w, 3)).astype(np.float32)
        img = base
        if rng.random() < s.shadow.p:
            dx, dy = (rng.uniform(*s.shadow.offset, size=2) * text_h * rng.choice([-1, 1], 2, p=[0.3, 0.7])).astype(int)
            S = _shift(T, int(dx), int(dy))
            if (sigma := rng.uniform(*s.shadow.blur) * text_h) > 0.3:
                S = _blur_mask(S, sigma)
            shade = np.clip(bg * rng.uniform(0.0, 0.45), 0, 255)
            img = img + (S * rng.uniform(0.5, 0.95))[..., None] * (shade - img)
        if rng.random() < s.border.p:
            r = max(1, int(round(rng.uniform(*s.border.width) * text_h)))
            B = _dilate(T, r)
            img = img + B[..., None] * (outline_color(bg, fg, rng) - img)
        img = img + T[..., None] * (fg - img)
        if rng.random() < s.background.p:  # natural blending over every layer, text included
            tex = texture(h, w, rng, base=bg, kinds=[k for k in s.background.kinds if k != "word"] or ["noise"],
                          fg=fg)
            img = blend(img, tex, rng, float(rng.uniform(*s.background.blend)))

        # 7. degradations, sized in output pixels
        scale = h / self.image.height
        if rng.random() < s.lighting.p:
            img = degrade.lighting(img, rng, float(rng.uniform(*s.lighting.strength)))
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        if rng.random() < s.blur.p:
            pil = degrade.blur(pil, float(rng.uniform(*s.blur.sigma)), scale)
        if rng.random() < s.lowres.p:
            pil = degrade.lowres(pil, float(rng.uniform(*s.lowres.scale)) / max(1.0, scale))
        if rng.random() < s.noise.p:
            pil = Image.fromarray(degrade.noise(np.asarray(pil, dtype=np.float32), rng,
                                                float(rng.uniform(*s.noise.std))).astype(np.uint8))
        if rng.random() < s.jpeg.p:
            pil = degrade.jpeg(pil, int(rng.integers(s.jpeg.quality[0], s.jpeg.quality[1] + 1)))
        return pil, label, rng

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        img, label, _ = self.render(index)
        return to_tensor(img, self.image), label
