"""`hwr`: the command line of the Ray-free library (data, train, predict).

Every user mistake ends as one sentence on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hwr import __version__
from hwr.config import load_config
from hwr.data import CLASSES, DataError, download, find_root, make_splits, scan, verify
from hwr.data.fetch import OFFICIAL_URL
from hwr.errors import UserError, os_error
from hwr.files import unwritable
from hwr.predict import PredictError, predict
from hwr.recipe import PretrainError
from hwr.train import CHECKPOINT_FILE, TrainError, train_to_dir

USER_ERRORS = (UserError,)  # ConfigError, DataError, ModelError, TrainError, PredictError, PretrainError, ...


def _data(args: argparse.Namespace) -> None:
    root = find_root(args.data_dir)
    if args.action == "download":
        download(root, url=args.url)
        print(f"Chars74K downloaded and verified in {root}")
        return
    if args.action == "verify":
        info = verify(root, progress=True)
        print(f"{info.root}: {info.layout} layout, {info.num_classes} classes, {info.num_images} images; "
              f"every file checked (against the sha256 manifest of the genuine set, else by decoding it)")
        return
    if args.split_seed < 0:
        raise DataError(f"--split-seed must be >= 0, got {args.split_seed}.")
    samples = scan(root)
    import numpy as np

    labels = np.array([s.label for s in samples])
    writers = np.array([s.writer for s in samples])
    splits = make_splits(labels, writers, args.split, args.split_seed)
    print(f"root:    {root}")
    print(f"classes: {len(set(labels.tolist()))}")
    print(f"images:  {len(samples)}")
    print(f"split:   {args.split} (seed {args.split_seed}) train/val/test = "
          f"{len(splits.train)}/{len(splits.val)}/{len(splits.test)}")


def _train(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, args.set)
    out = Path(args.out)
    if why := unwritable(out):
        raise TrainError(f"--out {out} cannot be written: {why}.")
    if args.fresh and (out / CHECKPOINT_FILE).exists():
        (out / CHECKPOINT_FILE).unlink()
    total = cfg.train.epochs

    def show(record, summary, last):
        print(f"epoch {record['epoch']:>3}/{total}  train_loss {record['train_loss']:.4f}  "
              f"train_acc {record['train_acc']:.3f}  val_loss {record['val_loss']:.4f}  "
              f"val_acc {record['val_acc']:.3f}  {record['epoch_time_s']:.1f}s", flush=True)

    result = train_to_dir(cfg, out, on_epoch=show)
    state = "diverged" if result.diverged else "finished"
    test = "n/a" if result.test_acc is None else f"{result.test_acc:.4f}"
    print(f"{state}: best epoch {result.best_epoch}, test_acc {test}; outputs in {out}")


def _pretrain(args: argparse.Namespace) -> None:
    from hwr.bases import RECIPES, base_path, base_problem, pretrain, sidecar_path
    from hwr.recipe import load_recipe

    recipe = load_recipe(args.config, args.set)
    name = next((n for n, r in RECIPES.items() if r == recipe), "recipe")  # a named recipe's base is model.weights=<name>
    out = Path(args.out) if args.out else base_path(recipe, name)
    if out.suffix not in (".pt", ".pth"):
        raise PretrainError(f"--out {out} must end in .pt or .pth, as model.weights expects.")
    if out.exists() and not args.fresh and base_problem(out) is None:  # a damaged one is built again
        print(f"cached: {out} (the same recipe was built before; --fresh rebuilds it)")
    else:
        pretrain(recipe, out)
    sidecar = json.loads(sidecar_path(out).read_text())
    own = ", ".join(f"{k} {v:.3f}" for k, v in sidecar["held_out_accuracy"].items())
    print(f"base: {out}\nsidecar: {sidecar_path(out)}\nheld-out accuracy ({sidecar['num_classes']} glyph classes): "
          f"{own}; {sidecar['seconds']['total']:.0f} s to build")
    use = name if name != "recipe" else str(out)
    print(f"use it with: --set model.weights={use}")


def _predict(args: argparse.Namespace) -> None:
    if not 1 <= args.top <= len(CLASSES):
        raise PredictError(f"--top must be between 1 and {len(CLASSES)}, got {args.top}.")
    for p in predict(Path(args.checkpoint), [Path(i) for i in args.images], k=args.top):
        print(f"{p.image}: " + "  ".join(f"{c} {prob:.3f}" for c, prob in p.top))


def _serve(args: argparse.Namespace) -> None:
    from hwr.serve import serve

    serve(Path(args.checkpoint), host=args.host, port=args.port)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hwr", description="Chars74K handwritten characters with VGG16.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="download, verify or describe the Chars74K set")
    d.add_argument("action", choices=["verify", "info", "download"])
    d.add_argument("--data-dir", help="dataset folder (default: $HWR_DATA_DIR, else the user cache)")
    d.add_argument("--split", choices=["paper", "writer"], default="paper")
    d.add_argument("--split-seed", type=int, default=0)
    d.add_argument("--url", default=OFFICIAL_URL, help="download: the archive's URL (file:// for a local copy)")
    d.set_defaults(func=_data)

    t = sub.add_parser("train", help="train one run and write history.csv, summary.json, checkpoint.pt")
    t.add_argument("--config", help="YAML file with data/model/train sections")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. train.lr=3e-4")
    t.add_argument("--out", required=True, help="output folder; an existing run of the same config resumes")
    t.add_argument("--fresh", action="store_true", help="start over instead of resuming")
    t.set_defaults(func=_train)

    r = sub.add_parser("pretrain", help="pretrain a VGG16 conv base on rendered glyphs (offline); see docs/pretraining.md")
    r.add_argument("--config", help="recipe YAML with glyphs/augment/train sections (default: the built-in recipe)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. train.samples=20000")
    r.add_argument("--out", help="where to write the base (.pt; default: the cache, by recipe hash)")
    r.add_argument("--fresh", action="store_true", help="rebuild even if this recipe's base exists")
    r.set_defaults(func=_pretrain)

    p = sub.add_parser("predict", help="top characters for images, from a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+")
    p.add_argument("--top", type=int, default=3)
    p.set_defaults(func=_predict)

    s = sub.add_parser("serve", help="a page to draw a character (or upload an image) and see the top 3")
    s.add_argument("checkpoint", help="checkpoint.pt, a run folder, a trial folder or a study's experiment folder")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    s.set_defaults(func=_serve)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except USER_ERRORS as e:
        print(f"hwr: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a folder that cannot be written: files are written whole or not at all
        print(f"hwr: error: {os_error(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
