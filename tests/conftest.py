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
    """(experiment folder, report folder) of a tiny 2x2 x 2-seed study run to the end and analyzed by
    `hwr-study run` in a child process (this one never starts Ray: tests/leaks.py), once per session (about
    a minute on 2 cores) for the tests that read a finished study."""
    from study.config import load_study
    from study.run import experiment_path
    from study_helpers import hwr_study, succeeded, write_study

    config = write_study(tmp_path_factory.mktemp("finished-study"), "finished", normalizations=("none", "per_image"),
                         epochs=2)
    succeeded(hwr_study("run", config))
    study = load_study(config)
    return Path(experiment_path(study)), Path(study.run.results_dir) / study.name
