"""A VGG16 conv base pretrained here, offline, on rendered glyphs: the in-house stand-in for ImageNet weights.

    path = ensure_base("glyphs")               # built once (progress bar), then from the cache
    model.weights: glyphs                      # what a run or study config says to use it

`pretrain(recipe)` renders a labelled glyph bank (`hwr.glyphs`), trains VGG16 *with* BatchNorm on
augmented pages from it, folds each BatchNorm into its convolution (`torch.nn.utils.fusion`) and writes a
plain torchvision `vgg16().features` state dict (`features.N.weight/bias`) that `model.weights` loads,
plus a JSON sidecar with the whole recipe: fonts and their hashes, classes, image size, augmentation,
seed, length, its own held-out accuracy per input convention, time taken and versions.

Input conventions: the study feeds the base raw [0, 1] pixels (`normalization: none`), per-image
standardised ones or ImageNet's mean/std, through `hwr.model.InputNorm`. A base trained on one convention
collapses on another (identical features for every image), so each training image is drawn through a
random one of `train.conventions`, and the base learns features for all of them.

Deterministic for a recipe on a given device and thread count; cached by the recipe's hash (which covers
the font files' hashes) under `$HWR_CACHE_DIR/bases/`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import math
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwr.config import NAMED_BASES, NORMALIZATIONS, ConfigError, apply_overrides, read_yaml, sections_from_dict
from hwr.data import default_cache_dir
from hwr.data.chars74k import sha256_file
from hwr.files import atomic_write
from hwr.glyphs import (LABEL_SETS, SCRIPTS, SOURCES, Augment, GlyphBank, GlyphError, augment, find_fonts,
                        font_report, label_set, lookalikes, render_bank)
from hwr.model import InputNorm

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


@dataclass(frozen=True)
class Recipe:
    glyphs: GlyphsSection = field(default_factory=GlyphsSection)
    augment: Augment = field(default_factory=Augment)
    train: TrainSection = field(default_factory=TrainSection)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


SECTIONS = {"glyphs": GlyphsSection, "augment": Augment, "train": TrainSection}
# The bases `model.weights` can name. `glyphs` is the best recipe found (docs/pretraining.md);
# `glyphs-small` is a few minutes' version for the offline demo (configs/quick.yaml).
RECIPES = {
    "glyphs": Recipe(),
    "glyphs-small": Recipe(train=TrainSection(shallow_samples=30_000, samples=0, val_per_class=2)),
}
assert set(RECIPES) == set(NAMED_BASES)


class PretrainError(ValueError):
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


# ----------------------------------------------------------------------------------------------- the net


# VGG16's five blocks: (channels, convolutions); each block ends in a 2x2 max-pool.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def vgg_bn_features(depths: tuple[int, ...] = (2, 2, 3, 3, 3)) -> nn.Sequential:
    """VGG conv layers with BatchNorm (conv, bn, relu per convolution; a max-pool per block), `depths`
    convolutions per block, initialised as torchvision's VGG does. The default is torchvision's VGG16-BN
    layout; (1, 1, 1, 1, 1) is its five-convolution skeleton."""
    layers: list[nn.Module] = []
    cin = 3
    for (channels, _), n in zip(VGG16_BLOCKS, depths):
        for _ in range(n):
            conv = nn.Conv2d(cin, channels, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            cin = channels
        layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers)


def vgg16_bn_features() -> nn.Sequential:
    return vgg_bn_features()


@torch.no_grad()
def deepen(skeleton: nn.Sequential, calibration: torch.Tensor) -> nn.Sequential:
    """Net2DeeperNet (Chen et al., 2016): VGG16-BN that computes what the trained `skeleton` (one
    convolution per block) computes. Each added convolution starts as the identity (a Dirac kernel) and
    its BatchNorm is set to undo its own normalisation on `calibration` (a normalised input batch), so on
    the non-negative ReLU output it follows, conv -> bn -> relu passes the activations through."""
    skeleton.eval()
    layers: list[nn.Module] = []
    x = calibration
    modules = list(skeleton)
    i = 0
    for channels, n in VGG16_BLOCKS:
        conv, bn, relu = modules[i : i + 3]
        x = relu(bn(conv(x)))
        layers += [conv, bn, relu]
        mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3))
        for _ in range(n - 1):
            new_conv = nn.Conv2d(channels, channels, 3, padding=1).to(x.device)
            nn.init.dirac_(new_conv.weight)
            nn.init.zeros_(new_conv.bias)
            new_bn = nn.BatchNorm2d(channels).to(x.device)
            new_bn.running_mean.copy_(mean)
            new_bn.running_var.copy_(var)
            new_bn.weight.copy_(torch.sqrt(var + new_bn.eps))
            new_bn.bias.copy_(mean)
            layers += [new_conv, new_bn, nn.ReLU(inplace=True)]
        pool = modules[i + 3]
        x = pool(x)
        layers.append(pool)
        i += 4
    return nn.Sequential(*layers)


class ZeroMean(nn.Module):
    """A parametrization that keeps each output channel's kernel summing to zero."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight - weight.mean(dim=(1, 2, 3), keepdim=True)


class GlyphNet(nn.Module):
    """VGG16-BN conv base + a small classifier over the glyph classes, fed uint8 pages in mixed conventions."""

    def __init__(self, num_classes: int, image_size: int, zero_mean_stem: bool = False,
                 depths: tuple[int, ...] = (2, 2, 3, 3, 3)):
        super().__init__()
        self.norms = nn.ModuleDict({k: InputNorm(k) for k in NORMALIZATIONS})
        self.features = vgg_bn_features(depths)
        if zero_mean_stem:
            from torch.nn.utils import parametrize

            parametrize.register_parametrization(self.features[0], "weight", ZeroMean())
        side = image_size // 32
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(512 * side * side, 512), nn.ReLU(inplace=True),
                                  nn.Dropout(0.2), nn.Linear(512, num_classes))

    def normalize(self, images: torch.Tensor, conventions: list[str], which: torch.Tensor) -> torch.Tensor:
        """Each image through the input convention `which` picks for it (an index into `conventions`)."""
        x = torch.empty(images.shape[0], 3, *images.shape[-2:], device=images.device)
        for i, kind in enumerate(conventions):
            sel = (which == i).nonzero().flatten()
            if len(sel):
                x[sel] = self.norms[kind](images[sel]).contiguous()
        return x.contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def fold_batchnorm(features_bn: nn.Sequential) -> dict[str, torch.Tensor]:
    """A plain VGG16 `features` state dict (`features.N.weight/bias`) from a trained VGG16-BN one: each
    BatchNorm (eval statistics) folded into the convolution before it, layer indices renumbered."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    state, plain_index, layers = {}, 0, list(features_bn.eval())
    i = 0
    while i < len(layers):
        m = layers[i]
        if isinstance(m, nn.Conv2d):
            fused = fuse_conv_bn_eval(m, layers[i + 1])
            state[f"features.{plain_index}.weight"] = fused.weight.detach().clone()
            state[f"features.{plain_index}.bias"] = fused.bias.detach().clone()
            i += 3  # conv, bn, relu
            plain_index += 2  # conv, relu
        else:  # max-pool
            i += 1
            plain_index += 1
    return state


# ------------------------------------------------------------------------------------------ the data


@dataclass(frozen=True)
class GlyphData:
    bank: GlyphBank
    val_images: torch.Tensor  # uint8 [V, S, S], fixed renders for the held-out accuracy
    val_labels: torch.Tensor
    dropped_lookalikes: list[str]


def glyph_data(recipe: Recipe) -> GlyphData:
    g = recipe.glyphs
    try:
        fonts = find_fonts(g.sources, g.fonts)
        classes = label_set(g.labels, g.scripts)
        dropped: list[str] = []
        if g.labels == "disjoint-strict":
            dropped = sorted(lookalikes(classes, fonts))
            classes = [c for c in classes if c not in dropped]
        bank = render_bank(classes, fonts, g.bank_size, g.min_fonts)
    except GlyphError as e:
        raise PretrainError(str(e)) from None
    # Held-out pages: val_per_class renders of each class from its own generator, never trained on.
    gen = torch.Generator().manual_seed(recipe.train.seed + 7_919)
    per_class = [np.flatnonzero(bank.labels == c) for c in range(len(bank.classes))]
    picks = np.concatenate([idx[torch.randint(0, len(idx), (recipe.train.val_per_class,), generator=gen).numpy()]
                            for idx in per_class])
    val = augment(torch.from_numpy(bank.masks[picks]), recipe.augment, recipe.train.image_size, gen)
    return GlyphData(bank, val, torch.from_numpy(bank.labels[picks]), dropped)


# -------------------------------------------------------------------------------------- training


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def held_out_accuracy(model: GlyphNet, data: GlyphData, conventions: tuple[str, ...],
                      device: torch.device) -> dict[str, float]:
    """Own accuracy on the held-out pages, once per input convention."""
    model.eval()
    out = {}
    for i, kind in enumerate(conventions):
        correct = 0
        for start in range(0, len(data.val_labels), 256):
            x = data.val_images[start : start + 256].to(device)
            which = torch.full((len(x),), i, device=device)
            logits = model(model.normalize(x, list(conventions), which))
            correct += (logits.argmax(1).cpu() == data.val_labels[start : start + 256]).sum().item()
        out[kind] = correct / len(data.val_labels)
    return out


def _run_phase(model: GlyphNet, recipe: Recipe, data: GlyphData, samples: int, lr: float,
               gen: torch.Generator, desc: str, progress: bool) -> dict[str, float]:
    """SGD (Nesterov) with a one-cycle schedule over `samples` freshly augmented pages, each page through
    a random one of the recipe's input conventions."""
    from tqdm import tqdm

    t = recipe.train
    device = next(model.parameters()).device
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay}],
                          lr=lr, momentum=0.9, nesterov=True)
    steps = math.ceil(samples / t.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    masks, labels_all, aug = torch.from_numpy(data.bank.masks), torch.from_numpy(data.bank.labels), recipe.augment
    conventions = list(t.conventions)
    loss_ema = acc_ema = None
    model.train()
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress, file=sys.stderr)
    for _ in bar:
        idx = torch.randint(0, len(labels_all), (t.batch_size,), generator=gen)
        images = augment(masks[idx], aug, t.image_size, gen).to(device)
        labels = labels_all[idx].to(device)
        which = torch.randint(0, len(conventions), (t.batch_size,), generator=gen).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(model.normalize(images, conventions, which))
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=t.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        acc = (logits.argmax(1) == labels).float().mean().item()
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        acc_ema = acc if acc_ema is None else 0.98 * acc_ema + 0.02 * acc
        bar.set_postfix(loss=f"{loss_ema:.3f}", acc=f"{acc_ema:.3f}", refresh=False)
    return {"steps": steps, "samples": steps * t.batch_size, "final_train_loss": loss_ema, "final_train_acc": acc_ema}


def train_base(recipe: Recipe, data: GlyphData, progress: bool = True) -> tuple[GlyphNet, dict[str, Any]]:
    """Train VGG16-BN on glyph pages: first its five-convolution skeleton (`train.shallow_samples`; about
    a fifth of the cost per page, and it learns faster), then VGG16 grown from it (`deepen`) for
    `train.samples`. Returns the net and its training record."""
    t = recipe.train
    device = _device()
    torch.manual_seed(t.seed)
    gen = torch.Generator().manual_seed(t.seed)
    record: dict[str, Any] = {"device": str(device)}
    if t.shallow_samples > 0:
        model = GlyphNet(len(data.bank.classes), t.image_size, t.zero_mean_stem, depths=(1, 1, 1, 1, 1))
        model = model.to(device).to(memory_format=torch.channels_last)
        record["shallow"] = _run_phase(model, recipe, data, t.shallow_samples, t.lr, gen, "skeleton", progress)
        which = torch.zeros(len(data.val_images), dtype=torch.long, device=device)
        calib = model.normalize(data.val_images.to(device), [t.conventions[0]], which)
        model.features = deepen(model.features, calib).to(memory_format=torch.channels_last)
        deep_lr = t.deep_lr
    else:
        model = GlyphNet(len(data.bank.classes), t.image_size, t.zero_mean_stem)
        model = model.to(device).to(memory_format=torch.channels_last)
        deep_lr = t.lr
    if t.samples > 0:
        record["deep"] = _run_phase(model, recipe, data, t.samples, deep_lr, gen, "VGG16", progress)
    record["samples"] = sum(record[k]["samples"] for k in ("shallow", "deep") if k in record)
    return model.eval(), record


def _check_fold(model: GlyphNet, state: dict[str, torch.Tensor], data: GlyphData, image_size: int) -> float:
    """Max abs difference between the trained BN net's conv output and the folded plain net's."""
    from hwr.model import vgg16_conv_base

    plain = vgg16_conv_base(0)
    plain.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})
    plain.eval()
    device = next(model.parameters()).device
    x = data.val_images[:64].to(device)
    which = torch.zeros(len(x), dtype=torch.long, device=device)
    with torch.no_grad():
        inp = model.normalize(x, ["per_image"], which)
        a = model.features(inp).float().cpu()
        b = plain.to(device)(inp).float().cpu()
    return float((a - b).abs().max() / max(a.abs().max().item(), 1e-12))


# ----------------------------------------------------------------------------------------- caching


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


def bases_dir() -> Path:
    return default_cache_dir() / "bases"


def base_path(recipe: Recipe, name: str = "glyphs") -> Path:
    return bases_dir() / f"{name}-{recipe_hash(recipe)}.pt"


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _versions() -> dict[str, str]:
    import PIL
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__, "threads": str(torch.get_num_threads()),
            "machine": platform.machine()}


def pretrain(recipe: Recipe, out: Path, progress: bool = True) -> dict[str, Any]:
    """Render, train, fold and write `out` (plain VGG16 conv state dict) and its sidecar; returns the sidecar."""
    t0 = time.perf_counter()
    data = glyph_data(recipe)
    render_s = time.perf_counter() - t0
    if progress:
        print(f"glyph bank: {len(data.bank)} glyphs of {len(data.bank.classes)} classes from "
              f"{len(font_report(data.bank))} fonts ({render_s:.1f} s)", file=sys.stderr, flush=True)
    model, record = train_base(recipe, data, progress)
    own = held_out_accuracy(model, data, recipe.train.conventions, next(model.parameters()).device)
    if recipe.train.zero_mean_stem:  # the constrained kernel becomes a plain weight again
        from torch.nn.utils import parametrize

        parametrize.remove_parametrizations(model.features[0], "weight", leave_parametrized=True)
    state = fold_batchnorm(model.features)
    fold_error = _check_fold(model, state, data, recipe.train.image_size)
    sidecar = {
        "format": FORMAT,
        "recipe": recipe.to_dict(),
        "recipe_hash": recipe_hash(recipe),
        "input_conventions": list(recipe.train.conventions),
        "image_size": recipe.train.image_size,
        "classes": data.bank.classes,
        "num_classes": len(data.bank.classes),
        "glyphs": len(data.bank),
        "dropped_lookalikes": data.dropped_lookalikes,
        "fonts": font_report(data.bank),
        "held_out_accuracy": own,
        "held_out_images": len(data.val_labels),
        "fold_max_rel_error": fold_error,
        **record,
        "seconds": {"render": round(render_s, 1), "total": round(time.perf_counter() - t0, 1)},
        "versions": _versions(),
    }
    atomic_write(out, lambda f: torch.save(state, f))
    sidecar["sha256"] = sha256_file(out)  # ensure_base checks it: a damaged cached base is built again
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
    if recorded is not None and sha256_file(path) != recorded:
        return "does not match the sha256 its sidecar records (truncated or damaged)"
    return None


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


__all__ = ["PretrainError", "RECIPES", "Recipe", "base_path", "ensure_base", "fold_batchnorm", "load_recipe",
           "pretrain", "recipe_hash"]
