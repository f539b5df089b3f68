"""Beam search (eval.decoder: beam): greedy's answers at beam 1 for both heads, a character LM that settles an
ambiguous reading, lexicon answers that are the exact most likely lexicon word; `cvlab lm build` writes a normalised LM."""

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
from cvlab.engine.eval.lm import WittenBell, build_lm, lm_token
from cvlab.errors import CvlabError
from cvlab.models import build_model
from cvlab.models.heads import CTCHead

pytest.importorskip("flashlight.lib.text")
from cvlab.engine.eval.decode import AttentionBeam, CTCBeam  # noqa: E402

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


def test_ctc_beam_fixes_greedys_classic_error():
    """Greedy takes the best frame each time; the beam sums a prefix's alignments (Graves 2006)."""
    tok = CTCTokenizer(CHARSET)
    clear = peaked(tok, list("hh-e-ll-lo"))
    assert CTCBeam(tok, beam_size=5)(None, None, clear)[0] == [tok.encode("hello")]
    # two frames: blank is best in each (0.4), so greedy reads ""; "a" has aa, a_, _a = 0.09 + 0.12 + 0.12
    a, b = tok.stoi["a"], tok.stoi["b"]
    probs = torch.full((1, 2, tok.num_classes), 1e-6)
    probs[..., 0], probs[..., a], probs[..., b] = 0.4, 0.3, 0.3
    logits = probs.log()
    assert CTCHead(4, tok.num_classes)._greedy(logits)[0] == [[]]
    ids, conf = CTCBeam(tok, beam_size=5)(None, None, logits)
    assert ids[0] in ([a], [b]) and abs(conf[0] - 0.33) < 1e-3


def test_a_saved_head_beam_width_loads_at_its_default_and_names_its_new_place_otherwise():
    exp = tiny_experiment(model={"head": {"name": "ctc", "beam_width": 1}})
    assert Experiment.model_validate(exp).model.head.name == "ctc"
    exp["model"]["head"]["beam_width"] = 5
    with pytest.raises(ValueError, match=r"eval\.decoder: beam"):
        Experiment.model_validate(exp)


def test_attention_beam_of_one_is_greedy_and_wider_beams_score_at_least_as_well():
    exp = tiny_experiment()
    exp["model"].update(head={"name": "attention", "hidden": 16, "max_length": 6}, sequence={"hidden": 16, "layers": 1})
    exp["model"]["backbone"]["width"] = 0.5
    cfg = Experiment.model_validate(exp)
    torch.manual_seed(0)
    model = build_model(cfg.model, AttentionTokenizer(CHARSET).num_classes).model.eval()
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
    assert tok.decode(CTCBeam(tok, 8, lm=lm, lm_weight=1.0)(None, None, logits)[0][0]) == "the"


def _ctc_by_enumeration(lp: torch.Tensor, tok, words) -> dict:
    """Each word's CTC log-likelihood summed over every frame path that collapses to it (brute force)."""
    T, C = lp.shape
    paths = torch.cartesian_prod(*[torch.arange(C)] * T)  # (C^T, T)
    scores = lp.gather(1, paths.T).sum(0)
    out = {}
    for w in words:
        target = tok.encode(w)
        hit = [i for i, p in enumerate(paths.tolist())
               if [c for j, c in enumerate(p) if c and (j == 0 or c != p[j - 1])] == target]
        out[w] = float(scores[hit].logsumexp(0)) if hit else -math.inf
    return out


def test_lexicon_answer_is_the_exact_most_likely_word_by_either_path():
    tok = CTCTokenizer("abc")
    words = ("a", "b", "c", "ab", "ba", "abc", "cab", "aa", "bca", "cc")
    gen = torch.Generator().manual_seed(0)
    exact, search = CTCBeam(tok, 8), CTCBeam(tok, 200, exact_words=0)  # the trie search, with a beam as wide
    for _ in range(12):                                                  # as the trie: it prunes nothing
        logits = torch.randn(5, tok.num_classes, generator=gen) * 2
        ll = _ctc_by_enumeration(logits.log_softmax(-1), tok, words)
        best = max(words, key=ll.get)
        assert exact.lexicon(logits, words) == best
        # flashlight's silence at the blank's index counted every frame at the trie's root twice: wrong words
        assert search.lexicon(logits, words) == best
    assert exact.fallbacks == search.fallbacks == 0


def test_an_unsure_reading_gets_its_word_without_falling_back():
    tok = CTCTokenizer(CHARSET)
    # every frame: blank 0.6, one letter of "there" 0.4. "the" (2 alignments, 2·0.4³·0.6²) beats "there" (0.4⁵),
    # and unfinished prefixes ("t", "th") outscore every complete word until the last frame: a narrow trie
    # search loses them all and falls back, as it did for every lexicon before
    logits = peaked(tok, [{"-": 0.6, c: 0.4} for c in "there"])[0]
    words = ("there", "the", "three", "tree", "other", "sorrow", "whistle", "brothers", "hollow", "tower")
    beam = CTCBeam(tok, 3)  # a small lexicon: scored word by word, nothing to lose
    assert beam.lexicon(logits, words) == "the" and beam.fallbacks == 0
    narrow = CTCBeam(tok, 3, exact_words=5)
    assert narrow.lexicon(logits, words) == "the" and narrow.fallbacks == 1  # counted, still the exact word
    assert CTCBeam(tok, 10, exact_words=5).lexicon(logits, words) == "the"


def test_lexicon_answers_are_lexicon_words_with_or_without_lm(tmp_path):
    tok = CTCTokenizer(CHARSET)
    lm = _lm(tmp_path, ["hello", "help", "world", "tree", "slow", "bars", "the", "walls"])
    for beam in (CTCBeam(tok, 8), CTCBeam(tok, 8, exact_words=0), CTCBeam(tok, 8, lm=lm, lm_weight=1.0)):
        # reads "bab": without the end-of-word marker the trie would allow "b" + "ab"
        assert beam.lexicon(peaked(tok, ["b", "-", "a", "-", "b"])[0], ("ab", "b", "ba")) in ("ab", "b", "ba")
        assert beam.lexicon(peaked(tok, ["w", "o", "r", "-", "l", "l", "-", "l", "s"])[0],
                            ("walls", "tools", "rolls", "there")) == "walls"
    gen = torch.Generator().manual_seed(1)
    words = ("hello", "help", "world", "tree", "slow", "bars")
    exact, search = CTCBeam(tok, 8, lm=lm, lm_weight=1.0), CTCBeam(tok, 500, lm=lm, lm_weight=1.0, exact_words=0)
    for _ in range(8):  # the LM adds the same word scores to either path
        logits = torch.randn(12, tok.num_classes, generator=gen) * 4
        assert exact.lexicon(logits, words) == search.lexicon(logits, words) in words
    assert search.fallbacks == 0


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
    assert info["labels"] == 20 and info["dropped_chars"] == 0  # the renderer writes only what the charset has
    unigrams = {line.split("\t")[1] for line in (tmp_path / "e.arpa").read_text().split("\\2-grams:")[0]
                .split("\\1-grams:")[1].strip().splitlines()}
    assert unigrams - {"<s>", "</s>", "<unk>"} <= set("0123456789abcdefghijklmnopqrstuvwxyz")


def _unigrams(arpa: str) -> set[str]:
    block = arpa.split("\\2-grams:")[0].split("\\1-grams:")[1]
    return {line.split("\t")[1] for line in block.strip().splitlines()} - {"<s>", "</s>", "<unk>"}


def test_lm_build_folds_label_files_to_a_charset_and_counts_what_it_drops(tmp_path, cli):
    (tmp_path / "labels.txt").write_text("img1.png\tHello!\nWORLD\nhelp\n", encoding="utf-8")
    code, out, err = cli("lm", "build", tmp_path / "labels.txt", "--order", "2", "--out", tmp_path / "raw.arpa")
    assert code == 0, err
    assert {"H", "W", "!"} <= _unigrams((tmp_path / "raw.arpa").read_text())  # as written, without --charset
    code, out, err = cli("lm", "build", tmp_path / "labels.txt", "--order", "2", "--charset", "lower36",
                         "--out", tmp_path / "low.arpa")
    assert code == 0, err
    assert _unigrams((tmp_path / "low.arpa").read_text()) == set("helowrdp")
    assert "folded to lower36, 1 character outside the charset dropped" in out
    code, _, err = cli("lm", "build", tmp_path / "labels.txt", "--charset", "lower63")
    assert code == 2 and "lower63" in err


def test_cli_eval_with_beam_lm_and_a_word_lexicon(tmp_path, cli):
    exp = tiny_experiment()
    exp["data"]["val"][0]["size"] = 4
    cfg = Experiment.model_validate(exp)
    torch.manual_seed(0)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    torch.save({"model": build_model(cfg.model, 37).model.state_dict(), "step": 1}, run / "checkpoints" / "best.pt")
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
