"""Section `study`: ours, the real `hwr-study run` machinery, cold and then warm.

`run_study(study, fresh=True)` on the generated study (activation x normalization x seed), storage in the
work folder. `cold` runs with an empty HWR_CACHE_DIR (decode and frozen features computed), `warm` is a
second run of the same study (fresh experiment, warm data and feature caches). Only timing wrappers are
added: around init_ray, load_data and shared_features in study.run, and a Tune callback (appended to
run_config's) that stamps each reported epoch as the driver receives it.

Time to the first training step is estimated as (driver's arrival time of the first epoch-1 result) -
(that result's epoch_time_s): the moment the trial's first epoch began, plus the checkpoint/report
latency, so an upper bound.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from benchmarks.common import lazy_class
from benchmarks.runner import Bench


def _make_result_clock():
    import ray.tune

    class ResultClock(ray.tune.Callback):
        """Stamps trial starts and each reported result as the driver receives them."""

        def __init__(self):
            self.starts: list[tuple[str, float]] = []
            self.results: list[dict[str, Any]] = []

        def on_trial_start(self, iteration, trials, trial, **info):
            self.starts.append((trial.trial_id, time.time()))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            keep = ("epoch", "epoch_time_s", "train_loss", "val_acc", "test_acc")
            self.results.append({"trial_id": trial.trial_id, "t": time.time(),
                                 **{k: result.get(k) for k in keep}})

    return ResultClock


def __getattr__(name: str):
    if name == "ResultClock":  # a ray.tune.Callback: made on first use (see common.lazy_class)
        return lazy_class(globals(), name, _make_result_clock)
    raise AttributeError(name)


def _set_subreaper() -> bool:
    """Make this process adopt orphaned descendants (Ray's workers), so their maxrss reaches RUSAGE_CHILDREN."""
    if sys.platform != "linux":
        return False
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _reap_children(timeout: float) -> int:
    """Wait (up to timeout seconds) for the children left after ray.shutdown(); returns how many were reaped."""
    reaped, end = 0, time.time() + timeout
    while time.time() < end:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.1)
        else:
            reaped += 1
    return reaped


def work(spec: dict[str, Any]) -> dict[str, Any]:
    subreaper = _set_subreaper()
    import ray
    import torch

    import study.run as run_mod
    from hwr.data import default_cache_dir
    from hwr.features import frozen_key
    from study.config import study_from_dict

    t_imported = time.time()
    if spec.get("auto_gpu") and torch.cuda.is_available():
        spec["study"]["resources"]["gpu"] = 0.25
    stamps: dict[str, float] = {}
    durations: dict[str, float] = {}
    per_key: list[dict[str, Any]] = []
    # Timing wrappers only, around what run_study calls by name (wherever the work itself runs: in this
    # process or in Ray tasks); any of them the pipeline no longer has is left out.
    names = [n for n in ("init_ray", "load_data", "shared_features") if hasattr(run_mod, n)]
    originals = {n: getattr(run_mod, n) for n in names}

    def timed(name: str):
        fn = originals[name]

        def wrapper(*args, **kwargs):
            stamps[f"{name}_start"] = time.time()
            t = time.perf_counter()
            result = fn(*args, **kwargs)
            durations[name] = durations.get(name, 0.0) + time.perf_counter() - t
            return result

        return wrapper

    def shared_features_timed(study, data, *args, **kwargs):
        folder = default_cache_dir() / "features"
        from study.trainable import data_key

        sets = {k: data[data_key(cfg.data)] for cfg in study.trial_configs()
                if (k := frozen_key(cfg, data[data_key(cfg.data)].key)) is not None}
        for k in sorted(sets):  # a set is warm when its .npy is already on disk (any device suffix)
            per_key.append({"key": k, "cache_hit": any(folder.glob(f"{k}-*.npy")), "images": len(sets[k].images)})
        return timed("shared_features")(study, data, *args, **kwargs)

    clock = __getattr__("ResultClock")()

    for name in ("init_ray", "load_data"):
        if name in originals:
            setattr(run_mod, name, timed(name))
    if "shared_features" in originals:
        run_mod.shared_features = shared_features_timed
    study = study_from_dict(spec["study"], where="bench study")
    t_call = time.time()
    try:
        run_mod.run_study(study, fresh=True, progress=False, callbacks=[clock])
    finally:
        for n, fn in originals.items():
            setattr(run_mod, n, fn)
    t_done = time.time()
    ray.shutdown()
    reaped = _reap_children(20.0) if subreaper else 0

    t0 = spec["t_spawn"]
    results = clock.results
    epoch_times = [r["epoch_time_s"] for r in results if r["epoch_time_s"] is not None]
    first = [r for r in results if r["epoch"] == 1]
    out: dict[str, Any] = {
        "trials": study.num_trials, "results": len(results),
        "import_s": t_imported - t0,
        "ray_init_s": durations.get("init_ray"),
        "decode_s": durations.get("load_data"),
        "features_total_s": durations.get("shared_features"),
        "features_per_key": per_key,
        "run_study_s": t_done - t_call,
        "total_from_spawn_s": t_done - t0,
        "epoch_time_s_mean": sum(epoch_times) / len(epoch_times) if epoch_times else None,
        "epoch_time_s_list": epoch_times,
        "test_acc": [r["test_acc"] for r in results if r["test_acc"] is not None],
        "subreaper": subreaper, "reaped_after_shutdown": reaped,
        "cpu_per_trial": study.resources.cpu, "gpu_per_trial": study.resources.gpu,
    }
    if first:
        first_result = min(r["t"] for r in first)
        first_step = min(r["t"] - r["epoch_time_s"] for r in first)
        out.update({
            "first_step_from_spawn_s": first_step - t0, "first_step_from_run_study_s": first_step - t_call,
            "first_result_from_spawn_s": first_result - t0,
        })
    if clock.starts:
        out["first_trial_start_from_spawn_s"] = min(t for _, t in clock.starts) - t0
        # per trial: Tune's on_trial_start (its actor is up) -> its first training step
        started = dict(clock.starts)
        out["trial_startup_s"] = [r["t"] - r["epoch_time_s"] - started[r["trial_id"]] for r in first
                                  if r["trial_id"] in started]
    for name in ("init_ray", "load_data", "shared_features"):
        if f"{name}_start" in stamps:
            out[f"{name}_start_from_spawn_s"] = stamps[f"{name}_start"] - t0
    if "shared_features_start" in stamps:
        out["features_done_from_spawn_s"] = stamps["shared_features_start"] + durations["shared_features"] - t0
    return out


def measure(bench: Bench) -> None:
    """The study twice: cold (empty caches), then warm."""
    spec = {"study": bench.study, "auto_gpu": bench.auto_gpu}
    bench.res["study_cold"] = bench.spawn(work, spec, label="study-cold")
    bench.res["study_warm"] = bench.spawn(work, spec, label="study-warm")
