"""Killed and interrupted processes: the real `hwr-study` commands in real processes, and what survives.

- kill -9 of a trial worker mid-epoch (its pid from the trial's own result rows, which Tune fills in);
- kill -9 of the driver a third of the way through, then the same command again; meanwhile a second
  driver on the same experiment, which must be refused;
- kill -9 of `hwr-study analyze` while it writes the report;
- Ctrl-C (SIGINT to the driver's process group, as a terminal sends it), with a damaged tuner.pkl on top,
  then the same command again.

Every case checks that nothing is lost but the epoch in flight: finished trials are kept byte for byte,
each trial appears once, and its metrics equal an uninterrupted run of the same seed (`hwr.train.fit` in
this process; a trial and a plain run of one config give the same numbers on the CPU). Each test records
its fault, outcome and loss (`record_property`) for docs/reliability.md (`python -m benchmarks.faults`).
Tiny configs (the synthetic set at 32 px, a few epochs): about 4 minutes on 2 idle cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from hwr.config import config_from_dict
from hwr.train import fit, load_data
from study_helpers import epochs_of, record, results, trial_dirs, tune_finished, wait_for, write_study

pytestmark = [pytest.mark.slow, pytest.mark.faults]
ROOT = Path(__file__).resolve().parents[1]


def env(**extra) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0", **extra}


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    """A driver in its own process group (as a shell runs a command), its output in `log`."""
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env(), start_new_session=True, stdout=out,
                                stderr=subprocess.STDOUT)




def workers_end(session: int, timeout: float = 60) -> float | None:
    """Seconds until no trial worker (`ray::ImplicitFunc`) of the driver's session runs any more, or None.
    Then ends what is left of the session: Ray's dashboard and runtime-env agents outlive a killed driver by a
    minute or so, writing nothing."""
    t0 = time.monotonic()
    ended = None
    while time.monotonic() - t0 < timeout:
        ps = subprocess.run(["ps", "-o", "args=", "--sid", str(session)], capture_output=True, text=True).stdout
        if not any(line.startswith("ray::ImplicitFunc") for line in ps.splitlines()):
            ended = time.monotonic() - t0
            break
        time.sleep(0.5)
    try:
        os.killpg(session, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return ended


def reported(experiment: Path) -> int:
    return sum(len(epochs_of(d)) for d in trial_dirs(experiment)) if experiment.exists() else 0




_DATA: dict = {}


def uninterrupted(config: dict):
    """The same trial run start to end in this process (no Ray, no interruption)."""
    cfg = config_from_dict(config)
    if cfg.data not in _DATA:
        _DATA[cfg.data] = load_data(cfg.data, progress=False)
    return fit(cfg, _DATA[cfg.data])


def assert_as_uninterrupted(trial: Path) -> int:
    """The trial's metrics per epoch (the last report of each epoch) and its final ones equal an uninterrupted
    run's; returns how many epochs it reported twice (repeated after a resume)."""
    rows = results(trial)
    last = {r["epoch"]: r for r in rows}
    whole = uninterrupted(rows[0]["config"])
    assert sorted(last) == [h["epoch"] for h in whole.history], trial.name
    for ref in whole.history:
        for key in ("train_loss", "val_loss", "val_acc"):
            assert last[ref["epoch"]][key] == pytest.approx(ref[key], rel=1e-5), (trial.name, ref["epoch"], key)
    final = last[max(last)]
    assert final["test_acc"] == pytest.approx(whole.test_acc, abs=1e-9) and final["best_epoch"] == whole.best_epoch
    return len(rows) - len(last)


# ------------------------------------------------------------------------------------- a trial worker


def test_kill_9_of_a_trial_worker_mid_epoch(tmp_path, record_property):
    config = write_study(tmp_path, "worker", seeds=(0,), epochs=6, train={"optimizer": "sgd", "lr": 0.05},
                         run={"checkpoint_seconds": 0, "max_failures": 1})
    experiment = tmp_path / "ray" / "worker"
    proc = start([sys.executable, "-m", "study", "run", str(config), "--no-analyze"], tmp_path / "driver.log")

    def running_trial():  # a trial past its second epoch and not finished: its worker is mid-epoch
        for d in trial_dirs(experiment) if experiment.exists() else []:
            rows = results(d)
            if rows and 2 <= rows[-1]["epoch"] < 6:
                return d, rows[-1]
        return None

    try:
        trial, row = wait_for(running_trial, 300, "a trial at epoch 2", proc, every=0.2)
        os.kill(row["pid"], signal.SIGKILL)  # Tune records the worker's pid in every result row
        assert proc.wait(timeout=600) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    rows = results(trial)
    assert any(r["pid"] != row["pid"] for r in rows), "the trial was not retried in another worker"
    repeated = assert_as_uninterrupted(trial)
    assert repeated <= 1  # at most the epoch in flight
    others = [d for d in trial_dirs(experiment) if d != trial]
    assert [epochs_of(d) for d in others] == [list(range(1, 7))]
    record(record_property, "kill -9 of a trial worker mid-epoch (pid from the trial's result rows)",
           f"the trial was retried from its epoch-{row['epoch']} checkpoint in a new worker and finished; "
           "its metrics equal an uninterrupted run of the same seed; the study finished (exit 0)",
           f"the epoch in flight ({repeated} reported epoch repeated)")


# ------------------------------------------------------------------------------------- the driver


@pytest.fixture(scope="module")
def killed_driver(tmp_path_factory):
    """A 6-trial study whose driver is killed (kill -9, the driver alone) a third of the way through, with a
    second driver started on the same experiment meanwhile; then the same command again, to the end."""
    tmp = tmp_path_factory.mktemp("killed-driver")
    config = write_study(tmp, "resume", seeds=(0, 1, 2), epochs=4, run={"checkpoint_seconds": 0})
    experiment = tmp / "ray" / "resume"
    cmd = [sys.executable, "-m", "study", "run", str(config)]
    out: dict = {"tmp": tmp, "experiment": experiment, "cmd": cmd}
    pause = tmp / "pause"  # the first driver's trials wait after each epoch while it exists (HWR_TEST_PAUSE_FILE)
    pause.touch()
    with open(tmp / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env(HWR_TEST_PAUSE_FILE=str(pause)), start_new_session=True,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: reported(experiment) >= 1, 300, "the first epoch", proc, every=0.2)
        t0 = time.monotonic()  # the first driver is certainly running (its trials wait): a second one now
        out["second"] = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
        out["second_s"] = time.monotonic() - t0
        pause.unlink()
        wait_for(lambda: reported(experiment) >= 8 and tune_finished(experiment), 300,
                 "a third of the epochs (8 of 24) and a trial finished in Tune's stored state", proc, every=0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        out["workers_end_s"] = workers_end(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # finished: what Tune's stored state marks TERMINATED (a complete result.json can be one upload ahead of it)
    out["finished"] = {name: (experiment / name / "result.json").read_bytes()
                       for name in tune_finished(experiment) or ()}
    out["epochs_at_kill"] = reported(experiment)
    out["rerun"] = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=900)
    return out


def test_kill_9_of_the_driver_then_the_same_command_again(killed_driver, record_property):
    k = killed_driver
    assert k["rerun"].returncode == 0, k["rerun"].stdout[-3000:] + k["rerun"].stderr[-3000:]
    assert "Resuming" in k["rerun"].stdout
    assert k["workers_end_s"] is not None, "trial workers outlived the killed driver"
    assert 1 <= len(k["finished"]) < 6
    for name, content in k["finished"].items():  # finished trials were kept, not re-run
        assert sorted(set(epochs_of(k["experiment"] / name))) == [1, 2, 3, 4], name
        assert (k["experiment"] / name / "result.json").read_bytes() == content, f"{name} was re-run"
    trials = pd.read_csv(k["tmp"] / "results" / "resume" / "trials.csv")
    assert len(trials) == 6 and trials.trial_id.is_unique and (trials.status == "TERMINATED").all()
    assert not trials.duplicated(["activation", "seed"]).any()
    epochs = pd.read_csv(k["tmp"] / "results" / "resume" / "epochs.csv")
    assert epochs.groupby("trial_id").epoch.apply(list).tolist() == [[1, 2, 3, 4]] * 6
    repeated = sum(assert_as_uninterrupted(d) for d in trial_dirs(k["experiment"]))
    by_id = trials.set_index("trial_id").test_acc
    for d in trial_dirs(k["experiment"]):  # the report holds the uninterrupted numbers
        assert by_id[results(d)[0]["trial_id"]] == pytest.approx(uninterrupted(results(d)[0]["config"]).test_acc)
    record(record_property, "kill -9 of the driver at a third of the study (8 of 24 epochs), then the same command",
           f"resumed: the {len(k['finished'])} finished trials kept byte for byte, the others continued from their "
           "checkpoints; 6 trials, each once, in trials.csv, with the metrics of uninterrupted runs; the trial "
           f"workers ended {k['workers_end_s']:.0f} s after the driver", f"the epochs in flight ({repeated} reported epoch(s) repeated)")


def test_a_second_driver_on_the_same_experiment_is_refused(killed_driver, record_property):
    second = killed_driver["second"]
    assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
    line = second.stderr.strip().splitlines()[-1]
    assert "is being run by another hwr-study (pid" in line and "Traceback" not in second.stderr
    assert killed_driver["second_s"] < 60  # before starting Ray
    record(record_property, "a second `hwr-study run` on the same experiment while the first runs",
           "exit 2 at once: " + line.split(": error: ", 1)[1].replace(str(killed_driver["tmp"]), "…")
           + " (a lock beside the experiment, released when its driver ends, even by kill -9)",
           "nothing (the first run went on)")


def test_kill_9_while_the_report_is_written(killed_driver, record_property):
    report = killed_driver["tmp"] / "results" / "resume"
    before = {p.name: p.read_bytes() for p in report.iterdir() if p.is_file()}
    cmd = [sys.executable, "-m", "study", "analyze", str(killed_driver["experiment"])]
    proc = start(cmd, killed_driver["tmp"] / "analyze.log")
    try:
        tmp = wait_for(lambda: next(report.glob(".report-tmp-*"), None), 120, "the report being written", proc,
                       every=0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert tmp.exists()  # killed mid-write: its temporary folder is left ...
    after = {p.name: p.read_bytes() for p in report.iterdir() if p.is_file()}
    assert after == before  # ... and the report in place is the previous one, whole
    again = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not list(report.glob(".report-tmp-*"))  # the next run removes what the killed one left
    assert {p.name: p.read_bytes() for p in report.iterdir() if p.is_file()} == before  # deterministic
    record(record_property, "kill -9 of `hwr-study analyze` while it writes the report",
           "the previous report stays in place, whole; the killed run's temporary folder is removed by the next "
           "analyze, which writes the same report byte for byte", "nothing")


# ------------------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_stops_cleanly_with_a_hint_then_the_same_command_resumes(tmp_path, record_property):
    config = write_study(tmp_path, "sigint", seeds=(0, 1), epochs=6, run={"checkpoint_seconds": 0})
    experiment = tmp_path / "ray" / "sigint"
    cmd = [sys.executable, "-m", "study", "run", str(config)]
    proc = start(cmd, tmp_path / "first.log")
    try:
        wait_for(lambda: reported(experiment) >= 3, 300, "three epochs", proc, every=0.2)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole foreground group
        t0 = time.monotonic()
        code = proc.wait(timeout=120)
        stop_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log = (tmp_path / "first.log").read_text()
    last = [line for line in log.splitlines() if line.startswith("hwr-study:")][-1]
    assert code == 130, log[-3000:]
    assert last.startswith("hwr-study: interrupted: run the same command again to resume"), log[-3000:]
    assert "Traceback" not in log and not (tmp_path / "results" / "sigint").exists()  # no report of half a study
    done = {d.name: (d / "result.json").read_bytes() for d in trial_dirs(experiment) if epochs_of(d)[-1:] == [6]}

    # On top, the fault of ray#58179: a truncated tuner.pkl (a driver killed while Tune wrote it) ...
    pkl = experiment / "tuner.pkl"
    pkl.write_bytes(pkl.read_bytes()[: pkl.stat().st_size // 2])
    # ... and a byte flipped in the checkpoint an unfinished trial will resume from (its last reported one;
    # a newer folder may exist, written by the worker as it was stopped, which Tune never registered).
    unfinished = next(d for d in trial_dirs(experiment) if d.name not in done and epochs_of(d))
    ckpt = unfinished / results(unfinished)[-1]["checkpoint_dir_name"] / "checkpoint.pt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) * 3 // 4] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    before = epochs_of(unfinished)

    rerun = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "tuner.pkl is damaged" in rerun.stdout and "Resuming" in rerun.stdout
    assert "starts over from its first epoch" in rerun.stdout + rerun.stderr
    assert epochs_of(unfinished) == before + list(range(1, 7))  # started over, not from the damaged checkpoint
    for name, content in done.items():
        assert (experiment / name / "result.json").read_bytes() == content
    trials = pd.read_csv(tmp_path / "results" / "sigint" / "trials.csv")
    assert len(trials) == 4 and trials.trial_id.is_unique and (trials.status == "TERMINATED").all()
    repeated = sum(assert_as_uninterrupted(d) for d in trial_dirs(experiment)) - len(before)
    record(record_property, "Ctrl-C (SIGINT to the driver's process group) mid-study",
           f"stopped in {stop_s:.0f} s, exit 130, last line: {last.removeprefix('hwr-study: ')!r}; no report of a "
           "partial study; the same command resumed it to the end", f"the epochs in flight ({repeated} repeated)")
    record(record_property, "then tuner.pkl truncated (ray#58179) before the same command",
           "tuner.pkl written again from the study's config (study.yaml); the study resumed, finished trials kept, "
           "4 trials once each", "nothing")
    record(record_property, "and a byte flipped in an unfinished trial's newest checkpoint (in storage)",
           "detected by the checkpoint's sha256 when the trial resumed; the trial started over from epoch 1, "
           "saying so, and ended with the metrics of an uninterrupted run",
           f"that trial's {len(before)} epoch(s) before the interruption")
