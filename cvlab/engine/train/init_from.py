"""`train.init_from` (`cvlab train EXP.yaml --init-from RUN_OR_CKPT`): start a new run from another run's weights.

Weights only: the optimizer, schedule, step and RNG start fresh (that is `--resume`'s job). Every tensor of the
new model is accounted for, and nothing is dropped silently:

- `loaded`: same name and shape in the source;
- `remapped`: the classifier rows (CTC `head.fc`, attention `head.generator`) and the attention cell's one-hot
  input columns, taken class by class when the charsets differ: a character both charsets have keeps its
  trained row, a new one keeps its fresh initialisation (listed), specials map to specials;
- `new`: no tensor of that name in the source (another head, another sequence stage): freshly initialised;
- `skipped`: a source tensor this model has no use for, or a same-named one of another shape outside the
  backbone.

The backbone must come whole: a backbone tensor missing from the source or of another shape is an error
(exit 2) naming the tensors, since half a backbone is not a fine-tuning start.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...errors import CvlabError

# (tensor name, axis holding the classes) of the layers whose size is the number of classes
CLASS_AXES = {"head.fc.weight": 0, "head.fc.bias": 0, "head.generator.weight": 0, "head.generator.bias": 0,
              "head.cell.weight_ih": 1}
STRICT_PREFIX = "backbone."


def resolve_source(spec: str) -> Path:
    """The checkpoint file `train.init_from` names, absolute: a .pt file, a run directory's best.pt, or the
    newest run's in a folder of runs. A run records this, not "the newest run in runs/x" (another one
    tomorrow)."""
    from ..runs.directory import resolve_run

    path = Path(spec).expanduser()
    if not path.exists():
        raise CvlabError(f"train.init_from: {path}: no such run or checkpoint")
    return (path if path.is_file() else resolve_run(path) / "checkpoints" / "best.pt").resolve()


def same_source(a: str | None, b: str | None) -> bool:
    """Whether two `train.init_from` values name the same checkpoint file (as given, or once resolved)."""
    if a == b:
        return True
    if not a or not b:
        return False
    try:
        return resolve_source(a) == resolve_source(b)
    except CvlabError:
        return False


def load_source(spec: str) -> tuple[dict, str | None, dict | None, Path]:
    """(model weights, charset, config dict, checkpoint path) of a run directory (its best.pt), a folder of
    runs (the newest) or a .pt file; the path is `resolve_source`'s."""
    from ..runs.checkpoint import load_checkpoint

    ckpt = resolve_source(spec)
    state = load_checkpoint(ckpt)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        hint = " (a DTRB checkpoint? convert it first: cvlab import dtrb FILE.pth)" if isinstance(state, dict) and \
            any(str(k).split(".", 1)[-1].startswith(("FeatureExtraction", "Prediction")) for k in state) else ""
        raise CvlabError(f"train.init_from: {ckpt}: not a cvlab checkpoint (no `model` weights){hint}")
    return state["model"], state.get("charset"), state.get("config"), ckpt


def _class_map(own: list[str], src: list[str]) -> list[int | None]:
    """For each class of this model (specials + charset), its index in the source, or None when new."""
    index = {s: i for i, s in enumerate(src)}
    return [index.get(s) for s in own]


def init_from(model: torch.nn.Module, spec: str, tokenizer, head: str) -> dict:
    """Copy what fits of `spec`'s weights into `model` (in place); returns the report (see the module doc)."""
    from ...data.tokenizer import build_tokenizer

    weights, charset, config, ckpt = load_source(spec)
    src_head = ((config or {}).get("model") or {}).get("head", {}).get("name", head)
    own = model.state_dict()
    report: dict = {"source": str(ckpt), "requested": spec, "loaded": [], "remapped": [], "new": [], "skipped": [],
                    "charset": {}}
    mismatched = []
    cmap = None
    if charset is not None and src_head == head and charset != tokenizer.charset:
        src_itos = build_tokenizer(src_head, charset).itos
        cmap, n_src = _class_map(tokenizer.itos, src_itos), len(src_itos)
        n = len(tokenizer.specials)
        new_chars = [c for c, j in zip(tokenizer.itos[n:], cmap[n:], strict=True) if j is None]
        report["charset"] = {"shared": len(tokenizer.charset) - len(new_chars), "new": new_chars,
                             "dropped": [c for c in charset if c not in tokenizer.stoi]}
    state = {}
    for name, t in own.items():
        w = weights.get(name)
        if w is None:
            report["new"].append(name)
            if name.startswith(STRICT_PREFIX):
                mismatched.append(f"{name} (missing from the source)")
            continue
        if name in CLASS_AXES and cmap is not None and w.dim() == t.dim():
            axis = CLASS_AXES[name]
            # the attention cell's input is [context, one-hot]: the class columns are the last ones
            offset, src_offset = t.shape[axis] - len(cmap), w.shape[axis] - n_src
            same_rest = all(w.shape[d] == t.shape[d] for d in range(w.dim()) if d != axis)
            if offset == src_offset >= 0 and same_rest:
                out = t.clone()
                out.narrow(axis, 0, offset).copy_(w.narrow(axis, 0, offset))
                for i, j in enumerate(cmap):
                    if j is not None:
                        out.narrow(axis, offset + i, 1).copy_(w.narrow(axis, offset + j, 1))
                state[name] = out
                report["remapped"].append(f"{name} {tuple(w.shape)} -> {tuple(t.shape)}")
                continue
        if tuple(w.shape) != tuple(t.shape):
            if name.startswith(STRICT_PREFIX):
                mismatched.append(f"{name} {tuple(w.shape)} in the source vs {tuple(t.shape)} here")
            report["skipped"].append(f"{name} (shape {tuple(w.shape)} in the source, {tuple(t.shape)} here)")
            report["new"].append(name)
            continue
        state[name] = w
        report["loaded"].append(name)
    if mismatched:
        raise CvlabError(f"train.init_from: {ckpt}: its backbone does not fit this model's ({len(mismatched)} "
                         f"tensors): {'; '.join(mismatched[:8])}{' ...' if len(mismatched) > 8 else ''}; "
                         f"use the same model.backbone (name, size, width, depth) and model.norm")
    report["skipped"] += [f"{k} (not in this model)" for k in weights if k not in own]
    model.load_state_dict(state, strict=False)
    return report


def report_lines(report: dict) -> list[str]:
    """What the console shows: every tensor, by what happened to it."""
    lines = [f"init-from {report['source']}: {len(report['loaded'])} tensors loaded, {len(report['remapped'])} "
             f"remapped to the new charset, {len(report['new'])} new (freshly initialised), "
             f"{len(report['skipped'])} skipped (optimizer, schedule and step start fresh)"]
    cs = report.get("charset") or {}
    if cs:
        lines.append(f"  charset: {cs['shared']} characters keep their trained rows; {len(cs['new'])} new: "
                     f"{''.join(cs['new'])!r}; {len(cs['dropped'])} of the source's not in this charset: "
                     f"{''.join(cs['dropped'])!r}")
    for key in ("loaded", "remapped", "new", "skipped"):
        if report[key]:
            lines.append(f"  {key}: {', '.join(report[key])}")
    return lines


def init_weights(model: torch.nn.Module, cfg, tokenizer, progress) -> dict | None:
    """`train.init_from`, when set: load it into the freshly built model and report every tensor."""
    if not cfg.train.init_from:
        return None
    report = init_from(model, cfg.train.init_from, tokenizer, cfg.model.head.name)
    # config.yaml (written after this) names the checkpoint file the weights came from, so the run can be
    # reproduced; what was asked for (a run, a folder of runs) stays in init_from.json as `requested`
    cfg.train.init_from = report["source"]
    for line in report_lines(report):
        progress.message(line)
    return report
