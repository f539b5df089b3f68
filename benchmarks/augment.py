"""Augmentation cost on this machine: each op alone (p=1), the default pipeline (the issue's example list, with
its probabilities, without `learned`), the quickstart_aug text warps, and the learned op's extra work, per batch
of 64 grey 32×100 images — and their share of one standard-CRNN training step (forward, loss, backward, AdamW).

    .venv/bin/python benchmarks/augment.py [--threads 2] [--reps 5] [--batch 64]

Times are medians of --reps runs after one warm-up; the step share is cost / (step + cost).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from cvlab.augment import build_pipeline, step_generator
from cvlab.config import load_config
from cvlab.data.loaders import datasets_for
from cvlab.data.tokenizer import tokenizer_for
from cvlab.engine.train.optim import build_optimizer
from cvlab.models import build_model

# The example pipeline, minus `learned` (timed on its own: its cost is mostly a recognizer forward).
DEFAULT = [
    {"op": "rotate", "degrees": 5, "p": 0.5},
    {"op": "affine", "scale": [0.9, 1.1], "shear": 10, "translate": 0.05, "p": 0.5},
    {"op": "perspective", "distortion": 0.2, "p": 0.3},
    {"op": "text_distort", "segments": 4, "p": 0.3},
    {"op": "text_stretch", "segments": 4, "p": 0.3},
    {"op": "text_perspective", "p": 0.3},
    {"op": "gaussian_blur", "sigma": [0.1, 1.2], "p": 0.2},
    {"op": "motion_blur", "kernel": 5, "p": 0.1},
    {"op": "color_jitter", "brightness": 0.3, "contrast": 0.3, "p": 0.5},
    {"op": "noise", "std": 0.05, "p": 0.2},
    {"op": "invert", "p": 0.1},
    {"op": "elastic", "alpha": 1.0, "sigma": 8, "p": 0.1},
]
QUICKSTART_AUG = [{"op": "text_distort", "p": 0.4}, {"op": "text_stretch", "p": 0.3},
                  {"op": "text_perspective", "p": 0.3}]
ALL_OPS = [{"op": o["op"], "p": 1.0} for o in DEFAULT] + [{"op": "jpeg", "p": 1.0}, {"op": "learned", "p": 1.0}]


def median_time(fn, reps: int) -> float:
    fn()  # warm-up (first-call allocations, kernel selection)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    cfg = load_config(raw={"data": {"train": [{"type": "synth", "size": a.batch}]},
                          "model": {"backbone": {"size": "standard"}}, "augment": DEFAULT})
    tok = tokenizer_for(cfg)
    ds = datasets_for(cfg, "train")["synth"]
    items = [ds[i] for i in range(a.batch)]
    images = torch.stack([it[0] for it in items])
    targets, lengths = tok.encode_batch([it[1] for it in items])
    model = build_model(cfg.model, tok.num_classes, 1).model.train()
    opt = build_optimizer(model, cfg.train)

    def step(x=images):
        loss = model.loss(model(x, targets, lengths), targets, lengths)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{a.threads} threads; batch {a.batch} × 1×32×100; median of {a.reps}")
    t_step = median_time(step, a.reps)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"standard CRNN training step ({n_params:.1f}M params): {1000 * t_step:.0f} ms "
          f"({a.batch / t_step:.0f} img/s)\n")

    counter = iter(range(10**9))

    def cost(pipe) -> float:
        return median_time(lambda: pipe(images, step_generator(0, next(counter))), a.reps)

    print(f"{'op (p=1)':<20}{'ms/batch':>10}")
    for spec in ALL_OPS:
        pipe = build_pipeline(load_config(raw={"augment": [spec]}).augment).eval()
        print(f"{spec['op']:<20}{1000 * cost(pipe):>10.1f}")
    print()

    def share(name: str, seconds: float) -> None:
        print(f"{name:<44}{1000 * seconds:>8.1f} ms/batch  {100 * seconds / (t_step + seconds):5.1f} % of a step")

    share("default pipeline (12 ops, the issue's p)", cost(build_pipeline(cfg.augment)))
    text_warps = build_pipeline(load_config(raw={"augment": QUICKSTART_AUG}).augment)
    share("quickstart_aug (3 text warps)", cost(text_warps))

    # learned: the warp in the pipeline plus the agent's update, whose cost is mostly a no-grad recognizer forward
    learned = build_pipeline(load_config(raw={"augment": [{"op": "learned"}]}).augment)
    agent = learned.learned

    def learned_step():
        x = learned(images, step_generator(0, next(counter)))
        logits = model(x, targets, lengths)
        agent.learn(model, logits, targets, lengths)

    t_fwd = median_time(lambda: model(images, targets, lengths), a.reps)
    share("learned (warp + agent update, incl. forward)", median_time(learned_step, a.reps) - t_fwd)


if __name__ == "__main__":
    main()
