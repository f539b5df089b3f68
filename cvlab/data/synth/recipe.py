"""The CPU half of `device_stages: true`: after the glyph layer (the text mask, cropped), every later stage of the
recipe is drawn here as numbers, not pixels: whether it fires, its colours and strengths, the seeds of its noise.
`finish` (device.py) turns a batch of (mask, parameters) into images on the training device.

The draws mirror `SynthWords.render` one for one, from the same generators in the same order, so sample i's
stages fire with the same parameters in both modes (tests/test_synth_device.py checks that the generators end in
the same state). Per-pixel noise is not sent: it is drawn on the device from a seed, the state of the stream at the
point the CPU render draws its noise (so a shared source shares its texture grain, as on the CPU), and the CPU
render's draws are still made, to keep every later draw aligned."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw

from .colors import outline_color, text_colors

GRID = (6, 15)  # the largest low-frequency noise grid a texture draws (rows, columns)
SHAPES = 6  # the most shapes a texture draws
KINDS = ("gradient", "noise", "shapes", "stripes", "word")


class Layout:
    """Named slices of the parameter vector."""

    def __init__(self, fields: list[tuple[str, int]]):
        self.slices, off = {}, 0
        for name, n in fields:
            self.slices[name] = slice(off, off + n)
            off += n
        self.size = off

    def __getitem__(self, name: str) -> slice:
        return self.slices[name]


def _texture_fields(p: str) -> list[tuple[str, int]]:
    return [(f"{p}gradient", 1), (f"{p}gradient.a", 1), (f"{p}gradient.off", 3),
            (f"{p}noise", 1), (f"{p}noise.size", 2), (f"{p}noise.grid", GRID[0] * GRID[1]), (f"{p}noise.tint", 3),
            (f"{p}noise.seed", 1), (f"{p}noise.grain", 1), (f"{p}noise.amp", 1),
            (f"{p}shapes", 1), (f"{p}shapes.n", 1), (f"{p}shapes.item", SHAPES * 8),  # off(3), x0 x1 y0 y1, kind
            (f"{p}stripes", 1), (f"{p}stripes.wave", 3),  # angle, period, amplitude
            (f"{p}word", 1), (f"{p}word.colour", 4)]  # share towards the text colour, offset(3)


LAYOUT = Layout([
    ("geometry", 4),  # crop height, crop width (pixels as rendered), text height, valid output width
    ("bg", 3), ("fg", 3), *_texture_fields("tex."),
    ("shadow", 1), ("shadow.shift", 2), ("shadow.sigma", 1), ("shadow.shade", 3), ("shadow.strength", 1),
    ("border", 1), ("border.width", 1), ("border.colour", 3),
    ("blend", 1), *_texture_fields("blend."), ("blend.amount", 1), ("blend.mode", 1),
    ("lighting", 1), ("lighting.strength", 1), ("lighting.spot", 1), ("lighting.where", 2),
    ("blur", 1), ("blur.sigma", 1), ("lowres", 1), ("lowres.size", 2), ("noise", 1), ("noise.std", 1),
    ("noise.seed", 1), ("jpeg", 1), ("jpeg.quality", 1),
])


class Recipe(NamedTuple):
    """One sample in device mode: its masks at the model's input size and its stage parameters."""

    masks: torch.Tensor  # (2, H, W) uint8: the word with any neighbour glyphs; a second word in the background
    params: torch.Tensor  # (LAYOUT.size,) float64
    channels: int


def stream_seed(rng: np.random.Generator) -> int:
    """A 32-bit seed from the generator's position, without drawing from it."""
    st = rng.bit_generator.state["state"]["state"]
    return int((st ^ (st >> 32) ^ (st >> 64) ^ (st >> 96)) & 0xFFFFFFFF)


class _Vec:
    def __init__(self):
        self.v = np.zeros(LAYOUT.size, np.float64)

    def __setitem__(self, name, value):
        self.v[LAYOUT[name]] = value


def _texture(v: _Vec, p: str, h: int, w: int, rng: np.random.Generator, kinds: list[str], second_word=None):
    """background.texture's draws; returns the second word's mask (an L image at the crop's size) or None."""
    word = None
    picks = rng.choice(len(kinds), size=min(len(kinds), int(rng.integers(1, 3))), replace=False)
    for k in sorted(picks):
        kind = kinds[k]
        if kind == "gradient":
            v[f"{p}gradient"], v[f"{p}gradient.a"] = 1, rng.uniform(0, 2 * np.pi)
            v[f"{p}gradient.off"] = rng.normal(0, 60, 3)
        elif kind == "noise":
            gh, gw = int(rng.integers(2, 7)), int(rng.integers(3, 16))
            grid = np.zeros(GRID, np.float64)
            grid[:gh, :gw] = rng.standard_normal((gh, gw), dtype=np.float32)
            v[f"{p}noise"], v[f"{p}noise.size"], v[f"{p}noise.grid"] = 1, (gh, gw), grid.ravel()
            v[f"{p}noise.tint"] = (1 + rng.uniform(-0.3, 0.3, 3)).astype(np.float32)
            v[f"{p}noise.seed"] = stream_seed(rng)
            rng.standard_normal((h, w, 1), dtype=np.float32)  # the CPU render's grain: later draws stay aligned
            v[f"{p}noise.grain"] = rng.uniform(0, 8)
            v[f"{p}noise.amp"] = rng.uniform(8, 35)
        elif kind == "shapes":
            sw, sh = max(2, w // 4), max(2, h // 4)
            n = int(rng.integers(2, 7))
            items = np.zeros((SHAPES, 8))
            for i in range(n):
                items[i, :3] = rng.normal(0, 55, 3)
                items[i, 3:5] = sorted(rng.uniform(-0.2, 1.2, 2) * sw)
                items[i, 5:7] = sorted(rng.uniform(-0.5, 1.5, 2) * sh)
                items[i, 7] = int(rng.integers(3))
            v[f"{p}shapes"], v[f"{p}shapes.n"], v[f"{p}shapes.item"] = 1, n, items.ravel()
        elif kind == "stripes":
            a = rng.uniform(0, np.pi)
            period = rng.uniform(3, max(4, h))
            v[f"{p}stripes"], v[f"{p}stripes.wave"] = 1, (a, period, rng.uniform(6, 30))
        elif kind == "word" and second_word is not None:
            font, text = second_word()
            ascent, descent = font.getmetrics()
            line = ascent + descent
            y = -line * rng.uniform(0.6, 0.9) if rng.random() < 0.5 else h - line * rng.uniform(0.2, 0.4)
            u = rng.uniform(0.4, 0.9)
            v[f"{p}word"], v[f"{p}word.colour"] = 1, (u, *rng.normal(0, 30, 3))
            word = Image.new("L", (w, h), 0)
            ImageDraw.Draw(word).text((float(rng.uniform(-0.3, 0.3) * w), float(y)), text, font=font, fill=255)
    return word


def output_width(h: int, w: int, image) -> int:
    """The width the crop takes in the model's input (data.to_tensor's rule)."""
    if image.resize == "fixed":
        return image.width
    return max(1, min(image.width, round(w * image.height / max(1, h))))


def draw_recipe(ds, s, r, T: np.ndarray, text_h: int) -> Recipe:
    """Sample's recipe after its glyph layer: `s` its spec, `r` its streams, `T` the (h, w) text mask in 0..1."""
    image = ds.image
    h, w = T.shape
    wv = output_width(h, w, image)
    v = _Vec()
    v["geometry"] = (h, w, text_h, wv)
    bg, fg = text_colors(s.color, r.color)
    v["bg"], v["fg"] = bg, fg
    word = None
    if r.background.random() < s.background.p:
        word = _texture(v, "tex.", h, w, r.background, s.background.kinds,
                        second_word=lambda: ds._second_word(r.background))
    if r.shadow.random() < s.shadow.p:
        dx, dy = (r.shadow.uniform(*s.shadow.offset, size=2) * text_h
                  * r.shadow.choice([-1, 1], 2, p=[0.3, 0.7])).astype(int)
        sigma = r.shadow.uniform(*s.shadow.blur) * text_h
        v["shadow"], v["shadow.shift"], v["shadow.sigma"] = 1, (dx, dy), sigma if sigma > 0.3 else 0.0
        v["shadow.shade"] = np.clip(bg * r.shadow.uniform(0.0, 0.45), 0, 255)
        v["shadow.strength"] = r.shadow.uniform(0.5, 0.95)
    if r.border.random() < s.border.p:
        v["border"], v["border.width"] = 1, max(1, int(round(r.border.uniform(*s.border.width) * text_h)))
        v["border.colour"] = outline_color(bg, fg, r.border)
    if r.blend.random() < s.background.p:
        _texture(v, "blend.", h, w, r.blend, [k for k in s.background.kinds if k != "word"] or ["noise"])
        v["blend"], v["blend.amount"] = 1, float(r.blend.uniform(*s.background.blend))
        v["blend.mode"] = int(r.blend.integers(6))
    scale = h / image.height
    d = r.degrade
    if d.random() < s.lighting.p:
        v["lighting"], v["lighting.strength"] = 1, float(d.uniform(*s.lighting.strength))
        if d.random() < 0.5:
            v["lighting.where"] = (d.uniform(0, 2 * np.pi), 0)
        else:
            v["lighting.spot"] = 1
            v["lighting.where"] = (d.uniform(0, w), d.uniform(0, h))
    if d.random() < s.blur.p:
        v["blur"], v["blur.sigma"] = 1, float(d.uniform(*s.blur.sigma))
    if d.random() < s.lowres.p:
        factor = float(d.uniform(*s.lowres.scale)) / max(1.0, scale)
        v["lowres"], v["lowres.size"] = 1, (max(1, round(h * factor)), max(1, round(w * factor)))
    if d.random() < s.noise.p:
        v["noise"], v["noise.std"], v["noise.seed"] = 1, float(d.uniform(*s.noise.std)), stream_seed(r.grain)
        r.grain.standard_normal((h, w, 3), dtype=np.float32)  # the CPU render's noise: later draws stay aligned
    if d.random() < s.jpeg.p:
        v["jpeg"], v["jpeg.quality"] = 1, int(d.integers(s.jpeg.quality[0], s.jpeg.quality[1] + 1))
    return Recipe(_masks(T, word, wv, image), torch.from_numpy(v.v), image.channels)


def _masks(T: np.ndarray, word: Image.Image | None, wv: int, image) -> torch.Tensor:
    """(2, H, W) uint8: the masks resized as data.to_tensor resizes a finished crop (zero beyond `wv`)."""
    H, W = image.height, image.width
    how = Image.BICUBIC if image.interpolation == "bicubic" else Image.BILINEAR
    out = np.zeros((2, H, W), np.uint8)
    out[0, :, :wv] = np.asarray(Image.fromarray((T * 255 + 0.5).astype(np.uint8)).resize((wv, H), how))
    if word is not None:
        out[1, :, :wv] = np.asarray(word.resize((wv, H), how))
    return torch.from_numpy(out)
