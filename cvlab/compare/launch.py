"""Where compare-norms variants train, besides the default (one after another, or `--jobs K` processes here):

- `--gpus 0,1,2,3`: one variant per GPU of this machine at a time, each in a fresh process on its own GPU;
  the next variant starts on whichever GPU frees first.
- `--launcher submitit`: a Slurm job array through submitit (one job per variant, requeued on preemption or
  time-out; the requeued job resumes from the variant's last.pt). Without Slurm, submitit's local executor
  runs the same jobs as processes of this machine (what the tests use).

Whatever ran them, each variant is `variants.run_variant`: the same run directory, the same variant.json, so the
summary, resume-on-rerun (finished variants are skipped) and diverged-variant handling do not change.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from ..engine.progress import Progress
from ..errors import CvlabError

LAUNCHERS = ("local", "submitit")


def _failed(e: BaseException) -> dict:
    return {"status": "failed", "reason": str(e).splitlines()[0] if str(e) else type(e).__name__}


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


def on_gpus(todo: list, out_dir: Path, every: dict, gpus: list[int], progress: Progress) -> None:
    """Pack variants onto GPUs: a thread per GPU takes the next variant (most steps first) and trains it in a
    fresh spawned process that sees that GPU alone, so each variant's CUDA memory is freed when it ends."""
    from .variants import run_variant

    check_gpus(gpus)
    queue = sorted(todo, key=lambda v: -v.cfg.train.steps)
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
                    rec = _failed(e)
            progress.message(f"{v.name} (GPU {gpu}): {rec['status']} {rec.get('reason', '')}".rstrip())

    with ThreadPoolExecutor(max_workers=len(gpus)) as threads:
        for f in [threads.submit(worker, g) for g in gpus]:
            f.result()


# --------------------------------------------------------------------------------------------- submitit

class VariantJob:
    """One variant as a submitit job. On preemption or time-out submitit calls `checkpoint`, which requeues the
    same call: the new job resumes from the variant's last.pt (at most train.checkpoint_every steps lost)."""

    def __call__(self, cfg_json: dict, run_dir: str, smooth_every: int) -> dict:
        from .variants import run_variant

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


def with_submitit(todo: list, out_dir: Path, every: dict, options: dict, progress: Progress,
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
            rec = _failed(e)
        progress.message(f"{names[j.job_id]} (job {j.job_id}): {rec['status']} {rec.get('reason', '')}".rstrip())
