"""The analysis's parameters (`analysis:` in a study config) and the names of the measures it compares."""
from __future__ import annotations

import math
import numbers
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

BASE_METRICS = ("val_loss_auc", "epochs_to_target", "epochs_to_rel_target", "time_to_target_s",
                "best_val_acc", "test_acc")
# speed measures (study.analysis.speed), in panel order; the ladder and RMST rows are added per target
SPEED_METRICS = ("val_error_area", "epochs_to_plateau_90", "epochs_to_plateau_95", "train_loss_area",
                 "val_nll_ts_area", "calibration_gap_area")
DESCRIPTIVE_METRICS = ("epoch_min_val_loss", "min_val_loss")
PRIMARY_DEFAULT = "val_error_area"


def _default_targets() -> tuple:
    return (0.5, 0.6, 0.7, 0.75)


def _default_faster() -> dict:
    return {"activation": "selu", "normalization": "none"}


def _default_slower() -> dict:
    return {"activation": "relu", "normalization": "per_image"}


def _default_paper() -> dict:
    return {"relu": 0.8088, "selu": 0.8143}


@dataclass(frozen=True)
class AnalysisParams:
    """Knobs of the analysis; validated on construction (ValueError, one sentence).

    ``learned_margin``: the verdict rule is applied only when both compared arms learned, i.e. the low end
    of each arm's accuracy interval (test accuracy, or best validation accuracy when the arm has no test
    figure; a bootstrap interval over seeds) lies above chance (1 / ``n_classes``) plus this margin.
    0.05 means 5 percentage points: with 62 classes an arm must be clearly above 6.6%.
    """

    target_acc: float = 0.7                 # absolute validation-accuracy target
    rel_target: float = 0.95                # fraction of the trial's own best val acc
    fixed_epochs: tuple[int, ...] = (1, 5, 10)
    faster_arm: dict = field(default_factory=_default_faster)   # the arm claimed faster
    slower_arm: dict = field(default_factory=_default_slower)
    primary_metric: str = PRIMARY_DEFAULT
    confidence: float = 0.95
    n_resamples: int = 10000
    min_seeds: int = 6
    random_state: int = 0
    paper_test_acc: dict = field(default_factory=_default_paper)  # keyed by activation
    n_classes: int = 62                     # chance accuracy is 1 / n_classes
    learned_margin: float = 0.05            # an arm learned when its accuracy interval's low end > chance + this
    targets: tuple[float, ...] = field(default_factory=_default_targets)  # validation-accuracy ladder
    budget_epochs: float | None = None      # common budget of the area measures (None: the smallest planned)
    smooth_epochs: float = 1.0              # width of the plateau smoother, in epochs (at least 3 evaluations)

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
        _check_int("n_classes", self.n_classes, minimum=2)
        if not (_is_real(self.learned_margin) and 0 <= self.learned_margin < 1 - 1 / self.n_classes):
            raise ValueError(f"analysis.learned_margin must be in [0, 1 - 1/n_classes), got {self.learned_margin!r}")
        object.__setattr__(self, "paper_test_acc", _check_paper(self.paper_test_acc))
        object.__setattr__(self, "targets", _check_targets(self.targets))
        if self.budget_epochs is not None and not (_is_real(self.budget_epochs) and math.isfinite(self.budget_epochs)
                                                   and self.budget_epochs > 0):
            raise ValueError(f"analysis.budget_epochs must be a positive number or null, got {self.budget_epochs!r}")
        if not (_is_real(self.smooth_epochs) and math.isfinite(self.smooth_epochs) and self.smooth_epochs > 0):
            raise ValueError(f"analysis.smooth_epochs must be a positive number, got {self.smooth_epochs!r}")
        allowed = metric_names(self.fixed_epochs, self.targets)
        if self.primary_metric not in allowed:
            raise ValueError(f"analysis.primary_metric must be one of {', '.join(allowed)}, "
                             f"got {self.primary_metric!r}")

    @property
    def chance_acc(self) -> float:
        """Accuracy of guessing: 1 / n_classes (62 classes: 1.6%)."""
        return 1 / self.n_classes

    @property
    def learned_threshold(self) -> float:
        """What the low end of an arm's accuracy interval must exceed for the arm to count as learned."""
        return self.chance_acc + self.learned_margin

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
        # Typed by the project's one config engine (hwr.sections), then checked by __post_init__.
        from hwr.sections import coerce

        hints = typing.get_type_hints(cls)
        return cls(**{k: coerce(f"analysis.{k}", v, hints[k], "") for k, v in d.items()})

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


def _check_targets(x: Any) -> tuple[float, ...]:
    if isinstance(x, (str, bytes)) or not isinstance(x, Sequence) or not x \
            or not all(_is_real(t) and 0 < t <= 1 for t in x):
        raise ValueError(f"analysis.targets must be a non-empty list of accuracies in (0, 1], got {x!r}")
    return tuple(sorted({float(t) for t in x}))


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


# --------------------------------------------------------------------------- measures

def target_key(t: float) -> str:
    """Column suffix of a ladder target: 0.7 -> '70', 0.725 -> '72.5'."""
    return f"{t * 100:g}"


def ladder_metrics(targets: Sequence[float]) -> tuple[str, ...]:
    """``epochs_to_acc_{t}`` (censored, paired) and ``rmst_acc_{t}`` (Kaplan-Meier, per arm) per target."""
    return tuple(f"{kind}_{target_key(t)}" for t in targets for kind in ("epochs_to_acc", "rmst_acc"))


def panel_metrics(params: "AnalysisParams") -> list[str]:
    """The measure panel: every speed measure, in report order (primary first)."""
    names = [SPEED_METRICS[0], *ladder_metrics(params.targets), *SPEED_METRICS[1:]]
    if params.primary_metric in names:
        names.remove(params.primary_metric)
    return [params.primary_metric, *names]


def metric_names(fixed_epochs: Sequence[int] = (1, 5, 10), targets: Sequence[float] = _default_targets()
                 ) -> tuple[str, ...]:
    """Every per-trial metric that ``compare_arms`` can compare (RMST rows are per arm: not primary)."""
    at = tuple(f"val_loss_at_{k}" for k in fixed_epochs)
    ladder = tuple(m for m in ladder_metrics(targets) if m.startswith("epochs_to_acc"))
    return (*SPEED_METRICS, *ladder, *BASE_METRICS[:4], *at, *DESCRIPTIVE_METRICS, *BASE_METRICS[4:])


def compared_metrics(params: AnalysisParams) -> list[str]:
    """Metrics in report order, primary first."""
    names = list(metric_names(params.fixed_epochs, params.targets))
    names.remove(params.primary_metric)
    return [params.primary_metric] + names


def metric_direction(metric: str) -> str:
    """'higher' for accuracies, 'lower' for losses, errors, epochs, areas and times."""
    return "higher" if metric.endswith("_acc") or metric in ("best_val_acc", "test_acc") else "lower"


def metric_label(metric: str, params: AnalysisParams) -> str:
    """Plain-words name of a metric."""
    budget = "the common budget" if params.budget_epochs is None else f"the first {params.budget_epochs:g} epochs"
    if metric.startswith("val_loss_at_"):
        return f"validation loss after epoch {metric.rsplit('_', 1)[1]}"
    if metric.startswith("epochs_to_acc_"):
        return f"epochs to {metric.rsplit('_', 1)[1]}% validation accuracy (a miss counts as beyond the budget)"
    if metric.startswith("rmst_acc_"):
        return (f"restricted mean epochs to {metric.rsplit('_', 1)[1]}% validation accuracy "
                f"(Kaplan-Meier, up to {budget})")
    labels = {
        "val_error_area": f"validation error area per epoch (1 - val acc, trapezoid over {budget})",
        "epochs_to_plateau_90": "epochs to 90% of the trial's own smoothed validation-accuracy plateau",
        "epochs_to_plateau_95": "epochs to 95% of the trial's own smoothed validation-accuracy plateau",
        "train_loss_area": f"training loss area per epoch (trapezoid over {budget})",
        "val_nll_ts_area": f"temperature-scaled validation NLL area per epoch (over {budget})",
        "calibration_gap_area": f"calibration gap area per epoch (val loss minus temperature-scaled NLL, over {budget})",
        "epoch_min_val_loss": "epoch of the minimum validation loss",
        "min_val_loss": "minimum validation loss",
        "val_loss_auc": "mean validation loss over the epochs run (loss-curve area per epoch)",
        "epochs_to_target": f"epochs to reach {params.target_acc:.0%} validation accuracy",
        "epochs_to_rel_target": f"epochs to reach {params.rel_target:.0%} of the trial's own best validation accuracy",
        "time_to_target_s": f"training seconds to reach {params.target_acc:.0%} validation accuracy",
        "best_val_acc": "best validation accuracy",
        "test_acc": "test accuracy",
    }
    return labels.get(metric, metric)
