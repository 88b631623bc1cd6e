"""Section `naive`: what the usual Chars74K / Ray-CIFAR-example code does, timed per stage.

An ImageFolder-like Dataset over the PNG paths that PIL-decodes and transforms (grayscale, resize to S,
ToTensor, 3 channels, the same normalization) on every access, a DataLoader with workers, and the whole
VGG16 forward every step (frozen conv params have requires_grad=False, but the forward is not under
no_grad), with the same HWRNet, optimizer, lr, batch size, epochs, seed and sample order as hwr.train.fit.
Trials run one after another (each with all cores for torch plus the loader workers). By default one trial
is run and the study's cost is extrapolated from it (the report says so).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import cpu_seconds
from benchmarks.runner import Bench


class ToThreeChannels:
    """[1, S, S] -> [3, S, S], as InputNorm's expand (a copy, as a typical repo's repeat does)."""

    def __call__(self, x):
        return x.expand(3, -1, -1).contiguous()


class PerImageStandardize:
    """(x - mean) / (std + 1e-6) over the image, InputNorm's 'per_image' (before the channels are copied)."""

    def __call__(self, x):
        return (x - x.mean()) / (x.std() + 1e-6)


def naive_transform(image_size: int, normalization: str):
    """torchvision transforms giving, from a PIL image, what HWRNet.normalize gives from hwr's uint8 array."""
    from torchvision import transforms as T

    from hwr.model import IMAGENET_MEAN, IMAGENET_STD

    steps = [
        T.Grayscale(num_output_channels=1),
        T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.ToTensor(),
    ]
    if normalization == "per_image":
        steps.append(PerImageStandardize())
    steps.append(ToThreeChannels())
    if normalization == "imagenet":
        steps.append(T.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return T.Compose(steps)


class NaiveImages:
    """ImageFolder-like map-style dataset over the PNG paths: every access opens the file with PIL (RGB, as
    torchvision's default loader does) and runs the transforms."""

    def __init__(self, samples, transform):
        self.paths = [str(s.path) for s in samples]
        self.labels = [int(s.label) for s in samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with open(self.paths[i], "rb") as f:
            image = Image.open(f).convert("RGB")
        return self.transform(image), self.labels[i]


def naive_forward(model, x):
    """The whole network every step: conv base (frozen params, but tracked by autograd's forward) + head.
    HWRNet.forward would run the frozen part under no_grad; the naive loop does not."""
    return model.head(model.features(x))


def _loader(dataset, indices, batch_size: int, num_workers: int):
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=batch_size, sampler=list(map(int, indices)), num_workers=num_workers)


def naive_decode_pass(dataset, indices, batch_size: int, num_workers: int) -> dict[str, float]:
    """Time one pass of the DataLoader alone (decode + transforms, no model): what every naive epoch redoes."""
    t, cpu = time.perf_counter(), cpu_seconds()
    n = 0
    for _x, y in _loader(dataset, indices, batch_size, num_workers):
        n += len(y)
    return {"images": n, "s": time.perf_counter() - t, "cpu_s": cpu_seconds() - cpu}


def naive_trial(cfg, dataset, splits, num_workers: int, device=None) -> dict[str, Any]:
    """One trial the naive way, same model, optimizer, sample order and epochs as hwr.train.fit."""
    import torch
    import torch.nn.functional as F

    from hwr.model import build_model
    from hwr.train import EVAL_BATCH, _epoch_seed, _optimizer

    device = device or torch.device("cpu")
    t_start, cpu_start = time.perf_counter(), cpu_seconds()
    model = build_model(cfg.model, cfg.data.image_size, seed=cfg.train.seed).to(device)
    opt = _optimizer(model, cfg)

    def evaluate(indices) -> tuple[float, float]:
        model.eval()
        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for x, y in _loader(dataset, indices, EVAL_BATCH, num_workers):
                x, y = x.to(device), y.to(device)
                logits = naive_forward(model, x)
                loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
                correct += (logits.argmax(1) == y).sum().item()
        n = max(len(indices), 1)
        return loss_sum / n, correct / n

    history, train_s, eval_s = [], [], []
    best_acc, best_state, first_step, diverged = None, None, None, False
    for epoch in range(1, cfg.train.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        seed = _epoch_seed(cfg.train.seed, epoch)
        torch.manual_seed(seed)
        order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(seed)).numpy()
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in _loader(dataset, splits.train[order], cfg.train.batch_size, num_workers):
            if first_step is None:
                first_step = time.perf_counter() - t_start
            x, y = x.to(device), y.to(device)
            logits = naive_forward(model, x)
            loss = F.cross_entropy(logits.float(), y)
            if not torch.isfinite(loss):
                diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        t1 = time.perf_counter()
        val_loss, val_acc = evaluate(splits.val) if not diverged else (float("nan"), float("nan"))
        t2 = time.perf_counter()
        train_s.append(t1 - t0)
        eval_s.append(t2 - t1)
        history.append({"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                        "val_loss": val_loss, "val_acc": val_acc})
        if diverged:
            break
        if best_acc is None or val_acc > best_acc:
            best_acc, best_state = val_acc, model.trainable_state()
    t3 = time.perf_counter()
    test_loss = test_acc = None
    if best_state is not None:
        model.load_trainable_state(best_state)
        test_loss, test_acc = evaluate(splits.test)
    t4 = time.perf_counter()
    return {
        "config": {"activation": cfg.model.activation, "normalization": cfg.model.normalization,
                   "seed": cfg.train.seed},
        "train_epoch_s": train_s, "eval_val_s": eval_s, "test_s": t4 - t3, "total_s": t4 - t_start,
        "cpu_s": cpu_seconds() - cpu_start,
        "first_step_s": first_step, "history": history, "test_acc": test_acc, "test_loss": test_loss,
        "diverged": diverged,
    }


def _naive_setup(spec: dict[str, Any]):
    import numpy as np

    from hwr.config import config_from_dict
    from hwr.data import make_splits, scan

    cfgs = [config_from_dict(c, where="bench naive config") for c in spec["configs"]]
    samples = scan(spec["root"])
    labels = np.array([s.label for s in samples], dtype=np.int64)
    writers = np.array([s.writer for s in samples], dtype=np.int64)
    splits = make_splits(labels, writers, cfgs[0].data.split, cfgs[0].data.split_seed)
    return cfgs, samples, splits


def work(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    cfgs, samples, splits = _naive_setup(spec)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    startup = time.time() - spec["t_spawn"]
    nw = spec["num_workers"]
    out: dict[str, Any] = {"startup_s": startup, "startup_cpu_s": cpu_seconds(),
                           "threads": torch.get_num_threads(), "num_workers": nw,
                           "device": str(device), "splits": [len(splits.train), len(splits.val), len(splits.test)]}
    if spec["decode_pass"]:
        ds = NaiveImages(samples, naive_transform(cfgs[0].data.image_size, cfgs[0].model.normalization))
        out["decode_pass"] = naive_decode_pass(ds, np.concatenate([splits.train, splits.val]),
                                               cfgs[0].train.batch_size, nw)
    trials = []
    for cfg in cfgs:
        ds = NaiveImages(samples, naive_transform(cfg.data.image_size, cfg.model.normalization))
        trials.append(naive_trial(cfg, ds, splits, nw, device))
    out["trials"] = trials
    # process start -> first step of the first trial, leaving out the separate decode-only pass
    out["first_step_from_spawn_s"] = startup + trials[0]["first_step_s"]
    return out


def measure(bench: Bench) -> None:
    """The first --naive-trials trial configs of the study, one after another, in one fresh process."""
    configs = bench.configs[:bench.n_naive]
    bench.res["naive"] = bench.spawn(work, {"root": str(bench.root), "configs": configs,
                                            "num_workers": bench.args.naive_workers, "decode_pass": True})
