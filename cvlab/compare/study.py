"""The comparison itself: build the grid, skip what finished earlier, launch the rest, then read every variant
back and write summary.csv/json, plots and report.md."""

from __future__ import annotations

from pathlib import Path

from ..config import Experiment
from ..engine.progress import NullProgress, Progress
from ..engine.runs.directory import check_writable
from .grid import make_variants
from .launchers import check_options, launch
from .report import aggregate, collect, protocol, write_outputs
from .worker import finished


def compare_norms(base: Experiment, out_dir: Path, norms: list[str], batch_sizes: list[int], *, seeds: int = 1,
                  steps: int | None = None, lr_scaling: str | None = None, jobs: int = 1,
                  smooth_every: int | None = None, progress: Progress | None = None, launcher: str = "local",
                  gpus: list[int] | None = None, submitit: dict | None = None, dry_run: bool = False) -> dict:
    """Train every variant not yet finished under `out_dir`, then write summary.csv/json, plots and report.md.
    Returns {'rows': [...], 'table': [...], 'out': out_dir}. `launcher`/`gpus`/`submitit`: where the variants
    train (compare/launchers.py); `dry_run` (submitit): say what would be submitted, train and write nothing."""
    progress = progress or NullProgress()
    out_dir = Path(out_dir)
    check_options(launcher, gpus, submitit, dry_run)
    variants = make_variants(base, norms, batch_sizes, seeds, steps=steps, lr_scaling=lr_scaling, jobs=jobs,
                             smooth_every=smooth_every)
    check_writable(out_dir, "--out")
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = []
    for v in variants:
        if finished(out_dir / v.name, v.cfg.train.steps):
            progress.message(f"{v.name}: finished earlier, skipped")
        else:
            todo.append(v)
    every = {v.name: v.smooth_every or max(1, v.cfg.train.steps // 10) for v in todo}
    if todo:
        launch(todo, out_dir, every, progress, launcher=launcher, jobs=jobs, gpus=gpus, submitit=submitit,
               dry_run=dry_run)
    if dry_run:
        return {"rows": [], "table": [], "out": out_dir, "dry_run": True}
    rows, curves = collect(variants, out_dir)
    table = aggregate(rows)
    write_outputs(out_dir, rows, table, curves, protocol(base, variants))
    return {"rows": rows, "table": table, "out": out_dir}
