"""Where a study stands, from its experiment's storage alone: `hwr-study status EXPERIMENT [--watch]`.

It works while the driver runs and after it died, on a local folder or an s3://, gs:// URI, and reads only
what the experiment holds (and the driver's lock or lease beside it, study.lease): Tune's newest `experiment_state-*.json` (the trials, their statuses and configs),
each trial's `result.json` (a line cut short is skipped, as `study.experiment` does) and `study.yaml`.

- Per arm (activation+normalization) and specification (the other grid axes but the seed): trials done
  (reported their last epoch), running, pending (not started, or stopped and to be continued by
  `hwr-study run` again), errored; epochs done of those planned.
- Time so far (first trial's start to now, or to the last report once no driver runs), and the rest
  estimated from the seconds per epoch seen so far, the epochs left and the trials run at once so far.
- The verdict so far, per specification: for each seed whose two compared arms (`analysis.faster_arm`
  minus `analysis.slower_arm`) both finished, the difference of the default primary measure, the
  validation error area (1 - val_acc, trapezoid over the fractional epochs, per epoch of the planned
  budget: `study.analysis.speed.area_per_epoch`, as the report computes it); lower is faster. Its
  interval is Lai's t-mixture confidence sequence (`study.analysis.sequential`: anytime-valid, it may be
  looked at after every seed without inflating errors; unbounded until 5 seeds are in).

`StatusCallback` prints the same summary into the driver's log every few minutes while `hwr-study run` runs.
"""

from __future__ import annotations

import fnmatch
import json
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.fs
import ray.tune

from hwr.config import ConfigError
from study.analysis.params import AnalysisParams
from study.experiment import parse_results, read_study_doc
from study.lease import driver_state
from study.seeds import adaptive_of, planned_trials
from study.specs import SPEC_KEY
from study.state import EXPERIMENT_STATE, LAST_KEY, StateError, _read, fs_and_path
from study.storage import join, name_of, shown

from study.analysis.sequential import confidence_sequence
from study.analysis.speed import area_per_epoch

ARM_KEYS = ("model.activation", "model.normalization")
NOT_SPEC = {*ARM_KEYS, "train.seed"}  # the other search axes make a trial's specification
BOUND = 1.0  # a difference of two mean errors lies in [-1, 1]


@dataclass
class TrialStatus:
    trial_id: str
    arm: str            # e.g. selu+none
    spec: str           # e.g. "lr=0.001", or "-" when the grid has no other axis
    seed: Any
    state: str          # done, running, pending, errored
    epochs_done: float
    epochs_planned: int
    seconds: float      # Tune's time_total_s at the last report
    measure: float | None  # validation error area per epoch of the budget (done trials only)
    config: dict = field(repr=False, default_factory=dict)


@dataclass
class Verdict:
    spec: str
    seeds: list
    diffs: list[float]
    low: float
    high: float
    missing: list[str] = field(default_factory=list)  # compared arms this specification has no trial of

    @property
    def mean(self) -> float:
        return float(np.mean(self.diffs))


@dataclass
class StudyStatus:
    path: str
    name: str
    driver: str                  # running, not running (study.lease: the lock or lease), unknown (unreadable)
    trials: list[TrialStatus]
    planned: int                 # trials the grid holds
    elapsed_s: float
    remaining_s: float | None
    parallel: float              # trials run at once, on average so far
    verdicts: list[Verdict]
    faster: str
    slower: str
    confidence: float
    notes: list[str] = field(default_factory=list)

    def count(self, key: str = "arm") -> dict[tuple, dict[str, float]]:
        """{(arm, spec) or (arm,): {done, running, pending, errored, epochs_done, epochs_planned}}."""
        out: dict[tuple, dict[str, float]] = {}
        for t in self.trials:
            k = (t.arm, t.spec) if key == "arm+spec" else (t.arm,)
            row = out.setdefault(k, dict.fromkeys(STATES + ("epochs_done", "epochs_planned"), 0))
            row[t.state] += 1
            row["epochs_done"] += t.epochs_done
            row["epochs_planned"] += t.epochs_planned
        return out

    @property
    def ended(self) -> bool:
        """Every trial of the grid done or errored."""
        return len(self.trials) >= self.planned and all(t.state in ("done", "errored") for t in self.trials)


STATES = ("done", "running", "pending", "errored")


# ----------------------------------------------------------------------------------------- reading


def _experiment_state(fs: pyarrow.fs.FileSystem, p: str, shown: str) -> dict | None:
    """The newest experiment state, or None when Tune has written none yet. Tune rewrites it in place
    now and then: a read that catches it half-written is tried again."""
    try:
        names = [i.base_name for i in fs.get_file_info(pyarrow.fs.FileSelector(p, allow_not_found=True))]
    except OSError:
        names = []
    matching = fnmatch.filter(names, EXPERIMENT_STATE)
    if not matching:
        return None
    newest = max(matching)
    for attempt in range(5):
        try:
            return json.loads(_read(fs, f"{p}/{newest}"))
        except (OSError, ValueError):
            time.sleep(0.2 * (attempt + 1))
    raise StateError(f"{shown}/{newest} cannot be read as Tune's experiment state (damaged, or not Tune's).")


def _flat(config: dict) -> dict:
    return {k: v for section in ("data", "model", "train") for k, v in (config.get(section) or {}).items()}


def _spec_keys(doc: dict) -> list[str]:
    keys = [k for axis, v in (doc.get("search") or {}).items() if isinstance(v, list) for k in axis.split(",")]
    return [k.split(".", 1)[1] for k in keys if k not in NOT_SPEC]  # leaf names: hwr's are unique


def _spec_of(config: dict, flat: dict, spec_keys: list[str]) -> str:
    """A trial's specification as status shows it: the name its config carries (a `specifications:` study)
    and the other search axes it sets, or "-" when there is one specification."""
    named = [str(config[SPEC_KEY])] if config.get(SPEC_KEY) is not None else []
    return ", ".join(named + [f"{leaf}={flat.get(leaf)}" for leaf in spec_keys]) or "-"


def _records(fs, file: str, cut: list[str]) -> list[dict]:
    try:
        text = _read(fs, file).decode("utf-8", errors="replace")
    except (FileNotFoundError, OSError):
        return []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = parse_results(text, file)
    cut += [str(w.message) for w in caught]
    last: dict[Any, dict] = {}  # a trial resumed from a checkpoint repeats evaluations: keep the last of each
    for r in rows:
        if "epoch" in r:
            last[r.get("step", r["epoch"])] = r
    return list(last.values())


def _state(tune_status: str, rows: list[dict], driver: str) -> str:
    if any(LAST_KEY in r for r in rows):
        return "done"
    if tune_status == "ERROR":
        return "errored"
    if driver == "not running":  # Tune continues these when the study is run again
        return "pending"
    if tune_status == "RUNNING" or (rows and tune_status in ("PENDING", "PAUSED", "TERMINATED")):
        return "running"  # the state file lags behind result.json, and Tune's memory a little too
    return "pending"


def read_status(path: str, *, live: dict[str, str] | None = None, driver: str | None = None) -> StudyStatus:
    """The status of the experiment at `path`. `live` maps trial ids to statuses Tune holds in memory (the
    driver's callback passes them; they are newer than the state file); `driver` overrides the lock check."""
    doc = read_study_doc(path)  # ConfigError: not an hwr-study experiment
    try:
        params = AnalysisParams.from_dict(doc.get("analysis") or {})
    except ValueError as e:
        raise ConfigError(f"{e} (in {shown(join(path, 'study.yaml'))})") from None
    driver = driver or ("running" if live is not None else driver_state(path))
    fs, p = fs_and_path(path)
    state = _experiment_state(fs, p, path)
    spec_keys = _spec_keys(doc)
    trials, cut, firsts, lasts = [], [], [], []
    for trial_json, _meta in (state or {}).get("trial_data", []):
        t = json.loads(trial_json)
        cfg = t.get("config") or {}
        flat = _flat(cfg)
        rows = _records(fs, f"{p}/{t['relative_logdir']}/result.json", cut)
        status = (live or {}).get(t["trial_id"], t.get("status", "PENDING"))
        st = _state(status, rows, driver)
        curve = {r.get("step", r.get("epoch")): r for r in rows  # the last record of each step (resumes repeat)
                 if isinstance(r.get("val_acc"), (int, float)) and isinstance(r.get("epoch"), (int, float))}
        x = np.array([r["epoch"] for r in curve.values()], dtype=float)
        errors = 1 - np.nan_to_num(np.array([r["val_acc"] for r in curve.values()], dtype=float))  # diverged: 1
        budget = float(flat.get("epochs", 0) or 0)
        if rows:
            firsts.append(rows[0].get("timestamp", 0) - rows[0].get("time_total_s", 0))
            lasts.append(rows[-1].get("timestamp", 0))
        trials.append(TrialStatus(
            trial_id=t["trial_id"], arm=f"{flat.get('activation')}+{flat.get('normalization')}",
            spec=_spec_of(cfg, flat, spec_keys),
            seed=flat.get("seed"), state=st, epochs_done=float(rows[-1]["epoch"]) if rows else 0.0,
            epochs_planned=int(flat.get("epochs", 0) or 0),
            seconds=float(rows[-1].get("time_total_s", 0)) if rows else 0.0,
            measure=area_per_epoch(x, errors, budget) if st == "done" and len(x) else None, config=flat))
    planned = max(len(trials), planned_trials(doc))  # adaptive seeds: at least the first `min` seeds
    end = time.time() if driver != "not running" else max(lasts, default=0)
    elapsed = max(0.0, end - min(firsts)) if firsts else 0.0
    compute = sum(t.seconds for t in trials)
    parallel = max(1.0, compute / elapsed) if elapsed > 0 else 1.0
    done_epochs = sum(t.epochs_done for t in trials)
    left = sum(max(0.0, t.epochs_planned - t.epochs_done) for t in trials if t.state in ("running", "pending"))
    left += (planned - len(trials)) * (trials[0].epochs_planned if trials else 0)
    remaining = left * compute / done_epochs / parallel if done_epochs > 0 else None
    notes = [f"{len(cut)} result.json file(s) with a line cut short (skipped): {cut[0]}"] if cut else []
    if (adaptive := adaptive_of(doc)) is not None:
        notes.append(f"adaptive seeds: {adaptive.min} to {adaptive.max} per specification; planned counts the fewest")
    if state is None:
        notes.append("Tune has written no experiment state yet: no trial has started.")
    return StudyStatus(
        path=path, name=doc.get("name") or name_of(path), driver=driver, trials=trials, planned=planned,
        elapsed_s=elapsed, remaining_s=remaining, parallel=parallel,
        verdicts=verdicts(trials, params), faster=_label(params.faster_arm), slower=_label(params.slower_arm),
        confidence=params.confidence, notes=notes)


def _label(arm: dict) -> str:
    return "+".join(str(v) for v in arm.values())


def _matches(config: dict, arm: dict) -> bool:
    return all(str(config.get(k)) == str(v) for k, v in arm.items())


def verdicts(trials: list[TrialStatus], params: AnalysisParams) -> list[Verdict]:
    """Per specification: the per-seed differences (claimed-faster minus claimed-slower arm) of the mean
    validation error of the seeds where both arms finished, and their anytime-valid interval."""
    out = []
    alpha = 1 - params.confidence
    for spec in dict.fromkeys(t.spec for t in trials):
        missing = [_label(arm) for arm in (params.faster_arm, params.slower_arm)
                   if not any(t.spec == spec and _matches(t.config, arm) for t in trials)]
        here = [t for t in trials if t.spec == spec and t.measure is not None]
        fast = {str(t.seed): t.measure for t in here if _matches(t.config, params.faster_arm)}
        slow = {str(t.seed): t.measure for t in here if _matches(t.config, params.slower_arm)}
        seeds = sorted(set(fast) & set(slow), key=lambda s: (len(s), s))
        if not seeds:
            out.append(Verdict(spec, [], [], -BOUND, BOUND, missing))
            continue
        diffs = [fast[s] - slow[s] for s in seeds]
        low, high = _bounds(confidence_sequence(np.asarray(diffs), alpha=alpha))  # Lai's t-mixture
        out.append(Verdict(spec, seeds, diffs, low, high))
    return out


def _bounds(result: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
    """The confidence sequence's interval now: the last of its per-seed (low, high)."""
    low, high = result
    return float(low[-1]), float(high[-1])


# ----------------------------------------------------------------------------------------- showing


def duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 3600:
        return f"{s} s" if s < 60 else f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def render(st: StudyStatus) -> str:
    """The summary as text: a headline, a table per arm and specification, the time, the verdict so far."""
    totals = {s: sum(t.state == s for t in st.trials) for s in STATES}
    totals["pending"] += st.planned - len(st.trials)
    done_ep = sum(t.epochs_done for t in st.trials)
    plan_ep = sum(t.epochs_planned for t in st.trials)
    where = {"running": "the driver is running", "not running": "no driver is running",
             "unknown": "whether a driver runs is not known (its lease cannot be read)"}[st.driver]
    phase = "finished" if st.ended else ("stopped" if st.driver == "not running" else "in progress")
    lines = [f"Study {st.name}: {phase} ({where}); {shown(st.path)}",
             f"trials: {st.planned} planned, " + ", ".join(f"{totals[s]} {s}" for s in STATES)
             + f"; epochs: {done_ep:g} of {plan_ep:g} done"]
    if phase == "stopped" and totals["pending"]:
        lines.append("  the pending trials continue (from their checkpoints) when `hwr-study run` is run again")
    rest = ("" if st.ended else "; the rest: " + (f"about {duration(st.remaining_s)} at {st.parallel:.1f} trials "
            "at once" if st.remaining_s is not None else "not known yet (no epoch done)"))
    lines.append(f"time so far: {duration(st.elapsed_s)}" + rest)
    width = max([len(t.arm) for t in st.trials] + [3])
    spec_w = max([len(t.spec) for t in st.trials] + [13])
    lines.append(f"  {'arm':<{width}}  {'specification':<{spec_w}}  " + "  ".join(f"{s:>7}" for s in STATES)
                 + "     epochs")
    for (arm, spec), row in sorted(st.count("arm+spec").items()):
        lines.append(f"  {arm:<{width}}  {spec:<{spec_w}}  " + "  ".join(f"{int(row[s]):>7}" for s in STATES)
                     + f"  {row['epochs_done']:>5g}/{row['epochs_planned']:g}")
    lines.append(f"verdict so far: validation error area, {st.faster} minus {st.slower}, "
                 f"per seed both finished; {st.confidence:.0%} anytime-valid interval:")
    for v in st.verdicts:
        head = f"  {v.spec}: " if len(st.verdicts) > 1 or v.spec != "-" else "  "
        if v.missing:
            lines.append(head + f"no verdict: the grid has no {' and no '.join(v.missing)} trial "
                         "(analysis.faster_arm, analysis.slower_arm in study.yaml)")
            continue
        if not v.diffs:
            lines.append(head + "no seed with both arms finished yet")
            continue
        if v.high < 0:
            word = f"{st.faster} faster (the interval lies below 0)"
        elif v.low > 0:
            word = f"{st.slower} faster (the interval lies above 0)"
        else:
            word = "not decided yet (the interval holds 0)"
        lines.append(head + f"{len(v.diffs)} seed(s), mean difference {v.mean:+.4f}, interval "
                     f"[{v.low:+.4f}, {v.high:+.4f}]: {word}")
    lines += [f"note: {n}" for n in st.notes]
    return "\n".join(lines)


def watch(path: str, every_s: float, out=None) -> None:
    """Print the status every `every_s` seconds until the study ends (or, locally, its driver stops)."""
    import sys

    out = out or sys.stdout
    while True:
        st = read_status(path)
        if out.isatty():
            out.write("\033[H\033[2J")  # clear the terminal, as `watch` does
        print(render(st), file=out, flush=True)
        if st.ended or st.driver == "not running":
            return
        time.sleep(every_s)


class StatusCallback(ray.tune.Callback):
    """Prints `hwr-study status` of the experiment into the driver's log every `every_s` seconds while it
    runs (at the end of a Tune step, so never mid-report), and once when the experiment ends.

        RunConfig(callbacks=[..., StatusCallback(experiment_path(study), every_s=300)])

    The trials' statuses come from Tune's memory (newer than its state file). A summary that cannot be
    read is one line saying so: the study itself never fails for it."""

    def __init__(self, experiment: str, every_s: float = 300.0) -> None:
        self.experiment = experiment
        self.every_s = float(every_s)
        self._last: float | None = None

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        now = time.monotonic()
        if self._last is None:
            self._last = now
        elif now - self._last >= self.every_s:
            self._last = now
            self.show(trials)

    def on_experiment_end(self, trials: list, **info) -> None:
        self.show(trials)

    def show(self, trials: list) -> None:
        try:
            text = render(read_status(self.experiment, live={t.trial_id: t.status for t in trials}))
        except Exception as e:  # noqa: BLE001 - a status line must never stop the study
            text = f"hwr-study status: could not read {self.experiment} ({type(e).__name__}: {e})"
        print(text, flush=True)


__all__ = ["StatusCallback", "StudyStatus", "TrialStatus", "Verdict", "read_status", "render", "verdicts", "watch"]
