"""A study in object storage: `run.storage_path: s3://...` on a self-hosted S3 (moto_server on 127.0.0.1).

On a Ray head node started with `ray start` (as users run a cluster; `hwr-study` joins it with RAY_ADDRESS),
the quick synthetic study is run into a bucket with the endpoint in the URI's query string (pyarrow's form),
a second driver is refused while the first holds the experiment's lease, the first driver is killed -9
mid-study and the same command resumes it (nothing finished re-run, every trial once); `hwr-study analyze`
and `status` read it from the bucket, a damaged state file there is refused naming it, a bad URI is one
sentence and exit 2; `hwr-study lr-search` runs with the endpoint in the AWS variables instead.
Each case records its (fault, outcome, lost) for docs/reliability.md. About 15 minutes on 2 busy cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs
import pytest
import yaml
from ray.tune import ExperimentAnalysis

from ray_nodes import AUTH, BIN, Node, free_port
from study_helpers import record, wait_for, write_study

pytestmark = [pytest.mark.slow, pytest.mark.faults]
ROOT = Path(__file__).resolve().parents[1]
BUCKET = "hwr"
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true"}
EPOCHS, SEEDS = 4, (0, 1, 2, 3)
TRIALS = 2 * len(SEEDS)


def env(**extra) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**base, **KEYS, **AUTH, "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), **extra}






def study_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "study", *args]


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The refusal of a command that must fail with exit 2 and one sentence, no traceback."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("hwr-study: error: "), proc.stderr[-3000:]
    return line.removeprefix("hwr-study: error: ")


class Bucket:
    """The test's own view of the bucket (pyarrow, explicit keys): what the drivers wrote."""

    def __init__(self, port: int) -> None:
        self.fs = pyarrow.fs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                                          access_key="testing", secret_key="testing", allow_bucket_creation=True)

    def trials(self, experiment: str) -> dict[str, list[dict]]:
        """{trial folder: its result.json records} of the experiment at `experiment` (bucket/prefix)."""
        try:
            infos = self.fs.get_file_info(pyarrow.fs.FileSelector(experiment, allow_not_found=True))
        except OSError:
            return {}
        out = {}
        for info in infos:
            if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("train_trial"):
                out[info.base_name] = [json.loads(line) for line in self.read(f"{info.path}/result.json").splitlines()
                                       if line.strip()]
        return out

    def read(self, path: str) -> str:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read().decode()
        except (FileNotFoundError, OSError):
            return ""

    def finished(self, experiment: str) -> dict[str, bytes]:
        """{trial folder: result.json} of the trials the bucket's newest experiment state holds as finished
        (what a resumed driver keeps), with their last epoch in result.json."""
        try:
            names = [i.base_name for i in self.fs.get_file_info(pyarrow.fs.FileSelector(experiment))]
        except OSError:
            return {}
        states = sorted(n for n in names if n.startswith("experiment_state-"))
        try:
            state = json.loads(self.read(f"{experiment}/{states[-1]}")) if states else {}
        except ValueError:  # caught while Tune rewrote it
            return {}
        done = {json.loads(t)["relative_logdir"] for t, _ in state.get("trial_data", [])
                if json.loads(t)["status"] == "TERMINATED"}
        return {name: self.read(f"{experiment}/{name}/result.json").encode()
                for name, rows in self.trials(experiment).items()
                if name in done and [r["epoch"] for r in rows][-1:] == [EPOCHS]}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto_server on 127.0.0.1 (a free port) with the bucket `hwr`; stopped when the module ends."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)

    def answers():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    bucket = None
    try:
        wait_for(answers, 180, "moto_server to listen", proc)
        bucket = Bucket(port)
        bucket.fs.create_dir(BUCKET)
        yield port, bucket
    finally:
        del bucket
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node of 2 CPUs; its trials wait after each epoch while `pause` exists (HWR_TEST_PAUSE_FILE).
    The nodes get the keys but not the endpoint: trials write through the filesystem Tune ships them."""
    tmp = tmp_path_factory.mktemp("s3-cluster")
    pause = tmp / "pause"
    head = Node("head", tmp, env(HWR_TEST_PAUSE_FILE=str(pause), PATH=f"{BIN}:{os.environ['PATH']}"), cpus=2,
                head=True)
    try:
        wait_for(head.started, 900, "the head node", head.proc)
        yield head.address, pause
    finally:
        head.stop()


def uri(port: int, prefix: str) -> str:
    return f"s3://{BUCKET}/{prefix}?endpoint_override=127.0.0.1:{port}&scheme=http"


@pytest.fixture(scope="module")
def killed_driver(s3, cluster, tmp_path_factory):
    """The quick study into the bucket (endpoint in the URI): a second driver while the first runs, the first
    killed -9 once some trials finished, then the same command again."""
    port, bucket = s3
    address, pause = cluster
    tmp = tmp_path_factory.mktemp("s3-study")
    config = write_study(tmp, "s3q", seeds=SEEDS, epochs=EPOCHS,
                         run={"storage_path": uri(port, "exp"), "checkpoint_seconds": 0})
    experiment = f"{BUCKET}/exp/s3q"
    cmd = study_cmd("run", str(config))
    pause.touch()  # the trials wait after each epoch while it exists
    out = {"tmp": tmp, "config": config, "experiment": experiment, "cmd": cmd, "uri": uri(port, "exp/s3q"),
           "env": env(RAY_ADDRESS=address)}
    log = open(tmp / "first.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=out["env"], start_new_session=True, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: any(bucket.trials(experiment).values()), 600, "the first epoch in the bucket", proc)
        t0 = time.monotonic()  # the first driver certainly runs (its trials wait): a second one now
        out["second"] = subprocess.run(cmd, cwd=ROOT, env=out["env"], capture_output=True, text=True, timeout=600)
        out["second_s"] = time.monotonic() - t0
        pause.unlink()
        wait_for(lambda: len(bucket.finished(experiment)) >= 2, 900, "two finished trials in the bucket", proc)
        pause.touch()  # hold the rest after their epoch in flight, so that the kill finds the study unfinished
        os.killpg(proc.pid, signal.SIGKILL)  # the driver (Ray then ends its job's trials)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    out["finished"] = bucket.finished(experiment)
    out["reported_at_kill"] = sum(len(r) for r in bucket.trials(experiment).values())
    # What a killed driver can leave on object storage: its saved state names a checkpoint that Tune deleted
    # since (it keeps run.keep_checkpoints newer ones, and the state reaches the bucket seconds later). Made
    # certain here for one unfinished trial: the resume must put a checkpoint back, not fail on it.
    trials = ExperimentAnalysis(experiment, storage_filesystem=bucket.fs).trials
    lost = next(t for t in trials if t.status != "TERMINATED" and t.checkpoint is not None)
    if bucket.fs.get_file_info(lost.checkpoint.path).type != pyarrow.fs.FileType.NotFound:
        bucket.fs.delete_dir(lost.checkpoint.path)
    out["lost"] = (lost.trial_id, Path(lost.path).name)
    pause.unlink()
    t0 = time.monotonic()
    out["rerun"] = subprocess.run(cmd, cwd=ROOT, env=out["env"], capture_output=True, text=True, timeout=1800)
    out["rerun_s"] = time.monotonic() - t0
    return out


def test_a_second_driver_is_refused_while_the_lease_is_held(killed_driver, record_property):
    line = one_error_line(killed_driver["second"])
    assert "is being run by another hwr-study (pid" in line and "lease renewed" in line, line
    assert killed_driver["second_s"] < 120  # before Ray starts
    record(record_property, "a second `hwr-study run` on an experiment in S3 (s3://…?endpoint_override=…) while "
           "the first runs", "exit 2 before Ray starts: " + line.replace(killed_driver["uri"], "s3://…/s3q")
           + " (a lease object beside the experiment, renewed every 20 s)", "nothing (the first run went on)")


def test_kill_9_of_the_driver_of_an_s3_study_then_the_same_command(killed_driver, s3, record_property):
    _, bucket = s3
    k = killed_driver
    rerun = k["rerun"]
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "Resuming" in rerun.stdout and "taking over the expired lease" in rerun.stderr
    lost_id, lost_dir = k["lost"]
    repaired = next(line for line in rerun.stdout.splitlines() if line.startswith(f"Trial {lost_id}: its checkpoint"))
    assert 2 <= len(k["finished"]) < TRIALS
    trials = bucket.trials(k["experiment"])
    assert len(trials) == TRIALS
    for name, rows in trials.items():  # every history complete (an epoch after the newest checkpoint repeats)
        assert sorted({r["epoch"] for r in rows}) == list(range(1, EPOCHS + 1)), name
    for name, content in k["finished"].items():  # finished trials were kept, not re-run
        assert bucket.read(f"{k['experiment']}/{name}/result.json").encode() == content, f"{name} was re-run"
    report = k["tmp"] / "results" / "s3q"
    table = pd.read_csv(report / "trials.csv")
    assert len(table) == TRIALS and table.trial_id.is_unique and (table.status == "TERMINATED").all()
    epochs = pd.read_csv(report / "epochs.csv")
    assert epochs.groupby("trial_id").epoch.apply(list).tolist() == [list(range(1, EPOCHS + 1))] * TRIALS
    # the others (those whose recorded checkpoint Tune itself had deleted were repaired, saying so: left out)
    fixed = {line.split()[1].rstrip(":") for line in rerun.stdout.splitlines() if " its checkpoint " in line}
    others = {name: rows for name, rows in trials.items() if not any(f"_{i}_" in name for i in fixed)}
    repeated = sum(len(rows) for rows in others.values()) - len(others) * EPOCHS
    assert repeated <= len(others) - len(k["finished"])  # at most the epoch in flight of each unfinished one
    lost_repeated = len(trials[lost_dir]) - EPOCHS
    assert bucket.read(f"{BUCKET}/exp/.s3q.lock") == ""  # the lease given back at the end
    assert sorted({r["epoch"] for r in trials[lost_dir]}) == list(range(1, EPOCHS + 1))
    record(record_property, "the killed driver's state in the bucket names a checkpoint Tune had deleted since "
           "(made certain: deleted by the test)", "the same command put a checkpoint back in its place before "
           "Tune resumed: " + repaired.split(": ", 1)[1] + " The trial finished, its history whole",
           f"the epochs since the checkpoint put back ({lost_repeated} reported epoch(s) repeated)")
    record(record_property, "kill -9 of the driver of a study in S3 (two trials finished), then the same command",
           f"the lease of the dead driver taken over at once (its pid gone from this machine); resumed from the "
           f"bucket: the {len(k['finished'])} finished trials kept byte for byte, {TRIALS} trials, each once, in "
           f"trials.csv ({len(fixed) - 1} other trial(s) whose recorded checkpoint Tune had deleted given one "
           f"back); {k['rerun_s']:.0f} s to the end, report included",
           f"the epochs in flight ({repeated} reported epoch(s) repeated)")


def test_analyze_and_status_read_the_experiment_from_the_bucket(killed_driver, s3, tmp_path, record_property):
    _, bucket = s3
    k = killed_driver
    analyze = subprocess.run(study_cmd("analyze", k["uri"], "--out", str(tmp_path / "report")), cwd=ROOT, env=env(),
                             capture_output=True, text=True, timeout=900)
    assert analyze.returncode == 0, analyze.stderr[-3000:]
    assert (tmp_path / "report" / "report.html").exists()
    assert len(pd.read_csv(tmp_path / "report" / "trials.csv")) == TRIALS
    status = subprocess.run(study_cmd("status", k["uri"]), cwd=ROOT, env=env(), capture_output=True, text=True,
                            timeout=600)
    assert status.returncode == 0, status.stderr[-3000:]
    head = status.stdout.splitlines()
    assert head[0].startswith("Study s3q: finished (no driver is running); s3://hwr/exp/s3q?"), status.stdout
    assert f"trials: {TRIALS} planned, {TRIALS} done, 0 running, 0 pending, 0 errored" in head[1], status.stdout
    # a damaged state file in the bucket: refused before anything is read into a report, naming it
    states = sorted(i.base_name for i in bucket.fs.get_file_info(pyarrow.fs.FileSelector(k["experiment"]))
                    if i.base_name.startswith("experiment_state-"))
    damaged = f"{k['experiment']}/experiment_state-2999-01-01_00-00-00.json"  # the newest by name: Tune's choice
    with bucket.fs.open_output_stream(damaged) as f:
        f.write(bucket.read(f"{k['experiment']}/{states[-1]}").encode()[:100])
    try:
        refused = subprocess.run(study_cmd("analyze", k["uri"], "--out", str(tmp_path / "report")), cwd=ROOT,
                                 env=env(), capture_output=True, text=True, timeout=600)
    finally:
        bucket.fs.delete_file(damaged)
    line = one_error_line(refused)
    assert "/exp/s3q/experiment_state-2999-01-01_00-00-00.json?endpoint_override=" in line, line  # its URI
    assert "is damaged (JSONDecodeError: truncated or not Tune's)" in line, line
    record(record_property, "`hwr-study analyze` and `status` on the S3 experiment",
           f"the report from the bucket ({TRIALS} trials) and the status line '{head[0].split(';')[0]}'",
           "nothing")
    record(record_property, "a truncated experiment_state in the bucket", "exit 2 from `hwr-study analyze` (and "
           "`run`), read through pyarrow before Ray starts: " + line.replace(k["uri"], "s3://…/s3q"),
           "the experiment, if the user starts over with --fresh")


def test_a_bad_storage_uri_is_one_sentence_and_exit_2(killed_driver, s3, record_property):
    port, _ = s3
    bad = uri(port, "exp").replace("scheme=", "shceme=")
    proc = subprocess.run(study_cmd("run", str(killed_driver["config"]), "--set", f"run.storage_path={bad}"),
                          cwd=ROOT, env=killed_driver["env"], capture_output=True, text=True, timeout=600)
    line = one_error_line(proc)
    assert "cannot be opened (Unexpected query parameter in S3 URI: 'shceme')" in line, line
    assert line.count(". ") == 0 and line.endswith(".")  # one sentence
    record(record_property, "a misspelt option in an s3:// storage_path (`shceme=http`)", "exit 2 before Ray "
           "starts: " + line.replace(f"127.0.0.1:{port}", "HOST:PORT"), "nothing")


def test_lr_search_in_s3_with_the_endpoint_in_the_aws_variables(s3, cluster, tmp_path, record_property):
    port, bucket = s3
    config = write_study(tmp_path, "s3lr", seeds=(0,), epochs=2,
                         run={"storage_path": f"s3://{BUCKET}/env", "results_dir": str(tmp_path / "results")},
                         optuna={"trials_per_arm": 2, "seeds": [100], "early_stopping": False})
    t0 = time.monotonic()
    proc = subprocess.run(study_cmd("lr-search", str(config)), cwd=ROOT, capture_output=True, text=True,
                          env=env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", RAY_ADDRESS=cluster[0]), timeout=1800)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = yaml.safe_load((tmp_path / "results" / "s3lr" / "best_lr.yaml").read_text())
    assert [(a["activation"], len(a["trials"])) for a in doc["arms"]] == [("relu", 2), ("selu", 2)]
    for arm in ("relu-per_image", "selu-per_image"):
        trials = bucket.trials(f"{BUCKET}/env/s3lr-{arm}")
        assert len(trials) == 2 and all([r["epoch"] for r in rows] == [1, 2] for rows in trials.values())
        assert arm in next(a["experiment"] for a in doc["arms"] if arm.startswith(a["activation"]))
    record(record_property, "`hwr-study lr-search` into s3://hwr/env with the endpoint in AWS_ENDPOINT_URL",
           f"2 arms x 2 trials searched and recorded in the bucket, best_lr.yaml written ({seconds:.0f} s)",
           "nothing")
