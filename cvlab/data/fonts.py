"""Fonts found without any download: Pillow's built-in scalable font and the text faces inside matplotlib's wheel
(the same on every machine, so synthetic data is too), plus system fonts (`fonts: [system]`) and any files or
folders the user lists. A font is used only if it draws every symbol the renderer needs."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

from ..errors import CvlabError

BUILTIN = "<pillow-default>"
SYSTEM_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "C:/Windows/Fonts")
# matplotlib's TeX math fonts (cmex, cmsy, STIX size variants, ...) map ASCII to symbols; keep the text faces.
MATPLOTLIB_TEXT_FACES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "STIXGeneral.ttf",
    "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf",
)
SYSTEM_LIMIT = 24  # enough variety; scanning hundreds of system fonts slows start-up for nothing


def load_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    if path == BUILTIN:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(path, size=size)


def _candidates(extra: tuple[str, ...]) -> list[str]:
    found: list[str] = [BUILTIN]
    spec = importlib.util.find_spec("matplotlib")
    if spec and spec.origin:
        ttf = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf"
        found += [str(ttf / n) for n in MATPLOTLIB_TEXT_FACES if (ttf / n).is_file()]
    for item in extra:
        if item == "system":
            system = [str(p) for d in SYSTEM_DIRS if Path(d).is_dir() for p in sorted(Path(d).rglob("*.[ot]tf"))]
            found += system[:SYSTEM_LIMIT]
            continue
        p = Path(item).expanduser()
        if p.is_dir():
            found += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in (".ttf", ".otf"))
        elif p.is_file():
            found.append(str(p))
        else:
            raise CvlabError(f"synth fonts: {p}: no such font file or folder")
    return list(dict.fromkeys(found))


def _draws_all(path: str, symbols: str) -> bool:
    """True if every symbol has a visible glyph distinct from the font's 'missing glyph' box."""
    try:
        font = load_font(path, 24)
    except OSError:
        return False
    missing = bytes(font.getmask("\U0010fffd"))
    for ch in symbols:
        mask = font.getmask(ch)
        if mask.getbbox() is None or bytes(mask) == missing:
            return False
    return True


@lru_cache(maxsize=16)
def find_fonts(symbols: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Every available font that can draw all of `symbols`, in a stable order."""
    symbols = "".join(sorted(set(symbols) - {" "}))
    fonts = tuple(p for p in _candidates(extra) if _draws_all(p, symbols))
    if not fonts:
        raise CvlabError(
            f"synth: no font draws all {len(symbols)} symbols of the charset; list a font that does in "
            "data.train[i].fonts (a .ttf file or folder)"
        )
    return fonts


def font_family(path: str) -> str:
    if path == BUILTIN:
        return "Aileron (Pillow built-in)"
    try:
        return " ".join(ImageFont.truetype(path, 12).getname())
    except OSError:
        return Path(path).stem


# TeX's faces name themselves by file (cmr10, cmss10, ...): group them as the family they are
_FAMILY_PREFIXES = (("cm", "Computer Modern"), ("STIX", "STIX"), ("DejaVu", "DejaVu"), ("Aileron", "Aileron"))


def family_group(path: str) -> str:
    """The type family a font belongs to (DejaVu Sans Bold -> DejaVu), to say how varied the renders are."""
    name = font_family(path)
    return next((fam for prefix, fam in _FAMILY_PREFIXES if name.startswith(prefix)), name.split()[0])
