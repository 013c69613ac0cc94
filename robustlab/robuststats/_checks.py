r"""Argument checks of :mod:`robustlab.robuststats`."""

from __future__ import annotations

import torch

from .._validate import check_finite, check_nonneg, check_real, check_seed, check_tensor


def _samples(x, name: str = "x", *, ndim=(1, 2)) -> torch.Tensor:
    """A non-empty, finite, floating-point tensor of samples along dimension 0."""
    check_tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() not in ndim:
        shapes = " or ".join({1: "(n,)", 2: "(n, d)"}[k] for k in ndim)
        raise ValueError(f"{name} must have shape {shapes} (samples along the first dimension), "
                         f"got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} holds no samples (shape {tuple(x.shape)})")
    check_finite(x, name)
    return x


def _fraction(rate, name: str = "rate", *, low_open: bool = False, high: float = 1.0) -> float:
    """A fraction of the samples in [0, high) (in (0, high) with ``low_open``)."""
    rate = check_nonneg(rate, name, allow_tensor=False)
    if (low_open and rate <= 0) or rate >= high:
        lo = "0 <" if low_open else "0 <="
        raise ValueError(f"{name} must satisfy {lo} {name} < {high}, got {rate}")
    return float(rate)


def _real(value, name: str) -> float:
    return float(check_real(value, name))


def _generator(seed) -> torch.Generator:
    return torch.Generator().manual_seed(check_seed(seed))
