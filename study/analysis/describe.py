"""Descriptive tables per arm: the design as run, test accuracy, whether the arms learned, mean curves per epoch."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from study.analysis.intervals import bootstrap_mean_ci
from study.analysis.params import AnalysisParams
from study.analysis.tables import (
    ARM_FACTORS,
    analysed,
    arm_label,
    arm_mask,
    arms_present,
    config_columns,
    distinct,
    seed_means,
)


def _interval(values: np.ndarray, params: AnalysisParams) -> tuple[float, float]:
    ci = bootstrap_mean_ci(values, params)
    return (math.nan, math.nan) if ci["low"] is None else (ci["low"], ci["high"])


def test_accuracy_by_arm(metrics: pd.DataFrame, params: AnalysisParams | None = None,
                         by: Sequence[str] = ()) -> pd.DataFrame:
    """Per arm (and per ``by`` column): n, mean test accuracy, its bootstrap CI over seeds, the paper's figure.

    Columns: activation, normalization, *by, n_trials, n, mean_test_acc,
    sd_test_acc, ci_low, ci_high, paper_test_acc.  ``n`` counts trials with a
    test accuracy; the mean and its interval are over seeds (a seed's trials
    averaged first), the interval from ``bootstrap_mean_ci``: a bootstrap of a
    mean never leaves the range of the values, so it stays inside [0, 1].  The
    paper's number is shown only for the two arms it reported
    (``paper_test_acc[activation]`` of the claimed-faster and claimed-slower
    arm); NaN elsewhere.
    """
    params = params or AnalysisParams()
    keys = [k for k in ARM_FACTORS if k in metrics.columns] + [b for b in by if b in metrics.columns]
    cols = [*keys, "n_trials", "n", "mean_test_acc", "sd_test_acc", "ci_low", "ci_high", "paper_test_acc"]
    used = analysed(metrics)
    if used.empty:
        return pd.DataFrame(columns=cols)
    paper = {arm_label({k: str(v) for k, v in a.items() if k in ARM_FACTORS}):
             params.paper_test_acc.get(str(a.get("activation")), math.nan)
             for a in (params.faster_arm, params.slower_arm)}
    rows = []
    for key, g in used.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        acc = pd.to_numeric(g["test_acc"], errors="coerce").to_numpy(dtype=float)
        acc = acc[np.isfinite(acc)]
        units = seed_means(g, "test_acc")
        lo, hi = _interval(units, params)
        rec = dict(zip(keys, key))
        label = arm_label({k: str(rec[k]) for k in ARM_FACTORS if k in rec})
        rows.append({**rec, "n_trials": int(len(g)), "n": int(len(acc)),
                     "mean_test_acc": float(units.mean()) if len(units) else math.nan,
                     "sd_test_acc": float(acc.std(ddof=1)) if len(acc) > 1 else math.nan,
                     "ci_low": lo, "ci_high": hi, "paper_test_acc": paper.get(label, math.nan)})
    return pd.DataFrame(rows, columns=cols)


test_accuracy_by_arm.__test__ = False  # its name starts with "test": keep pytest from collecting it


def learning_check(metrics: pd.DataFrame, params: AnalysisParams | None = None) -> dict:
    """Did the two compared arms learn?  Each arm's accuracy against chance, before any verdict.

    Per arm (claimed-faster, claimed-slower; analysed trials only): the measure is test accuracy, or best
    validation accuracy when the arm has no test figure; its mean over seeds and bootstrap interval
    (``bootstrap_mean_ci``).  The arm learned when the low end of the interval (its mean when there is
    no interval, i.e. one seed) is above ``params.learned_threshold`` = 1 / ``n_classes`` +
    ``learned_margin``.  ``all_learned`` is False when an arm did not learn or has no trials.
    """
    params = params or AnalysisParams()
    used = analysed(metrics)
    arms = []
    for role, arm in (("faster", params.faster_arm), ("slower", params.slower_arm)):
        g = used.loc[arm_mask(used, arm)]
        measure = "test_acc" if len(seed_means(g, "test_acc")) else "best_val_acc"
        units = seed_means(g, measure)
        ci = bootstrap_mean_ci(units, params)
        mean = float(units.mean()) if len(units) else None
        low = ci["low"] if ci["low"] is not None else mean
        arms.append({"role": role, "arm": arm_label(arm), "measure": measure, "n_seeds": int(len(units)),
                     "mean": mean, "ci_low": ci["low"], "ci_high": ci["high"],
                     "learned": low is not None and low > params.learned_threshold})
    return {"chance": params.chance_acc, "threshold": params.learned_threshold, "arms": arms,
            "all_learned": all(a["learned"] for a in arms)}


def epoch_curves(epochs: pd.DataFrame, metrics: pd.DataFrame, column: str,
                 params: AnalysisParams | None = None, by: Sequence[str] = ()) -> pd.DataFrame:
    """Mean and bootstrap CI over seeds of an epoch column, per arm (and ``by``) and epoch, analysed trials only.

    Non-finite values are left out; the interval is ``bootstrap_mean_ci`` of the per-seed means (NaN
    with fewer than two seeds), so an accuracy band stays inside [0, 1].  Columns: activation,
    normalization, *by, epoch, n, mean, ci_low, ci_high (``n`` counts trials).
    """
    params = params or AnalysisParams()
    keys = [k for k in ARM_FACTORS if k in metrics.columns] + list(by)
    cols = [*keys, "epoch", "n", "mean", "ci_low", "ci_high"]
    ids = metrics.loc[metrics["in_analysis"], ["trial_id", "seed", *keys]]
    ep = epochs.assign(trial_id=epochs["trial_id"].astype(str))[["trial_id", "epoch", column]]
    ep = ep.merge(ids, on="trial_id", how="inner").sort_values(["trial_id", "epoch"], kind="mergesort")
    ep = ep.loc[np.isfinite(pd.to_numeric(ep[column], errors="coerce").astype(float))]
    rows = []
    for key, g in ep.groupby([*keys, "epoch"], sort=True):
        units = seed_means(g, column)
        lo, hi = _interval(units, params)
        rows.append({**dict(zip([*keys, "epoch"], key)), "n": len(g), "mean": float(units.mean()),
                     "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=cols)


def design_summary(metrics: pd.DataFrame, params: AnalysisParams) -> dict:
    """Counts and grid of the experiment as run."""
    cfg = config_columns(metrics)
    arms = []
    for arm in arms_present(metrics.assign(in_analysis=True), params):
        g = metrics.loc[arm_mask(metrics, arm)]
        arms.append({**arm, "label": arm_label(arm), "n_trials": int(len(g)),
                     "n_analysed": int(g["in_analysis"].sum()), "n_diverged": int(g["diverged"].sum()),
                     "status_counts": {str(k): int(v) for k, v in sorted(g["status"].value_counts().items())},
                     "seeds": distinct(g["seed"]),
                     "lrs": distinct(g["lr"]) if "lr" in g else []})
    axes = {c: distinct(metrics[c]) for c in cfg if c not in ARM_FACTORS}
    excluded = metrics.loc[~metrics["in_analysis"], ["trial_id", "status", "excluded_reason"]]
    return {
        "n_trials": int(len(metrics)), "n_analysed": int(metrics["in_analysis"].sum()),
        "n_diverged": int(metrics["diverged"].sum()),
        "status_counts": {str(k): int(v) for k, v in sorted(metrics["status"].value_counts().items())},
        "arms": arms, "config_axes": axes,
        "epochs_planned": distinct(metrics["epochs_planned"]),
        "max_epochs_run": int(metrics["epochs_run"].max()) if len(metrics) else 0,
        "excluded_trials": excluded.sort_values("trial_id").to_dict("records"),
        "diverged_trials": sorted(metrics.loc[metrics["diverged"], "trial_id"].tolist()),
        "auc_partial_trials": sorted(metrics.loc[metrics["auc_partial"].astype(bool), "trial_id"].tolist()),
    }
