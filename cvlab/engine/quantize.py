"""`cvlab export --quantize int8`: the run's ONNX model in int8 (onnxruntime.quantization), checked against fp32.

Two methods, both on the graph `quant_pre_process` leaves (shapes inferred, batch norm fused into the convs):
- `static` (the default): QDQ, per-channel int8 weights, uint8 activations whose ranges are calibrated on real
  images read through cvlab's own loaders (the run's val sets, or `--calibration SPEC`): Conv, MatMul, Gemm and
  the ops between them run as int8 kernels. The LSTMs of a sequence stage stay float32.
- `dynamic`: uint8 weights, activations quantized batch by batch at run time; no calibration. onnxruntime runs
  convolutions quantized this way as ConvInteger, which was slower than its float32 convs on the 2-core Xeon
  (AVX-512 VNNI/AMX) where both were tried, while static int8 was clearly faster than float32 (docs/speed.md). So
  static is the default; dynamic stays for CPUs and models where it is the better trade (no data to calibrate on).
After writing the file, both models read the calibration data (all of it, not only the images calibrated on)
and the word accuracy of each, and the predictions that changed, are reported.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import CvlabError

METHODS = ("static", "dynamic")
CALIBRATION_N = 256  # images calibrated on (static): the first N of the calibration data


@contextlib.contextmanager
def _quiet():
    """onnxruntime.quantization logs every tensor it leaves in float (an LSTM's shape arithmetic) as warnings."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _read(loaded, specs: list | None) -> tuple[list[str], list[dict], list]:
    """The calibration data through cvlab's loaders: dataset names, what each spec is, (images, labels) batches."""
    from ..data.charset import resolve_charset
    from ..data.loaders import eval_loader, named_datasets
    from .eval.records import data_identity

    cfg = loaded.cfg
    specs = specs or cfg.data.val
    if not specs:
        raise CvlabError("data.val: the run has no val sets to calibrate and check int8 on; give --calibration SPEC")
    sets = named_datasets(specs, resolve_charset(cfg.data.charset), cfg.data)
    batches = [(images, list(labels)) for ds in sets.values()
               for images, labels in eval_loader(ds, cfg.eval.batch_size, workers=cfg.data.workers)]
    if not batches:
        raise CvlabError(f"--calibration: {', '.join(sets)}: no readable image to calibrate on")
    return list(sets), [data_identity(s) for s in specs], batches


class _Reader:
    """onnxruntime's CalibrationDataReader: the first `n` images, in the loaders' batches."""

    def __init__(self, batches: list, n: int):
        self.feeds, left = [], n
        for images, _ in batches:
            if left <= 0:
                break
            self.feeds.append({"images": images[:left].float().contiguous().numpy()})
            left -= len(self.feeds[-1]["images"])
        self.it = iter(self.feeds)

    def get_next(self):
        return next(self.it, None)

    def rewind(self):
        self.it = iter(self.feeds)


def _quantize(fp32: Path, out: Path, method: str, reader: _Reader | None) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_name("pre.onnx")
    with _quiet():
        quant_pre_process(str(fp32), str(pre))
        if method == "static":
            CalibrationDataReader.register(_Reader)
            convs = out.with_name("convs.onnx")
            quantize_static(str(pre), str(convs), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            # the recurrent stage: int8 weights, activations quantized per call (static QDQ leaves LSTMs in
            # fp32); on the standard CRNN 1.25x the convolutions-only model's forward (2-core Xeon)
            quantize_dynamic(str(convs), str(out), op_types_to_quantize=["LSTM"], weight_type=QuantType.QInt8)
            convs.unlink()
        else:  # uint8 weights: ConvInteger's faster kernel on x86
            quantize_dynamic(str(pre), str(out), weight_type=QuantType.QUInt8)


def _score(loaded, forward, batches: list) -> tuple[dict, list[str]]:
    """Word accuracy (the run's protocol, greedy decoding) and the predictions, over every batch."""
    from .eval.metrics import MetricAccumulator

    acc, preds = MetricAccumulator(loaded.cfg.eval.protocol), []
    for images, labels in batches:
        ids, _ = loaded.model.decode(forward(images))
        p = [loaded.tokenizer.decode(i) for i in ids]
        acc.update(p, labels)
        preds += p
    return acc.result(), preds


def quantize_run(run, *, checkpoint: str | None = None, calibration: list | None = None, n: int = CALIBRATION_N,
                 method: str = "static", out: Path | None = None, progress=None) -> dict:
    """Write RUN/export/<checkpoint>.int8.onnx (or `out`) and the JSON beside it; returns what was written and
    the fp32 vs int8 word accuracy on the calibration data (`calibration`: dataset specs, default the run's val
    sets; the first `n` images calibrate `static`) with the number of predictions that changed."""
    from ..atomic import atomic_write, write_json
    from .backend import needs_onnxruntime, ort_forward, session
    from .export import _check_default, _needs, ensure_onnx, export_path
    from .runs.directory import check_writable_file
    from .runs.load import load_run

    if method not in METHODS:
        raise CvlabError(f"--int8-method {method}: unknown (valid: {', '.join(METHODS)})")
    if n < 1:
        raise CvlabError(f"--calibration-n {n}: give at least 1 image")
    _needs("onnx")
    needs_onnxruntime()
    if out is not None:
        out = Path(out).expanduser()
        check_writable_file(out, "--out")
    loaded = load_run(run, checkpoint)
    path = out if out is not None else export_path(loaded, int8=True)
    if out is None:
        _check_default(path)
    names, sources, batches = _read(loaded, calibration)
    fp32, temporary = ensure_onnx(loaded, progress=progress)
    work = Path(tempfile.mkdtemp(prefix="cvlab-int8-"))
    try:
        if progress:
            progress.message(f"quantizing {fp32.name} to int8 ({method}"
                             + (f", calibrated on {min(n, sum(len(b[1]) for b in batches))} images of "
                                f"{', '.join(names)})" if method == "static" else ")"))
        _quantize(fp32, work / "int8.onnx", method, _Reader(batches, n) if method == "static" else None)
        atomic_write(path, lambda f: f.write((work / "int8.onnx").read_bytes()))
        with torch.inference_mode():
            base, base_preds = _score(loaded, ort_forward(session(fp32)), batches)
            q, q_preds = _score(loaded, ort_forward(session(path)), batches)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if temporary:
            shutil.rmtree(fp32.parent, ignore_errors=True)
    changed = sum(a != b for a, b in zip(base_preds, q_preds, strict=True))
    calibrated = min(n, len(base_preds)) if method == "static" else 0
    quantization = {"method": method, "calibration": sources, "calibration_images": calibrated,
                    "format": "QDQ, per-channel int8 weights, uint8 activations" if method == "static" else
                    "dynamic: uint8 weights, activations quantized at run time",
                    "checked_on": {"datasets": names, "samples": base["samples"], "fp32_word_acc": base["word_acc"],
                                   "int8_word_acc": q["word_acc"], "changed_predictions": changed,
                                   "images": len(base_preds)}}
    import json

    meta = json.loads(fp32.with_name(fp32.name + ".json").read_text(encoding="utf-8")) \
        if fp32.with_name(fp32.name + ".json").is_file() else {}
    meta.pop("checked_widths", None)  # int8 is not checked against a tolerance
    meta.update({"checkpoint": {"path": str(loaded.checkpoint), "step": loaded.step}, "quantization": quantization})
    meta_path = path.with_name(path.name + ".json")
    write_json(meta, meta_path)
    return {"path": str(path), "meta": str(meta_path), "fp32": str(fp32) if not temporary else None,
            **quantization}
