"""Damaged and unwritable files: the caches, a pretrained base, checkpoints, the experiment's state, a full disk.

Each damaged file is detected (its format, size or checksum) and then rebuilt, or refused with one sentence
naming it: never silently used, never a traceback. A write that fails (a full disk, simulated with
RLIMIT_FSIZE: writes past the limit fail with EFBIG, as they fail with ENOSPC on a full disk) leaves the
previous file whole and no temporary file behind. Each test records its fault, what happened and what was
lost (`record_property`), for the table in docs/reliability.md (`python -m benchmarks.faults`).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hwr import bases as pt
from hwr.recipe import load_recipe
from hwr.data.chars74k import sha256_file
from hwr.cli import main as hwr_main
from hwr.data import load_dataset, write_synthetic
from hwr.data.arrays import cache_file
from hwr.features import cache_path, frozen_features, load_cached
from hwr.model import build_model
from hwr.config import load_config

from conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


def record(record_property, fault: str, outcome: str, lost: str = "nothing") -> None:
    """One row of the reliability table: the fault, what the project did, what the user lost."""
    record_property("fault", fault)
    record_property("outcome", outcome)
    record_property("lost", lost)


def damage(path: Path, how: str) -> None:
    """Truncate `path` to half its size, or flip one byte in its second half (where the data lies)."""
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[len(data) * 3 // 4] ^= 0xFF
        path.write_bytes(bytes(data))


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """RLIMIT_FSIZE for this process: a write past `nbytes` fails (EFBIG; Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def limited(nbytes: int):
    """preexec_fn for a subprocess whose writes fail past `nbytes`."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def error_line(err: str) -> str:
    """The one line a command ends with on stderr (after any progress bars); fails on a traceback."""
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert lines and ": error: " in lines[-1], err[-3000:]
    return lines[-1]


def one_sentence(err: str) -> bool:
    line = error_line(err)
    return all(": error: " not in other for other in err.replace("\r", "\n").splitlines() if other != line)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("set") / "s", per_class=2, seed=0)


# ------------------------------------------------------------------------------------- the image cache


@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_a_damaged_image_cache_is_decoded_again(small_set, tmp_path, how, record_property):
    cache = tmp_path / "cache"
    first = load_dataset(small_set, 32, cache_dir=cache, progress=False)
    path = cache_file(small_set, 32, cache_dir=cache)
    damage(path, how)
    with pytest.warns(UserWarning, match=f"image cache {path} is damaged"):
        again = load_dataset(small_set, 32, cache_dir=cache, progress=False)
    assert np.array_equal(again.images, first.images)
    with np.load(path) as z:  # written whole again
        assert np.array_equal(z["images"], first.images)
    record(record_property, f"decoded-image cache (.npz) {how}",
           "detected by the zip's CRC-32 / format, a warning names the file, images decoded again and the "
           "cache rewritten")


def test_a_full_disk_while_writing_the_image_cache(small_set, tmp_path, record_property):
    cache = tmp_path / "cache"
    with file_size_limit(4096), pytest.warns(UserWarning, match="Could not write the image cache"):
        ds = load_dataset(small_set, 32, cache_dir=cache, progress=False)
    assert ds.images.shape == (124, 32, 32)
    assert list(cache.iterdir()) == []  # neither a partial cache file nor a temporary one
    record(record_property, "disk full while writing the decoded-image cache",
           "warning; the run goes on with the decoded images; no partial or temporary file left",
           "nothing (decoded again next time)")


# ------------------------------------------------------------------------------------- frozen features


@pytest.fixture(scope="module")
def frozen_model():
    cfg = load_config(None, ["data.image_size=32", "model.weights=none", "model.trainable_from=block5"])
    return build_model(cfg.model, 32, seed=0)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (12, 32, 32), dtype=np.uint8)


@pytest.mark.parametrize("how", ["truncated", "flipped", "no sidecar"])
def test_a_damaged_feature_cache_is_computed_again(frozen_model, images, tmp_path, how, record_property):
    cpu = torch.device("cpu")
    first = frozen_features(frozen_model, images, "k", cpu, cache_dir=tmp_path)
    path = cache_path("k", "cpu", tmp_path)
    assert np.array_equal(load_cached("k", "cpu", tmp_path), first.numpy())
    if how == "no sidecar":  # written before sidecars existed, or its writer was killed in between
        path.with_suffix(".json").unlink()
        assert load_cached("k", "cpu", tmp_path) is None
    else:
        damage(path, how)
        with pytest.warns(UserWarning, match=f"frozen-feature cache {path} is damaged"):
            assert load_cached("k", "cpu", tmp_path) is None
    again = frozen_features(frozen_model, images, "k", cpu, cache_dir=tmp_path)
    assert torch.equal(again, first)
    assert np.array_equal(load_cached("k", "cpu", tmp_path), first.numpy())  # rewritten whole
    record(record_property, f"frozen-feature cache (.npy + .json sidecar) {how}",
           "detected (size, shape, CRC-32 in the sidecar); warning names the file; computed again and rewritten")


def test_a_full_disk_while_writing_the_feature_cache(frozen_model, images, tmp_path, record_property):
    with file_size_limit(1024), pytest.warns(UserWarning, match="Could not write the frozen-feature cache"):
        z = frozen_features(frozen_model, images, "k", torch.device("cpu"), cache_dir=tmp_path)
    assert z.shape == (12, 512, 2, 2)
    left = list(tmp_path.iterdir())  # only the per-machine lock (hwr.features._node_lock), empty as ever
    assert [p.name for p in left] == ["k-cpu.lock"] and left[0].stat().st_size == 0
    record(record_property, "disk full while writing a frozen-feature set",
           "warning; the activations are used from memory; no partial or temporary file left",
           "nothing (computed again next time)")


# ------------------------------------------------------------------------------------- pretrained bases

TINY_RECIPE = ["glyphs.sources=[hershey]", "glyphs.scripts=[greek]", "train.shallow_samples=64", "train.samples=0",
               "train.batch_size=32", "train.val_per_class=1"]


def test_a_damaged_cached_base_is_pretrained_again(tmp_path, monkeypatch, record_property):
    monkeypatch.setenv("HWR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(pt.RECIPES, "glyphs-small", load_recipe(None, TINY_RECIPE))
    path = pt.ensure_base("glyphs-small", progress=False)
    good = path.read_bytes()
    assert json.loads(pt.sidecar_path(path).read_text())["sha256"] == sha256_file(path)
    damage(path, "truncated")
    with pytest.warns(UserWarning, match=f"base {path} is damaged \\(its content does not match the sha256 in its sidecar"):
        assert pt.ensure_base("glyphs-small", progress=False) == path
    assert path.read_bytes() == good  # pretraining is deterministic: the same base again
    record(record_property, "cached pretrained base (`model.weights: glyphs-small`) truncated",
           "detected by the sha256 its sidecar records; warning names the file; pretrained again",
           "nothing (the time to pretrain it again)")


def test_a_damaged_base_given_by_path_is_refused(tmp_path, capsys, record_property):
    base = tmp_path / "base.pt"
    pt.pretrain(load_recipe(None, TINY_RECIPE), base, progress=False)
    damage(base, "truncated")
    sets = [a for s in [*TINY, "train.epochs=1", f"model.weights={base}"] for a in ("--set", s)]
    assert hwr_main(["train", *sets, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"model.weights file {base} is not a loadable state dict" in err and one_sentence(err)
    assert not (tmp_path / "run").exists()
    record(record_property, "a truncated base given as `model.weights: file.pt`",
           f"exit 2: {err.strip().removeprefix('hwr: error: ').replace(str(tmp_path), '…')}")


# ------------------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def run_dir(tiny_run, tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("run-copy") / "run"
    shutil.copytree(tiny_run, copy)
    return copy


@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_a_damaged_checkpoint_is_refused_by_predict_and_train(run_dir, tmp_path, how, capsys, record_property):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    ckpt = run / "checkpoint.pt"
    damage(ckpt, how)
    image = next((Path(os.environ["HWR_CACHE_DIR"]) / "synthetic-seed0").rglob("img011-001.png"))
    says = "is damaged (its content does not match the sha256 in checkpoint.pt.sha256"
    assert hwr_main(["predict", str(ckpt), str(image)]) == 2
    err = capsys.readouterr().err
    assert f"Checkpoint {ckpt} {says}" in err and one_sentence(err)
    sets = [a for s in [*TINY, "train.epochs=2"] for a in ("--set", s)]
    assert hwr_main(["train", *sets, "--out", str(run)]) == 2  # resuming from it
    err = capsys.readouterr().err
    assert f"Checkpoint {ckpt} {says}" in err and "pass --fresh" in err and one_sentence(err)
    assert hwr_main(["train", *sets, "--out", str(run), "--fresh"]) == 0  # the way out
    record(record_property, f"`hwr train` checkpoint.pt {how}",
           "detected (the sha256 recorded beside it, checkpoint.pt.sha256); "
           f"`hwr predict` and a resuming `hwr train` exit 2: "
           f"{error_line(err).removeprefix('hwr: error: ').replace(str(tmp_path), '…')}",
           "the run's epochs, if the user starts over with --fresh")


def test_a_full_disk_while_writing_run_outputs(run_dir, tmp_path, record_property):
    """`hwr train` on a finished run writes history.csv and summary.json again; on a full disk it fails with
    one sentence and the files there stay whole."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    sets = [a for s in [*TINY, "train.epochs=2"] for a in ("--set", s)]
    proc = subprocess.run([sys.executable, "-m", "hwr", "train", *sets, "--out", str(run)], cwd=ROOT,
                          capture_output=True, text=True, preexec_fn=limited(64), timeout=300)
    assert proc.returncode == 2 and one_sentence(proc.stderr), proc.stderr[-2000:]
    assert "File too large" in proc.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing half-written, no .tmp
    record(record_property, "disk full while `hwr train` writes history.csv / summary.json",
           f"exit 2: {proc.stderr.strip().removeprefix('hwr: error: ').replace(str(tmp_path), '…')}; "
           "the previous files unchanged, no temporary file left")


# ------------------------------------------------------------------------------------- experiment state


def damaged_experiment(finished_study, tmp_path: Path, how: str) -> tuple[Path, Path, str]:
    """A copy of a finished experiment, damaged `how`; (its folder, a config that runs it, what is damaged)."""
    import yaml

    source, _ = finished_study
    experiment = tmp_path / "ray" / source.name
    shutil.copytree(source, experiment)
    doc = yaml.safe_load((experiment / "study.yaml").read_text())
    doc.pop("lr_by_arm", None)
    doc["run"].update(storage_path=str(tmp_path / "ray"), results_dir=str(tmp_path / "results"))
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(doc))
    state = next(experiment.glob("experiment_state-*.json"))
    trial = sorted(experiment.glob("train_trial_*"))[1]
    if how == "nothing":
        return experiment, config, ""
    target = {"experiment_state truncated": state, "search state truncated": next(experiment.glob("basic-variant-*")),
              "experiment_state deleted": state, "a trial folder deleted": trial,
              "study.yaml damaged": experiment / "study.yaml"}[how]
    if how == "experiment_state deleted":
        target.unlink()
        return experiment, config, "experiment_state-*.json"  # what the sentence can name
    if how.endswith("deleted"):
        shutil.rmtree(target)
    elif how == "study.yaml damaged":
        target.write_bytes(b"name: [finished\n\x00")
    else:
        damage(target, "truncated")
    return experiment, config, target.name


@pytest.mark.parametrize("how", ["experiment_state truncated", "search state truncated", "experiment_state deleted",
                                 "a trial folder deleted", "study.yaml damaged"])
def test_a_damaged_experiment_is_refused_naming_the_file_before_ray_starts(finished_study, tmp_path, how, capsys,
                                                                          record_property):
    import time

    import ray

    from study.cli import main as study_main

    experiment, config, name = damaged_experiment(finished_study, tmp_path, how)
    before = sorted(p.name for p in experiment.iterdir())
    t0 = time.monotonic()
    assert study_main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    line = error_line(err)
    assert name in line and "--fresh" in line and one_sentence(err)
    assert not ray.is_initialized() and time.monotonic() - t0 < 30  # refused before Ray starts
    assert sorted(p.name for p in experiment.iterdir()) == before  # nothing added beside the old trials
    if how != "study.yaml damaged":
        assert study_main(["analyze", str(experiment), "--out", str(tmp_path / "report")]) == 2
        assert name in error_line(capsys.readouterr().err)
    record(record_property, how,
           "exit 2 before Ray starts, from `hwr-study run` and `analyze`: "
           + line.removeprefix("hwr-study: error: ").replace(str(tmp_path), "…").replace(f" {name}", f" `{name}`")
           + (" (left as it was, Tune would run every trial again beside the old ones)"
              if "truncated" in how or "state deleted" in how else ""),
           "the experiment, if the user starts over with --fresh (the finished trials' folders are intact)")


def test_a_result_line_cut_short_loses_that_line_only(finished_study, tmp_path, capsys, record_property):
    """Tune's own reader drops every row of a trial whose result.json has one bad line; the analysis keeps the
    whole records, and a record a resumed trial appended to the cut-short line."""
    from study.cli import main as study_main

    experiment, _, _ = damaged_experiment(finished_study, tmp_path, "nothing")
    result = sorted(experiment.glob("train_trial_*"))[0] / "result.json"
    lines = result.read_text().splitlines()
    result.write_text(lines[0][: len(lines[0]) // 2] + lines[1] + "\n")  # epoch 1 cut short, epoch 2 appended
    with pytest.warns(UserWarning, match="1 line\\(s\\) cut short"):
        assert study_main(["analyze", str(experiment), "--out", str(tmp_path / "report")]) == 0
    import pandas as pd

    epochs = pd.read_csv(tmp_path / "report" / "epochs.csv")
    trial = json.loads(lines[1])["trial_id"]
    assert epochs[epochs.trial_id == trial].epoch.tolist() == [2]
    assert epochs.groupby("trial_id").size().drop(trial).eq(2).all()
    record(record_property, "a trial's result.json with a line cut short (a writer killed, a full disk)",
           "the analysis warns naming the file and keeps every whole record, including one appended to the cut "
           "line by a resumed trial (Tune's own reader drops the whole trial)", "that one record")
