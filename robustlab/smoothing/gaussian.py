r"""Gaussian randomized smoothing (Cohen, Rosenfeld and Kolter, 2019).

Given a base classifier :math:`f` (any ``torch.nn.Module`` from [0, 1] pixels to logits,
predicting :math:`f(x) = \arg\max_c z_c(x)`), the *smoothed classifier* is

.. math::

    g(x) = \arg\max_c \; P\big(f(x + \delta) = c\big), \qquad
    \delta \sim \mathcal{N}(0, \sigma^2 I).

**The radius theorem.** If the top class :math:`c_A` has probability
:math:`p_A = P(f(x + \delta) = c_A)` and every other class has probability at most
:math:`p_B \le 1 - p_A`, then :math:`g(x + \varepsilon) = c_A` for every
:math:`\|\varepsilon\|_2 < R` with

.. math::

    R = \frac{\sigma}{2}\big(\Phi^{-1}(p_A) - \Phi^{-1}(p_B)\big)
    \;\ge\; \sigma\,\Phi^{-1}(p_A) \quad \text{when } p_B = 1 - p_A,

where :math:`\Phi^{-1}` is the standard normal quantile function. The proof is the
Neyman--Pearson lemma: among all classifiers with :math:`P(f(x+\delta) = c_A) = p_A`, the
one whose probability drops fastest when the Gaussian is shifted by :math:`\varepsilon`
is a half-space (a linear classifier), and for a half-space the probability is exactly
:math:`\Phi(\Phi^{-1}(p_A) - \|\varepsilon\|_2/\sigma)`. The bound is tight: for a
linear base classifier :math:`g = f` and :math:`\sigma\Phi^{-1}(p_A)` is exactly the L2
distance to the decision boundary.

**Monte Carlo.** :math:`p_A` is not computable; it is estimated from ``n`` noisy samples
with an exact one-sided Clopper--Pearson lower bound :math:`\underline{p_A}` at level
:math:`\alpha`, so every certificate holds *with probability at least* :math:`1 - \alpha`
over the sampling. :func:`certify` and :func:`predict` are the paper's CERTIFY and PREDICT:

* CERTIFY: draw ``n0`` samples to *select* the guess :math:`\hat c_A` (the most frequent
  class), then ``n`` fresh samples to *estimate* it; abstain (:data:`ABSTAIN` ``= -1``)
  if :math:`\underline{p_A} < 1/2`, else return :math:`\hat c_A` with the certified L2
  radius :math:`R = \sigma\,\Phi^{-1}(\underline{p_A})`.
* PREDICT: draw ``n`` samples, take the two most frequent classes with counts
  :math:`n_1 \ge n_2`, and abstain unless the two-sided binomial test of :math:`n_1`
  successes in :math:`n_1 + n_2` trials at :math:`p = 1/2` has p-value :math:`\le\alpha`;
  then the returned class is :math:`g(x)` with probability at least :math:`1 - \alpha`.

The noise is added in [0, 1] pixel space (radii are in pixel units) and the noisy inputs
are *not* clamped: the guarantee is about exactly this Gaussian. Everything is batch-first
and runs on the sampling engine (:mod:`robustlab.smoothing.sampling`): many inputs are
smoothed at once, their noisy copies packed into large forward passes, the device taken
from the model. Every input has its own seeded noise stream (``seed + i`` for the i-th
input, drawn in blocks of 1,000), so certifying a batch gives exactly what certifying its
inputs one at a time with those seeds gives, whatever ``batch_size``. The statistics come
from :mod:`robustlab.stats`, the votes from :mod:`robustlab.votes`, and :func:`certify`
returns the shared :class:`~robustlab.certificates.Certificate` (method ``"gaussian"``,
unit L2 pixels, statistics ``pA_lower``, ``count``, ``sigma``, ``n0``, ``n``).

References: Cohen, Rosenfeld and Kolter, *Certified adversarial robustness via
randomized smoothing*, ICML 2019 (defaults ``n0 = 100``, ``n = 100_000``,
``alpha = 0.001``); Clopper and Pearson, Biometrika 1934.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import stats as _stats
from ..certificates import ABSTAIN, UNITS, Certificate, certified_accuracy, plot_certified_accuracy
from ..stats import binomial_test_half, clopper_pearson
from .._validate import check_images, check_model, check_positive, check_positive_int, check_probability
from . import sampling as _sampling

__all__ = [
    "ABSTAIN",
    "DEFAULT_N0",
    "DEFAULT_N",
    "DEFAULT_ALPHA",
    "clopper_pearson",
    "binomial_test_half",
    "certified_radius",
    "max_radius",
    "sample_counts",
    "predict",
    "certify",
    "certify_counts",
    "Certificate",
    "certified_accuracy",
    "plot_certified_accuracy",
]

DEFAULT_N0 = 100
DEFAULT_N = 100_000
DEFAULT_ALPHA = 0.001


def _probabilities(v, name):
    arr = np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v, dtype=np.float64)
    if arr.size and (np.isnan(arr).any() or arr.min() < 0 or arr.max() > 1):
        raise ValueError(f"{name} must hold probabilities in [0, 1]")
    return arr


def certified_radius(p_a, sigma: float, p_b=None):
    r"""The certified L2 radius of Gaussian smoothing from class probabilities.

    .. math::

        R = \frac{\sigma}{2}\big(\Phi^{-1}(p_A) - \Phi^{-1}(p_B)\big),
        \qquad p_B = 1 - p_A \text{ by default, giving } R = \sigma\,\Phi^{-1}(p_A).

    Certified only where :math:`p_A > p_B`; elsewhere the value is :math:`\le 0` and
    certifies nothing. (Cohen et al., Theorem 1; :func:`certify` uses the :math:`p_B = 1 - p_A`
    form with a lower confidence bound in place of :math:`p_A`.)

    Parameters
    ----------
    p_a : float or array-like
        A lower bound on the probability of the top class, in [0, 1].
    sigma : float
        Noise standard deviation (pixel units).
    p_b : float or array-like, optional
        An upper bound on the probability of every other class.

    Examples
    --------
    >>> round(float(certified_radius(0.5, 0.25)), 6)
    0.0
    >>> round(float(certified_radius(0.975, 0.5)), 4)  # Phi^-1(0.975) = 1.96
    0.98
    >>> round(float(certified_radius(0.8, 0.5, p_b=0.1)), 4)
    0.5308
    """
    check_positive(sigma, "sigma")
    p_a = _probabilities(p_a, "p_a")
    if p_b is None:
        return sigma * _stats.normal_ppf(p_a)
    p_b = _probabilities(p_b, "p_b")
    return sigma / 2 * (_stats.normal_ppf(p_a) - _stats.normal_ppf(p_b))


def max_radius(n: int, alpha: float, sigma: float) -> float:
    r"""The largest radius ``n`` samples can certify: :math:`\sigma\Phi^{-1}(\alpha^{1/n})`.

    Examples
    --------
    >>> round(max_radius(100_000, 0.001, 1.0), 2), round(max_radius(1000, 0.001, 1.0), 2)
    (3.81, 2.46)
    """
    check_positive_int(n, "n")
    alpha = check_probability(alpha, "alpha")
    check_positive(sigma, "sigma")
    return float(sigma * _stats.normal_ppf(alpha ** (1.0 / n)))


# --------------------------------------------------------------------------- sampling


def _check_common(model, x, sigma, batch_size):
    check_model(model)
    check_images(x, "x")
    check_positive(sigma, "sigma")
    check_positive_int(batch_size, "batch_size")


def sample_counts(model, x, n: int, sigma: float, *, batch_size: int = 1000, seed=0,
                  progress: bool | None = None) -> torch.Tensor:
    r"""Class counts of the base classifier on ``n`` Gaussian-noised copies of each input.

    ``counts[i, c]`` is the number of draws :math:`\delta_1, \dots, \delta_n \sim
    \mathcal{N}(0, \sigma^2 I)` with :math:`f(x_i + \delta_j) = c`, a
    :math:`\mathrm{Multinomial}(n, (P(f(x_i + \delta) = c))_c)` sample. The noise is added
    in pixel space and not clamped. The model runs in eval mode (restored afterwards) on
    its own device, on forward batches of ``batch_size`` noisy inputs that may span
    several inputs (:func:`robustlab.smoothing.sampling.sample` with
    :class:`~robustlab.smoothing.sampling.GaussianNoise`).

    Parameters
    ----------
    model : torch.nn.Module
        The base classifier (inputs in [0, 1], logits out).
    x : torch.Tensor
        Inputs (B, C, H, W) or (B, D) in [0, 1].
    n : int
        Noisy samples per input.
    sigma : float
        Noise standard deviation in pixel units (> 0).
    batch_size : int
        Noisy inputs per forward pass (memory, not results: the counts do not depend on it).
    seed : int or sequence of int
        Input ``i`` uses the noise stream seeded ``seed + i`` (or ``seed[i]``).
    progress : bool, optional
        Progress bar over the ``B * n`` samples (default: the global switch).

    Returns
    -------
    torch.Tensor
        int64 counts of shape (B, K) on the device of ``x``; every row sums to ``n``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> counts = sample_counts(model, torch.rand(3, 1, 8, 8), n=50, sigma=0.25)
    >>> counts.shape, counts.sum(1).tolist()
    (torch.Size([3, 10]), [50, 50, 50])
    """
    _check_common(model, x, sigma, batch_size)
    check_positive_int(n, "n")
    return _sampling.sample(model, x, n, _sampling.GaussianNoise(sigma), mode="counts", seed=seed,
                            batch_size=batch_size, progress=progress)


def predict(model, x, *, sigma: float, n: int = DEFAULT_N, alpha: float = DEFAULT_ALPHA, batch_size: int = 1000,
            seed=0, progress: bool | None = None) -> torch.Tensor:
    r"""PREDICT (Cohen et al., 2019): the smoothed classifier's class, or abstain.

    Draws ``n`` noisy samples per input, takes the two most frequent classes
    :math:`c_1, c_2` with counts :math:`n_1 \ge n_2` (:func:`robustlab.votes.top_two`: the
    lower class index first on a tie), and returns :math:`c_1` if the two-sided binomial
    test of :math:`n_1` successes in :math:`n_1 + n_2` trials at :math:`p = 1/2` has p-value
    :math:`\le \alpha` (:func:`robustlab.stats.binomial_test_half`), else :data:`ABSTAIN`.

    Guarantee: for each input, the probability that PREDICT returns a class *other than*
    :math:`g(x)` (rather than :math:`g(x)` or abstaining) is at most :math:`\alpha`.

    Parameters
    ----------
    model, x, sigma, n, batch_size, seed, progress
        As in :func:`sample_counts` (paper default ``n = 100_000``).
    alpha : float
        Error probability in (0, 1) (paper default 0.001).

    Returns
    -------
    torch.Tensor
        int64 classes (B,) on the device of ``x``, ``ABSTAIN = -1`` where the test is inconclusive.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> predict(model, torch.rand(2, 1, 8, 8), sigma=0.25, n=200, alpha=0.01).shape
    torch.Size([2])
    """
    alpha = check_probability(alpha, "alpha")
    counts = sample_counts(model, x, n, sigma, batch_size=batch_size, seed=seed, progress=progress)
    return _sampling.predict_counts(counts, alpha).to(x.device)


# --------------------------------------------------------------------------- certificates


def certify(model, x, *, sigma: float, n0: int = DEFAULT_N0, n: int = DEFAULT_N, alpha: float = DEFAULT_ALPHA,
            batch_size: int = 1000, seed=0, progress: bool | None = None) -> Certificate:
    r"""CERTIFY (Cohen et al., 2019): a class and a certified L2 radius for every input.

    For each input :math:`x`:

    1. draw ``n0`` noisy samples and let :math:`\hat c_A` be the most frequent class
       (lower index on a tie, :func:`robustlab.votes.plurality`);
    2. draw ``n`` *fresh* samples and count :math:`n_A`, the votes for :math:`\hat c_A`;
    3. :math:`\underline{p_A} = ` :func:`robustlab.stats.clopper_pearson`
       :math:`(n_A, n, \alpha)`, the one-sided lower bound;
    4. if :math:`\underline{p_A} < 1/2` return ``ABSTAIN`` (radius 0), else
       :math:`\hat c_A` and :math:`R = \sigma\,\Phi^{-1}(\underline{p_A})`.

    Guarantee: with probability at least :math:`1 - \alpha` over the sampling, if the
    returned class is not ``ABSTAIN`` it equals the smoothed classifier's
    :math:`g(x)`, and :math:`g(x + \varepsilon) = g(x)` for every
    :math:`\|\varepsilon\|_2 < R`. Selection and estimation use separate samples (one
    continued noise stream per input, :class:`~robustlab.smoothing.sampling.Sampler`), so
    the selection cannot bias the bound.

    The largest radius ``n`` samples can certify is :math:`\sigma\Phi^{-1}(\alpha^{1/n})`
    (all ``n`` votes for :math:`\hat c_A`): about :math:`3.8\sigma` at the defaults, but
    only :math:`2.5\sigma` with ``n = 1000`` (:func:`max_radius`).

    Parameters
    ----------
    model : torch.nn.Module
        Base classifier (eval mode is used and restored; device from its parameters).
    x : torch.Tensor
        Inputs (B, ...) in [0, 1], certified together.
    sigma : float
        Noise standard deviation in pixel units.
    n0, n : int
        Selection and estimation samples per input (paper: 100 and 100,000).
    alpha : float
        Failure probability of each certificate (paper: 0.001).
    batch_size, seed, progress
        As in :func:`sample_counts`.

    Returns
    -------
    Certificate
        Method ``"gaussian"``, unit ``"L2 pixels"``, ``alpha``; statistics ``pA_lower``
        (float64 (B,)), ``count`` (int64 (B,), the votes for :math:`\hat c_A` among the
        ``n``), ``sigma``, ``n0``, ``n``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> cert = certify(model, torch.rand(4, 1, 8, 8), sigma=0.25, n0=20, n=200, alpha=0.01)
    >>> len(cert), cert.unit, cert.method, bool((cert.radius[cert.abstained] == 0).all())
    (4, 'L2 pixels', 'gaussian', True)
    """
    _check_common(model, x, sigma, batch_size)
    check_positive_int(n0, "n0")
    check_positive_int(n, "n")
    alpha = check_probability(alpha, "alpha")
    noise = _sampling.GaussianNoise(sigma)
    with _sampling.Sampler(model, x, noise, mode="counts", seed=seed, batch_size=batch_size, progress=progress,
                           desc="smoothing: certify", total=x.shape[0] * (n0 + n)) as sampler:
        selection = sampler.draw(n0).cpu()
        estimation = sampler.draw(n).cpu()
    return certify_counts(selection, estimation, sigma=sigma, alpha=alpha)


def certify_counts(selection: torch.Tensor, estimation: torch.Tensor, *, sigma: float,
                   alpha: float = DEFAULT_ALPHA) -> Certificate:
    r"""CERTIFY's decision from its two vote tables (steps 1 and 3-4 of :func:`certify`).

    ``selection`` (B, K) holds the votes of the ``n0`` selection samples and ``estimation``
    (B, K) those of the ``n`` fresh estimation samples, each row summing to its sample
    size. The guess :math:`\hat c_A` is the plurality of ``selection`` (lower index on a
    tie), :math:`\underline{p_A}` the one-sided Clopper--Pearson bound of its count in
    ``estimation``; abstain below 1/2, else radius :math:`\sigma\Phi^{-1}(\underline{p_A})`.
    :func:`certify` draws the tables from one noise stream per input; any other sampling
    whose two tables are independent gives the same guarantee.

    >>> sel, est = torch.tensor([[8, 2], [5, 5]]), torch.tensor([[990, 10], [400, 600]])
    >>> cert = certify_counts(sel, est, sigma=0.5, alpha=0.001)
    >>> cert.prediction.tolist(), [round(r, 3) for r in cert.radius.tolist()], cert.n0, cert.n
    ([0, -1], [0.989, 0.0], 10, 1000)
    """
    check_positive(sigma, "sigma")
    d = _sampling.certify_counts(selection, estimation, alpha)
    certified = d.prediction != ABSTAIN
    radius = torch.where(certified, float(sigma) * torch.from_numpy(_stats.normal_ppf(d.pA_lower.numpy())),
                         torch.zeros_like(d.pA_lower))
    prediction, p_lower, count, n0, n, alpha = d.prediction, d.pA_lower, d.count, d.n0, d.n, float(alpha)
    return Certificate(prediction, radius, UNITS["l2"], "gaussian", alpha,
                       {"pA_lower": p_lower, "count": count, "sigma": float(sigma), "n0": n0, "n": n})
