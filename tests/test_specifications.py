"""Specifications (study.specs): config forms, the grid they give, `hwr-study plan`, the lr search's groups."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hwr.config import ConfigError
from study.config import load_study, study_from_dict

ROOT = Path(__file__).resolve().parents[1]

BASE = {
    "name": "s",
    "data": {"dataset": "synthetic", "image_size": 32},
    "model": {"weights": "none", "base_seed": 0, "trainable_from": "none"},
    "train": {"optimizer": "adam", "lr": 3e-3, "epochs": 1},
    "search": {"model.activation": ["relu", "selu"], "model.normalization": ["none", "per_image"],
               "train.seed": [0, 1, 2]},
}
CROSS = {"cross": {"train.optimizer": ["adam", "sgd"], "model.trainable_from": ["none", "block5"]}}
LIST = {"reference": "ref", "list": [{"name": "sgd", "set": {"train.optimizer": "sgd", "train.momentum": 0.5}},
                                     {"name": "px64", "set": {"data.image_size": 64}}]}


def test_a_cross_gives_every_combination_with_the_arms_and_seeds_inside():
    study = study_from_dict({**BASE, "specifications": CROSS})
    assert [s.name for s in study.specifications] == ["adam-none", "adam-block5", "sgd-none", "sgd-block5"]
    assert study.num_trials == 4 * 4 * 3 == len(study.trial_configs())
    rows = {(s, c.train.optimizer, c.model.trainable_from, c.model.activation, c.model.normalization, c.train.seed)
            for s, c in zip(study.trial_specifications(), study.trial_configs())}
    assert len(rows) == 48
    for spec, opt, depth, *_ in rows:
        assert spec == f"{opt}-{depth}"
    assert study.lr_keys == ("specification", "model.activation", "model.normalization")


def test_a_list_departs_from_the_reference_and_keeps_the_base_elsewhere():
    study = study_from_dict({**BASE, "specifications": LIST})
    assert [s.name for s in study.specifications] == ["ref", "sgd", "px64"] and study.reference == "ref"
    by_spec: dict[str, set] = {}
    for spec, c in zip(study.trial_specifications(), study.trial_configs()):
        by_spec.setdefault(spec, set()).add((c.train.optimizer, c.train.momentum, c.data.image_size))
    assert by_spec == {"ref": {("adam", 0.9, 32)}, "sgd": {("sgd", 0.5, 32)}, "px64": {("adam", 0.9, 64)}}
    assert study.num_trials == 3 * 12
    doc = study.to_dict()  # the record reads back as the same study
    again = study_from_dict(doc)
    assert again.specifications == study.specifications and again.reference == "ref"
    assert again.to_dict() == doc


def test_the_tune_space_grids_over_the_specification_and_its_keys_follow():
    from study.run import param_space

    study = study_from_dict({**BASE, "specifications": LIST})
    space = param_space(study)
    assert space["specification"] == {"grid_search": ["ref", "sgd", "px64"]}
    follow = space["train"]["optimizer"].func  # a sample_from following the specification's name

    class Spec:
        config = {"specification": "sgd"}

    assert follow(Spec) == "sgd"
    Spec.config = {"specification": "px64"}
    assert follow(Spec) == "adam" and space["data"]["image_size"].func(Spec) == 64


@pytest.mark.parametrize("specs, named", [
    ({"cross": {"train.optimiser": ["adam"]}}, "train.optimiser"),
    ({"cross": {"train.optimizer": "sgd"}}, "specifications.cross.train.optimizer"),
    ({"cross": CROSS["cross"], "list": []}, "specifications"),
    ({"list": [{"name": "a b", "set": {"train.optimizer": "sgd"}}]}, "specifications.list[0].name"),
    ({"list": [{"name": "x", "set": {}}]}, "specifications.list[0]"),
    ({"list": [{"name": "x", "set": {"train.optimizer": "sgd"}}, {"name": "x", "set": {"train.lr": 1e-2}}]}, "'x'"),
    ({"list": [{"name": "x", "set": {"train.optimizer": "sgd"}}, {"name": "y", "set": {"train.optimizer": "sgd"}}]},
     "'y'"),
    ({"cross": {"model.activation": ["relu"]}}, "also a search axis"),
    ({"cross": {"train.optimizer": ["adam", "nesterov"]}}, "train.optimizer"),
    ({"list": [{"name": "x"}], "weights": 1}, "specifications.weights"),
])
def test_bad_specifications_are_one_sentence_naming_the_key(specs, named):
    with pytest.raises(ConfigError) as err:
        study_from_dict({**BASE, "specifications": specs})
    assert named in str(err.value) and "\n" not in str(err.value)


def test_a_bad_specification_exits_2_with_one_sentence(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BASE, "specifications": {"cross": {"model.depth": [1, 2]}}}))
    proc = subprocess.run([sys.executable, "-m", "study", "plan", str(path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "model.depth" in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_plan_prints_the_study_without_ray_or_torch():
    code = ("import sys; from study.cli import main; rc = main(['plan', 'configs/multiverse.yaml', '--cores', '2']);"
            "print('LOADED', [m for m in ('ray', 'torch', 'torchvision') if m in sys.modules], rc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "LOADED [] 0" in out
    assert "Trials: 240" in out and "Specifications (10):" in out and "Seeds (6): 0, 1, 2, 3, 4, 5" in out
    assert "Frozen feature sets (10" in out and "Data sections (3):" in out and "estimate" in out
    minutes = int(out.split("Estimated CPU time of search and run: ")[1].split(" min")[0])
    # configs/multiverse.yaml is sized for about 90 minutes; the cost model says 59 (it under-estimates block5:
    # the measured search and run took 71 + 49 min, docs/performance.md)
    assert 45 <= minutes <= 120


def test_the_cost_model_grows_with_size_depth_and_epochs():
    from hwr.config import config_from_dict
    from study.plan import RAY_STUDY_FACTOR, asha_share, trial_seconds

    def cost(**kw):
        d = {"data": {"image_size": kw.get("size", 32)}, "model": {"trainable_from": kw.get("depth", "none")},
             "train": {"epochs": kw.get("epochs", 10), "evals_per_epoch": 8}}
        return trial_seconds(config_from_dict(d))

    assert cost() == pytest.approx(RAY_STUDY_FACTOR * 10 * 0.6 + 1.0)  # the measured frozen 32 px head
    assert cost(size=64) == pytest.approx(RAY_STUDY_FACTOR * 10 * 0.87 + 1.0)
    assert cost(epochs=20) > cost() and cost(depth="block5") > 5 * cost()
    assert cost(depth="block4") > cost(depth="block5")

    class O:
        early_stopping, grace_epochs, reduction_factor = True, 1, 3

    assert asha_share(9, O) == pytest.approx((1 + 2 / 3 + 6 / 9) / 9)  # rungs 1, 3, 9
    O.early_stopping = False
    assert asha_share(9, O) == 1.0


MULTI = {**BASE, "specifications": LIST,
         "optuna": {"range": {"sgd": [1e-5, 1e-1], "adam": [1e-5, 1e-2]}, "seeds": [100, 101], "trials_per_arm": 4}}


def test_lr_search_groups_are_per_specification_and_arm_on_unevaluated_seeds():
    pytest.importorskip("ray")
    from ray.tune.search.sample import Float

    from study import lr_search

    study = study_from_dict(MULTI)
    groups = lr_search.groups(study)
    assert len(groups) == 3 * 4 and groups[0] == {"specification": "ref", "model.activation": "relu",
                                                  "model.normalization": "none"}
    evaluated = {c.train.seed for c in study.trial_configs()}
    seeds_by_group = {}
    for group in groups:
        space = lr_search.group_space(study, group)
        assert space["specification"] == group["specification"]
        assert space["model"]["activation"] == group["model.activation"]
        lr = space["train"]["lr"]
        assert isinstance(lr, Float)
        assert (lr.lower, lr.upper) == ((1e-5, 1e-1) if group["specification"] == "sgd" else (1e-5, 1e-2))
        searcher = lr_search.searcher(study, group)
        searcher.set_search_properties("best_val_acc", "max", space)
        drawn = [searcher.suggest(f"t{i}") for i in range(4)]
        seeds = [d["train"]["seed"] for d in drawn]
        assert seeds == [100, 101, 100, 101] and not set(seeds) & evaluated
        seeds_by_group[tuple(group.values())] = tuple(round(d["train"]["lr"], 12) for d in drawn)
    assert len(set(seeds_by_group.values())) == len(groups)  # every group draws its own lrs
    samplers = {lr_search.sampler_seed(0, tuple(g.values())) for g in groups}
    assert len(samplers) == len(groups)
    assert lr_search.rungs(study) == set()  # 1 epoch: nothing to stop early
    longer = study_from_dict({**MULTI, "train": {**BASE["train"], "epochs": 10}})
    assert lr_search.rungs(longer) == {1.0, 3.0, 9.0}


def test_search_seeds_that_the_study_evaluates_are_refused():
    with pytest.raises(ConfigError, match="optuna.seeds .* evaluated seed"):
        study_from_dict({**MULTI, "optuna": {**MULTI["optuna"], "seeds": [2, 100]}})
    with pytest.raises(ConfigError, match="optuna.range.sgd"):
        study_from_dict({**MULTI, "optuna": {**MULTI["optuna"], "range": {"sgd": [1e-1, 1e-5]}}})


def test_best_lr_files_are_read_per_specification_and_in_the_old_per_arm_form(tmp_path):
    from study.lr_file import read_lr_file

    study = study_from_dict(MULTI)
    arms = [("relu", "none"), ("relu", "per_image"), ("selu", "none"), ("selu", "per_image")]
    new = [{"specification": s, "activation": a, "normalization": n, "lr": 1e-3 * (i + 1)}
           for i, s in enumerate(("ref", "sgd", "px64")) for a, n in arms]
    path = tmp_path / "best_lr.yaml"
    path.write_text(yaml.safe_dump({"arms": new}))
    lrs = read_lr_file(path, study)
    assert lrs[("sgd", "selu", "none")] == 2e-3 and lrs[("px64", "relu", "none")] == 3e-3
    old = [{"activation": a, "normalization": n, "lr": 1e-4 * (i + 1)} for i, (a, n) in enumerate(arms)]
    path.write_text(yaml.safe_dump({"arms": old}))
    lrs = read_lr_file(path, study)
    assert {lrs[(s, "selu", "none")] for s in ("ref", "sgd", "px64")} == {old[2]["lr"]}  # each arm's, everywhere
    path.write_text(yaml.safe_dump({"arms": new[:4]}))
    with pytest.raises(ConfigError, match="no lr for the specification sgd, arm relu\\+none"):
        read_lr_file(path, study)


def test_a_small_specification_study_runs_end_to_end_and_its_trials_carry_their_specification(tmp_path):
    doc = {**BASE, "name": "specs-e2e",
           "specifications": {"reference": "adam", "list": [{"name": "sgd", "set": {"train.optimizer": "sgd",
                                                                                    "train.lr": 0.05}}]},
           "search": {"model.activation": ["relu", "selu"], "train.seed": [0, 1]},
           "train": {**BASE["train"], "evals_per_epoch": 2},
           "resources": {"cpu": 1, "gpu": 0},
           "run": {"storage_path": str(tmp_path / "ray"), "max_failures": 0,
                   "results_dir": str(tmp_path / "results")},
           "analysis": {"target_acc": 0.05}}
    config = tmp_path / "specs.yaml"
    config.write_text(yaml.safe_dump(doc))
    proc = subprocess.run([sys.executable, "-m", "study", "run", str(config), "--no-analyze"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from study.experiment import load_tables

    trials, epochs = load_tables(str(tmp_path / "ray" / "specs-e2e"))
    assert len(trials) == 8 and (trials.status == "TERMINATED").all()
    got = {(r.specification, r.optimizer, r.activation, int(r.seed)) for r in trials.itertuples()}
    assert got == {(s, o, a, seed) for s, o in (("adam", "adam"), ("sgd", "sgd"))
                   for a in ("relu", "selu") for seed in (0, 1)}
    assert set(trials.loc[trials.specification == "sgd", "lr"]) == {0.05}
    assert set(epochs.specification) == {"adam", "sgd"}
    assert epochs.groupby("trial_id").size().eq(2).all()  # 1 epoch x 2 evaluations
    stored = yaml.safe_load((tmp_path / "ray" / "specs-e2e" / "study.yaml").read_text())
    assert [s["name"] for s in stored["specifications"]["list"]] == ["adam", "sgd"]
    assert isinstance(trials, pd.DataFrame)


def test_lr_search_per_specification_runs_on_search_seeds_and_records_every_trial(tmp_path):
    doc = {**BASE, "name": "specs-lrs",
           "specifications": {"reference": "adam", "list": [{"name": "sgd", "set": {"train.optimizer": "sgd"}}]},
           "search": {"model.activation": ["selu"], "train.seed": [0]},
           "train": {**BASE["train"], "epochs": 3, "evals_per_epoch": 1},
           "run": {"storage_path": str(tmp_path / "ray"), "max_failures": 0,
                   "results_dir": str(tmp_path / "results")},
           "optuna": {"range": {"sgd": [1e-3, 1e-1], "adam": [1e-4, 1e-2]}, "trials_per_arm": 4, "seeds": [100, 101],
                      "metric": "best_val_acc", "mode": "max", "grace_epochs": 1, "reduction_factor": 2}}
    config = tmp_path / "lrs.yaml"
    config.write_text(yaml.safe_dump(doc))
    proc = subprocess.run([sys.executable, "-m", "study", "lr-search", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "results" / "specs-lrs" / "best_lr.yaml").read_text())
    assert best["keys"] == ["specification", "activation", "normalization"]
    rows = {r["specification"]: r for r in best["arms"]}
    assert set(rows) == {"adam", "sgd"}
    for spec, (low, high) in (("adam", (1e-4, 1e-2)), ("sgd", (1e-3, 1e-1))):
        trials = rows[spec]["trials"]
        assert len(trials) == 4 and all(low <= t["lr"] <= high for t in trials)
        assert sorted(t["seed"] for t in trials) == [100, 100, 101, 101]  # never the evaluated seed 0
        assert rows[spec]["lr"] in [t["lr"] for t in trials]
        assert all(t["stopped_early"] == (t["epochs_run"] < 3) for t in trials)
    assert {t["lr"] for t in rows["adam"]["trials"]} != {t["lr"] for t in rows["sgd"]["trials"]}
    from study.lr_file import read_lr_file

    lrs = read_lr_file(tmp_path / "results" / "specs-lrs" / "best_lr.yaml", load_study(config))
    assert lrs[("sgd", "selu", "per_image")] == rows["sgd"]["lr"]
