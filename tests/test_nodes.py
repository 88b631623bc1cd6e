"""A cluster as users run one: a head and a worker node (two `ray start --block` raylets of one CPU each on
this machine, each with its own HWR_CACHE_DIR, the worker's empty) and `hwr-study run` connecting to it
with RAY_ADDRESS.

The study uses a named base (`model.weights: glyphs-small`, built with the test recipe: HWR_TEST_TINY_BASE,
the same code path as the real one, seconds instead of minutes) and checkpoints every epoch. Once a trial on
the worker node has written its checkpoint, the worker's raylet is killed -9: the study finishes on the
head, every trial once, the trial from the dead node resumed from its checkpoint (at most the epoch in
flight repeated). The base was built once, by the driver, and reached the worker through the object store
(the worker computed a frozen feature set from it; its cache holds no base), and every trial's numbers
equal a run of the same config in one process. About 5 minutes on 2 busy cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hwr import bases
from hwr.config import config_from_dict
from hwr.train import fit, load_data
from ray_nodes import AUTH, BIN, Node
from study_helpers import record, results, trial_dirs, wait_for, write_study

pytestmark = [pytest.mark.slow, pytest.mark.faults]
ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4






@pytest.fixture(scope="module")
def node_died(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nodes")
    caches = {"head": tmp / "head-cache", "worker": tmp / "worker-cache"}
    for c in caches.values():
        c.mkdir()
    pause = tmp / "pause"  # trials wait after each epoch while it exists (HWR_TEST_PAUSE_FILE)
    pause.touch()
    base_env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0", "HWR_TEST_TINY_BASE": "1",
                "HWR_TEST_PAUSE_FILE": str(pause), "PATH": f"{BIN}:{os.environ['PATH']}",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), **AUTH}
    base_env.pop("RAY_ADDRESS", None)
    config = write_study(tmp, "nodes", seeds=(0,), normalizations=("none", "per_image"), epochs=EPOCHS,
                         model={"weights": "glyphs-small", "trainable_from": "none"},
                         run={"checkpoint_every": 1, "checkpoint_seconds": 0, "max_failures": 2})
    out = {"tmp": tmp, "caches": caches, "experiment": tmp / "ray" / "nodes"}
    nodes: list[Node] = []
    driver = None
    try:
        head = Node("head", tmp, {**base_env, "HWR_CACHE_DIR": str(caches["head"])}, head=True)
        nodes.append(head)
        wait_for(head.started, 900, "the head node", head.proc)
        worker = Node("worker", tmp, {**base_env, "HWR_CACHE_DIR": str(caches["worker"])}, address=head.address)
        nodes.append(worker)
        wait_for(worker.started, 900, "the worker node", worker.proc)
        with open(tmp / "driver.log", "w") as log:
            driver = subprocess.Popen([sys.executable, "-m", "study", "run", str(config)], cwd=ROOT,
                                      env={**base_env, "HWR_CACHE_DIR": str(caches["head"]),
                                           "RAY_ADDRESS": head.address},
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def on_worker():  # a trial of the worker node past its first epoch, its checkpoint in storage
            pids = {p.pid for p in worker.descendants()}
            for d in trial_dirs(out["experiment"]) if out["experiment"].exists() else []:
                rows = results(d)
                if rows and rows[-1]["pid"] in pids and list(d.glob("checkpoint_*/checkpoint.pt")):
                    return d, rows
            return None

        trial, rows = wait_for(on_worker, 900, "a checkpointed trial on the worker node", driver, head.proc)
        out["trial"], out["before"] = trial, rows
        raylet = worker.raylet()
        pause.unlink()  # the trials go on: the worker's is in its next epoch when its node dies
        raylet.send_signal(signal.SIGKILL)
        out["rc"] = driver.wait(timeout=1800)
        out["worker_exit"] = worker.proc.wait(timeout=120)  # `ray start --block` ends with its raylet
    finally:
        if driver is not None and driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        for node in reversed(nodes):
            node.stop()
    out["log"] = (tmp / "driver.log").read_text()
    return out


def uninterrupted(config: dict, monkeypatch, cache: Path):
    """The same trial run start to end in this process (one node, no Ray), on the base the study built."""
    monkeypatch.setitem(bases.RECIPES, "glyphs-small", bases.TINY_RECIPE)
    monkeypatch.setenv("HWR_CACHE_DIR", str(cache))
    cfg = config_from_dict(config)
    return fit(cfg, load_data(cfg.data, progress=False))


def test_a_worker_node_killed_mid_trial_the_study_ends_on_the_head(node_died, monkeypatch, record_property):
    k = node_died
    assert k["rc"] == 0, k["log"][-4000:]
    dirs = trial_dirs(k["experiment"])
    assert len(dirs) == 4
    for d in dirs:  # every trial's history complete
        assert sorted({r["epoch"] for r in results(d)}) == list(range(1, EPOCHS + 1)), d.name
    table = pd.read_csv(k["tmp"] / "results" / "nodes" / "trials.csv")
    assert len(table) == 4 and table.trial_id.is_unique and (table.status == "TERMINATED").all()
    rows = results(k["trial"])
    dead_node = k["before"][-1]["node_id"]
    moved = [i for i, r in enumerate(rows) if r["node_id"] != dead_node]
    assert moved and all(r["node_id"] == dead_node for r in rows[:moved[0]]), "the trial did not move"
    epochs = [r["epoch"] for r in rows]
    last_on_dead = epochs[moved[0] - 1]
    assert 1 < epochs[moved[0]] <= last_on_dead + 1  # resumed from its checkpoint, not from epoch 1
    repeated = len(rows) - len(set(epochs))
    assert repeated <= 1  # at most the epoch in flight
    ref = uninterrupted(rows[0]["config"], monkeypatch, k["caches"]["head"])
    last = {r["epoch"]: r for r in rows}
    for h in ref.history:  # and it ends as if never interrupted
        assert last[h["epoch"]]["val_loss"] == pytest.approx(h["val_loss"], rel=1e-5), h["epoch"]
    assert last[EPOCHS]["test_acc"] == pytest.approx(ref.test_acc, abs=1e-9)
    sizes = [f.stat().st_size for d in dirs for f in d.glob("checkpoint_*/checkpoint.pt")]
    record(record_property, "kill -9 of a worker node's raylet (head + worker, `ray start`), its trial mid-epoch "
           f"{last_on_dead + 1:g} with a checkpoint after epoch {last_on_dead:g}",
           f"the driver logged the trial as errored (ActorUnavailableError) and Tune retried it on the head "
           f"{rows[moved[0]]['timestamp'] - rows[moved[0] - 1]['timestamp']:.0f} s after its last report there, "
           "from its checkpoint (run.max_failures); the study finished on the "
           "head (exit 0), 4 trials once each; the resumed trial's metrics equal an uninterrupted run "
           f"(checkpoints every epoch: {max(sizes) / 1e6:.1f} MB each, 32 px frozen head with Adam)",
           f"the epoch in flight ({repeated} reported epoch repeated)")


def test_a_named_base_is_built_once_and_reaches_every_node(node_died, monkeypatch, record_property):
    k = node_died
    assert k["rc"] == 0, k["log"][-4000:]
    head, worker = k["caches"]["head"], k["caches"]["worker"]
    assert len(list((head / "bases").glob("glyphs-small-*.json"))) == 1  # built once, by the driver
    assert k["log"].count("Pretraining the 'glyphs-small' conv base once") == 1
    assert not (worker / "bases").exists() or not list((worker / "bases").iterdir())  # never on the worker
    assert list((worker / "features").glob("*.npy")), "no frozen set was computed on the worker node"
    before = {r["node_id"] for r in k["before"]}
    nodes = {r["node_id"] for d in trial_dirs(k["experiment"]) for r in results(d)}
    assert len(nodes) == 2 and before < nodes  # trials ran on both nodes
    for d in trial_dirs(k["experiment"]):  # the same numbers as one node
        rows = results(d)
        ref = uninterrupted(rows[0]["config"], monkeypatch, head)
        last = {r["epoch"]: r for r in rows}
        for h in ref.history:
            for key in ("train_loss", "val_loss", "val_acc"):
                assert last[h["epoch"]][key] == pytest.approx(h[key], rel=1e-5), (d.name, h["epoch"], key)
        assert last[EPOCHS]["test_acc"] == pytest.approx(ref.test_acc, abs=1e-9)
    record(record_property, "a worker node with an empty HWR_CACHE_DIR in a study on `model.weights: glyphs-small`",
           "the base built once (by the driver; 1 sidecar in the head's cache, none in the worker's) and shipped "
           "through the object store: the worker computed a frozen set from it; every trial's metrics equal a "
           "one-process run", "nothing")
