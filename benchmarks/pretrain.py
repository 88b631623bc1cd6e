"""How well a glyph-pretrained base transfers: pretrain a recipe, then train the paper's head on its frozen
features of the real Chars74K split, once per input convention. A benchmark, not a test.

    python -m benchmarks.pretrain --data-dir ../shared/data/chars74k [--recipe R.yaml] [--set train.samples=20000]
    python -m benchmarks.pretrain --data-dir ../shared/data/chars74k --base glyphs      # a named base

Protocol (as in docs/pretraining.md): 32 px (the recipe's image size), `trainable_from: none`, a ReLU
head FC1024-FC1024-FC62, Adam lr 1e-3, batch 32, 15 epochs, seed 0; the figure is the validation
accuracy of the best epoch and the test accuracy of that epoch's weights, per `normalization`.
Prints one JSON object (and appends it to --jsonl when given).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from hwr.config import ConfigError, load_config
from hwr.bases import RECIPES, base_path, ensure_base, pretrain, sidecar_path
from hwr.recipe import PretrainError, load_recipe
from hwr.train import fit


def transfer(weights: str, data_dir: str, image_size: int, normalization: str, activation: str = "relu",
             epochs: int = 15, seed: int = 0) -> dict:
    """Best-epoch validation accuracy and its test accuracy of a frozen-base head."""
    cfg = load_config(None, [f"data.root={data_dir}", f"data.image_size={image_size}", f"model.weights={weights}",
                             "model.trainable_from=none", f"model.activation={activation}",
                             f"model.normalization={normalization}", "train.optimizer=adam", "train.lr=1e-3",
                             f"train.epochs={epochs}", f"train.seed={seed}"])
    t0 = time.perf_counter()
    result = fit(cfg)
    return {"val_acc": result.best_val_acc, "test_acc": result.test_acc, "best_epoch": result.best_epoch,
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pretrain", description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True, help="the Chars74K folder")
    ap.add_argument("--recipe", help="recipe YAML (default: the built-in default recipe)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--base", choices=sorted(RECIPES), help="evaluate a named base instead of a recipe")
    ap.add_argument("--label", default="", help="a name for this recipe in the output")
    ap.add_argument("--conventions", default="per_image,none", help="normalizations to evaluate")
    ap.add_argument("--activations", default="relu")
    ap.add_argument("--jsonl", help="append the result to this file")
    args = ap.parse_args(argv)
    try:
        if args.base:
            path = ensure_base(args.base)
            recipe_doc = json.loads(sidecar_path(path).read_text())
        else:
            recipe = load_recipe(args.recipe, args.set)
            path = base_path(recipe, "bench")
            if not path.exists():
                pretrain(recipe, path)
            recipe_doc = json.loads(sidecar_path(path).read_text())
        out = {"label": args.label or args.base or ",".join(args.set) or "default",
               "overrides": args.set, "base": path.name,
               "pretrain_seconds": recipe_doc["seconds"]["total"],
               "pretrain_samples": recipe_doc["samples"], "classes": recipe_doc["num_classes"],
               "held_out_accuracy": recipe_doc["held_out_accuracy"], "transfer": {}}
        size = recipe_doc["image_size"]
        for act in args.activations.split(","):
            for conv in args.conventions.split(","):
                out["transfer"][f"{act},{conv}"] = transfer(str(path), args.data_dir, size, conv, act)
                print(f"{act},{conv}: {out['transfer'][f'{act},{conv}']}", file=sys.stderr, flush=True)
    except (ConfigError, PretrainError) as e:
        print(f"benchmarks.pretrain: error: {e}", file=sys.stderr)
        return 2
    line = json.dumps(out)
    print(line)
    if args.jsonl:
        with open(args.jsonl, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
