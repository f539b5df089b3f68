"""`cvlab data preview`: a grid of samples as the model will see them (after the experiment's resize), each
with its label underneath, to eyeball crops, orientation and labels before training."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import Dataset

from .base import Broken
from .image import to_pil


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
    scale = max(1, 64 // tiles[0][0].height)
    tw, th = tiles[0][0].width * scale, tiles[0][0].height * scale
    cw, ch = max(tw, 180) + 8, th + 22
    rows = (len(tiles) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * cw, rows * ch), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13)
    for k, (img, label) in enumerate(tiles):
        x, y = (k % cols) * cw + 4, (k // cols) * ch + 2
        canvas.paste(img.resize((tw, th), Image.NEAREST), (x, y))
        draw.text((x, y + th + 2), label[:40], fill=(0, 0, 0), font=font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return {"out": str(out), "shown": len(tiles), "broken": broken}
