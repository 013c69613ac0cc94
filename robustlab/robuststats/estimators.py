r"""Location and scale estimators: the mean, the median, the MAD, the trimmed mean, the
coordinate-wise and geometric medians."""

from __future__ import annotations

import math
from statistics import NormalDist
import torch

from .._validate import check_positive, check_positive_int
from ._checks import _fraction, _samples


#: :math:`1/\Phi^{-1}(3/4) \approx 1.4826`: the MAD of :math:`\mathcal{N}(\mu, \sigma^2)` is
#: :math:`\sigma\,\Phi^{-1}(3/4)`, so this factor makes :func:`mad` consistent for :math:`\sigma`.
MAD_SCALE = 1.0 / NormalDist().inv_cdf(0.75)




def mean(x: torch.Tensor) -> torch.Tensor:
    r"""The empirical mean :math:`\bar x = \frac1n\sum_i x_i`, per column.

    Its breakdown point is :math:`1/n`: one sample moved to infinity takes it along.

    Parameters
    ----------
    x : torch.Tensor
        Samples, shape (n,) or (n, d).

    Returns
    -------
    torch.Tensor
        Shape () or (d,).

    Examples
    --------
    >>> mean(torch.tensor([1.0, 2.0, 3.0, 100.0]))
    tensor(26.5000)
    """
    return _samples(x).mean(0)


def std(x: torch.Tensor) -> torch.Tensor:
    r"""The empirical standard deviation :math:`\big(\frac1n\sum_i (x_i - \bar x)^2\big)^{1/2}`, per column.

    The maximum-likelihood estimate of :math:`\sigma` (divides by :math:`n`); breakdown
    point :math:`1/n`, like the mean.

    Examples
    --------
    >>> std(torch.tensor([1.0, 3.0]))
    tensor(1.)
    """
    return _samples(x).std(0, correction=0)


def median(x: torch.Tensor) -> torch.Tensor:
    r"""The sample median, per column (the mean of the two middle values when :math:`n` is even).

    Breakdown point :math:`1/2`: with fewer than half of the samples corrupted, the
    median stays between two uncorrupted order statistics. Under an
    :math:`\varepsilon`-corruption of :math:`\mathcal{N}(\mu, 1)` it moves by at most
    :math:`\Phi^{-1}\big(\tfrac{1}{2(1-\varepsilon)}\big) = O(\varepsilon)` (plus sampling error).

    Examples
    --------
    >>> median(torch.tensor([1.0, 2.0, 3.0, 100.0]))
    tensor(2.5000)
    >>> median(torch.tensor([[1.0, 5.0], [2.0, 4.0], [9.0, 0.0]]))
    tensor([2., 4.])
    """
    x = _samples(x)
    # torch.median is the lower median; the lower median of -x is minus the upper one
    return 0.5 * (x.median(0).values - (-x).median(0).values)


def mad(x: torch.Tensor, *, scale: bool = True) -> torch.Tensor:
    r"""The median absolute deviation, per column, scaled to estimate the Gaussian :math:`\sigma`.

    .. math:: \operatorname{MAD}(x) = c \cdot \operatorname{median}_i |x_i - \operatorname{median}(x)|,
       \qquad c = 1/\Phi^{-1}(3/4) \approx 1.4826,

    since for :math:`\mathcal{N}(\mu, \sigma^2)` the median of :math:`|X - \mu|` is
    :math:`\sigma\,\Phi^{-1}(3/4) \approx 0.6745\,\sigma`. Breakdown point :math:`1/2`.

    Parameters
    ----------
    x : torch.Tensor
        Samples, shape (n,) or (n, d).
    scale : bool
        Multiply by :data:`MAD_SCALE` (default) or return the raw median deviation.

    Examples
    --------
    >>> mad(torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0]), scale=False)
    tensor(1.)
    >>> round(MAD_SCALE, 4)
    1.4826
    """
    x = _samples(x)
    raw = median((x - median(x)).abs())
    return raw * MAD_SCALE if scale else raw


def trimmed_mean(x: torch.Tensor, trim: float = 0.1) -> torch.Tensor:
    r"""The :math:`\alpha`-trimmed mean, per column: drop the :math:`\lfloor \alpha n\rfloor` smallest
    and largest samples and average the rest.

    Breakdown point :math:`\lfloor \alpha n \rfloor / n`: robust while the corrupted
    fraction is below ``trim``, and as fragile as the mean beyond it.

    Parameters
    ----------
    x : torch.Tensor
        Samples, shape (n,) or (n, d).
    trim : float
        The fraction :math:`\alpha \in [0, 1/2)` cut from each end (scipy's ``trim_mean`` convention).

    Examples
    --------
    >>> trimmed_mean(torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0]), trim=0.2)
    tensor(3.)
    """
    x = _samples(x)
    alpha = _fraction(trim, "trim", high=0.5)
    n = x.shape[0]
    k = int(math.floor(alpha * n))
    return x.sort(0).values[k:n - k].mean(0)


def coordinatewise_median(x: torch.Tensor) -> torch.Tensor:
    r"""The median of each coordinate of samples in :math:`\mathbb{R}^d`.

    Robust in each coordinate, but the errors add up: an :math:`\varepsilon`-fraction of
    outliers at :math:`\mu + c\,\mathbf{1}` (for :math:`c` above the inliers' median) moves every
    coordinate by about :math:`\Phi^{-1}\big(\tfrac{1}{2(1-\varepsilon)}\big) \approx 1.25\,\varepsilon`,
    an error of order :math:`\varepsilon\sqrt{d}` in :math:`L_2`.

    Parameters
    ----------
    x : torch.Tensor
        Samples, shape (n, d).

    Returns
    -------
    torch.Tensor
        Shape (d,).

    Examples
    --------
    >>> coordinatewise_median(torch.tensor([[0.0, 0.0], [1.0, 5.0], [2.0, 1.0]]))
    tensor([1., 1.])
    """
    return median(_samples(x, ndim=(2,)))


def geometric_median(x: torch.Tensor, *, tol: float = 1e-7, max_iter: int = 1000) -> torch.Tensor:
    r"""The geometric (spatial) median :math:`\arg\min_y \sum_i \|x_i - y\|_2`, by Weiszfeld's algorithm.

    Weiszfeld's iteration is a fixed-point scheme for the optimality condition
    :math:`\sum_i (x_i - y)/\|x_i - y\| = 0`:

    .. math:: y^{t+1} = \frac{\sum_i x_i / \|x_i - y^t\|}{\sum_i 1 / \|x_i - y^t\|}.

    It is undefined when :math:`y^t` lands on a data point. The safeguard is the one of
    Vardi and Zhang (2000): with :math:`\eta` the number of samples at :math:`y`,
    :math:`\tilde T` the Weiszfeld step over the other samples and
    :math:`r = \|\sum_{x_i \ne y} (x_i - y)/\|x_i - y\|\|`, stop if :math:`r \le \eta`
    (:math:`y` is then the minimizer: the subgradient condition holds), else move to
    :math:`(1 - \eta/r)\,\tilde T + (\eta/r)\, y`. The iteration starts at the
    coordinate-wise median. Breakdown point :math:`1/2`, but under an
    :math:`\varepsilon`-cluster of outliers its error still grows like :math:`\varepsilon\sqrt{d}`.

    Parameters
    ----------
    x : torch.Tensor
        Samples, shape (n, d).
    tol : float
        Stop when a step moves :math:`y` by less than ``tol * (1 + ||y||)``.
    max_iter : int
        Maximum number of iterations.

    Returns
    -------
    torch.Tensor
        Shape (d,).

    Examples
    --------
    >>> pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    >>> geometric_median(pts)  # the origin: the unit vectors to the others sum to less than 1
    tensor([0., 0.])
    """
    x = _samples(x, ndim=(2,))
    check_positive(tol, "tol")
    check_positive_int(max_iter, "max_iter")
    scale = float(x.abs().max()) or 1.0
    at_tol = 1e-12 * scale
    y = median(x)
    for _ in range(max_iter):
        diff = x - y
        dist = diff.norm(dim=1)
        at_y = dist <= at_tol
        w = torch.where(at_y, torch.zeros_like(dist), 1.0 / dist.clamp_min(at_tol))
        if not bool(w.any()):  # every sample sits at y
            return y
        t_tilde = (w[:, None] * x).sum(0) / w.sum()
        eta = float(at_y.sum())
        if eta == 0:
            y_new = t_tilde
        else:
            r = float((w[:, None] * diff).sum(0).norm())
            if r <= eta:  # y is a data point satisfying the optimality condition
                return y
            y_new = (1 - eta / r) * t_tilde + (eta / r) * y
        step = float((y_new - y).norm())
        y = y_new
        if step <= tol * (1.0 + float(y.norm())):
            break
    return y
