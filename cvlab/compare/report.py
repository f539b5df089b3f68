"""compare-norms outputs: per-variant rows read back from the runs, the mean ± std table, summary.csv/json,
the plots and report.md."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from .probes import STEP_SIZES

if TYPE_CHECKING:
    from .variants import Variant

COLUMNS = ("norm", "batch_size", "seed", "status", "reason", "steps", "lr", "word_acc", "cer", "train_loss",
           "train_eval_gap", "samples_per_s", "peak_mem_mb", "steps_to_half_best", "grad_norm_first",
           "grad_norm_last", "loss_variation", "grad_change", "beta_smoothness", "run_dir")


# --------------------------------------------------------------------------------------------- summary

def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 1, "histograms": 1, "tensors": 0})
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def collect(variants: list[Variant], out_dir: Path) -> tuple[list[dict], dict]:
    """One row per variant from its variant.json, metrics.json and event files; val accuracy curves."""
    rows, curves = [], {}
    for v in variants:
        d = out_dir / v.name
        rec = json.loads((d / "variant.json").read_text()) if (d / "variant.json").is_file() else \
            {"status": "failed", "reason": "not run"}
        row = dict.fromkeys(COLUMNS)
        row.update(norm=v.norm, batch_size=v.batch_size, seed=v.seed, status=rec["status"],
                   reason=rec.get("reason", ""), steps=v.cfg.train.steps, lr=v.cfg.train.lr, run_dir=str(d),
                   train_eval_gap=rec.get("train_eval_gap"), peak_mem_mb=rec.get("peak_mem_mb"))
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
            for col, tag in (("grad_norm_first", "grad/first_layer_norm"), ("grad_norm_last", "grad/last_layer_norm"),
                             ("loss_variation", "smoothness/loss_variation"),
                             ("grad_change", "smoothness/grad_change"),
                             ("beta_smoothness", "smoothness/beta_smoothness")):
                row[col] = _mean(x for _, x in scalars.get(tag, []))
            acc = [k for k in scalars if k.startswith("val/") and k.endswith("/word_acc")]
            if acc:
                first_tag = f"val/{first[0]}/word_acc" if first else sorted(acc)[0]
                curves[v.name] = scalars.get(first_tag, [])
        rows.append(row)
    best = max((a for c in curves.values() for _, a in c), default=0.0)
    for row in rows:
        curve = curves.get(f"norm={row['norm']},bs={row['batch_size']},seed={row['seed']}", [])
        hit = [s for s, a in curve if best > 0 and a >= 0.5 * best]
        row["steps_to_half_best"] = hit[0] if hit else None
    return rows, curves


def _ms(xs) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return float("nan"), float("nan")
    return sum(xs) / len(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def aggregate(rows: list[dict]) -> list[dict]:
    """Per norm and batch size: mean ± std over seeds of the done variants; Δ word accuracy vs `batch`."""
    keys = list(dict.fromkeys((r["norm"], r["batch_size"]) for r in rows))
    table = []
    for norm, bs in keys:
        group = [r for r in rows if (r["norm"], r["batch_size"]) == (norm, bs)]
        done = [r for r in group if r["status"] == "done"]
        entry = {"norm": norm, "batch_size": bs, "runs": len(group), "done": len(done),
                 "status": ",".join(sorted({r["status"] for r in group}))}
        for col in ("word_acc", "cer", "train_loss", "train_eval_gap", "samples_per_s", "peak_mem_mb",
                    "steps_to_half_best", "loss_variation", "beta_smoothness", "grad_norm_first", "grad_norm_last"):
            entry[col], entry[col + "_std"] = _ms(r[col] for r in (done if col != "train_loss" else group))
        table.append(entry)
    for e in table:
        ref = next((x for x in table if x["norm"] == "batch" and x["batch_size"] == e["batch_size"]), None)
        e["delta_vs_batch"] = e["word_acc"] - ref["word_acc"] if ref else float("nan")
    return table


def _pm(m: float, s: float, scale: float = 100.0, digits: int = 2) -> str:
    if not math.isfinite(m):
        return "—"
    return f"{m * scale:.{digits}f}±{s * scale:.{digits}f}"


def table_rows(table: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The aggregated table as text cells (shared by report.md and the CLI's rich table)."""
    head = ["norm", "batch", "word acc %", "CER %", "train loss", "Δ vs batch", "train−eval gap", "samples/s",
            "peak MB", "steps to 50% best", "status"]
    body = []
    for e in table:
        d = e["delta_vs_batch"]
        body.append([e["norm"], str(e["batch_size"]), _pm(e["word_acc"], e["word_acc_std"]),
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
                c = curves.get(f"norm={norm},bs={bs},seed={r['seed']}")
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
    return ["val_acc_vs_step.png", "acc_vs_batch_size.png"]


def write_outputs(out_dir: Path, rows: list[dict], table: list[dict], curves: dict) -> None:
    from ..engine.checkpoint import write_json

    with open(out_dir / "summary.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]
    write_json({"variants": clean, "table": [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                              for k, v in e.items()} for e in table]}, out_dir / "summary.json")
    pngs = _plots(out_dir, rows, curves, table)
    head, body = table_rows(table)
    md = [f"# compare-norms: {out_dir.name}", "",
          "Mean ± std over seeds of the finished variants; every variant saw the same number of training samples. "
          "Word accuracy and CER on the first validation set at the end of training; Δ vs batch is word "
          "accuracy minus batch norm's at the same batch size; train−eval gap is word accuracy with norm "
          "layers on batch statistics minus on running statistics.", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(r) + " |" for r in body]
    md += ["", *[f"![{p}]({p})" for p in pngs], "",
           "## Loss-landscape smoothness and gradient norms (Santurkar et al. 2018)", "",
           f"Every K steps, from the current weights, a step of η·g for η in {list(STEP_SIZES)}: loss variation is "
           "the range of the losses, gradient change max ‖g(w−ηg) − g(w)‖, β-smoothness that over ‖ηg‖. "
           "Means over the run; lower is smoother. Gradient norms of the first (stem conv) and last (classifier) "
           "weights, mean over logged steps.", "",
           "| norm | batch | loss variation | β-smoothness | ‖∇‖ first layer | ‖∇‖ last layer |", "|---|---|---|---|---|---|"]
    for e in table:
        md.append(f"| {e['norm']} | {e['batch_size']} | {e['loss_variation']:.4g} | {e['beta_smoothness']:.4g} | "
                  f"{e['grad_norm_first']:.4g} | {e['grad_norm_last']:.4g} |")
    bad = [r for r in rows if r["status"] != "done"]
    if bad:
        md += ["", "## Variants that did not finish", ""]
        md += [f"- `{r['norm']}` bs {r['batch_size']} seed {r['seed']}: **{r['status']}** — {r['reason']}"
               for r in bad]
    (out_dir / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")

