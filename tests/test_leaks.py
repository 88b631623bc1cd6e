"""The leak guard (tests/leaks.py) on small test trees of their own: each kind of leak fails the test that
made it, by name, and a clean test passes; Ray started in the pytest process at all fails the test that
started it, and Ray's native threads alive at the session's end fail the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
LINUX_THREADS = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc/self/task/*/comm")

LEAKY = '''
import socket, subprocess, threading
import pytest

def test_clean():
    t = threading.Thread(target=lambda: None); t.start(); t.join()

def test_thread_left_running():
    stop = threading.Event()
    threading.Thread(target=stop.wait, name="forgotten-worker", daemon=True).start()
'''

CHILD = '''
import subprocess

def test_child_left_running():
    subprocess.Popen(["sleep", "8"])
'''

SERVER = '''
import socket
import pytest

@pytest.fixture(scope="module")
def server():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
    yield s           # never closed: the module's end finds it

def test_uses_a_server(server):
    assert server.getsockname()[1] > 0
'''

# A stand-in for Ray's module, as the guard sees it (sys.modules["ray"].is_initialized()): a test body that
# "starts" it and does not stop it. The real ray.init takes a minute on a loaded 2-core machine.
RAY = '''
import sys, types

def test_ray_left_up():
    sys.modules["ray"] = types.SimpleNamespace(is_initialized=lambda: True)
'''


# Stand-ins for the native threads that ray.init starts in its process (and that outlive ray.shutdown):
# threads the kernel names as Ray's (PR_SET_NAME). The real ray.init takes a minute on a loaded 2-core machine.
NATIVE = '''
import ctypes, threading

def ray_like_thread(name=b"gcs_client_io_s"):
    named = threading.Event()
    def run():
        ctypes.CDLL(None).prctl(15, name)  # PR_SET_NAME: this thread's /proc/self/task/*/comm
        named.set()
        threading.Event().wait()
    threading.Thread(target=run, name="stand-in", daemon=True).start()
    named.wait()
'''

# A module fixture that starts and stops "Ray" (the stand-in module), as tests/test_study.py's did before
RAY_FIXTURE = '''
import sys, types
import pytest

@pytest.fixture(scope="module")
def local_ray():
    sys.modules["ray"] = types.SimpleNamespace(is_initialized=lambda: True)
    yield
    sys.modules["ray"] = types.SimpleNamespace(is_initialized=lambda: False)

def test_in_a_fixtures_ray(local_ray):
    pass
'''

# A body that starts Ray and shuts it down: is_initialized() is false again, its native threads stay
RAY_SHUT_DOWN = '''
from native import ray_like_thread

def test_ray_started_and_shut_down():
    ray_like_thread()
'''


def run_tree(tmp_path: Path, files: dict[str, str], conftest: str = "") -> tuple[int, str, dict[str, str]]:
    """pytest on a tree of `files` (name -> text) with the guard: exit code, output, ERROR lines by test."""
    (tmp_path / "conftest.py").write_text(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
                                          "from leaks import pytest_configure\n" + conftest)
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HWR_LEAK_GUARD": "1", "HWR_LEAK_GRACE_S": "2",
           "COLUMNS": "1000", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rE", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    errors = [line for line in out.splitlines() if line.startswith("ERROR ")]
    return proc.returncode, out, {line.split(" ")[1].split(" - ")[0]: line for line in errors}


def test_each_leak_fails_the_test_that_made_it(tmp_path):
    files = {"test_leaky.py": LEAKY, "test_child.py": CHILD, "test_server.py": SERVER, "test_ray.py": RAY}
    code, out, by_test = run_tree(tmp_path, files)
    assert code == 1, out[-3000:]
    errors = list(by_test.values())

    assert "test_leaky.py::test_clean" not in " ".join(by_test)  # clean: no error
    assert "'forgotten-worker'" in by_test["test_leaky.py::test_thread_left_running"]
    assert "child processes" in by_test["test_child.py::test_child_left_running"]
    assert "sleep 8" in by_test["test_child.py::test_child_left_running"]
    assert "listening sockets 127.0.0.1:" in by_test["test_server.py::test_uses_a_server"]
    assert "started Ray in its body" in by_test["test_ray.py::test_ray_left_up"]
    assert "run Ray drivers in a subprocess" in by_test["test_ray.py::test_ray_left_up"]
    assert len(errors) == 4, out[-3000:]
    assert "5 passed, 4 errors" in out or "5 passed, 4 error" in out, out[-3000:]


@LINUX_THREADS
def test_ray_started_in_the_pytest_process_at_all_fails_the_test_that_started_it(tmp_path):
    """Even where Ray is shut down again: in a module fixture (is_initialized() seen between phases), or in
    a body whose Ray leaves only its native threads; the session's end then finds those threads too."""
    files = {"native.py": NATIVE, "test_fixture.py": RAY_FIXTURE, "test_shut_down.py": RAY_SHUT_DOWN,
             "test_clean.py": "def test_clean():\n    pass\n"}
    code, out, by_test = run_tree(tmp_path, files)
    assert code == 1, out[-3000:]
    fixture = by_test["test_fixture.py::test_in_a_fixtures_ray"]
    assert "started Ray in its fixtures' setup, in the pytest process" in fixture
    assert "run Ray drivers in a subprocess" in fixture
    shut_down = by_test["test_shut_down.py::test_ray_started_and_shut_down"]
    assert "started Ray in its body, in the pytest process" in shut_down
    assert "test_clean.py::test_clean" not in by_test and len(by_test) == 2, out[-3000:]
    assert "3 passed, 2 errors" in out, out[-3000:]
    assert "native threads of Ray or gRPC alive in the pytest process at its end (gcs_client_io_s)" in out


@LINUX_THREADS
def test_ray_threads_alive_at_the_sessions_end_fail_a_run_whose_tests_all_passed(tmp_path):
    """Native Ray threads from before the first test (here: the conftest's import) are nobody's test, yet
    would run into the interpreter's exit: the run fails (exit 1), saying why."""
    code, out, by_test = run_tree(tmp_path, {"native.py": NATIVE, "test_clean.py": "def test_clean():\n    pass\n"},
                                  conftest="from native import ray_like_thread\nray_like_thread()\n")
    assert code == 1 and "1 passed" in out and not by_test, out[-3000:]
    assert "native threads of Ray or gRPC alive in the pytest process at its end (gcs_client_io_s)" in out
    assert "run Ray drivers in a subprocess" in out
