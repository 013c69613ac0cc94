r"""Second-order smoothing (SoS) and Gaussian dipole smoothing: what more a Gaussian-smoothed
classifier can certify than Cohen et al.'s radius, and why it is so little (Levine, Kumar,
Goldstein and Feizi, *Tight second-order certificates for randomized smoothing*, arXiv 2010.10549).

**The first-order certificate is the worst case over one constraint.** Write
:math:`p(x) = P(f(x + \delta) = c_A)`, :math:`\delta \sim \mathcal N(0, \sigma^2 I)`. Cohen et
al.'s radius :math:`\sigma\Phi^{-1}(p_A)` is the smallest :math:`p(x + \varepsilon)` over
*every* base classifier with :math:`p(x) = p_A` (Neyman--Pearson): the minimizer is a
half-space, whose probability falls as :math:`\Phi(\Phi^{-1}(p_A) - \|\varepsilon\|/\sigma)`.

**A second constraint.** The smoothed probability is differentiable, with
:math:`\nabla p(x) = \mathbb E[\mathbb 1[f(x+\delta) = c_A]\,\delta] / \sigma^2` (Stein's
lemma). A half-space has the largest gradient any :math:`f` with this :math:`p_A` can have,
:math:`\|\nabla p\|_2 \le \varphi(\Phi^{-1}(p_A))/\sigma` (:func:`max_gradient_norm`). If
:math:`\|\nabla p(x)\|_2 \le G` is known to be smaller, the half-space is excluded. In the
coordinates :math:`z = \delta/\sigma` with :math:`z_1` along the attack direction, the worst
base classifier under both constraints is, by the generalized Neyman--Pearson lemma, a
**slab** :math:`\{t_1 < z_1 < t_2\}` (the set where the likelihood ratio
:math:`e^{r z_1 - r^2/2}` lies below a line :math:`\lambda_1 + \lambda_2 z_1`) with

.. math::

    \Phi(t_2) - \Phi(t_1) = p_A, \qquad \varphi(t_1) - \varphi(t_2) = -\sigma G .

With :math:`t_1 = \Phi^{-1}(a')` and :math:`t_2 = \Phi^{-1}(a' + p_A)`, :func:`solve_a_prime`
finds :math:`a' \in [0, (1 - p_A)/2]` (:math:`a' = 0` is the half-space, :math:`G \ge` the
maximum; :math:`a' = (1-p_A)/2` the symmetric slab, :math:`G = 0`), and at distance :math:`R`

.. math::

    p(x + \varepsilon) \;\ge\; \Phi\big(\Phi^{-1}(p_A + a') - R/\sigma\big) - \Phi\big(\Phi^{-1}(a') - R/\sigma\big)
    \quad \text{for every } \|\varepsilon\|_2 \le R

(:func:`sos_certified_score`). The SoS radius is the largest :math:`R` at which this stays
above 1/2 (:func:`sos_radius`). The bound is increasing in :math:`p_A` and decreasing in
:math:`G`, so a lower confidence bound :math:`\underline{p_A}` and an upper bound :math:`G`
keep it sound; it is *tight*: the slab meets it exactly. Since every slab keeps more mass than
the half-space, SoS is never below Cohen's radius with the same :math:`p_A`, and at most
:math:`\sigma\Phi^{-1}((1 + p_A)/2)`.

**Estimating the gradient norm.** For independent :math:`\delta_A, \delta_B`,

.. math::

    \|\nabla p(x)\|_2^2 = \frac{1}{\sigma^4}\,
    \mathbb E\big[\mathbb 1[f(x+\delta_A) = c_A]\,\mathbb 1[f(x+\delta_B) = c_A]\,\langle\delta_A, \delta_B\rangle\big],

so the mean :math:`\hat\Gamma` of this product over :math:`m = n/2` pairs of the :math:`n`
estimation samples is unbiased. The paper's concentration bound gives the upper confidence
bound at level :math:`\alpha'` (:func:`gradient_norm_bound`)

.. math::

    G^2 = \hat\Gamma + \frac{t}{\sigma^4}, \qquad
    t = \begin{cases} 4\sigma^2\sqrt{d\ln(1/\alpha')/m} & d\,m \ge 2\ln(1/\alpha') \\
    4\sqrt2\,\sigma^2\ln(1/\alpha')/m & \text{otherwise,} \end{cases}

clipped to :math:`[0, (\varphi(\Phi^{-1}(\underline{p_A}))/\sigma)^2]`; a clipped bound is
*vacuous* and gives back Cohen's radius. The term :math:`t/\sigma^4` grows with
:math:`\sqrt d` and shrinks only like :math:`1/\sqrt m`: **the gradient helps only in low
dimension with very many samples.** :func:`certify_sos` splits :math:`\alpha` in half between
:math:`\underline{p_A}` (Clopper--Pearson on all :math:`n` samples) and :math:`G` (the
:math:`n/2` pairs of the same samples).

**Gaussian dipole smoothing** uses antithetic pairs :math:`x \pm \delta` and no gradient
(:class:`AntitheticGaussianNoise`, :func:`certify_dipole`). Split :math:`p_A = C_S + C_N`
into the probability :math:`C_S` that both members of a pair vote :math:`c_A` (a set
symmetric about :math:`x`, whose worst case is the symmetric slab) and :math:`C_N` that only
:math:`x + \delta` does (worst case a half-space):

.. math::

    p(x + \varepsilon) \ge \Phi\big(\Phi^{-1}(C_N) - R/\sigma\big)
    + \Phi\big(\Phi^{-1}(\tfrac{1 + C_S}{2}) - R/\sigma\big) - \Phi\big(\Phi^{-1}(\tfrac{1 - C_S}{2}) - R/\sigma\big)

(:func:`dipole_certified_score`), with one-sided Clopper--Pearson bounds at :math:`\alpha/2`
on each from the :math:`n/2` pairs. On a half-space this is exactly Cohen's bound, on a
symmetric slab exactly SoS with :math:`G = 0`; it costs the same :math:`n` forward passes as
Cohen's CERTIFY.

Both certifiers are batch-first, run on :mod:`robustlab.smoothing.sampling` (input ``i``'s
noise stream is seeded ``seed + i``; :func:`certify_sos` draws exactly the noise of
:func:`robustlab.smoothing.gaussian.certify` with the same seed, so the two can be compared
on the same samples) and return :class:`~robustlab.certificates.Certificate` in L2 pixels.
Paper defaults: ``n0 = 100``, ``n = 100_000`` (up to :math:`10^8`), ``alpha = 0.001``.

Examples
--------
>>> round(sos_radius(0.9, 0.0, 1.0), 4), round(sos_radius(0.9, max_gradient_norm(0.9, 1.0), 1.0), 4)
(1.6436, 1.2816)
>>> round(dipole_radius(0.85, 0.05, 0.5), 4)  # p_A = C_S + C_N = 0.9: above Cohen's 0.5 * 1.2816 = 0.6408
0.7185
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import votes as _votes
from ..certificates import ABSTAIN, UNITS, Certificate
from ..stats import clopper_pearson
from .._validate import (check_images, check_model, check_positive, check_positive_int, check_probability)
from . import sampling as _sampling

__all__ = [
    "DEFAULT_N0",
    "DEFAULT_N",
    "DEFAULT_ALPHA",
    "AntitheticGaussianNoise",
    "max_gradient_norm",
    "solve_a_prime",
    "sos_certified_score",
    "sos_radius",
    "gradient_concentration",
    "gradient_norm_bound",
    "dipole_certified_score",
    "dipole_radius",
    "certify_sos",
    "certify_dipole",
]

DEFAULT_N0 = 100
DEFAULT_N = 100_000
DEFAULT_ALPHA = 0.001

_BISECT = 80  # halvings: the bracket shrinks by 2^-80, far below float64 resolution of a radius


# =========================================================================== helpers


def _array(v, name, *, low=0.0, high=1.0, high_open=False):
    """A float64 array of values in [low, high] (or [low, high)) from a number, array or tensor."""
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    arr = np.asarray(v)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    if arr.size and (arr.min() < low or (arr.max() >= high if high_open else arr.max() > high)):
        interval = f"[{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must hold values in {interval}, got values in [{arr.min():.4g}, {arr.max():.4g}]")
    return arr


def _out(arr, *inputs):
    scalar = all(np.ndim(v) == 0 and not isinstance(v, torch.Tensor) for v in inputs)
    return float(arr) if scalar else np.asarray(arr, dtype=np.float64)


def _phi(t):
    # the standard normal density; 0 at +-inf
    return np.exp(-0.5 * np.square(t)) / math.sqrt(2.0 * math.pi)


def _cdf(t):
    from scipy.special import ndtr
    return ndtr(t)


def _ppf(p):
    from scipy.special import ndtri
    return ndtri(np.clip(p, 0.0, 1.0))  # clip: rounding of p + a' just above 1


# =========================================================================== the SoS certificate


def max_gradient_norm(p, sigma: float):
    r"""The largest :math:`\|\nabla p(x)\|_2` any base classifier with smoothed probability
    :math:`p` can have: :math:`\varphi(\Phi^{-1}(p))/\sigma`, attained by a half-space.

    >>> round(max_gradient_norm(0.5, 0.25), 4)  # phi(0) / 0.25
    1.5958
    """
    sigma = check_positive(sigma, "sigma")
    p_arr = _array(p, "p")
    return _out(_phi(_ppf(p_arr)) / sigma, p)


def solve_a_prime(p, grad_bound, sigma: float):
    r"""The lower edge mass :math:`a'` of the worst-case slab: the solution in
    :math:`[0, (1 - p)/2]` of

    .. math:: \varphi(\Phi^{-1}(a')) - \varphi(\Phi^{-1}(a' + p)) = -\sigma G,

    whose left side increases in :math:`a'` from :math:`-\varphi(\Phi^{-1}(p))` (the
    half-space) to 0 (the symmetric slab). :math:`a' = 0` where
    :math:`G \ge` :func:`max_gradient_norm`. Bisection; the lower end of the final bracket is
    returned, which can only lower the certified score (it increases in :math:`a'`).

    >>> round(solve_a_prime(0.6, 0.0, 1.0), 6), solve_a_prime(0.6, 10.0, 1.0)
    (0.2, 0.0)
    """
    sigma = check_positive(sigma, "sigma")
    p_arr = _array(p, "p")
    g_arr = _array(grad_bound, "grad_bound", high=math.inf)
    p_arr, g_arr = np.broadcast_arrays(p_arr, g_arr)
    target = -sigma * g_arr
    lo, hi = np.zeros(p_arr.shape), (1.0 - p_arr) / 2.0
    for _ in range(_BISECT):
        mid = (lo + hi) / 2.0
        above = _phi(_ppf(mid)) - _phi(_ppf(mid + p_arr)) > target
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return _out(lo, p, grad_bound)


def _slab_score(p, a, radius, sigma):
    shift = radius / sigma
    return _cdf(_ppf(p + a) - shift) - _cdf(_ppf(a) - shift)


def sos_certified_score(p, grad_bound, radius, sigma: float):
    r"""The SoS lower bound on :math:`P(f(x + \varepsilon + \delta) = c_A)` over every
    :math:`\|\varepsilon\|_2 \le R`, given :math:`p(x) \ge p` and :math:`\|\nabla p(x)\|_2 \le G`:

    .. math:: \Phi\big(\Phi^{-1}(p + a') - R/\sigma\big) - \Phi\big(\Phi^{-1}(a') - R/\sigma\big),

    with :math:`a'` from :func:`solve_a_prime` (module docstring). At :math:`R = 0` it is
    :math:`p`; with :math:`G \ge` :func:`max_gradient_norm` it is Cohen's
    :math:`\Phi(\Phi^{-1}(p) - R/\sigma)`.

    Parameters
    ----------
    p : float or array-like
        Lower bound on the smoothed probability of the class, in [0, 1].
    grad_bound : float or array-like
        Upper bound :math:`G \ge 0` on the gradient norm of that probability (per pixel unit).
    radius : float or array-like
        :math:`R \ge 0` (broadcast against ``p`` and ``grad_bound``).
    sigma : float
        Noise standard deviation.

    >>> round(sos_certified_score(0.9, 10.0, 0.5, 0.5), 6) == round(float(_cdf(_ppf(0.9) - 1.0)), 6)
    True
    """
    sigma = check_positive(sigma, "sigma")
    r = _array(radius, "radius", high=math.inf)
    a = np.asarray(solve_a_prime(p, grad_bound, sigma))
    p_arr = _array(p, "p")
    return _out(_slab_score(p_arr, a, r, sigma), p, grad_bound, radius)


def sos_radius(p, grad_bound, sigma: float):
    r"""The SoS certified radius: the largest :math:`R` with :func:`sos_certified_score`
    :math:`> 1/2` (0 where :math:`p \le 1/2`).

    Bisection between Cohen's :math:`\sigma\Phi^{-1}(p)` (every slab keeps at least the
    half-space's mass) and :math:`\sigma\Phi^{-1}((1 + p)/2)` (the symmetric slab's edge); the
    lower end of the final bracket is returned. The score decreases in :math:`R` because the
    worst-case slab's centre lies at :math:`z_1 \le 0`.

    Parameters
    ----------
    p : float or array-like
        Lower bound on the top class's smoothed probability, in [0, 1).
    grad_bound : float or array-like
        Upper bound on its gradient norm, >= 0.
    sigma : float
        Noise standard deviation.

    Examples
    --------
    >>> r = sos_radius([0.6, 0.9, 0.99], 0.0, 1.0)  # G = 0: the symmetric slab
    >>> [round(v, 4) for v in r.tolist()]
    [0.6805, 1.6436, 2.5758]
    >>> [round(v, 4) for v in sos_radius([0.6, 0.9, 0.99], 100.0, 1.0).tolist()]  # vacuous G: Cohen
    [0.2533, 1.2816, 2.3263]
    """
    sigma = check_positive(sigma, "sigma")
    p_arr = _array(p, "p", high=1.0, high_open=True)
    g_arr = _array(grad_bound, "grad_bound", high=math.inf)
    p_arr, g_arr = np.broadcast_arrays(p_arr, g_arr)
    a = np.asarray(solve_a_prime(p_arr, g_arr, sigma))
    ok = p_arr > 0.5
    safe = np.where(ok, p_arr, 0.75)  # placeholder where nothing is certified
    lo = sigma * _ppf(safe)
    hi = sigma * _ppf((1.0 + safe) / 2.0)
    for _ in range(_BISECT):
        mid = (lo + hi) / 2.0
        above = _slab_score(safe, a, mid, sigma) > 0.5
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    return _out(np.where(ok, lo, 0.0), p, grad_bound)


# =========================================================================== the gradient bound


def gradient_concentration(n_pairs: int, d: int, sigma: float, alpha: float) -> float:
    r"""The deviation :math:`t/\sigma^4` the paper adds to the estimate :math:`\hat\Gamma` of
    :math:`\|\nabla p\|_2^2` from ``n_pairs`` independent pairs in dimension ``d`` at level
    ``alpha`` (module docstring): :math:`4\sqrt{d\ln(1/\alpha)/m}/\sigma^2` when
    :math:`d\,m \ge 2\ln(1/\alpha)`, else :math:`4\sqrt2\ln(1/\alpha)/(m\sigma^2)`.

    >>> round(gradient_concentration(50_000, 64, 0.25, 0.0005), 2)  # digits, n = 1e5: above G_max^2 = 2.55
    6.31
    """
    m = check_positive_int(n_pairs, "n_pairs")
    d = check_positive_int(d, "d")
    sigma = check_positive(sigma, "sigma")
    alpha = check_probability(alpha, "alpha")
    log_term = math.log(1.0 / alpha)
    if d * m >= 2.0 * log_term:
        t = 4.0 * sigma ** 2 * math.sqrt(d * log_term / m)
    else:
        t = 4.0 * math.sqrt(2.0) * sigma ** 2 * log_term / m
    return t / sigma ** 4


def gradient_norm_bound(grad_squared, n_pairs: int, d: int, sigma: float, alpha: float, p_lower):
    r"""The upper confidence bound :math:`G` on :math:`\|\nabla p(x)\|_2` and whether it is
    meaningful (non-vacuous).

    :math:`G^2 = \hat\Gamma +` :func:`gradient_concentration`, clipped to
    :math:`[0, G_{\max}^2]` with :math:`G_{\max} =` :func:`max_gradient_norm`
    :math:`(\underline{p_A})`. Where the bound reaches :math:`G_{\max}` it says nothing a
    half-space would not allow (``meaningful`` False) and SoS gives Cohen's radius.

    Parameters
    ----------
    grad_squared : float or array-like
        The unbiased estimate :math:`\hat\Gamma` (may be negative).
    n_pairs, d : int
        Pairs behind the estimate, and the input dimension.
    sigma, alpha : float
        Noise level and the failure probability of this bound.
    p_lower : float or array-like
        The lower bound :math:`\underline{p_A}` used with it.

    Returns
    -------
    (grad_bound, meaningful) : float64 arrays (or a float and a bool)

    >>> g, ok = gradient_norm_bound(0.0, 10 ** 9, 2, 1.0, 0.001, 0.8)
    >>> round(g, 4), ok
    (0.0217, True)
    """
    t = gradient_concentration(n_pairs, d, sigma, alpha)
    gamma = _array(grad_squared, "grad_squared", low=-math.inf, high=math.inf)
    g_max = np.asarray(max_gradient_norm(p_lower, sigma))
    upper = gamma + t
    meaningful = upper < g_max ** 2
    g = np.sqrt(np.clip(upper, 0.0, g_max ** 2))
    scalar = np.ndim(grad_squared) == 0 and np.ndim(p_lower) == 0 and not isinstance(grad_squared, torch.Tensor)
    return (float(g), bool(meaningful)) if scalar else (g.astype(np.float64), np.asarray(meaningful))


# =========================================================================== dipole


def dipole_certified_score(c_s, c_n, radius, sigma: float):
    r"""The dipole lower bound on :math:`P(f(x + \varepsilon + \delta) = c_A)`,
    :math:`\|\varepsilon\|_2 \le R`, from :math:`C_S` (both :math:`x \pm \delta` vote
    :math:`c_A`) and :math:`C_N` (only :math:`x + \delta` does), lower bounds in [0, 1]:

    .. math::

        \Phi\big(\Phi^{-1}(C_N) - R/\sigma\big) + \Phi\big(\Phi^{-1}(\tfrac{1+C_S}{2}) - R/\sigma\big)
        - \Phi\big(\Phi^{-1}(\tfrac{1-C_S}{2}) - R/\sigma\big).

    The symmetric part is a set symmetric about :math:`x`, whose worst case is the symmetric
    slab (SoS with :math:`G = 0`); the rest is bounded by a half-space (Neyman--Pearson). The
    sum of the two minima is at most the minimum of the sum, so the bound is sound; it is
    increasing in both :math:`C_S` and :math:`C_N`.

    >>> round(dipole_certified_score(0.0, 0.8, 0.0, 1.0), 6), round(dipole_certified_score(0.8, 0.0, 0.0, 1.0), 6)
    (0.8, 0.8)
    """
    sigma = check_positive(sigma, "sigma")
    cs, cn = _array(c_s, "c_s"), _array(c_n, "c_n")
    r = _array(radius, "radius", high=math.inf)
    shift = r / sigma
    score = _cdf(_ppf(cn) - shift) + _cdf(_ppf((1.0 + cs) / 2.0) - shift) - _cdf(_ppf((1.0 - cs) / 2.0) - shift)
    return _out(score, c_s, c_n, radius)


def dipole_radius(c_s, c_n, sigma: float):
    r"""The dipole certified radius: the largest :math:`R` with :func:`dipole_certified_score`
    :math:`> 1/2` (0 where :math:`C_S + C_N \le 1/2`). Bisection after doubling an upper end
    from :math:`\sigma`; the lower end of the final bracket is returned.

    >>> round(dipole_radius(0.0, 0.9, 1.0), 4), round(dipole_radius(0.9, 0.0, 1.0), 4)  # Cohen; symmetric slab
    (1.2816, 1.6436)
    """
    sigma = check_positive(sigma, "sigma")
    cs, cn = np.broadcast_arrays(_array(c_s, "c_s"), _array(c_n, "c_n"))
    if cs.size and float((cs + cn).max()) >= 1.0:
        raise ValueError("c_s + c_n must be < 1 (probabilities of disjoint events; a total of 1 would certify an "
                         "infinite radius)")
    ok = (cs + cn) > 0.5
    lo, hi = np.zeros(cs.shape), np.full(cs.shape, sigma)
    for _ in range(200):
        grow = ok & (np.asarray(dipole_certified_score(cs, cn, hi, sigma)) > 0.5)
        if not grow.any():
            break
        lo, hi = np.where(grow, hi, lo), np.where(grow, 2.0 * hi, hi)
    for _ in range(_BISECT):
        mid = (lo + hi) / 2.0
        above = np.asarray(dipole_certified_score(cs, cn, mid, sigma)) > 0.5
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return _out(np.where(ok, lo, 0.0), c_s, c_n)


# =========================================================================== sampling


class AntitheticGaussianNoise(_sampling.GaussianNoise):
    r"""Antithetic Gaussian pairs: copies :math:`2j` and :math:`2j + 1` are
    :math:`x + \delta_j` and :math:`x - \delta_j`, :math:`\delta_j \sim \mathcal N(0, \sigma^2 I)`
    (dipole smoothing). Every block of draws must be even.

    >>> z = AntitheticGaussianNoise(0.5).sample(torch.zeros(3), 4, torch.Generator().manual_seed(0))
    >>> bool(torch.equal(z[0], -z[1])), bool(torch.equal(z[2], -z[3]))
    (True, True)
    """

    def draw(self, shape, generator, device, dtype):
        if shape[0] % 2:
            raise ValueError(f"antithetic noise is drawn in pairs: the number of copies must be even, got {shape[0]}")
        half = super().draw((shape[0] // 2, *shape[1:]), generator, device, dtype)
        return torch.stack([half, -half], 1).reshape(shape)

    def __repr__(self):
        return f"AntitheticGaussianNoise(sigma={self.sigma:g})"


class _PairProducts(_sampling.GaussianNoise):
    """Gaussian noise that also records the inner products of consecutive pairs of copies."""

    def __init__(self, sigma):
        super().__init__(sigma)
        self.products = None  # a list while recording

    def draw(self, shape, generator, device, dtype):
        noise = super().draw(shape, generator, device, dtype)
        if self.products is not None:
            if shape[0] % 2:
                raise ValueError(f"the gradient estimate uses pairs of samples: n must be even, got a block of {shape[0]}")
            pairs = noise.reshape(shape[0] // 2, 2, -1).double()
            self.products.append((pairs[:, 0] * pairs[:, 1]).sum(1).cpu())
        return noise


class _VoteRecorder(torch.nn.Module):
    """Wraps the base model and records its argmax vote on every copy, in stream order."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.votes = None  # a list while recording

    def forward(self, z):
        logits = self.model(z)
        if self.votes is not None:
            self.votes.append(logits.argmax(1).cpu())
        return logits


def _check_common(model, x, sigma, n0, n, alpha, batch_size):
    check_model(model)
    check_images(x, "x")
    sigma = check_positive(sigma, "sigma")
    check_positive_int(n0, "n0")
    n = check_positive_int(n, "n")
    if n % 2:
        raise ValueError(f"n must be even (the estimation samples are used in pairs), got {n}")
    check_positive_int(batch_size, "batch_size")
    return sigma, check_probability(alpha, "alpha")


def _chunks(batch, n):
    size = max(1, 2_000_000 // n)  # votes of at most 2e6 copies in memory at once
    return [(i, min(batch, i + size)) for i in range(0, batch, size)]


def _paired_votes(model, x, n0, n, noise, seed, batch_size, progress, desc, reduce):
    """Selection and estimation counts (B, K), and ``reduce(votes, guess, products)`` per chunk of inputs.

    ``votes`` (b, n) are the estimation votes in stream order, ``guess`` (b,) the plurality of
    the selection counts, ``products`` (b, n/2) the inner products of consecutive noise pairs
    (only for :class:`_PairProducts`, else None). ``reduce`` returns a dict of (b,) tensors,
    which are joined over the chunks.
    """
    recorder = _VoteRecorder(model)
    all_seeds = _sampling.seeds(seed, x.shape[0])
    selections, estimations, reduced = [], [], []
    paired = isinstance(noise, _PairProducts)
    for lo, hi in _chunks(x.shape[0], n):
        with _sampling.Sampler(recorder, x[lo:hi], noise, mode="counts", seed=all_seeds[lo:hi],
                               batch_size=batch_size, progress=progress, desc=desc,
                               total=(hi - lo) * (n0 + n)) as sampler:
            selection = sampler.draw(n0).cpu()
            recorder.votes = []
            if paired:
                noise.products = []
            try:
                estimation = sampler.draw(n).cpu()
                votes = torch.cat(recorder.votes).reshape(hi - lo, n)
                products = torch.cat(noise.products).reshape(hi - lo, n // 2) if paired else None
            finally:
                recorder.votes = None
                if paired:
                    noise.products = None
        selections.append(selection)
        estimations.append(estimation)
        reduced.append(reduce(votes, _votes.plurality(selection), products))
    joined = {k: torch.cat([r[k] for r in reduced]) for k in reduced[0]}
    return torch.cat(selections), torch.cat(estimations), joined


# =========================================================================== certifiers


def certify_sos(model, x, *, sigma: float, n0: int = DEFAULT_N0, n: int = DEFAULT_N, alpha: float = DEFAULT_ALPHA,
                batch_size: int = 1000, seed=0, progress: bool | None = None) -> Certificate:
    r"""Second-order smoothing CERTIFY: a class and the SoS radius for every input.

    1. ``n0`` selection samples pick :math:`\hat c_A` (plurality, lower index on a tie);
    2. ``n`` fresh samples (even) give the count :math:`n_A` and, from their :math:`n/2`
       consecutive pairs, the estimate :math:`\hat\Gamma` of :math:`\|\nabla p\|_2^2`;
    3. :math:`\underline{p_A}` = one-sided Clopper--Pearson at :math:`\alpha/2`, :math:`G` =
       :func:`gradient_norm_bound` at :math:`\alpha/2`;
    4. abstain if :math:`\underline{p_A} \le 1/2`, else radius :func:`sos_radius`
       :math:`(\underline{p_A}, G)`.

    Guarantee: with probability at least :math:`1 - \alpha` (union bound over the two
    bounds), a returned class is :math:`g(x)` and :math:`g(x + \varepsilon) = g(x)` for
    every :math:`\|\varepsilon\|_2 <` radius. The noise is exactly that of
    :func:`robustlab.smoothing.gaussian.certify` with the same ``seed``; the statistics hold
    both vote tables, so Cohen's certificate at the full :math:`\alpha` on the same samples is
    ``gaussian.certify_counts(cert.selection, cert.counts, sigma=sigma, alpha=alpha)``.

    Parameters
    ----------
    model : torch.nn.Module
        Base classifier (inputs in [0, 1], logits out; eval mode used and restored).
    x : torch.Tensor
        Inputs (B, ...) in [0, 1].
    sigma : float
        Noise standard deviation in pixel units.
    n0, n : int
        Selection and estimation samples per input (``n`` even; paper: 100 and 100,000+).
    alpha : float
        Failure probability of each certificate (paper: 0.001).
    batch_size, seed, progress
        As in :func:`robustlab.smoothing.sampling.sample`.

    Returns
    -------
    Certificate
        Method ``"sos"``, unit L2 pixels; statistics ``pA_lower``, ``count``, ``grad_squared``
        (:math:`\hat\Gamma`), ``grad_bound`` (:math:`G`), ``grad_max``
        (:math:`G_{\max}(\underline{p_A})`), ``meaningful`` (bool: :math:`G < G_{\max}`),
        ``selection`` and ``counts`` (the two vote tables), ``sigma``, ``n0``, ``n``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> cert = certify_sos(model, torch.rand(3, 1, 8, 8), sigma=0.25, n0=20, n=200, alpha=0.01)
    >>> cert.method, cert.unit, bool(cert.meaningful.any())  # 100 pairs in 64 dimensions: vacuous
    ('sos', 'L2 pixels', False)
    """
    sigma, alpha = _check_common(model, x, sigma, n0, n, alpha, batch_size)
    noise = _PairProducts(sigma)

    def reduce(votes, guess, products):
        hits = (votes == guess[:, None]).reshape(votes.shape[0], n // 2, 2).all(2).double()
        return {"grad_squared": (hits * products).mean(1) / sigma ** 4}

    selection, counts, red = _paired_votes(model, x, n0, n, noise, seed, batch_size, progress,
                                           "smoothing: second-order certify", reduce)
    decision = _sampling.certify_counts(selection, counts, alpha / 2)
    grad_squared = red["grad_squared"]
    d = int(np.prod(x.shape[1:]))
    p_lower = decision.pA_lower.numpy()
    g, meaningful = gradient_norm_bound(grad_squared.numpy(), n // 2, d, sigma, alpha / 2, p_lower)
    certified = (decision.prediction != ABSTAIN).numpy()
    radius = np.where(certified, sos_radius(p_lower, g, sigma), 0.0)
    stats = {"pA_lower": decision.pA_lower, "count": decision.count, "grad_squared": grad_squared,
             "grad_bound": torch.from_numpy(np.asarray(g, dtype=np.float64).reshape(-1)),
             "grad_max": torch.from_numpy(np.asarray(max_gradient_norm(p_lower, sigma), dtype=np.float64).reshape(-1)),
             "meaningful": torch.from_numpy(np.asarray(meaningful, dtype=bool).reshape(-1)),
             "selection": selection, "counts": counts, "sigma": sigma, "n0": decision.n0, "n": decision.n}
    return Certificate(decision.prediction, torch.from_numpy(radius.astype(np.float64)), UNITS["l2"], "sos", alpha,
                       stats)


def certify_dipole(model, x, *, sigma: float, n0: int = DEFAULT_N0, n: int = DEFAULT_N,
                   alpha: float = DEFAULT_ALPHA, batch_size: int = 1000, seed=0,
                   progress: bool | None = None) -> Certificate:
    r"""Gaussian dipole smoothing CERTIFY: a class and the dipole radius for every input.

    All samples are antithetic pairs :math:`x \pm \delta_j` (:class:`AntitheticGaussianNoise`;
    ``n0`` and ``n`` even). ``n0`` samples pick :math:`\hat c_A`; of the :math:`n/2` estimation
    pairs, :math:`n_S` have both members voting :math:`\hat c_A` and :math:`n_N` only the
    :math:`+\delta` member. :math:`\underline{C_S}, \underline{C_N}` are one-sided
    Clopper--Pearson bounds at :math:`\alpha/2` out of :math:`n/2`; the radius is
    :func:`dipole_radius`, and the method abstains where it is 0
    (:math:`\underline{C_S} + \underline{C_N} \le 1/2`). Guarantee as in :func:`certify_sos`.
    The cost is that of Cohen's CERTIFY: ``n0 + n`` forward passes.

    Returns
    -------
    Certificate
        Method ``"dipole"``, unit L2 pixels; statistics ``cS_lower``, ``cN_lower``, ``count_s``,
        ``count_n``, ``sigma``, ``n0``, ``n``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> cert = certify_dipole(model, torch.rand(2, 1, 8, 8), sigma=0.25, n0=20, n=200, alpha=0.01)
    >>> cert.method, int(cert.count_s[0] + cert.count_n[0]) <= 100
    ('dipole', True)
    """
    sigma, alpha = _check_common(model, x, sigma, n0, n, alpha, batch_size)
    if n0 % 2:
        raise ValueError(f"n0 must be even (dipole samples come in antithetic pairs), got {n0}")

    def reduce(votes, guess, _):
        pairs = (votes == guess[:, None]).reshape(votes.shape[0], n // 2, 2)
        return {"count_s": (pairs[:, :, 0] & pairs[:, :, 1]).sum(1), "count_n": (pairs[:, :, 0] & ~pairs[:, :, 1]).sum(1),
                "guess": guess}

    _, _, red = _paired_votes(model, x, n0, n, AntitheticGaussianNoise(sigma), seed, batch_size, progress,
                              "smoothing: dipole certify", reduce)
    count_s, count_n, guess = red["count_s"], red["count_n"], red["guess"]
    cs = np.asarray(clopper_pearson(count_s, n // 2, alpha / 2), dtype=np.float64).reshape(-1)
    cn = np.asarray(clopper_pearson(count_n, n // 2, alpha / 2), dtype=np.float64).reshape(-1)
    radius = np.asarray(dipole_radius(cs, cn, sigma), dtype=np.float64).reshape(-1)
    prediction = torch.where(torch.from_numpy(radius > 0), guess, torch.full_like(guess, ABSTAIN))
    stats = {"cS_lower": torch.from_numpy(cs), "cN_lower": torch.from_numpy(cn), "count_s": count_s,
             "count_n": count_n, "sigma": sigma, "n0": int(n0), "n": int(n)}
    return Certificate(prediction, torch.from_numpy(radius), UNITS["l2"], "dipole", alpha, stats)
