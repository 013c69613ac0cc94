r"""Huber contamination: the eps-bump in one dimension, a cluster of outliers in d
dimensions, and the eps-bump experiment."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .._validate import check_finite, check_nonneg, check_positive, check_positive_int
from ._checks import _fraction, _generator, _real
from .estimators import mad, mean, median, std, trimmed_mean


class Corrupted(NamedTuple):
    """An eps-corrupted sample: the data, which rows the adversary wrote, and the true mean."""

    x: torch.Tensor  # (n,) or (n, d)
    is_outlier: torch.Tensor  # (n,) bool
    mu: torch.Tensor  # () or (d,)


def _outlier_mask(n: int, rate: float, g: torch.Generator) -> torch.Tensor:
    m = int(math.floor(rate * n))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=g)[:m]] = True
    return mask


def eps_bump(n: int, rate: float, location: float, *, mu: float = 0.0, sigma: float = 1.0,
             width: float = 0.0, seed: int = 0) -> Corrupted:
    r"""A 1-D :math:`\varepsilon`-corrupted Gaussian sample: :math:`\lfloor\varepsilon n\rfloor` of :math:`n`
    draws from :math:`\mathcal{N}(\mu, \sigma^2)` replaced by a bump :math:`\mathcal{N}(\text{location}, \text{width}^2)`.

    Parameters
    ----------
    n : int
        Sample size.
    rate : float
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
    rate = _fraction(rate)
    location, mu = _real(location, "location"), _real(mu, "mu")
    check_positive(sigma, "sigma")
    check_nonneg(width, "width", allow_tensor=False)
    g = _generator(seed)
    x = mu + sigma * torch.randn(n, generator=g, dtype=torch.float64)
    mask = _outlier_mask(n, rate, g)
    bump = location + width * torch.randn(int(mask.sum()), generator=g, dtype=torch.float64)
    x[mask] = bump
    return Corrupted(x, mask, torch.tensor(mu, dtype=torch.float64))


def corrupt(n: int, d: int, rate: float, *, distance: float | None = None, direction: torch.Tensor | None = None,
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
    rate : float
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
    >>> round(float((mean(s.x) - s.mu).norm()), 2)  # about sqrt(rate^2 d + d/n) = 1.02
    1.01
    """
    check_positive_int(n, "n")
    check_positive_int(d, "d")
    rate = _fraction(rate)
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
    mask = _outlier_mask(n, rate, g)
    m = int(mask.sum())
    x[mask] = mu + r * v + spread * torch.randn(m, d, generator=g, dtype=torch.float64)
    return Corrupted(x, mask, mu)


class BumpExperiment(NamedTuple):
    """Errors of the 1-D estimators as the eps-bump moves out (one entry per location)."""

    locations: torch.Tensor  # (L,)
    errors: dict  # name -> (L,) tensor: |estimate - mu| for locations, |scale - sigma| for scales
    rate: float
    n: int


def eps_bump_experiment(n: int = 1000, rate: float = 0.1, locations=None, *, trim: float = 0.1,
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
    rate : float
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
    rate = _fraction(rate, high=0.5)
    if locations is None:
        locations = torch.linspace(0.0, 50.0, 51, dtype=torch.float64)
    check_finite(locations, "locations")
    if locations.dim() != 1 or locations.numel() == 0:
        raise ValueError(f"locations must have shape (L,) with L >= 1, got {tuple(locations.shape)}")
    locations = locations.to(torch.float64)
    base = eps_bump(n, rate, 0.0, seed=seed)
    x = base.x[:, None].repeat(1, locations.numel())  # column j: bump at locations[j]
    x[base.is_outlier] = locations
    errors = {
        "mean": mean(x).abs(),
        "median": median(x).abs(),
        "trimmed_mean": trimmed_mean(x, trim).abs(),
        "std": (std(x) - 1).abs(),
        "mad": (mad(x) - 1).abs(),
    }
    return BumpExperiment(locations, errors, rate, n)
