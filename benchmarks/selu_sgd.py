"""Why SELU heads collapse under SGD with momentum: the head's hidden units, step by step, per lr.

    hwr-bench selu-sgd --data-dir ../shared/data/chars74k [--lrs 1e-4,1e-3,1e-2,3e-2,6e-2] [--epochs 3]
                       [--json results/multiverse/selu_sgd.json] [--figure results/multiverse/figures/selu_sgd.png]

Protocol: the real paper split at 32 px, the frozen `glyphs` base (its features from the disk cache), the
paper's head (FC1024-act-FC1024-act-FC62, each activation's own init), SGD momentum 0.9, batch 32, seed 0,
each of the four arms (activation x input normalization) at every lr. Every `--every` steps it records, on
a fixed batch of 512 validation images: per hidden layer the pre-activation mean and standard deviation, the
share of units *stuck* (a unit whose pre-activation is below -3 (SELU: derivative < 0.09, output within 5 %
of its floor -1.76) or below 0 (ReLU: derivative 0) on every one of those images, so it passes almost no
gradient and outputs a constant), the mean output (SELU's self-normalisation wants 0), the logits' standard
deviation; and the training loss, gradient norm and, at each epoch end, the validation accuracy.
Prints one JSON line per (arm, lr) and writes them all to --json, and the figure to --figure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hwr.config import load_config
from hwr.features import frozen_features, frozen_key
from hwr.model import build_model
from hwr.train import load_data

ARMS = (("selu", "none"), ("relu", "per_image"), ("selu", "per_image"), ("relu", "none"))
STUCK_BELOW = {"selu": -3.0, "relu": 0.0}
COLLAPSE_LR = 0.03  # the figure's third panel: the first steps at this lr


def _hidden_stats(head: nn.Sequential, x: torch.Tensor, activation: str) -> dict[str, float]:
    """Pre-activation statistics of both hidden layers (and the logits) on `x`, in eval mode."""
    out: dict[str, float] = {}
    h, layer = x.flatten(1), 0
    with torch.no_grad():
        for module in head:
            pre = module(h) if not isinstance(module, nn.Flatten) else h
            if isinstance(module, nn.Linear) and module.out_features != head[-1].out_features:
                layer += 1
                stuck = (pre < STUCK_BELOW[activation]).all(dim=0).float().mean().item()
                out |= {f"pre{layer}_mean": pre.mean().item(), f"pre{layer}_std": pre.std().item(),
                        f"stuck{layer}": stuck}
            elif isinstance(module, (nn.SELU, nn.ReLU)):
                out[f"out{layer}_mean"] = pre.mean().item()
            h = pre
        out["logit_std"] = h.std().item()
    return out


def probe(features: torch.Tensor, labels: torch.Tensor, splits, activation: str, normalization: str, lr: float,
          epochs: int, every: int, seed: int = 0) -> dict:
    cfg = load_config(None, [f"model.activation={activation}", f"model.normalization={normalization}",
                             "model.trainable_from=none", "data.image_size=32", f"train.seed={seed}"])
    model = build_model(cfg.model, 32, seed=seed, conv_base=False)
    head = model.head
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9)
    train_idx, val_idx = torch.from_numpy(splits.train), torch.from_numpy(splits.val)
    probe_x = features[val_idx[:512]]
    rows, step, val_acc = [], 0, []
    for epoch in range(1, epochs + 1):
        order = train_idx[torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(seed * 1000 + epoch))]
        for start in range(0, len(order), 32):
            idx = order[start : start + 32]
            head.train()
            loss = F.cross_entropy(head(features[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            grad = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in head.parameters()))
            opt.step()
            if step % every == 0:
                head.eval()
                rows.append({"step": step, "loss": loss.item(), "grad_norm": grad,
                             **_hidden_stats(head, probe_x, activation)})
            step += 1
        head.eval()
        with torch.no_grad():
            val_acc.append((head(features[val_idx]).argmax(1) == labels[val_idx]).float().mean().item())
    return {"activation": activation, "normalization": normalization, "lr": lr, "val_acc": val_acc, "curve": rows}


def feature_stats(features: torch.Tensor) -> dict[str, float]:
    flat = features.flatten(1)
    return {"mean": flat.mean().item(), "std": flat.std().item(), "zero_share": (flat == 0).float().mean().item(),
            "row_norm_median": flat.norm(dim=1).median().item()}


def figure(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for activation, normalization in ARMS:
        runs = sorted((r for r in results if (r["activation"], r["normalization"]) == (activation, normalization)),
                      key=lambda r: r["lr"])
        lrs = [r["lr"] for r in runs]
        label = f"{activation}+{normalization}"
        axes[0].plot(lrs, [r["val_acc"][-1] for r in runs], "o-", label=label)
        axes[1].plot(lrs, [max(row["stuck1"] for row in r["curve"]) for r in runs], "o-", label=label)
        collapse = next((r for r in runs if r["lr"] == COLLAPSE_LR), None)
        if collapse is not None:
            axes[2].plot([row["step"] for row in collapse["curve"]], [row["logit_std"] for row in collapse["curve"]],
                         label=label)
    axes[0].set(xscale="log", xlabel="SGD lr (momentum 0.9)", ylabel="val accuracy, last epoch",
                title="accuracy against lr")
    axes[1].set(xscale="log", xlabel="SGD lr", ylabel="largest share of stuck units, layer 1",
                title="hidden units that pass no gradient")
    axes[2].set(yscale="log", xlabel=f"step (lr {COLLAPSE_LR:g})", ylabel="std of the logits",
                title=f"the first steps at lr {COLLAPSE_LR:g}")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hwr-bench selu-sgd", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True, help="the Chars74K folder (original layout)")
    ap.add_argument("--weights", default="glyphs", help="the frozen base (default glyphs)")
    ap.add_argument("--lrs", default="1e-4,1e-3,3e-3,1e-2,3e-2,6e-2", help="comma-separated SGD learning rates")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    ap.add_argument("--every", type=int, default=5, help="record the hidden units every N steps (default 5)")
    ap.add_argument("--json", type=Path, help="write every run's record here")
    ap.add_argument("--figure", type=Path, help="write the figure here (PNG)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    lrs = [float(v) for v in args.lrs.split(",")]
    results, feats = [], {}
    for normalization in ("none", "per_image"):
        cfg = load_config(None, [f"data.root={args.data_dir}", "data.image_size=32", f"model.weights={args.weights}",
                                 "model.trainable_from=none", f"model.normalization={normalization}"])
        data = load_data(cfg.data, progress=False)
        model = build_model(cfg.model, 32, seed=0)
        z = frozen_features(model, data.images, frozen_key(cfg, data.key), torch.device("cpu"))
        feats[normalization] = (z.float(), torch.from_numpy(data.labels).long(), data.splits)
        print(json.dumps({"features": normalization, **feature_stats(z.float())}), flush=True)
    for activation, normalization in ARMS:
        z, y, splits = feats[normalization]
        for lr in lrs:
            run = probe(z, y, splits, activation, normalization, lr, args.epochs, args.every)
            last = run["curve"][-1]
            print(json.dumps({k: run[k] for k in ("activation", "normalization", "lr", "val_acc")}
                             | {"stuck1_max": max(r["stuck1"] for r in run["curve"]), "last": last}), flush=True)
            results.append(run)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        stats = {k: feature_stats(v[0]) for k, v in feats.items()}
        args.json.write_text(json.dumps({"features": stats, "runs": results}, indent=1) + "\n")
    if args.figure:
        figure(results, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
