"""The norm study's protocol: lr scaling per optimizer, exact probes with dropout, the optimizer's actual update,
statistic sizes (N·H·W), canonical placements (AlexNet's LRN), group-norm degeneration reports, seed statistics."""

import math

import pytest
import torch
from conftest import tiny_experiment
from torch import nn

from cvlab.compare import make_variants
from cvlab.compare.probes import Probe, optimizer_update, smoothness, statistic_sizes
from cvlab.compare.report import aggregate
from cvlab.compare.stats import significance, t_interval, welch
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
    vs = make_variants(base, ["group"], [8, 2], 1)
    assert [v.lr_scaling for v in vs] == ["linear", "linear"] and vs[1].cfg.train.lr == pytest.approx(0.025)
    assert isinstance(build_optimizer(nn.Linear(2, 2), vs[1].cfg.train), torch.optim.SGD)
    with pytest.raises(CvlabError, match="--lr-scaling"):
        make_variants(base, ["group"], [8, 2], 1, lr_scaling="cubic")


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
    vs = {v.norm: v.cfg.model.norm for v in make_variants(base, ["batch", "batch@after_act", "lrn"], [4], 1)}
    assert vs["batch"].position is None and vs["batch@after_act"].position == "after_act"
    assert vs["lrn"].position is None  # its published position (after the ReLU) applies
    with pytest.raises(CvlabError, match="sideways"):
        make_variants(base, ["batch@sideways"], [4], 1)


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


def test_seed_statistics_intervals_and_resolved_differences():
    lo, hi = t_interval([1.0, 2.0, 3.0])
    assert (lo + hi) / 2 == pytest.approx(2.0) and (hi - lo) / 2 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert math.isnan(t_interval([1.0])[0])
    # Welch's p for two small samples, against the formula: t = Δ / √(s²/n + s²/n), Welch–Satterthwaite dof (here 4)
    assert welch([0.1, 0.2, 0.3], [0.5, 0.6, 0.7]) == pytest.approx(0.00805, abs=1e-4)  # t = 4.899, 4 dof
    rows = _rows({("batch", 32): [0.90, 0.91, 0.92], ("group", 32): [0.905, 0.92, 0.89],
                  ("batch", 2): [0.60, 0.62, 0.61], ("group", 2): [0.90, 0.88, 0.91], ("layer", 2): [0.5, 0.7]})
    table = aggregate(rows)
    cell = next(e for e in table if (e["norm"], e["batch_size"]) == ("batch", 2))
    assert cell["word_acc_ci"][0] < 0.61 < cell["word_acc_ci"][1]
    assert math.isnan(next(e for e in table if e["norm"] == "layer")["word_acc_ci"][0])  # 2 seeds: no interval
    verdict = {(s["a"], s["b"]): s for s in significance(rows)}
    assert verdict[(("batch", 2), ("group", 2))]["resolved"] and verdict[(("batch", 2), ("group", 2))]["overlap"] is False
    assert not verdict[(("batch", 32), ("group", 32))]["resolved"]
    assert "p = " in verdict[(("batch", 32), ("group", 32))]["why"]
    assert verdict[(("group", 2), ("layer", 2))]["why"] == "fewer than 3 seeds"
    assert (("batch", 32), ("group", 2)) not in verdict  # neither the same norm nor the same batch size


def test_report_shows_a_rates_interval_within_0_and_100_percent(tmp_path):
    from cvlab.compare.report import write_outputs

    rows = _rows({("batch", 2): [0.999, 0.95, 1.0], ("group", 2): [0.90, 0.88, 0.91]})
    table = aggregate(rows)
    cell = next(e for e in table if e["norm"] == "batch")
    assert cell["cer_ci"][0] < 0 and cell["word_acc_ci"][1] > 1  # the t-interval itself crosses both bounds
    write_outputs(tmp_path, rows, table, {})
    line = next(ln for ln in (tmp_path / "report.md").read_text().splitlines() if ln.startswith("- batch bs 2"))
    assert "–100.00 %, CER 0.00–" in line and "-" not in line.removeprefix("- ")
