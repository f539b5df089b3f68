"""Tokenizers map text to class ids and back. They share one base and differ in their special tokens.

Class ids are `specials + charset`: the model only ever knows `num_classes`; heads return label ids with the
specials already stripped by their own decoding (CTC collapse, attention EOS), and `decode` maps them to text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import CvlabError
from .charset import case_fold, resolve_charset

if TYPE_CHECKING:
    from ..config import Experiment


class Tokenizer:
    specials: tuple[str, ...] = ()

    def __init__(self, charset: str):
        self.charset = charset
        self.itos = list(self.specials) + list(charset)
        self.stoi = {c: i for i, c in enumerate(self.itos) if i >= len(self.specials)}
        self.fold = case_fold(charset)  # labels are case-folded to the charset before encoding

    @property
    def num_classes(self) -> int:
        return len(self.itos)

    def missing(self, text: str) -> list[str]:
        """Characters of `text` that the charset cannot encode (callers count and report them)."""
        return [c for c in self.fold(text) if c not in self.stoi]

    def encode(self, text: str) -> list[int]:
        """Ids of the encodable characters; anything else must have been counted via `missing` first."""
        return [self.stoi[c] for c in self.fold(text) if c in self.stoi]

    def decode(self, ids) -> str:
        n = len(self.specials)
        return "".join(self.itos[i] for i in ids if i >= n)

    def encode_batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) padded targets and (B,) lengths, as the head's loss expects them."""
        seqs = [self.encode(t) for t in texts]
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        width = max(1, int(lengths.max())) if seqs else 1
        out = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return out, lengths

    pad_id = 0


class CTCTokenizer(Tokenizer):
    """Class 0 is the CTC blank."""

    specials = ("[blank]",)
    blank = 0


class AttentionTokenizer(Tokenizer):
    """Class 0 is [GO] (also the padding, which the attention loss ignores), class 1 is [EOS]. Targets are
    framed: `[GO] c1 .. cn [EOS]`, so a batch is (B, max_len + 2); lengths stay the character counts."""

    specials = ("[GO]", "[EOS]")
    go, eos = 0, 1
    pad_id = 0

    def encode_batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = [self.encode(t) for t in texts]
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        width = (int(lengths.max()) if seqs else 0) + 2
        out = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s) + 2] = torch.tensor([self.go, *s, self.eos], dtype=torch.long)
        return out, lengths


TOKENIZERS = {"ctc": CTCTokenizer, "attention": AttentionTokenizer}


def build_tokenizer(head: str, charset: str) -> Tokenizer:
    if head not in TOKENIZERS:
        raise CvlabError(f"model.head.name: no tokenizer for head {head!r} (valid: {', '.join(TOKENIZERS)})")
    return TOKENIZERS[head](charset)


def tokenizer_for(cfg: Experiment) -> Tokenizer:
    """The tokenizer an experiment's head and charset call for."""
    return build_tokenizer(cfg.model.head.name, resolve_charset(cfg.data.charset))
