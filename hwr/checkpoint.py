"""hwr's checkpoint: its format, when `fit` writes one (`CheckpointPolicy`), and saving and loading it.

Checkpoints hold only what cannot be rebuilt from the config: the trainable weights and the optimizer
state in float32 (exact, so a resumed run equals an uninterrupted one), the history and the best epoch's
metrics. The last epoch writes the final checkpoint instead: the outcome and float16 weights for
prediction (the best-validation ones when kept, else the last), no optimizer state. Each is a verified
file (hwr.files): written whole with its sha256 beside it, and never used when it does not match it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hwr.errors import UserError
from hwr.files import damage, digest_path, write_verified

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 2
FP16_MAX = 65504.0
sha256_path = digest_path  # where a checkpoint's sha256 is recorded


class TrainError(UserError, ValueError):
    """A run cannot start or resume, explained in one sentence."""


@dataclass(frozen=True)
class CheckpointPolicy:
    """When `fit` writes its checkpoint, and whether it keeps the best weights.

    A resume checkpoint follows every `every`-th epoch (0: none before the last), and only once at least
    `seconds` have passed since the previous one (0: no limit): on a GPU, where an epoch takes a fraction
    of a second, 60 s leaves only the final checkpoint; on a CPU, where an epoch takes minutes, it writes
    one after each. The last epoch (or the one that diverges) always writes the final checkpoint.
    `keep_best` keeps the best-validation weights (float16) for `hwr predict`.
    """

    every: int = 1
    seconds: float = 60.0
    keep_best: bool = True

    def due(self, epoch: int, since_last: float) -> bool:
        """Whether a resume checkpoint follows this (not last) epoch, `since_last` seconds after the previous."""
        return self.every > 0 and epoch % self.every == 0 and since_last >= self.seconds


def half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float16 copies of the weights (float32 where a value is beyond float16's range), on the CPU.

    For prediction only: float16 keeps 11 significant bits (relative error <= 2^-11), finer than the
    bfloat16 autocast (8 bits) the model already runs in on a GPU. Never for resuming, which must be exact.
    """
    out = {}
    for k, v in state.items():
        v = v.detach().cpu()
        fits = v.is_floating_point() and v.numel() > 0 and bool(v.abs().max() <= FP16_MAX)
        out[k] = v.half() if fits else v.clone()
    return out


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write the checkpoint whole or not at all, hashed as it is written, then its sha256 beside it
    (`checkpoint.pt.sha256`, which Tune copies with the checkpoint's folder)."""
    write_verified(path, lambda f: torch.save(state, f))


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint at `path` must not be used (missing, or not the file its sha256 records), or None.
    A checkpoint with no recorded sha256 (written by an older hwr) is left to torch's reader."""
    return damage(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if (problem := checkpoint_problem(path)) is not None:
        raise TrainError(f"Checkpoint {path} {problem}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise TrainError(f"Checkpoint {path} cannot be read ({type(e).__name__}).") from None
    if not isinstance(state, dict) or state.get("format") not in (1, CHECKPOINT_FORMAT):
        raise TrainError(f"Checkpoint {path} is not an hwr checkpoint.")
    return state


__all__ = ["CHECKPOINT_FILE", "CHECKPOINT_FORMAT", "CheckpointPolicy", "TrainError", "checkpoint_problem", "half",
           "load_checkpoint", "save_checkpoint", "sha256_path"]
