"""The frozen part's output, computed once and cached on disk.

While `trainable_from` is `none` or `blockN`, the layers before it never change, so their output for
every image is a pure function of (weights, normalization, images, frozen depth). Training then runs only
the rest of the network on these stored activations: the same numbers as running the frozen layers every
step (a test checks it), at a fraction of the cost.

Each cached set is a `.npy` file (a verified file, hwr.files) with a `.json` sidecar holding its shape,
dtype and sha256, both written whole (temporary file, then rename). A set whose file does not match its sidecar (truncated, damaged,
half-copied) is never used: it is computed again, with a warning naming the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from hwr.config import NAMED_BASES, Config
from hwr.data import default_cache_dir
from hwr.files import atomic_write, damage, write_verified
from hwr.model import HWRNet, ModelError, base_seed
from hwr.vgg import BLOCK_START, frozen_shape

FORMAT = 2  # 2: the sidecar records a sha256 (hwr.files), not a CRC-32
# Beyond this many bytes the frozen activations are not stored (block1 at 224 px would need ~40 GB);
# training then runs the frozen layers on each batch instead.
MAX_BYTES = int(float(os.environ.get("HWR_FEATURE_CACHE_GB", "8")) * 2**30)


def weights_id(weights: str, seed: int) -> str:
    """What fixes the conv base's values: the ImageNet release, a file's content, or the init seed."""
    if weights == "imagenet":
        return "imagenet1k_v1"
    if weights == "none":
        return f"random-seed{seed}"
    if weights in NAMED_BASES:  # the recipe fixes the base (its hash covers the fonts used)
        from hwr.bases import RECIPES
        from hwr.recipe import recipe_hash

        return f"{weights}-{recipe_hash(RECIPES[weights])}"
    try:
        digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:16]
    except OSError as e:
        raise ModelError(f"model.weights file {weights} cannot be read ({e.strerror or type(e).__name__}).") from None
    return f"file-{digest}"


def frozen_key(cfg: Config, data_key: str) -> str | None:
    """Cache key of the frozen activations for this run, or None when nothing before the head is frozen."""
    m = cfg.model
    depth = BLOCK_START[m.trainable_from]
    if depth == 0:
        return None
    parts = [f"v{FORMAT}", data_key, weights_id(m.weights, base_seed(m, cfg.train.seed)), m.normalization,
             str(cfg.data.image_size), f"depth{depth}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def frozen_nbytes(trainable_from: str, num_images: int, image_size: int) -> int:
    """Bytes of the float32 frozen activations of `num_images` images (0 when nothing is frozen)."""
    shape = frozen_shape(trainable_from, image_size)
    return 0 if shape is None else math.prod(shape) * 4 * num_images


@torch.no_grad()
def compute_frozen(model: HWRNet, images: np.ndarray, device: torch.device, batch_size: int = 64,
                   progress: bool = False) -> torch.Tensor:
    """Run the frozen part over all images, in batches; float32 on the CPU, in image order (with a bar on
    stderr when `progress`)."""
    model.eval()
    out = []
    use_bf16 = device.type == "cuda"
    bar = tqdm(total=len(images), desc="frozen features", unit="img", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.array(images[start : start + batch_size])).to(device)  # a copy: may be read-only
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            z = model.frozen(batch)
        out.append(z.float().contiguous().cpu())
        bar.update(len(batch))
    bar.close()
    return torch.cat(out)


def cache_path(key: str, device_type: str, cache_dir: Path | None = None) -> Path:
    """Where the activations of `key`, computed on a device of this type, are kept."""
    return Path(cache_dir or default_cache_dir() / "features") / f"{key}-{device_type}.npy"


def load_cached(key: str, device_type: str, cache_dir: Path | None = None) -> np.ndarray | None:
    """The stored activations of `key`, or None when this machine has not computed them yet, or when the
    stored file does not match its sidecar (then with a warning naming it: the caller computes them again)."""
    path = cache_path(key, device_type, cache_dir)
    if not path.exists():
        return None
    sidecar = path.with_suffix(".json")
    try:
        meta = json.loads(sidecar.read_text())
        if (problem := damage(path, meta["sha256"], f"its sidecar {sidecar.name}")) is not None:
            raise ValueError(problem)
        z = np.load(path, allow_pickle=False)
        if list(z.shape) != meta["shape"] or str(z.dtype) != meta["dtype"]:
            raise ValueError("is damaged (its shape or dtype is not the one its sidecar records)")
    except FileNotFoundError:  # its writer stopped between the array and the sidecar
        return None
    except (OSError, ValueError, KeyError, TypeError, EOFError) as e:
        warnings.warn(f"The frozen-feature cache {path} {e}; computing it again.", stacklevel=2)
        return None
    return z


def store(z: np.ndarray, key: str, device_type: str, cache_dir: Path | None = None) -> Path:
    """Write activations (a verified file) and their sidecar (shape, dtype, sha256), each whole; returns the
    array's path."""
    path = cache_path(key, device_type, cache_dir)
    digest = write_verified(path, lambda f: np.save(f, z), beside=False)  # the sidecar last: none, not used
    meta = {"format": FORMAT, "shape": list(z.shape), "dtype": str(z.dtype), "sha256": digest}
    atomic_write(path.with_suffix(".json"), lambda f: f.write(json.dumps(meta).encode()))
    return path


def frozen_features(model: HWRNet, images: np.ndarray, key: str, device: torch.device,
                    cache_dir: Path | None = None, progress: bool = False) -> torch.Tensor | None:
    """The frozen activations for `images`, from the disk cache when present; None when too large to keep.
    `progress`: a bar on stderr while they are computed.

    A cache that cannot be written (a full disk) is skipped with a warning: the activations are still returned."""
    if frozen_nbytes(model.cfg.trainable_from, len(images), images.shape[-1]) > MAX_BYTES:
        return None
    cached = load_cached(key, device.type, cache_dir)
    if cached is not None:
        return torch.from_numpy(cached)
    with _node_lock(cache_path(key, device.type, cache_dir)):  # one computation per machine, however many ask
        cached = load_cached(key, device.type, cache_dir)  # computed meanwhile by another process here
        if cached is not None:
            return torch.from_numpy(cached)
        z = compute_frozen(model, images, device, progress=progress)
        try:
            store(z.numpy(), key, device.type, cache_dir)
        except OSError as e:
            warnings.warn(f"Could not write the frozen-feature cache for {key} ({e.strerror or e}); "
                          "it will be computed again next time.", stacklevel=2)
    return z


@contextlib.contextmanager
def _node_lock(path: Path) -> Iterator[None]:
    """An exclusive lock beside a cache file (`<key>.lock`), held while one process computes it: the trials
    of one node that each need a set too large for Ray's object store compute it once. A cache folder that
    cannot be written (a full or read-only disk) is not locked."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path.with_suffix(".lock"), "a")
    except OSError:
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
