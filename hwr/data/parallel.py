"""Run a function over chunks of a list, in worker processes when the list is long."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def map_chunks(
    fn: Callable[..., R],
    items: Sequence[T],
    *args: object,
    workers: int | None = None,
    chunk_size: int = 64,
    progress: bool = False,
    desc: str | None = None,
    min_parallel: int = 256,
) -> list[R]:
    """[fn(chunk, *args) for chunk in chunks of items], in order, with a per-item tqdm bar.

    workers: processes to use (None = one per CPU when there are more than min_parallel items, else 1);
    1 runs in this process. fn must be a module-level function.
    """
    chunks = [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]
    if workers is None:
        workers = cpu_count() if len(items) > min_parallel else 1
    workers = min(workers, len(chunks))
    results: list[R] = [None] * len(chunks)  # type: ignore[list-item]
    with tqdm(total=len(items), desc=desc, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        if workers <= 1:
            for i, chunk in enumerate(chunks):
                results[i] = fn(chunk, *args)
                bar.update(len(chunk))
            return results
        # fork as torch's DataLoader does on Linux: spawn would re-run an unguarded __main__ script
        context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(fn, chunk, *args): i for i, chunk in enumerate(chunks)}
            try:
                for future in as_completed(futures):
                    i = futures[future]
                    results[i] = future.result()
                    bar.update(len(chunks[i]))
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return results
