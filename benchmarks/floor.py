"""Section `floor`: a large fp32 matmul's FLOP/s with torch (and the GPU's, when there is one): the
machine's reference, measured first and again last (the better of the two is the reference)."""

from __future__ import annotations

import time
from typing import Any

from benchmarks.runner import Bench


def work(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    n, reps = spec["n"], spec["reps"]
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    out = {"n": n, "gflops": 2 * n**3 / best / 1e9, "best_s": best, "threads": torch.get_num_threads(),
           "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        out["cuda_device"] = torch.cuda.get_device_name()
        for dtype in (torch.float32, torch.bfloat16):
            g = torch.randn(8192, 8192, device="cuda", dtype=dtype)
            g @ g
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(10):
                g @ g
            torch.cuda.synchronize()
            out[f"cuda_{str(dtype).split('.')[-1]}_tflops"] = 10 * 2 * 8192**3 / (time.perf_counter() - t) / 1e12
    return out


def measure(bench: Bench) -> None:
    bench.res["floor"] = bench.spawn(work, {"n": bench.args.matmul_n, "reps": 5})


def measure_end(bench: Bench) -> None:
    bench.res["floor_end"] = bench.spawn(work, {"n": bench.args.matmul_n, "reps": 5}, label="floor-end")
