"""The study's grid, built once: each `search:` entry is one `Axis`, and the trial configs, Tune's
param_space, the arms and the lr-search groups all come from the axes.

    search:
      model.activation: [relu, selu]                    # an axis over one key
      model.activation,train.lr: [[relu, 1e-3], [selu, 1e-4]]   # a zipped axis: its keys move together

Every config key may be an axis (`data.*` included); a point of the grid is {dotted key: value}.
Ray-free: `tune_space` imports ray.tune only when asked for Tune's param_space.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any

from hwr.config import Config, get_key, set_key


@dataclass(frozen=True)
class Axis:
    """One search axis: its keys (one, or several zipped) and its points, one value per key each."""

    keys: tuple[str, ...]
    points: tuple[tuple[Any, ...], ...]

    @classmethod
    def from_search(cls, name: str, values: list[Any]) -> Axis:
        keys = tuple(name.split(","))
        points = tuple(tuple(v) if len(keys) > 1 else (v,) for v in values)
        return cls(keys, points)

    @property
    def name(self) -> str:
        return ",".join(self.keys)

    @property
    def leader(self) -> str:
        """The key Tune grids over; the others of a zipped axis follow it."""
        return self.keys[0]

    def assignments(self) -> list[dict[str, Any]]:
        """{key: value} of each point, in order."""
        return [dict(zip(self.keys, p)) for p in self.points]

    def tune_space(self, space: dict[str, Any]) -> None:
        """Write this axis into a nested param_space: a grid over the leader, the others following it."""
        import ray.tune

        set_key(space, self.leader, ray.tune.grid_search([p[0] for p in self.points]))
        for i, key in enumerate(self.keys[1:], 1):
            follow = {p[0]: p[i] for p in self.points}
            set_key(space, key, ray.tune.sample_from(functools.partial(_follow, self.leader, follow)))


def _follow(leader: str, mapping: dict, spec) -> Any:
    """The value a zipped axis pairs with the leader key's value in this trial."""
    return mapping[get_key(spec.config, leader)]


def axes_of(search: dict[str, list[Any]]) -> tuple[Axis, ...]:
    return tuple(Axis.from_search(name, values) for name, values in search.items())


def grid_points(axes: tuple[Axis, ...]) -> list[dict[str, Any]]:
    """Every point of the grid as {dotted key: value}, in grid order (the first axis varies slowest)."""
    out = []
    for combo in itertools.product(*(a.assignments() for a in axes)):
        point: dict[str, Any] = {}
        for part in combo:
            point.update(part)
        out.append(point)
    return out


def apply_point(base: dict[str, dict[str, Any]], point: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A copy of the nested `base` with each of the point's keys set."""
    out = {s: dict(v) for s, v in base.items()}
    for key, value in point.items():
        set_key(out, key, value)
    return out


def param_space(base: dict[str, dict[str, Any]], axes: tuple[Axis, ...]) -> dict[str, Any]:
    """Tune's param_space: the nested base with one grid_search per axis."""
    space = {s: dict(v) for s, v in base.items()}
    for axis in axes:
        axis.tune_space(space)
    return space


def arm_of(config: dict[str, Any], arm_keys: tuple[str, ...]) -> tuple[Any, ...]:
    """The arm of a nested config: its values of the arm keys, in their order (a key it leaves out has its
    default value)."""
    return tuple(_get_or_default(config, k) for k in arm_keys)


def _get_or_default(config: dict[str, Any], key: str) -> Any:
    try:
        return get_key(config, key)
    except KeyError:
        return get_key(Config().to_dict(), key)


def arm_groups(configs: list[dict[str, Any]], arm_keys: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """The distinct arms across nested configs, in grid order."""
    return list(dict.fromkeys(arm_of(c, arm_keys) for c in configs))
