"""What the report shows of the specifications (``body.j2``'s ``multiverse``): the robust answer, the
specification table sorted as the specification curve, each specification's measure panel and 2x2 split,
and the joint inference in words.  None with one specification (the report is then the study's own)."""
from __future__ import annotations

from typing import Any


def _fmt_level(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(_fmt_level(x) for x in v)
    return f"{v:g}" if isinstance(v, float) else str(v)


def multiverse_context(summary: dict, params) -> dict | None:
    mv = summary.get("multiverse")
    if not mv:
        return None
    from study.analysis.numbers import _ci, _metric_value, _p   # the report's number formats

    metric = params.primary_metric
    entries = sorted(summary["specifications"],
                     key=lambda e: (e["primary"]["mean_diff"] is None, e["primary"]["mean_diff"] or 0, e["name"]))
    rows, detail = [], []
    for rank, e in enumerate(entries, 1):
        p, v = e["primary"], e["verdict"]
        rows.append([rank, e["name"], *[_fmt_level(e["settings"].get(a)) for a in mv["axes"]], p["n_seeds"],
                     _metric_value(metric, p["mean_diff"], diff=True), _ci(metric, p["ci_low"], p["ci_high"]),
                     _p(p["p_value"]), v["label"] + (f" ({v['reason']})" if v["reason"] else "")])
        calls = {c: [r["metric"] for r in e["panel"] if r["call"] == c] for c in ("faster", "slower")}
        fac = e.get("factorial")
        effects = ["–", "–", "–"]
        if fac:
            effects = [f"{_metric_value(metric, fac['effects'][k]['mean'], diff=True)} "
                       f"({_ci(metric, fac['effects'][k]['ci_low'], fac['effects'][k]['ci_high'])})"
                       for k in (*fac["factors"], "interaction")]
        detail.append([rank, e["name"], *effects, ", ".join(calls["faster"]) or "–", ", ".join(calls["slower"]) or "–",
                       "; ".join(f"{a['label']} {a['n_analysed']}/{a['n_trials']}"
                                 + (f" (lr {_fmt_level(a['lrs'])})" if mv["lr_role"] == "arm" and a.get("lrs") else "")
                                 for a in e["arms"])])
    joint = mv.get("joint")
    lr_words = {"arm": "lr belongs to the arm (each specification and arm ran at one lr, tuned per arm): pairs form "
                       "on the seed", "axis": "lr is one of the choices (an lr grid): each lr is a specification",
                "constant": "one lr throughout", "absent": "no lr recorded"}[mv["lr_role"]]
    return {
        "label": mv["label"], "text": mv["text"], "axes": mv["axes"],
        "header": ["#", "specification", *mv["axes"], "seeds", "difference", f"{params.confidence:.0%} CI", "p",
                   "verdict"],
        "rows": rows,
        "detail_header": ["#", "specification", "activation effect (CI)", "normalization effect (CI)",
                          "interaction (CI)", "panel: faster by", "panel: slower by", "arms: analysed/trials"],
        "detail_rows": detail,
        "rules": (f"A specification is one combination of the choices that vary among the analysed trials "
                  f"besides the arm and the seed ({', '.join(mv['axes']) or 'named specifications'}); {lr_words}. "
                  f"Each specification is analysed on its own trials with the study's rules (the verdict, the "
                  f"measure panel and the 2x2 split below)."),
        "joint": joint,
        "joint_text": None if not joint else (
            f"Joint inference: {joint['method']}, {joint['n_permutations']} sign vectors over {joint['n_seeds']} "
            f"seeds and {joint['n_specifications']} specifications with a verdict. {joint['rule'].capitalize()}. "
            f"Observed: {joint['observed']['n_against']} significant against the claim (p = "
            f"{joint['p_values']['n_against']:.3g}), {joint['observed']['n_claimed']} for it (p = "
            f"{joint['p_values']['n_claimed']:.3g}), {joint['observed']['n_claimed_sign']} with an estimate on the "
            f"claimed side (p = {joint['p_values']['n_claimed_sign']:.3g}), median estimate "
            f"{joint['observed']['median_effect']:+.4g} (p = {joint['p_values']['median_effect']:.3g}). Under the "
            f"null the 95th percentile of the count against is {joint['null_quantiles']['n_against'][1]:g}; a naive "
            f"binomial test that treats the specifications as independent would give p = "
            f"{joint['naive_binomial_p']['n_against']:.3g} for the count against (mean correlation of the "
            f"specifications' per-seed differences: "
            + ("n/a" if joint["seed_correlation"] is None else f"{joint['seed_correlation']:.2f}") + ")."),
    }
