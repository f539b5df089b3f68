"""Charsets: named presets, literal strings, or files. A charset is an ordered string of distinct symbols."""

from __future__ import annotations

import string
from functools import lru_cache
from pathlib import Path

from ..config.data import CharsetChars, CharsetFile
from ..errors import CvlabError


@lru_cache(maxsize=1)
def gb2312_level1() -> str:
    """The 3755 level-1 GB2312 hanzi: rows 16-55 (lead bytes 0xB0-0xD7), 94 cells each, row 55 has 89."""
    chars = []
    for lead in range(0xB0, 0xD8):
        for trail in range(0xA1, 0xFF):
            try:
                chars.append(bytes([lead, trail]).decode("gb2312"))
            except UnicodeDecodeError:
                pass  # the five unassigned cells at the end of row 55
    return "".join(chars)


PRESETS = {
    "digits": string.digits,
    "lower36": string.digits + string.ascii_lowercase,
    "alnum62": string.digits + string.ascii_lowercase + string.ascii_uppercase,
    "printable94": string.digits + string.ascii_letters + string.punctuation,
    "gb2312-l1": None,  # built on demand from Python's codec
}


def resolve_charset(spec: str | CharsetChars | CharsetFile) -> str:
    """Preset name, {chars: literal characters}, or {file: path} -> the ordered symbol string (duplicates
    removed). A string that is not a preset is an error, never a literal charset."""
    if isinstance(spec, CharsetFile):
        path = Path(spec.file).expanduser()
        if not path.is_file():
            raise CvlabError(f"data.charset.file: {path}: file not found")
        try:
            text = path.read_text(encoding="utf-8-sig").replace("\r", "").replace("\n", "")
        except UnicodeDecodeError as e:
            raise CvlabError(f"data.charset.file: {path}: not UTF-8 (byte 0x{e.object[e.start]:02x} at offset "
                             f"{e.start}); save it as UTF-8") from None
    elif isinstance(spec, CharsetChars):
        text = spec.chars
    elif spec in PRESETS:
        text = PRESETS[spec] if PRESETS[spec] is not None else gb2312_level1()
    else:
        raise CvlabError(f"charset {spec!r}: not a preset (valid: {', '.join(PRESETS)}); literal characters are "
                         f"written {{chars: ...}} in a YAML file")
    chars = "".join(dict.fromkeys(text))
    if not chars:
        raise CvlabError("data.charset: empty charset")
    return chars


def charset_name(spec: str | CharsetChars | CharsetFile) -> str:
    """The charset as the config writes it, for messages: `lower36`, `{chars: 'abc'}`, `{file: chars.txt}`."""
    if isinstance(spec, CharsetFile):
        return f"{{file: {spec.file}}}"
    if isinstance(spec, CharsetChars):
        chars = spec.chars if len(spec.chars) <= 20 else spec.chars[:20] + "…"
        return f"{{chars: {chars!r}}}"
    return str(spec)


def case_fold(charset: str):
    """The case rule for training labels, as DTRB's non-sensitive mode: a charset with lower-case letters and
    no upper-case ones (lower36) lower-cases labels, the reverse upper-cases them, anything else keeps case.
    Without it a cased label ("Hello") would train as "ello" under lower36."""
    has_lower = any(c.islower() for c in charset)
    has_upper = any(c.isupper() for c in charset)
    if has_lower and not has_upper:
        return str.lower
    if has_upper and not has_lower:
        return str.upper
    return lambda s: s
