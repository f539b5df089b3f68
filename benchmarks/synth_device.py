"""CPU renders against device-finished renders (`device_stages: true`) of the same synthetic indices: per-image
statistics overall and per stage (on the images where it fires), pixel histograms, and a side-by-side preview.

Both modes draw the same random numbers for index i (the same word, font, geometry, colours and stages with the
same parameters; tests/test_synth_device.py checks it), so the comparison is pair by pair: what differs is only
how the stages are drawn (at the crop's size with PIL/numpy, or at the model's input size as tensor ops).

Statistics per image (grey, 0..1): mean intensity; text/background contrast (|mean on the word's mask - mean off
it|); edge energy (mean |horizontal| + |vertical| difference: sharpness, what blur and low resolution remove);
noise (std of the image minus its 3×3 mean, off the text: grain, noise, JPEG).

    .venv/bin/python benchmarks/synth_device.py [--n 512] [--preview docs/synth_device_preview.png] [--cols 8]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from cvlab.config import ImageCfg, SynthSpec
from cvlab.data.charset import resolve_charset
from cvlab.data.synth import SynthWords
from cvlab.data.synth.device import Pending
from cvlab.data.synth.recipe import LAYOUT
from cvlab.imagegrid import image_grid, save_image, to_pil

STAGES = ("shadow", "border", "background", "blend", "lighting", "blur", "lowres", "noise", "jpeg")


def stats(x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image statistics of (n, 1, H, W) images in [0, 1] with the word's mask (n, H, W)."""
    g = x[:, 0]
    on, off = mask > 0.6, mask < 0.05
    mean_on = (g * on).sum((1, 2)) / on.sum((1, 2)).clamp(min=1)
    mean_off = (g * off).sum((1, 2)) / off.sum((1, 2)).clamp(min=1)
    edges = (g[:, :, 1:] - g[:, :, :-1]).abs().mean((1, 2)) + (g[:, 1:] - g[:, :-1]).abs().mean((1, 2))
    high = (x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1))[:, 0]
    far = F.max_pool2d(mask[:, None], 5, stride=1, padding=2)[:, 0] < 0.05  # away from any stroke
    hv = torch.where(far, high, 0.0)
    cnt = far.sum((1, 2)).clamp(min=1)
    noise = torch.sqrt(((hv ** 2).sum((1, 2)) / cnt - (hv.sum((1, 2)) / cnt) ** 2).clamp(min=0))
    return {"mean": g.mean((1, 2)), "contrast": (mean_on - mean_off).abs(), "edges": edges, "noise": noise}


def fired(params: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {s: params[:, LAYOUT[s]][:, 0] > 0.5 for s in STAGES if s != "background"}
    out["background"] = torch.stack([params[:, LAYOUT[f"tex.{k}"]][:, 0] > 0.5
                                     for k in ("gradient", "noise", "shapes", "stripes", "word")], 1).any(1)
    return out


def histogram(x: torch.Tensor, bins: int = 10) -> list[float]:
    h = torch.histc(x.flatten(), bins=bins, min=0, max=1)
    return (h / h.sum()).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="indices compared (0..n-1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preview", default="docs/synth_device_preview.png", help="side-by-side PNG ('' for none)")
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--rows", type=int, default=3, help="pairs of rows (CPU above, device below) in the preview")
    args = ap.parse_args()
    torch.set_num_threads(1)
    charset, image = resolve_charset("lower36"), ImageCfg()
    cpu = SynthWords(SynthSpec(size=args.n, seed=args.seed), charset, image)
    dev = SynthWords(SynthSpec(size=args.n, seed=args.seed, device_stages=True), charset, image)
    t0 = time.perf_counter()
    a = torch.stack([cpu[i][0] for i in range(args.n)])
    t_cpu = time.perf_counter() - t0
    t0 = time.perf_counter()
    recipes = [dev.render(i, recipe=True)[0] for i in range(args.n)]
    t_rec = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = torch.cat([Pending.collate(recipes[i:i + 64]).finish() for i in range(0, args.n, 64)])
    t_fin = time.perf_counter() - t0
    print(f"{args.n} indices, seed {args.seed} (timings under whatever load the machine has; relative only): CPU "
          f"renders {1000 * t_cpu / args.n:.2f} ms/img; device mode: recipes {1000 * t_rec / args.n:.2f} ms/img on "
          f"the CPU, finishing {1000 * t_fin / args.n:.2f} ms/img on the CPU ({torch.get_num_threads()} thread)")
    mask = torch.stack([r.masks[0] for r in recipes]).float() / 255
    params = torch.stack([r.params for r in recipes])
    sa, sb = stats(a, mask), stats(b, mask)
    fire = fired(params)

    def row(label: str, sel: torch.Tensor) -> None:
        cells = []
        for k in ("mean", "contrast", "edges", "noise"):
            x, y = sa[k][sel], sb[k][sel]
            corr = float(torch.corrcoef(torch.stack([x, y]))[0, 1]) if sel.sum() > 2 else float("nan")
            cells.append(f"{float(x.mean()):6.3f} {float(y.mean()):6.3f} {corr:5.2f}")
        print(f"{label:12} {float(sel.float().mean()):5.2f}  " + "  ".join(cells))

    print("\nper-image statistics, mean over the images: CPU, device, and their correlation pair by pair")
    print(f"{'images':12} {'share':>5}  {'mean intensity':^18}  {'text contrast':^18}  {'edge energy':^18}  "
          f"{'noise (off text)':^18}")
    row("all", torch.ones(args.n, dtype=torch.bool))
    for s in STAGES:
        row(f"{s} fired", fire[s])
    none = ~torch.stack(list(fire.values()), 1).any(1)
    row("none fired", none)

    print("\npixel intensity histogram (10 bins over 0..1), share of pixels")
    print("  CPU    " + " ".join(f"{v:5.3f}" for v in histogram(a)))
    print("  device " + " ".join(f"{v:5.3f}" for v in histogram(b)))
    print("text contrast histogram (10 bins over 0..1), share of images")
    print("  CPU    " + " ".join(f"{v:5.3f}" for v in histogram(sa["contrast"])))
    print("  device " + " ".join(f"{v:5.3f}" for v in histogram(sb["contrast"])))
    d = (a - b).abs().mean((1, 2, 3))
    print(f"\nmean |CPU - device| per pixel: {float(d.mean()):.3f} (median image {float(d.median()):.3f})")

    if args.preview:
        tiles, labels = [], []
        for r in range(args.rows):
            idx = range(r * args.cols, (r + 1) * args.cols)
            tiles += [to_pil(a[i]) for i in idx] + [to_pil(b[i]) for i in idx]
            labels += [f"CPU {idx.start}-{idx.stop - 1}", "device"]
        save_image(image_grid(tiles, args.cols, row_labels=labels, height=64), args.preview)
        print(f"written {args.preview}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
