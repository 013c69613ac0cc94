r"""The filter for the high-dimensional mean (Diakonikolas, Kamath, Kane, Li, Moitra,
Stewart, 2016): one round (:func:`filter_step`) and the filter to convergence."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .._validate import check_positive, check_positive_int
from ._checks import _fraction, _generator, _samples
from .estimators import mean, median


class FilterStep(NamedTuple):
    """One round of the filter."""

    eigenvalue: float  # top eigenvalue of the empirical covariance of the remaining samples
    bound: float  # the stopping threshold it was compared with
    cutoff: float  # samples with |v.(x - median)| > cutoff were removed (nan in the last round)
    n_removed: int  # removed in this round
    n_remaining: int  # remaining after this round


class FilterResult(NamedTuple):
    """The filter's estimate, which samples it removed, and how it got there."""

    mean: torch.Tensor  # (d,)
    removed: torch.Tensor  # (n,) bool
    history: tuple  # FilterStep per round
    stopped: str  # "spectral" (eigenvalue below the bound), "no tail", or "max_iter"


def _top_eigen(xc: torch.Tensor, g: torch.Generator, exact_up_to: int = 256, q: int = 8, iters: int = 12):
    """Top eigenpair of xc^T xc / n: exact for small d, block power iteration (Rayleigh-Ritz) above."""
    n, d = xc.shape
    if d <= exact_up_to:
        vals, vecs = torch.linalg.eigh(xc.T @ xc / n)
        return float(vals[-1]), vecs[:, -1]
    basis = torch.randn(d, min(q, d), generator=g, dtype=xc.dtype)
    for _ in range(iters):
        basis = torch.linalg.qr(((xc @ basis).T @ xc).T).Q  # xc^T (xc B), in the fast memory order
    small = xc @ basis
    vals, vecs = torch.linalg.eigh(small.T @ small / n)
    return float(vals[-1]), basis @ vecs[:, -1]


def filter_mean(x: torch.Tensor, rate: float, *, c_stop: float = 3.0, c_tail: float = 2.5, tau: float = 0.1,
                sample_allowance: bool = True, max_iter: int | None = None, seed: int = 0) -> FilterResult:
    r"""Robust mean of an :math:`\varepsilon`-corrupted :math:`\mathcal{N}(\mu, I_d)` sample by filtering.

    The filter of Diakonikolas, Kamath, Kane, Li, Moitra and Stewart (FOCS 2016; SICOMP
    2019), in the form of their practical version (ICML 2017, "Being robust (in high
    dimensions) can be practical"). Its idea: outliers that move the empirical mean by
    :math:`\delta` along a unit vector :math:`v` raise the variance along :math:`v` by about
    :math:`\delta^2/\varepsilon`; so either the empirical covariance has no large
    eigenvalue, and the empirical mean is already good, or its top eigenvector points at
    the outliers, which then sit in the tail of the projection onto it. Each round, on the
    samples :math:`S` not yet removed:

    1. :math:`\hat\mu, \hat\Sigma` = empirical mean and covariance; :math:`(\lambda, v)` = top
       eigenpair of :math:`\hat\Sigma`.
    2. **Stop** if :math:`\lambda \le 1 + C\,\varepsilon\log(1/\varepsilon) + \rho`, with
       :math:`C` = ``c_stop`` = 3 as in the authors' reference code. :math:`\rho =
       (1 + \sqrt{d/|S|})^2 - 1` (``sample_allowance``) is the top eigenvalue excess that
       :math:`|S|` clean Gaussian samples already show (Bai--Yin / Marchenko--Pastur edge); the
       analysis assumes :math:`n \gtrsim d/\varepsilon^2`, where :math:`\rho \lesssim \varepsilon`,
       and with fewer samples, without it, the filter would keep cutting the Gaussian tails of
       clean data. Return :math:`\hat\mu`.
    3. Else project: :math:`r_i = |v^\top x_i - \operatorname{median}_j v^\top x_j|`, sorted
       :math:`r_{(1)} \le \dots \le r_{(|S|)}`. **Tail rule**: with
       :math:`t_i = \#\{j : r_j > r_{(i)}\}/|S|` the fraction of samples strictly beyond
       :math:`r_{(i)}`, the excess over what a Gaussian allows is

       .. math:: e_i = t_i - c_{\text{tail}}\Big(Q(r_{(i)} - 2\varepsilon)
                 + \frac{\varepsilon}{d \,\max(1, \log(d\varepsilon/\tau))}\Big),
                 \qquad Q(t) = \Pr_{Z\sim\mathcal N(0,1)}[Z > t],

       with the reference code's constants (:math:`c_{\text{tail}}` = 2.5). Take the :math:`i` of
       the **largest** excess (the first one on a tie) and remove the samples with
       :math:`r > r_{(i)}`: the radius of largest excess, which removes no more samples than the
       reference code's first :math:`i` with :math:`e_i > 0`. If no :math:`e_i` is positive (or no
       sample lies beyond the best radius), stop (``"no tail"``) and return :math:`\hat\mu`.

    Guarantee (identity covariance, :math:`n = \tilde O(d/\varepsilon^2)` samples, with high
    probability): :math:`\|\hat\mu - \mu\|_2 = O(\varepsilon\sqrt{\log 1/\varepsilon})`,
    independent of :math:`d`, against :math:`\Theta(\varepsilon\sqrt d)` for the empirical mean
    and the coordinate-wise median. Each round removes more outliers than inliers.

    Parameters
    ----------
    x : torch.Tensor
        The corrupted sample, shape (n, d).
    rate : float
        The corrupted fraction, :math:`0 < \varepsilon < 1/2`.
    c_stop, c_tail, tau : float
        The constants of the stopping rule and of the tail rule.
    sample_allowance : bool
        Add :math:`\rho` to the stopping threshold (see step 2).
    max_iter : int, optional
        Maximum number of rounds (default :math:`n`: every round removes a sample).
    seed : int
        Seed of the randomized eigen-solver (used for :math:`d > 256`).

    Returns
    -------
    FilterResult
        ``mean`` (d,), ``removed`` (n,) bool, ``history`` (one :class:`FilterStep` per
        round), ``stopped``.

    Examples
    --------
    >>> from robustlab.robuststats import corrupt
    >>> s = corrupt(2000, 50, 0.1, seed=0)
    >>> out = filter_mean(s.x, 0.1)
    >>> bool((out.mean - s.mu).norm() < 0.3), bool((mean(s.x) - s.mu).norm() > 0.6)
    (True, True)
    >>> bool(out.removed[s.is_outlier].all()), out.stopped
    (True, 'spectral')
    """
    x = _samples(x, ndim=(2,))
    rate = _fraction(rate, low_open=True, high=0.5)
    for value, name in ((c_stop, "c_stop"), (c_tail, "c_tail"), (tau, "tau")):
        check_positive(value, name)
    if not isinstance(sample_allowance, bool):
        raise TypeError(f"sample_allowance must be True or False, got {type(sample_allowance).__name__}")
    n, d = x.shape
    max_iter = n if max_iter is None else check_positive_int(max_iter, "max_iter")
    g = _generator(seed)
    xs = x.to(torch.float64)
    keep = torch.ones(n, dtype=torch.bool)
    slack = rate / (d * max(1.0, math.log(d * rate / tau)))
    history, stopped = [], "max_iter"
    for _ in range(max_iter):
        drop, step, reason = _filter_round(xs[keep], rate, g, c_stop=c_stop, c_tail=c_tail, slack=slack,
                                           sample_allowance=sample_allowance)
        history.append(step)
        if reason is not None:
            stopped = reason
            break
        idx = keep.nonzero().squeeze(1)
        keep[idx[drop]] = False
    return FilterResult(xs[keep].mean(0).to(x.dtype), ~keep, tuple(history), stopped)


def _filter_round(s: torch.Tensor, rate: float, g: torch.Generator, *, c_stop: float, c_tail: float, slack: float,
                  sample_allowance: bool):
    """One round of the filter on the remaining samples ``s`` (m, d), float64.

    Returns ``(drop, step, reason)``: the (m,) bool mask of the samples to remove, the
    :class:`FilterStep`, and ``"spectral"`` or ``"no tail"`` if the filter stops here (``None`` otherwise).
    """
    m, d = s.shape
    mu_hat = s.mean(0)
    lam, v = _top_eigen(s - mu_hat, g)
    rho = (1 + math.sqrt(d / m)) ** 2 - 1 if sample_allowance else 0.0
    bound = 1 + c_stop * rate * math.log(1 / rate) + rho
    nothing = torch.zeros(m, dtype=torch.bool)
    if lam <= bound:
        return nothing, FilterStep(lam, bound, math.nan, 0, m), "spectral"
    proj = s @ v
    r = (proj - median(proj)).abs()
    r_sorted = r.sort().values
    beyond = m - torch.searchsorted(r_sorted, r_sorted, right=True)  # #{r > r_(i)}, ties included
    tail = beyond.to(torch.float64) / m
    q = 0.5 * torch.special.erfc((r_sorted - 2 * rate) / math.sqrt(2))
    excess = tail - c_tail * (q + slack)
    best = int(excess.argmax())
    if float(excess[best]) <= 0 or int(beyond[best]) == 0:
        return nothing, FilterStep(lam, bound, math.nan, 0, m), "no tail"
    cutoff = float(r_sorted[best])
    drop = r > cutoff
    return drop, FilterStep(lam, bound, cutoff, int(drop.sum()), m - int(drop.sum())), None


def filter_step(x: torch.Tensor, rate: float, *, c_stop: float = 3.0, c_tail: float = 2.5, tau: float = 0.1,
                sample_allowance: bool = True, seed: int = 0) -> tuple[torch.Tensor, FilterStep]:
    r"""One round of :func:`filter_mean` on the samples ``x``: which of them it removes, and why.

    Exactly the round that :func:`filter_mean` runs on the samples it has not yet removed
    (steps 1--3 of its description, with the same constants): the empirical mean and the
    top eigenpair :math:`(\lambda, v)` of the empirical covariance (divided by :math:`n`);
    nothing is removed if :math:`\lambda \le 1 + C\,\varepsilon\log(1/\varepsilon) + \rho`;
    otherwise the samples whose distance :math:`|v^\top x_i - \operatorname{median}_j v^\top x_j|`
    exceeds the cutoff of the tail rule are removed (none if no radius passes the rule).
    Running it until it removes nothing gives :func:`filter_mean`'s estimate (for
    :math:`d > 256`, where the top eigenpair comes from a randomized solver, up to that
    solver's draws).

    Parameters
    ----------
    x : torch.Tensor
        The remaining samples, shape (n, d).
    rate, c_stop, c_tail, tau, sample_allowance, seed
        As in :func:`filter_mean`.

    Returns
    -------
    (remove, step)
        ``remove``: (n,) bool, True for the samples this round removes; ``step``: the
        :class:`FilterStep` (eigenvalue, bound, cutoff, how many removed and remaining).

    Examples
    --------
    >>> from robustlab.robuststats import corrupt
    >>> s = corrupt(2000, 20, 0.1, seed=0)
    >>> remove, step = filter_step(s.x, 0.1)
    >>> step.eigenvalue > step.bound, bool(remove[s.is_outlier].all())
    (True, True)
    >>> remove, step = filter_step(s.x[~s.is_outlier], 0.1)
    >>> int(remove.sum()), step.eigenvalue <= step.bound
    (0, True)
    """
    x = _samples(x, ndim=(2,))
    rate = _fraction(rate, low_open=True, high=0.5)
    for value, name in ((c_stop, "c_stop"), (c_tail, "c_tail"), (tau, "tau")):
        check_positive(value, name)
    if not isinstance(sample_allowance, bool):
        raise TypeError(f"sample_allowance must be True or False, got {type(sample_allowance).__name__}")
    d = x.shape[1]
    slack = rate / (d * max(1.0, math.log(d * rate / tau)))
    drop, step, _ = _filter_round(x.to(torch.float64), rate, _generator(seed), c_stop=c_stop, c_tail=c_tail,
                                  slack=slack, sample_allowance=sample_allowance)
    return drop, step
