"""What runs a trained model's forward pass in `cvlab eval` and `cvlab predict`: torch (the default, exact) or
onnxruntime on the run's exported ONNX model, in float32 or the int8 model `cvlab export --quantize int8` wrote.

Both backends get the same images (the run's preprocessing and batches) and hand their logits to the same
decoding: only the call images -> logits differs (`Backend.forward`). onnxruntime runs on the CPU with as many
intra-op threads as torch uses (`torch.get_num_threads()`: torch's default, OMP_NUM_THREADS, `train.threads`
where training set it in this process). Its fp32 model gives torch's logits up to float rounding (every export is
checked at two widths); int8 does not, and says so.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CvlabError
from .device import autocast, resolve_amp

BACKENDS = ("torch", "onnxruntime")


@dataclass
class Backend:
    name: str  # torch | onnxruntime
    precision: str  # torch: fp32, bf16 or fp16 (train.amp resolved); onnxruntime: fp32 or int8
    forward: Callable[[torch.Tensor], torch.Tensor]  # images (B, C, H, W) -> logits (B, T, classes)
    model: torch.nn.Module  # the torch model: what runs (torch), what decodes (both: its head's decoding)
    device: torch.device  # where the images go before `forward`
    folded: int = 0
    channels_last: bool = False
    path: Path | None = None  # the ONNX file
    threads: int | None = None
    quantization: dict | None = None  # int8: how it was quantized (the JSON beside the file)

    @property
    def label(self) -> str:
        return f"{self.name} {self.precision}"

    def identity(self) -> dict | None:
        """What an evaluation's key must tell apart: None for torch (keys as they always were), else the backend,
        its precision and, for int8, how it was quantized (method, calibration data)."""
        if self.name == "torch":
            return None
        quant = {k: self.quantization[k] for k in ("method", "calibration", "calibration_images")
                 if k in (self.quantization or {})}
        return {"name": self.name, "precision": self.precision, **({"quantization": quant} if quant else {})}

    def record(self) -> dict:
        """eval.json's `backend`."""
        return {"name": self.name, "precision": self.precision, "exact": self.precision == "fp32",
                **({"model": str(self.path), "threads": self.threads} if self.path else {}),
                **({"quantization": self.quantization} if self.quantization else {})}


def torch_forward(model, *, device: torch.device, amp: str = "none", channels_last: bool = False) -> Callable:
    """The torch model's call as eval and predict make it: images on the device, channels_last, autocast."""

    def forward(images: torch.Tensor) -> torch.Tensor:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            return model(images)

    return forward


def needs_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise CvlabError("onnxruntime is not installed: the onnxruntime backend and int8 need the export extra, "
                         "pip install 'cvlab[export]'") from None
    return onnxruntime


def session(path: Path, threads: int | None = None):
    """An onnxruntime CPU session of `path`: `threads` intra-op threads (None: torch's count), one inter-op."""
    ort = needs_onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: no notes on the graph's optimisations
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001  (onnxruntime's own exception types: a file that is not a model)
        raise CvlabError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]}); export it again "
                         "with `cvlab export`") from None


def ort_forward(sess) -> Callable:
    def forward(images: torch.Tensor) -> torch.Tensor:
        x = images.detach().float().cpu().contiguous().numpy()
        return torch.from_numpy(sess.run(["logits"], {"images": x})[0])

    return forward


def load_backend(loaded, name: str = "torch", *, int8: bool = False, fold_bn: bool | None = None,
                 channels_last: bool | None = None, progress=None) -> Backend:
    """The forward pass `cvlab eval` / `cvlab predict` run: `name` torch (with `fold_bn`, `channels_last` as
    runs.load.inference_model takes them) or onnxruntime (RUN/export/<checkpoint>.onnx, exported first when
    missing or older than the checkpoint; with `int8`, RUN/export/<checkpoint>.int8.onnx, which
    `cvlab export --quantize int8` writes)."""
    from .runs.load import inference_model

    if name not in BACKENDS:
        raise CvlabError(f"--backend {name}: unknown (valid: {', '.join(BACKENDS)})")
    if int8 and name != "onnxruntime":
        raise CvlabError("--int8 runs the int8 ONNX model: give --backend onnxruntime too")
    cfg = loaded.cfg
    if name == "torch":
        model, folded, cl = inference_model(loaded, fold_bn=fold_bn, channels_last=channels_last)
        amp = resolve_amp(loaded.device, cfg.train.amp)[0]
        return Backend("torch", "fp32" if amp == "none" else amp,
                       torch_forward(model, device=loaded.device, amp=cfg.train.amp, channels_last=cl), model,
                       loaded.device, folded, cl)
    if fold_bn is not None or channels_last is not None:
        raise CvlabError("--fold-bn and --channels-last are the torch backend's; onnxruntime fuses the ONNX graph "
                         "itself")
    if cfg.eval.decoder == "beam" and cfg.model.head.name == "attention":
        raise CvlabError("eval.decoder: beam search of an attention head runs the torch model step by step: use "
                         "--backend torch (or eval.decoder=greedy)")
    needs_onnxruntime()
    from .export import ensure_onnx, export_path, stale

    quantization, temporary = None, False
    if int8:
        path = export_path(loaded, int8=True)
        why = stale(path, loaded)
        if why is not None:
            raise CvlabError(f"{path}: {why}; write it first: cvlab export {loaded.run} --format onnx --quantize int8"
                             + ("" if loaded.checkpoint.stem == "best" else f" --checkpoint {loaded.checkpoint}"))
        quantization = _quantization(path)
    else:
        path, temporary = ensure_onnx(loaded, progress=progress)
    threads = torch.get_num_threads()
    try:
        sess = session(path, threads)
    finally:
        if temporary:
            shutil.rmtree(path.parent, ignore_errors=True)
    # the torch model decodes only (its head's greedy rule, or eval.decoder's CTC beam): it reads the logits
    return Backend("onnxruntime", "int8" if int8 else "fp32", ort_forward(sess), loaded.model, torch.device("cpu"),
                   path=path, threads=threads, quantization=quantization)


def _quantization(path: Path) -> dict:
    import json

    meta = path.with_name(path.name + ".json")
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("quantization") or {}
    except (OSError, ValueError):
        raise CvlabError(f"{meta}: missing or unreadable (it says how {path.name} was quantized); write it again: "
                         "cvlab export RUN --format onnx --quantize int8") from None


def check_lines(res: dict) -> list[str]:
    """What eval's output says about a backend that is not torch's default: int8 is not exact; how many
    predictions differ from torch (counted beside it with --check, or read from a recorded evaluation)."""
    backend = res.get("backend") or {}
    if backend.get("name", "torch") == "torch":
        return []
    label = f"{backend['name']} {backend['precision']}"
    lines = []
    if not backend.get("exact", True):
        lines.append(f"{label}: not exact; its predictions can differ from the float32 model's")
    for name, r in res["datasets"].items():
        check = r.get("check")
        if not check:
            continue
        shown = "; ".join(f"{e['id'] or e['index']}: {e['prediction']!r} vs {e['reference']!r}"
                          for e in check["examples"])
        lines.append(f"{name}: {check['differ']} of {check['samples']} predictions differ from {check['against']}"
                     + (f" (e.g. {shown})" if shown else ""))
    if not any(r.get("check") for r in res["datasets"].values()):
        lines.append(f"{label}: no torch evaluation of the same data is recorded to compare with; --check runs "
                     "the torch model beside it and counts the predictions that differ")
    return lines
