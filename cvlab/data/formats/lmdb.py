"""`lmdb`: the de-facto text-recognition exchange format (clovaai/deep-text-recognition-benchmark).

Keys: `num-samples`, `image-%09d` (encoded PNG/JPEG bytes), `label-%09d` (UTF-8), 1-based. A root is searched
recursively for every folder holding `data.mdb` (benchmark packs are trees of them); each folder is a `part`
that evaluation reports as its own row. Index building walks the keys only (values are memory-mapped and never
read), so a million-sample index takes seconds; label-only entries are dropped and counted there.
"""

from __future__ import annotations

import io
import json
from array import array
from pathlib import Path

import lmdb
import numpy as np
from PIL import Image

from ...errors import CvlabError
from ..report import DataReport
from .base import TextDataset, need_dir

LAYOUT = "a folder holding data.mdb (+ lock.mdb), or a tree of such folders"


RENDER_KEY = b"cvlab-render"  # `cvlab data render`'s record of what it renders (JSON): a rerun continues it
NUM_SAMPLES = b"num-samples"


def last_image(txn: lmdb.Transaction) -> int:
    """The highest `image-%09d` index present (0: none). `cvlab data render` writes in index order, so for its
    LMDBs this is how many samples are committed."""
    cur = txn.cursor()
    # b"image." sorts just after every b"image-..." key: step back from the first key at or after it
    found = cur.prev() if cur.set_range(b"image.") else cur.last()
    key = cur.key() if found else b""
    return int(key[6:]) if key.startswith(b"image-") and key[6:].isdigit() else 0


def unfinished_render(txn: lmdb.Transaction) -> str | None:
    """What an LMDB without `num-samples` is when `cvlab data render` left it so (killed part-way), else None."""
    raw = txn.get(RENDER_KEY)
    if raw is None or txn.get(NUM_SAMPLES) is not None:
        return None
    try:
        total = json.loads(raw)["n"]
    except (ValueError, KeyError, TypeError):
        total = "?"
    return (f"an unfinished `cvlab data render` ({last_image(txn)} of {total} samples written); rerun the same "
            f"command to finish it")


def find_lmdbs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("data.mdb"))


_ENVS: dict[str, lmdb.Environment] = {}


def open_env(path: Path) -> lmdb.Environment:
    """One read-only environment per folder and process (py-lmdb refuses a second open of the same path).
    Forked DataLoader workers reuse the parent's: read-only with lock=False, as DTRB's loader does."""
    key = str(Path(path).resolve())
    env = _ENVS.get(key)
    if env is None:
        # lock=False: safe on read-only media and alongside other readers; readahead off for random access
        env = lmdb.open(key, readonly=True, lock=False, readahead=False, meminit=False, max_readers=256)
        _check_complete(env, Path(key))
        _ENVS[key] = env
    return env


def _check_complete(env: lmdb.Environment, folder: Path) -> None:
    """A data.mdb shorter than its own last page (an interrupted copy or download) would be memory-mapped and
    read past its end: the process dies of SIGBUS. Refuse it here, from the sizes LMDB records."""
    need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    have = (folder / "data.mdb").stat().st_size
    if have < need:
        env.close()
        raise lmdb.Error(f"data.mdb is truncated ({have} bytes; its pages need {need}): copy it again")


def close_env(path: Path) -> None:
    env = _ENVS.pop(str(Path(path).resolve()), None)
    if env is not None:
        env.close()


class LmdbDataset(TextDataset):
    def index(self) -> None:
        root = need_dir(self.spec.root_path, LAYOUT)
        if self.spec.split:
            root = need_dir(root / self.spec.split, f"{LAYOUT} (split is a sub-folder of root)")
        self.folders = find_lmdbs(root)
        if not self.folders:
            raise CvlabError(f"{root}: no data.mdb below it; expected {LAYOUT}")
        self.root = root
        which, keys, blobs, lengths, self.part_ranges, self.part_reports = [], [], [], [], {}, {}
        total, whole = 0, self.report
        for f, folder in enumerate(self.folders):
            rel = folder.relative_to(root).as_posix()
            rel = rel if rel != "." else folder.name
            self.report = self.part_reports[rel] = DataReport(rel)  # drops go to the folder's own report
            idx, blob, lens = self._index_one(f, folder)
            self.report.samples = len(idx)
            whole.merge(self.report)
            which.append(np.full(len(idx), f, dtype=np.int32))
            keys.append(idx)
            blobs.append(blob)
            lengths.append(lens)
            self.part_ranges[rel] = (total, total + len(idx))
            total += len(idx)
        self.report = whole
        self.which = np.concatenate(which)
        self.keys = np.concatenate(keys)
        # Labels as one UTF-8 blob plus offsets: ~10 bytes a label instead of a Python string each, and pages
        # that forked DataLoader workers share instead of copying (14M MJ+ST labels stay ~150 MB).
        self._blob = b"".join(blobs)
        self._off = np.zeros(total + 1, dtype=np.int64)
        np.cumsum(np.concatenate(lengths), out=self._off[1:])

    def _index_one(self, f: int, folder: Path) -> tuple[np.ndarray, bytes, np.ndarray]:
        """Walk the sorted `label-` keys and, in step, the sorted `image-` keys (values never read)."""
        where_db = folder / "data.mdb"
        idx, lens, blob = array("q"), array("q"), bytearray()
        with self._env(f).begin() as txn:
            raw = txn.get(b"num-samples")
            if raw is None:
                what = unfinished_render(txn) or "not a text-recognition LMDB"
                raise CvlabError(f"{where_db}: no `num-samples` key; {what}")
            try:
                n = int(raw.decode())
            except ValueError:
                raise CvlabError(f"{where_db}: num-samples is {raw[:20]!r}, not a number") from None
            images = txn.cursor()
            img_ok = images.set_range(b"image-")
            img_key = images.key() if img_ok else b""
            labels = txn.cursor()
            seen = 0
            if labels.set_range(b"label-"):
                for key, value in labels.iternext():
                    if not key.startswith(b"label-"):
                        break
                    suffix = key[6:]
                    i = int(suffix) if suffix.isdigit() else 0
                    if not 1 <= i <= n:
                        self.report.drop("LMDB key outside 1..num-samples (ignored)", f"{folder.name} {key!r}")
                        continue
                    seen += 1
                    target = b"image-" + suffix
                    while img_ok and img_key < target:  # zero-padded: byte order is index order
                        img_ok = images.next()
                        img_key = images.key() if img_ok else b""
                    where = f"{folder.name} #{i}"
                    if img_key != target:
                        self.report.drop("LMDB entry without image (label only)",
                                         f"{where} {value.decode(errors='replace')!r}")
                        continue
                    if not value:
                        self.report.drop("empty label", where)
                        continue
                    try:
                        value.decode("utf-8")
                    except UnicodeDecodeError:
                        self.report.drop("LMDB label not UTF-8", where)
                        continue
                    idx.append(i)
                    lens.append(len(value))
                    blob += value
            if seen < n:
                self.report.drop("LMDB entry without label", f"{folder.name}: {n - seen} of {n} indices", n - seen)
        return np.frombuffer(idx, dtype=np.int64), bytes(blob), np.frombuffer(lens, dtype=np.int64)

    def _env(self, f: int) -> lmdb.Environment:
        try:
            return open_env(self.folders[f])
        except lmdb.Error as e:
            raise CvlabError(f"{self.folders[f]}: cannot open as LMDB ({e})") from None

    def count_labels(self, indices: range, reports: list) -> None:
        for rel, (start, end) in self.part_ranges.items():  # each folder's report, and the whole one
            super().count_labels(range(start, end), [*reports, self.part_reports[rel]])

    def parts(self) -> dict[str, range]:
        return {k: range(*v) for k, v in self.part_ranges.items()}

    def part_report(self, rel: str) -> DataReport:
        return self.part_reports[rel]

    def __len__(self) -> int:
        return len(self.keys)

    def label(self, i: int) -> str:
        return self._blob[self._off[i]:self._off[i + 1]].decode("utf-8")

    def source(self, i: int) -> str:
        return f"{self.folders[self.which[i]]} image-{int(self.keys[i]):09d}"

    def encoded(self, i: int) -> bytes:
        with self._env(int(self.which[i])).begin() as txn:
            data = txn.get(b"image-%09d" % int(self.keys[i]))
        if data is None:
            raise OSError("image key vanished")
        return bytes(data)

    def load(self, i: int) -> Image.Image:
        with Image.open(io.BytesIO(self.encoded(i))) as im:
            im.load()
            return im.copy()
