"""tests/test_adaptive.py's real Tune runs of the adaptive seed searcher on synthetic curves, in a driver of
their own (the test process never starts Ray). Args: OUT.json SCENARIO STORAGE, where SCENARIO is

* `stops`: one run to the searcher's decision;
* `interrupted`: a run that a trial interrupts as Ctrl-C would once seed 2 has run (while STORAGE/armed
  exists), its experiment copied to STORAGE/adaptive-early, then `Tuner.restore` to the decision.

Writes {"errors": [...], "configs": [each trial's config]} of the last fit; the experiment is in
STORAGE/adaptive. Joins RAY_ADDRESS's cluster."""

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import ray
import ray.cloudpickle
import ray.tune
from ray.tune import RunConfig, TuneConfig, Tuner

import test_adaptive
from study.adaptive import AdaptiveSeeds, AdaptiveSeedSearcher
from test_adaptive import RELU, SELU, SPEC, curve

ray.cloudpickle.register_pickle_by_value(test_adaptive)  # Ray's workers need not import the test module


def synthetic_trainable(config):
    for row in curve(config, {(32, "selu"): 2.0, (32, "relu"): 1.0}, evals=6):
        ray.tune.report({k: v for k, v in row.items() if not k.startswith("config/")})


def interrupting_trainable(armed, driver_pid):
    """The synthetic trainable; once seed 2 has run, it interrupts the driver as Ctrl-C would (SIGUSR1,
    which Tune handles like SIGINT: it saves the experiment and returns), while `armed` exists."""
    def trainable(config):
        synthetic_trainable(config)
        if config["train"]["seed"] >= 2 and os.path.exists(armed):
            os.unlink(armed)
            os.kill(driver_pid, signal.SIGUSR1)

    return trainable


def stops(storage: Path, searcher: AdaptiveSeedSearcher):
    return Tuner(synthetic_trainable, param_space={}, run_config=run_config(storage),
                 tune_config=TuneConfig(search_alg=searcher, num_samples=40, reuse_actors=True)).fit()


def interrupted(storage: Path, searcher: AdaptiveSeedSearcher):
    trainable = interrupting_trainable(str(storage / "armed"), os.getpid())
    Tuner(trainable, param_space={}, tune_config=TuneConfig(search_alg=searcher, num_samples=40),
          run_config=run_config(storage)).fit()
    shutil.copytree(storage / "adaptive", storage / "adaptive-early")  # as the interrupted run left it
    return Tuner.restore(str(storage / "adaptive"), trainable=trainable, resume_unfinished=True,
                         resume_errored=True).fit()


def run_config(storage: Path) -> RunConfig:
    return RunConfig(name="adaptive", storage_path=str(storage), verbose=0)


out, scenario, storage = sys.argv[1], {"stops": stops, "interrupted": interrupted}[sys.argv[2]], Path(sys.argv[3])
ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR")
grid = scenario(storage, AdaptiveSeedSearcher([SPEC], [SELU, RELU], AdaptiveSeeds(min=4, max=20, ahead=1)))
Path(out).write_text(json.dumps({"errors": [repr(e) for e in grid.errors], "configs": [r.config for r in grid]}))
ray.shutdown()
