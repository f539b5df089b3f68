"""Train and eval throughput of the CRNN presets on this machine: fp32 vs bf16 autocast, with and without
channels_last. Model cost only (random 32×100 grey batches), so the figures compare compute paths.

    .venv/bin/python benchmarks/train_throughput.py [--sizes tiny,standard] [--batch-size 64] [--steps 8]
        [--amp auto|none,bf16] [--threads N]

`--amp auto` (the default) measures bf16 beside fp32 only where `train.amp: auto` would pick it: a CPU without
native bf16 (AVX2 only) emulates it many times slower, so there the table is fp32 alone.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from cvlab.config import ModelCfg, TrainCfg
from cvlab.engine.device import autocast, resolve_amp
from cvlab.engine.train.optim import build_optimizer
from cvlab.models import build_model


def bench(size: str, amp: str, channels_last: bool, batch: int, steps: int, device: torch.device) -> tuple:
    torch.manual_seed(0)
    model = build_model(ModelCfg.model_validate({"backbone": {"size": size}}), 37).model.to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = build_optimizer(model, TrainCfg())
    x = torch.rand(batch, 1, 32, 100, device=device).contiguous(memory_format=fmt)
    targets = torch.randint(1, 37, (batch, 8), device=device)
    lengths = torch.full((batch,), 8, device=device)

    def train_step():
        with autocast(device, amp):
            logits = model(x)
        loss = model.loss(logits, targets, lengths)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def eval_step():
        with torch.no_grad(), autocast(device, amp):
            model.decode(model(x))

    out = []
    for fn, mode in ((train_step, True), (eval_step, False)):
        model.train(mode)
        fn()  # warm-up: allocator, oneDNN primitive caches
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(batch * steps / (time.perf_counter() - t))
    return tuple(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="tiny,standard")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--amp", default="auto", help="auto, or comma-separated: none, bf16")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amps = ["none", *(["bf16"] if resolve_amp(device, "auto")[0] == "bf16" else [])] if args.amp == "auto" \
        else args.amp.split(",")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or 'cpu'}"
    print(f"# {name}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"1×32×100, {args.steps} timed steps", flush=True)
    print(f"{'model':<10} {'amp':<5} {'channels_last':<14} {'train img/s':>12} {'eval img/s':>11}")
    for size in args.sizes.split(","):
        for amp in amps:
            for cl in (False, True):
                tr, ev = bench(size, amp, cl, args.batch_size, args.steps, device)
                print(f"{size:<10} {amp:<5} {str(cl):<14} {tr:>12.1f} {ev:>11.1f}", flush=True)


if __name__ == "__main__":
    main()
