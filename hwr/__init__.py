"""hwr: the Ray-free library: Chars74K data, the VGG16 transfer model, one training run, prediction."""

import os
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("hwr-study")  # one version for hwr, hwr-study and hwr-bench (pyproject.toml)
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "unknown (not installed)"

# PyTorch's CPU allocator backs large tensors with transparent huge pages when this is set (before torch
# allocates anything): the head's 100 MB gradient is no longer page-faulted in afresh every step
# (docs/performance.md: 224 px head epoch 6.1 s -> about 4 s). Processes started from here inherit it.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
