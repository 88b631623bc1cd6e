"""The measure panel: every speed measure side by side, and one sentence that says where they disagree.

Each row is a paired comparison from ``compare_arms`` (``metrics``, or ``rmst`` for the restricted mean
times): direction, estimate (claimed-faster arm minus claimed-slower arm), interval, p, and a call:
``faster`` / ``slower`` when the interval excludes zero and p < 1 - confidence (``shows_effect``) on that
side, ``no clear difference`` otherwise, ``skipped`` (with a note) when no pair has the measure (e.g.
``val_nll_ts`` not recorded).

Calibration: "calibration differs" when the calibration gap (validation loss minus the temperature-scaled
NLL) differs between the arms, or when the raw validation loss area and the temperature-scaled NLL area
get different calls.  Without ``val_nll_ts`` the panel says so, and names a raw validation loss that
disagrees with the primary measure (it mixes calibration with speed).
"""
from __future__ import annotations

from study.analysis.intervals import shows_effect
from study.analysis.params import AnalysisParams, metric_label, panel_metrics

FASTER, SLOWER, UNCLEAR, SKIPPED = "faster", "slower", "no clear difference", "skipped"


def _call(m: dict, alpha: float) -> str:
    if not m or not m.get("n_pairs") or m.get("mean_diff") is None:
        return SKIPPED
    if not shows_effect(m, alpha):
        return UNCLEAR
    better = m["mean_diff"] < 0 if m["direction"] == "lower" else m["mean_diff"] > 0
    return FASTER if better else SLOWER


def _row(metric: str, m: dict | None, params: AnalysisParams, primary: bool) -> dict:
    alpha = 1 - params.confidence
    call = _call(m or {}, alpha)
    row = {"metric": metric, "label": metric_label(metric, params), "primary": primary,
           "direction": (m or {}).get("direction", "lower"), "call": call, "note": ""}
    for k in ("n_pairs", "n_seeds", "faster_mean", "slower_mean", "mean_diff", "ci_low", "ci_high", "ci_method",
              "p_value", "p_note"):
        row[k] = (m or {}).get(k)
    if call == SKIPPED:
        row["note"] = ("not recorded: the trials have no val_nll_ts column, which needs the logits at each "
                       "evaluation" if metric in ("val_nll_ts_area", "calibration_gap_area")
                       else "no pair has a value for both arms")
    return row


def _calibration(comparison: dict, rows: dict, params: AnalysisParams, primary_call: str) -> dict:
    alpha = 1 - params.confidence
    raw = _call(comparison["metrics"].get("val_loss_auc") or {}, alpha)
    ts, gap = rows.get("val_nll_ts_area"), rows.get("calibration_gap_area")
    if ts is None or ts["call"] == SKIPPED:
        differs = None
        text = ("Calibration cannot be told apart from speed here: the trials recorded no temperature-scaled "
                "validation NLL (val_nll_ts)")
        if raw not in (SKIPPED, UNCLEAR) and primary_call in (FASTER, SLOWER) and raw != primary_call:
            text += (f"; the raw validation loss area says {raw} while the primary measure says {primary_call}, "
                     f"a sign that the loss measures calibration as much as speed")
        return {"differs": differs, "raw_call": raw, "ts_call": None, "gap_call": None, "text": text + "."}
    gap_call = gap["call"] if gap else SKIPPED
    reasons = []
    if gap_call in (FASTER, SLOWER):
        worse = "larger" if gap_call == SLOWER else "smaller"
        reasons.append(f"the claimed-faster arm's calibration gap (validation loss minus temperature-scaled NLL) "
                       f"is {worse} ({gap['mean_diff']:+.4f})")
    if raw != ts["call"]:
        reasons.append(f"the raw validation loss area says {raw} but the temperature-scaled NLL area says "
                       f"{ts['call']}")
    if reasons:
        return {"differs": True, "raw_call": raw, "ts_call": ts["call"], "gap_call": gap_call,
                "text": "Calibration differs: " + "; ".join(reasons) + "."}
    return {"differs": False, "raw_call": raw, "ts_call": ts["call"], "gap_call": gap_call,
            "text": "Calibration does not differ measurably: raw and temperature-scaled NLL agree."}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.3g}"


def measure_panel(comparison: dict, params: AnalysisParams) -> dict:
    """Rows (one per speed measure, primary first), the calibration check and the panel's sentence."""
    if comparison.get("status") != "ok":
        return {"rows": [], "calibration": None, "agree": None,
                "text": "No measure panel: " + comparison.get("message", "no comparison was possible.")}
    found = {**comparison["metrics"], **comparison.get("rmst", {})}
    rows = [_row(m, found.get(m), params, m == params.primary_metric) for m in panel_metrics(params)]
    by = {r["metric"]: r for r in rows}
    speed = [r for r in rows if r["metric"] != "calibration_gap_area"]
    groups = {c: [r for r in speed if r["call"] == c] for c in (FASTER, SLOWER, UNCLEAR, SKIPPED)}
    primary = by[params.primary_metric]
    arm = comparison["faster_label"]

    def names(rs: list[dict]) -> str:
        return ", ".join(f"{r['metric']} ({_fmt(r['mean_diff'])})" for r in rs)

    text = f"Measure panel ({len(speed) - len(groups[SKIPPED])} speed measures): by the primary measure, " \
           f"{primary['metric']}, {arm} is {primary['call'] if primary['call'] != UNCLEAR else 'not clearly different'}."
    if groups[FASTER] and groups[SLOWER]:
        text += f" The measures disagree: faster by {names(groups[FASTER])}; slower by {names(groups[SLOWER])}."
    elif groups[FASTER] or groups[SLOWER]:
        call = FASTER if groups[FASTER] else SLOWER
        text += f" Every measure that shows a difference says {call}: {names(groups[call])}."
    else:
        text += " No speed measure shows a difference."
    if groups[UNCLEAR]:
        text += f" No clear difference: {', '.join(r['metric'] for r in groups[UNCLEAR])}."
    calibration = _calibration(comparison, by, params, primary["call"])
    text += " " + calibration["text"]
    if groups[SKIPPED]:
        notes = {}
        for r in rows:
            if r["call"] == SKIPPED:
                notes.setdefault(r["note"], []).append(r["metric"])
        text += "".join(f" Skipped, {note}: {', '.join(ms)}." for note, ms in notes.items())
    return {"rows": rows, "calibration": calibration, "agree": not (groups[FASTER] and groups[SLOWER]),
            "faster_by": [r["metric"] for r in groups[FASTER]], "slower_by": [r["metric"] for r in groups[SLOWER]],
            "text": text}
