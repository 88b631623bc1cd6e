"""Adaptive seeds: a Ray Tune Searcher that adds seed pairs to each specification until its answer is in.

Proposed config form (the lead wires it into study/config.py and run_study; it replaces the `train.seed`
grid axis):

    search:
      model.activation,model.normalization: [[selu, none], [relu, per_image]]   # the arms
      model.weights: [glyphs, glyphs-small]                                     # other axes: specifications
      seeds:
        adaptive: {min: 4, max: 20, margin: 0.02}   # optional: alpha 0.05, method t, bound null, ahead 2, first 0

    -> AdaptiveSeedSearcher(specifications=[{...weights: glyphs}, {...weights: glyphs-small}],
                            arms=[{"model.activation": "selu", "model.normalization": "none"}, ...],
                            adaptive=AdaptiveSeeds.from_dict(raw["search"]["seeds"]["adaptive"]),
                            faster=params.faster_arm, slower=params.slower_arm)
       Tuner(trainable, param_space={}, tune_config=TuneConfig(search_alg=searcher, num_samples=-1))

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

import copy
import math
import pickle
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
from ray.tune.search import Searcher

from study.analysis.sequential import METHODS, sequential_decision

X_KEYS = ("step", "epoch", "training_iteration")  # the curve's time axis, first one present


@dataclass(frozen=True)
class AdaptiveSeeds:
    """`search.seeds.adaptive`: stop adding seeds once the confidence sequence has the answer.

    With method t the sequence is finite from 5 complete pairs on (at alpha 0.05), so the earliest
    decision comes at 5 seeds whatever `min` is; `min` is the number of seeds started at once.
    """

    min: int = 4                 # seeds every specification runs before the sequence is looked at
    max: int = 20                # seeds at most (then "undecided")
    margin: float = 0.0          # equivalence margin on the measure's scale (0: never "equivalent")
    alpha: float = 0.05          # error rate of the confidence sequence, valid at every look
    method: str = "t"            # t (Lai's t-mixture) or betting (needs bound)
    bound: float | None = None   # |difference| <= bound, for method betting (error area: 1)
    ahead: int = 2               # seeds allowed to run beyond the complete ones, after min
    first: int = 0               # seeds are first, first + 1, ...

    def __post_init__(self) -> None:
        ints = {"min": self.min, "max": self.max, "ahead": self.ahead, "first": self.first}
        if any(isinstance(v, bool) or not isinstance(v, int) for v in ints.values()):
            raise ValueError(f"search.seeds.adaptive: min, max, ahead and first must be integers, got {ints}")
        if not 2 <= self.min <= self.max or self.ahead < 1 or self.first < 0:
            raise ValueError(f"search.seeds.adaptive needs 2 <= min <= max, ahead >= 1 and first >= 0, got "
                             f"min {self.min}, max {self.max}, ahead {self.ahead}, first {self.first}")
        if not (isinstance(self.margin, (int, float)) and self.margin >= 0):
            raise ValueError(f"search.seeds.adaptive.margin must be a number >= 0, got {self.margin!r}")
        if not (isinstance(self.alpha, float) and 0 < self.alpha < 1):
            raise ValueError(f"search.seeds.adaptive.alpha must be in (0, 1), got {self.alpha!r}")
        if self.method not in METHODS:
            raise ValueError(f"search.seeds.adaptive.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.method == "betting" and not (isinstance(self.bound, (int, float)) and self.bound > 0):
            raise ValueError("search.seeds.adaptive.bound (a number > 0 bounding |difference|) is needed with "
                             f"method betting, got {self.bound!r}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> AdaptiveSeeds:
        """From the config's mapping; an unknown key or a bad value is a ValueError naming it."""
        raw = dict(raw or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"Unknown key search.seeds.adaptive.{unknown[0]}; known keys: {', '.join(sorted(known))}")
        if isinstance(raw.get("alpha"), int) and not isinstance(raw.get("alpha"), bool):
            raw["alpha"] = float(raw["alpha"])
        return cls(**raw)

    def seeds(self) -> range:
        """The seed range: enough for `max` seeds and as many replacements of failed ones."""
        return range(self.first, self.first + 2 * self.max)


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


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def _find_arm(arms: list[dict], want: dict | int | None, default: int, role: str) -> int:
    if want is None:
        return default
    if isinstance(want, int):
        return want

    def has(arm: dict, key: str, value: Any) -> bool:
        return any((k == key or k.endswith("." + key)) and v == value for k, v in _flat(arm).items())

    hits = [i for i, arm in enumerate(arms) if all(has(arm, k, v) for k, v in want.items())]
    if len(hits) != 1:
        raise ValueError(f"the {role} arm {want} matches {len(hits)} of the arms {arms}; it must match one")
    return hits[0]


class AdaptiveSeedSearcher(Searcher):
    """Suggests seed pairs per specification until each one's confidence sequence decides (module doc).

    specifications: nested hwr config dicts (or dotted-key dicts) of the values fixed in each specification;
    arms: dicts of the arm values (e.g. {"model.activation": "selu", "model.normalization": "none"});
    faster / slower: which arms the differences compare, as an index or a dict of values matched on the
    keys' last part (analysis.faster_arm's form); default arms 0 and 1; direction: "lower" when a smaller
    measure means faster; seed_key: the config key of the seed.
    """

    def __init__(self, specifications: Sequence[dict], arms: Sequence[dict], adaptive: AdaptiveSeeds = AdaptiveSeeds(),
                 measure: Callable[[pd.DataFrame], float] = mean_val_error, *, faster: dict | int | None = None,
                 slower: dict | int | None = None, direction: str = "lower", seed_key: str = "train.seed",
                 metric: str | None = None, mode: str | None = None):
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
        return _merge(cfg, nested({self.seed_key: seed}))

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
            out.append({"specification": self.specifications[spec], "seeds_launched": len(self._active(spec)),
                        "seeds_dropped": sorted(self.failed[spec]), "pairs_complete": len(d),
                        "decision": self.decisions[spec], "current": now, "status": status})
        return out

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


__all__ = ["AdaptiveSeedSearcher", "AdaptiveSeeds", "mean_val_error", "nested"]
