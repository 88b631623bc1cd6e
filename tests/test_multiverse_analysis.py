"""The analysis across specifications, on hand-made tables with a known answer (no Ray)."""
from __future__ import annotations

import html
import itertools
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from study.analysis.convergence import convergence_metrics
from study.analysis.multiverse import depends_on, joint_inference, seed_difference_table
from study.analysis.params import AnalysisParams
from study.analysis.specifications import assign_specifications, specification_axes
from study.analysis.summary import summarize

P = AnalysisParams(n_resamples=500)
FAST, SLOW = ("selu", "none"), ("relu", "per_image")


def curves(specs: list[dict], delta, seeds=range(6), lr=lambda arm, spec: 1e-3 if arm == FAST else 2e-3,
           epochs: int = 4):
    """Two arms per specification; validation accuracy 0.85 - 0.6 exp(-epoch / tau). The slower arm's tau
    is 1.5 + 0.1 * seed; the claimed-faster arm's is that plus ``delta(spec, seed)``, so the sign of each
    per-seed difference of the error area is the sign of delta (lower error area = faster)."""
    rows, trials = [], []
    for si, spec in enumerate(specs):
        for arm in (FAST, SLOW):
            for s in seeds:
                tau = 1.5 + 0.1 * s + (delta(spec, s) if arm == FAST else 0.0)
                tid = f"{si}-{arm[0]}-{s}"
                cfg = {"activation": arm[0], "normalization": arm[1], "lr": lr(arm, spec), "seed": s, **spec}
                for e in range(1, epochs + 1):
                    acc = 0.85 - 0.6 * math.exp(-e / tau)
                    rows.append({"trial_id": tid, **cfg, "epoch": e, "val_acc": acc, "val_loss": 2 * (1 - acc),
                                 "train_loss": 2 * (1 - acc), "train_acc": acc})
                trials.append({"trial_id": tid, **cfg, "status": "TERMINATED", "diverged": False,
                               "epochs_run": epochs, "epochs_planned": epochs, "test_acc": 0.8, "test_loss": 0.5})
    return pd.DataFrame(rows), pd.DataFrame(trials)


GRID = [{"optimizer": o, "image_size": i, "dropout": d}
        for o, i, d in itertools.product(("adam", "sgd"), (32, 64), (0.0, 0.5))]


def three_of_eight(spec: dict, seed: int) -> float:
    """SELU faster at every seed under SGD except at 64 px with dropout; elsewhere its sign alternates."""
    if spec["optimizer"] == "sgd" and not (spec["image_size"] == 64 and spec["dropout"] == 0.5):
        return -(0.3 + 0.05 * seed)
    return 0.3 if seed % 2 else -0.3


@pytest.fixture(scope="module")
def eight():
    steps, trials = curves(GRID, three_of_eight)
    return summarize(steps, trials, P)


def test_an_effect_in_three_of_eight_specifications(eight):
    specs = eight["specifications"]
    assert len(specs) == 8 and all([a["n_analysed"] for a in s["arms"]] == [6, 6] for s in specs)
    supported = sorted((s["settings"]["image_size"], s["settings"]["dropout"]) for s in specs
                       if s["verdict"]["label"] == "supported")
    assert supported == [(32, 0.0), (32, 0.5), (64, 0.0)]
    assert all(s["settings"]["optimizer"] == "sgd" for s in specs if s["verdict"]["label"] == "supported")
    assert {s["verdict"]["label"] for s in specs if s["verdict"]["label"] != "supported"} == {"inconclusive"}
    for s in specs:                       # the verdict carries the primary's estimate, interval and p
        v = s["verdict"]
        assert v["metric"] == "val_error_area" and v["n_seeds"] == 6 and v["ci_low"] <= v["estimate"] <= v["ci_high"]
        if v["label"] == "supported":
            assert v["ci_high"] < 0 and v["p_value"] < 0.05
    mv = eight["multiverse"]
    assert mv["counts"] == {"contradicted": 0, "supported": 3, "inconclusive": 5, "no verdict": 0}
    assert mv["lr_role"] == "arm" and mv["axes"] == ["optimizer", "image_size", "dropout"]
    assert mv["depends_on"]["axis"] == "optimizer"
    assert mv["text"].startswith("Across 8 specifications the claim is contradicted in 0 of 8, supported in 3, "
                                 "inconclusive in the rest (5); it depends on optimizer")
    joint = mv["joint"]
    assert joint["exact"] and joint["n_permutations"] == 64 and joint["n_seeds"] == 6
    assert joint["observed"]["n_claimed"] == 3 and joint["observed"]["n_against"] == 0
    assert joint["p_values"]["n_claimed"] <= 4 / 64          # only flips that keep the three effects negative
    assert joint["p_values"]["n_against"] == 1.0
    json.dumps(eight, allow_nan=False)                       # summary.json stays valid JSON


def test_each_specification_is_the_study_analysed_on_its_own_trials(eight):
    steps, trials = curves(GRID, three_of_eight)
    one = (trials["optimizer"] == "sgd") & (trials["image_size"] == 32) & (trials["dropout"] == 0.0)
    alone = summarize(steps[steps["trial_id"].isin(trials.loc[one, "trial_id"])], trials[one], P)
    entry = next(s for s in eight["specifications"] if s["name"] == "optimizer=sgd")
    assert alone["multiverse"] is None and len(alone["specifications"]) == 1
    assert entry["verdict"]["label"] == alone["verdict"]["label"] == "supported"
    m = alone["comparison"]["metrics"]["val_error_area"]
    assert entry["verdict"]["estimate"] == pytest.approx(m["mean_diff"])
    assert entry["verdict"]["p_value"] == pytest.approx(m["p_value"])
    assert [r["call"] for r in entry["panel"]] == [r["call"] for r in alone["panel"]["rows"]]


def test_specifications_are_named_by_their_departures_and_lr_belongs_to_the_arm():
    specs = [{"optimizer": "adam", "trainable_from": "none"}, {"optimizer": "sgd", "trainable_from": "none"},
             {"optimizer": "adam", "trainable_from": "block5"}]
    steps, trials = curves(specs, lambda spec, s: -0.3, seeds=range(2),
                           lr=lambda arm, spec: {"adam": 1e-3, "sgd": 3e-2}[spec["optimizer"]] * (2 if arm == FAST else 1))
    metrics = convergence_metrics(steps, trials, P)
    assert specification_axes(metrics) == (["optimizer", "trainable_from"], "arm")
    names, found, axes, _ = assign_specifications(metrics)
    assert [s["name"] for s in found] == ["reference", "optimizer=sgd", "trainable_from=block5"]
    assert found[0]["settings"] == {"trainable_from": "none", "optimizer": "adam"}
    assert names.value_counts().to_dict() == {"reference": 4, "optimizer=sgd": 4, "trainable_from=block5": 4}


def test_an_lr_grid_is_a_choice_and_a_specification_column_names_them():
    steps, trials = curves([{"optimizer": "adam"}], lambda spec, s: -0.3, seeds=range(2))
    grid_s = pd.concat([steps, steps.assign(lr=1e-2, trial_id=steps["trial_id"] + "b")], ignore_index=True)
    grid_t = pd.concat([trials, trials.assign(lr=1e-2, trial_id=trials["trial_id"] + "b")], ignore_index=True)
    grid_s["lr"] = np.where(grid_s["trial_id"].str.endswith("b"), 1e-2, 1e-3)
    grid_t["lr"] = np.where(grid_t["trial_id"].str.endswith("b"), 1e-2, 1e-3)
    metrics = convergence_metrics(grid_s, grid_t, P)
    assert specification_axes(metrics) == (["lr"], "axis")
    named = metrics.assign(specification=np.where(metrics["lr"] > 5e-3, "high-lr", "paper"))
    names, found, axes, lr_role = assign_specifications(named)
    # named: each (specification, arm) now runs at one lr, so lr belongs to the arm
    assert [s["name"] for s in found] == ["high-lr", "paper"] and (axes, lr_role) == ([], "arm")
    assert names.value_counts().to_dict() == {"high-lr": 4, "paper": 4}


def test_one_specification_keeps_the_report_as_it_was():
    steps, trials = curves([{"optimizer": "adam"}], lambda spec, s: -0.3)
    out = summarize(steps, trials, P)
    assert out["multiverse"] is None and len(out["specifications"]) == 1
    entry = out["specifications"][0]
    assert entry["name"] == "all trials" and entry["verdict"]["label"] == out["verdict"]["label"] == "supported"


def test_joint_inference_by_hand():
    table = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]}, index=["0", "1", "2"])
    j = joint_inference(table, AnalysisParams(), "val_error_area")
    assert j["exact"] and j["n_permutations"] == 8
    assert j["observed"]["median_effect"] == pytest.approx(2.0)
    assert j["p_values"]["median_effect"] == pytest.approx(2 / 8)  # all three signs equal: 2 of 8 flips
    assert j["observed"]["n_claimed_sign"] == 0 and j["p_values"]["n_claimed_sign"] == 1.0
    # a seed missing in one specification is flipped in the other alone
    t = seed_difference_table([{"name": "a", "unit_differences": [{"seed": 0, "diff": 1.0}, {"seed": 1, "diff": 2.0}]},
                               {"name": "b", "unit_differences": [{"seed": 1, "diff": -1.0}, {"seed": 2, "diff": 4.0}]}])
    assert t.index.tolist() == ["0", "1", "2"] and math.isnan(t.loc["2", "a"]) and math.isnan(t.loc["0", "b"])


def test_joint_inference_holds_its_level_under_the_null():
    rng = np.random.default_rng(0)
    rejected, sims = 0, 300
    for _ in range(sims):
        shared = rng.normal(size=(10, 1))                         # specifications correlated through the seed
        d = pd.DataFrame(0.7 * shared + 0.7 * rng.normal(size=(10, 8)), index=[str(i) for i in range(10)])
        j = joint_inference(d, AnalysisParams(), "val_error_area")
        rejected += j["p_values"]["n_against"] < 0.05
    assert rejected / sims < 0.09                                 # exact test: at most alpha, up to noise


def test_correlated_specifications_do_not_fool_the_joint_count():
    # eight near-copies of one specification that is significant by a small margin
    base = np.array([0.9, 1.4, -0.3, 1.1, 0.6, 1.8, 0.2, 0.8])
    rng = np.random.default_rng(1)
    d = pd.DataFrame(base[:, None] + 0.01 * rng.normal(size=(8, 8)), index=[str(i) for i in range(8)])
    j = joint_inference(d, AnalysisParams(), "val_error_area")
    assert j["observed"]["n_against"] == 8
    assert j["naive_binomial_p"]["n_against"] < 1e-9              # independence: overwhelming
    one = joint_inference(pd.DataFrame({"a": base, "b": base}, index=d.index), AnalysisParams(), "val_error_area")
    assert j["p_values"]["n_against"] == pytest.approx(one["p_values"]["n_against"], abs=0.02)
    assert 0.01 < j["p_values"]["n_against"] < 0.1                # jointly: the evidence of one specification
    assert j["seed_correlation"] > 0.99


def test_depends_on_picks_the_choice_that_splits_the_verdicts():
    def e(opt, size, label, x):
        return {"settings": {"optimizer": opt, "image_size": size}, "verdict": {"label": label},
                "primary": {"mean_diff": x}}
    entries = [e("adam", 32, "contradicted", 0.1), e("adam", 64, "contradicted", 0.2),
               e("sgd", 32, "supported", -0.1), e("sgd", 64, "supported", -0.2)]
    dep = depends_on(entries, ["image_size", "optimizer"])
    assert dep["axis"] == "optimizer" and dep["information_gain"] == pytest.approx(1.0)
    assert dep["ranking"][1] == {"axis": "image_size", "information_gain": pytest.approx(0.0)}
    assert depends_on([e("adam", 32, "inconclusive", 0.0), e("sgd", 32, "inconclusive", 0.1)], ["optimizer"]) is None


def test_report_leads_with_the_robust_answer_and_the_curve(tmp_path):
    from study.analysis.report import write_report

    specs = [{"optimizer": "adam"}, {"optimizer": "sgd"}]
    steps, trials = curves(specs, lambda spec, s: 0.3 + 0.05 * s if spec["optimizer"] == "sgd" else -0.3 - 0.05 * s)
    files = write_report(tmp_path, steps, trials, P, name="mv", source="unit test")
    assert "figures/specification_curve.png" in files and files["figures/specification_curve.png"].stat().st_size
    md = files["report.md"].read_text()
    first = md.split("## In short\n\n", 1)[1].splitlines()[0]
    assert first.startswith("**Verdict: depends on the specification.** Across 2 specifications the claim is "
                            "contradicted in 1 of 2, supported in 1, inconclusive in the rest (none); it depends on "
                            "optimizer (optimizer adam: supported 1; optimizer sgd: contradicted 1).")
    assert "## Specifications" in md and "(figures/specification_curve.png)" in md
    page = files["report.html"].read_text()
    assert 'class="verdict depends-on-the-specification"' in page
    md_lines = md.splitlines()
    for text in [html.unescape(t) for t in re.findall(r"<(?:p|li)>(.*?)</(?:p|li)>", page)]:
        assert text in md_lines or f"- {text}" in md_lines or any(
            line.startswith("**Verdict") and line.endswith(text) for line in md_lines), text
    assert len(re.findall(r"<table>", page)) == sum(1 for line in md_lines if line.startswith("|---"))
    summary = json.loads(files["summary.json"].read_text())
    assert [(s["name"], s["verdict"]["label"]) for s in summary["specifications"]] == [
        ("reference", "supported"), ("optimizer=sgd", "contradicted")]
    assert summary["multiverse"]["joint"]["n_specifications"] == 2


def test_curve_figures_draw_one_panel_per_specification_not_per_lr():
    """Each arm's lr is tuned per specification, so a multiverse has many lrs, each in one specification:
    the curves are faceted by specification (in the specifications' order), each panel holding every arm."""
    from study.analysis.describe import epoch_curves
    from study.analysis.figures import _facets

    specs = [{"optimizer": "adam"}, {"optimizer": "sgd"}, {"optimizer": "rmsprop"}]
    lrs = {("adam", FAST): 1e-3, ("adam", SLOW): 2e-3, ("sgd", FAST): 3e-2, ("sgd", SLOW): 1e-2,
           ("rmsprop", FAST): 5e-4, ("rmsprop", SLOW): 4e-4}
    steps, trials = curves(specs, lambda spec, s: -0.3, lr=lambda arm, spec: lrs[spec["optimizer"], arm])
    metrics = convergence_metrics(steps, trials, P)
    faceted, column, facets = _facets(metrics, multiverse=True)
    names, found, _, _ = assign_specifications(metrics)
    assert column == "specification" and facets == [s["name"] for s in found]
    assert set(facets) == {"reference", "optimizer=sgd", "optimizer=rmsprop"}
    curves_ = epoch_curves(steps, faceted, "val_acc", P, by=[column])
    for name in facets:
        panel = curves_.loc[curves_["specification"] == name]
        assert {tuple(r) for r in panel[["activation", "normalization"]].to_numpy()} == {FAST, SLOW}
        assert (panel["n"] == 6).all()
    # outside a multiverse the same table is faceted by lr (six of them), as a plain lr grid is
    assert _facets(metrics, multiverse=False)[1:] == ("lr", sorted(lrs.values()))


def test_a_partial_summary_withholds_every_verdict_and_keeps_the_numbers(eight):
    from study.analysis.summary import withhold_verdicts

    progress = {"ended": 60, "started": 70, "planned": 96, "adaptive": False, "complete": False}
    part = withhold_verdicts(eight, progress)
    assert part["partial"] == progress and "partial" not in eight  # the whole summary is left as it was
    assert part["verdict"]["label"] == "partial" and part["multiverse"]["label"] == "partial"
    assert part["verdict"]["reason"] == "60 of 96 planned trials have ended (10 of the 70 started have not)"
    assert [e["verdict"]["label"] for e in part["specifications"]] == ["partial"] * 8
    assert [e["primary"] for e in part["specifications"]] == [e["primary"] for e in eight["specifications"]]
    assert part["comparison"] == eight["comparison"] and part["anytime"] == eight["anytime"]
    iv = eight["anytime"]["interval_now"]
    assert f"[{iv['low']:+.3g}, {iv['high']:+.3g}]" in part["verdict"]["text"]
    adaptive = withhold_verdicts(eight, {**progress, "adaptive": True})
    assert "60 of at least 96 planned" in adaptive["verdict"]["reason"]


def test_progress_counts_ended_trials_and_waits_for_the_adaptive_searcher():
    from study.experiment import progress

    doc = {"search": {"model.activation": ["selu", "relu"], "train.seed": [0, 1, 2]}}
    trials = pd.DataFrame({"trial_id": list("abcdef")})
    trials.attrs["n_ended"] = 6
    assert progress(doc, trials, None) == {"ended": 6, "started": 6, "planned": 6, "adaptive": False,
                                           "complete": True}
    trials.attrs["n_ended"] = 5  # one stopped by Ctrl-C before its last epoch: TERMINATED, not ended
    assert not progress(doc, trials, None)["complete"]
    assert not progress(doc, trials.iloc[:4].copy(), None)["complete"]  # two not started yet
    trials.attrs["n_ended"] = 6
    adaptive_doc = {"search": {"model.activation": ["selu", "relu"], "seeds": {"adaptive": {"min": 3, "max": 9}}}}
    running = progress(adaptive_doc, trials, {"settings": {}, "specifications": []})
    assert running["planned"] == 6 and running["adaptive"] and not running["complete"]
    assert progress(adaptive_doc, trials, {"settings": {}, "specifications": [], "trials": 6})["complete"]
