"""What the renderer writes: English words, random strings, numbers and mixed tokens, in a case drawn
independently of the word. Everything is a function of the generator handed in, so sample i stays sample i."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

from ...config.synth import CaseCfg, WordsCfg

LEXICON_SIZE = 90_000  # MJSynth draws from a 90k-word English dictionary; we take the 90k most frequent words


@lru_cache(maxsize=1)
def builtin_words() -> tuple[str, ...]:
    """The small built-in English word list (lower case, one per line)."""
    text = resources.files("cvlab.data").joinpath("words.txt").read_text(encoding="utf-8")
    return tuple(w for w in text.split() if w)


@lru_cache(maxsize=1)
def lexicon() -> tuple[str, ...]:
    """The 90k most frequent alphabetic ASCII words of pyspellchecker's English frequency list (built from
    OpenSubtitles and word lists; names included, as in MJSynth's dictionary), most frequent first."""
    try:
        from spellchecker import SpellChecker
    except ImportError:  # a declared dependency; without it the built-in list still works
        return builtin_words()
    freq = SpellChecker(language="en", distance=1).word_frequency.dictionary
    words = sorted((w for w in freq if w.isascii() and w.isalpha()), key=lambda w: (-freq[w], w))
    return tuple(words[:LEXICON_SIZE])


_ORDINAL = {1: "st", 2: "nd", 3: "rd"}
_TLDS = ("com", "co.uk", "org", "net", "de", "fr", "info")
_STREETS = ("Ave", "St", "Rd", "Blvd", "Ln", "Dr")


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else _ORDINAL.get(n % 10, 'th')}"


class TextSource:
    """Draws the string to render. `fold` maps a string to what the charset can encode (case folding, as the
    tokenizer does); a word is usable when every folded character is in the charset."""

    def __init__(self, words: WordsCfg, case: CaseCfg, charset: str, *, fold, min_len: int, max_len: int):
        self.fold, self.min_len, self.max_len = fold, min_len, max_len
        self.charset = set(charset)
        self.symbols = "".join(c for c in charset if not c.isspace())
        pool = builtin_words() if words.builtin_only else lexicon()
        self.words = [w for w in pool if min_len <= len(w) <= max_len and self.writable(w)]
        letters = any(self.writable(c) for c in "abcdefghijklmnopqrstuvwxyz")
        digits = all(self.writable(c) for c in "0123456789")
        shares = {"lexicon": words.lexicon if self.words else 0.0, "random": words.random,
                  "digits": words.digits if digits else 0.0, "mixed": words.mixed if letters and digits else 0.0}
        if sum(shares.values()) <= 0:
            shares["random"] = 1.0  # e.g. a digits charset with only the lexicon asked for: say so in the report
        total = sum(shares.values())
        self.sources = [k for k, v in shares.items() if v > 0]
        self.shares = np.array([shares[k] / total for k in self.sources])
        styles = case.model_dump()
        self.cases = list(styles)
        self.case_p = np.array(list(styles.values())) / sum(styles.values())

    def writable(self, text: str) -> bool:
        return all(c in self.charset for c in self.fold(text))

    def describe(self) -> str:
        return ", ".join(f"{k} {p:.0%}" for k, p in zip(self.sources, self.shares, strict=False)) + \
            f"; {len(self.words):,} lexicon words of {self.min_len}-{self.max_len} characters"

    def label(self, text: str) -> str:
        """The rendered text less what the charset cannot encode: `tetley.co.uk` is drawn with its dots and
        labelled `tetleycouk` under lower36, so the model learns to read past punctuation, as on real signs."""
        return "".join(c for c in text if self.writable(c))

    def __call__(self, rng: np.random.Generator) -> tuple[str, str]:
        """(text to draw, its label)."""
        source = self.sources[rng.choice(len(self.sources), p=self.shares)]
        for _ in range(8):  # a token the charset or length range rules out is redrawn
            text = getattr(self, "_" + source)(rng)
            if source != "random":
                text = self._case(text, rng)
            label = self.label(text)
            if self.min_len <= len(label) <= self.max_len:
                return text, label
        text = self._random(rng)
        return text, text

    def _case(self, text: str, rng: np.random.Generator) -> str:
        style = self.cases[rng.choice(len(self.cases), p=self.case_p)]
        if style == "upper":
            out = text.upper()
        elif style == "title":
            out = text[:1].upper() + text[1:].lower()
        elif style == "random":
            out = "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in text)
        else:
            out = text.lower() if text.isalpha() else text
        return out if self.writable(out) else text  # a cased charset without capitals keeps the word as it is

    def _lexicon(self, rng) -> str:
        return self.words[int(rng.integers(len(self.words)))]

    def _random(self, rng) -> str:
        n = int(rng.integers(self.min_len, self.max_len + 1))
        return "".join(self.symbols[i] for i in rng.integers(len(self.symbols), size=n))

    def _digits(self, rng) -> str:
        kind = int(rng.integers(6))
        if kind == 0:
            return str(int(rng.integers(1900, 2031)))  # a year
        if kind == 1:
            return f"{int(rng.integers(0, 1000))}.{int(rng.integers(0, 100)):02d}"  # a price
        if kind == 2:
            return f"{int(rng.integers(100, 1000))}-{int(rng.integers(0, 10000)):04d}"  # a phone group
        if kind == 3:
            return f"{int(rng.integers(0, 24))}:{int(rng.integers(0, 60)):02d}"  # a time
        n = int(rng.integers(1, 7))
        return "".join(str(d) for d in rng.integers(0, 10, size=n))

    def _mixed(self, rng) -> str:
        word = self.words[int(rng.integers(len(self.words)))] if self.words else "ave"
        kind = int(rng.integers(6))
        if kind == 0:  # 3rdAve, 21st
            street = _STREETS[int(rng.integers(len(_STREETS)))] if rng.random() < 0.5 else ""
            return _ordinal(int(rng.integers(1, 100))) + street
        if kind == 1:  # tetley.co.uk, www.word.com
            host = ("www." if rng.random() < 0.3 else "") + word
            return f"{host}.{_TLDS[int(rng.integers(len(_TLDS)))]}"
        if kind == 2:  # A4, M25, B12
            return chr(ord("A") + int(rng.integers(26))) + str(int(rng.integers(1, 100)))
        if kind == 3:  # 24h, 50%, 10kg
            return str(int(rng.integers(1, 100))) + ("h", "%", "kg", "km", "cm", "mm", "ml")[int(rng.integers(7))]
        if kind == 4:  # No.5, Mr.Smith
            return ("No.", "Mr.", "Dr.", "St.")[int(rng.integers(4))] + (str(int(rng.integers(1, 100)))
                                                                         if rng.random() < 0.5 else word)
        return word + str(int(rng.integers(0, 100)))  # route66
