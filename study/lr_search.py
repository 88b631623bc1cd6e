"""Learning-rate search per (specification, arm) with Optuna and ASHA (`configs/lr-search.yaml`,
`configs/multiverse.yaml`).

lr is a nuisance hyper-parameter: each arm of each specification is compared at its own best lr. For every
group (study.lr_file.lr_groups: the specification, if any, and the arm keys' values) this runs one Tune
experiment: `OptunaSearch` (TPE) over a log-uniform range (`optuna.range` for the group's optimizer, else
[low, high]) with `optuna.trials_per_arm` trials, each on one of `optuna.seeds` in turn (`SeedCycle`; seeds
the study never evaluates, checked by study.config), the sampler seeded per group (`sampler_seed`: no two
groups draw the same lrs), and `ASHAScheduler` (with `optuna.early_stopping`) stopping the worse trials at
epochs grace_epochs * reduction_factor**k. It writes the winners, with every search trial's (lr, seed,
metric, epochs run), to `results/<name>/best_lr.yaml` (study.lr_file), which
`hwr-study run CONFIG --lr-from results/<name>/best_lr.yaml` takes.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from pathlib import Path
from typing import Any

import ray.tune
import yaml
from ray.tune import TuneConfig, Tuner
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from hwr.config import ConfigError, config_from_dict, get_key, set_key
from hwr.files import atomic_write
from study.config import StudyConfig
from study.lr_file import leaf, lr_groups
from study.run import check_cluster, delete_experiment, experiment_path, init_ray, load_study_data, make_trainable, \
    run_config, shared_bases, shared_features
from study.specs import hwr_sections
from study.lease import lock
from study.state import repair_lost_checkpoints, resumable, shown_path
from study.state import LAST_KEY


class SeedCycle(Searcher):
    """A searcher's suggestions, each with `key` set to the next of `seeds` in turn (the seed is not searched)."""

    def __init__(self, searcher: Searcher, key: str, seeds: tuple[int, ...]) -> None:
        self.searcher, self.key, self.seeds, self.count = searcher, key, tuple(seeds), 0
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | None:
        config = self.searcher.suggest(trial_id)
        if isinstance(config, dict):
            set_key(config, self.key, self.seeds[self.count % len(self.seeds)])
            self.count += 1
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def get_state(self) -> dict:  # Tune saves a wrapper's state beside the inner searcher's (as ConcurrencyLimiter)
        return {"key": self.key, "seeds": self.seeds, "count": self.count}

    def set_state(self, state: dict) -> None:
        self.key, self.seeds, self.count = state["key"], tuple(state["seeds"]), int(state["count"])

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


def group_label(group: tuple[Any, ...]) -> str:
    return "-".join(str(v) for v in group)


def sampler_seed(base: int, group: tuple[Any, ...]) -> int:
    """The TPE sampler's seed of one group: `optuna.seed` mixed with a stable hash of the group's name (not
    its position, so adding a specification leaves the others' draws as they were)."""
    return (base * 1_000_003 + zlib.crc32(group_label(group).encode())) % 2**31


def groups(study: StudyConfig) -> list[dict[str, Any]]:
    """Each lr group as {lr key: value}, in grid order (arms without specifications)."""
    return [dict(zip(study.lr_keys, g)) for g in lr_groups(study)]


arms = groups  # the name before specifications


def group_space(study: StudyConfig, group: dict[str, Any]) -> dict:
    """The group's first grid point (every other axis at its value there), the tuned key log-uniform over the
    range of the group's optimizer and the seed the first search seed (SeedCycle moves it on)."""
    opt = study.optuna
    first = next(d for d in study.trial_dicts() if all(_value(d, k) == v for k, v in group.items()))
    space = {s: dict(v) if isinstance(v, dict) else v for s, v in first.items()}
    optimizer = config_from_dict(hwr_sections(first), study.source).train.optimizer
    set_key(space, opt.param, ray.tune.loguniform(*opt.bounds(optimizer)))
    set_key(space, "train.seed", opt.seeds[0])
    return space


arm_space = group_space


def _value(config: dict[str, Any], key: str) -> Any:
    from study.grid import arm_of

    return arm_of(config, (key,))[0]


def searcher(study: StudyConfig, group: dict[str, Any]) -> SeedCycle:
    opt = study.optuna
    search = OptunaSearch(metric=opt.metric, mode=opt.mode, seed=sampler_seed(opt.seed, tuple(group.values())))
    return SeedCycle(search, "train.seed", opt.seeds)


def scheduler(study: StudyConfig) -> ASHAScheduler | None:
    """ASHA on the fractional `epoch` each evaluation reports (metric and mode come from TuneConfig)."""
    opt = study.optuna
    if not opt.early_stopping:
        return None
    return ASHAScheduler(time_attr="epoch", max_t=_max_epochs(study), grace_period=opt.grace_epochs,
                         reduction_factor=opt.reduction_factor)


def rungs(study: StudyConfig) -> set[float]:
    """The epochs where ASHA may stop a trial (below the last epoch)."""
    opt, top = study.optuna, _max_epochs(study)
    if not opt.early_stopping:
        return set()
    n = int(math.log(top / opt.grace_epochs, opt.reduction_factor) + 1e-9) if top > opt.grace_epochs else 0
    return {float(opt.grace_epochs * opt.reduction_factor ** k) for k in range(n + 1)} - {float(top)}


def _max_epochs(study: StudyConfig) -> int:
    return max(c.train.epochs for c in study.trial_configs())


def _ended(result, stops: set[float]) -> bool:
    """Errored, reported its last epoch, or stopped by ASHA at a rung."""
    metrics = result.metrics or {}
    return result.error is not None or LAST_KEY in metrics or float(metrics.get("epoch", -1)) in stops


def lr_search(study: StudyConfig, *, fresh: bool = False, out: Path | None = None) -> Path:
    """Run the search for every (specification, arm) group; write and return the best-lr file."""
    if study.optuna is None:
        raise ConfigError(f"{study.source} has no optuna section; lr-search needs one (see configs/lr-search.yaml).")
    opt = study.optuna
    data = load_study_data(study)
    init_ray()
    check_cluster(study)
    bases = shared_bases(study)  # built once, here, and shipped to every node
    trainable = make_trainable(study, data, shared_features(study, data, bases), bases)
    stops = rungs(study)
    rows = []
    for group in groups(study):
        label = group_label(tuple(group.values()))
        name = f"{study.name}-{label}"
        run = dataclasses.replace(run_config(study), name=name)
        path = experiment_path(study, name)
        with lock(path):  # one driver per experiment; a damaged state is refused, not started over beside
            if fresh:
                delete_experiment(path)
            if resumable(path):
                for line in repair_lost_checkpoints(path):
                    print(line)
                tuner = Tuner.restore(path, trainable=trainable, resume_errored=True)
            else:
                tuner = Tuner(trainable, param_space=group_space(study, group), run_config=run,
                              tune_config=TuneConfig(search_alg=searcher(study, group), scheduler=scheduler(study),
                                                     num_samples=opt.trials_per_arm, metric=opt.metric,
                                                     mode=opt.mode, reuse_actors=True))
            grid = tuner.fit()
        if sum(_ended(r, stops) for r in grid) < opt.trials_per_arm:
            raise KeyboardInterrupt  # Tune stopped early (Ctrl-C): no best-lr file from a part
        rows.append(_row(study, group, grid, path))
        print(f"{label}: best {opt.param} = {rows[-1]['lr']:.3g} ({opt.metric} {rows[-1][opt.metric]:.4f}; "
              f"{sum(t['stopped_early'] for t in rows[-1]['trials'])} of {len(grid)} trials stopped early)")
    out = out or Path(study.run.results_dir) / study.name / "best_lr.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"study": study.name, "param": opt.param, "metric": opt.metric, "mode": opt.mode,
           "keys": [leaf(k) for k in study.lr_keys], "seeds": list(opt.seeds), "arms": rows}
    atomic_write(out, lambda f: f.write(yaml.safe_dump(doc, sort_keys=False).encode()))
    print(f"best learning rates written to {out}")
    return out


def _row(study: StudyConfig, group: dict[str, Any], grid, path: str) -> dict[str, Any]:
    """The group's best lr (among the trials that ran every epoch, if any did) and each trial's (lr, metric)."""
    opt = study.optuna
    trials = []
    for r in grid:
        if r.error is not None or not r.metrics or opt.metric not in r.metrics:
            continue
        trials.append({"lr": float(get_key(r.config, opt.param)), "seed": int(get_key(r.config, "train.seed")),
                       opt.metric: float(r.metrics[opt.metric]), "epochs_run": float(r.metrics.get("epoch", 0)),
                       "stopped_early": LAST_KEY not in r.metrics})
    if not trials:
        raise ConfigError(f"every lr-search trial of {shown_path(path)} errored; see its trial logs.")
    full = [t for t in trials if not t["stopped_early"]] or trials
    sign = 1.0 if opt.mode == "max" else -1.0  # a diverged trial's nan never wins
    best = max(full, key=lambda t: sign * t[opt.metric] if math.isfinite(t[opt.metric]) else -math.inf)
    trials.sort(key=lambda t: t["lr"])
    return {**{leaf(k): v for k, v in group.items()}, "lr": best["lr"], opt.metric: best[opt.metric],
            "experiment": shown_path(path), "trials": trials}
