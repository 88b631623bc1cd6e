"""GPUs without a GPU: what Ray Tune does with the study's fractional GPU resources, and the GPU script's dry run.

The packing test's driver (tests/drivers/gpu_packing.py, a child process: this one never starts Ray) starts
Ray with 4 fake GPUs (Ray schedules on declared resources; nothing touches CUDA) and runs the real
`run_study` with a trainable and a frozen-feature task that record what Ray gave them instead of training.
The real trainable's GPU use is what `benchmarks/gpu_check.sh` measures on a GPU machine; its dry run here
checks the script end to end on the CPU.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
from pathlib import Path

import pytest

from study.config import load_study

from study_helpers import run_driver, write_study

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TRIALS = 16


def test_quarter_gpus_pack_sixteen_trials_on_four_gpus(tmp_path):
    config = write_study(tmp_path, "gpus", seeds=(0, 1, 2, 3), normalizations=("none", "per_image"),
                         model={"weights": "none", "base_seed": 0, "trainable_from": "none"},
                         resources={"cpu": 1, "gpu": 0.25})
    assert load_study(config).num_trials == TRIALS
    seen = run_driver("gpu_packing", tmp_path, config, TRIALS)  # what the trials and tasks were given
    trials, tasks = seen["trials"], seen["tasks"]

    assert len(trials) == TRIALS and len({t["trial"] for t in trials}) == TRIALS
    assert all(t["resources"] == {"CPU": 1.0, "GPU": 0.25} for t in trials)
    for t in trials:  # one GPU each, and CUDA_VISIBLE_DEVICES names the one Ray assigned
        assert len(t["gpu_ids"]) == 1 and t["cuda_visible"] == t["gpu_ids"][0], t
    per_gpu = collections.Counter(t["gpu_ids"][0] for t in trials)
    assert sorted(per_gpu) == ["0", "1", "2", "3"] and set(per_gpu.values()) == {4}
    # every trial was running while all 16 had arrived: 16 at once on 4 GPUs
    reported = [json.loads(line)["concurrent"] for f in (tmp_path / "ray" / "gpus").glob("*/result.json")
                for line in f.read_text().splitlines()]
    assert reported == [TRIALS] * TRIALS

    # the frozen-feature tasks (one per normalization: one fixed base) got the config's resources
    assert len(tasks) == 2 and len({t["key"] for t in tasks}) == 2
    for t in tasks:
        assert t["resources"] == {"CPU": 1.0, "GPU": 0.25} and len(t["gpu_ids"]) == 1
        assert t["cuda_visible"] == t["gpu_ids"][0]


def test_the_gpu_script_dry_run_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {k: v for k, v in os.environ.items() if k != "HWR_DATA_DIR"}
    proc = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    res = json.loads(out.read_text())
    assert res["dry_run"] is True and not [k for k, v in res.items() if isinstance(v, dict) and "error" in v]
    facts = res["facts"]
    assert facts["torch"] and facts["ray"] and isinstance(facts["torch_hub_cache"]["vgg16_imagenet"], bool)
    assert res["matmul"]["bf16_tflops"] > 0 and res["matmul"]["fp32_tflops"] > 0
    for part in ("none", "block5"):
        frozen = res["frozen_features"][part]
        assert frozen["images"] == 64 and frozen["images_per_s"] > 0 and frozen["tflops"] > 0
    run = res["study"]
    assert run["trials"] == run["trials_finished"] == 2 and run["trials_per_hour"] > 0
    assert run["checkpoints"] == 2  # the final one of each trial: 2 epochs are well under a minute
    assert run["checkpoint_bytes_storage"] == run["checkpoint_bytes_local"] > 0
    assert 0 <= run["checkpoint_share"] < 1 and run["snapshot_warnings"] == 0
    assert "available" in run["gpu"]
