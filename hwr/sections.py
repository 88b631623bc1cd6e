"""The one config engine: every config section (trial, study, optuna, pretrain recipe, analysis) is a frozen
dataclass whose annotations say what each key holds, and `read_section` turns a YAML mapping into it.

Plain dataclasses resolved with `typing.get_type_hints` rather than pydantic: hwr stays free of Ray and its
dependencies, and every mistake must be one sentence naming the key and file, which a few lines here give
exactly, where pydantic's ValidationError is a multi-line report to be rewritten anyway.

Annotations understood: int, float, str, bool, `X | None`, `tuple[X, ...]`, `tuple[X, Y]`, dict and Any.
A YAML number written `1e-4` is a number (`load_yaml`), and an int is accepted where a float is meant.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any

import yaml

from hwr.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-4` (no dot) as a string; this loader reads it, like `1.0e-4`, as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """yaml.safe_load, with `1e-4` read as a number."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def read_section(cls: type, raw: Any, name: str, where: str) -> Any:
    """An instance of dataclass `cls` from the mapping `raw` (None: all defaults); unknown keys are errors."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"Section {name!r} in {where} must be a mapping of keys to values.")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"Unknown key {name}.{key} in {where}; known keys: {', '.join(sorted(known))}.")
        values[key] = coerce(f"{name}.{key}", value, hints[key], where)
    return cls(**values)


def as_dict(section: Any) -> dict[str, Any]:
    """A section's values with every default, as YAML writes them (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(section).items()}


def coerce(key: str, value: Any, hint: Any, where: str) -> Any:
    """`value` as the annotation `hint` says, or a ConfigError naming `key` (in `where`)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if value is None:
        raise ConfigError(f"{_at(key, where)} must not be empty.")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{_at(key, where)} must be a list, got {value!r}.")
        items = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(items) != len(value):
            raise ConfigError(f"{_at(key, where)} must be a list of {len(items)} values, got {len(value)}.")
        return tuple(coerce(f"{key}[{i}]", v, t, where) for i, (v, t) in enumerate(zip(value, items)))
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{_at(key, where)} must be a mapping, got {value!r}.")
        return dict(value)
    return _scalar(key, value, hint, where)


def _at(key: str, where: str) -> str:
    return f"{key} in {where}" if where else key


def _scalar(key: str, value: Any, kind: type, where: str) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{_at(key, where)} must be true or false, got {value!r}.")
        return value
    if isinstance(value, bool):
        raise ConfigError(f"{_at(key, where)} must be {_WORDS[kind]}, got {value!r}.")
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ConfigError(f"{_at(key, where)} must be an integer, got {value!r}.")
        return value
    if kind is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{_at(key, where)} must be a number, got {value!r}.") from None
        if not isinstance(value, (int, float)):
            raise ConfigError(f"{_at(key, where)} must be a number, got {value!r}.")
        return float(value)
    if kind is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{_at(key, where)} must be a string, got {value!r}.")
        return str(value)
    raise TypeError(f"{key}: the config engine does not know the annotation {kind!r}")


_WORDS = {int: "an integer", float: "a number", str: "a string"}
