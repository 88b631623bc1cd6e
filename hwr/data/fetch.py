"""Fetching the EnglishHnd archive, unpacking it safely, and finding or fetching the set on demand."""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse
from urllib.request import url2pathname

from hwr.data.chars74k import DataError, find_root, locate, sha256_file, verify

OFFICIAL_URL = "https://info-ee.surrey.ac.uk/CVSSP/demos/chars74k/EnglishHnd.tgz"


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar archive into dest after checking every member; extracts nothing if one is refused.

    Refused: absolute paths, '..' components, symlinks, hardlinks, devices, FIFOs.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        tf = tarfile.open(archive)
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"{archive} is not a readable tar archive ({str(exc).splitlines()[0].rstrip(':')}).") from exc
    with tf:
        try:
            members = tf.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{archive} is a damaged tar archive ({exc}).") from exc
        for m in members:
            parts = PurePosixPath(m.name.replace("\\", "/")).parts
            if m.name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", m.name):
                why = "has an absolute path"
            elif ".." in parts:
                why = "has a '..' component"
            elif m.issym():
                why = "is a symbolic link"
            elif m.islnk():
                why = "is a hard link"
            elif not (m.isfile() or m.isdir()):
                why = "is a device, FIFO or other special file"
            else:
                continue
            raise DataError(f"{archive} member {m.name!r} {why}; refusing to extract the archive.")
        dest.mkdir(parents=True, exist_ok=True)
        try:
            tf.extractall(dest, members=members, filter="data")  # second line of defence
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{archive} could not be extracted into {dest} ({exc}).") from exc


def fetch_url(url: str, directory: Path) -> Path:
    """Download url into directory with a progress bar (file:// URLs are copied); returns the file."""
    parsed = urlparse(url)
    archive = Path(directory) / (os.path.basename(parsed.path) or "EnglishHnd.tgz")
    try:
        if parsed.scheme == "file":
            shutil.copyfile(url2pathname(parsed.path), archive)
        else:
            from torchvision.datasets.utils import download_url  # heavy import, only needed here

            download_url(url, str(directory), filename=archive.name)
    except Exception as exc:  # urllib, socket, torchvision and filesystem errors alike
        raise DataError(f"Could not download {url} ({type(exc).__name__}: {exc}).") from exc
    return archive


def download(root: str | Path, *, url: str = OFFICIAL_URL, archive_sha256: str | None = None) -> Path:
    """Download EnglishHnd.tgz (see fetch_url), unpack it into root, verify it against the manifest; returns root.

    Works in a temporary directory next to root and moves the verified tree in at the end, so a failure
    leaves root as it was. root must not already hold the archive's top-level entries (English/).
    """
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise DataError(f"Data directory {root} is not a directory.")
    if (root / "English").exists():
        raise DataError(f"{root / 'English'} already exists; remove it or choose another data directory.")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.download-", dir=root.parent))
    try:
        (staging / "archive").mkdir()
        archive = fetch_url(url, staging / "archive")
        if archive_sha256 is not None and sha256_file(archive) != archive_sha256.lower():
            raise DataError(f"{url} does not have the expected sha256 {archive_sha256}.")
        tree = staging / "tree"
        try:
            safe_extract(archive, tree)
        except DataError as exc:  # name what the user gave, not the staging copy
            raise DataError(str(exc).replace(str(archive), url)) from exc
        try:
            verify(tree, expected_per_class=55, manifest=True)
        except DataError as exc:
            detail = str(exc).replace(f"{tree}{os.sep}", "").replace(str(tree), "the archive")
            raise DataError(f"{url} is not the genuine EnglishHnd set, so nothing was installed: {detail}") from exc
        entries = sorted(tree.iterdir())
        if not root.exists():
            os.replace(tree, root)
        else:
            taken = [root / e.name for e in entries if (root / e.name).exists()]
            if taken:
                raise DataError(f"{taken[0]} already exists; remove it or choose another data directory.")
            for entry in entries:
                os.replace(entry, root / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def has_images(root: str | Path) -> bool:
    """Whether root holds a Chars74K layout with at least one image (nothing else is checked)."""
    found = locate(root)
    if found is None:
        return False
    layout, where = found
    if layout == "kaggle":
        return True
    dirs = [d for d in where.glob("Sample[0-9][0-9][0-9]") if d.is_dir()]
    return any(p.suffix.lower() == ".png" for d in dirs for p in d.iterdir())


def ensure_dataset(data_dir: str | Path | None = None, *, download_missing: bool = True) -> Path:
    """find_root(data_dir), downloading the set there first if it holds no images and that is allowed."""
    root = find_root(data_dir)
    if has_images(root):
        return root
    if not download_missing:
        raise DataError(
            f"No Chars74K images in {root}; pass --data-dir, set HWR_DATA_DIR, or run `hwr data download`."
        )
    return download(root)
