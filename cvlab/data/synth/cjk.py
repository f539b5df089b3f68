"""Chinese text for the renderer: phrases of words from jieba's dictionary (349,046 words with their frequencies
in a large Chinese corpus; the `cjk` extra installs it as `jieba-py`), numbers, and Chinese words with a number or
a Latin token inside (`第3章`, `2023年`, `A座`, `WiFi密码`). Everything is a function of the generator handed in,
so sample i stays sample i.

Lines are cut at any character, as Chinese text breaks between any two characters: a phrase of n characters is
words drawn one after another until n characters are written, the last one cut at the line's end."""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

LEXICON_SIZE = 100_000  # the most frequent writable words; rarer ones are mostly names and technical terms
# a word's weight is its corpus frequency to this power: 1 is running text (的, 了, 是 in every line, rare
# characters almost never), 0 uniform over the word list (rare characters as often as common ones)
FREQ_POWER = 0.5
# code points of the East Asian scripts: CJK radicals, symbols and punctuation, kana, bopomofo, Hangul, the CJK
# unified ideographs with extension A, Yi, compatibility ideographs and forms, full-width forms; supplementary
# ideographs (extension B and later) from U+20000
_RANGES = ((0x2E80, 0x9FFF), (0xA000, 0xA4CF), (0xAC00, 0xD7AF), (0xF900, 0xFAFF), (0xFE30, 0xFE4F),
           (0xFF00, 0xFFEF), (0x20000, 0x3FFFF))
_UNITS = ("年", "月", "日", "号", "个", "元", "米", "公里", "公斤", "点", "分", "岁", "次", "楼", "层", "路", "万", "亿")
_PREFIXES = ("第", "共", "约", "近", "每", "前", "后")


_EAST_ASIAN = "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _RANGES)
_ALL_EAST_ASIAN = re.compile(f"[{_EAST_ASIAN}]+")


def is_east_asian(c: str) -> bool:
    o = ord(c)
    return any(lo <= o <= hi for lo, hi in _RANGES)


def east_asian(charset: str) -> bool:
    """Whether a charset is for East Asian text (any of its symbols is): its words are Chinese phrases and a font
    is chosen per text from the faces that cover it, not required to draw every symbol of the charset."""
    return any(is_east_asian(c) for c in charset)


def _dictionary() -> Path | None:
    """jieba's dict.txt, found without importing jieba (the `jieba-py` wheel keeps it in `_data/`, jieba's own
    sdist beside its `__init__.py`)."""
    spec = importlib.util.find_spec("jieba")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for rel in ("_data/dict.txt", "dict.txt"):
            if (p := Path(root) / rel).is_file():
                return p
    return None


@lru_cache(maxsize=1)
def word_list() -> tuple[tuple[str, ...], tuple[int, ...]]:
    """jieba's words written entirely in East Asian characters, most frequent first, and their frequencies;
    empty without the `cjk` extra."""
    path = _dictionary()
    if path is None:
        return (), ()
    rows = []
    whole = _ALL_EAST_ASIAN.fullmatch
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2 and parts[1].isdigit() and whole(parts[0]):
            rows.append((parts[0], int(parts[1])))
    rows.sort(key=lambda r: (-r[1], r[0]))
    return tuple(w for w, _ in rows), tuple(f for _, f in rows)


def word_list_source() -> str:
    p = _dictionary()
    return f"jieba's dictionary ({p.parent.parent.name if p.parent.name == '_data' else p.parent.name}/dict.txt)" \
        if p else "no Chinese word list (install the cjk extra: pip install 'cvlab[cjk]')"


_CACHE: dict = {}


class Phrases:
    """Chinese phrases over a charset: words of jieba's list whose every character the charset writes, drawn
    with probability proportional to frequency ** FREQ_POWER and joined until the line is long enough."""

    def __init__(self, writable):
        words, freqs = word_list()
        keep = [(w, f) for w, f in zip(words, freqs, strict=True) if writable(w)][:LEXICON_SIZE]
        self.words = [w for w, _ in keep]
        weights = np.array([f for _, f in keep], dtype=np.float64) ** FREQ_POWER
        self.cdf = np.cumsum(weights) / weights.sum() if keep else np.zeros(0)

    @classmethod
    def cached(cls, key, writable) -> Phrases:
        """One Phrases per charset (and case rule) in a process: filtering 349k words takes a moment, and a train
        and a val set share a charset."""
        if key not in _CACHE:
            if len(_CACHE) >= 4:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = cls(writable)
        return _CACHE[key]

    def __bool__(self) -> bool:
        return bool(self.words)

    def word(self, rng: np.random.Generator) -> str:
        # inverse-CDF sampling: one uniform draw, O(log n), where rng.choice(p=...) would be O(n) per word
        return self.words[min(int(np.searchsorted(self.cdf, rng.random(), side="right")), len(self.words) - 1)]

    def phrase(self, rng: np.random.Generator, lo: int, hi: int) -> str:
        n = int(rng.integers(lo, hi + 1))
        text = ""
        while len(text) < n:
            text += self.word(rng)
        return text[:n]

    def mixed(self, rng: np.random.Generator, latin_token) -> str:
        """A short Chinese word with a number or a Latin token: `第3章`, `2023年`, `15公斤`, `A座`, `WiFi密码`."""
        kind = int(rng.integers(4))
        if kind == 0:  # 第3章, 共12个
            return _PREFIXES[int(rng.integers(len(_PREFIXES)))] + str(int(rng.integers(1, 100))) + self.word(rng)[:1]
        if kind == 1:  # 2023年, 15公斤, 8点
            n = int(rng.integers(1900, 2031)) if rng.random() < 0.3 else int(rng.integers(1, 1000))
            return str(n) + _UNITS[int(rng.integers(len(_UNITS)))]
        if kind == 2:  # A座, B超, 3号楼
            return chr(ord("A") + int(rng.integers(26))) + self.word(rng)
        token = latin_token(rng)  # WiFi密码, 密码123
        return token + self.word(rng) if rng.random() < 0.5 else self.word(rng) + token
