"""One training run: fine-tune the model on one config, epoch by epoch, checkpointing as it goes.

    result = fit(load_config("run.yaml"), out_dir=Path("runs/a"))

Each epoch yields a record {epoch, train_loss, train_acc, val_loss, val_acc, epoch_time_s, lr}, handed to
`on_epoch` (Ray Tune plugs in there) and kept as history. At the end the best-validation weights are
scored on the test split. Same seed on the CPU -> the same history, and a run resumed from its checkpoint
continues exactly as if it had never stopped: each epoch's shuffle and dropout draw from
seed-and-epoch-derived generators, not from whatever ran before.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from hwr.config import Config, DataConfig, config_from_dict
from hwr.data import Splits, default_cache_dir, ensure_dataset, load_dataset, make_splits, write_synthetic
from hwr.features import frozen_features, frozen_key
from hwr.model import HWRNet, build_model

RECORD_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s", "lr")
CHECKPOINT_FILE = "checkpoint.pt"
EVAL_BATCH = 256


class TrainError(ValueError):
    """A run cannot start or resume, explained in one sentence."""


@dataclass(frozen=True)
class TrainingData:
    """Preprocessed images (uint8 [N, S, S]), labels and the split; `key` identifies the images."""

    images: np.ndarray
    labels: np.ndarray
    splits: Splits
    key: str


@dataclass
class RunResult:
    config: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    test_loss: float | None = None
    test_acc: float | None = None
    best_epoch: int | None = None
    best_val_acc: float | None = None
    diverged: bool = False
    device: str = "cpu"

    def summary(self) -> dict[str, Any]:
        return {
            "test_acc": self.test_acc,
            "test_loss": self.test_loss,
            "best_epoch": self.best_epoch,
            "best_val_acc": self.best_val_acc,
            "diverged": self.diverged,
            "epochs_run": len(self.history),
            "device": self.device,
            "config": self.config,
        }


def synthetic_root(cfg: DataConfig) -> Path:
    """Where the synthetic set lives; written there (atomically) the first time it is asked for."""
    root = Path(cfg.root) if cfg.root else default_cache_dir() / "synthetic-seed0"
    if not root.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=".synthetic-"))
        write_synthetic(tmp, seed=0)
        try:
            os.replace(tmp, root)
        except OSError:  # another process got there first
            pass
    return root


def load_data(cfg: DataConfig, progress: bool = True) -> TrainingData:
    """The run's images (decoded once, then from the disk cache) and its split."""
    if cfg.dataset == "synthetic":
        root = synthetic_root(cfg)
    else:  # download only into the default cache; a folder the user named must already hold the set
        explicit = cfg.root is not None or bool(os.environ.get("HWR_DATA_DIR"))
        root = ensure_dataset(cfg.root, download_missing=not explicit)
    ds = load_dataset(root, cfg.image_size, progress=progress)
    splits = make_splits(ds.labels, ds.writers, cfg.split, cfg.split_seed)
    digest = hashlib.blake2b(ds.images.tobytes(), digest_size=12)
    digest.update(ds.labels.tobytes())
    return TrainingData(ds.images, ds.labels, splits, digest.hexdigest())


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


class _Inputs:
    """What the trainable part eats: cached frozen activations, or raw images run through the frozen part."""

    def __init__(self, model: HWRNet, data: TrainingData, device: torch.device, features: torch.Tensor | None):
        self.model = model
        self.cached = features is not None
        with warnings.catch_warnings():  # arrays may be read-only (a shared object store); nothing writes them
            warnings.simplefilter("ignore", UserWarning)
            source = features if self.cached else torch.from_numpy(data.images)
        self.x = source.to(device)  # the whole set lives on the device: no per-step host-to-device copies
        self.y = torch.from_numpy(data.labels).to(device)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[idx]
        if not self.cached:
            x = self.model.frozen(x)
        return x, self.y[idx]


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def evaluate(model: HWRNet, inputs: _Inputs, indices: np.ndarray, device: torch.device) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over `indices`."""
    model.eval()
    idx_all = torch.from_numpy(indices).to(device)
    loss_sum, correct = 0.0, 0
    for start in range(0, len(idx_all), EVAL_BATCH):
        x, y = inputs.batch(idx_all[start : start + EVAL_BATCH])
        with _autocast(device):
            logits = model.trainable(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    n = max(len(indices), 1)
    return loss_sum / n, correct / n


def _train_epoch(model, inputs, opt, indices, cfg, epoch, device) -> tuple[float, float, bool]:
    """One pass over the training split; returns (mean loss, accuracy, diverged)."""
    model.train()
    seed = _epoch_seed(cfg.train.seed, epoch)
    torch.manual_seed(seed)  # dropout draws
    order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))
    idx_all = torch.from_numpy(indices)[order].to(device)
    loss_sum, correct, seen = 0.0, 0, 0
    for start in range(0, len(idx_all), cfg.train.batch_size):
        x, y = inputs.batch(idx_all[start : start + cfg.train.batch_size])
        with _autocast(device):
            logits = model.trainable(x)
        loss = F.cross_entropy(logits.float(), y)
        if not torch.isfinite(loss):
            return loss.item(), correct / max(seen, 1), True
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return loss_sum / seen, correct / seen, False


def _optimizer(model: HWRNet, cfg: Config) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.train.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.train.lr)
    return torch.optim.SGD(params, lr=cfg.train.lr, momentum=cfg.train.momentum)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file, then rename: a checkpoint is whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
        torch.save(state, f)
    os.replace(f.name, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainError(f"Checkpoint {path} does not exist.") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise TrainError(f"Checkpoint {path} cannot be read ({type(e).__name__}).") from None
    if not isinstance(state, dict) or state.get("format") != 1:
        raise TrainError(f"Checkpoint {path} is not an hwr checkpoint.")
    return state


def fit(
    cfg: Config,
    data: TrainingData | None = None,
    *,
    checkpoint_path: Path | None = None,
    resume_from: Path | None = None,
    on_epoch: Callable[[dict[str, float], dict[str, Any], bool], None] | None = None,
    features: torch.Tensor | None = None,
    device: torch.device | None = None,
    progress: bool = False,
) -> RunResult:
    """Train one run. `features`: the frozen activations if the caller has them (else from the disk cache).

    `on_epoch(record, summary, last)` is called after each epoch's checkpoint is written; `summary` is the
    run so far (best epoch and val acc; test metrics once `last` is True, on the final epoch).
    """
    device = device or pick_device()
    data = data or load_data(cfg.data, progress=progress)
    # Given the frozen base's output, a head-only run needs no conv base at all.
    conv_base = features is None or cfg.model.trainable_from != "none"
    model = build_model(cfg.model, cfg.data.image_size, seed=cfg.train.seed, conv_base=conv_base).to(device)
    if features is None and (key := frozen_key(cfg, data.key)) is not None:
        features = frozen_features(model, data.images, key, device)
    inputs = _Inputs(model, data, device, features)
    opt = _optimizer(model, cfg)
    result = RunResult(config=cfg.to_dict(), device=str(device))
    best_state = None

    if resume_from is not None:
        state = load_checkpoint(resume_from)
        if state["config"] != cfg.to_dict():
            raise TrainError(f"Checkpoint {resume_from} belongs to a run with another config.")
        model.load_trainable_state(state["model"])
        opt.load_state_dict(state["optimizer"])
        result.history = state["history"]
        result.diverged = state["diverged"]
        result.best_epoch, result.best_val_acc, best_state = state["best_epoch"], state["best_val_acc"], state["best"]

    first = len(result.history) + 1
    for epoch in range(first, cfg.train.epochs + 1):
        if result.diverged:
            break
        t0 = time.perf_counter()
        train_loss, train_acc, diverged = _train_epoch(model, inputs, opt, data.splits.train, cfg, epoch, device)
        if diverged:
            val_loss, val_acc = math.nan, math.nan
        else:
            val_loss, val_acc = evaluate(model, inputs, data.splits.val, device)
            diverged = not math.isfinite(val_loss)
        result.diverged = diverged
        record = dict(zip(RECORD_KEYS, (epoch, train_loss, train_acc, val_loss, val_acc,
                                        time.perf_counter() - t0, opt.param_groups[0]["lr"])))
        result.history.append(record)
        if not diverged and (result.best_val_acc is None or val_acc > result.best_val_acc):
            result.best_epoch, result.best_val_acc, best_state = epoch, val_acc, model.trainable_state()
        last = diverged or epoch == cfg.train.epochs
        if last:
            _score_test(model, inputs, data, device, best_state, result)
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, {
                "format": 1, "config": cfg.to_dict(), "history": result.history, "diverged": result.diverged,
                "model": model.trainable_state(), "optimizer": opt.state_dict(),
                "best": best_state, "best_epoch": result.best_epoch, "best_val_acc": result.best_val_acc,
            })
        if on_epoch is not None:
            on_epoch(record, result.summary(), last)

    if result.test_acc is None and best_state is not None:  # resumed a finished run
        _score_test(model, inputs, data, device, best_state, result)
    return result


def _score_test(model, inputs, data, device, best_state, result: RunResult) -> None:
    if best_state is None:
        return
    current = model.trainable_state()
    model.load_trainable_state(best_state)
    result.test_loss, result.test_acc = evaluate(model, inputs, data.splits.test, device)
    model.load_trainable_state(current)


def write_outputs(out_dir: Path, result: RunResult) -> None:
    """history.csv and summary.json, each written whole (temporary file, then rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out_dir, suffix=".tmp", delete=False, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RECORD_KEYS)
        writer.writeheader()
        writer.writerows(result.history)
    os.replace(f.name, out_dir / "history.csv")
    with tempfile.NamedTemporaryFile("w", dir=out_dir, suffix=".tmp", delete=False) as f:
        json.dump(result.summary(), f, indent=2, allow_nan=True)
    os.replace(f.name, out_dir / "summary.json")


def train_to_dir(cfg: Config, out_dir: Path, *, on_epoch=None, progress: bool = True) -> RunResult:
    """`hwr train`: resume from out_dir's checkpoint when it holds this config's run, then write outputs."""
    ckpt = out_dir / CHECKPOINT_FILE
    resume = ckpt if ckpt.exists() else None
    if resume is not None and load_checkpoint(ckpt)["config"] != cfg.to_dict():
        raise TrainError(f"{out_dir} holds a run with another config; choose another --out or pass --fresh.")
    result = fit(cfg, checkpoint_path=ckpt, resume_from=resume, on_epoch=on_epoch, progress=progress)
    write_outputs(out_dir, result)
    return result


def config_of_checkpoint(state: dict[str, Any], path: Path) -> Config:
    try:
        return config_from_dict(state["config"], where=str(path))
    except ValueError as e:
        raise TrainError(f"Checkpoint {path} holds an invalid config: {e}") from None


__all__ = ["RECORD_KEYS", "RunResult", "TrainError", "TrainingData", "evaluate", "fit", "load_data",
           "load_checkpoint", "pick_device", "train_to_dir", "write_outputs"]
