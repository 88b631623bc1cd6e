"""The per-evaluation table (``steps.csv``): one row per trial and evaluation, on a fractional-epoch axis.

Two shapes arrive here and leave as one:

* step resolution (the trainable evaluates ``train.evals_per_epoch`` times an epoch): ``step`` (optimizer
  steps so far) and a fractional ``epoch`` = step / steps_per_epoch; ``val_nll_ts`` and ``temperature``
  (temperature-scaled validation NLL and its T), ``elapsed_s`` (training seconds so far);
* older tables (``epochs.csv``): one row per whole epoch and no ``step``: the epoch is the time axis.

``prepare_curves`` gives both the same form: ``epoch`` as float, ``trial_id`` as str, the last record of
each (trial_id, step) kept (a trial resumed from a checkpoint repeats evaluations; without ``step`` the key
is the epoch), rows sorted by trial and epoch.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

# per-evaluation columns besides the config columns (see docs/analysis.md and notes on the schema)
RECORD_COLUMNS = ("step", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_nll_ts", "temperature",
                  "elapsed_s", "epoch_time_s", "best_val_acc", "node_id")


def has_steps(curves: pd.DataFrame) -> bool:
    """True when the table carries the optimizer step of each evaluation."""
    return "step" in curves.columns and pd.to_numeric(curves["step"], errors="coerce").notna().any()


def prepare_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """The table in one form: float epochs, str trial ids, one record per (trial, step), sorted."""
    if curves.empty and "trial_id" not in curves.columns:
        return pd.DataFrame(columns=["trial_id", "epoch", "val_loss", "val_acc"])
    out = curves.assign(trial_id=curves["trial_id"].astype(str),
                        epoch=pd.to_numeric(curves["epoch"], errors="coerce").astype(float))
    key = out["epoch"].map(lambda e: f"e{e!r}")
    if has_steps(out):
        out["step"] = pd.to_numeric(out["step"], errors="coerce").astype("Int64")
        key = key.where(out["step"].isna(), "s" + out["step"].astype(str))     # a row without a step: its epoch
    out = out.loc[~pd.concat([out["trial_id"], key], axis=1).duplicated(keep="last")]
    return out.sort_values(["trial_id", "epoch"], kind="mergesort").reset_index(drop=True)


def epoch_end_rows(curves: pd.DataFrame) -> pd.DataFrame:
    """The rows at whole epochs (1.0, 2.0, ...): the old one-row-per-epoch table (``epochs.csv``)."""
    ep = curves["epoch"].astype(float)
    return curves.loc[np.isclose(ep, np.round(ep)) & (ep >= 1)].reset_index(drop=True)


def evals_per_epoch(curves: pd.DataFrame) -> float | None:
    """Median number of evaluations per epoch over trials (1 for one row per epoch); None when empty."""
    if curves.empty:
        return None
    per = curves.groupby("trial_id")["epoch"].agg(lambda e: len(e) / max(float(e.max()), 1e-12))
    return float(np.median(per)) if len(per) else None


def steps_per_epoch(curves: pd.DataFrame) -> float | None:
    """Optimizer steps per epoch (median of step / epoch over rows), None without a ``step`` column."""
    if not has_steps(curves):
        return None
    ratio = pd.to_numeric(curves["step"], errors="coerce").astype(float) / curves["epoch"].astype(float)
    ratio = ratio[np.isfinite(ratio)]
    return float(ratio.median()) if len(ratio) else None
