"""What compare-norms measures during and after training: loss-landscape smoothness (Santurkar et al. 2018)
along the gradient and along the optimizer's actual update, gradient norms and how often clipping bites, the
number of values behind each normalization statistic. What is measured after training is in `mechanism`."""

from __future__ import annotations

import copy
import math

import torch

from ..models.common import buffers_kept

STEP_SIZES = (0.005, 0.01, 0.02, 0.04)  # without an optimizer: absolute step sizes η of w − η·g
UPDATE_MULTIPLES = (0.5, 1.0, 2.0, 4.0)  # with one: distances in units of the optimizer's actual step length


# --------------------------------------------------------------------------------------------- exact evaluations

def _fixed(model: torch.nn.Module, loss_fn, devices: list):
    """`loss_fn` made one deterministic function of the weights: every call starts from the same RNG state
    (so dropout draws the same masks) and the same buffers (BN running statistics, batch renorm's counter),
    as Santurkar et al.'s probes are defined on one batch's deterministic loss."""
    cpu = torch.get_rng_state()
    cuda = [torch.cuda.get_rng_state(d) for d in devices]
    buffers = {k: b.clone() for k, b in model.named_buffers()}

    def evaluate():
        torch.set_rng_state(cpu)
        for d, state in zip(devices, cuda, strict=True):
            torch.cuda.set_rng_state(state, d)
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(buffers[k])
        return loss_fn()

    return evaluate


def _cuda_devices(params) -> list:
    return [p.device for p in params if p.device.type == "cuda"][:1]


def _norm(vectors) -> float:
    return math.sqrt(sum(float((v.double() ** 2).sum()) for v in vectors))


def optimizer_update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float | None = None
                     ) -> list[torch.Tensor]:
    """Δw the optimizer would take from the current .grad (clipped as the training loop clips it), one tensor
    per trainable parameter. Weights, .grad and the optimizer's state are restored exactly."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved_w = [p.detach().clone() for p in params]
    saved_g = [None if p.grad is None else p.grad.clone() for p in params]
    saved_state = copy.deepcopy(optimizer.state_dict())
    try:
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        return [p.detach() - w for p, w in zip(params, saved_w, strict=True)]
    finally:
        with torch.no_grad():
            for p, w, g in zip(params, saved_w, saved_g, strict=True):
                p.copy_(w)
                p.grad = g
        optimizer.load_state_dict(saved_state)


def smoothness(model: torch.nn.Module, loss_fn, step_sizes=STEP_SIZES, update: list[torch.Tensor] | None = None
               ) -> dict:
    """Santurkar et al. 2018, on this batch's deterministic loss (dropout masks and all randomness held fixed):
    from the weights w, step to w + t·d and record the loss range (loss variation), max ‖g(w + t·d) − g(w)‖
    (gradient change) and max of that over ‖t·d‖ (effective β-smoothness).

    Without `update`, d = −g and t are absolute step sizes (the paper's gradient direction). With `update` (the
    optimizer's actual Δw), t are multiples of its length: along the gradient, d = −g·‖Δw‖/‖g‖ (keys as above),
    and along the update itself, d = Δw (keys `update_*`), so both probe the distances training really moves.
    Weights, .grad, buffers (BN statistics) and RNG are left exactly as they were."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved_w = [p.detach().clone() for p in params]
    devices = _cuda_devices(params)

    def grads(loss):
        gs = torch.autograd.grad(loss, params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, gs, strict=True)]

    out = {}
    try:
        with buffers_kept(model), torch.random.fork_rng(devices=devices):
            f = _fixed(model, loss_fn, devices)
            loss0 = f()
            g0 = grads(loss0)
            gnorm = _norm(g0)
            out["grad_norm"] = gnorm
            directions = {"": [-g for g in g0]}
            if update is not None:
                unorm = _norm(update)
                directions = {"": [-g * (unorm / max(gnorm, 1e-30)) for g in g0], "update_": update}
                out["update_norm"] = unorm
            for prefix, d in directions.items():
                dnorm = _norm(d)
                losses, changes, betas = [loss0.item()], [], []
                for t in step_sizes:
                    with torch.no_grad():
                        for p, w, di in zip(params, saved_w, d, strict=True):
                            p.copy_(w + t * di)
                    loss = f()
                    gi = grads(loss)
                    diff = _norm([a - b for a, b in zip(gi, g0, strict=True)])
                    losses.append(loss.item())
                    changes.append(diff)
                    betas.append(diff / (t * dnorm) if t * dnorm > 0 else 0.0)
                finite = [x for x in losses if math.isfinite(x)]
                out[prefix + "loss_variation"] = (max(finite) - min(finite)) if finite else float("nan")
                out[prefix + "grad_change"] = max(changes)
                out[prefix + "beta_smoothness"] = max(betas)
    finally:
        with torch.no_grad():
            for p, w in zip(params, saved_w, strict=True):
                p.copy_(w)
    return out


# --------------------------------------------------------------------------------------------- statistic sizes

def statistic_sizes(model: torch.nn.Module, loss_fn) -> dict[str, dict]:
    """Per normalization slot (every module a norm factory made, identity included): N·H·W, the values BN pools
    into each statistic at this batch, and the slot's own count (`models.norms.values_per_statistic`; None for
    an identity). One forward of `loss_fn`, with RNG and buffers left as they were."""
    from ..models.norms import GhostBatchNorm2d, values_per_statistic

    slots = {n: m for n, m in model.named_modules() if getattr(m, "norm_slot", False)}
    sizes: dict[str, dict] = {}
    hooks = []
    for name, m in slots.items():
        def hook(mod, inputs, name=name):
            x = inputs[0]
            if x.ndim == 4:  # (B, C, H, W); a ghost batch norm's statistics see its groups of b, not B
                n = min(x.shape[0], mod.ghost) if isinstance(mod, GhostBatchNorm2d) else x.shape[0]
                sizes[name] = {"nhw": n * x.shape[2] * x.shape[3],
                               "own": values_per_statistic(mod, tuple(x.shape))}
        hooks.append(m.register_forward_pre_hook(hook))
    devices = _cuda_devices([p for p in model.parameters() if p.requires_grad])
    try:
        with buffers_kept(model), torch.random.fork_rng(devices=devices), torch.no_grad():
            loss_fn()
    finally:
        for h in hooks:
            h.remove()
    return sizes


# --------------------------------------------------------------------------------------------- the probe

def _layer_grads(model) -> tuple[float, float]:
    """‖∇‖ of the first and last weight matrices/kernels (the stem conv and the classifier)."""
    weights = [p for p in model.parameters() if p.ndim >= 2 and p.grad is not None]
    if not weights:
        return float("nan"), float("nan")
    return weights[0].grad.norm().item(), weights[-1].grad.norm().item()


class Probe:
    """For `train(probe=...)`: gradient norms and the share of steps grad_clip cut (every `grad_every` steps),
    the statistic sizes (at step 1), smoothness (every `smooth_every`, along the gradient and, given the run's
    optimizer, the session's, along its actual update)."""

    def __init__(self, grad_every: int, smooth_every: int, grad_clip: float | None = None, optimizer=None):
        self.grad_every, self.smooth_every, self.grad_clip = grad_every, smooth_every, grad_clip
        self.optimizer = optimizer
        self._clipped = self._seen = 0

    def __call__(self, step: int, model, loss_fn) -> dict:
        optimizer = self.optimizer
        out = {}
        if self.grad_clip:
            total = float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None]))
            self._clipped += total > self.grad_clip  # the norm clip_grad_norm_ compares, not yet clipped
            self._seen += 1
        if step == 1:
            sizes = statistic_sizes(model, loss_fn)
            for name, s in sizes.items():
                if s["own"] is not None:
                    out[f"norm/values_per_statistic/{name}"] = s["own"]
            if sizes:
                out["norm/nhw_min"] = min(s["nhw"] for s in sizes.values())
            own = [s["own"] for s in sizes.values() if s["own"] is not None]
            if own:
                out["norm/values_per_statistic_min"] = min(own)
        if step % self.grad_every == 0 or step == 1:
            first, last = _layer_grads(model)
            out.update({"grad/first_layer_norm": first, "grad/last_layer_norm": last})
            if self.grad_clip and self._seen:
                out["grad/clipped_share"] = self._clipped / self._seen
                self._clipped = self._seen = 0
        if self.smooth_every and (step % self.smooth_every == 0 or step == 1):
            if optimizer is not None:
                update = optimizer_update(model, optimizer, self.grad_clip)
                s = smoothness(model, loss_fn, UPDATE_MULTIPLES, update)
            else:
                s = smoothness(model, loss_fn)
            out.update({f"smoothness/{k}": v for k, v in s.items()})
        return out
