"""Starting and resuming a run: `start_run` and `resume_run` are what the CLI, compare-norms and notebooks
call, so every run gets the same complete directory, checked before it exists."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ...config import Experiment, load_saved_config
from ...errors import CvlabError
from ..progress import NullProgress, Progress
from ..runs.directory import check_writable, lock_owner, new_run_dir, refuse


def start_run(cfg: Experiment, runs_dir: Path = Path("runs"), *, name: str | None = None,
              progress: Progress | None = None, probe=None) -> tuple[Path, dict]:
    """Check everything (config, data, device, model), then create `runs_dir/<name>/<timestamp>/` and train
    in it. Returns (run directory, final metrics). Bad input fails before the folder exists."""
    from .. import distributed as dist
    from .loop import train
    from .session import prepare

    ctx = dist.context(cfg.train.device, cfg.train.dist_timeout)
    progress = (progress or NullProgress()) if ctx.main else NullProgress()
    if name:
        cfg = cfg.model_copy(deep=True)
        try:
            cfg.name = name
        except ValueError:  # pydantic's ValidationError: the name becomes a folder name
            raise CvlabError(f"--name {name}: use letters, digits, '.', '_' and '-' only") from None
    ctx.run_on_main(lambda: check_writable(runs_dir, "--runs-dir"), "checking --runs-dir")
    session = prepare(cfg, progress)
    # under torchrun rank 0 names the folder (a timestamp) and every rank trains "in" it; only rank 0 writes
    run_dir = ctx.run_on_main(lambda: new_run_dir(runs_dir, cfg.name), "creating the run directory")
    progress.message(f"run directory: {run_dir}")
    try:
        return run_dir, train(cfg, run_dir, progress, probe=probe, session=session)
    finally:
        if ctx.main and not run_dir.exists():  # removed as never checkpointed: drop runs/<name>/ too if now empty
            with contextlib.suppress(OSError):
                run_dir.parent.rmdir()


def resume_run(run_dir: Path, overrides: list[str] | tuple[str, ...] = (), progress: Progress | None = None,
               probe=None) -> tuple[Experiment, dict]:
    """Continue `run_dir` from its config.yaml and checkpoints/last.pt. `overrides` may change only the
    schedule-like keys (engine.runs.resume.RESUMABLE); everything is checked before any file is written."""
    from .loop import train

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CvlabError(f"--resume {run_dir}: not a run directory (no config.yaml)")
    owner = lock_owner(run_dir)
    if owner is not None:
        raise refuse(run_dir, owner)
    cfg = load_saved_config(run_dir / "config.yaml", overrides)
    return cfg, train(cfg, run_dir, progress, resume=True, probe=probe)
