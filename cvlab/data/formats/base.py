"""What every on-disk dataset family shares: a lazy index of samples, image loading that never crashes a run,
annotation reading with `file:line` errors, and the report of everything dropped or adjusted.

A family builds its index in `index()` (labels, paths, boxes: never decoding an image) and implements
`load(i)` (decoded PIL image) and `encoded(i)` (the original encoded bytes, or a PNG of a crop).
"""

from __future__ import annotations

import io
import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple

from PIL import Image
from torch.utils.data import Dataset

from ...config.data import FileSpec, ImageCfg
from ...errors import CvlabError
from ..charset import case_fold
from ..image import to_tensor
from ..report import DataReport

# What a broken image raises inside PIL/lmdb: truncated files, unknown formats, bad chunks, bombs.
LOAD_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


class Broken(NamedTuple):
    """Stands in for the image of a sample that could not be read; `collate` drops and counts it."""

    source: str
    why: str


class Item(NamedTuple):
    path: str  # image file (absolute), or the page an image is cropped from
    label: str
    box: tuple[int, int, int, int] | None = None  # crop (left, top, right, bottom), already clamped
    lexicons: dict[str, list[str]] | None = None  # e.g. {"50": [...], "1k": [...]}


def need_dir(path: Path, layout: str) -> Path:
    if not path.is_dir():
        raise CvlabError(f"{path}: folder not found; expected {layout}")
    return path


def need_file(path: Path, layout: str) -> Path:
    if not path.is_file():
        raise CvlabError(f"{path}: file not found; expected {layout}")
    return path


def first_existing(*candidates: Path) -> Path | None:
    return next((p for p in candidates if p.exists()), None)


def under(root: Path, name: str | None, default: str | Path) -> Path:
    """`name` (absolute, or relative to root) when the user renamed something, else the original name."""
    p = Path(name).expanduser() if name else Path(default)
    return p if p.is_absolute() else root / p


def read_lines(path: Path, encoding: str = "utf-8-sig") -> list[tuple[int, str]]:
    """(line number, text) for each non-blank line: BOM dropped, CRLF/CR endings handled."""
    try:
        text = path.read_bytes().decode(encoding)
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise CvlabError(f"{path}:{line}: not valid {encoding.replace('-sig', '')} text") from None
    return [(n, s) for n, s in enumerate(text.splitlines(), 1) if s.strip()]


def parse_xml(path: Path, text: str | None = None) -> ET.Element:
    """The root element of `path` (or of `text`, read from it), or a CvlabError naming file:line."""
    try:
        return ET.parse(path).getroot() if text is None else ET.fromstring(text)
    except ET.ParseError as e:
        raise CvlabError(f"{path}:{e.position[0]}: not well-formed XML ({e})") from None
    except LookupError as e:  # <?xml encoding="..."?> names an encoding Python does not know
        raise CvlabError(f"{path}:1: the XML declaration names an unknown encoding ({e})") from None


def numbers(values) -> tuple[float, ...] | None:
    """`values` (attribute strings) as finite floats, or None when one is missing, not a number, or not finite
    (`nan`, `inf`, `1e400`): a box that cannot be drawn."""
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(v) for v in out) else None


def clamp_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[tuple[int, int, int, int], bool]:
    """(left, top, right, bottom) ordered and clipped to the image; True when that changed anything."""
    x0, y0, x1, y1 = (round(v) for v in box)
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    out = (max(0, x0), max(0, y0), min(width, x1), min(height, y1))
    return out, out != tuple(round(v) for v in box)


def image_size(path: str) -> tuple[int, int] | None:
    """Width and height from the file header only (PIL does not decode on open); None when the file is no
    image PIL can read (the caller drops and counts the samples on it)."""
    try:
        with Image.open(path) as im:
            return im.size
    except LOAD_ERRORS:
        return None


class TextDataset(Dataset):
    """Base of every on-disk family. Items are (C, H, W) tensor, label; a broken image yields (Broken, label)."""

    def __init__(self, spec: FileSpec, charset: str, image: ImageCfg):
        self.spec, self.image, self.charset = spec, image, charset
        self.report = DataReport(spec.name or spec.type)
        self.unwritable: list[int] = []  # samples whose label has no character in the charset
        self.index()
        self.report.samples = len(self)
        self.count_labels(range(len(self)), [self.report])

    def count_labels(self, indices: range, reports: list[DataReport]) -> None:
        """Characters outside the charset, per character, into each report (training skips them); labels with
        no character in it go to `unwritable` (training drops them, evaluation scores them as they are: see
        `cvlab.data.loaders.writable`)."""
        chars, fold = set(self.charset), case_fold(self.charset)
        for i in indices:
            label = fold(self.label(i))  # what training will encode
            for rep in reports:
                rep.count_charset(label, chars)
            if chars and not any(c in chars for c in label):
                self.unwritable.append(i)

    # --- what a family provides
    def index(self) -> None:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def label(self, i: int) -> str:
        raise NotImplementedError

    def source(self, i: int) -> str:
        """Where sample i comes from, for reports."""
        raise NotImplementedError

    def load(self, i: int) -> Image.Image:
        raise NotImplementedError

    def encoded(self, i: int) -> bytes:
        raise NotImplementedError

    def lexicons(self, i: int) -> dict[str, list[str]] | None:
        return None

    # --- shared behaviour
    def malformed(self, path: Path, line: int, why: str) -> None:
        # XML parsers give no line numbers for elements: line 0 means "somewhere in the file"
        where = f"{path}:{line}" if line else str(path)
        if self.spec.strict:
            raise CvlabError(f"{where}: {why}")
        self.report.drop("malformed annotation", f"{path.name}{f':{line}' if line else ''}: {why}")

    def __getitem__(self, i: int):
        try:
            return to_tensor(self.load(i), self.image), self.label(i)
        except LOAD_ERRORS as e:
            return Broken(self.source(i), f"{e.__class__.__name__}: {e}"), self.label(i)


class ListDataset(TextDataset):
    """A family whose index is a list of `Item`s: image files, or boxes cropped from page images."""

    items: list[Item]
    # what a sample's group is for `data.group_by` (batches of samples sharing it): "image" / "page" = the file
    # a crop is cut from, "form" = the folder it lies in (IAM's forms)
    GROUP_KEYS: tuple[str, ...] = ()

    def group_key(self, i: int, by: str) -> str:
        path = self.items[i].path
        return Path(path).parent.name if by == "form" else path

    def __init__(self, spec, charset, image):
        self.items = []
        self._pages: dict[str, Image.Image] = {}
        super().__init__(spec, charset, image)

    def __getstate__(self):  # decoded pages stay in the process that decoded them
        return {**self.__dict__, "_pages": {}}

    def __len__(self) -> int:
        return len(self.items)

    def label(self, i: int) -> str:
        return self.items[i].label

    def source(self, i: int) -> str:
        it = self.items[i]
        return it.path if it.box is None else f"{it.path} box {list(it.box)}"

    def lexicons(self, i: int):
        return self.items[i].lexicons

    def add(self, path: str | Path, label: str, box=None, lexicons=None) -> None:
        self.items.append(Item(str(path), label, box, lexicons))

    def keep_if_exists(self, path: Path, label: str, where: str) -> bool:
        """Index-time check (a stat, no decoding): a missing image is dropped and counted."""
        if os.path.isfile(path):
            return True
        self.report.drop("image file missing", f"{where}: {path}")
        return False

    def _page(self, path: str) -> Image.Image:
        # Crops of one page usually come in order: keep the last few decoded pages.
        page = self._pages.get(path)
        if page is None:
            with Image.open(path) as im:
                im.load()
                page = im.copy() if im.mode in ("L", "RGB") else im.convert("RGB")
            if len(self._pages) >= 4:
                self._pages.pop(next(iter(self._pages)))
            self._pages[path] = page
        return page

    def load(self, i: int) -> Image.Image:
        it = self.items[i]
        if it.box is None:
            with Image.open(it.path) as im:
                im.load()  # decode now: a truncated file fails here, inside __getitem__'s guard
                return im.copy()
        return self._page(it.path).crop(it.box)

    def encoded(self, i: int) -> bytes:
        it = self.items[i]
        if it.box is None:
            with open(it.path, "rb") as f:
                return f.read()
        buf = io.BytesIO()
        self.load(i).save(buf, format="PNG")
        return buf.getvalue()
