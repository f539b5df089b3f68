"""What every command module shares: the Typer app, consoles, the error guard, `~` in paths, and the one place
that prints rows (a table on a terminal, tab-separated lines into a pipe or file, or JSON)."""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import CvlabError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="Experiment runner for scene-text and handwriting recognition. One YAML = one experiment.")


class PipeClosed(Exception):
    """stdout (or stderr) is a pipe whose reader has gone (`cvlab ... | head -1`): the command ends quietly,
    exit 0, as `ls | head` does. Not an OSError, so that Typer does not turn it into exit 1 on its way up to
    `cvlab.cli.run`, which handles it."""


class _Console(Console):
    def on_broken_pipe(self) -> None:  # rich's own handler exits 1; `run` decides instead
        self.quiet = True
        raise PipeClosed


out = _Console(soft_wrap=True, emoji=False)  # `:x` in a path or label is text, not ❌
err = _Console(stderr=True, soft_wrap=True, emoji=False)


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 image`, `2 images`, `0 images`."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def expand_home(value):
    """`~` and `~user` at the start of a path expanded, as a shell would for `--out ~/x` but does not for
    `--out=~/x`: never a literal `./~` folder. Paths, lists of paths and path-like strings; anything else as is."""
    if isinstance(value, Path):
        return Path(os.path.expanduser(value))
    if isinstance(value, str) and value.startswith("~"):
        return os.path.expanduser(value)
    if isinstance(value, list | tuple) and value and all(isinstance(v, Path) for v in value):
        return type(value)(Path(os.path.expanduser(v)) for v in value)
    return value


def is_stdout(path) -> bool:
    """`--out -`: write to stdout instead of a file."""
    return path is not None and str(path) == "-"


def refuse_stdout(path, option: str, what: str) -> None:
    """For outputs that cannot go to stdout (a PNG, a model, a folder): exit 2 naming the option."""
    if is_stdout(path):
        raise CvlabError(f"{option} -: {what} cannot be written to stdout; give a file name")


# ------------------------------------------------------------------------------------------ rows: one place

FORMATS = ("table", "tsv", "json")
FORMAT_HELP = ("How rows are printed: `table` (the default on a terminal), `tsv` (the default into a pipe or a "
               "file: a header line, then one tab-separated line per row, never wrapped; a tab, newline or "
               "backslash in a value is written `\\t`, `\\n`, `\\\\`) or `json` (a list of objects, raw "
               "values). With tsv and json only the rows go to stdout; titles and notes go to stderr.")


def format_option():
    return typer.Option(None, "--format", metavar="table|tsv|json", help=FORMAT_HELP, show_default=False)


def channels_last_option():
    """`--channels-last/--no-channels-last` of eval and predict (engine.runs.load.inference_model's default)."""
    return typer.Option(None, "--channels-last/--no-channels-last", show_default=False,
                        help="The model's weights and inputs in channels_last: faster on CPUs, the same predictions "
                        "in float32 (up to float rounding). Default: on the CPU in float32, and wherever "
                        "train.channels_last trained the model so.")


def backend_options():
    """`--backend`, `--int8`, `--check` of eval and predict (engine.backend)."""
    return (typer.Option("torch", "--backend", metavar="torch|onnxruntime",
                         help="What runs the model: torch (exact), or onnxruntime on RUN/export/<checkpoint>.onnx "
                         "(exported first when missing or older than the checkpoint; needs pip install "
                         "'cvlab[export]'). The same preprocessing, batches and decoding."),
            typer.Option(False, "--int8", help="With --backend onnxruntime: the int8 model that `cvlab export "
                         "--quantize int8` wrote (faster, not exact: differences are counted)."),
            typer.Option(False, "--check", help="With --backend onnxruntime: run the torch model beside it and "
                         "count (and show) the predictions that differ."))


def fold_bn_option():
    """`--fold-bn/--no-fold-bn` of eval and predict (engine.runs.load.inference_model decides the default)."""
    return typer.Option(None, "--fold-bn/--no-fold-bn", show_default=False,
                        help="Fold batch norm into the convolution before it: faster, the checkpoint untouched, the "
                        "same predictions in float32 (up to float rounding). Default: fold when the model runs in "
                        "float32, not under bf16/fp16 autocast (train.amp), where a near tie could read "
                        "differently.")


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def output_format(requested: str | None = None) -> str:
    """The one decision: what `--format` asked for, else a table on a terminal and tsv into a pipe or file."""
    if requested is None:
        return "table" if stdout_is_terminal() else "tsv"
    if requested not in FORMATS:
        raise CvlabError(f"--format {requested}: unknown (valid: {', '.join(FORMATS)})")
    return requested


def notes_console(fmt: str) -> Console:
    """Where everything but the rows goes: stdout beside a table, stderr when stdout carries tsv or json."""
    return out if fmt == "table" else err


@dataclass
class Rows:
    """Rows as a command prints them: `cells` (strings, as shown in a table and in tsv) and `records` (raw values
    for json, one dict per row; default: the cells under the column names)."""

    columns: list[str]
    cells: list[list[str]]
    records: list[dict] | None = None
    title: str = ""
    caption: str = ""
    right: frozenset[str] = frozenset()  # right-justified columns (numbers)
    fold: frozenset[str] = frozenset()  # columns a narrow table wraps rather than cuts (paths, layer names)
    bold: frozenset[int] = frozenset()  # row indices shown in bold in a table (a combined row)
    width: int | None = None  # a table this wide whatever the terminal (a whole path per row)
    extra: dict = field(default_factory=dict)  # keyword arguments for rich's Table


def _tsv_cell(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def write_stdout(text: str) -> None:
    if not out.quiet:  # torchrun: only rank 0 prints
        sys.stdout.write(text)
        sys.stdout.flush()  # a closed pipe shows now, inside the command, not at exit


def print_rows(rows: Rows, fmt: str, notes: Console | None = None) -> None:
    """Print rows as `fmt` says (see `output_format`). The title and caption go to `notes` (default: stdout
    beside a table, stderr with tsv and json)."""
    notes = notes or notes_console(fmt)
    if fmt == "table":
        table = Table(title=Text(rows.title) if rows.title else None, caption=rows.caption or None, **rows.extra)
        for col in rows.columns:
            table.add_column(col, justify="right" if col in rows.right else "left",
                             overflow="fold" if col in rows.fold else "ellipsis")
        for i, r in enumerate(rows.cells):
            table.add_row(*(Text(c) for c in r), style="bold" if i in rows.bold else None)  # Text: no markup
        if rows.width is None:
            out.print(table)
            return
        width = out.width
        out.width = max(width, rows.width)
        try:
            out.print(table)
        finally:
            out.width = width
        return
    if rows.title:
        notes.print(rows.title + (f" ({rows.caption})" if rows.caption else ""), markup=False, highlight=False)
    if fmt == "json":
        records = rows.records if rows.records is not None else [dict(zip(rows.columns, r, strict=True))
                                                                 for r in rows.cells]
        write_stdout(json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    else:
        write_stdout("".join("\t".join(map(_tsv_cell, r)) + "\n" for r in [rows.columns, *rows.cells]))


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
    if "RANK" not in os.environ:  # not under torchrun: no need to import torch (seconds) to say so
        return 0
    from ..engine.distributed import launched

    return int(os.environ["RANK"]) if launched() else 0


def guarded(fn):
    """Bad input -> one line on stderr and exit 2, no traceback; Ctrl-C during training -> the loop has written
    last.pt, print how to resume, exit 130; divergence -> exit 1. Anything else is a bug: traceback, exit 1.
    Under torchrun the other ranks print only errors that rank 0 does not print itself, prefixed with their rank."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        rank = other_rank()
        # every path option and argument of every command, in one place (`--runs-dir=~/x`, `--out=~/x`)
        kwargs = {k: expand_home(v) if isinstance(v, Path | list) else v for k, v in kwargs.items()}
        try:
            return fn(*args, **kwargs)
        except CvlabError as e:
            if not getattr(e, "quiet", False):
                for line in str(e).splitlines() or ["bad input"]:
                    err.print(f"{f'rank {rank}: ' if rank else ''}error: {line}", markup=False, highlight=False)
            raise typer.Exit(2) from None
        except Exception as e:
            # the training loop's own exceptions; only a command that imported the loop can raise them, and
            # importing it here would make every command (`cvlab eval`, `config show`) pay for torch, kornia
            # and TensorBoard at start-up
            loop = sys.modules.get(f"{__package__.rpartition('.')[0]}.engine.train.loop")
            if loop is not None and isinstance(e, loop.TrainingInterrupted):
                if not rank:
                    err.print(f"interrupted at step {e.step}; checkpoints/last.pt written. Resume with:", markup=False)
                    err.print(f"  cvlab train --resume {e.run_dir}", markup=False, highlight=False)
                raise typer.Exit(130) from None
            if loop is not None and isinstance(e, loop.Diverged):
                if not rank:
                    err.print(f"error: training diverged: {e}", markup=False, highlight=False)
                raise typer.Exit(1) from None
            raise
        except KeyboardInterrupt:  # before the first step: a new run had nothing to save and was removed
            err.print("interrupted (nothing was checkpointed yet, so no run was kept)")
            raise typer.Exit(130) from None

    return wrapper


def _tensorboard_cmd(logdir: Path) -> str:
    """The command to paste into a shell: paths quoted when they need it (a space, a quote)."""
    exe = Path(sys.prefix) / "bin" / "tensorboard"
    try:
        shown = exe.relative_to(Path.cwd()) if exe.is_file() else None
    except ValueError:
        shown = exe
    return f"{shlex.quote(str(shown)) if shown else 'tensorboard'} --logdir {shlex.quote(str(logdir))}"


RATES = (("word acc %", "word_acc"), ("1−NED %", "one_minus_ned"), ("CER %", "cer"), ("WER %", "wer"),
         ("conf %", "confidence"))


def results_rows(title: str, datasets: dict, combined: dict | None = None) -> Rows:
    """Every rate in percent (word acc, 1−NED, CER, WER, mean confidence); `filtered` appears when the protocol
    left labels out (dtrb, parseq), so the sample count is never read as the dataset's size. A dataset with no
    scored sample has no rate: `—` (json: null), never a CER of 0.00."""
    rows = list(datasets.items())
    if combined and len(datasets) > 1:
        rows.append(("combined", combined))
    filtered = any(r.get("filtered") for _, r in rows)
    columns = ["dataset", "samples", *(["filtered"] if filtered else []), *(c for c, _ in RATES)]

    def rate(r: dict, key: str) -> float | None:
        return r[key] if r["samples"] and key in r else None

    cells, records = [], []
    for name, r in rows:
        n_filtered = sum(r.get("filtered", {}).values())
        cells.append([name, str(r["samples"]), *([str(n_filtered)] if filtered else []),
                      *("—" if rate(r, k) is None else f"{100 * rate(r, k):.2f}" for _, k in RATES)])
        records.append({"dataset": name, "samples": r["samples"], "filtered": dict(r.get("filtered", {})),
                        **{k: rate(r, k) for _, k in RATES}})
    return Rows(columns, cells, records, title=title, caption="rates in %", right=frozenset(columns[1:]),
                bold=frozenset([len(datasets)]) if len(rows) > len(datasets) else frozenset())
