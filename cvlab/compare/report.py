"""compare-norms outputs: per-variant rows read back from the runs, the mean ± std table, the paired analysis
(stats.py), summary.csv/json, the plots and report.md.

A row may stand for its norm at several batch sizes (`stats.SHARED`, with `stats.BATCH_SIZES`: the per-device
protocol trains a norm that uses no batch statistics once per seed): the table, the statistics and the plots
show it in every column it stands for, marked as shared; summary.csv keeps it once."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from .grid import GROUPINGS, PROTOCOLS, Variant, baseline_name, grouping, is_baseline
from .plots import plots
from .probes import UPDATE_MULTIPLES
from .stats import BATCH_SIZES, MIN_SEEDS, SHARED, comparisons, expand, mean_std, t_interval

if TYPE_CHECKING:
    from ..config import Experiment

COLUMNS = ("norm", "batch_size", "seed", "status", "reason", "steps", "lr", "lr_scaling", "word_acc", "cer",
           "train_loss", "train_eval_gap", "samples_per_s", "peak_mem_mb", "steps_to_half_best", "nhw_min",
           "values_per_stat_min", "bn_gap_max", "bn_mean_err_max", "bn_var_err_max", "clipped_share",
           "grad_norm_first", "grad_norm_last", "loss_variation", "grad_change", "beta_smoothness",
           "update_loss_variation", "update_grad_change", "update_beta_smoothness", "probe_images", "probe_noisy",
           "word_acc_train_mode", "word_acc_precise_bn", "batch_dependence", "batch_dependence_changed", "rho_mean",
           "n_eff_min", "stat_batch", SHARED, "run_dir")
MECHANISM = ("word_acc_train_mode", "word_acc_precise_bn", "batch_dependence", "batch_dependence_changed",
             "rho_mean", "n_eff_min")
SCALARS = (("grad_norm_first", "grad/first_layer_norm"), ("grad_norm_last", "grad/last_layer_norm"),
           ("clipped_share", "grad/clipped_share"), ("nhw_min", "norm/nhw_min"),
           ("values_per_stat_min", "norm/values_per_statistic_min"),
           *((c, f"smoothness/{c}") for c in ("loss_variation", "grad_change", "beta_smoothness",
                                              "update_loss_variation", "update_grad_change",
                                              "update_beta_smoothness")))
MEANS = ("word_acc", "cer", "train_loss", "train_eval_gap", "samples_per_s", "peak_mem_mb", "steps_to_half_best",
         "nhw_min", "values_per_stat_min", "bn_gap_max", "bn_mean_err_max", "bn_var_err_max", "clipped_share",
         "loss_variation", "beta_smoothness", "update_loss_variation", "update_beta_smoothness",
         "grad_norm_first", "grad_norm_last", *MECHANISM)
FEW_PROBE_IMAGES = 8  # a smoothness probe on fewer images than this (one step's batch) is flagged as noisy


# --------------------------------------------------------------------------------------------- summary

def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 1, "histograms": 1, "tensors": 0})
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def _mean(xs) -> float:
    return mean_std(xs)[0]


def window_loss(points: list[tuple[int, float]], every: int) -> float | None:
    """The summary's training loss from `train/loss` as the training loop logs it (each point the mean per
    sample over the steps since the point before: engine.train.loop.LossWindow): the mean over the run's last
    `every` steps (log.every: one full log window). When the last window was cut short (steps not a multiple of
    log.every), the window before it makes up the rest, weighted by the steps each covers. None without points."""
    if not points:
        return None
    total = weight = 0.0
    for i in range(len(points) - 1, -1, -1):
        span = points[i][0] - (points[i - 1][0] if i else 0)
        w = min(max(span, 0), every - weight)
        total, weight = total + w * points[i][1], weight + w
        if weight >= every:
            break
    return total / weight if weight > 0 else points[-1][1]


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
        # the smoothness probes run on one step's batch: the step's images, whatever BN's statistics are taken over
        row["probe_images"] = v.cfg.train.batch_size
        row["probe_noisy"] = row["probe_images"] < FEW_PROBE_IMAGES
        # one run standing for its norm at several batch sizes (the grid says so on the variant)
        row[SHARED] = bool(getattr(v, SHARED, False))
        if getattr(v, BATCH_SIZES, None):
            row[BATCH_SIZES] = list(getattr(v, BATCH_SIZES))
        layers = rec.get("bn_layers") or {}
        row["bn_layers"] = layers  # per BN layer (report.md's table; summary.json, not the csv)
        for col, key in (("bn_gap_max", "gap"), ("bn_mean_err_max", "mean_err"), ("bn_var_err_max", "var_err")):
            vals = [x[key] for x in layers.values() if x.get(key) is not None]
            row[col] = max(vals) if vals else None
        # the mechanism (probes.mechanism, bn_layer_stats): what batch statistics do to this run
        for col in ("word_acc_train_mode", "word_acc_precise_bn", "batch_dependence", "batch_dependence_changed"):
            row[col] = rec.get(col)
        rhos = [x["rho"] for x in layers.values() if x.get("rho") is not None]
        n_effs = [x["n_eff"] for x in layers.values() if x.get("n_eff") is not None]
        row["rho_mean"] = sum(rhos) / len(rhos) if rhos else None
        row["n_eff_min"] = min(n_effs) if n_effs else None
        row["stat_batch"] = v.cfg.model.norm.ghost_batch or v.cfg.train.batch_size
        row["adjustments"] = rec.get("adjustments") or []  # summary.json and report.md, not the csv
        scalars = read_scalars(d) if d.is_dir() and any(d.glob("events.out.tfevents.*")) else {}
        metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else {}
        first = next(iter(metrics.get("datasets", {}).items()), None)
        if first and rec["status"] == "done":
            row.update(word_acc=first[1]["word_acc"], cer=first[1]["cer"])
        if scalars:
            row["train_loss"] = window_loss(scalars.get("train/loss", []), v.cfg.log.every)
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
    """Per norm and batch size: mean ± std over seeds of the done variants; Δ word accuracy vs `batch`. A shared
    row (stats.SHARED) counts in every column it stands for, and its entries say `shared`."""
    rows = expand(rows)
    keys = list(dict.fromkeys((r["norm"], r["batch_size"]) for r in rows))
    table = []
    for norm, bs in keys:
        group = [r for r in rows if (r["norm"], r["batch_size"]) == (norm, bs)]
        done = [r for r in group if r["status"] == "done"]
        entry = {"norm": norm, "batch_size": bs, "runs": len(group), "done": len(done),
                 "status": ",".join(sorted({r["status"] for r in group}))}
        for col in MEANS:
            entry[col], entry[col + "_std"] = mean_std(r.get(col) for r in (done if col != "train_loss" else group))
        for col in ("word_acc", "cer"):
            entry[col + "_ci"] = t_interval(r[col] for r in done) if len(done) >= MIN_SEEDS else (float("nan"),) * 2
        entry["lr"], entry["lr_scaling"] = group[0]["lr"], group[0]["lr_scaling"]
        entry["shared"] = any(r["shared"] for r in group)
        images = [r["probe_images"] for r in group if r.get("probe_images") is not None]
        entry["probe_images"] = min(images) if images else None
        entry["probe_noisy"] = bool(images) and min(images) < FEW_PROBE_IMAGES
        table.append(entry)
    for e in table:
        ref = next((x for x in table if is_baseline(x["norm"]) and x["batch_size"] == e["batch_size"]), None)
        e["delta_vs_batch"] = e["word_acc"] - ref["word_acc"] if ref else float("nan")
    return table


def _pct(x):
    return None if x is None else 100 * x


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
        body.append([e["norm"], f"{e['batch_size']} (shared)" if e.get("shared") else str(e["batch_size"]),
                     f"{e['lr']:.3g} ({e['lr_scaling']})",
                     f"{nhw:.0f}" if math.isfinite(nhw) else "—", _pm(e["word_acc"], e["word_acc_std"]),
                     _pm(e["cer"], e["cer_std"]), _pm(e["train_loss"], e["train_loss_std"], 1, 3),
                     f"{100 * d:+.2f}" if math.isfinite(d) else "—",
                     f"{100 * e['train_eval_gap']:+.2f}" if math.isfinite(e["train_eval_gap"]) else "—",
                     f"{e['samples_per_s']:.0f}" if math.isfinite(e["samples_per_s"]) else "—",
                     f"{e['peak_mem_mb']:.0f}" if math.isfinite(e["peak_mem_mb"]) else "—",
                     f"{e['steps_to_half_best']:.0f}" if math.isfinite(e["steps_to_half_best"]) else "—",
                     "done" if e["done"] == e["runs"] else e["status"]])
    return head, body


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
    kind = variants[0].protocol
    composed = sorted({grouping(v.norm) for v in variants} - {"iid"})
    head = [f"- **Protocol: {kind}.** {PROTOCOLS[kind]}."]
    head += [f"- **/{g}**: BN's groups of b are {GROUPINGS[g]} (data.group_by, kept together by the sampler)."
             for g in composed]
    if kind == "per-device":
        vt = variants[0].cfg.train
        return ["## Protocol", "", *head,
                f"- Every variant: {vt.steps} steps at batch {vt.batch_size}, lr {vt.lr:g}, warm-up {vt.warmup_steps}, "
                f"eval every {vt.eval_every}: the same optimizer and data order for every norm and b.", ""]
    biggest = max(v.cfg.train.batch_size for v in variants)
    rules = sorted({v.lr_scaling for v in variants})
    lines = ["## Protocol", "", *head,
             f"- **Same samples seen.** `train.steps` ({variants[0].cfg.train.steps * variants[0].cfg.train.batch_size // biggest} "
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


def _points(x: float) -> str:
    return f"{100 * x:+.2f}" if math.isfinite(x) else "—"


def _test_cells(t: dict) -> str:
    """A test's columns from its difference on: mean, interval, per-seed values, seeds, p, Holm p, verdict."""
    lo, hi = t["ci"]
    ci = f"{_points(lo)} to {_points(hi)}" if math.isfinite(lo) else "—"
    per_seed = ", ".join(_points(x) for x in t["values"]) or "—"
    if t["resolved"]:
        verdict = "**yes**"
    elif t["same_as"]:
        verdict = f"no (Holm p = {_g(t['p_holm'], '.3g')}, as {t['same_as']})"
    else:
        verdict = f"no ({t['why']})"
    return (f"{_points(t['mean'])} | {ci} | {per_seed} | {t['n']} | {_g(t['p'], '.3g')} | "
            f"{_g(t['p_holm'], '.3g')} | {verdict} |")


def statistics_lines(result: dict) -> list[str]:
    """report.md's paired analysis (stats.comparisons' result): the interactions, each norm against the baseline
    at each batch size, each norm's batch-size effect, and Holm's correction over them."""
    tests, base = result["tests"], result["baseline"]
    small, large = result["small"], result["large"]
    level = f"{100 * result['level']:g} %"
    lines = ["## Statistics: differences paired by seed", "",
             "A seed fixes the initial weights and the order of the training data for every norm, so runs with the "
             "same seed saw the same data: each difference below is taken within a seed, then averaged over the "
             f"seeds both sides finished (word accuracy on the first validation set, in points). The {level} "
             "interval is the t-interval of that mean (n − 1 degrees of freedom), p the paired t-test's, two-sided, "
             "for a difference of 0; one seed gives the point value and no interval. Welch's unpaired test is not "
             "used: every comparison here is between runs that share their seed, and pairing removes the "
             "seed-to-seed variation Welch would count as noise. Pairs of norms neither of which is the baseline "
             "are not tested (their means are in the table above).", ""]
    if base is None:
        lines += [f"The baseline ({baseline_name()}) is not among the norms: no difference against it and no "
                  "interaction.", ""]
    family = result["family"]
    resolved = [t for t in tests if t["resolved"]]
    if family == 0:
        lines += ["1 seed: point values only, no interval and no p-value; no difference in this table is resolved "
                  f"(rerun with `--seeds {MIN_SEEDS}` or more).", ""]
    else:
        named = "; ".join(t["what"] for t in resolved)
        lines += [f"**Multiplicity: Holm's correction over {family} tests** (every difference below with a p-value; "
                  "an interaction of a shared norm equals the baseline's own batch-size change and is counted once, "
                  f"with it). A difference is **resolved** when its Holm-adjusted p is below {result['alpha']:g}: "
                  + (f"{len(resolved)} resolved: {named}." if resolved else "none is resolved.")
                  + " The intervals are each test's own, not adjusted.", ""]
    head = "| mean (points) | " + level + " interval | per seed | seeds | p | Holm p | resolved |"
    inter = [t for t in tests if t["kind"] == "interaction"]
    if inter:
        lines += [f"### The interaction: ({base} − N at batch {small}) − ({base} − N at batch {large})", "",
                  f"How much more {base} norm loses to N at batch {small} than at batch {large}: negative when "
                  f"{base} norm falls behind N as the batch shrinks. This is the quantity the small-batch claim is "
                  "about; the two differences it is made of are in the next table.", "",
                  "| N " + head, "|---" * 8 + "|"]
        lines += [f"| {t['norm']}{' (shared)' if t['shared'] else ''} | " + _test_cells(t) for t in inter]
        lines.append("")
    vs = [t for t in tests if t["kind"] == "vs_baseline"]
    if vs:
        lines += [f"### {base} − N at each batch size", "", "| N | batch " + head, "|---" * 9 + "|"]
        lines += [f"| {t['norm']}{' (shared)' if t['shared'] else ''} | {t['batch_size']} | " + _test_cells(t)
                  for t in vs]
        lines.append("")
    own = [t for t in tests if t["kind"] == "batch_size"]
    if own:
        lines += [f"### Each norm at batch {small} − at batch {large}", "", "| norm " + head, "|---" * 8 + "|"]
        lines += [f"| {t['norm']} | " + _test_cells(t) for t in own]
        lines.append("")
    if any(t["shared"] for t in tests):
        lines += ["(shared): the norm's runs do not depend on the batch size under this protocol; one run per seed "
                  "stands in every column, so its batch-size change is not a test.", ""]
    return lines


def write_outputs(out_dir: Path, rows: list[dict], table: list[dict], curves: dict,
                  protocol_lines: list[str] | None = None) -> None:
    import io

    from ..atomic import write_json, write_text_atomic

    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")  # bn_layers: json
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(text.getvalue(), out_dir / "summary.csv")  # LF lines, as every other CSV cvlab writes
    result = comparisons(rows)
    write_json({"variants": _clean(rows), "table": _clean(table), "statistics": _clean(result)},
               out_dir / "summary.json")
    pngs = plots(out_dir, expand(rows), curves, table)  # a shared run's curve in every batch size's panel
    head, body = table_rows(table)
    md = [f"# compare-norms: {out_dir.name}", "", *(protocol_lines or []),
          "## Results", "",
          "Mean ± std over seeds of the finished variants. Word accuracy and CER on the first validation set at "
          "the end of training; N·H·W is the number of values behind each BN statistic in the smallest "
          f"normalized layer at that batch size; Δ vs {baseline_name()} is word accuracy minus {baseline_name()} "
          "norm's at the same batch size (difference of the means; paired by seed below); train loss is the mean "
          "per sample over the last log window (`log.every` steps, a number of steps scaled with the batch so the "
          "window spans the same images at every batch size), not one batch's; train−eval gap is word accuracy "
          "with norm layers on batch statistics minus on running statistics.", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(r) + " |" for r in body]
    if any(math.isfinite(e["word_acc_ci"][0]) for e in table):
        def rate(ci) -> str:  # a rate's interval shown within 0-100 % (the t-interval itself is symmetric)
            return f"{100 * max(ci[0], 0.0):.2f}–{100 * min(ci[1], 1.0):.2f} %"

        md += ["", "95 % intervals (t-distribution, shown within 0–100 %):", ""]
        md += [f"- {e['norm']} bs {e['batch_size']}: word acc {rate(e['word_acc_ci'])}, CER {rate(e['cer_ci'])}"
               f" ({e['done']} seeds)" for e in table if math.isfinite(e["word_acc_ci"][0])]
    if any(e.get("shared") for e in table):
        md += ["", "(shared): one run per seed stands for this norm at every batch size (it uses no batch "
               "statistics, and under this protocol nothing else it trains with depends on the batch size)."]
    md += ["", *[f"![{p}]({p})" for p in pngs], "", *statistics_lines(result)]
    adjusted = {}
    for r in rows:
        for line in r.get("adjustments") or []:
            adjusted.setdefault(line, []).append(r["norm"])
    if adjusted:
        md += ["## Adjustments", "", "What building the model changed from its config (preflight prints the same "
               "at the start of each run):", ""]
        md += [f"- {line} ({', '.join(dict.fromkeys(norms))})" for line, norms in adjusted.items()]
        md += [""]
    md += ["## The mechanism: batch statistics per BN layer", "",
           "From last.pt on the first validation set, network in eval mode, the set cut into batches of the "
           "training batch size. N·H·W: values behind each statistic. gap: RMS difference between the layer's "
           "output on batch statistics and on running statistics (units of the normalized activation). mean / "
           "var error: running statistics against the whole val set's, |μ_run − μ_pop|/σ_pop and "
           "|σ²_run/σ²_pop − 1|, averaged over channels. First seed of each cell.", "",
           "| norm | batch | layer | N·H·W | ρ | n_eff | gap | mean error | var error |",
           "|---|---|---|---|---|---|---|---|---|"]
    firsts = {}
    for r in rows:
        firsts.setdefault((r["norm"], r["batch_size"]), r)
    for (norm, bs), r in firsts.items():
        for name, x in (r.get("bn_layers") or {}).items():
            md.append(f"| {norm} | {bs} | `{name}` | {x['nhw']} | {_g(x.get('rho'), '.3f')} | "
                      f"{_g(x.get('n_eff'), '.1f')} | {_g(x['gap'], '.3f')} | {_g(x['mean_err'], '.3f')} "
                      f"| {_g(x['var_err'], '.3f')} |")
    md += ["", "ρ: the between-image share of a channel's variance at the layer's input (one-way ANOVA, images as "
           "groups), mean over channels; n_eff: the independent values behind one statistic at the run's b images "
           "per statistic, b·H·W / (1 + (H·W − 1)·ρ) (Kish's design effect: positions of one image are "
           "correlated), against the b·H·W it counts.", "",
           "## The mechanism: what batch statistics do to each variant", "",
           "Word accuracy on the first validation set from last.pt, with BN's running statistics (eval mode, the "
           "primary number), on batch statistics (i.i.d. validation batches of the training batch, grouped as "
           "BN grouped them in training: ghost batches of b), and with running statistics re-estimated over "
           "training batches composed as in training (PreciseBN, Wu & Johnson 2021). Batch dependence: the mean "
           "relative change of an image's logits when its b − 1 batch-mates are swapped (BN on batch "
           "statistics; exactly 0 without them), and the share of readings that change. First seed of each "
           "cell.", "",
           "| norm | batch | eval mode | batch stats | PreciseBN | batch dependence | readings changed | ρ mean | "
           "n_eff min |", "|---|---|---|---|---|---|---|---|---|"]
    for (norm, bs), r in firsts.items():
        md.append(f"| {norm} | {bs} | {_g(_pct(r.get('word_acc')), '.2f')} | "
                  f"{_g(_pct(r.get('word_acc_train_mode')), '.2f')} | {_g(_pct(r.get('word_acc_precise_bn')), '.2f')} "
                  f"| {_g(r.get('batch_dependence'), '.4f')} | {_g(_pct(r.get('batch_dependence_changed')), '.1f')} | "
                  f"{_g(r.get('rho_mean'), '.3f')} | {_g(r.get('n_eff_min'), '.1f')} |")
    md += ["", "## Loss-landscape smoothness and gradient norms (Santurkar et al. 2018)", "",
           "About ten times per run, on that step's batch with its dropout masks and every other source of "
           "randomness held fixed (one deterministic loss), from the current weights w: the optimizer's actual "
           f"update Δw (clipped as training clips it) and steps of t·‖Δw‖ for t in {list(UPDATE_MULTIPLES)}, along "
           "the gradient (−g scaled to ‖Δw‖, Santurkar et al.'s direction) and along Δw itself. Loss variation is "
           "the range of the losses, β-smoothness max ‖g(w + t·d) − g(w)‖ / ‖t·d‖. Means over the run; lower is "
           "smoother. Gradient norms of the first (stem conv) and last (classifier) weights, mean over logged "
           "steps; clipped: the share of steps grad_clip cut. Probe images: how many images each probe's loss "
           f"was taken on (the step's batch); below {FEW_PROBE_IMAGES} the row's smoothness figures are flagged "
           "*noisy*: a handful of images make each probe's loss and gradient a noisy sample, so read them beside "
           "larger batches' with that caveat, not as like for like.", "",
           "| norm | batch | probe images | loss variation (gradient) | β (gradient) | loss variation (update) | "
           "β (update) | ‖∇‖ first layer | ‖∇‖ last layer | clipped |", "|---|---|---|---|---|---|---|---|---|---|"]
    for e in table:
        n = e.get("probe_images")
        images = "—" if n is None else (f"{n}: *noisy*" if e.get("probe_noisy") else str(n))
        md.append(f"| {e['norm']} | {e['batch_size']} | {images} | {_g(e['loss_variation'])} | "
                  f"{_g(e['beta_smoothness'])} | {_g(e['update_loss_variation'])} | {_g(e['update_beta_smoothness'])} "
                  f"| {_g(e['grad_norm_first'])} | {_g(e['grad_norm_last'])} | {_g(e['clipped_share'], '.2f')} |")
    noisy = sorted({(e["norm"], e["batch_size"], e["probe_images"]) for e in table if e.get("probe_noisy")},
                   key=lambda x: (x[1], x[0]))
    if noisy:
        md += ["", "Noisy probes: " + "; ".join(f"{norm} at batch {b} taken on {n} images: noisy"
                                                for norm, b, n in noisy) + "."]
    bad = [r for r in rows if r["status"] != "done"]
    if bad:
        md += ["", "## Variants that did not finish", ""]
        md += [f"- `{r['norm']}` bs {r['batch_size']} seed {r['seed']}: **{r['status']}** — {r['reason']}"
               for r in bad]
    write_text_atomic("\n".join(md) + "\n", out_dir / "report.md")
