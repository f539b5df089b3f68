"""How soon each option leaves CTC's all-blank plateau, and what it reads at the demo's budget.

Trains the same experiment once per variant (each a list of `--set` overrides), then reads each run's logged
training loss (the log window's mean, from TensorBoard) and its final synthetic-validation score:

    .venv/bin/python benchmarks/plateau.py experiments/quickstart.yaml --out /tmp/plateau \\
        --variant base: --variant curriculum:data.train.0.curriculum.samples=8000 ...

A variant is `NAME:KEY=VALUE,KEY=VALUE` (empty after the colon: the experiment as it is); `--common` overrides
go to every variant (e.g. train.eval_every=125 for a validation curve). Columns: the first logged step whose
loss falls below 3.0 (the plateau sits at 3.4-3.9 for lower36) and below 2.0 (a curriculum's short words score
lower losses, so read these beside the validation curve), the loss at the end, the first validation step at
5 % word accuracy, and the validation curve (word accuracy % of the first validation set at each evaluation). Finished runs in --out are reused, so a
variant added later costs only itself. The table depends on steps, not on speed: it is the same under load.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

THRESHOLDS = (3.0, 2.0)


def losses(run: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars("train/loss")]


def val_curve(run: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    tag = sorted(t for t in acc.Tags()["scalars"] if t.startswith("val/") and t.endswith("/word_acc"))[0]
    return [(e.step, 100 * e.value) for e in acc.Scalars(tag)]


def first_below(curve: list[tuple[int, float]], level: float) -> int | None:
    return next((step for step, v in curve if v < level), None)


def run_dir(out: Path, name: str) -> Path | None:
    done = sorted(p.parent for p in (out / name).glob("*/metrics.json"))
    return done[-1] if done else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("experiment")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variant", action="append", required=True, help="NAME:KEY=VALUE,KEY=VALUE")
    ap.add_argument("--common", default="", help="KEY=VALUE,... for every variant")
    args = ap.parse_args()
    from cvlab.engine.device import cpu_name

    print(f"machine: {cpu_name()}, python {platform.python_version()}")
    rows = []
    for spec in args.variant:
        name, _, sets = spec.partition(":")
        run = run_dir(args.out, name)
        if run is None:
            cmd = [sys.executable, "-m", "cvlab", "train", args.experiment, "--runs-dir", str(args.out), "--name", name]
            for kv in filter(None, (args.common + "," + sets).split(",")):
                cmd += ["--set", kv]
            print("$", " ".join(cmd[2:]), flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            run = run_dir(args.out, name)
        curve = losses(run)
        metrics = json.loads((run / "metrics.json").read_text())
        scores = "  ".join(f"{k} {100 * v['word_acc']:.1f} / CER {100 * v['cer']:.1f}" for k, v in metrics["datasets"].items())
        below = [first_below(curve, t) for t in THRESHOLDS]
        val = val_curve(run)
        five = next((step for step, v in val if v >= 5), None)
        rows.append((name, *below, curve[-1][1], five, " ".join(f"{v:.1f}" for _, v in val), scores))
    print(f"\n{'variant':<22}" + "".join(f"{'loss<' + str(t):>10}" for t in THRESHOLDS)
          + f"{'final':>8}{'val≥5%':>8}  validation curve | final scores")
    for name, *below, last, five, curve_text, scores in rows:
        print(f"{name:<22}" + "".join(f"{'—' if b is None else b:>10}" for b in below)
              + f"{last:>8.2f}{'—' if five is None else five:>8}  {curve_text} | {scores}")


if __name__ == "__main__":
    main()
