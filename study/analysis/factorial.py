"""The 2x2 factorial split: how much of the arm difference is the activation, the normalization, or both."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from study.analysis.convergence import analysis_values
from study.analysis.intervals import difference_stats
from study.analysis.params import AnalysisParams, metric_direction, metric_label
from study.analysis.tables import arm_mask, distinct


def _differing_factors(params: AnalysisParams) -> list[str]:
    if set(params.faster_arm) != set(params.slower_arm):
        return []
    return [k for k in params.faster_arm if str(params.faster_arm[k]) != str(params.slower_arm[k])]


def _seed_effects(metrics: pd.DataFrame, params: AnalysisParams, metric: str,
                  within: Mapping[str, Any]) -> tuple[list[str], dict, pd.DataFrame, pd.DataFrame] | None:
    """(factors, cells, per-seed cell values, per-seed effects) of the analysed trials matching ``within``."""
    factors = _differing_factors(params)
    if len(factors) != 2:
        return None
    fa, fb = factors
    shared = {**{k: v for k, v in params.faster_arm.items() if k not in factors}, **within}
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
    y = grid.dropna()
    effects = pd.DataFrame({
        fa: ((y["ff"] - y["sf"]) + (y["fs"] - y["ss"])) / 2,
        fb: ((y["ff"] - y["fs"]) + (y["sf"] - y["ss"])) / 2,
        "interaction": ((y["ff"] - y["sf"]) - (y["fs"] - y["ss"])) / 2,
    }, index=y.index)
    return [fa, fb], cells, grid, effects


def factorial_effects(metrics: pd.DataFrame, params: AnalysisParams | None = None,
                      metric: str | None = None, within: Mapping[str, Any] | None = None) -> dict | None:
    """Split the arm difference into the two factors it changes (2x2, paired by seed).

    Needs all four cells (faster/slower level of each factor) among analysed
    trials (those matching ``within``, e.g. ``{"weights": "glyphs"}``, when
    given); returns None otherwise.  Per seed, each cell's value is averaged
    over its trials (e.g. over lr), then with ``y[a][b]`` (``f`` = the
    claimed-faster arm's level, ``s`` = the slower arm's level)::

        effect_a    = ((y[f][f] - y[s][f]) + (y[f][s] - y[s][s])) / 2
        effect_b    = ((y[f][f] - y[f][s]) + (y[s][f] - y[s][s])) / 2
        interaction = ((y[f][f] - y[s][f]) - (y[f][s] - y[s][s])) / 2

    so that, seed by seed, faster-arm minus slower-arm = effect_a + effect_b.
    Each effect gets a mean over seeds, a bootstrap CI and a Wilcoxon p (``difference_stats``).
    """
    params = params or AnalysisParams()
    metric = metric or params.primary_metric
    split = _seed_effects(metrics, params, metric, dict(within or {}))
    if split is None:
        return None
    (fa, fb), cells, grid, effects = split
    return {
        "metric": metric, "label": metric_label(metric, params), "direction": metric_direction(metric),
        "factors": [fa, fb],
        "levels": {fa: {"faster": str(params.faster_arm[fa]), "slower": str(params.slower_arm[fa])},
                   fb: {"faster": str(params.faster_arm[fb]), "slower": str(params.slower_arm[fb])}},
        "within": dict(within or {}),
        "cells": [cells[c] for c in ("ff", "fs", "sf", "ss")],
        "n_seeds": int(len(effects)),
        "seeds": effects.index.tolist(),
        "seeds_incomplete": grid.index.difference(effects.index).tolist(),
        "effects": {name: difference_stats(effects[name], params) for name in effects.columns},
    }


def factorial_by(metrics: pd.DataFrame, params: AnalysisParams, metric: str, axis: str) -> dict | None:
    """Does each factorial effect depend on ``axis`` (e.g. ``weights``, the conv base)?

    The 2x2 split within each level of ``axis`` (``factorial_effects(..., within={axis: level})``),
    and, for each level after the first (the reference, in sorted order), its contrast with the
    reference: per seed, effect at that level minus effect at the reference, over the seeds both have,
    with ``difference_stats``.  A contrast whose interval excludes 0 says the effect depends on ``axis``.
    None when fewer than two levels have all four cells.
    """
    used = metrics.loc[metrics["in_analysis"]] if axis in metrics else metrics.iloc[0:0]
    levels, per_level = {}, {}
    for level in distinct(used[axis]) if len(used) else []:
        split = _seed_effects(metrics, params, metric, {axis: level})
        if split is not None:
            levels[level] = factorial_effects(metrics, params, metric, within={axis: level})
            per_level[level] = split[3]
    if len(levels) < 2:
        return None
    ref, *rest = list(levels)
    contrasts = []
    for level in rest:
        both = per_level[level].merge(per_level[ref], left_index=True, right_index=True,   # seeds in both
                                      suffixes=("", "_ref"))
        contrasts.append({"level": level, "reference": ref, "n_seeds": int(len(both)),
                          "effects": {name: difference_stats(both[name] - both[f"{name}_ref"], params)
                                      for name in per_level[ref].columns}})
    return {"metric": metric, "axis": axis, "reference": ref,
            "levels": [{"level": k, **v} for k, v in levels.items()], "contrasts": contrasts}
