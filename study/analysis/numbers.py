"""How the report writes numbers: a metric's value or difference, its interval, a p-value."""
from __future__ import annotations

import math
from typing import Any

from study.analysis.verdict import format_p


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def _num(x: Any, digits: int = 3) -> str:
    return "–" if _missing(x) else f"{x:.{digits}f}"


def _metric_value(metric: str, x: Any, *, diff: bool = False) -> str:
    if _missing(x):
        return "–"
    if metric in ("best_val_acc", "test_acc", "plateau_val_acc"):
        return f"{x * 100:+.2f} pp" if diff else f"{x * 100:.2f}%"
    if metric.startswith(("epochs", "rmst", "epoch_")):
        return f"{x:+.2f}" if diff else f"{x:.2f}"
    if metric.endswith("_s"):
        return f"{x:+.1f} s" if diff else f"{x:.1f} s"
    return f"{x:+.4f}" if diff else f"{x:.4f}"


def _ci(metric: str, lo: Any, hi: Any) -> str:
    if lo is None:
        return "–"
    return f"{_metric_value(metric, lo, diff=True)} to {_metric_value(metric, hi, diff=True)}"


def _p(p: Any) -> str:
    return "–" if p is None else format_p(p).removeprefix("p ").replace("= ", "")
