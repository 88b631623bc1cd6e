"""write_report on a hand-made 2x2 table."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study.analysis.params import AnalysisParams
from study.analysis.report import rewrite_report, write_report
from study.state import shown_path

ARMS = {("selu", "none"): 3, ("relu", "per_image"): 5, ("selu", "per_image"): 5, ("relu", "none"): 3}


def two_by_two(seeds=range(3), lrs=(1e-3,), n_epochs=6):
    rng = np.random.default_rng(0)
    epochs, trials = [], []
    for (act, norm), reach in ARMS.items():
        for seed in seeds:
            for lr in lrs:
                tid = f"{act}_{norm}_s{seed}_lr{lr:g}"
                cfg = {"activation": act, "normalization": norm, "lr": lr, "seed": seed, "image_size": 32}
                diverged = tid == "relu_none_s1_lr0.001"
                n = 3 if diverged else n_epochs
                for e in range(1, n + 1):
                    acc = min(0.9, 0.75 * e / reach) + rng.normal(0, 0.01)
                    loss = float("nan") if diverged and e == n else 1.5 / e + 0.05 * reach + rng.normal(0, 0.01)
                    epochs.append({"trial_id": tid, **cfg, "epoch": e, "train_loss": loss, "train_acc": acc,
                                   "val_loss": loss, "val_acc": acc, "epoch_time_s": 2.0})
                trials.append({"trial_id": tid, **cfg, "status": "ERROR" if diverged else "TERMINATED",
                               "diverged": diverged, "epochs_run": n, "epochs_planned": n_epochs,
                               "test_acc": np.nan if diverged else 0.8 + rng.normal(0, 0.01),
                               "test_loss": np.nan if diverged else 0.6})
    return pd.DataFrame(epochs), pd.DataFrame(trials)


PARAMS = AnalysisParams(n_resamples=2000, min_seeds=3)   # fewer resamples keep the report tests quick


@pytest.fixture(scope="module")
def tables():
    return two_by_two()


def test_write_report_writes_every_file(tmp_path, tables):
    epochs, trials = tables
    files = write_report(tmp_path / "out", epochs, trials, PARAMS, name="demo", source="unit test")
    for rel in ("trials.csv", "steps.csv", "epochs.csv", "summary.json", "report.md", "report.html",
                "figures/val_loss.png", "figures/val_acc.png", "figures/epochs_to_target.png",
                "figures/test_acc.png"):
        assert rel in files and files[rel].is_file() and files[rel].stat().st_size > 0, rel
    assert "figures/lr_sensitivity.png" not in files              # one lr only
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["trials.csv", "steps.csv", "epochs.csv", "summary.json", "report.md", "report.html", "figures"])
    t = pd.read_csv(files["trials.csv"])
    assert len(t) == len(trials) and {"val_loss_auc", "epochs_to_target", "reached_target"} <= set(t.columns)
    assert t.loc[t["trial_id"] == "relu_none_s1_lr0.001", "diverged"].item()
    e = pd.read_csv(files["epochs.csv"])
    assert list(e["trial_id"]) == sorted(e["trial_id"]) and len(e) == len(epochs)
    summary = json.loads(files["summary.json"].read_text())
    assert summary["report"] == {"name": "demo", "source": "unit test"}
    assert summary["factorial"]["val_loss_auc"]["factors"] == ["activation", "normalization"]


def test_html_is_self_contained(tmp_path, tables):
    epochs, trials = tables
    files = write_report(tmp_path, epochs, trials, PARAMS, name="demo", source="unit test")
    page = files["report.html"].read_text()
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) >= 4 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"https?://|<link|<script|@import|url\(", page)
    for section in ("The question", "Design", "Method", "Results", "Activation or normalization?",
                    "Test accuracy compared with the paper", "Caveats", "Verdict:"):
        assert section in page
    md = files["report.md"].read_text()
    assert "](figures/val_loss.png)" in md and "80.88%" in md and "81.43%" in md


def test_rerun_is_byte_identical(tmp_path, tables):
    epochs, trials = tables
    first = write_report(tmp_path, epochs, trials, PARAMS, name="demo", source="unit test")
    before = {k: first[k].read_bytes() for k in ("trials.csv", "steps.csv", "epochs.csv", "summary.json", "report.md")}
    (tmp_path / "figures" / "stale.png").write_bytes(b"old")
    again = write_report(tmp_path, epochs.iloc[::-1], trials.iloc[::-1], PARAMS,
                         name="demo", source="unit test")
    for k, data in before.items():
        assert again[k].read_bytes() == data, k
    assert not (tmp_path / "figures" / "stale.png").exists()       # figures folder swapped as a whole


def test_failed_render_leaves_previous_report(tmp_path, tables, monkeypatch):
    epochs, trials = tables
    write_report(tmp_path, epochs, trials, PARAMS, name="demo", source="unit test")
    before = (tmp_path / "summary.json").read_bytes()
    import study.analysis.report as report

    def boom(*args, **kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(report, "render_html", boom)
    with pytest.raises(RuntimeError):
        write_report(tmp_path, epochs.iloc[:10], trials, PARAMS, name="other", source="x")
    assert (tmp_path / "summary.json").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report-tmp-")]


def test_lr_grid_adds_sensitivity_figure(tmp_path):
    epochs, trials = two_by_two(seeds=range(2), lrs=(1e-4, 1e-3), n_epochs=4)
    files = write_report(tmp_path, epochs, trials, PARAMS, name="grid", source="unit test")
    assert "figures/lr_sensitivity.png" in files
    assert "Learning-rate sensitivity" in files["report.md"].read_text()
    summary = json.loads(files["summary.json"].read_text())
    assert summary["verdict"]["label"] == "no verdict"                   # 2 seeds < min_seeds


def test_one_arm_or_no_trials_still_writes_a_report(tmp_path, tables):
    epochs, trials = tables
    selu = trials["activation"] == "selu"
    files = write_report(tmp_path / "one", epochs[epochs["trial_id"].isin(trials.loc[selu, "trial_id"])],
                         trials[selu], PARAMS, name="one arm", source="unit test")
    md = files["report.md"].read_text()
    assert "Verdict: no verdict" in md and "relu+per_image (the claimed-slower arm)" in md
    files = write_report(tmp_path / "none", pd.DataFrame(), trials.iloc[0:0], PARAMS, name="empty", source="x")
    assert json.loads(files["summary.json"].read_text())["verdict"]["label"] == "no verdict"


def test_markdown_and_html_say_the_same(tmp_path, tables):
    epochs, trials = tables
    files = write_report(tmp_path, epochs, trials, PARAMS, name="demo", source="unit test")
    md_lines = files["report.md"].read_text().splitlines()
    page = files["report.html"].read_text()
    texts = [html.unescape(t) for t in re.findall(r"<(?:p|li)>(.*?)</(?:p|li)>", page)]
    assert len(texts) > 20
    for text in texts:      # every paragraph and list item of the page is a line of the markdown
        assert text in md_lines or f"- {text}" in md_lines or f"**Verdict: {text}" in md_lines \
            or any(line.endswith(text) for line in md_lines if line.startswith("**Verdict")), text
    assert len(re.findall(r"<table>", page)) == sum(1 for line in md_lines if line.startswith("|---"))


def test_rewrite_from_its_own_tables_is_byte_identical(tmp_path, tables):
    epochs, trials = tables
    first = write_report(tmp_path / "a", epochs, trials, PARAMS, name="demo", source="results/ray/demo")
    again = rewrite_report(tmp_path / "a", tmp_path / "b")
    assert sorted(first) == sorted(again)
    for rel in first:
        assert again[rel].read_bytes() == first[rel].read_bytes(), rel
    with pytest.raises(FileNotFoundError, match="is not a report folder"):
        rewrite_report(tmp_path / "b" / "figures")


def test_reports_name_no_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shown_path(str(tmp_path / "results" / "ray" / "x")) == "results/ray/x"
    assert shown_path("s3://bucket/ray/x") == "s3://bucket/ray/x"
    root = Path(__file__).resolve().parents[1]
    for path in [*root.glob("results/*/report.md"), *root.glob("results/*/summary.json")]:
        text = path.read_text()
        assert not re.search(r"(?<![\w.~])/(?:work|home|root|tmp|Users|mnt|private)/", text), path


def test_report_says_whether_the_effect_depends_on_the_base(tmp_path):
    epochs, trials = two_by_two(seeds=range(6))      # 6 seeds: a Wilcoxon p can go below 0.05
    # the same 2x2 twice, on two bases; on "none" every loss is 0.3 higher for SELU
    on_none = {"epochs": epochs.assign(weights="none"), "trials": trials.assign(weights="none")}
    for df in on_none.values():
        df["trial_id"] = "none-" + df["trial_id"]
    selu = on_none["epochs"]["activation"] == "selu"
    on_none["epochs"].loc[selu, "val_loss"] += 0.3
    both_e = pd.concat([epochs.assign(weights="glyphs"), on_none["epochs"]], ignore_index=True)
    both_t = pd.concat([trials.assign(weights="glyphs"), on_none["trials"]], ignore_index=True)
    loss_primary = AnalysisParams(n_resamples=2000, min_seeds=3, primary_metric="val_loss_auc")
    files = write_report(tmp_path, both_e, both_t, loss_primary, name="bases", source="unit test")
    md = files["report.md"].read_text()
    assert "## Does the difference depend on weights?" in md
    assert "| none minus glyphs | 6 | +0.3000 |" in md
    assert "The difference between the arms depends on weights" in md
    assert "The activation effect depends on weights; the normalization effect does not measurably" in md
    assert "| arm | weights | n | mean |" in md                    # test accuracy per arm and base
    assert "(weights: glyphs), the in-house stand-in" in md and "(weights: none), not from ImageNet" in md


def test_models_at_chance_get_no_verdict_in_the_report(tmp_path, tables):
    epochs, trials = tables
    files = write_report(tmp_path, epochs, trials.assign(test_acc=0.016), PARAMS, name="chance", source="x")
    md = files["report.md"].read_text()
    assert "**Verdict: no verdict: the models did not learn.**" in md
    assert "| selu+none | test_acc | 3 | 1.60% | 1.60% to 1.60% | no |" in md
    assert json.loads(files["summary.json"].read_text())["verdict"]["reason"] == "the models did not learn"
    assert 'class="verdict no-verdict"' in files["report.html"].read_text()


def test_step_resolution_table_goes_through_write_report(tmp_path):
    """8 evaluations an epoch (fractional epochs, step, val_nll_ts): steps.csv keeps every evaluation,
    epochs.csv the epoch ends; the panel is in summary.json, report.md and report.html; a rewrite from
    the folder's own tables (steps.csv) gives the same bytes."""
    from test_analysis import overconfident_tables

    epochs, trials = overconfident_tables(seeds=range(6))
    params = AnalysisParams(n_resamples=300)
    files = write_report(tmp_path / "a", epochs, trials, params, name="steps", source="unit test")
    steps = pd.read_csv(files["steps.csv"])
    assert len(steps) == len(epochs) == 12 * 10 * 8 and steps["epoch"].min() == 0.125
    assert {"step", "val_nll_ts"} <= set(steps.columns)
    whole = pd.read_csv(files["epochs.csv"])
    assert len(whole) == 12 * 10 and (whole["epoch"] == whole["epoch"].round()).all()
    summary = json.loads(files["summary.json"].read_text())
    assert summary["resolution"]["evaluations_per_epoch"] == 8 and summary["resolution"]["steps_per_epoch"] == 72
    rows = {r["metric"]: r for r in summary["panel"]["rows"]}
    assert rows["val_error_area"]["primary"] and rows["val_error_area"]["call"] == "faster"
    assert summary["panel"]["calibration"]["differs"] and summary["verdict"]["label"] == "supported"
    md, page = files["report.md"].read_text(), files["report.html"].read_text()
    assert "## Measure panel" in md and "| val_error_area (primary) | lower |" in md
    assert "Calibration differs" in md and "<h2>Measure panel</h2>" in page
    again = rewrite_report(tmp_path / "a", tmp_path / "b")
    for rel in first_files(files):
        assert again[rel].read_bytes() == files[rel].read_bytes(), rel


def first_files(files):
    return [rel for rel in files if not rel.endswith(".png")]


def test_rewrite_reads_an_old_epochs_only_folder_and_takes_overrides(tmp_path, tables, capsys):
    epochs, trials = tables
    files = write_report(tmp_path, epochs, trials, PARAMS, name="old", source="unit test")
    files["steps.csv"].unlink()                       # an older report: epochs.csv only
    again = rewrite_report(tmp_path, tmp_path / "new", {"primary_metric": "val_loss_auc", "min_seeds": 2})
    summary = json.loads(again["summary.json"].read_text())
    assert summary["params"]["primary_metric"] == "val_loss_auc" and summary["params"]["min_seeds"] == 2
    pd.testing.assert_frame_equal(pd.read_csv(again["steps.csv"]), pd.read_csv(files["epochs.csv"]), check_dtype=False)
    assert again["epochs.csv"].read_bytes() == files["epochs.csv"].read_bytes()
    from study.analysis.__main__ import main    # a bad override is one sentence and exit 2, nothing written

    assert main([str(tmp_path), "--out", str(tmp_path / "bad"), "--set", "min_seeds=zero"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "analysis.min_seeds must be an integer, got 'zero'" in err
    assert main([str(tmp_path), "--set", "primary_metric"]) == 2 and "is not KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
