"""Stage 6, degradations of the finished crop: uneven lighting, blur, low-resolution up-sampling, pixel noise
and JPEG compression. Sizes are in output pixels (the crop as the model sees it, 32 px high by default), so a
blur of sigma 1 looks the same whatever size the text was drawn at."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter


def lighting(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Multiply by a smooth light field: a linear fall-off or a spot, `strength` deep."""
    h, w = img.shape[:2]
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    if rng.random() < 0.5:
        a = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(a) + yy * np.sin(a)
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        t = np.sqrt(((xx - cx) / w) ** 2 + ((yy - cy) / h) ** 2)
        t = t / max(1e-6, float(t.max()))
    return np.clip(img * (1 - np.float32(strength) * t)[..., None], 0, 255)


def blur(img: Image.Image, sigma_out: float, scale: float) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(sigma_out * scale))


def lowres(img: Image.Image, factor: float) -> Image.Image:
    w, h = img.size
    small = img.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.BILINEAR)
    return small.resize((w, h), Image.BILINEAR)


def noise(img: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
    return np.clip(img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(std * 255.0), 0, 255)


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")
