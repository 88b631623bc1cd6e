"""Is the live verdict honest? Simulated studies, peeked at after every seed pair.

    python -m study.analysis.simulate [--studies 1000] [--seed 0] [--margin 0] [--betting-bound 3]

Each simulated study draws per-seed differences ``d_i ~ N(-effect, 1)`` (the claimed-faster arm minus the
claimed-slower arm of a lower-is-faster measure, in units of the seed-to-seed standard deviation; so
``effect > 0`` means the claim is true) and is analysed three ways:

- **sequential** (``study.analysis.sequential``): the confidence sequence is looked at after every seed
  from ``min_n`` (4) to ``max_n`` (20) and the study stops at the first decision;
- **fixed n = 10**: a paired t-test and an exact Wilcoxon signed-rank test, looked at once, at 10 seeds;
- **naive peeking**: a t-test (and a z-test with the spread known) looked at after every seed from 4 to
  20 and stopped at the first p < alpha: what a user watching a fixed-n p-value would do.

A false positive is any "faster" or "slower" verdict at effect 0; power is the share of studies that
reach the right sign. Intervals on the rates are Clopper-Pearson (exact binomial). Takes seconds.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

import numpy as np
from scipy import stats

from study.analysis.sequential import EQUIVALENT, FASTER, SLOWER, UNDECIDED, first_decisions


@dataclass(frozen=True)
class Design:
    min_n: int = 4
    max_n: int = 20
    fixed_n: int = 10
    alpha: float = 0.05
    margin: float = 0.0           # equivalence margin, in standard deviations (0: no equivalence stop)
    method: str = "t"
    bound: float | None = None    # for method="betting": the differences are clipped to [-bound, bound]


def rate(k: int, n: int, confidence: float = 0.95) -> dict:
    """A proportion with its Clopper-Pearson interval."""
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return {"k": int(k), "n": int(n), "rate": k / n, "low": float(ci.low), "high": float(ci.high)}


def draw(n_studies: int, effect: float, design: Design, rng: np.random.Generator) -> np.ndarray:
    d = rng.normal(-effect, 1.0, size=(n_studies, design.max_n))
    return np.clip(d, -design.bound, design.bound) if design.bound is not None else d


def sequential_arm(d: np.ndarray, design: Design) -> dict:
    codes, n_used, _, _ = first_decisions(d, design.bound, design.alpha, design.margin, min_n=design.min_n,
                                          method=design.method, grid=400)
    s = len(d)
    return {"faster": rate((codes == FASTER).sum(), s), "slower": rate((codes == SLOWER).sum(), s),
            "equivalent": rate((codes == EQUIVALENT).sum(), s), "undecided": rate((codes == UNDECIDED).sum(), s),
            "decided_sign": rate(np.isin(codes, (FASTER, SLOWER)).sum(), s),
            "median_seeds": float(np.median(n_used)), "mean_seeds": float(n_used.mean())}


def fixed_arm(d: np.ndarray, design: Design) -> dict:
    x = d[:, : design.fixed_n]
    s = len(x)
    t = stats.ttest_1samp(x, 0.0, axis=1)
    w = stats.wilcoxon(x, axis=1, method="exact")
    mean = x.mean(axis=1)
    out = {}
    for name, p in (("t", t.pvalue), ("wilcoxon", w.pvalue)):
        sig = p < design.alpha
        out[name] = {"faster": rate((sig & (mean < 0)).sum(), s), "slower": rate((sig & (mean > 0)).sum(), s),
                     "significant": rate(sig.sum(), s)}
    out["seeds"] = design.fixed_n
    return out


def peeking_arm(d: np.ndarray, design: Design) -> dict:
    """First n in [min_n, max_n] with p < alpha, for a t-test and a z-test (sigma = 1 known)."""
    n = np.arange(1, d.shape[1] + 1, dtype=float)
    mean = np.cumsum(d, axis=1) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.sqrt((np.cumsum(d * d, axis=1) - n * mean ** 2) / (n - 1))
        t = mean / (sd / np.sqrt(n))
    p_t = 2 * stats.t.sf(np.abs(t), np.maximum(n - 1, 1))
    p_z = 2 * stats.norm.sf(np.abs(mean) * np.sqrt(n))
    out = {}
    look = slice(design.min_n - 1, design.max_n)
    for name, p in (("t", p_t), ("z", p_z)):
        sig = p[:, look] < design.alpha
        hit = sig.any(axis=1)
        first = np.where(hit, np.argmax(sig, axis=1) + design.min_n, design.max_n)
        sign = mean[np.arange(len(d)), first - 1]
        out[name] = {"faster": rate((hit & (sign < 0)).sum(), len(d)), "slower": rate((hit & (sign > 0)).sum(), len(d)),
                     "significant": rate(hit.sum(), len(d)), "median_seeds": float(np.median(first))}
    return out


def simulate(n_studies: int = 1000, effects=(0.0, 0.5, 1.0, 2.0), design: Design = Design(),
             seed: int = 0) -> list[dict]:
    """One row per effect size: the sequential, fixed-n and naive-peeking results on the same draws."""
    rng = np.random.default_rng(seed)
    rows = []
    for effect in effects:
        d = draw(n_studies, effect, design, rng)
        rows.append({"effect_sd": effect, "sequential": sequential_arm(d, design), "fixed": fixed_arm(d, design),
                     "peeking": peeking_arm(d, design)})
    return rows


def _pct(r: dict) -> str:
    return f"{100 * r['rate']:.1f}% [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"


def markdown(rows: list[dict], design: Design, n_studies: int) -> str:
    cs = "t-mixture CS" if design.method == "t" else f"betting CS (|d| <= {design.bound})"
    lines = [f"{n_studies} simulated studies per row; {cs}, alpha {design.alpha}, peeking after every seed "
             f"from {design.min_n} to {design.max_n}, equivalence margin {design.margin} SD; "
             "rates with Clopper-Pearson 95% intervals.", "",
             "| true effect (SD) | sequential: right sign | wrong sign | equivalent | seeds used: median (mean) "
             f"| fixed {design.fixed_n}: t-test | fixed {design.fixed_n}: Wilcoxon "
             "| naive peeking t-test | naive peeking z-test |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        s, f, p = row["sequential"], row["fixed"], row["peeking"]
        null = row["effect_sd"] == 0
        right = s["decided_sign"] if null else s["faster"]
        pick = (lambda r: r["significant"]) if null else (lambda r: r["faster"])
        lines.append(
            f"| {row['effect_sd']:g}{' (null: any sign = false positive)' if null else ''} | {_pct(right)} "
            f"| {'-' if null else _pct(s['slower'])} | {_pct(s['equivalent'])} "
            f"| {s['median_seeds']:g} ({s['mean_seeds']:.1f}) | {_pct(pick(f['t']))} | {_pct(pick(f['wilcoxon']))} "
            f"| {_pct(pick(p['t']))} | {_pct(pick(p['z']))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m study.analysis.simulate", description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=1000, help="simulated studies per effect size (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the simulation (default 0)")
    ap.add_argument("--effects", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0],
                    help="true effects in standard deviations (default 0 0.5 1 2)")
    ap.add_argument("--margin", type=float, default=0.0, help="equivalence margin in SD (default 0: none)")
    ap.add_argument("--alpha", type=float, default=0.05, help="error rate (default 0.05)")
    ap.add_argument("--betting-bound", type=float, default=None,
                    help="use the betting CS on differences clipped to [-B, B] (in SD) instead of the t-mixture")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.studies < 10 or not 0 < args.alpha < 1 or args.margin < 0 or (
            args.betting_bound is not None and args.betting_bound <= 0):
        print("simulate: --studies must be >= 10, --alpha in (0, 1), --margin >= 0 and --betting-bound > 0.",
              file=sys.stderr)
        return 2
    design = Design(alpha=args.alpha, margin=args.margin, method="t" if args.betting_bound is None else "betting",
                    bound=args.betting_bound)
    rows = simulate(args.studies, tuple(args.effects), design, args.seed)
    print(markdown(rows, design, args.studies))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"design": vars(design), "studies": args.studies, "seed": args.seed, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
