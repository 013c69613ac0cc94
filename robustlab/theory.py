r"""Limits of robustness (chapter 8): concentration of measure, adversarial spheres and the
curse of dimensionality for smoothing.

Three results say that some vulnerability is a matter of geometry, not of training:

1. **Concentration of measure on the sphere.** For a set :math:`E` of measure
   :math:`\mu` on the unit sphere :math:`S^{d-1} \subset \mathbb{R}^d` (uniform measure),
   its :math:`\varepsilon`-neighbourhood :math:`E_\varepsilon = \{x : \operatorname{dist}(x,
   E) \le \varepsilon\}` (Euclidean distance) has measure at least that of the
   neighbourhood of a spherical cap of the same measure (Lévy's isoperimetric
   inequality), which tends to 1 once :math:`\varepsilon \gg 1/\sqrt{d}`. Caps have closed
   forms through the regularized incomplete beta function: :func:`cap_measure`,
   :func:`cap_height`, :func:`cap_neighbourhood_measure`, with the Gaussian approximation
   :func:`gaussian_neighbourhood_measure`, the concentration bound :func:`levy_bound`
   (Ledoux, 2001), and the Monte Carlo check :func:`concentration` over uniform samples
   (:func:`sample_sphere`, :func:`distance_to_cap`).
2. **Adversarial spheres** (Gilmer et al., 2018). Any classifier that errs on a fraction
   :math:`\mu` of a sphere has errors at typical distance at most about
   :math:`\Phi^{-1}(1 - \mu)/\sqrt{d}`: :func:`isoperimetric_bound` (exact, for the mean
   and the median distance) and :func:`isoperimetric_approximation`. The experiment
   :func:`adversarial_spheres` trains ReLU nets on :func:`robustlab.data.concentric_spheres`
   with :func:`robustlab.train.fit`, measures their error rates and the distance to the
   nearest error with an attack that stays on the sphere
   (:func:`nearest_error_on_sphere`), and compares with the bound.
3. **The curse of dimensionality for smoothing** (Kumar, Levine, Goldstein, Feizi, 2020):
   with noise i.i.d. across coordinates, the certifiable :math:`L_p` radius for
   :math:`p > 2` shrinks like :math:`d^{1/p - 1/2}` relative to the :math:`L_2` radius:
   :func:`curse_of_dimensionality`, :func:`lp_radius_from_l2`,
   :func:`plot_curse_of_dimensionality`.

Distances on the sphere are Euclidean (chordal), as in Gilmer et al.; the caps are
:math:`\{x \in S^{d-1} : x_1 \ge t\}` around the first basis vector.
"""

from __future__ import annotations

import dataclasses
import math
from numbers import Real
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from . import config
from . import data as _data
from . import models as _models
from . import train as _train
from ._validate import (check_finite, check_labels, check_model, check_positive, check_positive_int, check_probability,
                        check_seed, check_tensor)

__all__ = [
    "sample_sphere",
    "cap_measure",
    "cap_height",
    "cap_neighbourhood_measure",
    "gaussian_neighbourhood_measure",
    "levy_bound",
    "distance_to_cap",
    "concentration",
    "Concentration",
    "isoperimetric_bound",
    "isoperimetric_approximation",
    "to_unit_box",
    "from_unit_box",
    "sphere_model",
    "nearest_error_on_sphere",
    "NearestError",
    "adversarial_spheres",
    "AdversarialSpheres",
    "curse_of_dimensionality",
    "lp_radius_from_l2",
    "plot_curse_of_dimensionality",
]


# --------------------------------------------------------------------------- argument checks


def _check_dim(d, name: str = "d", minimum: int = 2) -> int:
    check_positive_int(d, name)
    if d < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} (the sphere S^(d-1) in R^d), got {d}")
    return d


def _as_array(value, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a real number or an array of them, got bool")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number or an array of them, got {type(value).__name__}") from None
    if np.isnan(arr).any():
        raise ValueError(f"{name} must not contain NaN")
    return arr


def _check_unit_interval(value, name: str, *, closed_low: bool = True, closed_high: bool = True) -> np.ndarray:
    arr = _as_array(value, name)
    low_ok = arr >= 0 if closed_low else arr > 0
    high_ok = arr <= 1 if closed_high else arr < 1
    if not (low_ok & high_ok).all():
        lo, hi = ("[" if closed_low else "("), ("]" if closed_high else ")")
        raise ValueError(f"{name} must be in {lo}0, 1{hi}, got values in [{arr.min():.4g}, {arr.max():.4g}]")
    return arr


def _check_eps(value, name: str = "eps") -> np.ndarray:
    arr = _as_array(value, name)
    if (arr < 0).any():
        raise ValueError(f"{name} must be >= 0, got a minimum of {arr.min():.4g}")
    return arr


def _out(arr: np.ndarray):
    """A Python float for a scalar result, else the array."""
    arr = np.asarray(arr, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr


# =========================================================================== 1. concentration


def sample_sphere(n: int, d: int, *, radius: float = 1.0, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    r"""``n`` points uniform on the sphere of radius ``radius`` in :math:`\mathbb{R}^d`, shape (n, d).

    A standard Gaussian vector divided by its norm is uniform on :math:`S^{d-1}` (the
    Gaussian is rotation invariant). Each coordinate then has mean 0 and variance
    :math:`r^2/d`.

    Examples
    --------
    >>> x = sample_sphere(5, 3, radius=2.0)
    >>> x.shape, bool(torch.allclose(x.norm(dim=1), torch.full((5,), 2.0)))
    (torch.Size([5, 3]), True)
    """
    check_positive_int(n, "n")
    check_positive_int(d, "d")
    check_positive(radius, "radius")
    g = torch.Generator().manual_seed(check_seed(seed))
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    return (radius * z / z.norm(dim=1, keepdim=True)).to(dtype)


def cap_measure(t, d: int):
    r"""Measure of the spherical cap :math:`C_t = \{x \in S^{d-1} : x_1 \ge t\}` under the
    uniform probability measure.

    .. math::

        \mu(C_t) = \tfrac12\, I_{1 - t^2}\!\big(\tfrac{d-1}{2}, \tfrac12\big) \quad (0 \le t \le 1),
        \qquad \mu(C_{-t}) = 1 - \mu(C_t),

    with :math:`I_x(a, b)` the regularized incomplete beta function (the first coordinate
    of a uniform point has density proportional to :math:`(1 - s^2)^{(d-3)/2}` on
    [-1, 1]). For :math:`d = 3` this is Archimedes' :math:`(1 - t)/2`.

    Parameters
    ----------
    t : float or array
        Height of the cap, any real (``t >= 1`` gives 0, ``t <= -1`` gives 1).
    d : int
        Dimension of the ambient space (>= 2).

    Examples
    --------
    >>> round(cap_measure(0.5, 3), 12)
    0.25
    >>> cap_measure(0.0, 100)
    0.5
    """
    from scipy.special import betainc

    _check_dim(d)
    t = _as_array(t, "t")
    s = np.clip(np.abs(t), 0.0, 1.0)
    upper = 0.5 * betainc((d - 1) / 2.0, 0.5, 1.0 - s * s)
    return _out(np.where(t >= 0, upper, 1.0 - upper))


def cap_height(mu, d: int):
    r"""The height :math:`t` of the cap :math:`\{x_1 \ge t\}` of measure ``mu``: the inverse
    of :func:`cap_measure`.

    For :math:`\mu \le 1/2`, :math:`t = \sqrt{1 - I^{-1}_{2\mu}((d-1)/2, 1/2)}`; for
    :math:`\mu > 1/2` the cap is the complement of a small one, :math:`t(\mu) = -t(1 - \mu)`.
    For large :math:`d`, :math:`t \approx \Phi^{-1}(1 - \mu)/\sqrt{d}`.

    Examples
    --------
    >>> round(cap_height(0.25, 3), 12)
    0.5
    >>> round(cap_measure(cap_height(0.01, 50), 50), 12)
    0.01
    """
    from scipy.special import betaincinv

    _check_dim(d)
    mu = _check_unit_interval(mu, "mu")
    small = np.minimum(mu, 1.0 - mu)
    t = np.sqrt(np.clip(1.0 - betaincinv((d - 1) / 2.0, 0.5, 2.0 * small), 0.0, 1.0))
    return _out(np.where(mu <= 0.5, t, -t))


def _neighbourhood_height(mu: np.ndarray, eps: np.ndarray, d: int) -> np.ndarray:
    """Height of the cap that is the eps-neighbourhood (chordal) of the cap of measure mu."""
    theta0 = np.arccos(np.asarray(cap_height(mu, d)))
    theta = theta0 + 2.0 * np.arcsin(np.minimum(eps / 2.0, 1.0))
    return np.where(theta >= math.pi, -1.0, np.cos(np.minimum(theta, math.pi)))


def cap_neighbourhood_measure(mu, eps, d: int):
    r"""Exact measure of the :math:`\varepsilon`-neighbourhood of a cap of measure ``mu``.

    The cap of angular radius :math:`\theta_0 = \arccos t` around :math:`e_1` grows, under
    a Euclidean distance :math:`\varepsilon`, into the cap of angular radius
    :math:`\theta_0 + 2\arcsin(\varepsilon/2)` (a chord of length :math:`\varepsilon`
    subtends the angle :math:`2\arcsin(\varepsilon/2)`), so

    .. math::

        \mu(C_\varepsilon) = \mu\big(\{x_1 \ge \cos(\theta_0 + 2\arcsin(\varepsilon/2))\}\big).

    By Lévy's isoperimetric inequality this is the *smallest* measure the
    :math:`\varepsilon`-neighbourhood of any set of measure ``mu`` can have. ``mu = 0``
    (a set that may be empty) gives 0.

    Parameters
    ----------
    mu : float or array in [0, 1]
    eps : float or array >= 0
        Euclidean radius on the unit sphere (broadcast against ``mu``).
    d : int

    Examples
    --------
    >>> round(cap_neighbourhood_measure(0.5, 0.0, 10), 12)
    0.5
    >>> cap_neighbourhood_measure(0.01, 0.5, 1000) > 0.999
    True
    """
    _check_dim(d)
    mu = _check_unit_interval(mu, "mu")
    eps = _check_eps(eps)
    mu, eps = np.broadcast_arrays(mu, eps)
    value = np.asarray(cap_measure(_neighbourhood_height(mu, eps, d), d))
    return _out(np.where(mu == 0, 0.0, np.maximum(value, mu)))


def gaussian_neighbourhood_measure(mu, eps, d: int):
    r"""Gaussian-isoperimetric approximation of :func:`cap_neighbourhood_measure`:
    :math:`\Phi\big(\Phi^{-1}(\mu) + \varepsilon\sqrt{d}\big)`.

    A uniform point's first coordinate is close to :math:`\mathcal{N}(0, 1/d)` for large
    :math:`d`, so a cap of measure :math:`\mu` is close to a half-space at
    :math:`\Phi^{-1}(1-\mu)/\sqrt{d}` and growing it by :math:`\varepsilon` adds
    :math:`\varepsilon\sqrt{d}` standard deviations. Exact in the limit
    :math:`d \to \infty` with :math:`\varepsilon\sqrt{d}` fixed.

    Examples
    --------
    >>> round(gaussian_neighbourhood_measure(0.5, 1.0, 4), 4)  # Phi(2)
    0.9772
    """
    from scipy.stats import norm

    _check_dim(d, minimum=1)
    mu = _check_unit_interval(mu, "mu")
    eps = _check_eps(eps)
    return _out(norm.cdf(norm.ppf(mu) + eps * math.sqrt(d)))


def levy_bound(eps, d: int):
    r"""A standard form of the concentration bound that follows from Lévy's isoperimetric
    inequality (Ledoux, 2001): every set :math:`E \subseteq S^{d-1}` with
    :math:`\mu(E) \ge 1/2` has :math:`\mu(E_\varepsilon) \ge 1 - 2e^{-d\varepsilon^2/2}`.

    Returned clipped below at 0 (the bound says nothing for :math:`\varepsilon <
    \sqrt{2\ln 2/d}`). The exact :func:`cap_neighbourhood_measure` of the half-sphere is
    never below it.

    Examples
    --------
    >>> round(levy_bound(0.3, 100), 4)
    0.9778
    """
    _check_dim(d, minimum=1)
    eps = _check_eps(eps)
    return _out(np.maximum(0.0, 1.0 - 2.0 * np.exp(-d * eps * eps / 2.0)))


def _check_on_sphere(x: torch.Tensor, name: str, radius=None, tol: float = 1e-4) -> torch.Tensor:
    check_tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] < 2:
        raise ValueError(f"{name} must be a batch of points of shape (B, d) with d >= 2, got shape {tuple(x.shape)}")
    check_finite(x, name)
    if radius is not None:
        norms = x.double().norm(dim=1)
        worst = float((norms - radius).abs().max())
        if worst > tol * max(1.0, radius):
            raise ValueError(f"{name} must lie on the sphere of radius {radius} (norms within {tol:g}), "
                             f"got a norm off by {worst:.3g}")
    return x


def distance_to_cap(x: torch.Tensor, mu: float) -> torch.Tensor:
    r"""Euclidean distance from points ``x`` (B, d) of the unit sphere to the cap
    :math:`\{x_1 \ge t\}` of measure ``mu``, shape (B,), float64.

    A point at angle :math:`\theta = \arccos x_1` from :math:`e_1` is at angle
    :math:`\max(\theta - \theta_0, 0)` from the cap of angular radius :math:`\theta_0`,
    hence at chordal distance :math:`2\sin(\max(\theta - \theta_0, 0)/2)`.

    Examples
    --------
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    >>> distance_to_cap(x, 0.5)  # the half-circle x_1 >= 0
    tensor([0.0000, 0.0000, 1.4142], dtype=torch.float64)
    """
    x = _check_on_sphere(x, "x", radius=1.0)
    mu = float(_check_unit_interval(mu, "mu", closed_low=False))
    theta0 = math.acos(float(cap_height(mu, x.shape[1])))
    theta = torch.arccos(x[:, 0].double().clamp(-1.0, 1.0))
    return 2.0 * torch.sin((theta - theta0).clamp_min(0.0) / 2.0)


@dataclasses.dataclass
class Concentration:
    """Measure of the eps-neighbourhood of a cap of measure ``mu``, for several dimensions.

    ``estimate[i, j]`` is the Monte Carlo estimate (fraction of ``n`` uniform points within
    ``eps[j]`` of the cap) in dimension ``d[i]``, ``stderr`` its standard error,
    ``exact`` :func:`cap_neighbourhood_measure` and ``gaussian``
    :func:`gaussian_neighbourhood_measure`.
    """

    d: list
    eps: np.ndarray
    mu: float
    n: int
    estimate: np.ndarray
    stderr: np.ndarray
    exact: np.ndarray
    gaussian: np.ndarray

    def as_table(self) -> list:
        return [dict(d=d, eps=float(e), estimate=float(self.estimate[i, j]), stderr=float(self.stderr[i, j]),
                     exact=float(self.exact[i, j]), gaussian=float(self.gaussian[i, j]))
                for i, d in enumerate(self.d) for j, e in enumerate(self.eps)]

    def plot(self, ax=None):
        """Measure of the neighbourhood against eps, one colour per dimension: exact (line),
        Monte Carlo (points with 2 standard errors), Gaussian approximation (dashed)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6.5, 4))
        for i, d in enumerate(self.d):
            c = f"C{i % 10}"
            ax.plot(self.eps, self.exact[i], color=c, label=f"d = {d}")
            ax.plot(self.eps, self.gaussian[i], color=c, ls="--", lw=1)
            ax.errorbar(self.eps, self.estimate[i], yerr=2 * self.stderr[i], fmt="o", ms=3, color=c)
        ax.axhline(self.mu, color="grey", ls=":", lw=1)
        ax.set_xlabel("ε (Euclidean distance on the unit sphere)")
        ax.set_ylabel("measure of the ε-neighbourhood")
        ax.set_title(f"a cap of measure μ = {self.mu:g}: exact (line), sampled (points), Gaussian (dashed)",
                     fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8, loc="center right")
        return ax


def concentration(d_values=(3, 10, 100, 1000), eps_values=None, *, mu: float = 0.01, n: int = 10000,
                  seed: int = 0, progress: bool | None = None) -> Concentration:
    r"""Estimate the measure of the :math:`\varepsilon`-neighbourhood of a cap by sampling
    uniform points on :math:`S^{d-1}`, next to its exact value and the Gaussian
    approximation, for every dimension in ``d_values``.

    The estimate in dimension :math:`d` is the fraction of ``n`` points from
    :func:`sample_sphere` whose :func:`distance_to_cap` is at most :math:`\varepsilon`; it
    is unbiased with standard error :math:`\sqrt{m(1-m)/n}`. As :math:`d` grows, a cap of
    fixed measure ``mu`` swallows almost the whole sphere within
    :math:`\varepsilon = O(1/\sqrt{d})`.

    Parameters
    ----------
    d_values : sequence of int
        Dimensions (each >= 2).
    eps_values : array, optional
        Radii (default 21 values from 0 to 1).
    mu : float in (0, 1)
        Measure of the cap.
    n : int
        Points sampled per dimension.
    seed : int
    progress : bool, optional

    Returns
    -------
    Concentration

    Examples
    --------
    >>> res = concentration((3, 300), [0.0, 0.3], mu=0.1, n=2000)
    >>> bool(abs(res.estimate - res.exact).max() < 4 * res.stderr.max() + 1e-3)
    True
    """
    d_values = [_check_dim(d, "d_values") for d in d_values]
    if not d_values:
        raise ValueError("d_values must hold at least one dimension")
    eps = np.linspace(0.0, 1.0, 21) if eps_values is None else _check_eps(eps_values, "eps_values").ravel()
    if eps.size == 0:
        raise ValueError("eps_values must hold at least one radius")
    mu = float(_check_unit_interval(mu, "mu", closed_low=False, closed_high=False))
    check_positive_int(n, "n")
    shape = (len(d_values), eps.size)
    res = Concentration(d_values, eps, mu, n, np.zeros(shape), np.zeros(shape), np.zeros(shape), np.zeros(shape))
    bar = config.progress_bar(len(d_values), "concentration", config.progress_enabled(progress), unit="dim")
    try:
        for i, d in enumerate(d_values):
            chunk = max(1, 2_000_000 // d)  # at most ~16 MB of float64 points at a time
            dist = torch.cat([distance_to_cap(sample_sphere(min(chunk, n - s), d, seed=seed + 7919 * i + s,
                                                            dtype=torch.float64), mu)
                              for s in range(0, n, chunk)])
            within = (dist[:, None] <= torch.as_tensor(eps)[None, :]).double().mean(0).numpy()
            res.estimate[i] = within
            res.stderr[i] = np.sqrt(within * (1 - within) / n)
            res.exact[i] = cap_neighbourhood_measure(mu, eps, d)
            res.gaussian[i] = gaussian_neighbourhood_measure(mu, eps, d)
            bar.update(1)
    finally:
        bar.close()
    return res


# =========================================================================== 2. adversarial spheres


def isoperimetric_bound(mu, d: int, *, statistic: str = "mean"):
    r"""Upper bound on the typical Euclidean distance from a uniform point of the unit sphere
    :math:`S^{d-1}` to *any* set :math:`E` of measure at least ``mu``.

    By Lévy's isoperimetric inequality, :math:`\mu(E_\varepsilon) \ge \mu(C_\varepsilon)`
    for every :math:`\varepsilon`, where :math:`C` is the cap of the same measure, so
    the distance to :math:`E` is stochastically smaller than the distance to the cap:

    * ``statistic="mean"``: :math:`\mathbb{E}\,\operatorname{dist}(x, E) \le
      \int_0^2 \big(1 - \mu(C_\varepsilon)\big)\, d\varepsilon`, the mean distance to the
      cap (Gilmer et al.'s :math:`d(E)`), computed by quadrature;
    * ``statistic="median"``: the median distance is at most the :math:`\varepsilon` at
      which :math:`\mu(C_\varepsilon) = 1/2`, which is
      :math:`2\sin(\arcsin(t)/2)` for the cap height :math:`t` (0 when :math:`\mu \ge 1/2`).

    Both are :math:`\approx \Phi^{-1}(1-\mu)/\sqrt{d}` for large :math:`d` and small
    :math:`\mu` (:func:`isoperimetric_approximation`): a classifier with a small error
    rate :math:`\mu` on a high-dimensional sphere still has errors at distance
    :math:`O(1/\sqrt{d})` from most points (Gilmer et al., 2018, Theorem 5.1). ``mu = 0``
    gives infinity (the set may be empty).

    Examples
    --------
    >>> round(isoperimetric_bound(0.5, 3, statistic="median"), 12)
    0.0
    >>> b = isoperimetric_bound(0.01, 1000)
    >>> 0.05 < b < 0.09
    True
    """
    from scipy.integrate import quad

    _check_dim(d)
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic must be one of ['mean', 'median'], got {statistic!r}")
    mu = _check_unit_interval(mu, "mu")

    def one(m: float) -> float:
        if m == 0:
            return math.inf
        if statistic == "median":
            if m >= 0.5:
                return 0.0
            return 2.0 * math.sin(math.asin(float(cap_height(m, d))) / 2.0)
        if m >= 1:
            return 0.0
        # the integrand falls from 1 - m to 0 within a few 1/sqrt(d) of the typical distance:
        # tell the quadrature where
        typical = max(float(isoperimetric_approximation(m, d)), 0.0)
        breaks = sorted({typical + k / math.sqrt(d) for k in (-2, 0, 2, 5)})
        value, _ = quad(lambda e: 1.0 - float(cap_neighbourhood_measure(m, e, d)), 0.0, 2.0,
                        points=[b for b in breaks if 0 < b < 2], limit=200, epsabs=1e-10, epsrel=1e-8)
        return value

    return _out(np.vectorize(one, otypes=[float])(mu))


def isoperimetric_approximation(mu, d: int):
    r"""The headline form of the adversarial-spheres bound: :math:`\Phi^{-1}(1 - \mu)/\sqrt{d}`.

    The distance from the equator :math:`\{x_1 = 0\}` (where most of the sphere lies) to a
    cap of measure :math:`\mu`, in the Gaussian approximation; see
    :func:`isoperimetric_bound` for the exact bounds.

    Examples
    --------
    >>> round(isoperimetric_approximation(0.5, 100), 12)
    0.0
    >>> round(isoperimetric_approximation(0.0227501, 100), 3)  # Phi^-1(0.97725) = 2
    0.2
    """
    from scipy.stats import norm

    _check_dim(d, minimum=1)
    mu = _check_unit_interval(mu, "mu")
    return _out(norm.ppf(1.0 - mu) / math.sqrt(d))


def to_unit_box(x: torch.Tensor, box: float) -> torch.Tensor:
    r"""Map points of the cube :math:`[-b, b]^d` to robustlab's input range [0, 1]:
    :math:`u = x/(2b) + 1/2`. A sphere of radius :math:`r \le b` lies in the cube.

    The models of :func:`sphere_model` undo the map in their first layer
    (:class:`robustlab.models.Normalize`), so they compute on the sphere's coordinates.

    >>> to_unit_box(torch.tensor([[-1.3, 0.0, 1.3]]), 1.3)
    tensor([[0.0000, 0.5000, 1.0000]])
    """
    check_tensor(x, "x")
    check_positive(box, "box")
    if float(x.abs().max()) > box * (1 + 1e-6):
        raise ValueError(f"x must lie in the cube [-box, box]^d with box={box}, got a coordinate of "
                         f"{float(x.abs().max()):.4g}")
    return (x / (2.0 * box) + 0.5).clamp(0.0, 1.0)  # the clamp only removes rounding


def from_unit_box(u: torch.Tensor, box: float) -> torch.Tensor:
    """The inverse of :func:`to_unit_box`: :math:`x = (u - 1/2)\\, 2b`."""
    check_tensor(u, "u")
    check_positive(box, "box")
    return (u - 0.5) * (2.0 * box)


def sphere_model(d: int, *, width: int = 256, depth: int = 2, box: float = 1.3, seed: int = 0) -> nn.Sequential:
    r"""A two-class ReLU network for the concentric spheres, on robustlab's [0, 1] inputs.

    ``Normalize(0.5, 1/(2 box))`` maps :func:`to_unit_box` coordinates back to the
    sphere's coordinates, followed by ``depth`` hidden layers of ``width`` ReLU units and a
    linear layer with 2 outputs (0: inner sphere, 1: outer sphere). Gilmer et al. used
    two hidden layers of 1000 units.

    >>> sphere_model(5, width=8)(torch.full((3, 5), 0.5)).shape
    torch.Size([3, 2])
    """
    _check_dim(d)
    check_positive_int(width, "width")
    check_positive_int(depth, "depth")
    check_positive(box, "box")
    torch.manual_seed(check_seed(seed))
    layers: list[nn.Module] = [_models.Normalize((0.5,), (1.0 / (2.0 * box),))]
    width_in = d
    for _ in range(depth):
        layers += [nn.Linear(width_in, width), nn.ReLU()]
        width_in = width
    layers.append(nn.Linear(width_in, 2))
    return nn.Sequential(*layers)


class NearestError(NamedTuple):
    """Result of :func:`nearest_error_on_sphere`, batch-first.

    ``x_adv`` (B, d): the misclassified point found on the sphere of each input (the
    input itself if it is misclassified; the input, unchanged, where nothing was found);
    ``distance`` (B,): Euclidean distance from the input to ``x_adv`` (``inf`` where
    nothing was found); ``found`` (B,) bool.
    """

    x_adv: torch.Tensor
    distance: torch.Tensor
    found: torch.Tensor


def _tangent(v: torch.Tensor, xhat: torch.Tensor) -> torch.Tensor:
    return v - (v * xhat).sum(1, keepdim=True) * xhat


def nearest_error_on_sphere(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, box: float, steps: int = 20,
                            search_steps: int = 10, seed: int = 0) -> NearestError:
    r"""Find, for every point ``x[i]`` of a sphere, a nearby point *of the same sphere* that
    ``model`` misclassifies: an upper bound on the distance to the error set :math:`E`.

    The search is projected gradient ascent *on the sphere* :math:`\|x'\| = r = \|x\|`
    (Riemannian PGD) on the Carlini--Wagner margin :math:`\max_{j \ne y} z_j - z_y`. With
    :math:`x' = r p`, :math:`\|p\| = 1`, and an angular budget :math:`\theta` (a point at
    angle :math:`\beta` from :math:`\hat x = x/r` is at chordal distance
    :math:`2r\sin(\beta/2)`), one step

    1. moves :math:`p` along the normalized tangent part of the gradient,
       :math:`g - (g^\top p)\,p`, by an angle of about :math:`2.5\theta/\text{steps}`,
    2. retracts onto the sphere, :math:`p \leftarrow p/\|p\|`,
    3. projects onto the geodesic ball :math:`\angle(p, \hat x) \le \theta` (moving along
       the great circle through :math:`\hat x` and :math:`p`).

    A first search with :math:`\theta = \pi` (the whole sphere, constant steps) from two
    random starts gives an error if one can be found; then ``search_steps`` rounds of
    bisection on :math:`\theta`, per input, each started at the full budget towards the
    closest misclassified point so far and with steps decaying linearly to 0, shrink it.
    The closest misclassified point seen is kept.

    Parameters
    ----------
    model : torch.nn.Module
        Maps :func:`to_unit_box` coordinates to logits (e.g. :func:`sphere_model`).
    x : torch.Tensor
        Points (B, d) in sphere coordinates, each on its own sphere of radius at most ``box``.
    y : torch.Tensor
        Their labels (B,), int64.
    box : float
        Half-width of the cube that :func:`to_unit_box` maps to [0, 1].
    steps, search_steps : int
        PGD steps per budget; bisection rounds.
    seed : int
        Seeds the random starts.

    Returns
    -------
    NearestError
        Every returned ``x_adv`` with ``found`` is misclassified and has the norm of its
        input.

    Examples
    --------
    >>> from robustlab.models import Normalize
    >>> w = torch.nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = w.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]])), w.bias.zero_()
    >>> model = torch.nn.Sequential(Normalize((0.5,), (1 / 2.6,)), w)  # class 1 iff x_1 > 0
    >>> res = nearest_error_on_sphere(model, torch.tensor([[-0.6, 0.8]]), torch.tensor([0]), box=1.3)
    >>> bool(res.found[0]), round(float(res.distance[0]), 2)  # the nearest error is (0, 1)
    (True, 0.63)
    """
    check_model(model)
    check_positive(box, "box")
    _check_on_sphere(x, "x")
    check_labels(y, "y", batch_size=x.shape[0])
    check_positive_int(steps, "steps")
    check_positive_int(search_steps, "search_steps", allow_zero=True)
    device = _models.device_of(model)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    x = x.detach().to(device=device, dtype=dtype)
    y = y.to(device)
    radius = x.norm(dim=1, keepdim=True)
    if bool((radius <= 0).any()):
        raise ValueError("x must not contain the origin (it lies on no sphere)")
    if float(radius.max()) > box * (1 + 1e-6):
        raise ValueError(f"every point of x must have norm <= box={box}, got {float(radius.max()):.4g}")
    xhat = x / radius
    gen = torch.Generator(device=device).manual_seed(check_seed(seed))
    from .attacks import attack_objective, eval_mode

    def logits_at(points):
        # points lie on spheres of radius <= box, so inside the cube that maps to [0, 1]
        return model(points / (2.0 * box) + 0.5)

    def predict(points):
        return logits_at(points).argmax(1)

    def to_ball(p: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
        """Project unit vectors ``p`` onto the geodesic ball of angle ``budget`` around ``xhat``."""
        cos = (p * xhat).sum(1).clamp(-1.0, 1.0)
        u = _tangent(p, xhat)
        u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
        inside = torch.arccos(cos) <= budget
        edge = torch.cos(budget)[:, None] * xhat + torch.sin(budget)[:, None] * u
        return torch.where(inside[:, None], p, edge)

    def attack(budget: torch.Tensor, direction: torch.Tensor, start: torch.Tensor, decay: bool):
        """Riemannian PGD on the unit sphere within angle ``budget`` (B,) of ``xhat``, started
        at angle ``start`` along the unit tangent ``direction``; the closest error per input."""
        p = to_ball(torch.cos(start)[:, None] * xhat + torch.sin(start)[:, None] * direction, budget)
        best = torch.full((x.shape[0],), math.inf, device=device, dtype=dtype)
        best_x = x.clone()
        for k in range(steps + 1):
            p = p.detach().requires_grad_(True)
            with torch.enable_grad():
                points = radius * p
                logits = logits_at(points)
                objective = attack_objective(logits, y, "cw").sum()
                (grad,) = torch.autograd.grad(objective, p)
            with torch.no_grad():
                wrong = logits.argmax(1) != y
                dist = (points - x).norm(dim=1)
                better = wrong & (dist < best)
                best = torch.where(better, dist, best)
                best_x = torch.where(better[:, None], points, best_x)
                if k == steps:
                    break
                # normalized step along the sphere (tangent gradient at p), back onto the
                # sphere, then onto the geodesic ball; in the bisection the step decays
                alpha = (2.5 * budget / steps * ((1 - k / steps) if decay else 1.0))[:, None]
                g = grad - (grad * p).sum(1, keepdim=True) * p
                p = p + torch.tan(alpha.clamp(max=1.2)) * g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
                p = to_ball(p / p.norm(dim=1, keepdim=True), budget)
        return best, best_x

    def unit_tangent(v: torch.Tensor) -> torch.Tensor:
        v = _tangent(v, xhat)
        return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)

    with eval_mode(model), torch.no_grad():
        wrong0 = predict(x) != y
        best = torch.where(wrong0, torch.zeros_like(radius[:, 0]), torch.full_like(radius[:, 0], math.inf))
        best_x = x.clone()
        hi = torch.full_like(best, math.pi)
        # first the whole sphere (angle pi) from two random points of it
        for _ in range(2):
            direction = unit_tangent(torch.randn(x.shape, generator=gen, device=device, dtype=dtype))
            angle = torch.rand(hi.shape, generator=gen, device=device, dtype=dtype) * math.pi
            dist, points = attack(hi, direction, angle, decay=False)
            better = dist < best
            best, best_x = torch.where(better, dist, best), torch.where(better[:, None], points, best_x)
        lo = torch.zeros_like(best)
        # the angle of the closest error so far is an upper end for the bisection
        hi = torch.where(torch.isfinite(best), 2 * torch.arcsin((best / (2 * radius[:, 0])).clamp(max=1.0)), hi)
        for _ in range(search_steps):
            mid = (lo + hi) / 2
            # warm start: towards the closest error so far (random where there is none)
            toward = torch.where(torch.isfinite(best)[:, None] & ~wrong0[:, None], unit_tangent(best_x - x), direction)
            dist, points = attack(mid, toward, mid, decay=True)
            ok = torch.isfinite(dist)
            better = dist < best
            best, best_x = torch.where(better, dist, best), torch.where(better[:, None], points, best_x)
            hi = torch.where(ok, torch.minimum(mid, hi), hi)
            lo = torch.where(ok, lo, mid)
        found = torch.isfinite(best)
        # re-check and put every returned point exactly on its sphere
        best_x = best_x / best_x.norm(dim=1, keepdim=True) * radius
        still_wrong = predict(best_x) != y
        found = found & (still_wrong | wrong0)
        best_x = torch.where(wrong0[:, None], x, best_x)
        best_x = torch.where(found[:, None], best_x, x)
        distance = torch.where(found, (best_x - x).norm(dim=1), torch.full_like(best, math.inf))
    return NearestError(best_x.cpu(), distance.cpu(), found.cpu())


@dataclasses.dataclass
class AdversarialSpheres:
    """Adversarial-spheres measurements, one row per (dimension, sphere).

    Every row of :meth:`as_table` holds: ``d``; ``sphere`` ("inner" or "outer") and its
    ``radius``; ``error`` the error rate :math:`\\mu` on that sphere (from ``n_error``
    uniform points) and ``error_lower`` its one-sided Clopper--Pearson lower bound at
    level ``alpha``; ``distance_mean`` and ``distance_median``, the mean and median
    distance to the nearest error found by :func:`nearest_error_on_sphere` over
    ``n_attack`` uniform points (misclassified points count 0; divided by the radius, so
    on the unit sphere); ``found`` the fraction of points with an error found; the
    bounds ``bound_mean`` and ``bound_median`` (:func:`isoperimetric_bound` at ``error``),
    ``bound_mean_conservative`` (at ``error_lower``, valid with probability at least
    :math:`1-\\alpha`) and ``approximation`` (:func:`isoperimetric_approximation`).
    ``accuracy`` is the test accuracy on fresh points of both spheres.
    """

    rows: list
    alpha: float
    settings: dict

    def as_table(self) -> list:
        return [dict(r) for r in self.rows]

    def plot(self, ax=None):
        """Measured mean distance to the nearest error against ``d``, with the exact bound at
        the measured error rate and its Gaussian form, on log-log axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6.5, 4))
        for k, sphere in enumerate(("inner", "outer")):
            rows = [r for r in self.rows if r["sphere"] == sphere]
            ds = [r["d"] for r in rows]
            c = f"C{k}"
            ax.plot(ds, [r["distance_mean"] for r in rows], "o-", color=c, label=f"{sphere} sphere: measured (attack)")
            ax.plot(ds, [r["bound_mean"] for r in rows], "s--", color=c, alpha=0.7,
                    label=f"{sphere} sphere: isoperimetric bound at μ")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ds = sorted({r["d"] for r in self.rows})
        ax.set_xticks(ds, [str(d) for d in ds])
        ax.set_xticks([], minor=True)
        ax.set_xlabel("dimension d")
        ax.set_ylabel("mean distance to the nearest error (unit sphere)")
        ax.legend(fontsize=8)
        return ax


def _clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    from scipy.stats import beta

    return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))


def adversarial_spheres(d_values=(8, 32, 128), *, n_train: int = 2000, r_inner: float = 1.0, r_outer: float = 1.3,
                        width: int = 128, depth: int = 2, epochs: int = 10, lr: float = 1e-3, batch_size: int = 128,
                        n_error: int = 20000, n_attack: int = 100, steps: int = 15, search_steps: int = 8,
                        alpha: float = 0.05, seed: int = 0, progress: bool | None = None) -> AdversarialSpheres:
    r"""The adversarial-spheres experiment (Gilmer et al., 2018) over several dimensions.

    For every :math:`d` in ``d_values``: draw ``n_train`` points of
    :func:`robustlab.data.concentric_spheres` (radii ``r_inner`` and ``r_outer``), train a
    :func:`sphere_model` on them with :func:`robustlab.train.fit`; measure its error rate
    :math:`\mu` on each sphere with ``n_error`` fresh uniform points, and the distance from
    ``n_attack`` fresh uniform points to the nearest error on the same sphere with
    :func:`nearest_error_on_sphere`. A point where no error is found anywhere on the sphere
    counts the sphere's diameter (an upper bound on its distance to a non-empty error
    set). Then compare with :func:`isoperimetric_bound`: whatever the network, the true
    mean distance cannot exceed the bound at its error rate; the attack's distances are
    upper estimates of the true ones, so a measured distance *below* the bound means the
    attack found errors at least as close as the geometry guarantees.

    Returns
    -------
    AdversarialSpheres
        With ``.as_table()`` and ``.plot()``.
    """
    d_values = [_check_dim(d, "d_values") for d in d_values]
    if not d_values:
        raise ValueError("d_values must hold at least one dimension")
    for value, name in ((n_train, "n_train"), (width, "width"), (depth, "depth"), (epochs, "epochs"),
                        (batch_size, "batch_size"), (n_error, "n_error"), (n_attack, "n_attack")):
        check_positive_int(value, name)
    check_positive(r_inner, "r_inner")
    check_positive(r_outer, "r_outer")
    if r_outer <= r_inner:
        raise ValueError(f"r_outer must exceed r_inner, got r_inner={r_inner}, r_outer={r_outer}")
    alpha = check_probability(alpha, "alpha")
    seed = check_seed(seed)
    box = float(r_outer)
    rows = []
    bar = config.progress_bar(len(d_values), "adversarial spheres", config.progress_enabled(progress), unit="dim")
    try:
        for i, d in enumerate(d_values):
            run_seed = seed + 1000 * i
            train = _data.concentric_spheres(n_train, d, r_inner=r_inner, r_outer=r_outer, seed=run_seed)
            model = sphere_model(d, width=width, depth=depth, box=box, seed=run_seed)
            _train.fit(model, _data.Split(to_unit_box(train.x, box), train.y), epochs=epochs, lr=lr,
                       batch_size=batch_size, seed=run_seed, progress=False)
            model.eval()
            test = _data.concentric_spheres(4000, d, r_inner=r_inner, r_outer=r_outer, seed=run_seed + 1)
            accuracy = _train.evaluate(model, (to_unit_box(test.x, box), test.y))
            for label, (sphere, r) in enumerate((("inner", r_inner), ("outer", r_outer))):
                pts = sample_sphere(n_error, d, radius=r, seed=run_seed + 2 + label)
                wrong = int((_train.predict(model, to_unit_box(pts, box)) != label).sum())
                mu = wrong / n_error
                mu_low = _clopper_pearson_lower(wrong, n_error, alpha)
                x = sample_sphere(n_attack, d, radius=r, seed=run_seed + 4 + label)
                y = torch.full((n_attack,), label, dtype=torch.int64)
                res = nearest_error_on_sphere(model, x, y, box=box, steps=steps, search_steps=search_steps,
                                              seed=run_seed)
                any_error = bool(res.found.any()) or wrong > 0
                dist = torch.where(res.found, res.distance / r,
                                   torch.tensor(2.0 if any_error else math.inf, dtype=res.distance.dtype))
                rows.append(dict(
                    d=d, sphere=sphere, radius=float(r), accuracy=accuracy, error=mu, error_lower=mu_low,
                    distance_mean=float(dist.mean()), distance_median=float(dist.median()),
                    found=float(res.found.float().mean()),
                    bound_mean=float(isoperimetric_bound(mu, d)),
                    bound_median=float(isoperimetric_bound(mu, d, statistic="median")),
                    bound_mean_conservative=float(isoperimetric_bound(mu_low, d)),
                    approximation=float(isoperimetric_approximation(mu, d)) if mu > 0 else math.inf,
                ))
            bar.update(1)
    finally:
        bar.close()
    settings = dict(n_train=n_train, r_inner=r_inner, r_outer=r_outer, width=width, depth=depth, epochs=epochs,
                    n_error=n_error, n_attack=n_attack, steps=steps, search_steps=search_steps, seed=seed)
    return AdversarialSpheres(rows, alpha, settings)


# =========================================================================== 3. curse of dimensionality


def _check_p(p) -> float:
    if isinstance(p, str):
        if p.lower() not in ("linf", "inf"):
            raise ValueError(f"p must be a number >= 2 or 'linf', got {p!r}")
        return math.inf
    if isinstance(p, bool) or not isinstance(p, Real) or math.isnan(p):
        raise TypeError(f"p must be a number >= 2 or 'linf', got {type(p).__name__}")
    if p < 2:
        raise ValueError(f"p must be >= 2 (the curse concerns p > 2; p = 2 is the L2 certificate itself), got {p}")
    return float(p)


def curse_of_dimensionality(d, p):
    r"""Ratio of the certifiable :math:`L_p` radius to the :math:`L_2` radius under i.i.d.
    noise, :math:`d^{1/p - 1/2}` for :math:`p \ge 2`.

    From an :math:`L_2` certificate of radius :math:`R_2`, the norm inequality
    :math:`\|\delta\|_2 \le d^{1/2 - 1/p}\|\delta\|_p` certifies the :math:`L_p` ball of
    radius :math:`R_2\, d^{1/p - 1/2}` (:func:`lp_radius_from_l2`); the constant
    perturbation :math:`\delta = c\,\mathbf{1}` attains the inequality, so no better
    :math:`L_p` radius follows from the :math:`L_2` one. Kumar et al. (2020) prove the
    matching statement for smoothing itself: for any smoothing distribution i.i.d.
    across the :math:`d` coordinates, the largest certifiable :math:`L_p` radius
    (:math:`p > 2`) at a fixed noise level per coordinate is
    :math:`O(1/d^{1/2 - 1/p})`, so isotropic Gaussian smoothing with this conversion is
    optimal up to a constant. For :math:`p = \infty` the ratio is :math:`1/\sqrt{d}`.

    Parameters
    ----------
    d : int or array of int
        Input dimension(s), >= 1.
    p : float >= 2, math.inf or "linf"

    Examples
    --------
    >>> curse_of_dimensionality(64, "linf")
    0.125
    >>> curse_of_dimensionality(3072, 2)
    1.0
    """
    p = _check_p(p)
    d = _as_array(d, "d")
    if (d < 1).any() or (d != np.round(d)).any():
        raise ValueError(f"d must hold integers >= 1, got values in [{d.min():.4g}, {d.max():.4g}]")
    return _out(d ** (1.0 / p - 0.5))


def lp_radius_from_l2(radius_l2, d, p):
    r"""The :math:`L_p` radius (:math:`p \ge 2`) certified by an :math:`L_2` certificate of
    radius ``radius_l2`` in dimension ``d``: :math:`R_2\, d^{1/p - 1/2}`.

    Every :math:`\delta` with :math:`\|\delta\|_p \le R_2\, d^{1/p-1/2}` has
    :math:`\|\delta\|_2 \le R_2`. For CIFAR-10 (:math:`d = 3072`) an :math:`L_2` radius of
    0.5 gives an :math:`L_\infty` radius of about 0.009, i.e. 2.3/255.

    >>> round(lp_radius_from_l2(0.5, 3072, "linf") * 255, 2)
    2.3
    """
    r = _check_eps(radius_l2, "radius_l2")
    return _out(r * np.asarray(curse_of_dimensionality(d, p)))


def plot_curse_of_dimensionality(d_values=None, p_values=(2, 3, 4, 8, math.inf), *, ax=None, mark=None):
    r"""Plot :func:`curse_of_dimensionality` against the dimension, one line per ``p``.

    ``mark`` is an optional mapping ``{name: d}`` of input sizes to mark (e.g. the digits,
    MNIST, CIFAR-10). Returns the axes.
    """
    import matplotlib.pyplot as plt

    d_values = np.unique(np.round(np.logspace(0, 5.2, 60))) if d_values is None else _as_array(d_values, "d_values")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4))
    for k, p in enumerate(p_values):
        pv = _check_p(p)
        label = "p = ∞" if pv == math.inf else f"p = {pv:g}"
        ax.plot(d_values, curse_of_dimensionality(d_values, pv), color=f"C{k % 10}", label=label)
    if mark:
        for name, d in mark.items():
            ax.axvline(d, color="grey", ls=":", lw=1)
            ax.text(d, 1.05, f" {name}", rotation=90, va="bottom", ha="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("input dimension d")
    ax.set_ylabel("certified $L_p$ radius / $L_2$ radius")
    ax.legend(fontsize=8, loc="lower left")
    return ax
