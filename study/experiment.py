"""Read a Tune experiment from its storage alone into two pandas tables.

No running driver or cluster is needed: `ray.tune.ExperimentAnalysis` reads the experiment state and each
trial's result.json wherever the experiment folder now lives (another machine, a copy, an s3:// URI).
Partial experiments, errored and diverged trials all come through, each with its status.

    trials: trial_id, <config columns>, status, diverged, epochs_run, epochs_planned, test_acc, test_loss
    epochs: trial_id, <config columns>, epoch, train_loss, train_acc, val_loss, val_acc, epoch_time_s
            [, step, val_nll_ts, temperature, elapsed_s, epoch_end]: one row per evaluation, `epoch`
            fractional (step / steps per epoch) where a trial evaluated several times an epoch
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd
import yaml
from ray.tune import ExperimentAnalysis

from hwr.config import ConfigError
from study.seeds import ADAPTIVE_FILE, adaptive_of, planned_trials
from study.specs import DEFAULT_REFERENCE, SPEC_KEY
from study.state import LAST_KEY, STUDY_FILE, fs_and_path
from study.storage import shown

# `specification`: the trial's specification (study.specs; `reference` in a study without specifications).
CONFIG_COLUMNS = ("specification", "activation", "normalization", "lr", "seed", "trainable_from", "weights",
                  "image_size", "dropout", "batch_size", "split", "optimizer", "init")
EPOCH_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s")
# Columns of each evaluation (`train.evals_per_epoch` a epoch; hwr.train.EVAL_KEYS), where a trial has them:
# experiments written before step resolution have one row per epoch and none of these.
EVAL_COLUMNS = ("step", "val_nll_ts", "temperature", "elapsed_s", "epoch_end")


def read_study_doc(path: str) -> dict[str, Any]:
    """The study config stored beside the experiment by `hwr-study run`."""
    fs, p = fs_and_path(path)
    try:
        with fs.open_input_stream(f"{p}/{STUDY_FILE}") as f:
            return yaml.safe_load(f.read().decode()) or {}
    except (FileNotFoundError, OSError):
        raise ConfigError(f"{shown(path)} is not an hwr-study experiment (no {STUDY_FILE} in it).") from None


def read_adaptive(path: str) -> dict[str, Any] | None:
    """What the report shows of adaptive seeds: the searcher's decisions (`adaptive.json`, written when the
    study ended), or only its settings (from study.yaml) before then; None without adaptive seeds."""
    settings = adaptive_of(read_study_doc(path))
    if settings is None:
        return None
    fs, p = fs_and_path(path)
    try:
        with fs.open_input_stream(f"{p}/{ADAPTIVE_FILE}") as f:
            return json.loads(f.read().decode())
    except (FileNotFoundError, OSError, ValueError):  # not written yet (a study still running), or cut short
        return {"settings": dataclasses.asdict(settings), "specifications": []}


def _config_row(config: dict[str, Any]) -> dict[str, Any]:
    flat = {**config.get("data", {}), **config.get("model", {}), **config.get("train", {}),
            SPEC_KEY: config.get(SPEC_KEY) or DEFAULT_REFERENCE}
    return {c: flat.get(c) for c in CONFIG_COLUMNS}


def parse_results(text: str, where: str) -> list[dict[str, Any]]:
    """A trial's result.json records, one JSON object a line. A line cut short (a writer killed, a full disk)
    is dropped with a warning naming `where`; a whole record appended to it (a resumed trial writes on after
    the cut) is kept. Tune's own reader fails on such a line and drops the whole trial."""
    records, cut = [], 0
    decoder = json.JSONDecoder()
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
            continue
        except ValueError:
            cut += 1
        for start in (i for i, ch in enumerate(line) if ch == "{" and i > 0):  # a whole record after the cut?
            try:
                record, end = decoder.raw_decode(line, start)
            except ValueError:
                continue
            if end == len(line.rstrip()) and isinstance(record, dict):
                records.append(record)
                break
    if cut:
        warnings.warn(f"{where}: {cut} line(s) cut short, skipped; the whole records are kept.", stacklevel=2)
    return records


def _trial_frame(trial) -> pd.DataFrame:
    if trial.last_result is None:  # never reported
        return pd.DataFrame()
    fs, file = trial.storage.storage_filesystem, f"{trial.storage.trial_fs_path}/result.json"
    try:
        with fs.open_input_stream(file) as f:
            text = f.readall().decode("utf-8", errors="replace")
    except (FileNotFoundError, OSError):
        return pd.DataFrame()
    return pd.DataFrame(parse_results(text, file))


def load_tables(path: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, epochs) of the experiment at `path`, sorted by config then trial id."""
    read_study_doc(path)
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    try:
        analysis = ExperimentAnalysis(path)  # its own reading of result.json is not used: see _trial_frame
    except (ValueError, FileNotFoundError, OSError):
        raise ConfigError(f"{shown(path)} holds no Tune experiment state yet (has the study started?).") from None
    trial_rows, epoch_frames, ended = [], [], 0
    for trial in analysis.trials:
        cfg = _config_row(trial.config)
        df = _trial_frame(trial)
        if "epoch" in df:  # a trial resumed from a checkpoint before its last report repeats evaluations: keep the last
            df = df.drop_duplicates("step" if "step" in df else "epoch", keep="last").reset_index(drop=True)
        last = df.iloc[-1].to_dict() if len(df) else {}
        diverged = bool(last.get("diverged", False)) if len(df) else False
        ended += trial.status == "ERROR" or pd.notna(last.get(LAST_KEY))  # reported its last epoch, or gave up
        trial_rows.append({
            "trial_id": trial.trial_id, **cfg, "status": trial.status, "diverged": diverged,
            "epochs_run": int(np.floor(df["epoch"].max() + 1e-9)) if len(df) else 0,
            "epochs_planned": int(trial.config["train"]["epochs"]),
            "test_acc": float(last.get("test_acc", np.nan)) if last.get("test_acc") is not None else np.nan,
            "test_loss": float(last.get("test_loss", np.nan)) if last.get("test_loss") is not None else np.nan,
        })
        if len(df):
            ep = df[[c for c in (*EPOCH_COLUMNS, *EVAL_COLUMNS) if c in df]].copy()
            ep.insert(0, "trial_id", trial.trial_id)
            for i, (k, v) in enumerate(cfg.items(), 1):
                ep.insert(i, k, v)
            epoch_frames.append(ep)
    trials = pd.DataFrame(trial_rows)
    columns = ["trial_id", *CONFIG_COLUMNS, *EPOCH_COLUMNS]
    epochs = pd.concat(epoch_frames, ignore_index=True) if epoch_frames else pd.DataFrame(columns=columns)
    order = ["specification", "activation", "normalization", "lr", "seed", "trial_id"]
    if len(trials):
        trials = trials.sort_values(order, kind="stable").reset_index(drop=True)
    if len(epochs):
        whole = np.allclose(epochs["epoch"], np.round(epochs["epoch"]))
        epochs = epochs.astype({"epoch": int if whole else float})
        epochs = epochs.sort_values(order + ["epoch"], kind="stable").reset_index(drop=True)
    trials.attrs["n_ended"] = ended  # see progress()
    return trials, epochs


def progress(doc: dict[str, Any], trials: pd.DataFrame, adaptive: dict[str, Any] | None) -> dict[str, Any]:
    """How far the study is, from its tables (`load_tables`) and study.yaml: trials `ended` (reported their
    last epoch, or errored), `started` (in Tune's state), `planned` (the grid; with adaptive seeds the
    fewest it runs) and `complete`: every planned trial ended and, with adaptive seeds, the searcher has
    decided (its `adaptive.json` written). Trials Tune marks TERMINATED without their last epoch (a driver
    stopped by Ctrl-C or killed) have not ended."""
    started = int(len(trials))
    ended = int(trials.attrs.get("n_ended", started))
    planned = planned_trials(doc)
    decided = adaptive is None or "trials" in adaptive
    return {"ended": ended, "started": started, "planned": planned, "adaptive": adaptive is not None,
            "complete": bool(ended == started and started >= planned and decided)}
