"""Every measured part runs in its own fresh Python process, so imports, start-up and peak memory are its
own (`resource.getrusage` maxrss of that process and of its reaped children).

The driver calls `Bench.spawn(work, spec)`: it writes `spec` to a JSON file and runs
`python -m benchmarks _worker MODULE:FUNCTION SPEC.json OUT.json`; in that process `run_worker` calls the
function on the spec, adds peak memory and CPU time, and writes its figures to OUT.json (through a temporary
file). Logs go to WORK/logs/NN-LABEL.log.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import KIB, ROOT, BenchError, cpu_seconds, vmhwm_mib


def run_worker(target: str, spec_path: str, out_path: str) -> int:
    """In the measured process: run `module:function` on the spec, write its figures plus memory and CPU."""
    module, _, name = target.partition(":")
    work = getattr(importlib.import_module(module), name)
    spec = json.loads(Path(spec_path).read_text())
    result = work(spec)
    result["maxrss_self_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB
    result["maxrss_children_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / KIB
    result["vmhwm_self_mib"] = vmhwm_mib()
    # CPU time of the worker and its reaped children (DataLoader workers yes; Ray's worker processes are
    # not all reaped here, so for the study this undercounts: it is kept in the JSON, not compared)
    result["cpu_s"] = cpu_seconds()
    try:
        import torch

        if torch.cuda.is_available():
            result["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    except ImportError:
        pass
    tmp = Path(out_path).with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=float))
    os.replace(tmp, out_path)
    return 0


class Runner:
    """Starts workers in fresh processes with their own environment, logs in work_dir/logs."""

    def __init__(self, work_dir: Path, verbose: bool = True):
        self.work_dir = work_dir
        self.verbose = verbose
        (work_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.count = 0

    def say(self, text: str) -> None:
        if self.verbose:
            print(text, file=sys.stderr, flush=True)

    def __call__(self, work: Callable[[dict], dict], spec: dict[str, Any], env: dict[str, str] | None = None,
                 label: str | None = None) -> dict[str, Any]:
        self.count += 1
        name = f"{self.count:02d}-{label or work.__module__.rsplit('.', 1)[-1]}"
        spec_path = self.work_dir / "logs" / f"{name}.spec.json"
        out_path = self.work_dir / "logs" / f"{name}.out.json"
        log_path = self.work_dir / "logs" / f"{name}.log"
        full_env = os.environ.copy()
        full_env.update(env or {})
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        self.say(f"[bench] {name} ... (log: {log_path})")
        load = os.getloadavg()
        spec = {**spec, "t_spawn": time.time()}
        spec_path.write_text(json.dumps(spec, indent=1))
        cmd = [sys.executable, "-m", "benchmarks", "_worker", f"{work.__module__}:{work.__name__}",
               str(spec_path), str(out_path)]
        with open(log_path, "w") as log:
            rc = subprocess.run(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT).returncode
        wall = time.time() - spec["t_spawn"]
        if rc != 0 or not out_path.exists():
            tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-30:])
            raise BenchError(f"the {name} step failed (exit {rc}); the end of {log_path}:\n{tail}")
        out = json.loads(out_path.read_text())
        out["process_wall_s"] = wall
        out["loadavg_before"] = load[0]
        out["loadavg_after"] = os.getloadavg()[0]
        self.say(f"[bench] {name} done in {wall:.1f} s")
        return out


@dataclass
class Bench:
    """What a section's `measure(bench)` gets: the settings, the data, the generated study, and the figures
    so far (`res`, where it stores its own under its name)."""

    args: argparse.Namespace      # the command line (see pipeline.parser)
    root: Path                    # the Chars74K folder (or the synthetic one with --quick)
    env: dict[str, str]           # extra environment of every measured process (HWR_CACHE_DIR, ...)
    study: dict[str, Any]         # the generated study config (activation x normalization x seed)
    configs: list[dict[str, Any]]  # its trial configs, in grid order
    auto_gpu: bool                # no --gpu-per-trial: the study worker picks 0.25 GPU when it sees CUDA
    runner: Runner
    res: dict[str, Any] = field(default_factory=dict)

    @property
    def n_naive(self) -> int:
        """How many naive trials to run for real (--naive-trials; 'all' or at least one)."""
        n = self.args.naive_trials
        return len(self.configs) if n == "all" else max(1, min(int(n), len(self.configs)))

    def spawn(self, work: Callable[[dict], dict], spec: dict[str, Any], label: str | None = None) -> dict[str, Any]:
        """Run `work(spec)` in a fresh process with this benchmark's environment; its figures."""
        return self.runner(work, spec, self.env, label)
