"""From dataset specs to DataLoaders. `DATASETS` maps a spec's `type` to its dataset class.

Training batches come from `StepSampler`: the indices of step s are a pure function of (seed, s), so a resumed
run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler, Subset

from ..config.data import DataCfg, SpecBase
from ..errors import CvlabError
from .synth import SynthWords

DATASETS: dict[str, type] = {"synth": SynthWords}


def build_dataset(spec: SpecBase, charset: str, data: DataCfg) -> Dataset:
    cls = DATASETS.get(spec.type)
    if cls is None:
        raise CvlabError(f"dataset type {spec.type!r} has no loader (valid: {', '.join(DATASETS)})")
    ds = cls(spec, charset, data.image)
    if spec.limit is not None and spec.limit < len(ds):
        ds = Subset(ds, range(spec.limit))
    if len(ds) == 0:
        raise CvlabError(f"{spec_name(spec)}: the dataset has 0 samples")
    return ds


def spec_name(spec: SpecBase, fallback_index: int | None = None) -> str:
    if spec.name:
        return spec.name
    base = spec.type if not hasattr(spec, "split") else f"{spec.type}_{spec.split}"
    return base if fallback_index is None else f"{base}{fallback_index}"


def named_datasets(specs: Sequence[SpecBase], charset: str, data: DataCfg) -> dict[str, Dataset]:
    """Build each spec, naming them uniquely (`synth`, `synth1`, ...) when names are not given."""
    out: dict[str, Dataset] = {}
    for spec in specs:
        name = spec_name(spec)
        i = 1
        while name in out:
            name = spec_name(spec, i)
            i += 1
        out[name] = build_dataset(spec, charset, data)
    return out


def collate(batch: list[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, list[str]]:
    images, labels = zip(*batch, strict=True)
    return torch.stack(images), list(labels)


class StepSampler(Sampler[list[int]]):
    """Index batches for steps [start, steps): a fresh permutation per epoch, seeded by (seed, epoch)."""

    def __init__(self, n: int, batch_size: int, seed: int, steps: int, start: int = 0):
        self.n, self.batch_size, self.seed, self.steps, self.start = n, batch_size, seed, steps, start
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm

    def batch(self, step: int) -> list[int]:
        out = []
        for p in range(step * self.batch_size, (step + 1) * self.batch_size):
            out.append(int(self._permutation(p // self.n)[p % self.n]))
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.steps - self.start)


def train_loader(datasets: dict[str, Dataset], batch_size: int, seed: int, steps: int, start: int, workers: int
                 ) -> DataLoader:
    ds = ConcatDataset(list(datasets.values()))
    sampler = StepSampler(len(ds), batch_size, seed, steps, start)
    return DataLoader(ds, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                      persistent_workers=False, pin_memory=torch.cuda.is_available())


def eval_loader(ds: Dataset, batch_size: int, workers: int, max_samples: int | None = None) -> DataLoader:
    if max_samples is not None and max_samples < len(ds):
        ds = Subset(ds, range(max_samples))
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                      pin_memory=torch.cuda.is_available())
