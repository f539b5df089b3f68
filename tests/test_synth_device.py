"""Synthetic words with `device_stages: true`: the glyph layer and the stage parameters on the CPU, the stages
finished per batch where the model trains (cvlab/data/synth/recipe.py, device.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_experiment
from PIL import Image

from cvlab.config import ImageCfg, SynthSpec
from cvlab.config.synth import STAGES
from cvlab.data.charset import resolve_charset
from cvlab.data.loaders import collate, deferred, eval_loader, train_loader
from cvlab.data.synth import SynthWords
from cvlab.data.synth.device import Pending, finish, finish_one, normals
from cvlab.data.synth.recipe import LAYOUT, Recipe

ALL_ON = {s: {"p": 1.0} for s in STAGES}


def make(image=None, **kw) -> SynthWords:
    kw = {"size": 64, "device_stages": True, **kw}
    return SynthWords(SynthSpec(**kw), resolve_charset("lower36"), image or ImageCfg())


def fired(ds: SynthWords, stage: str, n: int = 40) -> list[bool]:
    name = {"background": "tex.", "distort": None}.get(stage, stage)
    out = []
    for i in range(n):
        q = ds.render(i, recipe=True)[0].params
        if name == "tex.":
            out.append(any(q[LAYOUT[f"tex.{k}"]].item() for k in ("gradient", "noise", "shapes", "stripes", "word")))
        else:
            out.append(bool(q[LAYOUT[name]].item()))
    return out


def test_recipe_draws_the_same_numbers_as_the_cpu_render():
    """Both modes draw from the same generators in the same order: a stage fires with the same parameters, and
    the generators end in the same state (a drift in either path shows here)."""
    for spec in ({}, {**ALL_ON, "color": "random"}, {"style": "plain"}):
        ds = make(**spec)
        for i in range(24):
            img, label, own = ds.render(i)
            rec, label2, own2 = ds.render(i, recipe=True)
            assert label == label2
            assert own.bit_generator.state == own2.bit_generator.state
            h, w = rec.params[LAYOUT["geometry"]][:2].tolist()
            assert (img.height, img.width) == (h, w)


def test_same_pixels_whatever_the_batch():
    ds = make(**ALL_ON, size=24)
    recipes = [ds.render(i, recipe=True)[0] for i in range(24)]
    whole = Pending.collate(recipes).finish()
    alone = torch.stack([finish_one(r) for r in recipes[:6]])
    assert torch.equal(whole[:6], alone)
    order = [17, 3, 9, 0]
    picked = Pending.collate([recipes[i] for i in order]).finish()
    assert torch.equal(picked, whole[order])
    assert torch.equal(torch.stack([ds[i][0] for i in (5, 11)]), whole[[5, 11]])  # ds[i] is finished alike


def test_same_pixels_across_workers_and_a_resume():
    ds = {"synth": make(size=32, style="plain", blur={"p": 0.5}, noise={"p": 0.5}, background={"p": 0.5})}
    kw = dict(seed=3, steps=2, start=0, pin=False)
    a = [(x, list(y)) for x, y in train_loader(ds, 6, workers=0, **kw)]
    b = [(x, list(y)) for x, y in train_loader(ds, 6, workers=2, **kw)]
    resumed = [(x, list(y)) for x, y in train_loader(ds, 6, workers=0, **{**kw, "start": 1})]
    assert all(torch.equal(x, y) and la == lb for (x, la), (y, lb) in zip(a, b, strict=True))
    assert all(torch.equal(x, y) and la == lb for (x, la), (y, lb) in zip(a[1:], resumed, strict=True))
    assert a[0][0].shape == (6, 1, 32, 100)


def test_finished_images_in_range_for_every_geometry():
    for image in (ImageCfg(), ImageCfg(channels=3, height=32, width=128), ImageCfg(resize="keep_ratio", width=160)):
        ds = make(**ALL_ON, image=image, size=8)
        x = next(iter(eval_loader(ds, 8, workers=0)))[0]
        assert x.shape == (8, image.channels, image.height, image.width) and x.dtype == torch.float32
        assert float(x.min()) >= 0 and float(x.max()) <= 1 and torch.isfinite(x).all()
        assert float(x.std()) > 0.05  # not blank
    keep = make(image=ImageCfg(resize="keep_ratio", width=160), size=8)
    x = finish_one(keep.render(0, recipe=True)[0])
    wv = int(keep.render(0, recipe=True)[0].params[LAYOUT["geometry"]][3])
    assert wv < 160 and torch.equal(x[..., wv:], x[..., wv - 1:wv].expand_as(x[..., wv:]))  # the last column


@pytest.mark.parametrize("stage", ["border", "shadow", "background", "blur", "noise", "jpeg", "lowres", "lighting"])
def test_a_stage_at_p0_never_fires_and_at_p1_always(stage):
    assert not any(fired(make(**{stage: {"p": 0.0}}), stage))
    assert all(fired(make(**{stage: {"p": 1.0}}), stage))


def test_each_stage_changes_the_image_it_fires_on():
    def batch(ds):
        return Pending.collate([ds.render(i, recipe=True)[0] for i in range(8)]).finish()

    clean = batch(make(style="plain", color="dark_on_light", size=8))
    for stage in ("border", "shadow", "background", "blur", "noise", "jpeg", "lowres", "lighting"):
        x = batch(make(style="plain", color="dark_on_light", size=8, **{stage: {"p": 1.0}}))
        assert (x - clean).abs().mean() > 1e-3, stage


def test_same_source_shares_its_texture_grain_not_its_sensor_noise():
    ds = make(same_source=2, background={"p": 1.0, "kinds": ["noise"]}, noise={"p": 1.0})
    a, b = (ds.render(i, recipe=True)[0].params for i in (4, 5))
    assert a[LAYOUT["tex.noise.seed"]].item() == b[LAYOUT["tex.noise.seed"]].item()
    assert a[LAYOUT["noise.seed"]].item() != b[LAYOUT["noise.seed"]].item()
    z = normals(torch.tensor([7, 7, 8]), (1, 4, 5))
    assert torch.equal(z[0], z[1]) and not torch.equal(z[0], z[2]) and abs(float(z.mean())) < 1


def test_cpu_path_unchanged():
    """The option changes what ds[i] is made by, never render(i): the CPU render of a device-mode set is the
    recipe's own; and the ink box (a numpy threshold now) is PIL's point + getbbox."""
    from cvlab.data.synth.layout import _ink_box

    on, off = make(), make(device_stages=False)
    for i in range(8):
        assert on.render(i)[0].tobytes() == off.render(i)[0].tobytes()
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = (rng.random((20, 30)) * rng.random() * 255).astype(np.uint8)
        img = Image.fromarray(a)
        assert _ink_box(img) == img.point([255 if v > 85 else 0 for v in range(256)]).getbbox()


def _contrast(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per image: |mean on the text - mean off it|, the mask the word's (n, H, W)."""
    on, off = mask > 0.6, mask < 0.05
    x = x[:, 0]
    return ((x * on).sum((1, 2)) / on.sum((1, 2)).clamp(min=1) - (x * off).sum((1, 2)) / off.sum((1, 2)).clamp(min=1)).abs()


def test_statistics_close_to_the_cpu_renders():
    n = 32
    dev = make(size=n)
    cpu = make(size=n, device_stages=False)
    recipes = [dev.render(i, recipe=True)[0] for i in range(n)]
    a = Pending.collate(recipes).finish()
    b = torch.stack([cpu[i][0] for i in range(n)])
    mask = torch.stack([r.masks[0] for r in recipes]).float() / 255
    assert abs(float(a.mean() - b.mean())) < 0.04
    ca, cb = _contrast(a, mask), _contrast(b, mask)
    assert abs(float(ca.mean() - cb.mean())) < 0.05
    assert float(torch.corrcoef(torch.stack([ca, cb]))[0, 1]) > 0.7  # the same colours for the same index
    assert float(torch.corrcoef(torch.stack([a.mean((1, 2, 3)), b.mean((1, 2, 3))]))[0, 1]) > 0.8


def test_a_mixed_training_list_finishes_its_synthetic_part():
    sets = {"dev": make(size=16), "cpu": make(size=16, seed=5, device_stages=False)}
    loader = train_loader(sets, 8, seed=1, steps=2, start=0, workers=0, pin=False)
    for images, labels in loader:
        assert isinstance(images, torch.Tensor) and images.shape == (8, 1, 32, 100) and len(labels) == 8
    cat = deferred(torch.utils.data.ConcatDataset(list(sets.values())))
    items = [cat[i] for i in (0, 20, 3)]
    assert isinstance(items[0][0], Recipe) and isinstance(items[1][0], torch.Tensor)
    images, _ = collate(items)
    done = images.finish()
    assert torch.equal(done[1], sets["cpu"][4][0]) and torch.equal(done[0], sets["dev"][0][0])


def test_finish_is_a_function_of_masks_and_params_only():
    r = make(**ALL_ON).render(3, recipe=True)[0]
    x = finish(r.masks[None].repeat(3, 1, 1, 1), r.params[None].repeat(3, 1), 1)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_a_tiny_run_trains_with_device_stages(tmp_path):
    from cvlab.config import load_config
    from cvlab.engine.train.loop import train

    exp = tiny_experiment(train={"steps": 4, "eval_every": 4})
    exp["data"]["train"][0].update(style="mjsynth", device_stages=True)
    exp["data"]["val"][0].update(device_stages=True)
    metrics = train(load_config(raw=exp), tmp_path / "run")
    assert metrics["step"] == 4 and 0 <= metrics["datasets"]["val"]["word_acc"] <= 1
    events = list((tmp_path / "run").glob("events.out.tfevents.*"))
    assert events
