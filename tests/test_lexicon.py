"""Lexicon-constrained decoding from `eval.lexicon`: the sets' own lexicons, a word file, or none."""

from __future__ import annotations

import pytest
import torch
from data_fixtures import make_iiit5k, png

from cvlab.config import DataCfg, parse_data_spec
from cvlab.data.loaders import build_dataset, eval_loader
from cvlab.data.tokenizer import CTCTokenizer
from cvlab.engine.eval.evaluate import evaluate
from cvlab.engine.eval.records import load_lexicon
from cvlab.errors import CvlabError

CHARSET = "abcdefghijklmnopqrstuvwxyz"


class Reads(torch.nn.Module):
    """A stand-in model that reads every image as the same fixed text."""

    def __init__(self, text: str, tok: CTCTokenizer):
        super().__init__()
        self.ids = tok.encode(text)

    def forward(self, images):
        return images

    def decode(self, logits):
        return [list(self.ids)] * logits.shape[0], [0.5] * logits.shape[0]


def _folder(root, labels):
    for i, _ in enumerate(labels):
        png(root / f"{i}.png", 20, 10)
    (root / "gt.txt").write_text("".join(f"{i}.png\t{w}\n" for i, w in enumerate(labels)), encoding="utf-8")
    return build_dataset(parse_data_spec(f"folder:{root}"), CHARSET, DataCfg())


def test_word_file_lexicon_corrects_to_the_nearest_word(tmp_path):
    ds = _folder(tmp_path / "d", ["hello", "help"])
    words = tmp_path / "words.txt"
    words.write_text("\ufeffworld\nHELLO\n\nhelp\n", encoding="utf-8")
    lex = load_lexicon(str(words))
    assert lex == ("words", ("world", "HELLO", "help"))
    tok = CTCTokenizer(CHARSET)
    rows = []
    r, _ = evaluate(Reads("helo", tok), eval_loader(ds, 2, workers=0), tokenizer=tok, protocol="lower36",
                    device=torch.device("cpu"), rows=rows, lexicon=lex)
    assert r["word_acc"] == 0.0
    # "helo" is one edit from HELLO and from help: the first in file order (HELLO) wins -> 1 of 2 correct
    assert r["lexicon"] == {"words": {"samples": 2, "word_acc": 0.5}}
    assert [row["lexicon_words"] for row in rows] == ["hello", "hello"]
    none, _ = evaluate(Reads("helo", tok), eval_loader(ds, 2, workers=0), tokenizer=tok, protocol="lower36",
                       device=torch.device("cpu"), lexicon=None)
    assert "lexicon" not in none


def test_dataset_lexicons_are_the_default(tmp_path):
    ds = build_dataset(parse_data_spec(f"iiit5k:{make_iiit5k(tmp_path)}:test"), CHARSET, DataCfg())
    tok = CTCTokenizer(CHARSET)
    r, _ = evaluate(Reads("hellp", tok), eval_loader(ds, 4, workers=0), tokenizer=tok, protocol="lower36",
                    device=torch.device("cpu"))
    assert r["lexicon"]["50"] == {"samples": 2, "word_acc": 0.5}  # hello right, private wrong
    r, _ = evaluate(Reads("hellp", tok), eval_loader(ds, 4, workers=0), tokenizer=tok, protocol="lower36",
                    device=torch.device("cpu"), lexicon=None)
    assert "lexicon" not in r


def test_bad_lexicon_files_name_the_key(tmp_path):
    with pytest.raises(CvlabError, match="eval.lexicon: .*not found"):
        load_lexicon(str(tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(CvlabError, match="no words"):
        load_lexicon(str(tmp_path / "empty.txt"))
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\n")
    with pytest.raises(CvlabError, match="bad.txt:2"):
        load_lexicon(str(tmp_path / "bad.txt"))
    assert load_lexicon("dataset") == "dataset" and load_lexicon(None) is None


def test_lexicons_are_detected_per_sample_not_from_sample_0(tmp_path):
    """A set whose first sample has no lexicon but a later one has: the eval loader still carries lexicons."""
    from torch.utils.data import Subset

    from cvlab.data.loaders import has_lexicons

    ds = _folder(tmp_path, ["hello", "world", "helo"])
    assert not has_lexicons(ds)
    ds.items[2] = ds.items[2]._replace(lexicons={"50": ["hello", "world"]})
    assert has_lexicons(ds) and has_lexicons(Subset(ds, [0, 2])) and not has_lexicons(Subset(ds, [0, 1]))
    r, _ = evaluate(Reads("helo", CTCTokenizer(CHARSET)), eval_loader(ds, 4, workers=0),
                    tokenizer=CTCTokenizer(CHARSET), protocol="lower36", device=torch.device("cpu"))
    assert r["lexicon"]["50"]["samples"] == 1  # only the sample that has one is scored with it
