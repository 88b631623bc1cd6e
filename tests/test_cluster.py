"""The study as users run it: a driver killed and re-run, a trial that crashes, two nodes, `ray job submit`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from hwr.config import config_from_dict
from hwr.train import fit, load_data
from study.experiment import load_tables
from study_helpers import epochs_of, results, trial_dirs, tune_finished, write_study

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def env(**extra) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0", **extra}


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None):
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds or if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process exited ({proc.returncode}) before {what}")
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}")


def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    # a checkpoint after every epoch, so that unfinished trials have one to resume from
    config = write_study(tmp_path, "resume", seeds=(0, 1, 2), epochs=4, run={"checkpoint_seconds": 0})
    experiment = tmp_path / "ray" / "resume"
    cmd = [sys.executable, "-m", "study", "run", str(config), "--no-analyze"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def two_finished():
        done = tune_finished(experiment)
        return done if done is not None and len(done) >= 2 else None

    try:
        wait_for(two_finished, 240, "two trials finished in Tune's stored state", proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started, mid-study
        proc.wait()
    finished = tune_finished(experiment)  # read again: an upload may have landed since the poll
    assert finished is not None and 2 <= len(finished) < 6, finished
    snapshot = {name: (experiment / name / "result.json").read_bytes() for name in finished}
    for name in finished:
        assert epochs_of(experiment / name) == list(range(1, 5)), name

    rerun = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Resuming" in rerun.stdout
    dirs = trial_dirs(experiment)
    assert len(dirs) == 6
    for d in dirs:  # every history complete (an epoch reported after the newest checkpoint is repeated)
        assert sorted(set(epochs_of(d))) == list(range(1, 5)), d.name
    _, epochs = load_tables(str(experiment))
    assert epochs.groupby("trial_id").epoch.apply(list).tolist() == [[1, 2, 3, 4]] * 6  # each epoch once
    for name, content in snapshot.items():
        assert (experiment / name / "result.json").read_bytes() == content, f"{name} was re-run"


def test_a_trial_that_raises_is_retried_from_its_checkpoint_and_ends_as_if_uninterrupted(tmp_path):
    """Checkpoints every 2 epochs and a failure after epoch 3: the retry resumes after epoch 2, repeats epoch 3,
    and ends with the metrics of an uninterrupted run of the same seed. One checkpoint kept makes Tune upload the
    driver's files right after the epoch-2 checkpoint (`sync_every_n_trial_checkpoints`), so storage's result.json
    lags the driver's by epoch 3 when the trial fails: the retry's history must still have it (HistoryInStorage)."""
    config = write_study(tmp_path, "retry", seeds=(0,), epochs=4, train={"optimizer": "sgd", "lr": 0.05},
                         run={"checkpoint_every": 2, "checkpoint_seconds": 0, "keep_checkpoints": 1})
    proc = subprocess.run([sys.executable, "-m", "study", "run", str(config), "--no-analyze"], cwd=ROOT,
                          env=env(HWR_TEST_FAIL_AT_EPOCH="3"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = trial_dirs(tmp_path / "ray" / "retry")
    assert len(dirs) == 2
    data = None
    for d in dirs:
        assert (d / ".failed-once").exists(), "the injected failure did not happen"
        assert epochs_of(d) == [1, 2, 3, 3, 4]  # resumed from the epoch-2 checkpoint
        rows = results(d)
        cfg = config_from_dict(rows[0]["config"])
        data = data or load_data(cfg.data, progress=False)
        whole = fit(cfg, data)
        for row, ref in zip(rows[:3] + rows[4:], whole.history):  # the repeated epoch 3 matches too
            for key in ("train_loss", "val_loss", "val_acc"):
                assert row[key] == pytest.approx(ref[key], rel=1e-5), (d.name, row["epoch"], key)
        assert rows[3]["val_loss"] == pytest.approx(rows[2]["val_loss"], rel=1e-5)
        assert rows[-1]["test_acc"] == pytest.approx(whole.test_acc, abs=1e-9)
        assert rows[-1]["best_epoch"] == whole.best_epoch
    _, epochs = load_tables(str(tmp_path / "ray" / "retry"))
    assert epochs.groupby("trial_id").epoch.apply(list).tolist() == [[1, 2, 3, 4]] * 2


def test_a_retried_trial_keeps_the_rows_that_storage_had_not_received_yet(tmp_path):
    """Tune's loggers, as a failed trial restarts, take its result.json and progress.csv back from storage; when
    the driver's last upload was skipped (one still running: a loaded machine), storage holds fewer rows. The
    real loggers, on a trial whose stored copy has epoch 1 of the 3 the driver wrote."""
    import pyarrow.fs
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from study.loggers import HistoryInStorage

    class Trial:  # what the loggers and the callback read of a Tune Trial (hashable, as Tune's is)
        def __init__(self, name):
            local, stored = tmp_path / name / "driver", tmp_path / name / "storage"
            local.mkdir(parents=True), stored.mkdir(parents=True)
            rows = [json.dumps({"epoch": e, "val_loss": 1.0 / e}) for e in (1, 2, 3)]
            (local / "result.json").write_text("\n".join(rows) + "\n")
            (stored / "result.json").write_text(rows[0] + "\n")
            (local / "progress.csv").write_text("epoch,val_loss\n1,1.0\n2,0.5\n3,0.333\n")
            (stored / "progress.csv").write_text("epoch,val_loss\n1,1.0\n")
            self.trial_id, self.config, self.checkpoint, self.local_path = name, {}, object(), local.as_posix()
            self.storage = SimpleNamespace(trial_fs_path=stored.as_posix(),
                                           storage_filesystem=pyarrow.fs.LocalFileSystem())

        def init_local_path(self):
            pass

    def restart(trial, recover):  # Tune's controller: on_trial_recover at the failure, then the loggers' start
        if recover:
            HistoryInStorage().on_trial_recover(iteration=1, trials=[trial], trial=trial)
        json_logger, csv_logger = JsonLoggerCallback(), CSVLoggerCallback()
        json_logger.log_trial_start(trial), csv_logger._setup_trial(trial)
        json_logger.log_trial_end(trial), csv_logger.log_trial_end(trial)
        return Path(trial.local_path)

    without = restart(Trial("without"), recover=False)  # the loss this callback is for (Ray 2.60)
    assert [json.loads(line)["epoch"] for line in (without / "result.json").read_text().splitlines()] == [1]
    kept = restart(Trial("with"), recover=True)
    assert [json.loads(line)["epoch"] for line in (kept / "result.json").read_text().splitlines()] == [1, 2, 3]
    assert pd.read_csv(kept / "progress.csv").epoch.tolist() == [1, 2, 3]
    assert (tmp_path / "with" / "storage" / "result.json").read_text() == (kept / "result.json").read_text()


def test_a_finished_trial_has_its_whole_history_in_storage_before_tune_marks_it_terminated(tmp_path):
    """Tune uploads the experiment state and the trials' files in one threaded copy, in no order: a driver killed
    mid-upload could leave a state that says TERMINATED (never run again) beside a result.json without the last
    epoch. HistoryInStorage's on_trial_complete, which Tune calls before it marks the trial TERMINATED, puts the
    driver's whole files in storage first; a storage that is the driver's own folder keeps them whole."""
    import pyarrow.fs

    from study.loggers import HistoryInStorage

    rows = "".join(json.dumps({"epoch": e}) + "\n" for e in (1, 2, 3, 4))
    local, stored = tmp_path / "driver", tmp_path / "storage"
    for folder, text in ((local, rows), (stored, rows.splitlines(keepends=True)[0])):
        folder.mkdir()
        (folder / "result.json").write_text(text)
        (folder / "progress.csv").write_text("epoch\n" + "".join(f"{json.loads(r)['epoch']}\n"
                                                                 for r in text.splitlines()))

    def trial(storage: Path):
        return SimpleNamespace(trial_id="t", local_path=local.as_posix(), storage=SimpleNamespace(
            trial_fs_path=storage.as_posix(), storage_filesystem=pyarrow.fs.LocalFileSystem()))

    HistoryInStorage().on_trial_complete(iteration=1, trials=[], trial=trial(stored))
    assert (stored / "result.json").read_text() == rows
    assert pd.read_csv(stored / "progress.csv").epoch.tolist() == [1, 2, 3, 4]
    HistoryInStorage().on_trial_complete(iteration=1, trials=[], trial=trial(local))  # storage == driver's folder
    assert (local / "result.json").read_text() == rows


def test_two_nodes_share_one_experiment(tmp_path):
    """ray.cluster_utils.Cluster: two raylets of one CPU each; the four trials land on both."""
    code = f"""
import ray
from ray.cluster_utils import Cluster
from study.config import load_study
from study.run import run_study
cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1}})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address, logging_level="ERROR")
run_study(load_study({str(write_study(tmp_path, "two", seeds=(0, 1)))!r}), progress=False)
ray.shutdown()
cluster.shutdown()
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = trial_dirs(tmp_path / "ray" / "two")
    assert len(dirs) == 4
    nodes = {r["node_id"] for d in dirs for r in results(d)}
    assert len(nodes) == 2
    assert all(epochs_of(d) == [1, 2, 3] for d in dirs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def token_cluster(tmp_path):
    """A real head node on 127.0.0.1 with token auth and its own temp dir; stopped afterwards."""
    home = tmp_path / "home"
    home.mkdir()
    temp = Path("/tmp") / f"ray-{os.getpid()}-{free_port()}"  # Ray wants a short socket path
    dash = free_port()
    cluster_env = env(HOME=str(home), RAY_AUTH_MODE="token", PATH=f"{BIN}:{os.environ['PATH']}")
    token = subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=cluster_env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert token and (home / ".ray" / "auth_token").exists()
    start = subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
         "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats"],
        env=cluster_env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stderr[-3000:]
    try:
        yield f"http://127.0.0.1:{dash}", cluster_env
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=cluster_env, capture_output=True, timeout=120)
        subprocess.run(["rm", "-rf", str(temp)])


def test_ray_job_submit_runs_the_quick_study(tmp_path, token_cluster):
    address, cluster_env = token_cluster
    storage = tmp_path / "storage"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
           "python", "-m", "study", "run", "configs/quick.yaml", "--set", f"run.storage_path={storage}",
           "--set", "train.epochs=2", "--set", "train.evals_per_epoch=1", "--set", "search.train.seed=[0]", "--set", f"run.results_dir={tmp_path / 'res'}",
           # the job server is under test, not the base: a fixed random one, nothing to pretrain
           "--set", "model.weights=none", "--set", "model.base_seed=0"]

    def submitted():
        # Right after `ray start` the head's job agent may not be up yet; Ray then asks to try again later.
        proc = subprocess.run(cmd, env=cluster_env, capture_output=True, text=True, timeout=900)
        return None if "No available agent" in proc.stdout + proc.stderr else proc

    submit = wait_for(submitted, 120, "the job agent to accept the job")
    assert submit.returncode == 0, (submit.stdout + submit.stderr)[-4000:]
    assert "succeeded" in (submit.stdout + submit.stderr).lower()
    dirs = trial_dirs(storage / "quick")
    assert len(dirs) == 4 and all(epochs_of(d) == [1, 2] for d in dirs)
    trials = pd.read_csv(tmp_path / "res" / "quick" / "trials.csv")
    assert len(trials) == 4 and (trials.status == "TERMINATED").all()
    # without the token the job server refuses
    denied = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address],
                            env={**cluster_env, "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=120)
    assert denied.returncode != 0
