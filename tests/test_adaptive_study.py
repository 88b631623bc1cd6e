"""Adaptive seeds wired into a study (`search.seeds.adaptive`): the config, `plan`, and one real study run by
`hwr-study run` in a subprocess (no Ray driver in the pytest process) on the synthetic set, with a built-in
effect through each arm's own lr from a best-lr file (`--lr-from`, which the searcher sets per trial).

On the synthetic set a head on a frozen random base learns next to nothing in a few epochs, so the effect is
a divergence: relu+per_image at lr 1e30 diverges at its first step (the study scores a diverged trial as
validation error 1, as the analysis counts it), selu+none at 3e-3 stays finite near chance (error about 0.98),
so the claimed-faster selu+none is faster at every seed, and the confidence sequence says so within a few."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from study.cli import main
from study.config import load_study
from study_helpers import epochs_of, results, trial_dirs, write_study

ROOT = Path(__file__).resolve().parents[1]
ARMS = [["selu", "none"], ["relu", "per_image"]]


def adaptive_config(tmp_path: Path, name: str, adaptive: dict, search: dict | None = None, epochs: int = 2) -> Path:
    """write_study's config with the arms of the paper and adaptive seeds instead of a train.seed axis."""
    path = write_study(tmp_path, name, epochs=epochs)
    doc = yaml.safe_load(path.read_text())
    doc["model"]["base_seed"] = 0  # one random conv base for every seed: two frozen feature sets in all
    doc["search"] = {"model.activation,model.normalization": ARMS, "seeds": {"adaptive": adaptive}, **(search or {})}
    path.write_text(yaml.safe_dump(doc))
    return path


def hwr_study(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0"}
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_config_splits_arms_from_specifications_and_plan_gives_the_range(tmp_path, capsys):
    config = adaptive_config(tmp_path, "layout", {"min": 4, "max": 12}, {"train.lr": [1e-3, 3e-3]})
    study = load_study(config)
    specs, arms = study.adaptive_layout()
    assert specs == [{"train.lr": 1e-3}, {"train.lr": 3e-3}]
    assert arms == [{"model.activation": "selu", "model.normalization": "none"},
                    {"model.activation": "relu", "model.normalization": "per_image"}]
    assert study.num_trials == 2 * 2 * 4 and study.most_trials == 2 * 2 * 24  # max seeds and as many replacements
    assert study.to_dict()["search"]["seeds"]["adaptive"]["max"] == 12
    assert main(["plan", str(config), "--cores", "2"]) == 0
    out = capsys.readouterr().out
    assert "Seeds: adaptive, 4 to 12 per specification from seed 0" in out and "Trials: 16 to 48" in out
    # --set reaches one setting; a train.seed axis given by --set replaces the adaptive seeds
    assert load_study(config, ["search.seeds.adaptive.max=6"]).adaptive.max == 6
    fixed = load_study(config, ["search.train.seed=[0,1]"])
    assert fixed.adaptive is None and fixed.num_trials == 8


@pytest.mark.parametrize("search, adaptive, named", [
    ({"train.seed": [0, 1]}, {"min": 4, "max": 12}, "both a train.seed axis and search.seeds.adaptive"),
    ({}, {"min": 8, "max": 4}, "search.seeds.adaptive needs 2 <= min <= max"),
    ({}, {"min": 4, "mx": 12}, "search.seeds.adaptive.mx"),
])
def test_bad_adaptive_seeds_are_one_sentence_and_exit_2(tmp_path, search, adaptive, named):
    proc = hwr_study("run", str(adaptive_config(tmp_path, "bad", adaptive, search)), "--no-analyze", timeout=300)
    err = proc.stderr.strip()
    assert proc.returncode == 2, err[-2000:]
    assert named in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "ray").exists()  # refused before anything ran


@pytest.mark.slow
def test_an_adaptive_study_stops_before_max_with_the_verdict_of_its_built_in_effect(tmp_path):
    config = adaptive_config(tmp_path, "adaptive", {"min": 4, "max": 12}, epochs=3)
    lrs = tmp_path / "best_lr.yaml"
    lrs.write_text(yaml.safe_dump({"arms": [{"activation": "selu", "normalization": "none", "lr": 3e-3},
                                            {"activation": "relu", "normalization": "per_image", "lr": 1e30}]}))
    proc = hwr_study("run", str(config), "--lr-from", str(lrs))
    assert proc.returncode == 0, proc.stderr[-3000:]
    experiment = tmp_path / "ray" / "adaptive"

    doc = json.loads((experiment / "adaptive.json").read_text())
    (spec,) = doc["specifications"]
    assert (doc["faster"], doc["slower"]) == ("selu+none", "relu+per_image")
    assert spec["verdict"] == "faster" and spec["status"] == "decided" and spec["low"] < spec["high"] < 0
    assert 5 <= spec["n"] < 12 and spec["pairs_complete"] >= spec["n"]

    # every trial ran exactly once: one folder per (seed, arm), seeds 0, 1, ... in a row, each evaluation
    # reported once and the last one the trial's end
    dirs = trial_dirs(experiment)
    rows = {d: results(d) for d in dirs}
    runs = [(r[0]["config"]["train"]["seed"], r[0]["config"]["model"]["activation"]) for r in rows.values()]
    seeds = sorted({seed for seed, _ in runs})
    assert len(runs) == len(set(runs)) == 2 * len(seeds) == doc["trials"] < 2 * 12
    assert seeds == list(range(len(seeds))) == spec["seeds"]
    for d, r in rows.items():
        assert len({x["step"] for x in r}) == len(r) and "best_epoch" in r[-1], d.name
        if r[0]["config"]["model"]["activation"] == "selu":
            assert epochs_of(d) == [1, 2, 3] and r[0]["config"]["train"]["lr"] == 3e-3, d.name  # its own lr
        else:
            assert r[-1]["diverged"] and r[0]["config"]["train"]["lr"] == 1e30, d.name

    report = (tmp_path / "results" / "adaptive" / "report.md").read_text()
    assert "The seeds were chosen adaptively" in report and "selu+none faster" in report
    status = hwr_study("status", str(experiment), timeout=300)
    assert "finished" in status.stdout and "adaptive seeds: 4 to 12" in status.stdout, status.stdout

    # the same command again resumes the finished study: the searcher's saved state says it is done
    again = hwr_study("run", str(config), "--lr-from", str(lrs), "--no-analyze")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resuming" in again.stdout and len(trial_dirs(experiment)) == len(dirs)
    assert json.loads((experiment / "adaptive.json").read_text())["specifications"] == doc["specifications"]
