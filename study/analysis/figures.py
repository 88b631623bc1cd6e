"""The report's figures (matplotlib, no pyplot state): curves per epoch, Kaplan-Meier, test accuracy,
paired differences and lr sensitivity.  PNGs are written without the "Software" metadata entry, so
the same data give the same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from study.analysis.describe import epoch_curves
from study.analysis.intervals import bootstrap_mean_ci, kaplan_meier
from study.analysis.params import AnalysisParams, metric_direction
from study.analysis.spec_curve import FILENAME as SPEC_CURVE, specification_curve
from study.analysis.specifications import SPEC_COLUMN, assign_specifications
from study.analysis.tables import ARM_FACTORS, arm_label, arm_mask, arms_present, seed_means

FIGURE_DPI = 110
PALETTE = ("#e6550d", "#3182bd", "#31a354", "#756bb1", "#636363", "#d6616b", "#8c6d31", "#17becf")
LINESTYLES = ("-", "--", "-.", ":")


@dataclass(frozen=True)
class FigureSpec:
    filename: str
    caption: str


FACET_COLUMNS = 5     # panels a row in a faceted curve figure


def _facets(metrics: pd.DataFrame, multiverse: bool) -> tuple[pd.DataFrame, str | None, list]:
    """(metrics, the column drawn one panel per value, its values in order): the specification in a
    multiverse (each panel's arms ran their own lrs), else lr when some arm ran several, else none."""
    used = metrics.loc[metrics["in_analysis"]]
    if used.empty:
        return metrics, None, [None]
    if multiverse:
        names, specs, _, _ = assign_specifications(metrics)
        if len(specs) > 1:
            return metrics.assign(specification=names), SPEC_COLUMN, [s["name"] for s in specs]
    if "lr" in used and used.groupby(list(ARM_FACTORS))["lr"].nunique().max() > 1:
        return metrics, "lr", sorted(used["lr"].unique())
    return metrics, None, [None]


def _styles(arms: list[dict]) -> list[tuple[dict, str, str]]:
    """(arm, label, colour) per arm, in report order."""
    return [(a, arm_label(a), PALETTE[i % len(PALETTE)]) for i, a in enumerate(arms)]


def _save(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=FIGURE_DPI, metadata={"Software": None}, bbox_inches="tight")


def _axes(n: int, width: float = 6.0, height: float = 4.0, columns: int | None = None) -> tuple[Figure, list]:
    """A figure of n panels, ``columns`` a row (all in one row by default)."""
    cols = max(1, min(n, columns or n))
    rows = -(-n // cols)
    fig = Figure(figsize=(width * cols, height * rows))
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    if rows > 1:
        fig.subplots_adjust(hspace=0.35)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _facet_title(column: str | None, value) -> str:
    if column is None:
        return ""
    return f"lr = {value:g}" if column == "lr" else str(value)


def _curve_figure(path: Path, epochs, metrics, column: str, ylabel: str, styles, params, multiverse: bool = False,
                  hline: float | None = None, chance: float | None = None) -> None:
    metrics, facet_col, facets = _facets(metrics, multiverse)
    by = [facet_col] if facet_col else []
    curves = epoch_curves(epochs, metrics, column, params, by=by)
    fig, axes = _axes(len(facets), width=5.5 if by else 7.0, height=4.0, columns=FACET_COLUMNS)
    for ax, facet in zip(axes, facets):
        data = curves if facet_col is None else curves.loc[curves[facet_col] == facet]
        for arm, label, color in styles:
            c = data.loc[arm_mask(data, arm)]
            if c.empty:
                continue
            ax.plot(c["epoch"], c["mean"], color=color, marker="o" if len(c) <= 40 else None, ms=3,
                    label=f"{label} (n={c['n'].max()})")
            ax.fill_between(c["epoch"], c["ci_low"], c["ci_high"], color=color, alpha=0.18, linewidth=0)
        if hline is not None:
            ax.axhline(hline, color="grey", ls="--", lw=1)
        if chance is not None:
            ax.axhline(chance, color="grey", ls=":", lw=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(_facet_title(facet_col, facet), fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
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
        g = used.loc[arm_mask(used, arm)]
        acc = g["test_acc"].astype(float).dropna().to_numpy() * 100
        offsets = np.linspace(-0.15, 0.15, len(acc)) if len(acc) > 1 else np.zeros(len(acc))
        ax.scatter(i + offsets, acc, color=color, s=18, alpha=0.7, zorder=3)
        units = seed_means(g, "test_acc") * 100
        if len(units):
            mean = float(units.mean())
            ci = bootstrap_mean_ci(units, params)
            lo, hi = (mean, mean) if ci["low"] is None else (ci["low"], ci["high"])
            ax.errorbar([i + 0.3], [mean], yerr=[[max(mean - lo, 0)], [max(hi - mean, 0)]], fmt="s", color="black",
                        capsize=4, zorder=4)
        paper = _paper_value(arm, params)
        if paper is not None:
            ax.scatter([i + 0.3], [paper * 100], marker="*", s=160, color="gold", edgecolor="black", zorder=5,
                       label=None if paper_drawn else "paper (one run)")
            paper_drawn = True
    ax.axhline(params.chance_acc * 100, color="grey", ls=":", lw=1, label="chance")
    ax.set_xticks(range(len(styles)), [label for _, label, _ in styles], rotation=15)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, axis="y")
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
    multiverse = summary.get("multiverse")
    if multiverse:
        order = specification_curve(fig_dir / SPEC_CURVE, summary["specifications"], multiverse["axes"],
                                    metric=params.primary_metric, direction=metric_direction(params.primary_metric),
                                    faster=arm_label(params.faster_arm), slower=arm_label(params.slower_arm),
                                    dpi=FIGURE_DPI)
        out.append(FigureSpec(SPEC_CURVE, f"Specification curve: the primary measure's difference "
                                          f"({params.primary_metric}, {arm_label(params.faster_arm)} minus "
                                          f"{arm_label(params.slower_arm)}) with its {params.confidence:.0%} interval in "
                                          f"each of the {len(order)} specifications, sorted by the estimate and "
                                          f"coloured by the verdict; below, a dark dot marks each choice the "
                                          f"specification made."))
    if not arms:
        return out
    ci = f"{params.confidence:.0%}"
    panels = " One panel per specification (each arm at its own tuned lr)." if multiverse else ""
    _curve_figure(fig_dir / "val_loss.png", epochs, metrics, "val_loss", "validation loss", styles, params,
                  multiverse=bool(multiverse))
    out.append(FigureSpec("val_loss.png", f"Validation loss per epoch: mean over seeds with a {ci} bootstrap "
                                          f"band, one line per arm (the paper's Fig. 2).{panels}"))
    _curve_figure(fig_dir / "val_acc.png", epochs, metrics, "val_acc", "validation accuracy", styles, params,
                  multiverse=bool(multiverse), hline=params.target_acc, chance=params.chance_acc)
    out.append(FigureSpec("val_acc.png", f"Validation accuracy per epoch (the paper's Fig. 3), mean over seeds with "
                                         f"a {ci} band; the dashed line is the {params.target_acc:.0%} target, the "
                                         f"dotted one chance (1 in {params.n_classes}).{panels}"))
    comparison = summary["comparison"]
    if comparison.get("status") == "ok" and comparison["metrics"][params.primary_metric]["unit_differences"]:
        _paired_figure(fig_dir / "paired_differences.png", comparison, params)
        out.append(FigureSpec("paired_differences.png",
                              f"Per-seed difference in the primary measure ({params.primary_metric}), "
                              f"{comparison['faster_label']} minus {comparison['slower_label']}; left of the grey "
                              f"line favours {comparison['faster_label']}." if metric_direction(params.primary_metric) == "lower"
                              else "Per-seed difference in the primary measure; right of zero favours the "
                                   "claimed-faster arm."))
    _km_figure(fig_dir / "epochs_to_target.png", metrics, styles, params)
    out.append(FigureSpec("epochs_to_target.png",
                          f"Share of trials that have reached {params.target_acc:.0%} validation accuracy by each "
                          f"epoch (Kaplan-Meier; a trial that never gets there is censored at its last epoch)."))
    _test_acc_figure(fig_dir / "test_acc.png", metrics, styles, params)
    out.append(FigureSpec("test_acc.png", f"Test accuracy per arm: one dot per trial, black square = mean over "
                                          f"seeds with its {ci} bootstrap interval, gold star = the paper's single "
                                          f"run, dotted line = chance."))
    used = metrics.loc[metrics["in_analysis"]]
    if "lr" in used and used["lr"].nunique() > 1:
        _lr_figure(fig_dir / "lr_sensitivity.png", metrics, styles, params)
        out.append(FigureSpec("lr_sensitivity.png", f"Learning-rate sensitivity: {params.primary_metric} and "
                                                    f"test accuracy against lr (log scale), mean line per arm."))
    return out
