"""A study's specifications: the analysis choices the claim is checked under, each a named set of config values.

Two forms in a study config (`specifications:`); the arms (`search:`) and seeds are crossed inside each:

    specifications:                      # a full cross: one specification per combination
      cross:
        train.optimizer: [adam, sgd]
        model.trainable_from: [none, block5]    # names: adam-none, adam-block5, sgd-none, sgd-block5

    specifications:                      # named departures from the reference (the config's own values)
      reference: adam-frozen-32          # the reference's name (default `reference`; null: leave it out)
      list:
        - {name: sgd, set: {train.optimizer: sgd, train.momentum: 0.9}}
        - {name: block5, set: {model.trainable_from: block5}}

The specifications are one zipped `study.grid.Axis` over the key `specification` (its name, the Tune grid
leader) and every key any of them sets (a specification that leaves a key out has the base value), so trial
configs, Tune's param_space and the lr-search groups all come from the grid. Each trial's Tune config carries
`specification: <name>` at its top level (stripped before hwr reads it: `hwr_sections`), and
`study.experiment.load_tables` gives it as the `specification` column. Ray- and torch-free.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from hwr.config import SECTIONS, ConfigError, get_key
from study.grid import Axis

SPEC_KEY = "specification"  # top-level key of a trial's Tune config: its specification's name
DEFAULT_REFERENCE = "reference"


@dataclass(frozen=True)
class Specification:
    name: str
    settings: dict[str, Any] = field(default_factory=dict)  # dotted hwr key -> value (departures from the base)


def hwr_sections(config: dict[str, Any]) -> dict[str, Any]:
    """The hwr part of a trial's Tune config (its data, model and train sections)."""
    return {k: v for k, v in config.items() if k in SECTIONS}


def _word(name: Any, where: str, what: str) -> str:
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ ,") or name.startswith("."):
        raise ConfigError(f"{what} in {where} must be a non-empty word without slashes, commas or spaces, "
                          f"got {name!r}.")
    return name


def _cross(raw: Any, where: str) -> list[Specification]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"specifications.cross in {where} must map dotted keys to lists of values.")
    for key, values in raw.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"specifications.cross.{key} in {where} must be a non-empty list of values.")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"specifications.cross.{key} in {where} lists a value twice.")
    keys = list(raw)
    return [Specification("-".join(str(v) for v in combo), dict(zip(keys, combo)))
            for combo in itertools.product(*raw.values())]


def _listed(raw: dict[str, Any], where: str) -> list[Specification]:
    items = raw.get("list")
    if not isinstance(items, list) or not items:
        raise ConfigError(f"specifications.list in {where} must be a non-empty list of {{name, set}} entries.")
    reference = raw.get("reference", DEFAULT_REFERENCE)
    specs = []
    if reference is not None:
        specs.append(Specification(_word(reference, where, "specifications.reference"), {}))
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) - {"name", "set"} or "name" not in item:
            raise ConfigError(f"specifications.list[{i}] in {where} must be a mapping {{name: ..., set: {{...}}}}.")
        name = _word(item["name"], where, f"specifications.list[{i}].name")
        settings = item.get("set") or {}
        if not isinstance(settings, dict):
            raise ConfigError(f"specifications.list[{i}].set in {where} must map dotted keys to values.")
        if name == reference:
            if settings:
                raise ConfigError(f"specifications.list[{i}] in {where} is named as the reference "
                                  f"({reference!r}) but sets keys; the reference is the config's own values.")
            continue  # the reference, as a study record lists it
        if not settings:
            raise ConfigError(f"specifications.list[{i}] ({name}) in {where} sets nothing; name the keys it "
                              "changes under `set:`.")
        specs.append(Specification(name, dict(settings)))
    return specs


def parse_specifications(raw: Any, where: str) -> tuple[Specification, ...]:
    """The specifications of a `specifications:` section, checked (the keys are checked by the caller)."""
    if raw is None:
        return ()
    if not isinstance(raw, dict) or ("cross" in raw) == ("list" in raw):
        raise ConfigError(f"specifications in {where} must hold either `cross:` (keys to lists of values) or "
                          "`list:` (named departures from the reference), not both or neither.")
    unknown = set(raw) - ({"cross"} if "cross" in raw else {"list", "reference"})
    if unknown:
        raise ConfigError(f"Unknown key specifications.{sorted(unknown)[0]} in {where}; a cross takes only "
                          "`cross:`, a list `list:` and `reference:`.")
    specs = _cross(raw["cross"], where) if "cross" in raw else _listed(raw, where)
    names = [s.name for s in specs]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"specifications in {where} name {name!r} twice; each needs its own name.")
    seen: dict[str, str] = {}
    for spec in specs:
        same = seen.setdefault(repr(sorted(spec.settings.items(), key=lambda kv: kv[0])), spec.name)
        if same != spec.name:
            raise ConfigError(f"specifications {same!r} and {spec.name!r} in {where} set the same values.")
    return tuple(specs)


def spec_keys(specs: tuple[Specification, ...]) -> tuple[str, ...]:
    """Every key some specification sets, in order of first appearance."""
    return tuple(dict.fromkeys(k for s in specs for k in s.settings))


def spec_axis(specs: tuple[Specification, ...], resolved_base: dict[str, Any]) -> Axis:
    """The specifications as one zipped Axis: the name leads, each key takes the spec's value or the base's."""
    keys = spec_keys(specs)
    points = tuple((s.name, *(s.settings.get(k, get_key(resolved_base, k)) for k in keys)) for s in specs)
    return Axis((SPEC_KEY, *keys), points)


def spec_record(specs: tuple[Specification, ...], reference: str | None) -> dict[str, Any]:
    """What study.yaml records (a `list:` form that reads back as the same specifications)."""
    return {"reference": reference, "list": [{"name": s.name, "set": dict(s.settings)} for s in specs]}


def reference_of(raw: Any) -> str | None:
    """The reference specification's name, if the section has one (a cross has none)."""
    if isinstance(raw, dict) and "list" in raw:
        return raw.get("reference", DEFAULT_REFERENCE)
    return None
