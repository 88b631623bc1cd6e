"""Multiply-add counts of VGG16's conv base and of the head, per image: the FLOP side of FLOP/s figures."""

from __future__ import annotations

# torchvision's vgg16().features: each int is a 3x3 conv (+ ReLU: two layers), "M" a 2x2 max-pool (one layer).
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
FROZEN_ALL = 31  # hwr.model.BLOCK_START["none"]: the whole conv base is frozen
HIDDEN, NUM_CLASSES = 1024, 62


def conv_macs(image_size: int, depth: int = FROZEN_ALL) -> int:
    """Multiply-adds per image of the first `depth` layers of VGG16's conv base at image_size px."""
    macs, side, cin, layer = 0, image_size, 3, 0
    for v in VGG16_CFG:
        if layer >= depth:
            break
        if v == "M":
            side //= 2
            layer += 1
        else:
            macs += side * side * cin * v * 9
            cin = v
            layer += 2
    return macs


def head_macs(image_size: int) -> dict[str, int]:
    """Multiply-adds per image of the head: forward, and a training step (forward + weight grads + input
    grads of all but the first layer, whose input needs none when the conv base is frozen)."""
    dims = [512 * (image_size // 32) ** 2, HIDDEN, HIDDEN, NUM_CLASSES]
    per_layer = [a * b for a, b in zip(dims[:-1], dims[1:])]
    fwd = sum(per_layer)
    return {"forward": fwd, "train_step": fwd + fwd + (fwd - per_layer[0])}
