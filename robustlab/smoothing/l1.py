r"""Smoothing with splitting noise for L1 certificates: SSN and its deterministic twin DSSN
(Levine and Feizi, *Improved, deterministic smoothing for L1 certified robustness*,
ICML 2021, arXiv 2103.10834).

**Splitting noise (SSN).** Each coordinate :math:`x_i \in [0, 1]` is cut by the split
points :math:`s_i + 2\lambda\mathbb Z`, with :math:`s_i \sim U[0, 2\lambda)`; the base
classifier :math:`f` sees, for every coordinate, the centre of the cell of
:math:`[0, 1]` that contains :math:`x_i`,

.. math::

    \tilde x_i = \tfrac12\big(\max(l_i, 0) + \min(l_i + 2\lambda, 1)\big), \qquad
    l_i = s_i + 2\lambda\Big(\Big\lceil \frac{x_i - s_i}{2\lambda} \Big\rceil - 1\Big),

(for :math:`\lambda \ge 1/2` this is :math:`\tilde x_i = ([x_i > s_i] + \min(s_i, 1))/2`).
The smoothed classifier is :math:`g(x) = \arg\max_c P_s(f(\tilde x(x, s)) = c)`.

**The certificate.** Moving :math:`x_i` to :math:`x'_i` changes :math:`\tilde x_i` only if a
split point lies between them, which has probability :math:`|x_i - x'_i| / (2\lambda)`
because :math:`s_i` is uniform; a union bound over the coordinates gives
:math:`P(\tilde x(x, s) \ne \tilde x(x', s)) \le \|x - x'\|_1 / (2\lambda)` for the *same*
:math:`s`, so every class probability moves by at most that much. Hence if the top class
has :math:`p_A > 1/2`, :math:`g(x') = g(x)` for every

.. math:: \|x - x'\|_1 < R = 2\lambda\,(p_A - 1/2),

the radius of uniform additive noise :math:`U[-\lambda, \lambda]^d` (Yang et al., 2020),
but the union bound never used independence: the :math:`s_i` may be arbitrarily
correlated as long as each is uniform. :func:`certify_ssn` estimates :math:`p_A` with a
one-sided Clopper--Pearson bound (the guarantee holds with probability
:math:`\ge 1 - \alpha`); :func:`certify_uniform` is the additive baseline.

**Derandomization (DSSN).** Take one shared offset for all coordinates,
:math:`s_i = (s + v_i) \bmod 2\lambda` with a fixed template :math:`v`. On inputs quantized
to the grid :math:`\{0, 1/q, \dots, 1\}` only the grid gap a split falls in matters, so
:math:`s` takes :math:`L = \lfloor 2\lambda q \rfloor` values: offset
:math:`o \in \{0, \dots, L-1\}` puts coordinate :math:`i`'s splits at
:math:`((t_i + o) \bmod L + 1/2)/q + (L/q)\mathbb Z` (the period becomes :math:`L/q \le
2\lambda`), with a random template :math:`t_i \in \{0..L-1\}` drawn once from ``seed``.
Each half-grid point is a split for exactly one offset, so moving :math:`x_i` by :math:`j`
grid steps changes coordinate :math:`i`'s cell for at most :math:`\min(j, L) \le j`
offsets, and a perturbation of :math:`q\|\delta\|_1` grid steps changes at most that many
of the :math:`L` votes, each moving the gap between the top class :math:`c_1` and the
runner-up :math:`c_2` by at most 2. With vote counts :math:`n_{c_1}, n_{c_2}` the
prediction (plurality, lower class index on a tie) is therefore *deterministically*
constant for every grid :math:`x'` with

.. math::

    \|x - x'\|_1 \le R = \frac1q\Big\lfloor \frac{n_{c_1} - n_{c_2} - [c_2 < c_1]}{2} \Big\rfloor

(:func:`robustlab.votes.gap_radius` with ``per_change = 1``), at the cost of :math:`L`
forward passes (27 at :math:`\lambda = 0.87`, :math:`q = 16`) instead of :math:`10^5`
samples. Inputs *and* adversarial inputs must lie on the grid: a real-valued :math:`x'` can
cross a split at half a grid step and halve the radius. :func:`certify_dssn` therefore
takes the grid ``q`` as an argument and rejects inputs off it (:func:`quantize` puts them
on it). The 8x8 digits take values :math:`v/16`, so ``q = 16`` (or a multiple, e.g. 256)
keeps them exact; the paper's images use ``q = 255``.

Encoding: the paper's :math:`\sigma` is the standard deviation of the equivalent uniform
noise :math:`U[-\lambda, \lambda]`, :math:`\lambda = \sqrt3\,\sigma`
(:func:`lam_from_sigma`). The template (``seed``) must be the same for training
(:class:`SplittingNoiseLoss`, :func:`base_model`) and certification; another seed keeps
the certificate sound but costs accuracy.

Examples
--------
>>> import robustlab as rl
>>> model = rl.models.build("mlp", "digits", width=2)
>>> x = quantize(torch.rand(3, 1, 8, 8), 16)
>>> cert = certify_dssn(model, x, lam=0.5, q=16)
>>> cert.n_offsets, cert.unit, cert.deterministic, cert.counts.sum(1).tolist()
(16, 'L1 pixels', True, [16, 16, 16])
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from .. import models as _models
from .. import votes as _votes
from ..certificates import ABSTAIN, UNITS, Certificate
from .._validate import (check_choice, check_images, check_model, check_positive, check_positive_int,
                         check_probability, check_seed, check_tensor)
from . import sampling as _sampling

__all__ = [
    "DEFAULT_N0",
    "DEFAULT_N",
    "DEFAULT_ALPHA",
    "lam_from_sigma",
    "n_offsets",
    "quantize",
    "check_quantized",
    "split_centres",
    "SplittingNoise",
    "SplitFamily",
    "ssn_radius",
    "predict_ssn",
    "certify_ssn",
    "certify_uniform",
    "dssn_counts",
    "certify_dssn",
    "certify_dssn_counts",
    "SplitSurrogate",
    "SplittingNoiseLoss",
    "GRIDS",
    "default_q",
    "base_model",
]

DEFAULT_N0 = 64
DEFAULT_N = 100_000
DEFAULT_ALPHA = 0.001
KINDS = ("ssn", "dssn", "uniform")


def lam_from_sigma(sigma: float) -> float:
    r"""The half-width :math:`\lambda = \sqrt3\,\sigma` of the uniform noise of standard deviation ``sigma``.

    >>> round(lam_from_sigma(0.5), 4)
    0.866
    """
    return math.sqrt(3.0) * float(check_positive(sigma, "sigma"))


def n_offsets(lam: float, q: int) -> int:
    r"""DSSN's number of offsets :math:`L = \lfloor 2\lambda q \rfloor` (>= 1), one forward pass each.

    >>> n_offsets(lam_from_sigma(0.5), 16), n_offsets(lam_from_sigma(0.5), 255)
    (27, 441)
    """
    lam = check_positive(lam, "lam")
    q = check_positive_int(q, "q")
    levels = int(math.floor(2.0 * lam * q + 1e-9))  # tolerate 2 * lam * q a hair below an integer
    if levels < 1:
        raise ValueError(f"lam must be at least 1 / (2q) = {1 / (2 * q):g} so that one offset exists, got {lam}")
    return levels


# --------------------------------------------------------------------------- the quantization grid


def quantize(x: torch.Tensor, q: int) -> torch.Tensor:
    """Round ``x`` in [0, 1] to the nearest point of the grid ``{0, 1/q, ..., 1}``.

    >>> quantize(torch.tensor([[0.0, 0.26, 0.99]]), 4).tolist()
    [[0.0, 0.25, 1.0]]
    """
    check_images(x, "x", min_dim=1)
    q = check_positive_int(q, "q")
    return torch.round(x * q) / q


def _grid_index(x: torch.Tensor, q: int, name: str = "x") -> torch.Tensor:
    """The integer grid values ``round(q * x)``, after checking ``x`` lies on the grid."""
    a = torch.round(x * q)
    off = (x * q - a).abs()
    if off.numel() and float(off.max()) > 1e-4:
        raise ValueError(f"{name} must lie on the quantization grid {{0, 1/q, ..., 1}} with q = {q} (the "
                         f"deterministic certificate assumes it; the largest distance is {float(off.max()) / q:.3g}): "
                         f"pass quantize({name}, q), or the q the data was quantized with")
    return a.long()


def check_quantized(x: torch.Tensor, q: int, name: str = "x") -> torch.Tensor:
    """Check that ``x`` (values in [0, 1]) lies on the grid ``i / q``; raise a ValueError naming ``name`` if not.

    >>> check_quantized(torch.tensor([[0.5, 0.25]]), 4).tolist()
    [[0.5, 0.25]]
    >>> check_quantized(torch.tensor([[0.3]]), 4)
    Traceback (most recent call last):
    ...
    ValueError: x must lie on the quantization grid {0, 1/q, ..., 1} with q = 4 (the deterministic certificate assumes it; the largest distance is 0.05): pass quantize(x, q), or the q the data was quantized with
    """
    check_images(x, name, min_dim=1)
    q = check_positive_int(q, "q")
    _grid_index(x, q, name)
    return x


# --------------------------------------------------------------------------- splitting noise (SSN)


def split_centres(x: torch.Tensor, s: torch.Tensor, lam: float) -> torch.Tensor:
    r"""The SSN representation: the centre of the cell of [0, 1] that contains each ``x_i``
    when [0, 1] is cut at the points ``s_i + 2 lam Z`` (``s`` broadcasts against ``x``).

    >>> split_centres(torch.tensor([0.2, 0.7]), torch.tensor([0.5, 0.5]), 0.5).tolist()
    [0.25, 0.75]
    """
    period = 2.0 * float(lam)
    hi = s + period * torch.ceil((x - s) / period)
    return 0.5 * ((hi - period).clamp(min=0.0) + hi.clamp(max=1.0))


class SplittingNoise(_sampling.Noise):
    r"""Splitting noise (SSN): independent split offsets :math:`s_i \sim U[0, 2\lambda)` per
    coordinate and copy; each copy is :func:`split_centres` of the input.

    >>> z = SplittingNoise(0.5).sample(torch.tensor([0.2, 0.9]), 4, torch.Generator().manual_seed(0))
    >>> z.shape, bool(((z >= 0) & (z <= 1)).all())
    (torch.Size([4, 2]), True)
    """

    def __init__(self, lam: float):
        self.lam = float(check_positive(lam, "lam"))

    def sample(self, x_i, size, generator):
        s = torch.rand((size, *x_i.shape), generator=generator, device=x_i.device, dtype=x_i.dtype)
        return split_centres(x_i, s.mul_(2.0 * self.lam), self.lam)

    def __repr__(self):
        return f"SplittingNoise(lam={self.lam:g})"


def ssn_radius(p_a, lam: float):
    r"""The certified L1 radius :math:`2\lambda(p_A - 1/2)` of SSN (and of uniform noise) from a
    lower bound ``p_a`` on the top class's probability; <= 0 certifies nothing.

    >>> float(ssn_radius(0.75, 2.0))
    1.0
    """
    lam = check_positive(lam, "lam")
    p = np.asarray(p_a.detach().cpu().numpy() if isinstance(p_a, torch.Tensor) else p_a, dtype=np.float64)
    if p.size and (np.isnan(p).any() or p.min() < 0 or p.max() > 1):
        raise ValueError("p_a must hold probabilities in [0, 1]")
    return 2.0 * lam * (p - 0.5)


def _sampled_certificate(model, x, noise, method, lam, n0, n, alpha, batch_size, seed, progress):
    check_model(model)
    check_images(x, "x")
    check_positive_int(n0, "n0")
    check_positive_int(n, "n")
    alpha = check_probability(alpha, "alpha")
    check_positive_int(batch_size, "batch_size")
    with _sampling.Sampler(model, x, noise, mode="counts", seed=seed, batch_size=batch_size, progress=progress,
                           desc=f"smoothing: certify {method}", total=x.shape[0] * (n0 + n)) as sampler:
        selection = sampler.draw(n0).cpu()
        estimation = sampler.draw(n).cpu()
    d = _sampling.certify_counts(selection, estimation, alpha)
    prediction, p_lower, count = d.prediction, d.pA_lower, d.count
    radius = torch.where(prediction != ABSTAIN, torch.from_numpy(ssn_radius(p_lower, lam)), torch.zeros_like(p_lower))
    return Certificate(prediction, radius, UNITS["l1"], method, alpha,
                       {"pA_lower": p_lower, "count": count, "lam": float(lam), "n0": n0, "n": n})


def certify_ssn(model, x, *, lam: float, n0: int = DEFAULT_N0, n: int = DEFAULT_N, alpha: float = DEFAULT_ALPHA,
                batch_size: int = 1000, seed=0, progress: bool | None = None) -> Certificate:
    r"""CERTIFY for splitting noise: a class and a certified L1 radius for every input.

    ``n0`` samples select the guess :math:`\hat c_A` (plurality, lower index on a tie), ``n``
    fresh samples give the one-sided Clopper--Pearson bound :math:`\underline{p_A}` at level
    ``alpha``; abstain (:data:`ABSTAIN`) if :math:`\underline{p_A} < 1/2`, else radius
    :math:`2\lambda(\underline{p_A} - 1/2)`. Guarantee: with probability at least
    :math:`1 - \alpha`, a returned class equals :math:`g(x)` and :math:`g(x') = g(x)` for every
    :math:`\|x' - x\|_1 <` radius (any :math:`x'`, quantized or not).

    Parameters
    ----------
    model : torch.nn.Module
        Base classifier of the split representation (:func:`base_model` trains one).
    x : torch.Tensor
        Inputs (B, ...) in [0, 1].
    lam : float
        Half the split period, :math:`\lambda > 0` (:func:`lam_from_sigma`).
    n0, n, alpha : int, int, float
        Selection and estimation samples, failure probability (paper: 64, 100,000, 0.001).
    batch_size, seed, progress
        As in :func:`robustlab.smoothing.sampling.sample`: input ``i`` has the noise stream ``seed + i``.

    Returns
    -------
    Certificate
        Method ``"ssn"``, unit ``"L1 pixels"``; statistics ``pA_lower``, ``count``, ``lam``, ``n0``, ``n``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> cert = certify_ssn(model, torch.rand(2, 1, 8, 8), lam=0.5, n0=10, n=100, alpha=0.01)
    >>> cert.method, cert.unit, cert.alpha
    ('ssn', 'L1 pixels', 0.01)
    """
    noise = SplittingNoise(lam)
    return _sampled_certificate(model, x, noise, "ssn", noise.lam, n0, n, alpha, batch_size, seed, progress)


def certify_uniform(model, x, *, lam: float, n0: int = DEFAULT_N0, n: int = DEFAULT_N,
                    alpha: float = DEFAULT_ALPHA, batch_size: int = 1000, seed=0,
                    progress: bool | None = None) -> Certificate:
    r"""The baseline: additive uniform noise :math:`U[-\lambda, \lambda]^d` (not clamped), the
    same CERTIFY and the same L1 radius :math:`2\lambda(\underline{p_A} - 1/2)` (Yang et al.,
    *Randomized smoothing of all shapes and sizes*, ICML 2020, arXiv 2002.08118). Arguments
    and result as in :func:`certify_ssn`, method ``"uniform"``.

    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> certify_uniform(model, torch.rand(2, 1, 8, 8), lam=0.5, n0=10, n=100, alpha=0.01).method
    'uniform'
    """
    noise = _sampling.UniformNoise(lam)
    return _sampled_certificate(model, x, noise, "uniform", noise.width, n0, n, alpha, batch_size, seed, progress)


def predict_ssn(model, x, *, lam: float, n: int = DEFAULT_N, alpha: float = DEFAULT_ALPHA, batch_size: int = 1000,
                seed=0, progress: bool | None = None) -> torch.Tensor:
    r"""PREDICT for splitting noise: the top class of ``n`` samples if the two-sided binomial test
    of the top two counts at :math:`p = 1/2` has p-value :math:`\le \alpha`, else
    :data:`ABSTAIN`; a returned class differs from :math:`g(x)` with probability at most
    :math:`\alpha`.

    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> predict_ssn(model, torch.rand(2, 1, 8, 8), lam=0.5, n=100, alpha=0.01).shape
    torch.Size([2])
    """
    check_model(model)
    check_images(x, "x")
    alpha = check_probability(alpha, "alpha")
    counts = _sampling.sample(model, x, check_positive_int(n, "n"), SplittingNoise(lam), seed=seed,
                              batch_size=batch_size, progress=progress, desc="smoothing: predict ssn")
    return _sampling.predict_counts(counts, alpha).to(x.device)


# --------------------------------------------------------------------------- deterministic splitting


class SplitFamily(_sampling.TransformFamily):
    r"""Deterministic splitting on the grid ``{0, 1/q, ..., 1}``: a cyclic list of ``N``
    *positions*, position ``k`` cutting [0, 1] at the half-grid points
    :math:`(r_k + 1/2 + \Lambda_k\mathbb Z)/q` (residue ``residues[k]``, period
    ``widths[k]`` grid steps). Transform ``o`` (one per position) gives coordinate ``i`` the
    cuts of position :math:`(t_i + o) \bmod N` and returns the centre of the cell holding each
    coordinate; the template :math:`t_i \in \{0..N-1\}` is drawn from ``seed`` (per input
    shape). Over the ``N`` transforms every coordinate meets every position exactly once.

    DSSN is one group: :meth:`dssn` (positions :math:`r = 0..L-1`, all of period ``L``).
    A position whose cuts all miss [0, 1] (``r = q``, period ``q + 1``) ablates the
    coordinate (centre 1/2); fractional-Lp smoothing mixes groups of several periods with
    such positions (:mod:`robustlab.smoothing.fractional`).

    Parameters
    ----------
    residues, widths : sequences of int, length N
        :math:`0 \le r_k < \Lambda_k`, :math:`\Lambda_k \ge 1`.
    q : int
        The grid.
    seed : int
        Seeds the template.

    Examples
    --------
    >>> fam = SplitFamily.dssn(0.5, 4)  # L = 4 offsets, cuts at (o + t_i + 1/2) / 4
    >>> len(fam), fam.apply(torch.tensor([[0.0, 0.5, 1.0]]), 0).shape
    (4, torch.Size([1, 3]))
    """

    def __init__(self, residues, widths, q: int, *, seed: int = 0):
        self.q = check_positive_int(q, "q")
        self.seed = check_seed(seed)
        r = torch.as_tensor(np.asarray(residues), dtype=torch.long).reshape(-1)
        w = torch.as_tensor(np.asarray(widths), dtype=torch.long).reshape(-1)
        if r.numel() == 0 or r.shape != w.shape:
            raise ValueError(f"residues and widths must be non-empty and of one length, got {r.numel()} and {w.numel()}")
        if int(w.min()) < 1:
            raise ValueError("widths must be periods of at least 1 grid step")
        if int(r.min()) < 0 or bool((r >= w).any()):
            raise ValueError("residues must satisfy 0 <= residues[k] < widths[k]")
        self.residues, self.widths = r, w
        # centre of the cell of grid value a (0..q) under position k, in grid units: a lookup table
        a = torch.arange(self.q + 1, dtype=torch.long)[None, :]
        lo = r[:, None] + w[:, None] * torch.div(a - r[:, None] - 1, w[:, None], rounding_mode="floor")
        lo2, hi2 = 2 * lo + 1, 2 * (lo + w[:, None]) + 1  # doubled, so the half-grid cuts are integers
        self._table = (lo2.clamp(min=0) + hi2.clamp(max=2 * self.q)).double() / (4.0 * self.q)
        self._templates: dict = {}
        self._cache: dict = {}

    @classmethod
    def dssn(cls, lam: float, q: int, *, seed: int = 0) -> "SplitFamily":
        """DSSN's family: ``L = n_offsets(lam, q)`` positions ``r = 0..L-1`` of period ``L``."""
        levels = n_offsets(lam, q)
        return cls(np.arange(levels), np.full(levels, levels), q, seed=seed)

    def __len__(self) -> int:
        return int(self.residues.numel())

    def __repr__(self):
        groups = sorted(set(self.widths.tolist()))
        return f"SplitFamily(q={self.q}, positions={len(self)}, periods={groups}, seed={self.seed})"

    def template(self, shape) -> torch.Tensor:
        """The template ``t`` (int64, ``shape``: one entry per coordinate of an input)."""
        shape = tuple(int(s) for s in shape)
        if shape not in self._templates:
            gen = torch.Generator().manual_seed(self.seed)
            self._templates[shape] = torch.randint(0, len(self), shape, generator=gen)
        return self._templates[shape]

    def _tables(self, shape, device, dtype):
        key = (tuple(shape), str(device), dtype)
        if key not in self._cache:
            self._cache[key] = (self.template(shape).to(device), self._table.to(device=device, dtype=dtype))
        return self._cache[key]

    def positions(self, shape, offset) -> torch.Tensor:
        """Which position each coordinate uses under transform ``offset`` (int or (b,) tensor)."""
        t = self.template(shape)
        if isinstance(offset, torch.Tensor):
            return (t[None] + offset.cpu().view(-1, *([1] * len(shape)))) % len(self)
        return (t + int(offset)) % len(self)

    def represent(self, x: torch.Tensor, offset) -> torch.Tensor:
        """Transform ``offset`` (an int, or one per row as a (b,) int64 tensor) of the grid batch ``x``."""
        a = _grid_index(x, self.q)
        template, table = self._tables(x.shape[1:], x.device, x.dtype)
        if isinstance(offset, torch.Tensor):
            offset = offset.to(x.device).view(-1, *([1] * (x.dim() - 1)))
        pos = (template + offset) % len(self)
        return table[pos.expand_as(a), a]

    def apply(self, x, t):
        return self.represent(x, int(t))

    def apply_many(self, x, ts):
        """Transforms ``ts`` of the grid batch ``x``, transform-major: (len(ts) * b, ...)."""
        b = x.shape[0]
        rep = x.unsqueeze(0).expand(len(ts), *x.shape).reshape(-1, *x.shape[1:])
        return self.represent(rep, ts.repeat_interleave(b))


def dssn_counts(model, x, *, lam: float, q: int, seed: int = 0, batch_size: int = 1000,
                progress: bool | None = None) -> torch.Tensor:
    """The vote counts (B, K) of the base classifier over DSSN's ``n_offsets(lam, q)`` offsets of each grid input.

    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> dssn_counts(model, torch.zeros(2, 1, 8, 8), lam=0.5, q=16).sum(1).tolist()
    [16, 16]
    """
    check_model(model)
    check_images(x, "x")
    check_quantized(x, q, "x")
    family = SplitFamily.dssn(lam, q, seed=seed)
    return _sampling.enumerate_votes(model, x, family, mode="counts", batch_size=batch_size, progress=progress,
                                     desc="smoothing: dssn offsets")


def certify_dssn_counts(counts: torch.Tensor, *, q: int, method: str = "dssn", stats: dict | None = None) -> Certificate:
    r"""DSSN's deterministic certificate from vote counts (B, K): the plurality class (lower
    index on a tie) and the L1 radius :math:`\lfloor (n_{c_1} - n_{c_2} - [c_2 < c_1])/2 \rfloor / q`.

    >>> cert = certify_dssn_counts(torch.tensor([[20, 7, 0], [3, 3, 0]]), q=16)
    >>> cert.prediction.tolist(), cert.radius.tolist(), cert.radius_steps.tolist()
    ([0, 0], [0.375, 0.0], [6, 0])
    """
    check_tensor(counts, "counts")
    if counts.dim() != 2 or counts.is_floating_point() or counts.dtype == torch.bool:
        raise TypeError(f"counts must be an integer tensor of shape (B, K), got {counts.dtype} {tuple(counts.shape)}")
    q = check_positive_int(q, "q")
    counts = counts.cpu().long()
    if counts.shape[1] == 1:
        counts = torch.cat([counts, torch.zeros_like(counts)], 1)
    top = _votes.top_two(counts)
    steps = _votes.gap_radius(top.n1, top.n2, top.c1, top.c2, per_change=1)
    return Certificate(top.c1, steps.double() / q, UNITS["l1"], method, None,
                       {"counts": counts, "radius_steps": steps, "q": q, **(stats or {})})


def certify_dssn(model, x, *, lam: float, q: int, seed: int = 0, batch_size: int = 1000,
                 progress: bool | None = None) -> Certificate:
    r"""DSSN: the deterministic L1 certificate of splitting noise on grid inputs.

    Every one of the :math:`L = \lfloor 2\lambda q \rfloor` offsets is evaluated once
    (:func:`robustlab.smoothing.sampling.enumerate_votes` over :meth:`SplitFamily.dssn`); the
    prediction is the plurality of the :math:`L` votes (lower class index on a tie) and, with
    certainty, it does not change for any :math:`x'` on the grid with
    :math:`\|x' - x\|_1 \le` radius :math:`= \lfloor (n_{c_1} - n_{c_2} - [c_2 < c_1])/2 \rfloor / q`.

    Parameters
    ----------
    model : torch.nn.Module
        Base classifier trained on the split representation with the same ``seed``
        (:func:`base_model` with ``kind="dssn"``).
    x : torch.Tensor
        Inputs (B, ...) on the grid ``{0, 1/q, ..., 1}`` (else a ValueError: use :func:`quantize`).
    lam : float
        :math:`\lambda`; the split period is :math:`L/q \le 2\lambda`.
    q : int
        The quantization grid the certificate assumes (16 for the digits, 255 for 8-bit images).
    seed : int
        The template's seed (as in training).
    batch_size, progress
        Rows per forward pass; progress bar.

    Returns
    -------
    Certificate
        Method ``"dssn"``, unit ``"L1 pixels"``, ``alpha=None``; statistics ``counts`` (B, K),
        ``radius_steps`` (grid steps certified), ``q``, ``lam``, ``n_offsets``, ``seed``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> cert = certify_dssn(model, torch.zeros(2, 1, 8, 8), lam=1.0, q=16)
    >>> cert.n_offsets, bool((cert.radius == cert.radius_steps / 16).all())
    (32, True)
    """
    levels = n_offsets(lam, q)
    counts = dssn_counts(model, x, lam=lam, q=q, seed=seed, batch_size=batch_size, progress=progress)
    cert = certify_dssn_counts(counts, q=q, stats={"lam": float(lam), "n_offsets": levels, "seed": seed})
    return cert


class SplitSurrogate(torch.nn.Module):
    r"""A differentiable stand-in for DSSN's vote, for gradient attacks on plain inputs.

    DSSN's prediction is a plurality of base-classifier votes on piecewise-constant
    representations, so its gradient is zero almost everywhere. The surrogate's logits are
    :math:`\log \frac1L \sum_{o < L} \mathrm{softmax}\big(f(\tilde x^{(o)})\big)` over the
    ``L`` offsets of :meth:`SplitFamily.dssn`, the representations taken at
    :func:`quantize` ``(x, q)`` in the forward pass, and in the backward pass the
    straight-through gradient of their average over the offsets,
    :math:`\partial \tilde x_i / \partial x_i \approx q / (2L)` (a cell centre moves by half a
    period when a cut is crossed, which happens for one offset in ``L`` per grid step).

    >>> import robustlab as rl
    >>> f = SplitSurrogate(rl.models.build("mlp", "digits", width=2), lam=0.5, q=16)
    >>> f(torch.rand(3, 1, 8, 8)).shape
    torch.Size([3, 10])
    """

    def __init__(self, model: torch.nn.Module, *, lam: float, q: int, seed: int = 0):
        super().__init__()
        self.model = check_model(model)
        self.family = SplitFamily.dssn(lam, q, seed=seed)
        self.q = self.family.q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = len(self.family)
        grid = quantize(x.detach().clamp(0.0, 1.0), self.q)
        offsets = torch.arange(levels, device=x.device).repeat(x.shape[0])
        z = self.family.represent(grid.repeat_interleave(levels, 0), offsets)
        z = z + (x - x.detach()).repeat_interleave(levels, 0) * (self.q / (2.0 * levels))
        probs = self.model(z).softmax(1).view(x.shape[0], levels, -1).mean(1)
        return probs.clamp_min(1e-12).log()


# --------------------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True)
class SplittingNoiseLoss:
    r"""Training under the smoothing distribution: cross-entropy at the noisy representation.

    * ``kind="ssn"``: a fresh :class:`SplittingNoise` draw per example (inputs any value in [0, 1]);
    * ``kind="dssn"``: one random offset per example of :meth:`SplitFamily.dssn` with the fixed
      template of ``seed`` (inputs on the grid ``q``), how the paper trains DSSN's base classifier;
    * ``kind="uniform"``: additive :math:`U[-\lambda, \lambda]` noise, not clamped (the baseline).

    Randomness comes from torch's global generator, which :func:`robustlab.train.fit` seeds.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> loss, logits = SplittingNoiseLoss(0.5, kind="dssn", q=16)(model, torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
    >>> logits.shape
    torch.Size([4, 10])
    """

    lam: float
    kind: str = "dssn"
    q: int | None = 16
    seed: int = 0

    def __post_init__(self):
        check_positive(self.lam, "lam")
        check_choice(self.kind, "kind", KINDS)
        if self.kind == "dssn":
            if self.q is None:
                raise ValueError("q is required for kind='dssn' (the quantization grid)")
            n_offsets(self.lam, self.q)
        check_seed(self.seed)

    def noisy(self, x: torch.Tensor) -> torch.Tensor:
        """One draw of the training representation of the batch ``x``."""
        if self.kind == "ssn":
            s = torch.rand(x.shape, device=x.device, dtype=x.dtype) * (2.0 * self.lam)
            return split_centres(x, s, self.lam)
        if self.kind == "uniform":
            return x + (torch.rand_like(x) * 2.0 - 1.0) * self.lam
        family = _family_for(self.lam, self.q, self.seed)
        offsets = torch.randint(0, len(family), (x.shape[0],), device=x.device)
        return family.represent(x, offsets)

    def __call__(self, model, x, y):
        logits = model(self.noisy(x))
        return F.cross_entropy(logits, y), logits


_FAMILIES: dict = {}


def _family_for(lam, q, seed) -> SplitFamily:
    key = (float(lam), int(q), int(seed))
    if key not in _FAMILIES:
        _FAMILIES[key] = SplitFamily.dssn(lam, q, seed=seed)
    return _FAMILIES[key]


GRIDS = {"digits": 16, "mnist": 255, "fashion_mnist": 255, "cifar10": 255}
"""The grid ``i / q`` each data set's pixel values lie on: sixteenths for the 8x8 digits, 8-bit images for the rest."""


def default_q(dataset: str | None = None) -> int:
    """The quantization ``q`` of ``dataset``'s pixels (default: the profile's data set), from :data:`GRIDS`.

    >>> default_q("digits"), default_q("mnist")
    (16, 255)
    """
    from .. import config
    from .. import data as _data

    return GRIDS[_data.info(dataset or config.profile().dataset).name]


def base_model(kind: str = "dssn", lam: float = lam_from_sigma(0.5), q: int | None = None, *, dataset: str | None = None,
               arch: str | None = None, width: int | None = None, epochs: int | None = None, seed: int = 0,
               template_seed: int = 0, device=None, progress: bool | None = None, cache: bool = True):
    r"""A base classifier trained under splitting (or uniform) noise on the profile's data (cached).

    The profile's architecture trained with :func:`robustlab.train.fit` and
    :class:`SplittingNoiseLoss` ``(lam, kind, q, template_seed)`` at the profile's learning
    rate, batch size and epochs; made by :func:`robustlab.zoo.profile_model`. Every argument
    has a default, so ``base_model()`` (DSSN, :math:`\sigma = 0.5`, ``q =`` :func:`default_q`:
    16 on the digits, 255 on MNIST) is a zoo recipe.

    Returns
    -------
    robustlab.train.Trained
        ``(model, history)``, the model in eval mode.
    """
    from ..zoo import loss_trained_model

    if kind == "dssn" and q is None:
        q = default_q(dataset)
    loss = SplittingNoiseLoss(float(lam), kind=kind, q=None if kind != "dssn" else q, seed=template_seed)
    check = (lambda train: check_quantized(train.x, q, "train.x")) if kind == "dssn" else None
    return loss_trained_model(loss, desc=f"{kind} training (lam={float(lam):.3g})", dataset=dataset, arch=arch,
                              width=width, epochs=epochs, seed=seed, device=device, progress=progress, cache=cache,
                              check_train=check)
