"""Naive pipeline vs ours on the same data and config, in one invocation: a benchmark, not a test.

    python -m benchmarks.bench --data-dir /work/shared/data/chars74k      # the default study, ~7 min on 2 cores
    python -m benchmarks.bench --quick                                     # tiny synthetic version (the test runs it)
    hwr-study bench [same flags]

What runs (each measured part in its own fresh Python process, so imports, start-up and peak memory
are its own; `resource.getrusage` maxrss of that process and of its reaped children):

  floor     a large fp32 matmul's FLOP/s with torch: the machine's reference.
  naive     what the usual Chars74K / Ray-CIFAR-example code does: an ImageFolder-like Dataset over the PNG
            paths that PIL-decodes and transforms (grayscale, resize to S, ToTensor, 3 channels, the same
            normalization) on every access, a DataLoader with workers, and the whole VGG16 forward every
            step (frozen conv params have requires_grad=False, but the forward is not under no_grad), the
            same HWRNet, optimizer, lr, batch size, epochs, seed and sample order. Trials run one after
            another (each with all cores for torch plus the loader workers). By default one trial is run
            and the study's cost is extrapolated from it (the report says so).
  study     ours, the real `hwr-study run` machinery: `run_study(study, fresh=True)` on a generated study
            (activation x normalization x seed), storage in a temporary folder. `cold` runs with an empty
            HWR_CACHE_DIR (decode and frozen features computed), `warm` is a second run of the same study
            (fresh experiment, warm data and feature caches). Only timing wrappers are added: around
            init_ray, load_data and shared_features in study.run, and a Tune callback (appended to
            run_config's) that stamps each reported epoch as the driver receives it.
  stages    ours in one process without Ray (`load_data` + `fit`, as `hwr train` does, minus checkpoints),
            timing each stage by wrapping the functions fit calls; its losses are compared with naive's.
  head      224 px frozen base: the frozen features of the training images exist, time one head-training
            epoch over them; the frozen-feature computation's achieved FLOP/s against the matmul reference.

Time to the first training step of the study is estimated as (driver's arrival time of the first
epoch-1 result) - (that result's epoch_time_s): the moment the trial's first epoch began, plus the
checkpoint/report latency, so an upper bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# torchvision's vgg16().features: each int is a 3x3 conv (+ ReLU: two layers), "M" a 2x2 max-pool (one layer).
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
FROZEN_ALL = 31  # hwr.model.BLOCK_START["none"]: the whole conv base is frozen
PAPER_GFLOP_224 = 15.5  # the usual "VGG16 = 15.5 GFLOPs at 224 px" figure (it counts multiply-adds)
HIDDEN, NUM_CLASSES = 1024, 62
KIB = 1024


class BenchError(RuntimeError):
    """The benchmark cannot run, explained in one sentence."""


# ------------------------------------------------------------------------------------------ FLOP counts


def conv_macs(image_size: int, depth: int = FROZEN_ALL) -> int:
    """Multiply-adds per image of the first `depth` layers of VGG16's conv base at image_size px."""
    macs, side, cin, layer = 0, image_size, 3, 0
    for v in VGG16_CFG:
        if layer >= depth:
            break
        if v == "M":
            side //= 2
            layer += 1
        else:
            macs += side * side * cin * v * 9
            cin = v
            layer += 2
    return macs


def head_macs(image_size: int) -> dict[str, int]:
    """Multiply-adds per image of the head: forward, and a training step (forward + weight grads + input
    grads of all but the first layer, whose input needs none when the conv base is frozen)."""
    dims = [512 * (image_size // 32) ** 2, HIDDEN, HIDDEN, NUM_CLASSES]
    per_layer = [a * b for a, b in zip(dims[:-1], dims[1:])]
    fwd = sum(per_layer)
    return {"forward": fwd, "train_step": fwd + fwd + (fwd - per_layer[0])}


# ------------------------------------------------------------------------------------------ naive pipeline


class ToThreeChannels:
    """[1, S, S] -> [3, S, S], as InputNorm's expand (a copy, as a typical repo's repeat does)."""

    def __call__(self, x):
        return x.expand(3, -1, -1).contiguous()


class PerImageStandardize:
    """(x - mean) / (std + 1e-6) over the image, InputNorm's 'per_image' (before the channels are copied)."""

    def __call__(self, x):
        return (x - x.mean()) / (x.std() + 1e-6)


def naive_transform(image_size: int, normalization: str):
    """torchvision transforms giving, from a PIL image, what HWRNet.normalize gives from hwr's uint8 array."""
    from torchvision import transforms as T

    from hwr.model import IMAGENET_MEAN, IMAGENET_STD

    steps = [
        T.Grayscale(num_output_channels=1),
        T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.ToTensor(),
    ]
    if normalization == "per_image":
        steps.append(PerImageStandardize())
    steps.append(ToThreeChannels())
    if normalization == "imagenet":
        steps.append(T.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return T.Compose(steps)


class NaiveImages:
    """ImageFolder-like map-style dataset over the PNG paths: every access opens the file with PIL (RGB, as
    torchvision's default loader does) and runs the transforms."""

    def __init__(self, samples, transform):
        self.paths = [str(s.path) for s in samples]
        self.labels = [int(s.label) for s in samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with open(self.paths[i], "rb") as f:
            image = Image.open(f).convert("RGB")
        return self.transform(image), self.labels[i]


def naive_forward(model, x):
    """The whole network every step: conv base (frozen params, but tracked by autograd's forward) + head.
    HWRNet.forward would run the frozen part under no_grad; the naive loop does not."""
    return model.head(model.features(x))


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its reaped descendants so far."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _loader(dataset, indices, batch_size: int, num_workers: int):
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=batch_size, sampler=list(map(int, indices)), num_workers=num_workers)


def naive_decode_pass(dataset, indices, batch_size: int, num_workers: int) -> dict[str, float]:
    """Time one pass of the DataLoader alone (decode + transforms, no model): what every naive epoch redoes."""
    t, cpu = time.perf_counter(), cpu_seconds()
    n = 0
    for _x, y in _loader(dataset, indices, batch_size, num_workers):
        n += len(y)
    return {"images": n, "s": time.perf_counter() - t, "cpu_s": cpu_seconds() - cpu}


def naive_trial(cfg, dataset, splits, num_workers: int, device=None) -> dict[str, Any]:
    """One trial the naive way, same model, optimizer, sample order and epochs as hwr.train.fit."""
    import torch
    import torch.nn.functional as F

    from hwr.model import build_model
    from hwr.train import EVAL_BATCH, _epoch_seed, _optimizer

    device = device or torch.device("cpu")
    t_start, cpu_start = time.perf_counter(), cpu_seconds()
    model = build_model(cfg.model, cfg.data.image_size, seed=cfg.train.seed).to(device)
    opt = _optimizer(model, cfg)

    def evaluate(indices) -> tuple[float, float]:
        model.eval()
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for x, y in _loader(dataset, indices, EVAL_BATCH, num_workers):
                x, y = x.to(device), y.to(device)
                logits = naive_forward(model, x)
                loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
                correct += (logits.argmax(1) == y).sum().item()
        n = max(len(indices), 1)
        return loss_sum / n, correct / n

    history, train_s, eval_s = [], [], []
    best_acc, best_state, first_step, diverged = None, None, None, False
    for epoch in range(1, cfg.train.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        seed = _epoch_seed(cfg.train.seed, epoch)
        torch.manual_seed(seed)
        order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(seed)).numpy()
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in _loader(dataset, splits.train[order], cfg.train.batch_size, num_workers):
            if first_step is None:
                first_step = time.perf_counter() - t_start
            x, y = x.to(device), y.to(device)
            logits = naive_forward(model, x)
            loss = F.cross_entropy(logits.float(), y)
            if not torch.isfinite(loss):
                diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        t1 = time.perf_counter()
        val_loss, val_acc = evaluate(splits.val) if not diverged else (float("nan"), float("nan"))
        t2 = time.perf_counter()
        train_s.append(t1 - t0)
        eval_s.append(t2 - t1)
        history.append({"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                        "val_loss": val_loss, "val_acc": val_acc})
        if diverged:
            break
        if best_acc is None or val_acc > best_acc:
            best_acc, best_state = val_acc, model.trainable_state()
    t3 = time.perf_counter()
    test_loss = test_acc = None
    if best_state is not None:
        model.load_trainable_state(best_state)
        test_loss, test_acc = evaluate(splits.test)
    t4 = time.perf_counter()
    return {
        "config": {"activation": cfg.model.activation, "normalization": cfg.model.normalization,
                   "seed": cfg.train.seed},
        "train_epoch_s": train_s, "eval_val_s": eval_s, "test_s": t4 - t3, "total_s": t4 - t_start,
        "cpu_s": cpu_seconds() - cpu_start,
        "first_step_s": first_step, "history": history, "test_acc": test_acc, "test_loss": test_loss,
        "diverged": diverged,
    }


# ------------------------------------------------------------------------------------------ workers
# Each runs in its own process: `python -m benchmarks.bench _worker KIND SPEC.json OUT.json`.


def _work_floor(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    n, reps = spec["n"], spec["reps"]
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    out = {"n": n, "gflops": 2 * n**3 / best / 1e9, "best_s": best, "threads": torch.get_num_threads(),
           "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        out["cuda_device"] = torch.cuda.get_device_name()
        for dtype in (torch.float32, torch.bfloat16):
            g = torch.randn(8192, 8192, device="cuda", dtype=dtype)
            g @ g
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(10):
                g @ g
            torch.cuda.synchronize()
            out[f"cuda_{str(dtype).split('.')[-1]}_tflops"] = 10 * 2 * 8192**3 / (time.perf_counter() - t) / 1e12
    return out


def _naive_setup(spec: dict[str, Any]):
    import numpy as np

    from hwr.config import config_from_dict
    from hwr.data import make_splits, scan

    cfgs = [config_from_dict(c, where="bench naive config") for c in spec["configs"]]
    samples = scan(spec["root"])
    labels = np.array([s.label for s in samples], dtype=np.int64)
    writers = np.array([s.writer for s in samples], dtype=np.int64)
    splits = make_splits(labels, writers, cfgs[0].data.split, cfgs[0].data.split_seed)
    return cfgs, samples, splits


def _work_naive(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    cfgs, samples, splits = _naive_setup(spec)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    startup = time.time() - spec["t_spawn"]
    nw = spec["num_workers"]
    out: dict[str, Any] = {"startup_s": startup, "startup_cpu_s": cpu_seconds(),
                           "threads": torch.get_num_threads(), "num_workers": nw,
                           "device": str(device), "splits": [len(splits.train), len(splits.val), len(splits.test)]}
    if spec["decode_pass"]:
        ds = NaiveImages(samples, naive_transform(cfgs[0].data.image_size, cfgs[0].model.normalization))
        out["decode_pass"] = naive_decode_pass(ds, np.concatenate([splits.train, splits.val]),
                                               cfgs[0].train.batch_size, nw)
    trials = []
    for cfg in cfgs:
        ds = NaiveImages(samples, naive_transform(cfg.data.image_size, cfg.model.normalization))
        trials.append(naive_trial(cfg, ds, splits, nw, device))
    out["trials"] = trials
    # process start -> first step of the first trial, leaving out the separate decode-only pass
    out["first_step_from_spawn_s"] = startup + trials[0]["first_step_s"]
    return out


def _work_stages(spec: dict[str, Any]) -> dict[str, Any]:
    """Ours in one process, as `hwr train` runs (load_data + fit), each stage timed by a wrapper."""
    import torch

    import hwr.train as train_mod
    from hwr.config import config_from_dict
    from hwr.data import cache_file

    cfg = config_from_dict(spec["config"], where="bench stages config")
    arrays_hit = cache_file(spec["root"], cfg.data.image_size).exists()
    t_ready = time.time()
    t = time.perf_counter()
    data = train_mod.load_data(cfg.data, progress=False)
    decode_s = time.perf_counter() - t

    times: dict[str, list[float]] = {"features": [], "train": [], "eval": []}
    marks: dict[str, float] = {}
    originals = {n: getattr(train_mod, n) for n in ("frozen_features", "_train_epoch", "evaluate")}

    def timed(name: str, label: str):
        fn = originals[name]

        def wrapper(*args, **kwargs):
            marks.setdefault(label, time.time())
            t0 = time.perf_counter()
            result = fn(*args, **kwargs)
            times[label].append(time.perf_counter() - t0)
            return result

        return wrapper

    features_hit = None
    if cfg.model.trainable_from != "all":
        from hwr.data import default_cache_dir
        from hwr.features import frozen_key

        key = frozen_key(cfg, data.key)
        device = train_mod.pick_device()
        features_hit = (default_cache_dir() / "features" / f"{key}-{device.type}.npy").exists()
    train_mod.frozen_features = timed("frozen_features", "features")
    train_mod._train_epoch = timed("_train_epoch", "train")
    train_mod.evaluate = timed("evaluate", "eval")
    try:
        t = time.perf_counter()
        result = train_mod.fit(cfg, data)
        fit_s = time.perf_counter() - t
    finally:
        for n, fn in originals.items():
            setattr(train_mod, n, fn)
    evals = times["eval"]
    return {
        "startup_s": t_ready - spec["t_spawn"], "threads": torch.get_num_threads(), "device": result.device,
        "decode_s": decode_s, "decode_cache_hit": arrays_hit,
        "features_s": sum(times["features"]), "features_cache_hit": features_hit,
        "train_epoch_s": times["train"], "eval_val_s": evals[: len(times["train"])],
        "test_s": sum(evals[len(times["train"]):]), "fit_s": fit_s,
        "trial_s": decode_s + fit_s,
        "first_step_from_spawn_s": marks["train"] - spec["t_spawn"],
        "history": [{k: r[k] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")}
                    for r in result.history],
        "test_acc": result.test_acc,
    }


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

    ResultClock.__module__ = __name__
    ResultClock.__qualname__ = "ResultClock"
    return ResultClock


def __getattr__(name: str):
    # ResultClock subclasses ray.tune.Callback; made on first use so that importing this module needs no Ray,
    # and found here by pickle (Tune pickles the run config with its callbacks).
    if name == "ResultClock":
        cls = _make_result_clock()
        globals()[name] = cls
        return cls
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


def _work_study(spec: dict[str, Any]) -> dict[str, Any]:
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
    names = [n for n in ("init_ray", "load_data", "shared_features", "run_config") if hasattr(run_mod, n)]
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
        keys = sorted({k for cfg in study.trial_configs() if (k := frozen_key(cfg, data.key)) is not None})
        for k in keys:  # a set is warm when its .npy is already on disk (any device suffix)
            per_key.append({"key": k, "cache_hit": any(folder.glob(f"{k}-*.npy")), "images": len(data.images)})
        return timed("shared_features")(study, data, *args, **kwargs)

    clock = __getattr__("ResultClock")()

    def run_config_with_clock(study):
        cfg = originals["run_config"](study)
        cfg.callbacks = [*(cfg.callbacks or []), clock]
        return cfg

    for name in ("init_ray", "load_data"):
        if name in originals:
            setattr(run_mod, name, timed(name))
    if "shared_features" in originals:
        run_mod.shared_features = shared_features_timed
    run_mod.run_config = run_config_with_clock
    study = study_from_dict(spec["study"], where="bench study")
    t_call = time.time()
    try:
        run_mod.run_study(study, fresh=True, progress=False)
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


def _work_head(spec: dict[str, Any]) -> dict[str, Any]:
    """224 px frozen base: frozen features of the training images, then one (and a second) head epoch."""
    import numpy as np
    import torch
    from PIL import Image

    from hwr.config import config_from_dict
    from hwr.data import Splits, make_splits, preprocess, scan
    from hwr.features import compute_frozen
    from hwr.model import build_model
    from hwr.train import TrainingData, _Inputs, _optimizer, _train_epoch

    cfg = config_from_dict(spec["config"], where="bench head config")
    size = cfg.data.image_size
    samples = scan(spec["root"])
    labels = np.array([s.label for s in samples], dtype=np.int64)
    writers = np.array([s.writer for s in samples], dtype=np.int64)
    train = make_splits(labels, writers, cfg.data.split, cfg.data.split_seed).train
    n_train = len(train)
    k = n_train if spec["images"] in (None, "all") else min(int(spec["images"]), n_train)

    t = time.perf_counter()
    images = np.empty((k, size, size), dtype=np.uint8)
    for i, j in enumerate(train[:k]):
        with Image.open(samples[j].path) as im:
            images[i] = preprocess(im, size)
    decode_s = time.perf_counter() - t

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(cfg.model, size, seed=cfg.train.seed).to(device)
    t = time.perf_counter()
    z = compute_frozen(model, images, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    features_s = time.perf_counter() - t
    if k < n_train:  # the head's cost does not depend on the values: the k real rows, repeated
        z = z[torch.arange(n_train) % k]
    data = TrainingData(images=np.zeros((n_train, 1, 1), np.uint8), labels=labels[train],
                        splits=Splits(np.arange(n_train), np.zeros(0, np.int64), np.zeros(0, np.int64)),
                        key="bench-head")
    inputs = _Inputs(model, data, device, z)
    opt = _optimizer(model, cfg)
    epochs = []
    for epoch in (1, 2):
        t = time.perf_counter()
        loss, acc, diverged = _train_epoch(model, inputs, opt, data.splits.train, cfg, epoch, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        epochs.append({"epoch": epoch, "s": time.perf_counter() - t, "train_loss": loss, "diverged": diverged})
    return {"image_size": size, "train_images": n_train, "feature_images": k, "tiled": k < n_train,
            "decode_s": decode_s, "features_s": features_s, "feature_shape": list(z.shape[1:]),
            "threads": torch.get_num_threads(), "device": str(device), "epochs": epochs}


WORKERS = {"floor": _work_floor, "naive": _work_naive, "stages": _work_stages, "study": _work_study,
           "head": _work_head}


def _vmhwm_mib() -> float | None:
    """Peak RSS of this process's own address space since exec (/proc/self/status VmHWM), Linux only."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / KIB
    except OSError:
        pass
    return None


def _run_worker(kind: str, spec_path: str, out_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    result = WORKERS[kind](spec)
    result["maxrss_self_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB
    result["maxrss_children_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / KIB
    result["vmhwm_self_mib"] = _vmhwm_mib()
    # CPU time of the worker and its reaped children (DataLoader workers yes; Ray's worker processes are
    # not all reaped here, so for the study this undercounts: it is kept in the JSON, not compared)
    result["cpu_s"] = cpu_seconds()
    try:
        import torch

        if torch.cuda.is_available():
            result["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    except ImportError:
        pass
    tmp = Path(out_path).with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=float))
    os.replace(tmp, out_path)
    return 0


# ------------------------------------------------------------------------------------------ driver


class Runner:
    """Starts workers in fresh processes with their own environment, logs in work_dir/logs."""

    def __init__(self, work_dir: Path, verbose: bool = True):
        self.work_dir = work_dir
        self.verbose = verbose
        (work_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.count = 0

    def say(self, text: str) -> None:
        if self.verbose:
            print(text, file=sys.stderr, flush=True)

    def __call__(self, kind: str, spec: dict[str, Any], env: dict[str, str] | None = None,
                 label: str | None = None) -> dict[str, Any]:
        self.count += 1
        name = f"{self.count:02d}-{label or kind}"
        spec_path = self.work_dir / "logs" / f"{name}.spec.json"
        out_path = self.work_dir / "logs" / f"{name}.out.json"
        log_path = self.work_dir / "logs" / f"{name}.log"
        full_env = os.environ.copy()
        full_env.update(env or {})
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        self.say(f"[bench] {name} ... (log: {log_path})")
        load = os.getloadavg()
        spec = {**spec, "t_spawn": time.time()}
        spec_path.write_text(json.dumps(spec, indent=1))
        cmd = [sys.executable, "-m", "benchmarks.bench", "_worker", kind, str(spec_path), str(out_path)]
        with open(log_path, "w") as log:
            rc = subprocess.run(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT).returncode
        wall = time.time() - spec["t_spawn"]
        if rc != 0 or not out_path.exists():
            tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-30:])
            raise BenchError(f"the {name} step failed (exit {rc}); the end of {log_path}:\n{tail}")
        out = json.loads(out_path.read_text())
        out["process_wall_s"] = wall
        out["loadavg_before"] = load[0]
        out["loadavg_after"] = os.getloadavg()[0]
        self.say(f"[bench] {name} done in {wall:.1f} s")
        return out


def machine_info() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in text.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu_model": model, "cpus": os.cpu_count(), "cpus_usable": usable, "python": platform.python_version(),
            "platform": platform.platform(), "mem_gib": _mem_gib()}


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _parse_list(text: str, kind=str) -> list:
    return [kind(v.strip()) for v in text.split(",") if v.strip()]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="hwr-study bench",
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
    ap.add_argument("--sections", default="floor,naive,study,stages,head",
                    help="which to run, comma-separated from floor,naive,study,stages,head")
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
                  "epochs": args.epochs},
        "search": {"model.activation": _parse_list(args.activations),
                   "model.normalization": _parse_list(args.normalizations),
                   "train.seed": _parse_list(args.seeds, int)},
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


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen sections; returns every figure (also printed by `report`)."""
    from study.config import study_from_dict

    sections = set(_parse_list(args.sections))
    unknown = sections - {"floor", "naive", "study", "stages", "head"}
    if unknown:
        raise BenchError(f"unknown section(s) {', '.join(sorted(unknown))}; choose from floor,naive,study,stages,head.")
    own_work = args.work_dir is None
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="hwr-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"  # HWR_CACHE_DIR of every worker: empty at the start = cold
    if cache.exists() and any(cache.iterdir()):
        raise BenchError(f"{cache} is not empty; give --work-dir a new folder so that the cold run is cold.")
    try:
        return _run_sections(args, sections, work, cache, study_from_dict)
    finally:
        if not args.keep and own_work:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep or not own_work:
            print(f"[bench] work folder kept: {work}", file=sys.stderr)


def _run_sections(args, sections, work: Path, cache: Path, study_from_dict) -> dict[str, Any]:
    from hwr.data import find_root, has_images, write_synthetic

    runner = Runner(work, verbose=not args.quiet)
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
    auto_gpu = args.gpu_per_trial is None
    study = study_from_dict(raw, where="bench study")
    configs = [c.to_dict() for c in study.trial_configs()]
    n_naive = len(configs) if args.naive_trials == "all" else max(1, min(int(args.naive_trials), len(configs)))

    res: dict[str, Any] = {"machine": machine_info(), "data_dir": str(root), "quick": args.quick,
                           "settings": {"image_size": args.image_size, "epochs": args.epochs,
                                        "batch_size": args.batch_size, "optimizer": args.optimizer, "lr": args.lr,
                                        "weights": args.weights, "trainable_from": "none",
                                        "base_seed": raw["model"].get("base_seed"),
                                        "search": raw["search"], "trials": study.num_trials,
                                        "naive_trials_run": n_naive, "naive_workers": args.naive_workers,
                                        "cpu_per_trial": raw["resources"]["cpu"],
                                        "gpu_per_trial": "auto" if auto_gpu else raw["resources"]["gpu"],
                                        "worker_env": list(args.worker_env)},
                           "work_dir": str(work)}
    t_all = time.time()
    if "floor" in sections:
        res["floor"] = runner("floor", {"n": args.matmul_n, "reps": 5}, env)
    if "naive" in sections:
        res["naive"] = runner("naive", {"root": str(root), "configs": configs[:n_naive],
                                        "num_workers": args.naive_workers, "decode_pass": True}, env)
    if "study" in sections:
        res["study_cold"] = runner("study", {"study": raw, "auto_gpu": auto_gpu}, env, label="study-cold")
    if "stages" in sections:
        res["stages"] = runner("stages", {"root": str(root), "config": configs[0]}, env)
    if "study" in sections:
        res["study_warm"] = runner("study", {"study": raw, "auto_gpu": auto_gpu}, env, label="study-warm")
    if "head" in sections:
        head_cfg = {**configs[0], "data": {**configs[0]["data"], "image_size": args.head_size}}
        res["head"] = runner("head", {"root": str(root), "config": head_cfg, "images": args.head_images}, env)
    if "floor" in sections:  # again at the end; the better of the two is the machine's reference
        res["floor_end"] = runner("floor", {"n": args.matmul_n, "reps": 5}, env, label="floor-end")
    res["bench_wall_s"] = time.time() - t_all
    derive(res, args)
    return res


def derive(res: dict[str, Any], args) -> None:
    """Ratios, extrapolation, FLOP/s and target checks from the raw figures (added in place)."""
    s = res["settings"]
    size, trials = s["image_size"], s["trials"]
    flops_img = 2 * conv_macs(size)
    d: dict[str, Any] = {"conv_gmac_per_image": conv_macs(size) / 1e9,
                         "conv_gmac_per_image_224": conv_macs(224) / 1e9}
    floor = max([res[k]["gflops"] for k in ("floor", "floor_end") if k in res], default=None)
    d["matmul_gflops"] = floor
    naive = res.get("naive")
    if naive:
        per_trial = _mean([t["total_s"] for t in naive["trials"]])
        d["naive_per_trial_s"] = per_trial
        d["naive_study_s"] = naive["startup_s"] + trials * per_trial
        d["naive_study_extrapolated"] = len(naive["trials"]) < trials
        d["naive_study_cpu_s"] = naive["startup_cpu_s"] + trials * _mean([t["cpu_s"] for t in naive["trials"]])
        n_tr, n_val, n_test = naive["splits"]
        forwards = trials * (s["epochs"] * (n_tr + n_val) + n_test)
        d["naive_study_conv_forwards"] = forwards
        if floor:
            d["naive_study_floor_s"] = forwards * flops_img / (floor * 1e9)
    for which in ("study_cold", "study_warm"):
        if which in res and naive:
            d[f"ratio_{which}"] = d["naive_study_s"] / res[which]["total_from_spawn_s"]
    cold = res.get("study_cold")
    if cold and cold["features_per_key"] and cold["features_total_s"]:
        computed = [k for k in cold["features_per_key"] if not k["cache_hit"]]
        d["feature_sets"] = len(cold["features_per_key"])
        if len(computed) == len(cold["features_per_key"]):  # all computed in this run: a clean throughput
            n_img = sum(k["images"] for k in computed)
            d["features_gflops"] = n_img * flops_img / cold["features_total_s"] / 1e9
            d["features_s_per_set"] = cold["features_total_s"] / len(computed)
            if floor:
                d["features_floor_s_per_set"] = computed[0]["images"] * flops_img / (floor * 1e9)
    head = res.get("head")
    if head:
        hs = head["image_size"]
        d["head_features_gflops"] = head["feature_images"] * 2 * conv_macs(hs) / head["features_s"] / 1e9
        d["head_features_s_per_image"] = head["features_s"] / head["feature_images"]
        d["head_all_features_s_estimate"] = 3410 / 2273 * head["train_images"] * d["head_features_s_per_image"]
        d["head_epoch_gflop"] = head["train_images"] * 2 * head_macs(hs)["train_step"] / 1e9
        if floor:
            d["head_epoch_floor_s"] = d["head_epoch_gflop"] / floor
            d["head_features_vs_matmul"] = d["head_features_gflops"] / floor
    if floor and "features_gflops" in d:
        d["features_vs_matmul"] = d["features_gflops"] / floor

    targets = {}
    if "ratio_study_cold" in d:
        targets["cold >= 10x naive"] = {"value": d["ratio_study_cold"], "met": d["ratio_study_cold"] >= 10}
    if "ratio_study_warm" in d:
        targets["warm >= 50x naive"] = {"value": d["ratio_study_warm"], "met": d["ratio_study_warm"] >= 50}
    warm = res.get("study_warm")
    if warm and "first_step_from_spawn_s" in warm:
        v = warm["first_step_from_spawn_s"]
        targets["warm first step < 5 s (from process start)"] = {"value": v, "met": v < 5}
        v = warm["first_step_from_run_study_s"]
        targets["warm first step < 5 s (from run_study call)"] = {"value": v, "met": v < 5}
    if head and head["image_size"] == 224:
        v = head["epochs"][0]["s"]
        targets["224 px head epoch <= 5 s"] = {"value": v, "met": v <= 5}
    d["targets"] = targets
    res["derived"] = d


# ------------------------------------------------------------------------------------------ report


def _f(v, unit: str = "s", digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f} {unit}".rstrip()


def report(res: dict[str, Any]) -> str:
    d, s, m = res["derived"], res["settings"], res["machine"]
    lines = [
        "hwr-study bench: naive pipeline vs ours",
        f"machine: {m['cpu_model']}, {m['cpus_usable']} CPUs, {_f(m['mem_gib'], 'GiB', 0)}, python {m['python']}"
        + (f", torch {res['floor']['torch']} ({res['floor']['threads']} threads)" if "floor" in res else ""),
        f"data: {res['data_dir']}{' (synthetic, --quick)' if res['quick'] else ''}",
        f"config: {s['image_size']} px, weights={s['weights']}"
        + (f" (base_seed {s['base_seed']})" if s.get("base_seed") is not None else "")
        + f", trainable_from=none, {s['optimizer']} lr={s['lr']}, "
        f"batch {s['batch_size']}, {s['epochs']} epochs; grid {s['search']} = {s['trials']} trials",
    ]
    if s.get("worker_env"):
        lines.append(f"extra environment of the measured processes: {' '.join(s['worker_env'])}")
    if "floor" in res:
        f = res["floor"]
        again = f" and {res['floor_end']['gflops']:.1f} at the end" if "floor_end" in res else ""
        lines.append(f"floor: fp32 matmul {f['n']}x{f['n']}: {f['gflops']:.1f} GFLOP/s at the start{again} "
                     f"({f['threads']} threads; reference = {d['matmul_gflops']:.1f}); VGG16 conv base = "
                     f"{d['conv_gmac_per_image_224']:.2f} GMAC = {2 * d['conv_gmac_per_image_224']:.1f} GFLOP per "
                     f"224 px image ({d['conv_gmac_per_image']:.3f} GMAC at {s['image_size']} px)")
        if f.get("cuda"):
            lines.append(f"       GPU {f.get('cuda_device')}: fp32 {f.get('cuda_float32_tflops', 0):.1f} TFLOP/s, "
                         f"bf16 {f.get('cuda_bfloat16_tflops', 0):.1f} TFLOP/s")
    naive, stages = res.get("naive"), res.get("stages")
    cold, warm = res.get("study_cold"), res.get("study_warm")
    if naive or stages:
        lines += ["", "Per stage, one trial (both in one process each, no Ray; ours = load_data + fit):",
                  f"  {'stage':<30}{'naive':>16}{'ours':>16}{'naive/ours':>12}"]

        def row(name, a, b, note=""):
            ratio = f"{a / b:.0f}x" if a is not None and b else "-"
            lines.append(f"  {name:<30}{_f(a):>16}{_f(b, digits=2):>16}{ratio:>12}  {note}".rstrip())

        nt = naive["trials"][0] if naive else None
        dp = naive.get("decode_pass") if naive else None
        if dp:
            lines.append(f"  {'decode (train+val, 1 epoch)':<30}{_f(dp['s']):>16}{'':>16}{'':>12}  "
                         f"naive: {dp['images']} PNGs, DataLoader with {naive['num_workers']} workers, every epoch")
        if cold:
            lines.append(f"  {'decode (all, once)':<30}{'':>16}{_f(cold['decode_s'], digits=2):>16}{'':>12}  "
                         f"ours cold: every image once, into the array cache")
        if stages:
            label = "decode (cache read)" if stages["decode_cache_hit"] else "decode (all, once)"
            lines.append(f"  {label:<30}{'':>16}{_f(stages['decode_s'], digits=2):>16}{'':>12}  "
                         f"ours, stages run ({'warm: array cache hit' if stages['decode_cache_hit'] else 'cold'})")
        if "features_s_per_set" in d:
            lines.append(f"  {'frozen features (per set)':<30}{'every step':>16}"
                         f"{_f(d['features_s_per_set'], digits=1):>16}{'':>12}  ours cold: all images once per "
                         f"(weights, normalization{'' if s.get('base_seed') is not None else ', seed'}); "
                         f"{d['feature_sets']} sets in "
                         f"{cold['features_total_s']:.1f} s, as the pipeline schedules them")
        if stages:
            hit = stages["features_cache_hit"]
            label = "frozen features (cache read)" if hit else "frozen features (one set)"
            lines.append(f"  {label:<30}{'':>16}{_f(stages['features_s'], digits=2):>16}"
                         f"{'':>12}  ours, stages run ({'warm: feature cache hit' if hit else 'cold: computed'})")
        row("train epoch (mean)", _mean(nt["train_epoch_s"]) if nt else None,
            _mean(stages["train_epoch_s"]) if stages else None)
        row("eval on val (mean)", _mean(nt["eval_val_s"]) if nt else None,
            _mean(stages["eval_val_s"]) if stages else None)
        row("test eval", nt["test_s"] if nt else None, stages["test_s"] if stages else None)
        row("whole trial", nt["total_s"] if nt else None, stages["trial_s"] if stages else None,
            "ours: load_data + fit, warm caches")
        if nt and stages:
            diffs = [abs(a["train_loss"] - b["train_loss"]) for a, b in zip(nt["history"], stages["history"])]
            lines.append(f"  same numbers: |train_loss naive - ours| per epoch <= {max(diffs):.2e}; val_acc "
                         f"naive {[round(h['val_acc'], 4) for h in nt['history']]} ours "
                         f"{[round(h['val_acc'], 4) for h in stages['history']]}")
    if naive or cold or warm:
        lines += ["", f"The study ({s['trials']} trials, from process start to run_study's return):"]
        if naive:
            how = (f"extrapolated: {len(naive['trials'])} trial(s) run, sequentially; startup "
                   f"{naive['startup_s']:.1f} s + {s['trials']} x {d['naive_per_trial_s']:.1f} s per trial"
                   if d["naive_study_extrapolated"] else
                   f"all {s['trials']} trials run, sequentially")
            lines.append(f"  naive       {_f(d['naive_study_s']):>10}   ({how})")
            if "naive_study_floor_s" in d:
                lines.append(f"              floor of its conv forwards alone at the matmul rate: "
                             f"{_f(d['naive_study_floor_s'])} ({d['naive_study_conv_forwards']} image forwards)")
        for name, r in (("ours cold", cold), ("ours warm", warm)):
            if not r:
                continue
            ratio = d.get(f"ratio_study_{name.split()[1]}")
            lines.append(
                f"  {name:<11} {_f(r['total_from_spawn_s']):>10}   "
                + (f"naive/ours = {ratio:.1f}x; " if ratio else "")
                + f"imports {r['import_s']:.1f} s, ray.init {r['ray_init_s']:.1f} s, decode {r['decode_s']:.1f} s, "
                f"features {r['features_total_s']:.1f} s, run_study {r['run_study_s']:.1f} s; "
                f"{r['cpu_per_trial']:g} CPU per trial, mean epoch_time_s {_f(r['epoch_time_s_mean'], digits=2)}")
        lines.append("  time to first training step (from process start | from run_study call):")
        if naive:
            lines.append(f"    naive      {_f(naive['first_step_from_spawn_s'])}")
        if stages:
            lines.append(f"    ours, one process without Ray, warm: {_f(stages['first_step_from_spawn_s'])}")
        for name, r in (("ours cold", cold), ("ours warm", warm)):
            if r and "first_step_from_spawn_s" in r:
                lines.append(f"    {name:<10} {_f(r['first_step_from_spawn_s'])} | "
                             f"{_f(r['first_step_from_run_study_s'])}")
        for name, r in (("ours cold", cold), ("ours warm", warm)):
            if not r:
                continue
            marks = [("imports done", r.get("import_s")),
                     ("ray.init done", _add(r.get("init_ray_start_from_spawn_s"), r.get("ray_init_s"))),
                     ("data loaded", _add(r.get("load_data_start_from_spawn_s"), r.get("decode_s"))),
                     ("features ready", r.get("features_done_from_spawn_s")),
                     ("first trial started", r.get("first_trial_start_from_spawn_s")),
                     ("first step <=", r.get("first_step_from_spawn_s")),
                     ("first epoch reported", r.get("first_result_from_spawn_s")),
                     ("run_study returned", r.get("total_from_spawn_s"))]
            lines.append(f"  {name} timeline, s from process start: "
                         + ", ".join(f"{k} {v:.1f}" for k, v in marks if v is not None))
    if "features_gflops" in d:
        lines += ["", f"Frozen features at {s['image_size']} px (study cold, all sets together): "
                  f"{d['features_gflops']:.1f} GFLOP/s achieved"
                  + (f" = {100 * d['features_vs_matmul']:.0f}% of the matmul reference; floor "
                     f"{d['features_floor_s_per_set']:.1f} s per set" if "features_vs_matmul" in d else "")]
    head = res.get("head")
    if head:
        lines += ["", f"Head training at {head['image_size']} px, frozen base, features existing "
                  f"({head['train_images']} training images, batch {s['batch_size']}):"]
        lines.append(f"  one epoch: {head['epochs'][0]['s']:.2f} s (second epoch {head['epochs'][1]['s']:.2f} s); "
                     f"{d['head_epoch_gflop']:.0f} GFLOP of matmuls"
                     + (f", floor {d['head_epoch_floor_s']:.2f} s at the matmul rate" if "head_epoch_floor_s" in d
                        else ""))
        tiled = (f"features of {head['feature_images']} real training images computed, repeated to "
                 f"{head['train_images']} rows (the head's cost does not depend on the values)"
                 if head["tiled"] else f"features of all {head['train_images']} training images computed")
        lines.append(f"  {tiled}")
        lines.append(f"  frozen features: {head['features_s']:.1f} s for {head['feature_images']} images = "
                     f"{d['head_features_gflops']:.1f} GFLOP/s"
                     + (f" = {100 * d['head_features_vs_matmul']:.0f}% of the matmul reference"
                        if "head_features_vs_matmul" in d else "")
                     + f"; all 3410 images would take ~{d['head_all_features_s_estimate']:.0f} s")
    mem = [(k, res[k]) for k in ("naive", "study_cold", "study_warm", "stages", "head") if k in res]
    if mem:
        lines += ["", "Peak memory, MiB (getrusage maxrss of the process | of its largest reaped child | the process's "
                  "own VmHWM since exec); RSS counts pages shared with forked children, so these do not add up:"]
        for k, r in mem:
            extra = (f", cuda max allocated {r['cuda_max_allocated_mib']:.0f} MiB"
                     if "cuda_max_allocated_mib" in r else "")
            lines.append(f"  {k:<11} {r['maxrss_self_mib']:8.0f} | {r['maxrss_children_mib']:8.0f} | "
                         f"{_f(r.get('vmhwm_self_mib'), '', 0):>6}{extra}")
    if d["targets"]:
        lines += ["", "Targets:"]
        for name, t in d["targets"].items():
            lines.append(f"  {'met ' if t['met'] else 'MISS'}  {name}: {t['value']:.2f}")
    loads = [(k, r["loadavg_before"], r["loadavg_after"]) for k, r in res.items()
             if isinstance(r, dict) and "loadavg_before" in r]
    if loads:
        lines += ["", "1-min load average before/after each part (other work on the machine skews times): "
                  + ", ".join(f"{k} {a:.1f}/{b:.1f}" for k, a, b in loads)]
    lines.append(f"benchmark wall time: {res['bench_wall_s']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:
        return _run_worker(*argv[1:4])
    args = parser().parse_args(argv)
    if args.quick:
        defaults = parser().parse_args([])
        for key, value in QUICK.items():
            if getattr(args, key) == getattr(defaults, key):
                setattr(args, key, value)
    try:
        res = run(args)
    except (BenchError, ValueError) as e:
        print(f"hwr-study bench: error: {e}", file=sys.stderr)
        return 2
    print(report(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    from benchmarks.bench import main as _main  # run as the importable module, so pickle finds its classes

    sys.exit(_main())
