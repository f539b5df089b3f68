"""Does mixed precision change what a model learns? Trains one experiment twice from the same seed, in fp32 and
with bf16 autocast (plus channels_last), and prints each run's word accuracy on its val sets and its training
rate. On a CPU without native bf16 (no AVX512-BF16/AMX) bf16 is emulated and slower: `train.amp: auto` then
stays in fp32, and this script says so before it measures anyway.

    .venv/bin/python benchmarks/amp_accuracy.py [--exp experiments/quickstart.yaml] [--steps 1000] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from cvlab.config import load_config
from cvlab.engine.device import resolve_amp
from cvlab.engine.train.start import start_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exp", default="experiments/quickstart.yaml")
    ap.add_argument("--steps", type=int, default=None, help="train.steps for both runs (default: the experiment's)")
    ap.add_argument("--set", action="append", default=[], help="extra overrides, as cvlab train --set")
    args = ap.parse_args()
    print(f"auto would pick: {resolve_amp(torch.device('cpu'), 'auto')}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for amp, cl in (("none", False), ("bf16", True)):
            sets = [*args.set, f"train.amp={amp}", f"train.channels_last={str(cl).lower()}", "train.device=cpu"]
            if args.steps:
                sets.append(f"train.steps={args.steps}")
            cfg = load_config(args.exp, sets)
            t0 = time.perf_counter()
            _, metrics = start_run(cfg, Path(tmp), name=f"amp_{amp}")
            secs = time.perf_counter() - t0
            rate = cfg.train.steps * cfg.train.batch_size / secs
            accs = {k: v["word_acc"] for k, v in metrics["datasets"].items()}
            rows.append((amp, cl, secs, rate, accs))
    for amp, cl, secs, rate, accs in rows:
        acc = ", ".join(f"{k} {100 * v:.1f} %" for k, v in accs.items())
        print(f"amp={amp:5} channels_last={cl!s:5}  {secs:6.0f} s in all  {rate:6.1f} samples/s  word acc: {acc}")


if __name__ == "__main__":
    main()
