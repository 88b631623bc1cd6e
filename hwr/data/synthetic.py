"""A small synthetic stand-in for Chars74K EnglishHnd, in the original layout, for tests and smoke runs."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hwr.data.chars74k import CLASSES, IMG_DIR, DataError


def _affine(rng: np.random.Generator, style: dict[str, float], size: tuple[int, int]) -> tuple[float, ...]:
    """PIL AFFINE coefficients (output -> input) of a random rotation, scale, shear and shift about the centre."""
    w, h = size
    angle = math.radians(style["angle"] + rng.uniform(-8, 8))
    scale = style["scale"] * rng.uniform(0.9, 1.1)
    shear = style["shear"] + rng.uniform(-0.1, 0.1)
    dx, dy = rng.uniform(-0.08, 0.08) * w, rng.uniform(-0.08, 0.08) * h
    cos, sin = math.cos(angle), math.sin(angle)
    forward = (
        np.array([[1, 0, w / 2 + dx], [0, 1, h / 2 + dy], [0, 0, 1]])
        @ np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])
        @ np.array([[1, shear, 0], [0, 1, 0], [0, 0, 1]])
        @ np.array([[scale, 0, 0], [0, scale, 0], [0, 0, 1]])
        @ np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1]])
    )
    inverse = np.linalg.inv(forward)
    return tuple(float(v) for v in inverse[:2].ravel())


def _render(char: str, rng: np.random.Generator, style: dict[str, float], size: tuple[int, int]) -> Image.Image:
    w, h = size
    font = ImageFont.load_default(size=max(8, round(h * 0.6)))
    canvas = Image.new("L", size, 255)
    ink = int(rng.integers(0, 60))
    stroke = max(0, int(style["stroke"]) + int(rng.integers(-1, 2)))
    ImageDraw.Draw(canvas).text(
        (w / 2, h / 2), char, fill=ink, font=font, anchor="mm", stroke_width=stroke, stroke_fill=ink
    )
    warped = canvas.transform(
        size, Image.Transform.AFFINE, _affine(rng, style, size), Image.Resampling.BILINEAR, fillcolor=255
    )
    return warped.convert("RGB")


def write_synthetic(
    root: str | Path, *, per_class: int = 10, seed: int = 0, size: tuple[int, int] = (96, 72)
) -> Path:
    """Write 62 x per_class rendered characters as root/English/Hnd/Img/SampleNNN/imgNNN-MMM.png.

    Dark glyphs on white, size = (width, height); writer MMM (1..per_class) has its own slant, tilt,
    scale and stroke width, and every image gets a further random affine jitter. The same seed gives
    byte-identical files (for a given Pillow). The tree is built beside root and moved in at the end.
    Returns root.
    """
    if per_class < 1 or per_class > 999:
        raise DataError(f"per_class must be between 1 and 999, got {per_class}.")
    root = Path(root)
    if (root / "English").exists():
        raise DataError(f"{root / 'English'} already exists; write the synthetic set into an empty directory.")
    rng = np.random.default_rng(seed)
    styles = [
        {
            "angle": rng.uniform(-10, 10),
            "shear": rng.uniform(-0.3, 0.3),
            "scale": rng.uniform(0.8, 1.15),
            "stroke": rng.integers(0, 3),
        }
        for _ in range(per_class)
    ]
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.synthetic-", dir=root.parent))
    try:
        for label, char in enumerate(CLASSES, start=1):
            folder = staging / IMG_DIR / f"Sample{label:03d}"
            folder.mkdir(parents=True)
            for writer in range(1, per_class + 1):
                image = _render(char, rng, styles[writer - 1], size)
                image.save(folder / f"img{label:03d}-{writer:03d}.png", format="PNG")
        root.mkdir(parents=True, exist_ok=True)
        os.replace(staging / "English", root / "English")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
