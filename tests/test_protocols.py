"""Protocol parity with DTRB's test.py and PARSeq's test pipeline, on crafted pairs worked out by hand."""

from __future__ import annotations

import pytest

from cvlab.engine.eval.metrics import score
from cvlab.engine.eval.protocols import check_charset, fold_latin
from cvlab.errors import CvlabError

LONG = "a" * 26


def test_dtrb_filters_long_and_out_of_charset_labels_and_keeps_empty_ones():
    labels = ["Hello", "Café", "it's", LONG, "", "", "WORLD", "a" * 25]
    preds = ["HELLO!", "cafe", "its", LONG, "", "x", "w0rld", "a" * 24]
    r = score(preds, labels, "dtrb")
    # kept: Hello, "", "", WORLD, a*25 (é and ' are outside 0-9a-z after lower(); 26 chars is too long)
    assert (r["samples"], r["total"]) == (5, 8)
    assert sum(r["filtered"].values()) == 3
    assert r["filtered"]["label longer than 25 characters (DTRB batch_max_length)"] == 1
    # correct: hello (prediction lower-cased, "!" stripped) and "" == "" -> 2 of 5
    assert r["word_acc"] == pytest.approx(2 / 5)
    # 1-NED: hello 1; ""/"" 0 (either empty -> 0); ""/"x" 0; w0rld vs world 1 - 1/5; a*24 vs a*25 1 - 1/25
    assert r["one_minus_ned"] == pytest.approx((1 + 0 + 0 + 0.8 + 0.96) / 5)


def test_dtrb_length_is_checked_on_the_label_as_stored():
    # 25 letters and a space: too long before the charset would strip anything
    r = score(["x"], ["a" * 25 + " "], "dtrb")
    assert r["samples"] == 0 and r["total"] == 1 and r["word_acc"] == 0.0


def test_parseq_normalises_then_filters():
    labels = ["Café", "it's", "New York", "!!!", "咖啡", "", "a b" * 9, "ÄÖÜ", "Hello"]
    preds = ["cafe", "its", "NEWYORK", "", "", "", "x", "aou", ""]
    r = score(preds, labels, "parseq")
    # "a b"*9 -> "ab"*9 = 18 chars after whitespace removal: kept. Dropped: "!!!", "咖啡", "" (empty after
    # normalisation). Kept: cafe, its, newyork, abab.., aou, hello
    assert (r["samples"], r["total"]) == (6, 9)
    assert sum(r["filtered"].values()) == 3
    # correct: cafe, its, newyork, aou; "x" vs 18 chars wrong; "" vs hello wrong
    assert r["word_acc"] == pytest.approx(4 / 6)
    # NED: four exact (0), x vs abab.. ED 18/18 = 1 (x is no letter of it... substitute one, delete 17), "" vs
    # hello 5/5 = 1
    assert r["one_minus_ned"] == pytest.approx(1 - (0 + 0 + 0 + 1 + 0 + 1) / 6)


def test_parseq_length_filter_before_the_charset():
    # 26 characters after whitespace removal, 20 letters after the charset: PARSeq still drops it
    label = "abcdefghij!!!!!!klmnopqrst"
    assert len(label) == 26
    r = score(["abcdefghijklmnopqrst"], [label], "parseq")
    assert r["samples"] == 0 and r["total"] == 1
    # spaces do not count: removed before the length check
    r = score(["abcdefghijklmnopqrstuvwxy"], ["abcdefghijklm nopqrstuvwxy"], "parseq")
    assert r["samples"] == 1 and r["word_acc"] == 1.0


def test_parseq_prediction_passes_the_charset_adapter_only():
    # upper case and punctuation in the prediction are adapted; accents in the prediction are dropped (not folded)
    r = score(["HEL-LO", "café"], ["hello", "cafe"], "parseq")
    assert r["word_acc"] == pytest.approx(0.5)
    assert r["one_minus_ned"] == pytest.approx((1 + (1 - 1 / 4)) / 2)


def test_cvlab_protocols_fold_accents_and_keep_other_scripts():
    assert score(["cafe"], ["Café"], "lower36")["word_acc"] == 1.0  # was "caf" before folding
    assert score(["Cafe"], ["Café"], "alnum62")["word_acc"] == 1.0
    assert score(["cafe"], ["Café"], "raw")["word_acc"] == 0.0  # raw is raw
    assert fold_latin("Crème ﬁne ＡＢ 咖啡 Straße") == "Creme fine AB 咖啡 Straße"
    assert score(["咖啡"], ["咖啡"], "raw")["samples"] == 1


def test_cvlab_protocols_score_and_count_empty_labels():
    r = score(["", "x", "a"], ["!!", "?", "a"], "lower36")
    assert (r["samples"], r["empty_labels"], r["filtered"]) == (3, 2, {})
    assert r["word_acc"] == pytest.approx(2 / 3)
    assert r["one_minus_ned"] == pytest.approx(2 / 3)  # "" vs "" agrees; "x" vs "" shares nothing


def test_mixed_case_under_each_protocol():
    preds, labels = ["hello", "WORLD"], ["Hello", "World"]
    assert score(preds, labels, "lower36")["word_acc"] == 1.0
    assert score(preds, labels, "dtrb")["word_acc"] == 1.0
    assert score(preds, labels, "parseq")["word_acc"] == 1.0
    assert score(preds, labels, "alnum62")["word_acc"] == 0.0


def test_ascii_protocols_refuse_a_non_latin_charset():
    from cvlab.data.charset import resolve_charset

    for name in ("parseq", "dtrb"):
        with pytest.raises(CvlabError, match="gb2312|charset"):
            check_charset(name, resolve_charset("gb2312-l1"))
        check_charset(name, resolve_charset("alnum62"))
    check_charset("raw", resolve_charset("gb2312-l1"))


def test_unknown_protocol_names_the_valid_ones():
    with pytest.raises(CvlabError, match="dtrb, parseq"):
        score(["a"], ["a"], "icdar")


def test_the_config_accepts_exactly_the_registered_protocols():
    from typing import get_args

    from cvlab.config.schema import EvalCfg
    from cvlab.engine.eval.protocols import PROTOCOLS

    assert set(get_args(EvalCfg.model_fields["protocol"].annotation)) == set(PROTOCOLS)
