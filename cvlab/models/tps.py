"""Thin-plate-spline spatial transformer (Jaderberg et al. 2015; Shi et al. 2016's RARE; the `TPS` stage of the
four-stage scene-text framework): a small CNN predicts F=20 fiducial points, a TPS maps the output grid through
them, and the image is resampled. Output size = input size; the sampling grid is cached per input size.

`align_corners` is how the grid meets the pixels: False (cvlab's `tps`) puts ±1 on the outer pixel edges, the
convention the grid's pixel-centre coordinates are written in; True (`tps_dtrb`) puts ±1 on the outer pixel
centres, as DTRB's TPS_SpatialTransformerNetwork samples, so its weights give the same image here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config.model import BackboneCfg
from .common import scaled
from .norms import NormFactory, conv_norm_act


def _base_points(n: int) -> torch.Tensor:
    """n/2 points along the top edge and n/2 along the bottom edge, in [-1, 1] coordinates: (n, 2) as (x, y)."""
    x = torch.linspace(-1.0, 1.0, n // 2)
    top = torch.stack([x, torch.full_like(x, -1.0)], dim=1)
    bottom = torch.stack([x, torch.full_like(x, 1.0)], dim=1)
    return torch.cat([top, bottom])


def _rbf(d2: torch.Tensor) -> torch.Tensor:
    """The TPS kernel U(r) = r² log r², written on r² (0 at r = 0)."""
    return d2 * torch.log(d2.clamp_min(1e-12))


class TPS(nn.Module):
    """Rectify (B, C, H, W) -> (B, C, H, W) through 20 predicted fiducial points."""

    def __init__(self, in_channels: int, cfg: BackboneCfg, norm: NormFactory, act: Callable[[], nn.Module],
                 position: str = "before_act", points: int = 20, align_corners: bool = False):
        super().__init__()
        self.align_corners = align_corners
        c = [scaled(w, cfg) for w in (64, 128, 256, 512)]
        self.points = points
        self.localization = nn.Sequential(
            conv_norm_act(in_channels, c[0], 3, 1, 1, norm, act, position), nn.MaxPool2d(2, 2),  # (B, c0, H/2, W/2)
            conv_norm_act(c[0], c[1], 3, 1, 1, norm, act, position), nn.MaxPool2d(2, 2),         # (B, c1, H/4, W/4)
            conv_norm_act(c[1], c[2], 3, 1, 1, norm, act, position), nn.MaxPool2d(2, 2),         # (B, c2, H/8, W/8)
            conv_norm_act(c[2], c[3], 3, 1, 1, norm, act, position), nn.AdaptiveAvgPool2d(1),    # (B, c3, 1, 1)
            nn.Flatten(),                                                                          # (B, c3)
            nn.Linear(c[3], 256), nn.ReLU(inplace=True),
            nn.Linear(256, 2 * points),
        )
        # Start as the identity warp: zero weights, bias = the base fiducial points.
        fc = self.localization[-1]
        nn.init.zeros_(fc.weight)
        fc.keep_plain_weight = True  # weight norm cannot reparametrize a zero weight
        with torch.no_grad():
            fc.bias.copy_(_base_points(points).reshape(-1))
        base = _base_points(points)
        d2 = torch.cdist(base, base).pow(2)
        # The TPS system [[1, C, U(C, C)], [0, 0, C^T], [0, 0, 1^T]] (F+3 × F+3), inverted once.
        delta = torch.cat([
            torch.cat([torch.ones(points, 1), base, _rbf(d2)], dim=1),
            torch.cat([torch.zeros(2, 3), base.t()], dim=1),
            torch.cat([torch.zeros(1, 3), torch.ones(1, points)], dim=1),
        ])
        self.register_buffer("inv_delta", torch.linalg.inv(delta.double()).float(), persistent=False)  # ill-conditioned in float32
        self.register_buffer("base", base, persistent=False)
        self._grids: dict = {}

    def _p_hat(self, h: int, w: int, device) -> torch.Tensor:
        """(H*W, F+3): [1, x, y, U(p - C_j)] for every output pixel centre. Cached per size, except while
        traced (ONNX/TorchScript export): there it is built from the traced size, so any width exports."""
        key = (h, w, str(device))
        tracing = torch.jit.is_tracing()
        if tracing or key not in self._grids:
            xs = (torch.arange(w, device=device) * 2 + 1.0) / w - 1.0
            ys = (torch.arange(h, device=device) * 2 + 1.0) / h - 1.0
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            p = torch.stack([gx, gy], dim=-1).reshape(-1, 2)                    # (H*W, 2) as (x, y)
            base = self.base.to(device)
            u = _rbf((p[:, None, :] - base[None]).pow(2).sum(-1))               # (H*W, 1, 2) - (1, F, 2) -> (H*W, F)
            p_hat = torch.cat([torch.ones_like(p[:, :1]), p, u], dim=1)
            if tracing:
                return p_hat
            self._grids[key] = p_hat
        return self._grids[key]

    def forward(self, x):
        B, _, H, W = x.shape
        # the TPS solve needs float32 (meta tensors, used for shapes only, have no autocast)
        with torch.autocast(x.device.type, enabled=False) if x.device.type != "meta" else contextlib.nullcontext():
            pts = self.localization(x.float()).reshape(B, self.points, 2)        # (B, F*2) -> (B, F, 2)
            rhs = torch.cat([pts, pts.new_zeros(B, 3, 2)], dim=1)               # (B, F+3, 2)
            coeffs = self.inv_delta @ rhs                                       # (B, F+3, 2)
            grid = (self._p_hat(H, W, x.device) @ coeffs).reshape(B, H, W, 2)   # (B, H*W, 2) -> (B, H, W, 2)
            out = F.grid_sample(x.float(), grid, padding_mode="border", align_corners=self.align_corners)
        return out.to(x.dtype)


class DtrbTPS(TPS):
    """TPS sampling as DTRB does (grid_sample align_corners=True): DTRB's TPS weights give its images."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, align_corners=True, **kwargs)
