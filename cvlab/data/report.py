"""What a dataset did with its input: every dropped sample and every adjustment, counted by reason with the
first few examples. Built while indexing (and while loading, for images that turn out unreadable); printed
by `cvlab data check`, at the start of training and after each evaluation. Nothing is ever dropped silently."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

EXAMPLES = 3
UNWRITABLE = "label has no character in the charset"


@dataclass
class DataReport:
    name: str
    samples: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> samples not used
    adjusted: Counter = field(default_factory=Counter)  # reason -> samples kept but changed (clamped box, ...)
    examples: dict[str, list[str]] = field(default_factory=dict)
    outside_charset: Counter = field(default_factory=Counter)  # character -> occurrences in kept labels
    notes: list[str] = field(default_factory=list)  # one-off facts (fallback separator used, subset applied)
    unwritable: int = 0  # kept labels with no character in the charset (evaluation scores them; training drops)

    def _example(self, reason: str, example: str) -> None:
        ex = self.examples.setdefault(reason, [])
        if len(ex) < EXAMPLES:
            ex.append(example)

    def drop(self, reason: str, example: str, n: int = 1) -> None:
        self.dropped[reason] += n
        self._example(reason, example)

    def adjust(self, reason: str, example: str) -> None:
        self.adjusted[reason] += 1
        self._example(reason, example)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def count_unwritable(self, n: int, examples: list[str]) -> None:
        """`n` kept labels have no character in the charset (set once per dataset, with a few examples)."""
        self.unwritable = n
        self.examples[UNWRITABLE] = examples[:EXAMPLES]

    def count_charset(self, label: str, charset: set[str]) -> None:
        for c in label:
            if c not in charset:
                self.outside_charset[c] += 1

    def merge(self, other: DataReport) -> None:
        self.dropped.update(other.dropped)
        self.adjusted.update(other.adjusted)
        for reason, ex in other.examples.items():
            for e in ex:
                self._example(reason, e)

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def lines(self, *, charset: bool = True) -> list[str]:
        """Human-readable lines; empty when there is nothing to say. `charset=False` leaves out what is said
        about the charset (for `data convert`, which writes labels as they are)."""
        out = list(self.notes)
        for title, counts in (("dropped", self.dropped), ("adjusted", self.adjusted)):
            for reason, n in counts.most_common():
                ex = "; ".join(self.examples.get(reason, []))
                out.append(f"{title} {n}: {reason}" + (f" (e.g. {ex})" if ex else ""))
        if not charset:
            return out
        if self.unwritable:
            ex = "; ".join(self.examples.get(UNWRITABLE, []))
            out.append(f"{self.unwritable} labels have no character in the charset: evaluation scores them as they "
                       f"are, training drops them (e.g. {ex})")
        if self.outside_charset:
            chars = " ".join(f"{c!r}×{n}" for c, n in self.outside_charset.most_common(20))
            more = len(self.outside_charset) - 20
            out.append(f"{sum(self.outside_charset.values())} label characters outside the charset "
                       f"(skipped when encoding for training): {chars}" + (f" and {more} more" if more > 0 else ""))
        return out

    def to_dict(self) -> dict:
        return {"name": self.name, "samples": self.samples, "dropped": dict(self.dropped),
                "adjusted": dict(self.adjusted), "examples": self.examples,
                "outside_charset": dict(self.outside_charset.most_common()), "unwritable": self.unwritable,
                "notes": self.notes}
