"""Intervals and tests: t and bootstrap intervals of a mean, Wilcoxon signed-rank, Kaplan-Meier, RMST,
log-rank.

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


def _trivial_interval(x: np.ndarray) -> dict | None:
    """No interval from fewer than two values; a point when all values are equal; else None."""
    if len(x) < 2:
        return {"low": None, "high": None, "method": "none (fewer than two values)"}
    if np.ptp(x) == 0:
        return {"low": float(x[0]), "high": float(x[0]),
                "method": "degenerate (all values equal; interval collapses to the point)"}
    return None


def bootstrap_mean_ci(values: Sequence[float], params: AnalysisParams) -> dict:
    """Bootstrap CI of a mean (BCa, percentile fallback), seeded by ``params.random_state``.

    ``scipy.stats.bootstrap`` with ``params.n_resamples`` resamples at ``params.confidence``
    (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 14 for BCa).  With fewer than
    two values there is no interval; when all values are equal the interval collapses to the point.
    """
    x = _finite(values)
    if (trivial := _trivial_interval(x)) is not None:
        return trivial
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


SMALL_N = 20          # below this many units a difference gets a t interval, BCa from here on
EXACT_MAX_N = 50      # exact Wilcoxon distribution up to this many non-zero differences (without ties)
PERMUTATION_MAX_N = 16  # with ties: every sign flip enumerated (2^16 = 65,536) up to this many


def min_wilcoxon_p(n: int) -> float:
    """Smallest two-sided exact Wilcoxon signed-rank p-value possible with n non-zero differences: 2 / 2^n
    (``math.ldexp``: no overflow however large n; 0.0 once it is below the smallest float)."""
    return min(1.0, math.ldexp(1.0, 1 - int(n))) if n > 0 else 1.0


def t_mean_ci(values: Sequence[float], params: AnalysisParams) -> dict:
    """Student-t interval of a mean (``scipy.stats.t``), for differences from fewer than ``SMALL_N`` units:
    a bootstrap interval from 10 values under-covers (Hesterberg 2015), a t interval does not under
    normal errors and is close otherwise (tests/test_analysis.py draws 2,000 null samples)."""
    x = _finite(values)
    if (trivial := _trivial_interval(x)) is not None:
        return trivial
    half = stats.t.ppf(0.5 + params.confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return {"low": float(x.mean() - half), "high": float(x.mean() + half), "method": f"t (n = {len(x)})"}


def difference_ci(values: Sequence[float], params: AnalysisParams) -> dict:
    """Interval of a mean paired difference: t below ``SMALL_N`` units, bootstrap BCa from there on."""
    return t_mean_ci(values, params) if len(_finite(values)) < SMALL_N else bootstrap_mean_ci(values, params)


def wilcoxon_test(diffs: Sequence[float]) -> dict:
    """Two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``), its method chosen here, not by SciPy:
    ``zero_method="wilcox"`` (zero differences dropped), ``method="exact"`` for at most ``EXACT_MAX_N``
    non-zero differences without ties among their absolute values; with ties, every sign flip of the
    tied (mid-)ranks enumerated (``scipy.stats.PermutationMethod``, exact) up to ``PERMUTATION_MAX_N``
    differences; ``"approx"`` (normal approximation, tie-corrected) beyond.  p is None (with a reason in ``note``) when it cannot be computed.
    """
    d = _finite(diffs)
    nonzero = int((d != 0).sum())
    if len(d) == 0:
        return {"p_value": None, "note": "no paired differences"}
    if nonzero == 0:
        return {"p_value": None, "note": "all differences are 0"}
    if nonzero < 2:
        return {"p_value": None, "note": "fewer than 2 non-zero differences"}
    nz = d[d != 0]
    ties = len(np.unique(np.abs(nz))) < len(nz)
    if not ties and nonzero <= EXACT_MAX_N:
        method, how = "exact", ""
    elif ties and nonzero <= PERMUTATION_MAX_N:
        method, how = stats.PermutationMethod(n_resamples=2 ** nonzero), "exact over sign flips (tied differences)"
    else:
        method, how = "approx", "normal approximation" + (" (tied differences)" if ties else "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(method, stats.PermutationMethod):
            p = _signflip_wilcoxon_p(nz)
        else:
            p = float(stats.wilcoxon(nz, zero_method="wilcox", alternative="two-sided", method=method).pvalue)
    note = "; ".join(x for x in ("zero differences dropped" if nonzero < len(d) else "", how) if x)
    floor = min_wilcoxon_p(nonzero)
    if floor >= 0.01:
        note = (note + "; " if note else "") + f"with {nonzero} non-zero differences p cannot go below {floor:.3g}"
    return {"p_value": p if math.isfinite(p) else None, "note": note}


def _signflip_wilcoxon_p(nz: np.ndarray) -> float:
    """Two-sided p of the signed-rank sum over every sign flip of the (tied, mid-)ranks: what
    ``stats.wilcoxon(..., method=PermutationMethod(n_resamples=2 ** n))`` computes, with the statistic
    vectorised over the flips (SciPy calls its own once per flip)."""
    ranks = stats.rankdata(np.abs(nz))

    def r_plus(x: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.sum((np.moveaxis(x, axis, -1) > 0) * ranks, axis=-1)

    return float(stats.permutation_test((nz,), r_plus, permutation_type="samples", vectorized=True,
                                        n_resamples=2 ** len(nz), alternative="two-sided").pvalue)


def difference_stats(diffs: Sequence[float], params: AnalysisParams) -> dict:
    """Mean of paired differences with its interval (``difference_ci``: t below 20 units, BCa above) and
    two-sided Wilcoxon p (``wilcoxon_test``): keys mean, ci_low, ci_high, ci_method, p_value, p_note."""
    d = _finite(diffs)
    ci = difference_ci(d, params)
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


def rmst_batch(times: np.ndarray, reached: np.ndarray, budget: float) -> np.ndarray:
    """``rmst`` of each row of (resamples, n) arrays at once."""
    t = np.atleast_2d(np.asarray(times, dtype=float))
    e = np.atleast_2d(np.asarray(reached, dtype=bool))
    order = np.lexsort((~e, t), axis=-1)           # at equal times events come before censorings
    t, e = np.take_along_axis(t, order, -1), np.take_along_axis(e, order, -1)
    at_risk = t.shape[1] - np.arange(t.shape[1])
    surv = np.cumprod(np.where(e, 1 - 1 / at_risk, 1.0), axis=-1)
    knots = np.concatenate([np.zeros((len(t), 1)), np.minimum(t, budget), np.full((len(t), 1), budget)], axis=-1)
    levels = np.concatenate([np.ones((len(t), 1)), surv], axis=-1)
    return np.sum(levels * np.diff(knots, axis=-1), axis=-1)


def rmst(times: Sequence[float], reached: Sequence[bool], budget: float) -> float:
    """Restricted mean time to target up to ``budget``: the area under the Kaplan-Meier curve of "not yet
    reached" from 0 to the budget (censored times as ``kaplan_meier``).  Without censoring before the
    budget it is the mean of min(time, budget)."""
    if len(times) == 0:
        return math.nan
    return float(rmst_batch(np.asarray(times, float)[None], np.asarray(reached, bool)[None], budget)[0])


CHUNK_CELLS = 2_000_000    # resamples x observations per block of the RMST bootstrap / permutation


def _sorted_order(t: np.ndarray, e: np.ndarray) -> np.ndarray:
    return np.lexsort((~e, t))                      # at equal times events come before censorings


def weighted_rmst(t_sorted: np.ndarray, e_sorted: np.ndarray, w: np.ndarray, budget: float) -> np.ndarray:
    """``rmst`` of each row of observation weights ``w`` (rows x m) over one sample sorted by ``_sorted_order``:
    a weight is how often an observation is in that row's sample (a bootstrap count, or 0/1 for which arm
    it belongs to), so the data are sorted once, not once a row.  An event of weight c with R at risk
    multiplies the survival by 1 - c/R, the product of c unit events' factors."""
    at_risk = np.cumsum(w[:, ::-1], axis=1)[:, ::-1]
    factor = np.where(e_sorted & (w > 0), 1 - w / np.maximum(at_risk, 1e-300), 1.0)
    surv = np.cumprod(factor, axis=1)
    knots = np.concatenate([[0.0], np.minimum(t_sorted, budget), [budget]])
    widths = np.diff(knots)
    return widths[0] + surv @ widths[1:]


def _chunks(rows: int, cols: int):
    step = max(1, CHUNK_CELLS // max(cols, 1))
    return [(i, min(rows, i + step)) for i in range(0, rows, step)]


def rmst_difference(faster: tuple[np.ndarray, np.ndarray], slower: tuple[np.ndarray, np.ndarray], budget: float,
                    params: AnalysisParams) -> dict:
    """RMST of the faster arm minus that of the slower, trials paired by position (one per seed): a
    percentile interval from ``n_resamples`` bootstrap draws of the pairs, and a two-sided p from
    swapping the arms within pairs at random (a sign-flip permutation test; exact enumeration up to 12
    pairs).  Both run in blocks of ``CHUNK_CELLS`` over weights of the once-sorted data
    (``weighted_rmst``), so memory and time grow linearly with the pairs."""
    (tf, ef), (ts, es) = faster, slower
    tf, ts = np.asarray(tf, float), np.asarray(ts, float)
    ef, es = np.asarray(ef, bool), np.asarray(es, bool)
    n = len(tf)
    out = {"mean": None, "ci_low": None, "ci_high": None, "p_value": None, "n": n,
           "faster_rmst": rmst(tf, ef, budget) if n else None, "slower_rmst": rmst(ts, es, budget) if n else None}
    if n == 0:
        return {**out, "ci_method": "none (no pairs)", "p_note": "no pairs"}
    est = out["faster_rmst"] - out["slower_rmst"]
    out["mean"] = est
    if n < 2:
        return {**out, "ci_method": "none (fewer than two pairs)", "p_note": "fewer than two pairs"}
    rng = np.random.default_rng(params.random_state)
    of, os_ = _sorted_order(tf, ef), _sorted_order(ts, es)
    boot = np.empty(params.n_resamples)
    for a, b in _chunks(params.n_resamples, n):
        idx = rng.integers(0, n, size=(b - a, n))
        w = np.bincount((idx + n * np.arange(b - a)[:, None]).ravel(), minlength=(b - a) * n)
        w = w.reshape(b - a, n).astype(float)
        boot[a:b] = (weighted_rmst(tf[of], ef[of], w[:, of], budget)
                     - weighted_rmst(ts[os_], es[os_], w[:, os_], budget))
    lo, hi = np.quantile(boot, [(1 - params.confidence) / 2, (1 + params.confidence) / 2])
    exact = n <= 12
    rows = 2 ** n if exact else params.n_resamples
    tp, ep = np.concatenate([tf, ts]), np.concatenate([ef, es])
    op = _sorted_order(tp, ep)
    null = np.empty(rows)
    for a, b in _chunks(rows, 2 * n):
        flips = (((np.arange(a, b)[:, None] >> np.arange(n)) & 1) if exact
                 else rng.integers(0, 2, size=(b - a, n))).astype(bool)
        in_f = np.concatenate([~flips, flips], axis=1).astype(float)[:, op]   # which pooled trials are "faster"
        null[a:b] = weighted_rmst(tp[op], ep[op], in_f, budget) - weighted_rmst(tp[op], ep[op], 1 - in_f, budget)
    p = float(np.mean(np.abs(null) >= abs(est) - 1e-12))
    return {**out, "ci_low": float(lo), "ci_high": float(hi),
            "ci_method": f"bootstrap percentile over pairs ({params.n_resamples} resamples)",
            "p_value": p, "p_note": "sign-flip permutation" + (" (exact)" if exact else "")}
