"""`cvlab data convert`: any dataset to the standard text-recognition LMDB (DTRB layout): `num-samples`,
`image-%09d`, `label-%09d`, 1-based; the original encoded bytes (a PNG for crops) and the original label text,
so other tools read it and an LMDB converted again is identical entry for entry. Synthetic data is stored as
its renders at full resolution (PNG). `cvlab data render` writes the same entries (`encode_sample`), in
parallel and resumably."""

from __future__ import annotations

import io
from pathlib import Path

import lmdb
from PIL import Image
from torch.utils.data import Dataset

from ..errors import CvlabError
from ..imagegrid import to_pil
from .formats.base import LOAD_ERRORS
from .formats.lmdb import NUM_SAMPLES
from .loaders import report_of, sample_id
from .report import DataReport
from .sampling import unwrap

_COMMIT_EVERY = 1000


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def encode_sample(ds: Dataset, i: int) -> tuple[bytes, str]:
    """Sample i of `ds` as the LMDB stores it: (encoded image, label). A dataset read from disk gives its original
    bytes (a PNG for crops), decoded first so that undecodable bytes are never written (raises LOAD_ERRORS);
    rendered data (synth) gives its render at full resolution as PNG, which the experiment's resize turns into
    exactly the tensor it gives on the fly; anything else (a synth set finishing on the device, a distorted
    view) the tensor it gives, as PNG (8 bits: within 1/255 of the float image)."""
    base, j = unwrap(ds, i)
    if hasattr(base, "encoded"):
        base.load(j)
        return base.encoded(j), base.label(j)
    if hasattr(base, "render") and not getattr(getattr(base, "spec", None), "device_stages", False):
        image, label, _ = base.render(j)
        return png(image), label
    image, label = ds[i][:2]
    return png(to_pil(image)), label


def open_lmdb(out: Path) -> lmdb.Environment:
    # map_size is only an upper bound on a sparse file; 1 TiB leaves room for any benchmark
    return lmdb.open(str(out), map_size=1 << 40, subdir=True, meminit=False)


def put_sample(txn: lmdb.Transaction, n: int, data: bytes, label: str) -> None:
    """Entry n (1-based) of the DTRB layout."""
    txn.put(b"image-%09d" % n, data)
    txn.put(b"label-%09d" % n, label.encode("utf-8"))


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
    env = open_lmdb(out)
    written = 0
    try:
        txn = env.begin(write=True)
        for i in range(len(ds)):
            try:
                data, label = encode_sample(ds, i)
            except LOAD_ERRORS as e:
                report.drop("image unreadable (not written)", f"{sample_id(ds, i)} ({e.__class__.__name__})")
                continue
            written += 1
            put_sample(txn, written, data, label)
            if written % _COMMIT_EVERY == 0:
                txn.commit()
                txn = env.begin(write=True)
                if on_progress:
                    on_progress(written)
        txn.put(NUM_SAMPLES, str(written).encode())
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
