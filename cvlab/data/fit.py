"""Training labels the recognition head can fit, checked at load (REFERENCE §2, CTC feasibility).

CTC emits one class per frame and needs a blank between two equal characters, so a label of L characters with
r adjacent repeats needs L + r frames; with fewer, `zero_infinity` turns its loss into 0 and the sample trains
nothing, silently. An attention head produces at most `max_length` characters. `data.max_label_length` (DTRB's
batch_max_length) sets a limit of its own. A label over any limit is dropped and counted under its reason in
the dataset's report, like every other drop; lengths count the characters the tokenizer encodes.
"""

from __future__ import annotations

from torch.utils.data import Dataset, Subset

from .loaders import report_of, sample_id
from .sampling import unwrap
from .tokenizer import Tokenizer


def ctc_frames_needed(ids: list[int]) -> int:
    return len(ids) + sum(a == b for a, b in zip(ids, ids[1:], strict=False))


def label_at(ds: Dataset, i: int) -> str:
    """Sample i's label without decoding its image where the dataset can say (every cvlab family can)."""
    base, j = unwrap(ds, i)
    return base.label(j) if hasattr(base, "label") else ds[i][1]


class LabelLimits:
    """The rule: `why(label)` is None for a label the head can learn, else the reason it cannot."""

    def __init__(self, tokenizer: Tokenizer, head: str, *, frames: int, max_length: int | None,
                 max_label_length: int | None):
        self.tokenizer, self.head, self.frames = tokenizer, head, frames
        self.max_length, self.max_label_length = max_length, max_label_length

    def why(self, label: str) -> str | None:
        ids = self.tokenizer.encode(label)
        if self.max_label_length is not None and len(ids) > self.max_label_length:
            return f"label longer than data.max_label_length={self.max_label_length}"
        if self.head == "ctc" and ctc_frames_needed(ids) > self.frames:
            return (f"label needs more CTC frames than the model has (length + adjacent repeats > "
                    f"{self.frames} frames)")
        if self.head == "attention" and self.max_length is not None and len(ids) > self.max_length:
            return f"label longer than model.head.max_length={self.max_length}"
        return None

    def worst_case(self, longest: int) -> bool:
        """True when no label of at most `longest` characters can break the rule (no scan needed)."""
        if self.max_label_length is not None and longest > self.max_label_length:
            return False
        if self.head == "ctc":
            return 2 * longest - 1 <= self.frames
        return self.max_length is None or longest <= self.max_length


def keep_fitting(ds: Dataset, limits: LabelLimits) -> tuple[Dataset, dict[str, int]]:
    """`ds` without the labels `limits` rejects (counted in its report), and the counts by reason."""
    longest = getattr(getattr(unwrap(ds)[0], "spec", None), "max_len", None)  # synth says it up front
    if longest is not None and limits.worst_case(longest):
        return ds, {}
    report = report_of(ds)
    kept, dropped = [], {}
    for i in range(len(ds)):
        label = label_at(ds, i)
        why = limits.why(label)
        if why is None:
            kept.append(i)
            continue
        dropped[why] = dropped.get(why, 0) + 1
        if report is not None:
            report.drop(why, f"{sample_id(ds, i)} {label!r} ({len(label)} characters)")
    if not dropped:
        return ds, {}
    out = Subset(ds, kept)
    if report is not None:
        out.report = report
    return out, dropped
