"""Shared fixtures: a private cache dir for the whole session, and tiny configs on the synthetic set."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# tests/leaks.py: fails the test (or module) that leaves a Ray session, thread, child process or server behind
from leaks import pytest_configure  # noqa: E402,F401  (registers the guard)

# Every cache (decoded arrays, frozen features, the synthetic set) goes to a throwaway folder, set before
# any test (or any Ray worker started by a test, which inherits the environment) reads it.
_CACHE = tempfile.mkdtemp(prefix="hwr-test-cache-")
os.environ["HWR_CACHE_DIR"] = _CACHE
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

TINY = [
    "data.dataset=synthetic",
    "data.image_size=32",
    "model.weights=none",
    "model.trainable_from=none",
    "train.optimizer=adam",
    "train.lr=3e-3",
    "train.epochs=3",
]


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return Path(_CACHE)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    value = os.environ.get("HWR_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("HWR_DATA_DIR is not set to the Chars74K folder")
    return Path(value)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """An `hwr train --out` folder (TINY, 2 epochs on the synthetic set), for tests that need a model."""
    from hwr.cli import main

    out = tmp_path_factory.mktemp("tiny-run") / "run"
    sets = [arg for item in [*TINY, "train.epochs=2"] for arg in ("--set", item)]
    assert main(["train", *sets, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory) -> tuple[Path, Path]:
    """(experiment folder, report folder) of a tiny 2x2 x 2-seed study run to the end and analyzed, once
    per session (about a minute on 2 cores) for the tests that read a finished study."""
    import ray

    from study.cli import analyze
    from study.config import load_study
    from study.run import run_study
    from study_helpers import write_study

    tmp = tmp_path_factory.mktemp("finished-study")
    study = load_study(write_study(tmp, "finished", normalizations=("none", "per_image"), epochs=2))
    started = not ray.is_initialized()  # join a module's running Ray if there is one, else start and stop one
    if started:
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="ERROR")
    try:
        path = run_study(study, progress=False)
    finally:
        if started:
            ray.shutdown()
    return Path(path), analyze(path, str(tmp / "report"))
