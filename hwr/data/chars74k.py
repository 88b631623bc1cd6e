"""Chars74K EnglishHnd: class labels, where the files live, how to list them, how to check them."""

from __future__ import annotations

import csv
import functools
import importlib.resources
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from hwr.data.parallel import map_chunks
from hwr.errors import UserError
from hwr.files import sha256_file

CLASSES: tuple[str, ...] = tuple("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
NUM_CLASSES = len(CLASSES)
assert NUM_CLASSES == 62

IMG_DIR = Path("English", "Hnd", "Img")
KAGGLE_CSV = "english.csv"
_SAMPLE_DIR = re.compile(r"Sample(\d{3})")
_IMAGE_NAME = re.compile(r"img(\d{3})-(\d{3})\.png")


class DataError(UserError, ValueError):
    """The data on disk (or a value describing it) is not what it should be; the message says which."""


@dataclass(frozen=True)
class Sample:
    """One image: its file, class index (0..61, into CLASSES) and writer (MMM in imgNNN-MMM.png)."""

    path: Path
    label: int
    writer: int


@dataclass(frozen=True)
class DatasetInfo:
    """What verify() found: layout ('original' or 'kaggle'), counts, and images per class in CLASSES order."""

    root: Path
    layout: str
    num_classes: int
    num_images: int
    per_class: tuple[int, ...]


def default_cache_dir() -> Path:
    """$HWR_CACHE_DIR, else $XDG_CACHE_HOME/hwr, else ~/.cache/hwr."""
    if value := os.environ.get("HWR_CACHE_DIR"):
        return Path(value).expanduser()
    if value := os.environ.get("XDG_CACHE_HOME"):
        return Path(value).expanduser() / "hwr"
    return Path.home() / ".cache" / "hwr"


def find_root(data_dir: str | Path | None = None) -> Path:
    """The dataset directory: data_dir if given, else $HWR_DATA_DIR, else default_cache_dir()/chars74k.

    Nothing is checked on disk.
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    if value := os.environ.get("HWR_DATA_DIR"):
        return Path(value).expanduser()
    return default_cache_dir() / "chars74k"


def locate(root: str | Path) -> tuple[str, Path] | None:
    """(layout, directory) of the dataset under root, or None when root holds neither layout.

    'kaggle' when root holds english.csv (directory = root); 'original' when root is, or contains as
    English/Hnd/Img or Hnd/Img or Img, a directory with SampleNNN subdirectories (directory = that one).
    """
    root = Path(root)
    if not root.is_dir():
        return None
    if (root / KAGGLE_CSV).is_file():
        return "kaggle", root
    for img_dir in (root / IMG_DIR, root / "Hnd" / "Img", root / "Img", root):
        if img_dir.is_dir() and any(
            _SAMPLE_DIR.fullmatch(p.name) and p.is_dir() for p in img_dir.iterdir()
        ):
            return "original", img_dir
    return None


def _is_stray(name: str) -> bool:
    """Files skipped without complaint: anything not *.png (.DS_Store, Thumbs.db, *~) and hidden files."""
    return name.startswith(".") or not name.lower().endswith(".png")


def _parse_name(path: Path) -> tuple[int, int]:
    """(class number NNN, writer MMM) from imgNNN-MMM.png, or DataError naming the file."""
    m = _IMAGE_NAME.fullmatch(path.name)
    if m is None:
        raise DataError(f"Unexpected file name {path} (expected imgNNN-MMM.png).")
    number, writer = int(m.group(1)), int(m.group(2))
    if not 1 <= number <= NUM_CLASSES:
        raise DataError(f"{path} names unknown class number {number:03d} (expected 001-{NUM_CLASSES:03d}).")
    if writer < 1:
        raise DataError(f"{path} names writer 000; writers are numbered from 001.")
    return number, writer


def scan(root: str | Path) -> list[Sample]:
    """All images under root, sorted by (label, writer).

    Reads the original layout (English/Hnd/Img/SampleNNN/imgNNN-MMM.png, with root being the dataset
    directory, the Hnd directory or the Img directory) or the Kaggle one (english.csv + Img/).
    Stray non-images are ignored.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"Data directory {root} does not exist.")
    if not root.is_dir():
        raise DataError(f"Data directory {root} is not a directory.")
    found = locate(root)
    if found is None:
        raise DataError(
            f"{root} holds neither the Chars74K layout (English/Hnd/Img/SampleNNN/) "
            f"nor the Kaggle one ({KAGGLE_CSV} + Img/)."
        )
    layout, where = found
    samples = _scan_kaggle(where) if layout == "kaggle" else _scan_original(where)
    seen: dict[tuple[int, int], Path] = {}
    for s in samples:
        if (s.label, s.writer) in seen:
            raise DataError(f"{s.path} duplicates {seen[(s.label, s.writer)]} (same class and writer).")
        seen[(s.label, s.writer)] = s.path
    samples.sort(key=lambda s: (s.label, s.writer))
    return samples


def _scan_original(img_dir: Path) -> list[Sample]:
    samples = []
    for sample_dir in sorted(img_dir.iterdir()):
        m = _SAMPLE_DIR.fullmatch(sample_dir.name)
        if m is None or not sample_dir.is_dir():
            continue
        number = int(m.group(1))
        if not 1 <= number <= NUM_CLASSES:
            raise DataError(f"{sample_dir} is not one of the {NUM_CLASSES} classes (Sample001-Sample062).")
        for path in sorted(sample_dir.iterdir()):
            if _is_stray(path.name) or not path.is_file():
                continue
            file_number, writer = _parse_name(path)
            if file_number != number:
                raise DataError(f"{path} is named for class {file_number:03d} but lies in {sample_dir.name}.")
            samples.append(Sample(path, number - 1, writer))
    return samples


def _scan_kaggle(root: Path) -> list[Sample]:
    csv_path = root / KAGGLE_CSV
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"image", "label"} <= set(reader.fieldnames):
            raise DataError(f"{csv_path} lacks the header 'image,label'.")
        rows = list(reader)
    samples = []
    for line, row in enumerate(rows, start=2):
        image, label = (row["image"] or "").strip(), (row["label"] or "").strip()
        path = root / image
        if _is_stray(path.name):
            raise DataError(f"{csv_path} line {line} lists {image!r}, which is not a PNG image.")
        number, writer = _parse_name(path)
        if label not in CLASSES:
            raise DataError(f"{csv_path} line {line} has unknown label {label!r}.")
        if CLASSES.index(label) != number - 1:
            raise DataError(
                f"{csv_path} line {line} labels {image} as {label!r}, but its name is for class "
                f"{CLASSES[number - 1]!r}."
            )
        if not path.is_file():
            raise DataError(f"{path} is listed in {csv_path} but missing.")
        samples.append(Sample(path, number - 1, writer))
    return samples


@functools.cache
def load_manifest() -> dict[str, str]:
    """The shipped manifest of the genuine set: {file name: sha256}, e.g. {'img001-001.png': '9bcd...'}."""
    text = importlib.resources.files("hwr").joinpath("SHA256SUMS").read_text(encoding="utf-8")
    manifest = {}
    for line in text.splitlines():
        if line.strip():
            digest, rel = line.split(maxsplit=1)
            manifest[Path(rel.lstrip("*")).name] = digest.lower()
    return manifest


def _check_manifest(root: Path, layout: str, samples: list[Sample], progress: bool = False) -> None:
    manifest = load_manifest()
    by_name = {s.path.name: s.path for s in samples}
    missing = sorted(set(manifest) - set(by_name))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        name = missing[0]
        where = IMG_DIR / f"Sample{name[3:6]}" / name if layout == "original" else Path("Img", name)
        raise DataError(f"{root} lacks {where}{more}, which the manifest lists.")
    extra = sorted(set(by_name) - set(manifest))
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise DataError(f"{by_name[extra[0]]}{more} is not in the manifest of the genuine set.")
    names = tqdm(sorted(by_name), desc="verify (sha256)", unit="img", disable=not progress, dynamic_ncols=True)
    bad = [by_name[n] for n in names if sha256_file(by_name[n]) != manifest[n]]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DataError(f"{bad[0]}{more} does not match the manifest's sha256.")


def _decode_errors(paths: list[str]) -> list[tuple[str, str]]:
    """(path, error) for each file PIL cannot fully decode."""
    errors = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
        except Exception as exc:  # PIL raises many types for bad files
            errors.append((p, f"{type(exc).__name__}: {exc}"))
    return errors


def verify(
    root: str | Path,
    *,
    expected_per_class: int | None = None,
    manifest: bool | None = None,
    decode: bool = True,
    progress: bool = False,
) -> DatasetInfo:
    """Check the set under root and describe it; DataError names the first problem.

    Checks: every file against the shipped manifest (manifest=True; None checks it when the image count
    equals the manifest's), all 62 classes present with equal counts (== expected_per_class if given),
    and every image decodable by PIL (decode=True; files the manifest has vouched for are genuine and
    not decoded again).
    """
    root = Path(root)
    samples = scan(root)
    layout, _ = locate(root)  # scan succeeded, so a layout exists
    if not samples:
        raise DataError(f"{root} contains no images.")
    use_manifest = manifest if manifest is not None else len(samples) == len(load_manifest())
    if use_manifest:
        _check_manifest(root, layout, samples, progress=progress)

    per_class = np.bincount([s.label for s in samples], minlength=NUM_CLASSES)
    absent = [i for i in range(NUM_CLASSES) if per_class[i] == 0]
    if absent:
        more = f" (and {len(absent) - 1} more classes)" if len(absent) > 1 else ""
        i = absent[0]
        raise DataError(f"{root} has no images of class {CLASSES[i]!r} (Sample{i + 1:03d}){more}.")
    lo, hi = int(per_class.min()), int(per_class.max())
    if lo != hi:
        i, j = int(per_class.argmin()), int(per_class.argmax())
        raise DataError(
            f"{root} has uneven classes: {lo} images of {CLASSES[i]!r} (Sample{i + 1:03d}) "
            f"but {hi} of {CLASSES[j]!r} (Sample{j + 1:03d})."
        )
    if expected_per_class is not None and lo != expected_per_class:
        raise DataError(f"{root} has {lo} images per class, expected {expected_per_class}.")

    if decode and not use_manifest:
        chunks = map_chunks(
            _decode_errors, [str(s.path) for s in samples], progress=progress, desc="verify"
        )
        errors = [e for chunk in chunks for e in chunk]
        if errors:
            path, why = errors[0]
            more = f" (and {len(errors) - 1} more files)" if len(errors) > 1 else ""
            raise DataError(f"{path} cannot be decoded ({why}){more}.")

    return DatasetInfo(
        root=root,
        layout=layout,
        num_classes=int((per_class > 0).sum()),
        num_images=len(samples),
        per_class=tuple(int(n) for n in per_class),
    )
