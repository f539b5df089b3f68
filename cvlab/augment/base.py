"""What every op shares: per-image choice with probability `p`, parameters drawn from a caller's generator, and
the pipeline that runs the ops in order.

Randomness never comes from the global torch RNG: each op draws from the `torch.Generator` it is handed, so a
training batch's augmentation is a pure function of (run seed, step) — see `step_generator`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

# Mixed into the seed so the augmentation stream never coincides with another stream seeded from (seed, step).
_SALT = 0xA06


def step_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator for one training step's augmentation: a pure function of (run seed, step, device type)."""
    state = np.random.SeedSequence([seed % 2**63, step % 2**63, _SALT]).generate_state(2)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(state[0]) << 32 | int(state[1]))
    return gen


def uniform(gen: torch.Generator, shape: tuple, low: float, high: float, *, like: torch.Tensor) -> torch.Tensor:
    """U[low, high) of `shape`, drawn in float32 (the same numbers whatever the image dtype), in `like`'s dtype."""
    u = torch.rand(shape, generator=gen, device=gen.device, dtype=torch.float32)
    return (low + (high - low) * u).to(like.dtype)


class Op(nn.Module):
    """An augmentation op. Subclasses draw per-image parameters for the whole batch in `sample` and apply them in
    `apply`; `forward` applies the op to each image with probability `p` and leaves the others untouched."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        self.p = spec.p

    @property
    def name(self) -> str:
        return self.spec.op

    def sample(self, x: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Parameters for every image of the batch, each a tensor with the batch as its first dimension."""
        return {}

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def choose(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor | None:
        """Indices of the images to augment, or None for all of them. Always draws the same amount of randomness,
        so the parameters of later ops do not depend on how many images this one picked."""
        chosen = torch.rand(x.shape[0], generator=gen, device=gen.device) < self.p
        return None if self.p >= 1 else chosen.nonzero().squeeze(1)

    def forward(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        idx = self.choose(x, gen)
        return self.apply_at(x, idx, self.sample(x, gen))

    def apply_at(self, x: torch.Tensor, idx: torch.Tensor | None, params: dict) -> torch.Tensor:
        """Apply to the images at `idx` (None: all), leaving the others as they were."""
        if idx is None:
            return self.apply(x, params)
        if idx.numel() == 0:
            return x
        out = x.clone()
        out[idx] = self.apply(x[idx], {k: v[idx] for k, v in params.items()})
        return out

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.spec.model_dump().items() if k != "op")


class Pipeline(nn.Module):
    """The ordered ops of an experiment's `augment` list. Empty pipelines are falsy."""

    def __init__(self, ops: list[Op]):
        super().__init__()
        self.ops = nn.ModuleList(ops)

    def __len__(self) -> int:
        return len(self.ops)

    def forward(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        learned = None
        for op in self.ops:
            if learned is not None and learned.last is not None:
                # Learn to Augment compares its moves with an exploration of them under the same following ops:
                # the explored batch goes through every later op with the very same random parameters
                state = gen.get_state()
                x = op(x, gen)
                gen.set_state(state)
                learned.last["explored"] = op(learned.last["explored"], gen)
            else:
                x = op(x, gen)
            if hasattr(op, "learn"):
                learned = op
        return x

    @property
    def learned(self):
        """The Learn-to-Augment op (it needs the recognizer's losses during training), or None."""
        return next((op for op in self.ops if hasattr(op, "learn")), None)

    def describe(self) -> str:
        return ", ".join(f"{op.name} (p={op.p:g})" for op in self.ops) or "none"
