"""The leak guard (tests/leaks.py) on a small test tree of its own: each kind of leak fails the test that
made it, by name, and a clean test passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

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


def test_each_leak_fails_the_test_that_made_it(tmp_path):
    (tmp_path / "conftest.py").write_text(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
                                          "from leaks import pytest_configure\n")
    for name, body in {"leaky": LEAKY, "child": CHILD, "server": SERVER, "ray": RAY}.items():
        (tmp_path / f"test_{name}.py").write_text(body)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HWR_LEAK_GUARD": "1", "HWR_LEAK_GRACE_S": "2", "COLUMNS": "1000", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rE", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("ERROR ")]
    by_test = {line.split(" ")[1].split(" - ")[0]: line for line in errors}

    assert "test_leaky.py::test_clean" not in " ".join(by_test)  # clean: no error
    assert "'forgotten-worker'" in by_test["test_leaky.py::test_thread_left_running"]
    assert "child processes" in by_test["test_child.py::test_child_left_running"]
    assert "sleep 8" in by_test["test_child.py::test_child_left_running"]
    assert "listening sockets 127.0.0.1:" in by_test["test_server.py::test_uses_a_server"]
    assert "started Ray in its body" in by_test["test_ray.py::test_ray_left_up"]
    assert len(errors) == 4, out[-3000:]
    assert "5 passed, 4 errors" in out or "5 passed, 4 error" in out, out[-3000:]
