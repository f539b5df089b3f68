"""The compare-norms grid: norm × batch size × seed variants under one of three protocols (PROTOCOLS), each a
validated config with its budget set so every variant sees the same samples. Nothing here trains or writes."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import Experiment
from ..errors import CvlabError
from ..models.norms import NORMS, traits

PROTOCOLS = {
    "per-device": "--batch-sizes are images per BN statistic (per device, as the Group Normalization paper "
                  "counts them); every variant steps on train.batch_size images for the same steps, BN taking its "
                  "statistics over groups of b of them (model.norm.ghost_batch); norms without batch statistics "
                  "do not depend on b and are trained once per seed, shown in every column",
    "paper": "the paper's layout: D devices (--devices) of b images each, the step on D·b images, BN statistics per "
             "device (ghost_batch b), steps and the optimizer's settings scaled by D·b",
    "per-step": "--batch-sizes are the step's batch (BN statistics over all of it): a batch k times smaller takes "
                "k× the steps (the same samples seen), so optimizer noise changes with the normalization's batch",
}
GROUPINGS = {  # the `/x` of a --norms entry: how the b images behind each BN statistic are composed
    "iid": "independent samples",
    "source": "b samples rendered from one synthetic source (font, colours, layout, stages), different words",
    "word": "b samples of one source and one word (only the noise grain differs)",
    "writer": "b samples of one writer", "form": "b lines/words of one form", "page": "b lines of one page",
    "image": "b words of one photograph",
}


@dataclass
class Variant:
    norm: str  # the --norms entry: a norm name, name@position, and /grouping
    batch_size: int  # b: images per BN statistic (per-device, paper) or per step (per-step)
    seed: int
    cfg: Experiment
    lr_scaling: str = "none"
    smooth_every: int | None = None  # the probe interval, in this variant's steps (None: 10 per run)
    protocol: str = "per-step"
    shared: bool = False  # per-device: a norm without batch statistics, trained once and shown for every b

    @property
    def shared_across_batch_sizes(self) -> bool:  # the row field report.collect reads (stats.SHARED)
        return self.shared

    @property
    def name(self) -> str:
        norm = self.norm.partition(":")[0].replace("/", "+")  # a folder name
        if self.protocol == "per-step":
            return f"norm={norm},bs={self.batch_size},seed={self.seed}"
        b = "any" if self.shared else self.batch_size
        return f"norm={norm},b={b},seed={self.seed}"


def only_at(entry: str) -> set[int] | None:
    """`batch/source:2` -> {2}: the batch sizes this entry runs at (None: every --batch-sizes value)."""
    sizes = entry.partition(":")[2]
    if not sizes:
        return None
    try:
        return {int(b) for b in sizes.split("+")}
    except ValueError:
        raise CvlabError(f"--norms {entry}: after ':' come batch sizes joined by '+', e.g. batch/source:2") from None


def parse_norm(entry: str) -> tuple[str, str | None]:
    """`group` -> ('group', None: its published position); `batch@after_act` -> ('batch', 'after_act');
    a `/grouping` suffix is the batches' composition (grouping), a `:b` suffix its batch sizes (only_at)."""
    name, _, position = entry.partition(":")[0].partition("/")[0].partition("@")
    if name not in NORMS:
        raise CvlabError(f"--norms: unknown norm {name} (valid: {', '.join(NORMS)})")
    if position and position not in POSITIONS:
        raise CvlabError(f"--norms {entry}: unknown position {position!r} (valid: {', '.join(POSITIONS)})")
    return name, position or None


def grouping(entry: str) -> str:
    """`batch/source` -> 'source'; no suffix -> 'iid'."""
    g = entry.partition(":")[0].partition("/")[2] or "iid"
    if g not in GROUPINGS:
        raise CvlabError(f"--norms {entry}: unknown batch composition /{g} (valid: {', '.join(GROUPINGS)})")
    return g


POSITIONS = ("before_act", "after_act")


def scaled_steps(n: int, k: float) -> int:
    """A step-counted setting for a run with k× the steps: the same point in samples seen."""
    return max(1, round(n * k))


def _compose(raw: dict, how: str, b: int, entry: str) -> None:
    """Training batches whose groups of b share a source (or word, writer, form, page, photograph)."""
    if how == "iid":
        return
    raw["data"]["group_by"] = "source" if how in ("source", "word") else how
    raw["data"]["group_size"] = b
    if how in ("source", "word"):
        synth = [d for d in raw["data"]["train"] if d["type"] == "synth"]
        if not synth:
            raise CvlabError(f"--norms {entry}: /{how} renders shared sources: it needs a synth training set")
        for d in synth:
            d["same_source"], d["same_word"] = b, how == "word"


def make_variants(base: Experiment, norms: list[str], batch_sizes: list[int], seeds: int, *, steps: int | None = None,
                  lr_scaling: str | None = None, jobs: int = 1, smooth_every: int | None = None,
                  protocol: str = "per-device", devices: int = 8) -> list[Variant]:
    """Validated configs for every norm × batch size × seed; raises CvlabError on an unknown norm or rule.

    The protocol (report.md states it; PROTOCOLS): under `per-step` (and `paper`, on D·b) `steps`,
    `smooth_every` and the base's learning rate are meant for the largest batch; a batch k times smaller takes
    k× every step-counted setting (steps, warm-up, eval, checkpoint and log intervals, batch renorm's
    relaxation, the probe interval), so each variant sees the same schedule in samples, and its optimizer
    settings follow `lr_scaling` (None: the optimizer's default, engine.train.optim.DEFAULT_LR_SCALING).
    Under `per-device` every variant takes the base's steps at train.batch_size."""
    from ..config.model import NORM_OPTIONS
    from ..engine.train.optim import DEFAULT_LR_SCALING, LR_SCALING, scale_for_batch

    if not norms or not batch_sizes or seeds < 1:
        raise CvlabError("--norms and --batch-sizes need at least one value, --seeds at least 1")
    if protocol not in PROTOCOLS:
        raise CvlabError(f"--protocol {protocol}: unknown (valid: {', '.join(PROTOCOLS)})")
    parsed = [(parse_norm(n), grouping(n)) for n in norms]
    for n in norms:
        if (sizes := only_at(n)) and not sizes <= set(batch_sizes):
            raise CvlabError(f"--norms {n}: {', '.join(map(str, sorted(sizes - set(batch_sizes))))} is not among "
                             f"--batch-sizes {','.join(map(str, batch_sizes))}")
    if any(b < 1 for b in batch_sizes):
        raise CvlabError("--batch-sizes: every batch size must be at least 1")
    if devices < 1:
        raise CvlabError("--devices: at least 1")
    rule = lr_scaling or DEFAULT_LR_SCALING[base.train.optimizer]
    if rule not in LR_SCALING:
        raise CvlabError(f"--lr-scaling {rule}: unknown rule (valid: {', '.join(LR_SCALING)})")
    step_batch = {b: base.train.batch_size if protocol == "per-device" else b * (devices if protocol == "paper" else 1)
                  for b in batch_sizes}
    if protocol == "per-device" and max(batch_sizes) > base.train.batch_size:
        raise CvlabError(f"--batch-sizes {max(batch_sizes)}: per device, b is at most the step's batch "
                         f"(train.batch_size {base.train.batch_size})")
    biggest = max(step_batch.values())
    budget = steps or base.train.steps
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else base.train.threads
    out, done_shared = [], set()
    for b in batch_sizes:
        bs = step_batch[b]
        k = biggest / bs  # same samples seen: k× the steps at 1/k of the batch
        for entry, ((norm, position), how) in zip(norms, parsed, strict=True):
            if (sizes := only_at(entry)) and b not in sizes:
                continue
            batch_stats = traits(norm).uses_batch_stats
            if how != "iid" and not batch_stats:
                raise CvlabError(f"--norms {entry}: {norm} takes no statistics over the batch, so how the batch is "
                                 "composed cannot matter to it; compose batches for batch-statistics norms only")
            shared = protocol == "per-device" and not batch_stats
            ghost = b if protocol != "per-step" and batch_stats and b < bs else None
            if ghost and NORM_OPTIONS["ghost_batch"] != norm:
                raise CvlabError(f"--norms {entry}: per-device statistics (model.norm.ghost_batch) exist for "
                                 f"{NORM_OPTIONS['ghost_batch']} only; use --protocol per-step for {norm}")
            for s in range(seeds):
                if shared and (entry, s) in done_shared:
                    continue
                done_shared.add((entry, s))
                raw = base.model_dump(mode="json")
                raw["seed"] = base.seed + s
                n = raw["model"]["norm"]
                n["name"] = norm
                for key, owner in NORM_OPTIONS.items():  # other norms' options back to neutral (or validation refuses)
                    if owner != norm:
                        n[key] = type(base.model.norm).model_fields[key].default
                if position:
                    n["position"] = position
                n["ghost_batch"] = ghost  # None: the statistics are the whole step's batch
                relaxation = traits(norm).relaxation  # a step-counted schedule: k× the steps, k× as long
                if relaxation:
                    n[relaxation] = scaled_steps(getattr(base.model.norm, relaxation), k)
                _compose(raw, how, b, entry)
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
                    raise CvlabError(f"norm={entry}, batch size {b}: invalid config: {e}") from None
                out.append(Variant(entry, b, base.seed + s, cfg, rule,
                                   scaled_steps(smooth_every, k) if smooth_every else None, protocol, shared))
    return out


def is_baseline(entry: str) -> bool:
    """Whether a --norms entry is the norm the others are measured against, at its published position."""
    name, position = parse_norm(entry)
    return traits(name).baseline and position is None and grouping(entry) == "iid"


def baseline_name() -> str:
    return next(name for name in NORMS if traits(name).baseline)
