"""Every backbone × norm × head × sequence stage builds, trains one step and decodes (tiny widths, 1×32×32)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from cvlab.config import ModelCfg
from cvlab.config.model import BACKBONE_DEPTHS
from cvlab.models import BACKBONES, HEADS, NORMS, SEQUENCES, build_model
from cvlab.models.norms import make_norm
from cvlab.models.tps import TPS

NUM_CLASSES = 12
torch.set_num_threads(1)  # tiny models: threads only contend (the test budget assumes one core)


def tiny(backbone: str, norm: str = "batch", head: str = "ctc", sequence: str = "bilstm", bb: dict | None = None,
         **extra) -> ModelCfg:
    """A model config at 1/8 of the papers' widths (size tiny × width 0.5), one 16-unit recurrent layer."""
    bb = {"name": backbone, "size": "tiny", "width": 0.5, **(bb or {})}
    return ModelCfg.model_validate({"backbone": bb, "norm": {"name": norm}, "head": {"name": head, "max_length": 4},
                                    "sequence": {"name": sequence, "hidden": 16, "layers": 1}, **extra})


def targets_for(head: str):
    """Two labels of 3 and 2 characters, framed the way each head's tokenizer frames them."""
    if head == "ctc":
        return torch.tensor([[3, 4, 5], [6, 7, 0]]), torch.tensor([3, 2])
    return torch.tensor([[0, 3, 4, 5, 1], [0, 6, 7, 1, 0]]), torch.tensor([3, 2])  # [GO] .. [EOS], pad = [GO]


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.backbone.modules() if isinstance(m, nn.Conv2d))


def check_one_step(model: nn.Module, head: str, size=(32, 32)):
    torch.manual_seed(0)
    x = torch.rand(2, 1, *size)
    targets, lengths = targets_for(head)
    logits = model(x, targets, lengths)
    steps = model.features(x).shape[1]
    assert steps >= size[1] // 4 - 1  # the CRNN (DTRB) loses one frame to its unpadded last conv
    assert logits.shape == ((2, steps, NUM_CLASSES) if head == "ctc" else (2, targets.shape[1] - 1, NUM_CLASSES))
    loss = model.loss(logits, targets, lengths)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in first_conv(model).parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0, "no gradient reached the first conv"
    model.eval()
    with torch.no_grad():
        out = model(x)
        ids, confs = model.decode(out)
    assert len(ids) == len(confs) == 2
    assert all(0 <= c <= 1 for c in confs)
    assert all(all(2 <= i < NUM_CLASSES for i in seq) if head == "attention" else all(1 <= i < NUM_CLASSES for i in seq)
               for seq in ids)


@pytest.mark.parametrize("backbone,norm,head,sequence", list(itertools.product(BACKBONES, NORMS, HEADS, SEQUENCES)))
def test_registry_product_trains_a_step_and_decodes(backbone, norm, head, sequence):
    check_one_step(build_model(tiny(backbone, norm, head, sequence), NUM_CLASSES).model, head)


@pytest.mark.parametrize("backbone,depth", [(b, d) for b, ds in BACKBONE_DEPTHS.items() for d in ds])
def test_every_depth_trains_a_step(backbone, depth):
    check_one_step(build_model(tiny(backbone, "group", bb={"depth": depth}), NUM_CLASSES).model, "ctc")


@pytest.mark.parametrize("act,position", [("tanh", "after_act"), ("sigmoid", "before_act"), ("gelu", "after_act"),
                                          ("leaky_relu", "before_act")])
def test_activations_and_norm_positions(act, position):
    cfg = tiny("resnet", "group", act=act)
    cfg.norm.position = position
    check_one_step(build_model(cfg, NUM_CLASSES).model, "ctc")


@pytest.mark.parametrize("head", list(HEADS))
def test_tps_transform_in_front_of_a_backbone(head):
    check_one_step(build_model(tiny("vgg", "batch", head, transform="tps"), NUM_CLASSES).model, head)


@pytest.mark.parametrize("backbone,depth", [(b, d) for b, ds in BACKBONE_DEPTHS.items() for d in (ds or (None,))])
@pytest.mark.parametrize("height", [32, 64])
def test_text_line_geometry_height_collapsed_width_about_a_quarter(backbone, depth, height):
    cfg = tiny(backbone, bb={"depth": depth})
    model = build_model(cfg, NUM_CLASSES).model.eval()
    with torch.no_grad():
        feats = model.features(torch.rand(1, 1, height, 100))
    assert feats.shape == (1, feats.shape[1], model.backbone.out_channels)
    assert feats.shape[1] >= 100 // 4 - 1  # the CRNN's unpadded last conv (DTRB) takes one frame


def test_standard_crnn_is_dtrb_none_vgg_bilstm_ctc():
    cfg = ModelCfg.model_validate({"backbone": {"name": "vgg", "size": "standard"}, "norm": {"name": "batch"},
                                   "sequence": {"name": "bilstm"}, "head": {"name": "ctc"}})
    model = build_model(cfg, 37).model
    assert sum(p.numel() for p in model.parameters()) == 8_451_621
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 1, 32, 100)).shape == (1, 24, 37)


def test_tps_starts_as_the_identity_warp():
    tps = TPS(1, tiny("vgg").backbone, make_norm(tiny("vgg", "group").norm), nn.ReLU).eval()
    x = torch.rand(2, 1, 32, 64)
    with torch.no_grad():
        assert torch.allclose(tps(x), x, atol=2e-3)  # grid exact to ~1e-5 of the image size


def test_unknown_names_list_the_valid_ones():
    from cvlab.errors import CvlabError
    from cvlab.models.norms import make_act

    with pytest.raises(CvlabError, match="valid: relu, leaky_relu"):
        make_act("swish")


def test_weight_norm_spares_the_zero_initialised_tps_regressor():
    model = build_model(tiny("vgg", "weight", transform="tps"), NUM_CLASSES).model.eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.transform(x), x, atol=2e-3)
        assert torch.isfinite(model(x)).all()
