"""`model.init`: He init by default (torchvision's VGG/ResNet), DTRB's train.py loop for the DTRB CRNN, PyTorch's
defaults for runs saved before the key existed (they rebuild and resume as they trained)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_experiment
from torch import nn

from cvlab.config import ModelCfg, load_config, load_saved_config
from cvlab.models import BACKBONES, HEADS, SEQUENCES, Recognizer, build_model
from cvlab.models.build import DEFAULT_HIDDEN
from cvlab.models.norms import make_act, make_norm, resolved_position
from cvlab.models.tps import _base_points

torch.set_num_threads(1)
EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def standard(init: str, **extra) -> ModelCfg:
    """The standard CRNN (VGG crnn, 512 channels, BiLSTM 256): layers large enough for a sample std to be tight."""
    return ModelCfg.model_validate({"backbone": {"name": "vgg", "size": "standard"}, "init": init, **extra})


def fan(w: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a conv or linear weight (out, in, *kernel)."""
    area = math.prod(w.shape[2:])
    return w.shape[1] * area, w.shape[0] * area


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_he_is_the_default():
    assert ModelCfg().init == "he"
    assert load_config(EXPERIMENTS / "quickstart.yaml").model.init == "he"
    assert load_config(raw=tiny_experiment()).model.init == "he"


def test_he_gives_kaiming_fan_out_convs_zero_biases_and_unit_norms():
    torch.manual_seed(0)
    model = build_model(standard("he", norm={"name": "none"}), 37).model  # no norm: every conv has a bias
    big = [c for c in convs(model) if c.weight.numel() >= 100_000]
    assert len(big) >= 4
    for c in big:  # e.g. 256 -> 256 3×3: fan_out 2304, std 0.0295 over 589,824 values
        expected = math.sqrt(2.0 / fan(c.weight)[1])
        assert abs(c.weight.std().item() / expected - 1) < 0.1, (c, c.weight.std().item(), expected)
        assert abs(c.weight.mean().item()) < 0.1 * expected
    assert all(c.bias is not None and torch.count_nonzero(c.bias) == 0 for c in convs(model))

    torch.manual_seed(0)
    bn = build_model(standard("he", norm={"name": "group"}), 37).model
    norms = [m for m in bn.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)


def test_he_leaves_linear_recurrent_and_head_layers_at_pytorchs_default():
    """Init runs after every module is built, so with one seed `he` and `torch` share all but convs and norms."""
    torch.manual_seed(3)
    he = build_model(standard("he", norm={"name": "none"}), 37).model.state_dict()
    torch.manual_seed(3)
    plain = build_model(standard("torch", norm={"name": "none"}), 37).model.state_dict()
    conv_keys = {k for k in he if k.startswith("backbone.")}
    assert conv_keys and all(not torch.equal(he[k], plain[k]) for k in conv_keys if k.endswith("weight"))
    rest = [k for k in he if k not in conv_keys]
    assert any(k.startswith("sequence.") for k in rest) and any(k.startswith("head.") for k in rest)
    assert all(torch.equal(he[k], plain[k]) for k in rest)


def test_dtrb_is_dtrbs_loop_and_keeps_the_tps_regressor():
    torch.manual_seed(0)
    cfg = standard("dtrb", transform="tps_dtrb", head={"name": "attention"})
    model = build_model(cfg, 38).model
    regressor = model.transform.localization[-1]
    assert regressor.keep_plain_weight
    assert torch.count_nonzero(regressor.weight) == 0  # the identity warp, as DTRB skips localization_fc2
    assert torch.equal(regressor.bias, _base_points(20).reshape(-1))
    kept = {id(regressor.weight), id(regressor.bias)}

    checked = {"conv": 0, "linear": 0, "lstm": 0}
    for name, p in model.named_parameters():
        if id(p) in kept:
            continue
        if "bias" in name:  # conv, linear, LSTM (bias_ih_l0, bias_hh_l0) and norm biases alike
            assert torch.count_nonzero(p) == 0, name
        elif p.dim() == 1:  # BatchNorm's weight: kaiming fails on it, DTRB fills 1
            assert torch.all(p == 1), name
        elif p.numel() >= 5000:  # kaiming_normal_ defaults: fan_in, gain sqrt(2)
            expected = math.sqrt(2.0 / fan(p)[0])
            assert abs(p.std().item() / expected - 1) < 0.1, (name, p.std().item(), expected)
            kind = "lstm" if "weight_ih" in name or "weight_hh" in name else "conv" if p.dim() == 4 else "linear"
            checked[kind] += 1
    assert checked["conv"] >= 8 and checked["linear"] >= 3 and checked["lstm"] >= 6, checked  # cell: ih and hh
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def old_build(cfg: ModelCfg, num_classes: int) -> Recognizer:
    """A model assembled as build_model did before `model.init` existed: the modules' own initialisation."""
    norm, act, position = make_norm(cfg.norm), make_act(cfg.act), resolved_position(cfg.norm)
    backbone = BACKBONES[cfg.backbone.name](1, cfg.backbone, norm, act, position)
    hidden = cfg.sequence.hidden or max(8, round(DEFAULT_HIDDEN[cfg.backbone.size] * cfg.backbone.width))
    sequence = SEQUENCES[cfg.sequence.name](backbone.out_channels, hidden, cfg.sequence.layers)
    head = HEADS[cfg.head.name].from_cfg(sequence.out_channels, num_classes, cfg.head)
    return Recognizer(backbone, sequence, head, cfg.dropout)


@pytest.mark.parametrize("backbone", ["vgg", "resnet"])
def test_torch_is_pytorchs_seeded_default(backbone):
    cfg = ModelCfg.model_validate({"backbone": {"name": backbone, "size": "tiny"}, "init": "torch",
                                   "sequence": {"hidden": 16, "layers": 1}})
    states = []
    for build in (lambda: build_model(cfg, 12).model, lambda: build_model(cfg, 12).model,
                  lambda: old_build(cfg, 12)):
        torch.manual_seed(5)
        states.append(build().state_dict())
    assert all(states[0].keys() == s.keys() for s in states)
    assert all(torch.equal(states[0][k], s[k]) for s in states[1:] for k in states[0])


def test_init_comes_before_weight_norm():
    """Weight norm's g·v/‖v‖ starts as the He-initialised weight (built with no norm from the same seed)."""
    def conv_weights(norm: str) -> list[torch.Tensor]:
        torch.manual_seed(1)
        model = build_model(standard("he", norm={"name": norm}), 37).model
        return [c.weight.detach() for c in convs(model.backbone)]

    reparametrized, plain = conv_weights("weight"), conv_weights("none")
    assert len(reparametrized) == len(plain) == 7
    for w, ref in zip(reparametrized, plain, strict=True):
        torch.testing.assert_close(w, ref, rtol=1e-5, atol=1e-6)
    expected = math.sqrt(2.0 / fan(plain[3])[1])
    assert abs(plain[3].std().item() / expected - 1) < 0.1


def test_a_saved_config_without_init_loads_as_torch(tmp_path):
    saved = load_config(raw=tiny_experiment()).model_dump(mode="json")
    assert saved["model"]["init"] == "he"
    del saved["model"]["init"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(saved))
    assert load_saved_config(path).model.init == "torch"
    assert load_saved_config(raw=saved).model.init == "torch"
    assert "init" not in saved["model"]  # the caller's dict is left as it was
    assert load_config(path).model.init == "he"  # a new experiment without the key: today's default
    for init in ("he", "dtrb"):  # a run saved with the key keeps it
        assert load_saved_config(raw={**saved, "model": {**saved["model"], "init": init}}).model.init == init


def test_an_old_run_resumes_with_pytorchs_init(tmp_path):
    """A run whose config.yaml and checkpoint predate `model.init` resumes (its checkpoint's config is compared
    as it trained, torch, not today's he) and stays `torch`."""
    from cvlab.engine.runs.load import load_run
    from cvlab.engine.train.start import resume_run, start_run

    exp = tiny_experiment(train={"steps": 1, "batch_size": 2, "eval_every": 1, "threads": 1},
                          log={"image_grid": 0})
    exp["data"]["val"] = [{**exp["data"]["val"][0], "size": 4}]
    run_dir, _ = start_run(load_config(raw=exp), tmp_path, name="old")
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    del saved["model"]["init"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    last = run_dir / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=False)
    del state["config"]["model"]["init"]
    torch.save(state, last)
    weights = state["model"]

    cfg, _ = resume_run(run_dir, ["train.steps=2"])
    assert cfg.model.init == "torch"
    assert torch.load(last, weights_only=False)["step"] == 2
    assert load_run(run_dir).cfg.model.init == "torch"
    assert any(not torch.equal(weights[k], v) for k, v in torch.load(last, weights_only=False)["model"].items())


def test_the_dtrb_crnn_and_imported_dtrb_models_use_dtrbs_init():
    from cvlab.engine.import_dtrb import CHARSETS, dtrb_config

    assert load_config(EXPERIMENTS / "crnn_standard.yaml").model.init == "dtrb"
    weights = {"FeatureExtraction.ConvNet.0.weight": torch.zeros(64, 1, 3, 3),
               "FeatureExtraction.ConvNet.18.weight": torch.zeros(512, 512, 2, 2),
               "SequenceModeling.0.linear.weight": torch.zeros(256, 512),
               "Prediction.weight": torch.zeros(37, 256)}
    cfg = dtrb_config(weights, ("None", "VGG", "BiLSTM", "CTC"), CHARSETS["default"], height=32, width=100)
    assert cfg.model.init == "dtrb"
