"""A baseline JPEG round trip as batched tensor ops, for `device_stages` (device.py): the IJG quantization tables
scaled by quality, 4:2:0 chroma, 8×8 DCTs as fixed-order sums, so a sample's pixels never depend on the batch it
is in (kornia's differentiable codec rounds softly and multiplies matrices, whose summation order does)."""

from __future__ import annotations

import numpy as np
import torch

F64 = torch.float64


def _dct_matrix() -> torch.Tensor:
    k = np.arange(8)
    m = np.cos((2 * k[None] + 1) * k[:, None] * np.pi / 16) * np.sqrt(2 / 8)
    m[0] = np.sqrt(1 / 8)
    return torch.from_numpy(m.astype(np.float32))


_DCT = _dct_matrix()
_QY = torch.tensor([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
                    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
                    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=F64).reshape(8, 8)
_QC = torch.tensor([17, 18, 24, 47] + [99] * 4 + [18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5 + [47, 66]
                   + [99] * 6 + [99] * 32, dtype=F64).reshape(8, 8)


def _blocks_transform(x: torch.Tensor, m: torch.Tensor, inverse: bool) -> torch.Tensor:
    """M X Mᵀ (or Mᵀ X M) over the last two dims (8 × 8 blocks), as fixed-order sums."""
    mm = m.t() if inverse else m
    a = torch.zeros_like(x)
    for k in range(8):
        a = a + mm[:, k].reshape(8, 1) * x[..., k:k + 1, :]
    out = torch.zeros_like(x)
    for k in range(8):
        out = out + a[..., :, k:k + 1] * mm[:, k].reshape(1, 8)
    return out


def _code_plane(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """JPEG's lossy step on a plane (n, Hp, Wp), Hp and Wp multiples of 8, with per-sample tables (n, 8, 8)."""
    n, Hp, Wp = plane.shape
    b = (plane - 128).reshape(n, Hp // 8, 8, Wp // 8, 8).transpose(2, 3)  # (n, by, bx, 8, 8)
    m = _DCT.to(plane.device)
    coef = _blocks_transform(b, m, False)
    t = table[:, None, None]
    coef = torch.round(coef / t) * t
    out = _blocks_transform(coef, m, True)
    return out.transpose(2, 3).reshape(n, Hp, Wp) + 128


def jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Baseline JPEG round trip (IJG tables scaled by quality, 4:2:0 chroma) of (n, 3, H, W) in 0..255."""
    n, _, H, W = x.shape
    Hp, Wp = -(-H // 16) * 16, -(-W // 16) * 16
    x = x.index_select(2, torch.arange(Hp, device=x.device).clamp(max=H - 1))
    x = x.index_select(3, torch.arange(Wp, device=x.device).clamp(max=W - 1))
    r, g_, b = x.unbind(1)
    y = 0.299 * r + 0.587 * g_ + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g_ + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g_ - 0.081312 * b + 128
    q = quality.to(F64)
    scale = torch.where(q < 50, torch.floor(5000 / q), 200 - 2 * q)[:, None, None]
    ty = torch.floor((_QY.to(x.device) * scale + 50) / 100).clamp(1, 255).to(torch.float32)
    tc = torch.floor((_QC.to(x.device) * scale + 50) / 100).clamp(1, 255).to(torch.float32)
    y = _code_plane(y, ty)

    def chroma(c):
        small = (c[:, 0::2, 0::2] + c[:, 1::2, 0::2] + c[:, 0::2, 1::2] + c[:, 1::2, 1::2]) * 0.25
        return _code_plane(small, tc).repeat_interleave(2, 1).repeat_interleave(2, 2)

    cb, cr = chroma(cb) - 128, chroma(cr) - 128
    out = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return torch.round(out[:, :, :H, :W].clamp(0, 255))
