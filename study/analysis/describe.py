"""Descriptive tables per arm: the design as run, test accuracy, and mean curves per epoch."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from study.analysis.intervals import t_interval
from study.analysis.params import AnalysisParams
from study.analysis.tables import ARM_FACTORS, analysed, arm_label, arm_mask, arms_present, config_columns, distinct


def test_accuracy_by_arm(metrics: pd.DataFrame, params: AnalysisParams | None = None,
                         by: Sequence[str] = ()) -> pd.DataFrame:
    """Per arm (and per ``by`` column): n, mean test accuracy, t-based CI, and the paper's figure.

    Columns: activation, normalization, *by, n_trials, n, mean_test_acc,
    sd_test_acc, ci_low, ci_high, paper_test_acc.  The paper's number is shown
    only for the two arms it reported (``paper_test_acc[activation]`` of the
    claimed-faster and claimed-slower arm); NaN elsewhere.
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
        lo, hi = t_interval(acc, params.confidence)
        rec = dict(zip(keys, key))
        label = arm_label({k: str(rec[k]) for k in ARM_FACTORS if k in rec})
        rows.append({**rec, "n_trials": int(len(g)), "n": int(len(acc)),
                     "mean_test_acc": float(acc.mean()) if len(acc) else math.nan,
                     "sd_test_acc": float(acc.std(ddof=1)) if len(acc) > 1 else math.nan,
                     "ci_low": lo, "ci_high": hi, "paper_test_acc": paper.get(label, math.nan)})
    return pd.DataFrame(rows, columns=cols)


test_accuracy_by_arm.__test__ = False  # its name starts with "test": keep pytest from collecting it


def epoch_curves(epochs: pd.DataFrame, metrics: pd.DataFrame, column: str,
                 confidence: float = 0.95, by: Sequence[str] = ()) -> pd.DataFrame:
    """Mean and t-based CI of an epoch column per arm (and ``by``) and epoch, over analysed trials.

    Non-finite values are left out.  Columns: activation, normalization, *by,
    epoch, n, mean, ci_low, ci_high.
    """
    keys = [k for k in ARM_FACTORS if k in metrics.columns] + list(by)
    cols = [*keys, "epoch", "n", "mean", "ci_low", "ci_high"]
    ids = metrics.loc[metrics["in_analysis"], ["trial_id", *keys]]
    ep = epochs.assign(trial_id=epochs["trial_id"].astype(str))[["trial_id", "epoch", column]]
    ep = ep.merge(ids, on="trial_id", how="inner").sort_values(["trial_id", "epoch"], kind="mergesort")
    ep = ep.loc[np.isfinite(pd.to_numeric(ep[column], errors="coerce").astype(float))]
    rows = []
    for key, g in ep.groupby([*keys, "epoch"], sort=True):
        v = g[column].to_numpy(dtype=float)
        lo, hi = t_interval(v, confidence)
        rows.append({**dict(zip([*keys, "epoch"], key)), "n": len(v), "mean": float(v.mean()),
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
