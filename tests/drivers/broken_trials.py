"""tests/test_study.py's errored trials: every trial raises; what `run_study` raised, then the exit codes of
`hwr-study run` with run.allow_errors=true and with --fresh. Args: OUT.json CONFIG."""

import json
import sys
from pathlib import Path

import study.run
from study.cli import main
from study.config import load_study


def broken(config, data, features=None, policy=None, bases=None):
    raise RuntimeError(f"broken on purpose at seed {config['train']['seed']}")


study.run.train_trial = broken  # the trainable run_study builds; pickled by value (this is __main__)
out, config = sys.argv[1:]
try:
    study.run.run_study(load_study(config), progress=False)
    raised = {"type": None, "message": None}
except study.run.TrialsErrored as e:
    raised = {"type": type(e).__name__, "message": str(e)}
codes = [main(["run", config, "--no-analyze", "--set", "run.allow_errors=true"]),
         main(["run", config, "--no-analyze", "--fresh"])]
Path(out).write_text(json.dumps({"raised": raised, "codes": codes}))
