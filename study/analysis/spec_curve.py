"""The specification curve (Simonsohn, Simmons & Nelson 2020): one figure a reader takes in at once.

Top panel: each specification's estimate of the primary measure (claimed-faster arm minus claimed-slower
arm) with its interval, sorted by the estimate, coloured by its verdict, zero marked.  Bottom panel: one
row per level of each choice, a dot in the column of every specification that made that choice.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

VERDICT_COLOURS = {"supported": "#31a354", "contradicted": "#de2d26", "inconclusive": "#e6a50d",
                   "no verdict": "#9e9e9e"}
FILENAME = "specification_curve.png"


def _level_text(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _level_key(text: str) -> tuple:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def specification_curve(path: Path, entries: list[dict], axes: list[str], *, metric: str, direction: str,
                        faster: str, slower: str, dpi: int = 110) -> list[str]:
    """Draw the figure into ``path``; return the specification names in the plotted order (by estimate)."""
    def est(e):
        x = e["primary"]["mean_diff"]
        return np.inf if x is None else x

    order = sorted(entries, key=lambda e: (est(e), e["name"]))
    rows = [(a, lv) for a in axes
            for lv in sorted({_level_text(e["settings"].get(a)) for e in entries}, key=_level_key)]
    n = len(order)
    fig = Figure(figsize=(max(6.0, 0.55 * n + 3.0), 3.6 + 0.28 * len(rows)))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3.2, max(1.0, 0.28 * len(rows))]})
    xs = np.arange(n)
    for i, e in enumerate(order):
        p = e["primary"]
        colour = VERDICT_COLOURS.get(e["verdict"]["label"], "#636363")
        if p["mean_diff"] is None:
            continue
        if p["ci_low"] is not None:
            top.plot([i, i], [p["ci_low"], p["ci_high"]], color=colour, lw=2, alpha=0.8)
        top.plot(i, p["mean_diff"], "o", color=colour, ms=7)
    top.axhline(0, color="#444", lw=1)
    for label, colour in VERDICT_COLOURS.items():
        if any(e["verdict"]["label"] == label for e in order):
            top.plot([], [], "o", color=colour, label=label)
    top.legend(fontsize=8, loc="best")
    better = "below" if direction == "lower" else "above"
    top.set_ylabel(f"{metric}\n{faster} minus {slower}")
    top.set_title(f"Specification curve: {n} specifications, sorted by the estimate; "
                  f"{better} zero favours {faster}", fontsize=10)
    top.grid(alpha=0.3, axis="y")
    for j, (axis, level) in enumerate(rows):
        on = [i for i, e in enumerate(order) if _level_text(e["settings"].get(axis)) == level]
        bottom.plot(xs, np.full(n, j), "o", color="#e0e0e0", ms=6)
        bottom.plot(on, np.full(len(on), j), "o", color="#222", ms=6)
    bottom.set_yticks(range(len(rows)), [f"{a} = {lv}" for a, lv in rows], fontsize=8)
    bottom.set_ylim(len(rows) - 0.5, -0.5)
    bottom.set_xticks(xs, [str(i + 1) for i in xs], fontsize=8)
    bottom.set_xlabel("specification (rank by estimate)")
    bottom.grid(alpha=0.2, axis="x")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata={"Software": None}, bbox_inches="tight")
    return [e["name"] for e in order]
