"""Progress display for the CLI: a rich progress bar on a terminal, plain lines otherwise (logs, CI, pipes)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
