"""Every augmentation op, through the registry: shape, dtype and range kept; p=0 is the identity; the output is a
function of the generator's seed; the text warps keep their fiducial points inside and are exact at radius 0."""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter

from cvlab.augment import AUGMENTS, build_pipeline, preview_grid, step_generator
from cvlab.augment.textwarp import fiducial_points, tps_warp
from cvlab.config.augment import AUGMENT_OPS, AugmentSpec

TEXT_WARPS = ("text_distort", "text_stretch", "text_perspective")


def spec(op: str, **kw):
    return TypeAdapter(AugmentSpec).validate_python({"op": op, **kw})


def build(op: str, **kw):
    return AUGMENTS[op](spec(op, **kw))


def images(b: int = 6, c: int = 1, dtype=torch.float32) -> torch.Tensor:
    # text-like content: a smooth background and dark strokes, plus exact 0 and 1 to catch range slips
    g = torch.Generator().manual_seed(1)
    x = torch.rand(b, c, 32, 100, generator=g)
    x[:, :, 10:22, 10:90:7] = 0.0
    x[:, :, :2] = 1.0
    return x.to(dtype)


def test_registry_matches_config():
    assert set(AUGMENTS) == set(AUGMENT_OPS)


@pytest.mark.parametrize("op", sorted(AUGMENTS))
@pytest.mark.parametrize("channels,dtype", [(1, torch.float32), (3, torch.float64)])
def test_keeps_shape_dtype_range(op, channels, dtype):
    x = images(c=channels, dtype=dtype)
    y = build(op, p=1.0)(x, step_generator(0, 3))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1 and torch.isfinite(y).all()
    if op != "invert":
        assert not torch.equal(y, x), "p=1 should change the images"


@pytest.mark.parametrize("op", sorted(AUGMENTS))
def test_p0_is_identity_and_seed_decides(op):
    x = images()
    assert torch.equal(build(op, p=0.0)(x, step_generator(0, 1)), x)
    a = build(op, p=0.5)
    y1, y2 = a(x, step_generator(7, 11)), a(x, step_generator(7, 11))
    assert torch.equal(y1, y2)
    changed = [not torch.equal(y1[i], x[i]) for i in range(len(x))]
    assert 0 < sum(changed) < len(x) or op == "invert", "p=0.5 on 6 images with this seed picks some, not all"
    if op != "invert":  # the step changes the draw
        assert not torch.equal(a(x, step_generator(7, 12)), y1)


@pytest.mark.parametrize("op", TEXT_WARPS)
@pytest.mark.parametrize("segments", [1, 4, 9])
def test_text_warp_points_stay_inside(op, segments):
    kw = {"radius": 0.5 if op == "text_distort" else 0.49}  # the largest radius each op allows
    warp = build(op, p=1.0, segments=segments, **kw)
    x = images(b=64)
    dst = warp.sample(x, step_generator(0, 0))["dst"]  # (B, K, 2), normalized: the image is [-1, 1]
    assert dst.shape == (64, 2 * (segments + 1), 2)
    assert dst.abs().max() <= 1.0
    n = segments + 1
    top, bottom = dst[:, :n], dst[:, n:]
    assert (top[..., 1] < bottom[..., 1]).all(), "the top row stays above the bottom row"
    assert (top[:, 1:, 0] > top[:, :-1, 0]).all() and (bottom[:, 1:, 0] > bottom[:, :-1, 0]).all(), "order kept"


@pytest.mark.parametrize("op", (*TEXT_WARPS, "learned"))
def test_zero_radius_is_identity(op):
    x = images()
    y = build(op, p=1.0, radius=0.0)(x, step_generator(0, 0))
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


def test_tps_moves_content_to_the_destination():
    # every fiducial point 5 px to the right is a pure shift: what was at column c is now at column c + 5
    x = images(b=2)
    src = fiducial_points(4, x)
    dst = src + torch.tensor([5 * 2 / 100, 0.0])
    y = tps_warp(x, src, dst.expand(2, -1, -1))
    torch.testing.assert_close(y[..., 5:], x[..., :-5], atol=1e-4, rtol=0)


def test_pipeline_and_preview():
    specs = [spec("rotate", p=1.0), spec("text_distort"), spec("noise", std=0.1), spec("learned")]
    pipe = build_pipeline(specs)
    assert len(pipe) == 4 and pipe.learned is pipe.ops[3]
    x = images(b=3)
    grid = preview_grid(pipe, x, step_generator(0, 0))
    assert grid.dtype.name == "uint8" and grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[0] == 6 * (32 + 2)  # originals, four ops, the pipeline
    assert pipe.learned.last is None, "a preview must not feed the agent's next update"
