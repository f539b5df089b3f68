"""`eval.decoder: beam`: beam search for both heads, with a lexicon and a character n-gram LM for CTC.

- CTC: flashlight-text's beam search (the `[decode]` extra), over log-softmax emissions, prefix scores summed
  over alignments (log-add). `eval.lm` (an ARPA file, `cvlab lm build`) is a character LM fused at every
  emitted character with weight `eval.lm_weight`.
- CTC with a lexicon (`eval.lexicon`: the sets' own lexicons, or a word file): the answer is the word of highest
  CTC log-likelihood plus `lm_weight` times its LM log-probability. A lexicon of up to `EXACT_WORDS` words
  (IIIT5K 50/1k, SVT 50, most word files) is scored word by word: batched `ctc_loss`, exact, no search. A larger
  one is searched over a trie of its words: one extra final frame can only emit an end-of-word marker that the
  trie puts after every word, so the search ends on exactly one word, scored as the exact path scores it. Its
  beam ranks word prefixes that have not yet paid for their remaining characters: where the network is unsure
  it can drop every complete word, and then the word is scored exactly after all (counted: `fallbacks`).
- Attention: beam search over the decoder's steps in plain torch; a finished hypothesis ([EOS]) keeps its
  score. Confidence is the product of the chosen steps' probabilities, as greedy decoding reports it.

`beam_size: 1` is greedy decoding, the same answers (tests check it).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ...errors import CvlabError

NEG = -1e30  # an emission that cannot happen (finite: flashlight adds scores)
EXACT_WORDS = 10_000  # lexicons up to this size are scored word by word; larger ones are searched over a trie
CHUNK = 2048  # words per ctc_loss call


def _flashlight():
    try:
        from flashlight.lib.text import decoder as fl
        from flashlight.lib.text.dictionary import Dictionary
    except ImportError:
        raise CvlabError("eval.decoder: beam for CTC needs flashlight-text: pip install 'cvlab[decode]'") from None
    return fl, Dictionary


class CTCBeam:
    """flashlight beam search over a CTC head's logits (class 0 = blank), and its lexicon answers."""

    def __init__(self, tokenizer, beam_size: int = 10, *, lm: str | None = None, lm_weight: float = 0.5,
                 exact_words: int = EXACT_WORDS):
        from .lm import lm_token

        self.fl, Dictionary = _flashlight()
        self.tokenizer, self.beam_size, self.lm_weight = tokenizer, beam_size, lm_weight
        self.exact_words = exact_words
        self.n = tokenizer.num_classes
        # two classes past the model's for the lexicon search: the end-of-word marker (the LM reads it as the
        # end of the sentence), and flashlight's silence, which never occurs: given the blank's index, every
        # frame spent at the trie's root would count twice (silence and blank), which is not CTC's likelihood
        self.end, self.sil = self.n, self.n + 1
        names = ["<blank>", *(lm_token(c) for c in tokenizer.charset), "</s>", "<sil>"]
        if lm:
            path = Path(lm).expanduser()
            if not path.is_file():
                raise CvlabError(f"eval.lm: {path}: file not found (build one: cvlab lm build LABELS --order 4)")
            d = Dictionary()
            for name in names:
                d.add_entry(name)
            try:
                from flashlight.lib.text.decoder.kenlm import KenLM

                self.lm = KenLM(str(path), d)
            except Exception as e:  # noqa: BLE001  (KenLM's own message: the ARPA file is malformed)
                raise CvlabError(f"eval.lm: {path}: not a readable ARPA/KenLM file ({e})") from None
        else:
            self.lm, self.lm_weight = self.fl.ZeroLM(), 0.0
        self.fallbacks = 0  # trie searches that lost every complete word (then scored word by word)
        self._lexicons: dict = {}

    def _options(self, lexicon: bool):
        fl = self.fl
        if lexicon:
            return fl.LexiconDecoderOptions(beam_size=self.beam_size, beam_size_token=self.n + 2,
                                            beam_threshold=1e9, lm_weight=self.lm_weight, word_score=0.0,
                                            unk_score=-math.inf, sil_score=0.0, log_add=True,
                                            criterion_type=fl.CriterionType.CTC)
        return fl.LexiconFreeDecoderOptions(beam_size=self.beam_size, beam_size_token=self.n, beam_threshold=1e9,
                                            lm_weight=self.lm_weight, sil_score=0.0, log_add=True,
                                            criterion_type=fl.CriterionType.CTC)

    def _ids(self, tokens) -> list[int]:
        """flashlight's frame-level path (padded at both ends) -> label ids: repeats merged, blanks dropped."""
        out, prev = [], None
        for t in list(tokens)[1:-1]:
            if t != prev and 0 < t < self.n:
                out.append(t)
            prev = t
        return out

    def __call__(self, model, images, logits) -> tuple[list[list[int]], list[float]]:
        lp = logits.float().log_softmax(-1).cpu().contiguous()  # (B, T, C)
        decoder = self.fl.LexiconFreeDecoder(self._options(False), self.lm, 0, 0, [])
        ids, confs = [], []
        for b in range(lp.shape[0]):
            best = decoder.decode(lp[b].data_ptr(), lp.shape[1], lp.shape[2])[0]
            ids.append(self._ids(best.tokens))
            # `score` is the prefix's probability summed over its alignments (log_add), plus the weighted LM;
            # `emittingModelScore` is one alignment's only (a prefix ending in blank and one ending in its last
            # character stay two hypotheses)
            confs.append(min(1.0, math.exp(best.score - self.lm_weight * best.lmScore)))
        return ids, confs

    def _lexicon(self, words: tuple[str, ...]) -> dict:
        """Per lexicon: each word's label ids (what the charset spells of it), LM scores, the trie if searched."""
        if words not in self._lexicons:
            if len(self._lexicons) > 64:  # per-image lexicons (IIIT5K 50/1k): keep a few, not all
                self._lexicons.clear()
            spelled = [self.tokenizer.encode(w) for w in words]
            lex = {"spelled": spelled, "lm": torch.zeros(len(words), dtype=torch.float64), "trie": None}
            if self.lm_weight:  # the LM calls the search makes: each character, the end marker, the finish
                for i, seq in enumerate(spelled):
                    state, total = self.lm.start(False), 0.0
                    for t in [*seq, self.end]:
                        state, score = self.lm.score(state, t)
                        total += score
                    lex["lm"][i] = total + self.lm.finish(state)[1]
            if len(words) > self.exact_words:
                lex["trie"] = self.fl.Trie(self.n + 2, self.sil)
                for i, seq in enumerate(spelled):
                    if seq:
                        lex["trie"].insert([*seq, self.end], i, 0.0)
            self._lexicons[words] = lex
        return self._lexicons[words]

    def lexicon(self, logits_b: torch.Tensor, words: tuple[str, ...]) -> str:
        """The lexicon word read in one sample's (T, C) logits: highest CTC log-likelihood + lm_weight x LM."""
        lex = self._lexicon(words)
        lp = logits_b.float().log_softmax(-1).cpu()
        if lex["trie"] is not None:
            T = lp.shape[0]
            em = torch.full((T + 1, self.n + 2), NEG)
            em[:T, : self.n] = lp
            em[T, self.end] = 0.0  # the last frame: the end-of-word marker only
            decoder = self.fl.LexiconDecoder(self._options(True), lex["trie"], self.lm, self.sil, 0, -1, [], True)
            results = decoder.decode(em.contiguous().data_ptr(), T + 1, self.n + 2)
            found = [w for w in (results[0].words if results else []) if w >= 0]
            if len(found) == 1:  # the marker ends exactly one word, or none when the beam lost them all
                return words[found[0]]
            self.fallbacks += 1
        return _most_likely(lp, words, lex["spelled"], self.lm_weight * lex["lm"])


def _most_likely(lp: torch.Tensor, words: tuple[str, ...], spelled: list[list[int]], bonus: torch.Tensor) -> str:
    """The word of highest CTC log-likelihood (exact, by the CTC loss) plus `bonus`, among the spellable ones."""
    keep = [i for i, s in enumerate(spelled) if s]
    if not keep:
        return ""
    scores = []
    for c in range(0, len(keep), CHUNK):
        part = keep[c : c + CHUNK]
        targets = torch.tensor([t for i in part for t in spelled[i]], dtype=torch.long)
        lengths = torch.tensor([len(spelled[i]) for i in part], dtype=torch.long)
        x = lp[:, None, :].expand(-1, len(part), -1)  # (T, N, C): one row per word
        nll = F.ctc_loss(x, targets, torch.full((len(part),), lp.shape[0], dtype=torch.long), lengths, blank=0,
                         reduction="none")  # inf where a word needs more frames than there are
        scores.append(bonus[part] - nll.double())
    return words[keep[int(torch.cat(scores).argmax())]]


class AttentionBeam:
    """Beam search over an attention head's decoding steps (plain torch, batched over samples)."""

    def __init__(self, beam_size: int = 10):
        self.beam_size = beam_size
        self.fallbacks = 0

    @torch.no_grad()
    def __call__(self, model, images, logits) -> tuple[list[list[int]], list[float]]:
        head, K = model.head, self.beam_size
        x = model.sequence(model.features(images))                  # (B, T, C)
        B, T, C = x.shape
        feats = x.repeat_interleave(K, 0)                           # (B*K, T, C)
        proj = head.i2h(feats)
        state = (feats.new_zeros(B * K, head.hidden), feats.new_zeros(B * K, head.hidden))
        prev = torch.full((B * K,), head.go, dtype=torch.long, device=x.device)
        scores = torch.full((B, K), -math.inf, device=x.device)
        scores[:, 0] = 0.0                                          # one live hypothesis to start
        done = torch.zeros(B, K, dtype=torch.bool, device=x.device)
        seqs = torch.zeros(B, K, 0, dtype=torch.long, device=x.device)
        for _ in range(head.max_length + 1):
            step_logits, state = head._step(feats, proj, state, prev)
            lp = step_logits.float().log_softmax(-1).view(B, K, -1)  # (B, K, V)
            V = lp.shape[-1]
            # a finished hypothesis continues with [EOS] at no cost, so it keeps its score and its place
            lp = torch.where(done[..., None], torch.full_like(lp, -math.inf), lp)
            lp[..., head.eos] = torch.where(done, torch.zeros_like(scores), lp[..., head.eos])
            cand = (scores[..., None] + lp).view(B, K * V)
            scores, flat = cand.topk(K, dim=1)                      # (B, K)
            beam, token = flat // V, flat % V
            rows = (beam + torch.arange(B, device=x.device)[:, None] * K).view(-1)
            state = (state[0][rows], state[1][rows])
            seqs = torch.cat([seqs.gather(1, beam[..., None].expand(-1, -1, seqs.shape[2])), token[..., None]], 2)
            done = done.gather(1, beam) | (token == head.eos)
            prev = token.view(-1)
            if bool(done.all()):
                break
        ids, confs = [], []
        best = scores.argmax(1)
        for b in range(B):
            seq = seqs[b, best[b]].tolist()
            end = seq.index(head.eos) if head.eos in seq else len(seq)
            ids.append([i for i in seq[:end] if i > head.eos])
            confs.append(math.exp(float(scores[b, best[b]])))
        return ids, confs

    def lexicon(self, logits_b, words):  # the attention head's lexicon answer stays the edit-distance one
        return None


def build_decoder(cfg, tokenizer):
    """The decoder `eval.decoder` asks for, or None for each head's own greedy decoding."""
    ev = cfg.eval
    if ev.decoder == "greedy":
        return None
    if cfg.model.head.name == "attention":
        if ev.lm:
            raise CvlabError("eval.lm: the character LM is fused into CTC beam search only; leave it null for an "
                             "attention head")
        return AttentionBeam(ev.beam_size)
    return CTCBeam(tokenizer, ev.beam_size, lm=ev.lm, lm_weight=ev.lm_weight)
