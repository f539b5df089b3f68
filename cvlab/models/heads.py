"""Heads own their loss and their decoding. They know the number of classes and their special ids, never the
tokenizer: `decode` returns label ids (specials removed) and a confidence per sample. The tokenizers in
`cvlab.data.tokenizer` put their specials at the same ids (tests check the two agree)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config.model import HeadCfg


class CTCHead(nn.Module):
    """CTC (Graves et al. 2006): per-column class scores, class 0 = blank, greedy decoding. Beam search, lexicons
    and a character LM are `eval.decoder: beam` (engine/eval/decode.py)."""

    blank = 0

    def __init__(self, cin: int, num_classes: int, blank_bias: float | None = None):
        super().__init__()
        self.fc = nn.Linear(cin, num_classes)
        self.blank_bias = blank_bias
        self.init_blank()

    def init_blank(self) -> None:
        """Set the blank's initial bias, if the config gives one (build_model calls it again after model.init)."""
        if self.blank_bias is not None:
            with torch.no_grad():
                self.fc.bias[self.blank] = self.blank_bias

    @classmethod
    def from_cfg(cls, cin: int, num_classes: int, cfg: HeadCfg) -> CTCHead:
        return cls(cin, num_classes, cfg.blank_bias)

    def forward(self, x, targets=None, lengths=None):
        return self.fc(x)  # (B, T, C_seq) -> (B, T, num_classes)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # (B, T, C) -> (T, B, C); CTC in float32 even under autocast
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)
        T, B = log_probs.shape[:2]
        input_lengths = torch.full((B,), T, dtype=torch.long, device=logits.device)
        return F.ctc_loss(log_probs, targets, input_lengths, lengths, blank=self.blank, reduction="mean",
                          zero_infinity=True)

    @torch.no_grad()
    def decode(self, logits: torch.Tensor) -> tuple[list[list[int]], list[float]]:
        return self._greedy(logits)

    def _greedy(self, logits):
        """Best class per step, merge repeats, drop blanks. Confidence = product of the kept steps' max
        probabilities (1.0 for an empty prediction). The whole batch at once: one transfer to Python."""
        probs = logits.float().softmax(-1)
        best_p, best = probs.max(-1)  # (B, T)
        keep = best != self.blank
        keep[:, 1:] &= best[:, 1:] != best[:, :-1]
        confs = torch.where(keep, best_p, torch.ones_like(best_p)).prod(-1)  # a dropped step counts 1
        return _split(best[keep].tolist(), keep.sum(-1).tolist()), confs.tolist()


class AttentionHead(nn.Module):
    """Additive (Bahdanau) attention decoder, as in the four-stage framework's `Attn` stage: an LSTM cell reads
    the attended context and the previous character. Class 0 = [GO] (also the padding the loss ignores), class
    1 = [EOS]. Training: teacher forcing on the targets [GO] c1..cn [EOS]; otherwise greedy for
    `max_length` + 1 steps."""

    go, eos = 0, 1

    def __init__(self, cin: int, num_classes: int, hidden: int, max_length: int = 25):
        super().__init__()
        self.num_classes, self.hidden, self.max_length = num_classes, hidden, max_length
        self.i2h = nn.Linear(cin, hidden, bias=False)
        self.h2h = nn.Linear(hidden, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)
        self.cell = nn.LSTMCell(cin + num_classes, hidden)
        self.generator = nn.Linear(hidden, num_classes)

    @classmethod
    def from_cfg(cls, cin: int, num_classes: int, cfg: HeadCfg) -> AttentionHead:
        return cls(cin, num_classes, cfg.hidden or cin, cfg.max_length)

    def _step(self, feats, feats_proj, state, prev):
        # feats (B, T, C), feats_proj (B, T, H), prev (B,) class ids
        e = self.score(torch.tanh(feats_proj + self.h2h(state[0]).unsqueeze(1)))  # (B, T, 1)
        alpha = e.softmax(dim=1)
        context = (alpha * feats).sum(dim=1)                                       # (B, T, C) -> (B, C)
        onehot = F.one_hot(prev, self.num_classes).to(context.dtype)
        h, c = self.cell(torch.cat([context, onehot], dim=1), state)
        return self.generator(h), (h, c)

    def forward(self, x, targets=None, lengths=None):
        B = x.shape[0]
        feats_proj = self.i2h(x)  # (B, T, C) -> (B, T, H), once rather than per step
        zeros = x.new_zeros(B, self.hidden)
        state = (zeros, zeros)
        if targets is not None:  # teacher forcing: input step s is target s, predict target s+1
            steps = targets.shape[1] - 1
            prev = targets[:, 0]
        else:
            steps = self.max_length + 1
            prev = torch.full((B,), self.go, dtype=torch.long, device=x.device)
        out = []
        for s in range(steps):
            logits, state = self._step(x, feats_proj, state, prev)
            out.append(logits)
            prev = targets[:, s + 1] if targets is not None else logits.argmax(-1)
        return torch.stack(out, dim=1)  # steps × (B, C) -> (B, steps, num_classes)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        gold = targets[:, 1:1 + logits.shape[1]]  # (B, L+2) -> (B, steps): what each step must predict
        # (B, steps, C) -> (B*steps, C) against (B*steps,); padding ([GO] after [EOS]) does not count
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), gold.reshape(-1),
                               ignore_index=self.go)

    @torch.no_grad()
    def decode(self, logits: torch.Tensor) -> tuple[list[list[int]], list[float]]:
        """Greedy: ids up to the first [EOS]; confidence = product of the max probabilities up to and including
        it (all steps when no [EOS] came)."""
        best_p, best = logits.float().softmax(-1).max(-1)  # (B, steps)
        steps = torch.arange(best.shape[1], device=best.device)
        is_eos = best == self.eos
        # the first [EOS]'s step, or `steps` when none came
        end = torch.where(is_eos.any(-1), is_eos.int().argmax(-1), best.shape[1])  # (B,)
        upto = steps <= end[:, None]  # (B, steps): up to and including the first [EOS]
        keep = (steps < end[:, None]) & (best > self.eos)
        confs = torch.where(upto, best_p, torch.ones_like(best_p)).prod(-1)
        return _split(best[keep].tolist(), keep.sum(-1).tolist()), confs.tolist()


def _split(flat: list[int], lengths: list[int]) -> list[list[int]]:
    """A batch's ids, kept steps of every row one after the other, back into one list per row."""
    out, start = [], 0
    for n in lengths:
        out.append(flat[start:start + n])
        start += n
    return out


HEADS = {"ctc": CTCHead, "attention": AttentionHead}
