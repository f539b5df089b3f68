"""Progress display for the CLI: a rich progress bar on a terminal, plain lines otherwise (logs, CI, pipes)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ..engine.progress import Progress as ProgressSink


class RichProgress(ProgressSink):
    def __init__(self, console: Console):
        self.console = console
        self.bar = Progress(TextColumn("[b]train"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console,
                            transient=False)
        self.task = None
        self.values: dict = {}

    def start(self, total: int, done: int = 0) -> None:
        self.bar.start()
        self.task = self.bar.add_task("train", total=total, completed=done, info="")

    def update(self, step: int, **values: float) -> None:
        self.values.update(values)
        v = self.values
        info = f"loss {v.get('loss', float('nan')):.4f}  lr {v.get('lr', 0):.2e}"
        if "samples_per_s" in v:
            info += f"  {v['samples_per_s']:.0f} samples/s"
        self.bar.update(self.task, completed=step, info=info)

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def stop(self) -> None:
        self.bar.stop()


class PlainProgress(ProgressSink):
    """One line every `every` steps, with an ETA: readable in log files."""

    def __init__(self, console: Console, every: int):
        self.console, self.every = console, every
        self.total = self.first = 0
        self.t0 = time.perf_counter()

    def start(self, total: int, done: int = 0) -> None:
        self.total, self.first, self.t0 = total, done, time.perf_counter()

    def update(self, step: int, **v: float) -> None:
        if step % self.every and step != self.total:
            return
        rate = (step - self.first) / max(1e-9, time.perf_counter() - self.t0)
        eta = (self.total - step) / rate if rate > 0 else 0
        line = f"step {step}/{self.total}  loss {v.get('loss', float('nan')):.4f}  lr {v.get('lr', 0):.2e}"
        if "samples_per_s" in v:
            line += f"  {v['samples_per_s']:.0f} samples/s"
        self.console.print(f"{line}  eta {int(eta // 60)}:{int(eta % 60):02d}", markup=False, highlight=False)

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)


def make_progress(console: Console, every: int) -> ProgressSink:
    return RichProgress(console) if console.is_terminal else PlainProgress(console, every)


class _Rate(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        return Text(f"{task.speed:.0f} {self.unit}/s" if task.speed else "")


class RichCount(ProgressSink):
    """Items done of a total with their rate and ETA (`cvlab data render`): a rich bar."""

    def __init__(self, console: Console, label: str, unit: str):
        self.console, self.label = console, label
        self.bar = Progress(TextColumn(f"[b]{label}"), BarColumn(), MofNCompleteColumn(), _Rate(unit),
                            TimeRemainingColumn(), console=console, transient=False)
        self.task = None

    def start(self, total: int, done: int = 0) -> None:
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=total, completed=done)

    def update(self, step: int, **values: float) -> None:
        self.bar.update(self.task, completed=step)

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def stop(self) -> None:
        self.bar.stop()


class PlainCount(ProgressSink):
    """The same as lines, one each time another `every` items are done, and at the end: readable in logs."""

    def __init__(self, console: Console, label: str, unit: str, every: int):
        self.console, self.label, self.unit, self.every = console, label, unit, every
        self.total = self.first = self.last = 0
        self.t0 = time.perf_counter()

    def start(self, total: int, done: int = 0) -> None:
        self.total, self.first, self.last, self.t0 = total, done, done, time.perf_counter()

    def update(self, step: int, **values: float) -> None:
        if step // self.every == self.last // self.every and step != self.total:
            return
        self.last = step
        rate = (step - self.first) / max(1e-9, time.perf_counter() - self.t0)
        eta = (self.total - step) / rate if rate > 0 else 0
        self.console.print(f"{self.label} {step}/{self.total}  {rate:.0f} {self.unit}/s  "
                           f"eta {int(eta // 60)}:{int(eta % 60):02d}", markup=False, highlight=False)

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)


def make_count_progress(console: Console, label: str, *, unit: str = "samples", every: int = 1000) -> ProgressSink:
    return RichCount(console, label, unit) if console.is_terminal else PlainCount(console, label, unit, every)
