"""Checkpoint cost of a study trial: bytes written (local and in storage_path) and share of wall time.

    hwr-bench checkpoints [--before REF] [--sections trial,quick] [--json out.json]
    python -m benchmarks.checkpoints ...          # the same

Section `trial`: one Tune trial through the real `run_study` (the project's trainable, Tune's checkpoint
persistence into storage_path) at 224 px with a frozen base (`trainable_from: none`) and with block5
fine-tuned, SGD with momentum, a few epochs on the CPU. The data is a small random set (`--images`): what a
checkpoint holds depends on the model, not on the images, and it keeps a CPU epoch short. Each checkpoint is
measured as Tune persists it (a Tune callback sizes the checkpoint folder in storage; the trainable wrote
the same bytes once into its local staging folder before Tune copied them). Its time is the trial's
`time_this_iter_s` (the actor's time from one result to the next: the epoch, the checkpoint save, Tune's copy
and the report) minus the epoch's own `epoch_time_s`, less the same overhead on epochs without a checkpoint.
Policies measured: the code's default, and a checkpoint after every epoch (the resume checkpoint's cost).

Section `quick`: configs/quick.yaml as `make run` runs it (24 trials, 12 epochs): checkpoint bytes written,
the experiment folder's size at the end, and how many experiment-snapshot warnings Tune logged.

`--before REF` runs the same sections on the code of git commit REF as well (`git archive REF hwr study
configs`, unpacked in the work folder), for a before/after comparison in one invocation.

Projection to a GPU: for a 30-epoch trial at an assumed GPU epoch time (`--gpu-epoch-s`), the bytes and the
checkpoint time the policy would write, from the per-checkpoint bytes and seconds measured here; see
docs/performance.md for the assumptions. Nothing here asserts a size or a time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, BenchError

TRIAL_EPOCHS = 30  # the paper's and configs/factorial.yaml's
DEFAULT_GPU_EPOCH_S = ("none=0.05", "block5=0.1", "block5=0.3")
SNAPSHOT_WARNING = "snapshotting has been triggered"


# --- measuring, in the worker process --------------------------------------------------------------------

def _make_meter():
    import pyarrow.fs
    import ray.tune

    class StudyMeter(ray.tune.Callback):
        """Stamps Tune's start, each trial start and each result as the driver receives them, and sizes each
        checkpoint as Tune persists it."""

        def __init__(self):
            self.setup_t: float | None = None
            self.starts: dict[str, float] = {}
            self.results: list[dict[str, Any]] = []
            self.checkpoints: list[dict[str, Any]] = []

        def setup(self, **info):
            self.setup_t = time.time()

        def on_trial_start(self, iteration, trials, trial, **info):
            self.starts.setdefault(trial.trial_id, time.time())

        def on_trial_result(self, iteration, trials, trial, result, **info):
            keep = ("epoch", "epoch_time_s", "time_this_iter_s", "pid")
            self.results.append({"trial_id": trial.trial_id, "t": time.time(), **{k: result.get(k) for k in keep}})

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            files = checkpoint.filesystem.get_file_info(pyarrow.fs.FileSelector(checkpoint.path, recursive=True))
            size = sum(f.size for f in files if f.type == pyarrow.fs.FileType.File)
            self.checkpoints.append({"trial_id": trial.trial_id, "epoch": trial.last_result.get("epoch"),
                                     "bytes": size, "t": time.time()})

    StudyMeter.__module__ = __name__
    StudyMeter.__qualname__ = "StudyMeter"
    return StudyMeter


def __getattr__(name: str):
    # A ray.tune.Callback subclass, made on first use (importing this module needs no Ray) and found here by
    # pickle (Tune pickles the run config with its callbacks).
    if name == "StudyMeter":
        cls = _make_meter()
        globals()[name] = cls
        return cls
    raise AttributeError(name)


def attach(run_mod, stamps: dict[str, float]):
    """Stamp the start and end of init_ray, load_data and shared_features in `stamps`: wrappers around what
    `run_study` calls by name (the meter goes in through `run_study(callbacks=...)`). Returns the undo."""
    originals = {n: getattr(run_mod, n) for n in ("init_ray", "load_data", "shared_features")}

    def timed(name: str):
        def wrapper(*args, **kwargs):
            stamps[f"{name}_start"] = time.time()
            try:
                return originals[name](*args, **kwargs)
            finally:
                stamps[f"{name}_end"] = time.time()
        return wrapper

    for name in ("init_ray", "load_data", "shared_features"):
        setattr(run_mod, name, timed(name))
    return lambda: [setattr(run_mod, n, fn) for n, fn in originals.items()]


class WarningCounter(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += SNAPSHOT_WARNING in record.getMessage()


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def trial_stats(results: list[dict[str, Any]], checkpoints: list[dict[str, Any]]) -> dict[str, Any]:
    """Per trial: bytes per checkpoint and the time each took (its epoch's overhead beyond the others')."""
    out = {}
    for trial_id in sorted({r["trial_id"] for r in results}):
        rows = [r for r in results if r["trial_id"] == trial_id]
        saved = {c["epoch"]: c["bytes"] for c in checkpoints if c["trial_id"] == trial_id}
        # epoch 1's time_this_iter_s also holds the trial's set-up, so timings use epochs >= 2
        overhead = {r["epoch"]: r["time_this_iter_s"] - r["epoch_time_s"] for r in rows if r["epoch"] >= 2}
        plain = [v for e, v in overhead.items() if e not in saved]
        base = statistics.median(plain) if plain else 0.0
        ckpt_s = {e: max(overhead[e] - base, 0.0) for e in saved if e in overhead}
        timed_wall = sum(r["time_this_iter_s"] for r in rows if r["epoch"] >= 2)
        out[trial_id] = {
            "epochs": len(rows), "checkpoints": len(saved), "checkpoint_epochs": sorted(saved),
            "bytes_per_checkpoint": [saved[e] for e in sorted(saved)], "storage_bytes": sum(saved.values()),
            "local_bytes": sum(saved.values()),  # the same file, written once in the trial's staging folder
            "checkpoint_s": [ckpt_s.get(e) for e in sorted(saved)],  # None for epoch 1 (not timed)
            "report_overhead_s": base, "wall_s": sum(r["time_this_iter_s"] for r in rows),
            "epoch_time_s": [r["epoch_time_s"] for r in rows],
            "checkpoint_share_measured": sum(ckpt_s.values()) / timed_wall if timed_wall else None,
        }
    return out


def work_study(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one study through `run_study` with the meter attached; tiny random data when spec['images']."""
    import ray

    import study.run as run_mod
    from study.config import study_from_dict

    meter = __getattr__("StudyMeter")()
    counter = WarningCounter()
    logging.getLogger("ray.tune").addHandler(counter)
    study = study_from_dict(spec["study"], where="checkpoint bench study")
    # tiny random images instead of decoding, when asked for
    data = random_data(spec["images"], study.trial_configs()[0].data.image_size) if spec.get("images") else None
    t0 = time.time()
    path = run_mod.run_study(study, fresh=True, progress=False, data=data, callbacks=[meter])
    wall = time.time() - t0
    ray.shutdown()
    return {
        "trials": trial_stats(meter.results, meter.checkpoints),
        "checkpoint_bytes": [c["bytes"] for c in meter.checkpoints],
        "experiment_bytes": folder_bytes(Path(path)), "snapshot_warnings": counter.count, "wall_s": wall,
        "run": spec["study"].get("run", {}),
    }


def random_data(n: int, image_size: int):
    """n random uint8 images with labels cycling through the 62 classes: n-2 to train on, 1 to validate, 1 to
    test (scoring it, when validation improves, then adds next to nothing to an epoch's overhead)."""
    import hashlib

    import numpy as np

    from hwr.data.splits import Splits
    from hwr.train import TrainingData

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, image_size, image_size), dtype=np.uint8)
    labels = np.arange(n) % 62
    splits = Splits(np.arange(n - 2), np.array([n - 2]), np.array([n - 1]))
    return TrainingData(images, labels, splits, hashlib.blake2b(images.tobytes(), digest_size=12).hexdigest())


# --- the driver ----------------------------------------------------------------------------------------------

def unpack_code(ref: str, dest: Path) -> Path:
    """`git archive REF hwr study configs`, unpacked into dest/REF: the code as it was at that commit."""
    out = dest / f"code-{ref}"
    if out.exists():
        return out
    out.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref, "hwr", "study", "configs"], cwd=ROOT, capture_output=True)
    if archive.returncode != 0:
        raise BenchError(f"git archive {ref} failed: {archive.stderr.decode().strip()}")
    tar_path = dest / f"code-{ref}.tar"
    tar_path.write_bytes(archive.stdout)
    with tarfile.open(tar_path) as tar:
        tar.extractall(out, filter="data")
    return out


def spawn(target: str, spec: dict[str, Any], code: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run `target(spec)` in a fresh process that imports hwr and study from `code` (benchmarks from here)."""
    spec_path, out_path = log.with_suffix(".spec.json"), log.with_suffix(".out.json")
    spec_path.write_text(json.dumps({**spec, "t_spawn": time.time()}))
    path = os.pathsep.join(p for p in (str(code), str(ROOT), os.environ.get("PYTHONPATH")) if p)
    full_env = {**os.environ, **env, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, "-m", "benchmarks", "_worker", target, str(spec_path), str(out_path)],
                            cwd=code, env=full_env, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0 or not out_path.exists():
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise BenchError(f"{log.stem} failed (exit {rc}); the end of {log}:\n{tail}")
    return json.loads(out_path.read_text())


def trial_study(args, trainable_from: str, storage: Path, run: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": f"ckpt-{trainable_from}",
        "data": {"dataset": "synthetic", "image_size": args.image_size},
        "model": {"weights": "none", "base_seed": 0, "trainable_from": trainable_from},
        "train": {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "batch_size": 32, "epochs": args.epochs},
        "search": {"train.seed": list(range(args.trials))},
        "resources": {"cpu": os.cpu_count() or 1, "gpu": 0},  # one trial at a time, on every core
        "run": {"storage_path": str(storage), "results_dir": str(storage.parent / "results"), **run},
    }


POLICIES = {"default": {}, "every-epoch": {"checkpoint_seconds": 0}}


def measure(args, work: Path) -> dict[str, Any]:
    env = {"HWR_CACHE_DIR": str(work / "cache"), "RAY_DEDUP_LOGS": "0"}
    versions = {"after": ROOT}
    if args.before:
        versions = {"before": unpack_code(args.before, work), **versions}
    res: dict[str, Any] = {"args": vars(args), "load_before": os.getloadavg()[0], "versions": {}}
    for version, code in versions.items():
        got: dict[str, Any] = {}
        policies = {"default": {}} if version == "before" else POLICIES
        if "trial" in args.sections:
            for tf in args.trainable_from:
                for name, run in policies.items():
                    print(f"[checkpoints] {version}: 1 trial, {args.image_size} px, {tf}, policy {name}", flush=True)
                    spec = {"study": trial_study(args, tf, work / version / tf / name, run), "images": args.images}
                    got[f"trial/{tf}/{name}"] = spawn("benchmarks.checkpoints:work_study", spec, code, env,
                                                      work / f"{version}-{tf}-{name}.log")
        if "quick" in args.sections:
            print(f"[checkpoints] {version}: configs/quick.yaml", flush=True)
            import yaml

            doc = yaml.safe_load((code / "configs" / "quick.yaml").read_text())
            # one fixed random base in both versions: the base is frozen, and a checkpoint holds only the head
            doc["model"] = {**doc["model"], "weights": "none", "base_seed": 0}
            doc["run"] = {**doc.get("run", {}), "storage_path": str(work / version / "quick"),
                          "results_dir": str(work / version / "results")}
            if args.quick:
                doc["train"]["epochs"], doc["search"]["train.seed"] = 2, [0]
            got["quick"] = spawn("benchmarks.checkpoints:work_study", {"study": doc}, code, env,
                                 work / f"{version}-quick.log")
        res["versions"][version] = got
    res["load_after"] = os.getloadavg()[0]
    return res


def simulate(policy: dict[str, Any], epoch_s: float, resume: tuple[float, float], final: tuple[float, float],
             epochs: int = TRIAL_EPOCHS) -> dict[str, Any]:
    """Checkpoints a policy writes over `epochs` epochs of `epoch_s`; resume/final = (bytes, seconds) each."""
    from hwr.checkpoint import CheckpointPolicy

    rule = CheckpointPolicy(every=policy.get("checkpoint_every", 1), seconds=policy.get("checkpoint_seconds", 60.0))
    clock = last = 0.0
    count, nbytes, ckpt_s = 0, 0.0, 0.0
    for epoch in range(1, epochs + 1):
        clock += epoch_s
        if epoch == epochs:
            size, took = final
        elif rule.due(epoch, clock - last):
            size, took = resume
        else:
            continue
        count, nbytes, ckpt_s, clock = count + 1, nbytes + size, ckpt_s + took, clock + took
        last = clock
    return {"checkpoints": count, "bytes_local": nbytes, "bytes_storage": nbytes,
            "checkpoint_s": ckpt_s, "share": ckpt_s / (epochs * epoch_s + ckpt_s)}


def _per_checkpoint(run: dict[str, Any], which: str) -> tuple[float, float] | None:
    """Median (bytes, seconds) over the trials of their resume checkpoints (`resume`: all but the last) or
    of their last one."""
    rows = []
    for trial in run["trials"].values():
        each = list(zip(trial["bytes_per_checkpoint"], trial["checkpoint_s"]))
        rows += each[:-1] if which == "resume" else each[-1:]
    sizes, seconds = [b for b, _ in rows], [s for _, s in rows if s is not None]
    if not sizes or not seconds:
        return None
    return statistics.median(sizes), statistics.median(seconds)


def project(res: dict[str, Any], gpu_epoch_s: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """30-epoch trial at each assumed GPU epoch time: bytes and checkpoint share, before (if measured) and after."""
    rows = []
    for tf, epoch_s in gpu_epoch_s:
        after = res["versions"].get("after", {})
        resume = after.get(f"trial/{tf}/every-epoch") and _per_checkpoint(after[f"trial/{tf}/every-epoch"], "resume")
        final = after.get(f"trial/{tf}/default") and _per_checkpoint(after[f"trial/{tf}/default"], "final")
        if not (resume and final):
            continue
        row: dict[str, Any] = {"trainable_from": tf, "gpu_epoch_s": epoch_s}
        row["after"] = simulate({}, epoch_s, resume, final)
        row["after_every_epoch"] = simulate({"checkpoint_seconds": 0}, epoch_s, resume, final)
        before = res["versions"].get("before", {}).get(f"trial/{tf}/default")
        if before:
            each = _per_checkpoint(before, "resume")
            if each:  # the old code: the same full state after every epoch
                row["before"] = simulate({"checkpoint_seconds": 0}, epoch_s, each, each)
                row["bytes_ratio"] = ((row["before"]["bytes_local"] + row["before"]["bytes_storage"])
                                      / (row["after"]["bytes_local"] + row["after"]["bytes_storage"]))
        rows.append(row)
    return rows


def report(res: dict[str, Any]) -> str:
    lines = []
    mb = 1e6
    for version, got in res["versions"].items():
        for key, run in got.items():
            if key.startswith("trial/"):
                for t in run["trials"].values():
                    secs = ", ".join("-" if v is None else f"{v:.2f}" for v in t["checkpoint_s"])
                    lines.append(f"{version:6s} {key:26s} checkpoints at epochs {t['checkpoint_epochs']}: "
                                 f"{', '.join(f'{b / mb:.1f}' for b in t['bytes_per_checkpoint'])} MB (local, and "
                                 f"the same again in storage); seconds (epochs >= 2): {secs}; epoch_time_s "
                                 f"{statistics.median(t['epoch_time_s']):.2f}")
            else:
                total = sum(run["checkpoint_bytes"])
                lines.append(f"{version:6s} {key:26s} {len(run['trials'])} trials: {len(run['checkpoint_bytes'])} "
                             f"checkpoints, {total / mb:.0f} MB persisted (+ the same written locally), experiment "
                             f"folder {run['experiment_bytes'] / mb:.0f} MB, {run['snapshot_warnings']} snapshot "
                             f"warnings, {run['wall_s']:.0f} s")
    for row in res.get("projection", []):
        a = row["after"]
        text = (f"projection {row['trainable_from']:6s} 30 epochs x {row['gpu_epoch_s']} s: after "
                f"{a['checkpoints']} checkpoint(s), {(a['bytes_local'] + a['bytes_storage']) / mb:.0f} MB written, "
                f"{a['checkpoint_s']:.2f} s = {a['share']:.1%} of wall")
        if "before" in row:
            b = row["before"]
            text += (f"; before {b['checkpoints']}, {(b['bytes_local'] + b['bytes_storage']) / mb:.0f} MB, "
                     f"{b['checkpoint_s']:.1f} s = {b['share']:.0%}; {row['bytes_ratio']:.0f}x fewer bytes")
        lines.append(text)
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hwr-bench checkpoints", description=__doc__.splitlines()[0])
    ap.add_argument("--before", metavar="REF", help="also measure the code of this git commit")
    ap.add_argument("--sections", default="trial,quick", help="trial,quick")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--trainable-from", default="none,block5")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--images", type=int, default=40, help="random images in the trial section's data set")
    ap.add_argument("--trials", type=int, default=3, help="trials (seeds) per policy, one at a time: medians")
    ap.add_argument("--gpu-epoch-s", action="append", metavar="TF=SECONDS",
                    help=f"assumed GPU epoch times for the projection (default: {' '.join(DEFAULT_GPU_EPOCH_S)})")
    ap.add_argument("--work-dir", type=Path, help="keep everything here (default: a temporary folder, deleted)")
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (32 px, 2 epochs, 1-seed quick study): a check")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.sections = args.sections.split(",")
    args.trainable_from = args.trainable_from.split(",")
    if args.quick:
        args.image_size, args.epochs, args.images, args.trials = 32, 3, 20, 1
    gpu = [(s.split("=")[0], float(s.split("=")[1])) for s in (args.gpu_epoch_s or DEFAULT_GPU_EPOCH_S)]
    with tempfile.TemporaryDirectory(prefix="hwr-ckpt-bench-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        res = measure(args, work)
    res["projection"] = project(res, gpu)
    res["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in res["args"].items()}
    print(report(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
