"""The normalization lab's parts: per-device BN statistics (ghost batches), batches of samples that share a
source, the compare-norms protocols, and the mechanism probes (ρ, effective sample size, batch dependence)."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_experiment, torchrun_train

from cvlab.compare.grid import make_variants
from cvlab.compare.mechanism import batch_dependence, between_image_share, effective_values
from cvlab.config import load_config
from cvlab.config.data import ImageCfg, SynthSpec
from cvlab.data.loaders import datasets_for, train_loader
from cvlab.data.sampling import StepSampler, batch_groups
from cvlab.data.synth import SynthWords
from cvlab.data.tokenizer import tokenizer_for
from cvlab.engine.runs.checkpoint import load_checkpoint
from cvlab.engine.train.start import start_run
from cvlab.errors import CvlabError
from cvlab.models import build_model
from cvlab.models.norms import GhostBatchNorm2d, values_per_statistic

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------- ghost batches

def test_ghost_batch_norm_is_batch_norm_per_group_with_the_first_groups_running_statistics():
    torch.manual_seed(0)
    x = torch.randn(8, 4, 3, 5) * 3 + 1
    ghost = GhostBatchNorm2d(4, 2).train()
    y = ghost(x)
    devices = [torch.nn.BatchNorm2d(4).train() for _ in range(4)]
    expected = torch.cat([bn(c) for bn, c in zip(devices, x.split(2), strict=True)])
    assert torch.equal(y, expected)
    assert torch.equal(ghost.running_mean, devices[0].running_mean)  # rank 0's, as a DDP checkpoint keeps
    assert torch.equal(ghost.running_var, devices[0].running_var)
    assert int(ghost.num_batches_tracked) == 1
    # its statistics are not the whole batch's: plain BN over 8 images gives another output
    assert not torch.allclose(y, torch.nn.BatchNorm2d(4).train()(x))
    ghost.eval()
    assert torch.equal(ghost(x), torch.nn.functional.batch_norm(
        x, ghost.running_mean, ghost.running_var, ghost.weight, ghost.bias, False, 0.0, ghost.eps))
    assert set(ghost.state_dict()) == set(torch.nn.BatchNorm2d(4).state_dict())  # checkpoints are plain BN's
    assert values_per_statistic(ghost, (8, 4, 3, 5)) == 2 * 3 * 5  # the b images of one group, not the batch


def test_ghost_batch_must_divide_the_batch(cli, write_exp):
    path = write_exp(tiny_experiment(model={"norm": {"name": "batch", "ghost_batch": 3}}))
    code, _, err = cli("config", "show", path)
    assert code == 2 and "train: batch_size 4 is not a multiple of model.norm.ghost_batch 3" in err
    code, _, err = cli("config", "show", write_exp(tiny_experiment(model={"norm": {"name": "group",
                                                                                   "ghost_batch": 2}})))
    assert code == 2 and "model.norm.ghost_batch" in err and "applies to model.norm.name=batch only" in err


def _bn_exp(batch_size: int, ghost: int | None = None) -> dict:
    return tiny_experiment(
        data={"train": [{"type": "synth", "size": 64, "seed": 0, "max_len": 5, "style": "plain"}],
              "val": [{"type": "synth", "name": "val", "size": 8, "seed": 1, "max_len": 5, "style": "plain"}]},
        model={"norm": {"name": "batch", "ghost_batch": ghost}},
        train={"steps": 3, "batch_size": batch_size, "eval_every": 3, "warmup_steps": 1, "threads": 1},
        eval={"batch_size": 4}, log={"every": 1, "image_grid": 0})


def test_a_ghost_batch_trains_what_processes_of_that_batch_train_without_sync_bn(tmp_path):
    """One process at batch 4 with ghost_batch 2 against a real torchrun of 2 gloo processes at batch 2 each:
    the same gradients (DDP averages the per-process losses) and rank 0's running statistics."""
    proc = torchrun_train(_bn_exp(2), tmp_path, runs="two")
    assert proc.returncode == 0, proc.stderr
    one, _ = start_run(load_config(_write(tmp_path / "one.yaml", _bn_exp(4, ghost=2))), tmp_path / "one")
    (two,) = (tmp_path / "two" / "tiny").iterdir()
    a = load_checkpoint(two / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(one / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=1e-4), k
    # and plain BN over the 4 images is another model: the ghost batch is what made them equal
    plain, _ = start_run(load_config(_write(tmp_path / "plain.yaml", _bn_exp(4))), tmp_path / "plain")
    c = load_checkpoint(plain / "checkpoints" / "last.pt")["model"]
    assert any(not torch.allclose(a[k].float(), c[k].float(), rtol=0, atol=1e-4) for k in a if "running" in k)


def _write(path: Path, exp: dict) -> Path:
    path.write_text(yaml.safe_dump(exp))
    return path


# --------------------------------------------------------------------------------------------- shared sources

def _synth(**kw) -> SynthWords:
    return SynthWords(SynthSpec(size=40, seed=3, style="plain", **kw), "0123456789abcdefghijklmnopqrstuvwxyz",
                      ImageCfg(height=32, width=64))


def _pixels(ds, i):
    return np.asarray(ds.render(i)[0])


def test_same_source_samples_share_every_style_draw_and_keep_their_words():
    alone, shared, word = _synth(), _synth(same_source=4), _synth(same_source=4, same_word=True)
    # a run's samples: one source (here the plain style's colours and layout), each its own word
    assert len({shared.render(i)[1] for i in range(4)}) > 1
    assert [shared.render(i)[1] for i in range(8)] == [alone.render(i)[1] for i in range(8)]
    assert shared.streams(0).color.random() == shared.streams(3).color.random()
    assert shared.streams(3).color.random() != shared.streams(4).color.random()  # the next run: a new source
    # same word: one label per run, near-identical renders (only noise grain may differ)
    assert len({word.render(i)[1] for i in range(4)}) == 1 and word.render(4)[1] == word.label(5)
    assert np.array_equal(_pixels(word, 0), _pixels(word, 1))  # plain style: no noise stage, so identical
    # alone: today's renders, untouched (one generator per sample)
    streams = alone.streams(0)
    assert all(g is streams.own for g in streams)


def test_same_source_renders_are_a_function_of_seed_and_index(tmp_path):
    """Across fresh objects (a worker process's pickle), any access order and resume: the same pixels."""
    import pickle

    ds = _synth(same_source=2)
    first = [_pixels(ds, i) for i in (5, 0, 4, 1)]
    again = pickle.loads(pickle.dumps(ds))
    assert all(np.array_equal(a, _pixels(again, i)) for a, i in zip(first, (5, 0, 4, 1), strict=True))


def test_grouped_batches_keep_each_source_together_across_workers_and_resume(write_exp):
    exp = tiny_experiment(data={"train": [{"type": "synth", "size": 48, "seed": 0, "max_len": 5, "style": "plain",
                                           "same_source": 2}], "group_by": "source", "group_size": 2},
                          train={"batch_size": 4})
    cfg = load_config(write_exp(exp))
    sets = datasets_for(cfg, "train")
    groups, lines = batch_groups(sets, "source", 2)
    assert len(groups) == 24 and "24 groups of 2 samples sharing their source" in lines[0]
    sampler = StepSampler(48, 4, seed=0, steps=30, groups=groups)
    batches = list(sampler)
    for batch in batches:  # positions 0-1 and 2-3 of every batch: one source each
        assert batch[0] // 2 == batch[1] // 2 and batch[2] // 2 == batch[3] // 2
    resumed = StepSampler(48, 4, seed=0, steps=30, start=17, groups=groups)
    assert list(resumed) == batches[17:]
    two = [labels for _, labels in train_loader(sets, 4, seed=0, steps=5, start=0, workers=2, groups=groups)]
    zero = [labels for _, labels in train_loader(sets, 4, seed=0, steps=5, start=0, workers=0, groups=groups)]
    assert two == zero


def test_grouping_by_what_a_dataset_does_not_record_is_refused(write_exp):
    cfg = load_config(write_exp(tiny_experiment()))
    with pytest.raises(CvlabError, match="data.group_by: source: the training set synth does not record"):
        batch_groups(datasets_for(cfg, "train"), "source", 2)  # same_source 1: every sample its own source


# --------------------------------------------------------------------------------------------- compare-norms

def test_per_device_protocol_keeps_the_step_and_trains_per_sample_norms_once(write_exp):
    base = load_config(write_exp(tiny_experiment(train={"batch_size": 8, "steps": 10})))
    vs = make_variants(base, ["batch", "group", "batch/source", "batch/word"], [8, 2], 2, protocol="per-device")
    by = {(v.norm, v.batch_size, v.seed): v for v in vs}
    assert all(v.cfg.train.batch_size == 8 and v.cfg.train.steps == 10 for v in vs)  # one optimizer for all
    assert by[("batch", 2, 0)].cfg.model.norm.ghost_batch == 2 and by[("batch", 8, 0)].cfg.model.norm.ghost_batch is None
    group = [v for v in vs if v.norm == "group"]
    assert len(group) == 2 and all(v.shared and "b=any" in v.name for v in group)  # once per seed
    src = by[("batch/source", 2, 1)].cfg
    assert (src.data.group_by, src.data.group_size, src.data.train[0].same_source) == ("source", 2, 2)
    assert by[("batch/word", 2, 0)].cfg.data.train[0].same_word
    assert len({v.name for v in vs}) == len(vs) and not any("/" in v.name for v in vs)
    paper = make_variants(base, ["batch"], [8, 2], 1, protocol="paper", devices=4)
    assert [(v.cfg.train.batch_size, v.cfg.model.norm.ghost_batch, v.cfg.train.steps) for v in paper] == \
        [(32, 8, 10), (8, 2, 40)]
    with pytest.raises(CvlabError, match="takes no statistics over the batch"):
        make_variants(base, ["group/source"], [2], 1, protocol="per-device")
    with pytest.raises(CvlabError, match="at most the step's batch"):
        make_variants(base, ["batch"], [16], 1, protocol="per-device")


# --------------------------------------------------------------------------------------------- mechanism

@pytest.mark.parametrize("norm", ["batch", "group", "layer", "instance", "none"])
def test_batch_dependence_is_exactly_zero_without_batch_statistics(write_exp, norm):
    cfg = load_config(write_exp(tiny_experiment(model={"norm": {"name": norm}})))
    torch.manual_seed(0)
    model = build_model(cfg.model, tokenizer_for(cfg).num_classes, 1).model
    images = torch.rand(24, 1, 32, 64)
    before = copy.deepcopy(model.state_dict())
    dep = batch_dependence(model, images, 4, probes=4, decode=lambda logits: logits.argmax(-1).tolist())
    if norm == "batch":
        assert dep["batch_dependence"] > 1e-3 and dep["batch_dependence_max"] > 0
    else:
        assert dep["batch_dependence"] == 0.0 and dep["batch_dependence_max"] == 0.0
        assert dep["batch_dependence_changed"] == 0.0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # buffers restored
    assert batch_dependence(model, images, 1)["batch_dependence"] is None


def test_between_image_share_and_effective_sample_size():
    # images whose pixels are their own constant: ρ = 1, one value per image counts
    n, c, h, w = 64, 3, 4, 5
    rng = torch.Generator().manual_seed(0)
    const = torch.randn(n, c, 1, 1, generator=rng).expand(n, c, h, w)
    noise = torch.randn(n, c, h, w, generator=rng)

    def acc(x):
        x = x.double()
        m = x.mean(dim=(2, 3))
        return {"images": n, "hw": h * w, "img_sum": m.sum(0), "img_sumsq": (m * m).sum(0),
                "within": x.var(dim=(2, 3), unbiased=False).sum(0)}

    assert between_image_share(acc(const)) == pytest.approx(1.0)
    assert between_image_share(acc(noise)) < 0.05  # i.i.d. pixels: nothing shared within an image
    assert 0.3 < between_image_share(acc(const + noise)) < 0.7
    assert effective_values(2, 20, 1.0) == pytest.approx(2.0)
    assert effective_values(2, 20, 0.0) == pytest.approx(40.0)


def test_the_quick_study_is_the_design_the_docs_describe():
    """experiments/compare_norms_quick.yaml with the documented --norms: ten runs of the same step and budget,
    group norm at 4 channels per group or more, BN at b = 2 on i.i.d., same-source and same-word groups."""
    base = load_config(ROOT / "experiments" / "compare_norms_quick.yaml")
    norms = "batch,group,layer,instance,none,batch/source:2,batch/word:2,batch@after_act".split(",")
    vs = make_variants(base, norms, [32, 2], 1)
    assert len(vs) == 10 and {(v.cfg.train.batch_size, v.cfg.train.steps) for v in vs} == {(32, 900)}
    group = next(v for v in vs if v.norm == "group")
    built = build_model(group.cfg.model, tokenizer_for(group.cfg).num_classes, 1)
    gns = [m for m in built.model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert gns and all(m.num_channels // m.num_groups >= 4 for m in gns)
    at2 = {v.norm: v.cfg for v in vs if v.batch_size == 2}
    assert {n: c.data.group_by for n, c in at2.items() if n.startswith("batch")} == {
        "batch": "none", "batch/source:2": "source", "batch/word:2": "source", "batch@after_act": "none"}
    assert all(c.model.norm.ghost_batch == 2 for n, c in at2.items() if n.startswith("batch"))


def test_the_values_behind_a_ghost_batch_statistic_are_its_groups(write_exp):
    from cvlab.compare.probes import statistic_sizes

    cfg = load_config(write_exp(tiny_experiment(model={"norm": {"name": "batch", "ghost_batch": 2}},
                                                train={"batch_size": 8})))
    images = torch.rand(8, 1, 32, 64)

    def sizes(ghost):
        model = build_model(cfg.model.model_copy(update={"norm": cfg.model.norm.model_copy(
            update={"ghost_batch": ghost})}), tokenizer_for(cfg).num_classes, 1).model.train()
        return statistic_sizes(model, lambda: model(images))

    ghost, plain = sizes(2), sizes(None)
    assert ghost and ghost.keys() == plain.keys()
    for name in ghost:  # b = 2 images of the batch of 8 behind each statistic: a quarter of the values
        assert ghost[name]["nhw"] == ghost[name]["own"] == plain[name]["nhw"] // 4
