"""`cvlab data preview`: a grid of samples as the model will see them (after the experiment's resize), each
with its label underneath, to eyeball crops, orientation and labels before training."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from ..imagegrid import BLACK, image_grid, to_pil
from .formats.base import Broken


def preview_grid(ds: Dataset, out: Path, count: int = 32, cols: int = 4) -> dict:
    n = min(count, len(ds))
    # spread the picks over the whole dataset: the first rows of a file are often one writer or one page
    picks = sorted({round(k * (len(ds) - 1) / max(1, n - 1)) for k in range(n)}) if n else []
    tiles, broken = [], 0
    for i in picks:
        image, label = ds[i]
        if isinstance(image, Broken):
            broken += 1
            continue
        tiles.append((to_pil(image).convert("RGB"), label))
    if not tiles:
        return {"out": None, "shown": 0, "broken": broken}
    from .synth.fonts import caption_font

    canvas = image_grid([t for t, _ in tiles], cols, captions=[[(label[:40], BLACK)] for _, label in tiles],
                        min_width=180, gap=8, font_size=13, font=caption_font("".join(lb for _, lb in tiles), 13))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return {"out": str(out), "shown": len(tiles), "broken": broken}
