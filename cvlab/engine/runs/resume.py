"""What may change when a run is resumed: the schedule-like keys (how long, how often to evaluate, log and
checkpoint, where and how fast to run). Everything else (model, data, optimizer, seed, augmentation) is the run
itself; changing it would silently train something that is neither the old run nor a new one."""

from __future__ import annotations

from pathlib import Path

from ...config import Experiment
from ...config.load import fill_added_keys
from ...errors import CvlabError

RESUMABLE = ("train.steps", "train.eval_every", "train.checkpoint_every", "train.threads", "train.device",
             "train.dist_timeout", "train.compile", "train.keep_checkpoints",
             "data.workers", "log.every", "log.image_grid", "log.tensorboard", "eval.batch_size",
             "eval.max_samples")


def _flat(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def _normalized(raw: dict) -> dict:
    """A checkpoint's config as today's schema resolves it (keys added since filled in as the run trained)."""
    try:
        return Experiment.model_validate(fill_added_keys(raw)).model_dump(mode="json")
    except ValueError:
        return raw


def changed_keys(saved: dict, cfg: Experiment) -> dict[str, tuple]:
    """{dotted key: (checkpoint value, new value)} for every key that differs."""
    old, new = _flat(_normalized(saved)), _flat(cfg.model_dump(mode="json"))
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def check_resume(saved: dict | None, cfg: Experiment, checkpoint: Path, also: tuple[str, ...] = ()) -> None:
    """CvlabError naming the first key that may not change between the checkpoint's config and `cfg`. `also`:
    keys this resume may change besides RESUMABLE (train.batch_size when the global batch stays the same on
    another number of processes)."""
    if not isinstance(saved, dict):
        return  # a checkpoint from before configs were stored in it: nothing to compare with
    changes = changed_keys(saved, cfg)
    for key, (old, new) in changes.items():
        if key == "name":
            continue  # a display name only
        if key not in RESUMABLE and key not in also:
            raise CvlabError(f"{key}: cannot change when resuming ({old!r} in {checkpoint}, {new!r} now); only "
                             f"{', '.join(RESUMABLE)} may; train a new run for a different model or data")
    if "train.steps" in changes and cfg.train.schedule == "onecycle":
        raise CvlabError("train.steps: cannot change when resuming a train.schedule=onecycle run (its schedule "
                         "is fixed by the step count it started with); train a new run")
