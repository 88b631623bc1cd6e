"""Top-k characters for images, from a training checkpoint (its best-validation weights when it kept them)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hwr.data import CLASSES, preprocess
from hwr.errors import UserError
from hwr.model import HWRNet, build_model
from hwr.train import CHECKPOINT_FILE, config_of_checkpoint, load_checkpoint


class PredictError(UserError, ValueError):
    """An image or checkpoint cannot be used, explained in one sentence."""


@dataclass(frozen=True)
class Prediction:
    image: Path
    top: list[tuple[str, float]]  # (character, probability), most likely first


def find_checkpoint(path: Path) -> Path:
    """The checkpoint file that `path` names.

    `path` is a checkpoint file, a folder holding checkpoint.pt (`hwr train --out`, or one of a Tune
    trial's checkpoint_NNNNNN folders), a Tune trial folder (its latest checkpoint), or a study's
    experiment folder (results/ray/<name>: the trial whose last result has the highest best_val_acc).
    """
    path = Path(path)
    if not path.is_dir():
        return path
    if (path / CHECKPOINT_FILE).exists():
        return path / CHECKPOINT_FILE
    if latest := _latest_checkpoint(path):
        return latest
    scored = [(_best_val_acc(t), t.name, ckpt) for t in sorted(path.iterdir())
              if t.is_dir() and (ckpt := _latest_checkpoint(t))]
    if not scored:
        raise PredictError(f"{path} holds no checkpoint ({CHECKPOINT_FILE}, a trial's checkpoint_NNNNNN "
                           "folders, or an experiment's trial folders).")
    return max(scored, key=lambda s: s[0])[2]


def _latest_checkpoint(trial: Path) -> Path | None:
    found = sorted(trial.glob(f"checkpoint_*/{CHECKPOINT_FILE}"), key=lambda p: p.parent.name)
    return found[-1] if found else None


def _best_val_acc(trial: Path) -> float:
    """best_val_acc in the trial's last result.json line (-1 when it has none)."""
    try:
        lines = (trial / "result.json").read_text().splitlines()
        return float(json.loads(next(line for line in reversed(lines) if line.strip())).get("best_val_acc", -1))
    except (OSError, StopIteration, ValueError, TypeError):
        return -1.0


def load_model(checkpoint: Path, device: torch.device | None = None) -> tuple[HWRNet, int]:
    """The checkpoint's model (best-validation weights if it kept them, else its last ones), its image size."""
    path = find_checkpoint(checkpoint)
    state = load_checkpoint(path)
    cfg = config_of_checkpoint(state, path)
    model = build_model(cfg.model, cfg.data.image_size, seed=cfg.train.seed)
    best = state.get("best")
    model.load_trainable_state(best if best is not None else state["model"])
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
def top_k(model: HWRNet, images: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
    """(character, probability) pairs, most likely first, for preprocessed images (uint8 [N, S, S])."""
    device = next(model.parameters()).device
    x = torch.tensor(images, device=device)  # a copy: the arrays may be read-only
    probs = torch.softmax(model(x).float(), dim=1)
    top = probs.topk(k, dim=1)
    return [[(CLASSES[i], float(v)) for v, i in zip(vals, idx)]
            for vals, idx in zip(top.values.tolist(), top.indices.tolist())]


def predict(checkpoint: Path, images: list[Path], k: int = 3) -> list[Prediction]:
    model, size = load_model(checkpoint)
    tops = top_k(model, np.stack([read_image(Path(p), size) for p in images]), k)
    return [Prediction(Path(p), top) for p, top in zip(images, tops)]
