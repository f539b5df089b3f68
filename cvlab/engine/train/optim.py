"""Optimizers and schedules. One weight-decay policy: no decay on norm parameters and biases (every tensor
with fewer than two dimensions, and the weight-norm magnitude), decay on conv/linear/recurrent weights (the
weight-norm direction included: it is what the conv's weight was)."""

from __future__ import annotations

import math

import torch

from ...config.schema import TrainCfg

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
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    # on a GPU the fused kernel updates every tensor at once, and takes the fp16 GradScaler's inf check on the
    # device (the unfused path reads it back each step); CPU keeps the default implementation
    cuda = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=True if cuda else None)


# --------------------------------------------------------------------------------------------- batch size

# How settings found at one batch size carry over to another, by optimizer family:
# - linear (Goyal et al. 2017; the Group Normalization paper's protocol): SGD's update is lr × the gradient, so k
#   times fewer samples per step take lr/k; momentum stays (Goyal et al. keep 0.9).
# - sqrt (Malladi et al., NeurIPS 2022, derived for RMSprop and Adam): lr × √ratio, and every moving average's
#   horizon is kept in samples rather than steps, 1 − β → ratio · (1 − β).
# Adadelta takes sqrt: its update is the gradient divided by a running RMS of gradients (times a running RMS of
# updates), the RMSprop-type preconditioning the square-root rule is derived for, not SGD's raw gradient step;
# its `rho` is that moving average, so it is scaled like Adam's betas.
LR_SCALING = ("linear", "sqrt", "none")
DEFAULT_LR_SCALING = {"sgd": "linear", "adamw": "sqrt", "adadelta": "sqrt"}


def scale_for_batch(cfg: TrainCfg, ratio: float, rule: str | None = None) -> dict:
    """The `train` settings for a batch `ratio` times the one `cfg` was tuned at (ratio = new / reference), as
    {key: value}; `rule` None = the optimizer's default. Not scaled, on purpose: weight decay and grad_clip
    (compare-norms reports both), and Adam's eps (fixed at torch's 1e-8: ε/√ratio is below fp32 resolution of
    any normalised update here)."""
    rule = rule or DEFAULT_LR_SCALING[cfg.optimizer]
    if rule not in LR_SCALING:
        raise ValueError(f"lr scaling {rule!r} (valid: {', '.join(LR_SCALING)})")
    if rule == "none":
        return {}
    if rule == "linear":
        return {"lr": cfg.lr * ratio}

    def horizon(beta: float) -> float:  # an average over 1/(1 − β) steps, kept at the same number of samples
        return min(max(0.0, 1.0 - ratio * (1.0 - beta)), 1.0 - 1e-12)

    out = {"lr": cfg.lr * math.sqrt(ratio)}
    if cfg.optimizer == "adamw":
        out["betas"] = (horizon(cfg.betas[0]), horizon(cfg.betas[1]))
    elif cfg.optimizer == "adadelta":
        out["rho"] = horizon(cfg.rho)
    elif cfg.optimizer == "sgd":
        out["momentum"] = horizon(cfg.momentum) if cfg.momentum else 0.0
    return out


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
