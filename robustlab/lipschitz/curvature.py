r"""Curvature: certificates and training from bounds on the Hessian, and low-curvature activations.

A network with a smooth activation has logits whose second derivatives are bounded
everywhere. For the logit difference of a label :math:`y` and another class :math:`t`,

.. math:: f_{y,t}(x) = z_y(x) - z_t(x), \qquad m_{y,t}\, I \preceq \nabla^2 f_{y,t}(x) \preceq M_{y,t}\, I
          \quad \text{for every } x,

and these two numbers turn the nonconvex question "how far is the decision boundary?"
into convex problems (Singla and Feizi, *Second-order provable defenses against
adversarial attacks*, ICML 2020, arXiv 2006.00731).

**Curvature bounds** (:func:`curvature_bounds`). With :math:`z^{(I)} = W_I a^{(I-1)} + b_I`,
:math:`a^{(I)} = \sigma(z^{(I)})`, :math:`a^{(0)} = x`, logits :math:`z^{(L)}`, the Hessian
of a logit is (the paper's Lemma 1)

.. math:: \nabla^2 z^{(L)}_i = \sum_{I=1}^{L-1} B^{(I)\top} \operatorname{diag}\big(F^{(L,I)}_i \odot
          \sigma''(z^{(I)})\big) B^{(I)},

with :math:`B^{(I)} = \partial z^{(I)} / \partial x` and :math:`F^{(L,I)}_i = \partial z^{(L)}_i /
\partial a^{(I)}`. If :math:`\sigma'' \in [h_L, h_U]` and :math:`|\sigma'| \le g`, every diagonal
entry lies in an interval :math:`[-u^-_j, u^+_j]` (for the last hidden layer
:math:`F = w := W_{L,y} - W_{L,t}` is a constant, so the interval is
:math:`[\min(w_j h_L, w_j h_U), \max(w_j h_L, w_j h_U)]`; deeper layers use
:math:`|F^{(L,I)}| \le S^{(I)}`, :math:`S^{(L-1)} = |w|`, :math:`S^{(I)} = g\, S^{(I+1)} |W_{I+1}|`),
and :math:`B^{(I)} = W_I C_I` with :math:`\|C_I\| \le \rho_{I-1}` (:math:`\rho_0 = 1`,
:math:`\rho_I = g \|W_I\| \rho_{I-1}`). Hence

.. math:: M = \sum_I \rho_{I-1}^2\, \lambda_{\max}\big(W_I^\top \operatorname{diag}(u^+_I) W_I\big),
          \qquad m = -\sum_I \rho_{I-1}^2\, \lambda_{\max}\big(W_I^\top \operatorname{diag}(u^-_I) W_I\big).
   :label: eq-curvature-bound

For one hidden layer this is the paper's Theorem 3 exactly (:math:`N \preceq \nabla^2 f
\preceq P`); for more layers it is its Theorem 4 with the first factor kept as a matrix,
never looser. The eigenvalues are computed exactly (``eigh``: an eigensolver in float64),
so the bounds are sound; ``power`` (a Rayleigh quotient after power iteration, a lower
estimate of each :math:`\lambda_{\max}`) is for training only. The normalization layer is
folded into :math:`W_1`, so its :math:`1/\mathrm{std}` is included.

**The certificate** (:func:`crc_certify`). The squared distance from :math:`x_0` to the
boundary, :math:`p^* = \min_{f(x) = 0} \tfrac12\|x - x_0\|_2^2`, is bounded below by the
dual function (weak duality, for every :math:`\eta`)

.. math:: d(\eta) = \min_x\ \tfrac12\|x - x_0\|_2^2 + \eta f(x) \;\le\; p^*,
   :label: eq-crc-dual

and for :math:`0 \le \eta < 1/|m|` the inner problem is strongly convex, with modulus
:math:`\mu = 1 - \eta|m|` (the paper's Theorem 1). An approximate minimizer :math:`x_k`
gives a *sound* lower bound :math:`d(\eta) \ge F_\eta(x_k) - \|\nabla F_\eta(x_k)\|^2 / (2\mu)`
(strong convexity), so the certified radius is
:math:`\sqrt{2 \max_\eta \underline d(\eta)}`, maximised over :math:`\eta` by bisection on the
sign of :math:`f(x_\eta)` (the derivative of :math:`d`). No point with
:math:`\|x - x_0\|_2` below it has :math:`f(x) \le 0`. The certificate of the *prediction* is
the minimum over **every** other class :math:`t` (``targets="all"``, the default); the
reference code certifies only the runner-up, which can overclaim
(``targets="runner-up"`` reproduces it, for comparison only).

**Curvature-based attack and training** (:func:`curvature_attack`, :class:`CRTLoss`).
:math:`\min_{\|x - x_0\| \le \rho} f(x)` has the dual
:math:`\max_{\eta \ge -m} \min_x f(x) + \tfrac\eta2(\|x - x_0\|^2 - \rho^2)`, convex in
:math:`x` for :math:`\eta \ge -m` (Theorem 2); CRT trains on the attack's output with the
curvature bound as a regularizer, :math:`\mathcal L = \mathrm{CE}(z(x_{\mathrm{attack}}), y) +
\gamma\, K_{y,t}`, :math:`K = \max(M, -m)`.

**Low-curvature activations** (:func:`low_curvature_study`; Singla, Singla, Jacobs and
Feizi, *Low curvature activations reduce overfitting in adversarial training*, ICCV 2021,
arXiv 2102.07861). :class:`Softplus` (:math:`\max\sigma'' = \beta/4`) and :class:`SiLU`
(:math:`\max\sigma'' = \beta/2`) tend to ReLU as :math:`\beta \to \infty`; PGD training with
each of them measures the robust generalization gap against the activation's curvature.

Results that are not "prediction + radius" are small named tuples here:
:class:`CurvatureBounds`, :class:`LowCurvatureRow`, :class:`LowCurvatureStudy`.

Examples
--------
>>> import robustlab as rl
>>> model = curvature_mlp("digits", hidden=8, seed=0)
>>> b = curvature_bounds(model)
>>> tuple(b.lower.shape), bool((b.lower <= 0).all() and (b.upper >= 0).all())
((10, 10), True)
>>> cert = crc_certify(model, torch.rand(3, 1, 8, 8), steps=5, inner=5)
>>> cert.unit, cert.method, tuple(cert.per_class.shape)
('L2 pixels', 'crc', (3, 10))
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import cache as _cache
from .. import config
from .. import data as _data
from .. import models as _models
from .. import train as _train
from ..certificates import UNITS, Certificate
from .._validate import (
    check_choice,
    check_images,
    check_labels,
    check_model,
    check_nonneg,
    check_positive,
    check_positive_int,
    check_seed,
)

__all__ = [
    "ActivationConstants",
    "Softplus",
    "SiLU",
    "activation",
    "activation_constants",
    "max_curvature",
    "SmoothNetwork",
    "smooth_network",
    "CurvatureBounds",
    "curvature_bounds",
    "margin_hessian",
    "crc_distances",
    "crc_certify",
    "curvature_attack",
    "CRTLoss",
    "CRT_RECIPES",
    "curvature_mlp",
    "crt_model",
    "with_activation",
    "LOW_CURVATURE_FAMILY",
    "LowCurvatureRow",
    "LowCurvatureStudy",
    "low_curvature_study",
]


# --------------------------------------------------------------------------- activations


class ActivationConstants(NamedTuple):
    r"""Global bounds of an activation's derivatives: :math:`|\sigma'| \le g` and
    :math:`h_L \le \sigma'' \le h_U` everywhere (``h_low <= 0 <= h_high``)."""

    name: str
    g: float
    h_low: float
    h_high: float

    @property
    def h(self) -> float:
        r""":math:`\max|\sigma''|`, the activation's curvature."""
        return max(-self.h_low, self.h_high)


_SQRT3 = math.sqrt(3.0)
# SiLU_beta(x) = x sigmoid(beta x): sigma' in [-0.09984, 1.09984], sigma'' / beta in [-0.036915, 1/2]
# (dense grid of u = beta x, spacing 1e-5 on [-40, 40]; the maximum 1/2 is at 0), rounded outwards.
_SILU_G, _SILU_H_LOW = 1.0999, -0.03692


class Softplus(nn.Module):
    r"""Softplus with a sharpness :math:`\beta`: :math:`\sigma(x) = \tfrac1\beta \log(1 + e^{\beta x})`.

    :math:`\sigma' \in (0, 1)`, :math:`\sigma'' = \beta s(1 - s) \in (0, \beta/4]` with
    :math:`s = \mathrm{sigmoid}(\beta x)`; ReLU is the limit :math:`\beta \to \infty`. Computed
    as ``F.softplus(x, beta, threshold=20)``: above :math:`\beta x = 20` it is the identity,
    which differs by less than :math:`e^{-20}/\beta` (no jump, unlike a threshold of 1).
    """

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = float(check_positive(beta, "beta"))

    def forward(self, x):
        return F.softplus(x, beta=self.beta, threshold=20.0)

    def constants(self) -> ActivationConstants:
        return ActivationConstants(f"softplus(beta={self.beta:g})", 1.0, 0.0, self.beta / 4.0)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


class SiLU(nn.Module):
    r"""SiLU (Swish) with a sharpness :math:`\beta`: :math:`\sigma(x) = x\, \mathrm{sigmoid}(\beta x)`.

    :math:`\max \sigma'' = \beta/2` (at 0), :math:`\min \sigma'' \approx -0.0369\,\beta`,
    :math:`|\sigma'| \le 1.0998`; ReLU is the limit :math:`\beta \to \infty`.
    """

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = float(check_positive(beta, "beta"))

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)

    def constants(self) -> ActivationConstants:
        return ActivationConstants(f"silu(beta={self.beta:g})", _SILU_G, _SILU_H_LOW * self.beta, self.beta / 2.0)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


ACTIVATION_KINDS = ("relu", "softplus", "silu", "sigmoid", "tanh")


def activation(kind: str = "softplus", beta: float = 1.0) -> nn.Module:
    """A fresh activation module: ``"relu"``, ``"softplus"`` / ``"silu"`` with sharpness ``beta``,
    ``"sigmoid"`` or ``"tanh"``."""
    check_choice(kind, "kind", ACTIVATION_KINDS)
    if kind == "softplus":
        return Softplus(beta)
    if kind == "silu":
        return SiLU(beta)
    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[kind]()


def activation_constants(module: nn.Module) -> ActivationConstants:
    r"""The derivative bounds :math:`(g, h_L, h_U)` of an activation module.

    Sigmoid: :math:`g = 1/4`, :math:`|\sigma''| \le 1/(6\sqrt3)`; tanh: :math:`g = 1`,
    :math:`|\sigma''| \le 4/(3\sqrt3)`; softplus: :math:`g = 1`, :math:`\sigma'' \in [0, \beta/4]`.
    ReLU has no second derivative bound (its curvature is concentrated at 0) and raises.

    >>> activation_constants(nn.Tanh()).h_high == 4 / (3 * 3 ** 0.5)
    True
    """
    if isinstance(module, (Softplus, SiLU)):
        return module.constants()
    if isinstance(module, nn.Softplus):
        if module.threshold < 20:
            raise ValueError(f"an nn.Softplus with threshold {module.threshold} jumps where it switches to the "
                             "identity; use threshold >= 20 (the default) or robustlab's Softplus")
        return ActivationConstants(f"softplus(beta={module.beta:g})", 1.0, 0.0, module.beta / 4.0)
    if isinstance(module, nn.SiLU):
        return SiLU(1.0).constants()
    if isinstance(module, nn.Sigmoid):
        h = 1.0 / (6.0 * _SQRT3)
        return ActivationConstants("sigmoid", 0.25, -h, h)
    if isinstance(module, nn.Tanh):
        h = 4.0 / (3.0 * _SQRT3)
        return ActivationConstants("tanh", 1.0, -h, h)
    if isinstance(module, (nn.ReLU, nn.LeakyReLU)):
        raise TypeError(f"{type(module).__name__} has no bounded second derivative: curvature bounds need a smooth "
                        "activation (Softplus, SiLU, nn.Sigmoid, nn.Tanh)")
    raise TypeError(f"activation {type(module).__name__} is not supported: use Softplus, SiLU, nn.Softplus, nn.SiLU, "
                    "nn.Sigmoid or nn.Tanh")


def max_curvature(module: nn.Module) -> float:
    r""":math:`\max|\sigma''|` of an activation module (``math.inf`` for ReLU)."""
    if isinstance(module, nn.ReLU):
        return math.inf
    return activation_constants(module).h


# --------------------------------------------------------------------------- the network


_ACTIVATION_TYPES = (Softplus, SiLU, nn.Softplus, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU)


def _flatten(model: nn.Module) -> list:
    if isinstance(model, nn.Sequential):
        return [layer for child in model for layer in _flatten(child)]
    return [model]


@dataclasses.dataclass(frozen=True)
class SmoothNetwork:
    r"""A smooth network as its affine maps and one activation: :math:`z_I = W_I a_{I-1} + b_I`,
    :math:`a_I = \sigma(z_I)`, logits :math:`z_L`; :math:`a_0` is the flattened input (the
    normalization folded into :math:`W_1, b_1`). The tensors keep the model's autograd graph."""

    weights: tuple
    biases: tuple
    act: nn.Module
    constants: ActivationConstants
    in_shape: tuple

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def n_classes(self) -> int:
        return int(self.weights[-1].shape[0])

    def hidden(self, x_flat: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations :math:`a_{L-1}` of a flattened batch."""
        a = x_flat
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            a = self.act(a @ w.T + b)
        return a

    def forward(self, x_flat: torch.Tensor) -> torch.Tensor:
        """Logits of a flattened batch (B, d); the same function as the model."""
        return self.hidden(x_flat) @ self.weights[-1].T + self.biases[-1]

    def margin(self, x_flat: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r""":math:`f(x) = z_y(x) - z_t(x)` per row (R,)."""
        w, b = self.weights[-1], self.biases[-1]
        return (self.hidden(x_flat) * (w[y] - w[t])).sum(1) + (b[y] - b[t])

    def margin_and_grad(self, x_flat, y, t):
        """``(f, grad f)`` per row, no graph kept."""
        with torch.enable_grad():
            x = x_flat.detach().requires_grad_(True)
            f = self.margin(x, y, t)
            (g,) = torch.autograd.grad(f.sum(), x)
        return f.detach(), g


def smooth_network(model: nn.Module, in_shape, *, dtype=None) -> SmoothNetwork:
    r"""The affine maps of a Normalize/Flatten/Linear/activation stack (one smooth activation).

    The layout is that of :class:`robustlab.models.MLP` with the ReLUs replaced by one
    smooth activation (:func:`curvature_mlp` builds such networks); the affine maps and the
    folded normalization come from :func:`robustlab.certify.bounds.relu_network`, the one
    parser of such stacks. ``dtype`` (e.g. ``torch.float64``) converts the weights (for
    certificates); ``None`` keeps them, with their graph (for training).

    Raises
    ------
    TypeError
        A layer that is not Normalize, Flatten, Linear or an activation; a ReLU (no
        curvature bound); two different activations.
    """
    from ..certify.bounds import relu_network

    check_model(model)
    layers = _flatten(model)
    acts = [layer for layer in layers if isinstance(layer, _ACTIVATION_TYPES)]
    if not acts:
        raise TypeError("model has no activation: curvature bounds need a network with a smooth activation")
    constants = [activation_constants(a) for a in acts]  # raises for ReLU
    if len(set(constants)) > 1:
        raise TypeError(f"model must use one activation throughout, got {sorted({c.name for c in constants})}")
    proxy = nn.Sequential(*[nn.ReLU() if isinstance(layer, _ACTIVATION_TYPES) else layer for layer in layers])
    net = relu_network(proxy, in_shape)
    weights, biases = net.weights, net.biases
    if dtype is not None:
        weights = tuple(w.detach().to(dtype) for w in weights)
        biases = tuple(b.detach().to(dtype) for b in biases)
    return SmoothNetwork(weights, biases, acts[0], constants[0], net.in_shape)


def _as_network(model, in_shape=None, dtype=torch.float64) -> SmoothNetwork:
    if isinstance(model, SmoothNetwork):
        return model
    if in_shape is None:
        first = next((l for l in _flatten(model) if isinstance(l, nn.Linear)), None)
        if first is None:
            raise TypeError("model has no Linear layer")
        in_shape = (first.in_features,)
    return smooth_network(model, in_shape, dtype=dtype)


# --------------------------------------------------------------------------- curvature bounds


class CurvatureBounds(NamedTuple):
    r"""Bounds :math:`m_{y,t} I \preceq \nabla^2 (z_y - z_t) \preceq M_{y,t} I`, valid at every input.

    ``lower`` and ``upper`` have shape (K, K) (all pairs; the diagonal is 0) or (P,) (the
    pairs asked for); ``method`` says how the eigenvalues were computed (``"eigh"``: exact,
    a sound bound; ``"power"``: a lower estimate, for training only).
    """

    lower: torch.Tensor
    upper: torch.Tensor
    method: str

    @property
    def magnitude(self) -> torch.Tensor:
        r""":math:`K = \max(M, -m)`: the bound on :math:`\|\nabla^2 f\|_2` (the CRT regularizer)."""
        return torch.maximum(self.upper, -self.lower)


def _lambda_max_gram(w: torch.Tensor, u: torch.Tensor, method: str, iters: int) -> torch.Tensor:
    r""":math:`\lambda_{\max}(W^\top \operatorname{diag}(u_p) W)` for every row :math:`u_p \ge 0` of ``u`` (P, n)."""
    n_out, n_in = w.shape
    if method == "eigh":
        if n_in <= n_out:
            gram = torch.einsum("ji,pj,jk->pik", w, u, w)
        else:  # the same nonzero eigenvalues: diag(sqrt u) W W^T diag(sqrt u)
            s = u.clamp_min(0).sqrt()
            gram = s[:, :, None] * (w @ w.T)[None] * s[:, None, :]
        return torch.linalg.eigvalsh(gram)[:, -1].clamp_min(0)
    with torch.no_grad():  # power iteration on W^T diag(u) W, then a differentiable Rayleigh quotient
        gen = torch.Generator(device="cpu").manual_seed(0)
        v = torch.randn(u.shape[0], n_in, generator=gen, dtype=w.dtype).to(w.device)
        ud, wd = u.detach(), w.detach()
        for _ in range(iters):
            v = ((v @ wd.T) * ud) @ wd
            v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return ((v @ w.T) ** 2 * u).sum(1).clamp_min(0)


def _pair_bounds(net: SmoothNetwork, y: torch.Tensor, t: torch.Tensor, method: str, iters: int):
    c = net.constants
    ws = net.weights
    L = net.depth
    w_margin = ws[-1][y] - ws[-1][t]  # (P, n_{L-1})
    # rho[I-1]: bound on ||C_I|| with B_I = W_I C_I (rho_0 = 1, rho_I = g ||W_I|| rho_{I-1})
    rho = [torch.ones((), dtype=ws[0].dtype, device=ws[0].device)]
    for i in range(L - 2):
        rho.append(c.g * torch.linalg.matrix_norm(ws[i], ord=2) * rho[-1])
    upper = torch.zeros(w_margin.shape[0], dtype=ws[0].dtype, device=ws[0].device)
    lower = torch.zeros_like(upper)
    s = w_margin.abs()
    for layer in range(L - 1, 0, -1):  # hidden layer I = layer, weights ws[layer - 1]
        if layer == L - 1:
            hi = torch.maximum(w_margin * c.h_high, w_margin * c.h_low).clamp_min(0)
            lo = torch.maximum(-w_margin * c.h_high, -w_margin * c.h_low).clamp_min(0)
        else:
            s = c.g * s @ ws[layer].abs()
            hi = lo = c.h * s
        r2 = rho[layer - 1] ** 2
        upper = upper + r2 * _lambda_max_gram(ws[layer - 1], hi, method, iters)
        lower = lower - r2 * _lambda_max_gram(ws[layer - 1], lo, method, iters)
    return lower, upper


def curvature_bounds(model, in_shape=None, *, pairs=None, method: str = "eigh", iters: int = 30) -> CurvatureBounds:
    r"""Global bounds :math:`m_{y,t} \le \lambda(\nabla^2 (z_y - z_t)(x)) \le M_{y,t}` (eq. :eq:`eq-curvature-bound`).

    Parameters
    ----------
    model : torch.nn.Module or SmoothNetwork
        A Normalize/Flatten/Linear/smooth-activation stack (see :func:`smooth_network`).
    in_shape : tuple, optional
        Shape of one input; default: the first Linear layer's input size.
    pairs : (y, t) pair of int64 tensors (P,), optional
        The pairs to bound; default every pair, as (K, K) matrices.
    method : {"eigh", "power"}
        Exact eigenvalues (sound: use for certificates), or ``iters`` power iterations
        (a lower estimate, cheaper on large layers: use for training).

    Returns
    -------
    CurvatureBounds
        On the device of the model; differentiable in its weights when ``model`` is a
        :class:`SmoothNetwork` built with ``dtype=None``.

    Examples
    --------
    A network whose output layer does not depend on the class has no curvature:

    >>> net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
    >>> with torch.no_grad():
    ...     _ = net[2].weight.fill_(1.0)
    >>> curvature_bounds(net).upper.abs().max().item()
    0.0
    """
    check_choice(method, "method", ("eigh", "power"))
    check_positive_int(iters, "iters")
    net = _as_network(model, in_shape)
    k = net.n_classes
    device = net.weights[0].device
    if pairs is None:
        y, t = torch.meshgrid(torch.arange(k, device=device), torch.arange(k, device=device), indexing="ij")
        lower, upper = _pair_bounds(net, y.flatten(), t.flatten(), method, iters)
        return CurvatureBounds(lower.view(k, k), upper.view(k, k), method)
    if not (isinstance(pairs, (tuple, list)) and len(pairs) == 2):
        raise TypeError("pairs must be a (y, t) pair of int64 tensors")
    y, t = (check_labels(p, "pairs", n_classes=k).to(device) for p in pairs)
    if y.shape != t.shape:
        raise ValueError(f"pairs must hold two tensors of one shape, got {tuple(y.shape)} and {tuple(t.shape)}")
    return CurvatureBounds(*_pair_bounds(net, y, t, method, iters), method)


def margin_hessian(model: nn.Module, x: torch.Tensor, y: int, t: int) -> torch.Tensor:
    r"""The exact Hessian (d, d) of :math:`z_y - z_t` at one input ``x`` (autograd; small inputs only)."""
    check_model(model)
    shape = tuple(x.shape)

    def f(v):
        z = model(v.view((1,) + shape))[0]
        return z[y] - z[t]

    return torch.autograd.functional.hessian(f, x.detach().flatten())


# --------------------------------------------------------------------------- the certificate


def _minimize_dual(net, x0, y, t, eta, big_l, mu, x, inner):
    """Nesterov's accelerated gradient on F(x) = 1/2 ||x - x0||^2 + eta f(x), mu-strongly convex, big_l-smooth."""
    sq = torch.sqrt(big_l / mu)
    beta = ((sq - 1) / (sq + 1))[:, None]
    step = (1.0 / big_l)[:, None]
    prev = x
    for _ in range(inner):
        z = x + beta * (x - prev)
        _, g = net.margin_and_grad(z, y, t)
        prev, x = x, z - step * ((z - x0) + eta[:, None] * g)
    return x


def crc_distances(net: SmoothNetwork, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor, m: torch.Tensor,
                  big_m: torch.Tensor, *, steps: int = 10, inner: int = 5, margin: float = 1e-3):
    r"""Sound lower bounds (R,) on the L2 distance from each row of ``x0`` to :math:`\{z_y = z_t\}`.

    The paper's dual (eq. :eq:`eq-crc-dual`) with the soundness fixes: for each
    :math:`\eta \in [0, (1 - \text{margin})/|m|)` tried (bisection on the sign of
    :math:`f(x_\eta)`, ``steps`` times; doubling from :math:`f(x_0)/\|\nabla f(x_0)\|^2` when
    :math:`m = 0`), ``inner`` accelerated gradient steps approximate the minimizer and
    :math:`F(x_k) - \|\nabla F(x_k)\|^2/(2(1 - \eta|m|))` bounds :math:`d(\eta)` from below, at
    the same :math:`\eta`; the best bound over all :math:`\eta` tried gives
    :math:`\sqrt{2\,\underline d}`. Rows with :math:`f(x_0) \le 0` get 0.

    Returns ``(radius, eta, x_dual)``: the radius, the best :math:`\eta` and its minimizer.
    """
    dtype = net.weights[0].dtype
    x0, m, big_m = x0.to(dtype), m.to(dtype), big_m.to(dtype)
    f0, g0 = net.margin_and_grad(x0, y, t)
    neg = (-m).clamp_min(0)
    eta_cap = torch.where(neg > 0, (1.0 - margin) / neg.clamp_min(1e-300), torch.full_like(neg, math.inf))
    g2 = (g0 ** 2).sum(1)
    eta0 = torch.where(g2 > 0, f0.clamp_min(0) / g2.clamp_min(1e-300), torch.ones_like(f0))
    eta0 = torch.minimum(eta0, eta_cap / 2).clamp_min(1e-12)
    lo, hi = torch.zeros_like(f0), eta_cap.clone()
    best = torch.zeros_like(f0)
    best_eta, best_x = torch.zeros_like(f0), x0.clone()
    x = x0.clone()
    for _ in range(steps):
        eta = torch.where(torch.isinf(hi), torch.where(lo > 0, 2 * lo, eta0), (lo + hi) / 2)
        mu = 1.0 - eta * neg
        big_l = 1.0 + eta * big_m.clamp_min(0)
        x = _minimize_dual(net, x0, y, t, eta, big_l, mu, x, inner)
        fx, gx = net.margin_and_grad(x, y, t)
        grad_f = (x - x0) + eta[:, None] * gx
        value = 0.5 * ((x - x0) ** 2).sum(1) + eta * fx - (grad_f ** 2).sum(1) / (2 * mu)
        better = value > best
        best = torch.where(better, value, best)
        best_eta = torch.where(better, eta, best_eta)
        best_x = torch.where(better[:, None], x, best_x)
        up = fx > 0
        lo, hi = torch.where(up, eta, lo), torch.where(up, hi, eta)
    radius = torch.sqrt(2 * best.clamp_min(0))
    radius = torch.where(f0 > 0, radius, torch.zeros_like(radius))
    return radius, best_eta, best_x


TARGETS = ("all", "runner-up")


@torch.no_grad()
def crc_certify(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, targets: str = "all",
                steps: int = 10, inner: int = 5, bounds: CurvatureBounds | None = None, batch_size: int = 4096,
                progress: bool | None = None) -> Certificate:
    r"""The curvature-based robustness certificate (CRC) of a smooth network, in L2 pixels.

    For each input the prediction :math:`\hat y = \arg\max_k z_k(x)` is certified at

    .. math:: R(x) = \min_{t \ne \hat y} \mathrm{CRC}_{\hat y, t}(x),

    where :math:`\mathrm{CRC}_{\hat y,t}` is :func:`crc_distances`' sound lower bound on the
    distance to :math:`\{z_{\hat y} = z_t\}` (built from :func:`curvature_bounds` with exact
    eigenvalues, in float64). Guarantee (deterministic): every :math:`x'` with
    :math:`\|x' - x\|_2 < R(x)` has :math:`z_{\hat y}(x') > z_t(x')` for every :math:`t \ne \hat y`,
    so the network predicts :math:`\hat y` there. The box :math:`[0, 1]^d` is ignored (a
    superset of the threat set, so still sound). The verifier never abstains.

    Parameters
    ----------
    model : torch.nn.Module
        A smooth network (see :func:`smooth_network`).
    x : torch.Tensor
        Inputs (B, ...) in [0, 1].
    y : torch.Tensor, optional
        Labels (B,); only used to report, per input, ``target_class``'s bound for the
        label (the certificate is of the prediction, as every Certificate).
    targets : {"all", "runner-up"}
        ``"all"``: the minimum over every other class (a certificate). ``"runner-up"``:
        only the class with the second-largest logit, as the reference code does; that
        radius is **not** a certificate (another class can be nearer) and is reported
        with ``method="crc-runner-up"`` for comparison only.
    steps, inner : int
        Bisection steps over :math:`\eta` and accelerated gradient steps per :math:`\eta`.
        Any values give a sound radius (the strong-convexity term pays for an inexact
        minimizer); larger ones a tighter one. On the digits MLPs of :data:`CRT_RECIPES`
        the defaults (10, 5) certify the same inputs as (20, 15) at a quarter of the cost.
    bounds : CurvatureBounds, optional
        Precomputed :func:`curvature_bounds` of the model (all pairs, method ``"eigh"``).
    batch_size : int
        Rows (input, target) per batch.

    Returns
    -------
    Certificate
        Unit ``UNITS["l2"]``, ``alpha`` None; statistics ``per_class`` ((B, K) bound for each
        target, ``inf`` in the predicted column), ``nearest`` ((B,) the class attaining
        the minimum), ``curvature_lower`` / ``curvature_upper`` (K, K).
    """
    check_model(model)
    check_images(x, "x")
    check_choice(targets, "targets", TARGETS)
    check_positive_int(steps, "steps")
    check_positive_int(inner, "inner")
    check_positive_int(batch_size, "batch_size")
    net = smooth_network(model, tuple(x.shape[1:]), dtype=torch.float64)
    k = net.n_classes
    if y is not None:
        check_labels(y, "y", batch_size=x.shape[0], n_classes=k)
    if bounds is None:
        bounds = curvature_bounds(net)
    elif not isinstance(bounds, CurvatureBounds) or bounds.method != "eigh" or bounds.lower.shape != (k, k):
        raise ValueError("bounds must be the CurvatureBounds of all pairs computed with method='eigh' (sound)")
    device = net.weights[0].device
    x_flat = x.detach().to(device=device, dtype=torch.float64).flatten(1)
    logits = net.forward(x_flat)
    pred = logits.argmax(1)
    b = x.shape[0]
    if targets == "all":
        rows_x = torch.arange(b, device=device).repeat_interleave(k - 1)
        others = torch.arange(k, device=device)[None].expand(b, k)
        others = others[others != pred[:, None]].view(b, k - 1).flatten()
    else:
        rows_x = torch.arange(b, device=device)
        others = logits.scatter(1, pred[:, None], -math.inf).argmax(1)
    rows_y = pred[rows_x]
    lower = bounds.lower.to(device=device, dtype=torch.float64)[rows_y, others]
    upper = bounds.upper.to(device=device, dtype=torch.float64)[rows_y, others]
    radii = []
    bar = config.progress_bar((rows_x.shape[0] + batch_size - 1) // batch_size, "CRC certificates", progress)
    try:
        for i in range(0, rows_x.shape[0], batch_size):
            sl = slice(i, i + batch_size)
            r, _, _ = crc_distances(net, x_flat[rows_x[sl]], rows_y[sl], others[sl], lower[sl], upper[sl],
                                    steps=steps, inner=inner)
            radii.append(r)
            bar.update(1)
    finally:
        bar.close()
    radius_rows = torch.cat(radii) if radii else torch.zeros(0, dtype=torch.float64, device=device)
    per_class = torch.full((b, k), math.inf, dtype=torch.float64, device=device)
    per_class[rows_x, others] = radius_rows
    radius, nearest = per_class.min(1)
    method = "crc" if targets == "all" else "crc-runner-up"
    return Certificate(_models.to_input(x, pred), _models.to_input(x, radius), UNITS["l2"], method, alpha=None,
                       stats={"per_class": per_class, "nearest": nearest, "curvature_lower": bounds.lower,
                              "curvature_upper": bounds.upper, "targets": targets})


# --------------------------------------------------------------------------- attack and training


def _runner_up(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return logits.scatter(1, y[:, None], -math.inf).argmax(1)


def curvature_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                     targets: torch.Tensor | None = None, steps: int = 30, inner: int = 10,
                     bounds: CurvatureBounds | None = None, eta_range: float = 1000.0) -> torch.Tensor:
    r"""The curvature-based L2 attack (the paper's Theorem 2): :math:`\min_{\|x' - x\|_2 \le \varepsilon} z_y - z_t`.

    For :math:`\eta \ge -m` the Lagrangian :math:`f(x') + \tfrac\eta2 \|x' - x\|^2` is convex;
    ``inner`` majorization steps :math:`x' \leftarrow (M x' + \eta x - \nabla f(x'))/(M + \eta)`
    minimize it, and ``steps`` bisections of :math:`\eta \in [-m, -m + \text{eta\_range}]`
    bring :math:`\|x' - x\|` to :math:`\varepsilon`. The target :math:`t` is the runner-up class
    unless ``targets`` is given. The result is put back in the ball and clamped to [0, 1].
    An attack, not a bound: use it to train (:class:`CRTLoss`) or next to other attacks.
    """
    check_model(model)
    check_images(x, "x")
    eps = float(check_nonneg(eps, "eps", allow_tensor=False))
    check_positive_int(steps, "steps")
    check_positive_int(inner, "inner")
    net = smooth_network(model, tuple(x.shape[1:]))
    device, dtype = net.weights[0].device, net.weights[0].dtype
    check_labels(y, "y", batch_size=x.shape[0], n_classes=net.n_classes)
    x0 = x.detach().to(device=device, dtype=dtype).flatten(1)
    y = y.to(device)
    with torch.no_grad():
        if targets is None:
            targets = _runner_up(net.forward(x0), y)
        else:
            targets = check_labels(targets, "targets", batch_size=x.shape[0], n_classes=net.n_classes).to(device)
        if bounds is None:
            b = curvature_bounds(net, pairs=(y, targets), method="eigh")
        elif bounds.lower.dim() == 2:
            b = CurvatureBounds(bounds.lower[y, targets], bounds.upper[y, targets], bounds.method)
        elif bounds.lower.shape == y.shape:
            b = bounds
        else:
            raise ValueError("bounds must be the (K, K) CurvatureBounds of all pairs or those of the (y, targets) "
                             f"rows, shape ({x.shape[0]},)")
        m, big_m = b.lower.detach(), b.upper.detach().clamp_min(1e-12)
    lo, hi = (-m).clamp_min(0), (-m).clamp_min(0) + eta_range
    xa = x0.clone()
    for _ in range(steps):
        eta = (lo + hi) / 2
        for _ in range(inner):
            _, g = net.margin_and_grad(xa, y, targets)
            xa = (big_m[:, None] * xa + eta[:, None] * x0 - g) / (big_m + eta)[:, None]
        far = (xa - x0).norm(dim=1) > eps
        lo, hi = torch.where(far, eta, lo), torch.where(far, hi, eta)
    delta = xa - x0
    delta = delta * (eps / delta.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)[:, None]
    out = (x0 + delta).clamp(0.0, 1.0).view(x.shape).to(x.dtype)
    return _models.to_input(x, out.detach())


@dataclasses.dataclass(frozen=True)
class CRTLoss:
    r"""Curvature-regularized training (CRT; Singla and Feizi, 2020), a loss object for ``fit``.

    .. math:: \mathcal L = \mathrm{CE}\big(z(x_{\mathrm{attack}}), y\big) + \gamma\, \frac1B \sum_i K_{y_i, t_i},
              \qquad K = \max(M, -m),

    with :math:`x_{\mathrm{attack}}` from :func:`curvature_attack` at L2 radius ``eps`` toward
    the runner-up class :math:`t_i` (as the paper; ``eps=0`` trains on clean inputs: the
    curvature regularizer alone) and :math:`K` from :func:`curvature_bounds` with the
    differentiable ``bound`` method (``"power"``, as the paper, or ``"eigh"``). The model
    must be a smooth network (:func:`curvature_mlp`).

    Examples
    --------
    >>> model = curvature_mlp("digits", hidden=8)
    >>> loss, logits = CRTLoss(gamma=0.01, eps=0.5, steps=3, inner=2)(model, torch.rand(4, 1, 8, 8), torch.arange(4))
    >>> logits.shape
    torch.Size([4, 10])
    """

    gamma: float = 0.005
    eps: float = 0.5
    steps: int = 10
    inner: int = 5
    bound: str = "power"
    iters: int = 20

    def __post_init__(self):
        check_nonneg(self.gamma, "gamma", allow_tensor=False)
        check_nonneg(self.eps, "eps", allow_tensor=False)
        check_positive_int(self.steps, "steps")
        check_positive_int(self.inner, "inner")
        check_choice(self.bound, "bound", ("power", "eigh"))
        check_positive_int(self.iters, "iters")

    def __call__(self, model, x, y):
        net = smooth_network(model, tuple(x.shape[1:]))
        with torch.no_grad():
            t = _runner_up(net.forward(x.flatten(1)), y)
        bounds = curvature_bounds(net, pairs=(y, t), method=self.bound, iters=self.iters)
        if self.eps > 0:
            detached = CurvatureBounds(bounds.lower.detach(), bounds.upper.detach(), bounds.method)
            with _models.eval_mode(model):
                x = curvature_attack(model, x, y, eps=self.eps, targets=t, steps=self.steps, inner=self.inner,
                                     bounds=detached)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if self.gamma > 0:
            loss = loss + self.gamma * bounds.magnitude.mean()
        return loss, logits


def curvature_mlp(dataset: str | None = None, *, hidden: int | None = None, depth: int = 1, kind: str = "softplus",
                  beta: float = 1.0, seed: int | None = 0) -> nn.Sequential:
    r"""Normalize → Flatten → (Linear → smooth activation) × ``depth`` → Linear: the paper's MLPs.

    ``hidden`` defaults to :data:`CRT_RECIPES`' width of the profile (256 on the digits,
    1,024 on MNIST as the paper's 784-1024-10); ``kind`` and ``beta`` pick the activation
    (:func:`activation`).
    """
    meta = _data.info(dataset)
    prof = config.profile()
    hidden = CRT_RECIPES[prof.name]["hidden"] if hidden is None else check_positive_int(hidden, "hidden")
    check_positive_int(depth, "depth")
    if seed is not None:
        torch.manual_seed(check_seed(seed))
    d = math.prod(meta.shape)
    layers: list = [_models.Normalize(meta.mean, meta.std), nn.Flatten()]
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), activation(kind, beta)]
        d = hidden
    layers.append(nn.Linear(d, meta.n_classes))
    return nn.Sequential(*layers)


#: Training recipes of :func:`crt_model` per profile: width, epochs, learning rate, the L2
#: radius of the curvature attack and gamma. The paper (MNIST): 784-1024-10, Adam 1e-3,
#: batch 64, 30 epochs, eps 1.58, gamma 0.005, an attack of 30 bisections x 10 steps. On the
#: 8x8 digits eps 0.5 (1.58 scaled by 8/28 is 0.45); the quick profile trains 12 epochs with
#: a 5 x 3-step attack (30 epochs with 10 x 5 steps cost about 10x more for a few points of
#: certified accuracy at L2 0.5).
CRT_RECIPES = {
    "quick": dict(hidden=256, epochs=12, lr=1e-3, eps=0.5, gamma=0.005, steps=5, inner=3),
    "full": dict(hidden=1024, epochs=30, lr=1e-3, eps=1.58, gamma=0.005, steps=10, inner=5),
}
CRT_KINDS = ("standard", "curvature", "crt")


def crt_model(kind: str = "crt", dataset: str | None = None, *, activation_kind: str = "softplus", depth: int = 1,
              gamma: float | None = None, eps: float | None = None, seed: int = 0, device=None,
              progress: bool | None = None, cache: bool = True) -> _train.Trained:
    """A smooth MLP (:func:`curvature_mlp`) trained on the profile's data (cached on disk).

    ``kind``: ``"standard"`` (cross-entropy), ``"curvature"`` (cross-entropy plus the curvature
    regularizer, :class:`CRTLoss` with ``eps=0``) or ``"crt"`` (the curvature attack and the
    regularizer). Settings from :data:`CRT_RECIPES`; ``gamma`` and ``eps`` override them.
    """
    from ..zoo import loss_trained_model

    check_choice(kind, "kind", CRT_KINDS)
    prof = config.profile()
    rec = dict(CRT_RECIPES[prof.name])
    gamma = rec["gamma"] if gamma is None else gamma
    eps = rec["eps"] if eps is None else eps
    if kind == "standard":
        loss = _train.cross_entropy_loss
    else:
        loss = CRTLoss(gamma=float(gamma), eps=float(eps) if kind == "crt" else 0.0, steps=rec["steps"],
                       inner=rec["inner"])

    hidden = min(rec["hidden"], 32) if prof.smoke else rec["hidden"]  # smoke: the code path, in seconds

    def build(arch, dataset, width=None, seed=0):
        return curvature_mlp(dataset, hidden=hidden, depth=depth, kind=activation_kind, seed=seed)

    return loss_trained_model(loss, desc=f"{kind} training ({activation_kind}, depth {depth})", dataset=dataset,
                              epochs=1 if prof.smoke else rec["epochs"], lr=rec["lr"], seed=seed, device=device,
                              progress=progress, cache=cache, evaluate=True, build=build)


# --------------------------------------------------------------------------- low-curvature activations


def with_activation(model: nn.Module, kind: str, beta: float = 1.0) -> nn.Module:
    """``model`` with every ``nn.ReLU`` replaced (in place) by a fresh :func:`activation` ``(kind, beta)``."""
    check_model(model)
    for name, child in list(model.named_children()):
        if isinstance(child, nn.ReLU):
            setattr(model, name, activation(kind, beta))
        else:
            with_activation(child, kind, beta)
    return model


#: The activations of the study: ReLU, softplus and SiLU at several sharpnesses (ReLU is the
#: limit beta -> infinity of both). The quick profile's recipe takes four of them
#: (:data:`LOW_CURVATURE_RECIPES`).
LOW_CURVATURE_FAMILY = (("relu", math.inf), ("softplus", 1.0), ("softplus", 2.0), ("softplus", 5.0),
                        ("silu", 1.0), ("silu", 5.0))


class LowCurvatureRow(NamedTuple):
    """One activation of :func:`low_curvature_study`: its curvature, the per-epoch PGD records and
    the final accuracies (PGD on the monitored subsets, and the attack ensemble)."""

    kind: str
    beta: float
    curvature: float
    records: dict
    final: dict

    @property
    def robust_gap(self) -> float:
        """Final training minus test robust accuracy under the attack ensemble."""
        return self.final["train_ensemble"] - self.final["test_ensemble"]

    @property
    def clean_gap(self) -> float:
        return self.records["train_clean"][-1] - self.records["test_clean"][-1]


class LowCurvatureStudy(NamedTuple):
    """The rows of :func:`low_curvature_study` and its settings."""

    rows: tuple
    eps: float
    settings: dict

    def table(self) -> list:
        """One dict per activation: curvature, final clean and robust accuracies, the gaps."""
        out = []
        for r in self.rows:
            rec = r.records
            out.append({"activation": r.kind if math.isinf(r.beta) else f"{r.kind} (beta {r.beta:g})",
                        "max |sigma''|": r.curvature, "train clean": rec["train_clean"][-1],
                        "test clean": rec["test_clean"][-1], "train robust": r.final["train_ensemble"],
                        "test robust": r.final["test_ensemble"], "robust gap": r.robust_gap,
                        "best test PGD": max(rec["test_robust"]), "final test PGD": rec["test_robust"][-1]})
        return out


#: Recipes of :func:`low_curvature_study`: PGD training (Linf, the data set's default radius)
#: with a constant learning rate, so that robust overfitting can show. The quick profile
#: trains the MLP (two hidden layers of 128), five times cheaper than the CNN on the digits,
#: for 20 epochs, with four activations (``family``), PGD-5 monitors on 200 training and 200
#: test digits and a final evaluation by APGD with two losses (``final_attacks``; the default
#: ensemble's targeted APGD and Square Attack cost ten times more); the full profile trains
#: the wider MLP (width 16) on all six activations and evaluates with the default ensemble
#: (the CNN would make this one study cost about 25 GPU minutes, benchmarks/full_profile_workload.py).
LOW_CURVATURE_RECIPES = {
    "quick": dict(arch="mlp", width=8, epochs=20, lr=3e-3, batch_size=64, steps=5, eps_ramp_epochs=3,
                  schedule="constant", n_monitor=200, monitor_steps=5, final_attacks=("apgd-ce", "apgd-dlr"),
                  family=(("relu", math.inf), ("softplus", 1.0), ("softplus", 4.0), ("silu", 1.0))),
    "full": dict(arch="mlp", width=16, epochs=20, lr=1e-3, batch_size=128, steps=10, eps_ramp_epochs=2,
                 schedule="constant", n_monitor=1000, monitor_steps=10, final_attacks=None,
                 family=LOW_CURVATURE_FAMILY),
}


def low_curvature_study(family=None, dataset: str | None = None, eps: float | None = None, *,
                        seed: int = 0, progress: bool | None = None, cache: bool = True) -> LowCurvatureStudy:
    r"""PGD adversarial training with activations of different curvature, and the robust generalization gap.

    For each ``(kind, beta)`` of ``family`` (default: the recipe's) the recipe's architecture (the same seeded
    initial weights) with every ReLU replaced by :func:`activation` ``(kind, beta)`` is
    trained by :func:`robustlab.training.adversarial_training` (PGD, Linf radius ``eps``,
    default the data set's) under :data:`LOW_CURVATURE_RECIPES`, with a
    :class:`robustlab.training.RobustAccuracyMonitor` on seeded training and test subsets;
    the final model is then evaluated on the same subsets with the attack ensemble of
    :func:`robustlab.attacks.robust_accuracy` (the recipe's ``final_attacks``). With ``cache`` the rows are stored in the
    cache's ``curves`` folder.
    """
    from .. import attacks as _attacks
    from .. import training as _training

    prof = config.profile()
    dataset = prof.dataset if dataset is None else dataset
    meta = _data.info(dataset)
    eps = _training.DEFAULT_EPS[meta.name] if eps is None else float(check_positive(eps, "eps"))
    rec = dict(LOW_CURVATURE_RECIPES[prof.name])
    default_family = rec.pop("family")
    family = default_family if family is None else family
    final_attacks = rec.pop("final_attacks")
    family = tuple((str(k), float(b)) for k, b in family)
    for k, b in family:
        check_choice(k, "family kind", ("relu", "softplus", "silu"))
        if k != "relu":
            check_positive(b, "family beta")
    if prof.smoke:
        rec.update(epochs=1, eps_ramp_epochs=0, n_monitor=min(rec["n_monitor"], 16), width=min(rec["width"], 4))
        final_attacks = ("apgd-ce",)
    train, test = _data.load(dataset)
    n_mon = rec.pop("n_monitor")
    mon_steps = rec.pop("monitor_steps")
    width, arch = rec.pop("width"), rec.pop("arch")
    sub_train, sub_test = _data.subset(train, n_mon, seed=seed), _data.subset(test, n_mon, seed=seed)
    rows = []
    for kind, beta in family:
        settings = {"kind": "low_curvature", "activation": kind, "beta": beta, "dataset": meta.name,
                    "profile": prof.name, "smoke": prof.smoke, "eps": eps, "recipe": rec, "arch": arch, "width": width,
                    "n_monitor": n_mon, "monitor_steps": mon_steps, "final_attacks": final_attacks, "seed": seed}
        path = _cache.entry("curves", settings) if cache else None
        blob = _cache.load(path) if path is not None else None
        if blob is None:
            model = _models.build(arch, dataset, width=width, seed=seed)
            if kind != "relu":
                with_activation(model, kind, beta)
            model.to(_models.best_device())
            monitor = _training.RobustAccuracyMonitor(sub_train, sub_test, eps=eps, steps=mon_steps, seed=seed)
            _training.adversarial_training(model, train, method="pgd", eps=eps, seed=seed, callbacks=(monitor,),
                                           progress=progress, desc=f"PGD training, {kind} beta {beta:g}", **rec)
            model.eval()
            final = {f"{name}_ensemble": _attacks.robust_accuracy(model, part, eps=eps, attacks=final_attacks,
                                                                  progress=False)
                     for name, part in (("train", sub_train), ("test", sub_test))}
            blob = {"records": {k: list(v) for k, v in monitor.records.items()}, "final": final}
            if path is not None:
                _cache.store(path, blob)
        curvature = math.inf if kind == "relu" else activation(kind, beta).constants().h
        rows.append(LowCurvatureRow(kind, beta, curvature, blob["records"], blob["final"]))
    return LowCurvatureStudy(tuple(rows), eps, {**rec, "arch": arch, "width": width, "n_monitor": n_mon,
                                                "monitor_steps": mon_steps, "final_attacks": final_attacks})
