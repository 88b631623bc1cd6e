"""Small study configs, experiment readers and child-process drivers shared by the Ray tests.

The pytest process never starts Ray (issue 17: a driver's native threads outlive `ray.shutdown()` and run
into interpreter exit; tests/leaks.py fails a test that does it). A test runs its study as a user does,
`hwr-study ...` in a child process (`hwr_study`), or, where it needs Python objects of the run, a small
driver script under tests/drivers/ that writes what the test asserts as JSON (`run_driver`).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import yaml

from ray_nodes import AUTH

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


def tune_finished(experiment: Path) -> set[str] | None:
    """The trial folders that Tune's newest experiment state in storage marks TERMINATED: the trials a restore
    must not run again. (A complete result.json is not that: Tune uploads the state and the trials' files in one
    threaded copy, in no order, so result.json can hold a trial's last epoch while the stored state still has it
    RUNNING, from its checkpoint before; restored, it repeats that epoch.) None while no state has been written,
    or one is being."""
    from study.state import EXPERIMENT_STATE  # Tune's own file name pattern

    states = sorted(experiment.glob(EXPERIMENT_STATE)) if experiment.exists() else []
    if not states:
        return None
    try:
        trials = [json.loads(t) for t, _ in json.loads(states[-1].read_text())["trial_data"]]
    except (OSError, ValueError, KeyError):
        return None  # caught mid-upload: the next poll reads it whole
    return {t["relative_logdir"] for t in trials if t["status"] == "TERMINATED"}


# ------------------------------------------------------------------------- drivers in child processes


def child_env(**extra: str) -> dict[str, str]:
    """This environment for a child driver, with this checkout and tests/ (for drivers) first on the path."""
    path = os.pathsep.join(p for p in (str(ROOT), str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


# A child's limit: far past what any test's study takes on 2 busy cores, where it can only be a hang
CHILD_TIMEOUT_S = 1800


def run_child(cmd: list[str], env: dict[str, str] | None = None, timeout: float = CHILD_TIMEOUT_S
              ) -> subprocess.CompletedProcess:
    """`cmd` from the repository root, in a session of its own, its output captured. Past `timeout` (or on
    Ctrl-C) it is killed with every process it started: a driver's local Ray is not left running."""
    with subprocess.Popen(cmd, cwd=ROOT, env=child_env(**(env or {})), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            kill_group(proc)
            proc.communicate(timeout=60)
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL to the session `proc` leads (started with start_new_session): it and what it started."""
    with suppress(ProcessLookupError):  # none of them left
        os.killpg(proc.pid, signal.SIGKILL)


def hwr_study(*args, env: dict[str, str] | None = None, timeout: float = CHILD_TIMEOUT_S
              ) -> subprocess.CompletedProcess:
    """`hwr-study ARGS` as a user runs it, from the repository root; its exit code and output."""
    return run_child([str(BIN / "hwr-study"), *map(str, args)], env=env, timeout=timeout)


def succeeded(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """`proc`, once checked that it exited 0 (else the failure shows the end of its output)."""
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise AssertionError(f"{' '.join(map(str, proc.args[:3]))} exited {proc.returncode}:\n{tail}")
    return proc


def run_driver(name: str, out_dir: Path, *args, env: dict[str, str] | None = None,
               timeout: float = CHILD_TIMEOUT_S) -> dict:
    """tests/drivers/NAME.py OUT.json ARGS... with this interpreter; the JSON it wrote to OUT.json."""
    out = Path(out_dir) / f"{name}.json"
    succeeded(run_child([sys.executable, str(TESTS / "drivers" / f"{name}.py"), str(out), *map(str, args)], env=env,
                        timeout=timeout))
    return json.loads(out.read_text())


@contextmanager
def ray_head(log: Path, timeout: float = 300, **init_args) -> Iterator[dict[str, str]]:
    """A local Ray (`ray.init(**init_args)`) held by a child process (tests/drivers/ray_head.py) for a
    module's drivers to join; yields their environment (RAY_ADDRESS and its auth mode), stops it on exit."""
    # A new local Ray turns token auth on where RAY_AUTH_MODE is unset; a driver given its address does not
    # (Ray 2.60): both get the mode said and, with token auth, this test process's own token in RAY_AUTH_TOKEN
    # (tests/ray_nodes.AUTH), so that ~/.ray/auth_token, which another cluster on this machine may rewrite
    # meanwhile, plays no part (it did: a driver refused with InvalidAuthToken).
    mode = os.environ.get("RAY_AUTH_MODE", "token")
    joining = {**AUTH, "RAY_AUTH_MODE": mode} if mode == "token" else {"RAY_AUTH_MODE": mode}
    env = child_env(**joining)
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, str(TESTS / "drivers" / "ray_head.py"), json.dumps(init_args)]
    with open(log, "w") as err, subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                 stderr=err, text=True, start_new_session=True) as proc:
        try:
            address = _line_after(proc, "RAY_ADDRESS=", timeout)
            assert address, (f"the Ray head was not up within {timeout:g} s (exit code {proc.poll()}):\n"
                             + log.read_text()[-4000:])
            yield {**joining, "RAY_ADDRESS": address}
        finally:
            proc.stdin.close()  # the head shuts Ray down and exits
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=120)
            kill_group(proc)  # whatever is left of it
            proc.wait()


def _line_after(proc: subprocess.Popen, prefix: str, timeout: float) -> str | None:
    """The rest of the first line `proc` prints that starts with `prefix`; None if it exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0 and select.select([proc.stdout], [], [], left)[0]:
        line = proc.stdout.readline()
        if not line:  # it exited
            return None
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    return None


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
