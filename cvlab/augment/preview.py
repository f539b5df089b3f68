"""A picture of what the pipeline does: the originals in the top row, then one row per op (applied to every
image, whatever its `p`) and a last row for the whole pipeline (with the real probabilities)."""

from __future__ import annotations

import numpy as np
import torch

from ..imagegrid import image_grid, to_pil
from .base import Pipeline


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
    n = images.shape[0]
    tiles = [to_pil(img) for _, batch in rows for img in batch]
    return np.asarray(image_grid(tiles, n, row_labels=[label for label, _ in rows], height=None))
