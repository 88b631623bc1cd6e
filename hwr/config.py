"""One training run's configuration: three sections of scalars, every key with a default.

    data:  {dataset: chars74k, root: null, image_size: 224, split: paper, split_seed: 0}
    model: {weights: imagenet, trainable_from: block5, activation: relu, normalization: per_image, dropout: 0.0,
            base_seed: null, init: auto}
    train: {optimizer: sgd, lr: 1.0e-3, momentum: 0.9, batch_size: 32, epochs: 30, seed: 0, evals_per_epoch: 4}

`load_config` reads a YAML file and `--set section.key=value` overrides into a validated `Config`.
Every mistake is a `ConfigError` whose message is one sentence naming the key or value at fault.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hwr.errors import ConfigError
from hwr.sections import as_dict, load_yaml, read_section

ACTIVATIONS = ("relu", "selu", "elu", "gelu", "silu", "tanh")
NORMALIZATIONS = ("none", "per_image", "imagenet")
TRAINABLE_FROM = ("none", "block1", "block2", "block3", "block4", "block5", "all")
DATASETS = ("chars74k", "synthetic")
SPLITS = ("paper", "writer")
OPTIMIZERS = ("sgd", "adam", "rmsprop")
INITS = ("auto", "glorot", "lecun", "paired")  # the head's initialisation (hwr.model.init_linear)
# Conv bases pretrained here on rendered glyphs (hwr.pretrain), built on first use and cached.
NAMED_BASES = ("glyphs", "glyphs-small")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "chars74k"
    root: str | None = None
    image_size: int = 224
    split: str = "paper"
    split_seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    weights: str = "imagenet"  # imagenet | glyphs | glyphs-small | none | path to a VGG16 state dict
    trainable_from: str = "block5"
    activation: str = "relu"
    normalization: str = "per_image"
    dropout: float = 0.0
    # With weights=none: the random conv base's init seed. null = train.seed (each seed draws its own base);
    # an integer fixes one random base for every trial, as pretrained weights are fixed.
    base_seed: int | None = None
    init: str = "auto"  # head init: auto | glorot | lecun | paired (hwr.model.INITS)


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "sgd"
    lr: float = 1.0e-3
    momentum: float = 0.9
    batch_size: int = 32
    epochs: int = 30
    seed: int = 0
    evals_per_epoch: int = 4  # validation (and training-loss) measurements per epoch, evenly spaced in steps


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}.")


def _validate(cfg: Config) -> Config:
    d, m, t = cfg.data, cfg.model, cfg.train
    _check_choice("data.dataset", d.dataset, DATASETS)
    _check_choice("data.split", d.split, SPLITS)
    if d.image_size < 32 or d.image_size % 32:
        raise ConfigError(f"data.image_size must be a multiple of 32 and at least 32, got {d.image_size}.")
    if d.split_seed < 0:
        raise ConfigError(f"data.split_seed must be >= 0, got {d.split_seed}.")
    if m.weights not in ("imagenet", "none", *NAMED_BASES) and not m.weights.endswith((".pt", ".pth")):
        raise ConfigError(
            f"model.weights must be imagenet, {', '.join(NAMED_BASES)}, none or a path to a .pt/.pth state dict, "
            f"got {m.weights!r}."
        )
    _check_choice("model.trainable_from", m.trainable_from, TRAINABLE_FROM)
    _check_choice("model.activation", m.activation, ACTIVATIONS)
    _check_choice("model.normalization", m.normalization, NORMALIZATIONS)
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {m.dropout}.")
    _check_choice("model.init", m.init, INITS)
    if m.base_seed is not None and m.weights != "none":
        raise ConfigError(f"model.base_seed only applies with model.weights none, not {m.weights!r}; remove it.")
    _check_choice("train.optimizer", t.optimizer, OPTIMIZERS)
    if not 0 < t.lr < float("inf"):
        raise ConfigError(f"train.lr must be a finite number > 0, got {t.lr}.")
    if not 0.0 <= t.momentum < 1.0:
        raise ConfigError(f"train.momentum must be in [0, 1), got {t.momentum}.")
    if t.batch_size < 1:
        raise ConfigError(f"train.batch_size must be >= 1, got {t.batch_size}.")
    if t.epochs < 1:
        raise ConfigError(f"train.epochs must be >= 1, got {t.epochs}.")
    if t.evals_per_epoch < 1:
        raise ConfigError(f"train.evals_per_epoch must be >= 1, got {t.evals_per_epoch}.")
    return cfg


def sections_from_dict(raw: dict[str, Any] | None, sections: dict[str, type], where: str) -> dict[str, Any]:
    """{section name: dataclass instance} from nested dicts (hwr.sections); unknown sections and keys are errors."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping of sections ({', '.join(sections)}).")
    out = {}
    for name, section in raw.items():
        if name not in sections:
            raise ConfigError(f"Unknown section {name!r} in {where}; expected one of {', '.join(sections)}.")
        out[name] = read_section(sections[name], section, name, where)
    return out


def resolved(raw: dict[str, Any] | None, where: str = "config") -> dict[str, dict[str, Any]]:
    """The nested trial config with every default filled in and every value typed, not yet cross-checked
    (a study's base may need its grid's values to be valid)."""
    given = sections_from_dict({s: (raw or {}).get(s) for s in SECTIONS}, SECTIONS, where)
    return {name: as_dict(section) for name, section in given.items()}


def config_from_dict(raw: dict[str, Any] | None, where: str = "config") -> Config:
    """Build a validated Config from nested dicts; unknown sections and keys are errors."""
    return _validate(Config(**sections_from_dict(raw, SECTIONS, where)))


def get_key(nested: Any, dotted: str) -> Any:
    """nested['a']['b'] for 'a.b' (the one place a dotted key is split for reading)."""
    node = nested
    for part in dotted.split("."):
        node = node[part]
    return node


def set_key(nested: dict[str, Any], dotted: str, value: Any) -> None:
    """Set nested['a']['b'] = value for 'a.b', creating sections as needed (in place)."""
    *parents, leaf = dotted.split(".")
    node = nested
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=3e-4' -> (['train', 'lr'], 0.0003); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"Override {text!r} must look like section.key=value.")
    key, _, value = text.partition("=")
    parts = key.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"Override {text!r} must name a dotted key such as train.lr.")
    try:
        parsed = load_yaml(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return parts, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of nested dict `raw` with each `a.b=value` set (sections are created as needed)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (raw or {}).items()}
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(f"Override {text!r}: {part!r} is not a section.")
            else:
                nxt = node[part] = dict(nxt)
            node = nxt
        node[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, naming the file in any error."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"Cannot read config file {path}: {e.strerror or e}.") from None
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"Config file {path} is not valid YAML{at}.") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of sections, not a {type(raw).__name__}.")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults < YAML file < overrides, validated."""
    raw = read_yaml(path) if path else {}
    where = str(path) if path else ""  # --set alone: the key is the whole story
    return config_from_dict(apply_overrides(raw, list(overrides)), where)
