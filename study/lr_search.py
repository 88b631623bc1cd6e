"""Per-arm learning-rate search with Optuna (`configs/lr-search.yaml`).

lr is a nuisance hyper-parameter: each (activation, normalization) arm is compared at its own best lr.
For every arm this runs one Tune experiment, `OptunaSearch` (seeded TPE) over a log-uniform lr range with
`optuna.trials_per_arm` trials, and writes the winners to `results/<name>/best_lr.yaml`, which
`hwr-study run CONFIG --lr-from results/<name>/best_lr.yaml` takes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ray.tune
import yaml
from ray.tune import TuneConfig, Tuner
from ray.tune.search.optuna import OptunaSearch

from hwr.config import ConfigError, get_key, set_key
from hwr.files import atomic_write
from study import grid
from study.config import StudyConfig
from study.run import check_cluster, delete_experiment, experiment_path, init_ray, load_study_data, make_trainable, \
    run_config, shared_features
from study.state import finished, lock, resumable, shown_path
from study.trainable import LAST_KEY


def arms(study: StudyConfig) -> list[dict[str, object]]:
    """The distinct values of the arm keys across the grid, in grid order: {arm key: value}."""
    keys = study.arm_keys
    return [dict(zip(keys, arm)) for arm in grid.arm_groups([c.to_dict() for c in study.trial_configs()], keys)]


def arm_space(study: StudyConfig, arm: dict[str, object]) -> dict:
    """The study's first grid point with the arm's values fixed and the tuned key log-uniform."""
    opt = study.optuna
    space = grid.apply_point(study.base, grid.grid_points(study.axes)[0])  # every other axis at its first value
    for key, value in arm.items():
        set_key(space, key, value)
    set_key(space, opt.param, ray.tune.loguniform(opt.low, opt.high))
    return space


def lr_search(study: StudyConfig, *, fresh: bool = False, out: Path | None = None) -> Path:
    """Run the search for every arm; write and return the best-lr file."""
    if study.optuna is None:
        raise ConfigError(f"{study.source} has no optuna section; lr-search needs one (see configs/lr-search.yaml).")
    opt = study.optuna
    data = load_study_data(study)
    init_ray()
    check_cluster(study)
    trainable = make_trainable(study, data, shared_features(study, data))
    rows = []
    for arm in arms(study):
        label = "-".join(str(v) for v in arm.values())
        name = f"{study.name}-{label}"
        run = dataclasses.replace(run_config(study), name=name)
        path = f"{experiment_path(study).rsplit('/', 1)[0]}/{name}"
        with lock(path):  # one driver per experiment; a damaged state is refused, not started over beside
            if fresh:
                delete_experiment(path)
            if resumable(path):
                tuner = Tuner.restore(path, trainable=trainable, resume_errored=True)
            else:
                search = OptunaSearch(metric=opt.metric, mode=opt.mode, seed=opt.seed)
                tuner = Tuner(trainable, param_space=arm_space(study, arm), run_config=run,
                              tune_config=TuneConfig(search_alg=search, num_samples=opt.trials_per_arm,
                                                     metric=opt.metric, mode=opt.mode, reuse_actors=True))
            grid = finished(tuner.fit(), opt.trials_per_arm, LAST_KEY)  # Ctrl-C: no best-lr file from a part
        best = grid.get_best_result(metric=opt.metric, mode=opt.mode, scope="last")
        rows.append({**{k.rsplit(".", 1)[-1]: v for k, v in arm.items()},
                     "lr": float(get_key(best.config, opt.param)), opt.metric: float(best.metrics[opt.metric]),
                     "experiment": shown_path(path)})
        print(f"arm {label}: best {opt.param} = {rows[-1]['lr']:.3g} ({opt.metric} {rows[-1][opt.metric]:.4f})")
    out = out or Path(study.run.results_dir) / study.name / "best_lr.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"study": study.name, "param": opt.param, "metric": opt.metric, "mode": opt.mode, "arms": rows}
    atomic_write(out, lambda f: f.write(yaml.safe_dump(doc, sort_keys=False).encode()))
    print(f"best learning rates written to {out}")
    return out
