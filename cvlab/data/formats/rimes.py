"""`rimes`: RIMES ICDAR 2011, lines or words, as unpacked.

Lines: `training_2011.xml` / `eval_2011_annotated.xml` with `<SinglePage FileName="images/train2011-253.png">`
holding `<Line Left Top Right Bottom Value>` boxes cropped from the page images. Some boxes are negative or
inverted (clamped, counted), some values are empty (dropped, counted); entities are decoded (also doubly
escaped ones such as `&amp;quot;`) and runs of spaces collapsed, each counted. Words: GT files of
`relative/path word` rows (UTF-8 with BOM), including the distributed misspelling `grount_truth_test_icdar2011.txt`,
paths relative to the snippet folders (`trainingsnippets_icdar/training_WR/`, `data_test/`, ...).
"""

from __future__ import annotations

import codecs
import html
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from ...errors import CvlabError
from .base import (
    ListDataset,
    clamp_box,
    first_existing,
    image_size,
    need_dir,
    need_file,
    numbers,
    parse_xml,
    read_lines,
    under,
)

_FILES = {
    ("lines", "train"): "training_2011.xml",
    ("lines", "test"): "eval_2011_annotated.xml",
    ("words", "train"): "groundtruth_training_icdar2011.txt",
    ("words", "val"): "ground_truth_validation_icdar2011.txt",
    ("words", "test"): "grount_truth_test_icdar2011.txt",  # sic: the file is named so in the distribution
}
_WORD_IMAGES = {
    "train": "trainingsnippets_icdar/training_WR",
    "val": "validationsnippets_icdar/testdataset_ICDAR",
    "test": "data_test",
}
_XML_ENTITIES = {"amp", "lt", "gt", "quot", "apos"}


def _parse_xml(path: Path) -> ET.Element:
    try:
        return parse_xml(path)
    except CvlabError as e:
        if "undefined entity" not in str(e):
            raise
    # HTML entities (&eacute;) are not XML: decode them before parsing, keep the five XML ones
    head = path.read_bytes()
    declared = re.search(rb'encoding=["\']([\w.\-]+)', head[:200])
    encoding = declared.group(1).decode() if declared else "utf-8"
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise CvlabError(f"{path}:1: the XML declaration names an unknown encoding ({encoding})") from None
    raw = head.decode(encoding, "replace")
    fixed = re.sub(r"&([A-Za-z][A-Za-z0-9]*);",
                   lambda m: m.group(0) if m.group(1) in _XML_ENTITIES else html.unescape(m.group(0)), raw)
    fixed = re.sub(r"^<\?xml[^>]*\?>", "", fixed)  # the encoding declaration no longer applies
    return parse_xml(path, fixed)


class RimesDataset(ListDataset):
    GROUP_KEYS = ("page",)  # lines are boxes in page images (words: one file each)

    def _layout(self) -> str:
        if self.spec.level == "lines":
            return "ROOT/training_2011.xml or eval_2011_annotated.xml and the page images (images_gray/*.png)"
        return ("ROOT/groundtruth_training_icdar2011.txt + trainingsnippets_icdar/training_WR/ (validation: "
                "ground_truth_validation_icdar2011.txt + validationsnippets_icdar/testdataset_ICDAR/; test: "
                "grount_truth_test_icdar2011.txt + data_test/)")

    def index(self) -> None:
        spec = self.spec
        root = need_dir(spec.root_path, self._layout())
        default = _FILES.get((spec.level, spec.split))
        if default is None and not spec.labels:
            raise CvlabError("rimes: ICDAR 2011 lines have no official validation set (split: train or test; "
                             "hold out training pages with `labels:` pointing to your own XML)")
        gt = need_file(under(root, spec.labels, default or "."), self._layout())
        if spec.level == "lines":
            self._lines(root, gt)
        else:
            self._words(root, gt)

    def _page_path(self, root: Path, name: str) -> Path | None:
        base = Path(name).name
        dirs = [under(root, self.spec.images, ".")] if self.spec.images else []
        # training_2011_gray.tar / eval_2011_gray.tar unpack to images_gray/; some copies keep one folder per tar
        return first_existing(*(d / name for d in dirs), *(d / base for d in dirs), root / name,
                              root / "images_gray" / base, root / "images" / base, root / base,
                              root / "training_2011" / name, root / "eval_2011" / name)

    def _lines(self, root: Path, xml: Path) -> None:
        for page in _parse_xml(xml).iter("SinglePage"):
            name = page.get("FileName", "")
            lines = list(page.iter("Line"))
            path = self._page_path(root, name)
            if path is None or not path.is_file():
                self.report.drop("page image missing", f"{xml.name}: {name!r}", len(lines))
                continue
            size = image_size(str(path))
            if size is None:
                self.report.drop("page image unreadable", f"{xml.name}: {path}", len(lines))
                continue
            width, height = size
            for line in lines:
                box = numbers(line.get(k) for k in ("Left", "Top", "Right", "Bottom"))
                if box is None:
                    self.malformed(xml, 0, f"{name}: <Line> without finite numeric Left/Top/Right/Bottom")
                    continue
                box = tuple(int(v) for v in box)
                raw = line.get("Value", "")
                where = f"{Path(name).name} {list(box)} {raw[:30]!r}"
                text = html.unescape(raw)
                if text != raw:
                    self.report.adjust("entities decoded", where)
                collapsed = " ".join(text.split())
                if collapsed != text:
                    self.report.adjust("runs of spaces collapsed / ends trimmed", where)
                if not collapsed:
                    self.report.drop("empty label", where)
                    continue
                left, top, right, bottom = box
                if left > right or top > bottom:
                    self.report.adjust("inverted box (corners swapped)", where)
                crop, _ = clamp_box(box, width, height)
                if crop[2] <= crop[0] or crop[3] <= crop[1]:
                    self.report.drop("box empty after clamping to the page", where)
                    continue
                if crop != (min(left, right), min(top, bottom), max(left, right), max(top, bottom)):
                    self.report.adjust("box clamped to the page", where)
                self.add(path, collapsed, crop)

    def _words(self, root: Path, gt: Path) -> None:
        # GT paths (`lot_1/00001_L/00001_L_0_0.tiff`) are relative to the split's snippet folder as unpacked
        default = root / _WORD_IMAGES[self.spec.split]
        bases = [under(root, self.spec.images, ".")] if self.spec.images else [default, root, gt.parent]
        for n, line in read_lines(gt):
            path, sep, word = line.strip().partition(" ")
            if not sep or not word.strip():
                self.malformed(gt, n, "expected `relative/path word`")
                continue
            full = first_existing(*(b / path for b in bases)) or bases[0] / path
            if self.keep_if_exists(full, word, f"{gt.name}:{n}"):
                self.add(full, word.strip())
