"""`cvlab export`: a trained run as an ONNX or TorchScript model, checked against the native one.

The exported graph maps images (B, C, H, W) in [0, 1] (the run's `data.image` geometry; batch and width
dynamic) to the head's logits (B, T, classes); decoding stays outside (CTC collapse or attention [EOS], as the
run's head does), described in a JSON file written beside the model (charset, specials, image geometry).

Both formats are traced (torch.onnx's TorchScript-based exporter, opset 17; torch.jit.trace), so every
operation is recorded with the traced sizes as variables. Every export is then run at two widths against the
native model: an exporter that froze a size shows up there, not in a user's pipeline. `verify` also scores
the run's val sets with both, under the run's protocol.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch

from ..errors import CvlabError

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
TOLERANCE = 1e-4  # largest |exported - native| logit accepted (float32 reorderings stay ~1e-6)
OPSET = 17


class ExportMismatch(Exception):
    """The exported model computes something else than the native one (exit 1: a bug, not bad input)."""


def _needs(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise CvlabError(f"{module} is not installed: install the export extra, pip install 'cvlab[export]'") \
            from None


def plain_model(model: torch.nn.Module) -> torch.nn.Module:
    """A CPU eval copy with weight norm folded into plain weights (what an exported graph should hold)."""
    from torch.nn.utils import parametrize

    m = copy.deepcopy(model).cpu().eval()
    for module in m.modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return m


def export_model(model: torch.nn.Module, path: Path, fmt: str, example: torch.Tensor) -> None:
    """Trace `model` into `path`, written atomically (cvlab/atomic.py): a failed write (full disk, read-only
    folder) is a CvlabError naming the path and leaves no half-written model behind."""
    from ..atomic import atomic_write

    if fmt == "onnx":
        _needs("onnx")

    def write(f) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python ints and the legacy exporter's deprecation
            if fmt == "onnx":
                torch.onnx.export(model, (example,), f, input_names=["images"], output_names=["logits"],
                                  dynamic_axes={"images": {0: "batch", 3: "width"},
                                                "logits": {0: "batch", 1: "frames"}},
                                  opset_version=OPSET, dynamo=False)
            else:
                with torch.no_grad():
                    torch.jit.save(torch.jit.trace(model, example, check_trace=False), f)

    atomic_write(Path(path), write)


def runner(path: Path, fmt: str):
    """images (B, C, H, W) float tensor -> logits tensor, by the exported file alone."""
    if fmt == "onnx":
        ort = _needs("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(None, {"images": x.cpu().numpy()})[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation note
        module = torch.jit.load(str(path), map_location="cpu")

    def run(x):
        with torch.no_grad():
            return module(x.cpu())

    return run


def check_widths(model, run_exported, *, channels: int, height: int, widths: tuple[int, ...],
                 tolerance: float) -> dict[int, float]:
    """{width: largest logit difference} on random images; ExportMismatch when a shape or a value is off."""
    gen = torch.Generator().manual_seed(0)
    diffs = {}
    for i, w in enumerate(widths):
        x = torch.rand(2 + i, channels, height, w, generator=gen)  # another batch size too
        with torch.no_grad():
            native, exported = model(x), run_exported(x)
        if tuple(exported.shape) != tuple(native.shape):
            raise ExportMismatch(f"at width {w} the exported model gives logits {tuple(exported.shape)}, the native "
                                 f"one {tuple(native.shape)}: the exporter fixed a size")
        diffs[w] = float((exported - native).abs().max())
        if diffs[w] > tolerance:
            raise ExportMismatch(f"at width {w} the exported logits differ from the native ones by up to "
                                 f"{diffs[w]:.3g} (tolerance {tolerance:g})")
    return diffs


def verify(loaded, model, run_exported, *, tolerance: float, progress=None) -> dict:
    """Score the run's val sets natively and exported, under the run's protocol."""
    from ..data.charset import resolve_charset
    from ..data.loaders import eval_loader, named_datasets
    from .eval.metrics import MetricAccumulator

    cfg = loaded.cfg
    if not cfg.data.val:
        raise CvlabError("data.val: the run has no val sets to verify the export on")
    sets = named_datasets(cfg.data.val, resolve_charset(cfg.data.charset), cfg.data)
    out = {}
    for name, ds in sets.items():
        if progress:
            progress.message(f"verifying on {name} ({len(ds)} samples)")
        native_acc, export_acc = MetricAccumulator(cfg.eval.protocol), MetricAccumulator(cfg.eval.protocol)
        worst, changed = 0.0, 0
        for images, labels in eval_loader(ds, cfg.eval.batch_size, workers=cfg.data.workers):
            with torch.no_grad():
                a = model(images)
            b = run_exported(images)
            worst = max(worst, float((a - b).abs().max())) if a.shape == b.shape else float("inf")
            pa = [loaded.tokenizer.decode(i) for i in model.decode(a)[0]]
            pb = [loaded.tokenizer.decode(i) for i in model.decode(b)[0]] if a.shape == b.shape else [""] * len(pa)
            changed += sum(x != y for x, y in zip(pa, pb, strict=True))
            native_acc.update(pa, labels)
            export_acc.update(pb, labels)
        n, e = native_acc.result(), export_acc.result()
        out[name] = {"samples": n["samples"], "native_word_acc": n["word_acc"], "export_word_acc": e["word_acc"],
                     "max_logit_diff": worst, "changed_predictions": changed}
    return out


def export_path(loaded, fmt: str = "onnx", *, int8: bool = False) -> Path:
    """Where `cvlab export` writes a run's model by default: RUN/export/<checkpoint>.onnx (.int8.onnx, int8)."""
    return loaded.run / "export" / f"{loaded.checkpoint.stem}{'.int8' if int8 else ''}{FORMATS[fmt]}"


def _checkpoint_meta(loaded) -> dict:
    return {"path": str(loaded.checkpoint), "step": loaded.step}


def stale(path: Path, loaded) -> str | None:
    """Why an exported file cannot stand for the loaded checkpoint (missing, older than it, made from another
    step), or None when it can."""
    import json

    if not path.is_file():
        return "missing"
    if path.stat().st_mtime < loaded.checkpoint.stat().st_mtime:
        return "older than the checkpoint"
    try:
        made = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8")).get("checkpoint") or {}
    except (OSError, ValueError):
        made = {}
    if made.get("step", loaded.step) != loaded.step:
        return f"made from step {made['step']}, the checkpoint is at step {loaded.step}"
    return None


def write_export(loaded, path: Path, fmt: str = "onnx", *, tolerance: float = TOLERANCE) -> dict:
    """Trace the loaded checkpoint into `path` (atomically), run it at two widths against the native model
    (ExportMismatch beyond `tolerance`) and write the JSON beside it; returns what was written and checked."""
    from ..atomic import write_json

    cfg, image = loaded.cfg, loaded.cfg.data.image
    model = plain_model(loaded.model)
    example = torch.rand(2, image.channels, image.height, image.width, generator=torch.Generator().manual_seed(0))
    export_model(model, path, fmt, example)
    run_exported = runner(path, fmt)
    widths = (image.width, image.width + max(8, image.width // 2))
    result = {"path": str(path), "format": fmt, "checkpoint": str(loaded.checkpoint), "tolerance": tolerance,
              "model": model, "runner": run_exported}
    result["widths"] = check_widths(model, run_exported, channels=image.channels, height=image.height,
                                    widths=widths, tolerance=tolerance)
    tok = loaded.tokenizer
    meta = {"format": fmt, "input": {"name": "images", "layout": "NCHW", "range": [0.0, 1.0],
                                    "height": image.height, "width": image.width, "channels": image.channels,
                                    "resize": image.resize, "interpolation": image.interpolation,
                                    "dynamic": ["batch", "width"]},
            "output": {"name": "logits", "shape": ["batch", "frames", tok.num_classes]},
            "head": cfg.model.head.name, "specials": list(tok.specials), "charset": tok.charset,
            "decoding": "ctc: argmax per frame, merge repeats, drop class 0" if cfg.model.head.name == "ctc" else
            "attention: argmax per step up to the first class 1 ([EOS]); class 0 is [GO]",
            "protocol": cfg.eval.protocol, "checked_widths": result["widths"], "checkpoint": _checkpoint_meta(loaded)}
    meta_path = path.with_name(path.name + ".json")
    write_json(meta, meta_path)
    result["meta"] = str(meta_path)
    return result


def ensure_onnx(loaded, *, progress=None) -> tuple[Path, bool]:
    """The run's fp32 ONNX model (RUN/export/<checkpoint>.onnx), exported first when it is missing or older
    than the checkpoint, saying so in one line; and whether it is a temporary file: a run that cannot be written
    to (a read-only model folder) gets one in a folder of its own, for the caller to remove once loaded
    (onnxruntime reads the file when a session starts)."""
    import tempfile

    from .runs.directory import check_writable_file

    _needs("onnx")
    path = export_path(loaded)
    why = stale(path, loaded)
    if why is None:
        return path, False
    temporary = False
    try:
        check_writable_file(path, "export")
    except CvlabError:
        path = Path(tempfile.mkdtemp(prefix="cvlab-onnx-")) / path.name
        why += f"; {loaded.run / 'export'} is not writable: a temporary file"
        temporary = True
    if progress:
        progress.message(f"exporting {loaded.checkpoint} to {path} for onnxruntime ({why})")
    write_export(loaded, path, "onnx")
    return path, temporary


def export_run(run, fmt: str = "onnx", *, out: Path | None = None, do_verify: bool = False,
               checkpoint: str | None = None, tolerance: float = TOLERANCE, progress=None) -> dict:
    """Export a run's checkpoint; returns what was written and checked. Raises ExportMismatch (after the
    checks ran) when the exported model disagrees with the native one beyond `tolerance`."""
    from .runs.directory import check_writable_file
    from .runs.load import load_run

    if fmt not in FORMATS:
        raise CvlabError(f"--format {fmt}: unknown (valid: {', '.join(FORMATS)})")
    if fmt == "onnx":  # before any work: a missing extra is the user's to install
        _needs("onnx")
        _needs("onnxruntime")
    if out is not None:  # before any work: where the model goes must be writable (the one shared check)
        out = Path(out).expanduser()
        check_writable_file(out, "--out")
    loaded = load_run(run, checkpoint)
    path = out if out is not None else export_path(loaded, fmt)
    if out is None:  # the default, inside the run (which may be on a read-only filesystem)
        _check_default(path)
    result = write_export(loaded, path, fmt, tolerance=tolerance)
    model, run_exported = result.pop("model"), result.pop("runner")
    if do_verify:
        result["verify"] = verify(loaded, model, run_exported, tolerance=tolerance, progress=progress)
        bad = {k: v for k, v in result["verify"].items()
               if v["max_logit_diff"] > tolerance or v["changed_predictions"]}
        if bad:
            name, v = next(iter(bad.items()))
            result["error"] = (f"{name}: the exported model differs from the native one (largest logit difference "
                               f"{v['max_logit_diff']:.3g}, tolerance {tolerance:g}; {v['changed_predictions']} "
                               f"predictions changed)")
    return result


def _check_default(path: Path) -> None:
    from .runs.directory import check_writable_file

    try:
        check_writable_file(path, "--out")
    except CvlabError as e:
        why = str(e).split(f"--out {path}: ", 1)[-1].split("; ")[0]
        raise CvlabError(f"{path}: cannot write the export into the run ({why}); give --out PATH") from None
