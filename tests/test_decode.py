"""Beam search (eval.decoder: beam): greedy's answers at beam 1 for both heads, a character LM that settles an
ambiguous reading, lexicon tries that only ever answer lexicon words; `cvlab lm build` writes a normalised LM."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
import yaml
from conftest import tiny_experiment

from cvlab.config import Experiment
from cvlab.data.tokenizer import AttentionTokenizer, CTCTokenizer
from cvlab.engine.lm import WittenBell, build_lm, lm_token
from cvlab.errors import CvlabError
from cvlab.models import build_model
from cvlab.models.heads import CTCHead

pytest.importorskip("flashlight.lib.text")
from cvlab.engine.decode import AttentionBeam, CTCBeam  # noqa: E402

CHARSET = "abehlorstw"


def peaked(tok, text_per_frame: list[str], sharp: float = 6.0) -> torch.Tensor:
    """(1, T, C) logits reading one symbol per frame ('-' = blank), or {sym: prob} for a soft frame."""
    rows = []
    for f in text_per_frame:
        probs = torch.full((tok.num_classes,), 1e-3)
        for sym, p in (f.items() if isinstance(f, dict) else [(f, 1.0)]):
            probs[0 if sym == "-" else tok.stoi[sym]] = p * math.exp(sharp)
        rows.append(probs.log())
    return torch.stack(rows)[None]


def test_ctc_beam_of_one_is_greedy():
    tok = CTCTokenizer(CHARSET)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 14, tok.num_classes, generator=gen) * 3
    ids, _ = CTCBeam(tok, beam_size=1)(None, None, logits)
    assert ids == CTCHead(4, tok.num_classes)._greedy(logits)[0]
    wide, confs = CTCBeam(tok, beam_size=8)(None, None, logits)
    assert all(0 < c <= 1 for c in confs) and len(wide) == 6


def test_attention_beam_of_one_is_greedy_and_wider_beams_score_at_least_as_well():
    exp = tiny_experiment()
    exp["model"].update(head={"name": "attention", "hidden": 16, "max_length": 6}, sequence={"hidden": 16, "layers": 1})
    exp["model"]["backbone"]["width"] = 0.5
    cfg = Experiment.model_validate(exp)
    torch.manual_seed(0)
    model = build_model(cfg.model, AttentionTokenizer(CHARSET).num_classes).eval()
    images = torch.rand(4, 1, 32, 64)
    with torch.no_grad():
        logits = model(images)
    greedy_ids, greedy_conf = model.decode(logits)
    ids, confs = AttentionBeam(1)(model, images, logits)
    assert ids == greedy_ids
    assert confs == pytest.approx(greedy_conf, rel=1e-4)
    _, wide = AttentionBeam(5)(model, images, logits)
    assert all(w >= g * (1 - 1e-5) for w, g in zip(wide, greedy_conf, strict=True))


def _lm(tmp_path, labels, order=3):
    (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    return build_lm([tmp_path / "labels.txt"], order, tmp_path / "chars.arpa")["path"]


def test_the_lm_settles_an_ambiguous_character(tmp_path):
    tok = CTCTokenizer(CHARSET)
    # the middle frame leans to 'b' (0.55) over 'h' (0.45): the network alone reads "tbe"
    logits = peaked(tok, ["t", "-", {"b": 0.55, "h": 0.45}, "-", "e"])
    assert tok.decode(CTCHead(4, tok.num_classes)._greedy(logits)[0][0]) == "tbe"
    assert tok.decode(CTCBeam(tok, 8)(None, None, logits)[0][0]) == "tbe"
    lm = _lm(tmp_path, ["the", "there", "other", "three", "the", "what", "bet", "beer"])
    assert tok.decode(CTCBeam(tok, 8, lm, lm_weight=1.0)(None, None, logits)[0][0]) == "the"


def test_lexicon_beam_answers_lexicon_words_only():
    tok = CTCTokenizer(CHARSET)
    beam = CTCBeam(tok, 8)
    # reads "bab": without the end-of-word marker the trie would allow "b" + "ab"; with it the search
    # itself ends on exactly one word (a fallback to the exact CTC choice would be counted)
    assert beam.lexicon(peaked(tok, ["b", "-", "a", "-", "b"])[0], ("ab", "b", "ba")) in ("ab", "b", "ba")
    assert beam.fallbacks == 0
    assert beam.lexicon(peaked(tok, ["w", "o", "r", "-", "l", "l", "-", "l", "s"])[0],
                        ("walls", "tools", "rolls", "there")) == "walls"
    gen = torch.Generator().manual_seed(1)
    words = ("hello", "help", "world", "tree", "slow", "bars")
    for _ in range(8):
        answer = beam.lexicon(torch.randn(12, tok.num_classes, generator=gen) * 4, words)
        assert answer in words
    assert beam.fallbacks == 0


def test_lm_build_is_normalised_and_rejects_order_one(tmp_path, cli):
    model = WittenBell(["hello", "help", "he is", "yellow"], 3)
    for h in [("<s>",), ("<s>", "h"), ("e", "l"), ("q", "z")]:  # seen, seen, seen, never seen
        assert sum(model.prob(w, h) for w in model.vocab) == pytest.approx(1.0)
    assert lm_token(" ") == "<U+0020>" and "<U+0020>" in model.vocab
    (tmp_path / "labels.txt").write_text("img1.png\thello\nhelp\n", encoding="utf-8")
    code, out, err = cli("lm", "build", tmp_path / "labels.txt", "--order", "3", "--out", tmp_path / "c.arpa")
    assert code == 0, err
    arpa = (tmp_path / "c.arpa").read_text()
    assert "\\3-grams:" in arpa and "h e l" in arpa and "img1" not in arpa
    # KenLM reads it and gives the same probabilities (log10)
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    d = Dictionary()
    for t in ["<blank>", "h", "e", "l", "p", "o"]:
        d.add_entry(t)
    kenlm = KenLM(str(tmp_path / "c.arpa"), d)
    state, score = kenlm.score(kenlm.start(False), 1)  # P(h | <s>)
    assert 10 ** score == pytest.approx(WittenBell(["hello", "help"], 3).prob("h", ("<s>",)), rel=1e-4)
    code, _, err = cli("lm", "build", tmp_path / "labels.txt", "--order", "1")
    assert code == 2 and "--order 1" in err
    exp = tiny_experiment()  # an experiment's training labels, as the model learns them (case-folded)
    exp["data"]["train"][0].update(size=20, words={"lexicon": 0, "random": 0, "digits": 0, "mixed": 1})
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp), encoding="utf-8")
    info = build_lm([tmp_path / "e.yaml"], 2, tmp_path / "e.arpa")
    assert info["labels"] == 20
    unigrams = {line.split("\t")[1] for line in (tmp_path / "e.arpa").read_text().split("\\2-grams:")[0]
                .split("\\1-grams:")[1].strip().splitlines()}
    assert unigrams - {"<s>", "</s>", "<unk>"} <= set("0123456789abcdefghijklmnopqrstuvwxyz")


def test_cli_eval_with_beam_lm_and_a_word_lexicon(tmp_path, cli):
    exp = tiny_experiment()
    exp["data"]["val"][0]["size"] = 4
    cfg = Experiment.model_validate(exp)
    torch.manual_seed(0)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    torch.save({"model": build_model(cfg.model, 37).state_dict(), "step": 1}, run / "checkpoints" / "best.pt")
    lm = _lm(tmp_path, ["hello", "world", "there"])
    (tmp_path / "words.txt").write_text("hello\nworld\n", encoding="utf-8")
    code, out, err = cli("eval", run, "--set", "eval.decoder=beam", "--set", f"eval.lm={lm}",
                         "--set", f"eval.lexicon={tmp_path / 'words.txt'}")
    assert code == 0, err
    res = json.loads(next(run.glob("eval/*/*/eval.json")).read_text())
    assert res["decoder"]["name"] == "beam" and res["decoder"]["lm"] == lm
    rows = next(run.glob("eval/*/*/*.predictions.csv")).read_text().splitlines()
    assert all(r.split(",")[-1] in ("hello", "world") for r in rows[1:])  # the lexicon column
    with pytest.raises(CvlabError, match="eval.lm"):
        from cvlab.config import load_config

        p = tmp_path / "e.yaml"
        p.write_text(yaml.safe_dump({**exp, "eval": {"lm": lm}}), encoding="utf-8")
        load_config(p)


def test_missing_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "flashlight.lib.text", None)  # as if not installed
    with pytest.raises(CvlabError, match=r"cvlab\[decode\]"):
        CTCBeam(CTCTokenizer(CHARSET))
