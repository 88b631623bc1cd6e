"""tests/test_gpu.py's packing run: Ray with 4 fake GPUs (Ray schedules on declared resources; nothing touches
CUDA) runs the real `run_study` with a trainable and a frozen-feature task that record what Ray gave them
instead of training; a gate actor holds the trials until all have arrived (proof that they ran at once).
Writes {"trials": [...], "tasks": [...]} as the gate saw them. Args: OUT.json CONFIG TRIALS."""

import asyncio
import json
import os
import sys
from pathlib import Path

import ray

import study.run
from study.config import load_study

GATE = "hwr-test-gate"


@ray.remote(num_cpus=0)
class Gate:
    """Trials arrive and wait until `n` have arrived (or `timeout` passes)."""

    def __init__(self, n: int):
        self.n, self.trials, self.tasks = n, [], []
        self.full = asyncio.Event()

    async def arrive(self, entry: dict, timeout: float) -> int:
        self.trials.append(entry)
        if len(self.trials) >= self.n:
            self.full.set()
        try:
            await asyncio.wait_for(self.full.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        return len(self.trials)

    def note(self, entry: dict) -> None:
        self.tasks.append(entry)

    def seen(self) -> tuple[list, list]:
        return self.trials, self.tasks


def _what_ray_gave() -> dict:
    ctx = ray.get_runtime_context()
    return {"gpu_ids": [str(g) for g in ray.get_gpu_ids()], "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "resources": ctx.get_assigned_resources(), "pid": os.getpid()}


def record_trial(config, data, features=None, policy=None, bases=None):
    """Stands in for study.trainable.train_trial: records its GPU and waits for the other trials."""
    import ray.tune

    entry = {**_what_ray_gave(), "trial": ray.tune.get_context().get_trial_id()}
    concurrent = ray.get(ray.get_actor(GATE).arrive.remote(entry, 120))
    # val_acc: the metric Tune expects; best_epoch: the key of a trial's last report (study.state.LAST_KEY)
    ray.tune.report({"concurrent": concurrent, "epoch": 1, "val_acc": 0.0, "best_epoch": 1})


@ray.remote
def record_frozen(config, data, key, base=None):
    """Stands in for study.run._frozen_task: records its resources; no activations (trials would compute theirs)."""
    ray.get(ray.get_actor(GATE).note.remote({**_what_ray_gave(), "key": key}))
    return None


out, config, trials = sys.argv[1], sys.argv[2], int(sys.argv[3])
ray.init(num_cpus=trials, num_gpus=4, include_dashboard=False, logging_level="ERROR")
gate = Gate.options(name=GATE).remote(trials)
study.run.train_trial = record_trial  # what run_study trains and computes frozen sets with (this is
study.run._frozen_task = record_frozen  # __main__: Ray's workers get these functions by value)
study.run.run_study(load_study(config), progress=False)
seen_trials, seen_tasks = ray.get(gate.seen.remote())
Path(out).write_text(json.dumps({"trials": seen_trials, "tasks": seen_tasks}))
ray.shutdown()
