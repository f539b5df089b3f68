"""Fonts found without any download, the same on every machine: Pillow's built-in scalable face, the text faces
inside matplotlib's wheel, and the Google Fonts families that cvlab declares as `fontpkg-*` dependencies (found
through fontpkg's entry points, so any extra `fontpkg-*` package a user installs joins the pool); plus system
fonts (`fonts: [system]`) and any files or folders the user lists. A face is used only if it draws every symbol
the renderer needs, in both cases when the charset is case-folded (lower36 text is drawn in capitals too)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

from ...errors import CvlabError

BUILTIN = "<pillow-default>"
SYSTEM_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "C:/Windows/Fonts")
# matplotlib's TeX math fonts (cmex, cmsy, STIX size variants, ...) map ASCII to symbols; keep the text faces.
MATPLOTLIB_TEXT_FACES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "STIXGeneral.ttf",
    "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf",
)
SYSTEM_LIMIT = 24  # enough variety; scanning hundreds of system fonts slows start-up for nothing
# TeX's faces name themselves by file (cmr10, cmss10, ...): group them as the family they are
_FAMILY_PREFIXES = (("cm", "Computer Modern"), ("STIX", "STIX"), ("DejaVu", "DejaVu"))


@dataclass(frozen=True)
class Face:
    path: str
    family: str
    # variable-font axes in the font's own order as (name, minimum, maximum, default), e.g. Weight 100-900
    axes: tuple[tuple[str, int, int, int], ...] = ()


def load_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    if path == BUILTIN:
        return ImageFont.load_default(size=size)
    # BASIC layout: word-level shaping (raqm) is several times slower and Latin words do not need it
    return ImageFont.truetype(path, size=size, layout_engine=ImageFont.Layout.BASIC)


def _file_family(path: Path) -> str:
    name = path.stem
    return next((fam for prefix, fam in _FAMILY_PREFIXES if name.startswith(prefix)), name.split("-")[0])


def _fontpkg_faces() -> list[tuple[str, str]]:
    try:
        import fontpkg
    except ImportError:  # a declared dependency; without it the pool is just Pillow's and matplotlib's faces
        return []
    return [(str(f.path), fam.name) for _, fam in sorted(fontpkg.families().items()) for f in fam.files
            if f.path.suffix.lower() in (".ttf", ".otf")]


def _candidates(extra: tuple[str, ...]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = [(BUILTIN, "Aileron")]
    spec = importlib.util.find_spec("matplotlib")
    if spec and spec.origin:
        ttf = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf"
        found += [(str(ttf / n), _file_family(ttf / n)) for n in MATPLOTLIB_TEXT_FACES if (ttf / n).is_file()]
    found += _fontpkg_faces()
    for item in extra:
        if item == "system":
            system = [p for d in SYSTEM_DIRS if Path(d).is_dir() for p in sorted(Path(d).rglob("*.[ot]tf"))]
            found += [(str(p), _file_family(p)) for p in system[:SYSTEM_LIMIT]]
            continue
        p = Path(item).expanduser()
        if p.is_dir():
            found += [(str(f), _file_family(f)) for f in sorted(p.rglob("*")) if f.suffix.lower() in (".ttf", ".otf")]
        elif p.is_file():
            found.append((str(p), _file_family(p)))
        else:
            raise CvlabError(f"synth fonts: {p}: no such font file or folder")
    return list(dict(found).items())


def _face(path: str, family: str, symbols: str, cased: bool) -> Face | None:
    """The face if every symbol has a visible glyph distinct from the 'missing glyph' box (and, for a cased
    charset, lower-case letters that differ from capitals: Bebas Neue draws both as capitals), else None."""
    try:
        font = load_font(path, 24)
    except OSError:
        return None
    missing = bytes(font.getmask("\U0010fffd"))
    masks = {}
    for ch in symbols:
        mask = font.getmask(ch)
        if mask.getbbox() is None or bytes(mask) == missing:
            return None
        masks[ch] = bytes(mask)
    if cased and all(masks.get(c) == masks.get(c.upper()) for c in "aegr" if c in masks):
        return None
    axes: tuple = ()
    if path != BUILTIN:
        try:
            axes = tuple((a["name"].decode("latin-1") if isinstance(a["name"], bytes) else str(a["name"]),
                          int(a["minimum"]), int(a["maximum"]), int(a["default"])) for a in font.get_variation_axes())
        except OSError:  # not a variable font
            axes = ()
    return Face(path, family, axes)


@lru_cache(maxsize=16)
def scan_fonts(symbols: str, extra: tuple[str, ...] = (), cased: bool = False) -> tuple[tuple[Face, ...], tuple[str, ...]]:
    """(every available face that can draw all of `symbols`, in a stable order; the files of those that cannot)."""
    symbols = "".join(sorted(set(symbols) - {" "}))
    faces, skipped = [], []
    for path, fam in _candidates(extra):
        face = _face(path, fam, symbols, cased)
        (faces.append(face) if face is not None else skipped.append(Path(path).name))
    if not faces:
        raise CvlabError(
            f"synth: no font draws all {len(symbols)} symbols of the charset; list a font that does in "
            "data.train[i].fonts (a .ttf file or folder)"
        )
    return tuple(faces), tuple(skipped)


def find_fonts(symbols: str, extra: tuple[str, ...] = (), cased: bool = False) -> tuple[Face, ...]:
    return scan_fonts(symbols, extra, cased)[0]


def family_group(face: Face) -> str:
    """The type family a face belongs to (DejaVu Sans Bold -> DejaVu), to say how varied the renders are."""
    return face.family
