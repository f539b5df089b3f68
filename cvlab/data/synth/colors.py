"""Stage 3's base colouring. MJSynth samples text/background colour pairs from k-means clusters of colours in
ICDAR training crops; without those crops we keep a table of the pairs street text is printed in (signs, shop
fronts, plates, posters), jittered per image and swapped light-on-dark / dark-on-light at random."""

from __future__ import annotations

import numpy as np

# (background, text) in RGB: the common sign and print pairings
NATURAL_PAIRS = np.array([
    [(245, 245, 240), (20, 20, 20)], [(250, 250, 250), (200, 30, 30)], [(240, 230, 200), (60, 40, 30)],
    [(200, 30, 35), (250, 250, 250)], [(30, 70, 160), (250, 250, 250)], [(20, 110, 60), (250, 250, 250)],
    [(250, 210, 30), (20, 20, 20)], [(20, 20, 20), (250, 250, 250)], [(25, 25, 30), (245, 200, 40)],
    [(60, 60, 65), (235, 235, 235)], [(120, 20, 30), (235, 200, 120)], [(235, 120, 30), (255, 255, 255)],
    [(180, 180, 185), (30, 30, 35)], [(130, 90, 60), (240, 230, 210)], [(210, 200, 180), (90, 50, 30)],
    [(20, 40, 80), (210, 210, 220)], [(90, 150, 200), (255, 255, 255)], [(240, 240, 240), (20, 60, 140)],
    [(245, 235, 220), (20, 90, 50)], [(70, 30, 90), (240, 240, 240)], [(150, 200, 80), (20, 30, 20)],
    [(230, 60, 120), (255, 255, 255)], [(40, 40, 40), (230, 60, 50)], [(160, 130, 90), (30, 25, 20)],
], dtype=np.float32)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def luma(rgb: np.ndarray) -> float:
    return float(np.asarray(rgb, dtype=np.float32) @ LUMA)


def text_colors(mode: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(background, text) RGB in 0..255 whose luminances differ enough to be read (sometimes only just)."""
    if mode == "dark_on_light":
        return np.full(3, rng.integers(190, 256), np.float32), np.full(3, rng.integers(0, 70), np.float32)
    min_contrast = rng.uniform(35, 90)
    for _ in range(20):
        if mode == "natural" and rng.random() < 0.8:
            bg, fg = NATURAL_PAIRS[rng.integers(len(NATURAL_PAIRS))] + rng.normal(0, 18, (2, 3))
            if rng.random() < 0.3:
                bg, fg = fg, bg
        else:
            bg, fg = rng.uniform(0, 255, (2, 3))
        bg, fg = np.clip(bg, 0, 255).astype(np.float32), np.clip(fg, 0, 255).astype(np.float32)
        if abs(luma(bg) - luma(fg)) > min_contrast:
            return bg, fg
    return bg, np.full(3, 0.0 if luma(bg) > 127 else 255.0, np.float32)


def outline_color(bg: np.ndarray, fg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A border colour that stands apart from both the text and the background (an outline the same shade as
    the background draws nothing): the best of black, white and a few random colours, one of the top two."""
    cands = np.concatenate([np.array([[15.0] * 3, [240.0] * 3]), rng.uniform(0, 255, (4, 3))]).astype(np.float32)
    score = np.array([min(abs(luma(c) - luma(fg)), abs(luma(c) - luma(bg))) for c in cands])
    return cands[np.argsort(-score)[int(rng.integers(2))]]
