"""The one Tune trainable every trial runs: hwr's training loop, reporting to Ray Tune.

It receives the preprocessed images and, when the conv base is partly frozen, the frozen activations
from Ray's object store (through `tune.with_parameters`), so no trial decodes a PNG or recomputes the
frozen layers. Each evaluation (`train.evals_per_epoch` per epoch, at evenly spaced steps):
`ray.tune.report(record)`, with hwr's checkpoint attached to an epoch's last evaluation when the study's
checkpoint policy (`run.checkpoint_every`, `run.checkpoint_seconds`; always the last epoch) wrote one;
the evaluations inside an epoch carry none, so Tune's checkpoint bookkeeping stays per epoch. A restarted or retried trial resumes from `ray.tune.get_checkpoint()` after the epoch of that
checkpoint; the epochs it repeats give the same records (the analysis keeps each epoch's last one).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import ray
import ray.tune
import torch

from hwr.bases import provide
from hwr.config import DataConfig, config_from_dict
from hwr.features import frozen_key
from hwr.checkpoint import CHECKPOINT_FILE, CheckpointPolicy, checkpoint_problem
from hwr.train import TrainingData, fit

# Keys of the reported metrics, in the order Tune's progress table shows the first four of them.
REPORT_ORDER = ("epoch", "val_acc", "val_loss", "train_loss", "train_acc", "step", "val_nll_ts", "temperature",
                "epoch_time_s", "elapsed_s", "lr", "epoch_end")
FINAL_KEYS = ("test_acc", "test_loss", "best_epoch")


def _fail_once_for_tests(epoch: int) -> None:
    """Test hook: with HWR_TEST_FAIL_AT_EPOCH=N, the first attempt of every trial raises after epoch N.

    The marker file lives in the trial's directory, so a retry (a new attempt) passes. Used by the
    fault-tolerance test only; inert unless the variable is set.
    """
    at = os.environ.get("HWR_TEST_FAIL_AT_EPOCH")
    if not at or epoch != int(at):
        return
    marker = Path(ray.tune.get_context().get_trial_dir()) / ".failed-once"
    if not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected failure after epoch {epoch} (HWR_TEST_FAIL_AT_EPOCH)")


def _pause_for_tests() -> None:
    """Test hook: with HWR_TEST_PAUSE_FILE=path, a trial waits after each epoch while that file exists, so
    that a test can act on a study that is certainly still running. Inert unless the variable is set."""
    hold = os.environ.get("HWR_TEST_PAUSE_FILE")
    while hold and os.path.exists(hold):
        time.sleep(0.1)


def data_key(section: DataConfig) -> str:
    """The key of a data section in the driver's {key: TrainingData}: every one of its settings."""
    return json.dumps(dataclasses.asdict(section), sort_keys=True)


def train_trial(config: dict[str, Any], data: dict[str, TrainingData], features: dict[str, Any] | None = None,
                policy: CheckpointPolicy = CheckpointPolicy(keep_best=False),
                bases: dict[str, Any] | None = None) -> None:
    """Tune function trainable. `config` is a nested hwr config; `data` maps each data section of the grid
    (`data_key`) to its loaded images, of which the trial takes its own; `features` maps frozen keys to
    ObjectRefs; `policy` is the study's checkpoint policy (`run:` keys); `bases` maps the named bases the
    study uses to ObjectRefs of their weights (built once by the driver: no node builds its own)."""
    cfg = config_from_dict(config, where="trial config")
    data = data[data_key(cfg.data)]
    key = frozen_key(cfg, data.key)
    frozen = None
    if features and key in features:
        array = ray.get(features[key])  # None when too large to keep: the frozen layers then run per batch
        if array is not None:
            with warnings.catch_warnings():  # the object store's arrays are read-only; we never write to them
                warnings.simplefilter("ignore", UserWarning)
                frozen = torch.from_numpy(array)
    if bases and cfg.model.weights in bases and (frozen is None or cfg.model.trainable_from != "none"):
        provide(cfg.model.weights, ray.get(bases[cfg.model.weights]))  # the conv base is built in this trial

    with tempfile.TemporaryDirectory(prefix="hwr-trial-") as work:
        work = Path(work)
        resume = None
        checkpoint = ray.tune.get_checkpoint()
        if checkpoint is not None:
            resume = Path(checkpoint.to_directory(str(work / "restored"))) / CHECKPOINT_FILE
            if (problem := checkpoint_problem(resume)) is not None:  # never resume from a damaged one
                print(f"hwr-study: the checkpoint this trial resumes from ({checkpoint.path}/{CHECKPOINT_FILE}) "
                      f"{problem}; the trial starts over from its first epoch.", file=sys.stderr, flush=True)
                resume = None
        out = work / "current"

        def report(evaluation: dict[str, float], summary: dict[str, Any], last: bool) -> None:
            metrics: dict[str, Any] = {k: evaluation[k] for k in REPORT_ORDER}
            metrics["best_val_acc"] = summary["best_val_acc"] if summary["best_val_acc"] is not None else 0.0
            metrics["diverged"] = bool(summary["diverged"] or not math.isfinite(evaluation["val_loss"]))
            if last:
                metrics.update({k: summary[k] for k in FINAL_KEYS})
            metrics["node_id"] = ray.get_runtime_context().get_node_id()  # which node ran this evaluation
            # A checkpoint only ever follows an epoch's last evaluation, never the ones inside it.
            saved = evaluation["epoch_end"] and summary["checkpoint_epoch"] == round(evaluation["epoch"])
            ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(str(out)) if saved else None)
            if evaluation["epoch_end"]:
                _fail_once_for_tests(round(evaluation["epoch"]))
                _pause_for_tests()

        fit(cfg, data, checkpoint_path=out / CHECKPOINT_FILE, resume_from=resume, policy=policy, on_eval=report,
            features=frozen)
