r"""The mean estimators compared against the dimension and the corruption fraction."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .. import config
from .._validate import check_choice, check_positive_int
from ._checks import _fraction
from .estimators import coordinatewise_median, geometric_median, mean
from .corruption import corrupt
from .filter import filter_mean


# --------------------------------------------------------------------------- the experiment

class MeanErrors(NamedTuple):
    r"""L2 errors of mean estimators under :func:`corrupt`'s strong corruption, and the reference rates."""

    dims: tuple
    rate_values: tuple
    n: int
    errors: dict  # estimator name -> (len(rate_values), len(dims)) tensor of ||estimate - mu||_2
    rates: dict  # "eps_sqrt_d", "eps_sqrt_log", "sampling" -> (len(rate_values), len(dims)) tensors
    removed_outlier_fraction: torch.Tensor  # (E, D): of the samples the filter removed, the share of outliers


ESTIMATORS = ("mean", "coordinatewise_median", "geometric_median", "filter")


def compare_mean_estimators(dims=(10, 100, 1000), rate_values=(0.1,), n: int = 2000, *, distance: float | None = None,
                            estimators=ESTIMATORS, seed: int = 0, progress: bool | None = None) -> MeanErrors:
    r"""Errors of the mean, the coordinate-wise median, the geometric median and the filter vs :math:`d` and :math:`\varepsilon`.

    For every :math:`(\varepsilon, d)`: one sample :func:`corrupt` ``(n, d, eps)`` (outliers
    in one cluster at distance :math:`\sqrt d` along :math:`\mathbf 1/\sqrt d`, or ``distance``),
    and :math:`\|\hat\mu - \mu\|_2` for each estimator. The reference rates are
    :math:`\varepsilon\sqrt d` (the naive estimators), :math:`\varepsilon\sqrt{\log 1/\varepsilon}`
    (the filter; the information-theoretic optimum is :math:`\Theta(\varepsilon)`), and the
    sampling error :math:`\sqrt{d/n}` that even clean data has.

    Parameters
    ----------
    dims : sequence of int
        Dimensions.
    rate_values : sequence of float
        Corrupted fractions in (0, 1/2).
    n : int
        Sample size (the same for every dimension).
    distance : float, optional
        Distance of the outlier cluster from :math:`\mu` (default :math:`\sqrt d`).
    estimators : sequence of str
        A subset of ``"mean"``, ``"coordinatewise_median"``, ``"geometric_median"``, ``"filter"``.
    seed : int
        Seed (the sample for :math:`(\varepsilon_a, d_b)` uses ``seed + 1000 a + b``).
    progress : bool, optional
        Show a progress bar (default: the global setting).

    Returns
    -------
    MeanErrors

    Examples
    --------
    >>> out = compare_mean_estimators(dims=(20,), rate_values=(0.1,), n=1000, progress=False)
    >>> bool(out.errors["filter"][0, 0] < out.errors["mean"][0, 0] < out.errors["coordinatewise_median"][0, 0])
    True
    """
    dims = tuple(dims)
    rate_values = tuple(rate_values)
    if not dims or not rate_values:
        raise ValueError("dims and rate_values must each hold at least one value")
    for d in dims:
        check_positive_int(d, "dims")
    for e in rate_values:
        _fraction(e, "rate_values", low_open=True, high=0.5)
    check_positive_int(n, "n")
    estimators = tuple(estimators)
    for name in estimators:
        check_choice(name, "estimators", ESTIMATORS)
    shape = (len(rate_values), len(dims))
    errors = {name: torch.zeros(shape, dtype=torch.float64) for name in estimators}
    purity = torch.full(shape, math.nan, dtype=torch.float64)
    bar = config.progress_bar(len(dims) * len(rate_values), "mean estimators", config.progress_enabled(progress),
                              unit="setting")
    with bar:
        for a, e in enumerate(rate_values):
            for b, d in enumerate(dims):
                s = corrupt(n, d, e, distance=distance, seed=seed + 1000 * a + b)
                for name in estimators:
                    if name == "filter":
                        out = filter_mean(s.x, e, seed=seed)
                        est = out.mean
                        if bool(out.removed.any()):
                            purity[a, b] = float(s.is_outlier[out.removed].double().mean())
                    else:
                        est = {"mean": mean, "coordinatewise_median": coordinatewise_median,
                               "geometric_median": geometric_median}[name](s.x)
                    errors[name][a, b] = float((est - s.mu).norm())
                bar.update(1)
    e_col = torch.tensor(rate_values, dtype=torch.float64)[:, None]
    d_row = torch.tensor(dims, dtype=torch.float64)[None, :]
    rates = {
        "eps_sqrt_d": e_col * d_row.sqrt(),
        "eps_sqrt_log": (e_col * torch.log(1 / e_col).sqrt()).expand(shape).clone(),
        "sampling": (d_row / n).sqrt().expand(shape).clone(),
    }
    return MeanErrors(dims, rate_values, n, errors, rates, purity)
