"""`cvlab data convert`: any dataset to the standard text-recognition LMDB (DTRB layout): `num-samples`,
`image-%09d`, `label-%09d`, 1-based; the original encoded bytes (a PNG for crops) and the original label text,
so other tools read it and an LMDB converted again is identical entry for entry."""

from __future__ import annotations

import io
from pathlib import Path

import lmdb
from torch.utils.data import Dataset

from ..errors import CvlabError
from ..imagegrid import to_pil
from .formats.base import LOAD_ERRORS
from .loaders import unwrap
from .report import DataReport

_COMMIT_EVERY = 1000


def _png_of(image, label: str) -> tuple[bytes, str]:
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    return buf.getvalue(), label


def convert_to_lmdb(ds: Dataset, out: Path, on_progress=None) -> dict:
    """Write `ds` to `out`; returns {"written": n, "dropped": {...}, "examples": {...}}.
    Every image is decoded first: undecodable ones are dropped and counted, never written."""
    out = Path(out)
    if (out / "data.mdb").exists():
        raise CvlabError(f"{out}: already holds an LMDB (data.mdb); choose a new --out folder")
    out.mkdir(parents=True, exist_ok=True)
    report = DataReport(str(out))
    # map_size is only an upper bound on a sparse file; 1 TiB leaves room for any benchmark
    env = lmdb.open(str(out), map_size=1 << 40, subdir=True, meminit=False)
    written = 0
    try:
        txn = env.begin(write=True)
        for i in range(len(ds)):
            base, j = unwrap(ds, i)
            if not hasattr(base, "encoded"):  # generated data (synth): store the rendered sample as PNG
                data, label = _png_of(*ds[i])
            else:
                try:
                    base.load(j)
                    data, label = base.encoded(j), base.label(j)
                except LOAD_ERRORS as e:
                    report.drop("image unreadable (not written)", f"{base.source(j)} ({e.__class__.__name__})")
                    continue
            written += 1
            txn.put(b"image-%09d" % written, data)
            txn.put(b"label-%09d" % written, label.encode("utf-8"))
            if written % _COMMIT_EVERY == 0:
                txn.commit()
                txn = env.begin(write=True)
                if on_progress:
                    on_progress(written)
        txn.put(b"num-samples", str(written).encode())
        txn.commit()
    finally:
        env.close()
    return {"written": written, "out": str(out), "dropped": dict(report.dropped), "examples": report.examples}
