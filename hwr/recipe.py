"""A pretraining recipe: what to render (`glyphs`), how to augment it (`augment`) and how to train on it
(`train`), three typed sections read by the one config engine (hwr.sections) and then cross-checked.

    hwr pretrain --recipe my.yaml --set train.samples=200000
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwr.config import NORMALIZATIONS, ConfigError, apply_overrides, read_yaml, sections_from_dict
from hwr.errors import UserError
from hwr.glyphs import LABEL_SETS, SCRIPTS, SOURCES, Augment, GlyphError, find_fonts

FORMAT = 1


@dataclass(frozen=True)
class GlyphsSection:
    """What to render: glyph sources, extra font files, the label set and its scripts."""

    sources: tuple[str, ...] = ("matplotlib", "hershey")
    fonts: tuple[str, ...] = ()
    labels: str = "disjoint"
    scripts: tuple[str, ...] = ("greek", "cyrillic", "armenian", "georgian", "hebrew", "symbols")
    min_fonts: int = 2  # a class needs this many fonts (styles) to be kept
    bank_size: int = 64


@dataclass(frozen=True)
class TrainSection:
    image_size: int = 32
    shallow_samples: int = 100_000  # pages for the five-convolution skeleton first (0: VGG16 from the start)
    samples: int = 0  # pages for VGG16 grown from the skeleton (each page freshly augmented; 0: grow only)
    batch_size: int = 128
    lr: float = 0.05  # SGD + Nesterov momentum, one-cycle schedule peaking here
    deep_lr: float = 0.02  # the peak lr for VGG16 once grown from a trained skeleton
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    conventions: tuple[str, ...] = ("per_image", "none", "imagenet")
    # Keep each first-layer kernel summing to zero: the base then ignores a constant added to the input,
    # so the input conventions differ (away from the border) only by a per-image contrast factor.
    zero_mean_stem: bool = True
    val_per_class: int = 4
    seed: int = 0


# The whole recipe: what `hwr pretrain --config` reads and a base's hash covers.
@dataclass(frozen=True)
class Recipe:
    """The three sections of a pretraining recipe."""

    glyphs: GlyphsSection = field(default_factory=GlyphsSection)
    augment: Augment = field(default_factory=Augment)
    train: TrainSection = field(default_factory=TrainSection)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


SECTIONS = {"glyphs": GlyphsSection, "augment": Augment, "train": TrainSection}
class PretrainError(UserError, ValueError):
    """A recipe cannot be used, explained in one sentence."""


def _validate(r: Recipe, where: str) -> Recipe:
    g, a, t = r.glyphs, r.augment, r.train
    for s in g.sources:
        if s not in SOURCES:
            raise ConfigError(f"glyphs.sources in {where}: unknown source {s!r}; known: {', '.join(SOURCES)}.")
    if g.labels not in LABEL_SETS:
        raise ConfigError(f"glyphs.labels in {where} must be one of {', '.join(LABEL_SETS)}; got {g.labels!r}.")
    for s in g.scripts:
        if s not in SCRIPTS:
            raise ConfigError(f"glyphs.scripts in {where}: unknown script {s!r}; known: {', '.join(SCRIPTS)}.")
    if g.labels != "latin62" and not g.scripts:
        raise ConfigError(f"glyphs.scripts in {where} is empty: the label set would have no class.")
    if g.min_fonts < 1 or g.bank_size < 16:
        raise ConfigError(f"glyphs in {where} needs min_fonts >= 1 and bank_size >= 16.")
    for name in ("height", "stroke", "ink", "paper"):
        lo, hi = getattr(a, name)
        if not lo <= hi:
            raise ConfigError(f"augment.{name} in {where} must be [low, high] with low <= high, got [{lo}, {hi}].")
    if not 0 < a.height[0] or not 0 <= a.blur <= 1 or min(a.rotation, a.shear, a.stretch, a.shift, a.elastic,
                                                          a.noise) < 0:
        raise ConfigError(f"augment in {where} needs height > 0, blur in [0, 1] and no negative range.")
    if t.image_size < 32 or t.image_size % 32:
        raise ConfigError(f"train.image_size in {where} must be a multiple of 32 and at least 32, got {t.image_size}.")
    if t.samples < 0 or t.shallow_samples < 0 or t.samples + t.shallow_samples < 1 or t.batch_size < 2 \
            or t.val_per_class < 1:
        raise ConfigError(f"train in {where} needs samples >= 0 and shallow_samples >= 0 (not both 0), "
                          "batch_size >= 2 and val_per_class >= 1.")
    if not t.lr > 0 or not t.deep_lr > 0 or t.weight_decay < 0 or not 0 <= t.label_smoothing < 1:
        raise ConfigError(f"train in {where} needs lr > 0, deep_lr > 0, weight_decay >= 0 and label_smoothing in [0, 1).")
    if not t.conventions or any(c not in NORMALIZATIONS for c in t.conventions):
        raise ConfigError(f"train.conventions in {where} must list some of {', '.join(NORMALIZATIONS)}; "
                          f"got {list(t.conventions)}.")
    return r


def recipe_from_dict(raw: dict[str, Any] | None, where: str = "recipe") -> Recipe:
    return _validate(Recipe(**sections_from_dict(raw, SECTIONS, where)), where)


def load_recipe(path: str | Path | None = None, overrides: list[str] = ()) -> Recipe:
    """Defaults < YAML file < `--set section.key=value` overrides, validated."""
    raw = read_yaml(path) if path else {}
    return recipe_from_dict(apply_overrides(raw, list(overrides)), str(path) if path else "recipe")


@functools.lru_cache(maxsize=32)
def recipe_hash(recipe: Recipe) -> str:
    """What fixes a base: the recipe, the format, and the exact font files and Hershey glyphs used."""
    g = recipe.glyphs
    try:
        fonts = find_fonts(g.sources, g.fonts)
    except GlyphError as e:
        raise PretrainError(str(e)) from None
    doc = {"format": FORMAT, "recipe": recipe.to_dict(), "fonts": sorted(f.sha256 for f in fonts)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
