"""Inference across specifications: a sign-flip permutation of per-seed differences, and which choice the
verdicts depend on.

The data are, per specification, the per-seed differences of the primary measure (claimed-faster arm minus
claimed-slower arm; ``comparison["metrics"][primary]["unit_differences"]``): a table with one row per seed
and one column per specification, missing where a specification has no pair at that seed.

**Joint null.** Under the sharp null that the arms do not differ in any specification, each seed's
differences are symmetric about zero; because specifications that share a seed share its batch order
(and often its initial weights), their differences at that seed are dependent, so the permutation flips
the sign of a seed's differences **jointly** in every specification that has the seed (Simonsohn, Simmons
& Nelson 2020 keep the dependence the same way, by resampling the units shared by all specifications).
Every sign vector is enumerated up to ``EXACT_MAX_SEEDS`` seeds, otherwise ``n_resamples`` are drawn (seeded).

**Statistics**, computed the same way on the data and on every flip:

* ``n_claimed`` / ``n_against``: specifications significant on the claimed / the other side. A
  specification is significant when its one-sample t-test on the per-seed differences gives p < alpha,
  i.e. its t interval excludes zero (the verdict also asks the Wilcoxon p to be below alpha, which the
  permutation does not recompute, so these counts can exceed the verdict counts by a few);
* ``n_claimed_sign``: specifications whose mean difference lies on the claimed side of zero;
* ``median_effect``: the median over specifications of the mean difference.

p-values: the share of flips whose count is at least the observed one (``median_effect``: whose
absolute median is at least the observed absolute median).  A naive count that treats the specifications
as independent (a binomial test of k significant out of n) is wrong when they are correlated: eight copies
of one specification are eight significant results but one piece of evidence; the joint flip sees that.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from study.analysis.params import AnalysisParams, metric_direction

EXACT_MAX_SEEDS = 16     # every sign vector (2^16 = 65,536) up to this many seeds
CHUNK = 4096             # sign vectors per matrix product


def seed_difference_table(entries: list[dict]) -> pd.DataFrame:
    """Seeds x specifications of per-seed differences (NaN where a specification lacks a seed).

    ``entries``: dicts with ``name`` and ``unit_differences`` (a list of ``{"seed": s, "diff": d}``).
    Seeds are matched as strings and sorted numerically when they all are numbers."""
    cols = {}
    for e in entries:
        diffs = {str(u["seed"]): float(u["diff"]) for u in e.get("unit_differences") or []
                 if u.get("diff") is not None and math.isfinite(u["diff"])}
        cols[e["name"]] = pd.Series(diffs, dtype=float)
    table = pd.DataFrame(cols)
    try:
        order = sorted(table.index, key=float)
    except ValueError:
        order = sorted(table.index)
    return table.loc[order] if len(table) else table


def _sign_vectors(n: int, params: AnalysisParams) -> tuple[np.ndarray, bool]:
    if n <= EXACT_MAX_SEEDS:
        codes = np.arange(2 ** n)[:, None] >> np.arange(n)
        return 1.0 - 2.0 * (codes & 1), True          # row 0 is the data itself (no flip)
    rng = np.random.default_rng(params.random_state)
    signs = 1.0 - 2.0 * rng.integers(0, 2, size=(params.n_resamples, n))
    return np.vstack([np.ones((1, n)), signs]), False  # the data counted as one draw


def _statistics(sums: np.ndarray, ss: np.ndarray, n: np.ndarray, crit: np.ndarray, claimed: float) -> dict:
    """The four statistics for each row of ``sums`` (flips x specifications)."""
    mean = sums / n
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.maximum(ss - n * mean ** 2, 0.0) / (n - 1)
        t = mean / np.sqrt(var / n)
        t = np.where(var > 0, t, np.where(mean == 0, 0.0, np.sign(mean) * np.inf))
    sig = np.abs(t) > crit
    side = np.sign(mean) == claimed
    return {"n_claimed": (sig & side).sum(axis=1), "n_against": (sig & ~side & (mean != 0)).sum(axis=1),
            "n_claimed_sign": (side & (mean != 0)).sum(axis=1), "median_effect": np.median(mean, axis=1)}


def joint_inference(table: pd.DataFrame, params: AnalysisParams, metric: str | None = None) -> dict | None:
    """The sign-flip permutation test across specifications (module docstring); None with fewer than two
    specifications that have at least two seeds."""
    metric = metric or params.primary_metric
    usable = [c for c in table.columns if table[c].notna().sum() >= 2]
    if len(usable) < 2:
        return None
    d = table[usable].dropna(how="all")
    present = d.notna().to_numpy()
    d0 = d.fillna(0.0).to_numpy(dtype=float)
    n = present.sum(axis=0).astype(float)
    ss = (d0 ** 2).sum(axis=0)
    alpha = 1 - params.confidence
    crit = stats.t.ppf(1 - alpha / 2, n - 1)
    claimed = -1.0 if metric_direction(metric) == "lower" else 1.0
    signs, exact = _sign_vectors(len(d), params)
    parts = [_statistics(signs[i:i + CHUNK] @ d0, ss, n, crit, claimed) for i in range(0, len(signs), CHUNK)]
    null = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    observed = {k: v[0] for k, v in null.items()}
    p = {k: float(np.mean(null[k] >= observed[k])) for k in ("n_claimed", "n_against", "n_claimed_sign")}
    p["median_effect"] = float(np.mean(np.abs(null["median_effect"]) >= abs(observed["median_effect"]) - 1e-12))
    n_spec = len(usable)
    naive = {k: float(stats.binomtest(int(observed[k]), n_spec, alpha / 2, alternative="greater").pvalue)
             for k in ("n_claimed", "n_against")}
    return {
        "metric": metric, "specifications": usable, "n_specifications": n_spec, "n_seeds": int(len(d)),
        "method": "sign-flip permutation of per-seed differences, each seed flipped jointly in every "
                  "specification that has it" + (" (every sign vector enumerated)" if exact else
                                                 f" ({params.n_resamples} random sign vectors, seed "
                                                 f"{params.random_state}, the data counted as one)"),
        "exact": exact, "n_permutations": int(len(signs)), "alpha": alpha,
        "claimed_side": "negative" if claimed < 0 else "positive",
        "rule": "a specification counts as significant when the one-sample t-test of its per-seed "
                "differences gives p < alpha (its t interval excludes zero)",
        "observed": {k: (float(v) if k == "median_effect" else int(v)) for k, v in observed.items()},
        "p_values": p,
        "null_quantiles": {k: [float(q) for q in np.quantile(null[k], [0.5, 0.95, 0.99])]
                           for k in ("n_claimed", "n_against")},
        "naive_binomial_p": naive,
        "seed_correlation": _mean_correlation(d),
    }


def _mean_correlation(d: pd.DataFrame) -> float | None:
    """Mean pairwise correlation of the specifications' per-seed differences (over seeds both have)."""
    c = d.corr(min_periods=3).to_numpy()
    vals = c[np.triu_indices_from(c, 1)]
    vals = vals[np.isfinite(vals)]
    return float(vals.mean()) if len(vals) else None


def _entropy(labels: list[str]) -> float:
    counts = np.array(list(pd.Series(labels).value_counts()), dtype=float)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def depends_on(entries: list[dict], axes: list[str]) -> dict | None:
    """The choice whose levels split the verdicts most: the axis with the largest information gain
    H(verdict) - sum_l (n_l / n) H(verdict | level l), ties broken by the larger spread of the mean
    effect between its levels, then by name.  None when every specification has the same verdict."""
    labels = [e["verdict"]["label"] for e in entries]
    if len(set(labels)) < 2:
        return None
    total = _entropy(labels)
    scored = []
    for axis in axes:
        levels: dict[str, list[dict]] = {}
        for e in entries:
            levels.setdefault(str(e["settings"].get(axis)), []).append(e)
        if len(levels) < 2:
            continue
        gain = total - sum(len(g) / len(entries) * _entropy([x["verdict"]["label"] for x in g])
                           for g in levels.values())
        means = [np.nanmean([x["primary"]["mean_diff"] if x["primary"]["mean_diff"] is not None else np.nan
                             for x in g]) if any(x["primary"]["mean_diff"] is not None for x in g) else np.nan
                 for g in levels.values()]
        spread = float(np.nanmax(means) - np.nanmin(means)) if np.isfinite(means).any() else 0.0
        by = [{"level": lv, "n": len(g), "verdicts": dict(pd.Series([x["verdict"]["label"] for x in g])
                                                           .value_counts().sort_index()),
               "mean_effect": None if not np.isfinite(m) else float(m)} for (lv, g), m in zip(levels.items(), means)]
        scored.append((-round(gain, 12), -spread, axis, gain, by))
    if not scored:
        return None
    scored.sort(key=lambda s: s[:3])
    _, _, axis, gain, by = scored[0]
    return {"axis": axis, "information_gain": gain, "verdict_entropy": total, "levels": by,
            "ranking": [{"axis": s[2], "information_gain": s[3]} for s in scored]}
