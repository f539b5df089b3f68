"""The norm study's protocol: lr scaling per optimizer, exact probes with dropout, the optimizer's actual update,
statistic sizes (N·H·W), canonical placements (AlexNet's LRN), group-norm degeneration reports, seed statistics."""

import json
import math

import pytest
import torch
from conftest import tiny_experiment
from torch import nn

from cvlab.compare import make_variants
from cvlab.compare.probes import Probe, optimizer_update, smoothness, statistic_sizes
from cvlab.compare.report import aggregate
from cvlab.compare.stats import SHARED, comparisons, holm, t_interval
from cvlab.config import Experiment, ModelCfg
from cvlab.data.tokenizer import tokenizer_for
from cvlab.engine.train.optim import DEFAULT_LR_SCALING, build_optimizer, scale_for_batch
from cvlab.engine.train.preflight import adjustment_messages
from cvlab.errors import CvlabError
from cvlab.models import build_model

torch.set_num_threads(1)


def _cfg(**sections) -> Experiment:
    return Experiment.model_validate(tiny_experiment(**sections))


# --------------------------------------------------------------------------------------------- lr scaling

def test_lr_scaling_rule_per_optimizer():
    assert DEFAULT_LR_SCALING == {"sgd": "linear", "adamw": "sqrt", "adadelta": "sqrt"}
    sgd = _cfg(train={"optimizer": "sgd", "lr": 0.1, "momentum": 0.9}).train
    assert scale_for_batch(sgd, 1 / 16) == {"lr": pytest.approx(0.1 / 16)}  # linear; momentum kept (Goyal et al.)
    adam = _cfg(train={"lr": 0.004, "betas": (0.9, 0.999)}).train
    got = scale_for_batch(adam, 1 / 16)
    assert got["lr"] == pytest.approx(0.001)  # √(1/16)
    assert got["betas"] == pytest.approx((1 - 0.1 / 16, 1 - 0.001 / 16))  # same horizon in samples
    ada = _cfg(train={"optimizer": "adadelta", "lr": 1.0, "rho": 0.95}).train
    got = scale_for_batch(ada, 1 / 4)
    assert got == {"lr": pytest.approx(0.5), "rho": pytest.approx(1 - 0.05 / 4)}
    assert scale_for_batch(adam, 1 / 16, "linear") == {"lr": pytest.approx(0.004 / 16)}
    assert scale_for_batch(adam, 1 / 16, "none") == {}
    assert scale_for_batch(adam, 1.0) == {"lr": 0.004, "betas": pytest.approx((0.9, 0.999))}  # the reference


def test_variants_take_the_optimizers_rule_and_refuse_unknown_ones():
    base = _cfg(train={"optimizer": "sgd", "lr": 0.1, "steps": 10, "eval_every": 10})
    vs = make_variants(base, ["group"], [8, 2], 1, protocol="per-step")
    assert [v.lr_scaling for v in vs] == ["linear", "linear"] and vs[1].cfg.train.lr == pytest.approx(0.025)
    assert isinstance(build_optimizer(nn.Linear(2, 2), vs[1].cfg.train), torch.optim.SGD)
    with pytest.raises(CvlabError, match="--lr-scaling"):
        make_variants(base, ["group"], [8, 2], 1, lr_scaling="cubic", protocol="per-step")


# --------------------------------------------------------------------------------------------- exact probes

def _model_and_loss(cfg: Experiment):
    """The model in train mode and one fixed batch's loss as the training loop's probe gets it."""
    tok = tokenizer_for(cfg)
    torch.manual_seed(0)
    model = build_model(cfg.model, tok.num_classes, 1).model.train()
    images = torch.rand(4, 1, 32, 64)
    targets, lengths = tok.encode_batch(["abc", "de", "fgh", "ij"])

    def loss_fn():
        return model.loss(model(images, targets, lengths), targets, lengths)

    return model, loss_fn


def _alexnet_with_dropout():
    cfg = _cfg(model={"backbone": {"name": "alexnet", "size": "tiny", "width": 0.5, "dropout": 0.5},
                      "norm": {"name": "batch"}, "sequence": {"hidden": 16, "layers": 1}, "dropout": 0.5})
    return (cfg, *_model_and_loss(cfg))


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_smoothness_probe_is_finite_and_leaves_everything_exactly(norm):
    model, loss_fn = _model_and_loss(_cfg(model={"norm": {"name": norm}}))
    loss_fn().backward()  # .grad as the training loop leaves it before the optimizer step
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    out = smoothness(model, loss_fn)
    assert set(out) == {"loss_variation", "grad_change", "beta_smoothness", "grad_norm"}
    assert all(torch.isfinite(torch.tensor(v)) and v >= 0 for v in out.values())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # weights and BN stats, bit for bit
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters(), strict=True))
    assert torch.equal(rng, torch.get_rng_state()) and model.training


def test_probe_with_dropout_gives_zero_gradient_change_at_a_vanishing_step():
    _, model, loss_fn = _alexnet_with_dropout()
    params = [p for p in model.parameters() if p.requires_grad]
    # the control: two plain evaluations draw different dropout masks, so their gradients differ
    g1 = torch.autograd.grad(loss_fn(), params, allow_unused=True)
    g2 = torch.autograd.grad(loss_fn(), params, allow_unused=True)
    assert any(a is not None and not torch.equal(a, b) for a, b in zip(g1, g2, strict=True))
    out = smoothness(model, loss_fn, step_sizes=(0.0,))
    assert out["grad_change"] == 0.0 and out["loss_variation"] == 0.0  # one deterministic loss
    out = smoothness(model, loss_fn, step_sizes=(1e-9,))
    assert out["grad_change"] < 1e-4 * out["grad_norm"]  # fp32 rounding only; fresh masks gave ~10 % here


def test_optimizer_update_is_the_real_step_and_restores_everything():
    cfg, model, loss_fn = _alexnet_with_dropout()
    opt = build_optimizer(model, cfg.train)
    loss_fn().backward()
    opt.step()  # some Adam state to restore
    opt.zero_grad()
    loss_fn().backward()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    grads = [p.grad.clone() for p in params]
    state = {k: {n: t.clone() for n, t in v.items()} for k, v in opt.state_dict()["state"].items()}
    delta = optimizer_update(model, opt, cfg.train.grad_clip)
    assert all(torch.equal(p, w) for p, w in zip(params, before, strict=True))
    assert all(torch.equal(p.grad, g) for p, g in zip(params, grads, strict=True))
    after = opt.state_dict()["state"]
    assert all(torch.equal(after[k][n], t) for k, v in state.items() for n, t in v.items())
    torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)  # what the training loop does next
    opt.step()
    assert all(torch.equal(p.detach() - w, d) for p, w, d in zip(params, before, delta, strict=True))
    # and the probe measures along it, at distances in units of that step
    probe = Probe(1, 1, cfg.train.grad_clip, opt)
    opt.zero_grad()
    loss_fn().backward()
    out = probe(2, model, loss_fn)
    assert out["smoothness/update_norm"] > 0 and math.isfinite(out["smoothness/update_beta_smoothness"])
    assert 0 <= out["grad/clipped_share"] <= 1


# --------------------------------------------------------------------------------------------- N·H·W

@pytest.mark.parametrize("norm,own", [("batch", 2 * 4 * 16), ("group", 96 // 8 * 4 * 16)])
def test_probe_logs_values_per_statistic_at_the_runs_batch_size(norm, own):
    """VGG crnn tiny normalizes conv 5 and 6 (96 channels) at 4×16 for 32×64 input: 2·4·16 = 128 at batch 2."""
    cfg = _cfg(model={"norm": {"name": norm, **({"groups": 8} if norm == "group" else {})}})
    tok = tokenizer_for(cfg)
    model = build_model(cfg.model, tok.num_classes, 1).model.train()
    images = torch.rand(2, 1, 32, 64)
    targets, lengths = tok.encode_batch(["ab", "cd"])
    out = Probe(1, 0)(1, model, lambda: model.loss(model(images, targets, lengths), targets, lengths))
    sizes = {k.rsplit("/", 1)[1]: v for k, v in out.items() if k.startswith("norm/values_per_statistic/")}
    assert set(sizes) == {"backbone.features.7.1", "backbone.features.8.1"}
    assert out["norm/nhw_min"] == 128
    assert all(v == own for v in sizes.values())  # BN: N·H·W; GN(8) of 96 channels: 12 channels × H·W
    assert statistic_sizes(model, lambda: model(torch.rand(6, 1, 32, 64)))["backbone.features.8.1"]["nhw"] == 384


def test_the_quick_comparison_rests_bn_on_100_values_at_batch_2():
    """experiments/compare_norms_quick.yaml's design: VGG-11's last convs see 2×25 maps at 32×100."""
    from cvlab.config import load_config

    cfg = load_config("experiments/compare_norms_quick.yaml")
    model = build_model(cfg.model, tokenizer_for(cfg).num_classes, 1).model.train()
    sizes = statistic_sizes(model, lambda: model(torch.rand(2, 1, 32, 100)))
    assert min(s["nhw"] for s in sizes.values()) == 100 and max(s["nhw"] for s in sizes.values()) == 6400


# --------------------------------------------------------------------------------------------- placements

def _alexnet(norm: dict, **backbone) -> nn.Module:
    cfg = ModelCfg.model_validate({"backbone": {"name": "alexnet", "size": "tiny", **backbone}, "norm": norm,
                                   "sequence": {"hidden": 16, "layers": 1}})
    return build_model(cfg, 12).model.backbone


def test_alexnet_lrn_follows_the_relu_of_conv_1_and_2_only():
    blocks = [m for m in _alexnet({"name": "lrn"}).features if isinstance(m, nn.Sequential)]
    assert [type(m).__name__ for m in blocks[0]] == ["Conv2d", "ReLU", "LocalResponseNorm"]
    assert [type(m).__name__ for m in blocks[1]] == ["Conv2d", "ReLU", "LocalResponseNorm"]
    assert all([type(m).__name__ for m in b] == ["Conv2d", "ReLU"] for b in blocks[2:])
    assert all(b[0].bias is not None for b in blocks)
    everywhere = [m for m in _alexnet({"name": "lrn"}, norm_at="all").modules() if isinstance(m, nn.LocalResponseNorm)]
    assert len(everywhere) == 5
    before = [m for m in _alexnet({"name": "lrn", "position": "before_act"}).features if isinstance(m, nn.Sequential)]
    assert [type(m).__name__ for m in before[0]] == ["Conv2d", "LocalResponseNorm", "ReLU"]
    bn = [m for m in _alexnet({"name": "batch"}).features if isinstance(m, nn.Sequential)]
    assert all([type(m).__name__ for m in b] == ["Conv2d", "BatchNorm2d", "ReLU"] for b in bn)  # BN: all, pre-act


def test_a_sweep_mixes_placements():
    base = _cfg(train={"steps": 4, "eval_every": 4})
    vs = {v.norm: v.cfg.model.norm for v in make_variants(base, ["batch", "batch@after_act", "lrn"], [4], 1, protocol="per-step")}
    assert vs["batch"].position is None and vs["batch@after_act"].position == "after_act"
    assert vs["lrn"].position is None  # its published position (after the ReLU) applies
    with pytest.raises(CvlabError, match="sideways"):
        make_variants(base, ["batch@sideways"], [4], 1, protocol="per-step")


def test_group_norm_degeneration_is_reported_by_layer_name():
    def built(norm: dict, width: float = 1.0):
        cfg = _cfg(model={"backbone": {"name": "vgg", "size": "tiny", "norm_at": "all", "width": width},
                          "norm": {"name": "group", **norm}})
        out = build_model(cfg.model, 12)
        return out, adjustment_messages(cfg, out.adjustments, out.degenerate)

    # tiny CRNN widths 16-32-64-64-96-96; at least 2 channels per group (the default): nothing degenerates
    out, lines = built({"groups": 32})
    groups = [m.num_groups for m in out.model.modules() if isinstance(m, nn.GroupNorm)]
    assert groups == [8, 16, 32, 32, 32, 32] and out.degenerate == {}
    assert any("min_channels_per_group=2" in line and "16 channels" in line for line in lines)
    # one channel per group allowed: 16 and exactly 32 channels in 32 groups are instance norm, named
    out, lines = built({"groups": 32, "min_channels_per_group": 1})
    assert out.degenerate == {"backbone.features.0.1": "instance", "backbone.features.2.1": "instance"}
    assert any("instance norm in 2 layer(s): backbone.features.0.1, backbone.features.2.1" in line for line in lines)
    # 2-3 channel layers (width 1/8) cannot hold 2 groups of 2: one group, layer norm, named
    out, lines = built({"groups": 32}, width=0.125)
    assert out.degenerate["backbone.features.0.1"] == "layer"
    assert any("it is layer norm" in line and "backbone.features.0.1" in line for line in lines)


# --------------------------------------------------------------------------------------------- seeds

def _rows(cells: dict) -> list[dict]:
    rows = []
    for (norm, bs), accs in cells.items():
        for seed, acc in enumerate(accs):
            row = dict.fromkeys(("train_loss", "train_eval_gap", "samples_per_s", "peak_mem_mb", "steps_to_half_best",
                                 "nhw_min", "values_per_stat_min", "bn_gap_max", "bn_mean_err_max", "bn_var_err_max",
                                 "clipped_share", "loss_variation", "beta_smoothness", "update_loss_variation",
                                 "update_beta_smoothness", "grad_norm_first", "grad_norm_last"))
            row.update(name=f"norm={norm},bs={bs},seed={seed}", norm=norm, batch_size=bs, seed=seed, status="done",
                       word_acc=acc, cer=1 - acc, lr=1e-3, lr_scaling="sqrt")
            rows.append(row)
    return rows


T2 = 4.302653  # t quantile 0.975 at 2 degrees of freedom (tables)


def test_cell_intervals():
    lo, hi = t_interval([1.0, 2.0, 3.0])
    assert (lo + hi) / 2 == pytest.approx(2.0) and (hi - lo) / 2 == pytest.approx(T2 / math.sqrt(3), rel=1e-6)
    assert math.isnan(t_interval([1.0])[0])
    rows = _rows({("batch", 2): [0.60, 0.62, 0.61], ("layer", 2): [0.5, 0.7]})
    table = aggregate(rows)
    cell = next(e for e in table if (e["norm"], e["batch_size"]) == ("batch", 2))
    assert cell["word_acc_ci"][0] < 0.61 < cell["word_acc_ci"][1]
    assert math.isnan(next(e for e in table if e["norm"] == "layer")["word_acc_ci"][0])  # 2 seeds: no cell interval


def _test(result: dict, kind: str, norm: str) -> list[dict]:
    return [t for t in result["tests"] if (t["kind"], t["norm"]) == (kind, norm)]


def test_paired_difference_against_the_baseline_on_known_values():
    """Per seed batch − group = 0.01, 0.02, 0.03: mean 0.02, sd 0.01; t = 0.02/(0.01/√3) = √12 on 2 dof, where
    the t-distribution's tail has the closed form P(T > t) = ½(1 − t/√(t² + 2))."""
    rows = _rows({("batch", 32): [0.90, 0.92, 0.94], ("group", 32): [0.89, 0.90, 0.91]})
    (t,) = comparisons(rows)["tests"]
    assert (t["kind"], t["norm"], t["batch_size"], t["seeds"], t["n"]) == ("vs_baseline", "group", 32, [0, 1, 2], 3)
    assert t["values"] == pytest.approx([0.01, 0.02, 0.03]) and t["mean"] == pytest.approx(0.02)
    half = T2 * 0.01 / math.sqrt(3)
    assert t["ci"] == pytest.approx((0.02 - half, 0.02 + half), rel=1e-6)
    tt = math.sqrt(12)
    assert t["p"] == pytest.approx(1 - tt / math.sqrt(tt ** 2 + 2), rel=1e-6)  # two-sided: 2·½(1 − …)
    assert t["p_holm"] == t["p"] and not t["resolved"] and t["why"].startswith("Holm p = ")  # one test: m = 1
    assert welch_p_of(rows) > t["p"]  # the same numbers unpaired: the seed-to-seed spread counted as noise
    # one seed: the point value, no interval, nothing resolved
    (one,) = comparisons(_rows({("batch", 32): [0.90], ("group", 32): [0.85]}))["tests"]
    assert one["mean"] == pytest.approx(0.05) and math.isnan(one["ci"][0]) and one["why"] == "1 seed: no interval"
    # a seed only one side finished is left out of the pairs
    rows = _rows({("batch", 32): [0.90, 0.92, 0.94], ("group", 32): [0.89, 0.90, 0.91]})
    rows[-1]["status"] = "diverged"
    assert comparisons(rows)["tests"][0]["seeds"] == [0, 1]


def welch_p_of(rows: list[dict]) -> float:
    from scipy import stats

    a = [r["word_acc"] for r in rows if r["norm"] == "batch"]
    b = [r["word_acc"] for r in rows if r["norm"] == "group"]
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


INTERACTION_CELLS = {("batch", 32): [0.90, 0.91, 0.92], ("group", 32): [0.905, 0.92, 0.89],
                     ("batch", 2): [0.60, 0.62, 0.61], ("group", 2): [0.90, 0.88, 0.91]}


def test_interaction_value_and_interval_on_known_values():
    """(batch − group at 2) − (batch − group at 32) per seed: −0.295, −0.25, −0.33."""
    result = comparisons(_rows(INTERACTION_CELLS))
    assert (result["small"], result["large"], result["baseline"]) == (2, 32, "batch")
    (t,) = _test(result, "interaction", "group")
    per_seed = [(0.60 - 0.90) - (0.90 - 0.905), (0.62 - 0.88) - (0.91 - 0.92), (0.61 - 0.91) - (0.92 - 0.89)]
    assert t["values"] == pytest.approx(per_seed) and per_seed == pytest.approx([-0.295, -0.25, -0.33])
    m = sum(per_seed) / 3
    sd = math.sqrt(sum((x - m) ** 2 for x in per_seed) / 2)
    assert t["mean"] == pytest.approx(-0.291667, abs=1e-6)
    assert t["ci"] == pytest.approx((m - T2 * sd / math.sqrt(3), m + T2 * sd / math.sqrt(3)), rel=1e-6)
    assert t["ci"][1] < 0  # batch norm falls behind group norm as the batch shrinks, beyond seed noise
    # one seed: the point value and no interval
    (one,) = _test(comparisons(_rows({k: v[:1] for k, v in INTERACTION_CELLS.items()})), "interaction", "group")
    assert one["mean"] == pytest.approx(-0.295) and math.isnan(one["ci"][0]) and one["why"] == "1 seed: no interval"


def test_holm_correction_against_a_hand_computation():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 → running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    got = holm([0.01, float("nan"), 0.04])  # a test without a p (one seed) does not count in m
    assert got[0] == pytest.approx(0.02) and math.isnan(got[1]) and got[2] == pytest.approx(0.04)
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    # in the analysis: 2 differences vs batch, 2 batch-size changes, 1 interaction = 5 tests in one family
    result = comparisons(_rows(INTERACTION_CELLS))
    assert result["family"] == 5 and result["correction"] == "holm"
    ps = [t["p"] for t in result["tests"]]
    assert [t["p_holm"] for t in result["tests"]] == pytest.approx(holm(ps))
    assert [t["resolved"] for t in result["tests"]] == [q < 0.05 for q in holm(ps)]
    assert result["resolved"] == sum(q < 0.05 for q in holm(ps)) >= 1
    # batch − group at 32 is seed noise: not resolved
    assert _test(result, "vs_baseline", "group")[1]["p_holm"] >= 0.05


def test_report_states_the_paired_analysis_and_its_correction(tmp_path):
    from cvlab.compare.report import write_outputs

    rows = _rows(INTERACTION_CELLS)
    write_outputs(tmp_path, rows, aggregate(rows), {})
    md = (tmp_path / "report.md").read_text()
    result = comparisons(rows)
    resolved = [t["what"] for t in result["tests"] if t["resolved"]]
    assert "Holm's correction over 5 tests" in md and f"{len(resolved)} resolved: " + "; ".join(resolved) in md
    line = next(ln for ln in md.splitlines() if ln.startswith("| group | -29.17 | -39.13 to -19.20 |"))
    assert "paired" in md.lower() and "Welch's unpaired test is not used" in md and line
    stats = json.loads((tmp_path / "summary.json").read_text())["statistics"]
    inter = next(t for t in stats["tests"] if t["kind"] == "interaction")
    assert inter["mean"] == pytest.approx(-0.291667, abs=1e-6) and inter["ci"][1] < 0 and stats["family"] == 5
    # one seed: point values, the report says no difference is resolved
    rows = _rows({k: v[:1] for k, v in INTERACTION_CELLS.items()})
    write_outputs(tmp_path, rows, aggregate(rows), {})
    md = (tmp_path / "report.md").read_text()
    assert "no difference in this table is resolved" in md and "1 seed: no interval" in md


def test_a_run_shared_across_batch_sizes_counts_once_per_column():
    """The per-device protocol trains a per-sample norm once per seed: its row stands in every column."""
    cells = {("batch", 32): [0.90, 0.91, 0.92], ("batch", 2): [0.60, 0.62, 0.61], ("group", 32): [0.88, 0.90, 0.89]}
    rows = _rows(cells)
    for r in rows:
        r[SHARED] = r["norm"] == "group"
    table = aggregate(rows)
    group = {e["batch_size"]: e for e in table if e["norm"] == "group"}
    assert set(group) == {2, 32} and group[2]["shared"] and group[2]["done"] == 3
    assert group[2]["word_acc"] == pytest.approx(0.89) and group[2]["delta_vs_batch"] == pytest.approx(0.89 - 0.61)
    result = comparisons(rows)
    assert [t["kind"] for t in result["tests"]] == ["vs_baseline", "vs_baseline", "batch_size", "interaction"]
    (inter,) = _test(result, "interaction", "group")
    (own,) = _test(result, "batch_size", "batch")  # group's own change is the same run: no test
    assert inter["values"] == pytest.approx(own["values"]) and inter["same_as"] == own["what"]
    assert result["family"] == 3 and inter["p_holm"] == own["p_holm"]
    # the same run listed once per column (as a grid may list it) gives the same analysis
    again = rows + [{**r, "batch_size": 2} for r in rows if r["norm"] == "group"]
    assert repr(comparisons(again)) == repr(result) and repr(aggregate(again)) == repr(table)  # nan == nan


# --------------------------------------------------------------------------------------------- train loss, probes

def test_train_loss_is_the_mean_of_the_last_log_window(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from cvlab.compare.report import collect, window_loss
    from cvlab.engine.distributed import DistContext
    from cvlab.engine.train.loop import LossWindow

    w = LossWindow()  # what train/loss logs: per sample over the steps since the last log
    w.add(torch.tensor(2.0), 2)
    w.add(torch.tensor(4.0), 2)
    w.add(torch.tensor(1.0), 4)  # a batch with unreadable images dropped weighs by the images it had
    assert w.mean(DistContext()) == pytest.approx((4 + 8 + 4) / 8)
    assert w.mean(DistContext(), previous=5.0) == 5.0  # a fresh window; no step trained in it: the last value
    # the summary's train loss: the last full window; a cut-short last window is made up from the one before
    assert window_loss([(10, 3.0), (20, 2.0)], 10) == 2.0
    assert window_loss([(10, 3.0), (20, 2.0), (25, 1.0)], 10) == pytest.approx(1.5)
    assert window_loss([(3, 4.0)], 10) == 4.0 and window_loss([], 10) is None
    # read back from a run's events with the variant's own log interval (scaled with its batch size)
    base = _cfg(train={"steps": 8, "eval_every": 8}, log={"every": 2})
    vs = make_variants(base, ["group"], [32, 2], 1, protocol="per-step")
    v = next(v for v in vs if v.batch_size == 2)
    assert v.cfg.log.every == 32
    d = tmp_path / v.name
    with SummaryWriter(str(d)) as sw:
        for step, loss in ((32, 3.0), (64, 2.0), (96, 1.0), (128, 0.5)):
            sw.add_scalar("train/loss", loss, step)
    (d / "variant.json").write_text(json.dumps({"status": "done"}))
    rows, _ = collect([v], tmp_path)
    assert rows[0]["train_loss"] == 0.5


def test_probes_on_few_images_are_flagged(tmp_path):
    from cvlab.compare.report import collect, write_outputs

    base = _cfg(train={"steps": 8, "eval_every": 8})
    vs = make_variants(base, ["batch", "group"], [32, 2], 1, protocol="per-step")
    rows, curves = collect(vs, tmp_path)  # not run: the rows still say what each probe is taken on
    assert {(r["batch_size"], r["probe_images"], r["probe_noisy"]) for r in rows} == {(32, 32, False), (2, 2, True)}
    for r, acc in zip(rows, (0.9, 0.9, 0.6, 0.8), strict=True):
        r.update(status="done", word_acc=acc, cer=1 - acc)
    table = aggregate(rows)
    write_outputs(tmp_path, rows, table, curves)
    md = (tmp_path / "report.md").read_text()
    assert "batch at batch 2 taken on 2 images: noisy" in md and "group at batch 2 taken on 2 images: noisy" in md
    assert "taken on 32 images" not in md
    assert any(ln.startswith("| batch | 2 | 2: *noisy* |") for ln in md.splitlines())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {(e["batch_size"], e["probe_noisy"]) for e in summary["table"]} == {(32, False), (2, True)}
    assert {(r["batch_size"], r["probe_noisy"]) for r in summary["variants"]} == {(32, False), (2, True)}


def test_report_shows_a_rates_interval_within_0_and_100_percent(tmp_path):
    from cvlab.compare.report import write_outputs

    rows = _rows({("batch", 2): [0.999, 0.95, 1.0], ("group", 2): [0.90, 0.88, 0.91]})
    table = aggregate(rows)
    cell = next(e for e in table if e["norm"] == "batch")
    assert cell["cer_ci"][0] < 0 and cell["word_acc_ci"][1] > 1  # the t-interval itself crosses both bounds
    write_outputs(tmp_path, rows, table, {})
    line = next(ln for ln in (tmp_path / "report.md").read_text().splitlines() if ln.startswith("- batch bs 2"))
    assert "–100.00 %, CER 0.00–" in line and "-" not in line.removeprefix("- ")
