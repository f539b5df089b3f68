"""Does the loader keep the device fed? The model's training rate (the engine's own training step: fp32, bf16,
fp16 on CUDA; channels_last; optionally torch.compile) against the loader's rate (LMDB read, PNG decode, grey,
resize to 32×100, collate, pinned memory on CUDA) at each worker count, and how many workers the model needs.

Builds its own temporary LMDB of rendered words (benchmarks/data.py's sources). Every figure is of this
machine only; run it on the GPU box you train on.

    .venv/bin/python benchmarks/gpu_feed.py [--size standard] [--batch-size 256] [--steps 30] [--workers 0,4,8]
        [--amp none,bf16,fp16] [--compile]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import make_sources  # noqa: E402  (the sibling benchmark's LMDB writer)

from cvlab.config import Experiment  # noqa: E402
from cvlab.data.loaders import train_loader  # noqa: E402
from cvlab.engine.device import resolve_amp  # noqa: E402
from cvlab.engine.train.loop import NonFiniteGuard, _train_step  # noqa: E402
from cvlab.engine.train.session import prepare  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def experiment(lmdb: Path, size: str, batch: int, amp: str, channels_last: bool, compile_: bool, device: str,
               workers: int) -> Experiment:
    return Experiment.model_validate({
        "name": "gpu_feed", "data": {"train": [{"type": "lmdb", "root": str(lmdb)}], "workers": workers},
        "model": {"backbone": {"name": "vgg", "size": size}},
        "train": {"batch_size": batch, "amp": amp, "channels_last": channels_last, "compile": compile_,
                  "device": device, "warmup_steps": 0, "grad_clip": 5.0},
        "log": {"tensorboard": False}})


def model_rate(cfg: Experiment, steps: int) -> tuple[float, str]:
    """Samples/s of the engine's training step on one batch kept on the device (no loading at all)."""
    s = prepare(cfg)
    images, labels = next(iter(train_loader(s.train_sets, cfg.train.batch_size, seed=0, steps=1, start=0, workers=0)))
    images = images.to(s.device)
    guard = NonFiniteGuard()
    for _ in range(3):  # warm-up: allocator, cuDNN autotuning, the compile when train.compile is on
        _train_step(s, images, labels, None, None, guard)
    _sync(s.device)
    t = time.perf_counter()
    for _ in range(steps):
        _train_step(s, images, labels, None, None, guard)
    _sync(s.device)
    guard.check(s.ctx)
    return len(labels) * steps / (time.perf_counter() - t), str(s.device)


def loader_rate(cfg: Experiment, steps: int, workers: int, cuda: bool) -> float:
    """Samples/s the training loader delivers, copied to the device as the loop copies them."""
    s = prepare(cfg)
    loader = train_loader(s.train_sets, cfg.train.batch_size, seed=0, steps=steps + 2, start=0, workers=workers,
                          pin=cuda)
    it = iter(loader)
    for _ in range(2):  # worker start-up is paid once per run (persistent workers)
        next(it)
    t, seen = time.perf_counter(), 0
    for images, labels in it:
        images.to(s.device, non_blocking=True)
        seen += len(labels)
    _sync(s.device)
    return seen / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="standard", help="vgg CRNN size: tiny, small, standard")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30, help="timed steps (model) and batches (loader)")
    ap.add_argument("--workers", default="0,4,8")
    ap.add_argument("--amp", default="none,bf16,fp16", help="fp16 is skipped on CPU")
    ap.add_argument("--compile", action="store_true", help="also time train.compile: true")
    ap.add_argument("--images", type=int, default=2000, help="distinct rendered words in the LMDB")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_sources(tmp, args.images, max(args.images, args.batch_size * (args.steps + 2)))
        base = dict(lmdb=tmp / "lmdb", size=args.size, batch=args.batch_size, device=args.device, workers=0)
        device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                              (args.device if args.device != "auto" else "cpu"))
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        print(f"# {name}, torch {torch.__version__}, vgg {args.size}, batch {args.batch_size}, "
              f"{args.steps} timed steps")
        best = 0.0
        for amp in args.amp.split(","):
            if amp == "fp16" and device.type != "cuda":
                continue
            for compile_ in (False, True) if args.compile else (False,):
                cfg = experiment(**base, amp=amp, channels_last=True, compile_=compile_)
                rate, where = model_rate(cfg, args.steps)
                best = max(best, rate)
                print(f"model   {resolve_amp(device, amp)[0]:<5} channels_last compile={str(compile_):<5} "
                      f"{rate:10.0f} samples/s on {where}", flush=True)
        per_worker = 0.0
        for w in (int(x) for x in args.workers.split(",")):
            rate = loader_rate(experiment(**{**base, "workers": w}, amp="none", channels_last=False,
                                          compile_=False), args.steps, w, device.type == "cuda")
            per_worker = max(per_worker, rate / max(1, w))
            print(f"loader  {w:>2} workers {rate:10.0f} samples/s ({rate / max(1, w):.0f} per worker)", flush=True)
        if per_worker:
            print(f"the fastest model setting needs about {math.ceil(best / per_worker)} loader workers "
                  f"(data.workers) to stay fed")


if __name__ == "__main__":
    main()
