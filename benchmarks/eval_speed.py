"""Where the time of a whole `cvlab eval` / `cvlab predict` goes, on this machine: images/s of each stage and of
the whole process, for the standard CRNN (experiments/crnn_standard.yaml) and the quickstart model.

    .venv/bin/python benchmarks/eval_speed.py [--n 2000] [--batch-size 64] [--threads N]
        [--models crnn_standard,quickstart] [--modes default,no-fold,no-grad,onnxruntime,int8]
        [--whole-modes default,no-fold,onnxruntime,int8]
        [--repeat 3] [--keep DIR] [--quick]

It writes its own data: an LMDB of N synthetic words (crnn_standard's `data.val`, rendered by `cvlab data render`'s
code), and one run per model with untrained weights (speed does not depend on them). Then, per model:

- start-up: subprocesses timed whole (median of --repeat): the interpreter, `import torch`, `cvlab --version`,
  `import cvlab.cli`, and the imports of the eval path, with the slowest packages on it (`-X importtime`);
- data: the eval loader alone (LMDB read, PNG decode, grey, resize, batch), and predict's reader alone;
- forward: the model alone on the batches already in memory (one warm-up batch first, untimed);
- decoding: greedy decoding and ids -> text; metrics: the protocol's scoring of every sample; writing: the
  predictions CSV; the eval loop: `engine.eval.evaluate` as `cvlab eval` runs it (data overlaps the forward pass
  when data.workers > 0);
- the whole process: `cvlab eval RUN --data lmdb:DIR` and `cvlab predict RUN DIR --out x.csv` timed as
  subprocesses, start-up included.

Modes, side by side (join several with `+`, e.g. `no-fold+workers=1`):
  default        what `cvlab eval` does: torch.inference_mode, batch norm folded when the model runs in float32
                 (not under bf16/fp16 autocast), channels_last on the CPU in float32 (or where the run trained
                 so), the run's own data.workers
  no-fold        `--no-fold-bn`: the model layer for layer as trained; fold: `--fold-bn`, folded even under autocast
  no-grad        torch.no_grad instead of inference_mode (in-process only: the CLI has no switch for it)
  channels-last  `--channels-last`; contiguous: `--no-channels-last` (the default: channels_last on the CPU in fp32)
  workers=N      `--set data.workers=N`: eval loader worker processes, predict reads ahead in a thread
  onnxruntime    `--backend onnxruntime`: the run's ONNX export (written first) run by onnxruntime, fp32, with
                 torch's thread count
  int8           `--backend onnxruntime --int8`: the int8 model of `cvlab export --quantize int8` (written first,
                 static QDQ calibrated on the benchmark's LMDB)
Every mode's predictions are compared with the default's: how many differ, and the largest logit difference.
The onnxruntime modes are left out, with a note, where onnxruntime is not installed (the export extra).

`--threads N` sets torch's threads here and OMP_NUM_THREADS/MKL_NUM_THREADS for the subprocesses (onnxruntime
follows torch's count). `--quick`: 64 images, batch 32, modes default, no-fold, onnxruntime and int8, the whole
process in the default mode only, one repeat (a smoke run).
Figures go to stdout; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from cvlab import __version__  # noqa: E402
from cvlab.config import dump_config, load_config, parse_data_spec  # noqa: E402
from cvlab.data.charset import resolve_charset  # noqa: E402
from cvlab.data.loaders import eval_loader, named_datasets, sample_id  # noqa: E402
from cvlab.data.render import experiment_targets, render_lmdb  # noqa: E402
from cvlab.data.tokenizer import tokenizer_for  # noqa: E402
from cvlab.engine.backend import load_backend  # noqa: E402
from cvlab.engine.device import cpu_name, resolve_amp  # noqa: E402
from cvlab.engine.eval.analysis import error_summary  # noqa: E402
from cvlab.engine.eval.evaluate import evaluate  # noqa: E402
from cvlab.engine.eval.metrics import MetricAccumulator  # noqa: E402
from cvlab.engine.eval.records import write_predictions  # noqa: E402
from cvlab.engine.predict import collect, read_batches  # noqa: E402
from cvlab.engine.runs.checkpoint import save_checkpoint  # noqa: E402
from cvlab.engine.runs.load import load_run  # noqa: E402
from cvlab.models import build_model  # noqa: E402
from cvlab.models.fold import foldable_pairs  # noqa: E402
from cvlab.models.summary import summarize  # noqa: E402

STAGES = ("data (eval loader)", "data (predict reader)", "forward", "decoding", "metrics", "writing (CSV)",
          "eval loop (evaluate)")
EVAL_PATH = "import cvlab.cli, cvlab.engine.eval.evaluate, cvlab.engine.runs.load, cvlab.engine.predict, cvlab.models"


# ------------------------------------------------------------------------------------------------ the machine

def header(args) -> None:
    cap = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")()
    print(f"eval speed — cvlab {__version__}, torch {torch.__version__}, python {platform.python_version()}")
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical CPUs, {cap}); torch threads: {torch.get_num_threads()}"
          + (f" (--threads {args.threads}; subprocesses: OMP_NUM_THREADS={args.threads})" if args.threads else
             " (torch's default; subprocesses the same)"))
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    print(f"{args.n} images, batch {args.batch_size}; images/s (higher is better), seconds in brackets")


def child_env(args) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    return env


def cvlab_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "cvlab"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "cvlab"]


def timed_run(cmd: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - t0, done


def median_run(cmd: list[str], env: dict, repeat: int) -> float | str:
    times = []
    for _ in range(repeat):
        t, done = timed_run(cmd, env)
        if done.returncode:
            return f"failed (exit {done.returncode}): {(done.stderr.strip().splitlines() or [''])[-1]}"
        times.append(t)
    return statistics.median(times)


# --------------------------------------------------------------------------------------------------- start-up

def slowest_imports(env: dict, top: int = 8) -> tuple[list[tuple[str, float]], float]:
    """The eval path's packages by import time (`python -X importtime`, each package's first import, what it
    imports included), and the time spent in cvlab's own modules alone."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", EVAL_PATH], env=env, capture_output=True,
                          text=True, cwd=ROOT)
    packages, own = {}, 0.0
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| \s*(\S+)", line)
        if not m:
            continue
        name = m.group(3)
        if name == "cvlab" or name.startswith("cvlab."):
            own += int(m.group(1)) / 1e6
        elif "." not in name and not name.startswith("_"):
            packages[name] = int(m.group(2)) / 1e6
    return sorted(packages.items(), key=lambda kv: -kv[1])[:top], own


def startup(args) -> float | None:
    """Prints the start-up figures; returns the seconds the eval path's imports take (None: failed)."""
    env = child_env(args)
    print(f"\nstart-up (each a fresh subprocess, median of {args.repeat})")
    rows = [("python -c pass", [sys.executable, "-c", "pass"]),
            ("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
            ("cvlab --version", [*cvlab_cmd(), "--version"]),
            ("python -c 'import cvlab.cli'", [sys.executable, "-c", "import cvlab.cli"]),
            ("imports of the eval path", [sys.executable, "-c", EVAL_PATH])]
    times = {}
    for label, cmd in rows:
        t = times[label] = median_run(cmd, env, args.repeat)
        print(f"  {label:<32} {t:8.2f} s" if isinstance(t, float) else f"  {label:<32} {t}")
    slow, own = slowest_imports(env)
    print("  packages on the eval path: " + ", ".join(f"{name} {s:.2f} s" for name, s in slow)
          + f"; cvlab's own modules {own:.2f} s")
    t = times["imports of the eval path"]
    return t if isinstance(t, float) else None


# ------------------------------------------------------------------------------------------------- the data

def write_lmdb(work: Path, n: int) -> Path:
    cfg = load_config(ROOT / "experiments" / "crnn_standard.yaml")
    (target,), _ = experiment_targets(cfg, "val", n)
    out = work / "lmdb"
    t0 = time.perf_counter()
    render_lmdb(target, out, jobs=max(1, os.cpu_count() or 1))
    size = (out / "data.mdb").stat().st_size
    print(f"data: {n} images rendered into {out} by cvlab data render's code (crnn_standard's {target.key}, "
          f"seed {target.spec.seed}) in {time.perf_counter() - t0:.1f} s, data.mdb {size / 2**20:.1f} MiB")
    return out


def write_run(work: Path, name: str) -> Path:
    """A run directory as `cvlab train` leaves one (config.yaml, checkpoints/best.pt), untrained weights."""
    cfg = load_config(ROOT / "experiments" / f"{name}.yaml")
    tok = tokenizer_for(cfg)
    torch.manual_seed(0)
    model = build_model(cfg.model, tok.num_classes, cfg.data.image.channels).model
    run = work / "runs" / name / "bench"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(dump_config(cfg) + "\n", encoding="utf-8")
    save_checkpoint({"model": model.state_dict(), "step": 0, "charset": tok.charset,
                     "config": cfg.model_dump(mode="json")}, run / "checkpoints" / "best.pt")
    return run


# ------------------------------------------------------------------------------------------------------ modes

def parse_mode(text: str) -> dict:
    """`no-fold+workers=1` -> {fold, inference, backend, int8, overrides (--set), flags (CLI)}."""
    mode = {"name": text, "fold": None, "channels_last": None, "inference": True, "overrides": [], "flags": [],
            "cli": True, "backend": "torch", "int8": False}
    for part in filter(None, text.split("+")):
        if part == "default":
            continue
        if part in ("fold", "no-fold"):
            mode["fold"] = part == "fold"
            mode["flags"].append(f"--{part}-bn")
        elif part == "no-grad":
            mode["inference"], mode["cli"] = False, False
        elif part in ("channels-last", "contiguous"):
            mode["channels_last"] = part == "channels-last"
            mode["flags"].append("--channels-last" if part == "channels-last" else "--no-channels-last")
        elif part in ("onnxruntime", "int8"):
            if mode["backend"] != "onnxruntime":
                mode["backend"] = "onnxruntime"
                mode["flags"] += ["--backend", "onnxruntime"]
            if part == "int8":
                mode["int8"] = True
                mode["flags"].append("--int8")
        elif part.startswith("workers="):
            mode["overrides"].append(f"data.workers={int(part.split('=', 1)[1])}")
        else:
            raise SystemExit(f"--modes: unknown mode {part!r} (default, fold, no-fold, no-grad, channels-last, "
                             "contiguous, workers=N, onnxruntime, int8)")
    for o in mode["overrides"]:
        mode["flags"] += ["--set", o]
    return mode


def grad_mode(mode: dict):
    return torch.inference_mode() if mode["inference"] else torch.no_grad()


# --------------------------------------------------------------------------------------------------- stages

def stages(run: Path, lmdb: Path, mode: dict, *, args, work: Path) -> tuple[dict, list, torch.Tensor]:
    """{stage: seconds}, the predictions and the logits of one model in one mode."""
    loaded = load_run(run, overrides=tuple(mode["overrides"]))
    cfg, tok = loaded.cfg, loaded.tokenizer
    be = load_backend(loaded, mode["backend"], int8=mode["int8"], fold_bn=mode["fold"],
                      channels_last=mode["channels_last"])
    model, folded, device, forward = be.model, be.folded, be.device, be.forward
    (ds,) = named_datasets([parse_data_spec(f"lmdb:{lmdb}")], resolve_charset(cfg.data.charset), cfg.data).values()
    out: dict[str, float] = {"folded": folded}
    next(iter(eval_loader(ds, args.batch_size, workers=0)))  # warm-up, untimed: the decoders' first use

    loader = eval_loader(ds, args.batch_size, workers=cfg.data.workers)
    t0 = time.perf_counter()
    batches = list(loader)  # read, decode, grey, resize, batch
    out["data (eval loader)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sources = collect([str(lmdb)])  # the LMDB's keys and labels, as `cvlab predict DIR` finds them
    chunks = [sources[i:i + args.batch_size] for i in range(0, len(sources), args.batch_size)]
    for _ in read_batches(chunks, cfg.data.image, overlap=cfg.data.workers > 0):
        pass
    out["data (predict reader)"] = time.perf_counter() - t0

    with grad_mode(mode):
        for _ in range(2):  # warm-up: oneDNN's primitives, allocator pools (the first mode would pay them)
            forward(batches[0][0])
        t0 = time.perf_counter()
        logits = [forward(images) for images, _ in batches]
        if device.type == "cuda":
            torch.cuda.synchronize()
        out["forward"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        decoded = [model.decode(lg) for lg in logits]
        preds = [[tok.decode(i) for i in ids] for ids, _ in decoded]
        out["decoding"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    acc = MetricAccumulator(cfg.eval.protocol, keep_rows=True)
    for (_, labels), p, (_, confs) in zip(batches, preds, decoded, strict=True):
        first = len(acc.rows)
        acc.update(p, labels, confidences=confs)
        for row, i in zip(acc.rows[first:], getattr(labels, "indices", None) or [None] * len(p), strict=True):
            row["id"], row["index"] = sample_id(loader.dataset.ds, i) if i is not None else "", i
    acc.result()
    error_summary(acc.rows)
    out["metrics"] = time.perf_counter() - t0

    folder = work / "written"
    folder.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    write_predictions(folder, "lmdb", acc.rows)
    out["writing (CSV)"] = time.perf_counter() - t0

    rows: list = []
    loader = eval_loader(ds, args.batch_size, workers=cfg.data.workers)  # fresh workers, as cvlab eval starts them
    t0 = time.perf_counter()
    with grad_mode(mode):
        evaluate(model, loader, tokenizer=tok, protocol=cfg.eval.protocol, device=device, rows=rows,
                 forward=forward)
    out["eval loop (evaluate)"] = time.perf_counter() - t0
    return out, [p for b in preds for p in b], torch.cat([lg.float().cpu() for lg in logits])


def describe(run: Path) -> str:
    loaded = load_run(run)
    m, cfg = loaded.model, loaded.cfg
    c = cfg.data.image
    macs = summarize(m, (c.channels, c.height, c.width)).macs
    params = sum(p.numel() for p in m.parameters())
    b = cfg.model.backbone
    amp = resolve_amp(loaded.device, cfg.train.amp)[0]
    return (f"{' '.join(str(x) for x in (b.name, b.depth, b.size) if x)}, {cfg.model.sequence.name}, {cfg.model.head.name}; {params:,} "
            f"parameters, {2 * macs / 1e9:.2f} GFLOP/image; {len(foldable_pairs(m))} batch norms can fold; "
            f"channels_last {cfg.train.channels_last}, data.workers {cfg.data.workers}, amp {amp}")


def cell(n: int, seconds: float) -> str:
    return f"{n / seconds:9.1f} ({seconds:.2f})" if seconds > 0 else "        —"


def onnx_files(run: Path, lmdb: Path, modes: list[dict], args) -> None:
    """The run's ONNX export and, for an int8 mode, its int8 model (calibrated on the benchmark's LMDB), written
    before anything is timed."""
    if not any(m["backend"] == "onnxruntime" for m in modes):
        return
    from cvlab.engine.export import ensure_onnx
    from cvlab.engine.quantize import quantize_run

    t0 = time.perf_counter()
    ensure_onnx(load_run(run))
    note = f"  ONNX export written in {time.perf_counter() - t0:.1f} s"
    if any(m["int8"] for m in modes):
        t0 = time.perf_counter()
        q = quantize_run(run, calibration=[parse_data_spec(f"lmdb:{lmdb}")], n=min(256, args.n))
        c = q["checked_on"]
        note += (f"; int8 ({q['method']}, {q['calibration_images']} images calibrated) in "
                 f"{time.perf_counter() - t0:.1f} s: word acc fp32 {100 * c['fp32_word_acc']:.2f} %, int8 "
                 f"{100 * c['int8_word_acc']:.2f} %, {c['changed_predictions']} of {c['images']} predictions changed")
    print(note)


def available(modes: list[dict]) -> list[dict]:
    """The modes this machine can run: the onnxruntime ones need the export extra."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        left = [m["name"] for m in modes if m["backend"] == "onnxruntime"]
        if left:
            print(f"modes {', '.join(left)} left out: onnxruntime is not installed (pip install 'cvlab[export]')")
        return [m for m in modes if m["backend"] != "onnxruntime"]
    return modes


def bench_model(name: str, lmdb: Path, *, modes: list[dict], whole: list[dict], args, work: Path,
                startup_s: float | None) -> None:
    run = write_run(work, name)
    print(f"\n{name}: {describe(run)}")
    onnx_files(run, lmdb, modes + whole, args)
    results, preds, logits = {}, {}, {}
    for mode in modes:
        results[mode["name"]], preds[mode["name"]], logits[mode["name"]] = stages(run, lmdb, mode, args=args, work=work)
    names = [m["name"] for m in modes]
    width = max(22, *(len(n) + 10 for n in names))
    print(f"  {'stage':<24}" + "".join(f"{n:>{width}}" for n in names))
    for stage in STAGES:
        print(f"  {stage:<24}" + "".join(f"{cell(args.n, results[n][stage]):>{width}}" for n in names))
    total = {n: sum(results[n][s] for s in STAGES if s not in ("data (predict reader)", "eval loop (evaluate)"))
             for n in names}
    print(f"  {'sum of eval stages':<24}" + "".join(f"{cell(args.n, total[n]):>{width}}" for n in names))
    base = names[0]
    differ = [sum(a != b for a, b in zip(preds[n], preds[base], strict=True)) for n in names]
    print(f"  {'batch norms folded':<24}" + "".join(f"{results[n]['folded']:>{width}}" for n in names))
    print(f"  {'predictions ≠ ' + base:<24}" + "".join(f"{f'{d} of {args.n}':>{width}}" for d in differ))
    scale = logits[base].abs().max().clamp_min(1e-12)
    delta = [float((logits[n] - logits[base]).abs().max() / scale) for n in names]
    print(f"  {'max |Δlogit| / max|logit|':<24}" + "".join(f"{d:>{width}.1e}" for d in delta))

    env = child_env(args)
    after = "" if startup_s is None else f"; after start-up: the time less the eval path's imports, {startup_s:.2f} s"
    print(f"  whole process (a subprocess, start-up included; median of {args.repeat}{after}):")
    for mode in whole:
        if not mode["cli"]:
            print(f"    {mode['name']}: in-process only (no CLI switch)")
            continue
        for label, cmd in (
                ("cvlab eval", [*cvlab_cmd(), "eval", str(run), "--data", f"lmdb:{lmdb}", "--format", "tsv",
                                *mode["flags"]]),
                ("cvlab predict", [*cvlab_cmd(), "predict", str(run), str(lmdb), "--out", str(work / "pred.csv"),
                                   "--batch-size", str(args.batch_size), *mode["flags"]])):
            t = median_run(cmd, env, args.repeat)
            shown = cell(args.n, t).strip() + " images/s" if isinstance(t, float) else t
            if isinstance(t, float) and startup_s is not None and t > startup_s:
                shown += f"; after start-up {args.n / (t - startup_s):.1f} images/s"
            print(f"    {label + ' [' + mode['name'] + ']':<40} {shown}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="images in the LMDB")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--models", default="crnn_standard,quickstart", help="experiments/<name>.yaml, comma-separated")
    p.add_argument("--modes", default=None, help="in-process modes, side by side (default: default,no-fold,no-grad,"
                   "onnxruntime,int8; --quick: default,no-fold,onnxruntime,int8)")
    p.add_argument("--whole-modes", default=None, help="modes of the whole-process runs (default: default,no-fold,"
                   "onnxruntime,int8; --quick: default)")
    p.add_argument("--repeat", type=int, default=3, help="subprocess runs per figure (the median)")
    p.add_argument("--keep", type=Path, default=None, help="write the LMDB and runs here and keep them")
    p.add_argument("--quick", action="store_true", help="a smoke run: 64 images, batch 32, one repeat")
    args = p.parse_args()
    if args.quick:
        args.n, args.batch_size, args.repeat = min(args.n, 64), min(args.batch_size, 32), 1
    args.modes = args.modes or ("default,no-fold,onnxruntime,int8" if args.quick else
                                "default,no-fold,no-grad,onnxruntime,int8")
    args.whole_modes = args.whole_modes or ("default" if args.quick else "default,no-fold,onnxruntime,int8")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [m for m in args.modes.split(",") if m]
    modes = available([parse_mode(m) for m in (names if names[:1] == ["default"] else ["default", *names])])
    whole = available([parse_mode(m) for m in args.whole_modes.split(",") if m])
    header(args)
    work = args.keep or Path(tempfile.mkdtemp(prefix="cvlab-eval-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        lmdb = write_lmdb(work, args.n)  # with --keep, a complete one is reused
        startup_s = startup(args)
        for name in args.models.split(","):
            bench_model(name, lmdb, modes=modes, whole=whole, args=args, work=work, startup_s=startup_s)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
