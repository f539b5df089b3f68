"""`cvlab lm build`: a character n-gram language model of training labels, as an ARPA file KenLM reads.

Interpolated Witten-Bell smoothing (Witten & Bell 1991; Chen & Goodman 1998 §2.4): for a context h seen
c(h) times, followed by N1+(h·) distinct characters,

    P(w | h) = (c(h w) + N1+(h·) · P(w | h')) / (c(h) + N1+(h·)),      h' = h without its first symbol,

down to a unigram interpolated with the uniform distribution over the vocabulary (every character of the
labels and </s>). An interpolated model is exactly an ARPA backoff model: each seen n-gram stores its
interpolated probability, each context h the weight N1+(h·) / (c(h) + N1+(h·)) its unseen continuations get.
Labels are padded with one <s> and one </s>, as KenLM scores a sentence.

ARPA separates tokens by spaces, so a whitespace character is written `<U+0020>`; `lm_token` gives the name of
every character, and the decoder maps its classes through the same function.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from ...errors import CvlabError

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


def lm_token(c: str) -> str:
    """A character as an ARPA token: itself, or <U+XXXX> for whitespace and the three reserved names."""
    return c if c.strip() == c and c not in (BOS, EOS, UNK) and c else f"<U+{ord(c):04X}>"


class WittenBell:
    """Counts of every order up to `order`, and the interpolated Witten-Bell probabilities they give."""

    def __init__(self, labels, order: int):
        if order < 2:
            raise CvlabError(f"--order {order}: give 2 or more (flashlight's KenLM decoder rejects order 1, and a "
                             f"unigram model knows nothing of spelling)")
        self.order = order
        self.counts: list[Counter] = [Counter() for _ in range(order + 1)]  # counts[k][ngram of length k]
        self.sentences = 0
        for label in labels:
            seq = (BOS, *map(lm_token, label), EOS)
            self.sentences += 1
            for k in range(1, order + 1):
                for i in range(len(seq) - k + 1):
                    self.counts[k][seq[i:i + k]] += 1
        if not self.sentences:
            raise CvlabError("no labels to build a language model from")
        self.counts[1].pop((BOS,), None)  # <s> is never predicted
        self.vocab = sorted(w for (w,) in self.counts[1])
        self.context_total: list[Counter] = [Counter() for _ in range(order + 1)]  # c(h·) by context length
        self.followers: list[Counter] = [Counter() for _ in range(order + 1)]  # N1+(h·)
        for k in range(2, order + 1):
            for gram, n in self.counts[k].items():
                self.context_total[k - 1][gram[:-1]] += n
                self.followers[k - 1][gram[:-1]] += 1
        self.unigram_total = sum(self.counts[1].values())
        self._cache: dict = {}

    def gamma(self, h: tuple) -> float:
        """The weight of the lower order after context h (1 for a context never seen)."""
        c, n = self.context_total[len(h)].get(h, 0), self.followers[len(h)].get(h, 0)
        return n / (c + n) if c + n else 1.0

    def prob(self, w: str, h: tuple = ()) -> float:
        """P(w | h), interpolated through every shorter context."""
        h = h[-(self.order - 1):] if self.order > 1 else ()
        key = (w, h)
        if key in self._cache:
            return self._cache[key]
        if not h:
            v = len(self.vocab)
            n1 = v  # every vocabulary entry was seen: N1+(·) of the empty context
            p = (self.counts[1].get((w,), 0) + n1 / v) / (self.unigram_total + n1)
        else:
            c, n = self.context_total[len(h)].get(h, 0), self.followers[len(h)].get(h, 0)
            lower = self.prob(w, h[1:])
            p = (self.counts[len(h) + 1].get((*h, w), 0) + n * lower) / (c + n) if c + n else lower
        self._cache[key] = p
        return p

    def arpa(self) -> str:
        lines = ["", "\\data\\"]
        grams = [None] + [sorted(self.counts[k]) for k in range(1, self.order + 1)]
        grams[1] = [(BOS,), (UNK,), *grams[1]]  # <s> starts sentences only; <unk> (never seen) KenLM wants listed
        for k in range(1, self.order + 1):
            lines.append(f"ngram {k}={len(grams[k])}")
        for k in range(1, self.order + 1):
            lines += ["", f"\\{k}-grams:"]
            for gram in grams[k]:
                lp = -99.0 if gram in ((BOS,), (UNK,)) else math.log10(self.prob(gram[-1], gram[:-1]))
                row = f"{lp:.6f}\t{' '.join(gram)}"
                if k < self.order and gram[-1] not in (EOS, UNK):
                    row += f"\t{math.log10(self.gamma(gram)):.6f}"
                lines.append(row)
        lines += ["", "\\end\\", ""]
        return "\n".join(lines)


def read_labels(paths: list[Path]) -> tuple[list[str], int]:
    """Labels from text files (one a line; a tab-separated `image<TAB>label` line gives its label) or from an
    experiment YAML's training sets (as its model learns them), and how many characters the latter dropped."""
    labels: list[str] = []
    dropped = 0
    for path in map(Path, paths):
        if not path.is_file():
            raise CvlabError(f"{path}: file not found (give label files, one label a line, or an experiment YAML)")
        if path.suffix.lower() in (".yaml", ".yml"):
            learned, n = _experiment_labels(path)
            labels, dropped = labels + learned, dropped + n
            continue
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            line = path.read_bytes()[: e.start].count(b"\n") + 1
            raise CvlabError(f"{path}:{line}: not valid UTF-8 text") from None
        for line in text.splitlines():
            label = line.split("\t", 1)[1] if "\t" in line else line
            if label.strip():
                labels.append(label.strip("\r\n"))
    return labels, dropped


def _experiment_labels(path: Path) -> tuple[list[str], int]:
    """The training labels as the model learns them: case-folded to the charset, only its characters."""
    from ...config import load_config
    from ...data.charset import resolve_charset
    from ...data.loaders import datasets_for

    cfg = load_config(path)
    out = []
    for ds in datasets_for(cfg, "train").values():
        base = getattr(ds, "ds", ds)
        out += [base.label(i) for i in range(len(base))]
    return as_learned(out, resolve_charset(cfg.data.charset))


def as_learned(labels: list[str], charset: str) -> tuple[list[str], int]:
    """The labels as a model of `charset` learns them: case-folded to it (lower36 lower-cases), then only its
    characters; and how many characters that dropped."""
    from ...data.charset import case_fold

    fold, keep = case_fold(charset), set(charset)
    out = ["".join(c for c in fold(label) if c in keep) for label in labels]
    return out, sum(map(len, labels)) - sum(map(len, out))


def build_lm(paths: list[Path], order: int, out: Path, charset: str | None = None) -> dict:
    """Write the ARPA file; returns what it was built from. `charset` (a preset, for label files) folds and
    filters the labels as a model of that charset learns them; an experiment YAML always uses its own."""
    from ...atomic import write_text_atomic
    from ...data.charset import resolve_charset

    labels, dropped = read_labels(paths)
    if charset is not None:
        labels, more = as_learned(labels, resolve_charset(charset))
        dropped += more
    model = WittenBell(labels, order)
    write_text_atomic(model.arpa(), Path(out))
    return {"path": str(out), "labels": len(labels), "order": order, "vocab": len(model.vocab),
            "ngrams": {k: len(model.counts[k]) + 2 * (k == 1) for k in range(1, order + 1)},
            "charset": charset, "dropped_chars": dropped}

