"""Recognition metrics (REFERENCE §2), with rapidfuzz for edit distances.

- word accuracy: exact match after the protocol's normalisation of label and prediction;
- 1 − NED (ICDAR 2019): mean over samples of 1 − ED(p, g) / max(|p|, |g|), 1 for two empty strings;
- CER / WER: corpus level, total edit distance / total reference length (characters, or whitespace words);
- lexicon-constrained accuracy (IIIT5K-50/1k, SVT-50): the answer is the lexicon word nearest the prediction
  by edit distance (first one on ties, in lexicon order), compared with the label, both under the protocol.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from functools import lru_cache

from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

_PRINTABLE94 = set(string.digits + string.ascii_letters + string.punctuation)
PROTOCOLS = {
    "lower36": lambda s: re.sub(r"[^0-9a-z]", "", s.lower()),
    "alnum62": lambda s: re.sub(r"[^0-9a-zA-Z]", "", s),
    "printable94": lambda s: "".join(c for c in s if c in _PRINTABLE94),
    "raw": lambda s: s,
}


def normalize(text: str, protocol: str) -> str:
    return PROTOCOLS[protocol](text)


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
    """Streams (prediction, label) pairs; `result()` gives the DESIGN §2 metrics dict."""

    protocol: str = "lower36"
    samples: int = 0
    correct: int = 0
    ned_sum: float = 0.0
    char_errors: int = 0
    chars: int = 0
    word_errors: int = 0
    words: int = 0
    conf_sum: float = 0.0
    empty_labels: int = 0
    lex_correct: dict = field(default_factory=dict)  # lexicon name ("50", "1k") -> correct answers
    lex_samples: dict = field(default_factory=dict)

    def update(self, preds: list[str], labels: list[str], confidences: list[float] | None = None,
               lexicons: list[dict | None] | None = None) -> None:
        """`lexicons[i]`, when given, maps lexicon names to sample i's word list."""
        for i, (p, g) in enumerate(zip(preds, labels, strict=True)):
            p, g = normalize(p, self.protocol), normalize(g, self.protocol)
            self.samples += 1
            self.empty_labels += g == ""  # still scored: dropping it would change the denominator silently
            self.correct += p == g
            ed = Levenshtein.distance(p, g)
            self.ned_sum += 1.0 - ed / max(len(p), len(g)) if (p or g) else 1.0
            self.char_errors += ed
            self.chars += len(g)
            pw, gw = p.split(), g.split()
            self.word_errors += Levenshtein.distance(pw, gw)
            self.words += len(gw)
            if confidences is not None:
                self.conf_sum += confidences[i]
            for name, words in ((lexicons[i] or {}) if lexicons else {}).items():
                if words:
                    self.lex_samples[name] = self.lex_samples.get(name, 0) + 1
                    answer = lexicon_answer(p, tuple(words), self.protocol)
                    self.lex_correct[name] = self.lex_correct.get(name, 0) + (answer == g)

    def result(self) -> dict:
        n = max(1, self.samples)
        return {
            "samples": self.samples,
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
    acc = MetricAccumulator(protocol)
    acc.update(preds, labels)
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
    for rate, size in (("cer", "chars"), ("wer", "words")):
        if rs and all(size in r and rate in r for r in rs):
            out[rate] = sum(r[rate] * r[size] for r in rs) / max(1, sum(r[size] for r in rs))
    return out
