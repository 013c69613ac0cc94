r"""Certifying the confidence of a Gaussian-smoothed classifier: CDF smoothing (Kumar, Levine,
Feizi and Goldstein, *Certifying confidence via randomized smoothing*, NeurIPS 2020,
arXiv 2009.08061), against the baseline that only uses the mean.

**What is certified.** Besides its class, a smoothed classifier reports a confidence: the
expected score :math:`\bar s_c(x) = \mathbb E[s_c(x + \delta)]`,
:math:`\delta \sim \mathcal N(0, \sigma^2 I)`, of a bounded score of the base network
(:func:`scores`):

* ``"softmax"``: :math:`s_c = \mathrm{softmax}_c` in :math:`[a, b] = [0, 1]`;
* ``"margin"``: :math:`s_c = \mathrm{softmax}_c - \max_{c' \ne c}\mathrm{softmax}_{c'}` in
  :math:`[-1, 1]` (positive exactly where :math:`c` is the base network's top class).

A certificate is a lower bound on :math:`\bar s_c(x + \varepsilon)` for every
:math:`\|\varepsilon\|_2 \le R`.

**The baseline (expectation only).** A function with values in :math:`[a, b]` has a
smoothed expectation whose normalized value :math:`u = (\bar s - a)/(b - a)` satisfies
:math:`\Phi^{-1}(u(x + \varepsilon)) \ge \Phi^{-1}(u(x)) - \|\varepsilon\|_2/\sigma` (Salman
et al., 2019; the Neyman--Pearson argument applied to :math:`s/(b-a)`), so with a Hoeffding
lower bound :math:`\underline\mu = \hat\mu - (b - a)\sqrt{\ln(1/\alpha)/(2n)}` on the mean
(:func:`robustlab.stats.hoeffding`),

.. math:: \bar s(x + \varepsilon) \ge a + (b - a)\,\Phi\Big(\Phi^{-1}\Big(\frac{\underline\mu - a}{b - a}\Big) - \frac R\sigma\Big).

**The CDF bound.** Write the expectation as an integral of the survival function,
:math:`\bar s = a + \int_a^b P(s \ge t)\,dt`. Every :math:`P(s(x + \delta) \ge t)` is the
smoothed probability of a set, so it obeys the same :math:`\Phi`-bound separately for each
:math:`t`. With thresholds :math:`a = a_0 < a_1 < \dots < a_m` (the sorted sample scores)
and a lower bound on each survival probability,

.. math::

    \bar s(x + \varepsilon) \ge a + \sum_{i=1}^m (a_i - a_{i-1})\,
    \Phi\big(\Phi^{-1}\big(\max(\hat P[s \ge a_i] - \epsilon, 0)\big) - R/\sigma\big),
    \qquad \epsilon = \sqrt{\ln(1/\alpha)/(2n)},

where :math:`\epsilon` is the one-sided Dvoretzky--Kiefer--Wolfowitz band with Massart's
constant, valid for all thresholds at once with probability :math:`1 - \alpha`
(:func:`robustlab.stats.dkw_epsilon` at :math:`2\alpha`, the two-sided band's half-width;
Massart's one-sided bound needs :math:`\alpha \le 1/2`). Both bounds spend the same
:math:`\epsilon`. Because :math:`p \mapsto \Phi(\Phi^{-1}(p) - r)` is *convex* for
:math:`r \ge 0`, Jensen's inequality makes the CDF bound at least the baseline whenever all
sample scores are thresholds: it uses the whole distribution of the scores, not only their
mean. At :math:`R = 0` the CDF bound is at least :math:`\hat\mu - \epsilon\,(a_m - a)`, which
charges the band only up to the largest sample score :math:`a_m \le b`; the baseline charges
:math:`\epsilon\,(b - a)`.

:func:`certify` runs CERTIFY's selection (``n0`` samples) and then ``n`` fresh samples
whose scores for the selected class enter either bound; it returns the shared
:class:`~robustlab.certificates.Certificate` whose ``radius`` is the largest :math:`R` at
which the bound stays above a confidence threshold :math:`\tau` (abstaining where it is not
above :math:`\tau` at :math:`R = 0`) and whose statistics hold the bounds at given radii.
:func:`sample_scores` and :func:`certify_scores` split the two steps, so the CDF bound and
the baseline can be computed from the same samples. Paper defaults: ``n0 = 100``,
``n = 100_000``, ``alpha = 0.001``, :math:`\tau = 0.5` (softmax) or 0 (margin).

Examples
--------
>>> s = np.array([[0.9, 0.8, 0.95, 0.7, 0.99] * 200])  # 1,000 scores of one input
>>> cdf = cdf_bound(s, sigma=0.5, radius=[0.0, 0.5], alpha=0.01)
>>> base = hoeffding_bound(s, sigma=0.5, radius=[0.0, 0.5], alpha=0.01)
>>> [round(v, 3) for v in cdf[0].tolist()], [round(v, 3) for v in base[0].tolist()]
([0.82, 0.585], [0.82, 0.466])
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import stats as _stats
from .. import votes as _votes
from ..certificates import ABSTAIN, UNITS, Certificate
from .._validate import (check_choice, check_images, check_model, check_positive, check_positive_int,
                         check_probability, check_real)
from . import sampling as _sampling

__all__ = [
    "DEFAULT_N0",
    "DEFAULT_N",
    "DEFAULT_ALPHA",
    "SCORES",
    "score_range",
    "scores",
    "dkw_lower_epsilon",
    "survival_bound",
    "cdf_bound",
    "hoeffding_bound",
    "certified_radius",
    "Scores",
    "sample_scores",
    "certify_scores",
    "certify",
]

DEFAULT_N0 = 100
DEFAULT_N = 100_000
DEFAULT_ALPHA = 0.001

SCORES = {"softmax": (0.0, 1.0), "margin": (-1.0, 1.0)}
"""The scores and their ranges :math:`[a, b]`."""

METHODS = ("cdf", "hoeffding")
_BISECT = 60


def score_range(score: str) -> tuple:
    """The range :math:`[a, b]` of a score: ``(0, 1)`` for ``"softmax"``, ``(-1, 1)`` for ``"margin"``.

    >>> score_range("margin")
    (-1.0, 1.0)
    """
    check_choice(score, "score", SCORES)
    return SCORES[score]


def scores(probs: torch.Tensor, classes: torch.Tensor, score: str = "softmax") -> torch.Tensor:
    r"""The score of class ``classes[i]`` in every row ``probs[i]`` (softmax outputs, (..., K)).

    ``"softmax"``: :math:`p_c`; ``"margin"``: :math:`p_c - \max_{c' \ne c} p_{c'}`.

    >>> p = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1]])
    >>> scores(p, torch.tensor([0, 0]), "margin").tolist()
    [0.5, -0.30000001192092896]
    """
    check_choice(score, "score", SCORES)
    if not isinstance(probs, torch.Tensor) or not probs.is_floating_point() or probs.dim() < 1:
        raise TypeError("probs must be a floating-point tensor of softmax outputs (..., K)")
    if not isinstance(classes, torch.Tensor) or classes.dtype != torch.int64:
        raise TypeError("classes must be an int64 tensor of class indices")
    own = probs.gather(-1, classes[..., None])[..., 0]
    if score == "softmax":
        return own
    others = probs.scatter(-1, classes[..., None], float("-inf")).max(-1).values
    return own - others


# =========================================================================== the bounds


def dkw_lower_epsilon(n: int, alpha: float) -> float:
    r"""The one-sided DKW--Massart band :math:`\epsilon = \sqrt{\ln(1/\alpha)/(2n)}`: with
    probability at least :math:`1 - \alpha`, :math:`P(s \ge t) \ge \hat P(s \ge t) - \epsilon`
    for every :math:`t` at once. It is :func:`robustlab.stats.dkw_epsilon` at level
    :math:`2\alpha`; Massart's one-sided inequality holds for :math:`\alpha \le 1/2`.

    >>> round(dkw_lower_epsilon(100_000, 0.001), 6) == round(math.sqrt(math.log(1000) / 200_000), 6)
    True
    """
    alpha = check_probability(alpha, "alpha")
    if alpha >= 0.5:
        raise ValueError(f"alpha must be < 0.5 for the one-sided DKW band (Massart's inequality), got {alpha}")
    return _stats.dkw_epsilon(n, 2.0 * alpha)


def _scores_array(samples, low, high):
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().numpy()
    arr = np.asarray(samples)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"samples must hold real scores, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"samples must have shape (n,) or (B, n) with n >= 1, got {np.shape(samples)}")
    if np.isnan(arr).any():
        raise ValueError("samples contains NaN")
    if arr.min() < low - 1e-9 or arr.max() > high + 1e-9:
        raise ValueError(f"samples must lie in the score range [{low:g}, {high:g}], got values in "
                         f"[{arr.min():.4g}, {arr.max():.4g}]")
    return np.clip(arr, low, high)  # float rounding of a softmax just outside its range


def _radii(radius):
    if isinstance(radius, torch.Tensor):
        radius = radius.detach().cpu().numpy()
    r = np.asarray(radius)
    if r.dtype == bool or not np.issubdtype(r.dtype, np.number):
        raise TypeError(f"radius must hold radii >= 0, got dtype {r.dtype}")
    r = np.atleast_1d(r.astype(np.float64))
    if r.ndim != 1 or np.isnan(r).any() or (r < 0).any():
        raise ValueError("radius must be a radius >= 0 or a 1-D array of them")
    return r


def _check_range(low, high):
    low, high = float(check_real(low, "low")), float(check_real(high, "high"))
    if not low < high:
        raise ValueError(f"low must be < high (the score range), got [{low}, {high}]")
    return low, high


def _shifted(p, r, sigma):
    # Phi(Phi^-1(p) - r / sigma), p in [0, 1]; 0 at p = 0
    from scipy.special import ndtr, ndtri
    return ndtr(ndtri(np.clip(p, 0.0, 1.0)) - r / sigma)


def survival_bound(levels, survival, *, sigma: float, radius, low: float):
    r"""The CDF bound from thresholds and lower bounds on the survival function.

    .. math:: a + \sum_{i=1}^m (a_i - a_{i-1})\,\Phi\big(\Phi^{-1}(S_i) - R/\sigma\big),
        \qquad a_0 = a = \text{low},

    for thresholds ``levels`` :math:`a_1 \le \dots \le a_m` (rows, (B, m) or (m,)) and
    ``survival`` :math:`S_i \le P(s(x+\delta) \ge a_i)`, each in [0, 1]. It is a lower bound on
    :math:`\mathbb E[s(x + \varepsilon + \delta)]` for every :math:`\|\varepsilon\|_2 \le R`.
    With the exact survival function at fine thresholds it approaches the exact worst case.

    Returns
    -------
    numpy.ndarray
        (B, len(radius)) float64.

    >>> survival_bound([0.5, 1.0], [1.0, 0.5], sigma=1.0, radius=[0.0], low=0.0).round(4).tolist()
    [[0.75]]
    """
    sigma = check_positive(sigma, "sigma")
    low = float(check_real(low, "low"))
    levels = np.atleast_2d(np.asarray(levels, dtype=np.float64))
    survival = np.atleast_2d(np.asarray(survival, dtype=np.float64))
    if levels.shape != survival.shape:
        raise ValueError(f"levels and survival must have the same shape, got {levels.shape} and {survival.shape}")
    if np.isnan(levels).any() or np.isnan(survival).any():
        raise ValueError("levels and survival must not contain NaN")
    if (np.diff(levels, axis=1) < 0).any() or (levels[:, 0] < low).any():
        raise ValueError("levels must be sorted ascending and >= low in every row")
    if survival.min() < 0 or survival.max() > 1:
        raise ValueError("survival must hold probabilities in [0, 1]")
    r = _radii(radius)
    widths = np.diff(levels, axis=1, prepend=low)
    out = np.empty((levels.shape[0], r.size))
    for j, rj in enumerate(r):
        out[:, j] = low + (widths * _shifted(survival, rj, sigma)).sum(1)
    return out


def _thresholds(values, n_thresholds):
    """Sorted scores (B, n) -> thresholds (B, m) and their empirical survival fractions."""
    b, n = values.shape
    if n_thresholds is None or n_thresholds >= n:
        idx = np.arange(n)
    else:
        n_thresholds = check_positive_int(n_thresholds, "n_thresholds")
        # every k-th order statistic, ending at the largest: P(s >= a) only shrinks between them
        idx = np.unique(np.linspace(n - 1, 0, n_thresholds).round().astype(np.int64))
    # at most n - i of the n sorted samples are >= values[i] (exactly n - i without ties; a tie
    # gives a zero-width step, so the undercount costs nothing)
    return values[:, idx], (n - idx) / n


def cdf_bound(samples, *, sigma: float, radius, alpha: float, low: float = 0.0, high: float = 1.0,
              n_thresholds: int | None = None):
    r"""The CDF-smoothing lower bound on the expected score at distance ``radius``.

    Thresholds are the sorted sample scores (or ``n_thresholds`` evenly spaced order
    statistics of them, which can only lower the bound), the survival fractions are lowered by
    :func:`dkw_lower_epsilon` and clipped at 0, and :func:`survival_bound` sums them up
    (module docstring). With probability at least :math:`1 - \alpha` over the samples, the
    bound holds for every radius in ``radius`` and every input at once per row.

    Parameters
    ----------
    samples : array-like
        Scores :math:`s(x + \delta_j)`, shape (n,) or (B, n), in ``[low, high]``.
    sigma : float
        Noise standard deviation.
    radius : float or array-like
        Radii :math:`R \ge 0`.
    alpha : float
        Failure probability, in (0, 0.5).
    low, high : float
        The score range :math:`[a, b]` (:func:`score_range`).
    n_thresholds : int, optional
        How many thresholds (default: all ``n`` samples).

    Returns
    -------
    numpy.ndarray
        (B, len(radius)) float64 lower bounds.

    >>> cdf_bound(np.full(100, 1.0), sigma=1.0, radius=0.0, alpha=0.05).round(4).tolist()  # 1 - eps
    [[0.8776]]
    """
    sigma = check_positive(sigma, "sigma")
    low, high = _check_range(low, high)
    values = np.sort(_scores_array(samples, low, high), axis=1)
    eps = dkw_lower_epsilon(values.shape[1], alpha)
    levels, fractions = _thresholds(values, n_thresholds)
    survival = np.broadcast_to(np.clip(fractions - eps, 0.0, 1.0), levels.shape)
    return survival_bound(levels, survival, sigma=sigma, radius=radius, low=low)


def hoeffding_bound(samples, *, sigma: float, radius, alpha: float, low: float = 0.0, high: float = 1.0):
    r"""The baseline lower bound on the expected score at distance ``radius``, from the mean only:

    .. math:: a + (b - a)\,\Phi\Big(\Phi^{-1}\Big(\frac{\underline\mu - a}{b - a}\Big) - \frac R\sigma\Big),
        \qquad \underline\mu = \hat\mu - \text{hoeffding}(n, \alpha, \text{lower}, b - a),

    clipped at :math:`a` (where :math:`\underline\mu < a`). Holds with probability at least
    :math:`1 - \alpha`. Arguments and result as in :func:`cdf_bound`.

    >>> hoeffding_bound(np.full(100, 1.0), sigma=1.0, radius=0.0, alpha=0.05).round(4).tolist()
    [[0.8776]]
    """
    sigma = check_positive(sigma, "sigma")
    low, high = _check_range(low, high)
    values = _scores_array(samples, low, high)
    alpha = check_probability(alpha, "alpha")
    dev = _stats.hoeffding(values.shape[1], alpha, side="lower", value_range=high - low)
    u = np.clip((values.mean(1) - dev - low) / (high - low), 0.0, 1.0)
    r = _radii(radius)
    return low + (high - low) * _shifted(u[:, None], r[None, :], sigma)


def certified_radius(samples, *, sigma: float, threshold: float, alpha: float, method: str = "cdf",
                     low: float = 0.0, high: float = 1.0, n_thresholds: int | None = None):
    r"""The largest :math:`R` at which the bound of ``method`` stays above ``threshold``
    (:math:`\tau`), per row of ``samples``; 0 where it is not above :math:`\tau` even at
    :math:`R = 0`. Both bounds decrease in :math:`R`, so bisection finds it (the lower end of
    the final bracket is returned).

    >>> s = np.full((1, 1000), 0.9)
    >>> r = certified_radius(s, sigma=0.5, threshold=0.5, alpha=0.001)
    >>> bool(cdf_bound(s, sigma=0.5, radius=r, alpha=0.001)[0, 0] > 0.5)
    True
    """
    check_choice(method, "method", METHODS)
    tau = float(check_real(threshold, "threshold"))
    low, high = _check_range(low, high)
    if not low <= tau < high:
        raise ValueError(f"threshold must be in [{low:g}, {high:g}) (the score range), got {tau}")
    sigma = check_positive(sigma, "sigma")
    values = np.sort(_scores_array(samples, low, high), axis=1)

    if method == "cdf":
        eps = dkw_lower_epsilon(values.shape[1], alpha)
        levels, fractions = _thresholds(values, n_thresholds)
        survival = np.broadcast_to(np.clip(fractions - eps, 0.0, 1.0), levels.shape)
        widths = np.diff(levels, axis=1, prepend=low)

        def bound(r):  # r: (B,)
            return low + (widths * _shifted(survival, r[:, None], sigma)).sum(1)
    else:
        base = hoeffding_bound(values, sigma=sigma, radius=0.0, alpha=alpha, low=low, high=high)[:, 0]
        u = (base - low) / (high - low)

        def bound(r):
            return low + (high - low) * _shifted(u, r, sigma)

    b = values.shape[0]
    ok = bound(np.zeros(b)) > tau
    lo, hi = np.zeros(b), np.full(b, sigma)
    for _ in range(200):
        grow = ok & (bound(hi) > tau)
        if not grow.any():
            break
        lo, hi = np.where(grow, hi, lo), np.where(grow, 2.0 * hi, hi)
    for _ in range(_BISECT):
        mid = (lo + hi) / 2.0
        above = bound(mid) > tau
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return np.where(ok, lo, 0.0)


# =========================================================================== sampling and certificates


class Scores:
    """The samples behind a confidence certificate: ``selection`` (B, K) int64 counts of the
    ``n0`` selection draws, ``guess`` (B,) the class they select, ``scores`` (B, n) float64 the
    scores of that class on the ``n`` estimation draws, and the settings ``sigma``, ``score``,
    ``n0``, ``n``."""

    def __init__(self, selection, guess, samples, sigma, score, n0, n):
        self.selection, self.guess, self.scores = selection, guess, samples
        self.sigma, self.score, self.n0, self.n = sigma, score, n0, n

    def __len__(self):
        return int(self.guess.shape[0])

    def __repr__(self):
        return f"Scores({len(self)} inputs, score={self.score!r}, sigma={self.sigma:g}, n0={self.n0}, n={self.n})"


class _ScoreRecorder(torch.nn.Module):
    """Wraps the base model and records every copy's softmax while ``probs`` is a list."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.probs = None

    def forward(self, z):
        logits = self.model(z)
        if self.probs is not None:
            self.probs.append(logits.double().softmax(1).float().cpu())
        return logits


def sample_scores(model, x, *, sigma: float, n0: int = DEFAULT_N0, n: int = DEFAULT_N, score: str = "softmax",
                  batch_size: int = 1000, seed=0, progress: bool | None = None) -> Scores:
    r"""CERTIFY's samples for a confidence certificate: ``n0`` Gaussian draws select the class
    :math:`\hat c_A` (plurality of the base network's votes, lower index on a tie), ``n``
    fresh draws give the scores :math:`s_{\hat c_A}(x + \delta_j)`.

    The noise is that of :func:`robustlab.smoothing.gaussian.certify` with the same ``seed``
    (input ``i``'s stream ``seed + i``); the model runs in eval mode without gradients.

    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> s = sample_scores(model, torch.rand(2, 1, 8, 8), sigma=0.25, n0=10, n=50)
    >>> s.scores.shape, bool(((s.scores >= 0) & (s.scores <= 1)).all())
    (torch.Size([2, 50]), True)
    """
    check_model(model)
    check_images(x, "x")
    sigma = check_positive(sigma, "sigma")
    n0, n = check_positive_int(n0, "n0"), check_positive_int(n, "n")
    check_choice(score, "score", SCORES)
    check_positive_int(batch_size, "batch_size")
    recorder = _ScoreRecorder(model)
    noise = _sampling.GaussianNoise(sigma)
    all_seeds = _sampling.seeds(seed, x.shape[0])
    size = max(1, 2_000_000 // n)
    selections, guesses, samples = [], [], []
    for lo in range(0, x.shape[0], size):
        hi = min(x.shape[0], lo + size)
        with _sampling.Sampler(recorder, x[lo:hi], noise, mode="counts", seed=all_seeds[lo:hi],
                               batch_size=batch_size, progress=progress, desc="smoothing: confidence",
                               total=(hi - lo) * (n0 + n)) as sampler:
            selection = sampler.draw(n0).cpu()
            guess = _votes.plurality(selection)
            recorder.probs = []
            try:
                sampler.draw(n)
                probs = torch.cat(recorder.probs).reshape(hi - lo, n, -1)
            finally:
                recorder.probs = None
        selections.append(selection)
        guesses.append(guess)
        samples.append(scores(probs, guess[:, None].expand(-1, n).contiguous(), score).double())
    return Scores(torch.cat(selections), torch.cat(guesses), torch.cat(samples), sigma, score, n0, n)


def certify_scores(sampled: Scores, *, alpha: float = DEFAULT_ALPHA, method: str = "cdf", threshold=None,
                   radii=(0.0, 0.25, 0.5), n_thresholds: int | None = None) -> Certificate:
    r"""The confidence certificate from :func:`sample_scores`' samples.

    ``radius`` is :func:`certified_radius`: the largest :math:`R` at which the lower bound of
    ``method`` (``"cdf"`` or ``"hoeffding"``) on the expected score of :math:`\hat c_A` stays
    above ``threshold`` :math:`\tau` (default 0.5 for the softmax, 0 for the margin); the
    prediction is :math:`\hat c_A`, or :data:`ABSTAIN` where the bound is not above
    :math:`\tau` at :math:`R = 0`. With :math:`\tau \ge 1/2` for the softmax (or
    :math:`\tau \ge 0` for the margin) the expected score of :math:`\hat c_A` stays the largest
    within the radius, so the smoothed classifier's class (by expected score) is certified too.

    Guarantee: with probability at least :math:`1 - \alpha` over the estimation draws, for every
    input the expected score at every :math:`x + \varepsilon`, :math:`\|\varepsilon\|_2 \le R`,
    is at least the bound at :math:`R` (``bound`` for the radii in ``radii``).

    Returns
    -------
    Certificate
        Method ``"cdf"`` or ``"hoeffding"``, unit L2 pixels; statistics ``expected_score`` (the
        sample mean), ``bound`` ((B, len(radii)) lower bounds), ``radii``, ``threshold``,
        ``score``, ``sigma``, ``n0``, ``n``.

    >>> s = Scores(torch.tensor([[9, 1]]), torch.tensor([0]), torch.full((1, 1000), 0.9, dtype=torch.float64),
    ...            0.5, "softmax", 10, 1000)
    >>> cert = certify_scores(s, alpha=0.001, radii=[0.0, 0.5])
    >>> cert.prediction.tolist(), [round(v, 3) for v in cert.bound[0].tolist()]
    ([0], [0.847, 0.643])
    """
    if not isinstance(sampled, Scores):
        raise TypeError(f"sampled must be the Scores of sample_scores, got {type(sampled).__name__}")
    check_choice(method, "method", METHODS)
    alpha = check_probability(alpha, "alpha")
    low, high = score_range(sampled.score)
    tau = (0.5 if sampled.score == "softmax" else 0.0) if threshold is None else float(check_real(threshold, "threshold"))
    r = _radii(radii)
    values = sampled.scores.numpy()
    if method == "cdf":
        bound = cdf_bound(values, sigma=sampled.sigma, radius=r, alpha=alpha, low=low, high=high,
                          n_thresholds=n_thresholds)
    else:
        bound = hoeffding_bound(values, sigma=sampled.sigma, radius=r, alpha=alpha, low=low, high=high)
    radius = certified_radius(values, sigma=sampled.sigma, threshold=tau, alpha=alpha, method=method, low=low,
                              high=high, n_thresholds=n_thresholds)
    at_zero = (cdf_bound if method == "cdf" else hoeffding_bound)(
        values, sigma=sampled.sigma, radius=0.0, alpha=alpha, low=low, high=high,
        **({"n_thresholds": n_thresholds} if method == "cdf" else {}))[:, 0]
    keep = torch.from_numpy(at_zero > tau)
    prediction = torch.where(keep, sampled.guess, torch.full_like(sampled.guess, ABSTAIN))
    radius = torch.from_numpy(np.where(keep.numpy(), radius, 0.0))
    stats = {"expected_score": torch.from_numpy(values.mean(1)), "bound": torch.from_numpy(bound),
             "radii": tuple(float(v) for v in r), "threshold": tau, "score": sampled.score, "sigma": sampled.sigma,
             "n0": sampled.n0, "n": sampled.n}
    return Certificate(prediction, radius, UNITS["l2"], method, alpha, stats)


def certify(model, x, *, sigma: float, n0: int = DEFAULT_N0, n: int = DEFAULT_N, alpha: float = DEFAULT_ALPHA,
            score: str = "softmax", method: str = "cdf", threshold=None, radii=(0.0, 0.25, 0.5),
            n_thresholds: int | None = None, batch_size: int = 1000, seed=0,
            progress: bool | None = None) -> Certificate:
    r"""CERTIFY for the smoothed classifier's confidence: :func:`sample_scores` then
    :func:`certify_scores` (see both for the arguments, the guarantee and the result).

    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> cert = certify(model, torch.rand(3, 1, 8, 8), sigma=0.25, n0=10, n=100, alpha=0.01, threshold=0.0)
    >>> cert.method, cert.bound.shape
    ('cdf', torch.Size([3, 3]))
    """
    check_choice(method, "method", METHODS)
    sampled = sample_scores(model, x, sigma=sigma, n0=n0, n=n, score=score, batch_size=batch_size, seed=seed,
                            progress=progress)
    return certify_scores(sampled, alpha=alpha, method=method, threshold=threshold, radii=radii,
                          n_thresholds=n_thresholds)
