"""Recognition metrics (REFERENCE §2), with rapidfuzz for edit distances.

- word accuracy: exact match after the protocol's normalisation of label and prediction;
- 1 − NED (ICDAR 2019): mean over samples of 1 − ED(p, g) / max(|p|, |g|), 1 for two empty strings;
- CER / WER: corpus level, total edit distance / total reference length (characters, or whitespace words).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

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

    def update(self, preds: list[str], labels: list[str], confidences: list[float] | None = None) -> None:
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
        }


def score(preds: list[str], labels: list[str], protocol: str = "lower36") -> dict:
    acc = MetricAccumulator(protocol)
    acc.update(preds, labels)
    return acc.result()


def combine(results: dict[str, dict]) -> dict:
    """Sample-weighted combination of per-dataset results (CER/WER stay per-dataset: lengths are not kept)."""
    total = sum(r["samples"] for r in results.values())
    out = {"samples": total}
    for k in ("word_acc", "one_minus_ned", "confidence"):
        out[k] = sum(r[k] * r["samples"] for r in results.values()) / max(1, total)
    return out
