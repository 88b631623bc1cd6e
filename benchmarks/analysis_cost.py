"""`hwr-bench analysis`: what the analysis costs as studies grow (docs/performance.md, "Analysis cost").

    hwr-bench analysis --seeds 2500 --specs 1               # 10,000 trials (2,500 seeds x 4 arms), one spec
    hwr-bench analysis --seeds 6 --specs 8                  # the multiverse's shape: 8 specs x 4 arms x 6 seeds
    hwr-bench analysis --seeds 250 --specs 1 --json out.json

It simulates an experiment's two tables (``simulated_tables``: saturating validation-accuracy curves at
``--evals`` evaluations an epoch, the four arms of the 2x2, seeds shared by the specifications, SELU
slower than ReLU by an amount that depends on the specification) and times, in this process, the steps
of ``study.analysis.report.write_report``: the per-trial measures, the summary (pooled comparison, one
comparison per specification and the joint inference across them), the figures, and the whole report
written into a temporary folder.  No Ray, no torch.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ARMS = (("selu", "none"), ("relu", "per_image"), ("selu", "per_image"), ("relu", "none"))
SPEC_LEVELS = (("optimizer", ("adam", "sgd")), ("trainable_from", ("none", "block5")),
               ("image_size", (32, 64)), ("dropout", (0.0, 0.5)))


def spec_settings(n_specs: int) -> list[dict]:
    """``n_specs`` specifications: the reference (first level of every axis of ``SPEC_LEVELS``), then
    one-at-a-time departures from it, then pairs of departures."""
    ref = {k: v[0] for k, v in SPEC_LEVELS}
    out = [ref]
    singles = [{**ref, k: v[1]} for k, v in SPEC_LEVELS]
    pairs = [{**ref, a: va[1], b: vb[1]} for i, (a, va) in enumerate(SPEC_LEVELS) for b, vb in SPEC_LEVELS[i + 1:]]
    out += singles + pairs
    if n_specs > len(out):
        raise ValueError(f"--specs can be at most {len(out)}, got {n_specs}")
    return out[:n_specs]


def simulated_tables(n_seeds: int, n_specs: int = 1, epochs: int = 10, evals_per_epoch: int = 4,
                     seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(steps, trials) of a simulated experiment: ``n_specs`` x 4 arms x ``n_seeds`` trials.

    Each trial's validation accuracy rises as plateau * (1 - exp(-epoch / tau)) plus noise; SELU's tau is
    larger than ReLU's by 0.4 epochs under SGD and smaller by 0.2 under block5 fine-tuning (so the
    specifications disagree), and a seed effect shared by all its trials makes specifications correlated.
    """
    rng = np.random.default_rng(seed)
    specs = spec_settings(n_specs)
    x = np.arange(1, epochs * evals_per_epoch + 1) / evals_per_epoch
    seed_effect = rng.normal(0, 0.15, n_seeds)
    rows, trials = [], []
    for si, spec in enumerate(specs):
        for act, norm in ARMS:
            tau = 1.5 + 0.3 * (act == "selu") + 0.1 * (norm == "none")
            if act == "selu":
                tau += 0.4 * (spec["optimizer"] == "sgd") - 0.5 * (spec["trainable_from"] == "block5")
            taus = np.maximum(0.3, tau + seed_effect + rng.normal(0, 0.1, n_seeds))
            plateau = 0.8 + rng.normal(0, 0.01, n_seeds)
            acc = plateau[:, None] * (1 - np.exp(-x[None, :] / taus[:, None])) + rng.normal(0, 0.01, (n_seeds, len(x)))
            loss = 4.0 * (1 - acc) + 0.3
            ids = [f"s{si}_{act}_{norm}_{k}" for k in range(n_seeds)]
            cfg = {"activation": act, "normalization": norm, "lr": 1e-3 if act == "selu" else 2e-3, **spec}
            rows.append(pd.DataFrame({
                "trial_id": np.repeat(ids, len(x)), **{k: v for k, v in cfg.items()},
                "seed": np.repeat(np.arange(n_seeds), len(x)),
                "step": np.tile(np.arange(1, len(x) + 1) * 10, n_seeds), "epoch": np.tile(x, n_seeds),
                "val_acc": acc.ravel(), "val_loss": loss.ravel(), "train_loss": (loss * 0.9).ravel(),
                "train_acc": acc.ravel(), "elapsed_s": np.tile(x * 2.0, n_seeds)}))
            trials.append(pd.DataFrame({
                "trial_id": ids, **{k: v for k, v in cfg.items()}, "seed": np.arange(n_seeds),
                "status": "TERMINATED", "diverged": False, "epochs_run": epochs, "epochs_planned": epochs,
                "test_acc": acc[:, -1] + rng.normal(0, 0.005, n_seeds), "test_loss": loss[:, -1]}))
    return pd.concat(rows, ignore_index=True), pd.concat(trials, ignore_index=True)


def time_analysis(n_seeds: int, n_specs: int, epochs: int, evals_per_epoch: int,
                  n_resamples: int = 10000) -> dict:
    """Seconds of each step of the analysis of one simulated experiment."""
    from study.analysis.convergence import convergence_metrics
    from study.analysis.curves import prepare_curves
    from study.analysis.params import AnalysisParams
    from study.analysis.report import write_report
    from study.analysis.summary import summarize

    t0 = time.perf_counter()
    steps, trials = simulated_tables(n_seeds, n_specs, epochs, evals_per_epoch)
    out = {"n_seeds": n_seeds, "n_specs": n_specs, "n_trials": int(len(trials)), "n_evaluations": int(len(steps)),
           "epochs": epochs, "evals_per_epoch": evals_per_epoch, "simulate_s": time.perf_counter() - t0}
    params = AnalysisParams(n_resamples=n_resamples)
    t = time.perf_counter()
    curves = prepare_curves(steps)
    convergence_metrics(curves, trials, params)
    out["measures_s"] = time.perf_counter() - t
    print(f"  {out['n_trials']} trials: measures_s {out['measures_s']:.1f}", file=sys.stderr, flush=True)
    t = time.perf_counter()
    summary = summarize(steps, trials, params)
    out["summary_s"] = time.perf_counter() - t
    print(f"  {out['n_trials']} trials: summary_s {out['summary_s']:.1f}", file=sys.stderr, flush=True)
    out["verdict"] = summary["verdict"]["label"]
    out["spec_verdicts"] = [s["verdict"]["label"] for s in summary.get("specifications", [])]
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_report(Path(tmp), steps, trials, params, name="bench", source="simulated")
    out["write_report_s"] = time.perf_counter() - t
    print(f"  {out['n_trials']} trials: write_report_s {out['write_report_s']:.1f}", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hwr-bench analysis", description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[10, 250, 2500],
                    help="seeds per arm, one experiment each (default 10 250 2500: 40, 1,000, 10,000 trials)")
    ap.add_argument("--specs", type=int, default=1, help="specifications (default 1; at most 11)")
    ap.add_argument("--epochs", type=int, default=10, help="epochs per trial (default 10)")
    ap.add_argument("--evals", type=int, default=4, help="evaluations per epoch (default 4)")
    ap.add_argument("--resamples", type=int, default=10000, help="analysis.n_resamples (default 10000)")
    ap.add_argument("--json", default=None, help="also write the timings to this JSON file")
    args = ap.parse_args(argv)
    if min(args.seeds) < 1 or args.epochs < 1 or args.evals < 1 or not 1 <= args.specs <= 11:
        print("hwr-bench analysis: --seeds, --epochs and --evals must be >= 1 and --specs in 1..11.", file=sys.stderr)
        return 2
    rows = []
    print("| trials | specs | evaluations | measures s | summary s | write_report s | verdict |")
    print("|---|---|---|---|---|---|---|")
    for n in args.seeds:
        r = time_analysis(n, args.specs, args.epochs, args.evals, args.resamples)
        rows.append(r)
        print(f"| {r['n_trials']:,} | {r['n_specs']} | {r['n_evaluations']:,} | {r['measures_s']:.1f} "
              f"| {r['summary_s']:.1f} | {r['write_report_s']:.1f} | {r['verdict']} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
