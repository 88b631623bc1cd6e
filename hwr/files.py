"""Files written whole or not at all (a temporary file beside the target, flushed to disk, then a rename),
and verified files: written with their sha256, checked against it before use.

A process killed mid-write, a full disk or a write error leaves the previous file (or none) in place,
never a half-written one, and no temporary file behind. Files are left readable by the group and others
(0644), as storage shared by a cluster's nodes needs.

A verified file's sha256 is recorded beside it (`<name>.sha256`, so that it travels with it: Tune copies
folders) or in a sidecar of its own (the bases' JSON); `damage(path, recorded)` says, in one phrase, why a
file does not match, the one message every reader of a verified file gives.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, Callable

MODE = 0o644


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Call write(f) on a new binary file beside `path`, then rename it to `path`; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), MODE)  # mkstemp makes it 0600
            os.fsync(f.fileno())  # on disk before the rename: a crash never leaves a renamed, empty file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def unwritable(folder: str | Path) -> str | None:
    """Why files cannot be written into `folder` (created if missing), or None when they can.

    Checks the nearest existing folder on its path, before any work whose result would be lost.
    """
    p = Path(folder).absolute()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        return f"{p} is a file, not a folder"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{p} is not writable"
    return None


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def digest_path(path: str | Path) -> Path:
    """Where a verified file's sha256 is recorded: beside it."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


class _HashingWriter:
    """A file that hashes what is written through it: a file is hashed as it is written, not read back."""

    def __init__(self, f: IO[bytes]):
        self.f, self.sha = f, hashlib.sha256()

    def write(self, b) -> int:
        self.sha.update(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def write_verified(path: str | Path, write: Callable[[IO[bytes]], object], *, beside: bool = True) -> str:
    """atomic_write `path` through a hashing writer; with `beside`, record the sha256 in `<path>.sha256`
    (written after the file). Returns the sha256."""
    hashed: list[_HashingWriter] = []

    def through(f: IO[bytes]) -> None:
        hashed.append(_HashingWriter(f))
        write(hashed[0])

    atomic_write(path, through)
    digest = hashed[0].sha.hexdigest()
    if beside:
        atomic_write(digest_path(path), lambda f: f.write(digest.encode()))
    return digest


def damage(path: str | Path, recorded: str | None = None, where: str | None = None) -> str | None:
    """Why the verified file at `path` must not be used, or None: it is missing, or its content is not the
    `recorded` sha256 (default: the one in `<path>.sha256`; a file with none recorded, written before
    digests were, is left to its reader). `where` names where the digest is recorded, for the message."""
    path = Path(path)
    if not path.exists():
        return "does not exist"
    if recorded is None:
        try:
            recorded = digest_path(path).read_text().strip()
        except FileNotFoundError:
            return None
        where = where or digest_path(path).name
    if sha256_file(path) != recorded:
        return f"is damaged (its content does not match the sha256 in {where}: truncated or altered)"
    return None
