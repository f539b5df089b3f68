import pytest

from cvlab.engine.eval.metrics import MetricAccumulator, combine, normalize, score


def test_hand_worked_example():
    # sample 1 exact; sample 2 one deletion: ED 1, max len 5 -> 1 - NED = 0.8; corpus CER = 1 / 10
    r = score(["hello", "wrld"], ["hello", "world"], "raw")
    assert r["samples"] == 2
    assert r["word_acc"] == pytest.approx(0.5)
    assert r["one_minus_ned"] == pytest.approx((1.0 + 0.8) / 2)
    assert r["cer"] == pytest.approx(1 / 10)
    assert r["wer"] == pytest.approx(1 / 2)


def test_cer_is_corpus_level_not_mean_of_lines():
    # per-line CERs would be 1/1 and 0/9 -> mean 0.5; corpus CER is 1/10
    r = score(["b", "abcdefghi"], ["a", "abcdefghi"], "raw")
    assert r["cer"] == pytest.approx(0.1)


def test_wer_counts_word_edits():
    r = score(["the cat sat", "a b"], ["the hat sat", "a b c"], "raw")
    assert r["wer"] == pytest.approx(2 / 6)


def test_protocols():
    assert normalize("Hello, World!", "lower36") == "helloworld"
    assert normalize("Hello, World!", "alnum62") == "HelloWorld"
    assert normalize("Hello, World!", "printable94") == "Hello,World!"
    assert normalize("Hello, World!", "raw") == "Hello, World!"
    assert score(["HELLO"], ["hello!"], "lower36")["word_acc"] == 1.0
    assert score(["HELLO"], ["hello!"], "raw")["word_acc"] == 0.0


def test_empty_strings_and_empty_labels_are_counted_not_dropped():
    acc = MetricAccumulator("lower36")
    acc.update(["", "x"], ["!!", "?"])  # both labels become empty under lower36
    r = acc.result()
    assert r["samples"] == 2 and r["empty_labels"] == 2
    assert r["word_acc"] == pytest.approx(0.5)  # "" == "" counts; "x" != ""
    assert r["one_minus_ned"] == pytest.approx(0.5)


def test_combined_is_sample_weighted():
    c = combine({"a": {"samples": 3, "word_acc": 1.0, "one_minus_ned": 1.0, "confidence": 1.0},
                 "b": {"samples": 1, "word_acc": 0.0, "one_minus_ned": 0.5, "confidence": 0.0}})
    assert c["samples"] == 4 and c["word_acc"] == pytest.approx(0.75)
    assert c["one_minus_ned"] == pytest.approx(0.875)
