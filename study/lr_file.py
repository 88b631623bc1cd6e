"""The best-lr file `hwr-study lr-search` writes and `hwr-study run --lr-from` reads (Ray-free).

    study: multiverse
    param: train.lr
    metric: best_val_acc
    mode: max
    keys: [specification, activation, normalization]
    arms:                       # one row per (specification, arm): its best lr and every search trial
      - {specification: sgd, activation: selu, normalization: none, lr: 0.0012, best_val_acc: 0.61,
         experiment: ..., trials: [{lr: 0.0003, seed: 100, best_val_acc: 0.52, epochs_run: 3.0}, ...]}

A file without `specification` (written before specifications, keyed by activation and normalization) is
still read: each arm's lr then applies in every specification.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hwr.config import ConfigError
from study import grid
from study.specs import SPEC_KEY


def leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def lr_groups(study) -> list[tuple[Any, ...]]:
    """The distinct (specification, *arm) values (or arms, without specifications) of the grid, in grid order."""
    return grid.arm_groups(study.trial_dicts(), study.lr_keys)


def read_lr_file(path: str | Path, study) -> dict[tuple, float]:
    """{lr group (study.lr_keys' values): lr} for every group of the study's grid, or a ConfigError."""
    keys = study.lr_keys
    try:
        raw = yaml.safe_load(Path(path).read_text())
        rows = raw["arms"]
        if rows and all(SPEC_KEY not in row for row in rows) and SPEC_KEY in keys:  # the old per-arm form
            by_arm = {tuple(a[leaf(k)] for k in keys[1:]): float(a["lr"]) for a in rows}
            lrs = {(spec, *arm): lr for spec in dict.fromkeys(s.name for s in study.specifications)
                   for arm, lr in by_arm.items()}
        else:
            lrs = {tuple(a[leaf(k)] for k in keys): float(a["lr"]) for a in rows}
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        raise ConfigError(f"--lr-from file {path} is not a best-lr file written by `hwr-study lr-search`.") from None
    for group in lr_groups(study):
        if group not in lrs:
            arm = "+".join(map(str, group[1:] if SPEC_KEY in keys else group))
            where = f"specification {group[0]}, " if SPEC_KEY in keys else ""
            raise ConfigError(f"--lr-from file {path} has no lr for the {where}arm {arm}.")
    return lrs


def lr_doc(lr_by_group: dict | None, keys: tuple[str, ...]) -> list | None:
    """The lrs a study ran at, as study.yaml records them."""
    if not lr_by_group:
        return None
    return [{**{leaf(k): v for k, v in zip(keys, group)}, "lr": lr}
            for group, lr in sorted(lr_by_group.items(), key=lambda kv: tuple(map(str, kv[0])))]
