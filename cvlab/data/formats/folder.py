"""`folder`: images with a label file of `relative/path<TAB>label` lines (the common text form of a labelled set).

A line without a tab is split at its first run of whitespace instead (said once in the report): labels keep
their inner spaces either way. Paths are relative to `images` (default: root)."""

from __future__ import annotations

import re

from .base import ListDataset, need_dir, need_file, read_lines, under

LAYOUT = "ROOT/gt.txt (or `labels:`) with `relative/path.png<TAB>label` lines, paths relative to ROOT"


class FolderDataset(ListDataset):
    def index(self) -> None:
        root = need_dir(self.spec.root_path, LAYOUT)
        gt = need_file(under(root, self.spec.labels, "gt.txt"), LAYOUT)
        base = under(root, self.spec.images, ".")
        fallback = 0
        for n, line in read_lines(gt):
            if "\t" in line:
                path, _, label = line.partition("\t")
            else:
                parts = re.split(r"\s+", line.strip(), maxsplit=1)
                if len(parts) < 2:
                    self.malformed(gt, n, "expected `path<TAB>label`, found no separator")
                    continue
                path, label = parts
                fallback += 1
            path = path.strip()
            if not label:
                self.report.drop("empty label", f"{gt.name}:{n}")
                continue
            if self.keep_if_exists(base / path, label, f"{gt.name}:{n}"):
                self.add(base / path, label)
        if fallback:
            self.report.note(f"{gt.name}: {fallback} lines had no tab; split at the first whitespace instead")
