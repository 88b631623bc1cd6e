"""Everything the report needs, in one JSON-serializable dict (``summary.json``)."""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from study.analysis.comparison import compare_arms
from study.analysis.convergence import convergence_metrics
from study.analysis.curves import evals_per_epoch, has_steps, prepare_curves, steps_per_epoch
from study.analysis.panel import measure_panel
from study.analysis.describe import design_summary, test_accuracy_by_arm
from study.analysis.factorial import factorial_by, factorial_effects
from study.analysis.params import AnalysisParams, metric_direction
from study.analysis.sequential import anytime_summary
from study.analysis.specifications import analyse_specifications
from study.analysis.tables import ARM_FACTORS, config_columns
from study.analysis.verdict import verdict


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [_jsonable(v) for v in (sorted(x, key=str) if isinstance(x, set) else x)]
    if isinstance(x, (np.ndarray, pd.Series)):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, numbers.Real):
        return float(x) if math.isfinite(x) else None
    if x is None or x is pd.NA or x is pd.NaT:
        return None
    if isinstance(x, str):
        return x
    return str(x)


def summarize(epochs: pd.DataFrame, trials: pd.DataFrame, params: AnalysisParams | None = None, *,
              metrics: pd.DataFrame | None = None, progress: dict | None = None) -> dict:
    """Everything the report needs, as plain JSON-serializable data (None for missing numbers).

    Deterministic: every bootstrap is seeded with ``params.random_state``.
    Keys: params, design, comparison, panel (the measure panel, see ``study.analysis.panel``),
    resolution (evaluations and steps per epoch, the common budget), factorial (per metric: primary,
    epochs_to_target, test_acc; None when the grid is not crossed),
    factorial_by (the primary metric's 2x2 split per level of each extra pair
    axis such as weights, see ``factorial_by``), test_accuracy, verdict (of the pooled comparison: every
    trial, pairs on seed and the shared axes), specifications (one entry per specification, see
    ``study.analysis.specifications``) and multiverse (the analysis across them; None with one).
    ``metrics``: the trials' measures when already computed (``convergence_metrics`` of the same tables).
    ``progress``: how far the study is (``study.experiment.progress``); before it is complete the summary is
    ``partial`` (see ``withhold_verdicts``).
    """
    params = params or AnalysisParams()
    curves = prepare_curves(epochs)
    metrics = convergence_metrics(curves, trials, params) if metrics is None else metrics
    if metrics.empty or "in_analysis" not in metrics:
        comparison = {"status": "missing_arm", "message": "there are no trials to analyse.", "metrics": {},
                      "survival": {}, "factorial": None, "unpaired": [], "n_pairs": 0}
        design, test_acc, factorial, factorial_by_axis = {"n_trials": 0}, [], {}, {}
        specifications, multiverse = [], None
    else:
        comparison = compare_arms(metrics, params)
        design = design_summary(metrics, params)
        test_acc = test_accuracy_by_arm(metrics, params, by=varying_axes(metrics)).to_dict("records")
        factorial = {m: factorial_effects(metrics, params, m)
                     for m in dict.fromkeys([params.primary_metric, "val_loss_auc", "epochs_to_target", "test_acc"])}
        factorial_by_axis = {axis: factorial_by(metrics, params, params.primary_metric, axis)
                             for axis in comparison["pair_on"] if axis != "seed"}
        specifications, multiverse = analyse_specifications(metrics, params, pooled=comparison)
    panel = comparison.get("panel") or measure_panel(comparison, params)
    resolution = {"evaluations_per_epoch": evals_per_epoch(curves), "steps_per_epoch": steps_per_epoch(curves),
                  "has_steps": has_steps(curves), "n_evaluations": int(len(curves)),
                  "has_val_nll_ts": bool("val_nll_ts" in curves
                                         and pd.to_numeric(curves["val_nll_ts"], errors="coerce").notna().any()),
                  "budget_epochs": metrics.attrs.get("budget_epochs")}
    summary = _jsonable({
        "params": params.to_dict(), "design": design, "comparison": comparison, "panel": panel,
        "resolution": resolution,
        "factorial": factorial, "factorial_by": {k: v for k, v in factorial_by_axis.items() if v},
        "test_accuracy": test_acc, "verdict": verdict(comparison, params),
        "anytime": anytime_primary(comparison, params),
        "specifications": specifications, "multiverse": multiverse,
    })
    return withhold_verdicts(summary, progress) if progress and not progress.get("complete") else summary


def withhold_verdicts(summary: dict, progress: dict) -> dict:
    """A summary of a study still running (or stopped before its end): ``partial`` holds the progress, and
    every verdict (pooled, per specification, across them) says "partial" instead of a fixed-n verdict,
    because a fixed-sample test read while results arrive, and read again until it says what one hopes,
    is wrong more often than its level says. The numbers stay; the anytime-valid interval
    (``anytime``) is the one valid at this look."""
    more = "at least " if progress.get("adaptive") else ""
    counts = (f"{progress['ended']} of {more}{progress['planned']} planned trials have ended "
              f"({progress['started'] - progress['ended']} of the {progress['started']} started have not)")
    iv = (summary.get("anytime") or {}).get("interval_now") or {}
    anytime = ("" if iv.get("low") is None else
               f" The anytime-valid {summary['params'].get('confidence', 0.95):.0%} interval so far, valid at every "
               f"look: [{iv['low']:+.3g}, {iv['high']:+.3g}] ({iv.get('verdict')}).")
    text = (f"Partial report: {counts}. No fixed-n verdict is given before the study ends: a fixed-sample test "
            f"looked at while results arrive gives false positives more often than its level.{anytime}")
    out = {**summary, "partial": dict(progress)}
    out["verdict"] = {"label": "partial", "reason": counts, "text": text}
    out["specifications"] = [{**e, "verdict": {**e["verdict"], "label": "partial", "reason": None,
                                               "text": "Partial: no fixed-n verdict before the study ends."}}
                             for e in summary.get("specifications") or []]
    if summary.get("multiverse"):
        out["multiverse"] = {**summary["multiverse"], "label": "partial",
                             "text": f"Partial report across {len(out['specifications'])} specifications: {counts}; "
                                     "no verdict per specification before the study ends."}
    return out


def anytime_primary(comparison: dict, params: AnalysisParams) -> dict:
    """The anytime-valid confidence sequence (``study.analysis.sequential``, Lai's t-mixture) for the mean
    per-seed difference of the primary measure, seeds in their order: valid however often the study was
    looked at or stopped, so a partial report or `hwr-study status` may show it; beside the fixed-n test."""
    units = (comparison.get("metrics") or {}).get(params.primary_metric, {}).get("unit_differences") or []
    units = sorted(units, key=lambda u: (str(u.get("seed", "")).zfill(12), str(u)))
    diffs = [u["diff"] for u in units if u.get("diff") is not None and math.isfinite(u["diff"])]
    return {"metric": params.primary_metric,
            **anytime_summary(diffs, alpha=1 - params.confidence, direction=metric_direction(params.primary_metric))}


def varying_axes(metrics: pd.DataFrame) -> list[str]:
    """Config columns besides the arm factors and seed (lr, weights, ...) that take several values within
    some arm among the analysed trials: the test-accuracy table is split by them."""
    used = metrics.loc[metrics["in_analysis"]]
    keys = [k for k in ARM_FACTORS if k in used]
    return [c for c in config_columns(used) if c not in (*ARM_FACTORS, "seed")
            and len(used) and used.groupby(keys)[c].nunique().max() > 1]
