"""Which samples each training step reads: the sampler (a stream fixed by the seed, sliced per rank, resumable at
any world size) and the groups that keep samples sharing a source together (`data.group_by`)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler, Subset

from ..errors import CvlabError


def unwrap(ds: Dataset, i: int | None = None) -> tuple[Dataset, int | None]:
    """The dataset under Subset wrappers, and index i mapped into it."""
    while isinstance(ds, Subset):
        i = None if i is None else int(ds.indices[i])
        ds = ds.dataset
    return ds, i


def batch_groups(datasets: dict[str, Dataset], by: str, size: int) -> tuple[list[list[int]], list[str]]:
    """Groups of `size` training samples that share their `by` (a synthetic source, a writer, a form, a page, a
    photograph), for batches whose normalization groups are not i.i.d., as on real data read unshuffled. Returns
    (groups as positions in the concatenated datasets, report lines). Samples left after whole groups of their
    own key are grouped with each other (said); fewer than `size` left at the end are not trained on (said)."""
    groups, loose, lines, offset = [], [], [], 0
    for name, ds in datasets.items():
        base, _ = unwrap(ds)
        known = getattr(base, "GROUP_KEYS", ())
        if by not in known:
            has = f"it records: {', '.join(known)}" if known else "it records none"
            raise CvlabError(f"data.group_by: {by}: the training set {name} does not record a sample's {by} ({has})")
        by_key: dict = {}
        for i in range(len(ds)):
            by_key.setdefault(base.group_key(unwrap(ds, i)[1], by), []).append(offset + i)
        before = len(groups)
        for idx in by_key.values():
            whole = len(idx) // size * size
            groups += [idx[j:j + size] for j in range(0, whole, size)]
            loose += idx[whole:]
        lines.append(f"{name}: {len(groups) - before} groups of {size} samples sharing their {by} "
                     f"(from {len(by_key)} {by}s)")
        offset += len(ds)
    mixed = len(loose) // size * size
    groups += [loose[j:j + size] for j in range(0, mixed, size)]
    if mixed:
        lines.append(f"{mixed} samples left after whole groups of their {by}: batched in mixed groups of {size}")
    if len(loose) > mixed:
        lines.append(f"{len(loose) - mixed} samples do not fill a last group of {size}: not trained on")
    return groups, lines


class StepSampler(Sampler[list[int]]):
    """Index batches for steps [start, steps): a fresh permutation per epoch, seeded by (seed, epoch).

    The sample stream is fixed by the seed alone. With G = batch_size × world, step s reads the global positions
    [offset + (s - start)·G, + G) and rank r takes its r-th slice of batch_size, so N processes see together
    exactly what one process at batch G sees. `offset` (samples already seen; default start·G) lets a resumed
    run continue the same stream at another global batch (another world size)."""

    def __init__(self, n: int, batch_size: int, *, seed: int, steps: int, start: int = 0, rank: int = 0,
                 world: int = 1, offset: int | None = None, groups: list[list[int]] | None = None,
                 ordered: bool = False):
        self.n, self.batch_size, self.seed, self.steps, self.start = n, batch_size, seed, steps, start
        self.ordered = ordered  # index order (a curriculum's synthetic set), the same stream at any world size
        self.rank, self.world = rank, world
        self.offset = start * batch_size * world if offset is None else offset
        self._epoch, self._perm = -1, None
        # `groups` (equal-sized, from batch_groups): the permutation moves whole groups, so each stays together
        self.groups = torch.tensor(groups, dtype=torch.long) if groups else None  # (G, k)
        if self.groups is not None:
            self.n = self.groups.numel()

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            if self.ordered:
                self._epoch, self._perm = epoch, torch.arange(self.n)
            elif self.groups is None:
                self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
            else:  # (G, k) rows in a random order, flattened: group j fills positions [j·k, (j+1)·k)
                self._epoch = epoch
                self._perm = self.groups[torch.randperm(len(self.groups), generator=g)].reshape(-1)
        return self._perm

    def position(self, step: int) -> int:
        """The global sample position where step `step` begins."""
        return self.offset + (step - self.start) * self.batch_size * self.world

    def batch(self, step: int) -> list[int]:
        first = self.position(step) + self.rank * self.batch_size
        return [int(self._permutation(p // self.n)[p % self.n]) for p in range(first, first + self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.steps - self.start)
