"""Top-k characters for images, from a training checkpoint (its best-validation weights)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hwr.data import CLASSES, preprocess
from hwr.model import HWRNet, build_model
from hwr.train import config_of_checkpoint, load_checkpoint


class PredictError(ValueError):
    """An image or checkpoint cannot be used, explained in one sentence."""


@dataclass(frozen=True)
class Prediction:
    image: Path
    top: list[tuple[str, float]]  # (character, probability), most likely first


def load_model(checkpoint: Path, device: torch.device | None = None) -> tuple[HWRNet, int]:
    """The checkpoint's model with its best-validation weights, and its image size."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "checkpoint.pt"
    state = load_checkpoint(path)
    cfg = config_of_checkpoint(state, path)
    model = build_model(cfg.model, cfg.data.image_size, seed=cfg.train.seed)
    model.load_trainable_state(state["best"] if state["best"] is not None else state["model"])
    return model.to(device or torch.device("cpu")).eval(), cfg.data.image_size


def read_image(path: Path, image_size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return preprocess(img, image_size)
    except FileNotFoundError:
        raise PredictError(f"Image {path} does not exist.") from None
    except (UnidentifiedImageError, OSError) as e:
        raise PredictError(f"Image {path} cannot be read as an image ({type(e).__name__}).") from None


@torch.no_grad()
def predict(checkpoint: Path, images: list[Path], k: int = 3) -> list[Prediction]:
    model, size = load_model(checkpoint)
    batch = torch.from_numpy(np.stack([read_image(Path(p), size) for p in images]))
    probs = torch.softmax(model(batch).float(), dim=1)
    top = probs.topk(k, dim=1)
    return [
        Prediction(Path(p), [(CLASSES[i], float(v)) for v, i in zip(vals.tolist(), idx.tolist())])
        for p, vals, idx in zip(images, top.values, top.indices)
    ]
