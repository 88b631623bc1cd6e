"""Shared fixtures: a private cache dir for the whole session, and tiny configs on the synthetic set."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

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
