"""Where the first training step of a study goes: a timeline from the `run_study` call, on a fresh local Ray.

    hwr-bench first-step [--config configs/quick.yaml] [--runs 3] [--code DIR] [--json out.json]

Each run is a fresh Python process that imports `study.run` and calls `run_study`, which starts a local
Ray. Timing wrappers around what `run_study` calls by name and a Tune callback (benchmarks.checkpoints'
`attach` and `StudyMeter`) stamp: `init_ray` done (the local cluster is up), the data loaded and the frozen
sets ready (from the disk cache when warm), Tune's `setup`, the first `on_trial_start`, and the first
result's arrival. From that result, `time_this_iter_s` dates the actor's first `train()` call and
`epoch_time_s` the first epoch, so `first_step_upper_bound` = arrival - epoch_time_s is when the first
trial's first epoch began, plus its checkpoint (if it wrote one) and the report: an upper bound.

The first run starts on an empty cache (decode, frozen features); the others are warm, which is what the
figure in docs/performance.md quotes. `--code DIR` runs hwr and study from DIR (e.g. `git archive REF hwr
study configs`, unpacked), to compare with an earlier commit. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.checkpoints import spawn
from benchmarks.common import ROOT

DEFAULT_SET = ["train.epochs=2", "search.train.seed=[0]"]
# How the local Ray starts: `study` is study.run.init_ray as it is; the others replace it, to weigh its parts.
RAY_INIT = {"study": None, "no-dashboard": {"include_dashboard": False}}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import ray

    import study.run as run_mod
    from benchmarks.checkpoints import StudyMeter, attach
    from study.config import load_study

    t_imported = time.time()
    if (kwargs := RAY_INIT[spec.get("ray_init", "study")]) is not None:
        run_mod.init_ray = lambda: _init_ray(**kwargs)
    stamps: dict[str, float] = {}
    meter = StudyMeter()
    undo = attach(run_mod, stamps)
    study = load_study(spec["config"], spec["set"])
    t_call = time.time()
    try:
        run_mod.run_study(study, fresh=True, progress=False, callbacks=[meter])
    finally:
        undo()
    t_done = time.time()
    ray.shutdown()

    first = min((r for r in meter.results if r["epoch"] == 1), key=lambda r: r["t"])
    # The trial's actor got its first train() call time_this_iter_s before the result reached the driver
    # (the driver and the actor share this host's clock).
    actor_called = first["t"] - first["time_this_iter_s"]
    return {
        "import_study_run_s": t_imported - spec["t_spawn"],
        "from_run_study_call": {
            "init_ray_done": stamps["init_ray_end"] - t_call,
            "data_loaded": stamps["load_data_end"] - t_call,
            "frozen_features_ready": stamps["shared_features_end"] - t_call,
            "tune_setup": (meter.setup_t or float("nan")) - t_call,
            "first_trial_started": min(meter.starts.values()) - t_call,
            "first_trial_actor_train_called": actor_called - t_call,
            "first_step_upper_bound": first["t"] - first["epoch_time_s"] - t_call,
            "first_result_arrived": first["t"] - t_call,
            "run_study_returned": t_done - t_call,
        },
        "first_trial": {"epoch_time_s": first["epoch_time_s"], "time_this_iter_s": first["time_this_iter_s"],
                        "pid": first["pid"], "checkpoint_after_epoch_1": any(
                            c["epoch"] == 1 and c["trial_id"] == first["trial_id"] for c in meter.checkpoints)},
        "trials": study.num_trials,
    }


def _init_ray(include_dashboard: bool | None = None) -> None:
    import logging

    import ray

    ray.init(include_dashboard=include_dashboard, logging_level=logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hwr-bench first-step", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/quick.yaml")
    ap.add_argument("--set", action="append", default=None, help=f"study overrides (default: {DEFAULT_SET})")
    ap.add_argument("--runs", type=int, default=3, help="fresh processes; the first warms the caches")
    ap.add_argument("--code", type=Path, default=ROOT, help="run hwr and study from this folder")
    ap.add_argument("--ray-init", default="study", help="comma-separated, each run cycles through them: "
                    + ", ".join(RAY_INIT) + " (study: study.run.init_ray as it is)")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hwr-first-step-") as tmp:
        work = Path(tmp)
        overrides = [*(args.set or DEFAULT_SET), f"run.storage_path={work / 'ray'}", f"run.results_dir={work / 'res'}"]
        variants = args.ray_init.split(",")
        load = [os.getloadavg()[0]]
        runs = []
        for i in range(args.runs):
            spec = {"config": str(Path(args.config).resolve()), "set": overrides, "ray_init": variants[i % len(variants)]}
            runs.append(spawn("benchmarks.first_step:worker", spec, args.code.resolve(),
                              {"HWR_CACHE_DIR": str(work / "cache")}, work / f"run{i + 1}.log"))
            runs[-1]["ray_init"] = spec["ray_init"]
            load.append(os.getloadavg()[0])
    warm = runs[1:] or runs
    print("seconds from the run_study call (a fresh local Ray each run; run 1 cold, the others warm)")
    print(f"{'milestone':34s} " + " ".join(f"run{i + 1:>2}" for i in range(len(runs)))
          + "".join(f"  {v[:12]:>12s}" for v in variants))
    for k in runs[0]["from_run_study_call"]:
        vals = [r["from_run_study_call"][k] for r in runs]
        meds = [statistics.median([r["from_run_study_call"][k] for r in warm if r["ray_init"] == v] or [float("nan")])
                for v in variants]
        print(f"{k:34s} " + " ".join(f"{v:5.1f}" for v in vals) + "".join(f"  {m:12.1f}" for m in meds))
    print("ray init per run: " + ", ".join(r["ray_init"] for r in runs) + "; columns after the runs: warm medians")
    print("import study.run: " + ", ".join(f"{r['import_study_run_s']:.1f}" for r in runs) + " s; "
          "first epoch: " + ", ".join(f"{r['first_trial']['epoch_time_s']:.2f}" for r in runs) + " s; 1-minute load "
          "average before/after each run: " + ", ".join(f"{v:.1f}" for v in load))
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "load": load}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
