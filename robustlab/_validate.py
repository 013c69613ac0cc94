"""Argument checks shared by the public functions.

Every check raises a ``ValueError`` or ``TypeError`` whose message names the
argument and says what was expected, so that a student sees at once which
argument is wrong. Nothing is clamped or corrected silently.

Wherever a Python int or float is accepted, so is a NumPy integer or float
(``np.int64``, ``np.float32``, ...); the checks return Python numbers. Booleans
are never numbers here. Probabilities (:func:`check_probability`), seeds
(:func:`check_seed`) and class indices (:func:`check_class_index`) are checked
here and nowhere else.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch

NORMS = {"linf": math.inf, "l2": 2.0, "l1": 1.0, "l0": 0.0}


def check_tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    check_tensor(x, name)
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def check_images(x, name: str = "x", *, min_dim: int = 2) -> torch.Tensor:
    """A float batch with values in [0, 1] and shape (B, ...) with at least ``min_dim`` dims."""
    check_tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(
            f"{name} must be batch-first with shape (B, C, H, W) or (B, D), got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)})")
    check_finite(x, name)
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{name} must have values in [0, 1] (pixel space; normalization belongs inside the model), "
            f"got values in [{lo:.4g}, {hi:.4g}]"
        )
    return x


def check_labels(y, name: str, batch_size: int | None = None, n_classes: int | None = None) -> torch.Tensor:
    check_tensor(y, name)
    if y.dtype != torch.int64:
        raise TypeError(f"{name} must be an int64 tensor of class indices, got dtype {y.dtype}")
    if y.dim() != 1:
        raise ValueError(f"{name} must have shape (B,), got shape {tuple(y.shape)}")
    if batch_size is not None and y.shape[0] != batch_size:
        raise ValueError(f"{name} has {y.shape[0]} labels but the batch has {batch_size} inputs")
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"{name} must hold class indices >= 0, got {int(y.min())}")
    if n_classes is not None and y.numel() and int(y.max()) >= n_classes:
        raise ValueError(f"{name} holds class {int(y.max())} but the model has {n_classes} classes")
    return y


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _scalar(value):
    """A NumPy scalar (np.int64, np.float32, ...) as the Python int or float it holds."""
    return value.item() if isinstance(value, np.generic) else value


def check_real(value, name: str, *, finite: bool = True):
    """A real number (Python or NumPy int or float, not bool, not NaN); finite unless ``finite=False``.

    Returns it as a Python int or float.

    >>> check_real(np.float32(0.5), "eps")
    0.5
    >>> check_real(True, "eps")
    Traceback (most recent call last):
    ...
    TypeError: eps must be a real number, got bool
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = _scalar(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got NaN")
    if finite and math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_nonneg(value, name: str, *, allow_tensor: bool = True):
    """A real number >= 0 (Python or NumPy scalar), or (if allowed) a tensor of them (e.g. a per-sample eps)."""
    if isinstance(value, torch.Tensor) and allow_tensor:
        check_finite(value, name)
        if bool((value < 0).any()):
            raise ValueError(f"{name} must be >= 0, got a tensor with minimum {float(value.min()):.4g}")
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = _scalar(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a number >= 0, got NaN")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_positive(value, name: str):
    """A real number > 0 (Python or NumPy scalar), returned as a Python number."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = _scalar(value)
    if math.isnan(value) or value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_positive_int(value, name: str, *, allow_zero: bool = False) -> int:
    """An integer >= 1 (>= 0 with ``allow_zero``): a Python int or a NumPy integer, returned as an int.

    >>> check_positive_int(np.int64(3), "n")
    3
    >>> check_positive_int(3.0, "n")
    Traceback (most recent call last):
    ...
    TypeError: n must be an integer, got float
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ValueError(f"{name} must be an integer {bound}, got {value}")
    return value


def check_interval(value, name: str, low: float, high: float, *, low_open: bool = False,
                   high_open: bool = False) -> float:
    """A real number in the interval from ``low`` to ``high`` (each end open or closed), as a float."""
    value = check_real(value, name, finite=False)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return float(value)


def check_probability(value, name: str, *, closed: bool = False, low_open: bool | None = None,
                      high_open: bool | None = None) -> float:
    """A probability, returned as a float.

    In (0, 1) by default (a confidence level or failure probability alpha), in [0, 1] with
    ``closed=True`` (a probability that may be 0 or 1); ``low_open`` / ``high_open`` set one end
    on its own (a poison fraction in [0, 1) is ``closed=True, high_open=True``).

    >>> check_probability(np.float32(0.25), "alpha")
    0.25
    >>> check_probability(1.0, "alpha")
    Traceback (most recent call last):
    ...
    ValueError: alpha must be a probability in (0, 1), got 1.0
    """
    low_open = (not closed) if low_open is None else low_open
    high_open = (not closed) if high_open is None else high_open
    value = float(check_real(value, name, finite=False))
    too_low = value <= 0 if low_open else value < 0
    too_high = value >= 1 if high_open else value > 1
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a probability in {interval}, got {value}")
    return value


def check_seed(seed, name: str = "seed", *, allow_none: bool = False) -> int | None:
    """A random seed: an integer >= 0 (Python or NumPy), or None where ``allow_none``.

    >>> check_seed(np.int64(7))
    7
    >>> check_seed(-1)
    Traceback (most recent call last):
    ...
    ValueError: seed must be an integer >= 0, got -1
    """
    if seed is None and allow_none:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, Integral):
        extra = " or None" if allow_none else ""
        raise TypeError(f"{name} must be an integer >= 0{extra}, got {type(seed).__name__}")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {seed}")
    return seed


def check_class_index(value, name: str, n_classes: int | None = None) -> int:
    """A class index: an integer >= 0 (Python or NumPy), < ``n_classes`` where that is given.

    >>> check_class_index(np.int64(2), "target", n_classes=10)
    2
    >>> check_class_index(10, "target", n_classes=10)
    Traceback (most recent call last):
    ...
    ValueError: target must be a class index >= 0 and < 10, got 10
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer class index, got {type(value).__name__}")
    value = int(value)
    if value < 0 or (n_classes is not None and value >= n_classes):
        upper = "" if n_classes is None else f" and < {n_classes}"
        raise ValueError(f"{name} must be a class index >= 0{upper}, got {value}")
    return value


def check_choice(value, name: str, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def parse_norm(p, name: str = "norm") -> float:
    """Accept 'linf'/'l2'/'l1'/'l0' or the numbers inf, 2, 1, 0 and return the exponent p."""
    if isinstance(p, str):
        key = p.lower().replace("-", "")
        if key in ("inf", "infinity"):
            key = "linf"
        if key not in NORMS:
            raise ValueError(f"{name} must be one of 'linf', 'l2', 'l1', 'l0' (or inf, 2, 1, 0), got {p!r}")
        return NORMS[key]
    if isinstance(p, bool) or not isinstance(p, Real):
        raise TypeError(f"{name} must be a string like 'linf' or a number, got {type(p).__name__}")
    if p in (0, 1, 2) or p == math.inf:
        return float(p)
    raise ValueError(f"{name} must be one of 'linf', 'l2', 'l1', 'l0' (or inf, 2, 1, 0), got {p!r}")


def check_model(model, name: str = "model") -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module mapping inputs in [0, 1] to logits, got {type(model).__name__}")
    return model


def as_batch_param(value, batch_size: int, like: torch.Tensor, name: str) -> torch.Tensor:
    """Turn a scalar or per-sample tensor parameter into a (B,) tensor on ``like``'s device."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            value = value.expand(batch_size)
        if value.shape != (batch_size,):
            raise ValueError(f"{name} must be a number or a tensor of shape ({batch_size},), got shape {tuple(value.shape)}")
        return value.to(device=like.device, dtype=like.dtype)
    return torch.full((batch_size,), float(value), device=like.device, dtype=like.dtype)


def check_xy(data, name: str = "data"):
    """A data set ``(x, y)`` (a Split or a pair of tensors): ``x`` in [0, 1], ``y`` int64 labels."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError(f"{name} must be a Split or an (x, y) pair of tensors, got {type(data).__name__}")
    x, y = data
    check_images(x, f"{name}.x")
    check_labels(y, f"{name}.y", batch_size=x.shape[0])
    return x, y
