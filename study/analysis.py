"""Statistics for the SELU-vs-ReLU convergence study.

Pure functions over pandas tables: no Ray, no torch, no file or network I/O.

Inputs (see ``convergence_metrics``):

* ``epochs`` - one row per (trial, epoch): ``trial_id``, config columns
  (``activation``, ``normalization``, ``lr``, ``seed``, ...), then ``epoch``
  (1-based), ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``,
  ``epoch_time_s``.
* ``trials`` - one row per trial: ``trial_id``, the same config columns,
  ``status``, ``diverged``, ``epochs_run``, ``epochs_planned``, ``test_acc``,
  ``test_loss``.

An *arm* is a setting of (activation, normalization).  The paper's claim is that
``params.faster_arm`` (SELU, no input normalization) converges faster than
``params.slower_arm`` (ReLU, per-image normalization).  Trials pair across the
two arms on their seed (and on extra grid axes such as ``lr`` when those are
shared between the arms); every difference is *faster arm minus slower arm*.

Rules used throughout (also spelled out in the report):

* Which trials are analysed: status ``TERMINATED``, or flagged diverged
  (divergence is an outcome of the arm, so a diverged trial is kept).  Trials
  that errored for another reason, or are still running/pending, are kept in
  the metrics table with ``in_analysis=False`` and an ``excluded_reason``.
* An epoch whose validation loss is not finite counts as "not reached" for
  every target and is left out of the loss area; such a trial is flagged
  ``diverged`` and ``auc_partial``.
* Epochs-to-target is right-censored when the target is never reached: the
  value is then ``epochs_run`` (the last epoch observed) and the event flag is
  False.  Kaplan-Meier curves and the log-rank test use exactly that.  Paired
  rank statistics need one number per trial, so a censored trial counts as
  ``max(epochs_run, epochs_planned) + 1`` - one epoch beyond its budget, i.e.
  slower than any trial that reached the target within the budget (a trial
  that diverged early is thus never ranked as fast).
* Statistics are computed per seed: when several pairs share a seed (an
  ``lr`` grid) their differences are averaged first, so seeds are the
  independent units for the bootstrap and the Wilcoxon test.
"""
from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

ARM_FACTORS = ("activation", "normalization")
ANALYZED_STATUSES = ("TERMINATED",)
EPOCH_RECORD_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s")
TRIAL_RESULT_COLUMNS = ("status", "diverged", "epochs_run", "epochs_planned", "test_acc", "test_loss")
COMPUTED_COLUMNS = (
    "in_analysis", "excluded_reason",
    "epochs_to_target", "reached_target", "epochs_to_rel_target", "reached_rel_target",
    "time_to_target_s", "val_loss_auc", "auc_epochs", "auc_partial",
    "best_val_acc", "best_epoch",
)
CENSORED_METRICS = {"epochs_to_target": "reached_target", "epochs_to_rel_target": "reached_rel_target"}
BASE_METRICS = ("val_loss_auc", "epochs_to_target", "epochs_to_rel_target", "time_to_target_s",
                "best_val_acc", "test_acc")
_TOL = 1e-9  # accuracy thresholds: 0.7000000001 counts as reaching 0.7


# --------------------------------------------------------------------------- params

def _default_faster() -> dict:
    return {"activation": "selu", "normalization": "none"}


def _default_slower() -> dict:
    return {"activation": "relu", "normalization": "per_image"}


def _default_paper() -> dict:
    return {"relu": 0.8088, "selu": 0.8143}


@dataclass(frozen=True)
class AnalysisParams:
    """Knobs of the analysis; validated on construction (ValueError, one sentence)."""

    target_acc: float = 0.7                 # absolute validation-accuracy target
    rel_target: float = 0.95                # fraction of the trial's own best val acc
    fixed_epochs: tuple[int, ...] = (1, 5, 10)
    faster_arm: dict = field(default_factory=_default_faster)   # the arm claimed faster
    slower_arm: dict = field(default_factory=_default_slower)
    primary_metric: str = "val_loss_auc"
    confidence: float = 0.95
    n_resamples: int = 10000
    min_seeds: int = 3
    random_state: int = 0
    paper_test_acc: dict = field(default_factory=_default_paper)  # keyed by activation

    def __post_init__(self) -> None:
        _check_fraction("target_acc", self.target_acc, closed_high=True)
        _check_fraction("rel_target", self.rel_target, closed_high=True)
        _check_fraction("confidence", self.confidence, closed_high=False)
        object.__setattr__(self, "fixed_epochs", _check_epochs(self.fixed_epochs))
        object.__setattr__(self, "faster_arm", _check_arm("faster_arm", self.faster_arm))
        object.__setattr__(self, "slower_arm", _check_arm("slower_arm", self.slower_arm))
        if self.faster_arm == self.slower_arm:
            raise ValueError("analysis.faster_arm and analysis.slower_arm must differ, "
                             f"both are {self.faster_arm}")
        _check_int("n_resamples", self.n_resamples, minimum=100)
        _check_int("min_seeds", self.min_seeds, minimum=1)
        _check_int("random_state", self.random_state, minimum=0)
        object.__setattr__(self, "paper_test_acc", _check_paper(self.paper_test_acc))
        allowed = metric_names(self.fixed_epochs)
        if self.primary_metric not in allowed:
            raise ValueError(f"analysis.primary_metric must be one of {', '.join(allowed)}, "
                             f"got {self.primary_metric!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "AnalysisParams":
        """Build from a config mapping; unknown keys or bad values raise ValueError."""
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise ValueError(f"analysis parameters must be a mapping, got {type(d).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ValueError(f"analysis.{unknown[0]} is not a known parameter "
                             f"(known: {', '.join(known)})")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**values)

    def to_dict(self) -> dict:
        """Plain JSON-friendly dict (tuples become lists)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else (dict(v) if isinstance(v, dict) else v)
        return out


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_fraction(name: str, x: Any, *, closed_high: bool) -> None:
    hi = "1]" if closed_high else "1)"
    ok = _is_real(x) and math.isfinite(x) and 0 < x and (x <= 1 if closed_high else x < 1)
    if not ok:
        raise ValueError(f"analysis.{name} must be in (0, {hi}, got {x!r}")


def _check_int(name: str, x: Any, *, minimum: int) -> None:
    if not (isinstance(x, numbers.Integral) and not isinstance(x, bool)) or x < minimum:
        raise ValueError(f"analysis.{name} must be an integer >= {minimum}, got {x!r}")


def _check_epochs(x: Any) -> tuple[int, ...]:
    if isinstance(x, (str, bytes)) or not isinstance(x, Sequence):
        raise ValueError(f"analysis.fixed_epochs must be a list of positive integers, got {x!r}")
    for k in x:
        if not (isinstance(k, numbers.Integral) and not isinstance(k, bool)) or k < 1:
            raise ValueError(f"analysis.fixed_epochs must be a list of positive integers, got {list(x)!r}")
    return tuple(sorted({int(k) for k in x}))


def _check_arm(name: str, arm: Any) -> dict:
    if not isinstance(arm, Mapping) or not arm:
        raise ValueError(f"analysis.{name} must be a non-empty mapping like "
                         f"{{'activation': 'selu', 'normalization': 'none'}}, got {arm!r}")
    for k, v in arm.items():
        if not isinstance(k, str) or not isinstance(v, (str, numbers.Real)) or isinstance(v, bool):
            raise ValueError(f"analysis.{name} must map config column names to values, got {dict(arm)!r}")
    return {k: arm[k] for k in arm}


def _check_paper(paper: Any) -> dict:
    if not isinstance(paper, Mapping):
        raise ValueError(f"analysis.paper_test_acc must be a mapping activation -> accuracy, got {paper!r}")
    for k, v in paper.items():
        if not isinstance(k, str) or not _is_real(v) or not 0 <= v <= 1:
            raise ValueError(f"analysis.paper_test_acc must map activation names to accuracies in [0, 1], "
                             f"got {k!r}: {v!r}")
    return {k: float(v) for k, v in paper.items()}


def metric_names(fixed_epochs: Sequence[int] = (1, 5, 10)) -> tuple[str, ...]:
    """Every per-trial metric that ``compare_arms`` can compare."""
    at = tuple(f"val_loss_at_{k}" for k in fixed_epochs)
    return BASE_METRICS[:4] + at + BASE_METRICS[4:]


def compared_metrics(params: AnalysisParams) -> list[str]:
    """Metrics in report order, primary first."""
    names = list(metric_names(params.fixed_epochs))
    names.remove(params.primary_metric)
    return [params.primary_metric] + names


def metric_direction(metric: str) -> str:
    """'higher' for accuracies, 'lower' for losses, epochs, areas and times."""
    return "higher" if "acc" in metric else "lower"


def metric_label(metric: str, params: AnalysisParams) -> str:
    """Plain-words name of a metric."""
    if metric.startswith("val_loss_at_"):
        return f"validation loss after epoch {metric.rsplit('_', 1)[1]}"
    labels = {
        "val_loss_auc": "mean validation loss over the epochs run (loss-curve area per epoch)",
        "epochs_to_target": f"epochs to reach {params.target_acc:.0%} validation accuracy",
        "epochs_to_rel_target": f"epochs to reach {params.rel_target:.0%} of the trial's own best validation accuracy",
        "time_to_target_s": f"training seconds to reach {params.target_acc:.0%} validation accuracy",
        "best_val_acc": "best validation accuracy",
        "test_acc": "test accuracy",
    }
    return labels.get(metric, metric)


# --------------------------------------------------------------------------- arms & columns

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
    at = {c for c in df.columns if str(c).startswith("val_loss_at_")}
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


# --------------------------------------------------------------------------- per-trial metrics

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


def _prepare_trials(epochs: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
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
    # trials seen only in the epochs table are kept (status UNKNOWN, so not analysed)
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
    trials = _prepare_trials(epochs, trials)
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


# --------------------------------------------------------------------------- basic statistics

def bootstrap_mean_ci(values: Sequence[float], params: AnalysisParams) -> dict:
    """Bootstrap CI of a mean (BCa, percentile fallback), seeded by ``params.random_state``.

    With fewer than two values there is no interval; when all values are equal
    the interval collapses to the point.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
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
    """Smallest two-sided exact Wilcoxon signed-rank p-value possible with n non-zero differences."""
    return min(1.0, 2.0 / 2 ** n) if n > 0 else 1.0


def wilcoxon_test(diffs: Sequence[float]) -> dict:
    """Two-sided Wilcoxon signed-rank test; p is None (with a reason) when it cannot be computed."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
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


def prob_better(diffs: Sequence[float], direction: str) -> dict:
    """Share of pairs in which the claimed-faster arm is better; ties count half."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return {"prob": None, "n_better": 0, "n_ties": 0, "n": 0}
    better = int(((d < 0) if direction == "lower" else (d > 0)).sum())
    ties = int((d == 0).sum())
    return {"prob": (better + 0.5 * ties) / len(d), "n_better": better, "n_ties": ties, "n": len(d)}


def t_interval(values: Sequence[float], confidence: float) -> tuple[float, float]:
    """Student-t interval of a mean; NaN for n < 2, the point when the spread is 0."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return math.nan, math.nan
    m, sd = float(x.mean()), float(x.std(ddof=1))
    if np.ptp(x) == 0:
        return float(x[0]), float(x[0])
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1)) * sd / math.sqrt(len(x))
    return m - half, m + half


def kaplan_meier(times: Sequence[float], reached: Sequence[bool]) -> dict:
    """Kaplan-Meier estimate of the fraction of trials that reached the target by each epoch."""
    t = np.asarray(times, dtype=float)
    e = np.asarray(reached, dtype=bool)
    if len(t) == 0:
        return {"n": 0, "n_reached": 0, "n_censored": 0, "epochs": [], "fraction_reached": [],
                "median_epochs": None}
    res = stats.ecdf(stats.CensoredData(uncensored=t[e], right=t[~e]))
    q = res.sf.quantiles.astype(float)
    frac = 1.0 - res.sf.probabilities.astype(float)
    reached_half = q[frac >= 0.5 - _TOL]
    return {"n": int(len(t)), "n_reached": int(e.sum()), "n_censored": int((~e).sum()),
            "epochs": q.tolist(), "fraction_reached": frac.tolist(),
            "median_epochs": float(reached_half[0]) if len(reached_half) else None}


def logrank_test(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> dict:
    """Two-sided log-rank test between two (times, reached) samples."""
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


# --------------------------------------------------------------------------- pairing

@dataclass
class Pairing:
    """How the two arms' trials were paired (shared by every metric)."""

    faster: pd.DataFrame          # analysed trials of the claimed-faster arm
    slower: pd.DataFrame
    pair_on: list[str]
    note: str
    keys: pd.DataFrame            # pair keys present in both arms
    unpaired: list[dict]
    missing_arms: list[str]


def _auto_pair_on(fast: pd.DataFrame, slow: pd.DataFrame, arm_keys: set[str]) -> tuple[list[str], str]:
    both = pd.concat([fast, slow])
    extra = [c for c in config_columns(both)
             if c not in arm_keys and c != "seed" and both[c].astype(str).nunique() > 1]
    keys, notes = ["seed"], []
    seeds = sorted(set(fast["seed"].astype(str)) & set(slow["seed"].astype(str)))
    for col in extra:
        shared = any(set(fast.loc[fast["seed"].astype(str) == s, col].astype(str))
                     & set(slow.loc[slow["seed"].astype(str) == s, col].astype(str)) for s in seeds)
        if seeds and not shared:
            notes.append(f"{col} differs between the two arms for every seed (each arm has its own {col}), "
                         f"so pairs are formed without it")
        else:
            keys.append(col)
    return keys, "; ".join(notes)


def pair_arms(metrics: pd.DataFrame, params: AnalysisParams,
              pair_on: Sequence[str] | None = None) -> Pairing:
    """Match analysed trials of the two arms on ``pair_on`` (auto: seed + shared extra axes)."""
    used = metrics.loc[metrics["in_analysis"]] if "in_analysis" in metrics else metrics
    fast = used.loc[arm_mask(used, params.faster_arm)]
    slow = used.loc[arm_mask(used, params.slower_arm)]
    missing = [f"{arm_label(arm)} (the {role} arm)" for arm, df, role in
               ((params.faster_arm, fast, "claimed-faster"), (params.slower_arm, slow, "claimed-slower"))
               if df.empty]
    if pair_on is None:
        arm_keys = set(params.faster_arm) | set(params.slower_arm)
        keys, note = _auto_pair_on(fast, slow, arm_keys) if not missing else (["seed"], "")
    else:
        keys, note = list(pair_on), "pair keys given explicitly"
    absent = [k for k in keys if k not in used.columns]
    if absent:
        raise ValueError(f"cannot pair on missing column(s): {', '.join(absent)}")
    note = f"pairs formed on {', '.join(keys)}" + (f"; {note}" if note else "")
    kf = fast[keys].drop_duplicates()
    ks = slow[keys].drop_duplicates()
    shared = kf.merge(ks, on=keys, how="inner")
    unpaired = []
    for role, arm, df, other in (("faster", params.faster_arm, fast, ks), ("slower", params.slower_arm, slow, kf)):
        marked = df.merge(other.assign(_paired=True), on=keys, how="left")
        for rec in marked.loc[marked["_paired"].isna()].to_dict("records"):
            unpaired.append({"arm": arm_label(arm), "role": role, "trial_id": rec["trial_id"],
                             **{k: rec[k] for k in keys}})
    unpaired.sort(key=lambda r: (r["role"], str(r["trial_id"])))
    return Pairing(fast, slow, keys, note, shared, unpaired, missing)


def _arm_means(df: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    g = df.assign(_v=analysis_values(df, metric)).groupby(keys, dropna=False, sort=True)
    return g.agg(value=("_v", "mean"), trial_ids=("trial_id", lambda s: ";".join(sorted(map(str, s))))).reset_index()


def _paired_table(pairing: Pairing, metric: str) -> pd.DataFrame:
    keys = pairing.pair_on
    f = _arm_means(pairing.faster, keys, metric).rename(
        columns={"value": "faster", "trial_ids": "faster_trial_ids"})
    s = _arm_means(pairing.slower, keys, metric).rename(
        columns={"value": "slower", "trial_ids": "slower_trial_ids"})
    t = f.merge(s, on=keys, how="inner")
    t["diff"] = t["faster"] - t["slower"]
    cols = [*keys, "faster_trial_ids", "slower_trial_ids", "faster", "slower", "diff"]
    return t[cols].sort_values(keys, kind="mergesort").reset_index(drop=True)


def paired_differences(metrics: pd.DataFrame, params: AnalysisParams, metric: str,
                       pair_on: Sequence[str] | None = None) -> pd.DataFrame:
    """Faster-arm minus slower-arm value of ``metric`` per pair.

    Columns: the pair keys, ``faster_trial_ids``, ``slower_trial_ids``
    (';'-joined when several trials share a key; their values are averaged),
    ``faster``, ``slower``, ``diff``.  Censored epoch counts use
    ``analysis_values``.  Rows with a missing value are kept (diff NaN).
    ``pair_on=None`` pairs on seed plus every extra config axis the arms share;
    an axis whose values never match between the arms within a seed (e.g. a
    per-arm tuned lr) is left out.  ``df.attrs`` holds ``pair_on``,
    ``pairing_note`` and ``unpaired``.
    """
    pairing = pair_arms(metrics, params, pair_on)
    table = _paired_table(pairing, metric)
    table.attrs.update(pair_on=pairing.pair_on, pairing_note=pairing.note, unpaired=pairing.unpaired,
                       missing_arms=pairing.missing_arms)
    return table


def _per_unit(table: pd.DataFrame, pair_on: list[str]) -> pd.DataFrame:
    """Average pair differences within seed (the independent unit)."""
    t = table.loc[np.isfinite(table["diff"].astype(float))]
    if "seed" in pair_on and len(pair_on) > 1:
        return t.groupby("seed", sort=True, dropna=False)[["faster", "slower", "diff"]].mean().reset_index()
    return t[[*pair_on, "faster", "slower", "diff"]].reset_index(drop=True)


def _strata(table: pd.DataFrame, pair_on: list[str], direction: str) -> list[dict]:
    extra = [k for k in pair_on if k != "seed"]
    if not extra or "seed" not in pair_on:
        return []
    out = []
    t = table.loc[np.isfinite(table["diff"].astype(float))]
    for key, g in t.groupby(extra, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        out.append({**dict(zip(extra, key)), "n_pairs": len(g), "mean_diff": float(g["diff"].mean()),
                    "prob_faster_better": prob_better(g["diff"], direction)["prob"]})
    return out


def _metric_comparison(table: pd.DataFrame, pair_on: list[str], metric: str,
                       params: AnalysisParams) -> dict:
    direction = metric_direction(metric)
    finite = table.loc[np.isfinite(table["diff"].astype(float))]
    units = _per_unit(table, pair_on)
    d = units["diff"].to_numpy(dtype=float)
    ci = bootstrap_mean_ci(d, params)
    wil = wilcoxon_test(d)
    pb = prob_better(finite["diff"], direction)
    unit_cols = ["seed"] if "seed" in units.columns and len(pair_on) > 1 else pair_on
    return {
        "metric": metric, "label": metric_label(metric, params), "direction": direction,
        "censored_as": ("beyond the budget: max(epochs_run, epochs_planned) + 1"
                        if metric in CENSORED_METRICS else None),
        "n_pairs": int(len(finite)), "n_pairs_missing_value": int(len(table) - len(finite)),
        "n_seeds": int(units["seed"].nunique()) if "seed" in units.columns else int(len(units)),
        "faster_mean": float(units["faster"].mean()) if len(units) else None,
        "slower_mean": float(units["slower"].mean()) if len(units) else None,
        "mean_diff": float(d.mean()) if len(d) else None,
        "median_diff": float(np.median(d)) if len(d) else None,
        "ci_low": ci["low"], "ci_high": ci["high"], "ci_method": ci["method"],
        "p_value": wil["p_value"], "p_note": wil["note"],
        "prob_faster_better": pb["prob"], "n_faster_better": pb["n_better"], "n_ties": pb["n_ties"],
        "unit_differences": [{**{c: r[c] for c in unit_cols}, "diff": float(r["diff"])}
                             for r in units.to_dict("records")],
        "by_stratum": _strata(table, pair_on, direction),
    }


def _survival(pairing: Pairing, metric: str) -> dict:
    flag = CENSORED_METRICS[metric]
    arms = {}
    samples = []
    for role, df in (("faster", pairing.faster), ("slower", pairing.slower)):
        t = df[metric].to_numpy(dtype=float)
        e = df[flag].to_numpy(dtype=bool)
        samples.append((t, e))
        arms[role] = kaplan_meier(t, e)
    return {"metric": metric, "method": "Kaplan-Meier per arm (censored at the last epoch run); "
                                        "two-sided log-rank test", **arms,
            "logrank": logrank_test(*samples)}


def compare_arms(metrics: pd.DataFrame, params: AnalysisParams | None = None,
                 pair_on: Sequence[str] | None = None) -> dict:
    """Paired comparison of the claimed-faster arm against the slower arm.

    Returns a dict with ``status`` ('ok' or 'missing_arm'), ``message``,
    ``faster_arm``/``slower_arm``, pairing info (``pair_on``,
    ``pairing_note``, ``unpaired``, ``n_pairs``, ``paired_seeds``),
    ``metrics`` (one entry per metric: n_pairs, n_seeds, mean/median
    difference faster-minus-slower, bootstrap CI, Wilcoxon p, probability the
    faster arm is better), ``survival`` (KM + log-rank for the two
    epochs-to-target metrics), ``primary_metric`` and ``factorial`` (see
    ``factorial_effects``; None when the grid is not crossed).
    """
    params = params or AnalysisParams()
    pairing = pair_arms(metrics, params, pair_on)
    out = {
        "faster_arm": dict(params.faster_arm), "slower_arm": dict(params.slower_arm),
        "faster_label": arm_label(params.faster_arm), "slower_label": arm_label(params.slower_arm),
        "primary_metric": params.primary_metric, "confidence": params.confidence,
        "pair_on": pairing.pair_on, "pairing_note": pairing.note, "unpaired": pairing.unpaired,
        "n_faster_trials": int(len(pairing.faster)), "n_slower_trials": int(len(pairing.slower)),
        "metrics": {}, "survival": {}, "factorial": None,
    }
    if pairing.missing_arms:
        out.update(status="missing_arm", missing_arms=pairing.missing_arms, n_pairs=0, paired_seeds=[],
                   message="there are no analysed trials for " + " and ".join(pairing.missing_arms)
                           + ", so the arms cannot be compared.")
        return out
    for metric in compared_metrics(params):
        out["metrics"][metric] = _metric_comparison(_paired_table(pairing, metric), pairing.pair_on,
                                                    metric, params)
    primary = _paired_table(pairing, params.primary_metric)
    primary = primary.loc[np.isfinite(primary["diff"].astype(float))]
    seeds = sorted(primary["seed"].tolist(), key=str) if "seed" in primary else []
    out.update(status="ok", missing_arms=[], n_pairs=int(len(primary)),
               paired_seeds=list(dict.fromkeys(seeds)),
               message=f"{len(primary)} pair(s) over {len(set(map(str, seeds)))} seed(s); "
                       f"{len(pairing.unpaired)} unpaired trial(s) left out of the paired statistics.")
    out["survival"] = {m: _survival(pairing, m) for m in CENSORED_METRICS}
    out["factorial"] = factorial_effects(metrics, params, params.primary_metric)
    return out


# --------------------------------------------------------------------------- factorial

def _differing_factors(params: AnalysisParams) -> list[str]:
    if set(params.faster_arm) != set(params.slower_arm):
        return []
    return [k for k in params.faster_arm if str(params.faster_arm[k]) != str(params.slower_arm[k])]


def factorial_effects(metrics: pd.DataFrame, params: AnalysisParams | None = None,
                      metric: str | None = None) -> dict | None:
    """Split the arm difference into the two factors it changes (2x2, paired by seed).

    Needs all four cells (faster/slower level of each factor) among analysed
    trials; returns None otherwise.  Per seed, each cell's value is averaged
    over its trials (e.g. over lr), then with ``y[a][b]`` (``f`` = the
    claimed-faster arm's level, ``s`` = the slower arm's level)::

        effect_a    = ((y[f][f] - y[s][f]) + (y[f][s] - y[s][s])) / 2
        effect_b    = ((y[f][f] - y[f][s]) + (y[s][f] - y[s][s])) / 2
        interaction = ((y[f][f] - y[s][f]) - (y[f][s] - y[s][s])) / 2

    so that, seed by seed, faster-arm minus slower-arm = effect_a + effect_b.
    Each effect gets a mean over seeds, a bootstrap CI and a Wilcoxon p.
    """
    params = params or AnalysisParams()
    metric = metric or params.primary_metric
    factors = _differing_factors(params)
    if len(factors) != 2:
        return None
    fa, fb = factors
    shared = {k: v for k, v in params.faster_arm.items() if k not in factors}
    used = metrics.loc[metrics["in_analysis"] & arm_mask(metrics, shared)] if shared \
        else metrics.loc[metrics["in_analysis"]]
    used = used.assign(_v=analysis_values(used, metric))
    levels = {"f": params.faster_arm, "s": params.slower_arm}
    cells, per_seed = {}, []
    for la in "fs":
        for lb in "fs":
            arm = {fa: levels[la][fa], fb: levels[lb][fb]}
            cell = used.loc[arm_mask(used, arm)]
            if cell.empty:
                return None
            cells[la + lb] = {**{k: str(v) for k, v in arm.items()}, "n_trials": int(len(cell)),
                              "mean": float(cell["_v"].mean()) if cell["_v"].notna().any() else None}
            per_seed.append(cell.groupby("seed", sort=True)["_v"].mean().rename(la + lb))
    grid = pd.concat(per_seed, axis=1)
    complete = grid.dropna()
    y = {c: complete[c].to_numpy(dtype=float) for c in cells}
    effects = {
        fa: ((y["ff"] - y["sf"]) + (y["fs"] - y["ss"])) / 2,
        fb: ((y["ff"] - y["fs"]) + (y["sf"] - y["ss"])) / 2,
        "interaction": ((y["ff"] - y["sf"]) - (y["fs"] - y["ss"])) / 2,
    }
    out_effects = {}
    for name, vals in effects.items():
        ci = bootstrap_mean_ci(vals, params)
        wil = wilcoxon_test(vals)
        out_effects[name] = {"mean": float(vals.mean()) if len(vals) else None,
                             "ci_low": ci["low"], "ci_high": ci["high"], "ci_method": ci["method"],
                             "p_value": wil["p_value"], "p_note": wil["note"]}
    return {
        "metric": metric, "label": metric_label(metric, params), "direction": metric_direction(metric),
        "factors": [fa, fb],
        "levels": {fa: {"faster": str(params.faster_arm[fa]), "slower": str(params.slower_arm[fa])},
                   fb: {"faster": str(params.faster_arm[fb]), "slower": str(params.slower_arm[fb])}},
        "cells": [cells[c] for c in ("ff", "fs", "sf", "ss")],
        "n_seeds": int(len(complete)),
        "seeds": [s for s in complete.index.tolist()],
        "seeds_incomplete": [s for s in grid.index.difference(complete.index).tolist()],
        "effects": out_effects,
    }


# --------------------------------------------------------------------------- test accuracy

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
    used = metrics.loc[metrics["in_analysis"]] if "in_analysis" in metrics else metrics
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


# --------------------------------------------------------------------------- per-epoch curves

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


# --------------------------------------------------------------------------- verdict

def _fmt(x: float | None, digits: int = 3) -> str:
    """Number for prose: 3 decimals, or 3 significant digits for tiny values; 'n/a' when missing."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if x != 0 and abs(x) < 10 ** -digits:
        return f"{x:.{digits}g}"
    return f"{x:.{digits}f}"


def format_p(p: float | None) -> str:
    """'p = 0.031', 'p < 0.001' or 'p not computed'."""
    if p is None:
        return "p not computed"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _factor_phrase(factor: str, levels: dict) -> str:
    lv = levels[factor]
    if factor == "activation":
        return f"switching the activation from {lv['slower']} to {lv['faster']}"
    if factor == "normalization":
        return f"changing input normalization from {lv['slower']} to {lv['faster']}"
    return f"changing {factor} from {lv['slower']} to {lv['faster']}"


def _excludes_zero(e: dict) -> bool:
    return e["ci_low"] is not None and (e["ci_low"] > 0 or e["ci_high"] < 0)


def _factorial_sentence(fac: dict) -> str:
    fa, fb = fac["factors"]
    eff = fac["effects"]
    parts = [f"{_factor_phrase(f, fac['levels'])} accounts for {_fmt(eff[f]['mean'])} "
             f"(CI {_fmt(eff[f]['ci_low'])} to {_fmt(eff[f]['ci_high'])})" for f in (fa, fb)]
    text = (f"Splitting the difference with the two mixed arms ({fac['n_seeds']} complete seed(s)): "
            f"{parts[0]}, and {parts[1]}; the interaction is {_fmt(eff['interaction']['mean'])} "
            f"(CI {_fmt(eff['interaction']['ci_low'])} to {_fmt(eff['interaction']['ci_high'])}).")
    sig = [f for f in (fa, fb) if _excludes_zero(eff[f])]
    if len(sig) == 1:
        other = fb if sig[0] == fa else fa
        text += (f" So the difference comes from {_factor_phrase(sig[0], fac['levels'])}, "
                 f"not from {_factor_phrase(other, fac['levels'])}.")
    elif len(sig) == 2:
        text += " Both factors contribute."
    else:
        text += " Neither factor on its own is distinguishable from zero."
    if _excludes_zero(eff["interaction"]):
        text += " The two factors interact, so each main effect depends on the level of the other."
    return text


def verdict(comparison: dict, params: AnalysisParams | None = None) -> dict:
    """Label ('supported', 'contradicted', 'inconclusive', 'no verdict') and a plain-words paragraph.

    Rule on the primary metric, symmetric: CI entirely on the claimed side of 0 and
    Wilcoxon p < 1 - confidence -> supported; CI entirely on the other side and
    p < 1 - confidence -> contradicted; otherwise inconclusive.  Fewer than ``min_seeds`` paired
    seeds (or a missing arm) -> no verdict.
    """
    params = params or AnalysisParams()
    fast, slow = arm_words(params.faster_arm), arm_words(params.slower_arm)
    if comparison.get("status") != "ok":
        return {"label": "no verdict", "text": f"Cannot judge the claim: {comparison.get('message', 'no comparison was possible.')}"}
    m = comparison["metrics"][params.primary_metric]
    if m["n_seeds"] < params.min_seeds:
        return {"label": "no verdict",
                "text": (f"Cannot judge the claim: only {m['n_seeds']} paired seed(s) have a value for the primary measure "
                         f"({m['label']}), fewer than the {params.min_seeds} required; "
                         f"{len(comparison['unpaired'])} trial(s) had no partner in the other arm.")}
    lower = m["direction"] == "lower"
    alpha = 1 - params.confidence
    lo, hi, p = m["ci_low"], m["ci_high"], m["p_value"]
    claimed = lo is not None and ((hi < 0) if lower else (lo > 0))
    against = lo is not None and ((lo > 0) if lower else (hi < 0))
    if claimed and p is not None and p < alpha:
        label = "supported"
    elif against and p is not None and p < alpha:
        label = "contradicted"
    else:
        label = "inconclusive"
    side = "below" if lower else "above"
    text = (f"On the primary measure, the {m['label']}, where {m['direction']} is better, {fast} minus {slow} "
            f"averaged {_fmt(m['mean_diff'])} over {m['n_seeds']} seed(s) "
            f"({params.confidence:.0%} bootstrap CI {_fmt(lo)} to {_fmt(hi)}; "
            f"Wilcoxon signed-rank {format_p(p)}"
            + (f", {m['p_note']}" if m["p_note"] else "") + "). "
            f"The {arm_label(params.faster_arm)} arm was better in {m['n_faster_better']} of {m['n_pairs']} "
            f"pair(s), ties counting half: probability {_fmt(m['prob_faster_better'], 2)}. ")
    if label == "supported":
        text += (f"The interval lies entirely {side} zero, on the side the paper claims, and p < {alpha:.2g}: "
                 f"the claim is supported.")
    elif label == "contradicted":
        text += (f"The interval lies entirely on the other side of zero and p < {alpha:.2g}: {fast} converged "
                 f"more slowly, which contradicts the claim.")
    else:
        why = "the interval includes zero" if not (claimed or against) else f"p is not below {alpha:.2g}"
        text += f"Inconclusive: {why}, so the data do not show a reliable difference in either direction."
    fac = comparison.get("factorial")
    if fac and fac["n_seeds"] > 0:
        text += " " + _factorial_sentence(fac)
    return {"label": label, "text": text}


# --------------------------------------------------------------------------- summary

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


def _distinct(series: pd.Series) -> list:
    vals = series.dropna().unique().tolist()
    try:
        return sorted(vals)
    except TypeError:
        return sorted(vals, key=str)


def design_summary(metrics: pd.DataFrame, params: AnalysisParams) -> dict:
    """Counts and grid of the experiment as run."""
    cfg = config_columns(metrics)
    arms = []
    for arm in arms_present(metrics.assign(in_analysis=True), params):
        g = metrics.loc[arm_mask(metrics, arm)]
        arms.append({**arm, "label": arm_label(arm), "n_trials": int(len(g)),
                     "n_analysed": int(g["in_analysis"].sum()), "n_diverged": int(g["diverged"].sum()),
                     "status_counts": {str(k): int(v) for k, v in sorted(g["status"].value_counts().items())},
                     "seeds": _distinct(g["seed"]),
                     "lrs": _distinct(g["lr"]) if "lr" in g else []})
    axes = {c: _distinct(metrics[c]) for c in cfg if c not in ARM_FACTORS}
    excluded = metrics.loc[~metrics["in_analysis"], ["trial_id", "status", "excluded_reason"]]
    return {
        "n_trials": int(len(metrics)), "n_analysed": int(metrics["in_analysis"].sum()),
        "n_diverged": int(metrics["diverged"].sum()),
        "status_counts": {str(k): int(v) for k, v in sorted(metrics["status"].value_counts().items())},
        "arms": arms, "config_axes": axes,
        "epochs_planned": _distinct(metrics["epochs_planned"]),
        "max_epochs_run": int(metrics["epochs_run"].max()) if len(metrics) else 0,
        "excluded_trials": excluded.sort_values("trial_id").to_dict("records"),
        "diverged_trials": sorted(metrics.loc[metrics["diverged"], "trial_id"].tolist()),
        "auc_partial_trials": sorted(metrics.loc[metrics["auc_partial"].astype(bool), "trial_id"].tolist()),
    }


def summarize(epochs: pd.DataFrame, trials: pd.DataFrame, params: AnalysisParams | None = None) -> dict:
    """Everything the report needs, as plain JSON-serializable data (None for missing numbers).

    Deterministic: every bootstrap is seeded with ``params.random_state``.
    Keys: params, design, comparison, factorial (per metric: primary,
    epochs_to_target, test_acc; None when the grid is not crossed),
    test_accuracy, verdict.
    """
    params = params or AnalysisParams()
    metrics = convergence_metrics(epochs, trials, params)
    if metrics.empty or "in_analysis" not in metrics:
        comparison = {"status": "missing_arm", "message": "there are no trials to analyse.", "metrics": {},
                      "survival": {}, "factorial": None, "unpaired": [], "n_pairs": 0}
        design, test_acc, factorial = {"n_trials": 0}, [], {}
    else:
        comparison = compare_arms(metrics, params)
        design = design_summary(metrics, params)
        by = ["lr"] if "lr" in metrics and metrics.groupby(list(ARM_FACTORS))["lr"].nunique().max() > 1 else []
        test_acc = test_accuracy_by_arm(metrics, params, by=by).to_dict("records")
        factorial = {m: factorial_effects(metrics, params, m)
                     for m in dict.fromkeys([params.primary_metric, "epochs_to_target", "test_acc"])}
    return _jsonable({
        "params": params.to_dict(), "design": design, "comparison": comparison,
        "factorial": factorial, "test_accuracy": test_acc,
        "verdict": verdict(comparison, params),
    })
