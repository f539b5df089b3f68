"""`cvlab predict`: read images with a trained run, as DTRB's demo.py and PARSeq's read.py do, for every model.

Inputs are image files, folders (searched recursively), glob patterns, or LMDBs (a folder holding data.mdb, or a
tree of them; labels are carried along when present). Images go through the run's own preprocessing
(`data.image`). An image that cannot be read gives a row saying why, never a silent gap.
"""

from __future__ import annotations

import glob
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..atomic import write_text_atomic
from ..data.formats.base import LOAD_ERRORS
from ..data.image import to_tensor
from ..errors import CvlabError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".pgm", ".ppm"}


@dataclass
class Source:
    id: str  # the path, or `LMDB-folder image-000000001`
    open: Callable[[], Image.Image]
    label: str | None = None


def _file(path: Path) -> Source:
    return Source(str(path), lambda: Image.open(path))


def _lmdb_sources(folder: Path) -> Iterator[Source]:
    from ..data.formats.lmdb import open_env

    env = open_env(folder)
    with env.begin() as txn:
        raw = txn.get(b"num-samples")
        if raw is None:
            raise CvlabError(f"{folder / 'data.mdb'}: no `num-samples` key; not a text-recognition LMDB")
        for i in range(1, int(raw.decode()) + 1):
            key = b"image-%09d" % i
            if txn.get(key) is None:
                continue  # a label-only entry has nothing to read
            label = txn.get(b"label-%09d" % i)

            def load(key=key):
                with env.begin() as t:
                    return Image.open(io.BytesIO(bytes(t.get(key))))

            yield Source(f"{folder} {key.decode()}", load, label.decode("utf-8", "replace") if label else None)


def collect(inputs: list[str]) -> list[Source]:
    """Every image the inputs name, in a stable order: files as given, folders and globs sorted."""
    from ..data.formats.lmdb import find_lmdbs

    out: list[Source] = []
    for text in inputs:
        matches = sorted(glob.glob(str(Path(text).expanduser()), recursive=True)) if any(c in text for c in "*?[") \
            else [str(Path(text).expanduser())]
        if not matches:
            raise CvlabError(f"{text}: no file matches this pattern")
        for m in map(Path, matches):
            if m.is_file():
                out.append(_file(m))
            elif m.is_dir():
                lmdbs = find_lmdbs(m)
                if lmdbs:
                    for folder in lmdbs:
                        out.extend(_lmdb_sources(folder))
                else:
                    found = sorted(p for p in m.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
                    if not found:
                        raise CvlabError(f"{m}: no images in this folder (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
                    out.extend(_file(p) for p in found)
            else:
                raise CvlabError(f"{m}: no such file or folder")
    return out


@torch.inference_mode()
def predict(run_or_ckpt, inputs: list[str], *, checkpoint: str | None = None, batch_size: int = 64,
            overrides: tuple[str, ...] = (), fold_bn: bool | None = None, channels_last: bool | None = None,
            backend: str = "torch", int8: bool = False, check: bool = False, progress=None) -> list[dict]:
    """One dict per image: id, text, confidence (0..1), label (LMDB only), error (unreadable images).
    `fold_bn`, `channels_last`: as in evaluate_run (runs.load.inference_model; None: where the model runs in
    float32, channels_last on the CPU; the checkpoint is untouched). With `data.workers` > 0
    the next batch is read (decoded, resized) in a thread while the model reads this one.
    `backend`: torch, or onnxruntime on the run's ONNX export (`int8`: its int8 model), the same preprocessing,
    batches and decoding (engine.backend); `check` (another backend than torch) runs the torch model on the same
    batches too and gives every read row its `torch_text`."""
    from .backend import load_backend, needs_onnxruntime
    from .eval.decode import build_decoder
    from .runs.load import load_run

    if check and backend == "torch":
        raise CvlabError("--check counts how another backend's predictions differ from torch's: give --backend "
                         "onnxruntime too")
    if backend == "onnxruntime":  # before any work: a missing extra is the user's to install
        needs_onnxruntime()
    loaded = load_run(run_or_ckpt, checkpoint, overrides)
    cfg = loaded.cfg
    decoder = build_decoder(cfg, loaded.tokenizer)  # eval.decoder: beam reads with beam search (and eval.lm)
    sources = collect(inputs)
    be = load_backend(loaded, backend, int8=int8, fold_bn=fold_bn, channels_last=channels_last, progress=progress)
    ref = load_backend(loaded, "torch") if check else None
    model = be.model

    def read(x, forward):
        logits = forward(x)
        ids, confs = decoder(model, x, logits) if decoder else model.decode(logits)
        return [loaded.tokenizer.decode(i) for i in ids], confs

    rows: list[dict] = []
    chunks = [sources[start:start + batch_size] for start in range(0, len(sources), batch_size)]
    for batch_rows, batch, images in read_batches(chunks, cfg.data.image, overlap=cfg.data.workers > 0):
        rows += batch_rows
        if not images:
            continue
        x = torch.stack(images).to(be.device)  # (B, C, H, W), the run's own geometry
        texts, confs = read(x, be.forward)
        for row, t, c in zip(batch, texts, confs, strict=True):
            row["text"], row["confidence"] = t, float(c)
        if ref is not None:
            for row, t in zip(batch, read(x, ref.forward)[0], strict=True):
                row["torch_text"] = t
    return rows


def _read(chunk: list[Source], image) -> tuple[list[dict], list[dict], list[torch.Tensor]]:
    """One batch of sources read: every row, the rows of the readable images, their tensors (C, H, W)."""
    rows, batch, images = [], [], []
    for src in chunk:
        row = {"id": src.id, "text": "", "confidence": None, **({"label": src.label} if src.label else {})}
        rows.append(row)
        try:
            with src.open() as im:
                im.load()
                images.append(to_tensor(im, image))
            batch.append(row)
        except LOAD_ERRORS as e:
            row["error"] = f"{e.__class__.__name__}: {e}"
    return rows, batch, images


def read_batches(chunks: list[list[Source]], image, *, overlap: bool = False) -> Iterator[tuple]:
    """`_read` of each chunk in order; with `overlap`, chunk k + 1 is read in a thread while the caller works on
    chunk k (PIL decodes and resizes without the GIL), one chunk ahead at most."""
    if not overlap or len(chunks) < 2:
        yield from (_read(c, image) for c in chunks)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="cvlab-read") as pool:
        pending = pool.submit(_read, chunks[0], image)
        for k in range(len(chunks)):
            current = pending.result()
            if k + 1 < len(chunks):
                pending = pool.submit(_read, chunks[k + 1], image)
            yield current


def output_kind(path: Path) -> str:
    """`csv` or `json`, from an output file's suffix; anything else is refused before any image is read."""
    kind = Path(path).suffix.lower().lstrip(".")
    if kind not in ("csv", "json"):
        raise CvlabError(f"--out {path}: give a .csv or .json file (or - for CSV on stdout)")
    return kind


def rows_text(rows: list[dict], kind: str = "csv") -> str:
    """The rows as CSV (id, text, confidence, label, error, and torch_text with --check; '\\n' line endings) or
    JSON (a list)."""
    import csv
    import json

    if kind == "json":
        return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    checked = any("torch_text" in r for r in rows)  # --check: torch's reading beside the backend's
    w.writerow(["id", "text", "confidence", "label", "error", *(["torch_text"] if checked else [])])
    for r in rows:
        conf = "" if r["confidence"] is None else f"{r['confidence']:.6f}"
        w.writerow([r["id"], r["text"], conf, r.get("label", ""), r.get("error", ""),
                    *([r.get("torch_text", "")] if checked else [])])
    return buf.getvalue()


def write_rows(rows: list[dict], path: Path) -> None:
    """CSV or JSON, chosen by the suffix."""
    write_text_atomic(rows_text(rows, output_kind(path)), Path(path))  # an unwritable path: a CvlabError naming it
