"""`hwr-bench pipeline` runs end to end on a tiny synthetic set: structure and consistency only, never timings."""

from __future__ import annotations

import ast
import importlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import cli, naive, pipeline
from benchmarks.flops import conv_macs, head_macs
from hwr.data import make_splits, preprocess, scan, write_synthetic
from hwr.model import InputNorm


def test_flop_counts():
    # VGG16's conv base: ~15.35 G multiply-adds per 224 px image (the "15.5 GFLOPs" usually quoted, with the FCs)
    assert 15.3e9 < conv_macs(224) < 15.4e9
    # every side scales by 224/64 = 3.5 exactly, so the count scales by 3.5**2
    assert conv_macs(64) * 49 == conv_macs(224) * 4
    assert conv_macs(224, depth=0) == 0
    assert conv_macs(224, depth=5) == 224 * 224 * 9 * (3 * 64 + 64 * 64)  # block1 only
    head = head_macs(224)
    assert head["forward"] == 25088 * 1024 + 1024 * 1024 + 1024 * 62
    assert head["forward"] < head["train_step"] < 3 * head["forward"]


@pytest.mark.parametrize("normalization", ["none", "per_image", "imagenet"])
def test_naive_input_is_hwr_input(tmp_path, normalization):
    """The naive Dataset's tensors equal what HWRNet.normalize makes of hwr's cached uint8 arrays."""
    samples = scan(write_synthetic(tmp_path / "set", per_class=1, seed=0))[:5]
    dataset = naive.NaiveImages(samples, naive.naive_transform(32, normalization))
    norm = InputNorm(normalization)
    for i, s in enumerate(samples):
        x, label = dataset[i]
        with Image.open(s.path) as im:
            ours = norm(torch.from_numpy(preprocess(im, 32).copy())[None])[0]
        assert x.shape == (3, 32, 32) and label == s.label
        torch.testing.assert_close(x, ours.contiguous(), atol=1e-5, rtol=1e-5)


def _run(tmp_path, sections: str, capsys) -> dict:
    out = tmp_path / "bench.json"
    rc = cli.main(["pipeline", "--quick", "--sections", sections, "--work-dir", str(tmp_path / "work"),
                     "--json", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "naive pipeline vs ours" in printed
    return json.loads(out.read_text())


def _positive(*values) -> bool:
    return all(isinstance(v, (int, float)) and v > 0 and math.isfinite(v) for v in values)


def test_quick_without_ray(tmp_path, capsys):
    res = _run(tmp_path, "floor,naive,stages,head", capsys)
    s = res["settings"]
    assert (s["image_size"], s["epochs"], s["trials"], s["naive_trials_run"]) == (32, 2, 2, 1)

    assert _positive(res["floor"]["gflops"])
    naive = res["naive"]
    assert len(naive["trials"]) == 1
    trial = naive["trials"][0]
    assert len(trial["train_epoch_s"]) == len(trial["eval_val_s"]) == len(trial["history"]) == s["epochs"]
    assert _positive(*trial["train_epoch_s"], *trial["eval_val_s"], trial["test_s"], trial["total_s"])
    assert naive["decode_pass"]["images"] == naive["splits"][0] + naive["splits"][1]
    labels = np.array([x.label for x in scan(res["data_dir"])])
    writers = np.array([x.writer for x in scan(res["data_dir"])])
    assert naive["splits"] == list(make_splits(labels, writers).sizes())

    stages = res["stages"]
    assert stages["decode_cache_hit"] is False and stages["features_cache_hit"] is False  # no study ran before
    assert len(stages["train_epoch_s"]) == len(stages["history"]) == s["epochs"]
    # same model, data, optimizer and sample order: the naive loop and hwr's fit learn the same thing
    for a, b in zip(trial["history"], stages["history"]):
        assert a["epoch"] == b["epoch"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=0.02)

    head = res["head"]
    assert head["train_images"] == naive["splits"][0]
    assert head["feature_images"] == 8 and head["tiled"] is True
    assert head["feature_shape"] == [512, 1, 1]
    assert [e["epoch"] for e in head["epochs"]] == [1, 2] and _positive(*(e["s"] for e in head["epochs"]))

    d = res["derived"]
    assert d["naive_study_extrapolated"] is True
    assert d["naive_study_s"] == pytest.approx(naive["startup_s"] + s["trials"] * d["naive_per_trial_s"])
    assert d["naive_study_conv_forwards"] == s["trials"] * (
        s["epochs"] * (naive["splits"][0] + naive["splits"][1]) + naive["splits"][2])
    for r in (naive, stages, head):
        assert _positive(r["maxrss_self_mib"], r["process_wall_s"])
    assert not any(k.startswith(("cold", "warm")) for k in d["targets"])  # no study, no study targets


@pytest.mark.slow
def test_quick_study_cold_then_warm(tmp_path, capsys):
    res = _run(tmp_path, "study,stages", capsys)
    s = res["settings"]
    cold, warm, stages = res["study_cold"], res["study_warm"], res["stages"]
    for r in (cold, warm):
        assert r["trials"] == s["trials"] == 2
        assert r["results"] == s["trials"] * s["epochs"]  # every epoch of every trial reported
        assert len(r["features_per_key"]) == 2  # two normalizations, one seed: two frozen feature sets
        assert r["features_done_from_spawn_s"] <= r["first_trial_start_from_spawn_s"]
        assert 0 < r["first_step_from_run_study_s"] < r["first_step_from_spawn_s"] <= r["total_from_spawn_s"]
        assert r["first_step_from_spawn_s"] <= r["first_result_from_spawn_s"]
        assert _positive(r["ray_init_s"], r["decode_s"], r["run_study_s"], r["maxrss_self_mib"])
        assert len(r["test_acc"]) == s["trials"]
    assert not any(k["cache_hit"] for k in cold["features_per_key"])  # cold: an empty HWR_CACHE_DIR
    assert all(k["cache_hit"] for k in warm["features_per_key"])  # warm: the cold run's caches
    assert stages["decode_cache_hit"] is True and stages["features_cache_hit"] is True
    assert set(res["derived"]["targets"]) == {"warm first step < 5 s (from process start)",
                                              "warm first step < 5 s (from run_study call)"}


def test_entry_point_lists_benchmarks_and_refuses_unknown_ones():
    run = [sys.executable, "-m", "benchmarks"]
    listing = subprocess.run([*run, "--help"], capture_output=True, text=True, check=True).stdout
    assert all(name in listing for name in cli.BENCHMARKS)
    bad = subprocess.run([*run, "no-such-benchmark"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice: 'no-such-benchmark'" in bad.stderr
    for module, _ in cli.BENCHMARKS.values():
        assert callable(importlib.import_module(module).main), module
    assert all(callable(section.measure) for section in pipeline.SECTIONS.values())


def test_bad_section_is_one_sentence_and_exit_2(tmp_path, capsys):
    rc = cli.main(["pipeline", "--quick", "--sections", "naive,warp", "--work-dir", str(tmp_path), "--quiet"])
    assert rc == 2
    assert capsys.readouterr().err.strip() == ("hwr-bench pipeline: error: unknown section(s) warp; choose from "
                                               "floor,naive,study,stages,head.")


def test_the_product_never_imports_benchmarks():
    """hwr/ and study/ are the product; benchmarks/ measures them, never the other way round."""
    root = Path(__file__).resolve().parents[1]
    for path in [*root.glob("hwr/**/*.py"), *root.glob("study/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "benchmarks" or n.startswith("benchmarks.") for n in names), path
