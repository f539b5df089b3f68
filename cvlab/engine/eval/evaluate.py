"""Evaluation: run the model over a loader, decode, score with the protocol; `evaluate_run` keeps every
evaluation of a run (`eval/` history, one predictions file per dataset, an error summary)."""

from __future__ import annotations

import contextlib
import queue
import shutil
import threading
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ...data.loaders import eval_loader, sample_id
from ...data.tokenizer import Tokenizer
from ...errors import CvlabError, OutputError
from ..backend import torch_forward
from .metrics import MetricAccumulator

CHECK_EXAMPLES = 3  # differing predictions shown per dataset with --check


_END = object()


def read_ahead(loader: DataLoader):
    """The loader's batches, the next one read and decoded in a thread while the caller runs this one's forward
    (torch's kernels release the GIL). Only without loader workers, which overlap reading already; an error
    raised while reading reaches the caller at the batch it belongs to."""
    if getattr(loader, "num_workers", 0) > 0:
        yield from loader
        return
    q: queue.Queue = queue.Queue(maxsize=1)

    def read():
        try:
            for item in loader:
                q.put((item, None))
        except BaseException as e:  # noqa: BLE001  (handed to the caller's thread, raised there)
            q.put((None, e))
        q.put((_END, None))

    threading.Thread(target=read, daemon=True, name="cvlab-eval-read-ahead").start()
    while True:
        item, error = q.get()
        if error is not None:
            raise error
        if item is _END:
            return
        yield item


@torch.no_grad()
def evaluate(model, loader: DataLoader, *, tokenizer: Tokenizer, protocol: str, device: torch.device,
             amp: str = "none", channels_last: bool = False, keep: int = 0, rows: list | None = None,
             lexicon: str | tuple | None = "dataset", decoder=None, ctx=None, forward=None,
             reference=None) -> tuple[dict, tuple]:
    """Metrics dict, plus the first `keep` (images, labels, predictions) for image grids. `rows`, when a list,
    receives one dict per sample (id, label, prediction, confidence, scored strings, correct). `lexicon`:
    "dataset" scores the sets' own lexicons, (name, words) one word list for every sample, None none.
    `decoder`: an `engine.eval.decode` beam decoder (None: the head's greedy decoding); it also reads the lexicon
    answers when it can.
    `ctx` (a dist.DistContext): `loader` holds this rank's shard; the counts behind every metric (correct,
    samples, edit distances, reference lengths, unreadable images) are summed over ranks before any rate is
    computed, so the result is the single-process one, never an average of per-rank rates.
    `forward`: images -> logits (engine.backend: torch's or onnxruntime's; None: `model` under `amp` and
    `channels_last`); `model` decodes either way. `reference` (with `rows`): a second forward whose reading of
    every sample is kept as the row's `reference` (`cvlab eval --check`: the torch model beside onnxruntime)."""
    was_training = model.training
    model.eval()
    forward = forward or torch_forward(model, device=device, amp=amp, channels_last=channels_last)
    acc = MetricAccumulator(protocol, keep_rows=rows is not None)
    kept_images, kept_labels, kept_preds = [], [], []
    for images, labels in read_ahead(loader):
        images = images.to(device, non_blocking=True)
        logits = forward(images)
        ids, confs = decoder(model, images, logits) if decoder else model.decode(logits)
        preds = [tokenizer.decode(i) for i in ids]
        if reference is not None:
            ref_logits = reference(images)
            ref_ids = (decoder(model, images, ref_logits) if decoder else model.decode(ref_logits))[0]
            refs = [tokenizer.decode(i) for i in ref_ids]
        if lexicon == "dataset":
            lexicons = getattr(labels, "lexicons", None)
        else:
            lexicons = [{lexicon[0]: lexicon[1]}] * len(labels) if lexicon else None
        answers = None
        if decoder is not None and lexicons:  # the constrained search's word (None: the nearest word)
            answers = [{k: decoder.lexicon(logits[i], tuple(w)) for k, w in (lex or {}).items() if w}
                       for i, lex in enumerate(lexicons)]
        first = len(acc.rows)
        acc.update(preds, labels, confidences=confs, lexicons=lexicons, answers=answers)
        if rows is not None:
            indices = getattr(labels, "indices", None) or [None] * len(labels)
            ds = getattr(loader.dataset, "ds", loader.dataset)
            for row, i in zip(acc.rows[first:], indices, strict=True):
                row["id"] = sample_id(ds, i) if i is not None else ""
                row["index"] = i
            if reference is not None:
                for row, r in zip(acc.rows[first:], refs, strict=True):
                    row["reference"] = r
        if len(kept_labels) < keep:
            n = keep - len(kept_labels)
            kept_images.append(images[:n].float().cpu())
            kept_labels += labels[:n]
            kept_preds += preds[:n]
    model.train(was_training)
    if rows is not None:
        rows += acc.rows
    grid = (torch.cat(kept_images) if kept_images else None, kept_labels, kept_preds)
    report = getattr(loader, "load_report", None)
    dropped = report.total_dropped if report is not None else 0
    examples = report.examples.get("image unreadable at load time", []) if dropped else []
    if ctx is not None and ctx.enabled:
        parts = ctx.gather((acc.counts(), dropped, examples))
        acc = MetricAccumulator(protocol)
        for counts, _, _ in parts:
            acc.add_counts(counts)
        dropped = sum(d for _, d, _ in parts)
        examples = [e for _, _, ex in parts for e in ex]
    result = acc.result()
    if dropped:  # never scored: say how many, the CLI lists them
        result["unreadable"] = dropped
        result["unreadable_examples"] = examples
    return result, grid


def evaluate_run(run_dir, checkpoint: str | None = None, *, data: list | None = None, protocol: str | None = None,
                 overrides: tuple[str, ...] = (), progress=None, fold_bn: bool | None = None,
                 channels_last: bool | None = None, backend: str = "torch", int8: bool = False,
                 check: bool = False) -> dict:
    """Score a trained run: `best.pt` (or `checkpoint`: a name in checkpoints/ or a path) on the run's val
    datasets, or on `data` (dataset specs). Every evaluation is kept in its own folder under the run's `eval/`
    (eval.json, `<dataset>.predictions.csv`); returns eval.json's content, with `dir` naming the folder.
    `fold_bn`: batch norm folded into the convolutions first, `channels_last`: the model in channels_last (None:
    each where the model runs in float32, where the predictions stay the same, channels_last on the CPU;
    runs.load.inference_model; the checkpoint is untouched); eval.json's `inference` says what was used. The model runs under torch.inference_mode (training's own evaluation keeps `evaluate`'s
    no_grad: a tensor a model caches there, such as TPS's sampling grid, must stay usable by the training steps
    that follow).
    `backend`: torch, or onnxruntime on the run's ONNX export (`int8`: the int8 model of `cvlab export
    --quantize int8`; engine.backend), the same preprocessing, batches and decoding; eval.json's `backend` says
    which, and the key tells them apart. With another backend than torch, `check` runs the torch model beside it
    and counts the predictions that differ; without it they are counted against a recorded torch evaluation of
    the same data, when there is one."""
    from ...data.charset import resolve_charset
    from ...data.loaders import report_lines, report_of
    from ..backend import load_backend, needs_onnxruntime
    from ..runs.load import load_run
    from .analysis import error_summary
    from .decode import build_decoder
    from .metrics import combine
    from .protocols import check_charset
    from .records import (
        decoder_identity,
        eval_dir,
        eval_key,
        load_lexicon,
        record,
        recorded_predictions,
        write_predictions,
    )

    if backend == "onnxruntime":  # before any work: a missing extra is the user's to install
        needs_onnxruntime()
    loaded = load_run(run_dir, checkpoint, overrides)
    cfg, run = loaded.cfg, loaded.run
    if protocol:
        cfg.eval.protocol = protocol
    check_charset(cfg.eval.protocol, loaded.tokenizer.charset, "--protocol" if protocol else "eval.protocol")
    lexicon = load_lexicon(cfg.eval.lexicon)
    decoder = build_decoder(cfg, loaded.tokenizer)
    specs = data if data else (cfg.data.test or cfg.data.val)
    sets, sources, readable = _datasets_with_sources(specs, resolve_charset(cfg.data.charset), cfg.data)
    if check and backend == "torch":
        raise CvlabError("--check counts how another backend's predictions differ from torch's: give "
                         "--backend onnxruntime too")
    be = load_backend(loaded, backend, int8=int8, fold_bn=fold_bn, channels_last=channels_last,
                      progress=progress)
    ref = None
    if check:
        ref = load_backend(loaded, "torch")  # the model as `cvlab eval` runs it by default
    results, reported, all_rows = {}, set(), {}
    for name, ds in sets.items():
        if progress:
            progress.message(f"evaluating {name} ({len(ds)} samples)")
            rep = report_of(ds)  # a report shared by several rows is printed once
            for line in report_lines(ds) if id(rep) not in reported else []:
                progress.message(f"  {name}: {line}")
            reported.add(id(rep))
        rows: list = []
        with torch.inference_mode():
            results[name], _ = evaluate(be.model, eval_loader(ds, cfg.eval.batch_size, workers=cfg.data.workers,
                                                                 device=be.device),
                                        tokenizer=loaded.tokenizer, protocol=cfg.eval.protocol, device=be.device,
                                        rows=rows, lexicon=lexicon, decoder=decoder, forward=be.forward,
                                        reference=ref.forward if ref else None)
        results[name]["errors"] = error_summary(rows)
        if ref is not None:
            results[name]["check"] = _differences(rows, [r["reference"] for r in rows], ref.label)
        all_rows[name] = rows
    decoding = decoder_identity(cfg.eval)
    lexicon_id = cfg.eval.lexicon if cfg.eval.lexicon in (None, "dataset") else \
        str(Path(cfg.eval.lexicon).expanduser().resolve())
    out = {"run": str(run), "checkpoint": str(loaded.checkpoint), "step": loaded.step,
           "protocol": cfg.eval.protocol, "lexicon": lexicon_id,
           "decoder": {**decoding, **({"lexicon_fallbacks": decoder.fallbacks} if decoder else {})},
           "data": sources, "overrides": list(overrides),
           "backend": be.record(),
           "inference": {"folded_batch_norms": be.folded, "channels_last": be.channels_last,
                         "workers": cfg.data.workers},
           "datasets": results,
           "combined": combine(results)}
    # what was scored, for the key: the datasets (type, resolved root, split, options), decoder and lexicon
    identity = {"data": [{k: v for k, v in s.items() if k not in ("spec", "datasets")} for s in sources],
                "decoder": decoding, "lexicon": lexicon_id}
    datasets = [readable[name] for name in sets]
    if be.identity() is not None:  # torch's key stays as it always was; any other backend is told apart
        if ref is None:  # without --check: against the torch evaluation of the same data, if one is recorded
            known = recorded_predictions(run, eval_key(loaded.checkpoint, loaded.step, cfg.eval.protocol, datasets,
                                                       decoder=decoding, identity=identity))
            for name, rows in all_rows.items():
                if known and len(known[1].get(name, ())) == len(rows):
                    results[name]["check"] = _differences(rows, known[1][name], f"the torch evaluation {known[0]}")
        identity["backend"] = be.identity()
    folder = None
    try:
        folder = eval_dir(run, loaded.checkpoint, step=loaded.step, protocol=cfg.eval.protocol,
                          datasets=datasets, decoder=decoding, identity=identity)
        out["dir"] = str(folder)
        for name, rows in all_rows.items():
            results[name]["predictions"] = write_predictions(folder, name, rows).name
        record(folder, out)
    except (OSError, CvlabError) as e:
        where = getattr(e, "filename", None) or Path(run) / "eval"
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        out.pop("dir", None)
        if folder is not None:  # no half-written evaluation in the history
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                folder.parent.rmdir()
        raise OutputError(f"{where}: cannot write the evaluation ({why}); the results above were not saved: "
                          f"make {Path(run) / 'eval'} writable", out) from None
    return out


def _differences(rows: list[dict], reference: list[str], against: str) -> dict:
    """How many of `rows`' predictions differ from `reference` (the same samples in the same order), with the
    first few, for eval.json's `check` and eval's output."""
    differ = [(r, ref) for r, ref in zip(rows, reference, strict=True) if r["prediction"] != ref]
    return {"against": against, "samples": len(rows), "differ": len(differ),
            "examples": [{"id": r.get("id", ""), "index": r.get("index"), "prediction": r["prediction"],
                          "reference": ref} for r, ref in differ[:CHECK_EXAMPLES]]}


def _datasets_with_sources(specs: list, charset: str, data) -> tuple[dict, list[dict], dict]:
    """The datasets of `specs` by name, as `named_datasets` names them (an LMDB tree gives one per folder; a
    name taken twice gets 1, 2, ...); for each spec what it is (records.data_identity) with the names of the
    datasets it gave, what eval.json and eval/index.jsonl keep; and each dataset's name in the evaluation key:
    a set named after its type alone (`folder`, `lmdb`) gets its root's folder name too (`folder-realval`)."""
    from ...data.loaders import named_datasets, spec_name
    from .records import data_identity

    sets: dict = {}
    sources, readable = [], {}
    for spec in specs:
        names = []
        root = getattr(spec, "root", None)
        base = Path(root).expanduser().resolve().name if root else ""
        for part, ds in named_datasets([spec], charset, data).items():
            name, i = part, 1
            while name in sets:
                name = f"{part}{i}"
                i += 1
            sets[name] = ds
            names.append(name)
            default = not spec.name and part == spec_name(spec)
            readable[name] = f"{name}-{base}" if default and base and base not in name else name
        sources.append({**data_identity(spec), "datasets": names})
    return sets, sources, readable
