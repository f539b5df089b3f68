"""From dataset specs to DataLoaders. `DATASETS` maps a spec's `type` to its dataset class.

Training batches come from `StepSampler`: the indices of step s are a pure function of (seed, s), so a resumed
run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from ..config import Experiment
from ..config.data import DataCfg, SpecBase
from ..errors import CvlabError
from .charset import charset_name, resolve_charset
from .formats.base import Broken
from .formats.casia import CasiaDgrlDataset, CasiaGntDataset
from .formats.folder import FolderDataset
from .formats.iam import IamDataset
from .formats.icdar import Ic13Dataset, Ic15Dataset
from .formats.iiit5k import Iiit5kDataset
from .formats.lmdb import LmdbDataset
from .formats.rimes import RimesDataset
from .formats.svt import SvtDataset
from .report import UNWRITABLE, DataReport
from .sampling import StepSampler, unwrap
from .synth import SynthWords
from .synth.device import Pending, Recipe

DATASETS: dict[str, type] = {
    "synth": SynthWords, "lmdb": LmdbDataset, "folder": FolderDataset, "iiit5k": Iiit5kDataset,
    "svt": SvtDataset, "ic13": Ic13Dataset, "ic15": Ic15Dataset, "iam": IamDataset, "rimes": RimesDataset,
    "casia_gnt": CasiaGntDataset, "casia_dgrl": CasiaDgrlDataset,
}


def _construct(spec: SpecBase, charset: str, data: DataCfg) -> Dataset:
    cls = DATASETS.get(spec.type)
    if cls is None:
        raise CvlabError(f"dataset type {spec.type!r} has no loader (valid: {', '.join(DATASETS)})")
    return cls(spec, charset, data.image)


def where(spec: SpecBase, key: str | None = None, part: str | None = None) -> str:
    """How a message names a dataset: its YAML key when it has one (`data.train[0]`), and what it reads
    (`folder /x/y`, `lmdb /x/y evaluation/A`, `ic13 /x/y split test`)."""
    root = getattr(spec, "root", None)
    split = getattr(spec, "split", None)
    what = " ".join(str(s) for s in (spec.type, root, part) if s) + (f" split {split}" if split else "")
    return f"{key} ({what})" if key else what


def writable(ds: Dataset, data: DataCfg, *, at: str, training: bool) -> Dataset:
    """Labels with no character in the charset (every one of their characters outside it, after case folding)
    would train as empty targets. Training drops them, counted in the dataset's report, and refuses a dataset
    left with none, naming it and the charset; evaluation scores them as they are (the report counts them)."""
    base, _ = unwrap(ds)
    bad = set(getattr(base, "unwritable", ()))
    if not bad:
        return ds
    if ds is base or (isinstance(ds, Subset) and ds.dataset is base):  # a dataset, or one LMDB folder of it
        positions = range(len(ds)) if ds is base else ds.indices
    else:
        positions = [unwrap(ds, i)[1] for i in range(len(ds))]
    kept = [i for i, j in enumerate(positions) if j not in bad]
    lost = [j for j in positions if j in bad]
    if not lost:
        return ds
    report = report_of(ds)
    examples = [f"{base.source(j)} {base.label(j)!r}" for j in lost[:3]]
    if not training:
        if report is not None:
            report.count_unwritable(len(lost), examples)
        return ds
    if not kept:
        raise CvlabError(f"{at}: none of its {len(lost)} labels has a character in the charset "
                         f"{charset_name(data.charset)} (e.g. {'; '.join(examples[:2])}); choose data.charset to "
                         f"match the labels")
    if report is not None:
        reason = f"{UNWRITABLE} {charset_name(data.charset)}"
        for example in examples:
            report.drop(reason, example)
        report.dropped[reason] += len(lost) - len(examples)
    out = Subset(ds, kept)
    if report is not None:
        out.report = report
    return out


def _limited(spec: SpecBase, ds: Dataset, at: str) -> Dataset:
    if spec.limit is not None and spec.limit < len(ds):
        ds = Subset(ds, range(spec.limit))
    if len(ds) == 0:
        why = "; ".join(report_lines(ds)[:3])
        raise CvlabError(f"{at}: the dataset has 0 samples" + (f" ({why})" if why else " (its annotations list none)"))
    return ds


def _ready(spec: SpecBase, ds: Dataset, data: DataCfg, *, at: str, training: bool) -> Dataset:
    """A constructed dataset (or one part) as it is used: unwritable labels handled, `limit` applied, a
    val/test copy distorted."""
    return _distorted(spec, _limited(spec, writable(ds, data, at=at, training=training), at))


class Distorted(Dataset):
    """A val/test set seen through its spec's `augment` ops. Image i is distorted by a generator seeded by i
    alone, so every run, batch size, worker count and access order sees the same distorted copy. Unreadable
    images pass through as they are (counted downstream like any other)."""

    def __init__(self, ds: Dataset, specs):
        from ..augment import build_pipeline, step_generator

        self.ds, self.pipeline, self._gen = ds, build_pipeline(specs), step_generator
        self.report = report_of(ds)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        image, label, *rest = self.ds[i]
        if not isinstance(image, Broken):
            with torch.no_grad():
                image = self.pipeline(image[None], self._gen(0, i))[0]  # (C, H, W) -> (1, C, H, W) -> (C, H, W)
        return (image, label, *rest)

    def lexicons(self, i: int):
        base, j = unwrap(self.ds, i)
        return base.lexicons(j) if hasattr(base, "lexicons") else None


def _distorted(spec: SpecBase, ds: Dataset) -> Dataset:
    return Distorted(ds, spec.augment) if spec.augment else ds


def build_dataset(spec: SpecBase, charset: str, data: DataCfg, *, key: str | None = None,
                  training: bool = False) -> Dataset:
    """One spec as one dataset. `key` (`data.val[0]`) names it in errors; `training` drops the labels the
    charset cannot write (see `writable`)."""
    return _ready(spec, _construct(spec, charset, data), data, at=where(spec, key), training=training)


def build_parts(spec: SpecBase, charset: str, data: DataCfg, *, key: str | None = None,
                training: bool = False) -> dict[str, Dataset]:
    """One dataset per part: an LMDB tree (e.g. evaluation/IIIT5k_3000, evaluation/SVT) gives one per folder,
    so evaluation reports one row per benchmark; everything else gives itself. `limit` applies per part."""
    ds = _construct(spec, charset, data)
    parts = ds.parts() if hasattr(ds, "parts") else {}
    if len(parts) <= 1:
        return {spec_name(spec): _ready(spec, ds, data, at=where(spec, key), training=training)}
    out = {}
    for rel, idx in parts.items():
        name = f"{spec.name}_{rel}" if spec.name else rel + ("_distorted" if spec.augment else "")
        name = name.replace("/", "_")
        part = Subset(ds, idx)
        part.report = ds.part_report(rel)  # each folder's own drops, so nothing is printed twice
        out[name] = _ready(spec, part, data, at=where(spec, key, rel), training=training)
    return out


def spec_name(spec: SpecBase) -> str:
    if spec.name:
        base = spec.name
    else:
        split = getattr(spec, "split", None)
        base = f"{spec.type}_{split}" if split else spec.type
        if getattr(spec, "subset", "full") != "full":
            base = f"{spec.type}_{spec.subset}"
        if getattr(spec, "level", None):
            base = f"{spec.type}_{spec.level}" + (f"_{Path(split).stem}" if split else "")
    if spec.augment and not spec.name:
        base += "_distorted"  # not confused with the same set undistorted in the same table
    base = base.replace("/", "_")  # names become TensorBoard tags and table rows
    return base


def named_datasets(specs: Sequence[SpecBase], charset: str, data: DataCfg, *, key: str | None = None,
                   training: bool = False) -> dict[str, Dataset]:
    """Build each spec, naming them uniquely (`synth`, `synth1`, ...) when names are not given. `key` is the
    YAML list the specs come from (`data.val`): errors name `data.val[1]`."""
    out: dict[str, Dataset] = {}
    for n, spec in enumerate(specs):
        item = f"{key}[{n}]" if key else None
        for part_name, ds in build_parts(spec, charset, data, key=item, training=training).items():
            name, i = part_name, 1
            while name in out:
                name = f"{part_name}{i}"
                i += 1
            out[name] = ds
    return out



def datasets_for(cfg: Experiment, split: str) -> dict[str, Dataset]:
    """An experiment's `data.train` or `data.val` datasets, by name (empty when none are configured). Training
    sets leave out the labels the charset cannot write (counted; a set with none left is an error)."""
    specs = getattr(cfg.data, split)
    if not specs:
        return {}
    return named_datasets(specs, resolve_charset(cfg.data.charset), cfg.data, key=f"data.{split}",
                          training=split == "train")


def deferred(ds: Dataset) -> Dataset:
    """`ds` as a loader reads it: synthetic sets with `device_stages` (under any Subset or ConcatDataset) hand
    out recipes, which `collate` gathers and ReportingLoader finishes per batch on its device. Anything else, and
    a direct `ds[i]`, gives finished images (a distorted view's ops need them: it is left as it is)."""
    if isinstance(ds, SynthWords):
        return ds.deferred_view() if ds.spec.device_stages and not ds.deferred else ds
    if isinstance(ds, Subset):
        inner = deferred(ds.dataset)
        if inner is ds.dataset:
            return ds
        out = Subset(inner, ds.indices)
        out.__dict__.update({k: v for k, v in ds.__dict__.items() if k not in ("dataset", "indices")})
        return out
    if isinstance(ds, ConcatDataset):
        parts = [deferred(d) for d in ds.datasets]
        return ds if all(a is b for a, b in zip(parts, ds.datasets, strict=True)) else ConcatDataset(parts)
    return ds


def report_of(ds: Dataset) -> DataReport | None:
    """The report nearest to `ds`: a part's own (an LMDB folder), else the dataset's under any Subset."""
    while not hasattr(ds, "report") and isinstance(ds, Subset):
        ds = ds.dataset
    return getattr(ds, "report", None)


def report_lines(ds: Dataset) -> list[str]:
    rep = report_of(ds)
    return rep.lines() if rep else []


class Labels(list):
    """The labels of a batch (a plain list to everyone else), carrying what `collate` dropped and, for
    evaluation, each sample's lexicons and index in the dataset. Attributes survive pickling from workers."""

    dropped: list | tuple = ()
    lexicons: list | None = None
    indices: list | None = None


def collate(batch: list[tuple]) -> tuple[torch.Tensor, list[str]]:
    """Stack the readable samples; samples whose image failed to load (`Broken`) are dropped and listed in
    `labels.dropped` for the loader to count. Evaluation items carry two more: lexicons and the index."""
    good = [b for b in batch if not isinstance(b[0], Broken)]
    labels = Labels(b[1] for b in good)
    labels.dropped = [(b[0].source, b[0].why) for b in batch if isinstance(b[0], Broken)]
    labels.lexicons = [b[2] for b in good] if batch and len(batch[0]) > 2 else None
    labels.indices = [b[3] for b in good] if batch and len(batch[0]) > 3 else None
    if any(isinstance(b[0], Recipe) for b in good):  # synth device_stages: finished by the loader, per batch
        images = Pending.collate([b[0] for b in good])
    else:
        images = torch.stack([b[0] for b in good]) if good else torch.empty(0)
    return images, labels


class ReportingLoader(DataLoader):
    """A DataLoader that counts the samples `collate` dropped (in the main process, whatever the workers).
    A batch left empty (every sample unreadable) is skipped for evaluation, but kept for training
    (`keep_empty`): there each batch is one step of the sampler, and the loop must see it to keep its step
    numbers. `new_problems()` gives report lines for drops not yet reported."""

    def __init__(self, *args, keep_empty: bool = False, device: torch.device | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.keep_empty = keep_empty
        self.device = device  # where synthetic recipes (device_stages) are finished; None: the CPU
        self.load_report = DataReport("load")
        self._reported = 0

    def __iter__(self):
        for images, labels in super().__iter__():
            if isinstance(images, Pending):  # synth device_stages: the recipes become images on the device
                images = images.finish(self.device or "cpu")
            for source, why in getattr(labels, "dropped", ()):
                self.load_report.drop("image unreadable at load time", f"{source} ({why})")
            if len(labels) or self.keep_empty:
                yield images, labels

    def new_problems(self) -> list[str]:
        n = self.load_report.total_dropped
        if n == self._reported:
            return []
        self._reported = n
        return self.load_report.lines()


class _EvalView(Dataset):
    """Evaluation view: items (image, label, lexicons or None, index) so lexicon-constrained accuracy can be
    scored and each prediction traced back to its sample."""

    def __init__(self, ds: Dataset, lexicons: bool):
        self.ds, self.with_lexicons = ds, lexicons

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        image, label = self.ds[i][:2]
        base, j = unwrap(self.ds, i)
        return image, label, base.lexicons(j) if self.with_lexicons else None, i


def sample_id(ds: Dataset, i: int) -> str:
    """Where sample i of `ds` comes from (image path, LMDB key, synthetic seed and index)."""
    base, j = unwrap(ds, i)
    if hasattr(base, "source"):
        return base.source(j)
    inner = getattr(base, "ds", None)  # a distorted view
    return sample_id(inner, j) if inner is not None else f"#{i}"


def has_lexicons(ds: Dataset) -> bool:
    """Whether any sample has a lexicon: checked per sample, since a set may give lexicons to only some (the
    scorer takes each sample's own, or none)."""
    base, _ = unwrap(ds)
    if not hasattr(base, "lexicons"):
        return False
    items = getattr(base, "items", None)
    if items is not None and isinstance(ds, type(base)):  # the common case, without one call per sample
        return any(getattr(it, "lexicons", None) for it in items)
    return any(base.lexicons(unwrap(ds, i)[1]) is not None for i in range(len(ds)))


def _fast_loading(workers: int, pin: bool) -> dict:
    """Loader options for a GPU: pinned host memory (so `.to(device, non_blocking=True)` overlaps the copy),
    workers kept alive between iterations and several batches prefetched per worker."""
    extra = {"persistent_workers": True, "prefetch_factor": 4} if workers > 0 else {}
    return {"pin_memory": pin, **extra}


def train_loader(datasets: dict[str, Dataset], batch_size: int, *, seed: int, steps: int, start: int, workers: int,
                 rank: int = 0, world: int = 1, offset: int | None = None, pin: bool | None = None,
                 groups: list[list[int]] | None = None, device: torch.device | None = None) -> DataLoader:
    """Step `start` onwards; under torchrun each rank passes its rank and the world size (see StepSampler).
    `groups`: batch_groups' groups, kept together in every batch (positions in the concatenated datasets).
    `device`: where synthetic sets with `device_stages` are finished (the training device; default the CPU)."""
    ordered = [i for i, d in enumerate(datasets.values()) if getattr(unwrap(d)[0], "ordered", False)]
    if ordered and (len(datasets) > 1 or groups):
        raise CvlabError(f"data.train[{ordered[0]}].curriculum: a curriculum ramps with the sample index, so its "
                         "synthetic set must be the only training set, without data.group_by")
    ds = ConcatDataset([deferred(d) for d in datasets.values()])
    sampler = StepSampler(len(ds), batch_size, seed=seed, steps=steps, start=start, rank=rank, world=world,
                          offset=offset, groups=groups, ordered=bool(ordered))
    pin = torch.cuda.is_available() if pin is None else pin
    return ReportingLoader(ds, batch_sampler=sampler, num_workers=workers, collate_fn=collate, keep_empty=True,
                           device=device,
                           **_fast_loading(workers, pin))


def eval_loader(ds: Dataset, batch_size: int, *, workers: int, max_samples: int | None = None,
                shard: range | None = None, pin: bool | None = None, device: torch.device | None = None) -> DataLoader:
    """`shard`: this rank's slice of the (max_samples-limited) set under torchrun; indices stay the set's own.
    `device`: where synthetic sets with `device_stages` are finished (default the CPU)."""
    ds = deferred(ds)
    if max_samples is not None and max_samples < len(ds):
        ds = Subset(ds, range(max_samples))
    view = _EvalView(ds, has_lexicons(ds))
    part = Subset(view, shard) if shard is not None else view
    part.ds = view.ds  # what evaluate() traces sample ids through
    pin = torch.cuda.is_available() if pin is None else pin
    return ReportingLoader(part, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                           device=device, **_fast_loading(workers, pin))
