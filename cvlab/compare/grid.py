"""The compare-norms grid: norm × batch size × seed variants, each a validated config with its budget scaled so
every variant sees the same samples. Nothing here trains or writes."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import Experiment
from ..errors import CvlabError
from ..models.norms import NORMS, traits


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


def parse_norm(entry: str) -> tuple[str, str | None]:
    """`group` -> ('group', None: its published position); `batch@after_act` -> ('batch', 'after_act')."""
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


def make_variants(base: Experiment, norms: list[str], batch_sizes: list[int], seeds: int, *, steps: int | None = None,
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
                relaxation = traits(norm).relaxation  # a step-counted schedule: k× the steps, k× as long
                if relaxation:
                    n[relaxation] = scaled_steps(getattr(base.model.norm, relaxation), k)
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


def is_baseline(entry: str) -> bool:
    """Whether a --norms entry is the norm the others are measured against, at its published position."""
    name, position = parse_norm(entry)
    return traits(name).baseline and position is None


def baseline_name() -> str:
    return next(name for name in NORMS if traits(name).baseline)
