"""Write the study report: csv/json tables, figures, report.md and a self-contained report.html.

``write_report`` renders everything into a temporary folder inside ``out_dir``
and only then moves the files into place (``os.replace``; the ``figures``
folder is swapped as a whole), so a failure while rendering leaves the
previous report untouched and never a half-written one.  Other files in
``out_dir`` are left alone.

Determinism: ``trials.csv``, ``epochs.csv``, ``summary.json`` and
``report.md`` depend only on the input tables and parameters (no timestamps,
seeded bootstrap, sorted rows).  PNGs are written without the "Software"
metadata entry.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from study.analysis import (
    ARM_FACTORS,
    AnalysisParams,
    arm_label,
    arm_mask,
    arm_words,
    arms_present,
    convergence_metrics,
    epoch_curves,
    format_p,
    kaplan_meier,
    metric_label,
    summarize,
    t_interval,
)

FIGURE_DPI = 110
PALETTE = ("#e6550d", "#3182bd", "#31a354", "#756bb1", "#636363", "#d6616b", "#8c6d31", "#17becf")
LINESTYLES = ("-", "--", "-.", ":")
FILES = ("trials.csv", "epochs.csv", "summary.json", "report.md", "report.html")


# --------------------------------------------------------------------------- entry point

def write_report(out_dir: Path, epochs: pd.DataFrame, trials: pd.DataFrame,
                 params: AnalysisParams | None = None, *, name: str, source: str) -> dict[str, Path]:
    """Write the full report for one experiment into ``out_dir``.

    Returns ``{relative path: absolute Path}`` for every file written:
    ``trials.csv`` (trials + convergence metrics), ``epochs.csv``,
    ``summary.json``, ``report.md``, ``report.html`` and ``figures/*.png``.
    """
    params = params or AnalysisParams()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = convergence_metrics(epochs, trials, params)
    summary = summarize(epochs, trials, params)
    summary["report"] = {"name": name, "source": source}
    tmp = Path(tempfile.mkdtemp(prefix=".report-tmp-", dir=out_dir))
    try:
        _write_csv(tmp / "trials.csv", sorted_trials(metrics))
        _write_csv(tmp / "epochs.csv", sorted_epochs(epochs))
        (tmp / "summary.json").write_text(json.dumps(summary, sort_keys=True, indent=2, allow_nan=False) + "\n",
                                          encoding="utf-8")
        figures = make_figures(tmp / "figures", epochs, metrics, summary, params)
        blocks = report_blocks(summary, figures, params)
        (tmp / "report.md").write_text(render_markdown(blocks), encoding="utf-8")
        (tmp / "report.html").write_text(render_html(blocks, tmp / "figures", title=_title(summary)),
                                         encoding="utf-8")
        written = [*FILES[:3], *(f"figures/{f.filename}" for f in figures), *FILES[3:]]
        _move_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {rel: out_dir / rel for rel in written}


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Swap the figures folder, then replace the files; the report pages go last."""
    target = out_dir / "figures"
    if target.exists():
        os.replace(target, tmp / "figures.old")
    os.replace(tmp / "figures", target)
    for name in FILES:
        os.replace(tmp / name, out_dir / name)


# --------------------------------------------------------------------------- tables

def _write_csv(path: Path, df: pd.DataFrame) -> None:
    df.to_csv(path, index=False, lineterminator="\n")


def sorted_trials(metrics: pd.DataFrame) -> pd.DataFrame:
    """Trials + metrics sorted by arm, seed, lr, trial_id (trial_id makes the order total)."""
    keys = [c for c in (*ARM_FACTORS, "seed", "lr", "trial_id") if c in metrics.columns]
    return metrics.sort_values(keys, kind="mergesort").reset_index(drop=True)


def sorted_epochs(epochs: pd.DataFrame) -> pd.DataFrame:
    """Epoch records sorted by trial then epoch."""
    if "trial_id" not in epochs.columns:
        return epochs
    ep = epochs.assign(trial_id=epochs["trial_id"].astype(str))
    return ep.sort_values(["trial_id", "epoch"], kind="mergesort").reset_index(drop=True)


# --------------------------------------------------------------------------- figures

@dataclass(frozen=True)
class FigureSpec:
    filename: str
    caption: str


def _facet_by(metrics: pd.DataFrame) -> list[str]:
    """Facet per lr when some arm ran several lrs."""
    used = metrics.loc[metrics["in_analysis"]]
    if "lr" not in used or used.empty:
        return []
    return ["lr"] if used.groupby(list(ARM_FACTORS))["lr"].nunique().max() > 1 else []


def _styles(arms: list[dict]) -> list[tuple[dict, str, str]]:
    """(arm, label, colour) per arm, in report order."""
    return [(a, arm_label(a), PALETTE[i % len(PALETTE)]) for i, a in enumerate(arms)]


def _save(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=FIGURE_DPI, metadata={"Software": None}, bbox_inches="tight")


def _axes(n: int, width: float = 6.0, height: float = 4.0) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * n, height))
    axes = fig.subplots(1, n, squeeze=False)[0]
    return fig, list(axes)


def _curve_figure(path: Path, epochs, metrics, column: str, ylabel: str, styles, params,
                  hline: float | None = None) -> None:
    by = _facet_by(metrics)
    curves = epoch_curves(epochs, metrics, column, params.confidence, by=by)
    facets = sorted(curves[by[0]].unique()) if by else [None]
    fig, axes = _axes(max(1, len(facets)), width=5.5 if by else 7.0)
    for ax, facet in zip(axes, facets):
        data = curves if facet is None else curves.loc[curves[by[0]] == facet]
        for arm, label, color in styles:
            c = data.loc[arm_mask(data, arm)]
            if c.empty:
                continue
            ax.plot(c["epoch"], c["mean"], color=color, marker="o", ms=3, label=f"{label} (n={c['n'].max()})")
            ax.fill_between(c["epoch"], c["ci_low"], c["ci_high"], color=color, alpha=0.18, linewidth=0)
        if hline is not None:
            ax.axhline(hline, color="grey", ls="--", lw=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(f"lr = {facet:g}" if facet is not None else "")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    _save(fig, path)


def _km_figure(path: Path, metrics, styles, params) -> None:
    used = metrics.loc[metrics["in_analysis"]]
    fig, (ax,) = _axes(1, width=7.0)
    horizon = int(used["epochs_planned"].max()) if len(used) else 1
    for i, (arm, label, color) in enumerate(styles):
        g = used.loc[arm_mask(used, arm)]
        km = kaplan_meier(g["epochs_to_target"].to_numpy(float), g["reached_target"].to_numpy(bool))
        if km["n"] == 0:
            continue
        x = [0.0, *km["epochs"], float(horizon)]
        y = [0.0, *km["fraction_reached"], km["fraction_reached"][-1]]
        ax.step(x, y, where="post", color=color, lw=2, ls=LINESTYLES[i % len(LINESTYLES)],
                label=f"{label} ({km['n_reached']}/{km['n']} reached)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"fraction of trials at >= {params.target_acc:.0%} val acc")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, path)


def _paper_value(arm: dict, params: AnalysisParams) -> float | None:
    """The paper's single-run test accuracy for the two arms it reported, else None."""
    for paper_arm in (params.faster_arm, params.slower_arm):
        if {k: str(v) for k, v in paper_arm.items()} == arm:
            return params.paper_test_acc.get(str(paper_arm.get("activation")))
    return None


def _test_acc_figure(path: Path, metrics, styles, params) -> None:
    used = metrics.loc[metrics["in_analysis"]]
    fig, (ax,) = _axes(1, width=max(5.0, 1.6 * len(styles)))
    paper_drawn = False
    for i, (arm, label, color) in enumerate(styles):
        acc = used.loc[arm_mask(used, arm), "test_acc"].astype(float).dropna().to_numpy() * 100
        offsets = np.linspace(-0.15, 0.15, len(acc)) if len(acc) > 1 else np.zeros(len(acc))
        ax.scatter(i + offsets, acc, color=color, s=18, alpha=0.7, zorder=3)
        if len(acc):
            mean = float(acc.mean())
            lo, hi = t_interval(acc, params.confidence)
            lo, hi = (mean, mean) if not math.isfinite(lo) else (lo, hi)
            ax.errorbar([i + 0.3], [mean], yerr=[[mean - lo], [hi - mean]], fmt="s", color="black",
                        capsize=4, zorder=4)
        paper = _paper_value(arm, params)
        if paper is not None:
            ax.scatter([i + 0.3], [paper * 100], marker="*", s=160, color="gold", edgecolor="black", zorder=5,
                       label=None if paper_drawn else "paper (one run)")
            paper_drawn = True
    ax.set_xticks(range(len(styles)), [label for _, label, _ in styles], rotation=15)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, axis="y")
    if paper_drawn:
        ax.legend(fontsize=8)
    _save(fig, path)


def _paired_figure(path: Path, comparison: dict, params: AnalysisParams) -> None:
    m = comparison["metrics"][params.primary_metric]
    diffs = [u["diff"] for u in m["unit_differences"]]
    fig, (ax,) = _axes(1, width=6.5, height=3.2)
    y = np.arange(len(diffs))
    ax.scatter(diffs, y, color="#3182bd", zorder=3, label="one seed")
    ax.axvline(0, color="grey", lw=1)
    if m["mean_diff"] is not None:
        ax.axvline(m["mean_diff"], color="black", lw=1.5, label="mean")
    if m["ci_low"] is not None:
        ax.axvspan(m["ci_low"], m["ci_high"], color="black", alpha=0.12, label=f"{params.confidence:.0%} CI")
    ax.set_yticks(y, [str(u.get("seed", i)) for i, u in enumerate(m["unit_differences"])])
    ax.set_ylabel("seed")
    ax.set_xlabel(f"{comparison['faster_label']} minus {comparison['slower_label']}: {params.primary_metric}")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8)
    _save(fig, path)


def _lr_figure(path: Path, metrics, styles, params) -> None:
    used = metrics.loc[metrics["in_analysis"]]
    panels = [params.primary_metric, "test_acc"]
    fig, axes = _axes(len(panels), width=5.5)
    for ax, metric in zip(axes, panels):
        for arm, label, color in styles:
            g = used.loc[arm_mask(used, arm)]
            v = g.assign(_v=pd.to_numeric(g[metric], errors="coerce")).dropna(subset=["_v"])
            if v.empty:
                continue
            ax.scatter(v["lr"], v["_v"], color=color, s=12, alpha=0.5)
            mean = v.groupby("lr")["_v"].mean()
            ax.plot(mean.index, mean.to_numpy(), color=color, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    _save(fig, path)


def make_figures(fig_dir: Path, epochs, metrics, summary, params) -> list[FigureSpec]:
    """Draw every figure that the data supports into ``fig_dir``; return them in report order."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    arms = arms_present(metrics, params)
    styles = _styles(arms)
    out: list[FigureSpec] = []
    if not arms:
        return out
    ci = f"{params.confidence:.0%}"
    _curve_figure(fig_dir / "val_loss.png", epochs, metrics, "val_loss", "validation loss", styles, params)
    out.append(FigureSpec("val_loss.png", f"Validation loss per epoch: mean over seeds with a {ci} confidence "
                                          f"band, one line per arm (the paper's Fig. 2)."))
    _curve_figure(fig_dir / "val_acc.png", epochs, metrics, "val_acc", "validation accuracy", styles, params,
                  hline=params.target_acc)
    out.append(FigureSpec("val_acc.png", f"Validation accuracy per epoch (the paper's Fig. 3); the dashed line is "
                                         f"the {params.target_acc:.0%} target."))
    comparison = summary["comparison"]
    if comparison.get("status") == "ok" and comparison["metrics"][params.primary_metric]["unit_differences"]:
        _paired_figure(fig_dir / "paired_differences.png", comparison, params)
        out.append(FigureSpec("paired_differences.png",
                              f"Per-seed difference in the primary measure ({params.primary_metric}), "
                              f"{comparison['faster_label']} minus {comparison['slower_label']}; left of the grey "
                              f"line favours {comparison['faster_label']}." if "acc" not in params.primary_metric
                              else "Per-seed difference in the primary measure; right of zero favours the "
                                   "claimed-faster arm."))
    _km_figure(fig_dir / "epochs_to_target.png", metrics, styles, params)
    out.append(FigureSpec("epochs_to_target.png",
                          f"Share of trials that have reached {params.target_acc:.0%} validation accuracy by each "
                          f"epoch (Kaplan-Meier; a trial that never gets there is censored at its last epoch)."))
    _test_acc_figure(fig_dir / "test_acc.png", metrics, styles, params)
    out.append(FigureSpec("test_acc.png", f"Test accuracy per arm: one dot per trial, black square = mean with "
                                          f"{ci} t-interval, gold star = the paper's single run."))
    used = metrics.loc[metrics["in_analysis"]]
    if "lr" in used and used["lr"].nunique() > 1:
        _lr_figure(fig_dir / "lr_sensitivity.png", metrics, styles, params)
        out.append(FigureSpec("lr_sensitivity.png", f"Learning-rate sensitivity: {params.primary_metric} and "
                                                    f"test accuracy against lr (log scale), mean line per arm."))
    return out


# --------------------------------------------------------------------------- number formatting

def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def _metric_value(metric: str, x: Any, *, diff: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if "acc" in metric:
        return f"{x * 100:+.2f} pp" if diff else f"{x * 100:.2f}%"
    if metric.startswith("epochs"):
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


def _values(xs: Sequence) -> str:
    return ", ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in xs) if xs else "–"


# --------------------------------------------------------------------------- report content

def _title(summary: dict) -> str:
    return f"Study report: {summary['report']['name']}"


def report_blocks(summary: dict, figures: list[FigureSpec], params: AnalysisParams) -> list[tuple]:
    """The report as a list of simple blocks, rendered to markdown and html alike."""
    figs = {f.filename: f for f in figures}
    blocks: list[tuple] = [("h1", _title(summary)),
                           ("p", f"Source: {summary['report']['source']}")]
    blocks += _verdict_section(summary)
    blocks += _question_section(params)
    blocks += _design_section(summary)
    blocks += _method_section(summary, params)
    blocks += _results_section(summary, params, figs)
    blocks += _factorial_section(summary, params)
    blocks += _test_acc_section(summary, params, figs)
    if "lr_sensitivity.png" in figs:
        blocks += [("h2", "Learning-rate sensitivity"), ("figure", figs["lr_sensitivity.png"])]
        blocks += _strata_table(summary, params)
    blocks += _caveats_section(summary, params)
    blocks += [("h2", "Files"),
               ("ul", ["trials.csv: one row per trial, its settings and every convergence measure",
                       "epochs.csv: one row per trial and epoch, as recorded",
                       "summary.json: every number in this report, machine-readable",
                       "figures/: the figures above as PNG"])]
    return blocks


def _verdict_section(summary: dict) -> list[tuple]:
    v = summary["verdict"]
    return [("h2", "In short"), ("verdict", v["label"], v["text"])]


def _question_section(params: AnalysisParams) -> list[tuple]:
    fast, slow = arm_words(params.faster_arm), arm_words(params.slower_arm)
    pf = params.paper_test_acc.get(str(params.faster_arm.get("activation")))
    ps = params.paper_test_acc.get(str(params.slower_arm.get("activation")))
    paper = (f" It reported {ps * 100:.2f}% test accuracy for {slow} and {pf * 100:.2f}% for {fast}, "
             f"from one training run each." if pf is not None and ps is not None else "")
    return [("h2", "The question"),
            ("p", "A paper fine-tuned a VGG16 network on the Chars74K character images and claimed that using the "
                  "SELU activation instead of ReLU makes training converge faster." + paper),
            ("p", f"Those two runs changed two things at once, the activation and the input normalization, and one "
                  f"run per setting cannot tell a real difference from run-to-run noise (random initial weights, "
                  f"data split, batch order). This study asks: across several seeds, does {fast} reach a given "
                  f"quality in fewer epochs than {slow}? And if the grid also contains the two mixed settings, is "
                  f"any difference due to the activation or to the normalization?")]


def _design_section(summary: dict) -> list[tuple]:
    d = summary["design"]
    if not d.get("n_trials"):
        return [("h2", "Design"), ("p", "No trials were found.")]
    rows = [[a["label"], a["n_trials"], a["n_analysed"], a["n_diverged"],
             ", ".join(f"{k} {v}" for k, v in a["status_counts"].items()), _values(a["seeds"]), _values(a["lrs"])]
            for a in d["arms"]]
    axes = d["config_axes"]
    other = [f"{k}: {_values(v)}" for k, v in axes.items() if k not in ("seed", "lr")]
    items = [f"Trials: {d['n_trials']} in total, {d['n_analysed']} analysed; by status: "
             + ", ".join(f"{k} {v}" for k, v in d["status_counts"].items())
             + f"; {d['n_diverged']} diverged (loss became NaN/inf or flagged by the trainer).",
             f"Seeds: {_values(axes.get('seed', []))}.",
             f"Learning rates: {_values(axes.get('lr', []))}.",
             f"Epochs planned: {_values(d['epochs_planned'])} (most epochs actually run: {d['max_epochs_run']})."]
    if other:
        items.append("Other settings: " + "; ".join(other) + ".")
    if d["excluded_trials"]:
        items.append("Not analysed (errored for a reason other than divergence, or unfinished): "
                     + ", ".join(f"{t['trial_id']} ({t['status']})" for t in d["excluded_trials"]) + ".")
    if d["diverged_trials"]:
        items.append("Diverged trials (kept, counted as not reaching the target): "
                     + ", ".join(d["diverged_trials"]) + ".")
    return [("h2", "Design"),
            ("p", "An arm is one combination of activation and input normalization. Each arm was trained once per "
                  "seed (and per learning rate where there is a grid); the same seed gives the same data split and, "
                  "where layer shapes agree, the same initial weights in every arm."),
            ("table", ["arm", "trials", "analysed", "diverged", "status", "seeds", "lrs"], rows),
            ("ul", items)]


def _method_section(summary: dict, params: AnalysisParams) -> list[tuple]:
    c = summary["comparison"]
    ci = f"{params.confidence:.0%}"
    return [("h2", "Method"), ("ul", [
        f"Primary measure: {metric_label(params.primary_metric, params)}. The loss-curve area is the mean "
        f"validation loss over the epochs a trial ran (rectangle rule); lower means the loss came down sooner.",
        f"Epochs to target: the first epoch with validation accuracy of at least {params.target_acc:.0%} (and, "
        f"separately, {params.rel_target:.0%} of the trial's own best). A trial that never gets there is "
        f"right-censored at its last epoch: the Kaplan-Meier curves and the log-rank test use exactly that; the "
        f"paired statistics count it as one epoch beyond its planned budget, i.e. slower than any trial that "
        f"reached the target.",
        "Divergence: an epoch whose validation loss is NaN/inf never counts as reaching a target and is left out "
        "of the loss area; diverged trials stay in the analysis, flagged. Trials that errored for another reason, "
        "or did not finish, are left out and listed above.",
        f"Pairing: {c.get('pairing_note', '–')}. Every difference is {c.get('faster_label', '')} minus "
        f"{c.get('slower_label', '')}. When several pairs share a seed (a learning-rate grid), their differences "
        f"are averaged first, so each seed counts once. Trials without a partner are left out of the paired "
        f"statistics and listed under caveats.",
        f"Interval: {ci} bootstrap confidence interval (BCa, {params.n_resamples} resamples, seed "
        f"{params.random_state}) of the mean per-seed difference; when all differences are equal it collapses "
        f"to that value.",
        "Test: two-sided Wilcoxon signed-rank test on the per-seed differences (zero differences dropped). With n "
        "seeds its p-value cannot go below 2/2^n, so at least 6 seeds are needed to reach p < 0.05.",
        "Probability of being better: the share of pairs in which the claimed-faster arm did better (ties count "
        "half); 0.5 means no tendency either way.",
        f"Verdict rule (primary measure only): supported when the {ci} interval lies entirely on the claimed side "
        f"of zero and p < {1 - params.confidence:.2g}; contradicted when it lies entirely on the other side and p < {1 - params.confidence:.2g}; "
        f"inconclusive otherwise; no verdict with fewer than {params.min_seeds} paired seeds.",
    ])]


def _results_section(summary: dict, params: AnalysisParams, figs: dict) -> list[tuple]:
    c = summary["comparison"]
    blocks: list[tuple] = [("h2", "Results")]
    if c.get("status") != "ok":
        blocks.append(("p", "No comparison: " + c.get("message", "no comparison was possible.")))
    else:
        rows, skipped = [], []
        for metric, m in c["metrics"].items():
            if m["n_pairs"] == 0:
                skipped.append(metric)
                continue
            name = metric + (" (primary)" if metric == params.primary_metric else "")
            rows.append([name, m["direction"], _metric_value(metric, m["faster_mean"]),
                         _metric_value(metric, m["slower_mean"]), _metric_value(metric, m["mean_diff"], diff=True),
                         _ci(metric, m["ci_low"], m["ci_high"]), _p(m["p_value"]),
                         _num(m["prob_faster_better"], 2), f"{m['n_pairs']} / {m['n_seeds']}"])
        blocks.append(("p", f"Means are over paired seeds; the difference is {c['faster_label']} minus "
                            f"{c['slower_label']}. 'better' says which direction is good for that measure."))
        blocks.append(("table", ["measure", "better", c["faster_label"], c["slower_label"], "difference",
                                 f"{params.confidence:.0%} CI", "Wilcoxon p", "P(faster arm better)",
                                 "pairs / seeds"], rows))
        if skipped:
            blocks.append(("p", "Not compared (no pair had a value for both arms): " + ", ".join(skipped) + "."))
        blocks += _survival_blocks(c, params)
    for name in ("val_loss.png", "val_acc.png", "paired_differences.png", "epochs_to_target.png"):
        if name in figs:
            blocks.append(("figure", figs[name]))
    return blocks


def _survival_blocks(c: dict, params: AnalysisParams) -> list[tuple]:
    s = c.get("survival", {}).get("epochs_to_target")
    if not s:
        return []
    f, w, lr = s["faster"], s["slower"], s["logrank"]

    def arm_text(label, km):
        med = f"median {km['median_epochs']:g} epochs" if km["median_epochs"] is not None else "median not reached"
        return f"{label}: {km['n_reached']} of {km['n']} trials reached it, {med}"

    test = (f"log-rank {format_p(lr['p_value'])}" if lr["p_value"] is not None
            else f"log-rank test not computed ({lr['note']})")
    return [("p", f"Time to {params.target_acc:.0%} validation accuracy (all analysed trials, censoring as "
                  f"described): {arm_text(c['faster_label'], f)}; {arm_text(c['slower_label'], w)}; {test}.")]


def _factorial_section(summary: dict, params: AnalysisParams) -> list[tuple]:
    fac = {k: v for k, v in summary.get("factorial", {}).items() if v}
    blocks: list[tuple] = [("h2", "Activation or normalization?")]
    if not fac:
        mixed = [f"{params.faster_arm.get('activation')}+{params.slower_arm.get('normalization')}",
                 f"{params.slower_arm.get('activation')}+{params.faster_arm.get('normalization')}"]
        blocks.append(("p", f"The grid does not contain both mixed arms ({' and '.join(mixed)}), so the effect of "
                            f"the activation cannot be separated from that of the normalization: any difference "
                            f"between the two compared arms could come from either change."))
        return blocks
    first = next(iter(fac.values()))
    fa, fb = first["factors"]
    blocks.append(("p", f"With all four combinations of {fa} and {fb} present, the arm difference splits exactly "
                        f"into an effect of {fa} plus an effect of {fb} (each averaged over the other factor, computed per "
                        f"seed). The interaction says how much the {fa} effect changes with {fb}. Signs follow the "
                        f"same convention as above: claimed-faster level minus claimed-slower level."))
    rows = []
    for metric, f in fac.items():
        e = f["effects"]
        rows.append([metric] + [f"{_metric_value(metric, e[k]['mean'], diff=True)} "
                                f"({_ci(metric, e[k]['ci_low'], e[k]['ci_high'])})" for k in (fa, fb, "interaction")]
                    + [str(f["n_seeds"])])
    blocks.append(("table", ["measure", f"{fa} effect (CI)", f"{fb} effect (CI)", "interaction (CI)", "seeds"], rows))
    primary = fac.get(params.primary_metric)
    if primary:
        blocks.append(("p", f"Cell means of {params.primary_metric}:"))
        blocks.append(("table", [fa, fb, "trials", "mean"],
                       [[c[fa], c[fb], c["n_trials"], _metric_value(params.primary_metric, c["mean"])]
                        for c in primary["cells"]]))
        if primary["seeds_incomplete"]:
            blocks.append(("p", "Seeds missing a combination (left out here): "
                                + _values(primary["seeds_incomplete"]) + "."))
    return blocks


def _test_acc_section(summary: dict, params: AnalysisParams, figs: dict) -> list[tuple]:
    rows = summary["test_accuracy"]
    blocks: list[tuple] = [("h2", "Test accuracy compared with the paper")]
    if not rows:
        return blocks + [("p", "No test accuracies were recorded.")]
    extra = [k for k in rows[0] if k not in (*ARM_FACTORS, "n_trials", "n", "mean_test_acc", "sd_test_acc",
                                              "ci_low", "ci_high", "paper_test_acc")]
    table = [[arm_label({k: r[k] for k in ARM_FACTORS}), *[_values([r[k]]) for k in extra], f"{r['n']}",
              _metric_value("test_acc", r["mean_test_acc"]),
              "–" if r["sd_test_acc"] is None else f"{r['sd_test_acc'] * 100:.2f} pp",
              "–" if r["ci_low"] is None else f"{r['ci_low'] * 100:.2f}% to {r['ci_high'] * 100:.2f}%",
              _metric_value("test_acc", r["paper_test_acc"])] for r in rows]
    blocks.append(("table", ["arm", *extra, "n", "mean", "SD", f"{params.confidence:.0%} CI", "paper (one run)"],
                   table))
    pf = params.paper_test_acc.get(str(params.faster_arm.get("activation")))
    ps = params.paper_test_acc.get(str(params.slower_arm.get("activation")))
    sds = [r["sd_test_acc"] for r in rows if r["sd_test_acc"] is not None]
    if pf is not None and ps is not None and sds:
        blocks.append(("p", f"The paper's gap between its two runs was {abs(pf - ps) * 100:.2f} percentage points; "
                            f"here the seed-to-seed standard deviation within an arm is "
                            f"{min(sds) * 100:.2f} to {max(sds) * 100:.2f} points, which is the scale of noise a "
                            f"single-run comparison is exposed to."))
    if "test_acc.png" in figs:
        blocks.append(("figure", figs["test_acc.png"]))
    return blocks


def _strata_table(summary: dict, params: AnalysisParams) -> list[tuple]:
    m = summary["comparison"].get("metrics", {}).get(params.primary_metric)
    if not m or not m["by_stratum"]:
        return []
    keys = [k for k in m["by_stratum"][0] if k not in ("n_pairs", "mean_diff", "prob_faster_better")]
    rows = [[_values([s[k] for k in keys]), s["n_pairs"],
             _metric_value(params.primary_metric, s["mean_diff"], diff=True), _num(s["prob_faster_better"], 2)]
            for s in m["by_stratum"]]
    return [("p", f"Primary measure per {', '.join(keys)} (difference {summary['comparison']['faster_label']} "
                  f"minus {summary['comparison']['slower_label']}):"),
            ("table", [", ".join(keys), "pairs", "mean difference", "P(faster arm better)"], rows)]


def _caveats_section(summary: dict, params: AnalysisParams) -> list[tuple]:
    d, c = summary["design"], summary["comparison"]
    items = []
    m = c.get("metrics", {}).get(params.primary_metric)
    if m and 0 < m["n_seeds"] < 6:
        items.append(f"Only {m['n_seeds']} paired seeds: the Wilcoxon p-value cannot go below "
                     f"{2 / 2 ** m['n_seeds']:.3g}, so the claim cannot be declared supported however consistent "
                     f"the differences; the bootstrap interval from so few seeds is also rough.")
    if c.get("unpaired"):
        items.append("Trials without a partner in the other arm (left out of the paired statistics): "
                     + ", ".join(f"{u['trial_id']}" for u in c["unpaired"]) + ".")
    if d.get("diverged_trials"):
        items.append(f"{len(d['diverged_trials'])} trial(s) diverged; they count as not reaching the target, and "
                     f"their loss area covers only the epochs with a finite loss.")
    if d.get("excluded_trials"):
        items.append(f"{len(d['excluded_trials'])} trial(s) errored or did not finish and are not analysed.")
    axes = d.get("config_axes", {})
    weights = next((axes[k] for k in ("weights", "pretrained", "init") if k in axes), None)
    if weights is None:
        items.append("The tables do not record whether ImageNet-pretrained weights were used; the paper fine-tuned "
                     "a pretrained VGG16.")
    elif any(str(w).lower() in ("none", "false", "random", "scratch") for w in weights):
        items.append("Some trials started from random weights (weights: none), not from ImageNet-pretrained ones, "
                     "so they test training from scratch rather than the paper's fine-tuning.")
    settings = {k: v for k, v in axes.items() if k not in ("seed", "lr", "weights", "pretrained", "init")}
    items.append("Scale: " + (("settings used here: " + "; ".join(f"{k} {_values(v)}" for k, v in settings.items())
                               + "; ") if settings else "")
                 + f"{_values(d.get('epochs_planned', []))} epochs planned. If this is smaller than the paper's "
                   f"setup (fewer epochs, smaller images, fewer trainable layers, a data subset), effects need not "
                   f"carry over to full scale.")
    items.append("Only the primary measure decides the verdict; the other rows are descriptive and not corrected "
                 "for multiple comparisons.")
    items.append("Seconds-to-target depends on the hardware and on what else ran at the same time; epochs are the "
                 "fairer clock.")
    return [("h2", "Caveats"), ("ul", items)]


# --------------------------------------------------------------------------- rendering

def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[tuple]) -> str:
    """Render blocks as GitHub-flavoured markdown (figures as relative links)."""
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            out.append(f"# {block[1]}")
        elif kind == "h2":
            out.append(f"## {block[1]}")
        elif kind == "p":
            out.append(block[1])
        elif kind == "verdict":
            out.append(f"**Verdict: {block[1]}.** {block[2]}")
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            header, rows = block[1], block[2]
            lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
            out.append("\n".join(lines))
        elif kind == "figure":
            fig = block[1]
            out.append(f"![{fig.caption}](figures/{fig.filename})\n\n*{fig.caption}*")
    return "\n\n".join(out) + "\n"


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 60rem;
       margin: 2rem auto; padding: 0 1rem; color: #222; line-height: 1.5; }
h1 { font-size: 1.7rem; border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { font-size: 1.3rem; margin-top: 2rem; border-bottom: 1px solid #eee; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f6f6f6; }
tr:nth-child(even) td { background: #fbfbfb; }
figure { margin: 1.5rem 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9rem; color: #555; }
.verdict { padding: .8rem 1rem; border-left: 6px solid #999; background: #f7f7f7; }
.verdict .label { font-weight: bold; text-transform: uppercase; letter-spacing: .05em; }
.supported { border-color: #31a354; background: #eef8ee; }
.contradicted { border-color: #de2d26; background: #fdeeee; }
.inconclusive { border-color: #e6a50d; background: #fdf6e6; }
"""


def _img_data(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(blocks: list[tuple], fig_dir: Path, *, title: str) -> str:
    """Render blocks as one self-contained html page (figures embedded as base64 PNG)."""
    e = html.escape
    body: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            body.append(f"<h1>{e(block[1])}</h1>")
        elif kind == "h2":
            body.append(f"<h2>{e(block[1])}</h2>")
        elif kind == "p":
            body.append(f"<p>{e(block[1])}</p>")
        elif kind == "verdict":
            css = block[1].replace(" ", "-")
            body.append(f'<div class="verdict {e(css)}"><span class="label">Verdict: {e(block[1])}</span>'
                        f"<p>{e(block[2])}</p></div>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{e(str(i))}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{e(str(h))}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "figure":
            fig = block[1]
            body.append(f'<figure><img alt="{e(fig.caption)}" src="{_img_data(fig_dir / fig.filename)}">'
                        f"<figcaption>{e(fig.caption)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
