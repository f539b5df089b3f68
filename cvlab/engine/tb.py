"""TensorBoard writing: scalars, captioned image grids, the config as text, hparams in the run's own folder."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary


def open_writer(run_dir, enabled: bool, purge_step: int | None = None) -> SummaryWriter | None:
    # purge_step: on resume, TensorBoard hides events the interrupted run wrote past the checkpoint
    return SummaryWriter(str(run_dir), purge_step=purge_step, flush_secs=30) if enabled else None


def caption_grid(images: torch.Tensor, labels: list[str], preds: list[str], cols: int = 4) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> one RGB image (H, W, 3) uint8: each sample above 'gt' and 'pred' lines,
    the prediction green when it matches, red when it does not."""
    n = images.shape[0]
    h, w = images.shape[2], images.shape[3]
    scale = max(1, 64 // h)
    cw, ch = max(w * scale, 160), h * scale + 30
    rows = (n + cols - 1) // cols
    canvas = Image.new("RGB", (cols * cw, rows * ch), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12)
    for i in range(n):
        x, y = (i % cols) * cw, (i // cols) * ch
        arr = (images[i].detach().float().clamp(0, 1) * 255).byte().cpu().numpy()
        tile = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)).convert("RGB")
        canvas.paste(tile.resize((w * scale, h * scale), Image.NEAREST), (x, y))
        ok = preds[i] == labels[i]
        draw.text((x + 2, y + h * scale + 1), f"gt:   {labels[i]}", fill=(0, 0, 0), font=font)
        draw.text((x + 2, y + h * scale + 15), f"pred: {preds[i]}", fill=(0, 140, 0) if ok else (200, 0, 0),
                  font=font)
    return np.asarray(canvas)


def write_hparams(writer: SummaryWriter, hparams: dict) -> None:
    """hparams into this run's own event file (add_hparams would open a timestamped sub-run). Only the session
    summaries, no experiment summary: TensorBoard then builds the HParams table from all the runs it shows,
    hyper-parameters that differ between them first (an experiment summary would pin them alphabetically), and
    every scalar tag as a metric column. Integers are written as text, so 64 reads "64", not "64.000"."""
    clean = {k: (v if isinstance(v, (bool, float, str)) else str(v)) for k, v in hparams.items()}
    _, ssi, sei = hparams_summary(clean, {})
    for summary in (ssi, sei):
        writer.file_writer.add_summary(summary)
