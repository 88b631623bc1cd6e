"""Small study configs and experiment readers shared by the Ray tests."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml


def write_study(tmp_path: Path, name: str = "t", *, seeds=(0, 1), activations=("relu", "selu"),
                normalizations=("per_image",), epochs: int = 3, **extra) -> Path:
    doc = {
        "name": name,
        "data": {"dataset": "synthetic", "image_size": 32},
        "model": {"weights": "none", "trainable_from": "none"},
        # one evaluation an epoch: these tests count rows per epoch (step resolution: tests/test_train.py)
        "train": {"optimizer": "adam", "lr": 3e-3, "epochs": epochs, "evals_per_epoch": 1},
        "search": {"model.activation": list(activations), "model.normalization": list(normalizations),
                   "train.seed": list(seeds)},
        "resources": {"cpu": 1, "gpu": 0},
        "run": {"storage_path": str(tmp_path / "ray"), "max_failures": 1, "results_dir": str(tmp_path / "results")},
        "analysis": {"target_acc": 0.05},
    }
    for key, value in extra.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def trial_dirs(experiment: Path) -> list[Path]:
    return sorted(p for p in experiment.iterdir() if p.is_dir() and p.name.startswith("train_trial"))


def results(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def epochs_of(trial_dir: Path) -> list[int]:
    return [r["epoch"] for r in results(trial_dir)]


def wait_for(condition, timeout: float, what: str, *procs: subprocess.Popen, every: float = 1.0):
    """`condition()`'s first truthy value, polled every `every` s; the test fails when `timeout` passes or one of
    `procs` exits first (naming `what` it was waiting for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"{' '.join(map(str, proc.args[:3]))} exited ({proc.returncode}) before {what}")
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}")


def record(record_property, fault: str, outcome: str, lost: str) -> None:
    """A fault test's row for docs/reliability.md (hwr-bench faults reads these properties)."""
    record_property("fault", fault)
    record_property("outcome", outcome)
    record_property("lost", lost)
