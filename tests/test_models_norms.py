"""The norm factories: formulas, equivalences, group adjustments, weight norm and the weight-decay policy."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cvlab.config import ModelCfg
from cvlab.config.model import NormCfg
from cvlab.engine.train.optim import param_groups
from cvlab.models import NORMS, build_model
from cvlab.models.norms import BatchRenorm2d, NormFactory, apply_weight_norm, make_norm, traits

torch.set_num_threads(1)


def norm(name: str, **kw):
    return make_norm(NormCfg(name=name, **kw))


def test_lrn_is_alexnets_formula_on_a_hand_computed_example():
    # b_i = a_i / (k + α Σ_{|j-i|<=2} a_j²)^β with k=2, α=1e-4, β=0.75 (the paper's α, not divided by n).
    # Channel 2: Σ = 10² + 20² + 30² + 40² + 50² = 5500 -> 30 / (2 + 0.55)^0.75 = 14.86675
    # Channel 0: Σ = 10² + 20² + 30² = 1400 -> 10 / 2.14^0.75 = 5.65184
    a = torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0]).reshape(1, 5, 1, 1)
    b = norm("lrn")(5)(a).flatten()
    expected = torch.tensor([5.651838, 10.708635, 14.866753, 19.880839, 25.148669])
    assert torch.allclose(b, expected, rtol=1e-5)


def test_layer_is_groupnorm_with_one_group():
    torch.manual_seed(0)
    layer = norm("layer")(6)
    gn = nn.GroupNorm(1, 6)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5), layer.bias.uniform_(-1, 1)
        gn.weight.copy_(layer.weight), gn.bias.copy_(layer.bias)
    x = torch.randn(3, 6, 4, 7)
    assert torch.allclose(layer(x), gn(x), atol=1e-6)
    # and it normalizes over (C, H, W) jointly
    plain = norm("layer")(6)(x)
    assert torch.allclose(plain.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5)


def test_layer_channels_normalizes_each_position_over_channels():
    x = torch.randn(2, 6, 3, 5)
    y = norm("layer_channels")(6)(x)
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (6,), eps=1e-6).permute(0, 3, 1, 2)
    assert torch.allclose(y, ref, atol=1e-6)
    assert torch.allclose(y.mean(dim=1), torch.zeros(2, 3, 5), atol=1e-5)


def test_instance_is_affine_and_batch_renorm_starts_as_batchnorm():
    assert norm("instance")(4).affine
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5)
    br, bn = BatchRenorm2d(3), nn.BatchNorm2d(3, momentum=0.01)
    assert torch.allclose(br(x), bn(x), atol=1e-5)  # r = 1, d = 0 before any warm-up
    assert torch.allclose(br.running_mean, bn.running_mean, atol=1e-6)
    assert torch.allclose(br.running_var, bn.running_var, atol=1e-5)
    br.eval(), bn.eval()
    assert torch.allclose(br(x), bn(x), atol=1e-5)


def test_group_count_is_reduced_to_a_divisor_and_recorded_once():
    f = norm("group", groups=32, min_channels_per_group=1)
    assert f(64).num_groups == 32 and f(24).num_groups == 24 and f(48).num_groups == 24 and f(24).num_groups == 24
    assert f.adjusted == {24: 24, 48: 24}
    f = norm("group", groups=32)  # at least 2 channels per group, the fewest in the GN paper's ResNet-50
    assert f(64).num_groups == 32 and f(24).num_groups == 12 and f(48).num_groups == 24 and f(3).num_groups == 1
    assert f.adjusted == {24: 12, 48: 24, 3: 1}
    g = norm("group", channels_per_group=16)
    assert g(64).num_groups == 4 and g(24).num_groups == 1
    assert g.adjusted == {24: 1}


def test_googlenet_reports_its_adjusted_group_counts():
    cfg = ModelCfg.model_validate({"backbone": {"name": "googlenet", "size": "tiny", "width": 0.5},
                                   "norm": {"name": "group", "groups": 8}, "sequence": {"hidden": 16, "layers": 1}})
    built = build_model(cfg, 12)
    assert built.adjustments  # e.g. 16 reduce channels × 1/8 = 2 channels: 2 groups, not 8
    for c, g in built.adjustments.items():
        assert c % g == 0 and g < 8
    # returned, never pinned on the model
    assert not hasattr(built.model, "norm_adjustments") and not hasattr(built.model, "norm_degenerate")
    layers = {m.num_channels: m.num_groups for m in built.model.modules() if isinstance(m, nn.GroupNorm)}
    assert all(layers[c] == g for c, g in built.adjustments.items())


@pytest.mark.parametrize("name", list(NORMS))
def test_the_factory_is_frozen_and_carries_the_registry_traits(name):
    f = norm(name)
    assert isinstance(f, NormFactory) and dataclasses.is_dataclass(f)
    assert f.traits is NORMS[name].traits == traits(name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.traits = traits("batch")  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.adjusted = {}  # type: ignore[misc]
    assert f(8).norm_slot  # every module it builds marks a norm's place, identities included
    assert NORMS[name].doc  # `models list` shows the builder's first docstring line


def test_only_sync_batch_syncs_across_ranks():
    assert traits("sync_batch").syncs_across_ranks and not traits("batch").syncs_across_ranks
    assert [n for n in NORMS if traits(n).syncs_across_ranks] == ["sync_batch"]


def test_a_model_without_group_norm_reports_no_adjustments():
    cfg = ModelCfg.model_validate({"backbone": {"name": "vgg", "size": "tiny"}, "norm": {"name": "batch"},
                                   "sequence": {"hidden": 16, "layers": 1}})
    built = build_model(cfg, 12)
    assert built.adjustments == {} and built.degenerate == {}


def test_weight_norm_leaves_a_fresh_layer_unchanged():
    torch.manual_seed(0)
    conv, lin = nn.Conv2d(3, 5, 3, padding=1), nn.Linear(7, 4)
    x, v = torch.randn(2, 3, 8, 8), torch.randn(2, 7)
    before = conv(x), lin(v)
    holder = nn.Sequential(conv, lin)
    assert apply_weight_norm(holder) == 2
    assert nn.utils.parametrize.is_parametrized(conv, "weight")
    assert torch.allclose(conv(x), before[0], atol=1e-6) and torch.allclose(lin(v), before[1], atol=1e-6)
    assert conv.parametrizations.weight.original0.shape == (5, 1, 1, 1)


def test_weight_norm_model_keeps_conv_biases_and_exempts_the_magnitude_from_decay():
    cfg = ModelCfg.model_validate({"backbone": {"name": "vgg", "size": "tiny", "norm_at": "all"},
                                   "norm": {"name": "weight"}, "sequence": {"hidden": 16, "layers": 1}})
    model = build_model(cfg, 12).model
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(nn.utils.parametrize.is_parametrized(m, "weight") and m.bias is not None for m in convs)
    decay, no_decay = param_groups(model, 0.1)
    ids = {id(p) for p in no_decay["params"]}
    for name, p in model.named_parameters():
        if name.endswith("original0"):  # the magnitude g: a norm parameter, never decayed
            assert id(p) in ids, name
        if name.endswith("original1"):  # the direction v: what the conv weight was, decayed
            assert id(p) not in ids, name
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1


@pytest.mark.parametrize("name", list(NORMS))
def test_every_norm_keeps_the_nchw_shape(name):
    x = torch.randn(2, 8, 4, 6)
    assert norm(name)(8)(x).shape == x.shape
