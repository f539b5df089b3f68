"""`cvlab runs [DIR]` and `cvlab runs clean [DIR]`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .common import (
    Rows,
    app,
    err,
    expand_home,
    format_option,
    guarded,
    notes_console,
    out,
    output_format,
    plural,
    print_rows,
)


def _wall(s: float | None) -> str:
    if s is None:
        return "—"
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


@app.command(epilog="Examples:\n\n    cvlab runs\n\n    cvlab runs runs/quickstart\n\n"
             "    cvlab runs --format json\n\n"
             "    cvlab runs clean --yes\n\n"
             "Status: running (its process holds the lock), finished, interrupted (Ctrl-C, or killed: "
             "`cvlab train --resume PATH` continues it), failed, empty (never reached a checkpoint: "
             "`cvlab runs clean` removes those).\n\n"
             "`cvlab runs clean` without --yes lists the runs and asks on stderr, reading the answer from stdin: "
             "only y or yes removes them; n, anything else, or no answer (stdin closed, as with </dev/null) "
             "removes nothing and exits 0.")
@guarded
def runs(
    target: str = typer.Argument("runs", metavar="[DIR | clean]", help="Folder of runs (default: runs), or "
                                 "`clean` to remove the runs that never reached a checkpoint.",
                                 show_default=False),
    folder: Path = typer.Argument(None, metavar="[DIR]", help="With `clean`: the folder of runs (default: runs).",
                                  show_default=False),
    yes: bool = typer.Option(False, "--yes", "-y", help="With `clean`: remove without asking."),
    fmt: str = format_option(),
):
    """One row per run below DIR: name, status, steps, best word accuracy, wall time, path."""
    from ..engine.runs.listing import clean_runs, list_runs

    fmt = output_format(fmt)
    clean = target == "clean"
    root = (folder or Path("runs")) if clean else Path(expand_home(target))
    found = list_runs(root)
    if clean:
        _clean(root, [r for r in found if r.status == "empty"], yes, clean_runs)
        return
    if not found:
        notes_console(fmt).print(f"no runs below {root}", markup=False, highlight=False)
        if fmt == "table":
            return
    cells = [[r.name, r.status, f"{r.step}/{r.steps}", f"{100 * r.best:.2f}" if r.best is not None else "—",
              _wall(r.wall_s), str(r.path)] for r in found]
    records = [{"name": r.name, "status": r.status, "step": r.step, "steps": r.steps, "best_word_acc": r.best,
                "wall_s": r.wall_s, "path": str(r.path)} for r in found]
    # paths are long: a whole path per row (copy-pasteable into --resume), not squeezed into 80 columns
    print_rows(Rows(["name", "status", "steps", "best word acc", "wall", "path"], cells, records,
                    title=f"runs below {root}" if found else "", right=frozenset({"steps", "best word acc", "wall"}),
                    width=80 + max((len(str(r.path)) for r in found), default=0)), fmt)


def _clean(root: Path, empty: list, yes: bool, clean_runs) -> None:
    if not empty:
        out.print(f"no empty runs below {root}", markup=False, highlight=False)
        return
    for r in empty:
        out.print(f"  {r.path}", markup=False, highlight=False)
    if not yes:
        these = "this run" if len(empty) == 1 else f"these {len(empty)} runs"
        question = f"remove {these} that never reached a checkpoint? [y/N] "
        err.print(question, end="", markup=False, highlight=False)
        try:
            answer = sys.stdin.readline() if sys.stdin is not None else ""
        except KeyboardInterrupt:
            err.print("\nnothing removed (interrupted)")
            raise typer.Exit(130) from None
        if not answer:
            err.print("")  # the prompt's line ends here
        if answer.strip().lower() not in ("y", "yes"):
            out.print("nothing removed" + ("" if answer else " (no answer on stdin; --yes removes without asking)"),
                      markup=False, highlight=False)
            return
    removed = clean_runs(empty)
    out.print(f"removed {plural(len(removed), 'run')}", markup=False, highlight=False)
