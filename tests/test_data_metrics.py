"""Protocols, lexicon-constrained accuracy and combined rows as papers compute them (REFERENCE §2)."""

from __future__ import annotations

import pytest

from cvlab.engine.eval.metrics import MetricAccumulator, combine, lexicon_answer


def test_lexicon_nearest_word_under_the_protocol():
    lex = ("PRIVATE", "PRIVET", "HELLO")
    assert lexicon_answer("privte", lex, "lower36") == "private"  # ED 1 to both private/privet: first wins
    acc = MetricAccumulator("lower36")
    acc.update(["privte", "helo", "xyz"], ["PRIVATE", "HELLO", "PUB"],
               lexicons=[{"50": list(lex)}, {"50": list(lex), "1k": ["HELP", "HELLO"]}, None])
    r = acc.result()
    assert r["word_acc"] == 0.0
    # "helo" is 1 edit from both HELP and HELLO: the first in lexicon order (HELP) is the answer
    assert r["lexicon"] == {"50": {"samples": 2, "word_acc": 1.0}, "1k": {"samples": 1, "word_acc": 0.0}}


def test_no_lexicon_key_without_lexicons():
    acc = MetricAccumulator("raw")
    acc.update(["a"], ["a"])
    assert "lexicon" not in acc.result()


def test_combined_cer_is_corpus_level_across_datasets():
    a, b = MetricAccumulator("raw"), MetricAccumulator("raw")
    a.update(["abcd"], ["abce"])  # 1 error / 4 chars
    b.update(["", "x"], ["!", "yyyyy"])  # 1 + 5 errors / 6 chars; "!" is a label, not empty, under raw
    c = combine({"a": a.result(), "b": b.result()})
    assert c["samples"] == 3 and c["cer"] == pytest.approx(7 / 10)
    e = MetricAccumulator("lower36")
    e.update(["", "a"], ["!!", "a"])
    assert combine({"e": e.result()})["empty_labels"] == 1


def test_dropped_images_propagate_from_workers(tmp_path):
    from data_fixtures import make_folder

    from cvlab.config import DataCfg, parse_data_spec
    from cvlab.data.loaders import build_dataset, eval_loader

    ds = build_dataset(parse_data_spec(f"folder:{make_folder(tmp_path)}"), "abc", DataCfg())
    loader = eval_loader(ds, 2, workers=1)
    assert [list(lab) for _, lab in loader] == [["Hello world", "Zoë"], ["spaced path"]]
    assert loader.load_report.total_dropped == 1
