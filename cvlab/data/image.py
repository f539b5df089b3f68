"""PIL image -> float tensor (C, H, W) in [0, 1], resized by the experiment's policy."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..config.data import ImageCfg


def to_tensor(img: Image.Image, image: ImageCfg) -> torch.Tensor:
    img = img.convert("L" if image.channels == 1 else "RGB")
    H, W = image.height, image.width
    if image.resize == "fixed":
        w = W
    else:  # keep_ratio: scale to the height, never wider than the canvas
        w = max(1, min(W, round(img.width * H / max(1, img.height))))
    img = img.resize((w, H), Image.BICUBIC if image.interpolation == "bicubic" else Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    t = torch.from_numpy(arr.reshape(H, w, image.channels)).permute(2, 0, 1)  # (H, w, C) -> (C, H, w)
    if w < W:
        # pad by repeating the last column (as DTRB's NormalizePAD): no hard edge for the network to read
        t = torch.cat([t, t[:, :, -1:].expand(image.channels, H, W - w)], dim=2)
    return t.contiguous()
