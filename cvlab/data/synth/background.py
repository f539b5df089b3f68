"""Stage 5: procedural textures standing in for the natural-image crops MJSynth blends in (we download none):
gradients, low-frequency noise fields, blurred shapes, stripes and a second word partly in view. One or two are
drawn over the base colour; another texture is then blended over the whole composite with a random blend mode
and strength, as the paper's "natural data blending"."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _grid(h, w):
    return np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]


def _gradient(h, w, rng, base):
    a = rng.uniform(0, 2 * np.pi)
    yy, xx = _grid(h, w)
    t = (xx * np.float32(np.cos(a)) + yy * np.float32(np.sin(a)))
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    other = np.clip(base + rng.normal(0, 60, 3), 0, 255).astype(np.float32)
    return base + t[..., None] * (other - base)


def _noise(h, w, rng, base):
    gh, gw = int(rng.integers(2, 7)), int(rng.integers(3, 16))
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    field = np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC))[..., None]  # one field, all channels
    tint = (1 + rng.uniform(-0.3, 0.3, 3)).astype(np.float32)
    grain = rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(rng.uniform(0, 8))
    return base + field * (tint * np.float32(rng.uniform(8, 35))) + grain


def _shapes(h, w, rng, base):
    # drawn at a quarter of the size: the up-sampling softens the edges as a blur would, for a fraction of its cost
    sw, sh = max(2, w // 4), max(2, h // 4)
    img = Image.new("RGB", (sw, sh))
    draw = ImageDraw.Draw(img)
    mean = base.reshape(-1, 3).mean(0)
    mask = Image.new("L", (sw, sh), 0)
    mdraw = ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(2, 7))):
        c = tuple(int(v) for v in np.clip(mean + rng.normal(0, 55, 3), 0, 255))
        x0, x1 = sorted(rng.uniform(-0.2, 1.2, 2) * sw)
        y0, y1 = sorted(rng.uniform(-0.5, 1.5, 2) * sh)
        kind = int(rng.integers(3))
        for d, fill in ((draw, c), (mdraw, 255)):
            if kind == 0:
                d.ellipse((x0, y0, x1, y1), fill=fill)
            elif kind == 1:
                d.rectangle((x0, y0, x1, y1), fill=fill)
            else:
                d.line((x0, y0, x1, y1), fill=fill, width=max(1, sh // 4))
    shapes = np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.float32)
    alpha = np.asarray(mask.resize((w, h), Image.BILINEAR), dtype=np.float32)[..., None] / 255.0
    return base + alpha * (shapes - base)


def _stripes(h, w, rng, base):
    a = rng.uniform(0, np.pi)
    period = rng.uniform(3, max(4, h))
    yy, xx = _grid(h, w)
    wave = np.sin(np.float32(2 * np.pi / period) * (xx * np.float32(np.cos(a)) + yy * np.float32(np.sin(a))))
    return base + wave[..., None] * np.float32(rng.uniform(6, 30))


def _word(h, w, rng, base, font: ImageFont.FreeTypeFont, text: str, fg):
    """Another word above or below, mostly outside the crop: the fragment of a neighbouring line."""
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    ascent, descent = font.getmetrics()
    line = ascent + descent
    # above: only its descenders and the foot of its letters show; below: only the tops of its letters
    y = -line * rng.uniform(0.6, 0.9) if rng.random() < 0.5 else h - line * rng.uniform(0.2, 0.4)
    mean = base.reshape(-1, 3).mean(0)
    colour = tuple(int(v) for v in np.clip(mean + (fg - mean) * rng.uniform(0.4, 0.9) + rng.normal(0, 30, 3), 0, 255))
    ImageDraw.Draw(img).text((float(rng.uniform(-0.3, 0.3) * w), float(y)), text, font=font, fill=colour)
    return np.asarray(img, dtype=np.float32)


def texture(h: int, w: int, rng: np.random.Generator, *, base: np.ndarray, kinds: list[str], fg: np.ndarray,
            second_word=None) -> np.ndarray:
    """(h, w, 3) float32 background in 0..255: the base colour with one or two textures over it.
    `second_word() -> (font, text)` supplies the `word` kind."""
    out = np.broadcast_to(base.astype(np.float32), (h, w, 3)).copy()
    picks = rng.choice(len(kinds), size=min(len(kinds), int(rng.integers(1, 3))), replace=False)
    for k in sorted(picks):
        kind = kinds[k]
        if kind == "word":
            if second_word is not None:
                out = _word(h, w, rng, out, *second_word(), fg)
        else:
            out = {"gradient": _gradient, "noise": _noise, "shapes": _shapes, "stripes": _stripes}[kind](
                h, w, rng, out)
    return np.clip(out, 0, 255)


def blend(img: np.ndarray, tex: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Blend `tex` over `img` (both 0..255) with a random mode: normal, multiply, screen, overlay or lighten/darken."""
    a, b = img / 255.0, tex / 255.0
    mode = int(rng.integers(6))
    if mode == 0:
        mixed = b
    elif mode == 1:
        mixed = a * b
    elif mode == 2:
        mixed = 1 - (1 - a) * (1 - b)
    elif mode == 3:
        mixed = np.where(a < 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
    elif mode == 4:
        mixed = np.maximum(a, b)
    else:
        mixed = np.minimum(a, b)
    return np.clip((a + amount * (mixed - a)) * 255.0, 0, 255)
