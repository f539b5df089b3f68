"""Heads own their loss and their decoding. They know the number of classes and their special ids, never the
tokenizer: `decode` returns label ids (specials removed) and a confidence per sample. The tokenizers in
`cvlab.data.tokenizer` put their specials at the same ids (tests check the two agree)."""

from __future__ import annotations

import math
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

from ..config.model import HeadCfg


class CTCHead(nn.Module):
    """CTC (Graves et al. 2006): per-column class scores, class 0 = blank. Greedy decoding, or prefix beam
    search with `beam_width` > 1; with a `lexicon` (class-id sequences) the answer is the entry of highest
    CTC likelihood."""

    blank = 0

    def __init__(self, cin: int, num_classes: int, beam_width: int = 1):
        super().__init__()
        self.fc = nn.Linear(cin, num_classes)
        self.beam_width = beam_width
        self.lexicon: list[list[int]] | None = None

    @classmethod
    def from_cfg(cls, cin: int, num_classes: int, cfg: HeadCfg) -> CTCHead:
        return cls(cin, num_classes, cfg.beam_width)

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
        if self.lexicon:
            return self._lexicon(logits)
        if self.beam_width > 1:
            out = [self._beam(lp) for lp in logits.float().log_softmax(-1).cpu()]
            return [o[0] for o in out], [o[1] for o in out]
        return self._greedy(logits)

    def _greedy(self, logits):
        """Best class per step, merge repeats, drop blanks. Confidence = product of the kept steps' max
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

    def _beam(self, log_probs: torch.Tensor) -> tuple[list[int], float]:
        """Prefix beam search on one (T, C) log-probability matrix; confidence = the prefix's probability."""
        lp = log_probs.tolist()
        k = self.beam_width
        beams: dict[tuple, tuple[float, float]] = {(): (0.0, -math.inf)}  # prefix -> (log p ends blank, non-blank)
        for row in lp:
            cands = sorted(range(len(row)), key=row.__getitem__, reverse=True)[:k]
            nxt: dict[tuple, list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
            for prefix, (pb, pnb) in beams.items():
                total = _lse(pb, pnb)
                stay = nxt[prefix]
                stay[0] = _lse(stay[0], total + row[self.blank])
                for c in cands:
                    if c == self.blank:
                        continue
                    ext = nxt[prefix + (c,)]
                    if prefix and prefix[-1] == c:  # a repeat extends only across a blank
                        ext[1] = _lse(ext[1], pb + row[c])
                        stay[1] = _lse(stay[1], pnb + row[c])
                    else:
                        ext[1] = _lse(ext[1], total + row[c])
            beams = dict(sorted(((p, (v[0], v[1])) for p, v in nxt.items()), key=lambda it: -_lse(*it[1]))[:k])
        prefix, (pb, pnb) = max(beams.items(), key=lambda it: _lse(*it[1]))
        return list(prefix), math.exp(_lse(pb, pnb))

    def _lexicon(self, logits):
        """Each sample's answer is the lexicon entry of highest CTC likelihood (exact, by the CTC loss)."""
        log_probs = logits.float().log_softmax(-1)  # (B, T, C)
        words = [w for w in self.lexicon if w] or [[]]
        targets = torch.tensor([i for w in words for i in w], dtype=torch.long)
        tlen = torch.tensor([len(w) for w in words], dtype=torch.long)
        ids, confs = [], []
        for b in range(log_probs.shape[0]):
            lp = log_probs[b:b + 1].expand(len(words), -1, -1).transpose(0, 1)  # (T, N, C): one row per word
            nll = F.ctc_loss(lp, targets, torch.full((len(words),), lp.shape[0], dtype=torch.long), tlen,
                             blank=self.blank, reduction="none")
            j = int(nll.argmin())
            ids.append(list(words[j]))
            confs.append(math.exp(-float(nll[j])))
        return ids, confs


def _lse(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


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
        ids, confs = [], []
        for b in range(best.shape[0]):
            seq = best[b].tolist()
            end = seq.index(self.eos) if self.eos in seq else len(seq)
            ids.append([i for i in seq[:end] if i > self.eos])
            confs.append(float(best_p[b][: end + 1].prod()))
        return ids, confs


HEADS = {"ctc": CTCHead, "attention": AttentionHead}
