"""Evaluation: run the model over a loader, decode, score with the protocol."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from ..data.loaders import eval_loader
from ..data.tokenizer import Tokenizer
from .metrics import MetricAccumulator
from .setup import autocast


@torch.no_grad()
def evaluate(model, loader: DataLoader, tokenizer: Tokenizer, protocol: str, device: torch.device,
             amp: str = "none", channels_last: bool = False, keep: int = 0) -> tuple[dict, tuple]:
    """Metrics dict, plus the first `keep` (images, labels, predictions) for image grids."""
    was_training = model.training
    model.eval()
    acc = MetricAccumulator(protocol)
    kept_images, kept_labels, kept_preds = [], [], []
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(images)
        ids, confs = model.decode(logits)
        preds = [tokenizer.decode(i) for i in ids]
        acc.update(preds, labels, confs, getattr(labels, "lexicons", None))
        if len(kept_labels) < keep:
            n = keep - len(kept_labels)
            kept_images.append(images[:n].float().cpu())
            kept_labels += labels[:n]
            kept_preds += preds[:n]
    model.train(was_training)
    grid = (torch.cat(kept_images) if kept_images else None, kept_labels, kept_preds)
    result = acc.result()
    report = getattr(loader, "load_report", None)
    if report is not None and report.total_dropped:  # never scored: say how many, the CLI lists them
        result["unreadable"] = report.total_dropped
        result["unreadable_examples"] = report.examples.get("image unreadable at load time", [])
    return result, grid


def evaluate_run(run_dir, checkpoint: str | None = None, data: list | None = None, protocol: str | None = None,
                 overrides: tuple[str, ...] = (), progress=None) -> dict:
    """Score a trained run: `best.pt` (or `checkpoint`: a name in checkpoints/ or a path) on the run's val
    datasets, or on `data` (dataset specs). Writes `eval.json` into the run directory and returns it."""
    from pathlib import Path

    from ..config import load_config
    from ..data.charset import resolve_charset
    from ..data.loaders import named_datasets, report_lines, report_of
    from ..errors import CvlabError
    from ..models import build_model
    from .checkpoint import load_checkpoint, load_model_state, write_json
    from .metrics import combine
    from .rundir import resolve_run
    from .setup import pick_device, tokenizer_for

    path = Path(run_dir)
    if path.is_file():  # a checkpoint file: its run is two levels up
        ckpt_path, run = path, path.parent.parent
    else:
        run = resolve_run(path)
        name = checkpoint or "best"
        ckpt_path = Path(name) if Path(name).suffix == ".pt" and Path(name).is_file() else \
            run / "checkpoints" / (name if name.endswith(".pt") else f"{name}.pt")
    state = load_checkpoint(ckpt_path, map_location="cpu")
    if (run / "config.yaml").is_file():
        cfg = load_config(run / "config.yaml", overrides)
    elif path.is_file() and isinstance(state.get("config"), dict):
        # a checkpoint copied out of its run: it carries the config it was trained with
        cfg = load_config(raw=state["config"], overrides=overrides)
        run = path.parent
    else:
        raise CvlabError(f"{run / 'config.yaml'}: missing, and {ckpt_path} carries no config")
    if protocol:
        cfg.eval.protocol = protocol
    device = pick_device(cfg.train.device)
    tokenizer = tokenizer_for(cfg)
    if state.get("charset", tokenizer.charset) != tokenizer.charset:
        raise CvlabError(f"{ckpt_path}: trained with a different charset than {run / 'config.yaml'} names")
    model = build_model(cfg.model, tokenizer.num_classes, cfg.data.image.channels).to(device)
    load_model_state(model, state["model"], ckpt_path)  # a checkpoint of another model: exit 2 naming tensors
    specs = data if data else (cfg.data.test or cfg.data.val)
    sets = named_datasets(specs, resolve_charset(cfg.data.charset), cfg.data)
    results, reported = {}, set()
    for name, ds in sets.items():
        if progress:
            progress.message(f"evaluating {name} ({len(ds)} samples)")
            rep = report_of(ds)  # a report shared by several rows is printed once
            for line in report_lines(ds) if id(rep) not in reported else []:
                progress.message(f"  {name}: {line}")
            reported.add(id(rep))
        results[name], _ = evaluate(model, eval_loader(ds, cfg.eval.batch_size, cfg.data.workers), tokenizer,
                                    cfg.eval.protocol, device, cfg.train.amp, cfg.train.channels_last)
    out = {"run": str(run), "checkpoint": str(ckpt_path), "step": state["step"], "protocol": cfg.eval.protocol,
           "datasets": results, "combined": combine(results)}
    write_json(out, run / "eval.json")
    return out
