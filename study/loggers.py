"""What Tune writes of each trial on the driver: result.json, progress.csv and TensorBoard's events (Tune's own
logger callbacks), and a fix that keeps a retried trial's history whole (KeepHistoryOnRetry)."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow.fs
from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
from ray.tune.result import EXPR_PROGRESS_FILE, EXPR_RESULT_FILE

log = logging.getLogger("study")


class KeepHistoryOnRetry(Callback):
    """When a failed trial is retried, Tune's JSON and CSV loggers replace its result.json and progress.csv on
    the driver with the copies in storage (`LoggerCallback._restore_from_remote`), and those lag behind: the
    driver's background upload skips its turn while the previous one still runs ("Last sync still in
    progress"). On a loaded machine a retried trial lost epochs 2 and 3 that way (its history read 1, 3, 4).
    Before the retry starts, this puts the driver's complete copies in storage, so the restored history has
    every row the trial reported."""

    FILES = (EXPR_RESULT_FILE, EXPR_PROGRESS_FILE)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        for name in self.FILES:
            local = Path(trial.local_path, name)
            if not local.is_file():
                continue
            try:
                pyarrow.fs.copy_files(local.as_posix(), f"{trial.storage.trial_fs_path}/{name}",
                                      source_filesystem=pyarrow.fs.LocalFileSystem(),
                                      destination_filesystem=trial.storage.storage_filesystem)
            except OSError as e:  # storage out of reach: Tune's own upload may still make it
                log.warning("Trial %s: could not put its %s in storage before its retry (%s); rows reported "
                            "since the last upload may be missing from its history.", trial.trial_id, name, e)


def loggers() -> list[Callback]:
    """The callbacks of every study's RunConfig: Tune's CSV, JSON and TensorBoard loggers, and KeepHistoryOnRetry."""
    return [CSVLoggerCallback(), JsonLoggerCallback(), TBXLoggerCallback(), KeepHistoryOnRetry()]


__all__ = ["KeepHistoryOnRetry", "loggers"]
