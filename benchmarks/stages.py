"""Section `stages`: ours in one process without Ray (`load_data` + `fit`, as `hwr train` does, minus
checkpoints), each stage timed by wrapping the functions fit calls; its losses are compared with naive's."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from benchmarks.runner import Bench


def work(spec: dict[str, Any]) -> dict[str, Any]:
    """Ours in one process, as `hwr train` runs (load_data + fit), each stage timed by a wrapper."""
    import torch

    import hwr.train as train_mod
    from hwr.config import config_from_dict
    from hwr.data import cache_file

    cfg = config_from_dict(spec["config"], where="bench stages config")
    # One validation per epoch, as the naive loop does, so that the two time the same work.
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, evals_per_epoch=1))
    arrays_hit = cache_file(spec["root"], cfg.data.image_size).exists()
    t_ready = time.time()
    t = time.perf_counter()
    data = train_mod.load_data(cfg.data, progress=False)
    decode_s = time.perf_counter() - t

    times: dict[str, list[float]] = {"features": [], "train": [], "eval": []}
    marks: dict[str, float] = {}
    originals = {n: getattr(train_mod, n) for n in ("frozen_features", "_chunks", "_logits")}

    def timed(name: str, label: str):
        fn = originals[name]

        def wrapper(*args, **kwargs):
            marks.setdefault(label, time.time())
            t0 = time.perf_counter()
            result = fn(*args, **kwargs)
            times[label].append(time.perf_counter() - t0)
            return result

        return wrapper

    def timed_steps(*args, **kwargs):  # training time: inside the generator, not the evaluations between
        marks.setdefault("train", time.time())
        chunks = originals["_chunks"](*args, **kwargs)
        spent = 0.0
        try:  # fit stops iterating at the epoch's end: the time is recorded when the generator is closed
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(chunks)
                except StopIteration:
                    break
                finally:
                    spent += time.perf_counter() - t0
                yield item
        finally:
            times["train"].append(spent)

    features_hit = None
    if cfg.model.trainable_from != "all":
        from hwr.data import default_cache_dir
        from hwr.features import frozen_key

        key = frozen_key(cfg, data.key)
        device = train_mod.pick_device()
        features_hit = (default_cache_dir() / "features" / f"{key}-{device.type}.npy").exists()
    train_mod.frozen_features = timed("frozen_features", "features")
    train_mod._chunks = timed_steps
    train_mod._logits = timed("_logits", "eval")
    try:
        t = time.perf_counter()
        result = train_mod.fit(cfg, data)
        fit_s = time.perf_counter() - t
    finally:
        for n, fn in originals.items():
            setattr(train_mod, n, fn)
    evals = times["eval"]
    return {
        "startup_s": t_ready - spec["t_spawn"], "threads": torch.get_num_threads(), "device": result.device,
        "decode_s": decode_s, "decode_cache_hit": arrays_hit,
        "features_s": sum(times["features"]), "features_cache_hit": features_hit,
        "train_epoch_s": times["train"], "eval_val_s": evals[: len(times["train"])],
        "test_s": sum(evals[len(times["train"]):]), "fit_s": fit_s,
        "trial_s": decode_s + fit_s,
        "first_step_from_spawn_s": marks["train"] - spec["t_spawn"],
        "history": [{k: r[k] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")}
                    for r in result.history],
        "test_acc": result.test_acc,
    }


def measure(bench: Bench) -> None:
    """The study's first trial config (after the study section, if it ran: then the caches are warm)."""
    bench.res["stages"] = bench.spawn(work, {"root": str(bench.root), "config": bench.configs[0]})
