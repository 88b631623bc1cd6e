"""One driver per experiment: `lock(path)` holds the experiment while a driver runs it.

- A local experiment: an exclusive `flock` on `.<name>.lock` beside its folder. The operating system
  releases it when its process ends, however it ends (kill -9 included).
- An experiment in object storage (s3://, gs://, any URI): object stores have no locks, so a **lease**, the
  object `.<name>.lock` beside the experiment, a JSON record of its owner (host, pid, a random token) and
  of when it was last renewed. The driver renews it every `lease_s / 3` seconds while it runs and deletes
  it when it ends. Another driver is refused while the lease is live; it takes over a lease not renewed
  for `lease_s` seconds (its driver, or the driver's machine, died), and at once a lease whose owner
  process is gone from this same machine (kill -9, then the same command again, waits for nothing).

Limits, by design: pyarrow has no conditional write, so a driver takes a lease by writing it, waiting
SETTLE_S and reading it back (the one whose record is there holds it, the other is refused): two drivers
both pass only if one writes more than SETTLE_S after the other's first read. Lease ages are wall-clock
times written by the machines involved, so their clocks must agree to well within `lease_s` (NTP does).
"""

from __future__ import annotations

import _thread
import contextlib
import fcntl
import json
import os
import posixpath
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pyarrow.fs

from study.state import StateError
from study.storage import is_uri, open_fs, shown

LEASE_S = float(os.environ.get("HWR_LEASE_S", "60"))
SETTLE_S = 1.0
OTHER_NAME = "or give this study another name with --set name=..."


def lock_file(path: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The filesystem and path of the lock beside the experiment at `path`: `.<name>.lock`."""
    fs, p = open_fs(path)
    return fs, posixpath.join(posixpath.dirname(p), f".{posixpath.basename(p)}.lock")


@contextlib.contextmanager
def lock(path: str, lease_s: float | None = None) -> Iterator[None]:
    """Hold the experiment at `path` (a folder or a URI) while the block runs; StateError at once, in one
    sentence naming the holder, if another driver holds it."""
    if not is_uri(path):
        with _flock(path):
            yield
        return
    with Lease(path, LEASE_S if lease_s is None else lease_s):
        yield


@contextlib.contextmanager
def _flock(path: str) -> Iterator[None]:
    folder = Path(path)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise StateError(f"{path} is being run by another hwr-study ({holder}); wait for it to end, "
                             f"{OTHER_NAME}") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------------------- leases


def _machine() -> str:
    """This boot of this machine, and this pid namespace: where a pid means one process."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{socket.gethostname()}/{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def _started(pid: int) -> str | None:
    """The start time (clock ticks since boot) of process `pid`, or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def owner_alive(record: dict[str, Any]) -> bool | None:
    """Whether the lease's owner process still runs: True/False when it ran on this machine, None elsewhere."""
    here = _machine()
    if not here or record.get("machine") != here:
        return None
    return _started(int(record.get("pid", -1))) == record.get("started")


def live(record: dict[str, Any] | None, now: float | None = None) -> bool:
    """Whether a lease record holds the experiment: its owner runs (on this machine), or it was renewed less
    than its lease ago (elsewhere)."""
    if not record:
        return False
    alive = owner_alive(record)
    if alive is not None:
        return alive
    return (now or time.time()) - float(record.get("renewed", 0)) < float(record.get("lease_s", LEASE_S))


def read_lease(path: str) -> dict[str, Any] | None:
    """The lease record beside the experiment at URI `path` ({} when damaged), or None when there is none."""
    fs, file = lock_file(path)
    try:
        with fs.open_input_stream(file) as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        if fs.get_file_info(file).type == pyarrow.fs.FileType.NotFound:
            return None
        raise
    try:
        record = json.loads(raw)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def held_by(path: str, record: dict[str, Any]) -> str:
    """The refusal, one sentence."""
    age = time.time() - float(record.get("renewed", 0))
    left = max(0.0, float(record.get("lease_s", LEASE_S)) - age)
    return (f"{shown(path)} is being run by another hwr-study (pid {record.get('pid')} on {record.get('host')}, "
            f"its lease renewed {age:.0f} s ago); wait for it to end, {OTHER_NAME} (if that driver died, its "
            f"lease expires in {left:.0f} s).")


class Lease:
    """The lease on the experiment at URI `path`, held from `__enter__` to `__exit__`, renewed meanwhile."""

    def __init__(self, path: str, lease_s: float = LEASE_S) -> None:
        self.path, self.lease_s = path, float(lease_s)
        self.fs, self.file = lock_file(path)
        self.record = {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
                       "machine": _machine(), "started": _started(os.getpid()), "lease_s": self.lease_s,
                       "since": time.time(), "renewed": time.time(), "experiment": shown(path)}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        self.record["renewed"] = time.time()
        self.fs.create_dir(posixpath.dirname(self.file), recursive=True)
        data = json.dumps(self.record).encode()
        if isinstance(self.fs, pyarrow.fs.LocalFileSystem):  # a file can be read half-written: write, then rename
            tmp = f"{self.file}.{self.record['owner']}.tmp"
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, self.file)
        else:  # an object store's PUT is whole or nothing
            with self.fs.open_output_stream(self.file) as f:
                f.write(data)

    def _mine(self, record: dict | None) -> bool:
        return bool(record) and record.get("owner") == self.record["owner"]

    def __enter__(self) -> Lease:
        current = read_lease(self.path)
        if live(current):
            raise StateError(held_by(self.path, current))
        if current is not None:
            print(f"hwr-study: taking over the expired lease on {shown(self.path)} "
                  f"(pid {current.get('pid')} on {current.get('host')}).", file=sys.stderr, flush=True)
        self._write()
        time.sleep(SETTLE_S)  # a driver that read the old lease just before this write writes its own now
        back = read_lease(self.path)
        if not self._mine(back):
            raise StateError(held_by(self.path, back or {}))
        self._thread = threading.Thread(target=self._renew, name="hwr-lease", daemon=True)
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                current = read_lease(self.path)
                if current is not None and not self._mine(current):
                    print(f"hwr-study: {held_by(self.path, current)} This driver lost its lease (not renewed for "
                          f"{self.lease_s:.0f} s) and stops.", file=sys.stderr, flush=True)
                    _thread.interrupt_main()  # as Ctrl-C: Tune saves its state and stops
                    return
                self._write()
            except OSError as e:  # storage out of reach a while: try again at the next renewal
                print(f"hwr-study: could not renew the lease on {shown(self.path)} ({e}).", file=sys.stderr,
                      flush=True)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with contextlib.suppress(OSError):
            if self._mine(read_lease(self.path)):
                self.fs.delete_file(self.file)


def driver_state(path: str) -> str:
    """`running`, `not running` or `unknown` (the lock or lease cannot be read) for the experiment at `path`."""
    if is_uri(path):
        try:
            return "running" if live(read_lease(path)) else "not running"
        except (OSError, ValueError):
            return "unknown"
    folder = Path(path)
    try:
        f = open(folder.parent / f".{folder.name}.lock")
    except OSError:
        return "not running"
    with f:
        try:  # a shared lock, released at once: refused while a driver holds its exclusive one
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return "running"
        fcntl.flock(f, fcntl.LOCK_UN)
    return "not running"


__all__ = ["LEASE_S", "Lease", "driver_state", "held_by", "live", "lock", "lock_file", "read_lease"]
