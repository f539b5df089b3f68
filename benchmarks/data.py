"""Data loading speed on this machine: index-build time and samples/s for LMDB, folder and synthetic sources,
read as training reads them (decode, grey, resize to 32×100, batch of 64 through a DataLoader).

Builds its own temporary data: N rendered word images as PNGs, written once into an LMDB (repeated to
--index-size entries, to time a large index) and once as files with a gt.txt.

`--synth` times the synthetic renderer alone instead: images/s of one process for the MJSynth recipe and the
plain style, the cost of each stage (that stage alone on, against every stage off), the DataLoader rate at
each worker count, to compare with the model's training rate (benchmarks/train_throughput.py), and with
`device_stages: true` the CPU's cost per image and the device stages' cost per batch of 32 and 64 (CPU threads,
and CUDA where there is one). benchmarks/synth_device.py compares the two modes' images.

    .venv/bin/python benchmarks/data.py [--images 20000] [--index-size 100000] [--read 6400] [--workers 0,2]
    .venv/bin/python benchmarks/data.py --synth [--read 2000] [--workers 0,1,2]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time
from pathlib import Path

import lmdb
import numpy as np
import torch

from cvlab.config import DataCfg, SynthSpec, parse_data_spec
from cvlab.data.loaders import build_dataset, eval_loader
from cvlab.data.synth import SynthWords


def make_sources(tmp: Path, images: int, index_size: int) -> None:
    synth = SynthWords(SynthSpec(size=images, seed=3), "0123456789abcdefghijklmnopqrstuvwxyz", DataCfg().image)
    pngs = []
    t0 = time.perf_counter()
    for i in range(images):
        img, text, _ = synth.render(i)
        buf = io.BytesIO()
        img.convert("L").save(buf, format="PNG")
        pngs.append((buf.getvalue(), text))
    print(f"rendered {images} PNGs in {time.perf_counter() - t0:.1f}s "
          f"(mean {sum(len(p) for p, _ in pngs) / images / 1024:.1f} KiB)")
    env = lmdb.open(str(tmp / "lmdb"), map_size=1 << 34)
    with env.begin(write=True) as txn:
        for i in range(index_size):
            data, text = pngs[i % images]
            txn.put(b"image-%09d" % (i + 1), data)
            txn.put(b"label-%09d" % (i + 1), text.encode())
        txn.put(b"num-samples", str(index_size).encode())
    env.close()
    (tmp / "folder").mkdir()
    lines = []
    for i, (data, text) in enumerate(pngs):
        sub = tmp / "folder" / f"{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        (sub / f"{i}.png").write_bytes(data)
        lines.append(f"{sub.name}/{i}.png\t{text}")
    (tmp / "folder" / "gt.txt").write_text("\n".join(lines) + "\n")


def throughput(ds, n: int, workers: int) -> float:
    loader = eval_loader(torch.utils.data.Subset(ds, range(min(n, len(ds)))), 64, workers=workers)
    t0, seen = time.perf_counter(), 0
    for images, _ in loader:
        seen += images.shape[0]
    return seen / (time.perf_counter() - t0)


def synth_rates(read: int, workers: list[int]) -> None:
    from cvlab.config.synth import STAGES

    charset = "0123456789abcdefghijklmnopqrstuvwxyz"
    image = DataCfg().image

    def rate(spec: SynthSpec) -> float:
        ds = SynthWords(spec, charset, image)
        rng = np.random.default_rng(0)
        for face in ds.faces:  # load every face at every size first: a long run pays that once per process
            for size in ds.sizes:
                ds._font(face, size, rng)
        t0 = time.perf_counter()
        for i in range(20, 20 + read):
            ds[i]
        return read / (time.perf_counter() - t0)

    full, plain = rate(SynthSpec(size=read + 20)), rate(SynthSpec(size=read + 20, style="plain"))
    print(f"synth renderer, one process: mjsynth {full:.0f} img/s ({1000 / full:.2f} ms/img), "
          f"plain {plain:.0f} img/s ({1000 / plain:.2f} ms/img)")
    print("stage alone on (p=1), every other stage off:")
    for stage in STAGES:
        r = rate(SynthSpec(size=read + 20, style="plain", **{stage: {"p": 1.0}}))
        print(f"  {stage:10} {r:6.0f} img/s  (+{1000 / r - 1000 / plain:.2f} ms/img)")
    ds = SynthWords(SynthSpec(size=10 * read), charset, image)
    for w in workers:
        print(f"mjsynth through a DataLoader, batch 64, workers={w}: {throughput(ds, read, w):.0f} img/s")
    device_stages(read, charset, image, full)


def device_stages(read: int, charset: str, image, cpu_rate: float) -> None:
    """`device_stages: true`: the CPU's share per image (glyph layer + parameters), and the device stages' cost
    per batch on the CPU (and on CUDA where there is one), against the CPU render of the whole recipe."""
    from cvlab.data.synth.device import Pending

    ds = SynthWords(SynthSpec(size=read + 20, device_stages=True), charset, image)
    rng = np.random.default_rng(0)
    for face in ds.faces:
        for size in ds.sizes:
            ds._font(face, size, rng)
    t0 = time.perf_counter()
    recipes = [ds.render(i, recipe=True)[0] for i in range(20, 20 + read)]
    per = 1000 * (time.perf_counter() - t0) / read
    print(f"device_stages: CPU work {per:.2f} ms/img (glyph layer, masks and parameters; the full recipe on the "
          f"CPU: {1000 / cpu_rate:.2f} ms/img)")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        for bs in (32, 64):
            batch = Pending.collate(recipes[:bs])
            batch.finish(dev)  # warm-up (CUDA context, the noise table)
            reps = max(3, min(20, read // bs))
            if dev == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(reps):
                batch.finish(dev)
            if dev == "cuda":
                torch.cuda.synchronize()
            ms = 1000 * (time.perf_counter() - t0) / reps
            print(f"  device stages on {dev} ({torch.get_num_threads()} thread(s) on the CPU), batch {bs}: "
                  f"{ms:.1f} ms per batch ({ms / bs:.2f} ms/img): add it to a training step's time on that device "
                  f"(benchmarks/train_throughput.py) for its share")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synth", action="store_true", help="time the synthetic renderer only (see above)")
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--index-size", type=int, default=100000)
    ap.add_argument("--read", type=int, default=6400, help="samples read per throughput figure")
    ap.add_argument("--workers", default="0,2")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    if args.synth:
        synth_rates(args.read, [int(w) for w in args.workers.split(",")])
        return
    data = DataCfg()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        make_sources(tmp, args.images, args.index_size)
        rows = []
        for kind, text in (("lmdb", f"lmdb:{tmp / 'lmdb'}"), ("folder", f"folder:{tmp / 'folder'}")):
            t0 = time.perf_counter()
            ds = build_dataset(parse_data_spec(text), "0123456789abcdefghijklmnopqrstuvwxyz", data)
            rows.append((kind, len(ds), time.perf_counter() - t0, ds))
        rows.append(("synth", args.images, 0.0, build_dataset(SynthSpec(size=args.images, seed=5),
                                                              "0123456789abcdefghijklmnopqrstuvwxyz", data)))
        print(f"{'source':8} {'samples':>8} {'index s':>8} " + " ".join(f"{f'w={w} img/s':>12}" for w in
                                                                 args.workers.split(",")))
        for kind, n, secs, ds in rows:
            rates = [throughput(ds, args.read, int(w)) for w in args.workers.split(",")]
            print(f"{kind:8} {n:8d} {secs:8.2f} " + " ".join(f"{r:12.0f}" for r in rates))


if __name__ == "__main__":
    main()
