"""`cvlab runs [DIR]` and `cvlab runs clean [DIR]`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .common import app, err, guarded, out


def _wall(s: float | None) -> str:
    if s is None:
        return "—"
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


@app.command(epilog="Examples:\n\n    cvlab runs\n\n    cvlab runs runs/quickstart\n\n"
             "    cvlab runs clean --yes\n\n"
             "Status: running (its process holds the lock), finished, interrupted (Ctrl-C, or killed: "
             "`cvlab train --resume PATH` continues it), failed, empty (never reached a checkpoint: "
             "`cvlab runs clean` removes those).")
@guarded
def runs(
    target: str = typer.Argument("runs", metavar="[DIR | clean]", help="Folder of runs (default: runs), or "
                                 "`clean` to remove the runs that never reached a checkpoint.",
                                 show_default=False),
    folder: Path = typer.Argument(None, metavar="[DIR]", help="With `clean`: the folder of runs (default: runs).",
                                  show_default=False),
    yes: bool = typer.Option(False, "--yes", "-y", help="With `clean`: remove without asking."),
):
    """One row per run below DIR: name, status, steps, best word accuracy, wall time, path."""
    from ..engine.runs.listing import clean_runs, list_runs

    clean = target == "clean"
    root = (folder or Path("runs")) if clean else Path(target)
    found = list_runs(root)
    if clean:
        empty = [r for r in found if r.status == "empty"]
        if not empty:
            out.print(f"no empty runs below {root}", markup=False, highlight=False)
            return
        for r in empty:
            out.print(f"  {r.path}", markup=False, highlight=False)
        if not yes and not typer.confirm(f"remove these {len(empty)} runs that never reached a checkpoint?",
                                         err=True):
            err.print("nothing removed")
            raise typer.Exit(1)
        removed = clean_runs(empty)
        out.print(f"removed {len(removed)} runs", markup=False, highlight=False)
        return
    if not found:
        out.print(f"no runs below {root}", markup=False, highlight=False)
        return
    table = Table(title=f"runs below {root}")
    for col in ("name", "status", "steps", "best word acc", "wall", "path"):
        table.add_column(col, justify="right" if col in ("steps", "best word acc", "wall") else "left")
    for r in found:
        best = f"{100 * r.best:.2f}" if r.best is not None else "—"
        table.add_row(r.name, r.status, f"{r.step}/{r.steps}", best, _wall(r.wall_s), str(r.path))
    width = out.width
    # paths are long: a whole path per row (copy-pasteable into --resume), not squeezed into 80 columns
    out.width = max(width, 80 + max(len(str(r.path)) for r in found))
    try:
        out.print(table)
    finally:
        out.width = width
