"""What Tune writes of each trial on the driver: result.json, progress.csv and TensorBoard's events (Tune's own
logger callbacks), and a fix that keeps a trial's history whole in storage (HistoryInStorage)."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow.fs
from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
from ray.tune.result import EXPR_PROGRESS_FILE, EXPR_RESULT_FILE

log = logging.getLogger("study")


class HistoryInStorage(Callback):
    """Puts a trial's result.json and progress.csv from the driver in storage, synchronously, at the two moments
    when Tune's own background upload (the driver's staging folder, on a timer) leaves storage with fewer rows
    than the trial reported:

    - a failed trial's retry: Tune's JSON and CSV loggers replace the driver's copies with the ones in storage
      (`LoggerCallback._restore_from_remote`), and those lag behind: the upload skips its turn while the
      previous one still runs ("Last sync still in progress"). On a loaded machine a retried trial lost epochs
      2 and 3 that way (its history read 1, 3, 4). `on_trial_recover` comes before the retry starts.
    - a trial's end: the upload copies the experiment state and the trials' files with several threads, in no
      order, so a driver killed mid-upload can leave a state that marks the trial TERMINATED beside a
      result.json without its last epochs; the restored study never runs that trial again. `on_trial_complete`
      comes after the loggers closed the files and before the trial is marked TERMINATED, so every stored state
      that says TERMINATED was written after storage had the whole history.

    Tune's CSV, JSON and TensorBoard loggers come before it in `loggers()`: the files are flushed when it copies."""

    FILES = (EXPR_RESULT_FILE, EXPR_PROGRESS_FILE)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self._put(trial, "before its retry")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._put(trial, "at its end")

    def _put(self, trial, when: str) -> None:
        fs = trial.storage.storage_filesystem
        for name in self.FILES:
            local, stored = Path(trial.local_path, name), f"{trial.storage.trial_fs_path}/{name}"
            if not local.is_file():
                continue
            try:
                pyarrow.fs.copy_files(local.as_posix(), stored, source_filesystem=pyarrow.fs.LocalFileSystem(),
                                      destination_filesystem=fs)
            except OSError as e:  # storage out of reach: Tune's own upload may still make it
                log.warning("Trial %s: could not put its %s in storage %s (%s); rows reported since the last "
                            "upload may be missing from its history there.", trial.trial_id, name, when, e)


def loggers() -> list[Callback]:
    """The callbacks of every study's RunConfig: Tune's CSV, JSON and TensorBoard loggers, then HistoryInStorage."""
    return [CSVLoggerCallback(), JsonLoggerCallback(), TBXLoggerCallback(), HistoryInStorage()]


__all__ = ["HistoryInStorage", "loggers"]
