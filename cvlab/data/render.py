"""`cvlab data render`: synthetic datasets pre-rendered into the standard text-recognition LMDB (the entries
`cvlab data convert` writes: `encode_sample`), by K processes, resumable after a kill.

Sample i of a synth spec is a pure function of (seed, i), so any process may render any index: workers render
ranges of indices, the main process writes them in index order and commits every `commit_every` samples. The
LMDB therefore always holds samples 1..k; a rerun with the same spec (recorded as JSON under `cvlab-render`)
continues at k + 1 and refuses another spec. `num-samples` is written with the last commit only, so a
half-written LMDB is never read as complete: the LMDB loader names it an unfinished render."""

from __future__ import annotations

import json
import multiprocessing as mp
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import lmdb
from torch.utils.data import Dataset

from ..config import Experiment
from ..config.data import DataCfg, SynthSpec
from ..errors import CvlabError
from .charset import resolve_charset
from .convert import encode_sample, open_lmdb, put_sample
from .formats.lmdb import NUM_SAMPLES, RENDER_KEY, close_env, last_image
from .loaders import build_dataset, report_lines, spec_name

FORMAT = 1  # of the `cvlab-render` record
_BATCH = 32  # indices per worker task: few round trips, yet a smooth progress bar


class Target(NamedTuple):
    """One synthetic dataset to render: its spec (`size`: the samples rendered), the charset's characters and the
    data settings it renders under (the renderer sizes its degradations to `data.image.height`)."""

    key: str  # how messages name it: `data.train[0]`, `--type synth`
    spec: SynthSpec
    charset: str
    data: DataCfg
    sub: str = ""  # its folder below --out ("": --out itself)
    training: bool = False  # built as training builds it (`data.train`)


class Interrupted(Exception):
    """Ctrl-C during a render: what was committed stays; the same command continues it."""

    def __init__(self, out: Path, done: int, total: int):
        super().__init__(f"{out}: {done} of {total} samples committed")
        self.out, self.done, self.total = out, done, total


def _sized(spec: SynthSpec, n: int | None) -> SynthSpec:
    return spec if n is None else spec.model_copy(update={"size": n, "limit": None})


def refuse_type(type_: str) -> None:
    if type_ != "synth":
        raise CvlabError(f"--type {type_}: only synthetic data is rendered; `cvlab data convert --type {type_}` "
                         f"writes any other dataset as an LMDB")


def spec_target(spec: SynthSpec, charset: str, n: int | None = None, data: DataCfg | None = None) -> Target:
    """A spec built from options (`--type synth --opt ...`); `n` replaces its size."""
    refuse_type(spec.type)
    return Target(f"--type {spec.type}", _sized(spec, n), charset, data or DataCfg())


def experiment_targets(cfg: Experiment, split: str, n: int | None = None) -> tuple[list[Target], list[str]]:
    """The synthetic datasets of `data.<split>`, each as the experiment builds it (charset, image settings), and
    notes naming the datasets left out (not synthetic). Several go to a folder each, named as evaluation names
    them; one goes to --out itself. `n` replaces each one's size (and limit)."""
    if split not in ("train", "val", "test"):
        raise CvlabError(f"--split {split}: expected train, val or test")
    specs = getattr(cfg.data, split)
    chosen, notes, names = [], [], set()
    for k, spec in enumerate(specs):
        key = f"data.{split}[{k}]"
        if spec.type != "synth":
            notes.append(f"{key} ({spec.type}) is not synthetic: not rendered")
            continue
        name, i = spec_name(spec), 1
        while name in names:
            name, i = f"{spec_name(spec)}{i}", i + 1
        names.add(name)
        chosen.append((key, name, spec))
    if not chosen:
        listed = f"it lists {', '.join(s.type for s in specs)}" if specs else "it is empty"
        raise CvlabError(f"data.{split}: no synthetic dataset (type: synth) to render ({listed})")
    charset = resolve_charset(cfg.data.charset)
    return [Target(key, _sized(spec, n), charset, cfg.data, name if len(chosen) > 1 else "", split == "train")
            for key, name, spec in chosen], notes


def record(t: Target, n: int) -> dict:
    """What decides the pixels and labels, as stored under `cvlab-render` (the display name does not)."""
    return {"format": FORMAT, "n": n, "charset": t.charset, "image": t.data.image.model_dump(mode="json"),
            "spec": t.spec.model_dump(mode="json", exclude={"name"})}


def _differences(old: dict, new: dict) -> list[str]:
    """Keys whose values differ, one level into `spec` and `image` (`spec.seed`, `n`)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(key)
    return out


def _prepare(out: Path, rec: dict) -> tuple[int, bool]:
    """Make `out` a render of `rec` and say where it stands: (samples committed, complete). An LMDB of another
    spec, or not written by a render, is refused."""
    close_env(out)  # this process may have read it (py-lmdb opens a path once per process)
    fresh = not (out / "data.mdb").exists()
    if fresh:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CvlabError(f"--out {out}: cannot create it ({e.strerror or e})") from None
    try:
        env = open_lmdb(out)
    except lmdb.Error as e:
        raise CvlabError(f"{out}: cannot open as LMDB ({e}); choose a new --out folder") from None
    try:
        if fresh:
            with env.begin(write=True) as txn:  # committed at once: even a run killed at its start names itself
                txn.put(RENDER_KEY, json.dumps(rec, sort_keys=True).encode())
            return 0, False
        with env.begin() as txn:
            raw = txn.get(RENDER_KEY)
            if raw is None:
                raise CvlabError(f"{out}: already holds an LMDB that `cvlab data render` did not write; choose a new "
                                 f"--out folder")
            try:
                old = json.loads(bytes(raw))
            except ValueError:
                raise CvlabError(f"{out}: its `cvlab-render` record is not JSON; choose a new --out folder") from None
            if old != rec:
                raise CvlabError(f"{out}: holds a render of another spec (differs in {', '.join(_differences(old, rec))})"
                                 f"; rerun with the arguments that started it, or choose a new --out folder")
            return last_image(txn), txn.get(NUM_SAMPLES) is not None
    finally:
        env.close()


# ---------------------------------------------------------------------------------------------- workers

_DATASET: Dataset | None = None


def _die_with_parent() -> None:
    """Linux: the worker ends with the main process, even one killed by SIGKILL (no orphan left rendering into a
    closed pipe, no tracebacks after the kill). Elsewhere workers end at their next write to the closed pipe."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _start_worker(ds: Dataset) -> None:
    global _DATASET
    import torch

    _die_with_parent()
    _DATASET = ds
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's: it stops the pool
    torch.set_num_threads(1)  # K processes, one thread each (a distorted view runs torch ops)


def _encode_range(ds: Dataset, start: int, stop: int) -> tuple[int, list[tuple[bytes, str]]]:
    return start, [encode_sample(ds, i) for i in range(start, stop)]


def _in_worker(bounds: tuple[int, int]) -> tuple[int, list[tuple[bytes, str]]]:
    return _encode_range(_DATASET, *bounds)


@contextmanager
def _encoded(ds: Dataset, ranges: list[tuple[int, int]], jobs: int) -> Iterator[Iterator]:
    """The ranges' encoded samples, in order: here (jobs 1) or from `jobs` processes (forked where the platform
    can: no pickling of the dataset)."""
    if jobs <= 1:
        yield (_encode_range(ds, *r) for r in ranges)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(jobs, initializer=_start_worker, initargs=(ds,)) as pool:  # leaving it terminates the workers
        yield pool.imap(_in_worker, ranges)


class _Silent:
    def start(self, total: int, done: int = 0) -> None: ...
    def update(self, step: int, **values: float) -> None: ...
    def message(self, text: str) -> None: ...
    def stop(self) -> None: ...


def render_lmdb(t: Target, out: Path, *, jobs: int = 1, progress=None, commit_every: int = 1000) -> dict:
    """Render `t` into the LMDB at `out` (new, or an unfinished render of the same target, which continues at
    its first missing index). `progress`: the engine's Progress protocol (start, update, message, stop).
    Returns {"out", "n", "from": samples already there, "rendered", "seconds", "complete_before": bool,
    "report": the dataset's report lines (said through `progress` before rendering)}. Ctrl-C raises `Interrupted` with what was committed."""
    progress = progress or _Silent()
    out = Path(out)
    ds = build_dataset(t.spec, t.charset, t.data, key=t.key, training=t.training)
    n = len(ds)
    done, complete = _prepare(out, record(t, n))
    result = {"out": str(out), "n": n, "from": done, "rendered": 0, "seconds": 0.0, "complete_before": complete,
              "report": report_lines(ds)}
    if complete:
        return result
    for line in result["report"]:  # the font pool, the text mix, the stages switched off
        progress.message(f"{t.key}: {line}")
    if done:
        progress.message(f"{out}: continuing an unfinished render at sample {done + 1} of {n}")
    step = max(1, min(_BATCH, commit_every))
    ranges = [(i, min(i + step, n)) for i in range(done, n, step)]
    committed, t0 = done, time.perf_counter()
    progress.start(total=n, done=done)
    try:
        with _encoded(ds, ranges, jobs) as results:
            env = open_lmdb(out)
            txn = env.begin(write=True)
            try:
                if not ranges:  # every sample committed, yet no `num-samples` (removed by hand?): complete it
                    txn.put(NUM_SAMPLES, str(n).encode())
                    txn.commit()
                    txn = env.begin(write=True)
                for start, items in results:
                    for k, (data, label) in enumerate(items):
                        put_sample(txn, start + k + 1, data, label)
                    done = start + len(items)
                    if done == n:
                        txn.put(NUM_SAMPLES, str(n).encode())  # with the last samples: complete, or not at all
                    if done == n or done - committed >= commit_every:
                        txn.commit()
                        committed, txn = done, env.begin(write=True)
                    progress.update(done)
            finally:
                txn.abort()  # what was not committed (nothing, after the last commit)
                env.close()
    except KeyboardInterrupt:
        raise Interrupted(out, committed, n) from None
    finally:
        progress.stop()
    result.update(rendered=n - result["from"], seconds=time.perf_counter() - t0)
    return result
