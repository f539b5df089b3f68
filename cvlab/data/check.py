"""`cvlab data check`: everything about a dataset a researcher should see before training on it. Decodes every
image (that is the point of a check; training itself never does this up front)."""

from __future__ import annotations

from collections import Counter
from statistics import median

from torch.utils.data import Dataset

from .charset import case_fold
from .formats.base import LOAD_ERRORS, Broken
from .loaders import report_of
from .report import DataReport
from .sampling import unwrap


def _label_and_size(ds: Dataset, i: int) -> tuple[str, tuple[int, int] | None, str | None]:
    """(label, (width, height) of the original image or crop, error) without the experiment's resizing."""
    base, j = unwrap(ds, i)
    if hasattr(base, "load"):
        try:
            with_size = base.load(j).size
            return base.label(j), with_size, None
        except LOAD_ERRORS as e:
            return base.label(j), None, f"{base.source(j)} ({e.__class__.__name__}: {e})"
    image, label = ds[i]  # e.g. synthetic words: only the resized tensor exists
    if isinstance(image, Broken):
        return label, None, f"{image.source} ({image.why})"
    return label, (int(image.shape[-1]), int(image.shape[-2])), None


def check_dataset(ds: Dataset, charset: str) -> dict:
    rep = report_of(ds) or DataReport("dataset")
    lengths: Counter = Counter()
    widths, heights = [], []
    unreadable = DataReport(rep.name)
    outside: Counter = Counter()
    chars, fold = set(charset), case_fold(charset)  # case folding is not a loss: count what training drops
    for i in range(len(ds)):
        label, size, error = _label_and_size(ds, i)
        lengths[len(label)] += 1
        outside.update(c for c in fold(label) if c not in chars)
        if error:
            unreadable.drop("image unreadable (found by decoding)", error)
        else:
            widths.append(size[0])
            heights.append(size[1])
    out = rep.to_dict()
    out["samples"] = len(ds)
    out["readable"] = len(widths)
    out["dropped"] = {**out["dropped"], **dict(unreadable.dropped)}
    out["examples"] = {**out["examples"], **unreadable.examples}
    out["outside_charset"] = dict(outside.most_common())  # of the samples checked (limit applies)
    out["label_lengths"] = dict(sorted(lengths.items()))
    if widths:
        out["image_size"] = {
            "width": {"min": min(widths), "median": median(widths), "max": max(widths)},
            "height": {"min": min(heights), "median": median(heights), "max": max(heights)},
            "aspect_median": median(w / max(1, h) for w, h in zip(widths, heights, strict=True)),
        }
    return out
