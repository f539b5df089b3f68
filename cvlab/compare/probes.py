"""What compare-norms measures during and after training: loss-landscape smoothness (Santurkar et al. 2018)
along the gradient and along the optimizer's actual update, gradient norms and how often clipping bites, the
number of values behind each normalization statistic and how many of them are independent (ρ, n_eff), the
train/eval-mode gap (whole model and per BN layer), the running-statistics error, accuracy with re-estimated
statistics (PreciseBN), batch dependence (how much an image's output moves with its batch-mates), peak memory."""

from __future__ import annotations

import copy
import math
import resource
from pathlib import Path

import torch

from ..config import Experiment
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
    from ..models.norms import values_per_statistic

    slots = {n: m for n, m in model.named_modules() if getattr(m, "norm_slot", False)}
    sizes: dict[str, dict] = {}
    hooks = []
    for name, m in slots.items():
        def hook(mod, inputs, name=name):
            x = inputs[0]
            if x.ndim == 4:  # (B, C, H, W)
                sizes[name] = {"nhw": x.shape[0] * x.shape[2] * x.shape[3],
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


# --------------------------------------------------------------------------------------------- after training

def _last_model(cfg: Experiment, run_dir: Path):
    """(model from last.pt, tokenizer, first val set, device), or None without a val set."""
    from ..data.loaders import datasets_for
    from ..data.tokenizer import tokenizer_for
    from ..engine.device import pick_device
    from ..engine.runs.checkpoint import load_checkpoint
    from ..models import build_model

    val = datasets_for(cfg, "val")
    if not val:
        return None
    device = pick_device(cfg.train.device)
    tokenizer = tokenizer_for(cfg)
    model = build_model(cfg.model, tokenizer.num_classes, cfg.data.image.channels).model.to(device)
    model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location=device)["model"])
    return model, tokenizer, next(iter(val.values())), device


def _batch_norms(model) -> dict[str, torch.nn.Module]:
    return {n: m for n, m in model.named_modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats}


@torch.no_grad()
def train_eval_gap(cfg: Experiment, run_dir: Path) -> dict:
    """Word accuracy on the first val set from last.pt with norm layers using batch statistics (train mode, at
    the training batch size) minus with running statistics (eval mode). Everything else stays in eval mode
    (no dropout), and nothing is written back."""
    from ..data.loaders import eval_loader
    from ..engine.eval.metrics import MetricAccumulator

    loaded = _last_model(cfg, run_dir)
    if loaded is None:
        return {}
    model, tokenizer, ds, device = loaded
    result, skipped = {}, 0
    for mode in ("eval", "train"):
        with buffers_kept(model):  # the train-mode pass must not move the running statistics
            model.eval()
            if mode == "train":
                for m in _batch_norms(model).values():
                    m.train()
            acc = MetricAccumulator(cfg.eval.protocol)
            bs = max(2, cfg.train.batch_size) if mode == "train" else cfg.eval.batch_size
            for images, labels in eval_loader(ds, bs, workers=0, max_samples=cfg.eval.max_samples):
                if mode == "train" and images.shape[0] < 2:
                    skipped += 1  # a single leftover sample has no batch statistics: counted, not scored
                    continue
                ids, _ = model.decode(model(images.to(device)))
                acc.update([tokenizer.decode(i) for i in ids], labels)
            result[mode] = acc.result()["word_acc"]
    return {"word_acc_train_mode": result["train"], "word_acc_eval_mode": result["eval"],
            "train_eval_gap": result["train"] - result["eval"], "train_mode_skipped": skipped}


@torch.no_grad()
def bn_layer_stats(cfg: Experiment, run_dir: Path) -> dict[str, dict]:
    """Per BN layer (anything keeping running statistics), from last.pt on the first val set, the network in eval
    mode and the val set cut into batches of the training batch size:
    - `rho`: the between-image share of a channel's variance (the intraclass correlation of its activations
      within an image, ANOVA estimate), averaged over channels; `n_eff`: the effective number of independent
      values behind one statistic at the run's b images per statistic, b·H·W / (1 + (H·W − 1)·ρ), against the
      b·H·W it counts (spatial positions of one image are correlated: a text line is one source);
    - `nhw`: the values behind each of its statistics at that batch size (N·H·W);
    - `gap`: RMS of (output with batch statistics − output with running statistics) before the affine, in
      units of the normalized activation: how differently the layer computes in train and eval mode;
    - `mean_err`, `var_err`: the running statistics against the full val population's, per channel, averaged:
      |μ_run − μ_pop| / σ_pop and |σ²_run / σ²_pop − 1|."""
    from ..data.loaders import eval_loader
    from ..models.norms import BatchRenorm2d

    loaded = _last_model(cfg, run_dir)
    if loaded is None:
        return {}
    model, _, ds, device = loaded
    layers = _batch_norms(model)
    bs = max(2, stat_batch(cfg))  # the images behind one statistic in training
    acc = {n: {"n": 0, "sum": 0.0, "sumsq": 0.0, "gap": 0.0, "batches": 0, "nhw": None, "images": 0,
               "img_sum": 0.0, "img_sumsq": 0.0, "within": 0.0, "hw": 1} for n in layers}
    b = stat_batch(cfg)
    hooks = []
    for name, m in layers.items():
        def hook(mod, inputs, name=name):
            x = inputs[0].double()  # (B, C, H, W)
            a = acc[name]
            a["n"] += x.shape[0] * x.shape[2] * x.shape[3]
            a["sum"] = a["sum"] + x.sum(dim=(0, 2, 3))
            a["sumsq"] = a["sumsq"] + (x * x).sum(dim=(0, 2, 3))
            per_image = x.mean(dim=(2, 3))                        # (B, C): each image's channel means
            a["images"] += x.shape[0]
            a["img_sum"] = a["img_sum"] + per_image.sum(dim=0)
            a["img_sumsq"] = a["img_sumsq"] + (per_image * per_image).sum(dim=0)
            a["within"] = a["within"] + x.var(dim=(2, 3), unbiased=False).sum(dim=0)
            a["hw"] = x.shape[2] * x.shape[3]
            if x.shape[0] != bs:
                return  # the trailing short batch: not the training batch size
            mu, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
            run_mu, run_var = mod.running_mean.double(), mod.running_var.double()
            c = (slice(None), None, None)
            y_train = (x - mu[c]) / (var[c] + mod.eps).sqrt()
            if isinstance(mod, BatchRenorm2d):  # its training output, r and d at their final clamps
                t = min(1.0, float(mod.num_batches_tracked) / mod.warmup)
                r_max, d_max = 1.0 + (mod.r_max - 1.0) * t, mod.d_max * t
                run_std = (run_var + mod.eps).sqrt()
                r = ((var + mod.eps).sqrt() / run_std).clamp(1 / r_max, r_max)
                d = ((mu - run_mu) / run_std).clamp(-d_max, d_max)
                y_train = y_train * r[c] + d[c]
            y_eval = (x - run_mu[c]) / (run_var[c] + mod.eps).sqrt()
            a["gap"] += float(((y_train - y_eval) ** 2).mean())
            a["batches"] += 1
            a["nhw"] = x.shape[0] * x.shape[2] * x.shape[3]
        hooks.append(m.register_forward_pre_hook(hook))
    model.eval()
    try:
        for images, _ in eval_loader(ds, bs, workers=0, max_samples=cfg.eval.max_samples):
            model(images.to(device))
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for name, a in acc.items():
        if not a["n"]:
            continue
        m = layers[name]
        mu = a["sum"] / a["n"]
        var = (a["sumsq"] / a["n"] - mu * mu).clamp_min(0)
        std = (var + m.eps).sqrt()
        rho = between_image_share(a)
        out[name] = {"nhw": a["nhw"], "gap": math.sqrt(a["gap"] / a["batches"]) if a["batches"] else None,
                     "mean_err": float(((m.running_mean.double() - mu).abs() / std).mean()),
                     "var_err": float((m.running_var.double() / (var + m.eps) - 1).abs().mean()),
                     "hw": a["hw"], "rho": rho, "b": b, "n_eff": effective_values(b, a["hw"], rho)}
    return out


def stat_batch(cfg: Experiment) -> int:
    """The images behind one batch statistic in this run: model.norm.ghost_batch, else the step's batch."""
    return cfg.model.norm.ghost_batch or cfg.train.batch_size


def between_image_share(a: dict) -> float | None:
    """ρ from accumulated per-image channel means and within-image variances (one-way ANOVA, images as groups):
    σ²_between = var(image means) − σ²_within / (H·W), ρ = σ²_b / (σ²_b + σ²_w), clamped at 0; mean over channels."""
    n, hw = a["images"], a["hw"]
    if n < 2:
        return None
    mean = a["img_sum"] / n
    var_means = (a["img_sumsq"] / n - mean * mean).clamp_min(0) * n / (n - 1)
    within = a["within"] / n
    between = (var_means - within / hw).clamp_min(0)
    total = between + within
    rho = torch.where(total > 0, between / total.clamp_min(1e-30), torch.zeros_like(total))
    return float(rho.mean())


def effective_values(b: int, hw: int, rho: float | None) -> float | None:
    """Kish's design effect for b clusters of H·W correlated values: b·H·W / (1 + (H·W − 1)·ρ)."""
    if rho is None:
        return None
    return b * hw / (1 + (hw - 1) * rho)


def _batch_stats_only(model: torch.nn.Module) -> None:
    """Eval mode (no dropout), with every BN layer on batch statistics (as in training)."""
    model.eval()
    for m in _batch_norms(model).values():
        m.train()


@torch.no_grad()
def batch_dependence(model: torch.nn.Module, images: torch.Tensor, b: int, *, probes: int = 16,
                     decode=None) -> dict:
    """How much an image's output depends on the other images of its batch: each of the first `probes` images
    is run at position 0 of two batches of b whose other b − 1 images differ (drawn from the rest of `images`),
    BN on batch statistics as in training, everything else in eval mode, buffers restored. Returns the mean
    relative change of its logits (|Δ| / |logits|), the largest absolute change and, with `decode`
    (logits -> strings), the share of probes whose reading changes. Exactly 0 for norms without batch
    statistics; None for b < 2 (a batch of one has no mates)."""
    if b < 2 or images.shape[0] < probes + 2 * (b - 1):
        return {"batch_dependence": None, "batch_dependence_max": None, "batch_dependence_changed": None}
    pool = images[probes:]
    rel, worst, changed = [], 0.0, 0
    with buffers_kept(model):
        _batch_stats_only(model)
        for i in range(probes):  # two disjoint sets of mates, a fixed draw per probe
            perm = torch.randperm(len(pool), generator=torch.Generator().manual_seed(i))
            mates_a, mates_b = pool[perm[: b - 1]], pool[perm[b - 1: 2 * (b - 1)]]
            x = images[i: i + 1]
            la = model(torch.cat([x, mates_a]))[:1].float()
            lb = model(torch.cat([x, mates_b]))[:1].float()
            d = (la - lb).abs()
            rel.append(float(d.mean() / la.abs().mean().clamp_min(1e-12)))
            worst = max(worst, float(d.max()))
            if decode is not None:
                changed += decode(la) != decode(lb)
    return {"batch_dependence": sum(rel) / len(rel), "batch_dependence_max": worst,
            "batch_dependence_changed": changed / probes if decode is not None else None}


@torch.no_grad()
def mechanism(cfg: Experiment, run_dir: Path, *, precise_batches: int = 40) -> dict:
    """After training, from last.pt: batch dependence at the run's b (on val images), and word accuracy in
    eval mode with the running statistics re-estimated over training batches composed as in training
    (PreciseBN, Wu & Johnson 2021: the network in train mode, so every layer sees the input distribution it
    trained on; per layer the mean of the batches' means and of their E[x²], equal weights), beside the plain
    eval-mode accuracy (train_eval_gap)."""
    from ..data.loaders import batch_groups, datasets_for, eval_loader, train_loader
    from ..engine.eval.metrics import MetricAccumulator

    loaded = _last_model(cfg, run_dir)
    if loaded is None:
        return {}
    model, tokenizer, ds, device = loaded
    b = stat_batch(cfg)

    def decode(logits):
        ids, _ = model.decode(logits)
        return tokenizer.decode(ids[0])

    probe_images = next(iter(eval_loader(ds, 16 + max(32, 2 * (b - 1)), workers=0)))[0].to(device)
    out = batch_dependence(model, probe_images, b, decode=decode)
    layers = _batch_norms(model)
    if not layers:
        return out
    train_sets = datasets_for(cfg, "train")
    groups = (batch_groups(train_sets, cfg.data.group_by, cfg.data.group_size)[0]
              if cfg.data.group_by != "none" else None)
    loader = train_loader(train_sets, cfg.train.batch_size, seed=cfg.seed + 104729, steps=precise_batches, start=0,
                          workers=0, groups=groups)
    sums = {n: [0.0, 0.0, 0] for n in layers}
    hooks = []
    for name, m in layers.items():
        def hook(mod, inputs, name=name):
            x = inputs[0].double()
            acc = sums[name]
            acc[0] = acc[0] + x.mean(dim=(0, 2, 3))
            acc[1] = acc[1] + (x * x).mean(dim=(0, 2, 3))
            acc[2] += 1
        hooks.append(m.register_forward_pre_hook(hook))
    with buffers_kept(model):
        _batch_stats_only(model)
        try:
            for images, _ in loader:
                if images.shape[0] == cfg.train.batch_size:
                    model(images.to(device))
        finally:
            for h in hooks:
                h.remove()
        for name, m in layers.items():
            s1, s2, k = sums[name]
            if k:
                m.running_mean.copy_((s1 / k).to(m.running_mean))
                m.running_var.copy_((s2 / k - (s1 / k) ** 2).clamp_min(0).to(m.running_var))
        model.eval()
        acc = MetricAccumulator(cfg.eval.protocol)
        for images, labels in eval_loader(ds, cfg.eval.batch_size, workers=0, max_samples=cfg.eval.max_samples):
            ids, _ = model.decode(model(images.to(device)))
            acc.update([tokenizer.decode(i) for i in ids], labels)
    out["word_acc_precise_bn"] = acc.result()["word_acc"]
    out["precise_bn_batches"] = precise_batches
    return out


def _peak_mem_mb(device_type: str) -> float:
    if device_type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
