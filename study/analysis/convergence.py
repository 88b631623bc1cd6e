"""Per-trial convergence measures: epochs to a target, loss-curve area, losses at fixed epochs, and the
speed measures of ``study.analysis.speed``; read from the per-evaluation table (``study.analysis.curves``),
so an epoch below is a fractional epoch when the trials evaluated several times an epoch.

Rules (also spelled out in the report):

* Which trials are analysed: status ``TERMINATED``, or flagged diverged (divergence is an outcome of the
  arm, so a diverged trial is kept).  Trials that errored for another reason, or are still
  running/pending, stay in the table with ``in_analysis=False`` and an ``excluded_reason``.
* A trial diverges at its first evaluation with a non-finite validation or training loss; it is flagged
  ``diverged`` and ``auc_partial``.  From there on nothing counts as reaching a target, and it is scored
  as its worst, not on its finite evaluations: in the loss area (``val_loss_auc``) each evaluation from
  its divergence to the end of its budget reads the study's worst finite validation loss (the speed
  measures' rule is the same, see ``study.analysis.speed``).
* Epochs-to-target is right-censored when the target is never reached: the value is then
  ``epochs_run`` (the last epoch observed) and the event flag is False.  Kaplan-Meier curves and the
  log-rank test use exactly that.  Paired rank statistics need one number per trial, so a censored
  trial counts as ``max(epochs_run, epochs_planned) + 1`` (``analysis_values``): one epoch beyond its
  budget, i.e. slower than any trial that reached the target within the budget (a trial that diverged
  early is thus never ranked as fast).  ``time_to_target_s`` is censored the same way (at the trial's
  training seconds; beyond the budget at its seconds per epoch).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from study.analysis.curves import prepare_curves
from study.analysis.params import AnalysisParams
from study.analysis.speed import Fill, censored_flags, first_reached, speed_columns, speed_measures
from study.analysis.tables import config_columns, prepare_trials

ANALYZED_STATUSES = ("TERMINATED",)
CENSORED_METRICS = {"epochs_to_target": "reached_target", "epochs_to_rel_target": "reached_rel_target",
                    "time_to_target_s": "reached_target"}


def censor_flag(metric: str) -> str | None:
    """The reached flag of a censored measure (epochs or seconds to a target), None for the others."""
    if metric in CENSORED_METRICS:
        return CENSORED_METRICS[metric]
    if metric.startswith(("epochs_to_acc_", "epochs_to_plateau_")):
        return "reached_" + metric.removeprefix("epochs_to_")
    return None


def _as_float(s: pd.Series | None, n: int) -> np.ndarray:
    if s is None:
        return np.full(n, np.nan)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)


def _worst(curves: pd.DataFrame, params: AnalysisParams) -> Fill:
    """The study's worst finite value of each loss (what a diverged trial reads after it diverged)."""
    def worst(col: str) -> float:
        v = _as_float(curves.get(col), len(curves))
        v = v[np.isfinite(v)]
        return float(v.max()) if len(v) else math.nan
    return Fill(val_acc=params.chance_acc, val_loss=worst("val_loss"), train_loss=worst("train_loss"),
                val_nll_ts=worst("val_nll_ts"))


def _trial_metrics(ep: pd.DataFrame, params: AnalysisParams, *, budget: float, planned: float,
                   fill: Fill) -> dict:
    n = len(ep)
    epoch = ep["epoch"].to_numpy(dtype=float)
    cols = {c: _as_float(ep.get(c), n) for c in ("val_loss", "val_acc", "train_loss", "val_nll_ts")}
    val_loss, val_acc, train_loss = cols["val_loss"], cols["val_acc"], cols["train_loss"]
    bad = ~np.isfinite(val_loss) | (("train_loss" in ep) & ~np.isfinite(train_loss))
    diverged_at = int(np.flatnonzero(bad)[0]) if bad.any() else None
    good = n if diverged_at is None else diverged_at
    epochs_run = float(np.nanmax(epoch)) if n else 0.0
    horizon = max(epochs_run, planned if math.isfinite(planned) else epochs_run)
    per_epoch = n / epochs_run if epochs_run > 0 else 1.0

    usable = np.isfinite(val_loss) & np.isfinite(val_acc)
    usable[good:] = False
    best = float(val_acc[usable].max()) if usable.any() else math.nan
    best_epoch = float(epoch[usable][np.argmax(val_acc[usable])]) if usable.any() else math.nan

    hit_abs = first_reached(epoch[:good], val_acc[:good], params.target_acc)
    hit_rel = first_reached(epoch[:good], val_acc[:good], params.rel_target * best) if usable.any() else None
    elapsed = _as_float(ep.get("elapsed_s"), n)
    secs = _as_float(ep.get("epoch_time_s"), n)
    if np.isfinite(elapsed).any():
        time_run = float(np.nanmax(elapsed))
        time_to = float(elapsed[np.flatnonzero(epoch == hit_abs)[0]]) if hit_abs is not None else time_run
    else:
        time_run = float(np.nansum(secs)) if np.isfinite(secs).any() else math.nan
        upto = secs[(epoch <= hit_abs) & np.isfinite(secs)] if hit_abs is not None else secs[np.isfinite(secs)]
        time_to = float(upto.sum()) if len(upto) else math.nan

    # mean validation loss over the evaluations (rectangle rule); a diverged trial's evaluations from its
    # divergence to the end of its budget read the study's worst validation loss
    n_full = max(n, int(round(horizon * per_epoch))) if diverged_at is not None else n
    auc = (float((val_loss[:good].sum() + fill.val_loss * (n_full - good)) / n_full)
           if n_full and (good or math.isfinite(fill.val_loss)) else math.nan)
    out = {
        "epochs_run": epochs_run,
        "epochs_to_target": hit_abs if hit_abs is not None else epochs_run,
        "reached_target": hit_abs is not None,
        "epochs_to_rel_target": hit_rel if hit_rel is not None else epochs_run,
        "reached_rel_target": hit_rel is not None,
        "time_to_target_s": time_to,
        "time_run_s": time_run,
        "val_loss_auc": auc,
        "auc_epochs": good,
        "auc_partial": diverged_at is not None,
        "best_val_acc": best,
        "best_epoch": best_epoch,
        "nonfinite": diverged_at is not None,
        **speed_measures(epoch, cols, diverged_at=diverged_at, budget=budget, horizon=epochs_run,
                         per_epoch=per_epoch, fill=fill, params=params),
    }
    for k in params.fixed_epochs:
        at = np.flatnonzero(np.isclose(epoch, k))
        out[f"val_loss_at_{k}"] = float(val_loss[at[0]]) if len(at) and at[0] < good else math.nan
    return out


def common_budget(trials: pd.DataFrame, epochs_run: dict, params: AnalysisParams) -> float:
    """The area measures' budget: ``params.budget_epochs``, else the smallest planned epoch count among
    the analysed trials (a trial without a plan counts its epochs run)."""
    if params.budget_epochs is not None:
        return float(params.budget_epochs)
    planned = pd.to_numeric(trials["epochs_planned"], errors="coerce").astype(float)
    runs = trials["trial_id"].map(epochs_run).astype(float)
    b = planned.where(planned.notna(), runs)
    used = trials["status"].isin(ANALYZED_STATUSES) | trials["diverged"].astype(bool)
    b = b[used & b.notna() & (b > 0)]
    return float(b.min()) if len(b) else 1.0


def convergence_metrics(epochs: pd.DataFrame, trials: pd.DataFrame,
                        params: AnalysisParams | None = None) -> pd.DataFrame:
    """One row per trial: config columns kept, then status and convergence metrics.

    Columns: ``trial_id``, config columns, then ``metrics_columns(params)``.

    * ``epochs_run`` is the last (fractional) epoch recorded (0 when none);
      ``epochs_planned`` comes from ``trials`` (``epochs_run`` when missing).
    * ``epochs_to_target``: first evaluation with val acc >= ``target_acc``;
      right-censored when never reached (value ``epochs_run``,
      ``reached_target`` False).  Same for ``epochs_to_rel_target`` with the
      threshold ``rel_target * best_val_acc``.  Evaluations from a
      divergence on never count as reaching a target.
    * ``val_loss_auc`` is the *mean* validation loss over the evaluations
      (rectangle rule); a diverged trial is scored as its worst (module rules;
      ``auc_epochs`` counts its finite evaluations, ``auc_partial`` flags it).
    * ``time_to_target_s``: ``elapsed_s`` at the target evaluation, or summed
      ``epoch_time_s`` up to it; censored at ``time_run_s`` when not reached.
    * the speed measures: ``study.analysis.speed`` over the common budget
      (``common_budget``, kept in ``df.attrs["budget_epochs"]``).
    * ``diverged`` is the trials flag OR any non-finite train/val loss.
    * ``in_analysis``: TERMINATED or diverged; otherwise False with the reason.

    Rows are sorted by ``trial_id``.  Trials present only in ``epochs`` are
    added with status UNKNOWN (so not analysed).
    """
    params = params or AnalysisParams()
    ep = prepare_curves(epochs)
    trials = prepare_trials(ep, trials)
    cfg = config_columns(trials)
    groups = dict(tuple(ep.groupby("trial_id", sort=False)))
    empty = ep.iloc[0:0]
    runs = {k: float(g["epoch"].max()) for k, g in groups.items()}
    budget = common_budget(trials, runs, params)
    fill = _worst(ep, params)
    rows = []
    for rec in trials.to_dict("records"):
        planned = rec["epochs_planned"]
        m = _trial_metrics(groups.get(rec["trial_id"], empty), params, budget=budget,
                           planned=math.nan if pd.isna(planned) else float(planned), fill=fill)
        nonfinite = m.pop("nonfinite")
        diverged = bool(rec["diverged"]) or nonfinite
        included = rec["status"] in ANALYZED_STATUSES or diverged
        rows.append({
            "trial_id": rec["trial_id"], **{c: rec[c] for c in cfg},
            "status": rec["status"], "diverged": diverged, "in_analysis": included,
            "excluded_reason": "" if included else f"status {rec['status']}",
            "epochs_planned": m["epochs_run"] if pd.isna(planned) else float(planned),
            **m,
            "test_acc": float(rec["test_acc"]) if pd.notna(rec["test_acc"]) else math.nan,
            "test_loss": float(rec["test_loss"]) if pd.notna(rec["test_loss"]) else math.nan,
        })
    columns = ["trial_id", *cfg, *metrics_columns(params)]
    if not rows:
        return pd.DataFrame(columns=columns)
    # rows sorted by trial_id so that every later sum is independent of the input order
    out = pd.DataFrame(rows)[columns].sort_values("trial_id", kind="mergesort").reset_index(drop=True)
    out.attrs["budget_epochs"] = budget
    return out


def metrics_columns(params: AnalysisParams) -> list[str]:
    """Columns that ``convergence_metrics`` adds after ``trial_id`` and the config columns, in order."""
    return ["status", "diverged", "in_analysis", "excluded_reason", "epochs_run", "epochs_planned",
            "epochs_to_target", "reached_target", "epochs_to_rel_target", "reached_rel_target",
            "time_to_target_s", "time_run_s", "val_loss_auc", "auc_epochs", "auc_partial",
            *(f"val_loss_at_{k}" for k in params.fixed_epochs), "best_val_acc", "best_epoch",
            *speed_columns(params), "test_acc", "test_loss"]


def budget_of(metrics: pd.DataFrame, params: AnalysisParams) -> float:
    """The common budget of a metrics table (``common_budget`` of its trials)."""
    return common_budget(metrics, dict(zip(metrics["trial_id"], metrics["epochs_run"].astype(float))), params)


def censored_metrics(params: AnalysisParams) -> dict[str, str]:
    """Every censored measure of ``params`` -> its reached flag."""
    return {**CENSORED_METRICS, **censored_flags(params)}


def analysis_values(metrics: pd.DataFrame, metric: str) -> pd.Series:
    """Per-trial value used by paired statistics.

    A censored epoch count (a target never reached) counts as ``max(epochs_run, epochs_planned) + 1``:
    one epoch beyond its budget, slower than any trial that reached the target.  Censored seconds count
    as the trial's seconds per epoch times that many epochs.  Every other metric is returned as is.
    """
    if metric not in metrics.columns:
        return pd.Series(np.nan, index=metrics.index)
    values = pd.to_numeric(metrics[metric], errors="coerce").astype(float)
    flag = censor_flag(metric)
    if flag is not None and flag in metrics.columns:
        run = metrics["epochs_run"].astype(float)
        beyond = np.maximum(run, metrics["epochs_planned"].astype(float)) + 1
        if metric == "time_to_target_s":
            beyond = metrics["time_run_s"].astype(float) / run.where(run > 0) * beyond
        values = values.where(metrics[flag].astype(bool), beyond)
    return values
