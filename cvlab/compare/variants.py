"""compare-norms variants: the norm × batch size × seed grid, scaled budgets, and running them (sequentially
or K processes at a time), each as a normal run directory written by `engine.train.loop.train`."""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import torch

from ..config import Experiment
from ..engine.progress import NullProgress, Progress
from ..engine.runs.directory import check_writable
from ..errors import CvlabError
from .probes import Probe, _peak_mem_mb, bn_layer_stats, train_eval_gap
from .report import aggregate, collect, protocol, write_outputs


@dataclass
class Variant:
    norm: str  # the --norms entry: a norm name, or name@position
    batch_size: int
    seed: int
    cfg: Experiment
    lr_scaling: str = "none"
    smooth_every: int | None = None  # the probe interval, in this variant's steps (None: 10 per run)

    @property
    def name(self) -> str:
        return f"norm={self.norm},bs={self.batch_size},seed={self.seed}"


# --------------------------------------------------------------------------------------------- variants

def parse_norm(entry: str) -> tuple[str, str | None]:
    """`group` -> ('group', None: its published position); `batch@after_act` -> ('batch', 'after_act')."""
    from ..models.norms import NORMS

    name, _, position = entry.partition("@")
    if name not in NORMS:
        raise CvlabError(f"--norms: unknown norm {name} (valid: {', '.join(NORMS)})")
    if position and position not in POSITIONS:
        raise CvlabError(f"--norms {entry}: unknown position {position!r} (valid: {', '.join(POSITIONS)})")
    return name, position or None


POSITIONS = ("before_act", "after_act")


def scaled_steps(n: int, k: float) -> int:
    """A step-counted setting for a run with k× the steps: the same point in samples seen."""
    return max(1, round(n * k))


def make_variants(base: Experiment, norms: list[str], batch_sizes: list[int], seeds: int, steps: int | None = None,
                  lr_scaling: str | None = None, jobs: int = 1, smooth_every: int | None = None) -> list[Variant]:
    """Validated configs for every norm × batch size × seed; raises CvlabError on an unknown norm or rule.

    The protocol (report.md states it): `steps`, `smooth_every` and the base's learning rate are meant for the
    largest batch size; a batch k times smaller takes k× every step-counted setting (steps, warm-up, eval,
    checkpoint and log intervals, batch renorm's relaxation, the probe interval), so each variant sees the
    same schedule in samples, and its optimizer settings follow `lr_scaling` (None: the optimizer's default,
    engine.train.optim.DEFAULT_LR_SCALING)."""
    from ..config.model import NORM_OPTIONS
    from ..engine.train.optim import DEFAULT_LR_SCALING, LR_SCALING, scale_for_batch

    if not norms or not batch_sizes or seeds < 1:
        raise CvlabError("--norms and --batch-sizes need at least one value, --seeds at least 1")
    parsed = [parse_norm(n) for n in norms]
    if any(b < 1 for b in batch_sizes):
        raise CvlabError("--batch-sizes: every batch size must be at least 1")
    rule = lr_scaling or DEFAULT_LR_SCALING[base.train.optimizer]
    if rule not in LR_SCALING:
        raise CvlabError(f"--lr-scaling {rule}: unknown rule (valid: {', '.join(LR_SCALING)})")
    biggest = max(batch_sizes)
    budget = steps or base.train.steps
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else base.train.threads
    out = []
    for bs in batch_sizes:
        k = biggest / bs  # same samples seen: k× the steps at 1/k of the batch
        for entry, (norm, position) in zip(norms, parsed, strict=True):
            for s in range(seeds):
                raw = base.model_dump(mode="json")
                raw["seed"] = base.seed + s
                n = raw["model"]["norm"]
                n["name"] = norm
                for key, owner in NORM_OPTIONS.items():  # other norms' options back to neutral (or validation refuses)
                    if owner != norm:
                        n[key] = type(base.model.norm).model_fields[key].default
                if position:
                    n["position"] = position
                if norm == "batch_renorm":
                    n["renorm_warmup"] = scaled_steps(base.model.norm.renorm_warmup, k)
                t = raw["train"]
                t["batch_size"] = bs
                t["steps"] = scaled_steps(budget, k)
                t["eval_every"] = scaled_steps(min(base.train.eval_every, budget), k)
                t["checkpoint_every"] = scaled_steps(base.train.checkpoint_every, k)
                t["warmup_steps"] = round(base.train.warmup_steps * k)
                t["threads"] = threads
                t.update(scale_for_batch(base.train, bs / biggest, rule))
                raw["log"]["every"] = scaled_steps(base.log.every, k)
                try:
                    cfg = Experiment.model_validate(raw)
                except ValueError as e:  # pydantic's ValidationError
                    raise CvlabError(f"norm={entry}, batch size {bs}: invalid config: {e}") from None
                out.append(Variant(entry, bs, base.seed + s, cfg, rule,
                                   scaled_steps(smooth_every, k) if smooth_every else None))
    return out



# --------------------------------------------------------------------------------------------- one variant

def _finished(run_dir: Path, steps: int) -> dict | None:
    """The variant's record if it needs no more work: done at its step budget, or diverged."""
    rec_path = run_dir / "variant.json"
    if not rec_path.is_file():
        return None
    rec = json.loads(rec_path.read_text())
    if rec.get("status") == "diverged":
        return rec
    if rec.get("status") == "done":
        m = run_dir / "metrics.json"
        if m.is_file() and json.loads(m.read_text()).get("step") == steps:
            return rec
    return None


def run_variant(cfg_json: dict, run_dir: str, smooth_every: int, progress: Progress | None = None) -> dict:
    """Train one variant (resuming from last.pt when there is one) and write its variant.json record.
    Module-level so `--jobs` can run it in a worker process."""
    from ..atomic import write_json
    from ..engine.device import pick_device
    from ..engine.train.loop import Diverged, TrainingInterrupted, train
    from ..engine.train.session import prepare

    cfg = Experiment.model_validate(cfg_json)
    run_dir = Path(run_dir)
    rec = {"status": "failed", "reason": ""}
    try:
        device = pick_device(cfg.train.device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        resume = (run_dir / "checkpoints" / "last.pt").is_file()
        progress = progress or NullProgress()
        session = prepare(cfg, progress)  # writes nothing; the probe needs its optimizer
        probe = Probe(cfg.log.every, smooth_every, cfg.train.grad_clip, session.optimizer)
        # the engine writes the run (config.yaml, env.json, lock), as for any other run
        train(cfg, run_dir, progress, resume=resume, probe=probe, session=session)
        rec = {"status": "done", "reason": "", **train_eval_gap(cfg, run_dir),
               "bn_layers": bn_layer_stats(cfg, run_dir), "peak_mem_mb": _peak_mem_mb(device.type)}
    except Diverged as e:
        rec = {"status": "diverged", "reason": str(e)}
    except (KeyboardInterrupt, TrainingInterrupted):  # Ctrl-C stops the comparison; a rerun resumes this variant
        write_json({"status": "interrupted", "reason": "interrupted"}, run_dir / "variant.json")
        raise
    except Exception as e:  # noqa: BLE001  (one failing variant must not stop the others)
        rec = {"status": "failed", "reason": str(e).splitlines()[0] if str(e) else type(e).__name__}
    write_json(rec, run_dir / "variant.json")
    return rec


# --------------------------------------------------------------------------------------------- the comparison

def compare_norms(base: Experiment, out_dir: Path, norms: list[str], batch_sizes: list[int], seeds: int = 1,
                  steps: int | None = None, lr_scaling: str | None = None, jobs: int = 1,
                  smooth_every: int | None = None, progress: Progress | None = None, launcher: str = "local",
                  gpus: list[int] | None = None, submitit: dict | None = None, dry_run: bool = False) -> dict:
    """Train every variant not yet finished under `out_dir`, then write summary.csv/json, plots and report.md.
    Returns {'rows': [...], 'table': [...], 'out': out_dir}. `launcher`/`gpus`/`submitit`: where the variants
    train (compare/launch.py); `dry_run` (submitit): say what would be submitted, train and write nothing."""
    from . import launch

    progress = progress or NullProgress()
    out_dir = Path(out_dir)
    if launcher not in launch.LAUNCHERS:
        raise CvlabError(f"--launcher {launcher}: unknown (valid: {', '.join(launch.LAUNCHERS)})")
    if gpus and launcher != "local":
        raise CvlabError("--gpus packs variants onto this machine's GPUs: use it with --launcher local (with "
                         "submitit, ask for GPUs per job: --submitit gpus_per_node=1)")
    if (submitit or dry_run) and launcher != "submitit":
        raise CvlabError("--submitit and --dry-run apply to --launcher submitit")
    if gpus:
        launch.check_gpus(gpus)
    variants = make_variants(base, norms, batch_sizes, seeds, steps, lr_scaling, jobs, smooth_every)
    check_writable(out_dir, "--out")
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = []
    for v in variants:
        if _finished(out_dir / v.name, v.cfg.train.steps):
            progress.message(f"{v.name}: finished earlier, skipped")
        else:
            todo.append(v)
    every = {v.name: v.smooth_every or max(1, v.cfg.train.steps // 10) for v in todo}
    if launcher == "submitit" and todo:
        launch.with_submitit(todo, out_dir, every, submitit or {}, progress, dry_run)
        if dry_run:
            return {"rows": [], "table": [], "out": out_dir, "dry_run": True}
    elif gpus and todo:
        launch.on_gpus(todo, out_dir, every, gpus, progress)
    elif jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
            # the most steps first (small batches: slowest per sample), so no long variant starts last
            longest_first = sorted(todo, key=lambda v: -v.cfg.train.steps)
            futures = {pool.submit(run_variant, v.cfg.model_dump(mode="json"), str(out_dir / v.name),
                                   every[v.name]): v for v in longest_first}
            progress.message(f"{len(todo)} variants, {jobs} at a time, {todo[0].cfg.train.threads} thread(s) each")
            for f in as_completed(futures):
                v = futures[f]
                try:
                    rec = f.result()
                except Exception as e:  # noqa: BLE001  (a crashed worker process)
                    rec = {"status": "failed", "reason": str(e) or type(e).__name__}
                progress.message(f"{v.name}: {rec['status']} {rec.get('reason', '')}".rstrip())
    else:
        for v in todo:
            progress.message(f"{v.name}: training {v.cfg.train.steps} steps at batch size {v.batch_size}, "
                             f"lr {v.cfg.train.lr:.3g} ({v.lr_scaling} scaling)")
            rec = run_variant(v.cfg.model_dump(mode="json"), str(out_dir / v.name), every[v.name])
            progress.message(f"{v.name}: {rec['status']} {rec.get('reason', '')}".rstrip())
    rows, curves = collect(variants, out_dir)
    table = aggregate(rows)
    write_outputs(out_dir, rows, table, curves, protocol(base, variants))
    return {"rows": rows, "table": table, "out": out_dir}


