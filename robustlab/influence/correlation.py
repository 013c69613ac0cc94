r"""Correlations of influence with leave-one-out: Pearson and Spearman."""

from __future__ import annotations

import math

import numpy as np
import torch



def _pair(a, b):
    a = torch.as_tensor(a, dtype=torch.float64).reshape(-1).cpu().numpy() if not isinstance(a, np.ndarray) else a
    b = torch.as_tensor(b, dtype=torch.float64).reshape(-1).cpu().numpy() if not isinstance(b, np.ndarray) else b
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same number of entries, got {a.size} and {b.size}")
    if a.size < 2:
        raise ValueError(f"a correlation needs at least 2 pairs, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a and b must be finite")
    return a, b


def pearson(a, b) -> float:
    r"""Pearson's correlation :math:`\frac{\sum (a_i-\bar a)(b_i-\bar b)}{\sqrt{\sum (a_i-\bar a)^2 \sum (b_i-\bar b)^2}}`.

    NaN if either input is constant.

    >>> pearson([1, 2, 3], [2, 4, 7])
    0.9933992677987828
    """
    a, b = _pair(a, b)
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / denom if denom > 0 else math.nan


def spearman(a, b) -> float:
    """Spearman's rank correlation: Pearson's on the ranks (ties share their average rank).

    >>> spearman([1, 2, 3, 4], [1, 4, 9, 16])
    1.0
    """
    from scipy.stats import rankdata

    a, b = _pair(a, b)
    return pearson(rankdata(a), rankdata(b))
