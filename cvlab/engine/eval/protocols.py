"""Evaluation protocols: what happens to a label and a prediction before they are compared (REFERENCE §2).

A protocol is three plain functions and a rule. `label(text)` gives the label to score, or `None` and the
reason it is left out (counted, never hidden); `pred(text)` gives the prediction to score (never left out);
`empty_ned` is the 1 − NED of a pair where either side is empty.

- cvlab's own (`lower36`, `alnum62`, `printable94`): Latin accents folded to their base letter ("Café" ->
  "cafe"), then the protocol's characters kept. Other scripts are never folded away (a hanzi stays a hanzi;
  `raw` keeps every character). A label left empty is still scored (only an empty prediction matches it) and
  counted as `empty_labels`.
- `dtrb`: clovaai/deep-text-recognition-benchmark test.py with its defaults. A label longer than 25 or with a
  character outside 0-9a-z after `lower()` is filtered out (an empty label is kept); the prediction is
  lower-cased and stripped to 0-9a-z; 1 − NED is 0 when either string is empty.
- `raw`: label and prediction compared exactly as they are, any script: the protocol for a charset that is
  not Latin, when labels and model share one form of every character.
- `chinese`: NFKC, so full-width digits, letters and punctuation match their half-width forms (`２０２３` = `2023`,
  `ＡＢ` = `AB`, `，` = `,`) and compatibility ideographs their unified ones; whitespace (the ideographic space
  included) dropped, since Chinese lines are written without it; everything else raw (no case folding, no
  charset filter). HWDB's labels mix both widths; synthetic lines do not. CER is the headline for Chinese:
  word accuracy is line accuracy, 0 for almost every line early in training.
- `parseq`: baudm/parseq's test pipeline. Whitespace removed, NFKD then ASCII only, labels longer than 25
  (before the charset is applied) filtered, the 36-character charset adapter (lower-only -> `lower()`,
  unsupported characters removed), labels left empty filtered; predictions pass through the same adapter.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from ...errors import CvlabError

LOWER36 = string.digits + string.ascii_lowercase
_PRINTABLE94 = set(string.digits + string.ascii_letters + string.punctuation)
MAX_LABEL = 25  # DTRB's batch_max_length and PARSeq's max_label_length, both defaults


def fold_latin(text: str) -> str:
    """Accented Latin letters (and compatibility forms: ligatures, full-width) to their ASCII base; any character
    whose decomposition is not ASCII (hanzi, Hangul, Cyrillic, ß) is kept as it is."""
    out = []
    for c in text:
        if c.isascii():
            out.append(c)
            continue
        base = "".join(x for x in unicodedata.normalize("NFKD", c) if not unicodedata.combining(x))
        out.append(base if base and base.isascii() else c)
    return "".join(out)


class CharsetAdapter:
    """PARSeq's strhub.data.utils.CharsetAdapter: case adapted to a one-case charset, the rest removed."""

    def __init__(self, charset: str):
        self.lowercase_only = charset == charset.lower()
        self.uppercase_only = charset == charset.upper()
        self.unsupported = re.compile(f"[^{re.escape(charset)}]")

    def __call__(self, text: str) -> str:
        if self.lowercase_only:
            text = text.lower()
        elif self.uppercase_only:
            text = text.upper()
        return self.unsupported.sub("", text)


@dataclass(frozen=True)
class Protocol:
    name: str
    summary: str  # one line, for `cvlab eval --help` and the README
    label: Callable[[str], tuple[str | None, str | None]]  # -> (label to score, None) or (None, filter reason)
    pred: Callable[[str], str]
    empty_ned: Callable[[str, str], float]  # 1 − NED when either string is empty
    charset: str | None = None  # the characters a scored string can hold (None: any)


def _keep(fn: Callable[[str], str]):
    return lambda s: (fn(s), None)


def _own_ned(p: str, g: str) -> float:
    return 1.0 if p == g else 0.0  # two empty strings agree; one empty string shares nothing with the other


_NOT36 = re.compile(f"[^{LOWER36}]")


def _lower36(s: str) -> str:
    return _NOT36.sub("", fold_latin(s).lower())


def _alnum62(s: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]", "", fold_latin(s))


def _printable94(s: str) -> str:
    return "".join(c for c in fold_latin(s) if c in _PRINTABLE94)


def _chinese(s: str) -> str:
    return "".join(unicodedata.normalize("NFKC", s).split())


def _dtrb_label(s: str) -> tuple[str | None, str | None]:
    # the order of DTRB's dataset.py: length first, on the label as stored, then the charset after lower()
    if len(s) > MAX_LABEL:
        return None, f"label longer than {MAX_LABEL} characters (DTRB batch_max_length)"
    if _NOT36.search(s.lower()):
        return None, "label has a character outside 0-9a-z after lower-casing (DTRB data filtering)"
    return s.lower(), None


_PARSEQ_ADAPTER = CharsetAdapter(LOWER36)


def _parseq_label(s: str) -> tuple[str | None, str | None]:
    s = "".join(s.split())
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
    if len(s) > MAX_LABEL:  # before the charset is applied: the original label may be too long
        return None, f"label longer than {MAX_LABEL} characters after whitespace removal and NFKD→ASCII (PARSeq)"
    s = _PARSEQ_ADAPTER(s)
    if not s:
        return None, "label empty after PARSeq normalisation (whitespace, NFKD→ASCII, 36-character charset)"
    return s, None


PROTOCOLS: dict[str, Protocol] = {
    "lower36": Protocol("lower36", "accents folded, lower-cased, 0-9a-z kept; empty labels scored and counted",
                        _keep(_lower36), _lower36, _own_ned, LOWER36),
    "alnum62": Protocol("alnum62", "accents folded, case kept, 0-9a-zA-Z kept; empty labels scored and counted",
                        _keep(_alnum62), _alnum62, _own_ned, string.digits + string.ascii_letters),
    "printable94": Protocol("printable94", "accents folded, ASCII letters, digits and punctuation kept "
                            "(spaces removed); empty labels scored and counted", _keep(_printable94), _printable94,
                            _own_ned, "".join(sorted(_PRINTABLE94))),
    "raw": Protocol("raw", "strings compared exactly as they are (any script)", _keep(lambda s: s), lambda s: s,
                    _own_ned),
    "chinese": Protocol("chinese", "NFKC (full-width digits, letters, punctuation = half-width), whitespace "
                        "removed, otherwise exact; CER is the headline", _keep(_chinese), _chinese, _own_ned),
    "dtrb": Protocol("dtrb", "DTRB test.py defaults: labels longer than 25 or outside 0-9a-z after lower() "
                     "filtered (counted); lower-case 0-9a-z; 1−NED 0 when either is empty",
                     _dtrb_label, lambda s: _NOT36.sub("", s.lower()), lambda p, g: 0.0, LOWER36),
    "parseq": Protocol("parseq", "PARSeq test: whitespace removed, NFKD→ASCII, labels longer than 25 filtered, "
                       "36-char charset adapter, labels left empty filtered (counted)",
                       _parseq_label, _PARSEQ_ADAPTER, lambda p, g: 0.0, LOWER36),  # labels are never empty
}


def get_protocol(name: str, key: str = "eval.protocol") -> Protocol:
    if name not in PROTOCOLS:
        raise CvlabError(f"{key}: unknown protocol {name!r} (valid: {', '.join(PROTOCOLS)})")
    return PROTOCOLS[name]


def check_charset(protocol: str, charset: str, key: str = "eval.protocol") -> None:
    """A protocol that scores only ASCII characters cannot score a model whose charset has none of them
    (gb2312-l1): every label would be filtered or emptied. Refuse instead of reporting an empty table."""
    p = get_protocol(protocol, key)
    if p.name not in ("dtrb", "parseq"):
        return
    usable = {c for c in charset for f in p.pred(fold_latin(c)) if f}
    if not usable:
        raise CvlabError(
            f"{key}: {p.name} scores only ASCII letters and digits (0-9a-z), and this model's charset "
            f"({len(charset)} symbols, e.g. {charset[:5]!r}) has none: every label would be dropped. Use "
            f"protocol raw (or lower36/alnum62/printable94 for Latin text)")
