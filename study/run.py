"""Launch, resume or restart a study with Ray Tune.

    hwr-study run configs/factorial.yaml [--set train.epochs=4] [--fresh] [--lr-from best_lr.yaml]

The same command works on a laptop, a machine with several GPUs, or a cluster through
`ray job submit -- python -m study run ...`: it connects to a running cluster when there is one
(`ray.init(address="auto")` semantics via RAY_ADDRESS) and starts a local one otherwise.
"""

from __future__ import annotations

import functools
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs
import ray
import ray.tune
import yaml
from ray.tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig, Tuner
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from hwr.config import NAMED_BASES, ConfigError, config_from_dict
from hwr.features import frozen_features, frozen_key, frozen_nbytes, load_cached
from hwr.model import build_model
from hwr.pretrain import ensure_base
from hwr.train import CheckpointPolicy, TrainingData, load_data, pick_device
from study.config import StudyConfig
from study.state import TUNER_PKL, StateError, finished, fs_and_path, lock, resumable, tuner_pkl_ok
from study.trainable import LAST_KEY, train_trial

log = logging.getLogger("study")
STUDY_FILE = "study.yaml"
# Frozen activations are put in the object store up to this share of its capacity; beyond it each trial
# computes (and disk-caches) its own.
OBJECT_STORE_SHARE = 0.5


class StudyError(RuntimeError):
    """The study cannot run as configured, explained in one sentence."""


def experiment_path(study: StudyConfig) -> str:
    """storage_path/name; a relative local storage path is taken from the current directory."""
    storage = study.run.storage_path
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    return f"{storage.rstrip('/')}/{study.name}"


def param_space(study: StudyConfig, lr_by_arm: dict[tuple, float] | None = None) -> dict[str, Any]:
    """hwr's nested config with one `tune.grid_search` per search axis (and per-arm lrs, if given)."""
    space: dict[str, Any] = {s: dict(v) for s, v in study.base.items()}
    for axis, values in study.search.items():
        keys = axis.split(",")
        if len(keys) == 1:
            _set(space, axis, ray.tune.grid_search(list(values)))
            continue
        # A zipped axis: grid over the first key; the others follow it.
        _set(space, keys[0], ray.tune.grid_search([v[0] for v in values]))
        for i, key in enumerate(keys[1:], 1):
            follow = {v[0]: v[i] for v in values}
            _set(space, key, ray.tune.sample_from(functools.partial(_follow, keys[0], follow)))
    if lr_by_arm:
        space["train"]["lr"] = ray.tune.sample_from(functools.partial(_arm_lr, lr_by_arm))
    return space


def _set(space: dict[str, Any], key: str, value: Any) -> None:
    section, leaf = key.split(".", 1)
    space[section][leaf] = value


def _follow(leader: str, mapping: dict, spec) -> Any:
    """The value a zipped axis pairs with the leader key's value in this trial."""
    section, leaf = leader.split(".", 1)
    return mapping[spec.config[section][leaf]]


def _arm_lr(lr_by_arm: dict[tuple, float], spec) -> float:
    """The tuned lr of the trial's (activation, normalization) arm."""
    arm = (spec.config.model.activation, spec.config.model.normalization)
    return lr_by_arm[arm]


def read_lr_file(path: str | Path, study: StudyConfig) -> dict[tuple, float]:
    """best-lr file written by `hwr-study lr-search`: {arms: [{activation, normalization, lr}, ...]}."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
        lrs = {(a["activation"], a["normalization"]): float(a["lr"]) for a in raw["arms"]}
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        raise ConfigError(f"--lr-from file {path} is not a best-lr file written by `hwr-study lr-search`.") from None
    for cfg in study.trial_configs():
        arm = (cfg.model.activation, cfg.model.normalization)
        if arm not in lrs:
            raise ConfigError(f"--lr-from file {path} has no lr for the arm {arm[0]}+{arm[1]}.")
    return lrs


def check_cluster(study: StudyConfig) -> None:
    """Fail at once, with a reason, where Tune would leave trials pending forever."""
    total = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n["Alive"]]
    gpus = total.get("GPU", 0)
    if study.resources.gpu > 0 and gpus == 0:
        raise StudyError(
            f"resources.gpu is {study.resources.gpu} but this Ray cluster has no GPUs; "
            "set resources.gpu=0 to run on CPUs.")
    if study.resources.gpu > max((n["Resources"].get("GPU", 0) for n in nodes), default=0):
        raise StudyError(f"resources.gpu is {study.resources.gpu}, more than any node of this cluster has.")
    if study.resources.cpu > max(n["Resources"].get("CPU", 0) for n in nodes):
        raise StudyError(f"resources.cpu is {study.resources.cpu}, more than any node of this cluster has.")


def check_storage_shared(path: str) -> None:
    """On a multi-node cluster, every node must see storage_path: write a marker, look for it everywhere."""
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2 or "://" in path:
        return
    Path(path).mkdir(parents=True, exist_ok=True)
    marker = Path(path) / f".shared-check-{uuid.uuid4().hex}"
    marker.touch()
    try:
        sees = ray.remote(num_cpus=0)(os.path.exists)
        found = ray.get([
            sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                str(marker))
            for n in nodes
        ])
    finally:
        marker.unlink(missing_ok=True)
    blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, found) if not ok]
    if blind:
        raise StudyError(
            f"run.storage_path {path} is not visible from node(s) {', '.join(blind)}; on a cluster use "
            "storage every node sees (NFS, or an s3:// or gs:// URI).")


@ray.remote
def _frozen_task(config: dict[str, Any], data: TrainingData, key: str) -> np.ndarray | None:
    """One frozen part's activations for all images, on this task's GPU if it has one (disk-cached there)."""
    cfg = config_from_dict(config, where="trial config")
    device = pick_device()
    cached = load_cached(key, device.type)
    if cached is not None:  # this node computed the set before: no model to build
        return cached
    model = build_model(cfg.model, cfg.data.image_size, seed=cfg.train.seed).to(device)
    z = frozen_features(model, data.images, key, device)
    return None if z is None else np.ascontiguousarray(z.numpy())


def ensure_bases(study: StudyConfig) -> None:
    """The conv bases pretrained here that the study names (`model.weights: glyphs`) are built by the
    driver, once, before any task or trial loads one (on this node they then come from its cache)."""
    for name in sorted({cfg.model.weights for cfg in study.trial_configs()} & set(NAMED_BASES)):
        ensure_base(name)


def shared_features(study: StudyConfig, data: TrainingData) -> dict[str, ray.ObjectRef]:
    """Each distinct frozen part's activations, computed once by a Ray task with a trial's resources (a
    share of a GPU when the config gives trials one); its result stays in the object store, where every
    trial that needs it reads it."""
    ensure_bases(study)
    seen: dict[str, Any] = {}
    for cfg in study.trial_configs():
        key = frozen_key(cfg, data.key)
        if key is not None and key not in seen:
            seen[key] = cfg
    if not seen:
        return {}
    first = next(iter(seen.values()))
    per_key = frozen_nbytes(first.model.trainable_from, len(data.images), data.images.shape[-1])
    capacity = ray.available_resources().get("object_store_memory", 0)
    if per_key * len(seen) > OBJECT_STORE_SHARE * capacity:
        log.warning("frozen activations (%d x %.1f GB) exceed the object store's share; trials compute their own",
                    len(seen), per_key / 1e9)
        return {}
    resources = trial_resources(study)
    refs = {}
    for key in seen:  # sets this machine already holds go straight from its disk cache
        cached = load_cached(key, "cuda" if resources["gpu"] else "cpu")
        if cached is not None:
            refs[key] = ray.put(cached)
    missing = {k: c for k, c in seen.items() if k not in refs}
    if missing:
        print(f"Computing {len(missing)} frozen feature set(s) of {per_key / 1e6:.0f} MB each on "
              f"{'GPUs' if resources['gpu'] else 'CPUs'}.", flush=True)
        data_ref = ray.put(data)
        task = _frozen_task.options(num_cpus=resources["cpu"], num_gpus=resources["gpu"])
        refs.update({key: task.remote(cfg.to_dict(), data_ref, key) for key, cfg in missing.items()})
    # Wait here, before any trial holds resources the tasks need; the results stay in the object store.
    pending = list(refs.values())
    while pending:
        _, pending = ray.wait(pending, num_returns=1)
        print(f"frozen features ready: {len(refs) - len(pending)}/{len(refs)}", flush=True)
    return refs


def checkpoint_policy(study: StudyConfig) -> CheckpointPolicy:
    run = study.run
    return CheckpointPolicy(every=run.checkpoint_every, seconds=run.checkpoint_seconds, keep_best=run.keep_best)


def make_trainable(study: StudyConfig, data: TrainingData, features: dict[str, ray.ObjectRef]):
    trainable = ray.tune.with_parameters(train_trial, data=data, features=features, policy=checkpoint_policy(study))
    return ray.tune.with_resources(trainable, trial_resources(study))


def trial_resources(study: StudyConfig) -> dict[str, float]:
    """What each trial, and each frozen-feature task, asks Ray for: the config's `resources`."""
    return {"cpu": study.resources.cpu, "gpu": study.resources.gpu}


def run_config(study: StudyConfig) -> RunConfig:
    storage = study.run.storage_path
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    return RunConfig(
        name=study.name,
        storage_path=storage,
        failure_config=FailureConfig(max_failures=study.run.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=study.run.keep_checkpoints),
        callbacks=[CSVLoggerCallback(), JsonLoggerCallback(), TBXLoggerCallback()],
    )


def _stored_study(path: str) -> dict[str, Any] | None:
    fs, p = fs_and_path(path)
    info = fs.get_file_info(f"{p}/{STUDY_FILE}")
    if info.type == pyarrow.fs.FileType.NotFound:
        return None
    try:
        with fs.open_input_stream(f"{p}/{STUDY_FILE}") as f:
            doc = yaml.safe_load(f.read().decode())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        doc = e
    if not isinstance(doc, dict):
        raise StateError(f"{path}/{STUDY_FILE} is damaged (not the study's YAML), so this experiment cannot be "
                         "resumed: start over with `hwr-study run --fresh`.")
    return doc


def _write_study(path: str, study: StudyConfig, lr_by_arm: dict | None) -> None:
    fs, p = fs_and_path(path)
    fs.create_dir(p, recursive=True)
    doc = {**study.to_dict(), "lr_by_arm": _lr_doc(lr_by_arm)}
    with fs.open_output_stream(f"{p}/{STUDY_FILE}") as f:
        f.write(yaml.safe_dump(doc, sort_keys=False).encode())


def _lr_doc(lr_by_arm: dict | None) -> list | None:
    if not lr_by_arm:
        return None
    return [{"activation": a, "normalization": n, "lr": lr} for (a, n), lr in sorted(lr_by_arm.items())]


def delete_experiment(path: str) -> None:
    fs, p = fs_and_path(path)
    if fs.get_file_info(p).type != pyarrow.fs.FileType.NotFound:
        fs.delete_dir(p)


def init_ray() -> None:
    """Join the cluster named by RAY_ADDRESS (as `ray job submit` sets it), else start a local one."""
    if ray.is_initialized():
        return
    ray.init(address=os.environ.get("RAY_ADDRESS"), logging_level=logging.WARNING)


def run_study(study: StudyConfig, *, fresh: bool = False, lr_by_arm: dict | None = None,
              progress: bool = True) -> str:
    """Run (or resume) the study's grid; returns the experiment path.

    One driver per experiment (`study.state.lock`); a damaged experiment is refused before Ray starts
    (`study.state.resumable`); Ctrl-C ends in KeyboardInterrupt once Tune has saved its state.
    """
    path = experiment_path(study)
    with lock(path):
        if fresh:
            delete_experiment(path)
        stored = _stored_study(path)
        current = {**study.to_dict(), "lr_by_arm": _lr_doc(lr_by_arm)}
        if stored is not None and _comparable(stored) != _comparable(current):
            raise StudyError(
                f"{path} holds the experiment of another config; pass --fresh to start over or choose another name.")
        resume = resumable(path)  # StateError naming the damaged file, before Ray starts
        if resume and stored is None:
            raise StateError(f"{path} holds Tune state but no {STUDY_FILE} saying which study it is: start over "
                             "with `hwr-study run --fresh`.")

        init_ray()
        check_cluster(study)
        check_storage_shared(str(Path(path).parent) if "://" not in path else path)
        base = study.trial_configs()[0]
        data = load_data(base.data, progress=progress)
        features = shared_features(study, data)
        trainable = make_trainable(study, data, features)
        space = param_space(study, lr_by_arm)

        def new_tuner() -> Tuner:  # writes tuner.pkl into the experiment folder
            return Tuner(trainable, param_space=space, tune_config=TuneConfig(metric="val_acc", mode="max",
                                                                            reuse_actors=True),
                         run_config=run_config(study))

        if resume:
            if not tuner_pkl_ok(path):  # a driver killed while Tune wrote it (ray#58179)
                print(f"{path}/{TUNER_PKL} is damaged; writing it again from the study's config ({STUDY_FILE}).")
                new_tuner()
            print(f"Resuming {path}: finished trials are kept, unfinished ones continue from their checkpoints.")
            tuner = Tuner.restore(path, trainable=trainable, resume_errored=True, param_space=space)
        else:
            _write_study(path, study, lr_by_arm)
            tuner = new_tuner()
        grid = finished(tuner.fit(), len(study.trial_configs()), LAST_KEY)  # Ctrl-C: KeyboardInterrupt
    errors = [r for r in grid if r.error is not None]
    print(f"Study {study.name}: {len(grid)} trials, {len(errors)} errored; experiment in {path}")
    return path


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """What must match to resume: the grid and the trial config (not resources, analysis or run knobs)."""
    keep = {k: doc.get(k) for k in ("name", "data", "model", "train", "search", "lr_by_arm")}
    return yaml.safe_load(yaml.safe_dump(keep))


__all__ = ["StudyError", "experiment_path", "param_space", "read_lr_file", "run_study"]
