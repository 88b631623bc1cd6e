"""Specifications: the choices the claim was tested under, one verdict each, and the robust answer.

A **specification** is one combination of the choices that are neither the arm (activation,
normalization) nor the seed: the config columns (optimizer, trainable_from, image_size, dropout, weights,
split, init, ...) that take several values among the analysed trials.  When the tables have a
``specification`` column (the name a config gives each specification) the names define them and the
varying columns are their settings.

The learning rate: when every (specification, arm) ran at one lr (lr tuned per arm, as in the multiverse),
lr belongs to the **arm** (``lr_role: "arm"``: each arm's lr is listed with it, and pairs form on the seed);
when some (specification, arm) ran several lrs (an lr grid), lr is a **choice** like any other and each lr
is a specification of its own (``lr_role: "axis"``).

Per specification, the study's own functions on its subset of trials: ``compare_arms`` (paired
differences, the measure panel, the 2x2 split) and ``verdict``.  Across them, ``study.analysis.multiverse``.
"""
from __future__ import annotations

from collections import Counter

import pandas as pd

from study.analysis.comparison import compare_arms
from study.analysis.describe import design_summary
from study.analysis.multiverse import depends_on, joint_inference, seed_difference_table
from study.analysis.params import AnalysisParams
from study.analysis.tables import ARM_FACTORS, analysed, config_columns, distinct
from study.analysis.verdict import verdict

SPEC_COLUMN = "specification"
LABELS = ("contradicted", "supported", "inconclusive", "no verdict")


def _key(df: pd.DataFrame, cols: list[str]) -> pd.Series:
    return df[cols].astype(str).agg("\x1f".join, axis=1) if cols else pd.Series("", index=df.index)


def specification_axes(metrics: pd.DataFrame) -> tuple[list[str], str]:
    """(the choice columns, lr_role): the config columns other than the arm factors, seed, lr and the
    ``specification`` name that take several values among the analysed trials; lr is added when some
    (specification, arm) ran several lrs (lr_role "axis"), else it belongs to the arm ("arm"), or is
    "constant" / "absent"."""
    used = analysed(metrics)
    skip = {*ARM_FACTORS, "seed", "lr", SPEC_COLUMN}
    axes = [c for c in config_columns(used) if c not in skip and used[c].astype(str).nunique() > 1]
    if "lr" not in used.columns:
        return axes, "absent"
    if used["lr"].astype(str).nunique() <= 1:
        return axes, "constant"
    keys = [*([SPEC_COLUMN] if SPEC_COLUMN in used.columns else axes), *[k for k in ARM_FACTORS if k in used]]
    grid = used["lr"].astype(str).groupby(_key(used, keys)).nunique().max() > 1
    return (axes + ["lr"], "axis") if grid else (axes, "arm")


def _label_of(settings: dict, reference: dict) -> str:
    diff = [f"{k}={v}" for k, v in settings.items() if str(v) != str(reference.get(k))]
    return ", ".join(diff) if diff else "reference"


def assign_specifications(metrics: pd.DataFrame) -> tuple[pd.Series, list[dict], list[str], str]:
    """(spec name per metrics row, the specifications in order, the axes, lr_role).

    Each specification: ``name``, ``settings`` (axis -> value; a list when a named specification holds
    several).  Without a ``specification`` column a specification is named by its settings that differ
    from the reference (each axis's most common level among the analysed trials, ties to the first in
    sorted order): "reference", or e.g. "optimizer=sgd, trainable_from=block5"."""
    axes, lr_role = specification_axes(metrics)
    used = analysed(metrics)
    if SPEC_COLUMN in metrics.columns and used[SPEC_COLUMN].notna().any():
        names = metrics[SPEC_COLUMN].astype(str)
        specs = []
        for name in distinct(used[SPEC_COLUMN].astype(str)):
            g = used.loc[used[SPEC_COLUMN].astype(str) == name]
            specs.append({"name": name, "settings": {a: (v[0] if len(v := distinct(g[a])) == 1 else v)
                                                     for a in axes}})
        return names, specs, axes, lr_role
    if not axes:
        return pd.Series("all trials", index=metrics.index), [{"name": "all trials", "settings": {}}], axes, lr_role
    reference = {a: used[a].astype(str).value_counts().sort_index(kind="mergesort").idxmax() for a in axes}
    key = _key(metrics, axes)
    first = used.assign(_k=_key(used, axes)).drop_duplicates("_k")
    specs = []
    for rec in first.to_dict("records"):
        settings = {a: rec[a] for a in axes}
        specs.append({"name": _label_of(settings, reference), "settings": settings, "_k": rec["_k"]})
    specs.sort(key=lambda s: (s["name"] != "reference", s["name"]))
    names = key.map({s["_k"]: s["name"] for s in specs})
    for s in specs:
        del s["_k"]
    return names, specs, axes, lr_role


def _primary(comparison: dict, params: AnalysisParams) -> dict:
    m = (comparison.get("metrics") or {}).get(params.primary_metric) or {}
    return {"metric": params.primary_metric, "direction": m.get("direction"), "n_seeds": m.get("n_seeds", 0),
            "mean_diff": m.get("mean_diff"), "ci_low": m.get("ci_low"), "ci_high": m.get("ci_high"),
            "ci_method": m.get("ci_method"), "p_value": m.get("p_value"), "p_note": m.get("p_note"),
            "faster_mean": m.get("faster_mean"), "slower_mean": m.get("slower_mean")}


def spec_entry(name: str, settings: dict, metrics: pd.DataFrame, params: AnalysisParams,
               comparison: dict | None = None) -> dict:
    """One specification's analysis: its arms (with ``n_analysed`` and each arm's lrs), the verdict on the
    primary measure with its estimate, interval and p, the measure panel's calls and the 2x2 split."""
    comparison = comparison if comparison is not None else compare_arms(metrics, params)
    v = verdict(comparison, params)
    arms = [{k: a[k] for k in (*ARM_FACTORS, "label", "n_trials", "n_analysed", "n_diverged", "lrs") if k in a}
            for a in design_summary(metrics, params)["arms"]]
    panel = comparison.get("panel") or {}
    fac = comparison.get("factorial")
    primary = _primary(comparison, params)
    return {
        "name": name, "settings": settings, "arms": arms, "n_trials": int(len(metrics)),
        "verdict": {"label": v["label"], "reason": v["reason"], "text": v["text"], "metric": params.primary_metric,
                    "estimate": primary["mean_diff"], "ci_low": primary["ci_low"], "ci_high": primary["ci_high"],
                    "p_value": primary["p_value"], "n_seeds": primary["n_seeds"]},
        "primary": primary,
        "unit_differences": ((comparison.get("metrics") or {}).get(params.primary_metric) or {})
        .get("unit_differences", []),
        "panel": [{k: r[k] for k in ("metric", "call", "mean_diff", "ci_low", "ci_high", "p_value")}
                  for r in panel.get("rows", [])],
        "panel_text": panel.get("text", ""),
        "factorial": None if not fac else {"factors": fac["factors"], "n_seeds": fac["n_seeds"],
                                           "effects": fac["effects"]},
    }


def analyse_specifications(metrics: pd.DataFrame, params: AnalysisParams,
                           pooled: dict | None = None) -> tuple[list[dict], dict | None]:
    """(``specifications``, ``multiverse``): one entry per specification (``spec_entry``), and with two or
    more of them the analysis across them (counts, the robust sentence, what the verdicts depend on, the
    joint inference).  With one specification ``pooled`` (the study's own comparison) is reused."""
    names, specs, axes, lr_role = assign_specifications(metrics)
    if len(specs) == 1:
        return [spec_entry(specs[0]["name"], specs[0]["settings"], metrics, params, pooled)], None
    entries = [spec_entry(s["name"], s["settings"], metrics.loc[names == s["name"]], params) for s in specs]
    return entries, across(entries, axes, lr_role, params)


def across(entries: list[dict], axes: list[str], lr_role: str, params: AnalysisParams) -> dict:
    """Counts of verdicts, what they depend on, the joint inference and the robust answer in words."""
    counts = Counter(e["verdict"]["label"] for e in entries)
    judged = [e for e in entries if e["verdict"]["label"] != "no verdict"]
    dep = depends_on(entries, axes)
    joint = joint_inference(seed_difference_table(judged), params)
    labels = {e["verdict"]["label"] for e in judged}
    label = "no verdict" if not judged else (next(iter(labels)) if len(labels) == 1 and not counts["no verdict"]
                                             else "depends on the specification")
    return {"n_specifications": len(entries), "axes": axes, "lr_role": lr_role,
            "counts": {k: int(counts.get(k, 0)) for k in LABELS}, "label": label,
            "depends_on": dep, "joint": joint, "text": robust_sentence(entries, counts, dep, joint, params)}


def _level_phrase(dep: dict) -> str:
    parts = []
    for lv in dep["levels"]:
        v = ", ".join(f"{k} {n}" for k, n in sorted(lv["verdicts"].items(), key=lambda kv: -kv[1]))
        parts.append(f"{dep['axis']} {lv['level']}: {v}")
    return "; ".join(parts)


def robust_sentence(entries: list[dict], counts: Counter, dep: dict | None, joint: dict | None,
                    params: AnalysisParams) -> str:
    """'Across n specifications the claim is contradicted in k of n, supported in m, inconclusive in the
    rest; it depends on X (...)', then the joint inference in one sentence."""
    n = len(entries)
    k, m = counts.get("contradicted", 0), counts.get("supported", 0)
    inc, nov = counts.get("inconclusive", 0), counts.get("no verdict", 0)
    text = (f"Across {n} specifications the claim is contradicted in {k} of {n}, supported in {m}, "
            + (f"inconclusive in {inc} and without a verdict in {nov}" if nov else "inconclusive in the rest"
               + (f" ({inc})" if inc else " (none)")))
    if dep:
        text += f"; it depends on {dep['axis']} ({_level_phrase(dep)})."
    else:
        text += "; every specification gets the same verdict, so it depends on none of the choices tried."
    if joint:
        o, p = joint["observed"], joint["p_values"]
        text += (f" Jointly (a sign-flip permutation of the per-seed differences over {joint['n_seeds']} seeds, "
                 f"each seed flipped in every specification at once, {joint['n_permutations']} sign vectors): "
                 f"{o['n_against']} of {joint['n_specifications']} specifications are significantly against the "
                 f"claim (p = {p['n_against']:.3g} under the null that no specification differs) and "
                 f"{o['n_claimed']} for it (p = {p['n_claimed']:.3g}); the median effect across specifications is "
                 f"{o['median_effect']:+.4g} (p = {p['median_effect']:.3g}).")
    return text
