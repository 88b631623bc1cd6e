"""Adaptive seeds: the Searcher driven directly with simulated curves (no Ray), then two small real Tune runs
(in a driver process: tests/drivers/adaptive_tune.py)."""
import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ray.tune.search import Searcher

from study.adaptive import AdaptiveSeeds, AdaptiveSeedSearcher, mean_val_error
from study_helpers import ray_head, run_driver

SELU = {"model.activation": "selu", "model.normalization": "none"}
RELU = {"model.activation": "relu", "model.normalization": "per_image"}
SPEC = {"data": {"dataset": "synthetic", "image_size": 32}, "train": {"epochs": 2}}


def curve(cfg, rates, evals=8):
    """A synthetic validation curve: val_acc = 0.9 (1 - exp(-k epoch)), k the arm's rate times seed noise."""
    arm = cfg["model"]["activation"]
    seed = cfg["train"]["seed"]
    spec = cfg["data"].get("image_size", 32)
    rng = np.random.default_rng([seed, spec, 0 if arm == "selu" else 1])
    k = rates[(spec, arm)] * math.exp(rng.normal(0, 0.15))
    rows = []
    for step in range(1, evals + 1):
        epoch = step / (evals / 2)
        rows.append({"step": step, "epoch": epoch, "val_acc": 0.9 * (1 - math.exp(-k * epoch)),
                     "training_iteration": step, "config/train/seed": seed})
    return rows


def drive(searcher, rates, concurrency=4, order="random", until=None, start=0, seed=0):
    """A stand-in for Tune's loop: ask for trials up to `concurrency`, finish one at a time (in random
    order, so completion order differs from seed order), report its curve, repeat until FINISHED.
    Returns the number of trials run; `until` stops after that many completions (for resume tests)."""
    rng = np.random.default_rng(seed)
    running, done, finished = {}, 0, False
    ids = (f"trial{i}" for i in itertools.count(start))
    while True:
        while not finished and len(running) < concurrency:
            tid = next(ids)
            cfg = searcher.suggest(tid)
            if cfg == Searcher.FINISHED:
                finished = True
            if not isinstance(cfg, dict):
                break
            running[tid] = cfg
        if not running:
            assert finished, "the searcher waits for results while nothing runs"
            return done
        tid = list(running)[rng.integers(len(running)) if order == "random" else 0]
        cfg = running.pop(tid)
        rows = curve(cfg, rates)
        for row in rows:
            searcher.on_trial_result(tid, row)
        searcher.on_trial_complete(tid, rows[-1])
        done += 1
        if until is not None and done >= until:
            return done


CLEAR = {(32, "selu"): 2.0, (32, "relu"): 1.0, (64, "selu"): 1.0, (64, "relu"): 1.0}


def test_a_clear_effect_stops_before_max_with_the_right_verdict():
    searcher = AdaptiveSeedSearcher([SPEC], [SELU, RELU], AdaptiveSeeds(min=4, max=20),
                                    faster={"activation": "selu", "normalization": "none"},
                                    slower={"activation": "relu", "normalization": "per_image"})
    trials = drive(searcher, CLEAR)
    (s,) = searcher.summary()
    assert s["decision"]["verdict"] == "faster" and s["decision"]["high"] < 0
    assert 4 <= s["decision"]["n"] < 20 and s["status"] == "decided"
    assert trials < 2 * 20 and trials == 2 * s["seeds_launched"]
    assert searcher.suggest("another") == Searcher.FINISHED


def test_swapped_arms_say_slower_and_higher_is_faster_flips_it():
    slow = AdaptiveSeedSearcher([SPEC], [SELU, RELU], AdaptiveSeeds(), faster=1, slower=0)
    drive(slow, CLEAR)
    assert slow.summary()[0]["decision"]["verdict"] == "slower"
    accuracy = AdaptiveSeedSearcher([SPEC], [SELU, RELU], AdaptiveSeeds(), direction="higher",
                                    measure=lambda c: float(c["val_acc"].mean()))
    drive(accuracy, CLEAR)
    assert accuracy.summary()[0]["decision"]["verdict"] == "faster"


def test_a_null_runs_to_max_or_decides_equivalence():
    null = {(32, "selu"): 1.0, (32, "relu"): 1.0}
    searcher = AdaptiveSeedSearcher([SPEC], [SELU, RELU], AdaptiveSeeds(min=4, max=10))
    assert drive(searcher, null) == 20
    (s,) = searcher.summary()
    assert s["decision"] is None and s["pairs_complete"] == 10 and s["status"] == "at max"
    assert s["current"]["low"] < 0 < s["current"]["high"]
    wide = AdaptiveSeedSearcher([SPEC], [SELU, RELU], AdaptiveSeeds(min=4, max=20, margin=0.1))
    drive(wide, null)
    (e,) = wide.summary()
    assert e["decision"]["verdict"] == "equivalent" and e["decision"]["n"] < 20
    assert -0.1 < e["decision"]["low"] < e["decision"]["high"] < 0.1


def test_each_specification_stops_on_its_own():
    specs = [SPEC, {**SPEC, "data": {"dataset": "synthetic", "image_size": 64}}]
    third = {"model.activation": "selu", "model.normalization": "per_image"}
    searcher = AdaptiveSeedSearcher(specs, [SELU, RELU, third], AdaptiveSeeds(min=4, max=12), faster=SELU, slower=RELU)
    rates = {**CLEAR, (32, "selu"): 2.0}
    drive(searcher, rates, concurrency=6)
    clear, null = searcher.summary()
    assert clear["decision"]["verdict"] == "faster" and clear["pairs_complete"] < 12
    assert null["decision"] is None and null["pairs_complete"] == 12
    # every arm of a specification ran at each of its seeds (a seed pair is all arms at one seed)
    seeds = {}
    for spec, seed, arm in searcher.trials.values():
        seeds.setdefault((spec, seed), set()).add(arm)
    assert all(arms == {0, 1, 2} for arms in seeds.values())


def test_differences_are_taken_in_seed_order_not_completion_order():
    searcher = AdaptiveSeedSearcher([SPEC], [SELU, RELU], AdaptiveSeeds(min=4, max=20))
    configs = {f"t{i}": searcher.suggest(f"t{i}") for i in range(8)}  # min = 4 seeds, 2 arms each
    assert sorted({c["train"]["seed"] for c in configs.values()}) == [0, 1, 2, 3]
    assert searcher.suggest("t8") is None  # nothing more until results come back
    for tid in ("t6", "t7", "t2", "t3"):  # seeds 3 and 1 finish first
        searcher.on_trial_complete(tid, curve(configs[tid], CLEAR)[-1])
    assert searcher.differences(0) == []  # seed 0 is not in: no prefix yet
    for tid in ("t0", "t1"):
        searcher.on_trial_complete(tid, curve(configs[tid], CLEAR)[-1])
    assert len(searcher.differences(0)) == 2  # seeds 0 and 1; seed 2 is missing, so 3 waits


def test_resume_repeats_and_restarted_trials_are_not_counted_twice(tmp_path):
    searcher = AdaptiveSeedSearcher([SPEC], [SELU, RELU], AdaptiveSeeds())
    cfg = searcher.suggest("a")
    rows = curve(cfg, CLEAR)
    for row in rows[:5] + rows[3:]:  # resumed from a checkpoint after step 3: steps 4-5 reported again
        searcher.on_trial_result("a", row)
    searcher.on_trial_complete("a", rows[-1])
    assert searcher.values[(0, 0, 0)] == pytest.approx(mean_val_error(pd.DataFrame(rows)))
    other = searcher.suggest("b")
    flat = {f"config/{k}/{leaf}": v for k, sec in other.items() for leaf, v in sec.items()}
    for row in curve(other, CLEAR):  # Tune restarted it under a new id: recognised from its config
        searcher.on_trial_result("b-restarted", {**row, **flat})
    searcher.on_trial_complete("b-restarted", {**row, **flat})
    assert (0, 0, 1) in searcher.values


def test_save_and_restore_continue_as_if_uninterrupted(tmp_path):
    whole = AdaptiveSeedSearcher([SPEC], [SELU, RELU], AdaptiveSeeds(max=20))
    total = drive(whole, CLEAR, order="oldest")
    first = AdaptiveSeedSearcher([SPEC], [SELU, RELU], AdaptiveSeeds(max=20))
    done = drive(first, CLEAR, order="oldest", until=3, concurrency=1)
    first.save(str(tmp_path / "state.pkl"))
    second = AdaptiveSeedSearcher([SPEC], [SELU, RELU], AdaptiveSeeds(max=20))
    second.restore(str(tmp_path / "state.pkl"))
    rest = drive(second, CLEAR, order="oldest", start=100)
    assert second.summary()[0]["decision"] == whole.summary()[0]["decision"]
    assert done + rest == total
    wrong = AdaptiveSeedSearcher([SPEC], [RELU, SELU], AdaptiveSeeds())
    with pytest.raises(ValueError, match="other specifications or arms"):
        wrong.restore(str(tmp_path / "state.pkl"))


def test_the_saved_searcher_is_found_in_an_experiment_given_by_uri(tmp_path):
    """A study in object storage: Searcher.restore_from_dir globs a local folder, so the searcher-state files
    are copied out of the URI's experiment first (a file:// URI here, through pyarrow.fs as S3 is)."""
    from study.adaptive import _searcher_files

    searcher = AdaptiveSeedSearcher([SPEC], [SELU, RELU], AdaptiveSeeds(max=20))
    drive(searcher, CLEAR, order="oldest", until=3, concurrency=1)
    exp = tmp_path / "exp"
    exp.mkdir()
    searcher.save(str(exp / Searcher.CKPT_FILE_TMPL.format("2026-12-02_05-00-00")))
    (exp / "experiment_state-2026-12-02_05-00-00.json").write_text("{}")
    with _searcher_files(f"file://{exp}") as folder:
        assert folder != str(exp)
        assert sorted(p.name for p in Path(folder).iterdir()) == ["searcher-state-2026-12-02_05-00-00.pkl"]
        again = AdaptiveSeedSearcher([SPEC], [SELU, RELU], AdaptiveSeeds(max=20))
        again.restore_from_dir(folder)
    assert again.summary() == searcher.summary()
    with _searcher_files(f"file://{tmp_path / 'not-yet'}") as folder:
        assert list(Path(folder).iterdir()) == []
    with _searcher_files(str(exp)) as folder:  # a local experiment is read in place
        assert folder == str(exp)


def test_an_errored_compared_trial_drops_its_seed_and_a_new_one_replaces_it():
    searcher = AdaptiveSeedSearcher([SPEC], [SELU, RELU], AdaptiveSeeds(min=4, max=20))
    configs = {f"t{i}": searcher.suggest(f"t{i}") for i in range(8)}
    searcher.on_trial_complete("t0", None, error=True)  # seed 0's selu trial crashed
    assert searcher.failed[0] == {0}
    new = [searcher.suggest(f"n{i}") for i in range(2)]
    assert {c["train"]["seed"] for c in new} == {4}
    for tid in list(configs)[1:]:
        searcher.on_trial_complete(tid, curve(configs[tid], CLEAR)[-1])
    assert len(searcher.differences(0)) == 3  # seeds 1, 2, 3


@pytest.mark.parametrize("raw, word", [({"mn": 3}, "search.seeds.adaptive.mn"), ({"min": 8, "max": 4}, "min <= max"),
                                       ({"method": "betting"}, "bound"), ({"alpha": 2.0}, "alpha"),
                                       ({"margin": -1}, "margin")])
def test_bad_adaptive_settings_are_refused_with_their_key(raw, word):
    with pytest.raises(ValueError, match=word):
        AdaptiveSeeds.from_dict(raw)


def test_settings_from_the_config_form():
    a = AdaptiveSeeds.from_dict({"min": 4, "max": 20, "margin": 0.02})
    assert (a.min, a.max, a.margin, a.alpha, a.method) == (4, 20, 0.02, 0.05, "t")
    assert list(a.seeds())[:3] == [0, 1, 2]
    with pytest.raises(ValueError, match="matches 0"):
        AdaptiveSeedSearcher([SPEC], [SELU, RELU], faster={"activation": "gelu"})


# -- real Tune runs, each in a driver of its own (tests/drivers/adaptive_tune.py) ------------------------
@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local Ray for this module's two Tune runs, held by a child process (this one never starts Ray);
    the environment of a driver that joins it."""
    with ray_head(tmp_path_factory.mktemp("ray-head") / "head.log", num_cpus=2) as env:
        yield env


@pytest.mark.slow
def test_a_real_tune_run_stops_before_max_with_the_right_verdict(local_ray, tmp_path):
    grid = run_driver("adaptive_tune", tmp_path, "stops", tmp_path, env=local_ray)  # the synthetic trainable
    assert not grid["errors"]
    # what Tune saved of the searcher, read back as `Tuner.restore` would
    saved = AdaptiveSeedSearcher([SPEC], [SELU, RELU], AdaptiveSeeds(min=4, max=20))
    saved.restore_from_dir(str(tmp_path / "adaptive"))
    (s,) = saved.summary()
    assert s["decision"]["verdict"] == "faster" and s["decision"]["n"] < 20
    assert len(grid["configs"]) == 2 * s["seeds_launched"] < 2 * 20
    seeds = sorted({config["train"]["seed"] for config in grid["configs"]})
    assert seeds == list(range(len(seeds)))


@pytest.mark.slow
def test_tuner_restore_continues_the_adaptive_study(local_ray, tmp_path):
    """The driver's trainable interrupts it as Ctrl-C would once seed 2 has run (while `armed` exists); its
    experiment as the interruption left it is copied to adaptive-early, then `Tuner.restore` goes on."""
    armed = tmp_path / "armed"
    armed.touch()
    grid = run_driver("adaptive_tune", tmp_path, "interrupted", tmp_path, env=local_ray)
    assert not armed.exists()
    early = AdaptiveSeedSearcher([SPEC], [SELU, RELU], AdaptiveSeeds(min=4, max=20, ahead=1))
    early.restore_from_dir(str(tmp_path / "adaptive-early"))
    assert early.summary()[0]["decision"] is None  # interrupted before the answer was in
    final = AdaptiveSeedSearcher([SPEC], [SELU, RELU], AdaptiveSeeds(min=4, max=20, ahead=1))
    final.restore_from_dir(str(tmp_path / "adaptive"))
    (s,) = final.summary()
    assert s["decision"]["verdict"] == "faster" and s["decision"]["n"] < 20
    pairs = [(config["train"]["seed"], config["model"]["activation"]) for config in grid["configs"]]
    assert len(pairs) == len(set(pairs)) == 2 * s["seeds_launched"]  # no seed given out twice
    assert sorted({seed for seed, _ in pairs}) == list(range(s["seeds_launched"]))
    print(f"adaptive run: interrupted at {early.summary()[0]['pairs_complete']} pairs, resumed, decided "
          f"{s['decision']['verdict']} at {s['decision']['n']} pairs, {len(pairs)} trials")
