r"""Deterministic certificates for fractional :math:`\ell_p` threats, :math:`0 < p < 1`, on
quantized inputs (Levine and Feizi, *Provable adversarial robustness for fractional Lp
threat models*, AISTATS 2022, arXiv 2203.08945).

**Threat.** The :math:`\ell_p^p` distance :math:`d_p(x, x') = \sum_i |x_i - x'_i|^p`
(a metric for :math:`0 < p < 1`; the quasi-norm is its :math:`1/p`-th power) between
inputs on the grid :math:`\{0, 1/q, \dots, 1\}`. Certified radii here are in :math:`d_p`
units (unit ``UNITS["lp"]``, with ``p`` in the statistics; ``radius_quasinorm`` holds the
:math:`1/p`-th power).

**Construction.** DSSN (:mod:`robustlab.smoothing.l1`) cuts every coordinate with one
group of :math:`L` offsets of period :math:`L` grid steps; a change of :math:`j` grid steps
of one coordinate alters :math:`\min(j, L)` of the :math:`L` votes, a *linear* cost. Mixing
groups of several periods makes that cost concave: with :math:`m_\Lambda` groups of period
:math:`\Lambda` (each contributing its :math:`\Lambda` offsets, positions
:math:`r = 0..\Lambda-1`) and ``ablations`` positions that never cut [0, 1], all laid
in one cyclic list of :math:`N = \sum_\Lambda \Lambda m_\Lambda + \text{ablations}` positions
under one random template (:class:`~robustlab.smoothing.l1.SplitFamily`), a change of
:math:`j` steps of one coordinate alters at most

.. math:: c(j) = \sum_\Lambda m_\Lambda \min(j, \Lambda)

of the :math:`N` votes (each of the :math:`j` half-grid points crossed is a cut of one
position per group, and a group has only :math:`\Lambda` positions). Summing over the
coordinates, a perturbation :math:`x \to x'` with steps :math:`j_i` alters at most
:math:`C(x, x') = \sum_i c(j_i)` votes (:func:`perturbation_changes`). If
:math:`c(j) \le K (j/q)^p` for every :math:`j`, then :math:`C \le K\,d_p(x, x')`, and since
each altered vote moves the gap by at most 2, the plurality class (lower index on a tie)
is unchanged whenever

.. math::

    d_p(x, x') \le R = \frac1K \Big\lfloor \frac{n_{c_1} - n_{c_2} - [c_2 < c_1]}{2} \Big\rfloor,
    \qquad K = \max_{1 \le j \le q} c(j)\,(q/j)^p,

deterministically (:func:`certify_fractional`). :math:`K` is computed exactly from the
integers :math:`m_\Lambda` (:meth:`ConcaveDesign.lipschitz`), so the certificate never
trusts the solver that chose them. The same bound holds for every metric
:math:`\sum_i \phi(|\delta_i|)` with :math:`c(j) \le K\phi(j/q)`: any sum of concave
functions of the coordinates.

**Choosing the periods** (:func:`solve_design`) is a small integer program over
:math:`m_1, \dots, m_q \in \mathbb Z_{\ge 0}` for a sample budget :math:`B`: make
:math:`c(j)` track :math:`B (j/q)^p` from below as closely as possible,

.. math::

    \min_{m, y}\; y \quad\text{s.t.}\quad c(j) \le B (j/q)^p, \quad
    B (j/q)^p - c(j) \le B y \;\;(j = 1..q), \quad \sum_\Lambda \Lambda m_\Lambda \le B,

solved with HiGHS through :func:`scipy.optimize.milp` (the paper solves the same
feasibility problem for :math:`q = 255` with a gap of 0.02). The design is then padded with
ablated positions to :math:`N = \lceil sB \rceil` samples; the scale :math:`s \ge 1` (the
paper's :math:`\alpha`) leaves :math:`K \le B` unchanged and lets the gap, hence the
radius, grow up to :math:`N / (2K) \approx s/2`, at the price of more ablated coordinates.

**Baseline.** On [0, 1], :math:`|\delta_i|^p \ge |\delta_i|` and
:math:`\|\delta\|_1 \le d_p(\delta)^{1/p}`, so a DSSN L1 radius :math:`r` certifies
:math:`d_p \le \max(r, r^p)` (:func:`dssn_lp_radius`; in quasi-norm units
:math:`\max(r^{1/p}, r)`).

Examples
--------
>>> design = solve_design(4, 0.5, budget=12)
>>> design.n_samples, round(design.lipschitz(0.5), 3), bool((design.change_counts()[1:] <= 12 * (np.arange(1, 5) / 4) ** 0.5).all())
(12, 12.0, True)
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from .. import votes as _votes
from ..certificates import UNITS, Certificate
from .._validate import (check_images, check_interval, check_model, check_positive, check_positive_int, check_seed,
                         check_tensor)
from . import sampling as _sampling
from .l1 import SplitFamily, _grid_index, check_quantized

__all__ = [
    "UNIT",
    "ConcaveDesign",
    "solve_design",
    "lpp_distance",
    "perturbation_changes",
    "dssn_lp_radius",
    "fractional_counts",
    "certify_fractional_counts",
    "certify_fractional",
    "FractionalSplitLoss",
    "base_model",
]

UNIT = UNITS["lp"]

_SAFETY = 1.0 + 1e-12  # K is rounded up by this factor so that float rounding never enlarges a radius


@dataclasses.dataclass(frozen=True)
class ConcaveDesign:
    r"""A multiset of split periods on the grid ``q``: ``widths = ((period, multiplicity), ...)``
    groups plus ``ablations`` positions that never cut [0, 1] (see the module docstring).

    >>> d = ConcaveDesign(4, ((1, 2), (4, 1)), ablations=2)
    >>> d.n_samples, d.change_counts().tolist(), round(d.lipschitz(0.5), 6)
    (8, [0, 3, 4, 5, 6], 6.0)
    """

    q: int
    widths: tuple
    ablations: int = 0

    def __post_init__(self):
        check_positive_int(self.q, "q")
        pairs = tuple((int(w), int(m)) for w, m in self.widths)
        if not pairs or any(w < 1 or w > self.q or m < 0 for w, m in pairs) or sum(m for _, m in pairs) < 1:
            raise ValueError(f"widths must be (period, multiplicity) pairs with 1 <= period <= q = {self.q}, "
                             f"multiplicities >= 0 and at least one group, got {self.widths}")
        object.__setattr__(self, "widths", tuple(sorted(p for p in pairs if p[1] > 0)))
        check_positive_int(self.ablations, "ablations", allow_zero=True)

    @property
    def n_samples(self) -> int:
        """N: the number of positions (votes, forward passes) per input."""
        return sum(w * m for w, m in self.widths) + self.ablations

    def change_counts(self) -> np.ndarray:
        r""":math:`c(j) = \sum_\Lambda m_\Lambda \min(j, \Lambda)` for ``j = 0..q`` (int64): the most
        votes a change of ``j`` grid steps of one coordinate can alter."""
        j = np.arange(self.q + 1)
        return sum(m * np.minimum(j, w) for w, m in self.widths).astype(np.int64)

    def lipschitz(self, p: float) -> float:
        r""":math:`K = \max_j c(j)(q/j)^p`: altered votes per unit of :math:`d_p` (rounded up)."""
        p = check_interval(p, "p", 0.0, 1.0, low_open=True)
        j = np.arange(1, self.q + 1, dtype=np.float64)
        return float(np.max(self.change_counts()[1:] * (self.q / j) ** p)) * _SAFETY

    def family(self, seed: int = 0) -> SplitFamily:
        """The :class:`~robustlab.smoothing.l1.SplitFamily` of the design (template from ``seed``)."""
        residues, periods = [], []
        for w, m in self.widths:
            for _ in range(m):
                residues.extend(range(w))
                periods.extend([w] * w)
        residues.extend([self.q] * self.ablations)  # cuts at q + 1/2 + (q + 1)Z: none inside [0, q]
        periods.extend([self.q + 1] * self.ablations)
        return SplitFamily(residues, periods, self.q, seed=seed)


def solve_design(q: int, p: float, budget: int, *, s: float = 1.0, time_limit: float = 30.0) -> ConcaveDesign:
    r"""Choose the periods by the integer program of the module docstring (scipy's ``milp``).

    Minimizes the largest gap :math:`y` between :math:`c(j)/B` and :math:`(j/q)^p` with
    :math:`c(j) \le B (j/q)^p` (a small bonus for using more of the budget breaks ties), then
    pads with ablated positions to :math:`N = \lceil sB \rceil`.

    Parameters
    ----------
    q : int
        The grid.
    p : float
        In (0, 1).
    budget : int
        :math:`B`, the bound on :math:`c(q)` and the Lipschitz target; at least ``q ** p``
        rounded up, so that :math:`c(1) \ge 1` is possible.
    s : float
        Padding scale :math:`\ge 1`.
    time_limit : float
        Seconds for the solver; the best design found is used (its :math:`K` is exact anyway).

    Returns
    -------
    ConcaveDesign

    Examples
    --------
    >>> d = solve_design(16, 0.5, budget=100)
    >>> d.n_samples, d.lipschitz(0.5) <= 100 * (1 + 1e-9)
    (100, True)
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    q = check_positive_int(q, "q")
    p = check_interval(p, "p", 0.0, 1.0, low_open=True, high_open=True)
    budget = check_positive_int(budget, "budget")
    if budget < math.ceil(q ** p - 1e-9):
        raise ValueError(f"budget must be at least q ** p = {q ** p:.4g} so that one group fits, got {budget}")
    s = check_interval(s, "s", 1.0, math.inf)
    check_positive(time_limit, "time_limit")
    j = np.arange(1, q + 1, dtype=np.float64)
    periods = np.arange(1, q + 1, dtype=np.float64)
    target = budget * (j / q) ** p
    change = np.minimum(j[:, None], periods[None, :])  # change[j-1, w-1] = min(j, w)
    n = q + 1  # m_1..m_q, then y
    a_le = np.zeros((q, n))
    a_le[:, :q] = change
    a_gap = np.zeros((q, n))
    a_gap[:, :q] = change
    a_gap[:, q] = budget  # c(j) + B y >= target
    a_sum = np.zeros((1, n))
    a_sum[0, :q] = periods
    constraints = [LinearConstraint(a_le, -np.inf, np.floor(target + 1e-9)),
                   LinearConstraint(a_gap, target, np.inf),
                   LinearConstraint(a_sum, 0, budget)]
    cost = np.zeros(n)
    cost[q] = 1.0
    cost[:q] = -1e-4 * periods / budget
    integrality = np.ones(n)
    integrality[q] = 0
    res = milp(cost, constraints=constraints, integrality=integrality,
               bounds=Bounds(np.zeros(n), np.r_[np.full(q, float(budget)), 1.0]),
               options={"time_limit": float(time_limit)})
    if res.x is None:
        raise RuntimeError(f"the integer program found no design for q={q}, p={p}, budget={budget}: {res.message}")
    m = np.round(res.x[:q]).astype(np.int64)
    design = ConcaveDesign(q, tuple((w, int(k)) for w, k in zip(range(1, q + 1), m) if k > 0))
    used = design.n_samples
    return ConcaveDesign(q, design.widths, ablations=max(0, int(math.ceil(s * budget - 1e-9)) - used))


# --------------------------------------------------------------------------- distances


def lpp_distance(x: torch.Tensor, x2: torch.Tensor, p: float) -> torch.Tensor:
    r""":math:`d_p(x, x') = \sum_i |x_i - x'_i|^p` per input (float64, (B,)).

    >>> lpp_distance(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.25, 1.0]]), 0.5).tolist()
    [1.5]
    """
    check_tensor(x, "x")
    check_tensor(x2, "x2")
    if x.shape != x2.shape:
        raise ValueError(f"x and x2 must have one shape, got {tuple(x.shape)} and {tuple(x2.shape)}")
    p = check_interval(p, "p", 0.0, 1.0, low_open=True)
    return (x.double() - x2.double().to(x.device)).abs().pow(p).flatten(1).sum(1)


def perturbation_changes(x: torch.Tensor, x2: torch.Tensor, design: ConcaveDesign) -> torch.Tensor:
    r"""The most votes the move :math:`x \to x'` can alter, :math:`\sum_i c(|a_i - a'_i|)` with grid
    values :math:`a = qx` (int64, (B,)); the prediction holds while it is at most the
    certificate's ``changes``.

    >>> perturbation_changes(torch.zeros(1, 2), torch.tensor([[0.25, 1.0]]), ConcaveDesign(4, ((1, 2), (4, 1)))).tolist()
    [9]
    """
    if not isinstance(design, ConcaveDesign):
        raise TypeError(f"design must be a ConcaveDesign, got {type(design).__name__}")
    a = _grid_index(x, design.q, "x")
    b = _grid_index(x2.to(x.device), design.q, "x2")
    if a.shape != b.shape:
        raise ValueError(f"x and x2 must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    table = torch.from_numpy(design.change_counts()).to(a.device)
    return table[(a - b).abs()].flatten(1).sum(1)


def dssn_lp_radius(l1_radius, p: float):
    r"""The :math:`d_p` radius a DSSN L1 radius :math:`r` implies on [0, 1]: :math:`\max(r, r^p)`.

    >>> dssn_lp_radius(torch.tensor([0.25, 2.0]), 0.5).tolist()
    [0.5, 2.0]
    """
    p = check_interval(p, "p", 0.0, 1.0, low_open=True)
    r = l1_radius.double() if isinstance(l1_radius, torch.Tensor) else torch.as_tensor(l1_radius, dtype=torch.float64)
    if r.numel() and bool((r < 0).any()):
        raise ValueError("l1_radius must be >= 0")
    return torch.maximum(r, r.pow(p))


# --------------------------------------------------------------------------- certificates


def fractional_counts(model, x, design: ConcaveDesign, *, seed: int = 0, batch_size: int = 1000,
                      progress: bool | None = None) -> torch.Tensor:
    """The vote counts (B, K) of the base classifier over the design's ``n_samples`` positions."""
    check_model(model)
    check_images(x, "x")
    if not isinstance(design, ConcaveDesign):
        raise TypeError(f"design must be a ConcaveDesign (see solve_design), got {type(design).__name__}")
    check_quantized(x, design.q, "x")
    return _sampling.enumerate_votes(model, x, _family(design, seed), mode="counts", batch_size=batch_size,
                                     progress=progress, desc="smoothing: fractional positions")


def certify_fractional_counts(counts: torch.Tensor, design: ConcaveDesign, *, p: float,
                              stats: dict | None = None) -> Certificate:
    r"""The certificate from vote counts (B, K): plurality (lower index on a tie),
    ``changes`` :math:`= \lfloor (n_{c_1} - n_{c_2} - [c_2 < c_1]) / 2 \rfloor` and the radius
    ``changes / design.lipschitz(p)`` in :math:`d_p` units.

    >>> d = ConcaveDesign(4, ((1, 2), (4, 1)), ablations=2)
    >>> cert = certify_fractional_counts(torch.tensor([[8, 0]]), d, p=0.5)
    >>> cert.changes.tolist(), round(float(cert.radius[0]), 4), round(float(cert.radius_quasinorm[0]), 4)
    ([4], 0.6667, 0.4444)
    """
    check_tensor(counts, "counts")
    if counts.dim() != 2 or counts.is_floating_point() or counts.dtype == torch.bool:
        raise TypeError(f"counts must be an integer tensor of shape (B, K), got {counts.dtype} {tuple(counts.shape)}")
    if not isinstance(design, ConcaveDesign):
        raise TypeError(f"design must be a ConcaveDesign, got {type(design).__name__}")
    p = check_interval(p, "p", 0.0, 1.0, low_open=True, high_open=True)
    counts = counts.cpu().long()
    if counts.shape[1] == 1:
        counts = torch.cat([counts, torch.zeros_like(counts)], 1)
    top = _votes.top_two(counts)
    changes = _votes.gap_radius(top.n1, top.n2, top.c1, top.c2, per_change=1)
    k = design.lipschitz(p)
    radius = changes.double() / k
    return Certificate(top.c1, radius, UNIT, "fractional", None,
                       {"counts": counts, "changes": changes, "radius_quasinorm": radius.pow(1.0 / p), "p": p,
                        "q": design.q, "lipschitz": k, "n_samples": design.n_samples, **(stats or {})})


def certify_fractional(model, x, *, design: ConcaveDesign, p: float, seed: int = 0, batch_size: int = 1000,
                       progress: bool | None = None) -> Certificate:
    r"""The deterministic :math:`\ell_p^p` certificate (``0 < p < 1``) on grid inputs.

    Evaluates the base classifier on all ``design.n_samples`` positions of every input
    (:func:`robustlab.smoothing.sampling.enumerate_votes`); the plurality class cannot change
    for any grid :math:`x'` with :math:`d_p(x, x') \le` radius (nor for any with
    :func:`perturbation_changes` :math:`\le` ``changes``).

    Parameters
    ----------
    model : torch.nn.Module
        Base classifier trained with :class:`FractionalSplitLoss` of the same design and ``seed``.
    x : torch.Tensor
        Inputs (B, ...) on the grid ``design.q`` (else a ValueError; see :func:`robustlab.smoothing.l1.quantize`).
    design : ConcaveDesign
        The periods (:func:`solve_design`).
    p : float
        The threat's exponent in (0, 1); any p is sound for any design, the design is tuned for one.
    seed, batch_size, progress
        Template seed (as in training), rows per forward pass, progress bar.

    Returns
    -------
    Certificate
        Method ``"fractional"``, unit ``UNITS["lp"]``, ``alpha=None``; statistics ``counts``,
        ``changes``, ``radius_quasinorm``, ``p``, ``q``, ``lipschitz``, ``n_samples``, ``seed``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> cert = certify_fractional(model, torch.zeros(2, 1, 8, 8), design=ConcaveDesign(16, ((4, 2), (16, 1))), p=0.5)
    >>> cert.n_samples, cert.counts.sum(1).tolist(), cert.deterministic
    (24, [24, 24], True)
    """
    counts = fractional_counts(model, x, design, seed=seed, batch_size=batch_size, progress=progress)
    return certify_fractional_counts(counts, design, p=p, stats={"seed": check_seed(seed)})


# --------------------------------------------------------------------------- training


_FAMILIES: dict = {}


def _family(design: ConcaveDesign, seed: int) -> SplitFamily:
    key = (design, int(seed))
    if key not in _FAMILIES:
        _FAMILIES[key] = design.family(seed)
    return _FAMILIES[key]


@dataclasses.dataclass(frozen=True)
class FractionalSplitLoss:
    r"""Training of the base classifier: cross-entropy at one random position per example of the
    design's family (template of ``seed``), inputs on the grid ``design.q``.

    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> loss = FractionalSplitLoss(ConcaveDesign(16, ((4, 2), (16, 1))))
    >>> loss(model, torch.zeros(3, 1, 8, 8), torch.zeros(3, dtype=torch.long))[1].shape
    torch.Size([3, 10])
    """

    design: ConcaveDesign
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.design, ConcaveDesign):
            raise TypeError(f"design must be a ConcaveDesign, got {type(self.design).__name__}")
        check_seed(self.seed)

    def __call__(self, model, x, y):
        family = _family(self.design, self.seed)
        offsets = torch.randint(0, len(family), (x.shape[0],), device=x.device)
        logits = model(family.represent(x, offsets))
        return F.cross_entropy(logits, y), logits


def base_model(p: float = 0.5, q: int | None = None, budget: int = 200, s: float = 1.0, *,
               design: ConcaveDesign | None = None, dataset: str | None = None, arch: str | None = None, width: int | None = None,
               epochs: int | None = None, seed: int = 0, template_seed: int = 0, device=None,
               progress: bool | None = None, cache: bool = True):
    r"""A base classifier for :func:`certify_fractional`, trained on the profile's data (cached).

    ``design`` defaults to ``solve_design(q, p, budget, s=s)``; training is
    :func:`robustlab.train.fit` with :class:`FractionalSplitLoss` at the profile's settings,
    through :func:`robustlab.zoo.profile_model`. ``base_model()`` (p = 1/2, B = 200, ``q =``
    :func:`robustlab.smoothing.l1.default_q`: 16 on the digits) is a zoo recipe.

    Returns
    -------
    robustlab.train.Trained
        ``(model, history)``; the design is ``trained.model.split_design``.
    """
    from ..zoo import loss_trained_model
    from .l1 import default_q

    if design is None:
        design = solve_design(default_q(dataset) if q is None else q, p, budget, s=s)
    trained = loss_trained_model(FractionalSplitLoss(design, seed=template_seed),
                                 desc=f"fractional split training (N={design.n_samples})", dataset=dataset, arch=arch,
                                 width=width, epochs=epochs, seed=seed, device=device, progress=progress, cache=cache,
                                 check_train=lambda train: check_quantized(train.x, design.q, "train.x"))
    trained.model.split_design = design
    return trained
