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
from ..progress import NullProgress, Progress

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
PROGRESS_STEPS = 10  # messages while reading one training set's labels


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


def read_labels(paths: list[Path], progress: Progress | None = None) -> tuple[list[str], int]:
    """Labels from text files (one a line; a tab-separated `image<TAB>label` line gives its label) or from an
    experiment YAML's training sets (as its model learns them), and how many characters the latter dropped."""
    progress = progress or NullProgress()
    labels: list[str] = []
    dropped = 0
    for path in map(Path, paths):
        if not path.is_file():
            raise CvlabError(f"{path}: file not found (give label files, one label a line, or an experiment YAML)")
        if path.suffix.lower() in (".yaml", ".yml"):
            learned, n = _experiment_labels(path, progress)
            labels, dropped = labels + learned, dropped + n
            continue
        progress.message(f"reading labels: {path}")
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


def _experiment_labels(path: Path, progress: Progress) -> tuple[list[str], int]:
    """The training labels as the model learns them: case-folded to the charset, only its characters (labels
    the charset cannot write at all are left out by the training sets themselves, and reported)."""
    from ...config import load_config
    from ...data.charset import resolve_charset
    from ...data.fit import label_at
    from ...data.loaders import datasets_for, report_lines

    cfg = load_config(path)
    progress.message(f"{path}: indexing the training sets (data.train)")
    out = []
    for name, ds in datasets_for(cfg, "train").items():
        for line in report_lines(ds):
            progress.message(f"  {name}: {line}")
        n = len(ds)
        every = max(1, n // PROGRESS_STEPS)  # synthetic words draw each label: 1M labels take minutes
        progress.message(f"reading the labels of {name} ({n} samples)")
        for i in range(n):
            out.append(label_at(ds, i))
            if (i + 1) % every == 0 and i + 1 < n:
                progress.message(f"  {name}: {i + 1} of {n} labels read")
    return as_learned(out, resolve_charset(cfg.data.charset))


def as_learned(labels: list[str], charset: str) -> tuple[list[str], int]:
    """The labels as a model of `charset` learns them: case-folded to it (lower36 lower-cases), then only its
    characters; and how many characters that dropped."""
    from ...data.charset import case_fold

    fold, keep = case_fold(charset), set(charset)
    out = ["".join(c for c in fold(label) if c in keep) for label in labels]
    return out, sum(map(len, labels)) - sum(map(len, out))


def build_lm(paths: list[Path], order: int, out: Path, charset: str | None = None, *,
             progress: Progress | None = None) -> dict:
    """Write the ARPA file; returns what it was built from. `charset` (a preset, for label files) folds and
    filters the labels as a model of that charset learns them; an experiment YAML always uses its own.
    `progress` hears what it is doing (reading a million synthetic labels takes minutes)."""
    from ...atomic import write_text_atomic
    from ...data.charset import resolve_charset
    from ..runs.directory import check_writable_file

    check_writable_file(Path(out), "--out")  # before reading every label (minutes for a large set)
    progress = progress or NullProgress()
    labels, dropped = read_labels(paths, progress)
    if charset is not None:
        labels, more = as_learned(labels, resolve_charset(charset))
        dropped += more
    empty = sum(1 for label in labels if not label)  # every character outside the charset: nothing to learn
    labels = [label for label in labels if label]
    progress.message(f"counting the n-grams of {len(labels)} labels (order {order})")
    model = WittenBell(labels, order)
    progress.message("writing the ARPA file")
    write_text_atomic(model.arpa(), Path(out))
    return {"path": str(out), "labels": len(labels), "order": order, "vocab": len(model.vocab),
            "ngrams": {k: len(model.counts[k]) + 2 * (k == 1) for k in range(1, order + 1)},
            "charset": charset, "dropped_chars": dropped, "empty_labels": empty}

