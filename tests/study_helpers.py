"""Small study configs, experiment readers and child-process drivers shared by the Ray tests.

The pytest process never starts Ray (issue 17: a driver's native threads outlive `ray.shutdown()` and run
into interpreter exit; tests/leaks.py fails a test that does it). A test runs its study as a user does,
`hwr-study ...` in a child process (`hwr_study`), or, where it needs Python objects of the run, a small
driver script under tests/drivers/ that writes what the test asserts as JSON (`run_driver`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
BIN = Path(sys.executable).parent  # the venv's console scripts: hwr-study, ray, tensorboard


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


# ------------------------------------------------------------------------- drivers in child processes


def child_env(**extra: str) -> dict[str, str]:
    """This environment for a child driver, with this checkout and tests/ (for drivers) first on the path."""
    path = os.pathsep.join(p for p in (str(ROOT), str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


def hwr_study(*args, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`hwr-study ARGS` as a user runs it, from the repository root; its exit code and output."""
    return subprocess.run([str(BIN / "hwr-study"), *map(str, args)], cwd=ROOT, env=child_env(**(env or {})),
                          capture_output=True, text=True, timeout=timeout)


def succeeded(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """`proc`, once checked that it exited 0 (else the failure shows the end of its output)."""
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise AssertionError(f"{' '.join(map(str, proc.args[:3]))} exited {proc.returncode}:\n{tail}")
    return proc


def run_driver(name: str, out_dir: Path, *args, env: dict[str, str] | None = None, timeout: float = 600) -> dict:
    """tests/drivers/NAME.py OUT.json ARGS... with this interpreter; the JSON it wrote to OUT.json."""
    out = Path(out_dir) / f"{name}.json"
    cmd = [sys.executable, str(TESTS / "drivers" / f"{name}.py"), str(out), *map(str, args)]
    succeeded(subprocess.run(cmd, cwd=ROOT, env=child_env(**(env or {})), capture_output=True, text=True,
                             timeout=timeout))
    return json.loads(out.read_text())


@contextmanager
def ray_head(log: Path, **init_args) -> Iterator[dict[str, str]]:
    """A local Ray (`ray.init(**init_args)`) held by a child process (tests/drivers/ray_head.py) for a
    module's drivers to join; yields their environment ({"RAY_ADDRESS": ...}), stops it on exit."""
    env = child_env()
    env.pop("RAY_ADDRESS", None)
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, str(TESTS / "drivers" / "ray_head.py"), json.dumps(init_args)],
                                cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                text=True)
        try:
            lines = iter(proc.stdout.readline, "")
            address = next((line.split("=", 1)[1].strip() for line in lines if line.startswith("RAY_ADDRESS=")), None)
            assert address, f"the Ray head exited ({proc.wait()}) before it was up:\n{log.read_text()[-4000:]}"
            yield {"RAY_ADDRESS": address}
        finally:
            proc.stdin.close()  # the head shuts Ray down and exits
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
