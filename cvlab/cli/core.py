"""`cvlab train`, `cvlab eval`, `cvlab config show`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import CvlabError, OutputError
from .common import (
    SET_HELP,
    _tensorboard_cmd,
    app,
    backend_options,
    channels_last_option,
    err,
    expand_home,
    fold_bn_option,
    format_option,
    guarded,
    notes_console,
    other_rank,
    out,
    output_format,
    plural,
    print_rows,
    results_rows,
)

config_app = typer.Typer(no_args_is_help=True, help="Inspect experiment files.")
app.add_typer(config_app, name="config")


@app.command(epilog="Examples:\n\n    cvlab train experiments/quickstart.yaml\n\n"
             "    cvlab train experiments/quickstart.yaml --set train.steps=200 --set model.norm.name=group\n\n"
             "    cvlab train --resume runs/quickstart/20261122-101500\n\n"
             "    cvlab train experiments/scene_text.yaml --init-from runs/quickstart\n\n"
             "    torchrun --nproc-per-node 4 -m cvlab train experiments/scene_text.yaml  "
             "(train.batch_size per process; rank 0 writes the run)")
@guarded
def train(
    experiment: Path = typer.Argument(None, metavar="[EXPERIMENT.yaml]", help="Experiment YAML file.",
                                      show_default=False),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help=SET_HELP),
    runs_dir: Path = typer.Option(Path("runs"), metavar="DIR", help="Where run directories are created."),
    name: str = typer.Option(None, metavar="NAME", help="Run name (default: the experiment's `name`)."),
    resume: Path = typer.Option(None, metavar="RUN_DIR",
                                help="Continue a run from its config.yaml and checkpoints/last.pt."),
    init_from: Path = typer.Option(None, "--init-from", metavar="RUN_OR_CKPT",
                                   help="Start a new run from these weights (a run, a folder of runs or a .pt "
                                   "file): weights only, new optimizer and schedule (train.init_from)."),
):
    """Train an experiment; evaluates every `train.eval_every` steps and logs to TensorBoard."""
    from ..config import load_config
    from ..engine.train.start import resume_run, start_run
    from .progress import make_progress

    if other_rank():  # torchrun: rank 0 prints progress and results; the engine keeps the others silent too
        out.quiet = True
    if resume is not None:
        if experiment is not None or init_from is not None:
            raise CvlabError("give either EXPERIMENT [--init-from ...] or --resume RUN_DIR, not both")
        every = load_config(resume / "config.yaml").log.every if (resume / "config.yaml").is_file() else 1
        run_dir = resume
        cfg, metrics = resume_run(resume, set_, make_progress(err, every))
    else:
        if experiment is None:
            raise CvlabError("missing EXPERIMENT (a YAML file), or --resume RUN_DIR")
        cfg = load_config(experiment, set_)
        if init_from is not None:
            cfg.train.init_from = str(init_from)
        run_dir, metrics = start_run(cfg, runs_dir, name=name, progress=make_progress(err, cfg.log.every))
    if metrics.get("datasets"):  # a table on a terminal, tsv into a log file; the lines below on stdout either way
        print_rows(results_rows(f"{cfg.name} — step {metrics['step']} (protocol {cfg.eval.protocol})",
                                metrics["datasets"]), output_format(), notes=out)
    out.print(f"run: {run_dir}", markup=False, highlight=False)
    out.print(f"TensorBoard: {_tensorboard_cmd(run_dir.parent.parent)}", markup=False, highlight=False)


def _protocol_help() -> str:
    from ..engine.eval.protocols import PROTOCOLS

    return "Scoring protocol (default: the run's eval.protocol): " + "; ".join(
        f"**{p.name}**: {p.summary}" for p in PROTOCOLS.values()) + "."


@app.command(name="eval", epilog="Examples:\n\n    cvlab eval runs/quickstart\n\n"
             "    cvlab eval runs/scene_text --protocol dtrb --data lmdb:~/data/evaluation\n\n"
             "    cvlab eval runs/quickstart/20261122-101500 --checkpoint last\n\n"
             "    cvlab eval runs/quickstart --data synth --opt size=2000 --opt seed=7\n\n"
             "    cvlab eval runs/scene_text --data iiit5k:~/data/IIIT5K:test --data svt:~/data/svt1:test\n\n"
             "    cvlab eval runs/iam_lines --data iam:~/data/iam:testset --opt splits_dir=~/data/iam/splits\n\n"
             "    cvlab eval runs/quickstart --backend onnxruntime --check\n\n"
             "    cvlab eval runs/quickstart --backend onnxruntime --int8")
@guarded
def eval_(
    run: Path = typer.Argument(..., help="A run directory, a folder of runs (newest is used) or a .pt file."),
    data: list[str] = typer.Option([], "--data", help="Dataset to score: TYPE[:ROOT[:SPLIT]] (repeatable)."),
    opt: list[str] = typer.Option([], "--opt", help="Type-specific key=value for every --data (repeatable)."),
    protocol: str = typer.Option(None, help=_protocol_help()),
    checkpoint: str = typer.Option("best", help="best, last, or a checkpoint path."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    fold_bn: bool = fold_bn_option(),
    channels_last: bool = channels_last_option(),
    backend: str = backend_options()[0],
    int8: bool = backend_options()[1],
    check: bool = backend_options()[2],
    fmt: str = format_option(),
):
    """Score a trained run on its validation sets (test sets when it has them), or on the datasets given.

    Every evaluation is kept: `RUN/eval/<checkpoint>-step<N>_<protocol>_<datasets>_<decoder>_<digest>/<time>/`
    (the digest: the data's types, resolved roots, splits and options, the decoder) holds eval.json (metrics,
    labels the protocol filtered, error summary, what was scored) and one `<dataset>.predictions.csv` per
    dataset; `RUN/eval/index.jsonl` lists them all. `eval.lexicon` (dataset | words.txt | null) adds
    lexicon-constrained accuracy."""
    from ..config import parse_data_spec
    from ..engine.eval.evaluate import evaluate_run
    from ..engine.eval.metrics import PROTOCOLS
    from .progress import make_progress

    if protocol is not None and protocol not in PROTOCOLS:
        raise CvlabError(f"--protocol {protocol}: unknown (valid: {', '.join(PROTOCOLS)})")
    fmt = output_format(fmt)
    specs = [parse_data_spec(d, opt) for d in data]
    try:
        res = evaluate_run(run, expand_home(checkpoint), data=specs or None, protocol=protocol,
                           overrides=tuple(set_), progress=make_progress(err, 1), fold_bn=fold_bn,
                           channels_last=channels_last, backend=backend, int8=int8, check=check)
    except OutputError as e:  # computed but not saved: show the numbers, then the error (exit 2)
        _print_eval(e.result, fmt)
        raise
    _print_eval(res, fmt)
    notes_console(fmt).print(f"written: {res['dir']} (eval.json, one predictions CSV per dataset)", markup=False,
                             highlight=False)


def _print_eval(res: dict, fmt: str) -> None:
    be = res.get("backend") or {}
    by = f", {be['name']} {be['precision']}" if be.get("name", "torch") != "torch" else ""
    print_rows(results_rows(f"eval — step {res['step']}, {Path(res['checkpoint']).name}{by} "
                            f"(protocol {res['protocol']})", res["datasets"], res["combined"]), fmt)
    for line in _eval_notes(res):
        notes_console(fmt).print(line, markup=False, highlight=False)


def _eval_notes(res: dict) -> list[str]:
    """Lexicon-constrained accuracy, and every sample the numbers above treat specially."""
    from ..engine.backend import check_lines
    from ..engine.eval.analysis import summary_lines

    lines = check_lines(res)
    for name, r in res["datasets"].items():
        for lex, v in r.get("lexicon", {}).items():
            lines.append(f"{name}: lexicon-{lex} word acc {100 * v['word_acc']:.2f}% ({plural(v['samples'], 'sample')})")
        for why, n in r.get("filtered", {}).items():
            lines.append(f"{name}: {n} of {r['total']} labels not scored under protocol {res['protocol']}: {why}")
        if r.get("empty_labels"):
            are = "label is" if r["empty_labels"] == 1 else "labels are"
            lines.append(f"{name}: {r['empty_labels']} {are} empty under protocol {res['protocol']} "
                         "(still scored: only an empty prediction matches)")
        if r.get("unreadable"):
            ex = "; ".join(r.get("unreadable_examples", []))
            were = "sample with an unreadable image was" if r["unreadable"] == 1 else \
                "samples with unreadable images were"
            lines.append(f"{name}: {r['unreadable']} {were} not scored (e.g. {ex})")
    for name, r in res["datasets"].items():
        if not r["samples"]:  # nothing scored: no rates (`—` above) and no "no errors" either
            lines.append(f"{name}: no sample was scored")
        elif "errors" in r:
            lines += summary_lines(name, r["errors"])
    return lines


@config_app.command("show", epilog="Example:\n\n    cvlab config show experiments/quickstart.yaml --set train.lr=3e-4")
@guarded
def config_show(
    experiment: Path = typer.Argument(..., help="Experiment YAML file."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
):
    """Print the fully resolved config (defaults filled, overrides applied)."""
    from ..config import dump_config, load_config

    out.print(dump_config(load_config(experiment, set_)), markup=False, highlight=False)


