"""`cvlab import dtrb`: a clovaai deep-text-recognition-benchmark checkpoint as a cvlab run.

DTRB names its four stages `Transformation` (None | TPS), `FeatureExtraction` (VGG | RCNN | ResNet),
`SequenceModeling` (None | BiLSTM) and `Prediction` (CTC | Attn), and saves `model.state_dict()` of a
DataParallel wrapper (`module.` prefix). cvlab hosts them as:

- TPS -> `transform: tps_dtrb` (the same localization net and TPS; grid_sample with align_corners=True);
- VGG -> `vgg`, depth `crnn` (DTRB's VGG_FeatureExtractor layer for layer); ResNet -> `resnet`, depth `text`
  (DTRB's [1,2,5,3] ResNet_FeatureExtractor); `width` = output_channel / 512;
- BiLSTM -> `bilstm`, 2 layers of DTRB's hidden_size; CTC -> `ctc`; Attn -> `attention` (the same cell);
- RCNN (gated recurrent convolution) has no cvlab backbone: refused with a message.

Tensors are paired stage by stage in the order both models register them, each pair checked by its leaf name
(weight, bias, running_mean, ...) and shape; every DTRB tensor must be used, or the import fails. DTRB's TPS
grid buffers (`GridGenerator.P_hat`, `inv_delta_C`) depend only on the image size: cvlab recomputes them, and
P_hat's row count (height × width) is checked against the image size the run is given.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

from ..config import Experiment
from ..errors import CvlabError

STAGES = {
    "Trans": ("None", "TPS"),
    "Feat": ("VGG", "RCNN", "ResNet"),
    "Seq": ("None", "BiLSTM"),
    "Pred": ("CTC", "Attn"),
}
# DTRB's `opt.character`: the default, and what --sensitive turns it into (string.printable[:-6])
CHARSETS = {"default": string.digits + string.ascii_lowercase, "sensitive": string.printable[:-6]}
PREFIXES = (  # DTRB stage prefix -> cvlab module prefix
    ("Transformation.LocalizationNetwork.", "transform.localization."),
    ("FeatureExtraction.ConvNet.", "backbone.features."),
    ("SequenceModeling.", "sequence."),
    ("Prediction.", "head."),
)
DERIVED = ("Transformation.GridGenerator.inv_delta_C", "Transformation.GridGenerator.P_hat")


def parse_arch(arch: str) -> tuple[str, str, str, str]:
    """`TPS-ResNet-BiLSTM-Attn` -> its four stages, each checked against DTRB's names."""
    parts = arch.split("-")
    if len(parts) != 4:
        raise CvlabError(f"--arch {arch}: give DTRB's four stages as Trans-Feat-Seq-Pred, e.g. "
                         f"TPS-ResNet-BiLSTM-Attn or None-VGG-BiLSTM-CTC")
    for part, (stage, names) in zip(parts, STAGES.items(), strict=True):
        if part not in names:
            raise CvlabError(f"--arch {arch}: {stage} stage {part!r} is not one of DTRB's ({', '.join(names)})")
    if parts[1] == "RCNN":
        raise CvlabError(f"--arch {arch}: cvlab has no RCNN (gated recurrent convolution) backbone; it hosts DTRB's "
                         f"VGG and ResNet feature extractors, with or without TPS, BiLSTM, CTC or Attn")
    return tuple(parts)  # type: ignore[return-value]


def _strip(weights: dict) -> dict:
    """DTRB saves a DataParallel model: drop the `module.` prefix when every key has it."""
    if weights and all(k.startswith("module.") for k in weights):
        return {k[len("module."):]: v for k, v in weights.items()}
    return dict(weights)


def detect_arch(weights: dict) -> str:
    """The four stages a DTRB state dict was saved from, read off its tensor names."""
    keys = list(weights)
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if not has("FeatureExtraction.") or not has("Prediction."):
        raise CvlabError("not a DTRB checkpoint: no FeatureExtraction.* / Prediction.* tensors (after `module.`)")
    trans = "TPS" if has("Transformation.") else "None"
    feat = "ResNet" if has("FeatureExtraction.ConvNet.conv0_1") else \
        "RCNN" if any(".wgf_u." in k for k in keys) else "VGG"
    seq = "BiLSTM" if has("SequenceModeling.") else "None"
    pred = "Attn" if has("Prediction.attention_cell.") else "CTC"
    return f"{trans}-{feat}-{seq}-{pred}"


def dtrb_config(weights: dict, arch: tuple[str, str, str, str], charset: str, *, height: int, width: int,
                max_length: int = 25, name: str = "dtrb") -> Experiment:
    """The cvlab experiment that builds DTRB's model for these weights (sizes read off the tensors)."""
    trans, feat, seq, pred = arch
    first = weights["FeatureExtraction.ConvNet.conv0_1.weight" if feat == "ResNet" else
                    "FeatureExtraction.ConvNet.0.weight"]
    last = weights["FeatureExtraction.ConvNet.conv4_2.weight" if feat == "ResNet" else
                   "FeatureExtraction.ConvNet.18.weight"]
    out_channel, channels = int(last.shape[0]), int(first.shape[1])
    if trans == "TPS" and out_channel != 512:
        raise CvlabError(f"output_channel {out_channel} with TPS: cvlab's TPS scales with the backbone width, DTRB's "
                         f"stays 64-512; only output_channel 512 can be hosted with TPS")
    if trans == "TPS" and "Transformation.GridGenerator.P_hat" in weights:
        rows = int(weights["Transformation.GridGenerator.P_hat"].shape[0])
        if rows != height * width:
            raise CvlabError(f"--height/--width {height}x{width}: the checkpoint's TPS grid has {rows} points, "
                             f"so it was trained at another size (imgH × imgW = {rows}, e.g. 32x{rows // 32})")
    hidden = int(weights["SequenceModeling.0.linear.weight"].shape[0]) if seq == "BiLSTM" else None
    if pred == "Attn":
        n_classes, head = int(weights["Prediction.generator.weight"].shape[0]), {
            "name": "attention", "hidden": int(weights["Prediction.generator.weight"].shape[1]),
            "max_length": max_length}
    else:
        n_classes, head = int(weights["Prediction.weight"].shape[0]), {"name": "ctc"}
    specials = 2 if pred == "Attn" else 1
    if n_classes - specials != len(charset):
        raise CvlabError(f"the checkpoint's classifier has {n_classes} classes ({n_classes - specials} characters + "
                         f"{specials} special), the charset has {len(charset)}: give the --character it was "
                         f"trained with (or --sensitive)")
    backbone = {"name": "resnet", "depth": "text"} if feat == "ResNet" else \
        {"name": "vgg", "depth": "crnn", "norm_at": "crnn"}
    raw = {
        "name": name,
        "data": {"charset": {"chars": charset},
                 "image": {"height": height, "width": width, "channels": channels, "interpolation": "bicubic"}},
        "model": {"transform": "tps_dtrb" if trans == "TPS" else "none",
                  "backbone": {**backbone, "size": "standard", "width": out_channel / 512},
                  "norm": {"name": "batch"}, "act": "relu",
                  "sequence": {"name": "bilstm", "layers": 2, "hidden": hidden} if hidden else {"name": "none"},
                  "head": head, "dropout": 0.0, "init": "dtrb"},  # a retrain from this config starts as DTRB's
        "eval": {"protocol": "dtrb" if charset == CHARSETS["default"] else "printable94"},
    }
    return Experiment.model_validate(raw)


def map_weights(weights: dict, model: torch.nn.Module) -> tuple[dict, dict]:
    """(cvlab state dict, {DTRB name: cvlab name}) with every DTRB tensor used exactly once."""
    own = model.state_dict()
    state, mapping = {}, {}
    for src_prefix, dst_prefix in PREFIXES:
        src = [k for k in weights if k.startswith(src_prefix)]
        dst = [k for k in own if k.startswith(dst_prefix)]
        if len(src) != len(dst):
            raise CvlabError(f"DTRB stage {src_prefix.rstrip('.')}: {len(src)} tensors, cvlab's {dst_prefix.rstrip('.')} "
                             f"has {len(dst)}; the checkpoint does not have the structure its names suggest")
        for s, d in zip(src, dst, strict=True):
            leaf_s, leaf_d = s.rsplit(".", 1)[-1], d.rsplit(".", 1)[-1]
            if leaf_s != leaf_d or tuple(weights[s].shape) != tuple(own[d].shape):
                raise CvlabError(f"DTRB tensor {s} {tuple(weights[s].shape)} does not fit cvlab's {d} "
                                 f"{tuple(own[d].shape)}")
            state[d] = weights[s].to(own[d].dtype) if own[d].is_floating_point() else weights[s]
            mapping[s] = d
    unused = [k for k in weights if k not in mapping and k not in DERIVED]
    if unused:
        raise CvlabError(f"{len(unused)} DTRB tensors have no place in cvlab's model: {', '.join(unused[:5])}")
    missing = [k for k in own if k not in state]
    if missing:
        raise CvlabError(f"{len(missing)} cvlab tensors got no DTRB weights: {', '.join(missing[:5])}")
    for k in DERIVED:
        if k in weights:
            mapping[k] = "(recomputed from the image size)"
    return state, mapping


def import_dtrb(path: Path, arch: str | None = None, *, character: str | None = None, sensitive: bool = False,
                height: int = 32, width: int = 100, max_length: int = 25, runs_dir: Path = Path("runs"),
                name: str | None = None) -> dict:
    """Convert a DTRB .pth into a new cvlab run (config.yaml, checkpoints/best.pt, import.json) that
    `cvlab eval` and `cvlab predict` read; returns import.json's content."""
    from ..atomic import write_json, write_text_atomic
    from ..config import dump_config
    from ..data.tokenizer import build_tokenizer
    from ..models import build_model
    from .runs.checkpoint import read_torch_file
    from .runs.directory import check_writable, new_run_dir

    path = Path(path).expanduser()
    if not path.is_file():
        raise CvlabError(f"{path}: file not found")
    check_writable(runs_dir, "--runs-dir")  # before any work: where the new run goes must be writable
    try:  # a truncated or foreign file, or a pickle of objects: one plain line, never torch's own text
        raw = read_torch_file(path, map_location="cpu", weights_only=True)
    except CvlabError as e:
        raise CvlabError(f"{e} (DTRB saves model.state_dict() as a .pth file)") from None
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict):
        raise CvlabError(f"{path}: not a state dict (DTRB saves model.state_dict())")
    weights = _strip(raw)
    found = detect_arch(weights)
    stages = parse_arch(arch or found)
    if arch and tuple(found.split("-")) != stages:
        raise CvlabError(f"--arch {arch}: the checkpoint's tensors are those of {found}")
    if character is not None and sensitive:
        raise CvlabError("give --character or --sensitive, not both")
    charset = character if character is not None else CHARSETS["sensitive" if sensitive else "default"]
    if len(set(charset)) != len(charset):
        raise CvlabError("--character: a character appears twice; DTRB's classes are one per character")
    cfg = dtrb_config(weights, stages, charset, height=height, width=width, max_length=max_length,
                      name=name or f"dtrb-{'-'.join(stages)}")
    tok = build_tokenizer(cfg.model.head.name, charset)
    model = build_model(cfg.model, tok.num_classes, cfg.data.image.channels).model
    state, mapping = map_weights(weights, model)
    model.load_state_dict(state)
    run = new_run_dir(runs_dir, cfg.name)
    write_text_atomic(dump_config(cfg) + "\n", run / "config.yaml")
    from .runs.checkpoint import save_checkpoint

    save_checkpoint({"model": model.state_dict(), "step": 0, "config": cfg.model_dump(mode="json"),
                     "charset": charset, "imported_from": str(path)}, run / "checkpoints" / "best.pt")
    info = {"source": str(path), "arch": "-".join(stages), "run": str(run), "charset": charset,
            "tensors": len(mapping), "mapping": mapping}
    write_json(info, run / "import.json")
    return info
