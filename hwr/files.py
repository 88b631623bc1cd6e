"""Files written whole or not at all: a temporary file beside the target, then a rename.

A process killed mid-write, a full disk or a write error leaves the previous file (or none) in place,
never a half-written one, and no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Call write(f) on a new binary file beside `path`, then rename it to `path`; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
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
