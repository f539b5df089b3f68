"""Where a training step goes with a large charset: the tiny CRNN on 32×W grey lines with the gb2312-l1 charset
(3,755 hanzi: 3,756 CTC classes, 3,757 attention ones) beside lower36, for the CTC and the attention head. A step
is split into its parts, each forward + backward:

- backbone + sequence: the CNN and the sequence stage (from the images to the (B, T, C) features)
- head: the linear classifier (CTC) or the attention decoder (teacher-forced, its one-hot input included)
- loss: log-softmax + CTC, or cross-entropy, from the logits
- optimizer: the AdamW update of every parameter (the head's share of them grows with the charset)

and the whole step timed as training runs it, to check the parts add up. Random images and labels: the model's
cost only. Figures are this machine's: run it on a quiet one.

    .venv/bin/python benchmarks/large_charset.py [--batch-size 32] [--width 256] [--label-len 10] [--steps 10]
        [--heads ctc,attention] [--charsets gb2312-l1,lower36] [--size tiny] [--sequence none] [--threads N]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from cvlab.config import ModelCfg, TrainCfg
from cvlab.data.charset import resolve_charset
from cvlab.engine.train.optim import build_optimizer
from cvlab.models import build_model

PARTS = ("backbone + sequence", "head", "loss", "optimizer")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(head: str, charset: str, args, device: torch.device) -> tuple[dict, float, int]:
    """({part: seconds per step}, seconds per whole step, number of classes)."""
    torch.manual_seed(0)
    n_chars = len(resolve_charset(charset))
    classes = n_chars + (1 if head == "ctc" else 2)
    cfg = ModelCfg.model_validate({"backbone": {"name": "vgg", "size": args.size}, "sequence": {"name": args.sequence},
                                   "head": {"name": head, "max_length": args.label_len}})
    model = build_model(cfg, classes).model.to(device).train()
    opt = build_optimizer(model, TrainCfg())
    B, L = args.batch_size, args.label_len
    x = torch.rand(B, 1, 32, args.width, device=device)
    if head == "ctc":  # class 0 = blank
        targets = torch.randint(1, classes, (B, L), device=device)
    else:  # [GO]=0 c1..cL [EOS]=1
        body = torch.randint(2, classes, (B, L), device=device)
        targets = torch.cat([torch.zeros(B, 1, dtype=torch.long, device=device), body,
                             torch.ones(B, 1, dtype=torch.long, device=device)], dim=1)
    lengths = torch.full((B,), L, dtype=torch.long, device=device)
    head_targets = targets if head == "attention" else None

    def split_step() -> dict:
        t = {}
        _sync(device)
        t0 = time.perf_counter()
        feats = model.sequence(model.features(x))                          # (B, T, C_seq)
        _sync(device)
        t1 = time.perf_counter()
        h = feats.detach().requires_grad_()                                # the head starts a graph of its own
        logits = model.head(model.dropout(h), head_targets, lengths)
        _sync(device)
        t2 = time.perf_counter()
        z = logits.detach().requires_grad_()                               # so is the loss
        loss = model.loss(z, targets, lengths)
        loss.backward()
        _sync(device)
        t3 = time.perf_counter()
        logits.backward(z.grad)
        _sync(device)
        t4 = time.perf_counter()
        feats.backward(h.grad)
        _sync(device)
        t5 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        t6 = time.perf_counter()
        t["backbone + sequence"] = (t1 - t0) + (t5 - t4)
        t["head"] = (t2 - t1) + (t4 - t3)
        t["loss"] = t3 - t2
        t["optimizer"] = t6 - t5
        return t

    def whole_step() -> None:
        logits = model(x, head_targets, lengths)
        loss = model.loss(logits, targets, lengths)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):  # allocator, oneDNN primitive caches
        split_step()
        whole_step()
    parts = {p: 0.0 for p in PARTS}
    for _ in range(args.steps):
        for p, v in split_step().items():
            parts[p] += v / args.steps
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        whole_step()
    _sync(device)
    return parts, (time.perf_counter() - t0) / args.steps, classes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--width", type=int, default=256, help="image width (height 32)")
    ap.add_argument("--label-len", type=int, default=10, help="characters per label")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--heads", default="ctc,attention")
    ap.add_argument("--charsets", default="gb2312-l1,lower36", help="presets; the second is the small-charset baseline")
    ap.add_argument("--size", default="tiny", choices=["tiny", "small", "standard"])
    ap.add_argument("--sequence", default="none", choices=["none", "bilstm", "gru"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"CPU: {platform.processor() or platform.machine()}; torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}; device {device}")
    print(f"vgg {args.size}, sequence {args.sequence}, batch {args.batch_size}, 32×{args.width} grey, labels of "
          f"{args.label_len} characters, {args.steps} steps after {args.warmup} of warm-up; ms per training step")
    for head in args.heads.split(","):
        for charset in args.charsets.split(","):
            parts, whole, classes = measure(head, charset, args, device)
            total = sum(parts.values())
            print(f"\n{head} head, {charset} ({classes:,} classes): whole step {1000 * whole:.1f} ms, parts add up "
                  f"to {1000 * total:.1f} ms")
            for p in PARTS:
                print(f"  {p:20} {1000 * parts[p]:8.2f} ms  {100 * parts[p] / total:5.1f} %")


if __name__ == "__main__":
    main()
