r"""The statistics every statistical certificate uses, written once.

* :func:`clopper_pearson` -- exact binomial confidence bounds (one- and two-sided);
* :func:`binomial_test` -- the exact binomial test, vectorized (:func:`binomial_test_half`
  for :math:`p = 1/2`, the test of Cohen et al.'s PREDICT);
* :func:`hoeffding` -- Hoeffding's deviation for means of bounded variables;
* :func:`dkw_epsilon` and :func:`dkw_band` -- the Dvoretzky--Kiefer--Wolfowitz band
  around an empirical CDF (with Massart's tight constant);
* :func:`bonferroni` -- splitting a failure probability over several simultaneous bounds;
* :func:`normal_cdf` and :func:`normal_ppf` -- :math:`\Phi` and :math:`\Phi^{-1}`.

Every bound is *exact* or *conservative*: its failure probability is at most the
``alpha`` it is given, for every value of the unknown parameter (no normal approximation).
Inputs may be Python or NumPy numbers, NumPy arrays or torch tensors; results are floats
for scalar inputs and float64 NumPy arrays otherwise.

References: Clopper and Pearson, Biometrika 1934; Hoeffding, JASA 1963; Dvoretzky, Kiefer
and Wolfowitz, Ann. Math. Statist. 1956; Massart, Ann. Probab. 1990.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._validate import check_choice, check_positive_int, check_probability

__all__ = [
    "clopper_pearson",
    "binomial_test",
    "binomial_test_half",
    "hoeffding",
    "dkw_epsilon",
    "dkw_band",
    "bonferroni",
    "normal_cdf",
    "normal_ppf",
]


def _as_array(value, name: str, *, integer: bool = False) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if integer:
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{name} must be an integer count (or an array of them), got dtype {arr.dtype}")
        return arr.astype(np.int64)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be a real number (or an array of them), got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _is_scalar(*values) -> bool:
    return all(np.ndim(v) == 0 and not isinstance(v, torch.Tensor) for v in values)


def _out(arr, scalar: bool):
    return float(arr) if scalar else np.asarray(arr, dtype=np.float64)


def _check_trials(k, n):
    k, n = _as_array(k, "k", integer=True), _as_array(n, "n", integer=True)
    try:
        k, n = np.broadcast_arrays(k, n)
    except ValueError:
        raise ValueError(f"k and n must have broadcastable shapes, got {k.shape} and {n.shape}") from None
    if n.size and int(n.min()) < 1:
        raise ValueError(f"n must be >= 1 trials, got {int(n.min())}")
    if k.size and int(k.min()) < 0:
        raise ValueError(f"k must be >= 0 successes, got {int(k.min())}")
    if k.size and bool((k > n).any()):
        raise ValueError("k must be <= n (more successes than trials)")
    return k, n


def _cp_lower(k, n, level):
    from scipy.stats import beta

    safe = np.maximum(k, 1)  # beta.ppf is undefined at k = 0, where the bound is 0
    return np.where(k == 0, 0.0, beta.ppf(level, safe, n - safe + 1))


def _cp_upper(k, n, level):
    from scipy.stats import beta

    safe = np.minimum(k, n - 1)  # undefined at k = n, where the bound is 1
    return np.where(k == n, 1.0, beta.ppf(1 - level, safe + 1, n - safe))


def clopper_pearson(k, n, alpha: float, side: str = "lower"):
    r"""Exact (Clopper--Pearson) confidence bounds for a binomial proportion.

    With :math:`K \sim \mathrm{Bin}(n, p)` observed as ``k``, the one-sided bounds at level
    :math:`\alpha` are quantiles of beta distributions,

    .. math::

        \underline{p} = B^{-1}(\alpha;\, k,\, n - k + 1), \qquad
        \overline{p} = B^{-1}(1 - \alpha;\, k + 1,\, n - k),

    with :math:`\underline{p} = 0` at :math:`k = 0` and :math:`\overline{p} = 1` at
    :math:`k = n`. Guarantee: :math:`P(\underline{p} > p) \le \alpha` and
    :math:`P(\overline{p} < p) \le \alpha` for every :math:`p`. The two-sided interval at
    level :math:`\alpha` is the pair of one-sided bounds at :math:`\alpha/2`.

    Parameters
    ----------
    k, n : int or array-like of int (NumPy or torch)
        Successes and trials (broadcast against each other); ``0 <= k <= n``, ``n >= 1``.
    alpha : float
        Error probability in (0, 1).
    side : {"lower", "upper", "two-sided"}

    Returns
    -------
    float or numpy.ndarray, or a pair of them for ``"two-sided"``

    Examples
    --------
    >>> round(clopper_pearson(100, 100, 0.001), 6)  # all n successes: alpha ** (1 / n)
    0.933254
    >>> clopper_pearson(0, 100, 0.001)
    0.0
    >>> clopper_pearson([0, 50, 100], 100, 0.05, side="upper").round(3)
    array([0.03 , 0.586, 1.   ])
    >>> lo, hi = clopper_pearson(5, 10, 0.05, side="two-sided")
    >>> round(lo, 3), round(hi, 3)
    (0.187, 0.813)
    """
    alpha = check_probability(alpha, "alpha")
    check_choice(side, "side", ("lower", "upper", "two-sided"))
    scalar = _is_scalar(k, n)
    k, n = _check_trials(k, n)
    if side == "lower":
        return _out(_cp_lower(k, n, alpha), scalar)
    if side == "upper":
        return _out(_cp_upper(k, n, alpha), scalar)
    return _out(_cp_lower(k, n, alpha / 2), scalar), _out(_cp_upper(k, n, alpha / 2), scalar)


def binomial_test(k, n, p: float = 0.5, alternative: str = "two-sided"):
    r"""P-values of the exact binomial test of :math:`H_0: P(\text{success}) = p`, vectorized.

    ``"greater"``: :math:`P(K \ge k)`; ``"less"``: :math:`P(K \le k)`; ``"two-sided"``:
    the probability of every outcome at most as likely as ``k`` (the definition of
    ``scipy.stats.binomtest``, which this reproduces for whole arrays at once).

    Examples
    --------
    >>> from scipy.stats import binomtest
    >>> bool(abs(binomial_test(60, 100) - binomtest(60, 100, 0.5).pvalue) < 1e-12)
    True
    >>> bool(abs(binomial_test(3, 20, 0.3) - binomtest(3, 20, 0.3).pvalue) < 1e-12)
    True
    >>> round(binomial_test(8, 10, alternative="greater"), 6)
    0.054688
    """
    from scipy.stats import binom

    p = check_probability(p, "p")
    check_choice(alternative, "alternative", ("two-sided", "greater", "less"))
    scalar = _is_scalar(k, n)
    k, n = _check_trials(k, n)
    if alternative == "greater":
        return _out(binom.sf(k - 1, n, p), scalar)
    if alternative == "less":
        return _out(binom.cdf(k, n, p), scalar)
    if p == 0.5:  # symmetric: twice the smaller tail
        return _out(np.minimum(1.0, 2.0 * binom.cdf(np.minimum(k, n - k), n, 0.5)), scalar)
    out = np.empty(k.shape, dtype=np.float64)
    for idx in np.ndindex(k.shape):
        ki, ni = int(k[idx]), int(n[idx])
        pmf = binom.pmf(np.arange(ni + 1), ni, p)
        out[idx] = min(1.0, float(pmf[pmf <= pmf[ki] * (1 + 1e-7)].sum()))
    return _out(out, scalar)


def binomial_test_half(k, n):
    r"""P-value of the two-sided exact binomial test of :math:`H_0: p = 1/2`:
    :math:`\min(1, 2 P(K \le \min(k, n - k)))` (:func:`binomial_test` at ``p = 0.5``).

    >>> binomial_test_half([5, 10, 10], [10, 10, 20]).round(6)
    array([1.      , 0.001953, 1.      ])
    """
    return binomial_test(k, n, 0.5)


def hoeffding(n, alpha: float, *, side: str = "two-sided", value_range: float = 1.0):
    r"""Hoeffding's deviation :math:`t`: the mean of ``n`` independent variables with values in
    an interval of length ``value_range`` is within :math:`t` of its expectation with
    probability at least :math:`1 - \alpha`,

    .. math::

        t = \text{range}\cdot\sqrt{\frac{\ln(2/\alpha)}{2n}} \ \text{(two-sided)}, \qquad
        t = \text{range}\cdot\sqrt{\frac{\ln(1/\alpha)}{2n}} \ \text{(one-sided)}.

    >>> round(hoeffding(1000, 0.05), 5)
    0.04295
    >>> round(hoeffding(1000, 0.05, side="upper"), 5)
    0.0387
    """
    alpha = check_probability(alpha, "alpha")
    check_choice(side, "side", ("two-sided", "lower", "upper"))
    scalar = _is_scalar(n)
    n = _as_array(n, "n", integer=True)
    if n.size and int(n.min()) < 1:
        raise ValueError(f"n must be >= 1, got {int(n.min())}")
    if isinstance(value_range, bool) or not np.isfinite(value_range) or value_range <= 0:
        raise ValueError(f"value_range must be a length > 0, got {value_range!r}")
    log_term = math.log(2.0 / alpha) if side == "two-sided" else math.log(1.0 / alpha)
    return _out(float(value_range) * np.sqrt(log_term / (2.0 * n)), scalar)


def dkw_epsilon(n, alpha: float) -> float:
    r"""Half-width of the DKW confidence band: :math:`\varepsilon = \sqrt{\ln(2/\alpha) / (2n)}`.

    With probability at least :math:`1 - \alpha`,
    :math:`\sup_t |\hat F_n(t) - F(t)| \le \varepsilon` (Dvoretzky--Kiefer--Wolfowitz with
    Massart's constant 2, valid for every :math:`\alpha \in (0, 1)`).

    >>> round(dkw_epsilon(10_000, 0.001), 5)
    0.01949
    """
    check_positive_int(int(n) if isinstance(n, (np.integer,)) else n, "n")
    alpha = check_probability(alpha, "alpha")
    return math.sqrt(math.log(2.0 / alpha) / (2.0 * int(n)))


def dkw_band(samples, alpha: float):
    r"""The DKW band around the empirical CDF of ``samples`` (1-D, or (B, n) row-wise).

    Returns ``(values, lower, upper)``: the sorted samples and, at each of them, bounds on
    the true CDF :math:`F(t)` that hold simultaneously for every :math:`t` with probability
    at least :math:`1 - \alpha`: :math:`\max(0, \hat F_n(t) - \varepsilon)` and
    :math:`\min(1, \hat F_n(t) + \varepsilon)`, :math:`\varepsilon` = :func:`dkw_epsilon`.

    >>> v, lo, hi = dkw_band([0.3, 0.1, 0.2, 0.4], 0.5)
    >>> v.tolist(), bool((lo <= hi).all())
    ([0.1, 0.2, 0.3, 0.4], True)
    """
    arr = _as_array(samples, "samples")
    if arr.ndim not in (1, 2) or arr.shape[-1] == 0:
        raise ValueError(f"samples must be a non-empty 1-D array or a (B, n) array, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError("samples contains NaN")
    n = arr.shape[-1]
    eps = dkw_epsilon(n, alpha)
    values = np.sort(arr, axis=-1)
    ecdf = np.arange(1, n + 1, dtype=np.float64) / n
    ecdf = np.broadcast_to(ecdf, values.shape)
    return values, np.clip(ecdf - eps, 0.0, 1.0), np.clip(ecdf + eps, 0.0, 1.0)


def bonferroni(alpha: float, m: int) -> float:
    r"""The level of each of ``m`` bounds that must hold simultaneously at level ``alpha``:
    :math:`\alpha / m` (the union bound).

    >>> bonferroni(0.05, 10)
    0.005
    """
    alpha = check_probability(alpha, "alpha")
    if isinstance(m, np.integer):
        m = int(m)
    check_positive_int(m, "m")
    return alpha / m


def normal_cdf(x):
    r""":math:`\Phi(x)`, the standard normal CDF (float, or float64 array).

    >>> round(normal_cdf(1.959963984540054), 6)
    0.975
    """
    from scipy.special import ndtr

    scalar = _is_scalar(x)
    return _out(ndtr(_as_array(x, "x")), scalar)


def normal_ppf(p):
    r""":math:`\Phi^{-1}(p)`, the standard normal quantile, for :math:`p \in [0, 1]`
    (:math:`\pm\infty` at the ends).

    >>> round(normal_ppf(0.975), 6), normal_ppf(0.5)
    (1.959964, 0.0)
    """
    from scipy.special import ndtri

    scalar = _is_scalar(p)
    arr = _as_array(p, "p")
    if arr.size and (np.isnan(arr).any() or arr.min() < 0 or arr.max() > 1):
        raise ValueError("p must hold probabilities in [0, 1]")
    return _out(ndtri(arr), scalar)
