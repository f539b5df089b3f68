"""Synthetic words rendered on the fly. Sample i of a given seed is a pure function of (seed, i): every run,
every DataLoader worker and every resume sees the same pixels for the same index."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from ..config.data import ImageCfg, SynthSpec
from .fonts import family_group, find_fonts, load_font
from .image import to_tensor
from .report import DataReport


@lru_cache(maxsize=1)
def word_list() -> tuple[str, ...]:
    """The built-in English word list (lower case, one per line)."""
    text = resources.files("cvlab.data").joinpath("words.txt").read_text(encoding="utf-8")
    return tuple(w for w in text.split() if w)


class SynthWords(Dataset):
    def __init__(self, spec: SynthSpec, charset: str, image: ImageCfg):
        self.spec, self.image = spec, image
        self.symbols = "".join(c for c in charset if not c.isspace())
        self.has_lower = any(c.islower() for c in charset)
        self.has_upper = any(c.isupper() for c in charset)
        cased = [w if self.has_lower else w.upper() for w in word_list()]
        self.words = [w for w in cased if spec.min_len <= len(w) <= spec.max_len and set(w) <= set(self.symbols)]
        self.fonts = find_fonts(self.symbols, tuple(spec.fonts))
        self._cache: dict = {}
        # said at train start: a machine without matplotlib's fonts would otherwise render with one face
        families = sorted({family_group(f) for f in self.fonts})
        self.report = DataReport(spec.name or spec.type, samples=spec.size)
        self.report.note(f"rendering with {len(self.fonts)} fonts from {len(families)} families "
                         f"({', '.join(families)})")

    def __len__(self) -> int:
        return self.spec.size

    def __getstate__(self):  # font objects stay in the process that made them
        return {**self.__dict__, "_cache": {}}

    def _font(self, path: str, size: int):
        key = (path, size)
        if key not in self._cache:
            self._cache[key] = load_font(path, size)
        return self._cache[key]

    def text(self, rng: np.random.Generator) -> str:
        s = self.spec
        if self.words and rng.random() < s.dict_ratio:
            word = self.words[rng.integers(len(self.words))]
            if self.has_upper and self.has_lower:
                style = rng.integers(3)  # lower, Title, UPPER
                word = word.upper() if style == 2 else word.capitalize() if style == 1 else word
            return word
        n = int(rng.integers(s.min_len, s.max_len + 1))
        return "".join(self.symbols[i] for i in rng.integers(len(self.symbols), size=n))

    def label(self, index: int) -> str:
        """Sample `index`'s text without rendering it (the first draws of the same generator `render` uses)."""
        return self.text(np.random.default_rng([self.spec.seed, index]))

    def source(self, index: int) -> str:
        return f"synth seed {self.spec.seed} #{index}"

    def _colors(self, rng: np.random.Generator) -> tuple[tuple, tuple]:
        if self.spec.color == "dark_on_light":
            bg = int(rng.integers(190, 256)); fg = int(rng.integers(0, 70))  # noqa: E702
            return (bg,) * 3, (fg,) * 3
        while True:  # any colours, as long as their luminance differs enough to be legible
            bg, fg = rng.integers(0, 256, size=3), rng.integers(0, 256, size=3)
            lum = np.array([0.299, 0.587, 0.114])
            if abs(float(bg @ lum) - float(fg @ lum)) > 90:
                return tuple(int(v) for v in bg), tuple(int(v) for v in fg)

    def render(self, index: int) -> tuple[Image.Image, str, np.random.Generator]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.spec.seed, index])
        text = self.text(rng)
        font = self._font(self.fonts[rng.integers(len(self.fonts))], int(rng.integers(*self.spec.font_size) + 1))
        left, _, right, _ = font.getbbox(text)
        ascent, descent = font.getmetrics()  # line metrics, not the word's ink: every word keeps the font's scale
        size = ascent + descent
        pad_x, pad_y = int(rng.integers(1, size // 3 + 2)), int(rng.integers(0, size // 6 + 2))
        bg, fg = self._colors(rng)
        img = Image.new("RGB", (right - left + 2 * pad_x, size + 2 * pad_y), bg)
        ImageDraw.Draw(img).text((pad_x - left, pad_y), text, font=font, fill=fg)
        return img, text, rng

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        img, text, rng = self.render(index)
        t = to_tensor(img, self.image)
        if self.spec.noise > 0:
            noise = rng.normal(0.0, self.spec.noise, size=tuple(t.shape)).astype(np.float32)
            t = (t + torch.from_numpy(noise)).clamp_(0, 1)
        return t, text
