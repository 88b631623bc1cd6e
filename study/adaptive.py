"""Adaptive seeds: a Ray Tune Searcher that adds seed pairs to each specification until its answer is in.

The config form (study/seeds.py reads it; it replaces the `train.seed` grid axis):

    search:
      model.activation,model.normalization: [[selu, none], [relu, per_image]]   # the arms
      model.weights: [glyphs, glyphs-small]                                     # other axes: specifications
      seeds:
        adaptive: {min: 4, max: 20, margin: 0.02}   # optional: alpha 0.05, method t, bound null, ahead 2, first 0

    -> study_searcher(study) = AdaptiveSeedSearcher(specifications=[{...weights: glyphs}, {...weights: glyphs-small}],
                            arms=[{"model.activation": "selu", "model.normalization": "none"}, ...],
                            adaptive=study.adaptive, faster=params.faster_arm, slower=params.slower_arm)
       Tuner(trainable, param_space=<plain values>, tune_config=TuneConfig(search_alg=searcher,
             num_samples=study.most_trials))   # study.run.run_study does this

When the study ends, `run_study` writes `decisions(searcher)` into the experiment's `adaptive.json`, which
the report shows.

What it does. A *seed pair* is every arm of one specification at one seed (the same `train.seed`, so the
arms pair as in the fixed design). For each specification the searcher first suggests `min` seed pairs,
then one more seed at a time, keeping at most `ahead` seeds running beyond the ones complete. When a
trial ends, its curve (every result it reported, one row each, the last record per step kept, so a
trial resumed from a checkpoint does not count twice) goes through `measure(curve) -> float`, by default
the mean validation error over the curve (``mean_val_error``, lower = faster). The per-seed differences,
claimed-faster arm minus claimed-slower arm, are taken **in seed order** (the longest prefix of seeds whose
pair is complete: the order is fixed before the study, never by which trial happened to finish first) and
fed to the confidence sequence of ``study.analysis.sequential``. A specification stops adding seeds when,
from `min` seeds on, the sequence lies below or above 0 ("faster"/"slower"), lies inside
(-margin, margin) ("equivalent"), or `max` seeds are in ("undecided"). Seeds already running when it
decides still finish (their trials are ordinary trials of the experiment). With several specifications
each stops on its own; `suggest` returns ``Searcher.FINISHED`` once none will add seeds.

A seed whose compared trial errored, or whose measure is not finite, is dropped from the sequence and
replaced by the next seed of the range (crashes are taken to be unrelated to the measure; a diverged
trial ends cleanly and is scored by the measure, by default as error 1 where its accuracy is missing).

Resuming: ``save``/``restore`` pickle the searcher's state (seeds given out, trial ids, curves of running
trials, measures, decisions); Tune calls them itself (``Tuner.restore`` restores the searcher from the
experiment folder). A trial restarted under a new id is recognised from the config in its results.
"""
from __future__ import annotations

import contextlib
import copy
import fnmatch
import functools
import json
import math
import pickle
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs
from ray.tune.search import Searcher

from study.analysis.sequential import sequential_decision
from study.seeds import ADAPTIVE_FILE, AdaptiveSeeds
from study.seeds import find_arm as _find_arm
from study.seeds import flat as _flat

X_KEYS = ("step", "epoch", "training_iteration")  # the curve's time axis, first one present


def mean_val_error(curve: pd.DataFrame) -> float:
    """Default measure: the mean validation error (1 - val_acc) over the curve's evaluations, in [0, 1]
    (a missing or non-finite accuracy, as after a divergence, counts as error 1)."""
    if curve.empty or "val_acc" not in curve:
        return math.nan
    acc = pd.to_numeric(curve["val_acc"], errors="coerce").astype(float)
    return float(np.mean(1.0 - acc.where(np.isfinite(acc), 0.0)))


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    """{"model.activation": "selu"} -> {"model": {"activation": "selu"}} (nested dicts pass through)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        if isinstance(value, dict):
            _merge(node.setdefault(leaf, {}), nested(value))
        else:
            node[leaf] = value
    return out


def _merge(into: dict, other: dict) -> dict:
    for k, v in other.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)
    return into


class AdaptiveSeedSearcher(Searcher):
    """Suggests seed pairs per specification until each one's confidence sequence decides (module doc).

    specifications: nested hwr config dicts (or dotted-key dicts) of the values fixed in each specification;
    arms: dicts of the arm values (e.g. {"model.activation": "selu", "model.normalization": "none"});
    faster / slower: which arms the differences compare, as an index or a dict of values matched on the
    keys' last part (analysis.faster_arm's form); default arms 0 and 1; direction: "lower" when a smaller
    measure means faster; seed_key: the config key of the seed; per_trial(config) -> {dotted key: value},
    if given, sets more keys of each trial (e.g. the arm's tuned lr in its specification).
    """

    def __init__(self, specifications: Sequence[dict], arms: Sequence[dict], adaptive: AdaptiveSeeds = AdaptiveSeeds(),
                 measure: Callable[[pd.DataFrame], float] = mean_val_error, *, faster: dict | int | None = None,
                 slower: dict | int | None = None, direction: str = "lower", seed_key: str = "train.seed",
                 per_trial: Callable[[dict], dict] | None = None, metric: str | None = None, mode: str | None = None):
        super().__init__(metric=metric, mode=mode)
        if not specifications or len(arms) < 2:
            raise ValueError("adaptive seeds need at least one specification and two arms")
        if direction not in ("lower", "higher"):
            raise ValueError(f"direction must be 'lower' or 'higher', got {direction!r}")
        self.specifications = [nested(s) for s in specifications]
        self.arms = [nested(a) for a in arms]
        self.adaptive = adaptive
        self.measure = measure
        self.direction = direction
        self.seed_key = seed_key
        self.per_trial = per_trial
        self.faster = _find_arm(list(arms), faster, 0, "faster")
        self.slower = _find_arm(list(arms), slower, 1, "slower")
        if self.faster == self.slower:
            raise ValueError("the faster and the slower arm must be different arms")
        self._reset()

    def _reset(self) -> None:
        n = len(self.specifications)
        self.launched: list[list[int]] = [[] for _ in range(n)]   # seeds given out, in order
        self.failed: list[set[int]] = [set() for _ in range(n)]   # seeds dropped (a compared trial failed)
        self.decisions: list[dict | None] = [None] * n            # the stopping decision, once made
        self.queue: list[tuple[int, int, int]] = []               # (spec, seed, arm) not yet suggested
        self.trials: dict[str, tuple[int, int, int]] = {}         # trial id -> (spec, seed, arm)
        self.curves: dict[str, dict[Any, dict]] = {}              # running trials: x -> result row
        self.values: dict[tuple[int, int, int], float] = {}       # finished trials' measures

    # -- what to run ---------------------------------------------------------------------------------
    def config(self, spec: int, seed: int, arm: int) -> dict[str, Any]:
        """The nested trial config of one (specification, seed, arm)."""
        cfg = _merge(copy.deepcopy(self.specifications[spec]), self.arms[arm])
        cfg = _merge(cfg, nested({self.seed_key: seed}))
        return _merge(cfg, nested(self.per_trial(cfg))) if self.per_trial is not None else cfg

    def _active(self, spec: int) -> list[int]:
        return [s for s in self.launched[spec] if s not in self.failed[spec]]

    def _done(self, spec: int) -> bool:
        """Decided, or `max` complete pairs, or no seed left: this specification adds no more seeds."""
        return (self.decisions[spec] is not None or len(self.differences(spec)) >= self.adaptive.max
                or self._next_seed(spec) is None)

    def _next_seed(self, spec: int) -> int | None:
        used = set(self.launched[spec])
        return next((s for s in self.adaptive.seeds() if s not in used), None)

    def _wants_seed(self, spec: int) -> bool:
        if self._done(spec):
            return False
        limit = min(self.adaptive.max, max(self.adaptive.min, len(self.differences(spec)) + self.adaptive.ahead))
        return len(self._active(spec)) < limit

    def suggest(self, trial_id: str) -> dict | str | None:
        if not self.queue:
            for spec in range(len(self.specifications)):
                if self._wants_seed(spec):
                    seed = self._next_seed(spec)
                    self.launched[spec].append(seed)
                    self.queue += [(spec, seed, arm) for arm in range(len(self.arms))]
                    break
        if self.queue:
            item = self.queue.pop(0)
            self.trials[trial_id] = item
            self.curves[trial_id] = {}
            return self.config(*item)
        if all(self._done(s) for s in range(len(self.specifications))):
            return Searcher.FINISHED
        return None  # waiting for results (a specification at max waits for its last pairs to finish)

    # -- what came back ------------------------------------------------------------------------------
    def _identify(self, trial_id: str, result: dict | None) -> tuple[int, int, int] | None:
        if trial_id in self.trials:
            return self.trials[trial_id]
        if not result:
            return None
        given = {k.removeprefix("config/").replace("/", "."): v for k, v in result.items() if k.startswith("config/")}
        for spec in range(len(self.specifications)):
            for seed in self.launched[spec]:
                for arm in range(len(self.arms)):
                    want = _flat(self.config(spec, seed, arm))
                    if given and all(given.get(k) == v for k, v in want.items()):
                        self.trials[trial_id] = (spec, seed, arm)
                        self.curves.setdefault(trial_id, {})
                        return spec, seed, arm
        return None

    def _record(self, trial_id: str, result: dict | None) -> None:
        if not result:
            return
        row = {k: v for k, v in result.items()
               if not k.startswith("config/") and isinstance(v, (int, float, bool, np.number))}
        x = next((row[k] for k in X_KEYS if k in row), len(self.curves[trial_id]))
        self.curves[trial_id][x] = row  # a repeated evaluation (after a resume) replaces the earlier one

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._identify(trial_id, result) is not None:
            self._record(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        item = self._identify(trial_id, result)
        if item is None:
            return
        spec, seed, arm = item
        if not error:
            self._record(trial_id, result)
        rows = list(self.curves.pop(trial_id, {}).values())
        value = math.nan if error else float(self.measure(pd.DataFrame(rows)))
        self.values[item] = value
        if arm in (self.faster, self.slower) and not math.isfinite(value):
            self.failed[spec].add(seed)
        self._update(spec)

    def differences(self, spec: int) -> list[float]:
        """Faster-minus-slower measure per seed, over the longest prefix of seeds (in seed order) whose
        compared pair is complete; dropped seeds are skipped."""
        out = []
        for seed in self._active(spec):
            f, s = self.values.get((spec, seed, self.faster)), self.values.get((spec, seed, self.slower))
            if f is None or s is None:
                break
            out.append(f - s)
        return out

    def _update(self, spec: int) -> None:
        d = self.differences(spec)
        if self.decisions[spec] is not None or len(d) < self.adaptive.min:
            return
        a = self.adaptive
        dec = sequential_decision(np.asarray(d), a.bound, a.alpha, a.margin, min_n=a.min, method=a.method,
                                  direction=self.direction)
        if dec.verdict != "undecided":
            self.decisions[spec] = dec.as_dict()

    def summary(self) -> list[dict[str, Any]]:
        """Per specification: seeds given out, complete pairs, the decision (if made) and the current
        interval over all complete pairs (anytime-valid, so it may be shown at any moment)."""
        out = []
        a = self.adaptive
        for spec in range(len(self.specifications)):
            d = np.asarray(self.differences(spec))
            now = sequential_decision(d, a.bound, a.alpha, a.margin, min_n=len(d), method=a.method,
                                      direction=self.direction).as_dict() if len(d) else None
            status = ("decided" if self.decisions[spec] else "at max" if len(d) >= a.max
                      else "out of seeds" if self._done(spec) else "running")
            out.append({"specification": self.specifications[spec], "seeds": self._active(spec),
                        "seeds_launched": len(self._active(spec)),
                        "seeds_dropped": sorted(self.failed[spec]), "pairs_complete": len(d),
                        "decision": self.decisions[spec], "current": now, "status": status})
        return out

    def finished(self) -> bool:
        """No specification adds seeds and no trial waits to be suggested (some may still run)."""
        return not self.queue and all(self._done(s) for s in range(len(self.specifications)))

    def trial_count(self) -> int:
        """The distinct trials given out (a trial Tune restarted under a new id counts once)."""
        return len(set(self.trials.values()))

    # -- resuming ------------------------------------------------------------------------------------
    _STATE = ("launched", "failed", "decisions", "queue", "trials", "curves", "values")

    def get_state(self) -> dict:
        state = {k: copy.deepcopy(getattr(self, k)) for k in self._STATE}
        state["layout"] = {"specifications": self.specifications, "arms": self.arms, "adaptive": asdict(self.adaptive),
                           "faster": self.faster, "slower": self.slower}
        return state

    def set_state(self, state: dict) -> None:
        layout = state.get("layout", {})
        if layout.get("specifications") != self.specifications or layout.get("arms") != self.arms:
            raise ValueError("the saved adaptive-seed state belongs to other specifications or arms")
        for k in self._STATE:
            setattr(self, k, copy.deepcopy(state[k]))

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))


# -- a study's searcher and what it decided ---------------------------------------------------------------
MEASURE = "the mean validation error over each trial's evaluations (lower is faster)"


def study_searcher(study, lr_by_arm: dict[tuple, float] | None = None) -> AdaptiveSeedSearcher:
    """The searcher of a StudyConfig with adaptive seeds: its specifications and arms (`adaptive_layout`),
    analysis.faster_arm against analysis.slower_arm, and each arm's tuned lr (`--lr-from`) if given."""
    from study.analysis.params import AnalysisParams

    params = AnalysisParams.from_dict(study.analysis)
    specs, arms = study.adaptive_layout()
    per_trial = functools.partial(_tuned_lr, lr_by_arm, study.lr_keys) if lr_by_arm else None
    return AdaptiveSeedSearcher(specs, arms, study.adaptive, faster=params.faster_arm, slower=params.slower_arm,
                                per_trial=per_trial)


def _tuned_lr(lr_by_arm: dict[tuple, float], keys: tuple[str, ...], config: dict) -> dict[str, float]:
    from study.grid import arm_of

    return {"train.lr": lr_by_arm[arm_of(config, keys)]}


def saved_searcher(study, path: str, lr_by_arm: dict[tuple, float] | None = None) -> AdaptiveSeedSearcher | None:
    """The searcher as Tune last saved it in the experiment at `path` (a folder or a URI), or None when it
    saved none yet."""
    searcher = study_searcher(study, lr_by_arm)
    with _searcher_files(path) as folder:
        try:
            searcher.restore_from_dir(folder)
        except RuntimeError:  # no searcher-state file: no trial was suggested yet
            return None
    return searcher


@contextlib.contextmanager
def _searcher_files(path: str) -> Iterator[str]:
    """A local folder holding the experiment's searcher-state files: `path` itself, or for a URI a temporary
    copy of them (Searcher.restore_from_dir globs a local folder)."""
    from study.state import fs_and_path
    from study.storage import is_uri

    if not is_uri(path):
        yield path
        return
    fs, p = fs_and_path(path)
    pattern = Searcher.CKPT_FILE_TMPL.format("*")
    with tempfile.TemporaryDirectory(prefix="hwr-searcher-") as tmp:
        for info in fs.get_file_info(pyarrow.fs.FileSelector(p, allow_not_found=True)):
            if info.type == pyarrow.fs.FileType.File and fnmatch.fnmatch(info.base_name, pattern):
                with fs.open_input_stream(info.path) as f:
                    Path(tmp, info.base_name).write_bytes(f.readall())
        yield tmp


def decisions(searcher: AdaptiveSeedSearcher, spec_keys: Sequence[str] = ()) -> dict[str, Any]:
    """The searcher's settings and, per specification, its decision (`undecided` at `max` seeds or out of
    seeds), as `adaptive.json` holds them for the report; `spec_keys`: the keys the `specifications:`
    section sets (its name stands for them in a specification's name)."""
    out = []
    for s in searcher.summary():
        settings = _flat(s["specification"])
        named = [str(settings["specification"])] if "specification" in settings else []
        others = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in settings.items()
                  if k != "specification" and k not in spec_keys]
        interval = s["decision"] or s["current"] or {}
        out.append({"name": ", ".join(named + others) or "reference", "settings": settings,
                    "verdict": s["decision"]["verdict"] if s["decision"] else "undecided",
                    "n": s["decision"]["n"] if s["decision"] else s["pairs_complete"], "status": s["status"],
                    "low": _finite(interval.get("low")), "high": _finite(interval.get("high")),
                    "seeds": s["seeds"], "seeds_dropped": s["seeds_dropped"], "pairs_complete": s["pairs_complete"]})

    def label(arm: dict) -> str:
        return "+".join(str(v) for v in _flat(arm).values())

    return {"settings": asdict(searcher.adaptive), "measure": MEASURE, "faster": label(searcher.arms[searcher.faster]),
            "slower": label(searcher.arms[searcher.slower]), "trials": searcher.trial_count(), "specifications": out}


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None  # an unbounded end is null in JSON


def write_decisions(path: str, doc: dict[str, Any]) -> None:
    """`adaptive.json` beside the experiment at `path` (local or URI)."""
    from study.state import fs_and_path

    fs, p = fs_and_path(path)
    with fs.open_output_stream(f"{p}/{ADAPTIVE_FILE}") as f:
        f.write((json.dumps(doc, indent=2, allow_nan=False) + "\n").encode())


__all__ = ["AdaptiveSeedSearcher", "AdaptiveSeeds", "decisions", "mean_val_error", "nested", "saved_searcher",
           "study_searcher", "write_decisions"]
