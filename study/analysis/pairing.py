"""What a pair of trials (same seed, the two compared arms) has in common, in words for the report.

* Batch order: the same ``train.seed`` gives the same shuffling in every arm, so pairs share it.
* The data split: fixed by ``data.split_seed`` for every trial (every seed and arm), not by the seed:
  a pair shares it, but so does every other trial, so it adds no pairing.
* Initial head weights: only shared when the config pairs them (a column ``init_pairing``, from
  ``model.init_pairing``: the same seed draws the same uniform numbers and each activation's init scheme
  scales them).  Without it, heads of different activations do not share initial weights (SELU heads are
  LeCun-normal, ReLU heads Xavier-initialised), so a cross-activation pair shares only the batch order.
"""
from __future__ import annotations

import pandas as pd

from study.analysis.params import AnalysisParams
from study.analysis.tables import analysed, distinct

INIT_COLUMN = "init_pairing"
_PAIRED = {"true", "1", "yes", "on", "paired", "shared", "uniform"}
_UNPAIRED = {"false", "0", "no", "off", "none", "", "nan"}


def _init_words(metrics: pd.DataFrame, across_activations: bool) -> str:
    if INIT_COLUMN in metrics.columns:
        values = {str(v).strip().lower() for v in distinct(metrics[INIT_COLUMN])}
        if values and values <= _PAIRED:
            return ("initial head weights (init_pairing: the same seed draws the same uniform numbers in every "
                    "arm, each activation's init scheme scales them)")
        if not (values <= _UNPAIRED):
            return f"initial head weights as far as init_pairing = {', '.join(sorted(values))} pairs them"
    if across_activations:
        return ""
    return "initial head weights (same activation, same seed)"


def pairing_text(metrics: pd.DataFrame, params: AnalysisParams) -> str:
    """One sentence: what the two trials of a pair share, and what they do not."""
    used = analysed(metrics)
    across = str(params.faster_arm.get("activation")) != str(params.slower_arm.get("activation"))
    init = _init_words(used, across)
    shared = ["the batch order (train.seed)"] + ([init] if init else [])
    split = "the data split is fixed by data.split_seed"
    if "split_seed" in used.columns and len(used):
        split += f" ({', '.join(map(str, distinct(used['split_seed'])))})"
    text = (f"The two trials of a pair share {' and '.join(shared)}; {split} and is the same for every seed and "
            f"arm, so it is shared by all trials rather than paired.")
    if not init:
        text += (" Heads of different activations do not share initial weights (SELU heads are LeCun-normal, "
                 "ReLU heads Xavier-initialised), so a pair shares only its batch order; the config pairs "
                 "initial weights only with model.init_pairing.")
    return text
