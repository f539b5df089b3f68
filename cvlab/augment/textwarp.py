"""Text warps from "Learn to Augment" (Luo et al., CVPR 2020): fiducial points on the top and bottom borders cut
the image into `segments`; moving them and warping with a thin-plate spline (`warp: tps`) or with the similarity
moving-least-squares deformation of the authors' tool (`warp: mls`) bends, stretches or tilts the text while
keeping it one smooth, readable line.

Points live in grid_sample's normalized frame (align_corners=False: the image spans [-1, 1] edge to edge),
ordered as the top row left to right, then the bottom row left to right: (2 * (segments + 1), 2) as (x, y).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.geometry.grid import create_meshgrid
from kornia.geometry.transform import get_tps_transform

from .base import Op, uniform


def fiducial_points(segments: int, like: torch.Tensor) -> torch.Tensor:
    """The unmoved points: (K = 2 * (segments + 1), 2), top row then bottom row."""
    xs = torch.linspace(-1, 1, segments + 1, dtype=like.dtype, device=like.device)
    top = torch.stack([xs, -torch.ones_like(xs)], dim=1)
    bottom = torch.stack([xs, torch.ones_like(xs)], dim=1)
    return torch.cat([top, bottom])


def to_normalized(moves_px: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel moves (..., 2) -> moves in the normalized frame, where the width and the height both span 2."""
    return moves_px * moves_px.new_tensor([2 / width, 2 / height])


def _tps_kernel(grid: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """U(r) = r² log r between every grid point (N, 2) and every centre (K, 2): (N, K)."""
    d2 = (grid[:, None, :] - centres[None, :, :]).pow(2).sum(-1)
    return torch.where(d2 > 0, 0.5 * d2 * d2.clamp_min(1e-12).log(), torch.zeros_like(d2))


def tps_warp(x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Warp `x` (B, C, H, W) so that what sits at the points `src` (K, 2) lands on `dst` (B, K, 2), both in the
    normalized frame, through the thin-plate spline that kornia fits between them."""
    b, _, h, w = x.shape
    # the output samples the input, so the spline is fitted dst -> src with its kernels centred on src
    # (kornia's documented order); solved in float32 even for half-precision images
    kernel_w, affine_w = get_tps_transform(dst.float(), src.float().expand(b, -1, -1))  # (B, K, 2), (B, 3, 2)
    # Evaluating it ourselves rather than with warp_image_tps (which builds a (B, H·W, K, 2) tensor: ~40 ms per
    # batch of 64 at 32×100 on one core): the kernel matrix depends only on the pixel grid and the unmoved
    # centres, so it is shared by the whole batch and the spline is a single matmul.
    grid = create_meshgrid(h, w, True, x.device, torch.float32, align_corners=False)
    grid = grid.reshape(h * w, 2)
    basis = torch.cat([_tps_kernel(grid, src.float()), grid.new_ones(h * w, 1), grid], dim=1)  # (H·W, K + 3)
    weights = torch.cat([kernel_w, affine_w], dim=1)                                           # (B, K + 3, 2)
    # one (H·W, K+3) × (K+3, B·2) product: a batched matmul with inner size K+3 is several times slower
    coords = basis @ weights.permute(1, 0, 2).reshape(-1, b * 2)                              # (H·W, B·2)
    coords = coords.view(h, w, b, 2).permute(2, 0, 1, 3).contiguous()                         # -> (B, H, W, 2)
    out = F.grid_sample(x.float(), coords, mode="bilinear", padding_mode="border", align_corners=False)
    return out.to(x.dtype).clamp(0, 1)


def mls_warp(x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Warp `x` (B, C, H, W) so that what sits at `src` (K, 2) lands on `dst` (B, K, 2), normalized frame, by the
    similarity moving-least-squares deformation (Schaefer et al. 2006) that the authors' augmentation tool
    (WarpMLS) uses: every output pixel v is mapped back by the similarity transform fitted to dst -> src with
    weights 1/|dst_k − v|². The tool evaluates it on a 100-pixel grid and interpolates between nodes; here it is
    evaluated at every pixel."""
    b, _, h, w = x.shape
    scale = torch.tensor([w / 2, h / 2], device=x.device)  # pixel units: the 1/d² weights must be isotropic
    v = create_meshgrid(h, w, True, x.device, torch.float32, align_corners=False).reshape(1, h * w, 2) * scale
    p = dst.float() * scale                                    # (B, K, 2) control points, output side
    q = src.float().expand(b, -1, -1) * scale                  # (B, K, 2) where they come from
    wk = 1.0 / ((v[:, :, None] - p[:, None]) ** 2).sum(-1).clamp_min(1e-8)   # (B, N, K)
    sw = wk.sum(-1, keepdim=True)
    p_star = wk @ p / sw                                       # (B, N, 2)
    q_star = wk @ q / sw
    ph = p[:, None] - p_star[:, :, None]                       # (B, N, K, 2)
    qh = q[:, None] - q_star[:, :, None]
    vp = (v - p_star)[:, :, None]                              # (B, N, 1, 2)
    mu = (wk * (ph ** 2).sum(-1)).sum(-1, keepdim=True).clamp_min(1e-12)    # (B, N, 1)
    a = (ph * vp).sum(-1)                                      # p̂·(v − p*)
    c = (ph[..., 0] * vp[..., 1] - ph[..., 1] * vp[..., 0])    # p̂⊥·(v − p*), p̂⊥ = (−p̂y, p̂x)
    fx = (wk * (a * qh[..., 0] - c * qh[..., 1])).sum(-1, keepdim=True) / mu
    fy = (wk * (c * qh[..., 0] + a * qh[..., 1])).sum(-1, keepdim=True) / mu
    coords = (torch.cat([fx, fy], -1) + q_star) / scale        # (B, N, 2), normalized
    out = F.grid_sample(x.float(), coords.view(b, h, w, 2), mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out.to(x.dtype).clamp(0, 1)


WARPS = {"tps": tps_warp, "mls": mls_warp}


class TextWarp(Op):
    """Shared by the three warps: subclasses say how far each fiducial point moves, in pixels."""

    def moves(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, x, gen):
        h, w = x.shape[-2:]
        return {"dst": fiducial_points(self.spec.segments, x) + to_normalized(self.moves(x, gen), h, w)}

    def apply(self, x, params):
        return WARPS[self.spec.warp](x, fiducial_points(self.spec.segments, x), params["dst"])


class TextDistort(TextWarp):
    """Every point moves independently, as in the paper's tool: corners inward by up to r in x and y, inner
    points by up to r/2 (along the border either way, and inward), so no point leaves the image and no glyph is
    pushed out of it."""

    def moves(self, x, gen):
        b, (h, w), n = x.shape[0], x.shape[-2:], self.spec.segments + 1
        cut = w / self.spec.segments
        if self.spec.magnitudes == "authors":
            return self._authors(x, gen, b, n, cut / 3)
        r = self.spec.radius * h
        # x moves are capped at 0.45 of a segment so neighbouring points (and a one-segment row's two ends)
        # keep their order
        r_in = min(r / 2, 0.45 * cut)
        r_corner = min(r, 0.45 * cut)
        dx = uniform(gen, (b, 2, n), -r_in, r_in, like=x)
        corner = uniform(gen, (b, 2, 2), 0, r_corner, like=x)
        dx[:, :, 0], dx[:, :, -1] = corner[:, :, 0], -corner[:, :, 1]
        # y: top row down, bottom row up (r <= h/2: the rows cannot cross)
        reach = torch.full((n,), r / 2, dtype=x.dtype, device=x.device)
        reach[0] = reach[-1] = r
        dy = uniform(gen, (b, 2, n), 0, 1, like=x) * reach * x.new_tensor([1.0, -1.0]).view(1, 2, 1)
        return torch.stack([dx, dy], dim=-1).reshape(b, 2 * n, 2)  # (B, row, point, xy) -> (B, K, 2)

    @staticmethod
    def _authors(x, gen, b, n, thresh):
        """The authors' tool: corners inward by U[0, thresh) in x and y, inner points by ±thresh/2 in x and y,
        either way (an inner point may leave the image by up to thresh/2)."""
        d = uniform(gen, (b, 2, n, 2), -thresh / 2, thresh / 2, like=x)  # (B, row, point, xy)
        corner = uniform(gen, (b, 2, 2, 2), 0, thresh, like=x)           # (B, row, left/right, xy): inward amounts
        inward_x = x.new_tensor([1.0, -1.0]).view(1, 1, 2)          # left corners right, right corners left
        inward_y = x.new_tensor([1.0, -1.0]).view(1, 2, 1)          # top row down, bottom row up
        d[:, :, [0, -1], 0] = corner[..., 0] * inward_x
        d[:, :, [0, -1], 1] = corner[..., 1] * inward_y
        return d.reshape(b, 2 * n, 2)


class TextStretch(TextWarp):
    """Inner boundaries slide horizontally, top and bottom together: some segments widen, their neighbours
    narrow. Corners stay put."""

    def moves(self, x, gen):
        b, w, n = x.shape[0], x.shape[-1], self.spec.segments + 1
        share = 0.4 if self.spec.magnitudes == "authors" else self.spec.radius  # the tool: ±(4/5 · cut)/2
        r = share * w / self.spec.segments
        dx = uniform(gen, (b, 1, n), -r, r, like=x)
        dx[:, :, 0] = dx[:, :, -1] = 0
        dx = dx.expand(b, 2, n)
        return torch.stack([dx, torch.zeros_like(dx)], dim=-1).reshape(b, 2 * n, 2)


class TextPerspective(TextWarp):
    """The top and bottom rows stay straight but tilt: each corner moves vertically toward the other row, the
    points between follow linearly, so the text shrinks toward one end as if seen at an angle."""

    def moves(self, x, gen):
        b, h, n = x.shape[0], x.shape[-2], self.spec.segments + 1
        reach = 0.5 * h if self.spec.magnitudes == "authors" else self.spec.radius * h  # the tool: U[0, h/2)
        ends = uniform(gen, (b, 2, 2), 0, reach, like=x)  # (B, row, left/right)
        f = torch.linspace(0, 1, n, dtype=x.dtype, device=x.device)
        dy = ends[..., :1] * (1 - f) + ends[..., 1:] * f  # (B, 2, n): linear between the row's two corners
        dy = dy * x.new_tensor([1.0, -1.0]).view(1, 2, 1)  # top row down, bottom row up
        return torch.stack([torch.zeros_like(dy), dy], dim=-1).reshape(b, 2 * n, 2)
