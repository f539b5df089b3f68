import torch

from cvlab.config.data import CharsetChars, CharsetFile
from cvlab.data.charset import PRESETS, resolve_charset
from cvlab.data.tokenizer import CTCTokenizer


def test_presets_have_their_documented_sizes():
    assert len(resolve_charset("digits")) == 10
    assert resolve_charset("lower36") == "0123456789abcdefghijklmnopqrstuvwxyz"
    assert len(resolve_charset("alnum62")) == 62
    assert len(resolve_charset("printable94")) == 94
    gb = resolve_charset("gb2312-l1")
    assert len(gb) == 3755 and gb[0] == "啊" and gb[-1] == "座"
    assert set(PRESETS) == {"digits", "lower36", "alnum62", "printable94", "gb2312-l1"}


def test_literal_and_file_charsets(tmp_path):
    assert resolve_charset(CharsetChars(chars="abca")) == "abc"  # duplicates removed, order kept
    f = tmp_path / "chars.txt"
    f.write_text("\ufeffxy\r\nz\n", encoding="utf-8")
    assert resolve_charset(CharsetFile(file=str(f))) == "xyz"


def test_ctc_round_trip_and_blank():
    tok = CTCTokenizer(resolve_charset("lower36"))
    assert tok.num_classes == 37 and tok.blank == 0
    for text in ["hello", "a1b2c3", "zz9", ""]:
        assert tok.decode(tok.encode(text)) == text
    assert tok.missing("Hé!") == ["é", "!"]  # "H" folds to "h" (next test)


def test_case_folding_follows_the_charset():
    lower = CTCTokenizer(resolve_charset("lower36"))
    assert lower.encode("Hello") == lower.encode("hello")  # not "ello": capitals fold, they are not lost
    cased = CTCTokenizer(resolve_charset("alnum62"))
    assert cased.encode("Hello") != cased.encode("hello")
    upper = CTCTokenizer("ABC")
    assert upper.decode(upper.encode("abc")) == "ABC"
    assert CTCTokenizer("0123").missing("12a") == ["a"]


def test_encode_batch_pads_and_reports_lengths():
    tok = CTCTokenizer("abc")
    targets, lengths = tok.encode_batch(["ab", "c", "abca"])
    assert lengths.tolist() == [2, 1, 4]
    assert targets.shape == (3, 4)
    assert targets[0].tolist() == [1, 2, 0, 0]
    assert targets.dtype == torch.long


def test_unicode_charset_round_trip():
    tok = CTCTokenizer(resolve_charset("gb2312-l1"))
    assert tok.decode(tok.encode("中国文字")) == "中国文字"
