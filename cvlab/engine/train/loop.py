"""The training loop: one function, every stage visible in order (nanoGPT style).

`prepare` (train/session.py) builds and checks everything a run needs (config, datasets, device, model,
preflight) before the run directory is touched, so bad input leaves nothing behind; `train` then opens the run (config.yaml, env.json, the
lock; see rundir.open_run), restores the checkpoint when resuming, and loops.

Under torchrun (engine/distributed.py) the same loop runs in every process: each rank trains on its slice of the global
batch (`batch_size` per process), DDP averages gradients, evaluation is sharded and summed, and rank 0 alone
writes (TensorBoard, checkpoints, metrics, config/env/lock, the console). The loss is read back from the device
only at log steps, so a GPU is never made to wait each step."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ...augment import preview_grid, sample_images, step_generator
from ...config import Experiment, dump_config
from ...data.loaders import eval_loader, train_loader
from ...data.report import DataReport
from .. import distributed as dist
from ..device import autocast
from ..distributed import DistContext
from ..eval.evaluate import evaluate
from ..progress import NullProgress, Progress
from ..runs.checkpoint import kept_checkpoint, load_checkpoint
from ..runs.directory import (
    STATUS,
    lock_owner,
    open_run,
    read_json,
    refuse,
    run_lock,
    write_json,
    write_status,
)
from ..runs.resume import check_resume
from .init_from import same_source
from .session import Session, norm_batch, prepare
from .tensorboard import caption_grid, open_writer, write_hparams


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


def train(cfg: Experiment, run_dir: Path, progress: Progress | None = None, *, resume: bool = False,
          probe: Callable | None = None, session: Session | None = None) -> dict:
    """Train `cfg` in `run_dir` (created when missing; config.yaml, env.json and the lock are written here);
    returns the last metrics.json content. `resume`: continue from checkpoints/last.pt when there is one, after
    checking the config against it. `session`: an already prepared `prepare(cfg)` (start_run checks before it
    creates the folder). `probe(step, model, loss_fn) -> {tag: value}` (compare-norms' measurements) is called
    after every backward, before clipping and the optimizer step; it must leave weights, gradients, buffers and
    RNG as they were."""
    ctx = dist.context(cfg.train.device, cfg.train.dist_timeout)
    progress = (progress or NullProgress()) if ctx.main else NullProgress()
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    # read-only checks first: a refused resume changes no file. Rank 0 reads, every rank gets the state
    state = ctx.run_on_main(lambda: _resumable(run_dir, last, cfg, ctx.world) if resume and last.is_file() else None,
                            "reading last.pt")
    if state is not None and int(state.get("step", 0)) >= cfg.train.steps:  # nothing left to train
        done = ctx.run_on_main(lambda: _already_done(run_dir, int(state.get("step", 0)), cfg, progress),
                               "reading metrics.json")
        if done is not None:
            return done
    s = session or prepare(cfg, progress, init=state is None)  # a resumed run has its own weights
    if state is not None:
        s.restore(state, last)
        progress.message(f"resuming {run_dir} at step {s.step}" + _world_change(state, s) +
                         ("; nothing left to train, but the final evaluation was not recorded: evaluating"
                          if s.step >= cfg.train.steps else ""))
    restart = resume and state is None and (run_dir / "config.yaml").is_file()  # an attempt without a checkpoint
    with ctx.on_main(lambda: open_run(run_dir, cfg, device=str(s.device), progress=progress, step=lambda: s.step),
                     "opening the run directory"):
        if restart and ctx.main:  # the last attempt never reached a checkpoint: start clean
            _drop_stale_events(run_dir, progress)
        if s.init_report and state is None and ctx.main:
            write_json(s.init_report, run_dir / "init_from.json")
        return _loop(s, run_dir, progress, probe)


def _already_done(run_dir: Path, step: int, cfg: Experiment, progress: Progress) -> dict | None:
    """A resume of a run whose last.pt is at (or past) train.steps: nothing to train, so nothing is written
    (no new event file, no second hparams, config.yaml and env.json as they were), except the finished mark
    that a run killed after its last checkpoint never got. Returns metrics.json; None when the evaluation of
    that step is not in it (killed between last.pt and metrics.json): the resume then evaluates."""
    metrics = read_json(run_dir / "metrics.json")
    if cfg.data.val and metrics.get("step") != step:
        return None
    status = read_json(run_dir / STATUS)
    how = (f"at step {step} (train.steps {cfg.train.steps})" if step == cfg.train.steps else
           f"at step {step}, past train.steps {cfg.train.steps}")
    if status.get("status") != "finished":
        with run_lock(run_dir, progress):
            write_status(run_dir, "finished", step=step, wall_s=float(status.get("wall_s") or 0.0),
                         reason="its last checkpoint is at train.steps")
        progress.message(f"{run_dir}: already trained {how}; it stopped before being marked finished, now "
                         f"marked; nothing to train (train longer with --set train.steps=N)")
    else:
        progress.message(f"{run_dir}: already finished {how}; nothing to do (train longer with --set "
                         f"train.steps=N)")
    return metrics


def _drop_stale_events(run_dir: Path, progress: Progress) -> None:
    """A resumed run with no checkpoint starts over at step 0: the event files of the attempt that never
    reached one would show its steps a second time beside the new ones, so they go (said, never silently)."""
    stale = sorted(run_dir.glob("events.out.tfevents.*"))
    for p in stale:
        with contextlib.suppress(OSError):
            p.unlink()
    progress.message(f"{run_dir}: no checkpoint yet (the last attempt stopped before its first one): training "
                     f"starts over at step 0" + (f"; removed its {len(stale)} TensorBoard event file(s)"
                                                 if stale else ""))


def _resumable(run_dir: Path, last: Path, cfg: Experiment, world: int) -> dict:
    owner = lock_owner(run_dir)
    if owner is not None:
        raise refuse(run_dir, owner)
    state = load_checkpoint(last, map_location="cpu")
    saved_from = ((state.get("config") or {}).get("train") or {}).get("init_from")
    if saved_from != cfg.train.init_from and same_source(cfg.train.init_from, saved_from):
        cfg.train.init_from = saved_from  # the same weights asked for as given (runs/x): keep the recorded file
    saved_global = state.get("global_batch") or (state.get("config") or {}).get("train", {}).get("batch_size")
    # the global batch is the run; how many processes share it is not: 2 × 4 may resume as 1 × 8
    check_resume(state.get("config"), cfg, last,
                 also=("train.batch_size",) if saved_global == cfg.train.batch_size * world else ())
    return state


def _world_change(state: dict, s: Session) -> str:
    """What a resume on another world size changes (said at start), or nothing."""
    was_world = state.get("world", 1)
    was_global = state.get("global_batch") or s.global_batch
    if was_world == s.ctx.world and was_global == s.global_batch:
        return ""
    out = (f"; it trained on {was_world} process(es) at global batch {was_global}, now {s.ctx.world} at "
           f"{s.global_batch}: the data continues at sample {s.samples} in the same order")
    if was_global != s.global_batch:
        out += (f"; each step now reads {s.global_batch} samples instead of {was_global} and train.lr is not "
                f"rescaled (keep the global batch with --set train.batch_size={was_global // s.ctx.world})"
                if was_global % s.ctx.world == 0 else
                f"; each step now reads {s.global_batch} samples instead of {was_global}, train.lr not rescaled")
    return out


class NonFiniteGuard:
    """Remembers the first step whose loss was NaN or inf without reading the loss back (no device sync per
    step). `check()` reads it back, at log, evaluation and checkpoint steps, before anything is written, and
    raises Diverged naming that step; under torchrun every rank learns the earliest one and stops with it."""

    NONE = 2**62

    def __init__(self):
        self.first: torch.Tensor | None = None
        self.loss: torch.Tensor | None = None

    def see(self, loss: torch.Tensor, step: int) -> None:
        loss = loss.detach().float()
        bad = ~torch.isfinite(loss)
        mark = torch.where(bad, step, self.NONE)
        if self.first is None:
            self.first, self.loss = mark, loss
        else:
            new = bad & (self.first == self.NONE)
            self.first, self.loss = torch.minimum(self.first, mark), torch.where(new, loss, self.loss)

    def check(self, ctx: DistContext) -> None:
        if self.first is None:
            return
        first = ctx.sum_(self.first.clone(), dist.dist.ReduceOp.MIN) if ctx.enabled else self.first
        step = int(first.item())
        if step != self.NONE:
            raise Diverged(step, float(self.loss.item()) if int(self.first.item()) == step else float("nan"))


def _loop(s: Session, run_dir: Path, progress: Progress, probe: Callable | None) -> dict:
    cfg, t, ctx = s.cfg, s.cfg.train, s.ctx
    ckpt_dir = run_dir / "checkpoints"
    writer = open_writer(run_dir, cfg.log.tensorboard and ctx.main, purge_step=s.step or None)
    if writer and s.step == 0:
        writer.add_text("config", "```yaml\n" + dump_config(cfg) + "\n```", 0)
        if s.augment:  # originals beside their augmented versions: one row per op, one for the whole pipeline
            grid = preview_grid(s.augment, sample_images(s.train_sets, 8).to(s.device),
                                step_generator(cfg.seed, -1, s.device))
            writer.add_image("augment/preview", grid, 0, dataformats="HWC")

    metrics: dict = read_json(run_dir / "metrics.json") if s.step and ctx.main else {}
    cuda = s.device.type == "cuda"
    loader = train_loader(s.train_sets, t.batch_size, seed=cfg.seed, steps=t.steps, start=s.step,
                          workers=cfg.data.workers, rank=ctx.rank, world=ctx.world, offset=s.samples, pin=cuda,
                          groups=s.groups, device=s.device)  # synth device_stages finish on the device
    val_loaders = {name: eval_loader(ds, cfg.eval.batch_size, workers=cfg.data.workers,
                                     max_samples=cfg.eval.max_samples,
                                     shard=ctx.shard(min(len(ds), cfg.eval.max_samples or len(ds))) if ctx.enabled
                                     else None, pin=cuda, device=s.device)
                   for name, ds in s.val_sets.items()}  # built once: their workers persist between evaluations
    guard = NonFiniteGuard()
    progress.start(total=t.steps, done=s.step)
    started = s.step
    tick, tick_samples = time.perf_counter(), 0
    window, loss_value = LossWindow(), float("nan")  # the losses since the last log (on the device)
    skipped = 0  # steps where some rank's batch was entirely unreadable
    s.model.train()
    with _StopFlag() as stop:
        for images, labels in loader:
            # under torchrun the ranks agree, on the host, on what every rank must do alike: skip a step whose
            # batch is empty on any rank (DDP's backward needs them all), and stop together on Ctrl-C
            n_all, n_empty, stopping = ctx.host_sum(len(labels), not len(labels), stop.set)
            # a batch whose images were all unreadable (the loader counted them) updates nothing, but its step
            # still passes: step numbers stay the sampler's, so evals, checkpoints and resume hold
            if not n_empty:
                window.add(_train_step(s, images, labels, writer, probe, guard), len(labels))
            elif ctx.enabled:
                skipped += 1
            s.scheduler.step()
            s.step += 1
            s.samples += s.global_batch
            tick_samples += int(n_all)

            # --- log: the only place the loss is read back from the device
            lr = s.optimizer.param_groups[0]["lr"]
            if s.step % cfg.log.every == 0 or s.step == t.steps:
                guard.check(ctx)
                loss_value = window.mean(ctx, loss_value)
                now = time.perf_counter()
                sps = tick_samples / max(1e-9, now - tick)
                tick, tick_samples = now, 0
                if writer:
                    writer.add_scalar("train/loss", loss_value, s.step)
                    writer.add_scalar("train/lr", lr, s.step)
                    writer.add_scalar("train/samples_per_s", sps, s.step)
                    if s.scaler.is_enabled():
                        writer.add_scalar("train/loss_scale", s.scaler.get_scale(), s.step)
                    for k, v in (s.learned.pop_stats() if s.learned is not None else {}).items():
                        writer.add_scalar(f"augment/{k}", v, s.step)
                progress.update(s.step, loss=loss_value, lr=lr, samples_per_s=sps)
            else:
                progress.update(s.step, loss=loss_value, lr=lr)

            # --- train.keep_checkpoints: this step's state kept apart (before last.pt moves past it, so a
            # resume never skips one)
            if s.step in t.keep_checkpoints:
                guard.check(ctx)
                s.save(kept_checkpoint(ckpt_dir, s.step))

            # --- evaluate and checkpoint; between evaluations, last.pt every checkpoint_every steps, so a
            # killed run loses at most that many
            if s.step % t.eval_every == 0 or s.step == t.steps:
                guard.check(ctx)
                metrics = _evaluate_and_checkpoint(s, run_dir, writer, progress, val_loaders)
                for rank, lines in enumerate(ctx.gather(loader.new_problems())):  # training images that failed
                    for line in lines:
                        progress.message(f"train data{f' (rank {rank})' if ctx.enabled else ''}: {line}")
                if skipped:
                    progress.message(f"step {s.step}: {skipped} step(s) so far skipped on every rank because one "
                                     f"rank's batch was entirely unreadable")
            elif s.step % t.checkpoint_every == 0:
                guard.check(ctx)
                s.save(ckpt_dir / "last.pt")

            if stopping:
                guard.check(ctx)
                s.save(ckpt_dir / "last.pt")
                if writer:
                    writer.close()
                progress.stop()
                raise TrainingInterrupted(run_dir, s.step)

    progress.stop()
    if s.step == started and s.val_sets:  # resumed at the end (train() saw no evaluation of it): evaluate it
        metrics = _evaluate_and_checkpoint(s, run_dir, writer, progress, val_loaders)
    if not s.val_sets:  # nothing to choose a best by: the final weights are the best we have
        s.save(ckpt_dir / "best.pt")
        s.save(ckpt_dir / "last.pt")
    if writer:
        extra = {"world_size": s.ctx.world, "global_batch": s.global_batch,
                 "norm_batch": norm_batch(cfg, s.ctx.world)}
        write_hparams(writer, {**hparams_of(cfg), **extra})
        writer.close()
    return metrics


class LossWindow:
    """The training loss logged as `train/loss`: the mean per sample over every step since the last log (the
    log window, `log.every` steps), not the last batch's, which at a small batch size is a handful of images.
    Summed on the device (no sync per step); under torchrun over every rank's samples."""

    def __init__(self):
        self.total: torch.Tensor | None = None  # Σ batch loss × batch size
        self.n = 0

    def add(self, loss: torch.Tensor, n: int) -> None:
        part = loss.detach().float() * n
        self.total = part if self.total is None else self.total + part
        self.n += n

    def mean(self, ctx: DistContext, previous: float = float("nan")) -> float:
        """The window's mean, and a fresh window; `previous` when no step of the window trained (every rank
        skips the same steps, so the ranks agree on whether to reduce)."""
        total, n = self.total, self.n
        self.total, self.n = None, 0
        if total is None:
            return previous
        if not ctx.enabled:
            return float(total.item()) / n
        both = torch.stack([total, torch.tensor(float(n), device=total.device)])
        ctx.sum_(both)
        return float((both[0] / both[1].clamp(min=1)).item())


def _train_step(s: Session, images: torch.Tensor, labels: list[str], writer, probe: Callable | None,
                guard: NonFiniteGuard) -> torch.Tensor:
    """One optimizer step on one batch; returns its loss, detached, left on the device."""
    cfg, t, model, device = s.cfg, s.cfg.train, s.model, s.device
    # --- augment: training batches only, on the device; a function of (seed, step, rank), so reruns and
    # resumes see the same batches, and each rank draws its own
    images = images.to(device, non_blocking=True)
    if s.augment:
        images = s.augment(images, step_generator(cfg.seed, s.step * s.ctx.world + s.ctx.rank, device))

    # --- forward and loss; the forward goes through DDP (gradients averaged over ranks) and/or torch.compile
    if t.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets, lengths = s.tokenizer.encode_batch(labels)
    targets, lengths = targets.to(device, non_blocking=True), lengths.to(device, non_blocking=True)
    with autocast(device, t.amp):
        logits = (s.forward or model)(images, targets, lengths)
    loss = model.loss(logits, targets, lengths)
    guard.see(loss, s.step + 1)  # NaN/inf: Diverged at the next check, naming this step

    # --- the learned op's agent (Learn to Augment) updates before the recognizer does, so the two losses it
    # compares (learned vs random warps) come from the same weights
    if s.learned is not None:
        s.learned.learn(model, logits, targets, lengths, amp=autocast(device, t.amp),
                        reduce=s.ctx.sum_ if s.ctx.enabled else None)  # one agent over every rank's images

    # --- backward, clip, step (fp16: the GradScaler skips steps whose gradients overflowed)
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
    return loss.detach()


def improves(result: dict, best: float, best_cer: float) -> bool:
    """Whether an evaluation beats the best so far: higher word accuracy, or the same and a lower CER (a model
    of long lines, e.g. Chinese, reads no line whole for a long time while its CER falls)."""
    return (result["word_acc"], -result["cer"]) > (best, -best_cer)


def _evaluate_and_checkpoint(s: Session, run_dir: Path, writer, progress: Progress, loaders: dict) -> dict:
    """Score every val set, log it, write best.pt (first val set's word accuracy, ties to the lower CER), last.pt,
    metrics.json.
    Under torchrun each rank scores its shard and the counts are summed (evaluate's `ctx`)."""
    cfg, t, ctx = s.cfg, s.cfg.train, s.ctx
    ctx.broadcast_buffers(s.model)  # one model on every rank: rank 0's BN running statistics (what it saves)
    metrics: dict = {"step": s.step, "datasets": {}}
    for i, (name, loader) in enumerate(loaders.items()):
        keep = cfg.log.image_grid if i == 0 and ctx.main else 0
        loader.load_report = DataReport("load")  # this evaluation's unreadable images, not every one's so far
        result, (gi, gl, gp) = evaluate(s.model, loader, tokenizer=s.tokenizer, protocol=cfg.eval.protocol,
                                        device=s.device, amp=t.amp, channels_last=t.channels_last, keep=keep,
                                        ctx=ctx)
        metrics["datasets"][name] = result
        if writer:
            for k in ("word_acc", "cer", "one_minus_ned"):
                writer.add_scalar(f"val/{name}/{k}", result[k], s.step)
            if gi is not None:
                grid = caption_grid(gi, gl, gp, protocol=cfg.eval.protocol)  # coloured as word_acc counts
                writer.add_image(f"val/{name}/samples", grid, s.step, dataformats="HWC")
        progress.message(f"step {s.step}: {name} word_acc {result['word_acc']:.4f} "
                         f"cer {result['cer']:.4f} ({result['samples']} samples)")
        if result.get("unreadable"):  # never silently scored on fewer samples than the set has
            ex = "; ".join(result.get("unreadable_examples", [])[:3])
            progress.message(f"step {s.step}: {name}: {result['unreadable']} val images unreadable, not scored "
                             f"(e.g. {ex})")
    first = next(iter(metrics["datasets"].values()), None)
    if first is not None and improves(first, s.best, s.best_cer):
        s.best, s.best_cer = first["word_acc"], first["cer"]
        s.save(run_dir / "checkpoints" / "best.pt")
    metrics["best_word_acc"] = s.best
    s.save(run_dir / "checkpoints" / "last.pt")
    if ctx.main:
        write_json(metrics, run_dir / "metrics.json")
    if writer:
        writer.flush()
    return metrics
