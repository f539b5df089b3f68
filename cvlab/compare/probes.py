"""What compare-norms measures during and after training: loss-landscape smoothness along the gradient
(Santurkar et al. 2018), first/last layer gradient norms, the train/eval-mode gap, peak memory."""

from __future__ import annotations

import math
import resource
from pathlib import Path

import torch

from ..config import Experiment

STEP_SIZES = (0.005, 0.01, 0.02, 0.04)  # smoothness probe: step sizes η of w − η·g

# --------------------------------------------------------------------------------------------- measurements

def smoothness(model: torch.nn.Module, loss_fn, step_sizes=STEP_SIZES) -> dict:
    """Santurkar et al. 2018: from the current weights w, move to w − η·g for each step size η and record
    the loss range (loss variation), max ‖g(w − ηg) − g(w)‖ (gradient change) and max of that over ‖ηg‖
    (effective β-smoothness). Weights, .grad, buffers (BN statistics) and RNG are left exactly as they were."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved_w = [p.detach().clone() for p in params]
    saved_b = {k: b.clone() for k, b in model.named_buffers()}
    devices = [p.device for p in params if p.device.type == "cuda"][:1]
    losses, changes, betas = [], [], []
    try:
        with torch.random.fork_rng(devices=devices):
            loss0 = loss_fn()
            g0 = torch.autograd.grad(loss0, params, allow_unused=True)
            g0 = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, g0, strict=True)]
            gnorm = torch.sqrt(sum((g.float() ** 2).sum() for g in g0)).item()
            losses.append(loss0.item())
            for eta in step_sizes:
                with torch.no_grad():
                    for p, w, g in zip(params, saved_w, g0, strict=True):
                        p.copy_(w - eta * g)
                loss = loss_fn()
                gi = torch.autograd.grad(loss, params, allow_unused=True)
                diff = torch.sqrt(sum(((0 if a is None else a.detach()) - b).float().pow(2).sum()
                                      for a, b in zip(gi, g0, strict=True))).item()
                losses.append(loss.item())
                changes.append(diff)
                betas.append(diff / max(1e-12, eta * gnorm))
    finally:
        with torch.no_grad():
            for p, w in zip(params, saved_w, strict=True):
                p.copy_(w)
            for k, b in model.named_buffers():
                b.copy_(saved_b[k])
    finite = [x for x in losses if math.isfinite(x)]
    return {"loss_variation": (max(finite) - min(finite)) if finite else float("nan"),
            "grad_change": max(changes), "beta_smoothness": max(betas), "grad_norm": gnorm}


def _layer_grads(model) -> tuple[float, float]:
    """‖∇‖ of the first and last weight matrices/kernels (the stem conv and the classifier)."""
    weights = [p for p in model.parameters() if p.ndim >= 2 and p.grad is not None]
    if not weights:
        return float("nan"), float("nan")
    return weights[0].grad.norm().item(), weights[-1].grad.norm().item()


class Probe:
    """For `train(probe=...)`: gradient norms every `grad_every` steps, smoothness every `smooth_every`."""

    def __init__(self, grad_every: int, smooth_every: int, step_sizes=STEP_SIZES):
        self.grad_every, self.smooth_every, self.step_sizes = grad_every, smooth_every, step_sizes

    def __call__(self, step: int, model, loss_fn) -> dict:
        out = {}
        if step % self.grad_every == 0 or step == 1:
            first, last = _layer_grads(model)
            out.update({"grad/first_layer_norm": first, "grad/last_layer_norm": last})
        if self.smooth_every and (step % self.smooth_every == 0 or step == 1):
            s = smoothness(model, loss_fn, self.step_sizes)
            out.update({f"smoothness/{k}": v for k, v in s.items()})
        return out


@torch.no_grad()
def train_eval_gap(cfg: Experiment, run_dir: Path) -> dict:
    """Word accuracy on the first val set from last.pt with norm layers using batch statistics (train mode, at
    the training batch size) minus with running statistics (eval mode). Everything else stays in eval mode
    (no dropout), and nothing is written back."""
    from ..data.loaders import eval_loader
    from ..engine.checkpoint import load_checkpoint
    from ..engine.metrics import MetricAccumulator
    from ..engine.setup import datasets_for, pick_device, tokenizer_for
    from ..models import build_model

    val = datasets_for(cfg, "val")
    if not val:
        return {}
    ds = next(iter(val.values()))
    device = pick_device(cfg.train.device)
    tokenizer = tokenizer_for(cfg)
    model = build_model(cfg.model, tokenizer.num_classes, cfg.data.image.channels).to(device)
    model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location=device)["model"])
    saved = {k: b.clone() for k, b in model.named_buffers()}
    result = {}
    for mode in ("eval", "train"):
        model.eval()
        if mode == "train":
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._NormBase):
                    m.train()
        acc = MetricAccumulator(cfg.eval.protocol)
        bs = max(2, cfg.train.batch_size) if mode == "train" else cfg.eval.batch_size
        for images, labels in eval_loader(ds, bs, 0, cfg.eval.max_samples):
            if mode == "train" and images.shape[0] < 2:
                continue  # a single leftover sample has no batch statistics
            ids, _ = model.decode(model(images.to(device)))
            acc.update([tokenizer.decode(i) for i in ids], labels)
        result[mode] = acc.result()["word_acc"]
        for k, b in model.named_buffers():
            b.copy_(saved[k])
    return {"word_acc_train_mode": result["train"], "word_acc_eval_mode": result["eval"],
            "train_eval_gap": result["train"] - result["eval"]}


def _peak_mem_mb(device_type: str) -> float:
    if device_type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


