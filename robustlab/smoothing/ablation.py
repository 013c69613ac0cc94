r"""Randomized ablation: certificates against sparse (L0) attacks (Levine and Feizi, 2020).

**Threat model.** The attacker may change at most :math:`\rho` *pixels* of an image
arbitrarily, :math:`\|x - x'\|_0 \le \rho`, where a pixel is a spatial location with all
its channels (an image (C, H, W) has :math:`d = HW` pixels).

**Smoothing by ablation.** The base classifier :math:`f` never sees the whole image: it
sees :math:`k` of the :math:`d` pixels, a set :math:`S` drawn uniformly among the
:math:`\binom dk` subsets of size :math:`k`, and every other pixel is replaced by a
``NULL`` symbol that no real value can imitate. The smoothed classifier is

.. math::

    g(x) = \arg\max_c\; p_c(x), \qquad p_c(x) = P_S\big(f(\mathrm{ablate}(x, S)) = c\big).

**The certificate.** If :math:`x'` differs from :math:`x` in a set :math:`T` of
:math:`\rho` pixels, then :math:`\mathrm{ablate}(x, S) = \mathrm{ablate}(x', S)` whenever
:math:`S \cap T = \emptyset`, which has probability :math:`\binom{d-\rho}k / \binom dk`.
Every class probability therefore moves by at most

.. math::

    \Delta(\rho) = 1 - \binom{d-\rho}{k} \Big/ \binom{d}{k},

so :math:`p_A(x') \ge p_A(x) - \Delta` and :math:`p_B(x') \le p_B(x) + \Delta`. With
:math:`p_B \le 1 - p_A`, the prediction :math:`c_A` survives every change of
:math:`\rho` pixels as soon as

.. math:: \underline{p_A} - \Delta(\rho) > \tfrac12,

where :math:`\underline{p_A} \le p_A(x)` is a lower bound. The certified radius is the
largest such :math:`\rho` (:func:`certified_radius`). Since :math:`\Delta` only depends on
:math:`d`, :math:`k` and :math:`\rho`, small :math:`k` certifies more pixels but the base
classifier sees less: :math:`k` trades accuracy for radius.

**Monte Carlo.** :func:`certify` is CERTIFY: ``n0`` ablated copies select the class
:math:`\hat c_A`, ``n`` fresh copies give its one-sided Clopper--Pearson lower bound
:math:`\underline{p_A}` at level ``alpha``; it abstains (:data:`ABSTAIN`) unless
:math:`\underline{p_A} > 1/2` and otherwise returns the radius above, which holds with
probability at least :math:`1 - \alpha`. A returned radius 0 therefore means "the
prediction is certified, no pixel is", never "wrong or uncertain" (the two cases a single
radius code would conflate). :func:`predict` is PREDICT (a two-sided binomial test between
the two most frequent classes). :func:`certify_exact` enumerates all :math:`\binom dk`
subsets of a tiny image instead, and certifies *deterministically* from the exact counts
with the sharper two-class condition :math:`n_A - n_B - [c_B < c_A] \ge 2\,(N - \binom{d-\rho}k)`
(:math:`N = \binom dk`).

**Encoding.** :class:`AblationNoise` turns an image (C, H, W) into ``C + 1`` channels,
the kept values :math:`x \odot m` and the mask :math:`m` (1 on the kept pixels). The base
network sits inside :class:`AblatedClassifier`, which encodes this as the paper does:
``2C`` channels :math:`(x \odot m,\ (1 - x) \odot m)`, so a kept pixel is
:math:`(x, 1 - x)` and an ablated one :math:`(0, 0)`, which no pixel value produces
(``encoding="fill"`` instead fills ablated pixels with a constant and keeps ``C`` channels,
the paper's comparison variant). Certification draws an independent subset for every copy
through the shared sampling engine (:mod:`robustlab.smoothing.sampling`: input :math:`i`
uses the stream seeded ``seed + i``, so results do not depend on ``batch_size``); the base
classifier is trained on ablated inputs (:class:`AblationLoss`, :func:`base_model`).

Reference: Levine and Feizi, *Robustness certificates for sparse adversarial attacks by
randomized ablation*, AAAI 2020, arXiv 1911.09272 (MNIST: :math:`k = 45` of 784 pixels,
median certificate 8 pixels; ``alpha = 0.05``, ``n0 = 1000``, ``n = 10000``).

Examples
--------
>>> [certified_radius(p, d=64, k=10) for p in (0.5, 0.6, 0.8, 0.99)]
[-1, 0, 2, 3]
>>> import robustlab as rl
>>> model = build("mlp", "digits", width=2)
>>> cert = certify(model, torch.rand(3, 1, 8, 8), k=10, n0=20, n=200)
>>> cert.unit, cert.method, len(cert), cert.k, cert.d
('pixels (L0)', 'ablation', 3, 10, 64)
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import data as _data
from .. import models as _models
from .. import votes as _votes
from ..certificates import ABSTAIN, UNITS, Certificate
from ..stats import clopper_pearson
from .._validate import (check_choice, check_images, check_model, check_positive_int, check_probability,
                         check_real, check_seed, check_tensor)
from . import sampling as _sampling

__all__ = [
    "ABSTAIN",
    "DEFAULT_N0",
    "DEFAULT_N",
    "DEFAULT_ALPHA",
    "DIGITS_K",
    "DEFAULT_K",
    "default_k",
    "ENCODINGS",
    "n_subsets",
    "delta",
    "p_lower_needed",
    "certified_radius",
    "max_radius",
    "random_masks",
    "ablate",
    "AblationNoise",
    "AblatedClassifier",
    "build",
    "AllAblations",
    "sample_counts",
    "predict",
    "certify",
    "certify_counts",
    "exact_counts",
    "certify_exact",
    "certify_exact_counts",
    "SmoothedSurrogate",
    "AblationLoss",
    "base_model",
]

DEFAULT_N0 = 1000
DEFAULT_N = 10_000
DEFAULT_ALPHA = 0.05
DIGITS_K = 10
DEFAULT_K = {"digits": DIGITS_K, "mnist": 45, "fashion_mnist": 45}
"""Pixels kept by default, per data set (45 of MNIST's 784 is the paper's choice)."""
"""Pixels kept of the 64 of an 8x8 digit: certificates of up to 3 pixels are reachable."""
ENCODINGS = ("channels", "fill")
MAX_SUBSETS = 2_000_000  # exact enumeration beyond this is not a tiny-image computation


# =========================================================================== the certificate


def _check_dk(d, k):
    d = check_positive_int(d, "d")
    k = check_positive_int(k, "k")
    if k > d:
        raise ValueError(f"k must be at most d = {d} (the pixels kept cannot outnumber the pixels), got {k}")
    return d, k


def n_subsets(d: int, k: int) -> int:
    r"""The number :math:`\binom dk` of kept-pixel sets, each drawn with probability :math:`1/\binom dk`.

    >>> n_subsets(64, 10), n_subsets(6, 2)
    (151473214816, 15)
    """
    d, k = _check_dk(d, k)
    return math.comb(d, k)


def _survivors(d: int, k: int, upto: int) -> list[int]:
    r"""Exact :math:`\binom{d-\rho}k` for :math:`\rho = 0 .. \text{upto}` (0 once :math:`d - \rho < k`)."""
    out, t = [], math.comb(d, k)
    for rho in range(upto + 1):
        out.append(t)
        if t:  # C(d-rho-1, k) = C(d-rho, k) (d-rho-k) / (d-rho)
            t = t * (d - rho - k) // (d - rho)
    return out


def _table(d: int, k: int) -> list[int]:
    """:math:`\\binom{d-\\rho}k` for every :math:`\\rho` that any bound <= 1 can certify, plus one more."""
    n = math.comb(d, k)
    out, t, rho = [], n, 0
    while True:  # even p = 1 needs 1 - Delta > 1/2, i.e. 2 C(d - rho, k) > N
        out.append(t)
        if 2 * t <= n:
            return out
        t = t * (d - rho - k) // (d - rho)
        rho += 1


def _radii(value, name):
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer number of pixels (or an array of them), got dtype {arr.dtype}")
    if arr.size and int(arr.min()) < 0:
        raise ValueError(f"{name} must be >= 0 pixels, got {int(arr.min())}")
    return arr.astype(np.int64)


def delta(rho, d: int, k: int):
    r"""The probability :math:`\Delta(\rho) = 1 - \binom{d-\rho}k / \binom dk` that the kept set meets
    :math:`\rho` fixed pixels: the most any class probability can move when :math:`\rho` pixels change.

    Parameters
    ----------
    rho : int or array-like of int
        Changed pixels, ``>= 0``.
    d, k : int
        Pixels of the image and pixels kept, ``1 <= k <= d``.

    Returns
    -------
    float or numpy.ndarray
        float64, in [0, 1].

    Examples
    --------
    >>> round(delta(1, 64, 5), 4)  # one pixel: k / d
    0.0781
    >>> delta([0, 60, 64], 64, 5).tolist()
    [0.0, 1.0, 1.0]
    """
    d, k = _check_dk(d, k)
    scalar = np.ndim(rho) == 0 and not isinstance(rho, torch.Tensor)
    rho = _radii(rho, "rho")
    rho = np.minimum(rho, d)
    n = math.comb(d, k)
    top = int(rho.max()) if rho.size else 0
    table = np.array([float(Fraction(n - t, n)) for t in _survivors(d, k, top)], dtype=np.float64)
    out = table[rho] if rho.size else np.zeros(rho.shape)
    return float(out) if scalar else out


def p_lower_needed(rho, d: int, k: int):
    r"""The bound :math:`\underline{p_A}` must *exceed* to certify :math:`\rho` pixels: :math:`1/2 + \Delta(\rho)`
    (above 1: :math:`\rho` cannot be certified at this :math:`k`).

    Examples
    --------
    >>> p_lower_needed([1, 2, 3, 4], 64, 5).round(3).tolist()
    [0.578, 0.651, 0.72, 0.784]
    >>> round(p_lower_needed(8, 784, 45), 3)
    0.878
    """
    return 0.5 + delta(rho, d, k)


def _probabilities(value, name):
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must hold probabilities (real numbers in [0, 1]), got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.size and (np.isnan(arr).any() or arr.min() < 0 or arr.max() > 1):
        raise ValueError(f"{name} must hold probabilities in [0, 1]")
    return arr


def _round_up_to_grid(p: float, n: int) -> Fraction:
    """The smallest multiple of 1/n that is >= p (up to float rounding of a p meant to lie on the grid)."""
    exact = Fraction(p) * n
    tol = Fraction(n, 2 ** 50) + Fraction(1, 10 ** 9)  # a float j/n is off by at most n 2^-53 counts
    return Fraction(math.ceil(exact - tol), n)


def certified_radius(p_lower, d: int, k: int, *, round_to_grid: bool = False):
    r"""The certified number of pixels: the largest :math:`\rho` with
    :math:`\underline{p_A} - \Delta(\rho) > 1/2`, i.e.
    :math:`\binom{d-\rho}k / \binom dk > 3/2 - \underline{p_A}`; ``-1`` where not even
    :math:`\rho = 0` qualifies (:math:`\underline{p_A} \le 1/2`: no prediction is certified).

    Levine and Feizi (2020), Theorem 1, with :math:`\Delta` of :func:`delta`. The comparison
    is exact (rational arithmetic decides the cases a float comparison cannot).

    Parameters
    ----------
    p_lower : float or array-like
        A lower bound on the top class's probability :math:`p_A(x)`, in [0, 1].
    d, k : int
        Pixels of the image and pixels kept, ``1 <= k <= d``.
    round_to_grid : bool
        :math:`p_A` is a multiple of :math:`1/\binom dk` (the subsets are equally likely), so
        :math:`p_A \ge \underline{p_A}` implies :math:`p_A \ge \lceil \underline{p_A}\binom dk\rceil / \binom dk`;
        round the bound up to that grid first. Sound, and noticeable only for tiny images
        (for :math:`\binom dk \ge 2^{53}` it cannot change a float bound and is skipped).

    Returns
    -------
    int or numpy.ndarray
        int64 radii, ``-1`` where :math:`\underline{p_A} \le 1/2`.

    Examples
    --------
    >>> certified_radius([0.5, 0.579, 0.652, 0.7, 1.0], d=64, k=5).tolist()
    [-1, 1, 2, 2, 8]
    >>> certified_radius([0.88, 0.95], d=784, k=45).tolist()  # MNIST's setting: 8 pixels need 0.878
    [8, 10]
    >>> certified_radius(11 / 15, d=6, k=2), certified_radius(11 / 15, d=6, k=2, round_to_grid=True)
    (0, 0)
    """
    d, k = _check_dk(d, k)
    if not isinstance(round_to_grid, bool):
        raise TypeError(f"round_to_grid must be True or False, got {type(round_to_grid).__name__}")
    scalar = np.ndim(p_lower) == 0 and not isinstance(p_lower, torch.Tensor)
    p = _probabilities(p_lower, "p_lower")
    n = math.comb(d, k)
    table = _table(d, k)  # exact C(d - rho, k), decreasing; its last entry certifies nothing
    grid = round_to_grid and n < 2 ** 53
    out = np.empty(p.size, dtype=np.int64)
    for i, value in enumerate(p.reshape(-1).tolist()):
        bound = _round_up_to_grid(value, n) if grid else Fraction(value)
        a, b = bound.numerator, bound.denominator

        def passes(rho):  # C(d - rho, k) / N > 3/2 - a/b, in integers
            return 2 * table[rho] * b > (3 * b - 2 * a) * n

        lo, hi = -1, len(table) - 1  # passes(lo) (or lo = -1), not passes(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if passes(mid):
                lo = mid
            else:
                hi = mid
        out[i] = lo
    out = out.reshape(p.shape)
    return int(out) if scalar else out


def max_radius(d: int, k: int, *, n: int | None = None, alpha: float | None = None) -> int:
    r"""The largest certifiable radius: at :math:`\underline{p_A} = 1`, or with ``n`` samples all for
    :math:`c_A` at level ``alpha`` (:math:`\underline{p_A} = \alpha^{1/n}`). ``-1`` if none.

    Examples
    --------
    >>> max_radius(64, 10), max_radius(64, 10, n=10_000, alpha=0.05), max_radius(784, 45)
    (3, 3, 11)
    """
    d, k = _check_dk(d, k)
    if (n is None) != (alpha is None):
        raise ValueError("n and alpha must be given together (or neither, for p_A = 1)")
    if n is None:
        return int(certified_radius(1.0, d, k))
    n = check_positive_int(n, "n")
    alpha = check_probability(alpha, "alpha")
    return int(certified_radius(float(clopper_pearson(n, n, alpha)), d, k))


# =========================================================================== the ablation


def random_masks(size: int, spatial, k: int, *, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    r"""``size`` independent kept-pixel masks, each with exactly ``k`` of the pixels of ``spatial``
    (H, W) set, uniform over the :math:`\binom{HW}k` subsets: bool (size, H, W).

    Floyd's algorithm, vectorized over the masks: for :math:`j = d - k, \dots, d - 1` draw
    :math:`t` uniform in :math:`\{0..j\}` and keep :math:`t`, or :math:`j` if :math:`t` is kept
    already; every subset comes out with probability :math:`1/\binom dk` after :math:`k`
    draws, each :math:`t = \lfloor u\,(j + 1) \rfloor` from a float64 uniform :math:`u` (exact
    up to :math:`2^{-53}`); the :math:`d - k` ablated pixels are drawn instead when fewer.

    >>> m = random_masks(3, (8, 8), 10, generator=torch.Generator().manual_seed(0))
    >>> m.shape, m.flatten(1).sum(1).tolist()
    (torch.Size([3, 8, 8]), [10, 10, 10])
    """
    size = check_positive_int(size, "size", allow_zero=True)
    spatial = tuple(int(s) for s in spatial)
    d = math.prod(spatial)
    _check_dk(d, k)
    device = generator.device if device is None and generator is not None else device
    draws = min(k, d - k)
    chosen = torch.zeros(size * d, dtype=torch.bool, device=device)
    start = torch.arange(size, device=device) * d
    top = torch.arange(d - draws, d, device=device)[:, None]  # j, one row per step
    u = torch.rand((draws, size), generator=generator, device=device, dtype=torch.float64)
    t = u.mul_(top + 1).long().minimum(top).add_(start)
    fallback = top + start
    for step in range(draws):
        chosen[torch.where(chosen[t[step]], fallback[step], t[step])] = True
    chosen = chosen.view(size, *spatial)
    return chosen if draws == k else ~chosen


def ablate(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    r"""The ablated inputs ``(x * m, m)``: ``C + 1`` channels, the kept values and the mask.

    Parameters
    ----------
    x : torch.Tensor
        Images (B, C, H, W), or one image (C, H, W) to pair with every mask.
    mask : torch.Tensor
        Kept pixels (B, H, W) (bool or 0/1), the same for all channels of a pixel.

    Returns
    -------
    torch.Tensor
        (B, C + 1, H, W) in ``x``'s dtype; ablated pixels are 0 in every channel.

    >>> z = ablate(torch.full((1, 1, 2, 2), 0.25), torch.tensor([[[True, False], [False, True]]]))
    >>> z[0, 0].tolist(), z[0, 1].tolist()
    ([[0.25, 0.0], [0.0, 0.25]], [[1.0, 0.0], [0.0, 1.0]])
    """
    check_tensor(x, "x")
    check_tensor(mask, "mask")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or mask.dim() != 3 or mask.shape[1:] != x.shape[2:] or x.shape[0] not in (1, mask.shape[0]):
        raise ValueError(f"x (B, C, H, W) and mask (B, H, W) must match, got {tuple(x.shape)} and {tuple(mask.shape)}")
    b, c = max(x.shape[0], mask.shape[0]), x.shape[1]
    if x.requires_grad and torch.is_grad_enabled():  # differentiable (attacks through the ablation)
        m = mask.to(dtype=x.dtype).unsqueeze(1)
        return torch.cat([x * m, m.expand(b, 1, *m.shape[2:])], 1)
    out = torch.empty((b, c + 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
    out[:, c] = mask
    torch.mul(x, out[:, c:], out=out[:, :c])
    return out


class AblationNoise(_sampling.Noise):
    r"""Randomized ablation as a noise of the sampling engine: every copy keeps ``k`` pixels
    chosen uniformly without replacement (all channels of a pixel together) and ablates the rest.

    ``sample(x_i, size, generator)`` maps one image (C, H, W) to ``size`` ablated copies
    (size, C + 1, H, W) (:func:`ablate`), the model seeing them being an :class:`AblatedClassifier`.

    >>> z = AblationNoise(5).sample(torch.rand(1, 8, 8), 4, torch.Generator().manual_seed(0))
    >>> z.shape, z[:, 1].flatten(1).sum(1).tolist()
    (torch.Size([4, 2, 8, 8]), [5.0, 5.0, 5.0, 5.0])
    """

    def __init__(self, k: int):
        self.k = check_positive_int(k, "k")

    def sample(self, x_i, size, generator):
        if x_i.dim() != 3:
            raise ValueError(f"randomized ablation needs images (C, H, W), got one input of shape {tuple(x_i.shape)}")
        d = x_i.shape[1] * x_i.shape[2]
        if self.k > d:
            raise ValueError(f"k must be at most d = {d} (the pixels of the image), got {self.k}")
        mask = random_masks(size, x_i.shape[1:], self.k, generator=generator, device=x_i.device)
        return ablate(x_i, mask)

    def __repr__(self):
        return f"AblationNoise(k={self.k})"


class AblatedClassifier(nn.Module):
    r"""A base classifier on ablated inputs: encodes ``(x * m, m)`` and runs ``net`` on the encoding.

    * ``encoding="channels"`` (the paper's): ``2C`` channels :math:`(x \odot m,\ (1 - x) \odot m)`;
      a kept pixel is :math:`(x, 1 - x)`, an ablated pixel :math:`(0, 0)`.
    * ``encoding="fill"``: ``C`` channels, ablated pixels set to ``fill`` (e.g. the data mean).

    The input is (B, C + 1, H, W) from :func:`ablate` / :class:`AblationNoise`; a plain image
    (B, C, H, W) counts as all pixels kept.

    Parameters
    ----------
    net : torch.nn.Module
        Maps the encoding (B, 2C, H, W) (or (B, C, H, W) for ``"fill"``) to logits.
    channels : int
        C, the channels of the images.
    encoding : {"channels", "fill"}
    fill : float
        The value of ablated pixels for ``"fill"``.

    Examples
    --------
    >>> f = AblatedClassifier(nn.Flatten(), channels=1)
    >>> f(ablate(torch.full((1, 1, 1, 2), 0.25), torch.tensor([[[True, False]]]))).tolist()
    [[0.25, 0.0, 0.75, 0.0]]
    """

    def __init__(self, net: nn.Module, channels: int = 1, *, encoding: str = "channels", fill: float = 0.0):
        super().__init__()
        self.net = check_model(net, "net")
        self.channels = check_positive_int(channels, "channels")
        self.encoding = check_choice(encoding, "encoding", ENCODINGS)
        self.fill = float(check_real(fill, "fill"))

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """The encoding ``net`` sees, from ablated inputs (B, C + 1, H, W) or plain images (B, C, H, W)."""
        check_tensor(z, "z")
        c = self.channels
        if z.dim() != 4 or z.shape[1] not in (c, c + 1):
            raise ValueError(f"the input must be ablated images (B, {c + 1}, H, W) or images (B, {c}, H, W), "
                             f"got shape {tuple(z.shape)}")
        if z.shape[1] == c:
            values, mask = z, torch.ones_like(z[:, :1])
        else:
            values, mask = z[:, :c], z[:, c:]
        if self.encoding == "channels":
            return torch.cat([values, mask - values], 1)  # (x m, (1 - x) m)
        return values + (1.0 - mask) * self.fill

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.encode(z))

    def extra_repr(self) -> str:
        extra = f", fill={self.fill:g}" if self.encoding == "fill" else ""
        return f"channels={self.channels}, encoding={self.encoding!r}{extra}"


def build(arch: str | None = None, dataset: str | None = None, *, width: int | None = None, seed: int | None = 0,
          encoding: str = "channels", fill: float | None = None) -> AblatedClassifier:
    """A fresh :class:`AblatedClassifier` around the profile's architecture, with ``2C`` input channels.

    ``arch`` and ``width`` as in :func:`robustlab.models.build`; for ``encoding="fill"`` the
    network keeps ``C`` channels and the data set's normalization, and ``fill`` defaults to
    the data set's mean (the paper's comparison variant).

    >>> f = build("cnn", "digits")
    >>> f(torch.rand(2, 2, 8, 8)).shape, f.net[1].in_channels
    (torch.Size([2, 10]), 2)
    """
    from .. import config

    prof = config.profile()
    meta = _data.info(dataset)
    check_choice(encoding, "encoding", ENCODINGS)
    arch = prof.arch if arch is None else arch
    check_choice(arch, "arch", _models.ARCHS)
    width = prof.width if width is None else check_positive_int(width, "width")
    c, h, w = meta.shape
    if encoding == "channels":
        shape, mean, std = (2 * c, h, w), (0.0,) * (2 * c), (1.0,) * (2 * c)
    else:
        shape, mean, std = (c, h, w), meta.mean, meta.std
        fill = float(np.mean(meta.mean)) if fill is None else fill
    if seed is not None:
        torch.manual_seed(check_seed(seed))
    kw = dict(n_classes=meta.n_classes, mean=mean, std=std)
    if arch == "mlp":
        net = _models.MLP(shape, hidden=(16 * width, 16 * width), **kw)
    elif arch == "cnn":
        net = _models.SmallCNN(shape, width=width, **kw)
    else:
        net = _models.ResNet(shape, width=width, **kw)
    return AblatedClassifier(net, c, encoding=encoding, fill=0.0 if fill is None else fill)


class AllAblations(_sampling.TransformFamily):
    r"""Every kept-pixel set of size ``k`` of an image with ``spatial = (H, W)`` pixels, once each:
    the exact smoothing distribution of a tiny image, for :func:`robustlab.smoothing.sampling.enumerate_votes`.

    ``apply(x, t)`` is :func:`ablate` with the ``t``-th subset (lexicographic order).

    >>> fam = AllAblations((2, 3), 2)
    >>> len(fam), fam.apply(torch.rand(4, 1, 2, 3), 0).shape
    (15, torch.Size([4, 2, 2, 3]))
    """

    def __init__(self, spatial, k: int):
        self.spatial = tuple(check_positive_int(int(s), "spatial") for s in spatial)
        if len(self.spatial) != 2:
            raise ValueError(f"spatial must be (H, W), got {spatial}")
        self.d = math.prod(self.spatial)
        self.d, self.k = _check_dk(self.d, k)
        total = math.comb(self.d, self.k)
        if total > MAX_SUBSETS:
            raise ValueError(f"C(d, k) = C({self.d}, {self.k}) = {total} subsets are too many to enumerate "
                             f"(at most {MAX_SUBSETS}); sample them with certify instead")
        idx = torch.tensor(list(itertools.combinations(range(self.d), self.k)), dtype=torch.long)
        masks = torch.zeros(total, self.d, dtype=torch.bool)
        masks.scatter_(1, idx, True)
        self.masks = masks.view(total, *self.spatial)

    def __len__(self) -> int:
        return self.masks.shape[0]

    def apply(self, x, t):
        mask = self.masks[t].to(x.device).expand(x.shape[0], *self.spatial)
        return ablate(x, mask)

    def __repr__(self):
        return f"AllAblations(spatial={self.spatial}, k={self.k})"


# =========================================================================== PREDICT and CERTIFY


def _check_common(model, x, k, batch_size):
    check_model(model)
    check_images(x, "x", min_dim=4)
    if x.dim() != 4:
        raise ValueError(f"x must be images (B, C, H, W): randomized ablation removes whole pixels, "
                         f"got shape {tuple(x.shape)}")
    d = x.shape[2] * x.shape[3]
    _, k = _check_dk(d, k)
    check_positive_int(batch_size, "batch_size")
    return d, k


def sample_counts(model, x, n: int, *, k: int, batch_size: int = 1000, seed=0,
                  progress: bool | None = None) -> torch.Tensor:
    r"""Class counts of the base classifier on ``n`` ablated copies of each input (``k`` pixels kept).

    ``counts[i, c]`` is the number of subsets :math:`S_1, \dots, S_n` (drawn independently,
    uniformly among the size-``k`` subsets) with :math:`f(\mathrm{ablate}(x_i, S_j)) = c`.
    Runs on :func:`robustlab.smoothing.sampling.sample` with :class:`AblationNoise`.

    Parameters
    ----------
    model : torch.nn.Module
        The base classifier on ablated inputs (B, C + 1, H, W), e.g. an :class:`AblatedClassifier`.
    x : torch.Tensor
        Images (B, C, H, W) in [0, 1].
    n : int
        Ablated copies per input.
    k : int
        Pixels kept, ``1 <= k <= H * W``.
    batch_size, seed, progress
        Copies per forward pass (memory, not results); input ``i``'s stream is seeded
        ``seed + i``; progress bar.

    Returns
    -------
    torch.Tensor
        int64 (B, K) on the device of ``x``; every row sums to ``n``.

    >>> model = build("mlp", "digits", width=2)
    >>> sample_counts(model, torch.rand(2, 1, 8, 8), 30, k=10).sum(1).tolist()
    [30, 30]
    """
    _check_common(model, x, k, batch_size)
    check_positive_int(n, "n")
    return _sampling.sample(model, x, n, AblationNoise(k), mode="counts", seed=seed, batch_size=batch_size,
                            progress=progress, desc="ablation: sampling")


def predict(model, x, *, k: int, n: int = DEFAULT_N, alpha: float = DEFAULT_ALPHA, batch_size: int = 1000,
            seed=0, progress: bool | None = None) -> torch.Tensor:
    r"""PREDICT: the smoothed classifier's class :math:`g(x)`, or abstain.

    Draws ``n`` ablated copies, takes the two most frequent classes :math:`c_1, c_2`
    (counts :math:`n_1 \ge n_2`, the lower index first on a tie) and returns :math:`c_1` if the
    two-sided binomial test of :math:`n_1` in :math:`n_1 + n_2` at :math:`p = 1/2` has p-value
    :math:`\le \alpha`, else :data:`ABSTAIN`. The probability of returning a class other than
    :math:`g(x)` is at most :math:`\alpha`.

    Parameters
    ----------
    model, x, k, n, batch_size, seed, progress
        As in :func:`sample_counts` (paper: ``n = 10_000``).
    alpha : float
        Error probability in (0, 1) (paper: 0.05).

    Returns
    -------
    torch.Tensor
        int64 (B,) on the device of ``x``.

    >>> model = build("mlp", "digits", width=2)
    >>> predict(model, torch.rand(2, 1, 8, 8), k=10, n=100).shape
    torch.Size([2])
    """
    alpha = check_probability(alpha, "alpha")
    counts = sample_counts(model, x, n, k=k, batch_size=batch_size, seed=seed, progress=progress)
    return _sampling.predict_counts(counts, alpha).to(x.device)


def certify(model, x, *, k: int, n0: int = DEFAULT_N0, n: int = DEFAULT_N, alpha: float = DEFAULT_ALPHA,
            batch_size: int = 1000, seed=0, progress: bool | None = None, round_to_grid: bool = False) -> Certificate:
    r"""CERTIFY for randomized ablation: a class and a certified number of pixels for every input.

    For each image :math:`x` with :math:`d = HW` pixels:

    1. draw ``n0`` ablated copies and let :math:`\hat c_A` be the most frequent class
       (lower index on a tie);
    2. draw ``n`` *fresh* copies (the same stream, continued) and count :math:`n_A`, the votes for :math:`\hat c_A`;
    3. :math:`\underline{p_A}` = :func:`robustlab.stats.clopper_pearson` :math:`(n_A, n, \alpha)`, one-sided;
    4. abstain if :math:`\underline{p_A} \le 1/2`; else return :math:`\hat c_A` and the largest
       :math:`\rho` with :math:`\underline{p_A} - \Delta(\rho) > 1/2` (:func:`certified_radius`).

    Guarantee: with probability at least :math:`1 - \alpha` over the sampling, a returned
    class equals :math:`g(x)` and :math:`g(x') = g(x)` for every :math:`x'` that differs from
    :math:`x` in at most ``radius`` pixels (any values, all channels of a pixel).

    Parameters
    ----------
    model : torch.nn.Module
        Base classifier on ablated inputs (B, C + 1, H, W) (:class:`AblatedClassifier`).
    x : torch.Tensor
        Images (B, C, H, W) in [0, 1].
    k : int
        Pixels kept, ``1 <= k <= H * W`` (paper: 45 of MNIST's 784; digits: :data:`DIGITS_K`).
    n0, n : int
        Selection and estimation copies per input (paper: 1000 and 10,000).
    alpha : float
        Failure probability of each certificate (paper: 0.05).
    batch_size, seed, progress
        As in :func:`sample_counts`.
    round_to_grid : bool
        Round :math:`\underline{p_A}` up to a multiple of :math:`1/\binom dk` (:func:`certified_radius`).

    Returns
    -------
    Certificate
        Method ``"ablation"``, unit ``"pixels (L0)"``, int64 radii; statistics ``pA_lower``,
        ``count``, ``k``, ``d``, ``n0``, ``n``.

    >>> model = build("mlp", "digits", width=2)
    >>> cert = certify(model, torch.rand(2, 1, 8, 8), k=10, n0=10, n=100, alpha=0.05)
    >>> cert.radius.dtype, cert.n
    (torch.int64, 100)
    """
    d, k = _check_common(model, x, k, batch_size)
    check_positive_int(n0, "n0")
    check_positive_int(n, "n")
    alpha = check_probability(alpha, "alpha")
    with _sampling.Sampler(model, x, AblationNoise(k), mode="counts", seed=seed, batch_size=batch_size,
                           progress=progress, desc="ablation: certify", total=x.shape[0] * (n0 + n)) as sampler:
        selection = sampler.draw(n0).cpu()
        estimation = sampler.draw(n).cpu()
    return certify_counts(selection, estimation, d=d, k=k, alpha=alpha, round_to_grid=round_to_grid)


def _check_count_table(t, name):
    t = _sampling._check_count_table(t, name)
    sums = t.sum(1)
    if t.shape[0] == 0 or bool((sums != sums[0]).any()) or int(sums[0]) < 1:
        raise ValueError(f"every row of {name} must sum to the same number of samples >= 1")
    return t, int(sums[0])


def certify_counts(selection: torch.Tensor, estimation: torch.Tensor, *, d: int, k: int,
                   alpha: float = DEFAULT_ALPHA, round_to_grid: bool = False) -> Certificate:
    r"""CERTIFY's decision from its two vote tables (steps 1, 3 and 4 of :func:`certify`).

    >>> sel, est = torch.tensor([[9, 1], [5, 5]]), torch.tensor([[10_000, 0], [5_000, 5_000]])
    >>> cert = certify_counts(sel, est, d=64, k=10, alpha=0.05)
    >>> cert.prediction.tolist(), cert.radius.tolist()
    ([0, -1], [3, 0])
    """
    d, k = _check_dk(d, k)
    dec = _sampling.certify_counts(selection, estimation, alpha)
    p_lower, count, n0, n, alpha = dec.pA_lower, dec.count, dec.n0, dec.n, float(alpha)
    rho = torch.from_numpy(np.asarray(certified_radius(p_lower.numpy(), d, k, round_to_grid=round_to_grid)))
    certified = (dec.prediction != ABSTAIN) & (rho >= 0)  # rounding to the grid can undo p_lower > 1/2
    prediction = torch.where(certified, dec.prediction, torch.full_like(dec.prediction, ABSTAIN))
    radius = torch.where(certified, rho, torch.zeros_like(rho))
    return Certificate(prediction, radius, UNITS["l0"], "ablation", alpha,
                       {"pA_lower": p_lower, "count": count, "k": k, "d": d, "n0": n0, "n": n})


# =========================================================================== exact (tiny images)


def exact_counts(model, x, *, k: int, batch_size: int = 1000, progress: bool | None = None) -> torch.Tensor:
    r"""The base classifier's votes on *every* kept-pixel set of size ``k``: int64 (B, K) counts
    summing to :math:`\binom dk`, so :math:`p_c(x) = ` ``counts[:, c]`` :math:`/\binom dk` exactly.

    For tiny images only (at most two million subsets; :class:`AllAblations`).

    >>> model = build("mlp", "digits", width=2)
    >>> exact_counts(model, torch.rand(1, 1, 8, 8), k=2).sum().item() == n_subsets(64, 2)
    True
    """
    _check_common(model, x, k, batch_size)
    family = AllAblations(x.shape[2:], k)
    return _sampling.enumerate_votes(model, x, family, mode="counts", batch_size=batch_size, progress=progress,
                                     desc="ablation: enumerating")


def certify_exact_counts(counts: torch.Tensor, *, d: int, k: int) -> Certificate:
    r"""The deterministic certificate from exact counts over all :math:`N = \binom dk` subsets.

    The prediction is the plurality :math:`c_1` (lower index on a tie), exactly :math:`g(x)`;
    with the runner-up :math:`c_2`, changing :math:`\rho` pixels alters the votes of at most
    :math:`N - \binom{d-\rho}k` subsets (those meeting the changed pixels), each moving the gap
    by at most 2, so the radius is the largest :math:`\rho` with

    .. math:: n_{c_1} - n_{c_2} - [c_2 < c_1] \ge 2\,\Big(N - \binom{d-\rho}{k}\Big).

    >>> cert = certify_exact_counts(torch.tensor([[15, 0], [8, 7]]), d=6, k=2)
    >>> cert.prediction.tolist(), cert.radius.tolist(), cert.deterministic
    ([0, 0], [1, 0], True)
    """
    counts, total = _check_count_table(counts, "counts")
    d, k = _check_dk(d, k)
    n = math.comb(d, k)
    if total != n:
        raise ValueError(f"counts must sum to C(d, k) = {n} (one vote per subset), got {total}")
    if counts.shape[1] == 1:
        counts = torch.cat([counts, torch.zeros_like(counts)], 1)
    top = _votes.top_two(counts)
    gap = (top.n1 - top.n2 - (top.c2 < top.c1).long()).tolist()
    survivors = _survivors(d, k, d)
    radius = []
    for g in gap:
        rho = 0
        while rho < d and g >= 2 * (n - survivors[rho + 1]):
            rho += 1
        radius.append(rho)
    return Certificate(top.c1, torch.tensor(radius, dtype=torch.long), UNITS["l0"], "ablation-exact", None,
                       {"counts": counts, "k": k, "d": d, "n_subsets": n})


def certify_exact(model, x, *, k: int, batch_size: int = 1000, progress: bool | None = None) -> Certificate:
    """The exact, deterministic ablation certificate of tiny images: :func:`exact_counts`, then
    :func:`certify_exact_counts`.

    >>> from robustlab.oracles import Constant
    >>> cert = certify_exact(AblatedClassifier(Constant(3, n_classes=4)), torch.rand(2, 1, 2, 3), k=2)
    >>> cert.prediction.tolist(), cert.radius.tolist()  # 15 of 15 votes: 1 pixel, whatever f is
    ([3, 3], [1, 1])
    """
    counts = exact_counts(model, x, k=k, batch_size=batch_size, progress=progress).cpu()
    return certify_exact_counts(counts, d=x.shape[2] * x.shape[3], k=k)


# =========================================================================== attacks and training


class SmoothedSurrogate(nn.Module):
    r"""A differentiable stand-in for the smoothed classifier, for attacks on plain images.

    Logits :math:`\log \frac1M \sum_{j \le M} \mathrm{softmax}\big(f(\mathrm{ablate}(x, S_j))\big)`
    over ``n_masks`` kept-pixel sets drawn once from ``seed``: a gradient attack on it
    (e.g. :func:`robustlab.attacks.sparse_l0`) targets the vote of the ablated copies.

    >>> f = SmoothedSurrogate(build("mlp", "digits", width=2), k=10, n_masks=8)
    >>> f(torch.rand(3, 1, 8, 8)).shape
    torch.Size([3, 10])
    """

    def __init__(self, model: nn.Module, k: int, *, n_masks: int = 128, spatial=None, seed: int = 0):
        super().__init__()
        self.model = check_model(model)
        self.k = check_positive_int(k, "k")
        n_masks = check_positive_int(n_masks, "n_masks")
        if spatial is None:  # the profile's images
            from .. import config
            spatial = _data.info(config.profile().dataset).shape[1:]
        gen = torch.Generator().manual_seed(check_seed(seed))
        self.register_buffer("masks", random_masks(n_masks, spatial, self.k, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[2:]) != tuple(self.masks.shape[1:]):
            raise ValueError(f"x must be images (B, C, {self.masks.shape[1]}, {self.masks.shape[2]}), "
                             f"got shape {tuple(x.shape)}")
        b, m = x.shape[0], self.masks.shape[0]
        z = ablate(x.repeat_interleave(m, 0), self.masks.repeat(b, 1, 1))
        probs = self.model(z).softmax(1).view(b, m, -1).mean(1)
        return probs.clamp_min(1e-12).log()


@dataclasses.dataclass(frozen=True)
class AblationLoss:
    r"""Training on ablated inputs: the cross-entropy of :math:`f(\mathrm{ablate}(x, S))`, ``k`` pixels kept.

    ``shared_mask=False`` draws a kept set per example; ``True`` uses one kept set for the
    whole batch, as the paper's training code does (on the 8x8 digits it trains to a lower
    accuracy in the same number of epochs). Randomness comes from torch's global generator,
    which :func:`robustlab.train.fit` seeds.

    >>> loss, logits = AblationLoss(10)(build("mlp", "digits", width=2), torch.rand(4, 1, 8, 8),
    ...                                 torch.tensor([0, 1, 2, 3]))
    >>> logits.shape
    torch.Size([4, 10])
    """

    k: int
    shared_mask: bool = False

    def __post_init__(self):
        check_positive_int(self.k, "k")
        if not isinstance(self.shared_mask, bool):
            raise TypeError(f"shared_mask must be True or False, got {type(self.shared_mask).__name__}")

    def ablated(self, x: torch.Tensor) -> torch.Tensor:
        """One draw of the ablated batch (B, C + 1, H, W)."""
        if x.dim() != 4:
            raise ValueError(f"x must be images (B, C, H, W), got shape {tuple(x.shape)}")
        mask = random_masks(1 if self.shared_mask else x.shape[0], x.shape[2:], self.k, device=x.device)
        if self.shared_mask:
            mask = mask.expand(x.shape[0], *mask.shape[1:])
        return ablate(x, mask)

    def __call__(self, model, x, y):
        logits = model(self.ablated(x))
        return F.cross_entropy(logits, y), logits


def default_k(dataset: str | None = None) -> int:
    """The number of kept pixels :func:`base_model` trains with on ``dataset`` (default: the profile's).

    >>> default_k("digits"), default_k("mnist")
    (10, 45)
    """
    from .. import config

    name = _data.info(dataset or config.profile().dataset).name
    if name not in DEFAULT_K:
        raise ValueError(f"no default k for the data set {name!r}: pass k explicitly (defaults exist for "
                         f"{sorted(DEFAULT_K)})")
    return DEFAULT_K[name]


def base_model(k: int | None = None, *, dataset: str | None = None, arch: str | None = None, width: int | None = None,
               epochs: int | None = None, lr: float | None = None, shared_mask: bool = False,
               encoding: str = "channels", seed: int = 0, device=None, progress: bool | None = None,
               cache: bool = True):
    r"""A base classifier trained on ablated inputs (``k`` pixels kept) on the profile's data (cached).

    :func:`build`'s :class:`AblatedClassifier` of the profile's architecture, trained by
    :func:`robustlab.train.fit` with :class:`AblationLoss` ``(k, shared_mask)`` at the
    profile's batch size and learning rate for ``epochs`` (default: five times the profile's,
    150 on the digits, since every step shows each example through ``k`` of its ``d``
    pixels); made by :func:`robustlab.zoo.profile_model`. Every argument has a default, so
    ``base_model()`` (``k =`` :func:`default_k`: 10 on the digits, 45 on MNIST) is a zoo recipe.

    Returns
    -------
    robustlab.train.Trained
        ``(model, history)``, the model in eval mode.
    """
    from .. import config
    from ..zoo import loss_trained_model

    prof = config.profile()
    meta = _data.info(dataset or prof.dataset)
    k = default_k(meta.name) if k is None else check_positive_int(k, "k")
    loss = AblationLoss(k, shared_mask=shared_mask)
    _check_dk(meta.shape[1] * meta.shape[2], k)
    epochs = 5 * prof.epochs if epochs is None else check_positive_int(epochs, "epochs")

    def make(arch, dataset, *, width, seed):
        return build(arch, dataset, width=width, seed=seed, encoding=encoding)

    return loss_trained_model(loss, desc=f"ablation training (k={k}) on {meta.name}", dataset=meta.name, arch=arch,
                              width=width, epochs=epochs, lr=lr, seed=seed, device=device, progress=progress,
                              cache=cache, build=make)
