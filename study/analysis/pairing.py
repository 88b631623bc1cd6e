"""What a pair of trials (same seed, the two compared arms) has in common, in words for the report.

* Batch order: the same ``train.seed`` gives the same shuffling in every arm, so pairs share it.
* The data split: fixed by ``data.split_seed`` for every trial (every seed and arm), not by the seed:
  a pair shares it, but so does every other trial, so it adds no pairing.
* Initial head weights (the column ``init``, from ``model.init``): ``glorot`` gives every activation the
  same Glorot-uniform weights at one seed; ``paired`` draws the same uniform numbers and each activation's
  init scheme scales them (LeCun uniform for SELU, Glorot uniform otherwise); ``lecun`` the same LeCun-normal
  weights.  With ``auto`` (the default) heads of different activations do not share initial weights (SELU
  heads are LeCun-normal, ReLU heads Glorot-uniform), so a cross-activation pair shares only the batch order.
"""
from __future__ import annotations

import pandas as pd

from study.analysis.params import AnalysisParams
from study.analysis.tables import analysed, distinct

INIT_COLUMN = "init"
_WORDS = {"glorot": "initial head weights (model.init glorot: the same Glorot-uniform weights in every arm)",
          "lecun": "initial head weights (model.init lecun: the same LeCun-normal weights in every arm)",
          "paired": ("initial head weights (model.init paired: the same seed draws the same uniform numbers in "
                     "every arm, each activation's init scheme scales them)")}
_UNPAIRED = {"auto", "none", "", "nan"}


def _init_words(metrics: pd.DataFrame, across_activations: bool) -> str:
    if INIT_COLUMN in metrics.columns:
        values = {str(v).strip().lower() for v in distinct(metrics[INIT_COLUMN])}
        if len(values) == 1 and (only := next(iter(values))) in _WORDS:
            return _WORDS[only]
        if values and not values <= _UNPAIRED:
            return f"initial head weights only where model.init ({', '.join(sorted(values))}) pairs them"
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
                 "ReLU heads Xavier-initialised), so a pair shares only its batch order; model.init glorot "
                 "or paired pairs initial weights too.")
    return text
