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
are *not* clamped: the guarantee is about exactly this Gaussian. Everything is batch-first:
many inputs are smoothed at once, their noisy copies packed into large forward passes,
the votes counted with ``torch.bincount``, the device taken from the model. Every input
has its own seeded noise stream (``seed + i`` for the i-th input), so certifying a batch
gives exactly what certifying its inputs one at a time with those seeds gives.

References: Cohen, Rosenfeld and Kolter, *Certified adversarial robustness via
randomized smoothing*, ICML 2019 (defaults ``n0 = 100``, ``n = 100_000``,
``alpha = 0.001``); Clopper and Pearson, Biometrika 1934.
"""

from __future__ import annotations

import dataclasses
from numbers import Integral

import numpy as np
import torch

from .. import config
from .. import models as _models
from .._validate import check_choice, check_images, check_model, check_positive, check_positive_int

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
    "Certificate",
    "certified_accuracy",
    "plot_certified_accuracy",
]

ABSTAIN = -1
"""The class index returned when the smoothed classifier abstains."""

DEFAULT_N0 = 100
DEFAULT_N = 100_000
DEFAULT_ALPHA = 0.001

# Each input's noise is drawn in blocks of this many samples, whatever the forward batch
# size: the noise (hence every count) depends only on the seed, never on how inputs are
# packed into forward passes.
_NOISE_BLOCK = 1000


# --------------------------------------------------------------------------- statistics


def _as_counts(value, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer count (or an array of them), got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _check_alpha(alpha) -> float:
    check_positive(alpha, "alpha")
    if alpha >= 1:
        raise ValueError(f"alpha must be a probability in (0, 1), got {alpha}")
    return float(alpha)


def _check_trials(k, n):
    k, n = _as_counts(k, "k"), _as_counts(n, "n")
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


def _lower(k, n, level):
    from scipy.stats import beta

    safe = np.maximum(k, 1)  # beta.ppf is undefined at k = 0, where the bound is 0
    return np.where(k == 0, 0.0, beta.ppf(level, safe, n - safe + 1))


def _upper(k, n, level):
    from scipy.stats import beta

    safe = np.minimum(k, n - 1)  # undefined at k = n, where the bound is 1
    return np.where(k == n, 1.0, beta.ppf(1 - level, safe + 1, n - safe))


def _scalar_or_array(arr, scalar: bool):
    return float(arr) if scalar else arr


def clopper_pearson(k, n, alpha: float = DEFAULT_ALPHA, side: str = "lower"):
    r"""Exact (Clopper--Pearson) confidence bounds for a binomial proportion.

    With :math:`K \sim \mathrm{Bin}(n, p)` observed as ``k``, the one-sided bounds at level
    :math:`\alpha` are the quantiles of beta distributions,

    .. math::

        \underline{p} = B^{-1}(\alpha;\, k,\, n - k + 1), \qquad
        \overline{p} = B^{-1}(1 - \alpha;\, k + 1,\, n - k),

    with :math:`\underline{p} = 0` at :math:`k = 0` and :math:`\overline{p} = 1` at
    :math:`k = n`. Guarantee: :math:`P(\underline{p} > p) \le \alpha` and
    :math:`P(\overline{p} < p) \le \alpha` for every :math:`p` (conservative, never
    approximate: no normal approximation is involved). The two-sided interval at level
    :math:`\alpha` is the pair of one-sided bounds at :math:`\alpha/2`.

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
        A float when ``k`` and ``n`` are scalars, else a float64 array of their broadcast
        shape.

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
    alpha = _check_alpha(alpha)
    check_choice(side, "side", ("lower", "upper", "two-sided"))
    scalar = np.ndim(k) == 0 and np.ndim(n) == 0 and not isinstance(k, torch.Tensor) and not isinstance(n, torch.Tensor)
    k, n = _check_trials(k, n)
    if side == "lower":
        return _scalar_or_array(_lower(k, n, alpha), scalar)
    if side == "upper":
        return _scalar_or_array(_upper(k, n, alpha), scalar)
    return _scalar_or_array(_lower(k, n, alpha / 2), scalar), _scalar_or_array(_upper(k, n, alpha / 2), scalar)


def binomial_test_half(k, n):
    r"""P-value of the two-sided exact binomial test of :math:`H_0: p = 1/2`, vectorized.

    For :math:`K \sim \mathrm{Bin}(n, 1/2)` the distribution is symmetric, so the p-value
    (the probability of an outcome at most as likely as ``k``) is

    .. math::

        \min\big(1,\; 2\,P(K \le \min(k, n - k))\big),

    the same number as ``scipy.stats.binomtest(k, n, 0.5).pvalue``, for whole arrays at once.

    Examples
    --------
    >>> from scipy.stats import binomtest
    >>> bool(binomial_test_half(60, 100) == binomtest(60, 100, 0.5).pvalue)
    True
    >>> binomial_test_half([5, 10, 10], [10, 10, 20]).round(6)
    array([1.      , 0.001953, 1.      ])
    """
    from scipy.stats import binom

    k, n = _check_trials(k, n)
    return np.minimum(1.0, 2.0 * binom.cdf(np.minimum(k, n - k), n, 0.5))


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
    from scipy.stats import norm

    check_positive(sigma, "sigma")

    def prob(v, name):
        arr = np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v, dtype=np.float64)
        if arr.size and (np.isnan(arr).any() or arr.min() < 0 or arr.max() > 1):
            raise ValueError(f"{name} must hold probabilities in [0, 1]")
        return arr

    p_a = prob(p_a, "p_a")
    if p_b is None:
        return sigma * norm.ppf(p_a)
    p_b = prob(p_b, "p_b")
    return sigma / 2 * (norm.ppf(p_a) - norm.ppf(p_b))


# --------------------------------------------------------------------------- sampling


def _model_dtype(model) -> torch.dtype:
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _seeds(seed, batch: int) -> list[int]:
    """One seed per input: ``seed + i`` for an int, or a sequence of ``batch`` seeds."""
    if isinstance(seed, Integral) and not isinstance(seed, bool):
        check_positive_int(int(seed), "seed", allow_zero=True)
        return [int(seed) + i for i in range(batch)]
    if isinstance(seed, torch.Tensor):
        seed = seed.detach().cpu().tolist()
    if isinstance(seed, np.ndarray):
        seed = seed.tolist()
    if not isinstance(seed, (list, tuple)):
        raise TypeError(f"seed must be an int or a sequence of one int per input, got {type(seed).__name__}")
    if len(seed) != batch:
        raise ValueError(f"seed must hold one seed per input ({batch}), got {len(seed)}")
    for s in seed:
        if isinstance(s, bool) or not isinstance(s, Integral) or s < 0:
            raise ValueError(f"seed must hold integers >= 0, got {s!r}")
    return [int(s) for s in seed]


def _generators(seed, batch: int, device: torch.device) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(s) for s in _seeds(seed, batch)]


def _check_common(model, x, sigma, batch_size):
    check_model(model)
    check_images(x, "x")
    check_positive(sigma, "sigma")
    check_positive_int(batch_size, "batch_size")


@torch.no_grad()
def _count(model, x, n: int, sigma: float, gens, batch_size: int, bar) -> torch.Tensor:
    """Votes (B, K) of ``model`` on ``n`` noisy copies of each input, on the model's device.

    Input i's noise comes from ``gens[i]`` in blocks of ``_NOISE_BLOCK`` samples; noisy
    copies of consecutive inputs are packed into forward passes of ``batch_size``.
    """
    batch, shape = x.shape[0], tuple(x.shape[1:])
    device, dtype = x.device, x.dtype
    counts: torch.Tensor | None = None
    parts: list[torch.Tensor] = []
    owners: list[torch.Tensor] = []
    filled = 0

    def vote(noisy: torch.Tensor, owner: torch.Tensor) -> None:
        nonlocal counts
        logits = model(noisy)
        pred = logits.argmax(1)
        if counts is None:
            counts = torch.zeros(batch, logits.shape[1], dtype=torch.long, device=device)
        k = counts.shape[1]
        lo, hi = int(owner[0]), int(owner[-1]) + 1  # a forward pass covers consecutive inputs
        counts[lo:hi] += torch.bincount((owner - lo) * k + pred, minlength=(hi - lo) * k).view(hi - lo, k)
        bar.update(noisy.shape[0])

    for i in range(batch):
        for start in range(0, n, _NOISE_BLOCK):
            size = min(_NOISE_BLOCK, n - start)
            noise = torch.randn((size, *shape), generator=gens[i], device=device, dtype=dtype)
            parts.append(noise.mul_(sigma).add_(x[i]))
            owners.append(torch.full((size,), i, dtype=torch.long, device=device))
            filled += size
            while filled >= batch_size:
                noisy = parts[0] if len(parts) == 1 else torch.cat(parts)
                owner = owners[0] if len(owners) == 1 else torch.cat(owners)
                vote(noisy[:batch_size], owner[:batch_size])
                filled -= batch_size
                parts, owners = ([noisy[batch_size:]], [owner[batch_size:]]) if filled else ([], [])
    if filled:
        vote(torch.cat(parts), torch.cat(owners))
    return counts


def _prepare(model, x):
    device, dtype = _models.device_of(model), _model_dtype(model)
    return x.detach().to(device=device, dtype=dtype), device


def sample_counts(model, x, n: int, sigma: float, *, batch_size: int = 1000, seed=0,
                  progress: bool | None = None) -> torch.Tensor:
    r"""Class counts of the base classifier on ``n`` Gaussian-noised copies of each input.

    ``counts[i, c]`` is the number of draws :math:`\delta_1, \dots, \delta_n \sim
    \mathcal{N}(0, \sigma^2 I)` with :math:`f(x_i + \delta_j) = c`, a
    :math:`\mathrm{Multinomial}(n, (P(f(x_i + \delta) = c))_c)` sample. The noise is added
    in pixel space and not clamped. The model runs in eval mode (restored afterwards) on
    its own device, on forward batches of ``batch_size`` noisy inputs that may span
    several inputs.

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
        int64 counts of shape (B, K) on the CPU; every row sums to ``n``.

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
    xd, device = _prepare(model, x)
    gens = _generators(seed, x.shape[0], device)
    from ..attacks import eval_mode

    with eval_mode(model), config.progress_bar(x.shape[0] * n, "smoothing: sampling", config.progress_enabled(progress),
                                               unit="sample") as bar:
        return _count(model, xd, n, float(sigma), gens, batch_size, bar).cpu()


def predict(model, x, *, sigma: float, n: int = DEFAULT_N, alpha: float = DEFAULT_ALPHA, batch_size: int = 1000,
            seed=0, progress: bool | None = None) -> torch.Tensor:
    r"""PREDICT (Cohen et al., 2019): the smoothed classifier's class, or abstain.

    Draws ``n`` noisy samples per input, takes the two most frequent classes
    :math:`c_1, c_2` with counts :math:`n_1 \ge n_2` (the lower class index first on a tie),
    and returns :math:`c_1` if the two-sided binomial test of :math:`n_1` successes in
    :math:`n_1 + n_2` trials at :math:`p = 1/2` has p-value :math:`\le \alpha`
    (:func:`binomial_test_half`), else :data:`ABSTAIN`.

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
        int64 classes (B,) on the CPU, ``ABSTAIN = -1`` where the test is inconclusive.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> predict(model, torch.rand(2, 1, 8, 8), sigma=0.25, n=200, alpha=0.01).shape
    torch.Size([2])
    """
    alpha = _check_alpha(alpha)
    counts = sample_counts(model, x, n, sigma, batch_size=batch_size, seed=seed, progress=progress)
    top, order = counts.sort(dim=1, descending=True, stable=True)
    n1 = top[:, 0]
    n2 = top[:, 1] if top.shape[1] > 1 else torch.zeros_like(n1)
    pvalue = torch.from_numpy(binomial_test_half(n1, n1 + n2))
    return torch.where(pvalue <= alpha, order[:, 0], torch.full_like(n1, ABSTAIN))


# --------------------------------------------------------------------------- certificates


@dataclasses.dataclass(frozen=True)
class Certificate:
    r"""Per-input results of :func:`certify`, batch-first (tensors on the CPU).

    Attributes
    ----------
    prediction : torch.Tensor
        int64 (B,): the certified class :math:`\hat c_A`, or ``ABSTAIN = -1``.
    radius : torch.Tensor
        float64 (B,): certified L2 radius in pixel units, :math:`\sigma\Phi^{-1}(\underline{p_A})`
        (0 where abstaining). With probability at least :math:`1 - \alpha`,
        :math:`g(x + \varepsilon) = ` ``prediction`` for every :math:`\|\varepsilon\|_2 < R`.
    pA_lower : torch.Tensor
        float64 (B,): the one-sided Clopper--Pearson lower bound :math:`\underline{p_A}`.
    count : torch.Tensor
        int64 (B,): how many of the ``n`` estimation samples voted for :math:`\hat c_A`.
    sigma, alpha : float
    n0, n : int
        Selection and estimation sample sizes.
    """

    prediction: torch.Tensor
    radius: torch.Tensor
    pA_lower: torch.Tensor
    count: torch.Tensor
    sigma: float
    alpha: float
    n0: int
    n: int

    unit = "L2 pixels"

    def __len__(self) -> int:
        return int(self.prediction.shape[0])

    @property
    def abstained(self) -> torch.Tensor:
        """bool (B,): where CERTIFY abstained."""
        return self.prediction == ABSTAIN

    def correct(self, y) -> torch.Tensor:
        """bool (B,): certified *and* right (an abstention is never correct)."""
        y = torch.as_tensor(y).cpu()
        if y.shape != self.prediction.shape:
            raise ValueError(f"y must have shape {tuple(self.prediction.shape)}, got {tuple(y.shape)}")
        return (self.prediction == y) & ~self.abstained

    def certified_accuracy(self, y, at=(0.0, 0.25, 0.5, 0.75, 1.0)) -> np.ndarray:
        """Fraction of inputs certified correct at each radius in ``at`` (see :func:`certified_accuracy`)."""
        return certified_accuracy(self.radius, self.correct(y), at=at)


def certify(model, x, *, sigma: float, n0: int = DEFAULT_N0, n: int = DEFAULT_N, alpha: float = DEFAULT_ALPHA,
            batch_size: int = 1000, seed=0, progress: bool | None = None) -> Certificate:
    r"""CERTIFY (Cohen et al., 2019): a class and a certified L2 radius for every input.

    For each input :math:`x`:

    1. draw ``n0`` noisy samples and let :math:`\hat c_A` be the most frequent class
       (lower index on a tie);
    2. draw ``n`` *fresh* samples and count :math:`n_A`, the votes for :math:`\hat c_A`;
    3. :math:`\underline{p_A} = ` :func:`clopper_pearson` :math:`(n_A, n, \alpha)`, the
       one-sided lower bound;
    4. if :math:`\underline{p_A} < 1/2` return ``ABSTAIN`` (radius 0), else
       :math:`\hat c_A` and :math:`R = \sigma\,\Phi^{-1}(\underline{p_A})`.

    Guarantee: with probability at least :math:`1 - \alpha` over the sampling, if the
    returned class is not ``ABSTAIN`` it equals the smoothed classifier's
    :math:`g(x)`, and :math:`g(x + \varepsilon) = g(x)` for every
    :math:`\|\varepsilon\|_2 < R`. Selection and estimation use separate samples (one
    continued noise stream per input), so the selection cannot bias the bound.

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

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> cert = certify(model, torch.rand(4, 1, 8, 8), sigma=0.25, n0=20, n=200, alpha=0.01)
    >>> len(cert), cert.unit, bool((cert.radius[cert.abstained] == 0).all())
    (4, 'L2 pixels', True)
    """
    from scipy.stats import norm

    _check_common(model, x, sigma, batch_size)
    check_positive_int(n0, "n0")
    check_positive_int(n, "n")
    alpha = _check_alpha(alpha)
    xd, device = _prepare(model, x)
    gens = _generators(seed, x.shape[0], device)
    from ..attacks import eval_mode

    total = x.shape[0] * (n0 + n)
    with eval_mode(model), config.progress_bar(total, "smoothing: certify", config.progress_enabled(progress),
                                               unit="sample") as bar:
        selection = _count(model, xd, n0, float(sigma), gens, batch_size, bar)
        guess = selection.argmax(1)  # the first maximum: lower class index on a tie
        estimation = _count(model, xd, n, float(sigma), gens, batch_size, bar)
    count = estimation.gather(1, guess[:, None])[:, 0].cpu()
    guess = guess.cpu()
    p_lower = torch.from_numpy(np.asarray(clopper_pearson(count, n, alpha), dtype=np.float64))
    certified = p_lower >= 0.5
    radius = torch.where(certified, float(sigma) * torch.from_numpy(norm.ppf(p_lower.numpy())), torch.zeros_like(p_lower))
    prediction = torch.where(certified, guess, torch.full_like(guess, ABSTAIN))
    return Certificate(prediction=prediction, radius=radius, pA_lower=p_lower, count=count, sigma=float(sigma),
                       alpha=alpha, n0=n0, n=n)


# --------------------------------------------------------------------------- evaluation


def certified_accuracy(radii, correct, at=(0.0, 0.25, 0.5, 0.75, 1.0)) -> np.ndarray:
    r"""Certified accuracy at each radius: the fraction of inputs certified correct with
    a radius at least :math:`r`,

    .. math::

        \mathrm{CA}(r) = \frac{1}{B}\sum_i \mathbb{1}[\text{correct}_i]\,\mathbb{1}[R_i \ge r].

    ``CA(0)`` is the accuracy of CERTIFY itself (abstentions count as errors). It is the
    quantity Cohen et al. report (0.60 / 0.43 / 0.27 at radius 0.25 / 0.5 / 0.75 for
    CIFAR-10 at sigma 0.25).

    Parameters
    ----------
    radii : array-like of float, shape (B,)
    correct : array-like of bool, shape (B,)
        Whether each certified prediction is right (:meth:`Certificate.correct`).
    at : float or sequence of float
        Radii (>= 0) at which to evaluate.

    Returns
    -------
    numpy.ndarray
        float64, one value per entry of ``at``.

    Examples
    --------
    >>> certified_accuracy([0.0, 0.3, 0.6, 1.2], [False, True, True, False], at=[0, 0.25, 0.5, 1.0])
    array([0.5 , 0.5 , 0.25, 0.  ])
    """
    def as_np(v):
        return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)

    radii, correct = as_np(radii).astype(np.float64), as_np(correct)
    if radii.ndim != 1 or radii.size == 0:
        raise ValueError(f"radii must be a non-empty 1-D array, got shape {radii.shape}")
    if correct.shape != radii.shape:
        raise ValueError(f"correct must have the shape of radii {radii.shape}, got {correct.shape}")
    if correct.dtype != bool:
        raise TypeError(f"correct must be a boolean array, got dtype {correct.dtype}")
    if np.isnan(radii).any():
        raise ValueError("radii contains NaN")
    at = np.atleast_1d(np.asarray(at, dtype=np.float64))
    if at.size == 0 or np.isnan(at).any() or (at < 0).any():
        raise ValueError("at must hold radii >= 0")
    return (correct[None, :] & (radii[None, :] >= at[:, None])).mean(1)


def plot_certified_accuracy(curves, *, r_max: float | None = None, ax=None, reference=None):
    """Certified accuracy against the radius, one curve per entry of ``curves``.

    Parameters
    ----------
    curves : dict
        ``label -> Certificate and labels`` as a pair ``(certificate, y)``, or
        ``label -> (radii, correct)``.
    r_max : float, optional
        Right end of the radius axis (default: a little past the largest radius).
    ax : matplotlib Axes, optional
    reference : dict, optional
        ``label -> (radii, accuracies)`` points drawn as markers (e.g. published numbers).

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    if not isinstance(curves, dict) or not curves:
        raise TypeError("curves must be a non-empty dict label -> (certificate, y) or (radii, correct)")
    data = {}
    for label, (first, second) in curves.items():
        if isinstance(first, Certificate):
            data[label] = (first.radius.numpy(), first.correct(second).numpy())
        else:
            data[label] = (np.asarray(first, dtype=np.float64), np.asarray(second, dtype=bool))
    top = max(float(r.max()) for r, _ in data.values())
    r_max = 1.05 * max(top, 1e-3) if r_max is None else r_max
    check_positive(r_max, "r_max")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    grid = np.linspace(0.0, r_max, 300)
    for label, (radii, correct) in data.items():
        ax.plot(grid, certified_accuracy(radii, correct, at=grid), label=label)
    for label, (rs, accs) in (reference or {}).items():
        ax.plot(rs, accs, "x", ms=7, label=label)
    ax.set_xlabel("L2 radius (pixel units)")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, r_max)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def max_radius(n: int, alpha: float, sigma: float) -> float:
    r"""The largest radius ``n`` samples can certify: :math:`\sigma\Phi^{-1}(\alpha^{1/n})`.

    Examples
    --------
    >>> round(max_radius(100_000, 0.001, 1.0), 2), round(max_radius(1000, 0.001, 1.0), 2)
    (3.81, 2.46)
    """
    from scipy.stats import norm

    check_positive_int(n, "n")
    alpha = _check_alpha(alpha)
    check_positive(sigma, "sigma")
    return float(sigma * norm.ppf(alpha ** (1.0 / n)))

