r"""Helpers shared by the experiments of :mod:`robustlab.features`."""

from __future__ import annotations

import math

import torch

from .. import config


def _phi(t: torch.Tensor) -> torch.Tensor:
    """Standard normal CDF, in float64."""
    return 0.5 * torch.erfc(-t / math.sqrt(2.0))


def _bar(total: int, desc: str, progress):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not config.progress_enabled(progress), leave=False)
