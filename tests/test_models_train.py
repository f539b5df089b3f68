"""A 20-step train on synthetic words lowers the loss: each backbone, each norm and each head at least once."""

from __future__ import annotations

import pytest
import torch

from cvlab.config import ModelCfg
from cvlab.config.data import ImageCfg, SynthSpec
from cvlab.data.synth import SynthWords
from cvlab.data.tokenizer import build_tokenizer
from cvlab.engine.train.optim import param_groups
from cvlab.models import BACKBONES, HEADS, NORMS, build_model

torch.set_num_threads(1)
CHARSET = "0123456789abcdefghijklmnopqrstuvwxyz"

# (backbone, norm, head, sequence): every backbone, norm and head appears at least once.
SUBSET = [
    ("alexnet", "lrn", "ctc", "bilstm"),
    ("vgg", "batch", "attention", "gru"),
    ("googlenet", "group", "ctc", "none"),
    ("resnet", "layer", "attention", "bilstm"),
    ("vgg", "layer_channels", "ctc", "bilstm"),
    ("resnet", "instance", "ctc", "gru"),
    ("alexnet", "weight", "attention", "none"),
    ("googlenet", "batch_renorm", "ctc", "bilstm"),
    ("vgg", "none", "ctc", "bilstm"),
]


def test_subset_covers_every_backbone_norm_and_head():
    assert {s[0] for s in SUBSET} == set(BACKBONES)
    # sync_batch builds batch's model (plain BatchNorm2d; the engine converts it under torchrun on GPUs)
    assert {s[1] for s in SUBSET} == set(NORMS) - {"sync_batch"}
    assert {s[2] for s in SUBSET} == set(HEADS)


@pytest.fixture(scope="module")
def batch():
    ds = SynthWords(SynthSpec(size=6, seed=3, min_len=2, max_len=4), CHARSET, ImageCfg(height=32, width=48))
    images, labels = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(images), list(labels)


@pytest.mark.parametrize("backbone,norm,head,sequence", SUBSET)
def test_twenty_steps_lower_the_loss(batch, backbone, norm, head, sequence):
    torch.manual_seed(0)
    images, labels = batch
    cfg = ModelCfg.model_validate({
        "backbone": {"name": backbone, "size": "tiny", "width": 0.5, "dropout": 0.0},
        "norm": {"name": norm, **({"groups": 4} if norm == "group" else {})}, "head": {"name": head, "max_length": 6},
        "sequence": {"name": sequence, "hidden": 24, "layers": 1}})
    tok = build_tokenizer(head, CHARSET)
    model = build_model(cfg, tok.num_classes).model.train()
    targets, lengths = tok.encode_batch(labels)
    opt = torch.optim.AdamW(param_groups(model, 1e-4), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = model.loss(model(images, targets, lengths), targets, lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.8 * losses[0], losses
