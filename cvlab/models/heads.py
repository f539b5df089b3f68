"""Heads own their loss and their decoding. They know the number of classes and their special ids, never the
tokenizer: `decode` returns label ids (specials removed) and a confidence per sample."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CTCHead(nn.Module):
    """Per-step class scores; class `blank` (0) is the CTC blank."""

    blank = 0

    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x, targets=None, lengths=None):
        return self.fc(x)  # (B, T, num_classes)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # (B, T, C) -> (T, B, C); CTC in float32 even under autocast
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)
        T, B = log_probs.shape[:2]
        input_lengths = torch.full((B,), T, dtype=torch.long, device=logits.device)
        return F.ctc_loss(log_probs, targets, input_lengths, lengths, blank=self.blank, reduction="mean",
                          zero_infinity=True)

    @torch.no_grad()
    def decode(self, logits: torch.Tensor) -> tuple[list[list[int]], list[float]]:
        """Greedy: best class per step, merge repeats, drop blanks. Confidence = product of the kept steps' max
        probabilities (1.0 for an empty prediction)."""
        probs = logits.float().softmax(-1)
        best_p, best = probs.max(-1)  # (B, T)
        keep = best != self.blank
        keep[:, 1:] &= best[:, 1:] != best[:, :-1]
        ids, confs = [], []
        for b in range(best.shape[0]):
            k = keep[b]
            ids.append(best[b][k].tolist())
            confs.append(float(best_p[b][k].prod()) if k.any() else 1.0)
        return ids, confs


HEADS = {"ctc": CTCHead}
