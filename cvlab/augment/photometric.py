"""Photometric ops: blur, motion blur, brightness/contrast/gamma, noise, inversion, JPEG artefacts.

kornia does the filtering and the codec; we only draw the per-image parameters (from the caller's generator)
and keep every result in [0, 1].
"""

from __future__ import annotations

import math

import torch
from kornia.enhance import adjust_contrast_with_mean_subtraction, adjust_gamma, jpeg_codec_differentiable
from kornia.filters import gaussian_blur2d, motion_blur

from .base import Op, uniform


class GaussianBlur(Op):
    def sample(self, x, gen):
        lo, hi = self.spec.sigma
        return {"sigma": uniform(gen, (x.shape[0], 1), lo, hi, like=x).expand(-1, 2)}

    def apply(self, x, params):
        # one kernel size for the batch, wide enough for the largest sigma (±3 sigma), capped so the reflected
        # border fits inside the image
        k = 2 * math.ceil(3 * self.spec.sigma[1]) + 1
        k = max(3, min(k, 2 * (min(x.shape[-2:]) // 2) - 1))
        return gaussian_blur2d(x, (k, k), params["sigma"]).clamp(0, 1)


class MotionBlur(Op):
    def sample(self, x, gen):
        b, a = x.shape[0], self.spec.angle
        # direction in [-1, 1] makes the streak one-sided (a moving camera) rather than symmetric
        return {"angle": uniform(gen, (b,), -a, a, like=x), "direction": uniform(gen, (b,), -1, 1, like=x)}

    def apply(self, x, params):
        return motion_blur(x, self.spec.kernel, params["angle"], params["direction"]).clamp(0, 1)


class ColorJitter(Op):
    def sample(self, x, gen):
        b, s = x.shape[0], self.spec
        return {"brightness": uniform(gen, (b,), -s.brightness, s.brightness, like=x),
                "contrast": uniform(gen, (b,), 1 - s.contrast, 1 + s.contrast, like=x),
                "gamma": uniform(gen, (b,), -s.gamma, s.gamma, like=x).exp()}  # symmetric in log space

    def apply(self, x, params):
        x = adjust_gamma(x, params["gamma"])
        x = adjust_contrast_with_mean_subtraction(x, params["contrast"])  # around the mean: text stays legible
        return (x + params["brightness"].view(-1, 1, 1, 1)).clamp(0, 1)


class Noise(Op):
    def sample(self, x, gen):
        n = torch.randn(x.shape, generator=gen, device=gen.device, dtype=torch.float32)
        return {"noise": (n * self.spec.std).to(x.dtype)}

    def apply(self, x, params):
        return (x + params["noise"]).clamp(0, 1)


class Invert(Op):
    def apply(self, x, params):
        return 1.0 - x


class Jpeg(Op):
    def sample(self, x, gen):
        lo, hi = self.spec.quality
        return {"quality": uniform(gen, (x.shape[0],), lo, hi, like=x)}

    def apply(self, x, params):
        # kornia's codec works on RGB: grey images go through as three equal channels and come back as their mean
        rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        out = jpeg_codec_differentiable(rgb.float(), params["quality"].float()).to(x.dtype)
        return (out.mean(1, keepdim=True) if x.shape[1] == 1 else out).clamp(0, 1)
