"""Geometric ops: rotation, affine (scale, italic shear, shift), perspective, elastic.

We draw the parameters and build the matrices; kornia's functional warps do the resampling. Borders are
replicated rather than filled with black: a dark wedge next to light text is a feature no real image has.
Results are clamped: bilinear weights can overshoot 1 by a rounding error.
"""

from __future__ import annotations

import math

import torch
from kornia.geometry.transform import (
    elastic_transform2d,
    get_perspective_transform,
    get_rotation_matrix2d,
    warp_affine,
    warp_perspective,
)

from .base import Op, uniform

PADDING = "border"


def _center(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    return x.new_tensor([(w - 1) / 2, (h - 1) / 2]).expand(x.shape[0], 2)


class Rotate(Op):
    def sample(self, x, gen):
        d = self.spec.degrees
        return {"angle": uniform(gen, (x.shape[0],), -d, d, like=x)}

    def apply(self, x, params):
        b = x.shape[0]
        m = get_rotation_matrix2d(_center(x), params["angle"], x.new_ones(b, 2))  # (B, 2, 3)
        return warp_affine(x, m, x.shape[-2:], padding_mode=PADDING).clamp(0, 1)


class Affine(Op):
    def sample(self, x, gen):
        b, s = x.shape[0], self.spec
        sh = math.radians(s.shear)
        return {"scale": uniform(gen, (b,), s.scale[0], s.scale[1], like=x),
                "shear": uniform(gen, (b,), -sh, sh, like=x).tan(),
                "shift": uniform(gen, (b, 2), -s.translate, s.translate, like=x)}

    def apply(self, x, params):
        h, w = x.shape[-2:]
        s, k = params["scale"], params["shear"]
        # A = scale · [[1, shear], [0, 1]] about the image centre c, then a shift: x' = A (x - c) + c + t
        a = torch.zeros(x.shape[0], 2, 2, dtype=x.dtype, device=x.device)
        a[:, 0, 0], a[:, 0, 1], a[:, 1, 1] = s, s * k, s
        c = _center(x)
        t = c + params["shift"] * x.new_tensor([w, h]) - (a @ c.unsqueeze(-1)).squeeze(-1)
        m = torch.cat([a, t.unsqueeze(-1)], dim=2)  # (B, 2, 2) + (B, 2, 1) -> (B, 2, 3)
        return warp_affine(x, m, (h, w), padding_mode=PADDING).clamp(0, 1)


class Perspective(Op):
    def sample(self, x, gen):
        # each corner moves inward by up to `distortion` of half the width / half the height (as torchvision)
        return {"inward": uniform(gen, (x.shape[0], 4, 2), 0, self.spec.distortion, like=x)}

    def apply(self, x, params):
        h, w = x.shape[-2:]
        corners = x.new_tensor([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]).expand(x.shape[0], 4, 2)
        inward = x.new_tensor([[1, 1], [-1, 1], [-1, -1], [1, -1]])  # direction toward the centre, per corner
        dst = corners + inward * params["inward"] * x.new_tensor([(w - 1) / 2, (h - 1) / 2])
        m = get_perspective_transform(corners.float(), dst.float()).to(x.dtype)  # (B, 3, 3)
        return warp_perspective(x, m, (h, w), padding_mode=PADDING).clamp(0, 1)


class Elastic(Op):
    def sample(self, x, gen):
        b, _, h, w = x.shape
        # as kornia's RandomElasticTransform: uniform noise in [-1, 1], smoothed into a displacement field
        return {"noise": uniform(gen, (b, 2, h, w), -1, 1, like=x)}

    def apply(self, x, params):
        s = self.spec
        k = 2 * math.ceil(3 * s.sigma) + 1
        k = max(3, min(k, 2 * (min(x.shape[-2:]) // 2) - 1))  # the reflected border must fit in the image
        return elastic_transform2d(x, params["noise"], (k, k), (s.sigma, s.sigma), (s.alpha, s.alpha),
                                   padding_mode=PADDING).clamp(0, 1)
