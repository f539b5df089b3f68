"""A trained model from a run directory, a folder of runs or a checkpoint file: what eval and predict share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from ...config import Experiment, load_saved_config
from ...data.tokenizer import Tokenizer, tokenizer_for
from ...errors import CvlabError
from ..device import pick_device
from .checkpoint import load_checkpoint, load_model_state
from .directory import resolve_run


@dataclass
class Loaded:
    run: Path  # where results are written: the run directory, or the folder of a copied-out checkpoint
    checkpoint: Path
    step: int
    cfg: Experiment
    tokenizer: Tokenizer
    model: torch.nn.Module  # on `device`, in eval mode
    device: torch.device


def load_run(run_or_ckpt, checkpoint: str | None = None, overrides: tuple[str, ...] = ()) -> Loaded:
    """`best.pt` (or `checkpoint`: a name in checkpoints/ or a path) of a run; a .pt file given directly is
    used with its run's config.yaml, or with the config it carries when it was copied out of its run."""
    from ...models import build_model

    path = Path(run_or_ckpt)
    if path.is_file():  # a checkpoint file: its run is two levels up
        ckpt_path, run = path, path.parent.parent
    else:
        run = resolve_run(path)
        name = checkpoint or "best"
        ckpt_path = Path(name) if Path(name).suffix == ".pt" and Path(name).is_file() else \
            run / "checkpoints" / (name if name.endswith(".pt") else f"{name}.pt")
    state = load_checkpoint(ckpt_path, map_location="cpu")
    if (run / "config.yaml").is_file():
        cfg = load_saved_config(run / "config.yaml", overrides)
    elif path.is_file() and isinstance(state.get("config"), dict):
        # a checkpoint copied out of its run: it carries the config it was trained with
        cfg = load_saved_config(raw=state["config"], overrides=overrides)
        run = path.parent
    else:
        raise CvlabError(f"{run / 'config.yaml'}: missing, and {ckpt_path} carries no config")
    device = pick_device(cfg.train.device)
    tokenizer = tokenizer_for(cfg)
    if state.get("charset", tokenizer.charset) != tokenizer.charset:
        raise CvlabError(f"{ckpt_path}: trained with a different charset than {run / 'config.yaml'} names")
    model = build_model(cfg.model, tokenizer.num_classes, cfg.data.image.channels).model.to(device)
    load_model_state(model, state["model"], ckpt_path)  # a checkpoint of another model: exit 2 naming tensors
    model.eval()
    return Loaded(run, ckpt_path, int(state.get("step", 0)), cfg, tokenizer, model, device)


class Inference(NamedTuple):
    model: torch.nn.Module
    folded: int  # batch norms folded into the conv before them
    channels_last: bool  # the model (and so the inputs) in channels_last


def inference_model(loaded: Loaded, *, fold_bn: bool | None = None, channels_last: bool | None = None) -> Inference:
    """The model as eval and predict run it: with `fold_bn`, a copy with every conv -> batch-norm pair folded into
    one conv (`loaded.model`, and so the checkpoint, untouched); with `channels_last`, its weights (and then its
    inputs) in channels_last. Both are exact up to float rounding in float32 (the same predictions: tested, and
    measured on 2,000 images), so `None` (the default) turns each on where the model runs in float32 (`train.amp`
    resolved to none), channels_last on the CPU only (and wherever `train.channels_last` trained it so); under
    bf16/fp16 autocast the rounding moves to other places and a near tie could read differently."""
    from ...models.fold import fold_batch_norms, foldable_pairs
    from ..device import resolve_amp

    fp32 = resolve_amp(loaded.device, loaded.cfg.train.amp)[0] == "none"
    model, folded = loaded.model, 0
    if fold_bn is None:
        fold_bn = fp32
    if fold_bn:
        folded = len(foldable_pairs(model))
        model = fold_batch_norms(model)
    if channels_last is None:
        channels_last = loaded.cfg.train.channels_last or (fp32 and loaded.device.type == "cpu")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # a folded copy, or the loaded model (not kept)
    return Inference(model, folded, channels_last)
