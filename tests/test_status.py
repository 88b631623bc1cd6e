"""`hwr-study status`: counts per arm and specification, time, and the verdict so far, from storage alone.

- hand-made experiment folders (no Ray, milliseconds): a dead driver's RUNNING trial is pending, a line cut
  short is skipped, errored trials count, and the verdict pairs seeds of the two compared arms;
- a finished tiny study (the session's `finished_study`): the same per-arm counts as its report's trials.csv;
- a tiny study while it runs (its trials held by HWR_TEST_PAUSE_FILE): per-arm counts with trials running,
  an interval printed, then `--watch` until it ends.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from study.analysis.params import AnalysisParams
from study.cli import main
from study.lease import Lease
from study.status import StatusCallback, TrialStatus, _bounds, confidence_sequence, read_status, verdicts
from study_helpers import write_study

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^  (\S+)\s+(.+?)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)/(\d+)$")


def table(out: str) -> dict[tuple[str, str], dict[str, int]]:
    """The printed table: {(arm, specification): {done, running, pending, errored}}."""
    rows = {}
    for line in out.splitlines():
        if m := ROW.match(line):
            rows[(m[1], m[2])] = dict(zip(("done", "running", "pending", "errored"), map(int, m.groups()[2:6])))
    return rows


# ------------------------------------------------------------------------------------- hand-made folders


def fake_experiment(root: Path, trials: list[dict], search: dict | None = None) -> Path:
    """An experiment folder as Tune and `hwr-study run` leave it: study.yaml, experiment_state-*.json, and a
    result.json per trial ({"status", "activation", "normalization", "seed", "rows": [record, ...]})."""
    exp = root / "fake"
    exp.mkdir(parents=True)
    search = search or {"model.activation": ["relu", "selu"], "model.normalization": ["none", "per_image"],
                        "train.seed": [0, 1]}
    (exp / "study.yaml").write_text(yaml.safe_dump({"name": "fake", "search": search, "analysis": {}}))
    data = []
    for i, t in enumerate(trials):
        config = {"model": {"activation": t["activation"], "normalization": t["normalization"]},
                  "train": {"seed": t["seed"], "epochs": 2}}
        logdir = f"train_trial_x_{i:05d}"
        (exp / logdir).mkdir()
        (exp / logdir / "result.json").write_text("".join(
            r if isinstance(r, str) else json.dumps(r) + "\n" for r in t.get("rows", [])))
        state = {"trial_id": f"x_{i:05d}", "status": t["status"], "config": config, "relative_logdir": logdir}
        data.append([json.dumps(state), "{}"])
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": data}))
    return exp


def rec(epoch: int, val_acc: float, *, last: bool = False, t: float = 10.0) -> dict:
    r = {"epoch": epoch, "val_acc": val_acc, "timestamp": 1000 + t * epoch, "time_total_s": t * epoch}
    return {**r, "best_epoch": epoch} if last else r


def arm(a: str, n: str, seed: int, status: str, rows: list) -> dict:
    return {"activation": a, "normalization": n, "seed": seed, "status": status, "rows": rows}


def test_a_dead_drivers_trials_and_a_cut_line(tmp_path, capsys):
    exp = fake_experiment(tmp_path, [
        arm("selu", "none", 0, "TERMINATED", [rec(1, 0.5), rec(2, 0.7, last=True)]),
        arm("relu", "per_image", 0, "TERMINATED", [rec(1, 0.3), rec(2, 0.5, last=True)]),
        arm("selu", "none", 1, "RUNNING", [rec(1, 0.4), '{"epoch": 2, "val_a']),  # the driver died mid-write
        arm("relu", "per_image", 1, "ERROR", [rec(1, 0.1)]),
        arm("relu", "none", 0, "TERMINATED", [rec(1, 0.2)]),  # stopped by Ctrl-C: no last report
    ])
    assert main(["status", str(exp)]) == 0
    out = capsys.readouterr().out
    assert table(out) == {
        ("relu+none", "-"): {"done": 0, "running": 0, "pending": 1, "errored": 0},
        ("relu+per_image", "-"): {"done": 1, "running": 0, "pending": 0, "errored": 1},
        ("selu+none", "-"): {"done": 1, "running": 0, "pending": 1, "errored": 0},
    }
    assert "8 planned, 2 done, 0 running, 5 pending, 1 errored; epochs: 7 of 10 done" in out
    assert "stopped (no driver is running)" in out and "continue (from their checkpoints)" in out
    assert "line cut short" in out
    # one seed pair: selu+none errs 0.4 on average, relu+per_image 0.6: -0.2
    assert re.search(r"1 seed\(s\), mean difference -0\.2000, interval \[", out), out
    st = read_status(str(exp))
    assert st.elapsed_s == pytest.approx(20) and not st.ended  # first start (t=1000) to the last report (1020)
    # 8 epochs left (1 + 1 of the two unfinished trials, 3 x 2 of the trials not in the state file yet), at
    # 70 compute-seconds per 7 epochs; 70 s of compute in 20 s of wall time: 3.5 trials at once
    assert st.parallel == pytest.approx(3.5) and st.remaining_s == pytest.approx(8 * 10 / 3.5)


def test_while_a_driver_runs_and_by_uri(tmp_path, capsys):
    exp = fake_experiment(tmp_path, [
        arm("selu", "none", 0, "TERMINATED", [rec(1, 0.5)]),  # its last report not in result.json yet
        arm("relu", "per_image", 0, "PENDING", [rec(1, 0.3)]),  # the state file lags behind result.json
        arm("relu", "per_image", 1, "PENDING", []),
    ])
    assert [t.state for t in read_status(str(exp), driver="running").trials] == ["running", "running", "pending"]
    with Lease(f"file://{exp}"):  # storage by URI, through pyarrow.fs: a driver holds its lease (study.lease)
        assert main(["status", f"file://{exp}"]) == 0
    out = capsys.readouterr().out
    assert "the driver is running" in out and "2 running" in out and "file://" in out.splitlines()[0]
    assert main(["status", f"file://{exp}"]) == 0  # the lease given back: no driver
    assert "no driver is running" in capsys.readouterr().out


def test_watch_refreshes_until_ctrl_c(tmp_path):
    exp = fake_experiment(tmp_path, [arm("selu", "none", 0, "RUNNING", [rec(1, 0.5)])])
    log = tmp_path / "watch.log"
    lease = Lease(f"file://{exp}").__enter__()  # by URI: a live driver's lease, so it watches on
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "study", "status", f"file://{exp}", "--watch", "0.2"],
                                cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                # Ctrl-C as a terminal gives it, even where this run was started with SIGINT
                                # ignored (a shell's `cmd &` without job control), which a child inherits
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300  # a busy machine: the CLI's start alone can take a minute
        while log.read_text().count("Study fake:") < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert log.read_text().count("Study fake:") >= 2, log.read_text()[-2000:]  # refreshed
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        lease.__exit__(None, None, None)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert text.rstrip().endswith("hwr-study: interrupted.") and "Traceback" not in text


def test_not_an_experiment_is_one_sentence(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hwr-study: error: ") and "not an hwr-study experiment" in err and "Traceback" not in err
    assert main(["status", str(tmp_path), "--watch", "0"]) == 2


def test_the_verdict_pairs_seeds_within_each_specification():
    params = AnalysisParams()
    rng = np.random.default_rng(0)
    trials, expected = [], {}
    for spec in ("lr=0.1", "lr=0.01"):
        for seed in range(6):
            f, s = rng.uniform(0.2, 0.5), rng.uniform(0.5, 0.9)
            expected.setdefault(spec, []).append(f - s)
            trials += [TrialStatus(f"{spec}{seed}f", "selu+none", spec, seed, "done", 2, 2, 1, f,
                                   {"activation": "selu", "normalization": "none", "seed": seed}),
                       TrialStatus(f"{spec}{seed}s", "relu+per_image", spec, seed, "done", 2, 2, 1, s,
                                   {"activation": "relu", "normalization": "per_image", "seed": seed})]
    trials.append(TrialStatus("lone", "selu+none", "lr=0.1", 9, "done", 2, 2, 1, 0.1,
                              {"activation": "selu", "normalization": "none", "seed": 9}))  # no partner
    got = {v.spec: v for v in verdicts(trials, params)}
    assert not got["lr=0.1"].missing
    only_slow = [t for t in trials if t.arm == "relu+per_image"]
    assert verdicts(only_slow, params)[0].missing == ["selu+none"]
    for spec, diffs in expected.items():
        assert got[spec].diffs == pytest.approx(diffs)
        low, high = _bounds(confidence_sequence(np.array(diffs), alpha=0.05))
        assert (got[spec].low, got[spec].high) == pytest.approx((low, high))
        assert -1 <= low <= np.mean(diffs) <= high <= 1


def test_the_interval_narrows_with_seeds_and_excludes_a_clear_effect():
    diffs = np.random.default_rng(0).normal(-0.5, 0.3, 500)  # a clear effect, seed-to-seed noise

    def interval(n):
        return _bounds(confidence_sequence(diffs[:n], alpha=0.05))

    widths = [interval(n)[1] - interval(n)[0] for n in (6, 50, 500)]
    assert widths[0] > widths[1] > widths[2] > 0
    assert interval(500)[1] < 0 and interval(500)[0] < -0.45
    assert math.isinf(interval(2)[1])  # Lai's t-mixture: unbounded while too few seeds are in


# ------------------------------------------------------------------------------------- a finished study


@pytest.mark.slow
def test_a_finished_study_shows_the_reports_counts(finished_study, capsys):
    experiment, report = finished_study
    assert main(["status", str(experiment)]) == 0
    out = capsys.readouterr().out
    trials = pd.read_csv(report / "trials.csv")
    shown = table(out)
    assert len(shown) == 4 and "finished" in out.splitlines()[0]
    for (a, n), group in trials.groupby(["activation", "normalization"]):
        row = shown[(f"{a}+{n}", "-")]
        assert row["done"] == (group.status == "TERMINATED").sum() and row["errored"] == (group.status == "ERROR").sum()
        assert row["running"] == row["pending"] == 0
    epochs = {k: v for k, v in read_status(str(experiment)).count().items()}
    for (a, n), group in trials.groupby(["activation", "normalization"]):
        assert epochs[(f"{a}+{n}",)]["epochs_done"] == group.epochs_run.sum()
    assert "2 seed(s), mean difference" in out
    assert main(["status", str(experiment), "--watch", "1"]) == 0  # ended: one summary, then back
    assert capsys.readouterr().out.count("Study finished") == 1


# ------------------------------------------------------------------------------------- a running study


def held_study(tmp_path: Path) -> Path:
    """The two compared arms, 2 seeds, and a specification axis train.epochs [1, 3]; half a CPU a trial,
    so that the first four trials (seed 0 of both specifications) run at once on any machine of 2 cores."""
    config = write_study(tmp_path, "held", resources={"cpu": 0.5})
    doc = yaml.safe_load(config.read_text())
    doc["search"] = {"model.activation,model.normalization": [["selu", "none"], ["relu", "per_image"]],
                     "train.epochs": [1, 3], "train.seed": [0, 1]}
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    return config


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        if proc.poll() is not None:
            pytest.fail(f"the study exited ({proc.returncode}) before {what}: {log.read_text()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.timeout(1200)  # --watch returns only when the study ends: a hung study fails here, not forever
def test_a_running_study_shows_running_trials_and_an_interval_then_watch_to_its_end(tmp_path, capsys):
    config = held_study(tmp_path)
    experiment = tmp_path / "ray" / "held"
    pause = tmp_path / "pause"  # trials wait after each epoch (their last one too) while it exists
    pause.touch()
    log = tmp_path / "driver.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HWR_TEST_PAUSE_FILE": str(pause)}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "study", "run", str(config), "--no-analyze"], cwd=ROOT,
                                env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)

    def held():  # the 1-epoch pair of seed 0 done, a 3-epoch trial reported and waiting
        if not (experiment / "study.yaml").exists():
            return None
        rows = read_status(str(experiment)).count("arm+spec")
        done = all(rows.get((a, "epochs=1"), {}).get("done", 0) >= 1 for a in ("selu+none", "relu+per_image"))
        return done and sum(rows.get((a, "epochs=3"), {}).get("running", 0) for a in ("selu+none", "relu+per_image"))

    try:
        wait_for(held, 420, "seed 0 of the 1-epoch specification done and a 3-epoch trial running", proc, log)
        assert main(["status", str(experiment)]) == 0
        out = capsys.readouterr().out
        shown = table(out)
        assert "in progress (the driver is running)" in out
        for a in ("selu+none", "relu+per_image"):
            assert shown[(a, "epochs=3")]["done"] == 0  # held after their first of 3 epochs
            assert sum(shown[(a, s)][k] for s in ("epochs=1", "epochs=3") for k in ("done", "running", "pending")) == 4
        assert sum(shown[(a, "epochs=3")]["running"] for a in ("selu+none", "relu+per_image")) >= 1
        # the anytime-valid interval is unbounded until 5 seeds are in (Lai's t-mixture)
        assert re.search(r"epochs=1: \d seed\(s\), mean difference [+-]\d\.\d{4}, interval \[([+-]\d\.\d{4}|-inf), "
                         r"([+-]\d\.\d{4}|\+inf)\]", out), out
        assert "epochs=3: no seed with both arms finished yet" in out
        assert re.search(r"the rest: about .+ at [\d.]+ trials at once", out), out
        # a report written mid-study is partial: the trials it counts, the anytime interval, no fixed-n verdict
        assert main(["analyze", str(experiment), "--out", str(tmp_path / "partial")]) == 0
        assert "partial: " in capsys.readouterr().out
        mid = json.loads((tmp_path / "partial" / "summary.json").read_text())
        assert mid["partial"]["planned"] == 8 and mid["partial"]["ended"] < mid["partial"]["started"] <= 8
        assert mid["verdict"]["label"] == "partial"
        assert mid["multiverse"] is None or mid["multiverse"]["label"] == "partial"  # one spec analysable yet
        assert {e["verdict"]["label"] for e in mid["specifications"]} == {"partial"}
        verdicts = re.findall(r"\*\*Verdict: ([a-z ]+)", (tmp_path / "partial" / "report.md").read_text())
        assert verdicts and set(verdicts) == {"partial"}, verdicts
        pause.unlink()
        assert main(["status", str(experiment), "--watch", "1"]) == 0  # refreshes until the study ends
        watched = capsys.readouterr().out
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert watched.count("Study held:") >= 2
    final = read_status(str(experiment))
    assert final.ended and {t.state for t in final.trials} == {"done"} and len(final.trials) == 8
    assert all(v.diffs and len(v.diffs) == 2 for v in final.verdicts)
    assert main(["analyze", str(experiment), "--out", str(tmp_path / "final")]) == 0  # ended: a whole report
    whole = json.loads((tmp_path / "final" / "summary.json").read_text())
    assert "partial" not in whole and whole["verdict"]["label"] != "partial"


def test_the_callback_prints_on_its_time_gate(tmp_path, capsys, monkeypatch):
    exp = fake_experiment(tmp_path, [arm("selu", "none", 0, "PENDING", [])])
    clock = iter([0.0, 10.0, 301.0, 302.0])
    monkeypatch.setattr("study.status.time.monotonic", lambda: next(clock))

    class Trial:
        trial_id, status = "x_00000", "RUNNING"

    cb = StatusCallback(str(exp), every_s=300)
    for _ in range(4):
        cb.on_step_end(iteration=0, trials=[Trial()])
    out = capsys.readouterr().out
    assert out.count("Study fake:") == 1 and "1 running" in out  # at 301 s only; Tune's own status is used
    cb.on_experiment_end(trials=[Trial()])
    assert "Study fake:" in capsys.readouterr().out
    broken = StatusCallback(str(tmp_path / "nowhere"))
    broken.show([])
    assert "could not read" in capsys.readouterr().out
    assert math.isclose(StatusCallback(str(exp), every_s=60).every_s, 60)


def test_a_named_specification_is_the_trials_specification_in_status():
    """A `specifications:` study's trials carry their specification's name in the Tune config (no search
    axis says it): status counts and judges them per name, with any other search axis beside it."""
    from study.status import _flat, _spec_of

    cfg = {"model": {"activation": "selu", "dropout": 0.5}, "train": {"lr": 1e-3}, "specification": "dropout"}
    assert _spec_of(cfg, _flat(cfg), []) == "dropout"
    assert _spec_of(cfg, _flat(cfg), ["lr"]) == "dropout, lr=0.001"
    plain = {k: v for k, v in cfg.items() if k != "specification"}
    assert _spec_of(plain, _flat(plain), ["dropout"]) == "dropout=0.5"
    assert _spec_of(plain, _flat(plain), []) == "-"
