"""Storage paths and URIs (study.storage) and one driver per experiment in object storage (study.lease), on
file:// URIs through pyarrow.fs (milliseconds; the same code as on S3: tests/test_object_storage.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from study import lease as lease_mod
from study.lease import Lease, driver_state, lock, lock_file, read_lease
from study.state import StateError
from study.storage import StorageError, join, name_of, open_fs, shown, split

Q = "s3://hwr/exp?endpoint_override=127.0.0.1:9000&scheme=http"


def test_paths_are_joined_before_the_query_string():
    assert join(Q, "quick") == "s3://hwr/exp/quick?endpoint_override=127.0.0.1:9000&scheme=http"
    assert join("s3://hwr/exp/", "quick", "study.yaml") == "s3://hwr/exp/quick/study.yaml"
    assert join("/data/ray", "quick") == "/data/ray/quick" and join("results/ray/", "x") == "results/ray/x"
    assert split(join(Q, "quick")) == (Q, "quick") and name_of(join(Q, "quick")) == "quick"
    assert split("/a/b/c") == ("/a/b", "c")
    assert shown("s3://KEY:SECRET@hwr/exp") == "s3://hwr/exp" and shown("/a:b@c") == "/a:b@c"


def test_open_fs_gives_the_bucket_path_and_refuses_a_bad_uri_in_one_sentence(tmp_path):
    fs, path = open_fs(join(Q, "quick"))
    assert type(fs).__name__ == "S3FileSystem" and path == "hwr/exp/quick"
    assert open_fs(f"file://{tmp_path}")[1] == str(tmp_path)
    for bad, why in ((Q.replace("scheme", "shceme"), "Unexpected query parameter"),
                     ("foo://x/y", "Unrecognized filesystem type"), ("s3://", "no bucket")):
        with pytest.raises(StorageError) as e:
            open_fs(bad)
        message = str(e.value)
        assert why in message and message.count(". ") == 0 and message.endswith("AWS_ENDPOINT_URL."), message


def test_a_lease_refuses_a_second_driver_and_is_given_back(tmp_path):
    uri = f"file://{tmp_path}/ray/exp"
    with lock(uri):
        record = read_lease(uri)
        assert record["pid"] > 0 and lease_mod.live(record) and driver_state(uri) == "running"
        assert lock_file(uri)[1] == f"{tmp_path}/ray/.exp.lock"  # beside the experiment, as the local lock
        with pytest.raises(StateError, match=r"is being run by another hwr-study \(pid \d+ on .+, its lease "
                                             r"renewed \d+ s ago\); wait for it to end"):
            with lock(uri):
                pass
    assert read_lease(uri) is None and driver_state(uri) == "not running"


def test_a_lease_is_renewed_while_held_and_taken_over_when_expired(tmp_path, monkeypatch, capsys):
    uri = f"file://{tmp_path}/exp"
    monkeypatch.setattr(lease_mod, "SETTLE_S", 0.0)
    with Lease(uri, lease_s=0.3):
        first = read_lease(uri)["renewed"]
        deadline = time.monotonic() + 30
        while read_lease(uri)["renewed"] == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read_lease(uri)["renewed"] > first  # renewed every lease_s / 3
    # a driver on another machine that stopped renewing 2 minutes ago, with a 60 s lease: expired
    fs, file = lock_file(uri)
    stale = {"owner": "x", "host": "elsewhere", "pid": 1, "machine": "other", "renewed": time.time() - 120,
             "lease_s": 60}
    with fs.open_output_stream(file) as f:
        f.write(json.dumps(stale).encode())
    assert driver_state(uri) == "not running"
    with lock(uri):
        assert read_lease(uri)["owner"] != "x"
    assert "taking over the expired lease" in capsys.readouterr().err
    # renewed 5 s ago on another machine: live, refused
    with fs.open_output_stream(file) as f:
        f.write(json.dumps({**stale, "renewed": time.time() - 5}).encode())
    assert driver_state(uri) == "running"
    with pytest.raises(StateError, match=r"\(if that driver died, its lease expires in 5[45] s\)\."):
        with lock(uri):
            pass


def test_the_lease_of_a_dead_process_on_this_machine_is_taken_over_at_once(tmp_path):
    uri = f"file://{tmp_path}/exp"
    code = (f"import os; from study.lease import Lease; Lease({uri!r}).__enter__(); os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)  # exits holding it (as by kill -9)
    record = read_lease(uri)
    assert record is not None and time.time() - record["renewed"] < 300
    assert lease_mod.owner_alive(record) is False and driver_state(uri) == "not running"
    with lock(uri):
        assert read_lease(uri)["pid"] != record["pid"]
