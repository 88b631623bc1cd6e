"""Write the study report: csv/json tables, figures, and report.md + a self-contained report.html.

The pages come from Jinja2 templates in ``templates/``: ``body.j2`` holds the report's sections and
prose once, in no particular format; it draws every heading, paragraph, list, table and figure through a
macro module, ``markdown.j2`` or ``html.j2``, so the two pages say the same things from the same data
(``report_context``).  ``page.html.j2`` wraps the html body (style sheet ``report.css``, figures embedded
as base64 PNG).  The Markdown macros escape ``|`` in table cells; the html macros escape every text.

``write_report`` renders everything into a temporary folder inside ``out_dir`` and only then moves the
files into place (``os.replace``; the ``figures`` folder is swapped as a whole), so a failure while
rendering leaves the previous report untouched and never a half-written one; a process killed before
the moves leaves only its temporary folder (named with its pid), which the next ``write_report`` into
the same folder removes.  Other files in ``out_dir`` are left alone.

Determinism: every output depends only on the input tables and parameters (no timestamps, seeded
bootstrap, sorted rows, PNGs without the "Software" metadata entry).
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import jinja2
import pandas as pd

from study.analysis.convergence import convergence_metrics
from study.analysis.curves import epoch_end_rows, prepare_curves
from study.analysis.figures import FigureSpec, make_figures
from study.analysis.intervals import shows_effect
from study.analysis.params import AnalysisParams, metric_label
from study.analysis.spec_report import multiverse_context
from study.analysis.summary import summarize
from study.analysis.tables import ARM_FACTORS, arm_label, arm_words, sorted_epochs, sorted_trials
from study.analysis.numbers import _ci, _metric_value, _num, _p
from study.analysis.verdict import format_p

FILES = ("trials.csv", "steps.csv", "epochs.csv", "summary.json", "report.md", "report.html")
TABLES = 4                # FILES[:TABLES] are the tables, written before the pages
TMP_PREFIX = ".report-tmp-"


# --------------------------------------------------------------------------- entry point

def write_report(out_dir: Path, epochs: pd.DataFrame, trials: pd.DataFrame,
                 params: AnalysisParams | None = None, *, name: str, source: str,
                 adaptive: dict | None = None, progress: dict | None = None) -> dict[str, Path]:
    """Write the full report for one experiment into ``out_dir``.

    ``source`` is printed as where the data came from; give a path relative to the project (or a URI),
    never a machine's absolute path.  ``adaptive``: the adaptive-seed searcher's settings and decisions
    (study.experiment.read_adaptive), shown in the report and kept in ``summary.json``.  ``progress``
    (study.experiment.progress): a study not yet complete gets a partial report, without fixed-n verdicts.  Returns ``{relative path: absolute Path}`` for every file written:
    ``trials.csv`` (trials + convergence metrics), ``epochs.csv``, ``summary.json``, ``report.md``,
    ``report.html`` and ``figures/*.png``.  ``steps.csv`` holds every evaluation (one row per trial and
    step, fractional epochs), ``epochs.csv`` only the evaluations at whole epochs (the old table: the
    same rows when the trials evaluated once an epoch).
    """
    params = params or AnalysisParams()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    epochs = prepare_curves(epochs)
    metrics = convergence_metrics(epochs, trials, params)
    summary = summarize(epochs, trials, params, metrics=metrics, progress=progress)
    summary["report"] = {"name": name, "source": source}
    if adaptive is not None:
        summary["adaptive"] = adaptive
    _remove_stale_tmp(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=out_dir))
    try:
        _write_csv(tmp / "trials.csv", sorted_trials(metrics))
        _write_csv(tmp / "steps.csv", sorted_epochs(epochs))
        whole = epoch_end_rows(sorted_epochs(epochs))
        _write_csv(tmp / "epochs.csv", whole.assign(epoch=whole["epoch"].round().astype(int)))
        (tmp / "summary.json").write_text(json.dumps(summary, sort_keys=True, indent=2, allow_nan=False) + "\n",
                                          encoding="utf-8")
        figures = make_figures(tmp / "figures", epochs, metrics, summary, params)
        context = report_context(summary, figures, params, tmp / "figures")
        (tmp / "report.md").write_text(render_markdown(context), encoding="utf-8")
        (tmp / "report.html").write_text(render_html(context), encoding="utf-8")
        written = [*FILES[:TABLES], *(f"figures/{f.filename}" for f in figures), *FILES[TABLES:]]
        _move_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {rel: out_dir / rel for rel in written}


def rewrite_report(folder: Path, out_dir: Path | None = None,
                   overrides: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write a report again from the ``trials.csv``, ``steps.csv`` (or, in an older report, ``epochs.csv``)
    and ``summary.json`` of an earlier one.

    The parameters, name and source come from that ``summary.json``, with ``overrides`` (analysis keys,
    e.g. ``{"primary_metric": "val_error_area"}``) on top; the Tune experiment is not needed.
    ``trials.csv`` holds the trials table plus the measures computed from it, which are computed again.
    """
    folder = Path(folder)
    curves = "steps.csv" if (folder / "steps.csv").is_file() else "epochs.csv"
    missing = [f for f in ("trials.csv", curves, "summary.json") if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a report folder (no {', '.join(missing)} in it).")
    old = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    report = old.get("report") or {}
    params = AnalysisParams.from_dict({**(old.get("params") or {}), **(overrides or {})})
    trials = pd.read_csv(folder / "trials.csv", dtype={"trial_id": str})
    epochs = pd.read_csv(folder / curves, dtype={"trial_id": str})
    return write_report(out_dir or folder, epochs, trials, params, name=report.get("name", folder.name),
                        source=report.get("source", str(folder)), adaptive=old.get("adaptive"),
                        progress=old.get("partial"))


def _remove_stale_tmp(out_dir: Path) -> None:
    """Remove the temporary folders that killed writers left in out_dir (their pid no longer runs)."""
    for d in out_dir.glob(f"{TMP_PREFIX}*"):
        pid = d.name.removeprefix(TMP_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Swap the figures folder, then replace the files; the report pages go last."""
    target = out_dir / "figures"
    if target.exists():
        os.replace(target, tmp / "figures.old")
    os.replace(tmp / "figures", target)
    for name in FILES:
        os.replace(tmp / name, out_dir / name)


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    df.to_csv(path, index=False, lineterminator="\n")


# --------------------------------------------------------------------------- rendering

def _one_line(text: str) -> str:
    """Fold a paragraph written over several template lines into one line."""
    return " ".join(str(text).split())


def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("study.analysis", "templates"),
    autoescape=False,        # body.j2 is shared by both formats: the html macros escape every text themselves
    trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
)
_ENV.filters.update(one_line=_one_line, md_cell=_md_cell, fmt=format, format_p=format_p)


def render_markdown(context: dict) -> str:
    """report.md: blocks separated by one blank line (extra blank lines left by the templates are folded)."""
    text = _ENV.get_template("body.j2").render(context, fmt="markdown.j2")
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"


def render_html(context: dict) -> str:
    """report.html: one self-contained page, one block a line."""
    text = _ENV.get_template("page.html.j2").render(context, fmt="html.j2")
    return re.sub(r"\n{2,}", "\n", text).strip("\n") + "\n"


# --------------------------------------------------------------------------- numbers in tables

def _values(xs: Sequence) -> str:
    return ", ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in xs) if xs else "–"


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


_ENV.filters.update(values=_values, counts=_counts)


# --------------------------------------------------------------------------- the data the templates show

def report_context(summary: dict, figures: list[FigureSpec], params: AnalysisParams, fig_dir: Path) -> dict:
    """Everything ``body.j2`` shows: the summary, plus its tables as rows of formatted cells."""
    c, d = summary["comparison"], summary["design"]
    primary = c.get("metrics", {}).get(params.primary_metric)
    return {
        "title": f"Study report: {summary['report']['name']}",
        "source": summary["report"]["source"],
        "verdict": summary["verdict"],
        "anytime": summary.get("anytime"),
        "adaptive": summary.get("adaptive"), "adaptive_rows": _adaptive_rows(summary.get("adaptive")),
        "multiverse": multiverse_context(summary, params),
        "params": params,
        "alpha": 1 - params.confidence,
        "chance": params.chance_acc, "learned_threshold": params.learned_threshold,
        "primary_label": metric_label(params.primary_metric, params),
        "fast": arm_words(params.faster_arm), "slow": arm_words(params.slower_arm),
        "faster_label": arm_label(params.faster_arm), "slower_label": arm_label(params.slower_arm),
        "paper_fast": params.paper_test_acc.get(str(params.faster_arm.get("activation"))),
        "paper_slow": params.paper_test_acc.get(str(params.slower_arm.get("activation"))),
        "design": d,
        "design_rows": [[a["label"], a["n_trials"], a["n_analysed"], a["n_diverged"], _counts(a["status_counts"]),
                         _values(a["seeds"]), _values(a["lrs"])] for a in d.get("arms", [])],
        "other_axes": {k: v for k, v in d.get("config_axes", {}).items() if k not in ("seed", "lr")},
        "comparison": c,
        "primary": primary,
        **_panel(summary.get("panel") or {}),
        "resolution": summary.get("resolution") or {},
        **_results(c, params),
        **_factorial(summary, params),
        **_test_accuracy(summary),
        "learning": _learning(c.get("learning")),
        "by_axis": _by_axis(primary, summary.get("factorial_by", {}), params),
        **_caveats(d),
        "figures": {f.filename: {"filename": f.filename, "caption": f.caption,
                                 "data_uri": "data:image/png;base64,"
                                             + base64.b64encode((fig_dir / f.filename).read_bytes()).decode("ascii")}
                    for f in figures},
    }


def _results(c: dict, params: AnalysisParams) -> dict:
    rows, skipped = [], []
    for metric, m in c.get("metrics", {}).items():
        if m["n_pairs"] == 0:
            skipped.append(metric)
            continue
        name = metric + (" (primary)" if metric == params.primary_metric else "")
        rows.append([name, m["direction"], _metric_value(metric, m["faster_mean"]),
                     _metric_value(metric, m["slower_mean"]), _metric_value(metric, m["mean_diff"], diff=True),
                     _ci(metric, m["ci_low"], m["ci_high"]), _p(m["p_value"]),
                     _num(m["prob_faster_better"], 2), f"{m['n_pairs']} / {m['n_seeds']}"])
    return {"result_rows": rows, "skipped": skipped,
            "survival": c.get("survival", {}).get("epochs_to_target")}


def _adaptive_rows(adaptive: dict | None) -> list[list[str]]:
    """Per specification: the adaptive-seed searcher's decision, at how many seed pairs, and its interval."""
    if not adaptive or not adaptive.get("specifications"):
        return []
    words = {"faster": f"{adaptive['faster']} faster", "slower": f"{adaptive['faster']} slower"}
    rows = []
    for s in adaptive["specifications"]:
        interval = "unbounded" if s["low"] is None or s["high"] is None else f"[{s['low']:+.4f}, {s['high']:+.4f}]"
        rows.append([s["name"], words.get(s["verdict"], s["verdict"]), str(s["n"]), interval, s["status"]])
    return rows


def _panel(panel: dict) -> dict:
    rows = [[r["metric"] + (" (primary)" if r["primary"] else ""), r["direction"],
             _metric_value(r["metric"], r["faster_mean"]), _metric_value(r["metric"], r["slower_mean"]),
             _metric_value(r["metric"], r["mean_diff"], diff=True), _ci(r["metric"], r["ci_low"], r["ci_high"]),
             _p(r["p_value"]), r["call"], "–" if not r["n_pairs"] else f"{r['n_pairs']} / {r['n_seeds']}"]
            for r in panel.get("rows", [])]
    notes = [f"{r['metric']}: {r['note']}" for r in panel.get("rows", []) if r["note"]]
    return {"panel_rows": rows, "panel_notes": notes, "panel_text": panel.get("text", ""),
            "panel_labels": [f"{r['metric']}: {r['label']}" for r in panel.get("rows", [])]}


def _factorial(summary: dict, params: AnalysisParams) -> dict:
    fac = {k: v for k, v in summary.get("factorial", {}).items() if v}
    out: dict[str, Any] = {
        "factorial": fac,
        "mixed_arms": [f"{params.faster_arm.get('activation')}+{params.slower_arm.get('normalization')}",
                       f"{params.slower_arm.get('activation')}+{params.faster_arm.get('normalization')}"],
    }
    if not fac:
        return out
    fa, fb = next(iter(fac.values()))["factors"]
    out["factors"] = [fa, fb]
    out["factorial_rows"] = [
        [metric] + [f"{_metric_value(metric, f['effects'][k]['mean'], diff=True)} "
                    f"({_ci(metric, f['effects'][k]['ci_low'], f['effects'][k]['ci_high'])}; "
                    f"p {_p(f['effects'][k]['p_value'])})"
                    for k in (fa, fb, "interaction")] + [str(f["n_seeds"])]
        for metric, f in fac.items()]
    cells = fac.get(params.primary_metric)
    out["factorial_primary"] = cells
    out["cell_rows"] = [[c[fa], c[fb], c["n_trials"], _metric_value(params.primary_metric, c["mean"])]
                        for c in cells["cells"]] if cells else []
    return out


def _test_accuracy(summary: dict) -> dict:
    rows = summary["test_accuracy"]
    fixed = (*ARM_FACTORS, "n_trials", "n", "mean_test_acc", "sd_test_acc", "ci_low", "ci_high", "paper_test_acc")
    extra = [k for k in rows[0] if k not in fixed] if rows else []
    table = [[arm_label({k: r[k] for k in ARM_FACTORS}), *[_values([r[k]]) for k in extra], f"{r['n']}",
              _metric_value("test_acc", r["mean_test_acc"]),
              "–" if r["sd_test_acc"] is None else f"{r['sd_test_acc'] * 100:.2f} pp",
              _ci_pct(r["ci_low"], r["ci_high"]),
              _metric_value("test_acc", r["paper_test_acc"])] for r in rows]
    sds = [r["sd_test_acc"] for r in rows if r["sd_test_acc"] is not None]
    return {"test_extra": extra, "test_rows": table, "test_sds": [min(sds), max(sds)] if sds else None}


def _learning(learning: dict | None) -> dict | None:
    if not learning:
        return None
    rows = [[a["arm"], a["measure"], a["n_seeds"], _metric_value("test_acc", a["mean"]),
             _ci_pct(a["ci_low"], a["ci_high"]), "yes" if a["learned"] else "no"] for a in learning["arms"]]
    return {**learning, "rows": rows}


def _ci_pct(lo: Any, hi: Any) -> str:
    return "–" if lo is None else f"{lo * 100:.2f}% to {hi * 100:.2f}%"


def _by_axis(m: dict | None, factorial_by: dict, params: AnalysisParams) -> list[dict]:
    """Per extra pair axis (lr, weights, ...): the primary difference per level, contrasts between levels,
    and the 2x2 split per level when the grid is crossed."""
    if not m:
        return []
    metric = params.primary_metric
    out = []
    for axis, by in m.get("by_axis", {}).items():
        item = {
            "axis": axis,
            "reference": _values([by["levels"][0]["level"]]) if by["levels"] else "–",
            "rows": [[_values([lv["level"]]), f"{lv['n_pairs']} / {lv['n_seeds']}",
                      _metric_value(metric, lv["mean"], diff=True), _ci(metric, lv["ci_low"], lv["ci_high"]),
                      _p(lv["p_value"]), _num(lv["prob_faster_better"], 2)] for lv in by["levels"]],
            "contrast_rows": [[f"{_values([c['level']])} minus {_values([c['reference']])}", c["n_seeds"],
                               _metric_value(metric, c["mean"], diff=True), _ci(metric, c["ci_low"], c["ci_high"]),
                               _p(c["p_value"])] for c in by["contrasts"]],
            "depends": any(shows_effect(c, 1 - params.confidence) for c in by["contrasts"]),
            "factorial": None,
        }
        fac = factorial_by.get(axis)
        if fac:
            names = list(fac["levels"][0]["effects"])
            item["factorial"] = {
                "factors": names[:2],
                "rows": [[_values([lv["level"]])]
                         + [f"{_metric_value(metric, lv['effects'][k]['mean'], diff=True)} "
                            f"({_ci(metric, lv['effects'][k]['ci_low'], lv['effects'][k]['ci_high'])})" for k in names]
                         + [str(lv["n_seeds"])] for lv in fac["levels"]],
                "contrast_rows": [[f"{_values([c['level']])} minus {_values([c['reference']])}"]
                                  + [f"{_metric_value(metric, c['effects'][k]['mean'], diff=True)} "
                                     f"({_ci(metric, c['effects'][k]['ci_low'], c['effects'][k]['ci_high'])}; "
                                     f"p {_p(c['effects'][k]['p_value'])})" for k in names]
                                  + [str(c["n_seeds"])] for c in fac["contrasts"]],
                "depends": {k: any(shows_effect(c["effects"][k], 1 - params.confidence) for c in fac["contrasts"])
                            for k in names[:2]},
            }
        out.append(item)
    return out


def _caveats(d: dict) -> dict:
    axes = d.get("config_axes", {})
    weights = next((axes[k] for k in ("weights", "pretrained", "init") if k in axes), None)
    names = {str(w).lower() for w in weights or []}
    settings = {k: v for k, v in axes.items() if k not in ("seed", "lr", "weights", "pretrained", "init")}
    return {"base_unrecorded": weights is None,
            "base_scratch": bool(names & {"none", "false", "random", "scratch"}),
            "base_glyphs": "glyphs" in names,
            "scale_settings": "; ".join(f"{k} {_values(v)}" for k, v in settings.items())}
