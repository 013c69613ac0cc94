r"""Wasserstein smoothing (Levine and Feizi, 2019, arXiv 1910.10783): certificates against
transport attacks.

**Threat model.** Wong, Schmidt and Kolter (2019) perturb an image by *moving* its pixel
mass: the distance between :math:`x` and :math:`x'` is the Wasserstein-1 (earth mover's)
distance between their normalized intensities :math:`\mu = x / m(x)`, :math:`m(x) = \sum_p
x_p` (summed over every pixel and channel),

.. math::

    W_1(\mu, \mu') = \min_{P \ge 0} \sum_{p, q} P_{pq}\, \|p - q\|
    \quad \text{s.t.} \quad \sum_q P_{pq} = \mu_p,\ \sum_p P_{pq} = \mu'_q ,

with the L2 distance between pixel positions as ground metric (``ground="l2"``; the
Manhattan distance is ``ground="l1"``). The transport is mass-preserving: :math:`x'` has
the mass of :math:`x`. Mass never moves between channels (each channel is transported on
its own and the costs add up). The radius unit is "mass fraction times pixels": moving 5% of
the mass of an image by one pixel costs 0.05. :func:`wasserstein_distance` computes
:math:`W_1` exactly by linear programming for small images.

**Flows.** On the 4-connected pixel grid put a flow :math:`\phi_e` on every edge: a vertical
edge :math:`(i, j) \to (i + 1, j)` and a horizontal edge :math:`(i, j) \to (i, j + 1)` move
:math:`\phi_e` of mass from the first pixel to the second (a negative flow moves it back).
An image of ``H x W`` pixels and ``C`` channels has :math:`C\,((H - 1) W + H (W - 1))` flow
variables (:func:`flow_size`; 112 for the 8x8 digits); the flow changes the image by its
divergence, :math:`\mu \mapsto \mu + \Delta\phi` (:func:`divergence`, :func:`apply_flow`).

**The lemma.** If :math:`\mu' = \mu + \Delta\phi`, then routing each edge's flow along that
edge is a transport plan of cost :math:`\|\phi\|_1` in the graph distance of the grid, which
is the Manhattan distance between positions, so

.. math::

    W_1^{\ell_2}(\mu, \mu') \;\le\; W_1^{\ell_1}(\mu, \mu') \;=\; \min_{\phi:\ \mu + \Delta\phi = \mu'} \|\phi\|_1
    \;\le\; \sqrt 2\; W_1^{\ell_2}(\mu, \mu'),

the middle equality being the min-cost-flow (Beckmann) form of transport on a graph
(:func:`minimum_flow` solves it) and the last inequality
:math:`\|p - q\|_1 \le \sqrt 2\,\|p - q\|_2` in the plane. Hence every :math:`\mu'` with
:math:`W_1^{\ell_2}(\mu, \mu') < \rho` is :math:`\mu + \Delta\phi` for a flow with
:math:`\|\phi\|_1 < \sqrt 2\,\rho`.

**The smoothed classifier.** With i.i.d. Laplace flows
:math:`\Phi_e \sim \mathrm{Laplace}(0, b)`, :math:`b = \sigma / \sqrt 2` (``sigma`` is the
standard deviation of each flow, in unit-mass units),

.. math::

    g(x) = \arg\max_c\; P\Big(f\big(m(x)\,(\mu + \Delta\Phi)\big) = c\Big),

the image normalized to unit mass (:func:`to_unit_mass`), the random flow applied, the
mass restored (:func:`from_unit_mass`) and the base classifier :math:`f` applied. Negative
pixel values after the noise are allowed (not clamped): the certificate is about exactly
this distribution (:class:`FlowNoise`). As a function of the flow, :math:`\phi \mapsto
g(m(\mu + \Delta\phi))` is Laplace smoothing in flow space, so an L1 certificate of radius
:math:`\rho_\phi` in flow space holds, and by the lemma it certifies

.. math::

    \rho_{W,\ell_2} = \rho_\phi / \sqrt 2, \qquad \rho_{W,\ell_1} = \rho_\phi ,

for every :math:`x'` of the mass of :math:`x`. The flow radius from a lower bound
:math:`\underline{p_A} > 1/2` on the top-class probability is (:func:`flow_radius`)

* ``bound="tight"`` (default): :math:`\rho_\phi = b\,\ln\big(1 / (2(1 - \underline{p_A}))\big)`,
  the exact L1 radius of Laplace smoothing (Teng, Lee and Yang, 2020;
  :func:`robustlab.smoothing.dp.l1_smoothing_radius`);
* ``bound="dp"``: :math:`\rho_\phi = \frac b2 \ln\big(\underline{p_A} / (1 - \underline{p_A})\big)`,
  the differential-privacy bound of the original paper: a Laplace shift of L1 size
  :math:`\rho` changes every probability by at most a factor :math:`e^{\rho / b}`. It is
  never larger: the difference is :math:`-\frac b2 \ln(4 p (1 - p)) \ge 0`.

The baseline ``noise="pixel"`` adds Laplace noise to the unit-mass *pixels*
(:class:`PixelMassNoise`): moving mass :math:`t` between two pixels at distance
:math:`\ge 1` costs at least :math:`t` and changes the L1 norm by at most :math:`2t`, so
:math:`\|\mu - \mu'\|_1 \le 2 W_1(\mu, \mu')` and a pixel-L1 radius :math:`\rho_1` certifies
:math:`\rho_1 / 2` in both ground metrics.

:func:`certify` and :func:`predict` are CERTIFY and PREDICT on the sampling engine
(:mod:`robustlab.smoothing.sampling`; seeded per-input noise streams, counts independent
of the batch size), with one-sided Clopper--Pearson bounds from :mod:`robustlab.stats`;
:func:`certify` returns the shared :class:`~robustlab.certificates.Certificate` (method
``"wasserstein"``, unit ``"Wasserstein (pixel mass)"``). The paper's defaults are
``n0 = 1000``, ``n = 10_000``, ``alpha = 0.05``, ``sigma = 0.02`` on MNIST. Base classifiers
are trained under the same noise (:class:`WassersteinNoiseLoss`, :func:`base_model`).

Examples
--------
>>> mu = torch.tensor([[[0.5, 0.5], [0.0, 0.0]]])             # 1 channel, 2x2, unit mass
>>> phi = torch.tensor([0.25, 0.0, 0.0, 0.0])                   # vertical edges first, then horizontal
>>> apply_flow(mu, phi)
tensor([[[0.2500, 0.5000],
         [0.2500, 0.0000]]])
>>> round(wasserstein_distance(mu, apply_flow(mu, phi)), 6)  # one quarter of the mass, one pixel
0.25
>>> [round(float(r), 4) for r in certified_radius(torch.tensor([0.5, 0.99]), sigma=0.02)]
[0.0, 0.0391]

References: Levine and Feizi, *Wasserstein smoothing: certified robustness against
Wasserstein adversarial attacks*, arXiv 1910.10783 (2019); Wong, Schmidt and Kolter,
*Wasserstein adversarial examples via projected Sinkhorn iterations*, ICML 2019,
arXiv 1902.07906; Teng, Lee and Yang, *l1 adversarial robustness certificates: a randomized
smoothing approach*, 2020.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from .._validate import (check_choice, check_finite, check_images, check_model, check_nonneg, check_positive,
                         check_positive_int, check_probability, check_tensor)
from ..certificates import ABSTAIN, UNITS, Certificate
from . import sampling as _sampling
from .dp import l1_smoothing_radius

__all__ = [
    "ABSTAIN",
    "DEFAULT_N0",
    "DEFAULT_N",
    "DEFAULT_ALPHA",
    "DEFAULT_SIGMA",
    "DIGITS_SIGMA",
    "BOUNDS",
    "GROUNDS",
    "NOISES",
    "to_unit_mass",
    "from_unit_mass",
    "flow_size",
    "divergence",
    "apply_flow",
    "FlowNoise",
    "PixelMassNoise",
    "flow_radius",
    "certified_radius",
    "wasserstein_distance",
    "minimum_flow",
    "sample_counts",
    "predict",
    "certify",
    "certify_counts",
    "WassersteinNoiseLoss",
    "base_model",
]

DEFAULT_N0 = 1000
DEFAULT_N = 10_000
DEFAULT_ALPHA = 0.05
DEFAULT_SIGMA = 0.02
"""The paper's flow standard deviation on MNIST (unit-mass units; MNIST images have a mass of about 100)."""
DIGITS_SIGMA = 0.02
"""The flow standard deviation of the 8x8 digits demonstration (their mass is about 20)."""

BOUNDS = ("tight", "dp")
GROUNDS = ("l2", "l1")
NOISES = ("flow", "pixel")
MASS_TOL = 1e-5


# =========================================================================== unit mass


def _mass(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(1)


def _check_mass(mass: torch.Tensor, name: str) -> None:
    bad = (mass <= 0).nonzero()
    if bad.numel():
        raise ValueError(f"{name}[{int(bad[0, 0])}] has zero total mass: an all-black image has no normalized "
                         "intensities to transport")


def to_unit_mass(x: torch.Tensor):
    r"""The normalized intensities :math:`\mu = x / m(x)` and the masses :math:`m(x) = \sum_p x_p`.

    Parameters
    ----------
    x : torch.Tensor
        Images (B, C, H, W) in [0, 1], each with a positive mass.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``mu`` of the shape of ``x``, every image summing to 1 over its pixels and channels,
        and ``mass`` (B,). :func:`from_unit_mass` is the inverse.

    Examples
    --------
    >>> mu, mass = to_unit_mass(torch.tensor([[[[0.5, 0.25], [0.25, 0.0]]]]))
    >>> mu.flatten().tolist(), mass.tolist()
    ([0.5, 0.25, 0.25, 0.0], [1.0])
    """
    _check_image_batch(x, "x")
    mass = _mass(x)
    _check_mass(mass, "x")
    return x / mass.view(-1, *([1] * (x.dim() - 1))), mass


def from_unit_mass(mu: torch.Tensor, mass: torch.Tensor) -> torch.Tensor:
    r"""Pixel images :math:`x = m\,\mu` from normalized intensities ``mu`` (B, ...) and masses (B,).

    ``mu`` may hold negative values (a noised unit-mass image); nothing is clamped.

    >>> from_unit_mass(torch.full((1, 1, 2, 2), 0.25), torch.tensor([2.0])).flatten().tolist()
    [0.5, 0.5, 0.5, 0.5]
    """
    check_finite(mu, "mu")
    check_finite(mass, "mass")
    if mu.dim() < 2:
        raise ValueError(f"mu must be batch-first (B, C, H, W), got shape {tuple(mu.shape)}")
    if mass.shape != (mu.shape[0],):
        raise ValueError(f"mass must have shape ({mu.shape[0]},), one mass per image of mu, got {tuple(mass.shape)}")
    return mu * mass.to(mu).view(-1, *([1] * (mu.dim() - 1)))


def _check_image_batch(x, name: str) -> torch.Tensor:
    check_images(x, name)
    if x.dim() != 4:
        raise ValueError(f"{name} must be a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[-1] * x.shape[-2] < 2:
        raise ValueError(f"{name} must have at least two pixels per channel to move mass between, "
                         f"got shape {tuple(x.shape)}")
    return x


# =========================================================================== flows


def _check_hw(shape, name: str = "shape"):
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"{name} must end with (H, W), positive sizes, got {shape}")
    h, w = shape[-2:]
    if h * w < 2:
        raise ValueError(f"{name} must have at least two pixels to move mass between, got (H, W) = ({h}, {w})")
    return shape


def flow_size(shape) -> int:
    r"""The number of flow variables of an image of shape (C, H, W) or (H, W): :math:`C\,((H-1)W + H(W-1))`.

    The flow of one image is a vector of this length, channel by channel; within a channel
    the :math:`(H - 1) W` vertical flows come first (edge :math:`(i, j) \to (i + 1, j)`,
    row-major), then the :math:`H (W - 1)` horizontal ones (edge :math:`(i, j) \to (i, j + 1)`).

    >>> flow_size((1, 8, 8)), flow_size((3, 2, 2)), flow_size((1, 2))
    (112, 12, 1)
    """
    shape = _check_hw(shape)
    channels = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    h, w = shape[-2:]
    return channels * ((h - 1) * w + h * (w - 1))


def divergence(flow: torch.Tensor, shape) -> torch.Tensor:
    r"""The change of the image that the flow ``flow`` causes: :math:`\Delta\phi`, of shape ``(..., *shape)``.

    Each edge's flow is taken from its first pixel and added to its second (layout of
    :func:`flow_size`). ``flow`` has shape ``(..., flow_size(shape))``; ``shape`` is (C, H, W)
    (or (H, W)). The result sums to zero in every channel: mass is only moved.

    >>> divergence(torch.tensor([1.0]), (1, 1, 2))  # one horizontal edge, 1x2 image
    tensor([[[-1.,  1.]]])
    """
    check_tensor(flow, "flow")
    shape = _check_hw(shape)
    if flow.dim() < 1 or flow.shape[-1] != flow_size(shape):
        raise ValueError(f"flow must have shape (..., {flow_size(shape)}) for images of shape {shape}, "
                         f"got {tuple(flow.shape)}")
    h, w = shape[-2:]
    lead = flow.shape[:-1]
    per_channel = flow.reshape(*lead, *shape[:-2], -1)
    n_vert = (h - 1) * w
    vert = per_channel[..., :n_vert].reshape(*lead, *shape[:-2], h - 1, w)
    horiz = per_channel[..., n_vert:].reshape(*lead, *shape[:-2], h, w - 1)
    # F.pad counts from the last dimension: (left, right, top, bottom)
    out = F.pad(vert, (0, 0, 1, 0)) - F.pad(vert, (0, 0, 0, 1))
    return out + F.pad(horiz, (1, 0, 0, 0)) - F.pad(horiz, (0, 1, 0, 0))


def apply_flow(mu: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    r""":math:`\mu + \Delta\phi`: images ``mu`` (..., C, H, W) moved by flows ``flow`` (..., flow_size).

    Leading dimensions broadcast (one image and many flows, or one flow per image).

    >>> apply_flow(torch.tensor([[[1.0, 0.0]]]), torch.tensor([0.25]))
    tensor([[[0.7500, 0.2500]]])
    """
    check_tensor(mu, "mu")
    if mu.dim() < 3:
        raise ValueError(f"mu must have shape (..., C, H, W), got {tuple(mu.shape)}")
    return mu + divergence(flow.to(mu), mu.shape[-3:])


class FlowNoise(_sampling.Noise):
    r"""Wasserstein smoothing's randomization of one image: :math:`m(x)\,(\mu + \Delta\Phi)`.

    The image is normalized to unit mass, i.i.d. :math:`\mathrm{Laplace}(0, b)` flows
    (:math:`b = \sigma / \sqrt 2`, drawn by :class:`~robustlab.smoothing.sampling.LaplaceNoise`)
    are applied on every edge of every channel, and the mass is restored. Not clamped.

    Parameters
    ----------
    sigma : float
        Standard deviation of each flow, in unit-mass units.

    Examples
    --------
    >>> copies = FlowNoise(0.1).sample(torch.rand(1, 4, 4), 3, torch.Generator().manual_seed(0))
    >>> copies.shape
    torch.Size([3, 1, 4, 4])
    """

    def __init__(self, sigma: float):
        self.sigma = float(check_positive(sigma, "sigma"))
        self.laplace = _sampling.LaplaceNoise(self.sigma / math.sqrt(2.0))

    def draw_flows(self, size: int, shape, generator, device, dtype) -> torch.Tensor:
        """``size`` flows (size, flow_size(shape)) for images of ``shape``, from ``generator``."""
        return self.laplace.draw((size, flow_size(shape)), generator, device, dtype)

    def sample(self, x_i, size, generator):
        mu, mass = _unit_mass(x_i[None])
        flows = self.draw_flows(size, x_i.shape, generator, x_i.device, x_i.dtype)
        return from_unit_mass(apply_flow(mu, flows), mass.expand(size))

    def __repr__(self):
        return f"FlowNoise(sigma={self.sigma:g})"


class PixelMassNoise(_sampling.Noise):
    r"""The Laplace-pixel baseline: :math:`m(x)\,(\mu + Z)`, i.i.d. :math:`Z_p \sim \mathrm{Laplace}(0, b)`,
    :math:`b = \sigma / \sqrt 2`, on every unit-mass pixel. Not clamped.

    >>> PixelMassNoise(0.1).sample(torch.rand(1, 4, 4), 3, torch.Generator().manual_seed(0)).shape
    torch.Size([3, 1, 4, 4])
    """

    def __init__(self, sigma: float):
        self.sigma = float(check_positive(sigma, "sigma"))
        self.laplace = _sampling.LaplaceNoise(self.sigma / math.sqrt(2.0))

    def sample(self, x_i, size, generator):
        mu, mass = _unit_mass(x_i[None])
        z = self.laplace.draw((size, *x_i.shape), generator, x_i.device, x_i.dtype)
        return from_unit_mass(mu + z, mass.expand(size))

    def __repr__(self):
        return f"PixelMassNoise(sigma={self.sigma:g})"


def _unit_mass(x: torch.Tensor):
    # to_unit_mass without the checks, for inputs already validated
    mass = _mass(x)
    return x / mass.view(-1, *([1] * (x.dim() - 1))), mass


def _noise(noise: str, sigma: float) -> _sampling.Noise:
    check_choice(noise, "noise", NOISES)
    return FlowNoise(sigma) if noise == "flow" else PixelMassNoise(sigma)


# =========================================================================== radii


def flow_radius(p_a, sigma: float, *, bound: str = "tight") -> torch.Tensor:
    r"""The certified L1 radius of Laplace smoothing in flow (or unit-mass pixel) space.

    With :math:`b = \sigma / \sqrt 2` and a lower bound :math:`p` on the top-class
    probability: ``"tight"`` :math:`b\ln\big(1/(2(1-p))\big)` (Teng et al., 2020, through
    :func:`robustlab.smoothing.dp.l1_smoothing_radius`), ``"dp"``
    :math:`\frac b2\ln\big(p/(1-p)\big)` (Levine and Feizi's bound). Both are 0 for
    :math:`p \le 1/2`.

    Parameters
    ----------
    p_a : float or array-like
        Lower bounds on the top-class probability, in [0, 1].
    sigma : float
        Standard deviation of each Laplace variable.
    bound : {"tight", "dp"}

    Returns
    -------
    torch.Tensor
        float64, the shape of ``p_a``.

    Examples
    --------
    >>> flow_radius(0.75, sigma=2 ** 0.5)  # b = 1: ln 2
    tensor(0.6931, dtype=torch.float64)
    >>> flow_radius(0.75, sigma=2 ** 0.5, bound="dp")  # ln(3) / 2
    tensor(0.5493, dtype=torch.float64)
    """
    check_choice(bound, "bound", BOUNDS)
    sigma = float(check_positive(sigma, "sigma"))
    if bound == "tight":
        return l1_smoothing_radius(p_a, "laplace", sigma)
    p = torch.as_tensor(p_a, dtype=torch.float64)
    if bool(torch.isnan(p).any()) or bool((p < 0).any()) or bool((p > 1).any()):
        raise ValueError("p_a must hold probabilities in [0, 1]")
    b = sigma / math.sqrt(2.0)
    radius = 0.5 * b * (torch.log(p.clamp_min(1e-300)) - torch.log((1.0 - p).clamp_min(1e-300)))
    return torch.where(p > 0.5, radius, torch.zeros_like(p))


def _to_wasserstein(noise: str, ground: str) -> float:
    check_choice(noise, "noise", NOISES)
    check_choice(ground, "ground", GROUNDS)
    if noise == "pixel":
        return 0.5
    return 1.0 / math.sqrt(2.0) if ground == "l2" else 1.0


def certified_radius(p_a, sigma: float, *, noise: str = "flow", bound: str = "tight",
                     ground: str = "l2") -> torch.Tensor:
    r"""The certified Wasserstein radius from a lower bound on the top-class probability.

    ``noise="flow"``: :math:`\rho_\phi/\sqrt 2` for the L2 ground metric, :math:`\rho_\phi`
    for the L1 one (the lemma of the module docstring); ``noise="pixel"``: :math:`\rho_1 / 2`
    in both. :math:`\rho` is :func:`flow_radius` ``(p_a, sigma, bound=bound)``.

    Examples
    --------
    >>> [round(float(certified_radius(0.99, 0.02, noise=k, ground=g)), 4)
    ...  for k, g in [("flow", "l2"), ("flow", "l1"), ("pixel", "l2")]]
    [0.0391, 0.0553, 0.0277]
    """
    scale = _to_wasserstein(noise, ground)
    return flow_radius(p_a, sigma, bound=bound) * scale


# =========================================================================== exact transport (LP)


def _check_pair(a, b):
    out = []
    for name, t in (("a", a), ("b", b)):
        check_tensor(t, name)
        check_finite(t, name)
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point image, got dtype {t.dtype}")
        if t.dim() not in (2, 3):
            raise ValueError(f"{name} must be one image (C, H, W) or (H, W), got shape {tuple(t.shape)}")
        if float(t.min()) < 0:
            raise ValueError(f"{name} must be nonnegative (a distribution of mass), got a minimum of {float(t.min()):.4g}")
        total = float(t.double().sum())
        if abs(total - 1.0) > MASS_TOL:
            raise ValueError(f"{name} must have unit mass (sum 1, the normalized intensities of to_unit_mass), "
                             f"got a sum of {total:.6g}")
        out.append(t.detach().double().cpu().reshape(-1, *t.shape[-2:]).numpy())
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    _check_hw(a.shape, "a.shape")
    pa, pb = out
    ma, mb = pa.reshape(pa.shape[0], -1).sum(1), pb.reshape(pb.shape[0], -1).sum(1)
    if np.abs(ma - mb).max() > MASS_TOL:
        raise ValueError(f"a and b must have the same mass in every channel (mass does not move between channels), "
                         f"got {ma.round(6).tolist()} and {mb.round(6).tolist()}")
    # remove rounding below MASS_TOL so that the transport constraints are consistent
    pb = pb * (ma / np.where(mb > 0, mb, 1.0))[:, None, None]
    return pa, pb


def _linprog(c, **kw):
    from scipy.optimize import linprog

    res = linprog(c, bounds=(0, None), method="highs", **kw)
    if res.status != 0:
        raise RuntimeError(f"the transport linear program failed: {res.message}")
    return res


def wasserstein_distance(a: torch.Tensor, b: torch.Tensor, *, ground: str = "l2") -> float:
    r"""The exact :math:`W_1` distance between two unit-mass images, by linear programming.

    Solves the transport problem of the module docstring over plans :math:`P \ge 0`
    (:math:`(HW)^2` variables per channel) with SciPy's HiGHS; channels are transported
    separately and their costs added. Meant for small images (8x8 is 4,096 variables).

    Parameters
    ----------
    a, b : torch.Tensor
        One image each, (C, H, W) or (H, W), nonnegative, total mass 1 (within 1e-5), with
        equal masses channel by channel.
    ground : {"l2", "l1"}
        Ground metric between pixel positions (row, column).

    Returns
    -------
    float

    Examples
    --------
    >>> a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    >>> b = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    >>> round(wasserstein_distance(a, b), 6), round(wasserstein_distance(a, b, ground="l1"), 6)
    (1.414214, 2.0)
    """
    check_choice(ground, "ground", GROUNDS)
    pa, pb = _check_pair(a, b)
    h, w = pa.shape[-2:]
    rows, cols = np.divmod(np.arange(h * w), w)
    dy, dx = rows[:, None] - rows[None, :], cols[:, None] - cols[None, :]
    cost = np.hypot(dy, dx) if ground == "l2" else np.abs(dy) + np.abs(dx)
    from scipy import sparse

    k = h * w
    ones = sparse.csr_matrix(np.ones((1, k)))
    # row sums (mass leaving each pixel of a), then column sums (mass arriving at each pixel of b)
    a_eq = sparse.vstack([sparse.kron(sparse.eye(k), ones), sparse.kron(ones, sparse.eye(k))]).tocsr()
    total = 0.0
    for ca, cb in zip(pa, pb):
        if ca.sum() == 0:
            continue
        res = _linprog(cost.ravel(), A_eq=a_eq, b_eq=np.concatenate([ca.ravel(), cb.ravel()]))
        total += float(res.fun)
    return total


def _divergence_matrix(h: int, w: int):
    """The (HW, E) matrix of :func:`divergence` for one channel."""
    eye = torch.eye(flow_size((h, w)), dtype=torch.float64)
    return divergence(eye, (1, h, w)).reshape(-1, h * w).T.numpy()


def minimum_flow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""A flow of least L1 norm that moves ``a`` into ``b``: :math:`\arg\min \{\|\phi\|_1 : a + \Delta\phi = b\}`.

    Its L1 norm is the exact :math:`W_1` distance with the L1 (Manhattan) ground metric,
    the graph distance of the 4-connected grid (min-cost flow form of transport), and at
    most :math:`\sqrt 2` times :math:`W_1` with the L2 ground metric. Linear programming
    (HiGHS) over :math:`\phi = \phi^+ - \phi^-`.

    Parameters
    ----------
    a, b : torch.Tensor
        As in :func:`wasserstein_distance`.

    Returns
    -------
    torch.Tensor
        float64 flow of length :func:`flow_size` ``(a.shape)`` (channel by channel, layout of
        :func:`flow_size`), with ``apply_flow(a, flow) == b`` up to rounding.

    Examples
    --------
    >>> a = torch.tensor([[0.5, 0.5], [0.0, 0.0]])
    >>> b = torch.tensor([[0.5, 0.0], [0.0, 0.5]])
    >>> phi = minimum_flow(a, b)
    >>> round(float(phi.abs().sum()), 6), round(wasserstein_distance(a, b, ground="l1"), 6)
    (0.5, 0.5)
    """
    pa, pb = _check_pair(a, b)
    h, w = pa.shape[-2:]
    d = _divergence_matrix(h, w)
    e = d.shape[1]
    flows = []
    for ca, cb in zip(pa, pb):
        res = _linprog(np.ones(2 * e), A_eq=np.hstack([d, -d]), b_eq=(cb - ca).ravel())
        flows.append(res.x[:e] - res.x[e:])
    return torch.from_numpy(np.concatenate(flows))


# =========================================================================== sampling and certificates


def _check_common(model, x, sigma, batch_size, noise):
    check_model(model)
    _check_image_batch(x, "x")
    _check_mass(_mass(x), "x")
    check_positive(sigma, "sigma")
    check_positive_int(batch_size, "batch_size")
    check_choice(noise, "noise", NOISES)


def sample_counts(model, x, n: int, sigma: float, *, noise: str = "flow", batch_size: int = 1000, seed=0,
                  progress: bool | None = None) -> torch.Tensor:
    r"""Class counts of the base classifier on ``n`` flow-noised copies of each image.

    ``counts[i, c]`` is the number of draws with :math:`f(m(x_i)(\mu_i + \Delta\Phi_j)) = c`
    (:class:`FlowNoise`; :class:`PixelMassNoise` for ``noise="pixel"``), from input ``i``'s
    seeded stream (``seed + i``) of :func:`robustlab.smoothing.sampling.sample`.

    Parameters
    ----------
    model : torch.nn.Module
        The base classifier (pixel images in, logits out).
    x : torch.Tensor
        Images (B, C, H, W) in [0, 1], each with a positive mass.
    n : int
        Noisy copies per image.
    sigma : float
        Standard deviation of each flow (unit-mass units).
    noise : {"flow", "pixel"}
    batch_size, seed, progress
        As in :func:`robustlab.smoothing.gaussian.sample_counts`.

    Returns
    -------
    torch.Tensor
        int64 (B, K) on the device of ``x``; every row sums to ``n``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> sample_counts(model, torch.rand(2, 1, 8, 8), 30, sigma=0.02).sum(1).tolist()
    [30, 30]
    """
    _check_common(model, x, sigma, batch_size, noise)
    check_positive_int(n, "n")
    return _sampling.sample(model, x, n, _noise(noise, sigma), mode="counts", seed=seed, batch_size=batch_size,
                            progress=progress, desc="wasserstein smoothing: sampling")


def predict(model, x, *, sigma: float, n: int = DEFAULT_N, alpha: float = DEFAULT_ALPHA, noise: str = "flow",
            batch_size: int = 1000, seed=0, progress: bool | None = None) -> torch.Tensor:
    r"""PREDICT: the smoothed classifier's class, or :data:`ABSTAIN`.

    The two most frequent classes of ``n`` noisy copies (counts :math:`n_1 \ge n_2`, lower
    index first on a tie); :math:`c_1` is returned if the two-sided binomial test of
    :math:`n_1` in :math:`n_1 + n_2` at :math:`p = 1/2` has p-value :math:`\le \alpha`.
    The probability of returning a class other than :math:`g(x)` is at most :math:`\alpha`.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> predict(model, torch.rand(2, 1, 8, 8), sigma=0.02, n=100).shape
    torch.Size([2])
    """
    alpha = check_probability(alpha, "alpha")
    counts = sample_counts(model, x, n, sigma, noise=noise, batch_size=batch_size, seed=seed, progress=progress)
    return _sampling.predict_counts(counts, alpha).to(x.device)


def certify(model, x, *, sigma: float, n0: int = DEFAULT_N0, n: int = DEFAULT_N, alpha: float = DEFAULT_ALPHA,
            noise: str = "flow", bound: str = "tight", ground: str = "l2", batch_size: int = 1000, seed=0,
            progress: bool | None = None) -> Certificate:
    r"""CERTIFY for Wasserstein smoothing: a class and a certified :math:`W_1` radius for every image.

    1. ``n0`` noisy copies select the guess :math:`\hat c_A` (plurality, lower index on a tie);
    2. ``n`` fresh copies count :math:`n_A`, its votes;
    3. :math:`\underline{p_A}` is the one-sided Clopper--Pearson lower bound at level
       :math:`\alpha`;
    4. abstain if :math:`\underline{p_A} \le 1/2`, else return :math:`\hat c_A` with radius
       :func:`certified_radius` ``(p_lower, sigma, noise, bound, ground)``.

    Guarantee: with probability at least :math:`1 - \alpha` over the sampling, a returned
    class equals :math:`g(x)` and :math:`g(x') = g(x)` for every image :math:`x'` of the
    mass of :math:`x` with :math:`W_1(x / m, x' / m) <` radius (in the ``ground`` metric).

    Parameters
    ----------
    model : torch.nn.Module
        The base classifier (eval mode is used and restored; device from its parameters).
    x : torch.Tensor
        Images (B, C, H, W) in [0, 1], each with a positive mass.
    sigma : float
        Standard deviation of each flow, unit-mass units (the paper: 0.02 on MNIST).
    n0, n : int
        Selection and estimation copies per image (the paper: 1,000 and 10,000).
    alpha : float
        Failure probability of each certificate (the paper: 0.05).
    noise : {"flow", "pixel"}
        Wasserstein smoothing, or the Laplace-pixel baseline.
    bound : {"tight", "dp"}
        Flow-space radius, see :func:`flow_radius` (``"dp"`` is the paper's).
    ground : {"l2", "l1"}
        Ground metric of the certified :math:`W_1` (the paper: L2).
    batch_size, seed, progress
        As in :func:`sample_counts`.

    Returns
    -------
    Certificate
        Method ``"wasserstein"``, unit ``UNITS["wasserstein"]``, ``alpha``; statistics
        ``pA_lower``, ``count``, ``flow_radius`` (the L1 radius in flow or pixel space),
        ``sigma``, ``n0``, ``n``, ``noise``, ``bound``, ``ground``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> cert = certify(model, torch.rand(3, 1, 8, 8), sigma=0.02, n0=20, n=100)
    >>> len(cert), cert.unit, cert.method, cert.alpha
    (3, 'Wasserstein (pixel mass)', 'wasserstein', 0.05)
    """
    _check_common(model, x, sigma, batch_size, noise)
    check_positive_int(n0, "n0")
    check_positive_int(n, "n")
    alpha = check_probability(alpha, "alpha")
    check_choice(bound, "bound", BOUNDS)
    check_choice(ground, "ground", GROUNDS)
    with _sampling.Sampler(model, x, _noise(noise, sigma), mode="counts", seed=seed, batch_size=batch_size,
                           progress=progress, desc="wasserstein smoothing: certify",
                           total=x.shape[0] * (n0 + n)) as sampler:
        selection = sampler.draw(n0).cpu()
        estimation = sampler.draw(n).cpu()
    return certify_counts(selection, estimation, sigma=sigma, alpha=alpha, noise=noise, bound=bound, ground=ground)


def certify_counts(selection: torch.Tensor, estimation: torch.Tensor, *, sigma: float, alpha: float = DEFAULT_ALPHA,
                   noise: str = "flow", bound: str = "tight", ground: str = "l2") -> Certificate:
    r"""CERTIFY's decision from its two independent vote tables (B, K) (steps 1 and 3-4 of :func:`certify`).

    >>> sel, est = torch.tensor([[8, 2], [5, 5]]), torch.tensor([[990, 10], [400, 600]])
    >>> cert = certify_counts(sel, est, sigma=0.02)
    >>> cert.prediction.tolist(), [round(r, 4) for r in cert.radius.tolist()]
    ([0, -1], [0.0339, 0.0])
    """
    sigma = float(check_positive(sigma, "sigma"))
    scale = _to_wasserstein(noise, ground)
    check_choice(bound, "bound", BOUNDS)
    d = _sampling.certify_counts(selection, estimation, alpha)
    prediction, p_lower, count, n0, n, alpha = d.prediction, d.pA_lower, d.count, d.n0, d.n, float(alpha)
    rho = torch.where(prediction != ABSTAIN, flow_radius(p_lower, sigma, bound=bound), torch.zeros_like(p_lower))
    return Certificate(prediction, rho * scale, UNITS["wasserstein"], "wasserstein", alpha,
                       {"pA_lower": p_lower, "count": count, "flow_radius": rho, "sigma": sigma, "n0": n0, "n": n,
                        "noise": noise, "bound": bound, "ground": ground})


# =========================================================================== training


@dataclasses.dataclass(frozen=True)
class WassersteinNoiseLoss:
    r"""Training under the smoothing noise: cross-entropy of :math:`f(m(x)(\mu + \Delta\Phi))`.

    ``shared=True`` (the paper's training) draws *one* flow per batch and applies it to every
    image of the batch; ``shared=False`` draws one per image. ``noise="pixel"`` trains the
    Laplace-pixel baseline instead (:class:`PixelMassNoise`). Randomness comes from torch's
    global generator, which :func:`robustlab.train.fit` seeds.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> loss, logits = WassersteinNoiseLoss(0.02)(model, torch.rand(4, 1, 8, 8), torch.arange(4))
    >>> logits.shape, WassersteinNoiseLoss(0.02)
    (torch.Size([4, 10]), WassersteinNoiseLoss(sigma=0.02, noise='flow', shared=True))
    """

    sigma: float
    noise: str = "flow"
    shared: bool = True

    def __post_init__(self):
        object.__setattr__(self, "sigma", float(check_nonneg(self.sigma, "sigma", allow_tensor=False)))
        check_choice(self.noise, "noise", NOISES)
        if not isinstance(self.shared, bool):
            raise TypeError(f"shared must be True or False, got {type(self.shared).__name__}")

    def noisy(self, x: torch.Tensor) -> torch.Tensor:
        """The randomized batch (B, C, H, W) the base classifier is trained on."""
        if self.sigma == 0:
            return x
        mu, mass = _unit_mass(x)
        if bool((mass <= 0).any()):
            _check_mass(mass, "x")
        laplace = _sampling.LaplaceNoise(self.sigma / math.sqrt(2.0))
        rows = 1 if self.shared else x.shape[0]
        if self.noise == "flow":
            moved = apply_flow(mu, laplace.draw((rows, flow_size(x.shape[1:])), None, x.device, x.dtype))
        else:
            moved = mu + laplace.draw((rows, *x.shape[1:]), None, x.device, x.dtype)
        return from_unit_mass(moved, mass)

    def __call__(self, model, x, y):
        logits = model(self.noisy(x))
        return F.cross_entropy(logits, y), logits


def base_model(sigma: float = DIGITS_SIGMA, noise: str = "flow", *, shared: bool = True, dataset: str | None = None,
               arch: str | None = None, width: int | None = None, epochs: int | None = None, seed: int = 0,
               device=None, progress: bool | None = None, cache: bool = True):
    r"""A base classifier trained under flow noise (or the pixel baseline) on the profile's data (cached).

    The profile's architecture trained by :func:`robustlab.train.fit` with
    :class:`WassersteinNoiseLoss` ``(sigma, noise, shared)`` at the profile's learning rate,
    batch size and epochs, made by :func:`robustlab.zoo.profile_model`. Every argument has a
    default, so ``base_model()`` is a zoo recipe.

    Returns
    -------
    robustlab.train.Trained
        ``(model, history)``, the model in eval mode.
    """
    from ..zoo import loss_trained_model

    loss = WassersteinNoiseLoss(float(sigma), noise=noise, shared=shared)
    return loss_trained_model(loss, desc=f"{noise} noise training (sigma={float(sigma):g})", dataset=dataset,
                              arch=arch, width=width, epochs=epochs, seed=seed, device=device, progress=progress,
                              cache=cache, evaluate=True)
