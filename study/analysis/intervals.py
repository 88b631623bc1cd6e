"""Intervals and tests: the bootstrap interval of a mean, Wilcoxon signed-rank, Kaplan-Meier, log-rank.

Thin wrappers over scipy.stats that return plain dicts and say why when a number cannot be computed
(too few values, no spread, nothing reached), so the report can print the reason instead of a NaN.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

from study.analysis.params import AnalysisParams


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]


def bootstrap_mean_ci(values: Sequence[float], params: AnalysisParams) -> dict:
    """Bootstrap CI of a mean (BCa, percentile fallback), seeded by ``params.random_state``.

    ``scipy.stats.bootstrap`` with ``params.n_resamples`` resamples at ``params.confidence``
    (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 14 for BCa).  With fewer than
    two values there is no interval; when all values are equal the interval collapses to the point.
    """
    x = _finite(values)
    if len(x) < 2:
        return {"low": None, "high": None, "method": "none (fewer than two values)"}
    if np.ptp(x) == 0:
        return {"low": float(x[0]), "high": float(x[0]),
                "method": "degenerate (all values equal; interval collapses to the point)"}
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap((x,), np.mean, n_resamples=params.n_resamples,
                                  confidence_level=params.confidence, method=method,
                                  rng=np.random.default_rng(params.random_state))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return {"low": lo, "high": hi, "method": f"bootstrap {method}"}
    return {"low": None, "high": None, "method": "bootstrap failed"}


def min_wilcoxon_p(n: int) -> float:
    """Smallest two-sided exact Wilcoxon signed-rank p-value possible with n non-zero differences: 2 / 2^n."""
    return min(1.0, 2.0 / 2 ** n) if n > 0 else 1.0


def wilcoxon_test(diffs: Sequence[float]) -> dict:
    """Two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, zero differences dropped).

    p is None (with a reason in ``note``) when it cannot be computed.
    """
    d = _finite(diffs)
    nonzero = int((d != 0).sum())
    if len(d) == 0:
        return {"p_value": None, "note": "no paired differences"}
    if nonzero == 0:
        return {"p_value": None, "note": "all differences are 0"}
    if nonzero < 2:
        return {"p_value": None, "note": "fewer than 2 non-zero differences"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    note = "zero differences dropped" if nonzero < len(d) else ""
    floor = min_wilcoxon_p(nonzero)
    if floor >= 0.01:
        note = (note + "; " if note else "") + f"with {nonzero} non-zero differences p cannot go below {floor:.3g}"
    return {"p_value": p if math.isfinite(p) else None, "note": note}


def difference_stats(diffs: Sequence[float], params: AnalysisParams) -> dict:
    """Mean of paired differences with its bootstrap CI (``bootstrap_mean_ci``) and two-sided Wilcoxon p
    (``wilcoxon_test``): keys mean, ci_low, ci_high, ci_method, p_value, p_note."""
    d = _finite(diffs)
    ci = bootstrap_mean_ci(d, params)
    wil = wilcoxon_test(d)
    return {"mean": float(d.mean()) if len(d) else None, "ci_low": ci["low"], "ci_high": ci["high"],
            "ci_method": ci["method"], "p_value": wil["p_value"], "p_note": wil["note"]}


def excludes_zero(stats: dict) -> bool:
    """True when an interval (``ci_low``, ``ci_high``) exists and lies entirely on one side of 0."""
    return stats["ci_low"] is not None and (stats["ci_low"] > 0 or stats["ci_high"] < 0)


def shows_effect(stats: dict, alpha: float) -> bool:
    """The report's rule for "this difference is real": the interval excludes 0 and Wilcoxon p < alpha."""
    return excludes_zero(stats) and stats["p_value"] is not None and stats["p_value"] < alpha


def prob_better(diffs: Sequence[float], direction: str) -> dict:
    """Share of pairs in which the claimed-faster arm is better, ties counting half: (better + ties/2) / n."""
    d = _finite(diffs)
    if len(d) == 0:
        return {"prob": None, "n_better": 0, "n_ties": 0, "n": 0}
    better = int(((d < 0) if direction == "lower" else (d > 0)).sum())
    ties = int((d == 0).sum())
    return {"prob": (better + 0.5 * ties) / len(d), "n_better": better, "n_ties": ties, "n": len(d)}


def kaplan_meier(times: Sequence[float], reached: Sequence[bool]) -> dict:
    """Kaplan-Meier estimate (``scipy.stats.ecdf`` on right-censored data) of the fraction of trials that
    reached the target by each epoch, and the median epochs (first epoch where the fraction is >= 1/2)."""
    t = np.asarray(times, dtype=float)
    e = np.asarray(reached, dtype=bool)
    if len(t) == 0:
        return {"n": 0, "n_reached": 0, "n_censored": 0, "epochs": [], "fraction_reached": [],
                "median_epochs": None}
    res = stats.ecdf(stats.CensoredData(uncensored=t[e], right=t[~e]))
    q = res.sf.quantiles.astype(float)
    frac = 1.0 - res.sf.probabilities.astype(float)
    reached_half = q[frac >= 0.5 - 1e-9]
    return {"n": int(len(t)), "n_reached": int(e.sum()), "n_censored": int((~e).sum()),
            "epochs": q.tolist(), "fraction_reached": frac.tolist(),
            "median_epochs": float(reached_half[0]) if len(reached_half) else None}


def logrank_test(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> dict:
    """Two-sided log-rank test (``scipy.stats.logrank``) between two (times, reached) samples."""
    if len(a[0]) == 0 or len(b[0]) == 0:
        return {"statistic": None, "p_value": None, "note": "an arm has no trials"}
    if not (np.any(a[1]) or np.any(b[1])):
        return {"statistic": None, "p_value": None, "note": "no trial in either arm reached the target"}
    da = stats.CensoredData(uncensored=a[0][a[1]], right=a[0][~a[1]])
    db = stats.CensoredData(uncensored=b[0][b[1]], right=b[0][~b[1]])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.logrank(da, db)
    except (ValueError, ZeroDivisionError) as exc:  # pragma: no cover - defensive
        return {"statistic": None, "p_value": None, "note": f"log-rank failed: {exc}"}
    stat, p = float(res.statistic), float(res.pvalue)
    if not (math.isfinite(stat) and math.isfinite(p)):
        return {"statistic": None, "p_value": None,
                "note": "no variance between the arms (identical event times)"}
    return {"statistic": stat, "p_value": p, "note": ""}
