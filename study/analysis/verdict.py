"""The verdict rule on the primary measure, and its plain-words paragraph."""
from __future__ import annotations

import math

from study.analysis.intervals import shows_effect
from study.analysis.params import AnalysisParams
from study.analysis.tables import arm_label, arm_words


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


def _effect(e: dict) -> str:
    return f"{_fmt(e['mean'])} (CI {_fmt(e['ci_low'])} to {_fmt(e['ci_high'])}, {format_p(e['p_value'])})"


def _factorial_sentence(fac: dict, alpha: float) -> str:
    """The 2x2 in words; a factor "contributes" and the factors "interact" only when the effect's interval
    excludes zero AND its Wilcoxon p < alpha (``shows_effect``).  The interaction follows the /2
    convention of ``factorial_effects``: the first factor's effect is main + interaction at the second
    factor's claimed-faster level and main - interaction at the other, i.e. it changes by twice the
    interaction between the two levels."""
    fa, fb = fac["factors"]
    eff = fac["effects"]
    parts = [f"{_factor_phrase(f, fac['levels'])} accounts for {_effect(eff[f])}" for f in (fa, fb)]
    inter = eff["interaction"]
    text = (f"Splitting the difference with the two mixed arms ({fac['n_seeds']} complete seed(s)): "
            f"{parts[0]}, and {parts[1]}; the interaction is {_effect(inter)}.")
    sig = [f for f in (fa, fb) if shows_effect(eff[f], alpha)]
    if len(sig) == 1:
        other = fb if sig[0] == fa else fa
        text += (f" So the difference comes from {_factor_phrase(sig[0], fac['levels'])}, "
                 f"not from {_factor_phrase(other, fac['levels'])}.")
    elif len(sig) == 2:
        text += " Both factors contribute."
    else:
        text += " Neither factor on its own is distinguishable from zero (interval and p together)."
    if shows_effect(inter, alpha) and inter["mean"] is not None:
        lv = fac["levels"][fb]
        text += (f" The two factors interact: the {fa} effect is {_fmt(eff[fa]['mean'] + inter['mean'])} with "
                 f"{fb} {lv['faster']} and {_fmt(eff[fa]['mean'] - inter['mean'])} with {fb} {lv['slower']} "
                 f"(main effect plus and minus the interaction, so it changes by twice the interaction).")
    return text


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x * 100:.2f}%"


def _not_learned_text(learning: dict, params: AnalysisParams) -> str:
    arms = []
    for a in learning["arms"]:
        what = "test accuracy" if a["measure"] == "test_acc" else "best validation accuracy (no test figure)"
        ci = (f"; {params.confidence:.0%} bootstrap CI {_pct(a['ci_low'])} to {_pct(a['ci_high'])}"
              if a["ci_low"] is not None else "")
        arms.append(f"{a['arm']} reached {_pct(a['mean'])} {what} (mean over {a['n_seeds']} seed(s){ci})")
    failed = [a["arm"] for a in learning["arms"] if not a["learned"]]
    return ("Cannot judge the claim: the compared models did not learn. " + "; ".join(arms) + ". "
            f"Chance is {_pct(learning['chance'])} (1 in {params.n_classes}); an arm counts as having learned "
            f"only when the low end of its interval is above {_pct(learning['threshold'])} (chance plus "
            f"learned_margin, {params.learned_margin * 100:.2f} points), and "
            + " and ".join(failed) + (" does not" if len(failed) == 1 else " do not")
            + ". How fast models that stay near chance lower their loss says nothing about the claim.")


def verdict(comparison: dict, params: AnalysisParams | None = None) -> dict:
    """Label ('supported', 'contradicted', 'inconclusive', 'no verdict'), the reason for 'no verdict', and
    a plain-words paragraph.

    In order: a missing arm -> no verdict ("an arm is missing"); fewer than ``min_seeds`` paired seeds
    on the primary measure -> no verdict ("too few seeds"); a compared arm that did not learn
    (``comparison["learning"]``, see ``describe.learning_check``) -> no verdict ("the models did not
    learn").  Otherwise the rule on the primary metric, symmetric: CI entirely on the claimed side of 0
    and Wilcoxon p < 1 - confidence -> supported; CI entirely on the other side and
    p < 1 - confidence -> contradicted; otherwise inconclusive.
    """
    params = params or AnalysisParams()
    fast, slow = arm_words(params.faster_arm), arm_words(params.slower_arm)
    if comparison.get("status") != "ok":
        return {"label": "no verdict", "reason": "an arm is missing",
                "text": f"Cannot judge the claim: {comparison.get('message', 'no comparison was possible.')}"}
    m = comparison["metrics"][params.primary_metric]
    if m["n_seeds"] < params.min_seeds:
        return {"label": "no verdict", "reason": "too few seeds",
                "text": (f"Cannot judge the claim: only {m['n_seeds']} paired seed(s) have a value for the primary "
                         f"measure ({m['label']}), fewer than the {params.min_seeds} required (a two-sided "
                         f"Wilcoxon test needs 6 to reach p < 0.05); "
                         f"{len(comparison['unpaired'])} trial(s) had no partner in the other arm.")}
    learning = comparison.get("learning")
    if learning and not learning["all_learned"]:
        return {"label": "no verdict", "reason": "the models did not learn",
                "text": _not_learned_text(learning, params)}
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
            f"({params.confidence:.0%} CI {_fmt(lo)} to {_fmt(hi)}, {m['ci_method']}; "
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
    panel = comparison.get("panel")
    if panel and panel.get("text"):
        text += " " + panel["text"]
    fac = comparison.get("factorial")
    if fac and fac["n_seeds"] > 0:
        text += " " + _factorial_sentence(fac, alpha)
    return {"label": label, "reason": None, "text": text}
