"""`hwr-study plan CONFIG`: what a study will run and about how long it takes, before anything runs.

It prints the specifications, the arms, the seeds, the trial count, the distinct data sections, the distinct
frozen feature sets and an **estimated** CPU time of the run (and of its lr search, when the config has an
optuna section), without starting Ray or importing torch.

The cost model (`trial_seconds`) is calibrated on figures measured on this 2-core machine when it was quiet
(docs/performance.md, 2026-11-24; real Chars74K, paper split, 2,273 training and 569 validation images):

- a frozen head at 64 px: 0.63 s per training epoch + 0.03 s per validation pass, so 0.87 s per epoch at 8
  evaluations per epoch; at 32 px 0.6 s per epoch (8 evaluations; the in-house study's trials took 1.96 s
  per epoch each, two at a time on one core each, i.e. 0.98 s of the machine's time per epoch at one
  evaluation, on a machine shared with other jobs). In between and beyond, linear in the head's
  multiply-adds (512 x (size/32)^2 inputs -> 1024 -> 1024 -> 62).
- trainable conv blocks (`model.trainable_from` block1-block5, all): not measured here (the machine was
  oversubscribed when this model was written: a 3-epoch synthetic run took 12-18 s per epoch at a load of 25);
  estimated from their multiply-adds, training at 3x the forward cost, validation at 1x, run at 100 GFLOP/s,
  half the 196 GFLOP/s the frozen-feature forwards reach on the 2 cores (backward passes run less
  efficiently). At 32 px block5 adds about 6.4 s per epoch (8 evaluations).
- each frozen feature set: a forward over the 3,410 images at 196 GFLOP/s (measured 43.6 s at 64 px);
  each trial: 1 s of start-up and test evaluation; Ray's start: 15 s.
- epochs inside a Ray Tune study cost `RAY_STUDY_FACTOR` = 2 times these figures: the in-house study's 40
  trials (results/inhouse) ran at 0.98 s of the machine per epoch where the figures give 0.49.
- the synthetic set is costed as Chars74K (it has the same layout); optimizer, dropout, init and split
  change the cost too little to model.

Trials fill the cores (`resources.cpu` each), so the wall time is the sum of the trials' machine time on
2 cores, scaled by 2 / cores. It is an estimate: expect +-50 %, more on a machine shared with other work.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from hwr.config import Config
from study.config import StudyConfig
from study.grid import arm_groups

N_TRAIN, N_VAL, N_IMAGES = 2273, 569, 3410  # Chars74K, paper split
HEAD_S_32, HEAD_S_64 = 0.60, 0.87  # s per epoch, frozen head, 8 evaluations per epoch, 2 cores
EVAL_S_64 = 0.03  # s per validation pass of a 64 px head
CONV_TRAIN_GFLOPS, CONV_FORWARD_GFLOPS = 100.0, 196.0
TRIAL_OVERHEAD_S, RAY_START_S = 1.0, 15.0
# The in-house study (results/inhouse: 40 trials x 30 epochs, real data, 32 px frozen, 1 evaluation per epoch)
# took 1.96 s per trial-epoch two at a time, 0.98 s of the machine per epoch, where the figures above give 0.49:
# inside Ray Tune, one torch thread per trial, on this shared machine, epochs cost about twice as much.
RAY_STUDY_FACTOR = 2.0
CALIBRATION_CORES = 2
# VGG16's conv blocks: (input channels, output channels) of each conv, and the block's downsampling before it.
VGG_BLOCKS = {"block1": ((3, 64), (64, 64)), "block2": ((64, 128), (128, 128)),
              "block3": ((128, 256), (256, 256), (256, 256)), "block4": ((256, 512), (512, 512), (512, 512)),
              "block5": ((512, 512), (512, 512), (512, 512))}
ORDER = ("block1", "block2", "block3", "block4", "block5")
FIRST_TRAINABLE = {"all": 0, "block1": 0, "block2": 1, "block3": 2, "block4": 3, "block5": 4, "none": 5}


def head_macs(image_size: int) -> float:
    return 512 * (image_size // 32) ** 2 * 1024 + 1024 * 1024 + 1024 * 62


def conv_macs(image_size: int, blocks: list[str]) -> float:
    """Multiply-adds of one image through the named VGG16 conv blocks."""
    total = 0.0
    for name in blocks:
        side = image_size // 2 ** ORDER.index(name)
        total += sum(9 * cin * cout * side * side for cin, cout in VGG_BLOCKS[name])
    return total


def head_seconds(cfg: Config) -> float:
    """s per epoch of the head (training + validation), linear in its multiply-adds through the two
    measured points, with the validation passes scaled to `train.evals_per_epoch`."""
    slope = (HEAD_S_64 - HEAD_S_32) / (head_macs(64) - head_macs(32))
    at8 = HEAD_S_32 + slope * (head_macs(cfg.data.image_size) - head_macs(32))
    per_eval = EVAL_S_64 * head_macs(cfg.data.image_size) / head_macs(64)
    return at8 + (cfg.train.evals_per_epoch - 8) * per_eval


def trainable_blocks(trainable_from: str) -> list[str]:
    return list(ORDER[FIRST_TRAINABLE[trainable_from]:])


def trial_seconds(cfg: Config) -> float:
    """Estimated machine seconds (2 cores) of one trial: its epochs plus start-up and test evaluation."""
    conv = conv_macs(cfg.data.image_size, trainable_blocks(cfg.model.trainable_from))
    conv_s = 2 * conv * (3 * N_TRAIN + cfg.train.evals_per_epoch * N_VAL) / (CONV_TRAIN_GFLOPS * 1e9)
    return RAY_STUDY_FACTOR * cfg.train.epochs * (head_seconds(cfg) + conv_s) + TRIAL_OVERHEAD_S


def frozen_parts(cfg: Config) -> tuple | None:
    """The config-level parts of hwr.features.frozen_key (the data section stands in for the images), or None
    when nothing before the head is frozen."""
    m = cfg.model
    if FIRST_TRAINABLE[m.trainable_from] == 0:
        return None
    base = m.weights if m.weights != "none" else f"random-seed{cfg.train.seed if m.base_seed is None else m.base_seed}"
    return (data_label(cfg), base, m.normalization, m.trainable_from)


def frozen_seconds(parts: tuple, image_size: int) -> float:
    frozen = list(ORDER[:FIRST_TRAINABLE[parts[3]]])
    return 2 * conv_macs(image_size, frozen) * N_IMAGES / (CONV_FORWARD_GFLOPS * 1e9)


def data_label(cfg: Config) -> str:
    return json.dumps(dataclasses.asdict(cfg.data), sort_keys=True)


@dataclasses.dataclass
class Plan:
    specifications: list[tuple[str, dict[str, Any]]]
    arms: list[tuple[Any, ...]]
    seeds: list[int]
    trials: int
    data_sections: list[dict[str, Any]]
    frozen_sets: list[tuple]
    run_seconds: float
    search_trials: int = 0
    search_seconds: float = 0.0  # expected with ASHA's early stopping (search_max_seconds without it)
    search_max_seconds: float = 0.0  # every search trial runs all its epochs
    cores: int = CALIBRATION_CORES
    trials_max: int | None = None  # adaptive seeds: trials at `max` seeds (`trials`: at `min`)
    run_max_seconds: float | None = None


def make_plan(study: StudyConfig, cores: int | None = None) -> Plan:
    cores = cores or os.cpu_count() or CALIBRATION_CORES
    configs = study.trial_configs()
    scale = CALIBRATION_CORES / cores
    frozen = {}
    for cfg in configs:
        if (parts := frozen_parts(cfg)) is not None:
            frozen.setdefault(parts, frozen_seconds(parts, cfg.data.image_size))
    run_s = RAY_START_S + scale * (sum(map(trial_seconds, configs)) + sum(frozen.values()))
    plan = Plan(
        specifications=[(s.name, s.settings) for s in study.specifications] or [("reference", {})],
        arms=arm_groups([c.to_dict() for c in configs], study.arm_keys),
        seeds=sorted({c.train.seed for c in configs}),
        trials=len(configs),
        data_sections=list({data_label(c): dataclasses.asdict(c.data) for c in configs}.values()),
        frozen_sets=list(frozen), run_seconds=run_s, cores=cores)
    if (a := study.adaptive) is not None:  # the grid holds `min` seeds; `max` of them cost max / min as much
        plan.trials_max = len(configs) * a.max // a.min
        plan.run_max_seconds = RAY_START_S + scale * (sum(map(trial_seconds, configs)) * a.max / a.min
                                                      + sum(frozen.values()))
    if study.optuna is not None:
        from study.lr_file import lr_groups

        groups = lr_groups(study)
        firsts = {}
        for d, cfg in zip(study.trial_dicts(), configs):
            firsts.setdefault(tuple(_values(d, study.lr_keys)), cfg)
        o = study.optuna
        plan.search_trials = len(groups) * o.trials_per_arm
        full = [trial_seconds(firsts[g]) for g in groups]
        share = [asha_share(firsts[g].train.epochs, o) for g in groups]
        plan.search_max_seconds = RAY_START_S + scale * o.trials_per_arm * sum(full)
        plan.search_seconds = RAY_START_S + scale * o.trials_per_arm * sum(
            TRIAL_OVERHEAD_S + (f - TRIAL_OVERHEAD_S) * s for f, s in zip(full, share))
    return plan


def asha_share(epochs: int, optuna) -> float:
    """The expected share of its epochs a search trial runs under ASHA: all run to the first rung, 1/rf of
    them on to the next, and so on (as if every rung were full; the asynchronous version promotes a little
    more early on)."""
    if not optuna.early_stopping:
        return 1.0
    done, ran, k, rf = 0.0, 0.0, 0, optuna.reduction_factor
    while done < epochs:
        rung = min(float(optuna.grace_epochs * rf ** k), float(epochs))
        ran += (rung - done) / rf ** k
        done, k = rung, k + 1
    return ran / epochs


def _values(config: dict[str, Any], keys: tuple[str, ...]) -> tuple:
    from study.grid import arm_of

    return arm_of(config, keys)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def render(study: StudyConfig, plan: Plan) -> str:
    lines = [f"Study {study.name} ({study.source})", f"Specifications ({len(plan.specifications)}):"]
    width = max(len(n) for n, _ in plan.specifications)
    for name, settings in plan.specifications:
        shown = ", ".join(f"{k}={v}" for k, v in settings.items()) or "the config's own values"
        mark = " (reference)" if name == study.reference else ""
        lines.append(f"  {name:<{width}}  {shown}{mark}")
    lines.append(f"Arms ({len(plan.arms)}, {' x '.join(study.arm_keys)}): "
                 + ", ".join("+".join(map(str, a)) for a in plan.arms))
    if (a := study.adaptive) is not None:
        lines.append(f"Seeds: adaptive, {a.min} to {a.max} per specification from seed {a.first}, until the "
                     f"confidence sequence decides (alpha {a.alpha:g}, margin {a.margin:g}, method {a.method})")
        lines.append(f"Trials: {plan.trials} to {plan.trials_max} (adaptive seeds; a failed seed is replaced)")
    else:
        lines.append(f"Seeds ({len(plan.seeds)}): {', '.join(map(str, plan.seeds))}")
        lines.append(f"Trials: {plan.trials}")
    lines.append(f"Data sections ({len(plan.data_sections)}):")
    for d in plan.data_sections:
        lines.append("  " + ", ".join(f"{k}={v}" for k, v in d.items() if v is not None))
    lines.append(f"Frozen feature sets ({len(plan.frozen_sets)}, computed once each):")
    for parts in plan.frozen_sets:
        d = json.loads(parts[0])
        lines.append(f"  {d['dataset']} {d['image_size']} px {d['split']} split, base {parts[1]}, "
                     f"normalization {parts[2]}, trainable from {parts[3]}")
    run = _minutes(plan.run_seconds) + (f" to {_minutes(plan.run_max_seconds)}" if plan.run_max_seconds else "")
    lines.append(f"Estimated CPU time of the run: {run} on {plan.cores} core(s) "
                 f"(an estimate from study/plan.py's cost model; expect +-50 %)")
    if study.optuna is not None:
        o = study.optuna
        lines.append(f"lr search: {plan.search_trials} trials ({o.trials_per_arm} per "
                     f"{'specification and arm' if study.specifications else 'arm'}, seeds "
                     f"{', '.join(map(str, o.seeds))}): about {_minutes(plan.search_seconds)} with ASHA early "
                     f"stopping, at most {_minutes(plan.search_max_seconds)} (the same cost model)")
        lines.append(f"Estimated CPU time of search and run: {_minutes(plan.search_seconds + plan.run_seconds)}")
    return "\n".join(lines)
