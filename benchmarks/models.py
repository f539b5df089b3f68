"""Model speed on this machine: train and eval samples/s and peak memory per backbone × norm at 32×100, in
float32 and under bf16 autocast. Each model: the backbone at its default depth + BiLSTM + CTC, 37 classes.

    .venv/bin/python benchmarks/models.py [--quick] [--steps 5] [--batch 32] [--size standard] [--threads 2]
        [--backbones vgg,resnet] [--norms batch,group] [--amp fp32,bf16]

Train = forward, CTC loss, backward, AdamW step; eval = no-grad forward + greedy decoding. Times are the mean of
--steps steps after one warm-up step. Peak memory: on CUDA the allocator's peak; on CPU the peak resident set
size above the level before the model was built (sampled every 2 ms, after returning freed memory to the OS),
so it is approximate. `--quick` = 2 steps, batch 8, size small: the whole table in a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import platform
import threading
import time

import torch

from cvlab.config import ModelCfg
from cvlab.engine.train.optim import param_groups
from cvlab.models import BACKBONES, NORMS, build_model

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakMemory:
    """Peak bytes above the starting level: CUDA allocator stats, or sampled RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed blocks back, so the baseline is honest
        self.base = rss()
        self.peak = self.base
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


def measure(backbone: str, norm: str, amp: str, args, device: torch.device) -> tuple[float, float, float, int]:
    torch.manual_seed(0)
    cfg = ModelCfg.model_validate({"backbone": {"name": backbone, "size": args.size}, "norm": {"name": norm}})
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if amp == "bf16" else contextlib.nullcontext
    with PeakMemory(device) as mem:
        model = build_model(cfg, 37).model.to(device).train()
        opt = torch.optim.AdamW(param_groups(model, 1e-4), lr=1e-4)
        images = torch.rand(args.batch, 1, 32, 100, device=device)
        lengths = torch.randint(3, 11, (args.batch,), device=device)
        targets = torch.randint(1, 37, (args.batch, 10), device=device)

        def train_step():
            with ctx():
                logits = model(images, targets, lengths)
            loss = model.loss(logits, targets, lengths)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def eval_step():
            with torch.no_grad(), ctx():
                model.decode(model(images))

        rates = []
        for mode, step in (("train", train_step), ("eval", eval_step)):
            model.train(mode == "train")
            step()  # warm-up: allocator, kernels
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            rates.append(args.steps * args.batch / (time.perf_counter() - t0))
        params = sum(p.numel() for p in model.parameters())
    return rates[0], rates[1], mem.mib, params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 steps, batch 8, size small")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", default="standard", choices=("tiny", "small", "standard"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--backbones", default=",".join(BACKBONES))
    ap.add_argument("--norms", default=",".join(NORMS))
    ap.add_argument("--amp", default="fp32,bf16")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.batch, args.size = 2, 8, "small"
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads"
    print(f"# models at 1×32×100, size {args.size}, batch {args.batch}, {args.steps} steps; torch {torch.__version__}; "
          f"{where}")
    print("| backbone | norm | params | amp | train samples/s | eval samples/s | peak MiB |")
    print("|---|---|---:|---|---:|---:|---:|")
    for backbone in args.backbones.split(","):
        for norm in args.norms.split(","):
            for amp in args.amp.split(","):
                tr, ev, mib, params = measure(backbone, norm, amp, args, device)
                print(f"| {backbone} | {norm} | {params / 1e6:.2f}M | {amp} | {tr:.1f} | {ev:.1f} | {mib:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
