r"""VGG16 conv base + the paper's classifier head, split into a frozen and a trainable part.

    uint8 [B, S, S] --normalize--> [B, 3, S, S] --features[:k]--> z --features[k:]--> flatten --> head --> logits
                     \_______________ frozen (eval, no grads) ___/  \_______________ trainable _______________/

`k` comes from `trainable_from`: `none` freezes the whole conv base, `blockN` trains from block N on,
`all` trains everything. The frozen part's output does not change during training, so `hwr.features`
can compute it once and every epoch (and every trial that shares it) trains only the rest.

The head is the paper's FC1024-act-FC1024-act-FC62 on the flattened conv output, as Keras'
`VGG16(include_top=False)` + `Flatten` gives it (no adaptive pooling): 512 * (S/32)^2 inputs.
SELU follows its authors: LeCun-normal weights and AlphaDropout. Other activations use Keras' default
Glorot-uniform weights with zero biases, as the paper's Keras code did.
"""

from __future__ import annotations

import math
import urllib.error
from pathlib import Path

import torch
from torch import nn

from hwr.config import INITS, NAMED_BASES, ModelConfig
from hwr.data.chars74k import NUM_CLASSES
from hwr.errors import UserError
from hwr.vgg import (BLOCK_START, DOWNSAMPLING, FROZEN_OUT, IMAGENET_MEAN, IMAGENET_STD, OUT_CHANNELS, InputNorm,
                     frozen_shape, vgg16_conv_base)

HIDDEN = 1024
ACTIVATIONS = {"relu": nn.ReLU, "selu": nn.SELU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class ModelError(UserError, ValueError):
    """The model cannot be built or loaded, explained in one sentence."""


def make_head(in_features: int, activation: str, dropout: float, generator: torch.Generator,
              init: str = "auto") -> nn.Sequential:
    """flatten -> FC1024 -> act -> FC1024 -> act -> FC62, initialised from `generator` by `init` (INITS)."""
    act = ACTIVATIONS[activation]
    drop = nn.AlphaDropout if activation == "selu" else nn.Dropout
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in in (in_features, HIDDEN):
        layers += [nn.Linear(fan_in, HIDDEN), act()]
        if dropout > 0:
            layers.append(drop(dropout))
    layers.append(nn.Linear(HIDDEN, NUM_CLASSES))
    for layer in layers:
        if isinstance(layer, nn.Linear):
            init_linear(layer.weight, activation, init, generator)
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


# Head initialisations (`model.init`). `auto`: as each activation's authors prescribe (LeCun normal for
# SELU, Keras' Glorot uniform for the rest). `glorot`: Glorot uniform for every activation, Keras' default
# for Dense layers and so most likely the paper's ("only the activation changed"); at one seed a SELU and a
# ReLU head then start from the same weights. `lecun`: LeCun normal for every activation. `paired`: each
# activation's own scheme in its uniform form (LeCun uniform for SELU, Glorot uniform otherwise) scaling the
# same U(-1, 1) draws, so heads of different activations at one seed start from the same weights up to a
# per-layer factor.
def init_linear(weight: torch.Tensor, activation: str, init: str, generator: torch.Generator) -> None:
    fan_out, fan_in = weight.shape
    selu_scheme = activation == "selu"
    if init == "glorot" or (init == "auto" and not selu_scheme):
        nn.init.xavier_uniform_(weight, generator=generator)
    elif init == "lecun" or init == "auto":  # LeCun normal: std = 1/sqrt(fan_in)
        nn.init.kaiming_normal_(weight, nonlinearity="linear", generator=generator)
    elif init == "paired":
        bound = math.sqrt(3.0 / fan_in) if selu_scheme else math.sqrt(6.0 / (fan_in + fan_out))
        with torch.no_grad():
            weight.uniform_(-1.0, 1.0, generator=generator).mul_(bound)
    else:
        raise ModelError(f"model.init must be one of {', '.join(INITS)}; got {init!r}.")


def _load_state(features: nn.Sequential, state: dict, source: str) -> nn.Sequential:
    """Load a whole VGG16 state dict (features.N.*, classifier.*) or one of the conv base alone (N.*)."""
    if not isinstance(state, dict):
        raise ModelError(f"{source} does not hold a state dict.")
    conv = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    try:
        features.load_state_dict(conv)
    except RuntimeError:
        raise ModelError(f"{source} is not a VGG16 state dict (its keys or shapes differ).") from None
    return features


def load_conv_base(weights: str, seed: int) -> nn.Sequential:
    """The VGG16 conv base with `imagenet` (torchvision's VGG16_Weights.IMAGENET1K_V1 through torch's hub
    cache), a base pretrained here on glyphs (`glyphs`, `glyphs-small`: built on first use, then cached;
    see hwr.bases), `none` (seeded random init) or a local state-dict path."""
    features = vgg16_conv_base(seed)
    if weights == "none":
        return features
    if weights in NAMED_BASES:
        from hwr.bases import ensure_base, provided  # pretraining (glyph rendering) only where a base is used

        if (given := provided(weights)) is not None:  # shipped by the caller (a study's driver built it)
            state = {k: v.clone() if isinstance(v, torch.Tensor) else torch.tensor(v) for k, v in given.items()}
            return _load_state(features, state, f"the {weights!r} base given by the study's driver")
        path = ensure_base(weights)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
            raise ModelError(f"The {weights!r} base {path} cannot be read ({type(e).__name__}); "
                             "delete it to pretrain it again.") from None
        return _load_state(features, state, f"the {weights!r} base in {path}")
    if weights == "imagenet":
        from torchvision.models import VGG16_Weights

        url = VGG16_Weights.IMAGENET1K_V1.url
        try:
            state = VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True)
        except (urllib.error.URLError, OSError, RuntimeError) as e:
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            raise ModelError(
                f"Could not get the ImageNet VGG16 weights from {url} ({e}); put that file in {cache}, "
                "or set model.weights to a local state-dict path or to none."
            ) from None
        return _load_state(features, state, f"the cached ImageNet weights in {torch.hub.get_dir()}")
    path = Path(weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"model.weights file {path} does not exist; use imagenet, none or a state-dict path.") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise ModelError(f"model.weights file {path} is not a loadable state dict ({type(e).__name__}).") from None
    return _load_state(features, state, f"model.weights file {path}")


def base_seed(cfg: ModelConfig, seed: int) -> int:
    """The seed of a random conv base: model.base_seed when set, else the run's seed."""
    return seed if cfg.base_seed is None else cfg.base_seed


class HWRNet(nn.Module):
    """Normalization + VGG16 conv base + head, with `frozen()` and `trainable()` halves."""

    def __init__(self, cfg: ModelConfig, image_size: int, seed: int = 0, conv_base: bool = True):
        super().__init__()
        self.cfg = cfg
        self.normalize = InputNorm(cfg.normalization)
        self.split = BLOCK_START[cfg.trainable_from]
        if not conv_base and cfg.trainable_from != "none":
            raise RuntimeError(f"the conv base can only be left out when none of it trains, not from {cfg.trainable_from}")
        self.has_conv_base = conv_base
        self.features = load_conv_base(cfg.weights, base_seed(cfg, seed)) if conv_base else nn.Sequential()
        side = image_size // DOWNSAMPLING
        generator = torch.Generator().manual_seed(seed)
        self.head = make_head(OUT_CHANNELS * side * side, cfg.activation, cfg.dropout, generator, cfg.init)
        for p in self.features[: self.split].parameters():
            p.requires_grad_(False)
        self.to(memory_format=torch.channels_last)

    @property
    def frozen_modules(self) -> nn.Sequential:
        return self.features[: self.split]

    def train(self, mode: bool = True) -> HWRNet:
        super().train(mode)
        self.frozen_modules.eval()  # the frozen part always runs in eval mode
        return self

    @torch.no_grad()
    def frozen(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen part: normalization and the conv layers before `trainable_from`."""
        if not self.has_conv_base:
            raise RuntimeError("this model was built without its conv base (conv_base=False); it cannot run the frozen part.")
        return self.frozen_modules(self.normalize(images))

    def trainable(self, z: torch.Tensor) -> torch.Tensor:
        """The part that learns: the remaining conv layers, flatten and the head."""
        return self.head(self.features[self.split :](z))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trainable(self.frozen(images))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Only the parameters that training changes (the frozen part is rebuilt from the config)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k in names}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        expected = {n for n, p in self.named_parameters() if p.requires_grad}
        own = self.state_dict()
        if set(state) != expected or any(own[k].shape != v.shape for k, v in state.items()):
            raise ModelError("the checkpoint's weights do not fit this model (another shape or trainable part).")
        self.load_state_dict(state, strict=False)


def build_model(cfg: ModelConfig, image_size: int, seed: int = 0, conv_base: bool = True) -> HWRNet:
    """The model for one run; `seed` fixes the random parts (head init, and the conv base when weights=none
    and model.base_seed is null).

    `conv_base=False` (only with trainable_from none) leaves the conv base out, for a caller that already
    holds its output: the head is all that trains, and building the base would only load weights (528 MB
    for ImageNet's) and import torchvision for nothing. The head is the same as with the base.
    """
    return HWRNet(cfg, image_size, seed, conv_base)


# What other modules take from here; the VGG16 layout itself lives in hwr.vgg.
__all__ = ["BLOCK_START", "FROZEN_OUT", "HWRNet", "IMAGENET_MEAN", "IMAGENET_STD", "InputNorm", "ModelError",
           "NUM_CLASSES", "base_seed", "build_model", "frozen_shape", "load_conv_base", "make_head",
           "vgg16_conv_base"]
