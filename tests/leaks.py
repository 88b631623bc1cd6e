"""A guard against what makes a test run crash at exit: a test, or a module's fixtures, that leave a Ray
session, a thread, a child process or a listening server behind (issue 17).

Loaded by tests/conftest.py as a pytest plugin. Two checks:

* after each test's call: a Ray session the test body started and did not shut down (a fixture that
  starts Ray for a module is fine: it is checked when the module ends);
* when a module's last test has been torn down (every module-scoped fixture finalized): a Ray session
  still up, threads, child processes or listening sockets that were not there when the module started.

Either failure is an error at that test's teardown, naming the test, so the run fails (exit 1) instead
of crashing at random in interpreter teardown. Threads and children are given a few seconds to end,
polled, since Ray's and Playwright's helpers exit asynchronously after their shutdown calls return.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass

import psutil
import pytest

# Seconds for processes and threads to end after their owner's shutdown call returned (HWR_LEAK_GRACE_S)
GRACE_S = float(os.environ.get("HWR_LEAK_GRACE_S", "20"))
# Threads a library starts once per process on purpose and keeps for its lifetime (not a test's leak):
# tqdm's monitor thread (TMonitor, named tqdm_monitor) wakes every 10 s and holds no native resource.
LIFETIME_THREADS = ("TMonitor", "tqdm_monitor")


def ray_on() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


@dataclass(frozen=True)
class Snapshot:
    threads: frozenset[int]
    children: frozenset[int]
    listening: frozenset[tuple[str, int]]

    @staticmethod
    def take() -> Snapshot:
        me = psutil.Process()
        return Snapshot(frozenset(t.ident for t in threading.enumerate() if t.ident is not None),
                        frozenset(p.pid for p in _live_children(me)),
                        frozenset(_listening(me)))


def _live_children(me: psutil.Process) -> list[psutil.Process]:
    out = []
    for p in me.children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _listening(me: psutil.Process) -> set[tuple[str, int]]:
    try:
        conns = me.net_connections(kind="inet")
    except psutil.Error:
        return set()
    return {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}


def leaks_since(before: Snapshot, grace_s: float | None = None) -> list[str]:
    """What is alive now that was not in `before`, after up to `grace_s` for it to end by itself."""
    deadline = time.monotonic() + (GRACE_S if grace_s is None else grace_s)
    while True:
        found = _describe(before)
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)


def _describe(before: Snapshot) -> list[str]:
    me = psutil.Process()
    found = []
    if ray_on():
        found.append("a Ray session (ray.is_initialized() is still True)")
    threads = [t for t in threading.enumerate()
               if t.ident not in before.threads and t.is_alive() and not t.name.startswith(LIFETIME_THREADS)]
    if threads:
        found.append("threads " + ", ".join(sorted(f"{t.name!r}" for t in threads)))
    children = []
    for p in _live_children(me):
        if p.pid not in before.children:
            try:
                children.append(f"{p.pid} ({' '.join(p.cmdline()[:3])[:80]})")
            except psutil.Error:
                pass
    if children:
        found.append("child processes " + "; ".join(children))
    servers = _listening(me) - before.listening
    if servers:
        found.append("listening sockets " + ", ".join(f"{ip}:{port}" for ip, port in sorted(servers)))
    return found


class LeakGuard:
    def __init__(self) -> None:
        self.module_start: dict[str, Snapshot] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        module = item.nodeid.split("::")[0]
        if module not in self.module_start:
            self.module_start[module] = Snapshot.take()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        had_ray = ray_on()
        try:
            return (yield)
        finally:
            if ray_on() and not had_ray:
                item.user_properties.append(("leak", "started Ray in its body and did not shut it down"))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item, nextitem):
        result = yield
        problems = [v for k, v in item.user_properties if k == "leak"]
        module = item.nodeid.split("::")[0]
        if nextitem is None or nextitem.nodeid.split("::")[0] != module:
            left = leaks_since(self.module_start.pop(module))
            if left:
                problems.append(f"left behind after {module} and its fixtures ended: " + "; ".join(left))
        if problems:
            raise pytest.fail.Exception(f"{item.nodeid}: " + " | ".join(problems), pytrace=False)
        return result


def pytest_configure(config) -> None:
    if os.environ.get("HWR_LEAK_GUARD", "1") != "0":
        config.pluginmanager.register(LeakGuard(), "hwr-leak-guard")
