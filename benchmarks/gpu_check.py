"""One GPU check at paper scale, in one command, every figure in one JSON (run it through gpu_check.sh).

    benchmarks/gpu_check.sh --out gpu_check.json [--data-dir ../shared/data/chars74k]
    benchmarks/gpu_check.sh --dry-run --out /tmp/gpu_check.json      # on a CPU, tiny sizes (the test suite)

1. Facts: torch, CUDA, cuDNN, the device (name, memory, SMs, `nvidia-smi`), Ray and Optuna if importable,
   and torch's hub cache: its files, and whether torchvision's VGG16 ImageNet file is among them.
2. Matmul: the best bf16 matmul rate of the device (and fp32), beside its nominal dense bf16 peak.
3. Frozen features: the 224 px conv-base activations of every image (whole base, and blocks 1-4 as the
   paper's block5 fine-tuning freezes them), as the study computes them: images/s and TFLOP/s (2 FLOP per
   multiply-add, counted from VGG16's layers), against the nominal peak and the measured matmul rate.
4. Study slice: the real `run_study` at 224 px, block5 fine-tuned, activation x normalization x 2 seeds,
   5 epochs, `gpu: 0.25` per trial: trials/hour, GPU utilisation sampled every 250 ms by `nvidia-smi`,
   checkpoint bytes and the checkpoint share of the trials' time (as `benchmarks.checkpoints` measures it).

Weights: ImageNet when torch's hub cache holds the file (nothing is downloaded), else a fixed random base
(`weights: none, base_seed: 0`; the same FLOPs and bytes). Data: `--data-dir` or HWR_DATA_DIR, else the
synthetic set (620 images). Each step that fails is recorded in the JSON and the next one still runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.flops import conv_macs

# Nominal dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets.
PEAK_BF16_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.5), ("H100 NVL", 835.5), ("H100", 989.4),
                    ("A100", 312.0), ("L40S", 362.1), ("L4", 121.0), ("A10", 125.0))
VGG16_FILE = "vgg16-397923af.pth"  # torchvision's VGG16_Weights.IMAGENET1K_V1


def nominal_peak(name: str) -> float | None:
    return next((tf for key, tf in PEAK_BF16_TFLOPS if key in name), None)


def facts() -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
                           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                           "cpus": os.cpu_count()}
    for mod in ("torchvision", "ray", "optuna", "pyarrow", "pandas", "scipy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001 - report whatever keeps it from importing
            out[mod] = f"not importable ({type(e).__name__}: {e})"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out["device"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": p.total_memory / 2**30,
                         "sms": p.multi_processor_count, "nominal_bf16_tflops": nominal_peak(p.name)}
    smi = shutil.which("nvidia-smi")
    if smi:
        q = "name,driver_version,memory.total,power.limit,clocks.max.sm,pcie.link.gen.max"
        out["nvidia_smi"] = subprocess.run([smi, f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True,
                                           text=True, timeout=30).stdout.strip()
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    files = sorted(hub.glob("*")) if hub.is_dir() else []
    out["torch_hub_cache"] = {"dir": str(hub), "files": [{"name": f.name, "bytes": f.stat().st_size} for f in files],
                              "vgg16_imagenet": (hub / VGG16_FILE).is_file()}
    return out


def matmul_tflops(device, dtype, n: int, reps: int) -> float:
    import torch

    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps + 1):  # the first is a warm-up
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e12


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def frozen_rate(images, image_size: int, weights: str, device, peak: float | None, matmul: float | None):
    """images/s and TFLOP/s of the frozen part over all images, whole base and blocks 1-4."""
    import torch

    from hwr.config import ModelConfig
    from hwr.features import compute_frozen
    from hwr.model import BLOCK_START, build_model

    out = {}
    for frozen_from in ("none", "block5"):
        cfg = ModelConfig(weights=weights, base_seed=0 if weights == "none" else None, trainable_from=frozen_from)
        model = build_model(cfg, image_size, seed=0).to(device)
        compute_frozen(model, images[:64], device)  # warm-up: cuDNN picks its algorithms
        _sync(device)
        t = time.perf_counter()
        z = compute_frozen(model, images, device)
        _sync(device)
        seconds = time.perf_counter() - t
        tflops = 2 * conv_macs(image_size, BLOCK_START[frozen_from]) * len(images) / seconds / 1e12
        out[frozen_from] = {"images": len(images), "seconds": seconds, "images_per_s": len(images) / seconds,
                            "tflops": tflops, "share_of_nominal_peak": tflops / peak if peak else None,
                            "share_of_measured_matmul": tflops / matmul if matmul else None,
                            "output_gb": z.numel() * 4 / 1e9}
        del model, z
        if device.type == "cuda":
            out[frozen_from]["max_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.empty_cache()
    return out


class GpuSampler:
    """`nvidia-smi` utilisation and memory every 250 ms, in a background process, while the study runs."""

    def __init__(self):
        self.rows: list[tuple[float, float, float]] = []
        smi = shutil.which("nvidia-smi")
        self.proc = subprocess.Popen(
            [smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-lms", "250"],
            stdout=subprocess.PIPE, text=True) if smi else None
        self.thread = threading.Thread(target=self._read, daemon=True) if self.proc else None
        if self.thread:
            self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                util, mem = (float(v) for v in line.split(",")[:2])
            except ValueError:
                continue
            self.rows.append((time.time(), util, mem))

    def stop(self) -> dict[str, Any]:
        if not self.proc:
            return {"available": False}
        self.proc.terminate()
        self.proc.wait(timeout=10)
        utils = sorted(u for _, u, _ in self.rows)
        if not utils:
            return {"available": True, "samples": 0}
        return {"available": True, "samples": len(utils), "mean_util_pct": sum(utils) / len(utils),
                "median_util_pct": utils[len(utils) // 2], "share_of_samples_above_50pct": sum(u > 50 for u in utils)
                / len(utils), "max_memory_used_mib": max(m for _, _, m in self.rows)}


def study_slice(args, weights: str, work: Path) -> dict[str, Any]:
    import ray

    import benchmarks.checkpoints as ckpt
    import study.run as run_mod
    from study.config import study_from_dict

    doc = {
        "name": "gpu-check",
        "data": {"dataset": args.dataset, "image_size": args.image_size,
                 **({"root": str(args.data_dir)} if args.data_dir else {})},
        "model": {"weights": weights, **({"base_seed": 0} if weights == "none" else {}), "trainable_from": "block5"},
        "train": {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "batch_size": 32, "epochs": args.epochs,
                  "evals_per_epoch": 1},  # one report an epoch: trial_stats counts reports as epochs
        "search": {"model.activation": ["relu", "selu"], "model.normalization": args.normalizations,
                   "train.seed": list(range(args.seeds))},
        "resources": {"cpu": args.cpu_per_trial, "gpu": args.gpu_per_trial},
        "run": {"storage_path": str(work / "ray"), "results_dir": str(work / "results")},
    }
    meter, stamps = ckpt.StudyMeter(), {}
    undo = ckpt.attach(run_mod, stamps)
    counter = ckpt.WarningCounter()
    logging.getLogger("ray.tune").addHandler(counter)
    study = study_from_dict(doc, where="gpu check study")
    sampler = GpuSampler()
    t0 = time.time()
    try:
        run_mod.run_study(study, fresh=True, progress=False, callbacks=[meter])
    finally:
        wall = time.time() - t0
        gpu = sampler.stop()
        undo()
        ray.shutdown()
    trials = ckpt.trial_stats(meter.results, meter.checkpoints)
    done = [t for t in trials.values() if t["epochs"] == args.epochs]
    ckpt_s = sum(s for t in trials.values() for s in t["checkpoint_s"] if s is not None)
    timed = sum(t["wall_s"] for t in trials.values())
    return {
        "config": doc, "trials": study.num_trials, "trials_finished": len(done), "wall_s": wall,
        "trials_per_hour": len(done) / wall * 3600, "gpu": gpu,
        "epoch_time_s_median": _median([e for t in trials.values() for e in t["epoch_time_s"]]),
        "checkpoint_bytes_storage": sum(t["storage_bytes"] for t in trials.values()),
        "checkpoint_bytes_local": sum(t["local_bytes"] for t in trials.values()),
        "checkpoints": sum(t["checkpoints"] for t in trials.values()),
        "checkpoint_s": ckpt_s, "trial_time_s": timed, "checkpoint_share": ckpt_s / timed if timed else None,
        "snapshot_warnings": counter.count, "per_trial": trials,
        "seconds_from_start": {k: v - t0 for k, v in stamps.items()},  # Ray up, data, frozen sets (Ray tasks)
    }


def _median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def _step(out: dict[str, Any], name: str, fn, *a):
    t = time.perf_counter()
    try:
        out[name] = fn(*a)
    except Exception as e:  # noqa: BLE001 - one failed step must not lose the others' figures
        out[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
    out.setdefault("step_seconds", {})[name] = time.perf_counter() - t
    print(f"[gpu-check] {name}: {out['step_seconds'][name]:.1f} s"
          + (f" (failed: {out[name]['error']})" if isinstance(out[name], dict) and "error" in out[name] else ""),
          flush=True)
    return out[name]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="benchmarks/gpu_check.sh", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="the JSON to write")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on whatever device is there (32 px, 2 epochs, "
                    "the synthetic set, 2 trials, no GPU share): the check that the script works")
    ap.add_argument("--data-dir", type=Path, default=os.environ.get("HWR_DATA_DIR") or None)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--normalizations", type=lambda s: s.split(","), default=["none", "per_image"])
    ap.add_argument("--gpu-per-trial", type=float, default=0.25)
    ap.add_argument("--cpu-per-trial", type=float, default=2)
    ap.add_argument("--work-dir", type=Path, help="caches and the experiment (default: a temporary folder, deleted)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.dry_run:
        args.image_size, args.epochs, args.seeds, args.gpu_per_trial, args.cpu_per_trial = 32, 2, 1, 0.0, 1
        args.data_dir, args.normalizations = None, ["none"]
    args.dataset = "chars74k" if args.data_dir else "synthetic"
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="hwr-gpu-check-") as tmp:
        work = args.work_dir or Path(tmp)
        os.environ["HWR_CACHE_DIR"] = str(work / "cache")  # decoded images and frozen sets start empty
        out: dict[str, Any] = {"dry_run": args.dry_run, "args": {k: str(v) for k, v in vars(args).items()}}
        info = _step(out, "facts", facts)

        import torch

        from hwr.config import DataConfig
        from hwr.train import load_data, pick_device

        device = pick_device()
        weights = "imagenet" if info.get("torch_hub_cache", {}).get("vgg16_imagenet") else "none"
        out["weights"] = weights
        peak = (info.get("device") or {}).get("nominal_bf16_tflops")
        n = 8192 if device.type == "cuda" else 256
        mm = _step(out, "matmul", lambda: {
            "n": n, "bf16_tflops": matmul_tflops(device, torch.bfloat16, n, 10 if device.type == "cuda" else 2),
            "fp32_tflops": matmul_tflops(device, torch.float32, n, 10 if device.type == "cuda" else 2),
            "nominal_bf16_tflops": peak})
        data_cfg = DataConfig(dataset=args.dataset, root=str(args.data_dir) if args.data_dir else None,
                              image_size=args.image_size)
        data = _step(out, "decode", lambda: load_data(data_cfg, progress=False))
        if not isinstance(data, dict):
            out["decode"] = {"images": len(data.images), "dataset": args.dataset}
            measured = mm.get("bf16_tflops") if isinstance(mm, dict) else None
            images = data.images[:64] if args.dry_run else data.images
            _step(out, "frozen_features", frozen_rate, images, args.image_size, weights, device, peak, measured)
        _step(out, "study", study_slice, args, weights, work)
    out["wall_s"] = time.time() - t_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(out, indent=1, default=str))
    os.replace(tmp_out, args.out)
    failed = [k for k, v in out.items() if isinstance(v, dict) and "error" in v]
    print(f"[gpu-check] wrote {args.out} in {out['wall_s']:.0f} s" + (f"; failed steps: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
