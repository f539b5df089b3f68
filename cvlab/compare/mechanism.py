"""What compare-norms measures after a variant has trained, from its last.pt (loaded once): the train/eval-mode
gap, per BN layer the values behind each statistic, how many of them are independent (ρ, n_eff), the gap between
batch and running statistics and the running statistics' error, accuracy with re-estimated statistics
(PreciseBN), and batch dependence (how much an image's output moves with its batch-mates)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import torch

from ..config import Experiment
from ..models.common import buffers_kept


def measure(cfg: Experiment, run_dir: Path) -> dict:
    """Every measurement below, for variant.json: {} without a validation set."""
    loaded = last_model(cfg, run_dir)
    if loaded is None:
        return {}
    return {**train_eval_gap(cfg, loaded), **precise_bn_and_dependence(cfg, loaded),
            "bn_layers": bn_layer_stats(cfg, loaded)}


class LastModel(NamedTuple):
    model: torch.nn.Module
    tokenizer: object
    val: object  # the first validation set
    device: torch.device


def last_model(cfg: Experiment, run_dir: Path) -> LastModel | None:
    """The run's last.pt, built once for every measurement below; None without a validation set."""
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
    return LastModel(model, tokenizer, next(iter(val.values())), device)


def _batch_norms(model) -> dict[str, torch.nn.Module]:
    return {n: m for n, m in model.named_modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats}


@torch.no_grad()
def train_eval_gap(cfg: Experiment, loaded: LastModel) -> dict:
    """Word accuracy on the first val set from last.pt with norm layers using batch statistics (train mode, at
    the training batch size) minus with running statistics (eval mode). Everything else stays in eval mode
    (no dropout), and nothing is written back."""
    from ..data.loaders import eval_loader
    from ..engine.eval.metrics import MetricAccumulator

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
def bn_layer_stats(cfg: Experiment, loaded: LastModel) -> dict[str, dict]:
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
def precise_bn_and_dependence(cfg: Experiment, loaded: LastModel, *, precise_batches: int = 40) -> dict:
    """After training, from last.pt: batch dependence at the run's b (on val images), and word accuracy in
    eval mode with the running statistics re-estimated over training batches composed as in training
    (PreciseBN, Wu & Johnson 2021: the network in train mode, so every layer sees the input distribution it
    trained on; per layer the mean of the batches' means and of their E[x²], equal weights), beside the plain
    eval-mode accuracy (train_eval_gap)."""
    from ..data.loaders import datasets_for, eval_loader, train_loader
    from ..data.sampling import batch_groups
    from ..engine.eval.metrics import MetricAccumulator

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
