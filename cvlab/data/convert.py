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
from .loaders import report_of, unwrap
from .report import DataReport

_COMMIT_EVERY = 1000


def _png_of(image, label: str) -> tuple[bytes, str]:
    buf = io.BytesIO()
    to_pil(image).save(buf, format="PNG")
    return buf.getvalue(), label


def convert_to_lmdb(ds: Dataset, out: Path, on_progress=None) -> dict:
    """Write `ds` to `out`; returns {"written": n, "out": path, "left_out": samples of the source not written,
    "dropped": {...}, "examples": {...}, "report": lines}: what the dataset dropped while reading its annotations
    and the images found undecodable here (decoded first, dropped and counted, never written), the same report
    lines `data check` and evaluation print."""
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
    source = report_of(ds) or DataReport("dataset")
    lines = source.lines(charset=False) + report.lines()  # labels are written as they are: no charset lines
    dropped = {**source.dropped}
    for reason, n in report.dropped.items():
        dropped[reason] = dropped.get(reason, 0) + n
    return {"written": written, "out": str(out), "left_out": source.total_dropped + report.total_dropped,
            "dropped": dropped, "examples": {**source.examples, **report.examples}, "report": lines}
