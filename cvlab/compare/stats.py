"""Seed statistics for compare-norms: mean ± std and t-intervals per cell, and the paired analysis.

A seed fixes the initial weights' draw and the order of the training data for every norm, so two norms trained
with the same seed saw the same data: differences between them are taken within each seed and averaged over
seeds (a paired t-test: the seed-to-seed variation both share cancels, which an unpaired test such as Welch's
would count as noise). Three families of differences in the first validation set's word accuracy, all paired by
seed:

- `vs_baseline`: baseline − N at each batch size;
- `batch_size`: N at the smallest batch size − N at the largest;
- `interaction`: (baseline − N at b) − (baseline − N at B), b the smallest and B the largest batch size: how
  much more the baseline loses to N at the small batch size than at the large one (the quantity the Group
  Normalization paper's claim is about). Negative: the baseline falls behind N as the batch shrinks.

Each with its mean, its 95 % t-interval (n − 1 degrees of freedom over the n seeds the cells share; none with
one seed) and its two-sided p. Holm's step-down correction is applied over every test that has a p-value; a
difference is *resolved* when its Holm-adjusted p is below alpha.

A row may stand for its norm at several batch sizes (the per-device protocol trains a norm that uses no batch
statistics once per seed and shows it in every column): it says so with `SHARED` true, and `BATCH_SIZES` (the
columns it stands for; default every batch size of the study). `expand` turns such a row into one per column.
"""

from __future__ import annotations

import math
import statistics

from .grid import is_baseline

SHARED = "shared_across_batch_sizes"  # row field: one run standing for its norm at several batch sizes
BATCH_SIZES = "batch_sizes"  # row field (with SHARED): the batch sizes it stands for; absent: all of the study's
MIN_SEEDS = 3  # below this many finished seeds a cell's own mean gets no interval in the table
MIN_PAIRED = 2  # a paired difference needs this many seeds in common for an interval and a p-value
LEVEL, ALPHA = 0.95, 0.05


def finite(xs) -> list[float]:
    return [x for x in xs if x is not None and math.isfinite(x)]


def mean_std(xs) -> tuple[float, float]:
    xs = finite(xs)
    if not xs:
        return float("nan"), float("nan")
    return sum(xs) / len(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def t_interval(xs, level: float = LEVEL) -> tuple[float, float]:
    """The `level` confidence interval of the mean of `xs` from the t-distribution with n − 1 degrees of
    freedom (nan, nan below 2 values)."""
    return one_sample(xs, level)["ci"]


def one_sample(xs, level: float = LEVEL) -> dict:
    """The mean of `xs` with its `level` t-interval and the two-sided p of a t-test for mean 0 (n − 1 degrees of
    freedom): {'n', 'mean', 'ci': (lo, hi), 'p'}. Below 2 values: the mean alone (interval and p nan). No spread
    (all values equal): the interval is that value and p is 0, or 1 when the value is 0."""
    from scipy import stats

    xs = finite(xs)
    n = len(xs)
    m = sum(xs) / n if xs else float("nan")
    if n < 2:
        return {"n": n, "mean": m, "ci": (float("nan"), float("nan")), "p": float("nan")}
    s = statistics.stdev(xs)
    if s == 0:
        return {"n": n, "mean": m, "ci": (m, m), "p": 1.0 if m == 0 else 0.0}
    se = s / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(m) / se, n - 1))
    return {"n": n, "mean": m, "ci": (m - half, m + half), "p": p}


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: with the m finite p sorted p(1) ≤ … ≤ p(m),
    p̃(i) = max over j ≤ i of min(1, (m − j + 1)·p(j)). A nan p stays nan and does not count in m. Rejecting
    where p̃ < alpha keeps the family-wise error rate at alpha (Holm 1979)."""
    order = sorted((p, i) for i, p in enumerate(ps) if p is not None and math.isfinite(p))
    m = len(order)
    out = [float("nan")] * len(ps)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


# --------------------------------------------------------------------------------------------- cells

def study_batch_sizes(rows: list[dict]) -> list[int]:
    """Every batch size the study reports, ascending: the rows' own and those shared rows stand for."""
    sizes = {r["batch_size"] for r in rows if isinstance(r.get("batch_size"), int)}
    for r in rows:
        sizes |= set(r.get(BATCH_SIZES) or ())
    return sorted(sizes)


def expand(rows: list[dict]) -> list[dict]:
    """The rows with every shared row (SHARED true) copied into each batch size it stands for (`shared` true on
    the copies), one row per norm, batch size and seed (a run listed twice for one cell counts once). Other rows
    are returned as they are, with `shared` false."""
    sizes = study_batch_sizes(rows)
    out, seen = [], set()
    for r in rows:
        if r.get(SHARED):
            cols = sorted(set(r.get(BATCH_SIZES) or sizes))
            copies = [{**r, "batch_size": b, "shared": True} for b in cols]
        else:
            copies = [{**r, "shared": False}]
        for c in copies:
            key = (c["norm"], c["batch_size"], c["seed"])
            if key not in seen:
                seen.add(key)
                out.append(c)
    return out


def seed_cells(rows: list[dict], metric: str = "word_acc") -> dict[tuple[str, int], dict[int, float]]:
    """{(norm, batch size): {seed: metric}} over the finished variants (shared rows in every column they
    stand for), finite values only."""
    cells: dict[tuple[str, int], dict[int, float]] = {}
    for r in expand(rows):
        if r["status"] == "done" and r.get(metric) is not None and math.isfinite(r[metric]):
            cells.setdefault((r["norm"], r["batch_size"]), {})[r["seed"]] = r[metric]
    return cells


def _shared_norms(rows: list[dict]) -> set[str]:
    return {r["norm"] for r in expand(rows) if r["shared"]}


# --------------------------------------------------------------------------------------------- the paired analysis

def paired(terms: list[tuple[float, dict[int, float]]], level: float = LEVEL) -> dict:
    """Σ coef·cell[seed] per seed the cells share, then `one_sample` over those seeds; adds 'seeds' and
    'values' (the per-seed differences)."""
    seeds = sorted(set.intersection(*(set(cell) for _, cell in terms))) if terms else []
    values = [sum(coef * cell[s] for coef, cell in terms) for s in seeds]
    return {**one_sample(values, level), "seeds": seeds, "values": values}


def comparisons(rows: list[dict], metric: str = "word_acc", *, level: float = LEVEL, alpha: float = ALPHA) -> dict:
    """The paired analysis of `metric` over the rows (see the module's docstring): {'metric', 'baseline' (its
    --norms entry, or None), 'small', 'large' (the batch sizes the batch-size tests and interactions compare),
    'level', 'alpha', 'correction': 'holm', 'family' (how many tests the correction counts), 'resolved' (how many
    it resolves), 'tests': [...]}. Each test: kind, norm, batch_size (vs_baseline) or small/large, what (the
    difference in words), n, seeds, values (per seed), mean, ci, p, p_holm, resolved, why (empty when
    resolved), shared (N's runs stand for every batch size), same_as (an interaction of a shared norm is the
    baseline's own batch-size test, N's values cancelling seed by seed: it is reported with that test's
    adjusted p, named here, and not counted twice)."""
    cells = seed_cells(rows, metric)
    shared = _shared_norms(rows)
    norms = list(dict.fromkeys(r["norm"] for r in rows))
    base = next((n for n in norms if is_baseline(n)), None)
    sizes = study_batch_sizes(rows)
    small, large = (sizes[0], sizes[-1]) if sizes else (None, None)
    tests = []

    def add(kind: str, norm: str, terms: list, what: str, **where) -> None:
        if any(not cell for _, cell in terms):
            return
        tests.append({"kind": kind, "norm": norm, **where, "what": what, **paired(terms, level),
                      "shared": norm in shared, "same_as": None})

    if base is not None:
        for b in sizes:
            for n in norms:
                if n != base and (base, b) in cells and (n, b) in cells:
                    add("vs_baseline", n, [(1, cells[base, b]), (-1, cells[n, b])], f"{base} − {n} at batch {b}",
                        batch_size=b)
    if small != large:
        for n in norms:
            if n not in shared and (n, small) in cells and (n, large) in cells:
                add("batch_size", n, [(1, cells[n, small]), (-1, cells[n, large])],
                    f"{n} at batch {small} − at batch {large}", small=small, large=large)
        if base is not None:
            for n in norms:
                keys = [(base, small), (n, small), (base, large), (n, large)]
                if n != base and all(k in cells for k in keys):
                    add("interaction", n, [(c, cells[k]) for c, k in zip((1, -1, -1, 1), keys, strict=True)],
                        f"({base} − {n} at batch {small}) − ({base} − {n} at batch {large})", small=small,
                        large=large)
    own = next((t for t in tests if t["kind"] == "batch_size" and t["norm"] == base), None)
    for t in tests:
        if t["kind"] == "interaction" and t["shared"] and own is not None and t["seeds"] == own["seeds"]:
            t["same_as"] = own
    family = [t for t in tests if t["same_as"] is None]
    for t, q in zip(family, holm([t["p"] for t in family]), strict=True):
        t["p_holm"] = q
    for t in tests:
        if t["same_as"] is not None:
            t["p_holm"] = t["same_as"]["p_holm"]
            t["same_as"] = t["same_as"]["what"]
        t["resolved"] = bool(math.isfinite(t["p_holm"]) and t["p_holm"] < alpha)
        if t["resolved"]:
            t["why"] = ""
        elif t["n"] < MIN_PAIRED:
            t["why"] = f"{t['n']} seed: no interval" if t["n"] == 1 else "no seed in common"
        else:
            t["why"] = f"Holm p = {t['p_holm']:.3g} ≥ {alpha}"
    counted = [t for t in family if math.isfinite(t["p"])]
    return {"metric": metric, "baseline": base, "small": small, "large": large, "level": level, "alpha": alpha,
            "correction": "holm", "family": len(counted), "resolved": sum(t["resolved"] for t in counted),
            "tests": tests}
