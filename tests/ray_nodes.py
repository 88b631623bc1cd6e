"""Ray nodes started as users start them, for the cluster tests: `ray start --block` subprocesses on 127.0.0.1,
each with its own temp dir and fixed free ports (so that no two clusters on this machine meet, and no raylet
waits on an agent to publish its port), stopped with everything they started."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
# `ray start`, patient: Ray gives a new raylet 30 s to register with the GCS (ray/_private/node.py, a constant),
# which a machine whose cores are busy with a study at a higher priority does not always meet; this waits
# up to START_WAIT_S for the registration instead (the node is the same once registered).
START_WAIT_S = 600
PATIENT_RAY = f"""
import sys, time
import ray._private.services as services
_get, _until = services.get_node, []
def get_node(gcs_address, node_id):
    _until or _until.append(time.monotonic() + {START_WAIT_S})
    while True:
        try:
            return _get(gcs_address, node_id)
        except RuntimeError:
            if time.monotonic() > _until[0]:
                raise
            time.sleep(1)
services.get_node = get_node
from ray.scripts.scripts import main
sys.exit(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Token authentication, as README's cluster set-up has it: one token for this test process's clusters, given
# to the nodes and the drivers in RAY_AUTH_TOKEN (so that ~/.ray/auth_token, whoever wrote it, plays no part).
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


class Node:
    """One `ray start --block` (a raylet and its agents; its workers are its children); `stop()` ends them.

    Node("head", tmp, env, cpus=2, head=True) or Node("worker", tmp, env, address=head.address)."""

    def __init__(self, name: str, tmp: Path, env: dict[str, str], *, cpus: int = 1, head: bool = False,
                 address: str | None = None, object_store_bytes: int = 300_000_000) -> None:
        self.name, self.log = name, tmp / f"{name}.log"
        self.temp = Path("/tmp") / f"ray-{name}-{os.getpid()}-{free_port()}"  # Ray wants a short socket path
        self.address = f"127.0.0.1:{free_port()}" if head else address
        role = (["--head", f"--port={self.address.split(':')[1]}", "--include-dashboard=false",
                 f"--dashboard-port={free_port()}", f"--ray-client-server-port={free_port()}"]
                if head else [f"--address={address}"])
        ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                 f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
                 "--min-worker-port=0", "--max-worker-port=0"]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", PATIENT_RAY, "start", "--block", *role, *ports, f"--num-cpus={cpus}", "--num-gpus=0",
                 "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp}", f"--object-store-memory={object_store_bytes}",
                 "--disable-usage-stats"],
                env={**env, **AUTH}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def started(self) -> bool:
        return "Ray runtime started" in self.log.read_text()

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def raylet(self) -> psutil.Process:
        return next(p for p in self.descendants() if p.name() == "raylet")

    def stop(self) -> None:
        left = self.descendants()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its node's processes
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        left += self.descendants()
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(left, timeout=30)
        shutil.rmtree(self.temp, ignore_errors=True)
