"""The 2x2 factorial split: how much of the arm difference is the activation, the normalization, or both."""
from __future__ import annotations

import pandas as pd

from study.analysis.convergence import analysis_values
from study.analysis.intervals import bootstrap_mean_ci, wilcoxon_test
from study.analysis.params import AnalysisParams, metric_direction, metric_label
from study.analysis.tables import arm_mask


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
