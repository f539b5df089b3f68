"""compare-norms' figures: validation accuracy against step (a panel per batch size), final accuracy against batch
size (the Group Normalization paper's figure 1), and against N·H·W, the values behind each BN statistic."""

from __future__ import annotations

import math
from pathlib import Path


def plots(out_dir: Path, rows: list[dict], curves: dict, table: list[dict]) -> list[str]:
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
    if ax.get_legend_handles_labels()[0]:  # no finished variant, no curve: a legend of nothing warns
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
