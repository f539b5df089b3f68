"""Preflight: before any training step, prove the configured model can train on the configured data.

Static checks first (BatchNorm with batch size 1), then one tiny forward in train mode and one in eval mode at
the configured input size (keep_ratio pads every image to `data.image.width`, so that is the one width the model
sees). The model's state (norm running statistics, RNG) is left exactly as it was. Every failure is a
CvlabError naming the keys to change (exit code 2).
"""

from __future__ import annotations

import torch

from ...config import Experiment
from ...errors import CvlabError
from ...models.common import buffers_kept
from ..progress import NullProgress, Progress


def adjustment_messages(cfg: Experiment, adjustments: dict[int, int], degenerate: dict[str, str] | None = None
                        ) -> list[str]:
    """One line per adjusted channel count (every layer with that many channels uses the same groups), then one
    per kind of degenerate group norm layer, naming every such layer."""
    n = cfg.model.norm
    if n.channels_per_group:
        lines = [f"model.norm.channels_per_group: {n.channels_per_group} does not divide {c} channels; "
                 f"using {g} groups of {c // g}" for c, g in sorted(adjustments.items())]
    else:
        lines = [f"model.norm.groups: {n.groups} groups " + (
            f"would leave fewer than model.norm.min_channels_per_group={n.min_channels_per_group} channels per "
            f"group in {c} channels" if c // n.min_channels_per_group < n.groups else f"do not divide {c} channels")
            + f"; using {g} ({c // g} per group)" for c, g in sorted(adjustments.items())]
    for kind, what in (("instance", "one channel per group: it is instance norm"),
                       ("layer", "one group: it is layer norm")):
        names = [name for name, k in (degenerate or {}).items() if k == kind]
        if names:
            lines.append(f"model.norm: group norm has {what} in {len(names)} layer(s): {', '.join(names)}")
    return lines


def longest_label(cfg: Experiment) -> tuple[int, str] | None:
    """The longest label the configured data can produce and the key that sets it, where a spec says so."""
    best = None
    for split in ("train", "val"):
        for i, spec in enumerate(getattr(cfg.data, split)):
            n = getattr(spec, "max_len", None)
            if n is not None and (best is None or n > best[0]):
                best = (n, f"data.{split}.{i}.max_len")
    return best


def _forward(model, images, cfg: Experiment, mode: str) -> torch.Tensor:
    """Sequence features and head output, turning the errors a config can cause into keyed messages."""
    m = cfg.model
    try:
        feats = model.features(images)
        model.head(model.sequence(feats))
        return feats
    except (RuntimeError, ValueError) as e:
        text = str(e)
        if "more than 1 value per channel" in text or "more than 1 spatial element" in text:
            raise CvlabError(
                f"model.norm.name: {m.norm.name} cannot normalize the {mode}-mode feature maps of "
                f"model.backbone.name={m.backbone.name} at data.image.height={cfg.data.image.height} "
                f"(a 1×1 map or a single value per channel); use model.norm.name=group or layer, or raise "
                f"train.batch_size / data.image.height") from None
        if "too small" in text or "greater than" in text or "Kernel size" in text:
            raise CvlabError(
                f"data.image.height={cfg.data.image.height} × data.image.width={cfg.data.image.width} is too small "
                f"for model.backbone.name={m.backbone.name}: {text.splitlines()[0]}; raise data.image.height/width "
                f"or choose another backbone") from None
        if "groups" in text.lower():
            raise CvlabError(f"model.norm: group norm impossible here ({text.splitlines()[0]}); change "
                             f"model.norm.groups / model.norm.channels_per_group") from None
        raise


@torch.no_grad()
def preflight(model: torch.nn.Module, cfg: Experiment, device: torch.device | str = "cpu", *,
              progress: Progress | None = None, eval_mode: bool = True,
              adjustments: dict[int, int] | None = None, degenerate: dict[str, str] | None = None) -> dict:
    """Check `model` (already built and on `device`) against `cfg`; returns {'steps': T, 'adjustments': {...},
    'degenerate': {...}}. `adjustments` and `degenerate` are `build_model`'s (`Built`), reported here.
    `eval_mode=False` skips the eval-mode forward (`models show` runs its own, with hooks)."""
    progress = progress or NullProgress()
    m, img = cfg.model, cfg.data.image
    from ...models.norms import traits

    if traits(m.norm.name).uses_batch_stats and cfg.train.batch_size < 2:
        raise CvlabError(f"model.norm.name={m.norm.name} cannot train with train.batch_size={cfg.train.batch_size} "
                         f"(batch statistics need at least 2 samples); raise train.batch_size or use "
                         f"model.norm.name=group, layer or instance")
    adjustments, degenerate = dict(adjustments or {}), dict(degenerate or {})
    for line in adjustment_messages(cfg, adjustments, degenerate):
        progress.message(line)

    batch = max(1, min(cfg.train.batch_size, 2))
    images = torch.rand(batch, img.channels, img.height, img.width, device=device)
    dev = torch.device(device)
    # BN running statistics move in train mode: put back, as is the RNG
    with buffers_kept(model), torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        model.train()
        feats = _forward(model, images, cfg, "train")
        if eval_mode:
            model.eval()
            _forward(model, images[:1], cfg, "eval")

    steps = feats.shape[1]
    progress.message(f"model: {steps} frames at data.image.width={img.width}" + (
        f" (CTC: a label of L characters with r adjacent repeats needs L + r <= {steps})" if m.head.name == "ctc"
        else f" (attention: labels of up to model.head.max_length={m.head.max_length} characters)"))
    label = longest_label(cfg)
    if label is not None:
        n, key = label
        if m.head.name == "ctc" and steps < n:
            raise CvlabError(
                f"model.backbone.name={m.backbone.name} gives {steps} CTC steps at data.image.width={img.width}, "
                f"but {key}={n} makes labels of up to {n} characters (CTC needs at least one step per character); "
                f"raise data.image.width or lower {key}")
        if m.head.name == "attention" and m.head.max_length < n:
            raise CvlabError(f"model.head.max_length={m.head.max_length} is shorter than the labels {key}={n} "
                             f"makes; raise model.head.max_length to at least {n} or lower {key}")
    return {"steps": steps, "adjustments": adjustments, "degenerate": degenerate}


def fit_training_labels(train_sets: dict, cfg: Experiment, tokenizer, *, steps: int,
                        progress: Progress | None = None) -> dict:
    """The training sets without the labels the model cannot learn from (`cvlab.data.fit`), each drop counted
    in the dataset's report and said here. A set left empty is an error naming the keys to change."""
    from ...data.fit import LabelLimits, keep_fitting

    progress = progress or NullProgress()
    m = cfg.model
    limits = LabelLimits(tokenizer, m.head.name, frames=steps,
                         max_length=m.head.max_length if m.head.name == "attention" else None,
                         max_label_length=cfg.data.max_label_length)
    out = {}
    for name, ds in train_sets.items():
        out[name], dropped = keep_fitting(ds, limits)
        for why, n in dropped.items():
            progress.message(f"  {name}: dropped {n} of {len(ds)} training labels: {why}")
        if len(out[name]) == 0:
            raise CvlabError(f"{name}: every training label is longer than the model can fit ({steps} frames, "
                             f"head {m.head.name}); raise data.image.width, model.head.max_length or "
                             f"data.max_label_length")
    return out
