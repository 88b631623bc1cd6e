"""Naive pipeline vs ours on the same data and config, in one invocation: a benchmark, not a test.

    hwr-bench pipeline --data-dir ../shared/data/chars74k    # the default study, ~7 min on 2 cores
    hwr-bench pipeline --quick                               # tiny synthetic version (the test runs it)
    python -m benchmarks pipeline [same flags]

It generates one study (activation x normalization x seed, frozen base, --image-size px) and runs the
sections below on it, in this order, each measured part in its own fresh process (benchmarks.runner):

  floor     a large fp32 matmul's FLOP/s with torch: the machine's reference (benchmarks.floor)
  naive     the usual PIL + DataLoader + whole-VGG16 way, one trial extrapolated (benchmarks.naive)
  study     ours, the real `hwr-study run` machinery, cold then warm (benchmarks.tune_study)
  stages    ours in one process without Ray, per stage (benchmarks.stages)
  head      224 px frozen base: one head epoch over existing features (benchmarks.head)

and the floor once more at the end. benchmarks.report derives the ratios and prints the comparison.

A section is a module with `measure(bench)`: it runs its parts through `bench.spawn(work, spec)` and
stores their figures in `bench.res`; a module-level `report(res)` returning lines, if it has one, is
printed after the comparison. A new section plugs in with one line in SECTIONS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import floor, head, naive, stages, tune_study
from benchmarks.common import BenchError, machine_info, parse_list
from benchmarks.report import derive, report
from benchmarks.runner import Bench, Runner

SECTIONS = {           # name (for --sections) -> module; measured in this order
    "floor": floor,
    "naive": naive,
    "study": tune_study,
    "stages": stages,  # after the study: ours with the caches it left (warm)
    "head": head,
}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="hwr-bench pipeline",
        description="Naive pipeline (PIL + DataLoader every epoch, full VGG16 forward every step) vs ours "
                    "(decode once, frozen features once, Ray Tune study), on the same data and config.")
    ap.add_argument("--data-dir", help="Chars74K folder (default: $HWR_DATA_DIR, else the cache's chars74k)")
    ap.add_argument("--image-size", type=int, default=64, help="S for the naive-vs-ours study (default 64)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weights", default="none", help="conv base weights: none (seeded random), imagenet, or a .pt")
    ap.add_argument("--base-seed", default="0",
                    help="with --weights none: one random conv base for every trial, from this seed (default 0, "
                         "as fixed ImageNet weights would be), or 'none' to draw each trial's base from its seed")
    ap.add_argument("--activations", default="relu,selu", help="grid axis (comma-separated)")
    ap.add_argument("--normalizations", default="none,per_image", help="grid axis (comma-separated)")
    ap.add_argument("--seeds", default="0,1", help="grid axis (comma-separated integers)")
    ap.add_argument("--naive-trials", default="1",
                    help="naive trials actually run, one after another (the rest is extrapolated), or 'all'")
    ap.add_argument("--naive-workers", type=int, default=2, help="naive DataLoader workers (default 2)")
    ap.add_argument("--cpu-per-trial", type=float, default=1.0, help="ours: Ray CPUs per trial (default 1)")
    ap.add_argument("--gpu-per-trial", type=float, default=None,
                    help="ours: Ray GPUs per trial (default 0.25 when CUDA is there, else 0)")
    ap.add_argument("--head-size", type=int, default=224, help="image size of the head-epoch section (default 224)")
    ap.add_argument("--head-images", default="32",
                    help="training images whose frozen features the head section computes; the rest of the "
                         "2273 rows repeat them (the head's cost does not depend on values); 'all' for every one")
    ap.add_argument("--matmul-n", type=int, default=4096, help="size of the fp32 matmul reference (default 4096)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"which to run, comma-separated from {','.join(SECTIONS)}")
    ap.add_argument("--quick", action="store_true",
                    help="tiny synthetic set and sizes (seconds per section; what the test runs)")
    ap.add_argument("--work-dir", help="where caches, Ray storage and logs go (default: a new temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (it is deleted otherwise)")
    ap.add_argument("--json", help="also write every figure to this JSON file")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ap.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for every measured process (and the Ray workers it starts), e.g. "
                         "THP_MEM_ALLOC_ENABLE=1; repeatable")
    return ap


QUICK = {"image_size": 32, "epochs": 2, "activations": "relu", "normalizations": "none,per_image", "seeds": "0",
         "head_size": 32, "head_images": "8", "matmul_n": 512, "naive_trials": "1"}


def _study_dict(args, root: Path, storage: Path) -> dict[str, Any]:
    # With no --gpu-per-trial, the study worker picks 0.25 when it sees CUDA, else 0 (this process stays
    # without torch: every worker's maxrss starts from this process's size, as getrusage counts across exec).
    gpu = 0.0 if args.gpu_per_trial is None else args.gpu_per_trial
    return {
        "name": "bench",
        "data": {"dataset": "chars74k", "root": str(root), "image_size": args.image_size, "split": "paper",
                 "split_seed": 0},
        "model": {"weights": args.weights, "trainable_from": "none", "dropout": 0.0,
                  **({"base_seed": _base_seed(args)} if args.weights == "none" else {})},
        "train": {"optimizer": args.optimizer, "lr": args.lr, "momentum": 0.9, "batch_size": args.batch_size,
                  "epochs": args.epochs, "evals_per_epoch": 1},  # one validation an epoch, as the naive loop
        "search": {"model.activation": parse_list(args.activations),
                   "model.normalization": parse_list(args.normalizations),
                   "train.seed": parse_list(args.seeds, int)},
        "resources": {"cpu": args.cpu_per_trial, "gpu": gpu},
        "run": {"storage_path": str(storage), "max_failures": 0, "results_dir": str(storage.parent / "results")},
    }


def _base_seed(args) -> int | None:
    if args.base_seed.lower() in ("none", "null"):
        return None
    try:
        return int(args.base_seed)
    except ValueError:
        raise BenchError(f"--base-seed must be an integer or none, got {args.base_seed!r}.") from None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen sections; returns every figure (also printed by `report`)."""
    sections = set(parse_list(args.sections))
    unknown = sections - set(SECTIONS)
    if unknown:
        raise BenchError(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {','.join(SECTIONS)}.")
    own_work = args.work_dir is None
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="hwr-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"  # HWR_CACHE_DIR of every worker: empty at the start = cold
    if cache.exists() and any(cache.iterdir()):
        raise BenchError(f"{cache} is not empty; give --work-dir a new folder so that the cold run is cold.")
    try:
        bench = _prepare(args, work, cache)
        t_all = time.time()
        for name, section in SECTIONS.items():
            if name in sections:
                section.measure(bench)
        if "floor" in sections:  # again at the end; the better of the two is the machine's reference
            floor.measure_end(bench)
        bench.res["bench_wall_s"] = time.time() - t_all
        derive(bench.res)
        return bench.res
    finally:
        if not args.keep and own_work:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep or not own_work:
            print(f"[bench] work folder kept: {work}", file=sys.stderr)


def _prepare(args, work: Path, cache: Path) -> Bench:
    """The data, the generated study and its trial configs, the environment; the settings into res."""
    from hwr.data import find_root, has_images, write_synthetic
    from study.config import study_from_dict

    if args.quick:
        root = write_synthetic(work / "synthetic", per_class=4, seed=0, size=(64, 48))
    else:
        root = find_root(args.data_dir).resolve()
        if not has_images(root):
            raise BenchError(f"no Chars74K images under {root}; pass --data-dir or set HWR_DATA_DIR.")
    env = {"HWR_CACHE_DIR": str(cache), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ENABLE_UV_RUN_RUNTIME_ENV": os.environ.get("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")}
    for item in args.worker_env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BenchError(f"--worker-env {item!r} must look like KEY=VALUE.")
        env[key] = value
    raw = _study_dict(args, root, work / "ray")
    study = study_from_dict(raw, where="bench study")
    bench = Bench(args=args, root=root, env=env, study=raw, configs=[c.to_dict() for c in study.trial_configs()],
                  auto_gpu=args.gpu_per_trial is None, runner=Runner(work, verbose=not args.quiet))
    bench.res.update({
        "machine": machine_info(), "data_dir": str(root), "quick": args.quick,
        "settings": {"image_size": args.image_size, "epochs": args.epochs, "batch_size": args.batch_size,
                     "optimizer": args.optimizer, "lr": args.lr, "weights": args.weights, "trainable_from": "none",
                     "base_seed": raw["model"].get("base_seed"), "search": raw["search"],
                     "trials": study.num_trials, "naive_trials_run": bench.n_naive,
                     "naive_workers": args.naive_workers, "cpu_per_trial": raw["resources"]["cpu"],
                     "gpu_per_trial": "auto" if bench.auto_gpu else raw["resources"]["gpu"],
                     "worker_env": list(args.worker_env)},
        "work_dir": str(work)})
    return bench


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.quick:
        defaults = parser().parse_args([])
        for key, value in QUICK.items():
            if getattr(args, key) == getattr(defaults, key):
                setattr(args, key, value)
    try:
        res = run(args)
    except (BenchError, ValueError) as e:
        print(f"hwr-bench pipeline: error: {e}", file=sys.stderr)
        return 2
    lines = [report(res)]
    for section in SECTIONS.values():
        if hasattr(section, "report"):
            lines += section.report(res)
    print("\n".join(lines))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))
    return 0
