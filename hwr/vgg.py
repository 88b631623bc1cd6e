"""VGG16's conv base, written once: the layout table, the conv base with or without BatchNorm, the input
normalization, BatchNorm folding and Net2DeeperNet growth. A leaf module (torch only), as timm's vgg.py:
one table describes the layout, one builder covers BN and plain; loading weights lives elsewhere
(hwr.model for the study's model, hwr.bases for the bases pretrained here).

The plain base is module for module torchvision's `vgg16().features` (conv, relu per convolution, a 2x2
max-pool per block), so torchvision's and our own state dicts load into it.
"""

from __future__ import annotations

import torch
from torch import nn

# VGG16's five blocks: (channels, convolutions); each block ends in a 2x2 max-pool.
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
VGG16_DEPTHS = tuple(n for _, n in VGG16_BLOCKS)


def _block_starts() -> dict[str, int]:
    """Index of each block's first layer in the plain base (conv/relu pairs and max-pools)."""
    starts, index = {"all": 0}, 0
    for i, (_, n) in enumerate(VGG16_BLOCKS, 1):
        starts[f"block{i}"] = index
        index += 2 * n + 1
    starts["none"] = index
    return starts


BLOCK_START = _block_starts()  # {"all": 0, "block1": 0, "block2": 5, ..., "block5": 24, "none": 31}
# (channels, downsampling) of the frozen part's output: the blocks before `trainable_from`, each ending in a pool.
FROZEN_OUT = {f"block{i + 1}": (VGG16_BLOCKS[i - 1][0], 2**i) for i in range(1, 5)} | {
    "none": (VGG16_BLOCKS[-1][0], 2 ** len(VGG16_BLOCKS))}
OUT_CHANNELS = VGG16_BLOCKS[-1][0]
DOWNSAMPLING = 2 ** len(VGG16_BLOCKS)  # the base's output side is image side / 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def frozen_shape(trainable_from: str, image_size: int) -> tuple[int, int, int] | None:
    """(C, H, W) of one image's frozen activations, without building the model; None if nothing is frozen."""
    if trainable_from not in FROZEN_OUT:
        return None
    channels, down = FROZEN_OUT[trainable_from]
    return channels, image_size // down, image_size // down


def conv_base(depths: tuple[int, ...] = VGG16_DEPTHS, batch_norm: bool = False,
              generator: torch.Generator | None = None) -> nn.Sequential:
    """VGG conv layers, `depths` convolutions per block (the default is VGG16; (1, 1, 1, 1, 1) is its
    five-convolution skeleton): conv[, bn], relu per convolution, a max-pool per block, initialised as
    torchvision's VGG does (Kaiming-normal fan-out weights, zero biases), from `generator` if given."""
    layers: list[nn.Module] = []
    cin = 3
    for (channels, _), n in zip(VGG16_BLOCKS, depths):
        for _ in range(n):
            conv = nn.Conv2d(cin, channels, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True)] if batch_norm else \
                [conv, nn.ReLU(inplace=True)]
            cin = channels
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def vgg16_conv_base(seed: int) -> nn.Sequential:
    """VGG16's plain conv layers, randomly initialised as torchvision's VGG does, from `seed`."""
    return conv_base(generator=torch.Generator().manual_seed(seed))


class InputNorm(nn.Module):
    """uint8 grayscale images [B, H, W] -> float [B, 3, H, W] in [0, 1], then the chosen normalization."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.unsqueeze(1) if images.dim() == 3 else images
        x = x.float().div_(255.0)
        if self.kind == "per_image":
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            std = x.std(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) / (std + 1e-6)
        x = x.expand(-1, 3, -1, -1)
        if self.kind == "imagenet":
            x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)


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
