"""The device half of `device_stages: true`: a batch of recipes (recipe.py: text masks at the model's input size and
each sample's stage parameters) becomes finished images, as batched tensor ops on whatever device the masks are
on: colours, shadow (shift + blur), border (dilation), procedural textures, blending, lighting, blur, low
resolution, noise and JPEG, in the CPU render's order (SynthWords.render).

Sample i's pixels depend on its own recipe alone, never on the batch it lands in: every op is elementwise, a
gather or a fixed-order sum of shifted copies (no convolution or matrix product, whose summation order may change
with the batch's shape); per-sample kernels are truncated at their own radius (the zero taps a larger one in the
batch adds are exact); transcendental functions are computed in float64 and rounded to float32; per-pixel noise
comes from a counter-based hash of the sample's seed. The same recipe gives the same pixels on the same device
whatever the batch; on another device the same up to float rounding.

Sizes in the parameters are in the crop's pixels as rendered (h × w); the image here is at the model's input size,
so textures are evaluated in crop coordinates and sizes are scaled by the resize (wv / w across, H / h down)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .jpeg import jpeg
from .recipe import GRID, LAYOUT, SHAPES, Recipe

F64 = torch.float64
_LUMA = (0.299, 0.587, 0.114)


def _col(q: torch.Tensor, name: str) -> torch.Tensor:
    return q[:, LAYOUT[name]]


def _on(q: torch.Tensor, name: str) -> torch.Tensor:
    return _col(q, name)[:, 0] > 0.5


def _b(t: torch.Tensor) -> torch.Tensor:
    """(n,) or (n, k) -> broadcastable over (n, C, H, W): (n, 1, 1, 1) or (n, k, 1, 1)."""
    return t.reshape(t.shape[0], -1, 1, 1)


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float32)


class _Geo:
    """Per-sample geometry of a subset: crop size, text height, valid output width, crop coordinates of the output
    pixel centres (float64: xx (n, 1, 1, W), yy (n, 1, H, 1))."""

    def __init__(self, q: torch.Tensor, H: int, W: int):
        g = _col(q, "geometry")
        self.h, self.w, self.text_h, self.wv = g[:, 0], g[:, 1], g[:, 2], g[:, 3]
        self.H, self.W = H, W
        x = torch.arange(W, dtype=F64, device=q.device)
        y = torch.arange(H, dtype=F64, device=q.device)
        self.xx = ((x[None] + 0.5) * (self.w / self.wv)[:, None] - 0.5).reshape(-1, 1, 1, W)
        self.yy = ((y[None] + 0.5) * (self.h / H)[:, None] - 0.5).reshape(-1, 1, H, 1)
        self.sx, self.sy = self.wv / self.w, H / self.h  # output pixels per crop pixel, across and down


# --- shifts, blur, dilation: sums and maxima of shifted copies, per sample --------------------------------------

def _padded(x: torch.Tensor, R: int, dim: int) -> torch.Tensor:
    """x with its borders repeated R pixels out along `dim` (-1 or -2)."""
    return F.pad(x, (R, R, 0, 0) if dim == -1 else (0, 0, R, R), mode="replicate")


def _window(xp: torch.Tensor, k: int, size: int, dim: int) -> torch.Tensor:
    return xp[..., k:k + size] if dim == -1 else xp[..., k:k + size, :]


def _take(x: torch.Tensor, idx: torch.Tensor, dim: int) -> torch.Tensor:
    """x gathered along `dim` (-1 or -2) with per-sample indices idx (n, size)."""
    n, c, H, W = x.shape
    if dim == -1:
        return x.gather(3, idx.reshape(n, 1, 1, W).expand(n, c, H, W))
    return x.gather(2, idx.reshape(n, 1, H, 1).expand(n, c, H, W))


def _gauss(x: torch.Tensor, sigma: torch.Tensor, dim: int) -> torch.Tensor:
    """Gaussian blur along `dim` with per-sample sigma (n,) in pixels (0: none), borders extended."""
    radius = torch.ceil(3 * sigma).clamp(min=0)
    R = int(radius.max().item()) if sigma.numel() else 0
    if R == 0:
        return x
    d = torch.arange(-R, R + 1, dtype=F64, device=x.device)
    w = torch.exp(-d[None] ** 2 / (2 * sigma.clamp(min=1e-6)[:, None] ** 2))
    w = torch.where(d[None].abs() <= radius[:, None], w, 0.0)
    w = torch.where(sigma[:, None] > 0, w, (d[None] == 0).to(F64))
    w = _f32(w / w.sum(1, keepdim=True))
    size = x.shape[dim]
    xp = _padded(x, R, dim)
    out = torch.zeros_like(x)
    for k in range(2 * R + 1):  # in a fixed order: the same sum whatever else is in the batch
        out = out + _b(w[:, k]) * _window(xp, k, size, dim)
    return out


def blur(x: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    return _gauss(_gauss(x, sx, -1), sy, -2)


def _dilate(x: torch.Tensor, r: torch.Tensor, dim: int) -> torch.Tensor:
    """Maximum over a window of per-sample radius r (n,) (fractional: the outermost pixel counts by its share)."""
    R = int(torch.ceil(r.max()).item()) if r.numel() else 0
    out = x
    size = x.shape[dim]
    xp = _padded(x, R, dim)
    for k in range(1, R + 1):
        weight = _b(_f32((r - (k - 1)).clamp(0, 1)))
        for shift in (R - k, R + k):
            out = torch.maximum(out, weight * _window(xp, shift, size, dim))
    return out


def _translate(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Content moved by (dx, dy) output pixels (n,) each, bilinear, zeros coming in."""
    for d, dim in ((dx, -1), (dy, -2)):
        size = x.shape[dim]
        src = torch.arange(size, dtype=F64, device=x.device)[None] - d[:, None]  # (n, size): where each pixel reads
        i0 = torch.floor(src)
        shape = (-1, 1, 1, size) if dim == -1 else (-1, 1, size, 1)
        parts = []
        for i in (i0, i0 + 1):
            inside = ((i >= 0) & (i <= size - 1)).reshape(shape)
            parts.append(torch.where(inside, _take(x, i.clamp(0, size - 1).long(), dim), 0.0))
        x = parts[0] + _f32(src - i0).reshape(shape) * (parts[1] - parts[0])
    return x


# --- textures (background.py's kinds), in crop coordinates -------------------------------------------------------

def _corner_range(g: _Geo, fx: torch.Tensor, fy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max of fx·x + fy·y over the crop's pixel grid (reached at its corners)."""
    xs = torch.stack([torch.zeros_like(g.w), g.w - 1], 1)
    ys = torch.stack([torch.zeros_like(g.h), g.h - 1], 1)
    vals = (xs[:, :, None] * fx[:, None, None] + ys[:, None, :] * fy[:, None, None]).reshape(-1, 4)
    return vals.min(1).values, vals.max(1).values


def _cubic_taps(n_in: torch.Tensor, n_out: int, out_len: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL's bicubic up-sampling (a = -0.5, taps renormalised at the edges) from n_in (n,) samples to output pixel
    centres spread over out_len (n,) of n_out pixels: indices and weights, each (n, n_out, 4)."""
    x = torch.arange(n_out, dtype=F64, device=device)
    centre = torch.minimum((x[None] + 0.5) * (n_in / out_len)[:, None], n_in[:, None])  # keep_ratio's padding
    j = torch.floor(centre - 1.5)[..., None] + torch.arange(4, dtype=F64, device=device)
    t = (j + 0.5 - centre[..., None]).abs()
    a = -0.5
    wt = torch.where(t < 1, ((a + 2) * t - (a + 3)) * t * t + 1, torch.where(t < 2, (((t - 5) * t + 8) * t - 4) * a, 0.0))
    valid = (j >= 0) & (j < n_in[:, None, None])
    wt = torch.where(valid, wt, 0.0)
    wt = wt / wt.sum(-1, keepdim=True)
    return j.clamp(min=0).long(), _f32(wt)


def _noise_field(q: torch.Tensor, p: str, g: _Geo) -> torch.Tensor:
    """The texture's low-frequency field (n, 1, H, W): its grid up-sampled bicubically to the crop."""
    n, dev = q.shape[0], q.device
    size = _col(q, f"{p}noise.size")
    grid = _f32(_col(q, f"{p}noise.grid")).reshape(n, *GRID)
    jx, wx = _cubic_taps(size[:, 1], g.W, g.wv, dev)  # (n, W, 4)
    jx = jx.clamp(max=GRID[1] - 1)
    rows = torch.zeros(n, GRID[0], g.W, device=dev)
    for k in range(4):
        idx = jx[:, None, :, k].expand(n, GRID[0], g.W)
        rows = rows + wx[:, None, :, k] * grid.gather(2, idx)
    jy, wy = _cubic_taps(size[:, 0], g.H, torch.full_like(size[:, 0], g.H), dev)  # (n, H, 4)
    jy = jy.clamp(max=GRID[0] - 1)
    out = torch.zeros(n, g.H, g.W, device=dev)
    for k in range(4):
        idx = jy[:, :, k, None].expand(n, g.H, g.W)
        out = out + wy[:, :, k, None] * rows.gather(1, idx)
    return out[:, None]


def _resampled(s: torch.Tensor) -> torch.Tensor:
    """The share of white noise variance left by data.to_tensor's down-sampling of a crop by s (n,) (a triangle
    filter of support s: 2/(3s), measured against PIL within 2 %; 1 when it does not shrink)."""
    return torch.where(s <= 1, torch.ones_like(s), 2 / (3 * s))


def _noise_std(g: _Geo) -> torch.Tensor:
    """How much of a crop pixel's noise std survives the resize to the model's input (n,)."""
    return torch.sqrt(_resampled(1 / g.sy) * _resampled(1 / g.sx))


def _mean(x: torch.Tensor) -> torch.Tensor:
    """Per-sample channel means (n, C, 1, 1), summed in float64 (the same value whatever the batch)."""
    return _f32(x.to(F64).mean((2, 3), keepdim=True))


def _shape_cover(item: torch.Tensor, g: _Geo) -> torch.Tensor:
    """Coverage (n, 1, H, W) of one drawn shape, in the quarter-size image's pixels it was drawn in (PIL draws it
    there and up-samples it: about one of its pixels of soft edge). float32: sqrt rounds exactly everywhere."""
    sw = torch.clamp(torch.floor(g.w / 4), min=2)
    sh = torch.clamp(torch.floor(g.h / 4), min=2)
    u = _f32((g.xx + 0.5) * _b(sw / g.w))  # crop pixel centres in the small image
    v = _f32((g.yy + 0.5) * _b(sh / g.h))
    x0, x1, y0, y1, kind = (_b(_f32(item[:, k])) for k in range(3, 8))
    x1, y1 = x1 + 1, y1 + 1  # PIL fills the end pixel
    kind = kind.reshape(-1)
    out = torch.zeros(item.shape[0], 1, g.H, g.W, device=item.device)
    for which, fn in enumerate((_ellipse, _rect, _line)):
        idx = (kind == which).nonzero()[:, 0]
        if idx.numel():
            signed = fn(u[idx], v[idx], x0[idx], x1[idx], y0[idx], y1[idx], _b(_f32(sh))[idx])
            out = out.index_copy(0, idx, (signed + 0.5).clamp(0, 1))
    return out


def _rect(u, v, x0, x1, y0, y1, sh):
    return torch.minimum(torch.minimum(u - x0, x1 - u), torch.minimum(v - y0, y1 - v))


def _ellipse(u, v, x0, x1, y0, y1, sh):
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, ((x1 - x0) / 2).clamp(min=0.5), ((y1 - y0) / 2).clamp(min=0.5)
    return (1 - torch.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2)) * torch.minimum(rx, ry)


def _line(u, v, x0, x1, y0, y1, sh):
    # corner to corner of its box (sorted draws: top-left to bottom-right), max(1, sh // 4) wide
    ax, ay, dx, dy = x0 + 0.5, y0 + 0.5, x1 - x0 - 1, y1 - y0 - 1
    t = (((u - ax) * dx + (v - ay) * dy) / (dx * dx + dy * dy).clamp(min=1e-9)).clamp(0, 1)
    dist = torch.sqrt((u - ax - t * dx) ** 2 + (v - ay - t * dy) ** 2)
    return torch.clamp(torch.floor(sh / 4), min=1) / 2 - dist


def _gradient(img, q, p, g, fg):
    a, off = _col(q, f"{p}gradient.a")[:, 0], _f32(_col(q, f"{p}gradient.off"))
    fx, fy = torch.cos(a), torch.sin(a)
    lo, hi = _corner_range(g, fx, fy)
    t = _f32((g.xx * _b(fx) + g.yy * _b(fy) - _b(lo)) / _b((hi - lo).clamp(min=1e-6)))
    other = (img + _b(off)).clamp(0, 255)
    return img + t * (other - img)


def _noise(img, q, p, g, fg):
    field = _noise_field(q, p, g)
    amp = _b(_f32(_col(q, f"{p}noise.tint") * _col(q, f"{p}noise.amp")))
    grain = normals(_col(q, f"{p}noise.seed")[:, 0], (1, g.H, g.W)) * _b(_f32(
        _col(q, f"{p}noise.grain")[:, 0] * _noise_std(g)))
    return img + field * amp + grain


def _shapes(img, q, p, g, fg):
    items = _col(q, f"{p}shapes.item").reshape(q.shape[0], SHAPES, 8)
    count = _col(q, f"{p}shapes.n")[:, 0]
    mean = _mean(img)  # the colours are drawn around the texture's mean so far
    for k in range(int(count.max().item())):
        colour = (mean + _b(_f32(items[:, k, :3]))).clamp(0, 255)
        cover = torch.where(_b(count > k), _shape_cover(items[:, k], g), 0.0)
        img = img + cover * (colour - img)
    return img


def _stripes(img, q, p, g, fg):
    a, period, amp = _col(q, f"{p}stripes.wave").unbind(1)
    fx, fy = torch.cos(a) / period, torch.sin(a) / period  # cycles per crop pixel
    # what the crop's resize to the model's input leaves of stripes that fine (a triangle filter: sinc²)
    keep = (torch.sinc(fx / g.sx.clamp(max=1)) * torch.sinc(fy / g.sy.clamp(max=1))) ** 2
    wave = torch.sin(2 * math.pi * (g.xx * _b(fx) + g.yy * _b(fy)))
    return img + _f32(wave * _b(amp * keep))


def _texture(img: torch.Tensor, q: torch.Tensor, p: str, g: _Geo, word: torch.Tensor | None, fg: torch.Tensor):
    """background.texture over `img` (n, 3, H, W) in 0..255: each kind, in the order of background.KINDS (the
    order the CPU applies a sample's picks in), on the samples that drew it."""
    H, W = g.H, g.W
    for kind, fn in (("gradient", _gradient), ("noise", _noise), ("shapes", _shapes), ("stripes", _stripes)):
        img = _subset(img, _on(q, f"{p}{kind}"),
                      lambda idx, fn=fn, img=img: fn(img[idx], q[idx], p, _Geo(q[idx], H, W), fg[idx]))
    if word is not None:
        def words(idx, img=img):
            x, qi = img[idx], q[idx]
            share, off = _f32(_col(qi, f"{p}word.colour")[:, :1]), _f32(_col(qi, f"{p}word.colour")[:, 1:])
            mean = _mean(x)
            colour = (mean + (_b(fg[idx]) - mean) * _b(share) + _b(off)).clamp(0, 255)
            return x + word[idx] * (colour - x)

        img = _subset(img, _on(q, f"{p}word"), words)
    return img.clamp(0, 255)


# --- degradations ------------------------------------------------------------------------------------------------

def _lowres(x: torch.Tensor, small_h: torch.Tensor, small_w: torch.Tensor, g: _Geo) -> torch.Tensor:
    """Down-sample to (small_h, small_w) crop pixels' worth of detail and back, bilinear: an anti-aliasing blur,
    then the coarse samples interpolated linearly."""
    n = x.shape[0]
    fy = (small_h / g.H).clamp(max=1)  # coarse samples per output pixel
    fx = (small_w / g.wv).clamp(max=1)
    x = blur(x, 0.41 * torch.sqrt((1 / fx ** 2 - 1).clamp(min=0)), 0.41 * torch.sqrt((1 / fy ** 2 - 1).clamp(min=0)))
    for f, count, dim, size in ((fx, torch.minimum(small_w, g.wv), -1, g.W), (fy, torch.minimum(small_h,
                                torch.full_like(small_h, g.H)), -2, g.H)):
        pos = torch.arange(size, dtype=F64, device=x.device)[None]
        c = (pos + 0.5) * f[:, None] - 0.5  # coarse coordinate of each output pixel
        j0 = torch.floor(c)
        t = c - j0
        vals = []
        for j in (j0, j0 + 1):
            j = torch.minimum(j.clamp(min=0), (count - 1)[:, None])
            p = (j + 0.5) / f[:, None] - 0.5  # the coarse sample's place in output pixels
            i0 = torch.floor(p)
            a = _take(x, i0.clamp(0, size - 1).long(), dim)
            b = _take(x, (i0 + 1).clamp(0, size - 1).long(), dim)
            fr = _f32(p - i0)
            fr = fr.reshape(n, 1, 1, size) if dim == -1 else fr.reshape(n, 1, size, 1)
            vals.append(a + fr * (b - a))
        t = _f32(t).reshape(n, 1, 1, size) if dim == -1 else _f32(t).reshape(n, 1, size, 1)
        x = vals[0] + t * (vals[1] - vals[0])
    return x


_TABLE_BITS = 20
_TABLES: dict = {}


def _table(device: torch.device) -> torch.Tensor:
    """2²⁰ standard normals, the same on every device (drawn once on the CPU from a fixed seed)."""
    key = str(device)
    if key not in _TABLES:
        gen = torch.Generator().manual_seed(0x5EED_2014)
        _TABLES[key] = torch.randn(1 << _TABLE_BITS, generator=gen).to(device)
    return _TABLES[key]


def normals(seeds: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """(n, *shape) standard normals; sample i's are a function of seeds[i] alone: a window of a fixed table, read
    from an offset with an odd stride, both taken from the seed's 32 bits."""
    count = shape[0] * shape[1] * shape[2]
    seed = seeds.to(torch.int64)[:, None]
    offset = seed & ((1 << _TABLE_BITS) - 1)
    stride = ((seed >> 12) & 0xFFFFF) | 1
    j = torch.arange(count, dtype=torch.int64, device=seeds.device)[None]
    table = _table(seeds.device)
    return table[(offset + j * stride) & ((1 << _TABLE_BITS) - 1)].reshape(-1, *shape)


# --- the finisher ------------------------------------------------------------------------------------------------

def _subset(img: torch.Tensor, on: torch.Tensor, fn) -> torch.Tensor:
    """img with fn(idx) written over the samples where `on` (fn sees only those)."""
    idx = on.nonzero()[:, 0]
    if idx.numel() == 0:
        return img
    return img.index_copy(0, idx, fn(idx))


@torch.no_grad()
def finish(masks: torch.Tensor, params: torch.Tensor, channels: int) -> torch.Tensor:
    """(n, 2, H, W) uint8 masks and (n, P) float64 parameters -> (n, channels, H, W) float32 images in [0, 1]."""
    n, _, H, W = masks.shape
    q_all = params.to(masks.device, F64)
    m = masks.to(torch.float32) / 255
    T, word = m[:, :1], m[:, 1:]
    bg, fg = _f32(_col(q_all, "bg")), _f32(_col(q_all, "fg"))
    img = _b(bg).expand(n, 3, H, W)
    tex_on = torch.stack([_on(q_all, f"tex.{k}") for k in ("gradient", "noise", "shapes", "stripes", "word")], 1)

    def sub(idx):
        return q_all[idx], _Geo(q_all[idx], H, W)

    def texture(idx):
        q, g = sub(idx)
        return _texture(img[idx], q, "tex.", g, word[idx], fg[idx])

    img = _subset(img.contiguous(), tex_on.any(1), texture)

    def shadow(idx):
        q, g = sub(idx)
        shift = _col(q, "shadow.shift")
        S = _translate(T[idx], shift[:, 0] * g.sx, shift[:, 1] * g.sy)
        sigma = _col(q, "shadow.sigma")[:, 0]
        S = blur(S, sigma * g.sx, sigma * g.sy)
        shade, strength = _b(_f32(_col(q, "shadow.shade"))), _b(_f32(_col(q, "shadow.strength")))
        x = img[idx]
        return x + (S * strength) * (shade - x)

    img = _subset(img, _on(q_all, "shadow"), shadow)

    def border(idx):
        q, g = sub(idx)
        width = _col(q, "border.width")[:, 0]
        B = _dilate(_dilate(T[idx], width * g.sx, -1), width * g.sy, -2)
        x = img[idx]
        return x + B * (_b(_f32(_col(q, "border.colour"))) - x)

    img = _subset(img, _on(q_all, "border"), border)
    img = img + T * (_b(fg) - img)

    def blend(idx):
        q, g = sub(idx)
        tex = _texture(_b(bg[idx]).expand(len(idx), 3, H, W).contiguous(), q, "blend.", g, None, fg[idx])
        a, b = img[idx] / 255, tex / 255
        mode = _b(_col(q, "blend.mode")[:, 0])
        mixed = torch.where(mode < 0.5, b, a * b)
        mixed = torch.where((mode > 1.5) & (mode < 2.5), 1 - (1 - a) * (1 - b), mixed)
        mixed = torch.where((mode > 2.5) & (mode < 3.5), torch.where(a < 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b)),
                            mixed)
        mixed = torch.where((mode > 3.5) & (mode < 4.5), torch.maximum(a, b), mixed)
        mixed = torch.where(mode > 4.5, torch.minimum(a, b), mixed)
        amount = _b(_f32(_col(q, "blend.amount")))
        return ((a + amount * (mixed - a)) * 255).clamp(0, 255)

    img = _subset(img, _on(q_all, "blend"), blend)

    def lighting(idx):
        q, g = sub(idx)
        where = _col(q, "lighting.where")
        spot = _b(_on(q, "lighting.spot"))
        fx, fy = torch.cos(where[:, 0]), torch.sin(where[:, 0])
        lo, hi = _corner_range(g, fx, fy)
        linear = (g.xx * _b(fx) + g.yy * _b(fy) - _b(lo)) / _b((hi - lo).clamp(min=1e-6))
        cx, cy = _b(where[:, 0]), _b(where[:, 1])
        dist = torch.sqrt(((g.xx - cx) / _b(g.w)) ** 2 + ((g.yy - cy) / _b(g.h)) ** 2)
        far = torch.maximum(torch.maximum(cx, _b(g.w) - 1 - cx) / _b(g.w), torch.zeros_like(cx))
        tall = torch.maximum(cy, _b(g.h) - 1 - cy) / _b(g.h)
        spotted = dist / torch.sqrt(far ** 2 + tall ** 2).clamp(min=1e-6)
        t = _f32(torch.where(spot, spotted, linear))
        return (img[idx] * (1 - _b(_f32(_col(q, "lighting.strength"))) * t)).clamp(0, 255)

    img = _subset(img, _on(q_all, "lighting"), lighting)
    img = torch.floor(img.clamp(0, 255))  # the CPU render's 8-bit image

    def blurred(idx):
        q, g = sub(idx)
        sigma = _col(q, "blur.sigma")[:, 0]  # output pixels down; across, as the crop's pixels are stretched
        return blur(img[idx], sigma * g.h / g.H * g.sx, sigma)

    img = _subset(img, _on(q_all, "blur"), blurred)

    def lowres(idx):
        q, g = sub(idx)
        size = _col(q, "lowres.size")
        return _lowres(img[idx], size[:, 0], size[:, 1], g)

    img = _subset(img, _on(q_all, "lowres"), lowres)

    def noisy(idx):
        q, g = sub(idx)
        std = _col(q, "noise.std")[:, 0] * 255 * _noise_std(g)
        z = normals(_col(q, "noise.seed")[:, 0], (3, H, W))
        return torch.floor((img[idx] + z * _b(_f32(std))).clamp(0, 255))

    img = _subset(img, _on(q_all, "noise"), noisy)
    img = _subset(img, _on(q_all, "jpeg"), lambda idx: jpeg(img[idx], _col(q_all[idx], "jpeg.quality")[:, 0]))
    if channels == 1:  # PIL's L
        img = _LUMA[0] * img[:, :1] + _LUMA[1] * img[:, 1:2] + _LUMA[2] * img[:, 2:]
    img = img / 255
    wv = _col(q_all, "geometry")[:, 3]
    if bool((wv < W).any()):  # keep_ratio: the last column repeated (data.to_tensor's padding)
        idx = torch.minimum(torch.arange(W, device=img.device)[None], (wv.long() - 1)[:, None])
        img = _take(img, idx, -1)
    return img.clamp(0, 1)


def finish_one(recipe: Recipe) -> torch.Tensor:
    """One recipe finished on the CPU: (C, H, W) (the same pixels as in any batch)."""
    return finish(recipe.masks[None], recipe.params[None], recipe.channels)[0]


class Pending:
    """A collated batch holding recipes: finished on the device by `finish` (ReportingLoader does it), the other
    datasets' images (a mixed training list) in their places."""

    def __init__(self, images: torch.Tensor | None, slots: torch.Tensor, masks: torch.Tensor, params: torch.Tensor,
                 channels: int):
        self.images, self.slots, self.masks, self.params, self.channels = images, slots, masks, params, channels

    @classmethod
    def collate(cls, items: list) -> Pending:
        slots = [i for i, x in enumerate(items) if isinstance(x, Recipe)]
        recipes = [items[i] for i in slots]
        images = None
        if len(slots) < len(items):
            ref = next(x for x in items if not isinstance(x, Recipe))
            images = torch.stack([torch.zeros_like(ref) if isinstance(x, Recipe) else x for x in items])
        return cls(images, torch.tensor(slots, dtype=torch.long), torch.stack([r.masks for r in recipes]),
                   torch.stack([r.params for r in recipes]), recipes[0].channels)

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.slots)

    def pin_memory(self) -> Pending:
        return Pending(None if self.images is None else self.images.pin_memory(), self.slots,
                       self.masks.pin_memory(), self.params.pin_memory(), self.channels)

    def finish(self, device: torch.device | str = "cpu") -> torch.Tensor:
        device = torch.device(device)
        where = device if device.type in ("cpu", "cuda") else torch.device("cpu")  # float64 where it exists
        done = finish(self.masks.to(where, non_blocking=True), self.params.to(where, non_blocking=True),
                      self.channels).to(device)
        if self.images is None:
            return done
        out = self.images.to(device, non_blocking=True).clone()
        out[self.slots.to(device)] = done.to(out.dtype)
        return out
