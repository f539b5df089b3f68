"""`casia_gnt` and `casia_dgrl`: the CASIA offline handwriting databases as downloaded (HWDB1.x isolated
characters in `.gnt` files, HWDB2.x text lines in `.dgrl` page files). Binary, little-endian.

`.gnt`: records back to back, each: sample size (uint32, the whole record, these 10 header bytes included), tag
code (2 bytes, the GB2312 code high byte first: the character's GB bytes in order), width (uint16), height
(uint16), width × height bytes of 8-bit grey bitmap, row-major, 255 = background. One file per writer.

`.dgrl`: one page per file. Header: header size (uint32), format code (8 bytes, `DGRL`), illustration (header
size − 36 bytes of text), code type (20 bytes, `GB`, `ASCII`, ...), code length (uint16, 2 in every release),
bits per pixel (uint16, 8); then page height, width and number of lines (uint32 each); then per line: number of
characters (uint32), their codes (n × code length bytes), top, left, height, width (uint32 each) and height ×
width bytes of 8-bit bitmap. Rows are not padded: odd widths are read as they are.

Labels: each code decodes as GB2312, else GBK (a superset: HWDB holds some GBK-only characters). Two quirks of
the real files: an ASCII character is stored as its byte and a NUL (`b"2\\x00"`), read as that character; and
0xFFFF marks a garbage character (a scribble or a character the annotators could not identify), which is not a
character at all. Codes that decode to nothing (0xFFFF, invalid GB bytes, NULs, control characters) are never
trained on and never silently lost:
- `.gnt`: the record is dropped and counted by reason (garbage mark / not GB2312 or GBK), with examples.
- `.dgrl`: the line is kept and the marks are removed from its label (counted: lines adjusted, marks in a note).
  Why: a page's other characters are correctly labelled ink, and HWDB2.x has marks on a noticeable share of its
  lines, so dropping the lines would throw away far more labelled text than the marks spoil; the mark's ink stays
  in the image unlabelled, a small, counted label noise. `garbage_lines: drop` drops those lines instead
  (counted), for an evaluation that must not see a single unlabelled stroke.

What is read: `root` may be one file, or a folder whose `.gnt` / `.dgrl` files (any depth, sorted by path) are
all read. `split: train|test` picks the official split by the folder names of the download: every folder below
`root` whose name contains `trn` / `train` (train) or `tst` / `test` (test), case-insensitive, e.g.
`HWDB1.0trn_gnt/` + `HWDB1.1trn_gnt/` or `HWDB2.0Train/` + `HWDB2.1Train/` + `HWDB2.2Train/` (root itself when
no folder below it matches and its own name does).

Indexing reads record headers only (offsets, sizes, labels: about 24 bytes a sample, in arrays that forked
DataLoader workers share); bitmaps are read when a sample is loaded, through file handles each process opens for
itself.
A truncated or malformed file is one line naming the file and the byte offset (`strict: false`: the samples
before the fault are kept, the rest of the file skipped and counted).
"""

from __future__ import annotations

import io
import os
import struct
import unicodedata
from array import array
from pathlib import Path

import numpy as np
from PIL import Image

from ...errors import CvlabError
from .base import TextDataset

GNT_LAYOUT = ("a .gnt file, or a folder of them (HWDB1.0trn_gnt/, HWDB1.1tst_gnt/, ... as unpacked; `split: "
              "train|test` picks the folders named *trn* / *tst*)")
DGRL_LAYOUT = ("a .dgrl file, or a folder of them (HWDB2.0Train/, HWDB2.1Test/, ... as unpacked; `split: "
               "train|test` picks the folders named *Train* / *Test*)")
SPLIT_WORDS = {"train": ("trn", "train"), "test": ("tst", "test")}
GARBAGE = "garbage mark 0xFFFF"
UNDECODABLE = "code not GB2312/GBK"
MARKS = {GARBAGE: "garbage marks 0xFFFF", UNDECODABLE: "codes not GB2312/GBK"}  # plurals, for the note
MAX_OPEN = 8  # bitmap file handles kept open per process (a split has hundreds of files)

_CODES: dict[bytes, str | None] = {}


def decode_code(code: bytes) -> str | None:
    """One label code -> its character, or None for a garbage mark (all 0xFF) and for a code that decodes to no
    single printable character. GB2312 first, then GBK; an ASCII byte padded with NULs is that character."""
    if code in _CODES:
        return _CODES[code]
    out = None
    body = code.strip(b"\x00")
    if body and body.count(0xFF) != len(body):
        for enc in ("gb2312", "gbk"):
            try:
                s = body.decode(enc)
            except UnicodeDecodeError:
                continue
            if len(s) == 1 and unicodedata.category(s) not in ("Cc", "Cs", "Cn"):
                out = s
            break
    _CODES[code] = out
    return out


def code_reason(code: bytes) -> str:
    return GARBAGE if code and code.count(0xFF) == len(code) else UNDECODABLE


class Malformed(Exception):  # internal: becomes a CvlabError, or a counted drop with strict: false
    def __init__(self, offset: int, why: str):
        super().__init__(why)
        self.offset, self.why = offset, why


class Reader:
    """Sequential little-endian fields of a raw file; a field the file ends inside is `Malformed` at its offset.
    Sizes are checked against the file before anything is read, so a corrupt count never allocates."""

    def __init__(self, f, size: int):
        self.f, self.size, self.pos = f, size, 0

    def need(self, n: int, what: str) -> None:
        if self.pos + n > self.size:
            raise Malformed(self.pos, f"the file ends inside {what} ({self.size - self.pos} of {n} bytes left)")

    def take(self, n: int, what: str) -> bytes:
        self.need(n, what)
        data = self.f.read(n) if n else b""
        if len(data) != n:
            raise Malformed(self.pos, f"short read inside {what} (the file changed while read?)")
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> int:
        """Skip n bytes; returns where they start."""
        self.need(n, what)
        at = self.pos
        self.pos += n
        self.f.seek(self.pos)
        return at

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little")


def _matches(path: Path, words: tuple[str, ...]) -> bool:
    name = path.name.lower()
    return any(w in name for w in words)


def split_folders(root: Path, split: str, layout: str) -> list[Path]:
    """The top-most folders below `root` named for the split (HWDB1.1trn_gnt, HWDB2.0Test, ...)."""
    words = SPLIT_WORDS[split]
    found: list[Path] = []
    for d in sorted(p for p in root.rglob("*") if p.is_dir()):  # a parent sorts before its children
        if _matches(d, words) and not any(d.is_relative_to(f) for f in found):
            found.append(d)
    if not found and _matches(root, words):
        found = [root]
    if not found:
        raise CvlabError(f"{root}: no folder named *{'* or *'.join(words)}* below it for split {split}; "
                         f"expected {layout}")
    return found


class CasiaDataset(TextDataset):
    """What both CASIA families share: the files read, per-sample (file, bitmap offset, width, height) arrays,
    and bitmaps read lazily through per-process file handles."""

    EXT = ""
    LAYOUT = ""
    GROUP_KEYS = ("writer",)  # one writer per .gnt file; a .dgrl page is named WRITER-PAGE.dgrl

    def index(self) -> None:
        self._handles: dict[int, io.RawIOBase] = {}
        self._pid = os.getpid()
        self.files = [str(p) for p in self._find_files()]
        self._a_file, self._a_pos = array("i"), array("q")
        self._a_w, self._a_h = array("i"), array("i")
        for k, path in enumerate(self.files):
            try:
                with open(path, "rb", buffering=0) as f:
                    self._index_file(k, Path(path), Reader(f, os.fstat(f.fileno()).st_size))
            except Malformed as e:
                if self.spec.strict:
                    raise CvlabError(f"{path}: offset {e.offset}: {e.why}") from None
                self.report.drop("malformed file (the rest of it skipped; strict: false)",
                                 f"{Path(path).name} offset {e.offset}: {e.why}")
            except OSError as e:
                raise CvlabError(f"{path}: cannot read ({e.strerror or e})") from None
        self._file = np.asarray(self._a_file, dtype=np.int32)  # shares the array's memory (no copy)
        self._pos = np.asarray(self._a_pos, dtype=np.int64)
        self._w = np.asarray(self._a_w, dtype=np.int32)
        self._h = np.asarray(self._a_h, dtype=np.int32)
        del self._a_file, self._a_pos, self._a_w, self._a_h
        self.report.note(f"{len(self.files)} {self.EXT} file{'s' * (len(self.files) != 1)}, "
                         f"{len(self._file)} samples indexed")

    def _find_files(self) -> list[Path]:
        root, split = self.spec.root_path, self.spec.split
        if root.is_file():
            if split:
                raise CvlabError(f"{root}: split {split} picks folders of a download: give the folder as root")
            return [root]
        if not root.is_dir():
            raise CvlabError(f"{root}: not found; expected {self.LAYOUT}")
        folders = split_folders(root, split, self.LAYOUT) if split else [root]
        found = {d: {p for p in d.rglob("*") if p.suffix.lower() == self.EXT and p.is_file()} for d in folders}
        files = sorted(set().union(*found.values()))
        if not files:
            where = ", ".join(str(d) for d in folders)
            raise CvlabError(f"{where}: no *{self.EXT} file below it; expected {self.LAYOUT}")
        if split:  # the folders that hold files of this family (HWDB1 and HWDB2 may be unpacked side by side)
            names = ", ".join(d.relative_to(root).as_posix() if d != root else d.name for d in folders if found[d])
            self.report.note(f"split {split}: {names}")
        return files

    def _add(self, k: int, pos: int, w: int, h: int) -> None:
        self._a_file.append(k)
        self._a_pos.append(pos)
        self._a_w.append(w)
        self._a_h.append(h)

    def _index_file(self, k: int, path: Path, r: Reader) -> None:
        raise NotImplementedError

    # --- samples
    def __len__(self) -> int:
        return len(self._file)

    def group_key(self, i: int, by: str) -> str:
        path = Path(self.files[self._file[i]])
        return path.stem.split("-")[0] if by == "writer" else str(path)

    def __getstate__(self):  # open handles stay in the process that opened them
        return {**self.__dict__, "_handles": {}, "_pid": None}

    def __del__(self):
        for f in getattr(self, "_handles", {}).values():
            f.close()

    def _read(self, k: int, offset: int, n: int) -> bytes:
        if self._pid != os.getpid():  # a forked worker: its own handles (a shared one shares its file position)
            self._handles, self._pid = {}, os.getpid()
        f = self._handles.pop(k, None)
        if f is None:
            if len(self._handles) >= MAX_OPEN:
                self._handles.pop(next(iter(self._handles))).close()
            f = open(self.files[k], "rb", buffering=0)  # kept open: closed when evicted
        self._handles[k] = f  # most recently used last
        f.seek(offset)
        data = f.read(n)
        if len(data) != n:
            raise OSError(f"{self.files[k]}: ends before offset {offset + n} (changed since it was indexed?)")
        return data

    def bitmap(self, i: int) -> np.ndarray:
        """Sample i's bitmap as stored: (height, width) uint8, 255 = background."""
        h, w = int(self._h[i]), int(self._w[i])
        return np.frombuffer(self._read(int(self._file[i]), int(self._pos[i]), h * w), dtype=np.uint8).reshape(h, w)

    def load(self, i: int) -> Image.Image:
        return Image.fromarray(self.bitmap(i))

    def encoded(self, i: int) -> bytes:
        buf = io.BytesIO()
        self.load(i).save(buf, format="PNG")
        return buf.getvalue()


class CasiaGntDataset(CasiaDataset):
    EXT = ".gnt"
    LAYOUT = GNT_LAYOUT

    def index(self) -> None:
        self._a_label = array("I")  # code points: one character a sample
        super().index()
        self._label = np.asarray(self._a_label, dtype=np.uint32)
        del self._a_label

    def _index_file(self, k: int, path: Path, r: Reader) -> None:
        f, size, pos = r.f, r.size, 0
        while pos < size:  # read by hand: millions of records, one 10-byte read each
            if size - pos < 10:
                raise Malformed(pos, f"the file ends inside a record header ({size - pos} of 10 bytes left)")
            f.seek(pos)
            head = f.read(10)
            if len(head) != 10:
                raise Malformed(pos, "short read inside a record header (the file changed while read?)")
            n, code, w, h = struct.unpack("<I2sHH", head)
            if n != 10 + w * h:
                raise Malformed(pos, f"record size {n} is not 10 + width {w} × height {h} = {10 + w * h}: not a "
                                     f".gnt record")
            if pos + n > size:
                raise Malformed(pos, f"the file ends inside a record of {n} bytes ({size - pos} left)")
            char = decode_code(code)
            where = f"{path.name} offset {pos}"
            if char is None:
                self.report.drop(f"{code_reason(code)} (not a character; not used)", f"{where}: 0x{code.hex().upper()}")
            elif w == 0 or h == 0:
                self.report.drop("empty bitmap (width or height 0)", f"{where} {char!r}")
            else:
                self._add(k, pos + 10, w, h)
                self._a_label.append(ord(char))
            pos += n

    def label(self, i: int) -> str:
        return chr(self._label[i])

    def source(self, i: int) -> str:
        return f"{self.files[self._file[i]]} offset {int(self._pos[i]) - 10}"


class CasiaDgrlDataset(CasiaDataset):
    EXT = ".dgrl"
    LAYOUT = DGRL_LAYOUT
    GROUP_KEYS = ("writer", "page")

    def index(self) -> None:
        self._labels: list[str] = []
        self._line: list[int] = []  # the line's number on its page (1-based), for `source`
        self._marks = {GARBAGE: 0, UNDECODABLE: 0}
        self._trailing: list[str] = []
        super().index()
        marks = ", ".join(f"{n} {MARKS[why]}" for why, n in self._marks.items() if n)
        if marks:
            what = "their lines dropped" if self.spec.garbage_lines == "drop" else "removed from line labels"
            self.report.note(f"label codes that are no character, {what}: {marks}")
        if self._trailing:
            self.report.note(f"bytes after the last line ignored in {len(self._trailing)} files (e.g. "
                             f"{'; '.join(self._trailing[:3])})")

    def _index_file(self, k: int, path: Path, r: Reader) -> None:
        header = r.u32("the header size")
        if header < 36:
            raise Malformed(0, f"header size {header} is less than the 36 bytes of its fixed fields")
        fmt = r.take(8, "the format code")
        if not fmt.startswith(b"DGRL"):
            raise Malformed(4, f"format code {fmt!r}, expected b'DGRL...': not a .dgrl file")
        r.skip(header - 36, "the illustration text")
        r.take(20, "the code type")  # GB, ASCII, ...: every code is decoded the same way (GB2312/GBK read ASCII)
        at = r.pos
        clen = r.u16("the code length")
        if not 1 <= clen <= 4:
            raise Malformed(at, f"code length {clen}: expected 1-4 bytes a character (2 in HWDB2.x)")
        at = r.pos
        bpp = r.u16("the bits per pixel")
        if bpp != 8:
            raise Malformed(at, f"{bpp} bits per pixel: only 8-bit grey pages are read (as in HWDB2.x)")
        r.take(8, "the page height and width")
        lines = r.u32("the number of lines")
        drop_marked = self.spec.garbage_lines == "drop"
        for j in range(1, lines + 1):
            start = r.pos
            n = r.u32(f"line {j}'s number of characters")
            codes = r.take(n * clen, f"line {j}'s {n} label codes")
            top, left, h, w = (r.u32(f"line {j}'s {what}") for what in ("top", "left", "height", "width"))
            pos = r.skip(h * w, f"line {j}'s {w}×{h} bitmap")
            where = f"{path.name} line {j} (offset {start})"
            chars, bad = [], []
            for c in range(0, len(codes), clen):
                code = codes[c:c + clen]
                char = decode_code(code)
                if char is None:
                    bad.append(code)
                else:
                    chars.append(char)
            label = "".join(chars)
            for code in bad:
                self._marks[code_reason(code)] += 1
            if bad and drop_marked:
                self.report.drop("label holds codes that are no character (garbage_lines: drop)",
                                 f"{where}: {' '.join('0x' + b.hex().upper() for b in bad)}")
                continue
            if not label:
                self.report.drop("empty label" + (" (only codes that are no character)" if bad else ""), where)
                continue
            if w == 0 or h == 0:
                self.report.drop("empty bitmap (width or height 0)", f"{where} {label!r}")
                continue
            if bad:
                reasons = sorted({code_reason(b) for b in bad})
                self.report.adjust(f"{' / '.join(reasons)} removed from the label (line kept)",
                                   f"{where}: {len(bad)} in {label!r}")
            self._add(k, pos, w, h)
            self._labels.append(label)
            self._line.append(j)
        if r.pos != r.size:
            self._trailing.append(f"{path.name}: {r.size - r.pos} bytes at offset {r.pos}")

    def label(self, i: int) -> str:
        return self._labels[i]

    def source(self, i: int) -> str:
        return f"{self.files[self._file[i]]} line {self._line[i]}"
