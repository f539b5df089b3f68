"""Heads and their tokenizers: special ids agree, attention framing, greedy/beam/lexicon decoding."""

from __future__ import annotations

import torch

from cvlab.data.tokenizer import TOKENIZERS, AttentionTokenizer, CTCTokenizer, build_tokenizer
from cvlab.models import HEADS
from cvlab.models.heads import AttentionHead, CTCHead

torch.set_num_threads(1)


def peaked(path: list[int], classes: int) -> torch.Tensor:
    logits = torch.full((1, len(path), classes), -10.0)
    logits[0, torch.arange(len(path)), torch.tensor(path)] = 10.0
    return logits


def test_every_head_has_a_tokenizer_with_the_same_special_ids():
    assert set(TOKENIZERS) == set(HEADS)
    assert CTCTokenizer.blank == CTCHead.blank == 0
    assert (AttentionTokenizer.go, AttentionTokenizer.eos) == (AttentionHead.go, AttentionHead.eos) == (0, 1)
    assert AttentionTokenizer.pad_id == AttentionHead.go  # padding is what the attention loss ignores
    assert isinstance(build_tokenizer("attention", "abc"), AttentionTokenizer)


def test_attention_tokenizer_frames_targets_with_go_and_eos():
    tok = AttentionTokenizer("abc")
    assert tok.num_classes == 5 and tok.itos[:2] == ["[GO]", "[EOS]"]
    targets, lengths = tok.encode_batch(["ab", "c", ""])
    assert lengths.tolist() == [2, 1, 0]
    assert targets.tolist() == [[0, 2, 3, 1], [0, 4, 1, 0], [0, 1, 0, 0]]
    assert tok.decode([2, 3, 4]) == "abc"
    # CTC keeps its behaviour
    assert CTCTokenizer("abc").encode_batch(["ab", "c"])[0].tolist() == [[1, 2], [3, 0]]


def test_attention_decoding_stops_at_eos_and_loss_ignores_padding():
    head = AttentionHead(8, 6, 8, max_length=5)
    ids, confs = head.decode(peaked([3, 4, 1, 5, 5], 6))
    assert ids == [[3, 4]] and 0.99 < confs[0] <= 1
    ids, _ = head.decode(peaked([3, 4, 5, 5, 2], 6))  # no EOS: every step counts
    assert ids == [[3, 4, 5, 5, 2]]
    targets = torch.tensor([[0, 3, 4, 1, 0]])
    perfect = peaked([3, 4, 1, 2], 6)  # the last step is padding: its prediction must not matter
    assert float(head.loss(perfect, targets, torch.tensor([2]))) < 1e-3


def test_attention_head_teacher_forcing_and_greedy_shapes():
    head = AttentionHead(8, 6, 10, max_length=7)
    x = torch.randn(2, 9, 8)
    targets = torch.tensor([[0, 3, 4, 1], [0, 5, 1, 0]])
    assert head(x, targets).shape == (2, 3, 6)
    assert head(x).shape == (2, 8, 6)  # max_length + 1 steps: room for the [EOS]


def test_ctc_blank_bias_survives_every_init_and_shifts_the_blank_probability():
    from cvlab.config import ModelCfg
    from cvlab.models import build_model

    for init in ("he", "dtrb", "torch"):
        cfg = ModelCfg.model_validate({"backbone": {"size": "tiny"}, "init": init, "head": {"blank_bias": 3.0}})
        head = build_model(cfg, 37).model.head
        assert head.fc.bias[CTCHead.blank].item() == 3.0
    default = build_model(ModelCfg.model_validate({"backbone": {"size": "tiny"}}), 37).model
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 100)
    biased = build_model(ModelCfg.model_validate({"backbone": {"size": "tiny"}, "head": {"blank_bias": 3.0}}), 37).model
    biased.load_state_dict({k: v for k, v in default.state_dict().items() if k != "head.fc.bias"}, strict=False)
    p_default = default.eval()(x).softmax(-1)[..., 0].mean()
    p_biased = biased.eval()(x).softmax(-1)[..., 0].mean()
    assert p_biased > p_default
