"""A VGG16 conv base pretrained here, offline, on rendered glyphs: the in-house stand-in for ImageNet weights.

    state, sidecar = train_recipe(RECIPES["glyphs"])   # hwr.bases writes and caches them (ensure_base)

`train_recipe(recipe)` renders a labelled glyph bank (`hwr.glyphs`), trains VGG16 *with* BatchNorm on
augmented pages from it, folds each BatchNorm into its convolution (`torch.nn.utils.fusion`) and writes a
plain torchvision `vgg16().features` state dict (`features.N.weight/bias`) that `model.weights` loads,
plus a JSON sidecar with the whole recipe: fonts and their hashes, classes, image size, augmentation,
seed, length, its own held-out accuracy per input convention, time taken and versions.

Input conventions: the study feeds the base raw [0, 1] pixels (`normalization: none`), per-image
standardised ones or ImageNet's mean/std, through `hwr.vgg.InputNorm`. A base trained on one convention
collapses on another (identical features for every image), so each training image is drawn through a
random one of `train.conventions`, and the base learns features for all of them.

Deterministic for a recipe on a given device and thread count. The recipe lives in hwr.recipe, the layout,
BN folding and growth in hwr.vgg, the named bases and their cache in hwr.bases.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hwr.config import NORMALIZATIONS
from hwr.glyphs import GlyphBank, GlyphError, augment, find_fonts, font_report, label_set, lookalikes, render_bank
from hwr.recipe import FORMAT, PretrainError, Recipe, recipe_hash
from hwr.vgg import VGG16_DEPTHS, InputNorm, conv_base, deepen, fold_batchnorm, vgg16_conv_base


class ZeroMean(nn.Module):
    """A parametrization that keeps each output channel's kernel summing to zero."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight - weight.mean(dim=(1, 2, 3), keepdim=True)


class GlyphNet(nn.Module):
    """VGG16-BN conv base + a small classifier over the glyph classes, fed uint8 pages in mixed conventions."""

    def __init__(self, num_classes: int, image_size: int, zero_mean_stem: bool = False,
                 depths: tuple[int, ...] = VGG16_DEPTHS):
        super().__init__()
        self.norms = nn.ModuleDict({k: InputNorm(k) for k in NORMALIZATIONS})
        self.features = conv_base(depths, batch_norm=True)
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


def _versions() -> dict[str, str]:
    import PIL
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "pillow": PIL.__version__, "threads": str(torch.get_num_threads()),
            "machine": platform.machine()}


def train_recipe(recipe: Recipe, progress: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Render, train and fold: (the plain VGG16 conv state dict, its sidecar record) for hwr.bases to write."""
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
    return state, sidecar


__all__ = ["GlyphNet", "glyph_data", "train_base", "train_recipe"]
