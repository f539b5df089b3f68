"""A run's session: everything it trains with (`Session`), built and checked by `prepare` before the run
directory exists, with the exact state a checkpoint stores and a resume restores.

Under torchrun every rank prepares its own session (same weights, its own device); a failure on any rank stops
all of them (engine/distributed.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...augment import build_pipeline
from ...config import Experiment
from ...data.loaders import datasets_for, report_lines
from ...data.sampling import batch_groups
from ...data.tokenizer import tokenizer_for
from ...errors import CvlabError
from ...models import build_model
from ...models.norms import traits
from .. import distributed as dist
from ..device import autocast, pick_device, resolve_amp, seed_everything
from ..distributed import DistContext
from ..progress import NullProgress, Progress
from ..runs.checkpoint import load_model_state, rng_state, save_checkpoint, set_rng_state
from .init_from import init_weights
from .optim import build_optimizer, build_scheduler
from .preflight import fit_training_labels, preflight


@dataclass
class Session:
    """Everything a run trains with, built and checked before its directory exists; `step`/`best` move on."""

    cfg: Experiment
    device: torch.device
    tokenizer: object
    train_sets: dict
    val_sets: dict
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    augment: torch.nn.Module
    learned: object  # the Learn-to-Augment op, trained alongside the recognizer (or None)
    scaler: torch.amp.GradScaler
    step: int = 0
    best: float = -1.0
    best_cer: float = float("inf")  # breaks word-accuracy ties (long Chinese lines score 0 for a long time)
    init_report: dict | None = None  # what train.init_from loaded (engine.train.init_from), written to the run
    samples: int = 0  # global position in the sample stream: where a resume continues, at any world size
    ctx: DistContext = field(default_factory=DistContext)
    forward: torch.nn.Module | None = None  # what the training forward goes through: DDP and/or torch.compile
    groups: list[list[int]] | None = None  # data.group_by: training samples batched in groups (batch_groups)

    @property
    def global_batch(self) -> int:
        return self.cfg.train.batch_size * self.ctx.world

    def state(self) -> dict:
        """The exact state of this step: resuming from it continues bit for bit as if never stopped."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
                "best": self.best, "best_cer": self.best_cer, "rng": rng_state(), "config": self.cfg.model_dump(mode="json"),
                "samples": self.samples, "world": self.ctx.world, "global_batch": self.global_batch,
                "charset": self.tokenizer.charset,
                "augment": self.learned.state() if self.learned is not None else None}  # the agent

    def restore(self, state: dict, path: Path) -> None:
        load_model_state(self.model, state["model"], path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.step, self.best = state["step"], state["best"]
            self.best_cer = state.get("best_cer", float("inf"))  # checkpoints from before it was kept
            # checkpoints from before `samples` was stored trained in one process
            self.samples = state.get("samples", self.step * self.cfg.train.batch_size)
            set_rng_state(state["rng"])
            if self.ctx.rank:  # rank 0's RNG was saved; the others draw their own (dropout) from here
                seed_everything(hash((self.cfg.seed, self.step, self.ctx.rank)) % 2**31)
            if self.learned is not None and state.get("augment"):
                self.learned.load_state(state["augment"])
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise CvlabError(f"{path}: the training state does not fit this config ({e.__class__.__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); resume with the run's own config") \
                from None

    def save(self, path: Path) -> None:
        if self.ctx.main:  # every rank holds the same weights (DDP); rank 0 writes them
            save_checkpoint(self.state(), path)


def prepare(cfg: Experiment, progress: Progress | None = None, init: bool = True) -> Session:
    """Build and check everything `cfg` trains with; writes nothing. Every problem the config or data can
    cause is a CvlabError here, before a run directory exists. Under torchrun every rank prepares, and a
    failure on any of them stops all of them."""
    ctx = dist.context(cfg.train.device, cfg.train.dist_timeout)
    try:
        s = _prepare(cfg, progress if ctx.main else None, ctx, init)
    except BaseException as e:
        ctx.all_ok(False, "preparation", e)
        raise
    ctx.all_ok(True, "preparation")
    return s


def _prepare(cfg: Experiment, progress: Progress | None, ctx: DistContext, init: bool) -> Session:
    progress = progress or NullProgress()
    t = cfg.train
    # everything below is a function of the config and the seed
    if t.threads:
        torch.set_num_threads(t.threads)
    device = pick_device(dist.device_for(t.device, ctx))
    syncs = traits(cfg.model.norm.name).syncs_across_ranks
    if syncs and device.type != "cuda":
        raise CvlabError(f"model.norm.name: {cfg.model.norm.name} (SyncBatchNorm) trains on CUDA GPUs only, under "
                         f"torchrun; this run is on {device}: use model.norm.name=batch (each process normalizes "
                         f"its own batch) or another norm")
    autocast(device, t.amp)  # fails early on an impossible amp/device pair
    amp, why = resolve_amp(device, t.amp)
    progress.message(f"device {device}, mixed precision {amp if amp != 'none' else 'off (fp32)'}: {why}")
    seed_everything(cfg.seed)
    tokenizer = tokenizer_for(cfg)
    if tokenizer.fold("Aa") != "Aa":
        progress.message(f"data.charset has letters of one case only: training labels are case-folded "
                         f"(\"Hello\" trains as \"{tokenizer.fold('Hello')}\")")
    train_sets = datasets_for(cfg, "train")
    val_sets = datasets_for(cfg, "val")
    if not train_sets:
        raise CvlabError("data.train: no training datasets")
    for name, ds in {**train_sets, **val_sets}.items():
        progress.message(f"dataset {name}: {len(ds)} samples")
        for line in report_lines(ds):  # dropped/adjusted samples, characters the charset cannot encode
            progress.message(f"  {name}: {line}")
    built = build_model(cfg.model, tokenizer.num_classes, cfg.data.image.channels)
    model = built.model.to(device)
    init_report = init_weights(model, cfg, tokenizer, progress) if init else None  # train.init_from
    # impossible combinations stop here (exit 2); reports group adjustments
    checked = preflight(model, cfg, device, progress=progress, adjustments=built.adjustments, degenerate=built.degenerate)
    train_sets = fit_training_labels(train_sets, cfg, tokenizer, steps=checked["steps"], progress=progress)  # no zero-loss labels
    groups = None
    if cfg.data.group_by != "none":  # non-i.i.d. batches: groups of samples sharing a source, form, page ...
        groups, lines = batch_groups(train_sets, cfg.data.group_by, cfg.data.group_size)
        if not groups:
            raise CvlabError(f"data.group_by: {cfg.data.group_by}: no group of {cfg.data.group_size} training "
                             "samples shares one")
        for line in lines:
            progress.message(f"data.group_by {cfg.data.group_by}: {line}")
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if syncs and ctx.enabled:
        # same parameters and buffers (state_dict keys unchanged), so saved weights load as plain BatchNorm2d
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if ctx.enabled:
        progress.message(f"torchrun: {ctx.world} processes ({device.type}), global batch {t.batch_size * ctx.world} "
                         f"= train.batch_size {t.batch_size} per process × {ctx.world}; "
                         + _norm_batch_note(cfg, ctx))
    optimizer = build_optimizer(model, t)
    scheduler = build_scheduler(optimizer, t)
    # built after the model, so the model's initial weights are the same with or without augmentation
    augment = build_pipeline(cfg.augment).to(device)
    if augment:
        progress.message(f"augment: {augment.describe()}")
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    forward = dist.wrap(model, device, ctx)
    if t.compile:
        progress.message("train.compile: the training forward is compiled on its first steps")
        forward = torch.compile(forward)
    if ctx.rank:  # the model is built (same weights everywhere); dropout masks differ between ranks from here
        seed_everything(cfg.seed + 7919 * ctx.rank)
    return Session(cfg, device, tokenizer, train_sets, val_sets, model, optimizer, scheduler, augment,
                   augment.learned, scaler, init_report=init_report, ctx=ctx,
                   forward=forward, groups=groups)


def _norm_batch_note(cfg: Experiment, ctx: DistContext) -> str:
    """The batch a norm's statistics see: per process for plain BN, the global batch for SyncBatchNorm."""
    name, bs = cfg.model.norm.name, cfg.train.batch_size
    if traits(name).syncs_across_ranks:
        return f"model.norm.name={name} normalizes over the global batch of {bs * ctx.world}"
    if traits(name).uses_batch_stats:
        return f"model.norm.name={name} normalizes each process's {bs} samples (sync_batch: the global batch)"
    return f"model.norm.name={name} uses no batch statistics"


def norm_batch(cfg: Experiment, world: int) -> int:
    """How many samples a norm layer's batch statistics see per step (logged with the hparams)."""
    return cfg.train.batch_size * (world if traits(cfg.model.norm.name).syncs_across_ranks else 1)
