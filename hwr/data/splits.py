"""Train/validation/test splits: the paper's stratified 2273/569/568, or by whole writers."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from hwr.data.chars74k import DataError

SCHEMES = ("paper", "writer")
# The paper's split of the 3410 images.
PAPER_SIZES = (2273, 569, 568)


@dataclass(frozen=True, eq=False)
class Splits:
    """Sorted int64 index arrays of the three disjoint parts."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> tuple[int, int, int]:
        """(train, val, test) sizes."""
        return len(self.train), len(self.val), len(self.test)


def target_sizes(n: int) -> tuple[int, int, int]:
    """The paper's proportions for n images: round(n*2273/3410), round(n*569/3410), and the rest."""
    total = sum(PAPER_SIZES)
    n_train = round(n * PAPER_SIZES[0] / total)
    n_val = round(n * PAPER_SIZES[1] / total)
    return n_train, n_val, n - n_train - n_val


def make_splits(labels: np.ndarray, writers: np.ndarray, scheme: str = "paper", seed: int = 0) -> Splits:
    """Split indices 0..N-1 into train/val/test in the paper's proportions, deterministically from seed.

    'paper': exact totals (2273/569/568 for 3410), stratified by label: each class's count in each part
    is its proportional share rounded down or up (largest remainders first, ties by the seeded RNG).
    'writer': whole writers per part (no writer in two parts), totals as close to the targets as whole
    writers allow.
    """
    labels = np.asarray(labels)
    writers = np.asarray(writers)
    if labels.ndim != 1 or writers.shape != labels.shape:
        raise DataError(
            f"labels and writers must be 1-D of equal length, got shapes {labels.shape} and {writers.shape}."
        )
    if scheme not in SCHEMES:
        raise DataError(f"Unknown split scheme {scheme!r} (expected one of {', '.join(SCHEMES)}).")
    rng = np.random.default_rng(seed)
    targets = target_sizes(len(labels))
    if scheme == "paper":
        parts = _stratified(labels, targets, rng)
    else:
        parts = _by_writer(writers, targets, rng)
    train, val, test = (np.sort(np.asarray(p, dtype=np.int64)) for p in parts)
    return Splits(train, val, test)


def _stratified(labels: np.ndarray, targets: tuple[int, ...], rng: np.random.Generator) -> list[np.ndarray]:
    classes, inverse = np.unique(labels, return_inverse=True)
    counts = _controlled_rounding(np.bincount(inverse, minlength=len(classes)), np.array(targets), rng)
    parts: list[list[np.ndarray]] = [[] for _ in targets]
    for c in range(len(classes)):
        idx = rng.permutation(np.flatnonzero(inverse == c))
        bounds = np.cumsum(counts[c])[:-1]
        for j, chunk in enumerate(np.split(idx, bounds)):
            parts[j].append(chunk)
    return [np.concatenate(p) if p else np.zeros(0, np.int64) for p in parts]


def _controlled_rounding(class_sizes: np.ndarray, totals: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integer [classes, parts] counts with row sums class_sizes, column sums totals, each entry the
    floor or ceiling of class_size * total / N (exact when that is an integer).

    Extras go to the cells with the largest remainders (ties in random order), skipping a cell only when
    taking it would leave the rest unsolvable; a solution always exists (the proportional matrix is one).
    """
    n = int(class_sizes.sum())
    if n == 0:
        return np.zeros((len(class_sizes), len(totals)), dtype=np.int64)
    prod = np.outer(class_sizes.astype(np.int64), totals.astype(np.int64))
    counts, remainder = prod // n, prod % n
    row_need = class_sizes - counts.sum(1)
    col_need = totals - counts.sum(0)
    allowed = remainder > 0
    subsets = [np.array(s) for k in range(1, len(totals) + 1) for s in itertools.combinations(range(len(totals)), k)]

    def feasible() -> bool:
        # Max-flow/min-cut: every set S of parts can get its extras from the classes still able to give.
        return all(
            col_need[s].sum() <= np.minimum(row_need, allowed[:, s].sum(1)).sum() for s in subsets
        )

    order = np.lexsort((rng.random(remainder.size), -remainder.ravel()))
    for flat in order:
        c, j = divmod(int(flat), len(totals))
        if not allowed[c, j]:
            continue
        allowed[c, j] = False
        if row_need[c] == 0 or col_need[j] == 0:
            continue
        row_need[c] -= 1
        col_need[j] -= 1
        if feasible():
            counts[c, j] += 1
        else:
            row_need[c] += 1
            col_need[j] += 1
    assert not row_need.any() and not col_need.any(), "controlled rounding failed"
    return counts


def _by_writer(writers: np.ndarray, targets: tuple[int, ...], rng: np.random.Generator) -> list[np.ndarray]:
    ids, inverse = np.unique(writers, return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(ids))
    target = np.array(targets)
    # Largest writers first, ties in random order; each to the part furthest below its target.
    order = rng.permutation(len(ids))
    order = order[np.argsort(-sizes[order], kind="stable")]
    part_of = np.empty(len(ids), dtype=np.int64)
    filled = np.zeros(len(targets), dtype=np.int64)
    for w in order:
        j = int(np.argmax(target - filled))
        part_of[w] = j
        filled[j] += sizes[w]
    _improve(part_of, sizes, filled, target)
    return [np.flatnonzero(part_of[inverse] == j) for j in range(len(targets))]


def _improve(part_of: np.ndarray, sizes: np.ndarray, filled: np.ndarray, target: np.ndarray) -> None:
    """Move or swap single writers between parts while that lowers sum(|filled - target|)."""
    def cost(f: np.ndarray) -> int:
        return int(np.abs(f - target).sum())

    improved = True
    while improved:
        improved = False
        best = cost(filled)
        for w in range(len(sizes)):
            for j in range(len(target)):
                a = part_of[w]
                if j == a:
                    continue
                trial = filled.copy()
                trial[a] -= sizes[w]
                trial[j] += sizes[w]
                if cost(trial) < best:
                    part_of[w], filled[:] = j, trial
                    best, improved = cost(trial), True
                    continue
                for v in np.flatnonzero(part_of == j):
                    if sizes[v] == sizes[w]:
                        continue
                    swap = trial.copy()
                    swap[j] -= sizes[v]
                    swap[a] += sizes[v]
                    if cost(swap) < best:
                        part_of[w], part_of[v], filled[:] = j, a, swap
                        best, improved = cost(swap), True
                        break
