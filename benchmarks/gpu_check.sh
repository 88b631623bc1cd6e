#!/usr/bin/env bash
# The paper-scale GPU check in one command (benchmarks/gpu_check.py: facts, frozen features, a study slice;
# every figure in one JSON; <= 8 minutes on one GPU). Runs where the project's venv is (.venv/bin/python) or
# with the machine's python3 (torch and torchvision installed, no network).
#
# A lent GPU machine has torch and torchvision but not Ray or Optuna. Build their bundle here once:
#     echo /.gpu/ >> .git/info/exclude && ../shared/tools/gpu-bundle        # -> .gpu/bundle.tar.xz
# then run, with the device tool, carrying [".gpu"] (and the data set if you copied it there):
#     benchmarks/gpu_check.sh --out "$OUT/gpu_check.json"   [--data-dir .gpu/chars74k]
# This script unpacks .gpu/bundle.tar.xz onto PYTHONPATH itself when Ray is not importable.
# Dry run on a CPU (tiny sizes; what tests/test_gpu.py runs):
#     benchmarks/gpu_check.sh --dry-run --out /tmp/gpu_check.json
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if ! "$PY" -c "import ray" 2>/dev/null && [ -f .gpu/bundle.tar.xz ]; then
    site="${TMPDIR:-/tmp}/hwr-gpu-site"
    mkdir -p "$site" && tar xJf .gpu/bundle.tar.xz -C "$site"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m benchmarks.gpu_check "$@"
