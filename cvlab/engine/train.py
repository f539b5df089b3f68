"""The training loop: one function, every stage visible in order (nanoGPT style).

`prepare` builds and checks everything a run needs (config, datasets, device, model, preflight) before the run
directory is touched, so bad input leaves nothing behind; `train` then opens the run (config.yaml, env.json, the
lock; see rundir.open_run), restores the checkpoint when resuming, and loops."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..augment import build_pipeline, preview_grid, sample_images, step_generator
from ..config import Experiment, dump_config
from ..data.loaders import eval_loader, report_lines, train_loader
from ..errors import CvlabError
from ..models import build_model
from .checkpoint import load_checkpoint, load_model_state, rng_state, save_checkpoint, set_rng_state
from .evaluate import evaluate
from .optim import build_optimizer, build_scheduler
from .preflight import fit_training_labels, preflight
from .progress import NullProgress, Progress
from .resume import check_resume
from .rundir import lock_owner, open_run, read_json, refuse, write_json
from .setup import autocast, datasets_for, pick_device, resolve_amp, seed_everything, tokenizer_for
from .tb import caption_grid, open_writer, write_hparams


class TrainingInterrupted(Exception):
    """Ctrl-C: the current step finished and last.pt was written; `step` is where a resume continues."""

    status = "interrupted"  # what rundir.open_run records in status.json

    def __init__(self, run_dir: Path, step: int):
        super().__init__(f"interrupted at step {step}")
        self.run_dir, self.step = run_dir, step


class Diverged(Exception):
    status = "diverged"

    def __init__(self, step: int, loss: float):
        super().__init__(f"loss became {loss} at step {step}; lower train.lr or enable train.grad_clip")
        self.step, self.loss = step, loss


class _StopFlag:
    """First SIGINT: finish the step, checkpoint, stop. Second SIGINT: stop at once."""

    def __init__(self):
        self.set = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)



def hparams_of(cfg: Experiment) -> dict:
    """What the HParams dashboard shows (TensorBoard puts those that differ between the runs it shows first)."""
    m, t = cfg.model, cfg.train
    return {"norm": m.norm.name, "lr": t.lr, "batch_size": t.batch_size, "backbone": m.backbone.name,
            "size": m.backbone.size, "act": m.act, "sequence": m.sequence.name, "head": m.head.name,
            "optimizer": t.optimizer, "schedule": t.schedule, "steps": t.steps, "amp": t.amp, "seed": cfg.seed,
            "augment": ",".join(a.op for a in cfg.augment) or "none"}


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

    def state(self) -> dict:
        """The exact state of this step: resuming from it continues bit for bit as if never stopped."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
                "best": self.best, "rng": rng_state(), "config": self.cfg.model_dump(mode="json"),
                "charset": self.tokenizer.charset,
                "augment": self.learned.state() if self.learned is not None else None}  # the agent

    def restore(self, state: dict, path: Path) -> None:
        load_model_state(self.model, state["model"], path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.step, self.best = state["step"], state["best"]
            set_rng_state(state["rng"])
            if self.learned is not None and state.get("augment"):
                self.learned.load_state(state["augment"])
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise CvlabError(f"{path}: the training state does not fit this config ({e.__class__.__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}); resume with the run's own config") \
                from None

    def save(self, path: Path) -> None:
        save_checkpoint(self.state(), path)


def prepare(cfg: Experiment, progress: Progress | None = None) -> Session:
    """Build and check everything `cfg` trains with; writes nothing. Every problem the config or data can
    cause is a CvlabError here, before a run directory exists."""
    progress = progress or NullProgress()
    t = cfg.train
    # everything below is a function of the config and the seed
    if t.threads:
        torch.set_num_threads(t.threads)
    device = pick_device(t.device)
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
    model = build_model(cfg.model, tokenizer.num_classes, cfg.data.image.channels).to(device)
    checked = preflight(model, cfg, device, progress)  # impossible combinations stop here (exit 2); reports group adjustments
    train_sets = fit_training_labels(train_sets, cfg, tokenizer, checked["steps"], progress)  # no zero-loss labels
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, t)
    scheduler = build_scheduler(optimizer, t)
    # built after the model, so the model's initial weights are the same with or without augmentation
    augment = build_pipeline(cfg.augment).to(device)
    if augment:
        progress.message(f"augment: {augment.describe()}")
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    return Session(cfg, device, tokenizer, train_sets, val_sets, model, optimizer, scheduler, augment,
                   augment.learned, scaler)


def train(cfg: Experiment, run_dir: Path, progress: Progress | None = None, resume: bool = False,
          probe: Callable | None = None, session: Session | None = None) -> dict:
    """Train `cfg` in `run_dir` (created when missing; config.yaml, env.json and the lock are written here);
    returns the last metrics.json content. `resume`: continue from checkpoints/last.pt when there is one, after
    checking the config against it. `session`: an already prepared `prepare(cfg)` (start_run checks before it
    creates the folder). `probe(step, model, loss_fn) -> {tag: value}` (compare-norms' measurements) is called
    after every backward, before clipping and the optimizer step; it must leave weights, gradients, buffers and
    RNG as they were."""
    progress = progress or NullProgress()
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    state = None
    if resume and last.is_file():  # read-only checks first: a refused resume changes no file
        owner = lock_owner(run_dir)
        if owner is not None:
            raise refuse(run_dir, owner)
        state = load_checkpoint(last, map_location="cpu")
        check_resume(state.get("config"), cfg, last)
    s = session or prepare(cfg, progress)
    if state is not None:
        s.restore(state, last)
        progress.message(f"resuming {run_dir} at step {s.step}")
    with open_run(run_dir, cfg, str(s.device), progress, step=lambda: s.step):
        return _loop(s, run_dir, progress, probe)


def _loop(s: Session, run_dir: Path, progress: Progress, probe: Callable | None) -> dict:
    cfg, t = s.cfg, s.cfg.train
    ckpt_dir = run_dir / "checkpoints"
    writer = open_writer(run_dir, cfg.log.tensorboard, purge_step=s.step or None)
    if writer and s.step == 0:
        writer.add_text("config", "```yaml\n" + dump_config(cfg) + "\n```", 0)
        if s.augment:  # originals beside their augmented versions: one row per op, one for the whole pipeline
            grid = preview_grid(s.augment, sample_images(s.train_sets, 8).to(s.device),
                                step_generator(cfg.seed, -1, s.device))
            writer.add_image("augment/preview", grid, 0, dataformats="HWC")

    metrics: dict = read_json(run_dir / "metrics.json") if s.step else {}
    loader = train_loader(s.train_sets, t.batch_size, cfg.seed, t.steps, s.step, cfg.data.workers)
    progress.start(total=t.steps, done=s.step)
    tick, tick_samples = time.perf_counter(), 0
    loss_value = float("nan")  # the last trained batch's loss, for logging
    s.model.train()
    with _StopFlag() as stop:
        for images, labels in loader:
            # a batch whose images were all unreadable (the loader counted them) updates nothing, but its step
            # still passes: step numbers stay the sampler's, so evals, checkpoints and resume hold
            if len(labels):
                loss_value = _train_step(s, images, labels, writer, probe)
            s.scheduler.step()
            s.step += 1
            tick_samples += len(labels)

            # --- log
            lr = s.optimizer.param_groups[0]["lr"]
            if s.step % cfg.log.every == 0 or s.step == t.steps:
                now = time.perf_counter()
                sps = tick_samples / max(1e-9, now - tick)
                tick, tick_samples = now, 0
                if writer:
                    writer.add_scalar("train/loss", loss_value, s.step)
                    writer.add_scalar("train/lr", lr, s.step)
                    writer.add_scalar("train/samples_per_s", sps, s.step)
                    for k, v in (s.learned.pop_stats() if s.learned is not None else {}).items():
                        writer.add_scalar(f"augment/{k}", v, s.step)
                progress.update(s.step, loss=loss_value, lr=lr, samples_per_s=sps)
            else:
                progress.update(s.step, loss=loss_value, lr=lr)

            # --- evaluate and checkpoint; between evaluations, last.pt every checkpoint_every steps, so a
            # killed run loses at most that many
            if s.step % t.eval_every == 0 or s.step == t.steps:
                metrics = _evaluate_and_checkpoint(s, run_dir, writer, progress)
                for line in loader.new_problems():  # training images that failed to decode so far
                    progress.message(f"train data: {line}")
            elif s.step % t.checkpoint_every == 0:
                s.save(ckpt_dir / "last.pt")

            if stop.set:
                s.save(ckpt_dir / "last.pt")
                if writer:
                    writer.close()
                progress.stop()
                raise TrainingInterrupted(run_dir, s.step)

    progress.stop()
    if not s.val_sets:  # nothing to choose a best by: the final weights are the best we have
        s.save(ckpt_dir / "best.pt")
        s.save(ckpt_dir / "last.pt")
    if writer:
        write_hparams(writer, hparams_of(cfg))
        writer.close()
    return metrics


def _train_step(s: Session, images: torch.Tensor, labels: list[str], writer, probe: Callable | None) -> float:
    """One optimizer step on one batch; returns its loss."""
    cfg, t, model, device = s.cfg, s.cfg.train, s.model, s.device
    # --- augment: training batches only, on the device; a function of (seed, step), so reruns and resumes see
    # the same batches
    images = images.to(device, non_blocking=True)
    if s.augment:
        images = s.augment(images, step_generator(cfg.seed, s.step, device))

    # --- forward and loss
    if t.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets, lengths = s.tokenizer.encode_batch(labels)
    targets, lengths = targets.to(device), lengths.to(device)
    with autocast(device, t.amp):
        logits = model(images, targets, lengths)
    loss = model.loss(logits, targets, lengths)
    loss_value = loss.item()
    if not math.isfinite(loss_value):
        raise Diverged(s.step, loss_value)

    # --- the learned op's agent (Learn to Augment) updates before the recognizer does, so the two losses it
    # compares (learned vs random warps) come from the same weights
    if s.learned is not None:
        s.learned.learn(model, logits, targets, lengths, autocast(device, t.amp))

    # --- backward, clip, step
    s.optimizer.zero_grad(set_to_none=True)
    s.scaler.scale(loss).backward()
    if probe is not None:
        def loss_fn(images=images, targets=targets, lengths=lengths):  # this batch, at the current weights
            with autocast(device, t.amp):
                return model.loss(model(images, targets, lengths), targets, lengths)
        for tag, value in probe(s.step + 1, model, loss_fn).items():
            if writer:
                writer.add_scalar(tag, value, s.step + 1)
    if t.grad_clip:
        s.scaler.unscale_(s.optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    s.scaler.step(s.optimizer)
    s.scaler.update()
    return loss_value


def _evaluate_and_checkpoint(s: Session, run_dir: Path, writer, progress: Progress) -> dict:
    """Score every val set, log it, write best.pt (first val set's word accuracy), last.pt, metrics.json."""
    cfg, t = s.cfg, s.cfg.train
    metrics: dict = {"step": s.step, "datasets": {}}
    for i, (name, ds) in enumerate(s.val_sets.items()):
        keep = cfg.log.image_grid if i == 0 else 0
        result, (gi, gl, gp) = evaluate(
            s.model, eval_loader(ds, cfg.eval.batch_size, cfg.data.workers, cfg.eval.max_samples),
            s.tokenizer, cfg.eval.protocol, s.device, t.amp, t.channels_last, keep)
        metrics["datasets"][name] = result
        if writer:
            for k in ("word_acc", "cer", "one_minus_ned"):
                writer.add_scalar(f"val/{name}/{k}", result[k], s.step)
            if gi is not None:
                writer.add_image(f"val/{name}/samples", caption_grid(gi, gl, gp), s.step, dataformats="HWC")
        progress.message(f"step {s.step}: {name} word_acc {result['word_acc']:.4f} "
                         f"cer {result['cer']:.4f} ({result['samples']} samples)")
        if result.get("unreadable"):  # never silently scored on fewer samples than the set has
            ex = "; ".join(result.get("unreadable_examples", [])[:3])
            progress.message(f"step {s.step}: {name}: {result['unreadable']} val images unreadable, not scored "
                             f"(e.g. {ex})")
    first = next(iter(metrics["datasets"].values()), None)
    if first is not None and first["word_acc"] > s.best:
        s.best = first["word_acc"]
        s.save(run_dir / "checkpoints" / "best.pt")
    metrics["best_word_acc"] = s.best
    s.save(run_dir / "checkpoints" / "last.pt")
    write_json(metrics, run_dir / "metrics.json")
    if writer:
        writer.flush()
    return metrics
