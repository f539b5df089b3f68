"""Fonts found without any download, the same on every machine: Pillow's built-in scalable face, the text faces
inside matplotlib's wheel, and the Google Fonts families that cvlab declares as `fontpkg-*` dependencies (found
through fontpkg's entry points, so any extra `fontpkg-*` package a user installs joins the pool); plus system
fonts (`fonts: [system]`) and any files or folders the user lists. A face is used only if it draws every symbol
the renderer needs, in both cases when the charset is case-folded (lower36 text is drawn in capitals too).

East Asian charsets (gb2312-l1: 3,755 hanzi) are drawn by other rules: the Chinese faces the `cjk` extra installs
(and any `.ttf/.otf/.ttc/.otc` the user lists), each knowing the characters its cmap maps (read with fontTools
once, then cached on disk); a face joins if it covers at least half of the charset, and each text is drawn only
by a face that covers all of it (FontPool)."""

from __future__ import annotations

import bisect
import hashlib
import importlib.util
import json
import os
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import ImageFont

from ...errors import CvlabError
from .cjk import is_east_asian

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
    index: int = 0  # the face's place in a collection (.ttc/.otc: several faces in one file)
    name: str = ""  # the face's full name, where it was read (East Asian faces)

    @property
    def label(self) -> str:
        return self.name or Path(self.path).name


def load_font(path: str, size: int, index: int = 0) -> ImageFont.FreeTypeFont:
    if path == BUILTIN:
        return ImageFont.load_default(size=size)
    # BASIC layout: word-level shaping (raqm) is several times slower, and neither Latin words nor horizontal
    # Chinese lines (one glyph per character, no joining) need it
    return ImageFont.truetype(path, size=size, index=index, layout_engine=ImageFont.Layout.BASIC)


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
    return Face(path, family, _axes(font) if path != BUILTIN else ())


def _axes(font: ImageFont.FreeTypeFont) -> tuple:
    try:
        return tuple((a["name"].decode("latin-1") if isinstance(a["name"], bytes) else str(a["name"]),
                      int(a["minimum"]), int(a["maximum"]), int(a["default"])) for a in font.get_variation_axes())
    except OSError:  # not a variable font
        return ()


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


# ---------------------------------------------------------------------------------------------------------------
# East Asian charsets

# The Chinese faces of the `cjk` extra: (module, file inside it, faces taken by full name (None: every face), family)
# Simplified Chinese faces only: a collection's JP/KR/TC/HK faces map the same code points to other regional forms.
CJK_PACKAGES = (
    ("manimgx_fonts_cjk", "NotoSansCJK-VF.otf.ttc", ("Noto Sans CJK SC",), "Noto Sans CJK"),  # variable: 100-900
    ("noto_cjk_sans_otc", "NotoSansCJK-Regular.ttc", ("Noto Sans CJK SC", "Noto Sans Mono CJK SC"), "Noto Sans CJK"),
    ("pylopdf_fonts_zh_cn", "NotoSerifSC-Regular.otf", None, "Noto Serif SC"),  # Song (Ming) style
    ("paperang_p2_fonts_cjk", "fonts/wqy-microhei.ttc", ("WenQuanYi Micro Hei",), "WenQuanYi Micro Hei"),
)
COLLECTION_EXT = (".ttc", ".otc")
MIN_SHARE = 0.5  # a face joins an East Asian pool if it covers at least this share of the charset
CACHE_VERSION = 1


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cvlab" / "fonts"


def _ranges(codes) -> list[list[int]]:
    out: list[list[int]] = []
    for c in sorted(codes):
        if out and c == out[-1][1] + 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def _read_faces(path: Path) -> list[dict]:
    from fontTools.ttLib import TTCollection, TTFont

    fonts = TTCollection(path, lazy=True).fonts if path.suffix.lower() in COLLECTION_EXT else [TTFont(path, lazy=True)]
    out = []
    for i, f in enumerate(fonts):
        cmap = f.getBestCmap() or {}
        out.append({"index": i, "name": f["name"].getDebugName(4) or path.stem, "ranges": _ranges(cmap)})
    return out


def font_faces(path: str) -> list[dict]:
    """Every face of a font file as {index, name, ranges: [[first, last] code point, ...]} from its cmap. Read
    with fontTools once (a 32 MB collection takes a second), then from a cache file keyed by the file's path,
    modification time and size, written atomically, so start-up stays fast."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise CvlabError(f"synth fonts: {p}: cannot read ({e.strerror or e})") from None
    key = hashlib.sha256(f"{CACHE_VERSION}|{p.resolve()}|{st.st_mtime_ns}|{st.st_size}".encode()).hexdigest()[:24]
    cached = cache_dir() / f"{key}.json"
    try:
        return json.loads(cached.read_text(encoding="utf-8"))["faces"]
    except (OSError, ValueError, KeyError):
        pass
    try:
        faces = _read_faces(p)
    except Exception as e:  # fontTools raises many kinds for a file that is not a font
        raise CvlabError(f"synth fonts: {p}: not a font file fontTools can read ({type(e).__name__}: {e})") from None
    from ...atomic import write_json

    try:
        write_json({"path": str(p), "faces": faces}, cached)
    except CvlabError:  # a read-only home: the cache is only a speed-up
        pass
    return faces


def _cjk_candidates(extra: tuple[str, ...]) -> list[tuple[str, str, tuple[str, ...] | None]]:
    """(file, family, face names to take or None for all) of the `cjk` extra's faces and the user's fonts."""
    found = []
    for module, rel, names, family in CJK_PACKAGES:
        spec = importlib.util.find_spec(module)
        for root in (spec.submodule_search_locations or []) if spec else []:
            if (Path(root) / rel).is_file():
                found.append((str(Path(root) / rel), family, names))
    exts = (".ttf", ".otf", *COLLECTION_EXT)
    for item in extra:
        if item == "system":
            system = [p for d in SYSTEM_DIRS if Path(d).is_dir() for p in sorted(Path(d).rglob("*"))
                      if p.suffix.lower() in exts]
            found += [(str(p), _file_family(p), None) for p in system]
            continue
        p = Path(item).expanduser()
        if p.is_dir():
            found += [(str(f), _file_family(f), None) for f in sorted(p.rglob("*")) if f.suffix.lower() in exts]
        elif p.is_file():
            found.append((str(p), _file_family(p), None))
        else:
            raise CvlabError(f"synth fonts: {p}: no such font file or folder")
    return list({f[0]: f for f in found}.values())


class FontPool:
    """The faces a synthetic set draws from, grouped by family, and which texts each can draw. `covers` is None
    when every face draws every symbol (Latin charsets, and East Asian ones whose faces all cover the charset):
    any face serves any text. Otherwise `covers[face]` is the set of charset characters the face draws, and a
    text goes only to faces that cover all of it; every face passed over is counted in `refused`."""

    def __init__(self, faces: tuple[Face, ...], covers: dict[Face, frozenset] | None = None):
        self.faces = faces
        self.families = sorted({family_group(f) for f in faces})
        self.by_family = {fam: [f for f in faces if f.family == fam] for fam in self.families}
        self.covers = covers
        self.refused: Counter = Counter()  # face label -> texts it was passed over for (a glyph missing)
        self._union = frozenset().union(*covers.values()) if covers else frozenset()

    @property
    def full(self) -> bool:
        return self.covers is None

    def covered(self, c: str) -> bool:
        """Whether some face draws the character."""
        return self.covers is None or c in self._union

    def can_draw(self, text: str) -> bool:
        if self.covers is None:
            return True
        chars = set(text)
        return any(chars <= cov for cov in self.covers.values())

    def best_symbols(self, symbols: str) -> str:
        """The symbols the widest-covering face draws: any string of them can be drawn."""
        if self.covers is None:
            return symbols
        best = max(self.faces, key=lambda f: len(self.covers[f]))
        return "".join(c for c in symbols if c in self.covers[best])

    def shared(self, symbols: str) -> str:
        """The symbols every face draws (cut-off neighbour glyphs are drawn in whatever face the text got)."""
        if self.covers is None:
            return symbols
        out = "".join(c for c in symbols if all(c in cov for cov in self.covers.values()))
        if not out:
            raise CvlabError("synth: the fonts share no character of the charset; list fonts that each cover most "
                             "of it in data.train[i].fonts")
        return out

    def refusals(self, texts) -> Counter:
        """How many of `texts` each face could not draw (without counting them in `refused`)."""
        out: Counter = Counter()
        for text in texts:
            chars = set(text)
            for f in self.faces:
                if self.covers is not None and not chars <= self.covers[f]:
                    out[f.label] += 1
        return out

    def pick(self, rng: np.random.Generator, text: str | None = None) -> Face:
        """A family first (so no family dominates), then one of its faces; among the faces that draw every
        character of `text` where faces differ in what they cover."""
        if self.covers is None or text is None:
            faces = self.by_family[self.families[rng.integers(len(self.families))]]
            return faces[rng.integers(len(faces))]
        chars = set(text)
        ok = []
        for f in self.faces:
            if chars <= self.covers[f]:
                ok.append(f)
            else:
                self.refused[f.label] += 1
        if not ok:  # TextSource draws only texts some face covers; reaching here is a bug, not bad input
            raise RuntimeError(f"synth: no face draws every character of {text!r}")
        fams = [fam for fam in self.families if any(f.family == fam for f in ok)]
        fam = fams[rng.integers(len(fams))]
        faces = [f for f in ok if f.family == fam]
        return faces[rng.integers(len(faces))]


@lru_cache(maxsize=16)
def scan_east_asian(symbols: str, extra: tuple[str, ...] = ()) -> tuple[tuple[Face, ...], dict | None, tuple[str, ...]]:
    """(faces, what each covers or None when all cover every symbol, report notes) for an East Asian charset:
    every face of the `cjk` extra and the user's fonts that covers at least MIN_SHARE of `symbols`."""
    symbols = "".join(sorted(set(symbols) - {" "}))
    faces, covers, skipped = [], {}, []
    for path, family, names in _cjk_candidates(extra):
        for info in font_faces(path):
            if names is not None and info["name"] not in names:
                continue
            ranges = info["ranges"]
            starts = [r[0] for r in ranges]

            def has(c: str, ranges=ranges, starts=starts) -> bool:
                i = bisect.bisect_right(starts, ord(c)) - 1
                return i >= 0 and ord(c) <= ranges[i][1]

            cover = frozenset(c for c in symbols if has(c))
            label = info["name"] if names is not None else f"{Path(path).name}#{info['index']}"
            if len(cover) < MIN_SHARE * len(symbols):
                skipped.append(f"{label} ({len(cover)} of {len(symbols)})")
                continue
            try:
                axes = _axes(load_font(path, 24, info["index"]))
            except OSError:  # FreeType cannot open what fontTools read: leave the face out, and say so
                skipped.append(f"{label} (unreadable)")
                continue
            face = Face(path, family, axes, info["index"], info["name"])
            faces.append(face)
            covers[face] = cover
    if not faces:
        raise CvlabError(
            f"synth: no font covers half of the charset's {len(symbols)} symbols (East Asian text): install the "
            "Chinese faces with pip install 'cvlab[cjk]', or list a font that has them in data.train[i].fonts "
            "(a .ttf/.otf/.ttc file or folder)")
    notes = []
    partial = [(f, len(covers[f])) for f in faces if len(covers[f]) < len(symbols)]
    for f, n in partial:
        notes.append(f"{f.label} draws {n:,} of the {len(symbols):,} symbols: it gets only texts it covers")
    missing = [c for c in symbols if not any(c in cov for cov in covers.values())]
    if missing:
        notes.append(f"{len(missing)} symbols no font draws are never rendered (e.g. {' '.join(missing[:10])}); "
                     "list a font that has them in data.train[i].fonts")
    if skipped:
        notes.append(f"{len(skipped)} fonts skipped: they cover under {MIN_SHARE:.0%} of the charset "
                     f"(e.g. {', '.join(skipped[:3])})")
    return tuple(faces), (covers if partial else None), tuple(notes)


def font_pool(symbols: str, extra: tuple[str, ...] = (), cased: bool = False) -> tuple[FontPool, tuple[str, ...]]:
    """(the pool, report notes about faces and characters it cannot serve). Latin charsets: the faces that draw
    every symbol, exactly as `scan_fonts`; East Asian ones: `scan_east_asian`."""
    if any(is_east_asian(c) for c in symbols):
        faces, covers, notes = scan_east_asian(symbols, extra)
        return FontPool(faces, covers), notes  # a pool of its own: its counts are this dataset's
    faces, skipped = scan_fonts(symbols, extra, cased)
    notes = (f"{len(skipped)} fonts skipped: they cannot draw every symbol needed (e.g. {', '.join(skipped[:3])})",) \
        if skipped else ()
    return FontPool(faces), notes


def caption_font(text: str, size: int) -> ImageFont.FreeTypeFont | None:
    """A face of the `cjk` extra for captions with East Asian characters (Pillow's own face has none); None
    for other text, or where none is installed."""
    if not any(is_east_asian(c) for c in text):
        return None
    for path, _, names in _cjk_candidates(()):
        for info in font_faces(path):
            if names is None or info["name"] in names:
                return load_font(path, size, info["index"])
    return None
