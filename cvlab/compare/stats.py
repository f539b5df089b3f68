"""Seed statistics for compare-norms: mean ± std, t-intervals of the mean, Welch's test, and which
differences between cells are resolved."""

from __future__ import annotations

import math
import statistics


def finite(xs) -> list[float]:
    return [x for x in xs if x is not None and math.isfinite(x)]


def mean_std(xs) -> tuple[float, float]:
    xs = finite(xs)
    if not xs:
        return float("nan"), float("nan")
    return sum(xs) / len(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def t_interval(xs, level: float = 0.95) -> tuple[float, float]:
    """The `level` confidence interval of the mean of `xs` from the t-distribution with n − 1 degrees of
    freedom (nan, nan below 2 values)."""
    from scipy import stats

    xs = finite(xs)
    if len(xs) < 2:
        return float("nan"), float("nan")
    m, s = sum(xs) / len(xs), statistics.stdev(xs)
    half = stats.t.ppf(0.5 + level / 2, len(xs) - 1) * s / math.sqrt(len(xs))
    return m - half, m + half


def welch(a, b) -> float:
    """Welch's two-sided t-test p-value for different means (unequal variances); nan below 2 values a side.
    Two constant samples: 0 when their values differ, 1 when they are equal."""
    from scipy import stats

    a, b = finite(a), finite(b)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    if statistics.pvariance(a) == 0 and statistics.pvariance(b) == 0:
        return 1.0 if a[0] == b[0] else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


MIN_SEEDS = 3  # below this many finished seeds a cell has no interval and no difference is called resolved


def significance(rows: list[dict], metric: str = "word_acc", alpha: float = 0.05) -> list[dict]:
    """Every pair of norms at the same batch size, and every norm between batch sizes: the difference in mean
    `metric`, Welch's p, whether the 95 % intervals overlap, and `resolved` (p < alpha with at least MIN_SEEDS
    finished seeds a side; otherwise the difference is not resolved, and `why` says so)."""
    done = [r for r in rows if r["status"] == "done"]
    cells: dict[tuple, list[float]] = {}
    for r in done:
        cells.setdefault((r["norm"], r["batch_size"]), []).append(r[metric])
    keys = list(cells)
    pairs = [(a, b) for i, a in enumerate(keys) for b in keys[i + 1:] if a[1] == b[1] or a[0] == b[0]]
    out = []
    for a, b in pairs:
        xa, xb = finite(cells[a]), finite(cells[b])
        (la, ha), (lb, hb) = t_interval(xa), t_interval(xb)
        p = welch(xa, xb)
        enough = min(len(xa), len(xb)) >= MIN_SEEDS
        overlap = not (ha < lb or hb < la) if enough else None
        resolved = bool(enough and p < alpha)
        why = ("" if enough else f"fewer than {MIN_SEEDS} seeds") if not resolved else ""
        if enough and not resolved:
            why = f"p = {p:.3g} ≥ {alpha}"
        out.append({"a": a, "b": b, "diff": mean_std(xa)[0] - mean_std(xb)[0], "p": p, "overlap": overlap,
                    "resolved": resolved, "why": why})
    return out
