"""TensorBoard writing: scalars, captioned image grids, the config as text, hparams in the run's own folder."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from ...imagegrid import BLACK, image_grid, to_pil
from ..eval.protocols import get_protocol


def open_writer(run_dir, enabled: bool, purge_step: int | None = None) -> SummaryWriter | None:
    # purge_step: on resume, TensorBoard hides events the interrupted run wrote past the checkpoint
    return SummaryWriter(str(run_dir), purge_step=purge_step, flush_secs=30) if enabled else None


RIGHT, WRONG, UNSCORED = (0, 140, 0), (200, 0, 0), (128, 128, 128)


def judge(pred: str, label: str, protocol: str) -> bool | None:
    """Whether `pred` reads `label` under the evaluation protocol, exactly as word_acc counts it (the protocol's
    normalisation of both sides: under lower36 "chaplet" reads "Chaplet"); None when the protocol leaves the
    label out of the scores (dtrb, parseq filters)."""
    p = get_protocol(protocol)
    gt, _ = p.label(label)
    return None if gt is None else p.pred(pred) == gt


def caption_grid(images: torch.Tensor, labels: list[str], preds: list[str], *, protocol: str,
                 cols: int = 4) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> one RGB image (H, W, 3) uint8: each sample above 'gt' and 'pred' lines, the
    prediction green when the protocol counts it right, red when wrong, grey when the protocol does not score
    the label; the strings are shown as read, the colour is word_acc's verdict."""
    colours = {True: RIGHT, False: WRONG, None: UNSCORED}
    captions = [[(f"gt:   {gt}", BLACK), (f"pred: {p}", colours[judge(p, gt, protocol)])]
                for gt, p in zip(labels, preds, strict=True)]
    return np.asarray(image_grid([to_pil(t) for t in images], cols, captions=captions, min_width=160))


def write_hparams(writer: SummaryWriter, hparams: dict) -> None:
    """hparams into this run's own event file (add_hparams would open a timestamped sub-run). Only the session
    summaries, no experiment summary: TensorBoard then builds the HParams table from all the runs it shows,
    hyper-parameters that differ between them first (an experiment summary would pin them alphabetically), and
    every scalar tag as a metric column. Integers are written as text, so 64 reads "64", not "64.000"."""
    clean = {k: (v if isinstance(v, (bool, float, str)) else str(v)) for k, v in hparams.items()}
    _, ssi, sei = hparams_summary(clean, {})
    for summary in (ssi, sei):
        writer.file_writer.add_summary(summary)
