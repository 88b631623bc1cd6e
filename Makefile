# Two commands do all the set-up: `make run` (the main job) and `make test` (the whole suite).
# Each creates or updates .venv itself from pyproject.toml.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
CONFIG ?= configs/quick.yaml
# make serve: a checkpoint, a run or trial folder, or an experiment (its best trial); default: CONFIG's study
CHECKPOINT ?= results/ray/$(basename $(notdir $(CONFIG)))

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

.PHONY: venv run test faults tensorboard bench serve
venv: $(STAMP)

run: $(STAMP)  ## the study (quick.yaml by default: offline, a few minutes on 2 CPU cores)
	$(VENV)/bin/hwr-study run $(CONFIG)

test: $(STAMP)  ## the test suite, less the process-killing fault tests (`make faults`); 15-30 min on 2 cores
	$(VENV)/bin/python -m pytest -q -m "not faults"

faults: $(STAMP)  ## the fault suite in one run (kills, damaged files, full disk, bad input): table in docs/reliability.md
	$(VENV)/bin/hwr-bench faults

serve: $(STAMP)  ## draw a character on CHECKPOINT's model (default: the best trial of `make run`), on 127.0.0.1:8000
	$(VENV)/bin/hwr serve $(CHECKPOINT)

tensorboard: $(STAMP)  ## Tune's TensorBoard logs of every experiment, on 127.0.0.1:6006
	$(VENV)/bin/tensorboard --logdir results/ray --host 127.0.0.1 --port 6006

bench: $(STAMP)  ## naive vs our pipeline on the real set (see docs/performance.md)
	$(VENV)/bin/hwr-bench pipeline
