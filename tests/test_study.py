"""The study on a real local Ray cluster: the grid end to end, report, failures, an lr search, an image-size axis.

Each test runs its study as a user does, `hwr-study` in a child process, or through a small driver script
(tests/drivers/) where it needs what the run holds in Python; all of them join one local Ray per module,
held by a child process. This process never starts Ray (issue 17, tests/leaks.py).
"""

from __future__ import annotations

import pandas as pd
import pytest

from hwr.config import ConfigError
from hwr.train import CHECKPOINT_FILE, load_checkpoint

from study.cli import analyze
from study.config import load_study
from study.run import experiment_path

from study_helpers import epochs_of, hwr_study, ray_head, run_driver, succeeded, trial_dirs, write_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """The environment of a driver that joins this module's local Ray (2 CPUs, no GPU)."""
    with ray_head(tmp_path_factory.mktemp("ray-head") / "head.log", num_cpus=2, num_gpus=0) as env:
        yield env


def test_quick_study_end_to_end(local_ray, tmp_path):
    """configs/quick.yaml through Tune: one trial per grid point, full histories, TensorBoard logs, report."""
    sets = [f"run.storage_path={tmp_path / 'ray'}", "train.epochs=3", "train.evals_per_epoch=1",
            "search.train.seed=[0, 1]", f"run.results_dir={tmp_path / 'res'}"]
    study = load_study("configs/quick.yaml", sets)
    assert study.num_trials == 8
    run = succeeded(hwr_study("run", "configs/quick.yaml", *(a for s in sets for a in ("--set", s)), env=local_ray))
    assert "snapshotting has been triggered" not in run.stdout + run.stderr  # no snapshot forced by checkpoints
    path = experiment_path(study)
    dirs = trial_dirs(tmp_path / "ray" / "quick")
    assert len(dirs) == study.num_trials
    for d in dirs:
        assert epochs_of(d) == [1, 2, 3]
        assert list(d.glob("events.out.tfevents*")), f"no TensorBoard log in {d.name}"
        assert b"model/activation" in next(d.glob("events.out.tfevents*")).read_bytes()  # hparams
        # a trial this short writes only its final checkpoint: the outcome and float16 weights, nothing to resume
        (checkpoint,) = d.glob("checkpoint_*")
        state = load_checkpoint(checkpoint / CHECKPOINT_FILE)
        assert state["final"] and state["optimizer"] is None and state["best"] is None
        assert len(state["history"]) == 3 and state["best_test"] is not None
    configs = {(c.model.activation, c.model.normalization, c.train.seed) for c in study.trial_configs()}
    out = tmp_path / "res" / "quick"  # the report `hwr-study run` wrote
    trials = pd.read_csv(out / "trials.csv")
    assert set(zip(trials.activation, trials.normalization, trials.seed)) == configs
    assert (trials.status == "TERMINATED").all() and trials.test_acc.between(0, 1).all()
    epochs = pd.read_csv(out / "epochs.csv")
    assert len(epochs) == 8 * 3
    for name in ("summary.json", "report.md", "report.html", "figures/val_loss.png", "figures/val_acc.png",
                 "figures/epochs_to_target.png", "figures/test_acc.png"):
        assert (out / name).stat().st_size > 0, name
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<img src=\"figures" not in html
    # analyze again (here): identical tables
    first = {n: (out / n).read_bytes() for n in ("trials.csv", "epochs.csv", "summary.json")}
    analyze(path, str(out))
    assert first == {n: (out / n).read_bytes() for n in first}


def test_gpus_asked_on_a_cpu_cluster_fail_at_once(local_ray, tmp_path):
    config = write_study(tmp_path, resources={"cpu": 1, "gpu": 0.25})
    run = run_driver("timed_cli", tmp_path, "run", config, env=local_ray)
    assert run["rc"] == 2 and "no GPUs" in run["stderr"]  # a StudyError: exit 2
    assert run["seconds"] < 30


def test_a_trial_that_diverges_ends_as_diverged_not_as_an_error(local_ray, tmp_path):
    config = write_study(tmp_path, "div", seeds=(0,), activations=("relu",),
                         train={"optimizer": "sgd", "lr": 1e12, "epochs": 4})
    succeeded(hwr_study("run", config, env=local_ray))
    trials = pd.read_csv(tmp_path / "results" / "div" / "trials.csv")
    assert trials.status.tolist() == ["TERMINATED"] and trials.diverged.tolist() == [True]


def test_another_config_on_the_same_experiment_is_refused(local_ray, tmp_path):
    first = write_study(tmp_path, "same", seeds=(0,), activations=("relu",), epochs=1)
    succeeded(hwr_study("run", first, "--no-analyze", env=local_ray))
    changed = write_study(tmp_path, "same", seeds=(0, 1), activations=("relu",), epochs=1)
    refused = hwr_study("run", changed, "--no-analyze", env=local_ray)
    assert refused.returncode == 2 and "another config" in refused.stderr  # a StudyError
    assert experiment_path(load_study(changed)).endswith("/same")


def test_lr_search_per_arm_then_grid_at_each_arms_lr(local_ray, tmp_path):
    import yaml

    config = write_study(tmp_path, "lrs", seeds=(0,), epochs=2,
                         optuna={"low": 1e-4, "high": 1e-1, "trials_per_arm": 3, "metric": "best_val_acc",
                                 "mode": "max", "seed": 0})
    succeeded(hwr_study("lr-search", config, env=local_ray))
    best = tmp_path / "results" / "lrs" / "best_lr.yaml"  # where `hwr-study lr-search` writes it
    doc = yaml.safe_load(best.read_text())
    arms = {(a["activation"], a["normalization"]): a["lr"] for a in doc["arms"]}
    assert set(arms) == {("relu", "per_image"), ("selu", "per_image")}
    assert all(1e-4 <= lr <= 1e-1 for lr in arms.values())
    for arm in doc["arms"]:  # each arm's experiment ran its Optuna budget
        assert len(trial_dirs(tmp_path / "ray" / f"lrs-{arm['activation']}-{arm['normalization']}")) == 3

    succeeded(hwr_study("run", write_study(tmp_path, "tuned", seeds=(0, 1), epochs=1), "--lr-from", best,
                        env=local_ray))
    trials = pd.read_csv(tmp_path / "results" / "tuned" / "trials.csv")
    for row in trials.itertuples():
        assert row.lr == pytest.approx(arms[(row.activation, row.normalization)])


def test_the_driver_does_not_import_torchvision():
    """torchvision's import costs over a second (it loads torch._dynamo); a study's driver never builds a model."""
    import subprocess
    import sys

    code = "import sys, study.run; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("run, named", [({"checkpoint_every": -1}, "checkpoint_every"),
                                        ({"checkpoint_seconds": -5}, "checkpoint_seconds"),
                                        ({"keep_best": "yes"}, "run.keep_best"),
                                        ({"checkpoint_evry": 2}, "run.checkpoint_evry")])
def test_checkpoint_settings_are_checked(tmp_path, run, named):
    with pytest.raises(ConfigError, match=named) as err:
        load_study(write_study(tmp_path, run=run))
    assert len(str(err.value).splitlines()) == 1


def test_checkpoint_settings_reach_the_trainable(tmp_path):
    from study.run import checkpoint_policy

    study = load_study(write_study(tmp_path, run={"checkpoint_every": 5, "checkpoint_seconds": 0, "keep_best": True}))
    policy = checkpoint_policy(study)
    assert (policy.every, policy.seconds, policy.keep_best) == (5, 0.0, True)
    default = checkpoint_policy(load_study(write_study(tmp_path, "d")))
    assert (default.every, default.seconds, default.keep_best) == (1, 60.0, False)


def test_a_data_image_size_axis_gives_each_trial_its_own_data_and_frozen_set(local_ray, tmp_path):
    """`data.image_size` as a grid axis: each trial trains on its own size, each size has its own frozen set."""
    import json

    from hwr.model import frozen_shape
    from study.trainable import data_key

    config = write_study(tmp_path, "sizes", seeds=(0,), activations=("relu",), epochs=1,
                         model={"weights": "none", "base_seed": 0, "trainable_from": "block5"})
    study = load_study(config, ["search.data.image_size=[32, 64]"])
    assert [c.data.image_size for c in study.trial_configs()] == [32, 64]
    # the study's data, its frozen sets read back from the object store, then the study (the driver's own axis)
    run = run_driver("image_size_axis", tmp_path, config, env=local_ray)
    sizes = run["data_sizes"]  # {data key: image side} of what the driver loaded
    assert sorted(sizes.values()) == [32, 64]
    shapes = sorted(tuple(shape) for shape in run["feature_shapes"])
    assert shapes == [(512, 2, 2), (512, 4, 4)] == [frozen_shape("block5", 32), frozen_shape("block5", 64)]
    for cfg in study.trial_configs():
        assert sizes[data_key(cfg.data)] == cfg.data.image_size

    path = run["path"]
    dirs = trial_dirs(tmp_path / "ray" / "sizes")
    assert len(dirs) == 2
    seen = []
    for d in dirs:
        size = json.loads((d / "params.json").read_text())["data"]["image_size"]
        state = load_checkpoint(next(d.glob("checkpoint_*")) / CHECKPOINT_FILE)
        assert state["config"]["data"]["image_size"] == size
        first_linear = next(v for k, v in state["model"].items() if k.startswith("head.") and v.ndim == 2)
        assert first_linear.shape[1] == 512 * (size // 32) ** 2  # the head was built for, and fed, its own size
        seen.append(size)
    assert sorted(seen) == [32, 64] and path.endswith("sizes")


def test_errored_trials_end_the_study_with_an_error_naming_them(local_ray, tmp_path):
    """Every trial raises (tests/drivers/broken_trials.py): run_study's error, then `hwr-study run`'s exit codes."""
    config = write_study(tmp_path, "broken", seeds=(0, 1), activations=("relu",), epochs=1,
                         run={"storage_path": str(tmp_path / "ray"), "max_failures": 0})
    run = run_driver("broken_trials", tmp_path, config, env=local_ray)
    assert run["raised"]["type"] == "TrialsErrored"
    message = run["raised"]["message"]
    assert message.startswith("2 trial(s) of ") and "RuntimeError: broken on purpose at seed 0" in message
    assert "RuntimeError: broken on purpose at seed 1" in message and "\n" not in message
    allow_errors, fresh = run["codes"]
    assert allow_errors == 0 and fresh == 1
