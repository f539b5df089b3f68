"""Stage 1 (font rendering) and stage 4's geometry: the word's ink as a mask, glyph by glyph with random
tracking and an optional curved baseline, cut-off neighbour glyphs beside it, then one projective warp
(rotation, slant, corner jitter) of the whole layer and a tight crop around the word's ink."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_INK = 85  # a pixel is ink where the word covers more than a third of it


def _ink_box(word: Image.Image) -> tuple[int, int, int, int] | None:
    """getbbox of the pixels above _INK (as PIL's point + getbbox, without building a table per call)."""
    ink = np.asarray(word) > _INK
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _draw_glyphs(draw, font, chars: str, advances: list[float], x: float, baseline: float, spacing: float, bend,
                 fill) -> None:
    """Draw `chars` from x on `baseline`, each glyph shifted by bend(x_centre)."""
    for ch, adv in zip(chars, advances, strict=False):
        draw.text((x, baseline + bend(x + adv / 2)), ch, font=font, fill=fill, anchor="ls")
        x += adv + spacing


def render_text(text: str, font: ImageFont.FreeTypeFont, rng: np.random.Generator, *, kerning: tuple[float, float],
                curve: float, neighbours: tuple[str, str]) -> tuple[Image.Image, int]:
    """(mask image: word in R, neighbours in G; the font's line height, which later stages' sizes are shares of)."""
    ascent, descent = font.getmetrics()
    h = ascent + descent
    size = font.size
    # half the words keep the font's own spacing (and are drawn in one call); the others get random tracking
    spacing = float(rng.uniform(*kerning)) * size if rng.random() < 0.5 else 0.0
    one_call = spacing == 0 and curve == 0  # the whole word in one draw: one layout instead of one per glyph
    adv = [] if one_call else [font.getlength(c) for c in text]
    adv_l, adv_r = [font.getlength(c) for c in neighbours[0]], [font.getlength(c) for c in neighbours[1]]
    word_w = font.getlength(text) if one_call else sum(adv) + spacing * max(0, len(text) - 1)
    gap = float(rng.uniform(0.3, 0.7)) * h
    left_w = sum(adv_l) + (gap if neighbours[0] else 0)
    right_w = sum(adv_r) + (gap if neighbours[1] else 0)
    pad = int(h * (0.5 + abs(curve)))  # room for the bend, the warp and the widest crop margins
    W, H = int(left_w + word_w + right_w) + 2 * pad, h + 2 * pad
    x0, baseline = pad + left_w, pad + ascent
    half = max(1.0, word_w / 2)
    mid = x0 + word_w / 2

    def bend(x):  # a parabola through the word's centre: `curve` text heights up (or down) at its ends
        t = min(1.5, abs(x - mid) / half)
        return -curve * h * t * t

    img = Image.new("RGB", (W, H), 0)
    draw = ImageDraw.Draw(img)
    if one_call:
        draw.text((x0, baseline), text, font=font, fill=(255, 0, 0), anchor="ls")
    else:
        _draw_glyphs(draw, font, text, adv, x0, baseline, spacing, bend, fill=(255, 0, 0))
    _draw_glyphs(draw, font, neighbours[0], adv_l, x0 - left_w, baseline, 0.0, bend, fill=(0, 255, 0))
    _draw_glyphs(draw, font, neighbours[1], adv_r, x0 + word_w + gap, baseline, 0.0, bend, fill=(0, 255, 0))
    return img, h


def homography(w: int, h: int, rng: np.random.Generator, *, perspective: float, rotate: float, shear: float,
               text_h: int) -> tuple[float, ...]:
    """PIL PERSPECTIVE coefficients (output -> input) for a rotation, a slant and corner jitter about the centre."""
    cx, cy = w / 2, h / 2
    a = np.deg2rad(rng.uniform(-rotate, rotate))
    s = rng.uniform(-shear, shear)
    # forward map of the four corners, then jitter each corner by up to `perspective` text heights
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.array([[1, s], [0, 1]])
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    dst = (src - [cx, cy]) @ rot.T + [cx, cy] + rng.uniform(-perspective, perspective, (4, 2)) * text_h
    # solve for the 8 coefficients that map each dst corner back onto its src corner
    A, b = [], []
    for (x, y), (u, v) in zip(dst, src, strict=False):
        A += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        b += [u, v]
    return tuple(np.linalg.solve(np.array(A), np.array(b)))


def warp(img: Image.Image, coeffs) -> Image.Image:
    return img.transform(img.size, Image.PERSPECTIVE, coeffs, resample=Image.BILINEAR)


def tight_crop(img: Image.Image, rng: np.random.Generator, *, margin_y, margin_x,
               cut_left: bool, cut_right: bool) -> np.ndarray:
    """Crop around the word's ink (R band) with small random margins, as shares of the ink's height. A side with
    a neighbour glyph extends into it, so a part of that glyph shows at the edge, as in real word crops."""
    word = img.getchannel("R")
    # the ink where it is at least a third covered: faint anti-aliasing of thin faces does not widen the box
    box = _ink_box(word) or word.getbbox() or (0, 0, img.width, img.height)
    x0, y0, x1, y1 = box
    ink_h = max(1, y1 - y0)
    my = rng.uniform(*margin_y, size=2) * ink_h
    mx = rng.uniform(*margin_x, size=2) * ink_h
    nb = img.getchannel("G")
    if cut_left and (lb := nb.crop((0, y0, x0, y1)).getbbox()):
        mx[0] = (x0 - lb[2]) + rng.uniform(0.15, 0.6) * (lb[2] - lb[0])  # gap, then part of the glyph
    if cut_right and (rb := nb.crop((x1, y0, img.width, y1)).getbbox()):
        mx[1] = rb[0] + rng.uniform(0.15, 0.6) * (rb[2] - rb[0])
    crop = (max(0, int(x0 - mx[0])), max(0, int(y0 - my[0])),
            min(img.width, int(np.ceil(x1 + mx[1]))), min(img.height, int(np.ceil(y1 + my[1]))))
    arr = np.asarray(img.crop(crop), dtype=np.float32)[:, :, :2] / 255.0
    return np.maximum(arr[:, :, 0], arr[:, :, 1])  # (H, W) alpha of the word and any neighbour glyphs, 0..1
