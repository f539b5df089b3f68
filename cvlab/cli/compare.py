"""`cvlab compare-norms`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..errors import CvlabError
from .common import SET_HELP, _tensorboard_cmd, app, err, guarded, out


def _ints(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CvlabError(f"{option} {text}: expected comma-separated integers, e.g. 32,8,2") from None


@app.command(name="compare-norms", epilog="Examples:\n\n"
             "    cvlab compare-norms experiments/compare_norms_quick.yaml --norms batch,group,layer,instance,none "
             "--batch-sizes 32,2 --seeds 1 --jobs 2\n\n"
             "    cvlab compare-norms experiments/quickstart.yaml --norms batch,group --batch-sizes 32,8,2 --seeds 3 "
             "--steps 600 --out runs/compare/qs\n\n"
             "    cvlab compare-norms experiments/quickstart.yaml --norms batch,group --lr-scaling none "
             "--set train.lr=1e-3\n\n"
             "    cvlab compare-norms experiments/quickstart.yaml --norms batch,batch@after_act,lrn "
             "--batch-sizes 32,2\n\n"
             "    cvlab compare-norms experiments/scene_text.yaml --norms batch,group,layer --gpus 0,1,2,3\n\n"
             "    cvlab compare-norms experiments/scene_text.yaml --norms batch,sync_batch,group --seeds 3 "
             "--launcher submitit --submitit slurm_partition=gpu --submitit gpus_per_node=1 "
             "--submitit timeout_min=720 --dry-run\n\n"
             "Rerun the same command (same --out) to resume: finished variants are skipped, a larger --steps "
             "extends them. A variant already in --out that was trained with other settings (another --set, "
             "--lr-scaling, a smaller --steps) is refused (exit 2) before any training: use another --out. A "
             "summary that would lose finished variants keeps the previous one as summary.prev.*.\n\n"
             "Exit status: 0 when at least one variant finished; 1 when every variant failed or diverged; 2 for "
             "bad input, including every variant refused for its settings (e.g. batch norm at batch size 1).")
@guarded
def compare_norms(
    experiment: Path = typer.Argument(..., help="Experiment YAML file."),
    norms: str = typer.Option(..., help="Comma-separated norm names (see `cvlab models list`), each at its "
                              "published position; name@before_act or name@after_act places one explicitly; "
                              "/source, /word, /form, /page or /image composes its groups of b from one source "
                              "(non-i.i.d.); :2 (or :2+8) runs an entry at those batch sizes only."),
    batch_sizes: str = typer.Option(None, help="Comma-separated batch sizes b (default: the experiment's): images "
                                    "per BN statistic (per-device) or per step (per-step)."),
    protocol: str = typer.Option("per-device", metavar="per-device|paper|per-step", help="per-device: b images "
                                 "per BN statistic, every variant the same step batch and steps (norms without "
                                 "batch statistics trained once); paper: --devices devices of b images each, the "
                                 "step on devices·b; per-step: b is the step's batch, smaller b more steps."),
    devices: int = typer.Option(8, min=1, help="--protocol paper: devices per step (the GN paper's 8 GPUs)."),
    seeds: int = typer.Option(1, min=1, help="Seeds per norm and batch size (seed, seed+1, ...)."),
    steps: int = typer.Option(None, min=1, help="Step budget at the largest batch size (default: train.steps); "
                              "smaller batches take proportionally more steps."),
    lr_scaling: str = typer.Option(
        None, help="How train.lr (tuned at the largest batch size) moves to smaller ones: linear (SGD, Goyal et "
        "al.), sqrt (Adam family and adadelta, Malladi et al.: also keeps the betas'/rho's horizon in samples) or "
        "none. Default: by train.optimizer (sgd linear, adamw and adadelta sqrt)."),
    jobs: int = typer.Option(1, min=1, help="Variants trained at a time, each in its own process."),
    smooth_every: int = typer.Option(None, min=1, help="Loss-landscape probe every N steps at the largest batch "
                                     "size, scaled like every interval (default: 10 per run)."),
    launcher: str = typer.Option("local", metavar="local|submitit", help="local (this machine: --jobs or --gpus) or submitit (a Slurm job "
                                 "array, requeued on preemption; submitit's local executor without Slurm)."),
    gpus: str = typer.Option(None, metavar="0,1,2,3", help="Pack variants onto these GPUs of this machine, one "
                             "per GPU at a time."),
    submitit_opt: list[str] = typer.Option([], "--submitit", metavar="KEY=VALUE", help="submitit executor "
                                           "parameter (repeatable), e.g. slurm_partition=gpu, timeout_min=720, "
                                           "gpus_per_node=1, slurm_array_parallelism=16, cluster=local."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --launcher submitit: list the jobs, submit none."),
    out_dir: Path = typer.Option(None, "--out", help="Output folder (default: runs/compare/<experiment name>)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
):
    """Train one experiment under several norms × batch sizes × seeds (same samples seen) and compare them:
    sibling TensorBoard runs, summary.csv/json, report.md and plots in the output folder. Exits 1 when every
    variant failed or diverged, 2 when every one was refused for bad input (the summary is written either way)."""
    from ..compare import compare_norms as compare_fn
    from ..compare import table_rows
    from ..compare.launchers import parse_options
    from ..config import load_config
    from .progress import PlainProgress

    cfg = load_config(experiment, set_)
    names = [n.strip() for n in norms.split(",") if n.strip()]
    sizes = _ints(batch_sizes, "--batch-sizes") if batch_sizes else [cfg.train.batch_size]
    out_dir = out_dir or Path("runs") / "compare" / cfg.name
    err.print(f"output folder: [b]{out_dir}[/b]")
    res = compare_fn(cfg, out_dir, names, sizes, seeds=seeds, steps=steps, lr_scaling=lr_scaling, jobs=jobs,
                     smooth_every=smooth_every, progress=PlainProgress(err, 10**9), launcher=launcher,
                     gpus=_ints(gpus, "--gpus") if gpus else None, submitit=parse_options(submitit_opt),
                     dry_run=dry_run, protocol=protocol, devices=devices)
    if res.get("dry_run"):
        return
    head, body = table_rows(res["table"])
    table = Table(title=f"compare-norms: {cfg.name}")
    for i, h in enumerate(head):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in body:
        table.add_row(*row)
    width = out.width
    out.width = max(width, 180)  # 13 columns: not squeezed into 80 under pipes and test runners
    try:
        out.print(table)
    finally:
        out.width = width
    for r in res["rows"]:
        if r["status"] != "done":
            out.print(f"{r['norm']} bs={r['batch_size']} seed={r['seed']}: {r['status']}: {r['reason']}",
                      markup=False, highlight=False)
    out.print(f"written: {out_dir / 'summary.csv'}, summary.json, report.md, val_acc_vs_step.png, "
              f"acc_vs_batch_size.png, acc_vs_nhw.png", markup=False, highlight=False)
    out.print(f"TensorBoard: {_tensorboard_cmd(out_dir)}")
    failing = [r for r in res["rows"] if r["status"] != "done"]
    if res.get("outcome") == "bad_input":  # exit 2: one line naming what was refused
        raise CvlabError(f"every variant was refused for its settings; the first: {failing[0]['norm']} bs="
                         f"{failing[0]['batch_size']} seed={failing[0]['seed']}: {failing[0]['reason']}")
    if res.get("outcome") == "failed":
        counts = ", ".join(f"{sum(r['status'] == s for r in failing)} {s}"
                           for s in dict.fromkeys(r["status"] for r in failing))
        err.print(f"error: no variant finished ({counts}); the reasons are above and in "
                  f"{out_dir / 'report.md'}", markup=False, highlight=False)
        raise typer.Exit(1)
