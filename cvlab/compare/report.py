"""compare-norms outputs: per-variant rows read back from the runs, the mean ± std table, summary.csv/json,
the plots and report.md."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from .grid import Variant, baseline_name, is_baseline
from .probes import UPDATE_MULTIPLES
from .stats import MIN_SEEDS, mean_std, significance, t_interval

if TYPE_CHECKING:
    from ..config import Experiment

COLUMNS = ("norm", "batch_size", "seed", "status", "reason", "steps", "lr", "lr_scaling", "word_acc", "cer",
           "train_loss", "train_eval_gap", "samples_per_s", "peak_mem_mb", "steps_to_half_best", "nhw_min",
           "values_per_stat_min", "bn_gap_max", "bn_mean_err_max", "bn_var_err_max", "clipped_share",
           "grad_norm_first", "grad_norm_last", "loss_variation", "grad_change", "beta_smoothness",
           "update_loss_variation", "update_grad_change", "update_beta_smoothness", "run_dir")
SCALARS = (("grad_norm_first", "grad/first_layer_norm"), ("grad_norm_last", "grad/last_layer_norm"),
           ("clipped_share", "grad/clipped_share"), ("nhw_min", "norm/nhw_min"),
           ("values_per_stat_min", "norm/values_per_statistic_min"),
           *((c, f"smoothness/{c}") for c in ("loss_variation", "grad_change", "beta_smoothness",
                                              "update_loss_variation", "update_grad_change",
                                              "update_beta_smoothness")))
MEANS = ("word_acc", "cer", "train_loss", "train_eval_gap", "samples_per_s", "peak_mem_mb", "steps_to_half_best",
         "nhw_min", "values_per_stat_min", "bn_gap_max", "bn_mean_err_max", "bn_var_err_max", "clipped_share",
         "loss_variation", "beta_smoothness", "update_loss_variation", "update_beta_smoothness",
         "grad_norm_first", "grad_norm_last")


# --------------------------------------------------------------------------------------------- summary

def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 1, "histograms": 1, "tensors": 0})
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def _mean(xs) -> float:
    return mean_std(xs)[0]


def collect(variants: list[Variant], out_dir: Path) -> tuple[list[dict], dict]:
    """One row per variant from its variant.json, metrics.json and event files; val accuracy curves."""
    rows, curves = [], {}
    for v in variants:
        d = out_dir / v.name
        rec = json.loads((d / "variant.json").read_text()) if (d / "variant.json").is_file() else \
            {"status": "failed", "reason": "not run"}
        row = dict.fromkeys(COLUMNS)
        row.update(name=v.name, norm=v.norm, batch_size=v.batch_size, seed=v.seed, status=rec["status"],
                   reason=rec.get("reason", ""), steps=v.cfg.train.steps, lr=v.cfg.train.lr,
                   lr_scaling=v.lr_scaling, run_dir=str(d), train_eval_gap=rec.get("train_eval_gap"),
                   peak_mem_mb=rec.get("peak_mem_mb"))
        layers = rec.get("bn_layers") or {}
        row["bn_layers"] = layers  # per BN layer (report.md's table; summary.json, not the csv)
        for col, key in (("bn_gap_max", "gap"), ("bn_mean_err_max", "mean_err"), ("bn_var_err_max", "var_err")):
            vals = [x[key] for x in layers.values() if x.get(key) is not None]
            row[col] = max(vals) if vals else None
        scalars = read_scalars(d) if d.is_dir() and any(d.glob("events.out.tfevents.*")) else {}
        metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else {}
        first = next(iter(metrics.get("datasets", {}).items()), None)
        if first and rec["status"] == "done":
            row.update(word_acc=first[1]["word_acc"], cer=first[1]["cer"])
        if scalars:
            loss = scalars.get("train/loss", [])
            row["train_loss"] = loss[-1][1] if loss else None
            row["samples_per_s"] = _mean(v for _, v in scalars.get("train/samples_per_s", [])[1:]
                                         or scalars.get("train/samples_per_s", []))
            for col, tag in SCALARS:
                row[col] = _mean(x for _, x in scalars.get(tag, []))
            acc = [k for k in scalars if k.startswith("val/") and k.endswith("/word_acc")]
            if acc:
                first_tag = f"val/{first[0]}/word_acc" if first else sorted(acc)[0]
                curves[v.name] = scalars.get(first_tag, [])
        rows.append(row)
    # norms without layers (none, weight) have no slot sizes of their own: N·H·W is the architecture's at that
    # batch size, so they take it from a variant that measured it
    by_bs = {r["batch_size"]: r["nhw_min"] for r in rows if r["nhw_min"] is not None and math.isfinite(r["nhw_min"])}
    for r in rows:
        if r["nhw_min"] is None or not math.isfinite(r["nhw_min"]):
            r["nhw_min"] = by_bs.get(r["batch_size"])
    best = max((a for c in curves.values() for _, a in c), default=0.0)
    for row in rows:
        curve = curves.get(row["name"], [])
        hit = [s for s, a in curve if best > 0 and a >= 0.5 * best]
        row["steps_to_half_best"] = hit[0] if hit else None
    return rows, curves


def aggregate(rows: list[dict]) -> list[dict]:
    """Per norm and batch size: mean ± std over seeds of the done variants; Δ word accuracy vs `batch`."""
    keys = list(dict.fromkeys((r["norm"], r["batch_size"]) for r in rows))
    table = []
    for norm, bs in keys:
        group = [r for r in rows if (r["norm"], r["batch_size"]) == (norm, bs)]
        done = [r for r in group if r["status"] == "done"]
        entry = {"norm": norm, "batch_size": bs, "runs": len(group), "done": len(done),
                 "status": ",".join(sorted({r["status"] for r in group}))}
        for col in MEANS:
            entry[col], entry[col + "_std"] = mean_std(r[col] for r in (done if col != "train_loss" else group))
        for col in ("word_acc", "cer"):
            entry[col + "_ci"] = t_interval(r[col] for r in done) if len(done) >= MIN_SEEDS else (float("nan"),) * 2
        entry["lr"], entry["lr_scaling"] = group[0]["lr"], group[0]["lr_scaling"]
        table.append(entry)
    for e in table:
        ref = next((x for x in table if is_baseline(x["norm"]) and x["batch_size"] == e["batch_size"]), None)
        e["delta_vs_batch"] = e["word_acc"] - ref["word_acc"] if ref else float("nan")
    return table


def _pm(m: float, s: float, scale: float = 100.0, digits: int = 2) -> str:
    if not math.isfinite(m):
        return "—"
    return f"{m * scale:.{digits}f}±{s * scale:.{digits}f}"


def table_rows(table: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The aggregated table as text cells (shared by report.md and the CLI's rich table)."""
    head = ["norm", "batch", "lr (rule)", "N·H·W", "word acc %", "CER %", "train loss", f"Δ vs {baseline_name()}",
            "train−eval gap", "samples/s", "peak MB", "steps to 50% best", "status"]
    body = []
    for e in table:
        d = e["delta_vs_batch"]
        nhw = e["nhw_min"]
        body.append([e["norm"], str(e["batch_size"]), f"{e['lr']:.3g} ({e['lr_scaling']})",
                     f"{nhw:.0f}" if math.isfinite(nhw) else "—", _pm(e["word_acc"], e["word_acc_std"]),
                     _pm(e["cer"], e["cer_std"]), _pm(e["train_loss"], e["train_loss_std"], 1, 3),
                     f"{100 * d:+.2f}" if math.isfinite(d) else "—",
                     f"{100 * e['train_eval_gap']:+.2f}" if math.isfinite(e["train_eval_gap"]) else "—",
                     f"{e['samples_per_s']:.0f}" if math.isfinite(e["samples_per_s"]) else "—",
                     f"{e['peak_mem_mb']:.0f}" if math.isfinite(e["peak_mem_mb"]) else "—",
                     f"{e['steps_to_half_best']:.0f}" if math.isfinite(e["steps_to_half_best"]) else "—",
                     "done" if e["done"] == e["runs"] else e["status"]])
    return head, body


def _plots(out_dir: Path, rows: list[dict], curves: dict, table: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norms = list(dict.fromkeys(r["norm"] for r in rows))
    sizes = sorted({r["batch_size"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 3.8), squeeze=False, sharey=True)
    for ax, bs in zip(axes[0], sizes, strict=True):
        for i, norm in enumerate(norms):
            for j, r in enumerate(x for x in rows if x["norm"] == norm and x["batch_size"] == bs):
                c = curves.get(r["name"])
                if c:
                    ax.plot([s for s, _ in c], [100 * a for _, a in c], color=f"C{i}", marker=".",
                            label=norm if j == 0 else None)
        ax.set_title(f"batch size {bs}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("val word accuracy %")
    handles = {lab: h for ax in axes[0] for h, lab in zip(*ax.get_legend_handles_labels(), strict=True)}
    if handles:
        axes[0][-1].legend(handles.values(), handles.keys(), fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "val_acc_vs_step.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.8))
    for i, norm in enumerate(norms):
        pts = sorted((e["batch_size"], e["word_acc"], e["word_acc_std"]) for e in table
                     if e["norm"] == norm and math.isfinite(e["word_acc"]))
        if pts:
            ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts],
                        color=f"C{i}", marker="o", capsize=3, label=norm)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("final val word accuracy %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "acc_vs_batch_size.png", dpi=110)
    plt.close(fig)

    # the mechanism: accuracy and CER against the values behind each BN statistic at the run's batch size
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), squeeze=False)
    for ax, col, label in ((axes[0][0], "word_acc", "final val word accuracy %"), (axes[0][1], "cer", "final val CER %")):
        for i, norm in enumerate(norms):
            pts = sorted((e["nhw_min"], e[col], e[col + "_std"]) for e in table
                         if e["norm"] == norm and math.isfinite(e[col]) and math.isfinite(e["nhw_min"]))
            if pts:
                ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts],
                            color=f"C{i}", marker="o", capsize=3, label=norm)
        ax.set_xscale("log")
        ax.set_xlabel("N·H·W per BN statistic, smallest normalized layer")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "acc_vs_nhw.png", dpi=110)
    plt.close(fig)
    return ["val_acc_vs_step.png", "acc_vs_batch_size.png", "acc_vs_nhw.png"]


def _clean(v):
    """JSON-safe: non-finite floats become null, at any depth."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def _g(x, fmt: str = ".4g") -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and math.isfinite(x) else "—"


def protocol(base: Experiment, variants: list[Variant]) -> list[str]:
    """report.md's statement of what was held equal and how each batch size's settings were derived."""
    from ..engine.train.optim import DEFAULT_LR_SCALING

    t = base.train
    biggest = max(v.batch_size for v in variants)
    rules = sorted({v.lr_scaling for v in variants})
    lines = ["## Protocol", "",
             f"- **Same samples seen.** `train.steps` ({variants[0].cfg.train.steps * variants[0].batch_size // biggest} "
             f"at batch {biggest}) and every step-counted setting are set for the largest batch size; a batch k times "
             "smaller takes k× the steps, warm-up, eval, checkpoint and log intervals, the probe interval and batch "
             "renorm's relaxation, so every variant follows the same schedule in samples.",
             f"- **Learning rate: {', '.join(rules)} scaling** from `train.lr` = {t.lr:g} at batch {biggest} "
             f"(optimizer {t.optimizer}; its default is {DEFAULT_LR_SCALING[t.optimizer]}). linear: lr × b/{biggest} "
             "(Goyal et al. 2017, the GN paper's SGD protocol). sqrt: lr × √(b/" + str(biggest) + "), and each "
             "moving average's horizon kept in samples, 1 − β → (b/" + str(biggest) + ")·(1 − β) for Adam's betas "
             "and Adadelta's rho (Malladi et al. 2022). Adadelta takes sqrt because its update is the gradient "
             "divided by a running RMS of gradients, the RMSprop-type step the square-root rule is derived for.",
             f"- **grad_clip** ({t.grad_clip if t.grad_clip else 'off'}) is the same at every batch size: a smaller "
             "batch's noisier gradient is cut more often; the share of steps it cut is in the table below.",
             "- **Not scaled, on purpose:** BN's running-statistics momentum (a per-step average, part of BN as "
             "published: at small batches it averages fewer samples, which is one of the effects under study), "
             "weight decay, and Adam's eps.", "",
             "| batch | steps | lr | optimizer settings |", "|---|---|---|---|"]
    seen = set()
    for v in variants:
        if v.batch_size in seen:
            continue
        seen.add(v.batch_size)
        vt = v.cfg.train
        opt = {"adamw": f"betas {vt.betas[0]:.6g}, {vt.betas[1]:.8g}", "adadelta": f"rho {vt.rho:.6g}",
               "sgd": f"momentum {vt.momentum:.6g}"}[vt.optimizer]
        lines.append(f"| {v.batch_size} | {vt.steps} | {vt.lr:.4g} | {opt}, warm-up {vt.warmup_steps}, eval every "
                     f"{vt.eval_every} |")
    return lines + [""]


def _significance_lines(rows: list[dict]) -> list[str]:
    seeds = max((sum(1 for r in rows if (r["norm"], r["batch_size"]) == key and r["status"] == "done")
                 for key in {(r["norm"], r["batch_size"]) for r in rows}), default=0)
    lines = ["## Which differences are resolved", ""]
    if seeds < MIN_SEEDS:
        return lines + [f"Fewer than {MIN_SEEDS} finished seeds per cell: no difference in this table is resolved "
                        f"(rerun with `--seeds {MIN_SEEDS}` or more for 95 % intervals and Welch tests).", ""]
    lines += ["Word accuracy, mean with its 95 % interval (t-distribution, n − 1 degrees of freedom) per cell; "
              "a difference is **resolved** when Welch's t-test gives p < 0.05 with at least "
              f"{MIN_SEEDS} seeds a side (whether the intervals overlap is shown beside it).", "",
              "| a | b | Δ word acc (a − b) | Welch p | intervals overlap | resolved |", "|---|---|---|---|---|---|"]
    for s in significance(rows):
        a, b = s["a"], s["b"]
        overlap = "—" if s["overlap"] is None else ("yes" if s["overlap"] else "no")
        verdict = "**yes**" if s["resolved"] else f"no ({s['why']})"
        lines.append(f"| {a[0]} bs {a[1]} | {b[0]} bs {b[1]} | {100 * s['diff']:+.2f} | {_g(s['p'], '.3g')} | "
                     f"{overlap} | {verdict} |")
    return lines + [""]


def write_outputs(out_dir: Path, rows: list[dict], table: list[dict], curves: dict,
                  protocol_lines: list[str] | None = None) -> None:
    from ..atomic import write_json

    with open(out_dir / "summary.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")  # bn_layers: summary.json only
        w.writeheader()
        w.writerows(rows)
    write_json({"variants": _clean(rows), "table": _clean(table)}, out_dir / "summary.json")
    pngs = _plots(out_dir, rows, curves, table)
    head, body = table_rows(table)
    md = [f"# compare-norms: {out_dir.name}", "", *(protocol_lines or []),
          "## Results", "",
          "Mean ± std over seeds of the finished variants. Word accuracy and CER on the first validation set at "
          "the end of training; N·H·W is the number of values behind each BN statistic in the smallest "
          f"normalized layer at that batch size; Δ vs {baseline_name()} is word accuracy minus {baseline_name()} "
          "norm's at the same batch size; train−eval gap is word accuracy with norm layers on batch statistics "
          "minus on running statistics.", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(r) + " |" for r in body]
    if any(math.isfinite(e["word_acc_ci"][0]) for e in table):
        def rate(ci) -> str:  # a rate's interval shown within 0-100 % (the t-interval itself is symmetric)
            return f"{100 * max(ci[0], 0.0):.2f}–{100 * min(ci[1], 1.0):.2f} %"

        md += ["", "95 % intervals (t-distribution, shown within 0–100 %):", ""]
        md += [f"- {e['norm']} bs {e['batch_size']}: word acc {rate(e['word_acc_ci'])}, CER {rate(e['cer_ci'])}"
               f" ({e['done']} seeds)" for e in table if math.isfinite(e["word_acc_ci"][0])]
    md += ["", *[f"![{p}]({p})" for p in pngs], "", *_significance_lines(rows)]
    md += ["## The mechanism: batch statistics per BN layer", "",
           "From last.pt on the first validation set, network in eval mode, the set cut into batches of the "
           "training batch size. N·H·W: values behind each statistic. gap: RMS difference between the layer's "
           "output on batch statistics and on running statistics (units of the normalized activation). mean / "
           "var error: running statistics against the whole val set's, |μ_run − μ_pop|/σ_pop and "
           "|σ²_run/σ²_pop − 1|, averaged over channels. First seed of each cell.", "",
           "| norm | batch | layer | N·H·W | gap | mean error | var error |", "|---|---|---|---|---|---|---|"]
    firsts = {}
    for r in rows:
        firsts.setdefault((r["norm"], r["batch_size"]), r)
    for (norm, bs), r in firsts.items():
        for name, x in (r.get("bn_layers") or {}).items():
            md.append(f"| {norm} | {bs} | `{name}` | {x['nhw']} | {_g(x['gap'], '.3f')} | {_g(x['mean_err'], '.3f')} "
                      f"| {_g(x['var_err'], '.3f')} |")
    md += ["", "## Loss-landscape smoothness and gradient norms (Santurkar et al. 2018)", "",
           "About ten times per run, on that step's batch with its dropout masks and every other source of "
           "randomness held fixed (one deterministic loss), from the current weights w: the optimizer's actual "
           f"update Δw (clipped as training clips it) and steps of t·‖Δw‖ for t in {list(UPDATE_MULTIPLES)}, along "
           "the gradient (−g scaled to ‖Δw‖, Santurkar et al.'s direction) and along Δw itself. Loss variation is "
           "the range of the losses, β-smoothness max ‖g(w + t·d) − g(w)‖ / ‖t·d‖. Means over the run; lower is "
           "smoother. Gradient norms of the first (stem conv) and last (classifier) weights, mean over logged "
           "steps; clipped: the share of steps grad_clip cut.", "",
           "| norm | batch | loss variation (gradient) | β (gradient) | loss variation (update) | β (update) | "
           "‖∇‖ first layer | ‖∇‖ last layer | clipped |", "|---|---|---|---|---|---|---|---|---|"]
    for e in table:
        md.append(f"| {e['norm']} | {e['batch_size']} | {_g(e['loss_variation'])} | {_g(e['beta_smoothness'])} | "
                  f"{_g(e['update_loss_variation'])} | {_g(e['update_beta_smoothness'])} | "
                  f"{_g(e['grad_norm_first'])} | {_g(e['grad_norm_last'])} | {_g(e['clipped_share'], '.2f')} |")
    bad = [r for r in rows if r["status"] != "done"]
    if bad:
        md += ["", "## Variants that did not finish", ""]
        md += [f"- `{r['norm']}` bs {r['batch_size']} seed {r['seed']}: **{r['status']}** — {r['reason']}"
               for r in bad]
    (out_dir / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
