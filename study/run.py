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
from typing import Any, Sequence

import numpy as np
import pyarrow.fs
import ray
import ray.tune
import yaml
from ray.tune import Callback, CheckpointConfig, FailureConfig, RunConfig, TuneConfig, Tuner
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from hwr.config import NAMED_BASES, SECTIONS, ConfigError, config_from_dict, resolved
from hwr.features import frozen_features, frozen_key, frozen_nbytes, load_cached
from hwr.model import build_model
from hwr.bases import ensure_base, provide
from hwr.checkpoint import CheckpointPolicy
from hwr.train import TrainingData, load_data, pick_device
from study import grid
from study.config import StudyConfig
from study.lr_file import lr_doc as _lr_doc
from study.lr_file import read_lr_file
from study.specs import hwr_sections
from study.lease import lock
from study.loggers import loggers
from study.state import (LAST_KEY, STUDY_FILE, TUNER_PKL, StateError, StudyError, TrialsErrored, finished,
                         fs_and_path, repair_lost_checkpoints, resumable, tuner_pkl_ok)
from study.storage import absolute, is_uri, join, shown
from study.trainable import data_key, train_trial

log = logging.getLogger("study")
# Frozen activations are put in the object store up to this share of its capacity; beyond it each trial
# computes (and disk-caches) its own.
OBJECT_STORE_SHARE = 0.5
STATUS_EVERY_S = 300.0


def storage_root(study: StudyConfig) -> str:
    """run.storage_path; a relative local one is taken from the current directory."""
    return absolute(study.run.storage_path)


def experiment_path(study: StudyConfig, name: str | None = None) -> str:
    """storage_path/name (before a URI's query string)."""
    return join(storage_root(study), name or study.name)


def param_space(study: StudyConfig, lr_by_arm: dict[tuple, float] | None = None) -> dict[str, Any]:
    """hwr's nested config with one `tune.grid_search` per search axis (and per-arm lrs, if given); with
    adaptive seeds, plain values only: the searcher's suggestions set the rest (lrs included)."""
    if study.adaptive is not None:
        return grid.param_space(resolved(study.base, study.source), ())
    space = grid.param_space(resolved(study.base, study.source), study.axes)  # params.json: every default
    if lr_by_arm:
        space["train"]["lr"] = ray.tune.sample_from(functools.partial(_arm_lr, lr_by_arm, study.lr_keys))
    return space


def _arm_lr(lr_by_arm: dict[tuple, float], arm_keys: tuple[str, ...], spec) -> float:
    """The tuned lr of the trial's arm (its values of the arm keys: study.lr_keys, the specification first
    when the study has specifications)."""
    return lr_by_arm[grid.arm_of(spec.config, arm_keys)]


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
    if len(nodes) < 2 or is_uri(path):
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
def _frozen_task(config: dict[str, Any], data: TrainingData, key: str,
                 base: dict[str, np.ndarray] | None = None) -> np.ndarray | None:
    """One frozen part's activations for all images, on this task's GPU if it has one (disk-cached there);
    `base`: the named base's weights, shipped by the driver (no node builds one of its own)."""
    cfg = config_from_dict(config, where="trial config")
    device = pick_device()
    cached = load_cached(key, device.type)
    if cached is not None:  # this node computed the set before: no model to build
        return cached
    if base is not None:
        provide(cfg.model.weights, base)
    model = build_model(cfg.model, cfg.data.image_size, seed=cfg.train.seed).to(device)
    z = frozen_features(model, data.images, key, device)
    return None if z is None else np.ascontiguousarray(z.numpy())


def shared_bases(study: StudyConfig) -> dict[str, ray.ObjectRef]:
    """The conv bases pretrained here that the study names (`model.weights: glyphs`), each built once by the
    driver (or read from its cache) and put in the object store: every frozen-feature task and trial, on any
    node, takes its weights from there, so no node builds or needs a cached base of its own."""
    import torch

    refs = {}
    for name in sorted({cfg.model.weights for cfg in study.trial_configs()} & set(NAMED_BASES)):
        state = torch.load(ensure_base(name), map_location="cpu", weights_only=True)
        refs[name] = ray.put({k: v.numpy() for k, v in state.items()})
    return refs


def load_study_data(study: StudyConfig, progress: bool = True) -> dict[str, TrainingData]:
    """Each distinct data section of the grid, loaded once: {study.trainable.data_key(section): data}."""
    out: dict[str, TrainingData] = {}
    for cfg in study.trial_configs():
        key = data_key(cfg.data)
        if key not in out:
            out[key] = load_data(cfg.data, progress=progress)
    return out


def shared_features(study: StudyConfig, data: dict[str, TrainingData],
                    bases: dict[str, ray.ObjectRef] | None = None) -> dict[str, ray.ObjectRef]:
    """Each distinct frozen part's activations (one per frozen key: weights, normalization, depth and the
    trial's own data), computed once by a Ray task with a trial's resources (a share of a GPU when the config
    gives trials one), the tasks spread over the nodes; its result stays in the object store, where every
    trial that needs it reads it. `bases`: shared_bases(study), made here when not given.

    Sets too large for the object store are left to the trials: each computes its own, once per node (the
    first on a node under a file lock in that node's cache, hwr.features; the others then read it there)."""
    bases = shared_bases(study) if bases is None else bases
    seen: dict[str, tuple[Any, str]] = {}  # frozen key -> (a config that needs it, its data key)
    for cfg in study.trial_configs():
        dkey = data_key(cfg.data)
        key = frozen_key(cfg, data[dkey].key)
        if key is not None and key not in seen:
            seen[key] = (cfg, dkey)
    if not seen:
        return {}
    sizes = {key: frozen_nbytes(cfg.model.trainable_from, len(data[d].images), data[d].images.shape[-1])
             for key, (cfg, d) in seen.items()}
    capacity = ray.available_resources().get("object_store_memory", 0)
    if sum(sizes.values()) > OBJECT_STORE_SHARE * capacity:
        log.warning("frozen activations (%d sets, %.1f GB) exceed the object store's share; trials compute their own",
                    len(seen), sum(sizes.values()) / 1e9)
        return {}
    resources = trial_resources(study)
    refs = {}
    for key in seen:  # sets this machine already holds go straight from its disk cache
        cached = load_cached(key, "cuda" if resources["gpu"] else "cpu")
        if cached is not None:
            refs[key] = ray.put(cached)
    missing = {k: c for k, c in seen.items() if k not in refs}
    if missing:
        mb = ", ".join(sorted({f"{sizes[k] / 1e6:.0f}" for k in missing}, key=float))
        print(f"Computing {len(missing)} frozen feature set(s) of {mb} MB each on "
              f"{'GPUs' if resources['gpu'] else 'CPUs'}.", flush=True)
        data_refs = {d: ray.put(data[d]) for d in dict.fromkeys(d for _, d in missing.values())}
        task = _frozen_task.options(num_cpus=resources["cpu"], num_gpus=resources["gpu"], scheduling_strategy="SPREAD")
        refs.update({key: task.remote(cfg.to_dict(), data_refs[d], key, bases.get(cfg.model.weights))
                     for key, (cfg, d) in missing.items()})
    # Wait here, before any trial holds resources the tasks need; the results stay in the object store.
    pending = list(refs.values())
    while pending:
        _, pending = ray.wait(pending, num_returns=1)
        print(f"frozen features ready: {len(refs) - len(pending)}/{len(refs)}", flush=True)
    return refs


def checkpoint_policy(study: StudyConfig) -> CheckpointPolicy:
    run = study.run
    return CheckpointPolicy(every=run.checkpoint_every, seconds=run.checkpoint_seconds, keep_best=run.keep_best)


def make_trainable(study: StudyConfig, data: dict[str, TrainingData], features: dict[str, ray.ObjectRef],
                   bases: dict[str, ray.ObjectRef] | None = None):
    fn = _hwr_part_to(train_trial) if study.specifications else train_trial  # a Tune config has `specification`
    trainable = ray.tune.with_parameters(fn, data=data, features=features, policy=checkpoint_policy(study),
                                         bases=bases or {})
    return ray.tune.with_resources(trainable, trial_resources(study))


def _hwr_part_to(trial_fn):
    """`trial_fn` given only the hwr sections of the trial's Tune config (named as it, for the trial names)."""
    def train_trial(config: dict[str, Any], **kwargs: Any) -> None:
        return trial_fn(hwr_sections(config), **kwargs)
    return train_trial


def trial_resources(study: StudyConfig) -> dict[str, float]:
    """What each trial, and each frozen-feature task, asks Ray for: the config's `resources`."""
    return {"cpu": study.resources.cpu, "gpu": study.resources.gpu}


def run_config(study: StudyConfig, callbacks: Sequence[Callback] = ()) -> RunConfig:
    """Tune's run settings: a URI storage_path goes to Tune as it is (Tune opens it with pyarrow.fs, its query
    string included: `s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http`)."""
    return RunConfig(
        name=study.name,
        storage_path=storage_root(study),
        failure_config=FailureConfig(max_failures=study.run.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=study.run.keep_checkpoints),
        callbacks=[*loggers(), *callbacks],
    )


def tune_config(study: StudyConfig, lr_by_arm: dict | None) -> TuneConfig:
    """The grid for Tune's default search, or the adaptive-seed searcher (study.adaptive) with room for every
    trial it may suggest: it ends the run itself (`Searcher.FINISHED`)."""
    if study.adaptive is None:
        return TuneConfig(metric="val_acc", mode="max", reuse_actors=True)
    from study.adaptive import study_searcher

    return TuneConfig(metric="val_acc", mode="max", reuse_actors=True, search_alg=study_searcher(study, lr_by_arm),
                      num_samples=study.most_trials)


def _expected_trials(study: StudyConfig, path: str, lr_by_arm: dict | None) -> int:
    """The trials a complete run has: the grid's, or those the adaptive searcher gave out once it finished
    (more than any run has while it would still suggest some: the run was interrupted). With adaptive seeds
    it also writes the searcher's decisions (`adaptive.json`) for the report."""
    if study.adaptive is None:
        return len(study.trial_configs())
    from study.adaptive import decisions, saved_searcher, write_decisions
    from study.specs import spec_keys

    searcher = saved_searcher(study, path, lr_by_arm)
    if searcher is None or not searcher.finished():
        return study.most_trials + 1
    write_decisions(path, decisions(searcher, spec_keys(study.specifications)))
    return searcher.trial_count()


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
        raise StateError(f"{shown(join(path, STUDY_FILE))} is damaged (not the study's YAML), so this experiment cannot be "
                         "resumed: start over with `hwr-study run --fresh`.")
    return doc


def _write_study(path: str, study: StudyConfig, lr_by_arm: dict | None) -> None:
    fs, p = fs_and_path(path)
    fs.create_dir(p, recursive=True)
    doc = {**study.to_dict(), "lr_by_arm": _lr_doc(lr_by_arm, study.lr_keys)}
    with fs.open_output_stream(f"{p}/{STUDY_FILE}") as f:
        f.write(yaml.safe_dump(doc, sort_keys=False).encode())


def delete_experiment(path: str) -> None:
    fs, p = fs_and_path(path)
    if fs.get_file_info(p).type != pyarrow.fs.FileType.NotFound:
        fs.delete_dir(p)


def init_ray() -> None:
    """Join the cluster named by RAY_ADDRESS (as `ray job submit` sets it), else start a local one."""
    if ray.is_initialized():
        return
    ray.init(address=os.environ.get("RAY_ADDRESS"), logging_level=logging.WARNING)


def run_study(study: StudyConfig, *, fresh: bool = False, lr_by_arm: dict | None = None, progress: bool = True,
              data: TrainingData | dict[str, TrainingData] | None = None, callbacks: Sequence[Callback] = ()) -> str:
    """Run (or resume) the study's grid; returns the experiment path.

    `data`: the images to train on instead of loading each data section ({data_key: TrainingData}, or one
    TrainingData for every section: a benchmark's random images); `callbacks`: Tune callbacks added to the
    run's (a meter, a test's probe). Trials that errored end it in TrialsErrored unless run.allow_errors.

    One driver per experiment (`study.state.lock`); a damaged experiment is refused before Ray starts
    (`study.state.resumable`); Ctrl-C ends in KeyboardInterrupt once Tune has saved its state.
    """
    path = experiment_path(study)
    with lock(path):
        if fresh:
            delete_experiment(path)
        stored = _stored_study(path)
        current = {**study.to_dict(), "lr_by_arm": _lr_doc(lr_by_arm, study.lr_keys)}
        if stored is not None and _comparable(stored) != _comparable(current):
            raise StudyError(
                f"{shown(path)} holds the experiment of another config; pass --fresh to start over or choose another name.")
        resume = resumable(path)  # StateError naming the damaged file, before Ray starts
        if resume and stored is None:
            raise StateError(f"{shown(path)} holds Tune state but no {STUDY_FILE} saying which study it is: start over "
                             "with `hwr-study run --fresh`.")

        # The data first: a cache miss decodes with a process pool, which must not fork Ray's threaded driver.
        if data is None:
            data = load_study_data(study, progress=progress)
        elif isinstance(data, TrainingData):
            data = {data_key(c.data): data for c in study.trial_configs()}
        init_ray()
        check_cluster(study)
        check_storage_shared(storage_root(study))
        bases = shared_bases(study)  # built once, here, and shipped to every node
        features = shared_features(study, data, bases)
        trainable = make_trainable(study, data, features, bases)
        space = param_space(study, lr_by_arm)
        if progress:  # the driver's (or the Ray job's) log gets `hwr-study status` every 5 minutes
            from study.status import StatusCallback

            callbacks = (*callbacks, StatusCallback(path, every_s=STATUS_EVERY_S))

        def new_tuner() -> Tuner:  # writes tuner.pkl into the experiment folder
            return Tuner(trainable, param_space=space, tune_config=tune_config(study, lr_by_arm),
                         run_config=run_config(study, callbacks))

        if resume:
            if not tuner_pkl_ok(path):  # a driver killed while Tune wrote it (ray#58179)
                print(f"{shown(join(path, TUNER_PKL))} is damaged; writing it again from the study's config ({STUDY_FILE}).")
                new_tuner()
            print(f"Resuming {shown(path)}: finished trials are kept, unfinished ones continue from their checkpoints.")
            for line in repair_lost_checkpoints(path):
                print(line)
            tuner = Tuner.restore(path, trainable=trainable, resume_errored=True, param_space=space)
        else:
            _write_study(path, study, lr_by_arm)
            tuner = new_tuner()
        results = tuner.fit()
        grid = finished(results, _expected_trials(study, path, lr_by_arm), LAST_KEY)  # Ctrl-C: KeyboardInterrupt
    errors = [r for r in grid if r.error is not None]
    print(f"Study {study.name}: {len(grid)} trials, {len(errors)} errored; experiment in {shown(path)}")
    if errors and not study.run.allow_errors:
        raise TrialsErrored(path, errors)
    return path


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """What must match to resume: the grid and the trial config (not resources, analysis or run knobs)."""
    try:  # compared with their defaults filled in: a record written before a key had one still matches
        sections = resolved(doc)
    except ConfigError:
        sections = {s: doc.get(s) for s in SECTIONS}
    keep = {"name": doc.get("name"), **sections,
            **{k: doc.get(k) for k in ("search", "lr_by_arm", "specifications")}}
    return yaml.safe_load(yaml.safe_dump(keep))


__all__ = ["StudyError", "TrialsErrored", "experiment_path", "param_space", "read_lr_file", "run_study"]
