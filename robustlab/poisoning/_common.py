"""What the poisoning modules share: the number of classes of a label tensor."""

from __future__ import annotations

import torch

from .._validate import check_positive_int


def _n_classes_of(y: torch.Tensor | None, n_classes) -> int:
    if n_classes is None:
        if y is None:
            raise TypeError("n_classes must be given (an integer >= 2)")
        return max(int(y.max()) + 1, 2) if y.numel() else 2
    check_positive_int(n_classes, "n_classes")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    return n_classes
