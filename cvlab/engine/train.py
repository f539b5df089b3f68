"""The training loop: one function, every stage visible in order (nanoGPT style)."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..augment import build_pipeline, preview_grid, sample_images, step_generator
from ..config import Experiment, dump_config
from ..data.loaders import eval_loader, report_lines, train_loader
from ..errors import CvlabError
from ..models import build_model
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state, write_json
from .evaluate import evaluate
from .optim import build_optimizer, build_scheduler
from .preflight import fit_training_labels, preflight
from .progress import NullProgress, Progress
from .rundir import write_env
from .setup import autocast, datasets_for, pick_device, resolve_amp, seed_everything, tokenizer_for
from .tb import caption_grid, open_writer, write_hparams


class TrainingInterrupted(Exception):
    """Ctrl-C: the current step finished and last.pt was written; `step` is where a resume continues."""

    def __init__(self, run_dir: Path, step: int):
        super().__init__(f"interrupted at step {step}")
        self.run_dir, self.step = run_dir, step


class Diverged(Exception):
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
    m, t = cfg.model, cfg.train
    return {"backbone": m.backbone.name, "size": m.backbone.size, "norm": m.norm.name, "act": m.act,
            "sequence": m.sequence.name, "head": m.head.name, "batch_size": t.batch_size, "lr": t.lr,
            "optimizer": t.optimizer, "schedule": t.schedule, "steps": t.steps, "amp": t.amp, "seed": cfg.seed,
            "augment": ",".join(a.op for a in cfg.augment) or "none"}


def train(cfg: Experiment, run_dir: Path, progress: Progress | None = None, resume: bool = False,
          probe: Callable | None = None) -> dict:
    """Train `cfg` in `run_dir` (which holds config.yaml); returns the last metrics.json content.
    `probe(step, model, loss_fn) -> {tag: value}` (compare-norms' measurements) is called after every backward,
    before clipping and the optimizer step; it must leave weights, gradients, buffers and RNG as they were."""
    progress = progress or NullProgress()
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    t = cfg.train

    # --- setup: everything below is a function of the config and the seed
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
    learned = augment.learned  # the Learn-to-Augment op, trained alongside the recognizer (or None)
    if augment:
        progress.message(f"augment: {augment.describe()}")
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    # --- resume: the exact state of the step where the checkpoint was written
    step, best = 0, -1.0
    if resume and (ckpt_dir / "last.pt").is_file():
        state = load_checkpoint(ckpt_dir / "last.pt", map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, best = state["step"], state["best"]
        set_rng_state(state["rng"])
        if learned is not None and state.get("augment"):
            learned.load_state(state["augment"])
        progress.message(f"resuming {run_dir} at step {step}")
    write_env(run_dir, str(device), cfg.seed)

    writer = open_writer(run_dir, cfg.log.tensorboard, purge_step=step if step else None)
    if writer and step == 0:
        writer.add_text("config", "```yaml\n" + dump_config(cfg) + "\n```", 0)
        if augment:  # originals beside their augmented versions: one row per op, one for the whole pipeline
            grid = preview_grid(augment, sample_images(train_sets, 8).to(device),
                                step_generator(cfg.seed, -1, device))
            writer.add_image("augment/preview", grid, 0, dataformats="HWC")

    def checkpoint(path: Path) -> None:
        save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step,
                         "best": best, "rng": rng_state(), "config": cfg.model_dump(mode="json"),
                         "charset": tokenizer.charset,
                         "augment": learned.state() if learned is not None else None}, path)  # the agent

    metrics: dict = {}
    loader = train_loader(train_sets, t.batch_size, cfg.seed, t.steps, step, cfg.data.workers)
    progress.start(total=t.steps, done=step)
    tick, tick_samples = time.perf_counter(), 0
    loss_value = float("nan")  # the last trained batch's loss, for logging
    model.train()
    with _StopFlag() as stop:
        for images, labels in loader:
            # a batch whose images were all unreadable (the loader counted them) updates nothing, but its step
            # still passes: step numbers stay the sampler's, so evals, the final checkpoint and resume hold
            if len(labels):
                # --- augment: training batches only, on the device; a function of (seed, step), so reruns and
                # resumes see the same batches
                images = images.to(device, non_blocking=True)
                if augment:
                    images = augment(images, step_generator(cfg.seed, step, device))

                # --- forward and loss
                if t.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                targets, lengths = tokenizer.encode_batch(labels)
                targets, lengths = targets.to(device), lengths.to(device)
                with autocast(device, t.amp):
                    logits = model(images, targets, lengths)
                loss = model.loss(logits, targets, lengths)
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise Diverged(step, loss_value)

                # --- the learned op's agent (Learn to Augment) updates before the recognizer does, so the two losses
                # it compares (learned vs random warps) come from the same weights
                if learned is not None:
                    learned.learn(model, logits, targets, lengths, autocast(device, t.amp))

                # --- backward, clip, step, schedule
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if probe is not None:
                    def loss_fn(images=images, targets=targets, lengths=lengths):  # this batch, at the current weights
                        with autocast(device, t.amp):
                            return model.loss(model(images, targets, lengths), targets, lengths)
                    for tag, value in probe(step + 1, model, loss_fn).items():
                        if writer:
                            writer.add_scalar(tag, value, step + 1)
                if t.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                scaler.step(optimizer)
                scaler.update()
            scheduler.step()
            step += 1
            tick_samples += len(labels)

            # --- log
            lr = optimizer.param_groups[0]["lr"]
            if step % cfg.log.every == 0 or step == t.steps:
                now = time.perf_counter()
                sps = tick_samples / max(1e-9, now - tick)
                tick, tick_samples = now, 0
                if writer:
                    writer.add_scalar("train/loss", loss_value, step)
                    writer.add_scalar("train/lr", lr, step)
                    writer.add_scalar("train/samples_per_s", sps, step)
                    for k, v in (learned.pop_stats() if learned is not None else {}).items():
                        writer.add_scalar(f"augment/{k}", v, step)
                progress.update(step, loss=loss_value, lr=lr, samples_per_s=sps)
            else:
                progress.update(step, loss=loss_value, lr=lr)

            # --- evaluate, checkpoint
            if step % t.eval_every == 0 or step == t.steps:
                metrics = {"step": step, "datasets": {}}
                for i, (name, ds) in enumerate(val_sets.items()):
                    keep = cfg.log.image_grid if i == 0 else 0
                    result, (gi, gl, gp) = evaluate(
                        model, eval_loader(ds, cfg.eval.batch_size, cfg.data.workers, cfg.eval.max_samples),
                        tokenizer, cfg.eval.protocol, device, t.amp, t.channels_last, keep)
                    metrics["datasets"][name] = result
                    if writer:
                        for k in ("word_acc", "cer", "one_minus_ned"):
                            writer.add_scalar(f"val/{name}/{k}", result[k], step)
                        if gi is not None:
                            writer.add_image(f"val/{name}/samples", caption_grid(gi, gl, gp), step,
                                             dataformats="HWC")
                    progress.message(f"step {step}: {name} word_acc {result['word_acc']:.4f} "
                                     f"cer {result['cer']:.4f} ({result['samples']} samples)")
                for line in loader.new_problems():  # training images that failed to decode so far
                    progress.message(f"train data: {line}")
                first = next(iter(metrics["datasets"].values()), None)
                if first is not None and first["word_acc"] > best:
                    best = first["word_acc"]
                    checkpoint(ckpt_dir / "best.pt")
                metrics["best_word_acc"] = best
                checkpoint(ckpt_dir / "last.pt")
                write_json(metrics, run_dir / "metrics.json")
                if writer:
                    writer.flush()

            if stop.set:
                checkpoint(ckpt_dir / "last.pt")
                if writer:
                    writer.close()
                progress.stop()
                raise TrainingInterrupted(run_dir, step)

    progress.stop()
    if not val_sets:  # nothing to choose a best by: the final weights are the best we have
        checkpoint(ckpt_dir / "best.pt")
        checkpoint(ckpt_dir / "last.pt")
    if writer:
        first = next(iter(metrics.get("datasets", {}).items()), None)
        if first:
            # the hparams dashboard reads each metric's value from the run's scalars with that tag
            tags = (f"val/{first[0]}/word_acc", f"val/{first[0]}/cer", "train/loss", "train/samples_per_s")
            write_hparams(writer, hparams_of(cfg), dict.fromkeys(tags, 0.0))
        writer.close()
    return metrics
