"""Optimizers and schedules. One weight-decay policy: no decay on norm parameters and biases (every tensor
with fewer than two dimensions, and the weight-norm magnitude), decay on conv/linear/recurrent weights (the
weight-norm direction included: it is what the conv's weight was)."""

from __future__ import annotations

import math

import torch

from ..config.schema import TrainCfg

# Weight normalization's magnitude g (`parametrizations.weight.original0`) is shaped (C, 1, 1, 1) for a conv, so
# the ndim rule alone would decay it; it is a norm parameter (a per-channel scale) and is matched by name.
_NO_DECAY_SUFFIXES = (".original0",)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or name.endswith(_NO_DECAY_SUFFIXES) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, cfg: TrainCfg) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "adadelta":
        return torch.optim.Adadelta(groups, lr=cfg.lr, rho=cfg.rho, eps=1e-8)
    # on a GPU the fused kernel updates every tensor at once, and takes the fp16 GradScaler's inf check on the
    # device (the unfused path reads it back each step); CPU keeps the default implementation
    cuda = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=True if cuda else None)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainCfg):
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps,
                                                   pct_start=cfg.pct_start)
    warm = cfg.warmup_steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        t = min(1.0, (step - warm) / max(1, cfg.steps - warm))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
