r"""Robust statistics: estimating a mean when an eps fraction of the data is adversarial (chapter 9).

The model of contamination (Huber): draw :math:`n` samples from :math:`\mathcal{N}(\mu, I_d)`,
then let an adversary replace an :math:`\varepsilon` fraction of them by arbitrary points.
What can an estimator still say about :math:`\mu`?

1. **One dimension.** The mean and the standard deviation follow an
   :math:`\varepsilon`-bump to infinity; the median and the MAD move by
   :math:`O(\varepsilon)` however far the bump goes: :func:`mean`, :func:`std`,
   :func:`median`, :func:`mad`, :func:`trimmed_mean`, :func:`eps_bump`,
   :func:`eps_bump_experiment`.
2. **High dimension.** The mean, the coordinate-wise median and the geometric median all
   move by :math:`\Theta(\varepsilon\sqrt{d})` under a cluster of outliers in one
   direction: :func:`coordinatewise_median`, :func:`geometric_median`, :func:`corrupt`.
3. **Tukey depth and the Tukey median** (Tukey, 1975): robust in every direction at once,
   exact in the plane (:func:`tukey_depth`, :func:`tukey_median`), NP-hard in general
   (Johnson and Preparata, 1978), approximated here with random directions.
4. **The filter** (Diakonikolas, Kamath, Kane, Li, Moitra, Stewart, 2016): outliers that
   move the mean must inflate the variance in some direction; find it with the top
   eigenvector and remove the tail there. Error :math:`O(\varepsilon\sqrt{\log 1/\varepsilon})`,
   independent of :math:`d`: :func:`filter_mean` (one round: :func:`filter_step`),
   :func:`compare_mean_estimators`.

Samples are float torch tensors, ``(n,)`` or ``(n, d)``, samples along the first
dimension; every estimator works column by column where that makes sense and is
vectorized over the columns.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import NamedTuple

import numpy as np
import torch

from . import config
from ._validate import (check_choice, check_finite, check_nonneg, check_positive, check_positive_int,
                        check_real, check_seed, check_tensor)

__all__ = [
    "MAD_SCALE",
    "mean",
    "std",
    "median",
    "mad",
    "trimmed_mean",
    "coordinatewise_median",
    "geometric_median",
    "Corrupted",
    "eps_bump",
    "corrupt",
    "BumpExperiment",
    "eps_bump_experiment",
    "tukey_depth",
    "TukeyMedian",
    "tukey_median",
    "FilterStep",
    "FilterResult",
    "filter_step",
    "filter_mean",
    "MeanErrors",
    "compare_mean_estimators",
]

#: :math:`1/\Phi^{-1}(3/4) \approx 1.4826`: the MAD of :math:`\mathcal{N}(\mu, \sigma^2)` is
#: :math:`\sigma\,\Phi^{-1}(3/4)`, so this factor makes :func:`mad` consistent for :math:`\sigma`.
MAD_SCALE = 1.0 / NormalDist().inv_cdf(0.75)


# --------------------------------------------------------------------------- checks

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


def _fraction(eps, name: str = "eps", *, low_open: bool = False, high: float = 1.0) -> float:
    """A fraction of the samples in [0, high) (in (0, high) with ``low_open``)."""
    eps = check_nonneg(eps, name, allow_tensor=False)
    if (low_open and eps <= 0) or eps >= high:
        lo = "0 <" if low_open else "0 <="
        raise ValueError(f"{name} must satisfy {lo} {name} < {high}, got {eps}")
    return float(eps)


def _real(value, name: str) -> float:
    return float(check_real(value, name))


def _generator(seed) -> torch.Generator:
    return torch.Generator().manual_seed(check_seed(seed))


# --------------------------------------------------------------------------- 1-D estimators

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


# --------------------------------------------------------------------------- corruption

class Corrupted(NamedTuple):
    """An eps-corrupted sample: the data, which rows the adversary wrote, and the true mean."""

    x: torch.Tensor  # (n,) or (n, d)
    is_outlier: torch.Tensor  # (n,) bool
    mu: torch.Tensor  # () or (d,)


def _outlier_mask(n: int, eps: float, g: torch.Generator) -> torch.Tensor:
    m = int(math.floor(eps * n))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=g)[:m]] = True
    return mask


def eps_bump(n: int, eps: float, location: float, *, mu: float = 0.0, sigma: float = 1.0,
             width: float = 0.0, seed: int = 0) -> Corrupted:
    r"""A 1-D :math:`\varepsilon`-corrupted Gaussian sample: :math:`\lfloor\varepsilon n\rfloor` of :math:`n`
    draws from :math:`\mathcal{N}(\mu, \sigma^2)` replaced by a bump :math:`\mathcal{N}(\text{location}, \text{width}^2)`.

    Parameters
    ----------
    n : int
        Sample size.
    eps : float
        Corrupted fraction, :math:`0 \le \varepsilon < 1`.
    location : float
        Centre of the adversary's bump.
    mu, sigma : float
        The inliers' mean and standard deviation.
    width : float
        Standard deviation of the bump (0: a point mass).
    seed : int
        Seed of the inliers, of which positions are corrupted and of the bump.

    Returns
    -------
    Corrupted
        ``x`` (n,) float64, ``is_outlier`` (n,) bool, ``mu`` ().

    Examples
    --------
    >>> s = eps_bump(1000, 0.1, location=50.0, seed=0)
    >>> int(s.is_outlier.sum()), float(s.x[s.is_outlier].min())
    (100, 50.0)
    >>> bool(mean(s.x) > 4.5) and bool(median(s.x).abs() < 0.3)
    True
    """
    check_positive_int(n, "n")
    eps = _fraction(eps)
    location, mu = _real(location, "location"), _real(mu, "mu")
    check_positive(sigma, "sigma")
    check_nonneg(width, "width", allow_tensor=False)
    g = _generator(seed)
    x = mu + sigma * torch.randn(n, generator=g, dtype=torch.float64)
    mask = _outlier_mask(n, eps, g)
    bump = location + width * torch.randn(int(mask.sum()), generator=g, dtype=torch.float64)
    x[mask] = bump
    return Corrupted(x, mask, torch.tensor(mu, dtype=torch.float64))


def corrupt(n: int, d: int, eps: float, *, distance: float | None = None, direction: torch.Tensor | None = None,
            spread: float = 0.0, mu: torch.Tensor | None = None, seed: int = 0) -> Corrupted:
    r"""An :math:`\varepsilon`-corrupted sample of :math:`\mathcal{N}(\mu, I_d)` with the outliers in one cluster.

    :math:`\lfloor\varepsilon n\rfloor` of the :math:`n` Gaussian draws are replaced by
    :math:`\mu + r\,v + s\,z`, :math:`z \sim \mathcal{N}(0, I_d)`, with :math:`v` a unit
    direction, :math:`r` the ``distance`` and :math:`s` the ``spread``. The defaults,
    :math:`v = \mathbf{1}/\sqrt d` and :math:`r = \sqrt d` (every outlier coordinate is
    :math:`\mu_j + 1`), are the standard strong corruption of the chapter: the outliers are
    no farther from :math:`\mu` than a typical inlier (:math:`\|x - \mu\| \approx \sqrt d`), so
    no pruning by distance finds them, yet they move the mean by :math:`\varepsilon\sqrt d`
    and every coordinate-wise median by :math:`\approx 1.25\,\varepsilon` per coordinate.

    Parameters
    ----------
    n, d : int
        Sample size and dimension.
    eps : float
        Corrupted fraction, :math:`0 \le \varepsilon < 1`.
    distance : float, optional
        :math:`r \ge 0`, default :math:`\sqrt d`.
    direction : torch.Tensor, optional
        Shape (d,), non-zero (normalized here); default :math:`\mathbf{1}/\sqrt d`.
    spread : float
        Standard deviation :math:`s` of the cluster (0: a point mass).
    mu : torch.Tensor, optional
        The true mean, shape (d,); default 0.
    seed : int
        Seed.

    Returns
    -------
    Corrupted
        ``x`` (n, d) float64, ``is_outlier`` (n,) bool, ``mu`` (d,).

    Examples
    --------
    >>> s = corrupt(2000, 100, 0.1, seed=0)
    >>> round(float((mean(s.x) - s.mu).norm()), 2)  # about sqrt(eps^2 d + d/n) = 1.02
    1.01
    """
    check_positive_int(n, "n")
    check_positive_int(d, "d")
    eps = _fraction(eps)
    r = math.sqrt(d) if distance is None else float(check_nonneg(distance, "distance", allow_tensor=False))
    check_nonneg(spread, "spread", allow_tensor=False)
    if direction is None:
        v = torch.full((d,), 1.0 / math.sqrt(d), dtype=torch.float64)
    else:
        check_finite(direction, "direction")
        if direction.shape != (d,):
            raise ValueError(f"direction must have shape ({d},), got {tuple(direction.shape)}")
        norm = float(direction.norm())
        if norm == 0:
            raise ValueError("direction must be a non-zero vector")
        v = direction.to(torch.float64) / norm
    if mu is None:
        mu = torch.zeros(d, dtype=torch.float64)
    else:
        check_finite(mu, "mu")
        if mu.shape != (d,):
            raise ValueError(f"mu must have shape ({d},), got {tuple(mu.shape)}")
        mu = mu.to(torch.float64)
    g = _generator(seed)
    x = mu + torch.randn(n, d, generator=g, dtype=torch.float64)
    mask = _outlier_mask(n, eps, g)
    m = int(mask.sum())
    x[mask] = mu + r * v + spread * torch.randn(m, d, generator=g, dtype=torch.float64)
    return Corrupted(x, mask, mu)


class BumpExperiment(NamedTuple):
    """Errors of the 1-D estimators as the eps-bump moves out (one entry per location)."""

    locations: torch.Tensor  # (L,)
    errors: dict  # name -> (L,) tensor: |estimate - mu| for locations, |scale - sigma| for scales
    eps: float
    n: int


def eps_bump_experiment(n: int = 1000, eps: float = 0.1, locations=None, *, trim: float = 0.1,
                        seed: int = 0) -> BumpExperiment:
    r"""The 1-D :math:`\varepsilon`-bump experiment: move the bump out and watch the estimators.

    One sample of :math:`\mathcal{N}(0, 1)` (the same draws and the same corrupted positions
    for every location, so the curves differ only by where the bump is); the
    :math:`\lfloor\varepsilon n\rfloor` outliers sit at each ``location`` in turn. Returns
    :math:`|\hat\mu - 0|` for the mean, the median and the trimmed mean and
    :math:`|\hat\sigma - 1|` for the standard deviation and the MAD. The mean's error
    grows like :math:`\varepsilon\cdot\text{location}` and the standard deviation's like
    :math:`\sqrt{\varepsilon}\cdot\text{location}`; the median's and the MAD's stay below a
    constant times :math:`\varepsilon` wherever the bump is.

    Parameters
    ----------
    n : int
        Sample size.
    eps : float
        Corrupted fraction, :math:`0 \le \varepsilon < 1/2`.
    locations : torch.Tensor, optional
        Bump positions, shape (L,); default ``torch.linspace(0, 50, 51)``.
    trim : float
        Trimming fraction of the trimmed mean.
    seed : int
        Seed.

    Returns
    -------
    BumpExperiment
        ``errors`` maps ``"mean"``, ``"median"``, ``"trimmed_mean"``, ``"std"``, ``"mad"`` to (L,) tensors.

    Examples
    --------
    >>> out = eps_bump_experiment(1000, 0.1, torch.tensor([0.0, 1000.0]))
    >>> [round(float(e), 1) for e in out.errors["mean"]], bool(out.errors["median"].max() < 0.3)
    ([0.0, 100.0], True)
    """
    check_positive_int(n, "n")
    eps = _fraction(eps, high=0.5)
    if locations is None:
        locations = torch.linspace(0.0, 50.0, 51, dtype=torch.float64)
    check_finite(locations, "locations")
    if locations.dim() != 1 or locations.numel() == 0:
        raise ValueError(f"locations must have shape (L,) with L >= 1, got {tuple(locations.shape)}")
    locations = locations.to(torch.float64)
    base = eps_bump(n, eps, 0.0, seed=seed)
    x = base.x[:, None].repeat(1, locations.numel())  # column j: bump at locations[j]
    x[base.is_outlier] = locations
    errors = {
        "mean": mean(x).abs(),
        "median": median(x).abs(),
        "trimmed_mean": trimmed_mean(x, trim).abs(),
        "std": (std(x) - 1).abs(),
        "mad": (mad(x) - 1).abs(),
    }
    return BumpExperiment(locations, errors, eps, n)


# --------------------------------------------------------------------------- Tukey depth

_ANGLE_TOL = 1e-9


def _points(points, data):
    data = _samples(data, "data", ndim=(2,))
    check_finite(check_tensor(points, "points"), "points")
    single = points.dim() == 1
    pts = points[None] if single else points
    if pts.dim() != 2 or pts.shape[1] != data.shape[1]:
        raise ValueError(f"points must have shape ({data.shape[1]},) or (m, {data.shape[1]}) to match data, "
                         f"got {tuple(points.shape)}")
    return pts.to(torch.float64), data.to(torch.float64), single


def _depth_exact_2d(pts: torch.Tensor, data: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Exact halfplane depth by an angular sweep around each point (vectorized over points)."""
    n = data.shape[0]
    scale = float(data.abs().max()) + float(pts.abs().max()) + 1.0
    out = []
    for start in range(0, pts.shape[0], chunk):
        p = pts[start:start + chunk]
        diff = data[None] - p[:, None]  # (m, n, 2)
        at_p = diff.abs().amax(-1) <= 1e-12 * scale
        theta = torch.atan2(diff[..., 1], diff[..., 0])
        theta = torch.where(at_p, torch.full_like(theta, 1e6), theta)  # never inside a window
        s = theta.sort(1).values
        ext = torch.cat([s - 2 * math.pi, s, s + 2 * math.pi], 1).sort(1).values.contiguous()
        # the largest open half-plane through p: for each sample angle t, the samples with
        # angle in [t, t + pi) (an open half-plane, rotated until its boundary meets a sample)
        lo = torch.searchsorted(ext, (s - _ANGLE_TOL).contiguous())
        hi = torch.searchsorted(ext, (s + math.pi - _ANGLE_TOL).contiguous())
        count = torch.where(s < 1e5, hi - lo, torch.zeros_like(hi))
        out.append(n - count.amax(1))
    return torch.cat(out)


def _depth_directions(pts: torch.Tensor, data: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Depth with respect to the halfplanes normal to the directions ``u`` (K, d): an upper bound."""
    proj = (data @ u.T).T.contiguous().sort(1).values  # (K, n)
    q = (pts @ u.T).T.contiguous()  # (K, m)
    tol = 1e-12 * (float(proj.abs().max()) + float(q.abs().max()) + 1.0)
    n = data.shape[0]
    below_or_eq = torch.searchsorted(proj, q + tol, right=True)  # #{x.u <= p.u}
    above_or_eq = n - torch.searchsorted(proj, q - tol, right=False)  # #{x.u >= p.u}
    return torch.minimum(below_or_eq, above_or_eq).amin(0)


def _directions(d: int, k: int, seed: int) -> torch.Tensor:
    u = torch.randn(k, d, generator=_generator(seed), dtype=torch.float64)
    return u / u.norm(dim=1, keepdim=True)


def tukey_depth(points: torch.Tensor, data: torch.Tensor, *, method: str = "auto", n_directions: int = 1000,
                seed: int = 0) -> torch.Tensor:
    r"""The Tukey (halfspace) depth of ``points`` in the sample ``data``.

    .. math:: D(p; S) = \min_{\|u\| = 1} \big|\{x \in S : u^\top x \ge u^\top p\}\big|,

    the fewest samples in a closed half-space whose boundary passes through :math:`p`:
    over every 1-D projection, the smaller of the counts to the left and to the right
    of :math:`p` (Tukey, 1975). A point outside the convex hull of :math:`S` has depth 0.

    ``method="exact"`` (in :math:`d \le 2`): in 1-D, :math:`\min(\#\{x \le p\}, \#\{x \ge p\})`;
    in 2-D, an angular sweep in :math:`O(n \log n)` per point: sort the angles of
    :math:`x_i - p`; the deepest open half-plane through :math:`p` can be rotated until
    its boundary meets a sample, so it holds the samples with angle in
    :math:`[\theta_j, \theta_j + \pi)` for some :math:`j`, and :math:`D(p) = n -` the
    largest such count. Angles within :math:`10^{-9}` radians count as equal, so points
    that are exactly collinear with samples (the Tukey median's candidates) get their
    exact depth.

    ``method="directions"`` (any :math:`d`): the minimum over ``n_directions`` random unit
    vectors only. A minimum over fewer half-spaces can only be larger, so this is an
    **upper bound** on the depth, tight in the limit. Computing the depth exactly is
    NP-hard when :math:`d` is part of the input (Johnson and Preparata, 1978).
    ``"auto"`` is exact in :math:`d \le 2` and uses directions above.

    Parameters
    ----------
    points : torch.Tensor
        Query points, shape (d,) or (m, d).
    data : torch.Tensor
        Samples, shape (n, d).
    method : {"auto", "exact", "directions"}
    n_directions : int
        Number of random directions (``"directions"`` only).
    seed : int
        Seed of the directions.

    Returns
    -------
    torch.Tensor
        int64 depths, shape () or (m,).

    Examples
    --------
    >>> square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    >>> tukey_depth(torch.tensor([[0.5, 0.5], [0.0, 0.0], [2.0, 2.0]]), square)
    tensor([2, 1, 0])
    """
    pts, data, single = _points(points, data)
    check_choice(method, "method", ("auto", "exact", "directions"))
    check_positive_int(n_directions, "n_directions")
    d = data.shape[1]
    if method == "exact" and d > 2:
        raise ValueError(f"method='exact' is implemented for d <= 2 (the exact depth is NP-hard in general), "
                         f"got d = {d}: use method='directions' for an upper bound")
    if method == "directions" or (method == "auto" and d > 2):
        depth = _depth_directions(pts, data, _directions(d, n_directions, seed))
    elif d == 1:
        depth = _depth_directions(pts, data, torch.ones(1, 1, dtype=torch.float64))
    else:
        depth = _depth_exact_2d(pts, data)
    return depth[0] if single else depth


class TukeyMedian(NamedTuple):
    """The Tukey median, its depth, and (in 2-D) the vertices of the deepest region."""

    median: torch.Tensor  # (d,)
    depth: int
    region: torch.Tensor | None  # (k, 2) vertices of the region of maximal depth (2-D), else None
    exact: bool


def _line_intersections(data: torch.Tensor) -> torch.Tensor:
    """All intersection points of the lines through pairs of samples (and the samples themselves)."""
    n = data.shape[0]
    i, j = torch.triu_indices(n, n, 1)
    a, b = data[i], data[j]
    normal = torch.stack([-(b - a)[:, 1], (b - a)[:, 0]], 1)  # line: normal . x = c
    keep = normal.norm(dim=1) > 0
    normal, c = normal[keep], (normal[keep] * a[keep]).sum(1)
    p, q = torch.triu_indices(normal.shape[0], normal.shape[0], 1)
    det = normal[p, 0] * normal[q, 1] - normal[p, 1] * normal[q, 0]
    ok = det.abs() > 1e-12 * (normal[p].norm(dim=1) * normal[q].norm(dim=1))
    p, q, det = p[ok], q[ok], det[ok]
    x = (c[p] * normal[q, 1] - c[q] * normal[p, 1]) / det
    y = (normal[p, 0] * c[q] - normal[q, 0] * c[p]) / det
    return torch.cat([data, torch.stack([x, y], 1)])


def _polygon_centroid(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid of the convex hull of ``pts`` (k, 2) and the hull's vertices (segments and points too)."""
    from scipy.spatial import ConvexHull, QhullError

    uniq = np.unique(pts.round(12), axis=0)
    if len(uniq) >= 3:
        try:
            hull = ConvexHull(uniq)
            v = uniq[hull.vertices]
            x, y = v[:, 0], v[:, 1]
            x1, y1 = np.roll(x, -1), np.roll(y, -1)
            cross = x * y1 - x1 * y
            area = cross.sum() / 2
            if abs(area) > 1e-12 * max(1.0, np.abs(v).max() ** 2):
                cx = ((x + x1) * cross).sum() / (6 * area)
                cy = ((y + y1) * cross).sum() / (6 * area)
                return np.array([cx, cy]), v
        except QhullError:
            pass
    # a point or a segment: its midpoint
    centred = uniq - uniq.mean(0)
    axis = np.linalg.svd(centred, full_matrices=False)[2][0] if len(uniq) > 1 else np.zeros(2)
    t = centred @ axis
    ends = uniq[[t.argmin(), t.argmax()]]
    return ends.mean(0), np.unique(ends, axis=0)


def _tukey_median_2d(data: torch.Tensor, max_exact: int, chunk: int = 4096) -> TukeyMedian:
    n = data.shape[0]
    if n > max_exact:
        raise ValueError(f"the exact 2-D Tukey median examines O(n^4) candidate points; data has n = {n} > "
                         f"max_exact = {max_exact}: raise max_exact, subsample, or use method='directions'")
    cand = _line_intersections(data)
    # Prune before the exact sweep. The maximal depth is at least k = ceil(n/3) (the
    # centerpoint theorem), so a candidate outside the slab [k-th smallest, k-th largest]
    # of the projections on any direction cannot be the deepest; neither can one whose
    # upper bound over 64 directions is below the best exact depth found so far.
    k = math.ceil(n / 3)
    angles = torch.arange(16, dtype=torch.float64) * (math.pi / 16)
    u = torch.stack([angles.cos(), angles.sin()], 1)
    proj = (data @ u.T).sort(0).values
    pc = cand @ u.T
    tol = 1e-9 * (float(data.abs().max()) + 1.0)
    inside = ((pc >= proj[k - 1] - tol) & (pc <= proj[n - k] + tol)).all(1)
    cand = cand[inside]
    upper = _depth_directions(cand, data, _directions(2, 64, 0))
    order = upper.argsort(descending=True)
    cand, upper = cand[order], upper[order]
    best, depths = -1, torch.full((cand.shape[0],), -1, dtype=torch.int64)
    for start in range(0, cand.shape[0], chunk):
        if int(upper[start]) < best:
            break
        depths[start:start + chunk] = _depth_exact_2d(cand[start:start + chunk], data)
        best = max(best, int(depths[start:start + chunk].max()))
    deepest = cand[depths == best].numpy()
    centre, region = _polygon_centroid(deepest)
    return TukeyMedian(torch.from_numpy(centre), best, torch.from_numpy(region), True)


def _tukey_median_directions(data: torch.Tensor, n_directions: int, seed: int) -> TukeyMedian:
    from scipy.optimize import linprog

    n, d = data.shape
    u = _directions(d, n_directions, seed)
    proj = (data @ u.T).sort(0).values  # (n, K)
    norms = u.norm(dim=1).numpy()
    a_ub = np.vstack([u.numpy(), -u.numpy()])

    def polytope(m):  # {p : s_(m) <= u.p <= s_(n-m+1) for every direction}
        lo, hi = proj[m - 1].numpy(), proj[n - m].numpy()
        return lo, hi

    def chebyshev(m):  # the centre of the largest ball inside the polytope, or None if empty
        lo, hi = polytope(m)
        if np.any(lo > hi + 1e-12):
            return None
        a = np.hstack([a_ub, np.concatenate([norms, norms])[:, None]])
        b = np.concatenate([hi, -lo])
        res = linprog(np.r_[np.zeros(d), -1.0], A_ub=a, b_ub=b, bounds=[(None, None)] * d + [(0, None)],
                      method="highs")
        return res.x[:d] if res.status == 0 else None

    lo_m, hi_m = 1, (n + 1) // 2  # depth 1 is always feasible (the convex hull)
    centre = chebyshev(1)
    while lo_m < hi_m:  # largest m with a non-empty polytope
        mid = (lo_m + hi_m + 1) // 2
        c = chebyshev(mid)
        if c is None:
            hi_m = mid - 1
        else:
            lo_m, centre = mid, c
    if centre is None:  # numerical corner case: fall back to depth 1's centre
        centre = data.mean(0).numpy()
    return TukeyMedian(torch.from_numpy(np.asarray(centre, dtype=np.float64)), lo_m, None, False)


def tukey_median(data: torch.Tensor, *, method: str = "auto", n_directions: int = 1000, max_exact: int = 60,
                 seed: int = 0) -> TukeyMedian:
    r"""The Tukey median: the point of maximal Tukey depth (the centroid of the deepest region).

    Its depth is at least :math:`\lceil n/(d+1) \rceil` (the centerpoint theorem), so in
    the plane at least :math:`\lceil n/3 \rceil`: an adversary must control a third of the
    samples to drag it outside the inliers' hull in some direction. Computing it is NP-hard
    when :math:`d` is part of the input.

    ``method="exact"`` (2-D): depth is constant on the cells of the arrangement of the
    lines through pairs of samples and the regions :math:`\{p : D(p) \ge k\}` are closed and
    convex, so the maximum is attained at a vertex of the arrangement. The exact depth
    (:func:`tukey_depth`) of every intersection point of two such lines is computed, after
    pruning by a cheap upper bound; the deepest region is the convex hull of the deepest
    vertices and the median is its centroid. :math:`O(n^4)` candidates: for small
    :math:`n` (``max_exact``).

    ``method="directions"`` (any :math:`d`): replace all directions by ``n_directions``
    random ones. The set of points of depth :math:`\ge m` with respect to them is the
    polytope :math:`\{p : s^{(k)}_{(m)} \le u_k^\top p \le s^{(k)}_{(n-m+1)}\}` (order statistics
    of the projections); the largest non-empty one is found by bisection on :math:`m` with a
    linear program, and its Chebyshev centre is returned. The reported depth is with
    respect to the sampled directions: an upper bound on the true depth of the point.
    ``"auto"``: exact in 1-D (the median) and 2-D, directions above.

    Parameters
    ----------
    data : torch.Tensor
        Samples, shape (n, d).
    method : {"auto", "exact", "directions"}
    n_directions : int
        Random directions of the approximate method.
    max_exact : int
        Largest :math:`n` accepted by the exact 2-D method.
    seed : int
        Seed of the directions.

    Returns
    -------
    TukeyMedian
        ``median`` (d,), ``depth``, ``region`` (2-D exact: the vertices of the deepest
        region), ``exact``.

    Examples
    --------
    >>> square = torch.tensor([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0], [1.0, 1.0]])
    >>> tm = tukey_median(square)
    >>> tm.median, tm.depth
    (tensor([1., 1.], dtype=torch.float64), 3)
    """
    data = _samples(data, "data", ndim=(2,)).to(torch.float64)
    check_choice(method, "method", ("auto", "exact", "directions"))
    check_positive_int(n_directions, "n_directions")
    check_positive_int(max_exact, "max_exact")
    d = data.shape[1]
    if method == "exact" and d > 2:
        raise ValueError(f"method='exact' is implemented for d <= 2 (the Tukey median is NP-hard in general), "
                         f"got d = {d}: use method='directions'")
    if method == "directions" or (method == "auto" and d > 2):
        return _tukey_median_directions(data, n_directions, seed)
    if d == 1:
        med = median(data)
        return TukeyMedian(med, int(tukey_depth(med, data)), None, True)
    return _tukey_median_2d(data, max_exact)


# --------------------------------------------------------------------------- the filter

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


def filter_mean(x: torch.Tensor, eps: float, *, c_stop: float = 3.0, c_tail: float = 2.5, tau: float = 0.1,
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
    eps : float
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
    >>> s = corrupt(2000, 50, 0.1, seed=0)
    >>> out = filter_mean(s.x, 0.1)
    >>> bool((out.mean - s.mu).norm() < 0.3), bool((mean(s.x) - s.mu).norm() > 0.6)
    (True, True)
    >>> bool(out.removed[s.is_outlier].all()), out.stopped
    (True, 'spectral')
    """
    x = _samples(x, ndim=(2,))
    eps = _fraction(eps, low_open=True, high=0.5)
    for value, name in ((c_stop, "c_stop"), (c_tail, "c_tail"), (tau, "tau")):
        check_positive(value, name)
    if not isinstance(sample_allowance, bool):
        raise TypeError(f"sample_allowance must be True or False, got {type(sample_allowance).__name__}")
    n, d = x.shape
    max_iter = n if max_iter is None else check_positive_int(max_iter, "max_iter")
    g = _generator(seed)
    xs = x.to(torch.float64)
    keep = torch.ones(n, dtype=torch.bool)
    slack = eps / (d * max(1.0, math.log(d * eps / tau)))
    history, stopped = [], "max_iter"
    for _ in range(max_iter):
        drop, step, reason = _filter_round(xs[keep], eps, g, c_stop=c_stop, c_tail=c_tail, slack=slack,
                                           sample_allowance=sample_allowance)
        history.append(step)
        if reason is not None:
            stopped = reason
            break
        idx = keep.nonzero().squeeze(1)
        keep[idx[drop]] = False
    return FilterResult(xs[keep].mean(0).to(x.dtype), ~keep, tuple(history), stopped)


def _filter_round(s: torch.Tensor, eps: float, g: torch.Generator, *, c_stop: float, c_tail: float, slack: float,
                  sample_allowance: bool):
    """One round of the filter on the remaining samples ``s`` (m, d), float64.

    Returns ``(drop, step, reason)``: the (m,) bool mask of the samples to remove, the
    :class:`FilterStep`, and ``"spectral"`` or ``"no tail"`` if the filter stops here (``None`` otherwise).
    """
    m, d = s.shape
    mu_hat = s.mean(0)
    lam, v = _top_eigen(s - mu_hat, g)
    rho = (1 + math.sqrt(d / m)) ** 2 - 1 if sample_allowance else 0.0
    bound = 1 + c_stop * eps * math.log(1 / eps) + rho
    nothing = torch.zeros(m, dtype=torch.bool)
    if lam <= bound:
        return nothing, FilterStep(lam, bound, math.nan, 0, m), "spectral"
    proj = s @ v
    r = (proj - median(proj)).abs()
    r_sorted = r.sort().values
    beyond = m - torch.searchsorted(r_sorted, r_sorted, right=True)  # #{r > r_(i)}, ties included
    tail = beyond.to(torch.float64) / m
    q = 0.5 * torch.special.erfc((r_sorted - 2 * eps) / math.sqrt(2))
    excess = tail - c_tail * (q + slack)
    best = int(excess.argmax())
    if float(excess[best]) <= 0 or int(beyond[best]) == 0:
        return nothing, FilterStep(lam, bound, math.nan, 0, m), "no tail"
    cutoff = float(r_sorted[best])
    drop = r > cutoff
    return drop, FilterStep(lam, bound, cutoff, int(drop.sum()), m - int(drop.sum())), None


def filter_step(x: torch.Tensor, eps: float, *, c_stop: float = 3.0, c_tail: float = 2.5, tau: float = 0.1,
                sample_allowance: bool = True, seed: int = 0) -> tuple[torch.Tensor, FilterStep]:
    r"""One round of :func:`filter_mean` on the samples ``x``: which of them it removes, and why.

    Exactly the round that :func:`filter_mean` runs on the samples it has not yet removed
    (steps 1--3 of its description, with the same constants): the empirical mean and the
    top eigenpair :math:`(\lambda, v)` of the empirical covariance (divided by :math:`n`);
    nothing is removed if :math:`\lambda \le 1 + Carepsilon\log(1/arepsilon) + 
ho`;
    otherwise the samples whose distance :math:`|v^	op x_i - \operatorname{median}_j v^	op x_j|`
    exceeds the cutoff of the tail rule are removed (none if no radius passes the rule).
    Running it until it removes nothing gives :func:`filter_mean`'s estimate (for
    :math:`d > 256`, where the top eigenpair comes from a randomized solver, up to that
    solver's draws).

    Parameters
    ----------
    x : torch.Tensor
        The remaining samples, shape (n, d).
    eps, c_stop, c_tail, tau, sample_allowance, seed
        As in :func:`filter_mean`.

    Returns
    -------
    (remove, step)
        ``remove``: (n,) bool, True for the samples this round removes; ``step``: the
        :class:`FilterStep` (eigenvalue, bound, cutoff, how many removed and remaining).

    Examples
    --------
    >>> s = corrupt(2000, 20, 0.1, seed=0)
    >>> remove, step = filter_step(s.x, 0.1)
    >>> step.eigenvalue > step.bound, bool(remove[s.is_outlier].all())
    (True, True)
    >>> remove, step = filter_step(s.x[~s.is_outlier], 0.1)
    >>> int(remove.sum()), step.eigenvalue <= step.bound
    (0, True)
    """
    x = _samples(x, ndim=(2,))
    eps = _fraction(eps, low_open=True, high=0.5)
    for value, name in ((c_stop, "c_stop"), (c_tail, "c_tail"), (tau, "tau")):
        check_positive(value, name)
    if not isinstance(sample_allowance, bool):
        raise TypeError(f"sample_allowance must be True or False, got {type(sample_allowance).__name__}")
    d = x.shape[1]
    slack = eps / (d * max(1.0, math.log(d * eps / tau)))
    drop, step, _ = _filter_round(x.to(torch.float64), eps, _generator(seed), c_stop=c_stop, c_tail=c_tail,
                                  slack=slack, sample_allowance=sample_allowance)
    return drop, step


# --------------------------------------------------------------------------- the experiment

class MeanErrors(NamedTuple):
    r"""L2 errors of mean estimators under :func:`corrupt`'s strong corruption, and the reference rates."""

    dims: tuple
    eps_values: tuple
    n: int
    errors: dict  # estimator name -> (len(eps_values), len(dims)) tensor of ||estimate - mu||_2
    rates: dict  # "eps_sqrt_d", "eps_sqrt_log", "sampling" -> (len(eps_values), len(dims)) tensors
    removed_outlier_fraction: torch.Tensor  # (E, D): of the samples the filter removed, the share of outliers


ESTIMATORS = ("mean", "coordinatewise_median", "geometric_median", "filter")


def compare_mean_estimators(dims=(10, 100, 1000), eps_values=(0.1,), n: int = 2000, *, distance: float | None = None,
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
    eps_values : sequence of float
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
    >>> out = compare_mean_estimators(dims=(20,), eps_values=(0.1,), n=1000, progress=False)
    >>> bool(out.errors["filter"][0, 0] < out.errors["mean"][0, 0] < out.errors["coordinatewise_median"][0, 0])
    True
    """
    dims = tuple(dims)
    eps_values = tuple(eps_values)
    if not dims or not eps_values:
        raise ValueError("dims and eps_values must each hold at least one value")
    for d in dims:
        check_positive_int(d, "dims")
    for e in eps_values:
        _fraction(e, "eps_values", low_open=True, high=0.5)
    check_positive_int(n, "n")
    estimators = tuple(estimators)
    for name in estimators:
        check_choice(name, "estimators", ESTIMATORS)
    shape = (len(eps_values), len(dims))
    errors = {name: torch.zeros(shape, dtype=torch.float64) for name in estimators}
    purity = torch.full(shape, math.nan, dtype=torch.float64)
    bar = config.progress_bar(len(dims) * len(eps_values), "mean estimators", config.progress_enabled(progress),
                              unit="setting")
    with bar:
        for a, e in enumerate(eps_values):
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
    e_col = torch.tensor(eps_values, dtype=torch.float64)[:, None]
    d_row = torch.tensor(dims, dtype=torch.float64)[None, :]
    rates = {
        "eps_sqrt_d": e_col * d_row.sqrt(),
        "eps_sqrt_log": (e_col * torch.log(1 / e_col).sqrt()).expand(shape).clone(),
        "sampling": (d_row / n).sqrt().expand(shape).clone(),
    }
    return MeanErrors(dims, eps_values, n, errors, rates, purity)
