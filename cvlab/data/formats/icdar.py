"""`ic13` and `ic15`: ICDAR 2013 (Challenge 2) and 2015 (Challenge 4) word recognition, Task 3.

GT lines look like `word_261.png, "0,6"`: split on the first `, "`, strip only the outer quotes, undo the RRC
`\\"` and `\\\\` escapes. Files may have CRLF endings and a UTF-8 BOM. The IC13 subsets are rules (1015: labels
made of letters and digits only; 857: also at least 3 characters); IC15-1811 is a fixed list (`subset_file`).
"""

from __future__ import annotations

import re
from pathlib import Path

from ...errors import CvlabError
from .base import ListDataset, first_existing, need_dir, read_lines, under

# (split) -> (image folder candidates, GT file candidates relative to root or the image folder), as unpacked
_NAMES = {
    ("ic13", "test"): (["Challenge2_Test_Task3_Images"], ["Challenge2_Test_Task3_GT.txt"]),
    ("ic13", "train"): (["Challenge2_Training_Task3_Images_GT", "Challenge2_Training_Task3_Images"], ["gt.txt"]),
    ("ic15", "test"): (["ch4_test_word_images_gt", "Challenge4_Test_Task3_Images"], ["Challenge4_Test_Task3_GT.txt"]),
    ("ic15", "train"): (["ch4_training_word_images_gt", "Challenge4_Training_Task3_Images_GT"], ["gt.txt"]),
}

_ESCAPE = re.compile(r"\\(.)")


def parse_gt_line(line: str) -> tuple[str, str] | str:
    """`word_1.png, "Tiredness"` -> (name, label), or a string saying what is wrong."""
    name, sep, rest = line.partition(', "')
    if not sep:
        name, sep, rest = line.partition(',"')  # a few redistributed copies drop the space
    if not sep:
        return 'expected `word_N.png, "label"`'
    rest = rest.rstrip()
    if not rest.endswith('"'):
        return "label has no closing quote"
    return name.strip(), _ESCAPE.sub(r"\1", rest[:-1])


def _alnum(s: str) -> bool:
    return bool(s) and all(c.isascii() and c.isalnum() for c in s)


class IcdarDataset(ListDataset):
    family = "ic13"

    def _layout(self) -> str:
        imgs, gts = _NAMES[(self.family, self.spec.split)]
        return f"ROOT/{imgs[0]}/word_N.png and ROOT/{gts[0]} (or `images:` / `labels:`)"

    def index(self) -> None:
        spec = self.spec
        root = need_dir(spec.root_path, self._layout())
        img_names, gt_names = _NAMES[(self.family, spec.split)]
        images = under(root, spec.images, ".") if spec.images else \
            first_existing(*(root / n for n in img_names)) or root
        if spec.labels:
            gt = under(root, spec.labels, ".")
        else:
            # beside the images, in root, or in a folder named after its zip (Challenge4_Test_Task3_GT.zip)
            gt = first_existing(*(d / n for n in gt_names for d in (root, images, root / Path(n).stem)))
        if gt is None or not gt.is_file():
            raise CvlabError(f"{gt or root / gt_names[0]}: GT file not found; expected {self._layout()}")
        keep = self._subset_list(root)
        for n, line in read_lines(gt):
            parsed = parse_gt_line(line)
            if isinstance(parsed, str):
                self.malformed(gt, n, parsed)
                continue
            name, label = parsed
            if keep is not None and name not in keep:
                self.report.drop(f"not in subset_file {Path(spec.subset_file).name}", name)
                continue
            if not self._in_subset(label):
                self.report.drop(f"excluded by the subset {spec.subset} rule", f"{name} {label!r}")
                continue
            if not label:
                self.report.drop("empty label", f"{gt.name}:{n}")
                continue
            if self.keep_if_exists(images / name, label, f"{gt.name}:{n}"):
                self.add(images / name, label)

    def _subset_list(self, root: Path) -> set[str] | None:
        if not self.spec.subset_file:
            return None
        path = under(root, self.spec.subset_file, ".")
        if not path.is_file():
            raise CvlabError(f"subset_file: {path}: file not found (one image name, e.g. word_1.png, a line)")
        # accept bare names or GT-style lines, so a GT file of the subset works as the list too
        return {line.partition(",")[0].strip().split("/")[-1] for _, line in read_lines(path)}

    def _in_subset(self, label: str) -> bool:
        s = self.spec.subset
        if s in ("1015", "857") and not _alnum(label):
            return False
        return not (s == "857" and len(label) < 3)


class Ic13Dataset(IcdarDataset):
    family = "ic13"


class Ic15Dataset(IcdarDataset):
    family = "ic15"
