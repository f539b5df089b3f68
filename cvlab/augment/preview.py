"""A picture of what the pipeline does: the originals in the top row, then one row per op (applied to every
image, whatever its `p`) and a last row for the whole pipeline (with the real probabilities)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .base import Pipeline

LABEL_W = 140  # pixels left of each row for its name ("12: text_perspective" fits)


def sample_images(datasets: dict, n: int) -> torch.Tensor:
    """The first `n` images of the first dataset (fewer if it is smaller): (n, C, H, W)."""
    ds = next(iter(datasets.values()))
    return torch.stack([ds[i][0] for i in range(min(n, len(ds)))])


@torch.no_grad()
def preview_grid(pipeline: Pipeline, images: torch.Tensor, gen: torch.Generator) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> an RGB image (rows, N columns) as an (H, W, 3) uint8 array."""
    was_training = pipeline.training
    pipeline.eval()  # a preview must not feed the learned op's next update
    try:
        rows = [("original", images)]
        for i, op in enumerate(pipeline.ops):
            rows.append((f"{i}: {op.name}", op.apply(images, op.sample(images, gen))))
        rows.append(("pipeline", pipeline(images, gen)))
    finally:
        pipeline.train(was_training)
    n, _, h, w = images.shape
    gap = 2
    canvas = Image.new("RGB", (LABEL_W + n * (w + gap), len(rows) * (h + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12)
    for r, (label, batch) in enumerate(rows):
        y = r * (h + gap)
        draw.text((4, y + max(0, h // 2 - 7)), label, fill=(0, 0, 0), font=font)
        arr = (batch.detach().float().clamp(0, 1) * 255).round().byte().cpu().numpy()
        for i in range(n):
            tile = arr[i][0] if arr.shape[1] == 1 else arr[i].transpose(1, 2, 0)
            canvas.paste(Image.fromarray(tile).convert("RGB"), (LABEL_W + i * (w + gap), y))
    return np.asarray(canvas)
