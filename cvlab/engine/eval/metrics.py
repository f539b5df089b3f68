"""Recognition metrics (REFERENCE §2), with rapidfuzz for edit distances. Protocols live in `protocols.py`.

- word accuracy: exact match after the protocol's normalisation of label and prediction;
- 1 − NED (ICDAR 2019): mean over scored samples of 1 − ED(p, g) / max(|p|, |g|); a pair with an empty side
  scores the protocol's `empty_ned` (0 for dtrb, 1 for two empty strings under cvlab's protocols);
- CER / WER: corpus level, total edit distance / total reference length (characters, or whitespace words);
- lexicon-constrained accuracy (IIIT5K-50/1k, SVT-50, or a word file): the answer is the lexicon word nearest
  the prediction by edit distance (first one on ties, in lexicon order), compared with the label.

Labels a protocol filters (dtrb, parseq) are not scored: `samples` counts the scored ones, `filtered` says how
many were left out and why, `total` is everything seen.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from .protocols import PROTOCOLS, get_protocol

__all__ = ["PROTOCOLS", "MetricAccumulator", "combine", "lexicon_answer", "normalize", "score"]


def normalize(text: str, protocol: str) -> str:
    """The prediction-side normalisation (never filters): what a lexicon word or a prediction becomes."""
    return get_protocol(protocol).pred(text)


@lru_cache(maxsize=256)
def _normalized_lexicon(words: tuple[str, ...], protocol: str) -> tuple[str, ...]:
    # SVT shares one lexicon among the words of an image: normalise each distinct lexicon once
    return tuple(normalize(w, protocol) for w in words)


def lexicon_answer(pred: str, words: tuple[str, ...], protocol: str) -> str:
    """The lexicon word nearest `pred` (already normalised) by edit distance."""
    lex = _normalized_lexicon(words, protocol)
    best = process.extractOne(pred, lex, scorer=Levenshtein.distance)
    return best[0] if best else pred


@dataclass
class MetricAccumulator:
    """Streams (prediction, label) pairs; `result()` gives the DESIGN §2 metrics dict. With `keep_rows`, one
    dict per sample (scored or filtered) is kept in `rows` for the predictions file and the error summary."""

    protocol: str = "lower36"
    keep_rows: bool = False
    samples: int = 0
    correct: int = 0
    ned_sum: float = 0.0
    char_errors: int = 0
    chars: int = 0
    word_errors: int = 0
    words: int = 0
    conf_sum: float = 0.0
    empty_labels: int = 0
    filtered: Counter = field(default_factory=Counter)  # reason -> labels the protocol leaves out
    lex_correct: dict = field(default_factory=dict)  # lexicon name ("50", "1k") -> correct answers
    lex_samples: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)

    def __post_init__(self):
        self._p = get_protocol(self.protocol)

    def update(self, preds: list[str], labels: list[str], *, confidences: list[float] | None = None,
               lexicons: list[dict | None] | None = None, answers: list[dict] | None = None) -> None:
        """`lexicons[i]`, when given, maps lexicon names to sample i's word list; `answers[i]`, when given, to
        the word a lexicon-constrained decoder read (else the word nearest the prediction is the answer)."""
        pairs = [(*self._p.label(label), self._p.pred(pred)) for pred, label in zip(preds, labels, strict=True)]
        scored = [(p, g) for g, _, p in pairs if g is not None]
        # the batch's edit distances in one call each (characters; whitespace-separated words), not one per sample
        eds = iter(process.cpdist([p for p, _ in scored], [g for _, g in scored], scorer=Levenshtein.distance)
                   .tolist() if scored else [])
        word_eds = iter(process.cpdist([p.split() for p, _ in scored], [g.split() for _, g in scored],
                                       scorer=Levenshtein.distance).tolist() if scored else [])
        for i, ((g, why, p), pred, label) in enumerate(zip(pairs, preds, labels, strict=True)):
            conf = float(confidences[i]) if confidences is not None else None
            if g is None:
                self.filtered[why] += 1
                if self.keep_rows:
                    self.rows.append({"label": label, "prediction": pred, "confidence": conf, "status": why})
                continue
            self.samples += 1
            self.empty_labels += g == ""  # scored under cvlab's protocols (only an empty prediction matches)
            ok = p == g
            self.correct += ok
            ed = next(eds)
            ned = 1.0 - ed / max(len(p), len(g)) if (p and g) else self._p.empty_ned(p, g)
            self.ned_sum += ned
            self.char_errors += ed
            self.chars += len(g)
            self.word_errors += next(word_eds)
            self.words += len(g.split())
            if conf is not None:
                self.conf_sum += conf
            lex_answers = {}
            for name, words in ((lexicons[i] or {}) if lexicons else {}).items():
                if words:
                    self.lex_samples[name] = self.lex_samples.get(name, 0) + 1
                    given = answers[i].get(name) if answers else None
                    answer = lex_answers[name] = normalize(given, self.protocol) if given is not None else \
                        lexicon_answer(p, tuple(words), self.protocol)
                    self.lex_correct[name] = self.lex_correct.get(name, 0) + (answer == g)
            if self.keep_rows:
                self.rows.append({"label": label, "prediction": pred, "confidence": conf, "status": "scored",
                                  "label_scored": g, "prediction_scored": p, "correct": ok, "ned": ned,
                                  **{f"lexicon_{k}": v for k, v in lex_answers.items()}})

    SUMS = ("samples", "correct", "ned_sum", "char_errors", "chars", "word_errors", "words", "conf_sum",
            "empty_labels")

    def counts(self) -> dict:
        """The sums every metric is computed from (what sharded evaluation adds up over ranks)."""
        return {**{k: getattr(self, k) for k in self.SUMS}, "filtered": dict(self.filtered),
                "lex_correct": dict(self.lex_correct), "lex_samples": dict(self.lex_samples)}

    def add_counts(self, c: dict) -> None:
        for k in self.SUMS:
            setattr(self, k, getattr(self, k) + c[k])
        self.filtered.update(c["filtered"])
        for k in ("lex_correct", "lex_samples"):
            mine = getattr(self, k)
            for name, v in c[k].items():
                mine[name] = mine.get(name, 0) + v

    def result(self) -> dict:
        n = max(1, self.samples)
        return {
            "samples": self.samples,
            "total": self.samples + sum(self.filtered.values()),
            "filtered": dict(self.filtered.most_common()),
            "word_acc": self.correct / n,
            "one_minus_ned": self.ned_sum / n,
            "cer": self.char_errors / max(1, self.chars),
            "wer": self.word_errors / max(1, self.words),
            "confidence": self.conf_sum / n,
            "empty_labels": self.empty_labels,
            "chars": self.chars,  # reference lengths: what a combined corpus CER/WER weighs by
            "words": self.words,
            **({"lexicon": {k: {"samples": m, "word_acc": self.lex_correct[k] / m}
                            for k, m in self.lex_samples.items()}} if self.lex_samples else {}),
        }


def score(preds: list[str], labels: list[str], protocol: str = "lower36") -> dict:
    """Score predictions against labels under a protocol: `word_acc`, `one_minus_ned` (both 0..1), `samples`
    (scored), `filtered` ({reason: count}), `total`, plus CER/WER. The public entry point of this module."""
    acc = MetricAccumulator(protocol)
    acc.update(list(preds), list(labels))
    return acc.result()


def combine(results: dict[str, dict]) -> dict:
    """Sample-weighted combination of per-dataset results; CER/WER stay corpus-level (weighted by reference
    characters/words) when every result carries its reference lengths."""
    rs = list(results.values())
    total = sum(r["samples"] for r in rs)
    out = {"samples": total}
    for k in ("word_acc", "one_minus_ned", "confidence"):
        out[k] = sum(r.get(k, 0.0) * r["samples"] for r in rs) / max(1, total)
    out["empty_labels"] = sum(r.get("empty_labels", 0) for r in rs)
    filtered = Counter()
    for r in rs:
        filtered.update(r.get("filtered", {}))
    out["filtered"] = dict(filtered.most_common())
    for rate, size in (("cer", "chars"), ("wer", "words")):
        if rs and all(size in r and rate in r for r in rs):
            out[rate] = sum(r[rate] * r[size] for r in rs) / max(1, sum(r[size] for r in rs))
    return out
