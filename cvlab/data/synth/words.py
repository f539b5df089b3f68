"""What the renderer writes: English words, random strings, numbers and mixed tokens, in a case drawn
independently of the word. Everything is a function of the generator handed in, so sample i stays sample i."""

from __future__ import annotations

import bisect
from functools import lru_cache
from importlib import resources

import numpy as np

from ...config.synth import CaseCfg, WordsCfg
from .cjk import Phrases, east_asian, word_list_source

PROBE = 256  # texts drawn at start to report how often East Asian faces cannot serve a text
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
        # an East Asian charset: the shares keep their names with Chinese meanings (lexicon: phrases of jieba's
        # words; mixed: a Chinese word with a number or a Latin token), and every drawn character is labelled
        self.cjk = east_asian(self.symbols)
        self.drawable = None  # set by restrict(): a text no face can draw whole is drawn again, and counted
        self.redrawn = 0
        self._safe = self.symbols  # what the last-resort random string is drawn over
        if self.cjk:
            self.phrases = Phrases.cached((charset, fold("Aa")), self.writable)
            self.words = self.phrases.words
        else:
            pool = builtin_words() if words.builtin_only else lexicon()
            self.words = [w for w in pool if min_len <= len(w) <= max_len and self.writable(w)]
        letters = any(self.writable(c) for c in "abcdefghijklmnopqrstuvwxyz")
        digits = all(self.writable(c) for c in "0123456789")
        mixed = (letters or digits) and bool(self.words) if self.cjk else letters and digits
        shares = {"lexicon": words.lexicon if self.words else 0.0, "random": words.random,
                  "digits": words.digits if digits else 0.0, "mixed": words.mixed if mixed else 0.0}
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
        mix = ", ".join(f"{k} {p:.0%}" for k, p in zip(self.sources, self.shares, strict=False))
        if self.cjk:
            return mix + f"; lines of {self.min_len}-{self.max_len} characters, phrases of {len(self.words):,} " \
                f"Chinese words from {word_list_source()}"
        return mix + f"; {len(self.words):,} lexicon words of {self.min_len}-{self.max_len} characters"

    def restrict(self, pool) -> list[str]:
        """East Asian charsets whose faces do not all draw every symbol: random strings only of characters some
        face draws, and a text no single face draws whole drawn again (counted in `redrawn`). Returns report
        notes from a probe of PROBE texts (its own generator: no sample's draws change)."""
        if not self.cjk or pool.full:
            return []
        self.drawable = pool.can_draw
        self.symbols = "".join(c for c in self.symbols if pool.covered(c))
        self._safe = pool.best_symbols(self.symbols)
        if not self._safe:
            return []
        rng = np.random.default_rng(0)
        texts = [self(rng)[0] for _ in range(PROBE)]
        notes = []
        if self.redrawn:
            notes.append(f"{self.redrawn} of {PROBE} texts drawn as a check were drawn again: no face draws every "
                         f"character of them")
        if refused := pool.refusals(texts):
            notes.append(f"faces passed over for texts with a character they lack (of {PROBE} drawn as a check): "
                         + ", ".join(f"{name} {n}" for name, n in refused.most_common()))
        self.redrawn = 0
        return notes

    def label(self, text: str) -> str:
        """The rendered text less what the charset cannot encode: `tetley.co.uk` is drawn with its dots and
        labelled `tetleycouk` under lower36, so the model learns to read past punctuation, as on real signs."""
        return "".join(c for c in text if self.writable(c))

    def __call__(self, rng: np.random.Generator, max_len: int | None = None) -> tuple[str, str]:
        """(text to draw, its label). `max_len` (a curriculum's cap, below the spec's) limits the label's length:
        lexicon words are drawn uniformly from those short enough, other tokens redrawn until they fit."""
        cap = self.max_len if max_len is None else max(self.min_len, min(max_len, self.max_len))
        source = self.sources[rng.choice(len(self.sources), p=self.shares)]
        for _ in range(8):  # a token the charset or length range rules out is redrawn
            text = self._lexicon(rng, cap) if source == "lexicon" else \
                self._random(rng, cap) if source == "random" else getattr(self, "_" + source)(rng)
            if source != "random":
                text = self._case(text, rng)
            label = self.label(text)
            if self.min_len <= len(label) <= cap and (not self.cjk or self._fits(text, label)):
                return text, label
        text = self._random(rng, cap, self._safe)
        return text, text

    def _fits(self, text: str, label: str) -> bool:
        """East Asian text: every drawn character is labelled, and some face draws the whole text."""
        if label != text:
            return False
        if self.drawable is not None and not self.drawable(text):
            self.redrawn += 1
            return False
        return True

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

    def _lexicon(self, rng, cap: int | None = None) -> str:
        if self.cjk:  # a phrase of words, cut at any character as Chinese lines are
            return self.phrases.phrase(rng, self.min_len, self.max_len if cap is None else cap)
        if cap is None or cap >= self.max_len:
            return self.words[int(rng.integers(len(self.words)))]
        if not hasattr(self, "_by_length"):  # built on the first capped draw only
            self._by_length = sorted(self.words, key=len)
            self._lengths = [len(w) for w in self._by_length]
        n = bisect.bisect_right(self._lengths, cap)
        return self._by_length[int(rng.integers(n))] if n else self._random(rng, cap)

    def _random(self, rng, cap: int | None = None, symbols: str | None = None) -> str:
        symbols = self.symbols if symbols is None else symbols
        n = int(rng.integers(self.min_len, (self.max_len if cap is None else cap) + 1))
        return "".join(symbols[i] for i in rng.integers(len(symbols), size=n))

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
        if self.cjk:
            return self.phrases.mixed(rng, _latin_token)
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


def _latin_token(rng) -> str:
    """A Latin word or code inside Chinese text (WiFi密码, 密码123): a word of the built-in list, a capital
    letter with a number, or a number."""
    kind = int(rng.integers(3))
    if kind == 0:
        words = builtin_words()
        return words[int(rng.integers(len(words)))]
    if kind == 1:
        return chr(ord("A") + int(rng.integers(26))) + str(int(rng.integers(1, 100)))
    return str(int(rng.integers(0, 1000)))
