"""Per-trial convergence measures: epochs to a target, loss-curve area, losses at fixed epochs.

Rules (also spelled out in the report):

* Which trials are analysed: status ``TERMINATED``, or flagged diverged (divergence is an outcome of the
  arm, so a diverged trial is kept).  Trials that errored for another reason, or are still
  running/pending, stay in the table with ``in_analysis=False`` and an ``excluded_reason``.
* An epoch whose validation loss is not finite counts as "not reached" for every target and is left out
  of the loss area; such a trial is flagged ``diverged`` and ``auc_partial``.
* Epochs-to-target is right-censored when the target is never reached: the value is then
  ``epochs_run`` (the last epoch observed) and the event flag is False.  Kaplan-Meier curves and the
  log-rank test use exactly that.  Paired rank statistics need one number per trial, so a censored
  trial counts as ``max(epochs_run, epochs_planned) + 1`` (``analysis_values``): one epoch beyond its
  budget, i.e. slower than any trial that reached the target within the budget (a trial that diverged
  early is thus never ranked as fast).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from study.analysis.params import AnalysisParams
from study.analysis.tables import config_columns, prepare_trials

ANALYZED_STATUSES = ("TERMINATED",)
CENSORED_METRICS = {"epochs_to_target": "reached_target", "epochs_to_rel_target": "reached_rel_target"}
_TOL = 1e-9  # accuracy thresholds: 0.7000000001 counts as reaching 0.7


def _as_float(s: pd.Series | None, n: int) -> np.ndarray:
    if s is None:
        return np.full(n, np.nan)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)


def _first_reached(epoch: np.ndarray, acc: np.ndarray, ok: np.ndarray, threshold: float) -> int | None:
    hit = np.flatnonzero(ok & np.isfinite(acc) & (acc >= threshold - _TOL))
    return int(epoch[hit[0]]) if len(hit) else None


def _trial_metrics(ep: pd.DataFrame, params: AnalysisParams) -> dict:
    ep = ep.sort_values("epoch", kind="mergesort")
    n = len(ep)
    epoch = pd.to_numeric(ep["epoch"], errors="coerce").to_numpy(dtype=float)
    val_loss = _as_float(ep.get("val_loss"), n)
    val_acc = _as_float(ep.get("val_acc"), n)
    train_loss = _as_float(ep.get("train_loss"), n)
    secs = _as_float(ep.get("epoch_time_s"), n)
    ok = np.isfinite(val_loss)  # epochs with a usable validation result
    nonfinite = bool((~ok).any()) or ("train_loss" in ep and bool((~np.isfinite(train_loss)).any()))
    epochs_run = int(np.nanmax(epoch)) if n else 0

    usable = ok & np.isfinite(val_acc)
    best = float(val_acc[usable].max()) if usable.any() else math.nan
    best_epoch = int(epoch[usable][np.argmax(val_acc[usable])]) if usable.any() else None

    hit_abs = _first_reached(epoch, val_acc, ok, params.target_acc)
    hit_rel = _first_reached(epoch, val_acc, ok, params.rel_target * best) if usable.any() else None
    time_to = math.nan
    if hit_abs is not None:
        upto = secs[epoch <= hit_abs]
        time_to = float(upto.sum()) if np.isfinite(upto).all() else math.nan

    out = {
        "epochs_run": epochs_run,
        "epochs_to_target": hit_abs if hit_abs is not None else epochs_run,
        "reached_target": hit_abs is not None,
        "epochs_to_rel_target": hit_rel if hit_rel is not None else epochs_run,
        "reached_rel_target": hit_rel is not None,
        "time_to_target_s": time_to,
        "val_loss_auc": float(val_loss[ok].mean()) if ok.any() else math.nan,
        "auc_epochs": int(ok.sum()),
        "auc_partial": bool((~ok).any()),
        "best_val_acc": best,
        "best_epoch": best_epoch,
        "nonfinite": nonfinite,
    }
    for k in params.fixed_epochs:
        at = np.flatnonzero(epoch == k)
        out[f"val_loss_at_{k}"] = float(val_loss[at[0]]) if len(at) and ok[at[0]] else math.nan
    return out


def convergence_metrics(epochs: pd.DataFrame, trials: pd.DataFrame,
                        params: AnalysisParams | None = None) -> pd.DataFrame:
    """One row per trial: config columns kept, then status and convergence metrics.

    Columns (in order): ``trial_id``, config columns, ``status``, ``diverged``,
    ``in_analysis``, ``excluded_reason``, ``epochs_run``, ``epochs_planned``,
    ``epochs_to_target``, ``reached_target``, ``epochs_to_rel_target``,
    ``reached_rel_target``, ``time_to_target_s``, ``val_loss_auc``,
    ``auc_epochs``, ``auc_partial``, ``val_loss_at_{k}`` for k in
    ``params.fixed_epochs``, ``best_val_acc``, ``best_epoch``, ``test_acc``,
    ``test_loss``.

    * ``epochs_run`` is the last epoch recorded in ``epochs`` (0 when none);
      ``epochs_planned`` comes from ``trials`` (``epochs_run`` when missing).
    * ``epochs_to_target``: first epoch with val acc >= ``target_acc``;
      right-censored when never reached (value ``epochs_run``,
      ``reached_target`` False).  Same for ``epochs_to_rel_target`` with the
      threshold ``rel_target * best_val_acc``.  Epochs with a non-finite
      validation loss never count as reaching a target.
    * ``val_loss_auc`` is the *mean* validation loss over the epochs run (the
      area under the per-epoch loss curve with unit-width steps divided by the
      number of epochs; rectangle rule, not trapezoid).  Non-finite losses are
      left out (``auc_epochs`` says how many epochs were used and
      ``auc_partial`` flags the trial).
    * ``time_to_target_s``: summed ``epoch_time_s`` up to and including the
      target epoch; NaN if not reached.
    * ``diverged`` is the trials flag OR any non-finite train/val loss.
    * ``in_analysis``: TERMINATED or diverged; otherwise False with the reason.

    Rows are sorted by ``trial_id``.  Trials present only in ``epochs`` are
    added with status UNKNOWN (so not analysed).
    """
    params = params or AnalysisParams()
    if epochs.empty and "trial_id" not in epochs.columns:   # nothing reported yet
        epochs = pd.DataFrame(columns=["trial_id", "epoch", "val_loss", "val_acc"])
    trials = prepare_trials(epochs, trials)
    cfg = config_columns(trials)
    ep = epochs.assign(trial_id=epochs["trial_id"].astype(str))
    groups = dict(tuple(ep.groupby("trial_id", sort=False)))
    empty = ep.iloc[0:0]
    rows = []
    for rec in trials.to_dict("records"):
        m = _trial_metrics(groups.get(rec["trial_id"], empty), params)
        nonfinite = m.pop("nonfinite")
        diverged = bool(rec["diverged"]) or nonfinite
        included = rec["status"] in ANALYZED_STATUSES or diverged
        planned = rec["epochs_planned"]
        rows.append({
            "trial_id": rec["trial_id"], **{c: rec[c] for c in cfg},
            "status": rec["status"], "diverged": diverged, "in_analysis": included,
            "excluded_reason": "" if included else f"status {rec['status']}",
            "epochs_planned": m["epochs_run"] if pd.isna(planned) else int(planned),
            **m,
            "test_acc": float(rec["test_acc"]) if pd.notna(rec["test_acc"]) else math.nan,
            "test_loss": float(rec["test_loss"]) if pd.notna(rec["test_loss"]) else math.nan,
        })
    columns = ["trial_id", *cfg, *metrics_columns(params)]
    if not rows:
        return pd.DataFrame(columns=columns)
    # rows sorted by trial_id so that every later sum is independent of the input order
    out = pd.DataFrame(rows)[columns].sort_values("trial_id", kind="mergesort").reset_index(drop=True)
    out["best_epoch"] = out["best_epoch"].astype("Int64")
    return out


def metrics_columns(params: AnalysisParams) -> list[str]:
    """Columns that ``convergence_metrics`` adds after ``trial_id`` and the config columns, in order."""
    return ["status", "diverged", "in_analysis", "excluded_reason", "epochs_run", "epochs_planned",
            "epochs_to_target", "reached_target", "epochs_to_rel_target", "reached_rel_target",
            "time_to_target_s", "val_loss_auc", "auc_epochs", "auc_partial",
            *(f"val_loss_at_{k}" for k in params.fixed_epochs), "best_val_acc", "best_epoch",
            "test_acc", "test_loss"]


def analysis_values(metrics: pd.DataFrame, metric: str) -> pd.Series:
    """Per-trial value used by paired statistics.

    For censored epoch counts a trial that never reached the target counts as
    ``max(epochs_run, epochs_planned) + 1``; every other metric is returned as is.
    """
    if metric not in metrics.columns:
        return pd.Series(np.nan, index=metrics.index)
    values = pd.to_numeric(metrics[metric], errors="coerce").astype(float)
    if metric in CENSORED_METRICS:
        horizon = np.maximum(metrics["epochs_run"].astype(float), metrics["epochs_planned"].astype(float))
        values = values.where(metrics[CENSORED_METRICS[metric]].astype(bool), horizon + 1)
    return values
