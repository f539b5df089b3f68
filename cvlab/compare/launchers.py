"""Where compare-norms variants train:

- by default one after another in this process, or `--jobs K`: K spawned processes here at a time;

- `--gpus 0,1,2,3`: one variant per GPU of this machine at a time, each in a fresh process on its own GPU;
  the next variant starts on whichever GPU frees first.
- `--launcher submitit`: a Slurm job array through submitit (one job per variant, requeued on preemption or
  time-out; the requeued job resumes from the variant's last.pt). Without Slurm, submitit's local executor
  runs the same jobs as processes of this machine (what the tests use).

Whatever ran them, each variant is `worker.run_variant`: the same run directory, the same variant.json, so the
summary, resume-on-rerun (finished variants are skipped) and diverged-variant handling do not change.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from ..engine.progress import Progress
from ..errors import CvlabError
from .grid import Variant
from .worker import failed, run_variant

LAUNCHERS = ("local", "submitit")


def longest_first(todo: list[Variant]) -> list[Variant]:
    """The most steps first (small batches: slowest per sample), so no long variant starts last."""
    return sorted(todo, key=lambda v: -v.cfg.train.steps)


def _report(progress: Progress, name: str, rec: dict, where: str = "") -> None:
    for line in rec.get("messages", ()):  # what a variant trained in another process reported
        progress.message(f"{name}{where}: {line}")
    progress.message(f"{name}{where}: {rec['status']} {rec.get('reason', '')}".rstrip())


def launch(todo: list[Variant], out_dir: Path, every: dict, progress: Progress, *, launcher: str = "local",
           jobs: int = 1, gpus: list[int] | None = None, submitit: dict | None = None,
           dry_run: bool = False) -> None:
    """Train every variant in `todo` where the options say; each writes its own record (variant.json)."""
    if launcher == "submitit":
        with_submitit(todo, out_dir, every, submitit or {}, progress, dry_run=dry_run)
    elif gpus:
        on_gpus(todo, out_dir, every, gpus, progress)
    elif jobs > 1 and len(todo) > 1:
        in_processes(todo, out_dir, every, jobs, progress)
    else:
        one_after_another(todo, out_dir, every, progress)


def check_options(launcher: str, gpus: list[int] | None, submitit: dict | None, dry_run: bool) -> None:
    """Refuse combinations that mean nothing, before any variant is built."""
    if launcher not in LAUNCHERS:
        raise CvlabError(f"--launcher {launcher}: unknown (valid: {', '.join(LAUNCHERS)})")
    if gpus and launcher != "local":
        raise CvlabError("--gpus packs variants onto this machine's GPUs: use it with --launcher local (with "
                         "submitit, ask for GPUs per job: --submitit gpus_per_node=1)")
    if (submitit or dry_run) and launcher != "submitit":
        raise CvlabError("--submitit and --dry-run apply to --launcher submitit")
    if gpus:
        check_gpus(gpus)


# --------------------------------------------------------------------------------------------- here

def one_after_another(todo: list[Variant], out_dir: Path, every: dict, progress: Progress) -> None:
    for v in todo:
        progress.message(f"{v.name}: training {v.cfg.train.steps} steps at batch size {v.batch_size}, "
                         f"lr {v.cfg.train.lr:.3g} ({v.lr_scaling} scaling)")
        rec = run_variant(v.cfg.model_dump(mode="json"), str(out_dir / v.name), every[v.name], progress)
        _report(progress, v.name, rec)


def in_processes(todo: list[Variant], out_dir: Path, every: dict, jobs: int, progress: Progress) -> None:
    """`--jobs K`: K variants at a time, each in a fresh spawned process (its memory freed when it ends)."""
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        futures = {pool.submit(run_variant, v.cfg.model_dump(mode="json"), str(out_dir / v.name),
                               every[v.name]): v for v in longest_first(todo)}
        progress.message(f"{len(todo)} variants, {jobs} at a time, {todo[0].cfg.train.threads} thread(s) each")
        for f in as_completed(futures):
            try:
                rec = f.result()
            except Exception as e:  # noqa: BLE001  (a crashed worker process)
                rec = failed(e)
            _report(progress, futures[f].name, rec)


# --------------------------------------------------------------------------------------------- --gpus

def check_gpus(gpus: list[int]) -> None:
    import torch

    if not torch.cuda.is_available():
        raise CvlabError("--gpus: CUDA is not available here (train on the CPU without --gpus, or use "
                         "--jobs K for K variants at a time)")
    bad = [g for g in gpus if not 0 <= g < torch.cuda.device_count()]
    if bad or len(set(gpus)) != len(gpus):
        raise CvlabError(f"--gpus {','.join(map(str, gpus))}: this machine has GPUs 0-{torch.cuda.device_count() - 1}"
                         f"; name each at most once")


def _see_only(gpu: int) -> None:
    """In a fresh process, before CUDA starts: this GPU is its cuda:0 (peak-memory figures read the right one)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)


def on_gpus(todo: list[Variant], out_dir: Path, every: dict, gpus: list[int], progress: Progress) -> None:
    """Pack variants onto GPUs: a thread per GPU takes the next variant (most steps first) and trains it in a
    fresh spawned process that sees that GPU alone, so each variant's CUDA memory is freed when it ends."""
    check_gpus(gpus)
    queue = longest_first(todo)
    lock = threading.Lock()
    progress.message(f"{len(todo)} variants on GPUs {','.join(map(str, gpus))}, one per GPU at a time")

    def worker(gpu: int) -> None:
        ctx = get_context("spawn")
        while True:
            with lock:
                if not queue:
                    return
                v = queue.pop(0)
            cfg = v.cfg.model_dump(mode="json")
            cfg["train"]["device"] = "cuda"
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_see_only, initargs=(gpu,)) as pool:
                try:
                    rec = pool.submit(run_variant, cfg, str(out_dir / v.name), every[v.name]).result()
                except Exception as e:  # noqa: BLE001  (a crashed process: the other GPUs carry on)
                    rec = failed(e)
            _report(progress, v.name, rec, f" (GPU {gpu})")

    with ThreadPoolExecutor(max_workers=len(gpus)) as threads:
        for f in [threads.submit(worker, g) for g in gpus]:
            f.result()


# --------------------------------------------------------------------------------------------- submitit

class VariantJob:
    """One variant as a submitit job. On preemption or time-out submitit calls `checkpoint`, which requeues the
    same call: the new job resumes from the variant's last.pt (at most train.checkpoint_every steps lost)."""

    def __call__(self, cfg_json: dict, run_dir: str, smooth_every: int) -> dict:
        return run_variant(cfg_json, run_dir, smooth_every)

    def checkpoint(self, cfg_json: dict, run_dir: str, smooth_every: int):
        import submitit

        # this process holds the run's lock; the requeued job may start on another node, which could not tell
        # the lock is stale, so it is released here, just before this job ends
        lock = Path(run_dir) / "lock.json"
        with contextlib.suppress(OSError, ValueError):
            if json.loads(lock.read_text()).get("pid") == os.getpid():
                lock.unlink()
        return submitit.helpers.DelayedSubmission(self, cfg_json, run_dir, smooth_every)


def parse_options(options: list[str]) -> dict:
    """`--submitit KEY=VALUE` (values are YAML): executor parameters, e.g. slurm_partition=gpu,
    timeout_min=720, gpus_per_node=1, cpus_per_task=8, slurm_array_parallelism=16; `cluster=local|slurm`
    chooses the executor (default: Slurm when it is there, else local)."""
    import yaml

    out = {}
    for opt in options:
        key, sep, value = opt.partition("=")
        if not sep or not key.strip():
            raise CvlabError(f"--submitit {opt}: expected KEY=VALUE, e.g. --submitit slurm_partition=gpu")
        out[key.strip()] = yaml.safe_load(value)
    return out


def executor(folder: Path, options: dict):
    try:
        import submitit
    except ImportError:  # pragma: no cover  (a declared dependency)
        raise CvlabError("--launcher submitit: the submitit package is not installed (pip install submitit)") \
            from None
    opts = dict(options)
    ex = submitit.AutoExecutor(folder=folder, cluster=opts.pop("cluster", None))
    opts.setdefault("name", "cvlab-compare")
    try:
        ex.update_parameters(**opts)
    except (TypeError, ValueError, NameError) as e:  # an option this executor does not know
        raise CvlabError(f"--submitit: {str(e).splitlines()[0]}") from None
    return ex


def with_submitit(todo: list[Variant], out_dir: Path, every: dict, options: dict, progress: Progress, *,
                  dry_run: bool = False) -> None:
    """Submit one job per variant as one job array, wait for them, report each as it ends. `dry_run`: say what
    would be submitted and submit nothing."""
    import submitit

    folder = out_dir / "submitit"
    ex = executor(folder, options)
    progress.message(f"submitit ({ex.cluster}): {len(todo)} variant job(s), logs in {folder}")
    if dry_run:
        for v in todo:
            progress.message(f"  would submit {v.name}: {v.cfg.train.steps} steps at batch size {v.batch_size}")
        return
    job = VariantJob()
    args = [(v.cfg.model_dump(mode="json"), str(out_dir / v.name), every[v.name]) for v in todo]
    jobs = ex.map_array(job, *zip(*args, strict=True))  # one Slurm job array
    names = {j.job_id: v.name for j, v in zip(jobs, todo, strict=True)}
    # a cluster's scheduler is asked every 30 s (sacct is shared by everyone); local processes every half second
    poll = 0.5 if ex.cluster in ("local", "debug") else 30
    for j in submitit.helpers.as_completed(jobs, poll_frequency=poll):
        try:
            rec = j.result()
        except Exception as e:  # noqa: BLE001  (a job that failed outside the training code)
            rec = failed(e)
        _report(progress, names[j.job_id], rec, f" (job {j.job_id})")
