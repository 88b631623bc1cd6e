"""Small helpers every benchmark file uses: the error type, CPU time, peak memory, machine facts, formatting."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KIB = 1024


class BenchError(RuntimeError):
    """The benchmark cannot run, explained in one sentence."""


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its reaped descendants so far."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def vmhwm_mib() -> float | None:
    """Peak RSS of this process's own address space since exec (/proc/self/status VmHWM), Linux only."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / KIB
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """CPU model, CPU counts, Python, platform and memory of this machine."""
    model = platform.processor() or platform.machine()
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in text.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu_model": model, "cpus": os.cpu_count(), "cpus_usable": usable, "python": platform.python_version(),
            "platform": platform.platform(), "mem_gib": _mem_gib()}


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def lazy_class(module_globals: dict[str, Any], name: str, make: Callable[[], type]) -> type:
    """The class `make()` builds (once), registered as `name` in the calling module.

    For a class that subclasses something from a heavy import, such as a `ray.tune.Callback`: the module
    imports without Ray, and pickle (Tune pickles the run config with its callbacks) finds the class by
    module and name when the module's `__getattr__` returns `lazy_class(globals(), name, make)`.
    """
    cls = module_globals.get(name)
    if cls is None:
        cls = make()
        cls.__module__, cls.__qualname__ = module_globals["__name__"], name
        module_globals[name] = cls
    return cls


def parse_list(text: str, kind=str) -> list:
    """'a, b,c' -> ['a', 'b', 'c'] (each converted with `kind`)."""
    return [kind(v.strip()) for v in text.split(",") if v.strip()]


def add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def fmt(v, unit: str = "s", digits: int = 1) -> str:
    """'12.3 s', or '-' for a missing figure."""
    if v is None:
        return "-"
    return f"{v:.{digits}f} {unit}".rstrip()
