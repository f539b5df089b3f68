"""`iam`: IAM Handwriting as unpacked: `ascii/words.txt` / `ascii/lines.txt`, images under `words/a01/a01-000u/`
and `lines/a01/a01-000u/`.

Data rows: `a01-000u-00-00 ok 154 408 768 27 51 AT A` (words) and
`a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop` (lines). The words.txt header comment documents an extra
"number of components" column that word rows do not have, so the transcription is taken as every field from the
9th on, for both files. Lines join words with `|` (made spaces). `err` marks a failed word segmentation: always
kept for lines, kept for words unless `keep_err: false`. Splits are lists of line or form ids, one a row.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import CvlabError
from .base import ListDataset, first_existing, need_dir, need_file, read_lines, under

LAYOUT = "ROOT/ascii/{words,lines}.txt and ROOT/{words,lines}/a01/a01-000u/*.png, as in the IAM download"
KNOWN_BROKEN = {"a01-117-05-02", "r06-022-03-05"}  # empty/corrupt word images in every IAM copy


def ids_of(sample_id: str) -> tuple[str, ...]:
    """`a01-000u-00-00` -> itself, its line `a01-000u-00` and its form `a01-000u`: a split row may be any."""
    parts = sample_id.split("-")
    return tuple("-".join(parts[:k]) for k in range(len(parts), 1, -1))


class IamDataset(ListDataset):
    GROUP_KEYS = ("form",)  # images lie in words/a01/a01-000u/: the form (one writer each)

    def index(self) -> None:
        spec = self.spec
        root = need_dir(spec.root_path, LAYOUT)
        level = spec.level
        gt = need_file(under(root, spec.labels, f"ascii/{level}.txt"), LAYOUT)
        images = under(root, spec.images, level)
        keep = self._split_ids(root)
        matched: set[str] = set()
        numeric = range(2, 7) if level == "words" else range(2, 8)
        for n, line in read_lines(gt):
            if line.startswith("#"):
                continue
            f = line.split(" ")
            if len(f) < 9:
                self.malformed(gt, n, f"expected at least 9 space-separated fields, found {len(f)}")
                continue
            sid, status = f[0], f[1]
            if status not in ("ok", "err") or not all(f[k].lstrip("-").isdigit() for k in numeric):
                self.malformed(gt, n, f"not an IAM {level}.txt row (id ok|err numbers... transcription)")
                continue
            text = " ".join(f[8:])
            if level == "lines":
                text = text.replace("|", " ")
            if keep is not None:
                hit = next((i for i in ids_of(sid) if i in keep), None)
                if hit is None:
                    continue  # another split's row: not a drop
                matched.add(hit)
            if level == "words" and sid in KNOWN_BROKEN:
                self.report.drop("known broken IAM word image", sid)
                continue
            if status == "err" and level == "words" and not spec.keep_err:
                self.report.drop("segmentation `err` (keep_err: false)", sid)
                continue
            if not text.strip():
                self.report.drop("empty label", f"{gt.name}:{n}")
                continue
            parts = sid.split("-")
            path = images / parts[0] / f"{parts[0]}-{parts[1]}" / f"{sid}.png"
            if self.keep_if_exists(path, text, f"{gt.name}:{n}"):
                self.add(path, text)
        if keep is not None:
            self.report.note(f"split {spec.split}: {len(keep)} ids listed, {len(matched)} found in {gt.name}")
            missing = sorted(keep - matched)
            if missing:
                self.report.drop(f"split id not found in {gt.name}", ", ".join(missing[:3]), len(missing))

    def _split_ids(self, root: Path) -> set[str] | None:
        s = self.spec.split
        if not s:
            return None
        base = under(root, self.spec.splits_dir, ".")
        direct = Path(s).expanduser()
        path = first_existing(*([direct] if direct.is_absolute() else []), root / s,
                              *(base / f"{s}{ext}" for ext in ("", ".txt", "set.txt", ".uttlist", ".lst")))
        if path is None or not path.is_file():
            raise CvlabError(f"split {s}: no list file {base / s}[.txt|set.txt|.uttlist|.lst]; give splits_dir "
                             f"or a path (rows: line ids like a01-000u-00 or form ids like a01-000u)")
        return {line.split()[0] for _, line in read_lines(path)}
