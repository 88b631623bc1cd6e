"""One training run: fine-tune the model on one config, epoch by epoch, checkpointing as it goes.

    result = fit(load_config("run.yaml"), checkpoint_path=Path("runs/a/checkpoint.pt"))

Each epoch yields a record {epoch, train_loss, train_acc, val_loss, val_acc, epoch_time_s, lr}, handed to
`on_epoch` and kept as history; inside it, `train.evals_per_epoch` evaluations (EVAL_KEYS, at fractional
epochs) go to `on_eval` (Ray Tune plugs in there) and `RunResult.evals`. Whenever validation accuracy improves, the test
split is scored too: the test metrics of the best-validation epoch are the run's result, with no copy of
the best weights needed for it. Same seed on the CPU -> the same history, and a run resumed from its
checkpoint continues exactly as if it had never stopped: each epoch's shuffle and dropout draw from
seed-and-epoch-derived generators, not from whatever ran before.

Checkpoints (see `CheckpointPolicy`) hold only what cannot be rebuilt from the config: the trainable
weights and the optimizer state in float32 (exact, so a resumed run equals an uninterrupted one), the
history and the best epoch's metrics. The last epoch writes the final checkpoint instead: the outcome and
float16 weights for prediction (the best-validation ones when kept, else the last), no optimizer state.
"""

from __future__ import annotations

import csv
import hashlib
import io
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

from hwr.checkpoint import (CHECKPOINT_FILE, CHECKPOINT_FORMAT, CheckpointPolicy, TrainError, checkpoint_problem,
                            half, load_checkpoint, save_checkpoint)
from hwr.config import Config, DataConfig, config_from_dict
from hwr.data import Splits, default_cache_dir, ensure_dataset, load_dataset, make_splits, write_synthetic
from hwr.features import frozen_features, frozen_key
from hwr.evaluation import eval_points, temperature_scaled_nll
from hwr.files import atomic_write
from hwr.model import HWRNet, build_model

RECORD_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s", "lr")
# One evaluation (train.evals_per_epoch of them per epoch): `step` counts optimizer steps, `epoch` is
# fractional (step / steps per epoch), train_loss/train_acc are over the batches since the previous
# evaluation, val_nll_ts/temperature the validation NLL after temperature scaling and its T,
# epoch_time_s the seconds since the epoch began, elapsed_s the training seconds since the run began.
EVAL_KEYS = ("step", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_nll_ts", "temperature",
             "epoch_time_s", "elapsed_s", "lr", "epoch_end")
EVAL_BATCH = 256


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
    history: list[dict[str, float]] = field(default_factory=list)  # one record per epoch (RECORD_KEYS)
    evals: list[dict[str, float]] = field(default_factory=list)  # one per evaluation (EVAL_KEYS)
    test_loss: float | None = None
    test_acc: float | None = None
    best_epoch: int | None = None
    best_val_acc: float | None = None
    diverged: bool = False
    device: str = "cpu"
    checkpoint_epoch: int | None = None  # the epoch of the newest checkpoint this process wrote

    def summary(self) -> dict[str, Any]:
        return {
            "test_acc": self.test_acc,
            "test_loss": self.test_loss,
            "best_epoch": self.best_epoch,
            "best_val_acc": self.best_val_acc,
            "diverged": self.diverged,
            "epochs_run": len(self.history),
            "checkpoint_epoch": self.checkpoint_epoch,
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
def _logits(model: HWRNet, inputs: _Inputs, indices: np.ndarray,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 logits on the CPU, labels) over `indices`, in eval mode."""
    model.eval()
    idx_all = torch.from_numpy(indices).to(device)
    out, labels = [], []
    for start in range(0, len(idx_all), EVAL_BATCH):
        x, y = inputs.batch(idx_all[start : start + EVAL_BATCH])
        with _autocast(device):
            out.append(model.trainable(x).float().cpu())
        labels.append(y.cpu())
    if not out:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(out), torch.cat(labels)


def _loss_acc(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    if len(y) == 0:
        return 0.0, 0.0
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def evaluate(model: HWRNet, inputs: _Inputs, indices: np.ndarray, device: torch.device) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over `indices`."""
    return _loss_acc(*_logits(model, inputs, indices, device))


def _chunks(model, inputs, opt, indices, cfg, epoch, device, stops: list[int]):
    """One pass over the training split. Yields (steps done this epoch, mean loss and accuracy over the
    batches since the previous yield, diverged, how many examples those batches held) after each step in
    `stops` (the last one is the epoch's
    end), and at once when the loss is not finite. The caller may evaluate between yields (eval mode,
    no random draws): training resumes in train mode, so the run is the same with or without them."""
    model.train()
    seed = _epoch_seed(cfg.train.seed, epoch)
    torch.manual_seed(seed)  # dropout draws
    order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))
    idx_all = torch.from_numpy(indices)[order].to(device)
    loss_sum, correct, seen, step, pending = 0.0, 0, 0, 0, set(stops)
    for start in range(0, len(idx_all), cfg.train.batch_size):
        x, y = inputs.batch(idx_all[start : start + cfg.train.batch_size])
        with _autocast(device):
            logits = model.trainable(x)
        loss = F.cross_entropy(logits.float(), y)
        if not torch.isfinite(loss):
            yield step + 1, loss.item(), correct / max(seen, 1), True, seen
            return
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        step += 1
        if step in pending:
            yield step, loss_sum / seen, correct / seen, False, seen
            model.train()
            loss_sum, correct, seen = 0.0, 0, 0


def _optimizer(model: HWRNet, cfg: Config) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.train.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.train.lr)
    if cfg.train.optimizer == "rmsprop":  # Keras' RMSprop: rho 0.9, epsilon 1e-7, no momentum
        return torch.optim.RMSprop(params, lr=cfg.train.lr, alpha=0.9, eps=1e-7)
    return torch.optim.SGD(params, lr=cfg.train.lr, momentum=cfg.train.momentum)


def fit(
    cfg: Config,
    data: TrainingData | None = None,
    *,
    checkpoint_path: Path | None = None,
    resume_from: Path | None = None,
    policy: CheckpointPolicy = CheckpointPolicy(),
    on_epoch: Callable[[dict[str, float], dict[str, Any], bool], None] | None = None,
    on_eval: Callable[[dict[str, float], dict[str, Any], bool], None] | None = None,
    features: torch.Tensor | None = None,
    device: torch.device | None = None,
    progress: bool = False,
) -> RunResult:
    """Train one run. `features`: the frozen activations if the caller has them (else from the disk cache).

    `on_epoch(record, summary, last)` is called after each epoch (and its checkpoint, if `policy` wrote one:
    then `summary["checkpoint_epoch"]` is this epoch); `summary` is the run so far (best epoch and val acc;
    test metrics once `last` is True, on the final epoch). `on_eval(evaluation, summary, last)` is called
    after each of the `train.evals_per_epoch` evaluations of an epoch (EVAL_KEYS); for the epoch's last one
    it comes after the checkpoint and just before `on_epoch`.
    """
    device = device or pick_device()
    data = data or load_data(cfg.data, progress=progress)
    # Given the frozen base's output, a head-only run needs no conv base at all.
    conv_base = features is None or cfg.model.trainable_from != "none"
    model = build_model(cfg.model, cfg.data.image_size, seed=cfg.train.seed, conv_base=conv_base).to(device)
    if features is None and (key := frozen_key(cfg, data.key)) is not None:
        features = frozen_features(model, data.images, key, device, progress=progress)
    inputs = _Inputs(model, data, device, features)
    opt = _optimizer(model, cfg)
    result = RunResult(config=cfg.to_dict(), device=str(device))
    run = _RunState()
    if resume_from is not None:
        run = _resume(resume_from, cfg, model, opt, result)

    steps_per_epoch = math.ceil(len(data.splits.train) / cfg.train.batch_size)
    stops = eval_points(steps_per_epoch, cfg.train.evals_per_epoch)
    elapsed = result.evals[-1]["elapsed_s"] if result.evals else 0.0
    saved_at = time.monotonic()
    for epoch in range(len(result.history) + 1, cfg.train.epochs + 1):
        if result.diverged:
            break
        t0 = time.perf_counter()
        totals = [0.0, 0, 0]  # the epoch's loss sum, correct, seen
        for step, chunk_loss, chunk_acc, diverged, n in _chunks(model, inputs, opt, data.splits.train, cfg, epoch,
                                                                 device, stops):
            totals = [totals[0] + chunk_loss * n, totals[1] + chunk_acc * n, totals[2] + n]
            if diverged:
                val_loss = val_acc = nll_ts = temperature = math.nan
            else:
                logits, y = _logits(model, inputs, data.splits.val, device)
                val_loss, val_acc = _loss_acc(logits, y)
                nll_ts, temperature = temperature_scaled_nll(logits, y)
                diverged = not math.isfinite(val_loss)
            end = diverged or step == steps_per_epoch
            seconds = time.perf_counter() - t0
            evaluation = dict(zip(EVAL_KEYS, (
                (epoch - 1) * steps_per_epoch + step, epoch - 1 + step / steps_per_epoch, chunk_loss, chunk_acc,
                val_loss, val_acc, nll_ts, temperature, seconds, elapsed + seconds, opt.param_groups[0]["lr"], end)))
            result.evals.append(evaluation)
            if not end:
                if on_eval is not None:
                    on_eval(evaluation, result.summary(), False)
                continue
            elapsed += seconds
            result.diverged = diverged
            seen = totals[2]  # a diverged epoch reports its non-finite loss, as it always has
            epoch_loss = chunk_loss if diverged or not seen else totals[0] / seen
            record = dict(zip(RECORD_KEYS, (epoch, epoch_loss, totals[1] / max(seen, 1), val_loss, val_acc, seconds,
                                            opt.param_groups[0]["lr"])))
            result.history.append(record)
            if not diverged and (result.best_val_acc is None or val_acc > result.best_val_acc):
                result.best_epoch, result.best_val_acc = epoch, val_acc
                run.best_test = evaluate(model, inputs, data.splits.test, device)
                if policy.keep_best:
                    run.best = half(model.trainable_state())
            last = diverged or epoch == cfg.train.epochs
            if last:
                result.test_loss, result.test_acc = run.best_test or (None, None)
            if checkpoint_path is not None and (last or policy.due(epoch, time.monotonic() - saved_at)):
                save_checkpoint(checkpoint_path, _checkpoint(cfg, result, run, model, opt, final=last))
                result.checkpoint_epoch, saved_at = epoch, time.monotonic()
            if on_eval is not None:
                on_eval(evaluation, result.summary(), last)
            if on_epoch is not None:
                on_epoch(record, result.summary(), last)
            break
    return result


@dataclass
class _RunState:
    """What a checkpoint carries besides the weights: the best epoch's test metrics and, if kept, weights."""

    best_test: tuple[float, float] | None = None  # (test_loss, test_acc) at the best-validation epoch
    best: dict[str, torch.Tensor] | None = None  # float16 best-validation weights (policy.keep_best)


def _checkpoint(cfg: Config, result: RunResult, run: _RunState, model: HWRNet, opt, final: bool) -> dict[str, Any]:
    """A resume checkpoint (float32 weights and optimizer state: exact), or the final one (no optimizer
    state; float16 weights for prediction, the best-validation ones if kept, else the last)."""
    if final:
        weights, optimizer = (None if run.best is not None else half(model.trainable_state())), None
    else:
        weights, optimizer = model.trainable_state(), opt.state_dict()
    return {
        "format": CHECKPOINT_FORMAT, "final": final, "config": cfg.to_dict(), "history": result.history,
        "evals": result.evals,
        "diverged": result.diverged, "best_epoch": result.best_epoch, "best_val_acc": result.best_val_acc,
        "best_test": run.best_test, "model": weights, "optimizer": optimizer, "best": run.best,
    }


def _resume(path: Path, cfg: Config, model: HWRNet, opt, result: RunResult) -> _RunState:
    """Load a checkpoint of this config into the model, optimizer and result; returns the rest of its state."""
    state = load_checkpoint(path)
    if state["config"] != cfg.to_dict():
        raise TrainError(f"Checkpoint {path} belongs to a run with another config.")
    if state["format"] != CHECKPOINT_FORMAT:
        raise TrainError(f"Checkpoint {path} was written by an older hwr and cannot be resumed; start the run again.")
    if not state["final"]:  # a final checkpoint: nothing left to train, its outcome is all that is needed
        model.load_trainable_state(state["model"])
        opt.load_state_dict(state["optimizer"])
    result.history, result.diverged = state["history"], state["diverged"]
    result.evals = list(state.get("evals") or [])  # checkpoints of older hwr versions hold none
    result.best_epoch, result.best_val_acc = state["best_epoch"], state["best_val_acc"]
    best_test = tuple(state["best_test"]) if state["best_test"] is not None else None
    if state["final"]:
        result.test_loss, result.test_acc = best_test or (None, None)
    return _RunState(best_test=best_test, best=state["best"])


def write_outputs(out_dir: Path, result: RunResult) -> None:
    """history.csv and summary.json, each written whole (temporary file, then rename)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=RECORD_KEYS)
    writer.writeheader()
    writer.writerows(result.history)
    atomic_write(out_dir / "history.csv", lambda f: f.write(text.getvalue().encode()))
    summary = json.dumps(result.summary(), indent=2, allow_nan=True)
    atomic_write(out_dir / "summary.json", lambda f: f.write(summary.encode()))


def train_to_dir(cfg: Config, out_dir: Path, *, on_epoch=None, progress: bool = True,
                 policy: CheckpointPolicy = CheckpointPolicy()) -> RunResult:
    """`hwr train`: resume from out_dir's checkpoint when it holds this config's run, then write outputs.

    The default policy keeps the best weights: one run is usually trained to be used by `hwr predict`.
    """
    ckpt = out_dir / CHECKPOINT_FILE
    resume = ckpt if ckpt.exists() else None
    try:
        stored = load_checkpoint(ckpt)["config"] if resume is not None else None
    except TrainError as e:
        raise TrainError(f"{str(e).rstrip('.')}; pass --fresh to start the run over.") from None
    if resume is not None and stored != cfg.to_dict():
        raise TrainError(f"{out_dir} holds a run with another config; choose another --out or pass --fresh.")
    result = fit(cfg, checkpoint_path=ckpt, resume_from=resume, policy=policy, on_epoch=on_epoch, progress=progress)
    write_outputs(out_dir, result)
    return result


def config_of_checkpoint(state: dict[str, Any], path: Path) -> Config:
    try:
        return config_from_dict(state["config"], where=str(path))
    except ValueError as e:
        raise TrainError(f"Checkpoint {path} holds an invalid config: {e}") from None


__all__ = ["EVAL_KEYS", "RECORD_KEYS", "CheckpointPolicy", "RunResult", "TrainError", "TrainingData", "checkpoint_problem",
           "eval_points", "evaluate", "fit", "load_checkpoint", "load_data", "pick_device", "temperature_scaled_nll",
           "train_to_dir", "write_outputs"]
