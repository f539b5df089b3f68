"""Training labels the head cannot fit are dropped at load and reported, never trained with zero loss."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_experiment
from data_fixtures import png

from cvlab.config import Experiment
from cvlab.data.fit import LabelLimits, ctc_frames_needed
from cvlab.data.loaders import datasets_for
from cvlab.data.tokenizer import CTCTokenizer, tokenizer_for
from cvlab.engine.train.preflight import fit_training_labels, preflight
from cvlab.errors import CvlabError
from cvlab.models import build_model

LONG = "abcdefghij" * 4  # 40 characters


def test_ctc_frames_count_adjacent_repeats():
    tok = CTCTokenizer("abcl")
    assert ctc_frames_needed(tok.encode("abc")) == 3
    assert ctc_frames_needed(tok.encode("ball")) == 5  # b a l _ l
    assert ctc_frames_needed(tok.encode("aaa")) == 5
    limits = LabelLimits(tok, "ctc", frames=4, max_length=None, max_label_length=None)
    assert limits.why("abca") is None and limits.why("ball") is not None  # 4 characters, but 5 frames


def _folder(root, labels):
    lines = []
    for i, label in enumerate(labels):
        png(root / f"{i}.png", 40, 16)
        lines.append(f"{i}.png\t{label}")
    (root / "gt.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _setup(tmp_path, **sections):
    root = _folder(tmp_path / "d", ["hello", LONG, "world", "aa" * 13])
    exp = tiny_experiment(data={"image": {"height": 32, "width": 108}, "train": [{"type": "folder", "root": str(root)}],
                                "val": []}, **sections)
    cfg = Experiment.model_validate(exp)
    tok = tokenizer_for(cfg)
    model = build_model(cfg.model, tok.num_classes, 1).model
    return cfg, tok, model


def test_a_40_char_label_at_26_frames_is_dropped_and_reported(tmp_path):
    cfg, tok, model = _setup(tmp_path)
    messages = []

    class Sink:
        def message(self, text):
            messages.append(text)

    model.eval()
    before = {k: b.clone() for k, b in model.named_buffers()}
    steps = preflight(model, cfg, progress=Sink())["steps"]
    assert steps == 26 and any("26 frames" in m for m in messages)
    # its train-mode forward leaves batch-norm statistics and the model's mode as they were
    assert all(torch.equal(before[k], b) for k, b in model.named_buffers()) and not model.training
    sets = fit_training_labels(datasets_for(cfg, "train"), cfg, tok, steps=steps, progress=Sink())
    (ds,) = sets.values()
    # 40 characters, and "aa"*13 (26 characters, 26 repeats: 52 frames) cannot be learnt; the others stay
    assert sorted(ds[i][1] for i in range(len(ds))) == ["hello", "world"]
    assert any("dropped 2 of 4 training labels: label needs more CTC frames" in m for m in messages)
    from cvlab.data.loaders import report_lines

    assert any(LONG in line and "CTC frames" in line for line in report_lines(ds))


def test_attention_max_length_and_max_label_length(tmp_path):
    cfg, tok, model = _setup(tmp_path, model={"backbone": {"name": "vgg", "size": "tiny"},
                                              "sequence": {"hidden": 32, "layers": 1},
                                              "head": {"name": "attention", "max_length": 30}})
    (ds,) = fit_training_labels(datasets_for(cfg, "train"), cfg, tok, steps=26).values()
    assert len(ds) == 3  # only the 40-character label is longer than 30
    cfg.data.max_label_length = 5
    (ds,) = fit_training_labels(datasets_for(cfg, "train"), cfg, tok, steps=26).values()
    assert sorted(ds[i][1] for i in range(len(ds))) == ["hello", "world"]
    cfg.data.max_label_length = 2
    with pytest.raises(CvlabError, match="every training label"):
        fit_training_labels(datasets_for(cfg, "train"), cfg, tok, steps=26)


def test_synth_is_not_scanned_when_no_label_can_break_the_rule():
    cfg = Experiment.model_validate(tiny_experiment())  # max_len 5, 15 frames at width 64: 2*5-1 <= 15
    tok = tokenizer_for(cfg)
    sets = datasets_for(cfg, "train")
    assert fit_training_labels(sets, cfg, tok, steps=15) == sets
    # at 6 frames a 5-letter word with a repeat can break it: scanned, and the label is the rendered one
    ds = next(iter(sets.values()))
    (kept,) = fit_training_labels(sets, cfg, tok, steps=6).values()
    assert ds.label(3) == ds[3][1]
    assert 0 < len(kept) <= len(ds)
