"""The tidy tables an experiment gives the analysis, and the arms in them.

* ``epochs`` (the per-evaluation table, ``steps.csv``; see ``study.analysis.curves``): one row per
  (trial, evaluation): ``trial_id``, config columns (``activation``, ``normalization``, ``lr``, ``seed``,
  ...), then ``epoch`` (fractional, 1.0 at the end of the first epoch), optional ``step``,
  ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, optional ``val_nll_ts``, ``elapsed_s``,
  ``epoch_time_s``.  Older tables (``epochs.csv``) have one row per whole epoch and no ``step``.
* ``trials``: one row per trial: ``trial_id``, the same config columns, ``status``, ``diverged``,
  ``epochs_run``, ``epochs_planned``, ``test_acc``, ``test_loss``.

An *arm* is a setting of (activation, normalization), written as a mapping such as
``{"activation": "selu", "normalization": "none"}``.  Every other column that is neither a record nor a
result is a config column (``lr``, ``seed``, ``weights``, ...).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from study.analysis.curves import prepare_curves
from study.analysis.params import AnalysisParams

ARM_FACTORS = ("activation", "normalization")
EPOCH_RECORD_COLUMNS = ("step", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_nll_ts", "temperature",
                        "elapsed_s", "epoch_time_s", "best_val_acc", "node_id", "best_epoch")
TRIAL_RESULT_COLUMNS = ("status", "diverged", "epochs_run", "epochs_planned", "test_acc", "test_loss")
COMPUTED_COLUMNS = (
    "in_analysis", "excluded_reason",
    "epochs_to_target", "reached_target", "epochs_to_rel_target", "reached_rel_target",
    "time_to_target_s", "time_run_s", "val_loss_auc", "auc_epochs", "auc_partial",
    "best_val_acc", "best_epoch", "val_error_area", "train_loss_area", "val_nll_ts_area", "calibration_gap_area",
    "plateau_val_acc", "epoch_min_val_loss", "min_val_loss",
)
COMPUTED_PREFIXES = ("val_loss_at_", "epochs_to_acc_", "reached_acc_", "epochs_to_plateau_", "reached_plateau_")


def arm_label(arm: Mapping[str, Any]) -> str:
    """Short label such as 'selu+none'."""
    return "+".join(str(v) for v in arm.values())


_ACT_WORDS = {"relu": "ReLU", "selu": "SELU", "elu": "ELU", "gelu": "GELU", "leaky_relu": "leaky ReLU"}
_NORM_WORDS = {"none": "no input normalization", "per_image": "per-image input normalization",
               "imagenet": "ImageNet mean/std input normalization"}


def arm_words(arm: Mapping[str, Any]) -> str:
    """Prose label such as 'SELU with no input normalization'."""
    parts = []
    if "activation" in arm:
        act = str(arm["activation"])
        parts.append(_ACT_WORDS.get(act, act))
    if "normalization" in arm:
        parts.append(_NORM_WORDS.get(str(arm["normalization"]), f"{arm['normalization']} normalization"))
    parts += [f"{k}={v}" for k, v in arm.items() if k not in ARM_FACTORS]
    return parts[0] + (" with " + ", ".join(parts[1:]) if len(parts) > 1 else "")


def _fixed_columns(df: pd.DataFrame) -> set[str]:
    at = {c for c in df.columns if str(c).startswith(COMPUTED_PREFIXES)}
    return {"trial_id", *EPOCH_RECORD_COLUMNS, *TRIAL_RESULT_COLUMNS, *COMPUTED_COLUMNS} | at


def config_columns(df: pd.DataFrame) -> list[str]:
    """Config columns of a trials/epochs/metrics table (everything that is not a record or result)."""
    fixed = _fixed_columns(df)
    return [c for c in df.columns if c not in fixed]


def arm_mask(df: pd.DataFrame, arm: Mapping[str, Any]) -> pd.Series:
    """Rows whose config matches every key of ``arm`` (compared as strings)."""
    mask = pd.Series(True, index=df.index)
    for k, v in arm.items():
        if k not in df.columns:
            return pd.Series(False, index=df.index)
        mask &= df[k].astype(str) == str(v)
    return mask


def arms_present(metrics: pd.DataFrame, params: AnalysisParams) -> list[dict]:
    """Arms (activation, normalization) among analysed trials: claimed-faster, slower, then the rest sorted."""
    keys = [k for k in ARM_FACTORS if k in metrics.columns]
    rows = metrics.loc[metrics["in_analysis"], keys].drop_duplicates()
    arms = [dict(zip(keys, map(str, r))) for r in rows.itertuples(index=False)]
    first = [dict((k, str(v)) for k, v in a.items()) for a in (params.faster_arm, params.slower_arm)]
    lead = [a for a in first if a in arms]
    rest = sorted((a for a in arms if a not in lead), key=lambda a: tuple(a.values()))
    return lead + rest


def analysed(metrics: pd.DataFrame) -> pd.DataFrame:
    """The rows of a metrics table that are in the analysis (all rows when it has no ``in_analysis``)."""
    return metrics.loc[metrics["in_analysis"]] if "in_analysis" in metrics else metrics


def distinct(series: pd.Series) -> list:
    """Sorted distinct non-missing values (sorted as strings when the types do not compare)."""
    vals = series.dropna().unique().tolist()
    try:
        return sorted(vals)
    except TypeError:
        return sorted(vals, key=str)


def seed_means(df: pd.DataFrame, column: str) -> np.ndarray:
    """Mean of ``column`` per seed over the rows with a finite value, in seed order: one number per
    independent unit (several trials of one seed, e.g. over an lr grid, count once)."""
    v = pd.to_numeric(df[column], errors="coerce").astype(float) if column in df else pd.Series(dtype=float)
    ok = np.isfinite(v.to_numpy(dtype=float))
    if not ok.any():
        return np.zeros(0)
    return v[ok].groupby(df.loc[ok, "seed"], sort=True).mean().to_numpy(dtype=float)


def prepare_trials(epochs: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Check the two tables and complete ``trials``: string ids, defaults for missing result columns.

    Trials seen only in ``epochs`` are added with status UNKNOWN (so they are not analysed).
    Raises ValueError (one sentence) on a missing required column or a duplicated trial id.
    """
    for name, df, need in (("epochs", epochs, ("trial_id", "epoch", "val_loss", "val_acc")),
                           ("trials", trials, ("trial_id", *ARM_FACTORS, "seed"))):
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise ValueError(f"{name} table lacks required column(s): {', '.join(missing)}")
    trials = trials.copy()
    trials["trial_id"] = trials["trial_id"].astype(str)
    if trials["trial_id"].duplicated().any():
        dup = trials.loc[trials["trial_id"].duplicated(), "trial_id"].iloc[0]
        raise ValueError(f"trials table has trial_id {dup!r} more than once")
    ep_ids = epochs["trial_id"].astype(str)
    orphans = sorted(set(ep_ids) - set(trials["trial_id"]))
    if orphans:
        cfg = [c for c in config_columns(trials) if c in epochs.columns]
        extra = (epochs.assign(trial_id=ep_ids).loc[ep_ids.isin(orphans), ["trial_id", *cfg]]
                 .drop_duplicates("trial_id").assign(status="UNKNOWN"))
        trials = pd.concat([trials, extra], ignore_index=True)
    defaults = {"status": "TERMINATED", "diverged": False, "epochs_planned": np.nan,
                "test_acc": np.nan, "test_loss": np.nan}
    for col, val in defaults.items():
        if col not in trials.columns:
            trials[col] = val
    trials["status"] = trials["status"].fillna("UNKNOWN").astype(str)
    trials["diverged"] = trials["diverged"].fillna(False).astype(bool)
    return trials


def sorted_trials(metrics: pd.DataFrame) -> pd.DataFrame:
    """Trials + metrics sorted by arm, seed, lr, trial_id (trial_id makes the order total)."""
    keys = [c for c in (*ARM_FACTORS, "seed", "lr", "trial_id") if c in metrics.columns]
    return metrics.sort_values(keys, kind="mergesort").reset_index(drop=True)


def sorted_epochs(epochs: pd.DataFrame) -> pd.DataFrame:
    """Evaluation records sorted by trial then (fractional) epoch, one per (trial, step)."""
    if "trial_id" not in epochs.columns:
        return epochs
    return prepare_curves(epochs)
