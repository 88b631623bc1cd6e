"""An experiment folder as `hwr-study run` finds it: whole enough to resume, and run by one driver at a time.

Asked to restore an experiment, Ray Tune fails with a traceback on a damaged `tuner.pkl`, and when it cannot
read one of its state files it logs "Failed to restore the run state" and *starts the experiment over in
the same folder*: every trial runs a second time beside the first, and the analysis sees each one twice.
A trial folder deleted by hand is silently taken as finished with no results. So, before Tune is
asked (on a local folder or in object storage alike: every read goes through pyarrow.fs):

- `resumable(path)` reads the newest of each state file Tune will read and checks that every trial that
  started still has its folder; a problem is a `StateError`: one sentence naming the file and the way out.
- `tuner_pkl_ok(path)`: whether `tuner.pkl` loads (`run_study` writes a damaged one again from the config).
- `repair_lost_checkpoints(path)`: a killed driver's experiment state can name a checkpoint Tune deleted
  since (it reaches storage a sync later than the checkpoints do: seconds on object storage); this puts a
  checkpoint the trial's history reaches back in its place, so that Tune can resume the trial at all.
- (study.lease: `lock(path)`, one driver per experiment, local or in object storage.)
- `finished(grid, expected)`: on Ctrl-C Tune stops, saves its state and *returns* as if done; this turns
  that into the KeyboardInterrupt it was, so that no report or best-lr file is made of part of a study.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import posixpath
import re
from pathlib import Path

import pyarrow.fs
import ray.cloudpickle
from ray.tune import ExperimentAnalysis, ResultGrid
from ray.tune.callback import CallbackList
from ray.tune.execution.tune_controller import TuneController
from ray.tune.search import BasicVariantGenerator, SearchGenerator, Searcher

from hwr.errors import UserError
from study.storage import StorageError, is_uri, join, open_fs, shown

LAST_KEY = "best_epoch"  # in a trial's last report only: the trial ended (see finished)

TUNER_PKL = "tuner.pkl"
EXPERIMENT_STATE = TuneController.CKPT_FILE_TMPL.format("*")
# The other state files Tune restores from (search algorithm, searcher, callbacks): pickles, newest wins.
OTHER_STATE = tuple(cls.CKPT_FILE_TMPL.format("*") for cls in (BasicVariantGenerator, SearchGenerator, Searcher,
                                                               CallbackList))
FRESH = "start over with `hwr-study run --fresh`"


STUDY_FILE = "study.yaml"  # the study's config, with every default, beside its experiment


class StateError(UserError, RuntimeError):
    """An experiment cannot be resumed or run as it is, explained in one sentence."""


class StudyError(UserError, RuntimeError):
    """The study cannot run as configured, explained in one sentence."""


class TrialsErrored(RuntimeError):
    """Trials of a study ended in an error (`run.allow_errors: true` lets a study end well all the same)."""

    def __init__(self, path: str, errors: list) -> None:
        self.path = path
        named = "; ".join(f"{_trial_name(r)}: {_first_error_line(r.error)}" for r in errors)
        super().__init__(f"{len(errors)} trial(s) of {path} errored ({named}); set run.allow_errors=true to "
                         "let such a study end with exit code 0.")


def _trial_name(result) -> str:
    return (result.metrics or {}).get("trial_id") or "_".join(Path(result.path).name.split("_")[2:4])


def _first_error_line(error: BaseException) -> str:
    """The error's own line (`SomeError: message`) from a worker's traceback, else its first line."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    own = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception)\b.*:", ln)]
    return (own[-1] if own else lines[0] if lines else type(error).__name__)[:300]


def fs_and_path(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The filesystem and path of a local path or an s3://, gs://... URI (StorageError: one pyarrow cannot open)."""
    return open_fs(uri)


def shown_path(path: str) -> str:
    """How reports and files name an experiment: a URI as it is, a local path relative to the working directory
    (the project), so that no committed file carries a machine's absolute path."""
    return shown(path) if is_uri(path) else os.path.relpath(Path(path).resolve(), Path.cwd())


def _listing(path: str) -> tuple[pyarrow.fs.FileSystem, str, dict[str, pyarrow.fs.FileInfo]]:
    fs, p = fs_and_path(path)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(p, allow_not_found=True))
    except OSError:  # not there yet, or not a folder
        infos = []
    return fs, p, {i.base_name: i for i in infos}


def _newest(entries: dict[str, pyarrow.fs.FileInfo], pattern: str) -> str | None:
    matching = fnmatch.filter(entries, pattern)
    return max(matching) if matching else None  # Tune's rule: names carry the session's start time


def _read(fs: pyarrow.fs.FileSystem, file: str) -> bytes:
    with fs.open_input_stream(file) as f:
        return f.read()


def tuner_pkl_ok(path: str) -> bool:
    """Whether the experiment's tuner.pkl exists and loads."""
    fs, p = fs_and_path(path)
    try:
        ray.cloudpickle.loads(_read(fs, f"{p}/{TUNER_PKL}"))
    except Exception:  # noqa: BLE001 - a truncated pickle raises many types
        return False
    return True


def resumable(path: str) -> bool:
    """True when the experiment at `path` has state Tune can resume from; False when it has none yet (no
    trial ran). Raises StateError, naming the file, when its state is damaged or a trial folder is missing."""
    fs, p, entries = _listing(path)
    newest = _newest(entries, EXPERIMENT_STATE)
    trial_dirs = sorted(n for n, i in entries.items() if i.type == pyarrow.fs.FileType.Directory
                        and not n.startswith("."))
    if newest is None:
        if trial_dirs:
            raise StateError(f"{shown(path)} holds {len(trial_dirs)} trial folder(s) but no {EXPERIMENT_STATE} to resume "
                             f"them from: {FRESH}.")
        return False
    try:
        json.loads(_read(fs, f"{p}/{newest}"))
    except (OSError, ValueError) as e:
        raise StateError(f"{shown(join(path, newest))} is damaged ({_why(e)}), so Tune cannot resume this experiment: "
                         f"{FRESH}.") from None
    for pattern in OTHER_STATE:
        if (name := _newest(entries, pattern)) is None:
            continue
        try:
            ray.cloudpickle.loads(_read(fs, f"{p}/{name}"))
        except Exception as e:  # noqa: BLE001 - a truncated pickle raises many types
            raise StateError(f"{shown(join(path, name))} is damaged ({_why(e)}), so Tune cannot resume this experiment: "
                             f"{FRESH}.") from None
    for trial in _trials(path):
        name = Path(trial.path).name
        if trial.status != "PENDING" and name not in entries:
            raise StateError(f"the folder {name} of trial {trial.trial_id} ({trial.status}) is missing from {shown(path)}, "
                             f"so its results are lost: put it back, or {FRESH}.")
    return True


def _trials(path: str) -> list:
    quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it warns about missing folders and result files, which callers look for
    try:
        return ExperimentAnalysis(path).trials
    finally:
        quiet.setLevel(level)


LOST_NOTE = "LOST.txt"


def repair_lost_checkpoints(path: str) -> list[str]:
    """For each trial Tune will resume whose recorded newest checkpoint is gone from storage (Tune kept only
    `run.keep_checkpoints` newer ones, written after the state it had saved), put back in its place the
    newest remaining checkpoint that the trial's result.json reaches (its history then has no gap: the epochs
    after it are run again), or, when there is none, a note in place of the checkpoint, which makes the
    trial start over from its first epoch (study.trainable). Returns one line per trial repaired."""
    fs, _ = fs_and_path(path)
    done = []
    for trial in _trials(path):
        if trial.status == "TERMINATED" or trial.checkpoint is None:
            continue
        target = trial.checkpoint.path
        folder, name = posixpath.split(target)
        if fs.get_file_info(target).type != pyarrow.fs.FileType.NotFound or \
                fs.get_file_info(folder).type != pyarrow.fs.FileType.Directory:
            continue
        rows = []
        try:
            for line in _read(fs, f"{folder}/result.json").decode(errors="replace").splitlines():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
        except OSError:
            pass
        reached = max((float(r.get("epoch", 0)) for r in rows), default=0.0)
        saved = {r["checkpoint_dir_name"]: float(r.get("epoch", 0)) for r in rows if r.get("checkpoint_dir_name")}
        usable = [(epoch, d) for d, epoch in saved.items() if d != name and epoch <= reached
                  and fs.get_file_info(f"{folder}/{d}").type == pyarrow.fs.FileType.Directory]
        if usable:
            epoch, source = max(usable)
            pyarrow.fs.copy_files(f"{folder}/{source}", target, source_filesystem=fs, destination_filesystem=fs)
            how = f"it resumes from {source} (epoch {epoch:g}) instead"
        else:
            fs.create_dir(target, recursive=True)
            with fs.open_output_stream(f"{target}/{LOST_NOTE}") as f:
                f.write(b"Put here by hwr-study: Tune deleted this checkpoint before its experiment state reached "
                        b"storage; the trial starts over.\n")
            how = "no checkpoint its history reaches is left, so it starts over from its first epoch"
        done.append(f"Trial {trial.trial_id}: its checkpoint {name} was deleted after the state a killed driver "
                    f"left was saved; {how}.")
    return done


def _why(e: Exception) -> str:
    return "it cannot be read" if isinstance(e, OSError) else f"{type(e).__name__}: truncated or not Tune's"


def finished(grid: ResultGrid, expected: int, last_key: str) -> ResultGrid:
    """`grid` when all `expected` trials ended: errored, or reported `last_key` (which a trial reports with its
    last epoch only); else KeyboardInterrupt: Tune stopped early, as it does on Ctrl-C (SIGINT) once it has
    saved the experiment's state. (Tune marks the trials it stopped TERMINATED, so statuses cannot tell.)"""
    ended = sum(r.error is not None or last_key in (r.metrics or {}) for r in grid)
    if ended < expected:
        raise KeyboardInterrupt
    return grid


__all__ = ["StateError", "StorageError", "finished", "fs_and_path", "repair_lost_checkpoints", "resumable",
           "shown_path", "tuner_pkl_ok"]
