"""The paired comparison of the claimed-faster arm with the claimed-slower arm.

Trials pair across the two arms on their seed (and on extra grid axes such as ``lr`` when those are
shared between the arms); every difference is *faster arm minus slower arm*.  Statistics are computed
per seed: when several pairs share a seed (an ``lr`` grid) their differences are averaged first, so
seeds are the independent units for the bootstrap and the Wilcoxon test.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from study.analysis.convergence import analysis_values, budget_of, censor_flag
from study.analysis.factorial import factorial_effects
from study.analysis.describe import learning_check
from study.analysis.intervals import difference_stats, kaplan_meier, logrank_test, prob_better, rmst_difference
from study.analysis.params import AnalysisParams, compared_metrics, metric_direction, metric_label, target_key
from study.analysis.pairing import pairing_text
from study.analysis.panel import measure_panel
from study.analysis.tables import analysed, arm_label, arm_mask, config_columns


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
    used = analysed(metrics)
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
    if not df.duplicated(keys).any():       # one trial per key: no averaging (and no per-group join) needed
        out = df[keys].assign(value=analysis_values(df, metric).to_numpy(), trial_ids=df["trial_id"].astype(str).to_numpy())
        return out.sort_values(keys, kind="mergesort").reset_index(drop=True)
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


def _by_axis(table: pd.DataFrame, pair_on: list[str], direction: str, params: AnalysisParams) -> dict:
    """For each pair key besides seed (lr, weights, ...): the difference within each of its levels, and
    each level's contrast with the first (the reference): does the difference depend on that axis?

    Within a level, pairs that share a seed are averaged first, so seeds stay the units; a contrast
    is, per seed present in both levels, the level's difference minus the reference's.
    """
    if "seed" not in pair_on:
        return {}
    t = table.loc[np.isfinite(table["diff"].astype(float))]
    out = {}
    for axis in (k for k in pair_on if k != "seed"):
        levels, units = [], {}
        for level, g in t.groupby(axis, sort=True):
            units[level] = g.groupby("seed", sort=True)["diff"].mean()
            levels.append({"level": level, "n_pairs": int(len(g)), "n_seeds": int(len(units[level])),
                           **difference_stats(units[level], params),
                           "prob_faster_better": prob_better(g["diff"], direction)["prob"]})
        ref = next(iter(units), None)
        contrasts = []
        for level in list(units)[1:]:
            d = (units[level] - units[ref]).dropna()
            contrasts.append({"level": level, "reference": ref, "n_seeds": int(len(d)),
                              **difference_stats(d, params)})
        out[axis] = {"levels": levels, "contrasts": contrasts}
    return out


def _metric_comparison(table: pd.DataFrame, pair_on: list[str], metric: str,
                       params: AnalysisParams) -> dict:
    direction = metric_direction(metric)
    finite = table.loc[np.isfinite(table["diff"].astype(float))]
    units = _per_unit(table, pair_on)
    d = units["diff"].to_numpy(dtype=float)
    stats = difference_stats(d, params)
    pb = prob_better(finite["diff"], direction)
    unit_cols = ["seed"] if "seed" in units.columns and len(pair_on) > 1 else pair_on
    return {
        "metric": metric, "label": metric_label(metric, params), "direction": direction,
        "censored_as": ("beyond the budget: max(epochs_run, epochs_planned) + 1 epochs"
                        if censor_flag(metric) else None),
        "n_pairs": int(len(finite)), "n_pairs_missing_value": int(len(table) - len(finite)),
        "n_seeds": int(units["seed"].nunique()) if "seed" in units.columns else int(len(units)),
        "faster_mean": float(units["faster"].mean()) if len(units) else None,
        "slower_mean": float(units["slower"].mean()) if len(units) else None,
        "mean_diff": stats["mean"],
        "median_diff": float(np.median(d)) if len(d) else None,
        "ci_low": stats["ci_low"], "ci_high": stats["ci_high"], "ci_method": stats["ci_method"],
        "p_value": stats["p_value"], "p_note": stats["p_note"],
        "prob_faster_better": pb["prob"], "n_faster_better": pb["n_better"], "n_ties": pb["n_ties"],
        "unit_differences": [{**{c: r[c] for c in unit_cols}, "diff": float(r["diff"])}
                             for r in units.to_dict("records")],
        "by_axis": _by_axis(table, pair_on, direction, params),
    }


SURVIVAL_METRICS = ("epochs_to_target", "epochs_to_rel_target")


def _rmst(pairing: Pairing, params: AnalysisParams, budget: float) -> dict:
    """Restricted mean epochs to each ladder target (Kaplan-Meier up to the budget), faster minus slower arm,
    over the pairs; a miss is censored at its planned budget (a diverged trial is known not to get there)."""
    keys = pairing.pair_on
    out = {}
    for t in params.targets:
        k = target_key(t)
        metric, flag = f"epochs_to_acc_{k}", f"reached_acc_{k}"
        cols = [*keys, metric, flag, "epochs_run", "epochs_planned"]
        both = pairing.faster[cols].merge(pairing.slower[cols], on=keys, suffixes=("_f", "_s"))
        arms = []
        for sfx in ("_f", "_s"):
            hit = both[flag + sfx].astype(bool).to_numpy()
            miss_at = np.maximum(both["epochs_run" + sfx].astype(float), both["epochs_planned" + sfx].astype(float))
            arms.append((np.where(hit, both[metric + sfx].astype(float), miss_at), hit))
        res = rmst_difference(arms[0], arms[1], budget, params)
        out[f"rmst_acc_{k}"] = {"metric": f"rmst_acc_{k}", "label": metric_label(f"rmst_acc_{k}", params),
                                "direction": "lower", "budget_epochs": budget, "n_pairs": res["n"],
                                "n_seeds": int(both["seed"].nunique()) if "seed" in both else res["n"],
                                "faster_mean": res["faster_rmst"], "slower_mean": res["slower_rmst"],
                                "mean_diff": res["mean"], "ci_low": res["ci_low"], "ci_high": res["ci_high"],
                                "ci_method": res["ci_method"], "p_value": res["p_value"], "p_note": res["p_note"]}
    return out


def _survival(pairing: Pairing, metric: str) -> dict:
    flag = censor_flag(metric)
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
    faster arm is better, and ``by_axis``: the same per level of each extra
    pair key such as lr or weights, with contrasts between levels),
    ``survival`` (KM + log-rank for the two epochs-to-target metrics),
    ``primary_metric``, ``factorial`` (see ``factorial_effects``; None when
    the grid is not crossed) and ``learning`` (see ``learning_check``).
    """
    params = params or AnalysisParams()
    pairing = pair_arms(metrics, params, pair_on)
    out = {
        "faster_arm": dict(params.faster_arm), "slower_arm": dict(params.slower_arm),
        "faster_label": arm_label(params.faster_arm), "slower_label": arm_label(params.slower_arm),
        "primary_metric": params.primary_metric, "confidence": params.confidence,
        "pair_on": pairing.pair_on, "pairing_note": pairing.note, "unpaired": pairing.unpaired,
        "pairing_shares": pairing_text(metrics, params),
        "n_faster_trials": int(len(pairing.faster)), "n_slower_trials": int(len(pairing.slower)),
        "metrics": {}, "survival": {}, "factorial": None,
        "learning": learning_check(metrics, params),
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
    out["survival"] = {m: _survival(pairing, m) for m in SURVIVAL_METRICS}
    out["budget_epochs"] = budget_of(metrics, params)
    out["rmst"] = _rmst(pairing, params, out["budget_epochs"])
    out["factorial"] = factorial_effects(metrics, params, params.primary_metric)
    out["panel"] = measure_panel(out, params)
    return out
