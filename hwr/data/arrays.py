"""Decoded, preprocessed images as arrays, cached on disk so each PNG is decoded once."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hwr.data.chars74k import DataError, Sample, default_cache_dir, scan
from hwr.data.parallel import map_chunks
from hwr.files import atomic_write

# Bump when preprocessing or the file format changes; old cache files are then ignored.
FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class Dataset:
    """Preprocessed images (uint8 [N, S, S], grayscale), labels and writers (int64 [N]), in scan() order."""

    images: np.ndarray
    labels: np.ndarray
    writers: np.ndarray
    image_size: int
    root: str

    def __len__(self) -> int:
        return len(self.labels)


def preprocess(image: Image.Image, image_size: int) -> np.ndarray:
    """The paper's preprocessing: grayscale, resized to image_size x image_size (bilinear, antialiased)."""
    gray = image.convert("L").resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)


def _decode_chunk(paths: list[str], image_size: int) -> np.ndarray:
    out = np.empty((len(paths), image_size, image_size), dtype=np.uint8)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                out[i] = preprocess(im, image_size)
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"{p} cannot be decoded ({type(exc).__name__}: {exc}).") from exc
    return out


def _cache_key(root: Path, samples: list[Sample], image_size: int) -> str:
    """Hash of the source files' identity (relative path, size, mtime_ns, label, writer), size and format."""
    h = hashlib.sha256(json.dumps({"format": FORMAT_VERSION, "image_size": image_size}).encode())
    for s in samples:
        st = s.path.stat()
        rel = os.path.relpath(s.path, root)
        h.update(f"\n{rel}\t{st.st_size}\t{st.st_mtime_ns}\t{s.label}\t{s.writer}".encode())
    return h.hexdigest()


def cache_file(root: str | Path, image_size: int = 224, *, cache_dir: Path | None = None) -> Path:
    """The cache file load_dataset uses for root at image_size (it may not exist yet)."""
    root = Path(root)
    return _cache_file(root, scan(root), image_size, cache_dir)


def _cache_file(root: Path, samples: list[Sample], image_size: int, cache_dir: Path | None) -> Path:
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "arrays"
    key = _cache_key(root, samples, image_size)
    return cache_dir / f"chars74k-{image_size}px-{key[:24]}.npz"


def _read_cache(path: Path, labels: np.ndarray, writers: np.ndarray, image_size: int) -> np.ndarray | None:
    """The cached images if path holds a complete, matching cache file, else None.

    The file is a zip archive: reading an array checks its CRC-32, so a truncated or damaged file is
    detected (and then decoded again, with a warning naming it), never used.
    """
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            images, cached_labels, cached_writers = z["images"], z["labels"], z["writers"]
        if (
            images.dtype != np.uint8
            or images.shape != (len(labels), image_size, image_size)
            or not np.array_equal(cached_labels, labels)
            or not np.array_equal(cached_writers, writers)
        ):
            raise ValueError("its arrays do not match the images it stands for")
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"The image cache {path} is damaged ({exc}); decoding the images again.", stacklevel=3)
        return None
    return images


def _write_cache(path: Path, images: np.ndarray, labels: np.ndarray, writers: np.ndarray) -> None:
    """Write the cache file whole (a temporary file in the same directory, then a rename)."""
    atomic_write(path, lambda f: np.savez(f, images=images, labels=labels, writers=writers))


def load_dataset(
    root: str | Path,
    image_size: int = 224,
    *,
    cache_dir: Path | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> Dataset:
    """All images under root, preprocessed (see preprocess) and cached on disk.

    The cache (default default_cache_dir()/arrays) is keyed by the source files' paths, sizes and
    mtimes, image_size and the format version; a hit decodes nothing. A miss decodes in worker
    processes (workers: None = one per CPU, 1 = in this process).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}.")
    root = Path(root)
    samples = scan(root)
    if not samples:
        raise DataError(f"{root} contains no images.")
    labels = np.array([s.label for s in samples], dtype=np.int64)
    writers = np.array([s.writer for s in samples], dtype=np.int64)
    path = _cache_file(root, samples, image_size, cache_dir)

    images = _read_cache(path, labels, writers, image_size)
    if images is None:
        chunks = map_chunks(
            _decode_chunk,
            [str(s.path) for s in samples],
            image_size,
            workers=workers,
            progress=progress,
            desc=f"decode {image_size}px",
        )
        images = np.concatenate(chunks)
        try:
            _write_cache(path, images, labels, writers)
        except OSError as exc:
            warnings.warn(f"Could not write the image cache {path} ({exc}); images will be decoded again next time.")
    return Dataset(images=images, labels=labels, writers=writers, image_size=image_size, root=str(root))
