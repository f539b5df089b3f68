"""The comparison itself: build the grid, check what an earlier run left under the output folder, skip what
finished, launch the rest, then read every variant back and write summary.csv/json, plots and report.md."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..config import Experiment, load_saved_config
from ..engine.progress import NullProgress, Progress
from ..engine.runs.directory import STATUS, check_writable, read_json
from ..engine.runs.resume import RESUMABLE, changed_keys, check_resume
from ..engine.train.init_from import same_source
from ..errors import CvlabError
from .grid import Variant, make_variants
from .launchers import check_options, launch
from .report import aggregate, collect, write_outputs
from .report import protocol as protocol_lines
from .worker import finished

SUMMARY = ("summary.csv", "summary.json", "report.md")
PLOTS = ("val_acc_vs_step.png", "acc_vs_batch_size.png", "acc_vs_nhw.png")


def compare_norms(base: Experiment, out_dir: Path, norms: list[str], batch_sizes: list[int], *, seeds: int = 1,
                  steps: int | None = None, lr_scaling: str | None = None, jobs: int = 1,
                  smooth_every: int | None = None, progress: Progress | None = None, launcher: str = "local",
                  gpus: list[int] | None = None, submitit: dict | None = None, dry_run: bool = False,
                  protocol: str = "per-device", devices: int = 8) -> dict:
    """Train every variant not yet finished under `out_dir`, then write summary.csv/json, plots and report.md.
    Returns {'rows': [...], 'table': [...], 'out': out_dir, 'outcome': ...} (`outcome`: see `outcome`).
    `launcher`/`gpus`/`submitit`: where the variants train (compare/launchers.py); `dry_run` (submitit): say
    what would be submitted, train and write nothing.

    A variant folder an earlier command left must have been trained with this command's settings, schedule
    keys aside (a larger --steps extends it): anything else raises CvlabError before any training. A summary
    that loses finished variants does not replace the previous one silently: that one is kept as
    summary.prev.* (see `keep_previous`)."""
    progress = progress or NullProgress()
    out_dir = Path(out_dir)
    check_options(launcher, gpus, submitit, dry_run)
    variants = make_variants(base, norms, batch_sizes, seeds, steps=steps, lr_scaling=lr_scaling, jobs=jobs,
                             smooth_every=smooth_every, protocol=protocol, devices=devices)
    check_writable(out_dir, "--out")
    check_existing(variants, out_dir)
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
    kept = keep_previous(out_dir, rows)
    if kept:
        progress.message(kept)
    write_outputs(out_dir, rows, table, curves, protocol_lines(base, variants))
    return {"rows": rows, "table": table, "out": out_dir, "kept_previous": kept,
            "outcome": outcome(variants, out_dir, rows)}


# --------------------------------------------------------------------------------------------- earlier runs

def _value(v) -> str:
    text = v if isinstance(v, str) else json.dumps(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _trained_steps(run_dir: Path) -> int:
    """How far the variant's run got, from the files a session writes on its way out (no checkpoint loaded)."""
    steps = [read_json(run_dir / name).get("step") for name in (STATUS, "metrics.json")]
    return max((s for s in steps if isinstance(s, int)), default=0)


def check_existing(variants: list[Variant], out_dir: Path) -> None:
    """CvlabError (one line, naming the variant and the dotted keys) when a variant folder already under
    `out_dir` was trained with other settings than the grid asks for: its results would be reported under this
    command's settings, or a resume would mix the two. The keys a resume may change (engine.runs.resume:
    RESUMABLE; train.steps among them) may differ, except that a run is never shortened and a onecycle
    schedule keeps its length. Reads only; nothing is written."""
    refusals = []
    for v in variants:
        d = out_dir / v.name
        saved_path = d / "config.yaml"
        if not saved_path.is_file():
            continue  # never opened as a run (or removed before its first checkpoint): it starts afresh
        try:
            saved = load_saved_config(saved_path).model_dump(mode="json")
        except CvlabError as e:
            refusals.append(f"{v.name}: its {saved_path.name} cannot be read by this cvlab "
                            f"({'; '.join(str(e).splitlines())})")
            continue
        cfg = v.cfg
        stored_from = saved.get("train", {}).get("init_from")
        if stored_from != cfg.train.init_from and same_source(stored_from, cfg.train.init_from):
            cfg = cfg.model_copy(deep=True)  # the run stores the checkpoint resolved: the same weights
            cfg.train.init_from = stored_from
        differ = {k: old_new for k, old_new in changed_keys(saved, cfg).items()
                  if k != "name" and k not in RESUMABLE}
        if differ:
            keys = list(differ)[:8]
            more = f" and {len(differ) - len(keys)} more key(s)" if len(differ) > len(keys) else ""
            was = ", ".join(f"{k}={_value(differ[k][0])}" for k in keys)
            now = ", ".join(f"{k}={_value(differ[k][1])}" for k in keys)
            refusals.append(f"{v.name} was trained with {was}{more}; this command asks for {now}: use another "
                            "--out, or the same settings")
            continue
        trained = _trained_steps(d)
        if trained > v.cfg.train.steps:
            refusals.append(f"{v.name} has trained {trained} steps; this command gives it {v.cfg.train.steps} "
                            "(--steps): a run is never shortened; use another --out, or a --steps at least as "
                            "large as that run's")
            continue
        try:  # what else resuming refuses (a onecycle schedule's length), asked of the engine's own check
            check_resume(saved, cfg, saved_path)
        except CvlabError as e:
            refusals.append(f"{v.name}: {e}; use another --out")
    if refusals:
        others = f" ({len(refusals) - 1} more variant(s) there are refused likewise)" if len(refusals) > 1 else ""
        raise CvlabError(f"--out {out_dir}: {refusals[0]}{others}")


# --------------------------------------------------------------------------------------------- outputs

def _done_in(summary_csv: Path) -> set[tuple[str, str, str]] | None:
    """The finished variants (norm, batch size, seed) an existing summary.csv reports; None when there is none."""
    try:
        with open(summary_csv, encoding="utf-8", newline="") as f:
            return {(r.get("norm"), r.get("batch_size"), r.get("seed")) for r in csv.DictReader(f)
                    if r.get("status") == "done"}
    except (OSError, ValueError, csv.Error):
        return None


def keep_previous(out_dir: Path, rows: list[dict]) -> str | None:
    """Before this run's summary is written: when the one already there reports a finished variant that this
    one does not (a smaller grid, variants that failed this time), move it (summary.csv/json, report.md and the
    plots it shows) to the first free summary.prev*.csv name, so nothing finished disappears. Returns the
    sentence saying so, or None when the new summary loses nothing."""
    old = _done_in(out_dir / "summary.csv")
    new = {(str(r["norm"]), str(r["batch_size"]), str(r["seed"])) for r in rows if r["status"] == "done"}
    lost = (old or set()) - new
    if not lost:
        return None
    tag, i = "prev", 1
    while any((out_dir / _tagged(name, tag)).exists() for name in SUMMARY + PLOTS):
        i += 1
        tag = f"prev{i}"
    moved = []
    for name in SUMMARY + PLOTS:
        src = out_dir / name
        if src.is_file():
            src.rename(out_dir / _tagged(name, tag))
            moved.append(_tagged(name, tag))
    report = out_dir / _tagged("report.md", tag)
    if report.is_file():  # its plots moved with it
        text = report.read_text(encoding="utf-8")
        for png in PLOTS:
            text = text.replace(f"]({png})", f"]({_tagged(png, tag)})")
        report.write_text(text, encoding="utf-8")
    names = ", ".join(f"norm={n},bs={b},seed={s}" for n, b, s in sorted(lost)[:3])
    names += f" and {len(lost) - 3} more" if len(lost) > 3 else ""
    return (f"the summary already in {out_dir} reports {len(old)} finished variant(s), this run's {len(new)} "
            f"({names} not among them): the previous one is kept as {', '.join(moved)}")


def _tagged(name: str, tag: str) -> str:
    stem, _, ext = name.rpartition(".")
    return f"{stem}.{tag}.{ext}"


def outcome(variants: list[Variant], out_dir: Path, rows: list[dict]) -> str:
    """'done' when at least one variant finished; 'bad_input' when none did and every one was refused for its
    settings (e.g. batch norm at batch size 1: a CvlabError in its worker); 'failed' otherwise (failures,
    divergence)."""
    if any(r["status"] == "done" for r in rows):
        return "done"
    records = [read_json(out_dir / v.name / "variant.json") for v in variants]
    return "bad_input" if records and all(r.get("bad_input") for r in records) else "failed"
