"""Adaptive seeds in a study config, Ray-free: the settings, and how a study's grid splits for them.

    search:
      model.activation,model.normalization: [[selu, none], [relu, per_image]]   # the arms
      model.weights: [glyphs, glyphs-small]                                     # other axes: specifications
      seeds:
        adaptive: {min: 4, max: 20, margin: 0.02}   # optional: alpha 0.05, method t, bound null, ahead 2, first 0

`search.seeds.adaptive` replaces the `train.seed` axis (a config with both is refused). The grid then splits
(`split_axes`) into the *arm* axes (those with an arm key: `optuna.arm_keys`, activation and normalization by
default) and the *specification* axes (the `specifications:` section and every other axis); the searcher
(study.adaptive) runs each specification's arms at seed after seed until its answer is in. `plan`, `status`
and the config read these settings without Ray; study.adaptive holds the Searcher itself.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from study.analysis.sequential import METHODS

SEED_KEY = "train.seed"
ADAPTIVE_FILE = "adaptive.json"  # the searcher's decisions, written beside the experiment when it ends


@dataclass(frozen=True)
class AdaptiveSeeds:
    """`search.seeds.adaptive`: stop adding seeds once the confidence sequence has the answer.

    With method t the sequence is finite from 5 complete pairs on (at alpha 0.05), so the earliest
    decision comes at 5 seeds whatever `min` is; `min` is the number of seeds started at once.
    """

    min: int = 4                 # seeds every specification runs before the sequence is looked at
    max: int = 20                # seeds at most (then "undecided")
    margin: float = 0.0          # equivalence margin on the measure's scale (0: never "equivalent")
    alpha: float = 0.05          # error rate of the confidence sequence, valid at every look
    method: str = "t"            # t (Lai's t-mixture) or betting (needs bound)
    bound: float | None = None   # |difference| <= bound, for method betting (error area: 1)
    ahead: int = 2               # seeds allowed to run beyond the complete ones, after min
    first: int = 0               # seeds are first, first + 1, ...

    def __post_init__(self) -> None:
        ints = {"min": self.min, "max": self.max, "ahead": self.ahead, "first": self.first}
        if any(isinstance(v, bool) or not isinstance(v, int) for v in ints.values()):
            raise ValueError(f"search.seeds.adaptive: min, max, ahead and first must be integers, got {ints}")
        if not 2 <= self.min <= self.max or self.ahead < 1 or self.first < 0:
            raise ValueError(f"search.seeds.adaptive needs 2 <= min <= max, ahead >= 1 and first >= 0, got "
                             f"min {self.min}, max {self.max}, ahead {self.ahead}, first {self.first}")
        if not (isinstance(self.margin, (int, float)) and self.margin >= 0):
            raise ValueError(f"search.seeds.adaptive.margin must be a number >= 0, got {self.margin!r}")
        if not (isinstance(self.alpha, float) and 0 < self.alpha < 1):
            raise ValueError(f"search.seeds.adaptive.alpha must be in (0, 1), got {self.alpha!r}")
        if self.method not in METHODS:
            raise ValueError(f"search.seeds.adaptive.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.method == "betting" and not (isinstance(self.bound, (int, float)) and self.bound > 0):
            raise ValueError("search.seeds.adaptive.bound (a number > 0 bounding |difference|) is needed with "
                             f"method betting, got {self.bound!r}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> AdaptiveSeeds:
        """From the config's mapping; an unknown key or a bad value is a ValueError naming it."""
        if raw is not None and not isinstance(raw, dict):
            raise ValueError(f"search.seeds.adaptive must be a mapping such as {{min: 4, max: 20}}, got {raw!r}")
        raw = dict(raw or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"Unknown key search.seeds.adaptive.{unknown[0]}; known keys: {', '.join(sorted(known))}")
        if isinstance(raw.get("alpha"), int) and not isinstance(raw.get("alpha"), bool):
            raw["alpha"] = float(raw["alpha"])
        return cls(**raw)

    def seeds(self) -> range:
        """The seed range: enough for `max` seeds and as many replacements of failed ones."""
        return range(self.first, self.first + 2 * self.max)


def flat(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"model": {"activation": "selu"}} -> {"model.activation": "selu"}."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def find_arm(arms: list[dict], want: dict | int | None, default: int, role: str) -> int:
    """The index of the arm `want` names: an index, or values matched on the keys' last part
    (analysis.faster_arm's form, e.g. {"activation": "selu", "normalization": "none"}); ValueError unless
    exactly one arm matches."""
    if want is None:
        return default
    if isinstance(want, int):
        return want

    def has(arm: dict, key: str, value: Any) -> bool:
        return any((k == key or k.endswith("." + key)) and v == value for k, v in flat(arm).items())

    hits = [i for i, arm in enumerate(arms) if all(has(arm, k, v) for k, v in want.items())]
    if len(hits) != 1:
        raise ValueError(f"the {role} arm {want} matches {len(hits)} of the arms {arms}; it must match one")
    return hits[0]


def split_axes(axes: tuple, arm_keys: tuple[str, ...], spec_key: str) -> tuple[tuple, tuple]:
    """(arm axes, specification axes) of a grid without a seed axis: an axis with an arm key is an arm
    axis, unless it is the `specifications:` axis (led by `spec_key`); every other axis is a specification's."""
    arms = tuple(a for a in axes if a.leader != spec_key and set(a.keys) & set(arm_keys))
    return arms, tuple(a for a in axes if a not in arms)


def adaptive_of(doc: dict) -> AdaptiveSeeds | None:
    """The adaptive-seed settings a study.yaml records, or None."""
    seeds = (doc.get("search") or {}).get("seeds")
    return AdaptiveSeeds.from_dict(seeds.get("adaptive")) if isinstance(seeds, dict) else None


def planned_trials(doc: dict) -> int:
    """The trials a study.yaml's grid holds: with adaptive seeds, the fewest it runs (`min` seeds)."""
    count = 1
    for values in (doc.get("search") or {}).values():
        count *= len(values) if isinstance(values, list) else 1
    specs = (doc.get("specifications") or {}).get("list") or [None]
    adaptive = adaptive_of(doc)
    return count * len(specs) * (adaptive.min if adaptive else 1)


__all__ = ["ADAPTIVE_FILE", "AdaptiveSeeds", "SEED_KEY", "adaptive_of", "find_arm", "flat", "planned_trials",
           "split_axes"]
