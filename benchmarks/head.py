"""Section `head`: 224 px frozen base: the frozen features of the training images exist, time one
head-training epoch over them; the frozen-feature computation's achieved FLOP/s against the matmul reference."""

from __future__ import annotations

import time
from typing import Any

from benchmarks.runner import Bench


def work(spec: dict[str, Any]) -> dict[str, Any]:
    """224 px frozen base: frozen features of the training images, then one (and a second) head epoch."""
    import numpy as np
    import torch
    from PIL import Image

    from hwr.config import config_from_dict
    from hwr.data import Splits, make_splits, preprocess, scan
    from hwr.features import compute_frozen
    from hwr.model import build_model
    from hwr.train import TrainingData, _chunks, _Inputs, _optimizer

    cfg = config_from_dict(spec["config"], where="bench head config")
    size = cfg.data.image_size
    samples = scan(spec["root"])
    labels = np.array([s.label for s in samples], dtype=np.int64)
    writers = np.array([s.writer for s in samples], dtype=np.int64)
    train = make_splits(labels, writers, cfg.data.split, cfg.data.split_seed).train
    n_train = len(train)
    k = n_train if spec["images"] in (None, "all") else min(int(spec["images"]), n_train)

    t = time.perf_counter()
    images = np.empty((k, size, size), dtype=np.uint8)
    for i, j in enumerate(train[:k]):
        with Image.open(samples[j].path) as im:
            images[i] = preprocess(im, size)
    decode_s = time.perf_counter() - t

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(cfg.model, size, seed=cfg.train.seed).to(device)
    t = time.perf_counter()
    z = compute_frozen(model, images, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    features_s = time.perf_counter() - t
    if k < n_train:  # the head's cost does not depend on the values: the k real rows, repeated
        z = z[torch.arange(n_train) % k]
    data = TrainingData(images=np.zeros((n_train, 1, 1), np.uint8), labels=labels[train],
                        splits=Splits(np.arange(n_train), np.zeros(0, np.int64), np.zeros(0, np.int64)),
                        key="bench-head")
    inputs = _Inputs(model, data, device, z)
    opt = _optimizer(model, cfg)
    epochs = []
    for epoch in (1, 2):
        t = time.perf_counter()
        loss, acc, diverged = _train_epoch(_chunks, model, inputs, opt, data.splits.train, cfg, epoch, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        epochs.append({"epoch": epoch, "s": time.perf_counter() - t, "train_loss": loss, "diverged": diverged})
    return {"image_size": size, "train_images": n_train, "feature_images": k, "tiled": k < n_train,
            "decode_s": decode_s, "features_s": features_s, "feature_shape": list(z.shape[1:]),
            "threads": torch.get_num_threads(), "device": str(device), "epochs": epochs}


def _train_epoch(chunks, model, inputs, opt, indices, cfg, epoch, device) -> tuple[float, float, bool]:
    """hwr.train's loop for one whole pass with no evaluation in it: (mean loss, accuracy, diverged)."""
    import math

    steps = math.ceil(len(indices) / cfg.train.batch_size)
    loss_sum = correct = seen = 0.0
    for _, loss, acc, diverged, n in chunks(model, inputs, opt, indices, cfg, epoch, device, [steps]):
        if diverged:
            return loss, correct / max(seen, 1), True
        loss_sum, correct, seen = loss_sum + loss * n, correct + acc * n, seen + n
    return loss_sum / seen, correct / seen, False



def measure(bench: Bench) -> None:
    """The study's first trial config at --head-size px, features of --head-images training images."""
    cfg = {**bench.configs[0], "data": {**bench.configs[0]["data"], "image_size": bench.args.head_size}}
    bench.res["head"] = bench.spawn(work, {"root": str(bench.root), "config": cfg, "images": bench.args.head_images})
