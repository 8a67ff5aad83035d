"""Loading, validating and batching the course's npz data (filled in by the lead; ood_split is final)."""
from __future__ import annotations

import numpy as np

OOD_SPLIT_SEED = 42
OOD_SCORE_RATIO = 0.2


def ood_split(n: int, score_ratio: float = OOD_SCORE_RATIO, seed: int = OOD_SPLIT_SEED):
    """The course's OOD split, exactly as its eval.py draws it.

    `mask = RandomState(42).permutation(n) >= int(n * 0.2)`: the 80% where mask is True fit the probes,
    the other 20% score them. Returns (fit_idx, score_idx), sorted int64 index arrays.
    """
    rng = np.random.RandomState(seed)
    fit_mask = rng.permutation(n) >= int(n * score_ratio)
    return np.flatnonzero(fit_mask), np.flatnonzero(~fit_mask)
