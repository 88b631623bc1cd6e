"""A guard against what makes a test run crash at exit: Ray started in the pytest process, and a test, or a
module's fixtures, that leave a thread, a child process or a listening server behind (issue 17).

Ray's driver leaves native threads (gRPC's, its GCS client's) running after `ray.shutdown()` until the
process exits, where they run into interpreter finalization (grpc#11804: a segfault at exit, now and
then). So the pytest process never starts Ray: tests run their Ray drivers in child processes
(tests/study_helpers.py: `hwr_study`, `run_driver`, `ray_head`). Loaded by tests/conftest.py as a pytest
plugin (HWR_LEAK_GUARD=0 turns it off). Its checks:

* after each phase of a test (its fixtures' setup, its body, their teardown): Ray started in this process
  during it, seen as `ray.is_initialized()` becoming true or as a Ray core worker's native threads
  (Linux: /proc/self/task/*/comm) that were not there before; likewise for each module's collection;
* when a module's last test has been torn down (every module-scoped fixture finalized): a Ray session
  still up, threads, child processes or listening sockets that were not there when the module started;
* at the end of the session (Linux): Ray's or gRPC's native threads alive in this process, which would
  run into its exit; the run then fails (exit 1) even if every test passed.

A failure is an error at that test's teardown, naming the test, so the run fails (exit 1) instead of
crashing at random in interpreter teardown. Threads and children are given a few seconds to end, polled,
since Playwright's helpers (and Ray's, in a child driver) exit asynchronously after their shutdown calls.
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
# Native threads of a Ray core worker, as the kernel names them (15 characters at most): a process that has
# them has run ray.init (started Ray, or joined a cluster as a driver).
RAY_WORKER_THREADS = ("gcs_client_io_s", "worker.io", "worker.user_obj", "task_event_buff", "global.accessor")
# Native threads a Ray driver leaves behind after ray.shutdown() (issue 17; gRPC's own names, as of Ray 2.60)
EXIT_HAZARD_THREADS = ("gcs_client_io_s", "grpc_global_tim", "event_engine", "default-executo", "resolver-execut",
                       "timer_manager")
TO_A_SUBPROCESS = ("run Ray drivers in a subprocess: `hwr-study` (tests/study_helpers.hwr_study), or a script "
                   "under tests/drivers/ (study_helpers.run_driver, ray_head)")


def ray_on() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def native_threads() -> dict[int, str]:
    """{thread id: name} of this process's threads as the kernel names them; {} where there is no /proc."""
    try:
        ids = os.listdir("/proc/self/task")
    except OSError:
        return {}
    out = {}
    for tid in ids:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                out[int(tid)] = f.read().strip()
        except OSError:  # ended meanwhile
            pass
    return out


def ray_worker_threads() -> set[int]:
    return {tid for tid, name in native_threads().items() if name.startswith(RAY_WORKER_THREADS)}


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
        self.ray_threads = ray_worker_threads()  # those already blamed (or there before the session)

    def ray_started(self, was_on: bool) -> bool:
        """Whether Ray was started in this process since `was_on` was read (and the last call)."""
        new = ray_worker_threads() - self.ray_threads
        self.ray_threads |= new
        return bool(new) or (ray_on() and not was_on)

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector):
        was_on = ray_on()
        report = yield
        if self.ray_started(was_on):  # a module (or a conftest) that starts Ray when imported
            report.outcome = "failed"
            report.longrepr = (f"{collector.nodeid or '.'}: started Ray in the pytest process while collected; "
                               + TO_A_SUBPROCESS)
        return report

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item):
        module = item.nodeid.split("::")[0]
        if module not in self.module_start:
            self.module_start[module] = Snapshot.take()
        return (yield from self.watch_for_ray(item, "fixtures' setup"))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        return (yield from self.watch_for_ray(item, "body"))

    def watch_for_ray(self, item, phase: str):
        was_on = ray_on()
        try:
            return (yield)
        finally:
            if self.ray_started(was_on):
                item.user_properties.append(("leak", f"started Ray in its {phase}, in the pytest process; "
                                                     + TO_A_SUBPROCESS))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item, nextitem):
        was_on = ray_on()
        result = yield
        if self.ray_started(was_on):
            item.user_properties.append(("leak", "started Ray in its fixtures' teardown, in the pytest process; "
                                                 + TO_A_SUBPROCESS))
        problems = [v for k, v in item.user_properties if k == "leak"]
        module = item.nodeid.split("::")[0]
        if nextitem is None or nextitem.nodeid.split("::")[0] != module:
            left = leaks_since(self.module_start.pop(module))
            if left:
                problems.append(f"left behind after {module} and its fixtures ended: " + "; ".join(left))
        if problems:
            raise pytest.fail.Exception(f"{item.nodeid}: " + " | ".join(problems), pytrace=False)
        return result

    def pytest_sessionfinish(self, session):
        """Ray's or gRPC's native threads still running here would run into the interpreter's exit."""
        names = sorted({n for n in native_threads().values() if n.startswith(EXIT_HAZARD_THREADS)})
        if names:
            message = (f"hwr-leak-guard: native threads of Ray or gRPC alive in the pytest process at its end "
                       f"({', '.join(names)}): they run into the interpreter's exit (issue 17); {TO_A_SUBPROCESS}.")
            terminal = session.config.pluginmanager.get_plugin("terminalreporter")
            if terminal is not None:
                terminal.write_line(message, red=True)
            else:
                print(message, file=sys.stderr)
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config) -> None:
    if os.environ.get("HWR_LEAK_GUARD", "1") != "0":
        config.pluginmanager.register(LeakGuard(), "hwr-leak-guard")
