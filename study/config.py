"""A study config: hwr's trial config plus the grid, resources, run and analysis settings.

    name: factorial
    data:   {dataset: chars74k, image_size: 224}
    model:  {weights: imagenet, trainable_from: block5}
    train:  {epochs: 30}
    search:                         # dotted hwr keys, each a list of values: one grid axis each
      model.activation: [relu, selu]
      train.seed: [0, 1, 2]
      # a zipped axis sets several keys together (arms that are not a cross):
      # model.activation,model.normalization: [[relu, per_image], [selu, none]]
      # seeds: {adaptive: {min: 4, max: 20}}   # instead of train.seed: seeds until the answer is in
    resources: {cpu: 1, gpu: 0.25}  # per trial; fractional GPUs pack trials on one GPU
    run: {storage_path: results/ray, max_failures: 2}   # checkpoints: see RunSettings
    analysis: {target_acc: 0.7}     # see study.analysis.params.AnalysisParams
    optuna: {...}                   # lr-search only, see OptunaConfig
    specifications: {...}           # optional: the analysis choices, each crossed with the grid (study.specs)

With `specifications:` (a `cross:` of keys, or a `list:` of named departures from a `reference:`; see
study/specs.py) the grid is the specifications x the `search:` axes: each specification runs every arm and
seed, each trial's Tune config carries `specification: <name>`, and lr-search tunes per (specification, arm).

With `search: {seeds: {adaptive: {min: 4, max: 20, ...}}}` (instead of a `train.seed` axis; study/seeds.py)
the seeds are chosen as the study runs (study/adaptive.py): the grid then holds the first `min` seeds, the
trials every such run makes, and `adaptive_layout` gives the searcher its specifications and arms.

Every key is checked: an unknown or misspelt one is a ConfigError naming it, and each grid point is
validated as a full hwr config before Ray starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hwr.config import SECTIONS, Config, ConfigError, apply_overrides, config_from_dict, get_key, read_yaml, \
    resolved
from hwr.sections import as_dict, load_yaml, read_section
from study.grid import Axis, apply_point, axes_of, grid_points
from study.seeds import SEED_KEY, AdaptiveSeeds, find_arm, split_axes
from study.specs import SPEC_KEY, Specification, hwr_sections, parse_specifications, reference_of, spec_axis, \
    spec_keys, spec_record

TOP_KEYS = ("name", "data", "model", "train", "search", "resources", "run", "analysis", "optuna", "specifications")


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class RunSettings:
    """Where the experiment goes, retries, and the trials' checkpoint policy (hwr.train.CheckpointPolicy).

    A trial writes a resume checkpoint after every `checkpoint_every`-th epoch (0: none before the last),
    at most one per `checkpoint_seconds` (0: no limit), and always a final one at its last epoch;
    `keep_best` keeps its best-validation weights for `hwr predict`; Tune keeps each trial's newest
    `keep_checkpoints` checkpoints.
    """

    storage_path: str = "results/ray"
    max_failures: int = 2
    keep_checkpoints: int = 2
    results_dir: str = "results"
    checkpoint_every: int = 1
    checkpoint_seconds: float = 60.0
    keep_best: bool = False
    allow_errors: bool = False  # true: a study whose trials errored still ends with exit code 0


@dataclass(frozen=True)
class OptunaConfig:
    """Learning-rate search per (specification, arm): `trials_per_arm` Optuna (TPE) trials over a log-uniform
    range, `range: {optimizer: [low, high]}` for the group's optimizer, else [low, high]; trial i runs on
    `seeds[i % len(seeds)]`, seeds the study never evaluates; the TPE sampler of each group is seeded from
    `seed` and the group's name; with `early_stopping`, Tune's ASHAScheduler stops the worse trials at
    epochs `grace_epochs * reduction_factor**k` (rungs), on `metric`."""

    param: str = "train.lr"
    low: float = 1.0e-5
    high: float = 1.0e-1
    range: dict = field(default_factory=dict)  # optimizer -> [low, high], e.g. {sgd: [1e-5, 1e-1]}
    trials_per_arm: int = 8
    metric: str = "val_acc"
    mode: str = "max"
    seed: int = 0
    seeds: tuple[int, ...] = (100,)
    early_stopping: bool = True
    grace_epochs: int = 1
    reduction_factor: int = 3
    arm_keys: tuple[str, ...] = ("model.activation", "model.normalization")

    def bounds(self, optimizer: str) -> tuple[float, float]:
        """The log-uniform range searched for a group trained with `optimizer`."""
        low, high = self.range.get(optimizer, (self.low, self.high))
        return float(low), float(high)


@dataclass(frozen=True)
class StudyConfig:
    name: str
    base: dict[str, dict[str, Any]]  # hwr sections, as written (defaults filled in by hwr)
    search: dict[str, list[Any]] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    run: RunSettings = field(default_factory=RunSettings)
    analysis: dict[str, Any] = field(default_factory=dict)
    optuna: OptunaConfig | None = None
    source: str = "config"
    specifications: tuple[Specification, ...] = ()
    reference: str | None = None  # the reference specification's name (a `list:` form's `reference:`)
    adaptive: AdaptiveSeeds | None = None  # `search.seeds.adaptive` (then `search` holds no train.seed axis)

    @property
    def axes(self) -> tuple[Axis, ...]:
        """The grid: the specifications' Axis first (when there are any), then one Axis per `search:` entry
        (with adaptive seeds, then an axis of the first `min` seeds)."""
        axes = self.search_axes
        if self.adaptive is not None:
            first = self.adaptive.first
            axes = (*axes, Axis((SEED_KEY,), tuple((s,) for s in range(first, first + self.adaptive.min))))
        return axes

    @property
    def search_axes(self) -> tuple[Axis, ...]:
        """The specifications' Axis (when there are any) and one Axis per `search:` entry."""
        search = axes_of(self.search)
        if not self.specifications:
            return search
        return (spec_axis(self.specifications, resolved(self.base, self.source)), *search)

    def adaptive_layout(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(specifications, arms) for the adaptive-seed searcher, each a list of {dotted key: value}: every
        point of the specification axes (`[{}]` when there are none), and every point of the arm axes with
        the arm keys no axis sets at the base's value (so that analysis.faster_arm can name an arm)."""
        arm_axes, spec_axes = split_axes(self.search_axes, self.arm_keys, SPEC_KEY)
        base = resolved(self.base, self.source)
        set_keys = {k for a in self.search_axes for k in a.keys}
        fixed = {k: get_key(base, k) for k in self.arm_keys if k not in set_keys}
        return grid_points(spec_axes), [{**point, **fixed} for point in grid_points(arm_axes)]

    @property
    def most_trials(self) -> int:
        """Trials the study runs at most: the grid's, or with adaptive seeds every specification's arms at
        each seed of its range (`max` seeds and as many replacements of failed ones)."""
        if self.adaptive is None:
            return self.num_trials
        specs, arms = self.adaptive_layout()
        return len(specs) * len(arms) * len(self.adaptive.seeds())

    @property
    def arm_keys(self) -> tuple[str, ...]:
        """The keys that make an arm (`optuna.arm_keys`, the default when there is no optuna section)."""
        return (self.optuna or OptunaConfig()).arm_keys

    @property
    def lr_keys(self) -> tuple[str, ...]:
        """What an lr is tuned per and a best-lr file is keyed by: (specification, *arm keys) with
        specifications, else the arm keys."""
        return (SPEC_KEY, *self.arm_keys) if self.specifications else self.arm_keys

    def trial_dicts(self) -> list[dict[str, Any]]:
        """Every grid point as the nested config it gives (as written, before hwr's defaults), with its
        `specification` name at the top level when the study has specifications."""
        return [apply_point(self.base, point) for point in grid_points(self.axes)]

    def trial_configs(self) -> list[Config]:
        """Every grid point as a validated hwr Config, in grid order."""
        return [config_from_dict(hwr_sections(d), self.source) for d in self.trial_dicts()]

    def trial_specifications(self) -> list[str | None]:
        """Each grid point's specification name (None without specifications), in grid order."""
        return [d.get(SPEC_KEY) for d in self.trial_dicts()]

    @property
    def num_trials(self) -> int:
        return math.prod(len(a.points) for a in self.axes)

    def to_dict(self) -> dict[str, Any]:
        """The study as `study.yaml` records it: every section with its defaults filled in."""
        from study.analysis.params import AnalysisParams

        d: dict[str, Any] = {"name": self.name, **resolved(self.base, self.source), "search": self.search,
                             "resources": as_dict(self.resources), "run": as_dict(self.run),
                             "analysis": AnalysisParams.from_dict(self.analysis).to_dict()}
        if self.adaptive is not None:
            d["search"] = {**self.search, "seeds": {"adaptive": as_dict(self.adaptive)}}
        if self.optuna is not None:
            d["optuna"] = as_dict(self.optuna)
        if self.specifications:
            d["specifications"] = spec_record(self.specifications, self.reference)
        return d


def _check_key(key: str, where: str, what: str = "search key") -> None:
    section, _, leaf = key.partition(".")
    cls = SECTIONS.get(section)
    if cls is None or leaf not in {f.name for f in fields(cls)}:
        raise ConfigError(f"{what} {key!r} in {where} is not a config key such as model.activation or train.lr.")


def study_from_dict(raw: dict[str, Any], where: str = "config") -> StudyConfig:
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(f"Unknown key {key!r} in {where}; known keys: {', '.join(TOP_KEYS)}.")
    name = raw.get("name")
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise ConfigError(f"name in {where} must be a non-empty word without slashes or spaces, got {name!r}.")
    base = {s: dict(raw.get(s) or {}) for s in SECTIONS}
    search = raw.get("search") or {}
    if not isinstance(search, dict):
        raise ConfigError(f"search in {where} must map dotted keys to lists of values.")
    search = dict(search)
    adaptive = _adaptive(search.pop("seeds", None), search, where) if "seeds" in search else None
    for axis, values in search.items():
        keys = axis.split(",")
        for key in keys:
            _check_key(key, where)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"search.{axis} in {where} must be a non-empty list of values.")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"search.{axis} in {where} lists a value twice.")
        if len(keys) > 1:
            if any(not isinstance(v, list) or len(v) != len(keys) for v in values):
                raise ConfigError(f"search.{axis} in {where} must list [{', '.join(keys)}] value lists.")
            if len({repr(v[0]) for v in values}) != len(values):
                raise ConfigError(f"search.{axis} in {where} must give each entry its own {keys[0]} value.")
    resources = read_section(Resources, raw.get("resources"), "resources", where)
    if resources.cpu <= 0 or resources.gpu < 0:
        raise ConfigError(f"resources in {where} need cpu > 0 and gpu >= 0.")
    run = read_section(RunSettings, raw.get("run"), "run", where)
    if run.max_failures < 0 or run.keep_checkpoints < 1:
        raise ConfigError(f"run in {where} needs max_failures >= 0 and keep_checkpoints >= 1.")
    if run.checkpoint_every < 0 or run.checkpoint_seconds < 0:
        raise ConfigError(f"run in {where} needs checkpoint_every >= 0 (0: only the last epoch) and "
                          f"checkpoint_seconds >= 0, got {run.checkpoint_every} and {run.checkpoint_seconds}.")
    optuna = read_section(OptunaConfig, raw["optuna"], "optuna", where) if raw.get("optuna") is not None else None
    if optuna is not None:
        _check_key(optuna.param, where)
        for key in optuna.arm_keys:
            _check_key(key, where)
        if not 0 < optuna.low < optuna.high:
            raise ConfigError(f"optuna in {where} needs 0 < low < high, got {optuna.low} and {optuna.high}.")
        if optuna.mode not in ("min", "max") or optuna.trials_per_arm < 1:
            raise ConfigError(f"optuna in {where} needs mode min or max and trials_per_arm >= 1.")
        _check_optuna(optuna, where)
    analysis = raw.get("analysis") or {}
    if not isinstance(analysis, dict):
        raise ConfigError(f"analysis in {where} must be a mapping.")
    from study.analysis.params import AnalysisParams

    try:
        AnalysisParams.from_dict(analysis)
    except ValueError as e:
        raise ConfigError(f"{e} (in {where})") from None
    specs = parse_specifications(raw.get("specifications"), where)
    for key in spec_keys(specs):
        _check_key(key, where, "specifications key")
        if any(key in axis.split(",") for axis in search):
            raise ConfigError(f"specifications key {key!r} in {where} is also a search axis; the search axes "
                              "(arms, seeds) are crossed inside each specification, so give each key to one.")
    study = StudyConfig(name=name, base=base, search=search, resources=resources, run=run,
                        analysis=analysis, optuna=optuna, source=where, specifications=specs,
                        reference=reference_of(raw.get("specifications")) if specs else None, adaptive=adaptive)
    configs = study.trial_configs()  # every grid point must be a valid hwr config
    if adaptive is not None:
        _check_adaptive(study, where)
    if optuna is not None:
        seeds = set(adaptive.seeds()) if adaptive is not None else {c.train.seed for c in configs}
        evaluated = sorted(seeds & set(optuna.seeds))
        if evaluated:
            raise ConfigError(f"optuna.seeds in {where} include the evaluated seed(s) "
                              f"{', '.join(map(str, evaluated))}; the lr search must run on seeds the study does "
                              "not evaluate (the default is 100).")
    return study


def _adaptive(seeds: Any, search: dict[str, Any], where: str) -> AdaptiveSeeds:
    """`search.seeds`, which must be {adaptive: {...}} and replaces a train.seed axis."""
    if not isinstance(seeds, dict) or set(seeds) != {"adaptive"}:
        raise ConfigError(f"search.seeds in {where} must be {{adaptive: {{min: 4, max: 20, ...}}}}, got {seeds!r}.")
    if any(SEED_KEY in axis.split(",") for axis in search):
        raise ConfigError(f"search in {where} has both a {SEED_KEY} axis and search.seeds.adaptive; adaptive seeds "
                          f"replace the {SEED_KEY} axis, so give one of them.")
    try:
        return AdaptiveSeeds.from_dict(seeds["adaptive"])
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{e} (in {where}).") from None


def _check_adaptive(study: StudyConfig, where: str) -> None:
    """The searcher needs two arms, the compared ones among them, and the seeds to itself."""
    from study.analysis.params import AnalysisParams

    if SEED_KEY in spec_keys(study.specifications):
        raise ConfigError(f"specifications in {where} set {SEED_KEY}, which search.seeds.adaptive chooses.")
    specs, arms = study.adaptive_layout()
    if len(arms) < 2:
        raise ConfigError(f"search.seeds.adaptive in {where} compares two arms, but the search axes over "
                          f"{', '.join(study.arm_keys)} give {len(arms)}.")
    params = AnalysisParams.from_dict(study.analysis)
    for role, want in (("faster", params.faster_arm), ("slower", params.slower_arm)):
        try:
            find_arm(arms, want, 0, role)
        except ValueError:
            raise ConfigError(f"analysis.{role}_arm {want} in {where} is not one of the arms search.seeds.adaptive "
                              f"compares ({'; '.join(map(str, arms))}).") from None


def _check_optuna(optuna: OptunaConfig, where: str) -> None:
    from hwr.config import OPTIMIZERS

    for opt, bounds in optuna.range.items():
        if opt not in OPTIMIZERS:
            raise ConfigError(f"optuna.range in {where} names {opt!r}, not an optimizer ({', '.join(OPTIMIZERS)}).")
        if (not isinstance(bounds, list) or len(bounds) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
                or not 0 < bounds[0] < bounds[1]):
            raise ConfigError(f"optuna.range.{opt} in {where} must be [low, high] with 0 < low < high, "
                              f"got {bounds!r}.")
    if not optuna.seeds:
        raise ConfigError(f"optuna.seeds in {where} must list at least one seed.")
    if optuna.grace_epochs < 1 or optuna.reduction_factor < 2:
        raise ConfigError(f"optuna in {where} needs grace_epochs >= 1 and reduction_factor >= 2, "
                          f"got {optuna.grace_epochs} and {optuna.reduction_factor}.")


def _mapping(value: Any) -> dict:
    return dict(value) if isinstance(value, dict) else {}


def load_study(path: str | Path, overrides: list[str] = ()) -> StudyConfig:
    """Read a study YAML and apply `--set` overrides.

    `train.epochs=4` sets a base value (and, if train.epochs was a grid axis, fixes it to that value);
    `search.train.seed=[0,1]` replaces or adds a grid axis; `name=...`, `run.storage_path=...` as usual.
    `search.seeds.adaptive.max=12` sets one adaptive-seed setting; a train.seed axis given this way replaces
    adaptive seeds and the other way round.
    """
    raw = read_yaml(path)
    search = dict(raw.get("search") or {})
    plain = []
    for text in overrides:
        key, _, value = text.partition("=")
        if key.startswith("search.seeds.adaptive."):
            search.pop(SEED_KEY, None)
            seeds = search["seeds"] = _mapping(search.get("seeds"))
            adaptive = seeds["adaptive"] = _mapping(seeds.get("adaptive"))
            adaptive[key.removeprefix("search.seeds.adaptive.")] = load_yaml(value) if value else None
        elif key.startswith("search."):
            if key == f"search.{SEED_KEY}":
                search.pop("seeds", None)
            parsed = load_yaml(value) if value else None
            search[key.removeprefix("search.")] = parsed if isinstance(parsed, list) else [parsed]
        elif "." not in key:  # a top-level key such as name
            raw[key] = load_yaml(value) if value else None
        else:
            search.pop(key, None)
            plain.append(text)
    raw = apply_overrides(raw, plain)
    raw["search"] = search
    return study_from_dict(raw, str(path))
