"""`hwr-bench` (also `python -m benchmarks`): the project's benchmarks, one command each.

    hwr-bench pipeline --data-dir ../shared/data/chars74k     # naive pipeline vs ours (docs/performance.md)
    hwr-bench NAME --help                                      # a benchmark's own options

A benchmark is a module with `main(argv) -> exit code`; it plugs in with one line in BENCHMARKS
(name -> module, imported only when run). Benchmarks measure and print; they do not assert.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hwr import __version__

BENCHMARKS = {  # name -> (module, what it measures)
    "pipeline": ("benchmarks.pipeline", "naive pipeline vs ours, per stage and for a whole study"),
    "checkpoints": ("benchmarks.checkpoints", "checkpoint bytes and time share per trial, before/after, GPU projection"),
    "first-step": ("benchmarks.first_step", "where a study's first training step goes on a fresh local Ray"),
    "gpu-check": ("benchmarks.gpu_check", "paper scale on one GPU (benchmarks/gpu_check.sh; --dry-run on a CPU)"),
    "pretrain": ("benchmarks.pretrain", "how well a glyph-pretrained base transfers to the real set (docs/pretraining.md)"),
    "serve": ("benchmarks.serve", "hwr serve's latency per prediction (drawing and upload)"),
    "analysis": ("benchmarks.analysis_cost", "the analysis's cost on a simulated experiment of N trials / specifications"),
    "selu-sgd": ("benchmarks.selu_sgd", "why SELU heads collapse under SGD: hidden units per step and lr (docs/analysis.md)"),
    "faults": ("benchmarks.faults", "the fault suite in one run: its table into docs/reliability.md"),
}


def parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {k:<12} {v[1]}" for k, v in sorted(BENCHMARKS.items()))
    ap = argparse.ArgumentParser(
        prog="hwr-bench", description="Benchmarks of the hwr pipeline and the study (docs/performance.md).",
        epilog=f"benchmarks:\n{listing}\n\n`hwr-bench NAME --help` lists a benchmark's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    ap.add_argument("benchmark", choices=sorted(BENCHMARKS), metavar="NAME", help="one of the benchmarks below")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:  # a measured part, in its own process (benchmarks.runner)
        from benchmarks.runner import run_worker

        return run_worker(*argv[1:4])
    args = parser().parse_args(argv[:1])
    module = importlib.import_module(BENCHMARKS[args.benchmark][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
