"""The one image-grid helper behind every picture cvlab draws: `cvlab data preview`, `cvlab augment preview`
and TensorBoard's val/<set>/samples and augment/preview. Pure PIL, importable from every layer."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw, ImageFont

WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def save_image(image: Image.Image, path) -> None:
    """Write `image` atomically (cvlab/atomic.py), in the format its suffix names (PNG for any other suffix):
    an output that cannot be written is a CvlabError naming the path, and no half-written picture is left."""
    from pathlib import Path

    from .atomic import atomic_write

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    atomic_write(path, lambda f: image.save(f, format=fmt))


def to_pil(t: torch.Tensor) -> Image.Image:
    """(C, H, W) in [0, 1] -> PIL image."""
    arr = (t.detach().float().clamp(0, 1) * 255).round().byte().cpu().numpy()
    return Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))


def image_grid(tiles: list[Image.Image], cols: int, *, captions: list[list[tuple[str, tuple]]] | None = None,
               row_labels: list[str] | None = None, height: int | None = 64, min_width: int = 0, gap: int = 2,
               font_size: int = 12, font: ImageFont.FreeTypeFont | None = None) -> Image.Image:
    """`tiles` (of one size) in rows of `cols`, scaled by a whole factor towards `height` pixels (None: as they
    are; never shrunk), each above its caption lines ((text, RGB colour) pairs), each row after its label."""
    w, h = tiles[0].size
    scale = max(1, (height or h) // h)
    tw, th = w * scale, h * scale
    font = font or ImageFont.load_default(size=font_size)  # another face for captions it cannot draw (hanzi)
    line = font_size + 2
    lines = max((len(c) for c in captions), default=0) if captions else 0
    label_w = int(max(font.getlength(s) for s in row_labels)) + 12 if row_labels else 0
    cw, ch = max(tw, min_width) + gap, th + lines * line + gap
    rows = (len(tiles) + cols - 1) // cols
    canvas = Image.new("RGB", (label_w + cols * cw, rows * ch), WHITE)
    draw = ImageDraw.Draw(canvas)
    for r, label in enumerate(row_labels or []):
        draw.text((4, r * ch + max(0, th // 2 - font_size // 2 - 1)), label, fill=BLACK, font=font)
    for i, tile in enumerate(tiles):
        x, y = label_w + (i % cols) * cw, (i // cols) * ch
        canvas.paste(tile.convert("RGB").resize((tw, th), Image.NEAREST), (x, y))
        for k, (text, colour) in enumerate(captions[i] if captions else []):
            draw.text((x + 2, y + th + 1 + k * line), text, fill=colour, font=font)
    return canvas
