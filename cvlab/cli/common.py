"""What every command module shares: the Typer app, consoles, the error guard, result tables."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ..errors import CvlabError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="Experiment runner for scene-text and handwriting recognition. One YAML = one experiment.")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

def readable_help(command):
    """Metavars a user can read in every `--help` (Typer's own read `<list[str]>`, `<bool>`, `{run}`): flags
    and --help show none, numbers N, paths PATH, --set/--opt KEY=VALUE, other values their option's name
    (`--checkpoint CHECKPOINT`); arguments are named in capitals (RUN, IMAGES...) without a type column.
    Metavars a command sets itself (`--runs-dir DIR`) are kept."""
    from types import SimpleNamespace

    from typer.core import TyperArgument, TyperOption

    class Argument(TyperArgument):
        def display_type_rich(self, ctx):
            return None

        def _usage_display_name(self):
            name = self.display_name_raw
            return name if self.required or name.startswith("[") else f"[{name}]"

    for cmd in [command, *getattr(command, "commands", {}).values()]:
        if cmd is not command and hasattr(cmd, "commands"):
            readable_help(cmd)
            continue
        help_option = cmd.get_help_option(SimpleNamespace(help_option_names=["--help"]))
        for p in [*cmd.params, *([help_option] if help_option is not None else [])]:
            if isinstance(p, TyperArgument):
                p.__class__ = Argument
                if p.metavar is None:
                    p.metavar = p.name.upper() + ("..." if p.nargs != 1 else "")
            elif isinstance(p, TyperOption) and p.metavar is None:
                if p.is_flag:
                    p.metavar = ""
                    continue
                label = p.display_type(None).strip("<>")
                label = label[5:-1] if label.startswith("list[") else label
                name = p.name.rstrip("_")
                p.metavar = "KEY=VALUE" if name in ("set", "opt") else {
                    "str": name.upper(), "path": "PATH", "int": "N", "int range": "N", "float": "X",
                    "float range": "X"}.get(label, label)
    return command


SET_HELP = "Override a config value, e.g. `--set train.lr=3e-4` (repeatable; values are YAML)."


def other_rank() -> int:
    """Under torchrun, this process's rank when it is not rank 0 (which alone prints results), else 0."""
    from ..engine.distributed import launched

    return int(os.environ["RANK"]) if launched() else 0


def guarded(fn):
    """Bad input -> one line on stderr and exit 2, no traceback; Ctrl-C during training -> the loop has written
    last.pt, print how to resume, exit 130; divergence -> exit 1. Anything else is a bug: traceback, exit 1.
    Under torchrun the other ranks print only errors that rank 0 does not print itself, prefixed with their rank."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..engine.train.loop import Diverged, TrainingInterrupted

        rank = other_rank()
        try:
            return fn(*args, **kwargs)
        except CvlabError as e:
            if not getattr(e, "quiet", False):
                for line in str(e).splitlines() or ["bad input"]:
                    err.print(f"{f'rank {rank}: ' if rank else ''}error: {line}", markup=False, highlight=False)
            raise typer.Exit(2) from None
        except TrainingInterrupted as e:
            if not rank:
                err.print(f"interrupted at step {e.step}; checkpoints/last.pt written. Resume with:", markup=False)
                err.print(f"  cvlab train --resume {e.run_dir}", markup=False, highlight=False)
            raise typer.Exit(130) from None
        except Diverged as e:
            if not rank:
                err.print(f"error: training diverged: {e}", markup=False, highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:  # before the first step: a new run had nothing to save and was removed
            err.print("interrupted (nothing was checkpointed yet, so no run was kept)")
            raise typer.Exit(130) from None

    return wrapper


def _tensorboard_cmd(logdir: Path) -> str:
    exe = Path(sys.prefix) / "bin" / "tensorboard"
    try:
        shown = exe.relative_to(Path.cwd()) if exe.is_file() else None
    except ValueError:
        shown = exe
    return f"{shown or 'tensorboard'} --logdir {logdir}"


def _results_table(title: str, datasets: dict, combined: dict | None = None) -> Table:
    """Every rate in percent (word acc, 1−NED, CER, WER, mean confidence); `filtered` appears when the protocol
    left labels out (dtrb, parseq), so the sample count is never read as the dataset's size."""
    rows = list(datasets.items())
    if combined and len(datasets) > 1:
        rows.append(("[b]combined[/b]", combined))
    filtered = any(r.get("filtered") for _, r in rows)
    table = Table(title=title, caption="rates in %")
    for col in ("dataset", "samples", *(("filtered",) if filtered else ()), "word acc %", "1−NED %", "CER %",
                "WER %", "conf %"):
        table.add_column(col, justify="left" if col == "dataset" else "right")

    def pct(r: dict, key: str) -> str:
        return f"{100 * r[key]:.2f}" if key in r else ""

    for name, r in rows:
        table.add_row(name, str(r["samples"]), *((str(sum(r.get("filtered", {}).values())),) if filtered else ()),
                      pct(r, "word_acc"), pct(r, "one_minus_ned"), pct(r, "cer"), pct(r, "wer"),
                      pct(r, "confidence"))
    return table


