"""Per-trial measures of convergence speed on the fractional-epoch axis (docs/analysis.md argues each one).

Every measure here reads one trial's curve (``study.analysis.curves``): evaluations at fractional epochs
``x`` (1, 2, ... for one evaluation per epoch) with ``val_acc``, ``val_loss``, ``train_loss`` and, where
recorded, ``val_nll_ts``.  Rules:

* Areas are per epoch over the common budget ``[0, B]``: the curve is constant at its first evaluation
  from 0 to there, linear between evaluations (trapezoid), carried forward from the last evaluation to
  ``B`` (a trial stopped early keeps its last value) and cut at ``B`` (interpolated); the area is divided
  by ``B``, so it is in the curve's own units (a mean error, a mean loss).
* A diverged trial (a non-finite loss) is scored as its worst, not on its finite evaluations: from its
  first non-finite evaluation to the budget its validation accuracy is chance and each loss the worst
  finite value that loss takes anywhere in the study (``Fill``); it never reaches a target or a
  plateau (censored), and its calibration gap is not defined (NaN).
* Epochs to a target (a ladder of validation accuracies, or a fraction of the trial's own smoothed
  plateau) is the first evaluation at or above it; a miss is right-censored at the last evaluation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from study.analysis.params import AnalysisParams, target_key

_TOL = 1e-9  # accuracy thresholds: 0.7000000001 counts as reaching 0.7
PLATEAU_FRACTIONS = (0.90, 0.95)


@dataclass(frozen=True)
class Fill:
    """What a diverged trial's curve reads from its divergence to the budget."""

    val_acc: float           # chance
    val_loss: float          # the study's worst finite value of each loss
    train_loss: float
    val_nll_ts: float


def area_per_epoch(x: np.ndarray, y: np.ndarray, budget: float) -> float:
    """Mean of the curve over [0, budget] (module rules: constant before the first point, trapezoid
    between points, carried forward after the last one, cut at the budget).  NaN without finite points."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) == 0 or not budget > 0:
        return math.nan
    xs = np.concatenate([[0.0], x, [max(budget, x[-1])]])
    ys = np.concatenate([[y[0]], y, [y[-1]]])
    keep = xs < budget
    cut = np.interp(budget, xs, ys)
    xs, ys = np.append(xs[keep], budget), np.append(ys[keep], cut)
    return float(np.sum((ys[1:] + ys[:-1]) / 2 * np.diff(xs)) / budget)   # trapezoid rule


def smoothed(y: np.ndarray, per_epoch: float, width_epochs: float) -> np.ndarray:
    """Centred running mean over ``width_epochs`` epochs of evaluations (an odd count, at least 3: 9 at 8
    evaluations an epoch), over fewer evaluations at the ends."""
    w = max(3, int(round(width_epochs * per_epoch)) // 2 * 2 + 1)
    if len(y) == 0:
        return y
    w = min(w, len(y) - (1 - len(y) % 2))  # never wider than the curve (np.convolve "same" would lengthen it)
    kernel = np.ones(w)
    num = np.convolve(np.nan_to_num(y), kernel, mode="same")
    den = np.convolve(np.isfinite(y).astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def first_reached(x: np.ndarray, y: np.ndarray, threshold: float) -> float | None:
    """First x with y >= threshold (non-finite y never counts); None when never."""
    hit = np.flatnonzero(np.isfinite(y) & (y >= threshold - _TOL))
    return float(x[hit[0]]) if len(hit) else None


def _filled(x: np.ndarray, y: np.ndarray, good: int, fill: float, budget: float) -> tuple[np.ndarray, np.ndarray]:
    """The first ``good`` points, then ``fill`` from the next evaluation to the budget."""
    if good == len(x):
        return x, y
    start = x[good]
    return np.append(x[:good], [start, max(budget, start)]), np.append(y[:good], [fill, fill])


def speed_measures(x: np.ndarray, cols: dict[str, np.ndarray], *, diverged_at: int | None, budget: float,
                   horizon: float, per_epoch: float, fill: Fill, params: AnalysisParams) -> dict:
    """The speed measures of one trial (keys: ``params.speed_columns``; see the module rules).

    ``diverged_at``: index of the first non-finite evaluation (None when the trial never diverged);
    ``horizon``: the last epoch observed, where a miss is censored.
    """
    good = len(x) if diverged_at is None else diverged_at
    acc = cols["val_acc"]
    out: dict = {}
    ax, ay = _filled(x, acc, good, fill.val_acc, budget)
    out["val_error_area"] = area_per_epoch(ax, 1.0 - ay, budget)
    for name, col, worst in (("train_loss_area", "train_loss", fill.train_loss),
                             ("val_nll_ts_area", "val_nll_ts", fill.val_nll_ts)):
        y = cols[col]
        present = np.isfinite(y[:good]).any()
        out[name] = area_per_epoch(*_filled(x, y, good, worst, budget), budget) if present else math.nan
    gap = cols["val_loss"] - cols["val_nll_ts"]
    out["calibration_gap_area"] = (area_per_epoch(x, gap, budget)
                                   if diverged_at is None and np.isfinite(gap).any() else math.nan)
    for t in params.targets:
        hit = first_reached(x[:good], acc[:good], t)
        k = target_key(t)
        out[f"epochs_to_acc_{k}"] = hit if hit is not None else horizon
        out[f"reached_acc_{k}"] = hit is not None
    sm = smoothed(acc[:good], per_epoch, params.smooth_epochs)
    plateau = float(np.nanmax(sm)) if np.isfinite(sm).any() else math.nan
    for frac in PLATEAU_FRACTIONS:
        name = f"plateau_{round(frac * 100)}"
        hit = first_reached(x[:good], sm, frac * plateau) if diverged_at is None and math.isfinite(plateau) else None
        out[f"epochs_to_{name}"] = hit if hit is not None else horizon
        out[f"reached_{name}"] = hit is not None
    out["plateau_val_acc"] = plateau
    vl = cols["val_loss"][:good]
    fin = np.isfinite(vl)
    out["epoch_min_val_loss"] = float(x[:good][fin][np.argmin(vl[fin])]) if fin.any() else math.nan
    out["min_val_loss"] = float(vl[fin].min()) if fin.any() else math.nan
    return out


def speed_columns(params: AnalysisParams) -> list[str]:
    """Columns ``speed_measures`` adds to the trials table, in order."""
    ladder = [c for t in params.targets for c in (f"epochs_to_acc_{target_key(t)}", f"reached_acc_{target_key(t)}")]
    plateau = [c for f in PLATEAU_FRACTIONS for c in (f"epochs_to_plateau_{round(f * 100)}",
                                                      f"reached_plateau_{round(f * 100)}")]
    return ["val_error_area", "train_loss_area", "val_nll_ts_area", "calibration_gap_area", *ladder, *plateau,
            "plateau_val_acc", "epoch_min_val_loss", "min_val_loss"]


def censored_flags(params: AnalysisParams) -> dict[str, str]:
    """Censored measure -> its reached flag, for the ladder and the plateau measures."""
    out = {f"epochs_to_acc_{target_key(t)}": f"reached_acc_{target_key(t)}" for t in params.targets}
    out.update({f"epochs_to_plateau_{round(f * 100)}": f"reached_plateau_{round(f * 100)}"
                for f in PLATEAU_FRACTIONS})
    return out
