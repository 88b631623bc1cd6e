"""The named conv bases pretrained here (`model.weights: glyphs`, `glyphs-small`): their recipes, the cache
that holds them by recipe hash, and `ensure_base`, which builds one on first use (as torchvision downloads
weights on first use) and rebuilds a damaged one.

    path = ensure_base("glyphs")               # built once (progress bar), then from the cache

Cached under `$HWR_CACHE_DIR/bases/` as `<name>-<recipe hash>.pt` with a JSON sidecar describing it.
A process given a base's weights by its caller (a study trial, from Ray's object store: `provide`) uses them
instead of its own cache, so no node of a cluster builds a base the driver already built.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from hwr.config import NAMED_BASES
from hwr.data import default_cache_dir
from hwr.files import atomic_write, damage, write_verified
from hwr.recipe import GlyphsSection, PretrainError, Recipe, TrainSection, recipe_hash

# The bases `model.weights` can name. `glyphs` is the best recipe found (docs/pretraining.md);
# `glyphs-small` is a few minutes' version for the offline demo (configs/quick.yaml).
RECIPES = {
    "glyphs": Recipe(),
    "glyphs-small": Recipe(train=TrainSection(shallow_samples=30_000, samples=0, val_per_class=2)),
}
assert set(RECIPES) == set(NAMED_BASES)
# Test hook: with HWR_TEST_TINY_BASE=1 (in every process of a test cluster), `glyphs-small` is this recipe,
# which trains in seconds (Hershey Greek, a few steps), so that a test builds and ships a named base through
# the real code path without minutes of pretraining. Its hash differs: it is cached apart from the real one.
TINY_RECIPE = Recipe(glyphs=GlyphsSection(sources=("hershey",), scripts=("greek",)),
                     train=TrainSection(shallow_samples=64, samples=32, batch_size=32, val_per_class=1))
if os.environ.get("HWR_TEST_TINY_BASE"):
    RECIPES["glyphs-small"] = TINY_RECIPE

_PROVIDED: dict[str, dict[str, Any]] = {}  # name -> state dict (tensors or arrays) handed in by the caller


def provide(name: str, state: dict[str, Any]) -> None:
    """Use `state` as the named base's weights in this process (`hwr.model.load_conv_base` takes it before
    the cache): a study's driver builds each base once and ships it to every trial through Ray's object store."""
    _PROVIDED[name] = state


def provided(name: str) -> dict[str, Any] | None:
    return _PROVIDED.get(name)


def bases_dir() -> Path:
    return default_cache_dir() / "bases"


def base_path(recipe: Recipe, name: str = "glyphs") -> Path:
    return bases_dir() / f"{name}-{recipe_hash(recipe)}.pt"


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def pretrain(recipe: Recipe, out: Path, progress: bool = True) -> dict[str, Any]:
    """Pretrain a base on `recipe` (hwr.pretrain) and write it to `out` (a plain VGG16 conv state dict) with
    its sidecar, both whole; returns the sidecar."""
    import torch

    from hwr.pretrain import train_recipe  # glyph rendering and training: only when a base is built

    state, sidecar = train_recipe(recipe, progress)
    # the sha256 goes in the sidecar, which ensure_base checks: a damaged cached base is built again
    sidecar["sha256"] = write_verified(out, lambda f: torch.save(state, f), beside=False)
    atomic_write(sidecar_path(out), lambda f: f.write(json.dumps(sidecar, indent=2).encode()))
    return sidecar


def base_problem(path: Path) -> str | None:
    """Why the base at `path` cannot be used as it is (missing, no sidecar, not the file its sidecar
    describes: truncated or damaged), or None. A sidecar written before sha256s were recorded is trusted."""
    if not path.exists():
        return "does not exist"
    try:
        recorded = json.loads(sidecar_path(path).read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return f"has no readable sidecar {sidecar_path(path).name}"
    return None if recorded is None else damage(path, recorded, f"its sidecar {sidecar_path(path).name}")


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive lock beside `path`, so that two processes on one machine build a base only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_base(name: str = "glyphs", progress: bool = True) -> Path:
    """The path of a named base, pretrained on first use (as torchvision downloads weights on first use)."""
    if name not in RECIPES:
        raise PretrainError(f"unknown base {name!r}; known: {', '.join(RECIPES)}.")
    recipe = RECIPES[name]
    path = base_path(recipe, name)
    if base_problem(path) is None:
        return path
    with _lock(path):
        if (problem := base_problem(path)) is not None:  # not built meanwhile by another process
            if path.exists():
                warnings.warn(f"The cached {name!r} base {path} {problem}; pretraining it again.", stacklevel=2)
            budget = "about 10 minutes on 2 CPU cores" if name == "glyphs" else "a few minutes on 2 CPU cores"
            print(f"Pretraining the {name!r} conv base once ({budget}); it is cached in {path}.",
                  file=sys.stderr, flush=True)
            pretrain(recipe, path, progress)
    return path


__all__ = ["PretrainError", "RECIPES", "base_path", "base_problem", "ensure_base", "pretrain", "provide", "provided",
           "sidecar_path"]
