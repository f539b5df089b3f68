"""Transfer curve: how well a synthetic recipe teaches reading real text, at fixed sample counts of one run.

Trains the experiment once per seed up to the largest sample count, keeping the checkpoint of each requested
count (`train.keep_checkpoints`: checkpoints/step_<N>.pt; samples = steps × train.batch_size, one process),
then scores each kept checkpoint on the experiment's own validation sets (the first one is the "synth val"
column) and on `--real` (word accuracy under the experiment's eval.protocol, and CER), and prints the table
with the wall time at which training reached each point. The learning-rate schedule is the one of the longest
budget: every point is a point of the same run, not a run trained to that budget.

`--ablate` trains the same budget once more per synthetic stage, with that stage switched off
(`data.train.<i>.<stage>.p=0` on every `type: synth` training set), and prints the final point of each beside
the full recipe's: which stages matter for reading real text.

    .venv/bin/python benchmarks/transfer.py experiments/synth_real.yaml --at 24000,48000,96000,192000,384000 \\
        --real folder:../shared/realval [--set key=value ...] [--out DIR] [--seeds 0[,1,...]]
    .venv/bin/python benchmarks/transfer.py experiments/quickstart.yaml --at 24000 --real folder:DIR \
        --ablate [curve,border]

Resumable: rerun the same command (same --out) after a kill and it continues the unfinished run from its
last.pt and reuses every finished run and evaluation. A run's folder is named after a hash of its resolved
config, so a different --at, --set or seed trains a new run beside the old ones instead of mixing them.
Writes `transfer.csv`/`transfer.json` (and `ablation.csv`/`ablation.json`) into --out.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from cvlab import __version__  # noqa: E402
from cvlab.atomic import write_json  # noqa: E402
from cvlab.config import Experiment, SynthSpec, load_config, parse_data_spec  # noqa: E402
from cvlab.config.synth import STAGES  # noqa: E402
from cvlab.engine.device import cpu_name  # noqa: E402
from cvlab.engine.progress import Progress  # noqa: E402
from cvlab.engine.runs.checkpoint import kept_checkpoint, load_checkpoint  # noqa: E402
from cvlab.errors import CvlabError  # noqa: E402

FULL = "full"


# ------------------------------------------------------------------------------------------------ the machine

def git_commit() -> str:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=ROOT)
            return out.stdout.strip() if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "--short=12", "HEAD")
    if commit is None:
        return "unknown (not a git checkout)"
    return commit + (" (dirty: uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> dict:
    cap = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    return {"cpu": cpu_name(), "cpus": os.cpu_count(), "cpu_capability": cap, "torch": torch.__version__,
            "cvlab": __version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "commit": git_commit()}


# ------------------------------------------------------------------------------------------------ the runs

def parse_counts(text: str) -> list[int]:
    try:
        counts = sorted({int(float(x)) for x in text.split(",") if x.strip()})
    except ValueError:
        raise CvlabError(f"--at {text}: expected sample counts separated by commas (24000,48000)") from None
    if not counts or counts[0] < 1:
        raise CvlabError(f"--at {text}: sample counts must be positive")
    return counts


def synth_train_sets(cfg: Experiment) -> list[int]:
    return [i for i, spec in enumerate(cfg.data.train) if isinstance(spec, SynthSpec)]


def variants(cfg: Experiment, ablate: str | None) -> list[tuple[str, list[str]]]:
    """(label, extra overrides): the full recipe, then with --ablate one stage off at a time."""
    out = [(FULL, [])]
    if ablate is None:
        return out
    synth = synth_train_sets(cfg)
    if not synth:
        raise CvlabError("--ablate: the experiment has no `type: synth` training set whose stages could be "
                         "switched off")
    stages = STAGES if ablate in ("", "all") else tuple(s.strip() for s in ablate.split(",") if s.strip())
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise CvlabError(f"--ablate {ablate}: unknown stage {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    for stage in stages:
        if all(getattr(cfg.data.train[i], stage).p == 0 for i in synth):
            print(f"--ablate: {stage} is already off in the recipe (p=0): no run")
            continue
        out.append((f"no-{stage}", [f"data.train.{i}.{stage}.p=0" for i in synth]))
    return out


def run_config(exp: Path, sets: list[str], extra: list[str], seed: int, steps: list[int]) -> Experiment:
    return load_config(exp, [*sets, *extra, f"seed={seed}", f"train.steps={steps[-1]}",
                             f"train.keep_checkpoints=[{','.join(map(str, steps))}]"])


def config_hash(cfg: Experiment) -> str:
    data = cfg.model_dump(mode="json")
    data.pop("name", None)
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]


class Reporter(Progress):
    """Training's progress, printed sparsely; records the wall time at which each step that matters is reached
    (kept checkpoints, and every last.pt step: where a resumed run's clock continues) in `times_path`."""

    def __init__(self, label: str, cfg: Experiment, times_path: Path, prior: float):
        t = cfg.train
        self.label, self.keep, self.path = label, set(t.keep_checkpoints), times_path
        self.marks = (t.checkpoint_every, t.eval_every)
        self.times = _read(times_path)
        self.prior, self.t0, self.printed = prior, time.time(), 0.0
        self.total = t.steps

    def update(self, step: int, **values: float) -> None:
        now = time.time()
        if step in self.keep or step == self.total or any(step % m == 0 for m in self.marks):
            self.times[str(step)] = round(self.prior + now - self.t0, 2)
            write_json(self.times, self.path)
            if step in self.keep:
                print(f"  [{self.label}] step {step}: kept, {self.times[str(step)]:.0f} s", flush=True)
        if "samples_per_s" in values and now - self.printed >= 30:
            self.printed = now
            print(f"  [{self.label}] step {step}/{self.total} loss {values.get('loss', float('nan')):.3f} "
                  f"{values['samples_per_s']:.0f} samples/s", flush=True)

    def message(self, text: str) -> None:
        print(f"  [{self.label}] {text}", flush=True)


def _read(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
        return obj if isinstance(obj, dict) else {}
    except (OSError, ValueError):
        return {}


def train_to_end(label: str, cfg: Experiment, run_dir: Path) -> str:
    """Train (or resume, or find finished) `run_dir`; returns its status: finished or diverged."""
    from cvlab.engine.train.loop import Diverged, train

    if _read(run_dir / "status.json").get("status") == "diverged":  # deterministic: it would diverge again
        print(f"  [{label}] diverged before: not retrained; the points before it are scored", flush=True)
        return "diverged"
    last = run_dir / "checkpoints" / "last.pt"
    times_path = run_dir / "transfer_times.json"
    prior = 0.0
    if last.is_file():  # the clock continues from the wall time at which last.pt's step was reached
        step = int(load_checkpoint(last).get("step", 0))
        prior = float(_read(times_path).get(str(step), 0.0))
    reporter = Reporter(label, cfg, times_path, prior)
    try:
        train(cfg, run_dir, reporter, resume=True)  # no last.pt: a fresh start (a stale attempt's events dropped)
    except Diverged as e:
        print(f"  [{label}] diverged: {e}; the points before it are scored", flush=True)
        return "diverged"
    return "finished"


# ------------------------------------------------------------------------------------------------ scoring

def score(run_dir: Path, step: int, cfg: Experiment, real: str | None, cache: dict, cache_path: Path) -> dict:
    """The kept checkpoint of `step` on the first val set and on `real`, evaluated once (cached in --out)."""
    from cvlab.engine.eval.evaluate import evaluate_run

    key = f"{run_dir.name}/step_{step}/{real or ''}"
    if key in cache:
        return cache[key]
    path = kept_checkpoint(run_dir / "checkpoints", step)
    res = {"samples": int(load_checkpoint(path).get("samples", step * cfg.train.batch_size))}
    val = list(cfg.data.val[:1])
    specs = [*val, *([parse_data_spec(real)] if real else [])]
    if not specs:
        return res
    out = evaluate_run(run_dir, path.stem, data=specs)
    names = [s["datasets"] for s in out["data"]]
    if val:
        res["synth"] = _summary(out["datasets"][names[0][0]], names[0][0])
    if real:
        res["real"] = _summary(out["datasets"][names[-1][0]], names[-1][0])
    res["eval_dir"] = out.get("dir")
    cache[key] = res
    write_json(cache, cache_path)
    return res


def _summary(r: dict, name: str) -> dict:
    return {"dataset": name, "word_acc": r["word_acc"], "correct": round(r["word_acc"] * r["samples"]),
            "samples": r["samples"], "total": r.get("total", r["samples"]), "cer": r["cer"]}


def point_rows(label: str, seed: int, cfg: Experiment, run_dir: Path, status: str, real: str | None,
               cache: dict, cache_path: Path, only_last: bool = False) -> list[dict]:
    times = _read(run_dir / "transfer_times.json")
    steps = cfg.train.keep_checkpoints[-1:] if only_last else cfg.train.keep_checkpoints
    rows = []
    for step in steps:
        path = kept_checkpoint(run_dir / "checkpoints", step)
        row = {"run": label, "seed": seed, "steps": step, "samples": None, "wall_s": times.get(str(step)),
               "status": status, "run_dir": str(run_dir)}
        if path.is_file():
            res = score(run_dir, step, cfg, real, cache, cache_path)
            row["samples"] = res["samples"]
            for part in ("synth", "real"):
                for k, v in (res.get(part) or {}).items():
                    row[f"{part}_{k}"] = v
        else:
            row["status"] = "not reached"
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ tables

def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


def _n_of(row: dict) -> str:
    return "—" if row.get("real_samples") is None else f"{row['real_correct']}/{row['real_samples']}"


def _wall(s) -> str:
    if s is None:
        return "—"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def print_curve(rows: list[dict], real: str | None) -> None:
    print(f"\n{'samples':>9} {'steps':>7} {'wall':>8} {'synth val':>9} {'synth CER':>9} "
          f"{'real':>7} {'real n/N':>8} {'real CER':>8}  seed")
    for r in rows:
        print(f"{r['samples'] if r['samples'] is not None else '—':>9} {r['steps']:>7} {_wall(r['wall_s']):>8} "
              f"{_pct(r.get('synth_word_acc')):>9} {_pct(r.get('synth_cer')):>9} {_pct(r.get('real_word_acc')):>7} "
              f"{_n_of(r):>8} {_pct(r.get('real_cer')):>8}  {r['seed']}"
              + ("" if r["status"] == "finished" else f"  ({r['status']})"))
    seeds = sorted({r["seed"] for r in rows})
    if len(seeds) > 1:
        print(f"mean over seeds {','.join(map(str, seeds))}:")
        for step in sorted({r["steps"] for r in rows}):
            at = [r for r in rows if r["steps"] == step and r.get("synth_word_acc") is not None]
            real_at = [r["real_word_acc"] for r in at if r.get("real_word_acc") is not None]
            if at:
                print(f"{at[0]['samples']:>9} {step:>7} {'':>8} "
                      f"{_pct(sum(r['synth_word_acc'] for r in at) / len(at)):>9} {'':>9} "
                      f"{_pct(sum(real_at) / len(real_at) if real_at else None):>7}  ({len(at)} seeds)")
    if not real:
        print("(no --real: the real columns are empty)")


def print_ablation(rows: list[dict]) -> None:
    ref = {r["seed"]: r for r in rows if r["run"] == FULL}
    print(f"\n{'run':<14} {'samples':>9} {'synth val':>9} {'Δ synth':>8} {'real':>7} {'real n/N':>8} {'Δ real':>7} "
          f"{'real CER':>8}  seed")
    for r in rows:
        base = ref.get(r["seed"], {})

        def delta(k, base=base, r=r):
            a, b = r.get(k), base.get(k)
            return "—" if a is None or b is None or r["run"] == FULL else f"{100 * (a - b):+.1f}"

        print(f"{r['run']:<14} {r['samples'] if r['samples'] is not None else '—':>9} "
              f"{_pct(r.get('synth_word_acc')):>9} {delta('synth_word_acc'):>8} {_pct(r.get('real_word_acc')):>7} "
              f"{_n_of(r):>8} {delta('real_word_acc'):>7} {_pct(r.get('real_cer')):>8}  {r['seed']}"
              + ("" if r["status"] == "finished" else f"  ({r['status']})"))


def write_table(rows: list[dict], out: Path, name: str, meta: dict) -> None:
    write_json({**meta, "rows": rows}, out / f"{name}.json")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tmp = out / f".{name}.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out / f"{name}.csv")


# ------------------------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment", type=Path, help="EXP.yaml")
    ap.add_argument("--at", default="24000,48000,96000,192000,384000", help="sample counts, comma-separated")
    ap.add_argument("--real", default=None, help="real crops to score, a --data spec (folder:../shared/realval)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, as `cvlab train --set` (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("runs/transfer"), help="runs, evaluations and tables")
    ap.add_argument("--seeds", default=None, help="seeds, comma-separated (default: the experiment's seed)")
    ap.add_argument("--ablate", nargs="?", const="all", default=None, metavar="STAGES",
                    help=f"also one run per synth stage switched off (default every one of {','.join(STAGES)})")
    args = ap.parse_args(argv)
    try:
        return _main(args, argv if argv is not None else sys.argv[1:])
    except CvlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: rerun the same command (--out {args.out}) to continue", file=sys.stderr)
        return 130


def _main(args, argv: list[str]) -> int:
    from cvlab.engine.train.loop import TrainingInterrupted

    counts = parse_counts(args.at)
    base = load_config(args.experiment, args.sets)
    batch = base.train.batch_size
    steps = sorted({math.ceil(c / batch) for c in counts})
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [base.seed]
    if args.real:  # a wrong path fails now, not after hours of training
        from cvlab.data.charset import resolve_charset
        from cvlab.data.loaders import named_datasets
        real_sets = named_datasets([parse_data_spec(args.real)], resolve_charset(base.data.charset), base.data)
        n_real = sum(len(ds) for ds in real_sets.values())

    m = machine()
    print(f"transfer curve — cvlab {m['cvlab']}, commit {m['commit']}")
    print(f"machine: {m['cpu']} ({m['cpus']} logical CPUs, {m['cpu_capability']}), torch {m['torch']}, "
          f"python {m['python']}" + (f", GPU {m['gpu']}" if m["gpu"] else ""))
    runs = variants(base, args.ablate)
    print(f"experiment: {args.experiment}" + (f" --set {' --set '.join(args.sets)}" if args.sets else "")
          + f"; batch {batch}, one process; protocol {base.eval.protocol}")
    print(f"points: {', '.join(f'{s * batch:,} samples (step {s})' for s in steps)}"
          + ("" if all(c % batch == 0 for c in counts) else f" (sample counts rounded up to whole batches of {batch})"))
    print(f"synth val: {base.data.val[0].name or base.data.val[0].type if base.data.val else '— (no data.val)'}; "
          f"real: {f'{args.real} ({n_real} images)' if args.real else '— (no --real)'}")
    print(f"runs: {', '.join(label for label, _ in runs)} × seed {','.join(map(str, seeds))}; out: {args.out}",
          flush=True)

    out = args.out
    cache_path = out / "evaluations.json"
    cache = _read(cache_path)
    curve, ablation = [], []
    for seed in seeds:
        for label, extra in runs:
            cfg = run_config(args.experiment, args.sets, extra, seed, steps)
            run_dir = out / "runs" / f"{label}-seed{seed}-{config_hash(cfg)}"
            print(f"\n[{label}] seed {seed}: {run_dir}", flush=True)
            t0 = time.time()
            try:
                status = train_to_end(label, cfg, run_dir)
            except TrainingInterrupted:
                raise KeyboardInterrupt from None
            print(f"  [{label}] {status} ({time.time() - t0:.0f} s this session); scoring the kept checkpoints",
                  flush=True)
            rows = point_rows(label, seed, cfg, run_dir, status, args.real, cache, cache_path,
                              only_last=label != FULL)
            (curve if label == FULL else ablation).extend(rows)
            if label == FULL and args.ablate is not None:
                ablation.append(rows[-1])

    meta = {"command": [sys.executable, str(Path(__file__).relative_to(ROOT)), *argv], "machine": m,
            "experiment": str(args.experiment), "sets": args.sets, "real": args.real, "seeds": seeds,
            "batch_size": batch, "protocol": base.eval.protocol,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    print_curve(curve, args.real)
    write_table(curve, out, "transfer", meta)
    written = [out / "transfer.csv", out / "transfer.json"]
    if args.ablate is not None:
        ablation.sort(key=lambda r: (r["seed"], r["run"] != FULL))
        print_ablation(ablation)
        write_table(ablation, out, "ablation", meta)
        written += [out / "ablation.csv", out / "ablation.json"]
    print(f"\nwritten: {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
