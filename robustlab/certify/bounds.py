r"""Verification of small ReLU networks: interval bounds, the convex relaxation, the dual bound.

A classifier with logits :math:`z(x) \in \mathbb{R}^K` is *certified* at an input
:math:`x` with label :math:`y` and radius :math:`\varepsilon` when every logit margin
stays positive over the whole threat set,

.. math::

    \min_{x' \in \mathcal{B}(x)} \; z_y(x') - z_j(x') > 0 \quad \text{for every } j \ne y,
    \qquad \mathcal{B}(x) = \{x' : \|x' - x\|_\infty \le \varepsilon\} \cap [0, 1]^d.

For a ReLU network this minimum is a mixed-integer linear program (Tjeng, Xiao and
Tedrake, 2019), NP-hard in general (Katz et al., 2017). Every method here computes a
*lower bound* on it; a positive lower bound is a proof, a negative one proves nothing.

* :func:`interval_bounds` -- interval bound propagation (IBP, Gowal et al., 2018): a box
  per layer, pushed through each affine map by its centre and radius.
* :func:`lp_margin_bounds` -- the linear program of the convex relaxation of Wong and
  Kolter (2018): every unstable ReLU (:math:`l < 0 < u`) is replaced by the triangle
  :math:`a \ge 0,\ a \ge z,\ a \le u (z - l) / (u - l)`, solved exactly with HiGHS
  (``scipy.optimize.linprog``), one LP per input and margin (tiny networks only).
* :func:`dual_margin_bounds` -- the closed-form bound of the dual network of Wong and
  Kolter, a batched backward pass in torch; by weak duality it is never above the LP value.
* :func:`milp_margin` -- the exact minimum for tiny networks (``scipy.optimize.milp``).
* :func:`certify` and :func:`certified_accuracy` -- the certificate of a batch, as the
  shared :class:`robustlab.certificates.Certificate` (the network's own prediction,
  radius ``eps`` where certified and 0 elsewhere, in ``UNITS["linf"]``).
* :func:`ibp_l2_certify` -- the largest :math:`L_2` radius interval bounds certify (the
  first layer bounded over the ball exactly), a baseline for the :math:`L_2` certificates
  of chapter 15.
* :class:`IBPLoss` and :func:`ibp_trained_model` -- certified training with IBP.
* :class:`DualLoss` and :func:`dual_trained_model` -- certified training with the dual
  bound (Wong and Kolter, 2018).

The networks handled are ``nn.Sequential`` stacks of an optional
:class:`robustlab.models.Normalize`, ``Flatten``, then ``Linear``, ``ReLU``, ...,
``Linear`` (the layout of :class:`robustlab.models.MLP`). :func:`relu_network` turns such a
model into its list of affine maps, folding the normalization exactly into the first one.
The threat model is :math:`L_\infty`, except for :func:`ibp_l2_certify`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import config
from .. import data as _data
from .. import models as _models
from .. import train as _train
from ..certificates import UNITS, Certificate
from .._validate import (
    check_choice,
    check_class_index,
    check_images,
    check_labels,
    check_model,
    check_nonneg,
    check_positive,
    check_positive_int,
    check_probability,
    parse_norm,
)

__all__ = [
    "METHODS",
    "ReLUNetwork",
    "relu_network",
    "input_box",
    "LayerBounds",
    "interval_bounds",
    "margin_matrix",
    "preactivation_bounds",
    "ibp_margin_bounds",
    "lp_margin_bounds",
    "dual_margin_bounds",
    "milp_margin",
    "margin_bounds",
    "certify",
    "certified_accuracy",
    "ibp_l2_certify",
    "IBPLoss",
    "IBP_RECIPES",
    "ibp_trained_model",
    "DualLoss",
    "DUAL_RECIPES",
    "dual_trained_model",
]

METHODS = ("ibp", "lp", "dual")


# --------------------------------------------------------------------------- the network


@dataclasses.dataclass(frozen=True)
class ReLUNetwork:
    r"""A ReLU network as its affine maps: :math:`z_k = W_k a_{k-1} + b_k`,
    :math:`a_k = \max(z_k, 0)` for :math:`k < L`, logits :math:`z_L`; :math:`a_0` is the
    flattened input in [0, 1] (the normalization is folded into :math:`W_1, b_1`).

    ``weights[k]`` has shape (n_{k+1}, n_k); the tensors keep the model's autograd graph,
    so losses built on the bounds train the model.
    """

    weights: tuple
    biases: tuple
    in_shape: tuple

    @property
    def depth(self) -> int:
        """Number of affine layers L (hidden ReLU layers: L - 1)."""
        return len(self.weights)

    def forward(self, x_flat: torch.Tensor) -> torch.Tensor:
        """Logits of a flattened batch (B, d); the same function as the model."""
        a = x_flat
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            a = a @ w.T + b
            if k < self.depth - 1:
                a = a.clamp_min(0)
        return a


def relu_network(model: nn.Module, in_shape) -> ReLUNetwork:
    """The affine maps of a Normalize/Flatten/Linear/ReLU stack on inputs of shape ``in_shape``.

    Parameters
    ----------
    model : torch.nn.Module
        An ``nn.Sequential`` (possibly nested) of an optional ``Normalize`` and ``Flatten``
        before the first ``Linear``, then ``Linear`` layers each followed by a ``ReLU``,
        except the last one.
    in_shape : tuple of int
        Shape of one input, e.g. ``(1, 8, 8)``.

    Raises
    ------
    TypeError
        If the model holds any other layer (the message names it), or the order is not
        the one above.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=1)
    >>> net = relu_network(model, (1, 8, 8))
    >>> [tuple(w.shape) for w in net.weights]
    [(16, 64), (16, 16), (10, 16)]
    >>> x = torch.rand(3, 1, 8, 8)
    >>> torch.allclose(net.forward(x.flatten(1)), model(x), atol=1e-5)
    True
    """
    check_model(model)
    in_shape = tuple(int(s) for s in in_shape)
    layers = _flatten_sequential(model)
    d = int(np.prod(in_shape))
    # the elementwise affine prefix a * x + c (Normalize and Flatten), folded into W_1, b_1
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    scale = torch.ones(d, dtype=dtype, device=device)
    shift = torch.zeros(d, dtype=dtype, device=device)
    shape = in_shape
    weights, biases = [], []
    expect_relu = False
    for i, layer in enumerate(layers):
        name = f"layer {i} ({type(layer).__name__})"
        if isinstance(layer, _models.Normalize):
            if weights:
                raise TypeError(f"{name}: Normalize is supported only before the first Linear layer")
            with torch.no_grad():
                base = layer(torch.zeros((1,) + shape, dtype=dtype, device=device))
                one = layer(torch.ones((1,) + shape, dtype=dtype, device=device))
            slope, offset = (one - base).flatten(), base.flatten()
            scale, shift = scale * slope, shift * slope + offset
        elif isinstance(layer, nn.Flatten):
            if weights:
                raise TypeError(f"{name}: Flatten is supported only before the first Linear layer")
            shape = (d,)
        elif isinstance(layer, nn.Linear):
            if not weights and len(shape) != 1:
                raise TypeError(f"{name}: the input must be flattened (nn.Flatten) before the first Linear layer")
            if weights and expect_relu:
                raise TypeError(f"{name}: two Linear layers in a row; put a ReLU between them")
            w, b = layer.weight, layer.bias
            if b is None:
                b = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
            if not weights:
                if w.shape[1] != d:
                    raise TypeError(f"{name} expects {w.shape[1]} inputs but an input of shape {in_shape} has {d}")
                b = b + w @ shift
                w = w * scale
            weights.append(w)
            biases.append(b)
            expect_relu = True
        elif isinstance(layer, nn.ReLU):
            if not expect_relu:
                raise TypeError(f"{name}: a ReLU must follow a Linear layer")
            expect_relu = False
        else:
            raise TypeError(f"{name} is not supported: certify.bounds handles Normalize, Flatten, Linear and ReLU "
                            "layers (the layout of robustlab.models.MLP)")
    if not weights:
        raise TypeError("model has no Linear layer: certify.bounds needs a Linear/ReLU network")
    if not expect_relu:
        raise TypeError("the last layer of model must be Linear (the logits), not a ReLU")
    return ReLUNetwork(tuple(weights), tuple(biases), in_shape)


def _flatten_sequential(model: nn.Module) -> list:
    if isinstance(model, nn.Sequential):
        out = []
        for child in model:
            out += _flatten_sequential(child)
        return out
    if isinstance(model, (_models.Normalize, nn.Flatten, nn.Linear, nn.ReLU)):
        return [model]
    raise TypeError(f"layer {type(model).__name__} is not supported: certify.bounds handles nn.Sequential stacks of "
                    "Normalize, Flatten, Linear and ReLU layers (the layout of robustlab.models.MLP)")


def _prepare(model, x, eps, y=None):
    """Check the arguments, parse the network, and return it with the flattened batch."""
    check_model(model)
    check_images(x, "x")
    check_nonneg(eps, "eps", allow_tensor=False)
    net = relu_network(model, tuple(x.shape[1:]))
    device, dtype = net.weights[0].device, net.weights[0].dtype
    x_flat = x.detach().to(device=device, dtype=dtype).flatten(1)
    if y is not None:
        check_labels(y, "y", batch_size=x.shape[0], n_classes=net.weights[-1].shape[0])
        y = y.to(device)
    return net, x_flat, y


def input_box(x_flat: torch.Tensor, eps: float):
    r"""The threat set as a box: :math:`[\max(x - \varepsilon, 0), \min(x + \varepsilon, 1)]`.

    The intersection of the :math:`L_\infty` ball with the image domain is itself a box.
    """
    return (x_flat - eps).clamp(0.0, 1.0), (x_flat + eps).clamp(0.0, 1.0)


# --------------------------------------------------------------------------- IBP


class LayerBounds(NamedTuple):
    """Elementwise bounds of every pre-activation of a network over the threat set.

    ``lower[k]``, ``upper[k]`` (B, n_{k+1}) bound :math:`z_{k+1}` for k = 0 .. L - 1;
    the last entry bounds the logits.
    """

    lower: tuple
    upper: tuple

    @property
    def logit_lower(self) -> torch.Tensor:
        return self.lower[-1]

    @property
    def logit_upper(self) -> torch.Tensor:
        return self.upper[-1]

    def unstable(self) -> list:
        """Per hidden layer, the number of unstable ReLUs (l < 0 < u) of each input (B,)."""
        return [((lo < 0) & (hi > 0)).sum(1) for lo, hi in zip(self.lower[:-1], self.upper[:-1])]


def _affine_interval(w, b, lo, hi):
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    centre = mid @ w.T + b
    radius = rad @ w.abs().T
    return centre - radius, centre + radius


def _ibp(net: ReLUNetwork, lo, hi) -> LayerBounds:
    lowers, uppers = [], []
    for k, (w, b) in enumerate(zip(net.weights, net.biases)):
        lo, hi = _affine_interval(w, b, lo, hi)
        lowers.append(lo)
        uppers.append(hi)
        lo, hi = lo.clamp_min(0), hi.clamp_min(0)
    return LayerBounds(tuple(lowers), tuple(uppers))


def interval_bounds(model: nn.Module, x: torch.Tensor, eps: float) -> LayerBounds:
    r"""Interval bound propagation (Gowal et al., 2018) over :math:`\mathcal{B}(x)`.

    A box :math:`[l, u]` goes through an affine map by its centre
    :math:`\mu = (u + l)/2` and radius :math:`r = (u - l)/2`:

    .. math::

        \mu' = W\mu + b, \qquad r' = |W|\,r, \qquad [l', u'] = [\mu' - r', \mu' + r'],

    which is the exact box of the image of the box; a ReLU maps it to
    :math:`[\max(l', 0), \max(u', 0)]`. Every bound is sound: every input of the threat
    set gives pre-activations inside them. Cost: two forward passes.

    Parameters
    ----------
    model : torch.nn.Module
        A Normalize/Flatten/Linear/ReLU network (see :func:`relu_network`).
    x : torch.Tensor
        Inputs (B, ...) in [0, 1].
    eps : float
        :math:`L_\infty` radius in pixel units.

    Returns
    -------
    LayerBounds
        Bounds of every layer's pre-activation; ``.logit_lower`` / ``.logit_upper`` (B, K).
        They carry gradients to the model's parameters.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=1)
    >>> x = torch.rand(2, 1, 8, 8)
    >>> b = interval_bounds(model, x, eps=0.05)
    >>> z = model(x)
    >>> bool((b.logit_lower <= z).all() and (z <= b.logit_upper).all())
    True
    """
    net, x_flat, _ = _prepare(model, x, eps)
    return _ibp(net, *input_box(x_flat, eps))


def margin_matrix(w_last: torch.Tensor, b_last: torch.Tensor, y: torch.Tensor):
    r"""The margins :math:`z_y - z_j` as an affine map of the last hidden layer.

    Returns ``(C, c)`` with ``C[i, j] = W_L[y_i] - W_L[j]`` (B, K, n) and
    ``c[i, j] = b_L[y_i] - b_L[j]`` (B, K); row :math:`j = y` is zero.
    """
    return w_last[y][:, None, :] - w_last[None, :, :], b_last[y][:, None] - b_last[None, :]


def ibp_margin_bounds(net: ReLUNetwork, x_flat, y, eps, bounds: LayerBounds | None = None) -> torch.Tensor:
    r"""IBP lower bounds (B, K) of the margins, through the last linear layer.

    With :math:`a_{L-1} \in [l, u]` (centre :math:`\mu`, radius :math:`r`), the margin
    :math:`(W_{L,y} - W_{L,j})^\top a_{L-1} + b_{L,y} - b_{L,j}` is at least
    :math:`(W_{L,y} - W_{L,j})^\top \mu - |W_{L,y} - W_{L,j}|^\top r + b_{L,y} - b_{L,j}`,
    tighter than the difference of the logit bounds :math:`\underline{z}_y - \overline{z}_j`.
    """
    lo, hi = input_box(x_flat, eps)
    if net.depth > 1:
        if bounds is None:
            for w, b in zip(net.weights[:-1], net.biases[:-1]):
                lo, hi = _affine_interval(w, b, lo, hi)
                lo, hi = lo.clamp_min(0), hi.clamp_min(0)
        else:
            lo, hi = bounds.lower[-2].clamp_min(0), bounds.upper[-2].clamp_min(0)
    w, b = net.weights[-1], net.biases[-1]
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    centre = mid @ w.T + b  # (B, K): the margin's centre is centre_y - centre_j
    pair_radius = (w[:, None, :] - w[None, :, :]).abs()  # (K, K, n), cheaper than a (B, K, n) tensor
    radius = torch.einsum("bn,kjn->bkj", rad, pair_radius)
    radius = radius.gather(1, y.view(-1, 1, 1).expand(-1, 1, w.shape[0])).squeeze(1)
    return centre.gather(1, y[:, None]) - centre - radius


# --------------------------------------------------------------------------- the dual bound


def _dual_backward(net: ReLUNetwork, spec_w, spec_b, layer: int, lowers, uppers, lo0, hi0, alphas=None):
    r"""Lower bound of ``spec_w @ z_layer + spec_b`` (spec_w: (B, S, n_layer)) by the dual network.

    ``layer`` counts affine maps from 1; ``lowers[k]``/``uppers[k]`` bound z_{k+1}.
    ``alphas[k - 1]`` (B, S, n_k), if given, are the slopes in [0, 1] of the lower sides
    :math:`a \ge \alpha z` of the unstable ReLUs of layer k (default: Kolter and Wong's
    :math:`u/(u - l)`, parallel to the upper side).
    """
    lam = spec_w
    const = spec_b
    for k in range(layer, 0, -1):
        w, b = net.weights[k - 1], net.biases[k - 1]
        const = const + lam @ b
        lam = lam @ w  # now the coefficient of a_{k-1}
        if k == 1:
            break
        lo, hi = lowers[k - 2], uppers[k - 2]  # bounds of z_{k-1}
        active, unstable = lo >= 0, (lo < 0) & (hi > 0)
        s = torch.where(unstable, hi / (hi - lo).clamp_min(1e-12), active.to(lo.dtype))
        intercept = torch.where(unstable, -s * lo, torch.zeros_like(lo))  # upper line: a <= s z + intercept
        lam_neg = lam.clamp_max(0)
        const = const + (lam_neg * intercept[:, None, :]).sum(-1)
        if alphas is None:
            lam = lam * s[:, None, :]
        else:
            lower_slope = torch.where(unstable[:, None, :], alphas[k - 2], s[:, None, :])
            lam = lam.clamp_min(0) * lower_slope + lam_neg * s[:, None, :]
    mid, rad = (hi0 + lo0) / 2, (hi0 - lo0) / 2
    return const + torch.einsum("bsn,bn->bs", lam, mid) - torch.einsum("bsn,bn->bs", lam.abs(), rad)


def _dual_layer_bounds(net: ReLUNetwork, lo0, hi0) -> LayerBounds:
    """Pre-activation bounds of every hidden layer by the dual network, intersected with IBP."""
    ibp = _ibp(net, lo0, hi0)
    lowers, uppers = [ibp.lower[0]], [ibp.upper[0]]  # the first layer's box is exact
    bsz = lo0.shape[0]
    for k in range(2, net.depth):
        n = net.weights[k - 1].shape[0]
        eye = torch.eye(n, dtype=lo0.dtype, device=lo0.device)
        spec = torch.cat([eye, -eye])[None].expand(bsz, 2 * n, n)
        val = _dual_backward(net, spec, torch.zeros(bsz, 2 * n, dtype=lo0.dtype, device=lo0.device), k,
                             lowers, uppers, lo0, hi0)
        lowers.append(torch.maximum(val[:, :n], ibp.lower[k - 1]))
        uppers.append(torch.minimum(-val[:, n:], ibp.upper[k - 1]))
    lowers.append(ibp.lower[-1])
    uppers.append(ibp.upper[-1])
    return LayerBounds(tuple(lowers), tuple(uppers))


def dual_margin_bounds(net: ReLUNetwork, x_flat, y, eps, bounds: LayerBounds | None = None, *,
                       alpha_steps: int = 0, alpha_lr: float = 0.1) -> torch.Tensor:
    r"""The Kolter--Wong dual bound (B, K) on the margins :math:`z_y - z_j`, batched.

    With the margin as objective :math:`c^\top z_L`, the *dual network* runs the network
    backwards: :math:`\hat\nu_{L-1} = W_L^\top c`, and through every ReLU layer
    :math:`\nu_k = D_k \hat\nu_k`, :math:`\hat\nu_{k-1} = W_k^\top \nu_k`, where
    :math:`D_k` is diagonal with 0 for inactive, 1 for active and
    :math:`u/(u - l)` for unstable ReLUs (the slope of the triangle's upper side, used
    for its lower side too). The bound is

    .. math::

        J = c^\top b_L + \sum_{k} \nu_k^\top b_k
            - \sum_{k} \sum_{i \in \mathcal{I}_k} \frac{u_i\, l_i}{u_i - l_i}\,[\hat\nu_{k,i}]_-
            + \min_{x' \in \mathcal{B}(x)} \hat\nu_0^\top x',

    (Wong and Kolter, 2018, Theorem 1, with the box of the threat set in place of the
    :math:`L_\infty` ball), where :math:`\mathcal{I}_k` are the unstable ReLUs and
    :math:`[\cdot]_- = \min(\cdot, 0)`. Any dual-feasible point gives a lower bound on the
    LP of the relaxation, so ``J <= lp_margin_bounds`` (weak duality) and ``J`` is sound.

    ``bounds`` are the pre-activation bounds of the hidden layers (default: computed
    layer by layer with the same dual network, intersected with IBP).

    The lower side :math:`a \ge \alpha z` of an unstable ReLU is valid for every
    :math:`\alpha \in [0, 1]`, and each choice gives a dual-feasible point. With
    ``alpha_steps > 0`` the slopes (one per input, margin and neuron, starting from
    :math:`u/(u - l)`) are tuned by projected gradient ascent on :math:`J` with Adam, and
    the best value seen is kept: the bound rises towards the LP optimum, which the best
    slopes reach (strong duality; Salman et al., 2019).
    """
    lo0, hi0 = input_box(x_flat, eps)
    if bounds is None:
        bounds = _dual_layer_bounds(net, lo0, hi0)
    n_classes = net.weights[-1].shape[0]
    eye = torch.eye(n_classes, dtype=x_flat.dtype, device=x_flat.device)
    spec = eye[y][:, None, :] - eye[None, :, :]  # row j: e_y - e_j, a specification on the logits z_L
    zero = torch.zeros(spec.shape[:2], dtype=x_flat.dtype, device=x_flat.device)
    best = _dual_backward(net, spec, zero, net.depth, bounds.lower, bounds.upper, lo0, hi0)
    check_positive_int(alpha_steps, "alpha_steps", allow_zero=True)
    if alpha_steps == 0 or net.depth == 1:
        return best
    lowers = [t.detach() for t in bounds.lower]
    uppers = [t.detach() for t in bounds.upper]
    alphas = []
    for lo, hi in zip(lowers[:-1], uppers[:-1]):
        s = (hi / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
        alphas.append(s[:, None, :].expand(-1, spec.shape[1], -1).clone().requires_grad_(True))
    # Adam written out (torch.optim's first step imports the compiler stack: seconds)
    moments = [(torch.zeros_like(a), torch.zeros_like(a)) for a in alphas]
    best = best.detach()
    with torch.enable_grad():
        for t in range(1, alpha_steps + 1):
            value = _dual_backward(net, spec, zero, net.depth, lowers, uppers, lo0, hi0, alphas=alphas)
            best = torch.maximum(best, value.detach())
            grads = torch.autograd.grad(value.sum(), alphas)
            with torch.no_grad():
                for a, g, (m, v) in zip(alphas, grads, moments):
                    m.mul_(0.9).add_(g, alpha=0.1)
                    v.mul_(0.999).addcmul_(g, g, value=0.001)
                    step = alpha_lr * (m / (1 - 0.9 ** t)) / ((v / (1 - 0.999 ** t)).sqrt() + 1e-8)
                    a.add_(step).clamp_(0, 1)  # ascent on J, projected onto [0, 1]
        value = _dual_backward(net, spec, zero, net.depth, lowers, uppers, lo0, hi0, alphas=alphas)
    return torch.maximum(best, value.detach())


# --------------------------------------------------------------------------- the linear program


def _relaxation_lp(net_np, lo0, hi0, lowers, uppers, n_layers, binary=False, relu_last=True):
    """Constraints of the relaxation (or the MILP) up to ``a_{n_layers}`` (``z_{n_layers}`` without ``relu_last``).

    Variables: a_0 (d), then for every layer k = 1 .. n_layers: z_k (n_k), and for hidden
    layers also a_k (n_k) (and, for the MILP, one binary per unstable ReLU); ``prev`` indexes
    the last a_k.
    Returns a dict with the constraint matrices and the index ranges of the variables.
    """
    from scipy import sparse

    weights, biases = net_np
    d = lo0.shape[0]
    var_bounds = [(float(a), float(b)) for a, b in zip(lo0, hi0)]
    integrality = [0] * d
    eq_rows, eq_rhs, ub_rows, ub_rhs = [], [], [], []
    offset, prev = d, np.arange(d)
    z_index = {}

    def new_vars(n, bounds, integer=0):
        nonlocal offset
        idx = np.arange(offset, offset + n)
        offset += n
        var_bounds.extend(bounds)
        integrality.extend([integer] * n)
        return idx

    for k in range(1, n_layers + 1):
        w, b = weights[k - 1], biases[k - 1]
        n = w.shape[0]
        z = new_vars(n, [(None, None)] * n)
        z_index[k] = z
        # z_k - W_k a_{k-1} = b_k
        for i in range(n):
            eq_rows.append(({int(z[i]): 1.0} | {int(p): -float(v) for p, v in zip(prev, w[i]) if v != 0.0}))
            eq_rhs.append(float(b[i]))
        if k == n_layers and not relu_last:
            break
        lo, hi = lowers[k - 1], uppers[k - 1]
        a = new_vars(n, [(0.0, None) if (l < 0 < u) else ((0.0, 0.0) if u <= 0 else (None, None))
                         for l, u in zip(lo, hi)])
        for i in range(n):
            l, u = float(lo[i]), float(hi[i])
            zi, ai = int(z[i]), int(a[i])
            if l >= 0:  # active: a = z
                eq_rows.append({ai: 1.0, zi: -1.0})
                eq_rhs.append(0.0)
            elif u > 0:  # unstable
                ub_rows.append({zi: 1.0, ai: -1.0})  # a >= z
                ub_rhs.append(0.0)
                if binary:  # a <= u delta, a <= z - l (1 - delta)   (Tjeng et al.)
                    (dl,) = new_vars(1, [(0.0, 1.0)], integer=1)
                    ub_rows.append({ai: 1.0, int(dl): -u})
                    ub_rhs.append(0.0)
                    ub_rows.append({ai: 1.0, zi: -1.0, int(dl): -l})
                    ub_rhs.append(-l)
                else:  # a <= u (z - l) / (u - l)
                    s = u / (u - l)
                    ub_rows.append({ai: 1.0, zi: -s})
                    ub_rhs.append(-s * l)
        prev = a

    def to_matrix(rows):
        if not rows:
            return None
        data, ri, ci = [], [], []
        for r, row in enumerate(rows):
            for c, v in row.items():
                ri.append(r)
                ci.append(c)
                data.append(v)
        return sparse.csr_array((data, (ri, ci)), shape=(len(rows), offset))

    return dict(A_eq=to_matrix(eq_rows), b_eq=np.array(eq_rhs), A_ub=to_matrix(ub_rows),
                b_ub=np.array(ub_rhs) if ub_rhs else None, bounds=var_bounds, n_vars=offset,
                z=z_index, prev=prev, integrality=np.array(integrality))


def _solve_lp(lp, cost):
    from scipy.optimize import linprog

    res = linprog(cost, A_ub=lp["A_ub"], b_ub=lp["b_ub"], A_eq=lp["A_eq"], b_eq=lp["b_eq"], bounds=lp["bounds"],
                  method="highs")
    if res.status != 0:
        raise RuntimeError(f"the relaxation LP did not solve: {res.message}")
    return float(res.fun)


def _numpy_net(net: ReLUNetwork):
    return ([w.detach().cpu().double().numpy() for w in net.weights],
            [b.detach().cpu().double().numpy() for b in net.biases])


def _lp_layer_bounds(net: ReLUNetwork, net_np, lo0, hi0, ibp: LayerBounds, i: int):
    """Bounds of every hidden pre-activation of input ``i`` by layerwise LP (numpy arrays)."""
    lowers = [ibp.lower[0][i].detach().cpu().double().numpy()]
    uppers = [ibp.upper[0][i].detach().cpu().double().numpy()]
    for k in range(2, net.depth):
        lp = _relaxation_lp(net_np, lo0, hi0, lowers, uppers, k, relu_last=False)
        z = lp["z"][k]
        lo_k, hi_k = np.empty(len(z)), np.empty(len(z))
        for j, zj in enumerate(z):
            cost = np.zeros(lp["n_vars"])
            cost[zj] = 1.0
            lo_k[j] = _solve_lp(lp, cost)
            hi_k[j] = -_solve_lp(lp, -cost)
        lowers.append(np.maximum(lo_k, ibp.lower[k - 1][i].detach().cpu().double().numpy()))
        uppers.append(np.minimum(hi_k, ibp.upper[k - 1][i].detach().cpu().double().numpy()))
    return lowers, uppers


def _margin_objective(lp, net_np, yi, j):
    w, b = net_np[0][-1], net_np[1][-1]
    cost = np.zeros(lp["n_vars"])
    cost[lp["prev"]] = w[yi] - w[j]
    return cost, float(b[yi] - b[j])


def lp_margin_bounds(net: ReLUNetwork, x_flat, y, eps, bounds: LayerBounds | str = "dual", *,
                     progress: bool | None = None) -> torch.Tensor:
    r"""Lower bounds (B, K) of the margins: the exact optimum of the Kolter--Wong relaxation.

    For every input and every :math:`j \ne y` the linear program

    .. math::

        \min\; (W_{L,y} - W_{L,j})^\top a_{L-1} + b_{L,y} - b_{L,j}
        \quad\text{s.t.}\quad a_0 \in \mathcal{B}(x),\ z_k = W_k a_{k-1} + b_k,\
        (z_k, a_k) \in \text{relaxed ReLU},

    where an active ReLU is :math:`a = z`, an inactive one :math:`a = 0`, and an unstable
    one the triangle :math:`a \ge 0,\ a \ge z,\ a \le u(z - l)/(u - l)`, is solved with
    HiGHS. ``bounds`` gives the pre-activation bounds :math:`l, u`: ``"dual"`` (the dual
    network layer by layer, intersected with IBP), ``"ibp"``, ``"lp"``
    (layer by layer, each neuron's min and max by LP over the relaxation of the layers
    below; tightest, 2 n_k LPs per layer) or a :class:`LayerBounds` object. One LP per input
    and margin: for tiny networks only.
    """
    lo0, hi0 = input_box(x_flat, eps)
    ibp = _ibp(net, lo0, hi0)
    if isinstance(bounds, str):
        check_choice(bounds, "bounds", ("dual", "ibp", "lp"))
        if bounds == "dual":
            bounds = _dual_layer_bounds(net, lo0, hi0)
    net_np = _numpy_net(net)
    lo0n, hi0n = lo0.detach().cpu().double().numpy(), hi0.detach().cpu().double().numpy()
    n_classes = net.weights[-1].shape[0]
    out = torch.zeros(x_flat.shape[0], n_classes, dtype=torch.float64)
    bar = config.progress_bar(x_flat.shape[0], "LP bounds", config.progress_enabled(progress), unit="input")
    try:
        for i in range(x_flat.shape[0]):
            if isinstance(bounds, LayerBounds):
                lowers = [t[i].detach().cpu().double().numpy() for t in bounds.lower]
                uppers = [t[i].detach().cpu().double().numpy() for t in bounds.upper]
            elif bounds == "ibp":
                lowers = [t[i].detach().cpu().double().numpy() for t in ibp.lower]
                uppers = [t[i].detach().cpu().double().numpy() for t in ibp.upper]
            else:
                lowers, uppers = _lp_layer_bounds(net, net_np, lo0n[i], hi0n[i], ibp, i)
            lp = _relaxation_lp(net_np, lo0n[i], hi0n[i], lowers, uppers, net.depth - 1) if net.depth > 1 else None
            yi = int(y[i])
            for j in range(n_classes):
                if j == yi:
                    continue
                if lp is None:  # a linear model: the minimum over the box in closed form
                    c = net_np[0][-1][yi] - net_np[0][-1][j]
                    out[i, j] = float(np.minimum(c * lo0n[i], c * hi0n[i]).sum() + net_np[1][-1][yi] - net_np[1][-1][j])
                    continue
                cost, const = _margin_objective(lp, net_np, yi, j)
                out[i, j] = _solve_lp(lp, cost) + const
            bar.update(1)
    finally:
        bar.close()
    return out.to(device=x_flat.device, dtype=x_flat.dtype)


def milp_margin(model: nn.Module, x: torch.Tensor, y: int, j: int, eps: float, *, time_limit: float = 60.0) -> float:
    r"""The exact minimum of the margin :math:`z_y - z_j` over :math:`\mathcal{B}(x)` (one input).

    Every unstable ReLU :math:`a = \max(z, 0)` with bounds :math:`l < 0 < u` is encoded
    exactly with a binary :math:`\delta` (Tjeng, Xiao and Tedrake, 2019):

    .. math::

        a \ge 0,\quad a \ge z,\quad a \le u\,\delta,\quad a \le z - l\,(1 - \delta),
        \quad \delta \in \{0, 1\},

    with :math:`l, u` from IBP; the mixed-integer program is solved by HiGHS
    (``scipy.optimize.milp``). Exponential in the number of unstable ReLUs in the worst
    case (verification is NP-hard): for tiny networks.

    The value returned is the solver's *proven* lower bound on the minimum (HiGHS's dual
    bound, ``res.mip_dual_bound``), with the relative gap closed (``mip_rel_gap = 0``), so
    it is never above a margin the network actually reaches (up to HiGHS's feasibility
    tolerance, about 1e-7). The best feasible value ``res.fun`` would not do: under HiGHS's
    default relative gap of 1e-4 it may stop at a point above the minimum, the unsafe side
    for a verifier.

    Parameters
    ----------
    model : torch.nn.Module
    x : torch.Tensor
        One input, shape (1, ...), in [0, 1].
    y, j : int
        The label and the rival class.
    eps : float
    time_limit : float
        Seconds for the solver; a RuntimeError if it does not close the gap in time.

    Returns
    -------
    float
        The proven lower bound on :math:`\min z_y - z_j`, equal to the minimum up to the
        solver's tolerances.

    Examples
    --------
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> x = torch.tensor([[0.5, 0.5]])
    >>> exact = milp_margin(model, x, 0, 1, eps=0.1)
    >>> lp = float(lp_margin_bounds(relu_network(model, (2,)), x, torch.tensor([0]), 0.1, progress=False)[0, 1])
    >>> lp <= exact + 1e-9
    True
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    net, x_flat, _ = _prepare(model, x, eps)
    if x_flat.shape[0] != 1:
        raise ValueError(f"x must hold one input (shape (1, ...)), got a batch of {x_flat.shape[0]}")
    n_classes = net.weights[-1].shape[0]
    y = check_class_index(y, "y", n_classes)
    j = check_class_index(j, "j", n_classes)
    lo0, hi0 = input_box(x_flat, eps)
    ibp = _ibp(net, lo0, hi0)
    net_np = _numpy_net(net)
    lo0n, hi0n = lo0[0].detach().cpu().double().numpy(), hi0[0].detach().cpu().double().numpy()
    w, b = net_np[0][-1], net_np[1][-1]
    if net.depth == 1:
        c = w[y] - w[j]
        return float(np.minimum(c * lo0n, c * hi0n).sum() + b[y] - b[j])
    lowers = [t[0].detach().cpu().double().numpy() for t in ibp.lower]
    uppers = [t[0].detach().cpu().double().numpy() for t in ibp.upper]
    lp = _relaxation_lp(net_np, lo0n, hi0n, lowers, uppers, net.depth - 1, binary=True)
    cost, const = _margin_objective(lp, net_np, y, j)
    constraints = [LinearConstraint(lp["A_eq"], lp["b_eq"], lp["b_eq"])]
    if lp["A_ub"] is not None:
        constraints.append(LinearConstraint(lp["A_ub"], -np.inf, lp["b_ub"]))
    lower = np.array([-np.inf if lo is None else lo for lo, _ in lp["bounds"]])
    upper = np.array([np.inf if hi is None else hi for _, hi in lp["bounds"]])
    res = milp(cost, constraints=constraints, integrality=lp["integrality"], bounds=Bounds(lower, upper),
               options={"time_limit": float(time_limit), "mip_rel_gap": 0.0})
    if res.status != 0:
        raise RuntimeError(f"the MILP did not reach its optimum: {res.message}")
    bound = getattr(res, "mip_dual_bound", None)
    if bound is None or not np.isfinite(bound):
        raise RuntimeError("the MILP solver returned no proven bound (mip_dual_bound)")
    return float(min(bound, res.fun)) + const


# --------------------------------------------------------------------------- certificates


def preactivation_bounds(model: nn.Module, x: torch.Tensor, eps: float, method: str = "ibp") -> LayerBounds:
    """Bounds of every pre-activation over the threat set by ``"ibp"`` or ``"dual"``
    (layer by layer with the dual network, intersected with IBP). Logit bounds are IBP's."""
    check_choice(method, "method", ("ibp", "dual"))
    net, x_flat, _ = _prepare(model, x, eps)
    lo0, hi0 = input_box(x_flat, eps)
    return _ibp(net, lo0, hi0) if method == "ibp" else _dual_layer_bounds(net, lo0, hi0)


def margin_bounds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, method: str = "ibp", *,
                  bounds="dual", alpha_steps: int = 0, progress: bool | None = None) -> torch.Tensor:
    r"""Lower bounds (B, K) of the margins :math:`z_y - z_j` over :math:`\mathcal{B}(x)`.

    Column :math:`j = y` is 0 (the margin of a class with itself).

    Parameters
    ----------
    model, x, y, eps
        As in :func:`certify`.
    method : {"ibp", "lp", "dual"}
        :func:`interval_bounds` through the last linear layer, the exact LP of the
        relaxation (:func:`lp_margin_bounds`), or the dual bound
        (:func:`dual_margin_bounds`).
    bounds : {"dual", "ibp", "lp"} or LayerBounds
        Pre-activation bounds of the relaxation (lp and dual): layer by layer by the dual
        network intersected with IBP (default), plain IBP, layerwise LP (lp only; slow), or
        given bounds. Ignored by ``"ibp"``.
    alpha_steps : int
        Slope optimization steps of the dual bound (see :func:`dual_margin_bounds`).
    """
    check_choice(method, "method", METHODS)
    net, x_flat, y = _prepare(model, x, eps, y)
    if method == "ibp":
        return ibp_margin_bounds(net, x_flat, y, eps)
    if not isinstance(bounds, LayerBounds):
        check_choice(bounds, "bounds", ("dual", "ibp", "lp") if method == "lp" else ("dual", "ibp"))
    if method == "lp":
        with torch.no_grad():
            return lp_margin_bounds(net, x_flat, y, eps, bounds=bounds, progress=progress)
    if bounds == "ibp":
        bounds = _ibp(net, *input_box(x_flat, eps))
    return dual_margin_bounds(net, x_flat, y, eps, bounds=None if bounds == "dual" else bounds,
                              alpha_steps=alpha_steps)


@torch.no_grad()
def certify(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, eps: float, method: str = "ibp", *,
            norm: str = "linf", bounds="dual", alpha_steps: int = 0, batch_size: int = 512,
            progress: bool | None = None) -> Certificate:
    r"""Certify the network's prediction on :math:`\mathcal{B}(x)`: the shared :class:`~robustlab.certificates.Certificate`.

    An input is certified when the network predicts the label asked about (``y``, or its
    own prediction with ``y=None``) and the lower bound of every margin :math:`z_y - z_j`,
    :math:`j \ne y`, is > 0. The guarantee is deterministic: for every :math:`x'` with
    :math:`\|x' - x\|_\infty \le \varepsilon` and :math:`x' \in [0, 1]^d` the network's
    prediction is ``y``. An input that is not certified may still be robust (the bounds
    are loose), so the certified accuracy is a *lower* bound on the robust accuracy, as an
    attack's accuracy is an upper bound.

    The verifier never abstains: ``prediction`` is the network's own prediction (the
    argmax of its logits) on every input, ``radius`` is ``eps`` where certified and 0
    elsewhere. Certified accuracy at radius 0 is therefore the clean accuracy, and at
    radius ``eps`` the fraction certified with the correct label.

    Parameters
    ----------
    model : torch.nn.Module
        A Normalize/Flatten/Linear/ReLU network (see :func:`relu_network`).
    x : torch.Tensor
        Inputs (B, ...) in [0, 1].
    y : torch.Tensor or None
        Labels (B,) to certify (where the network predicts another class the radius is 0);
        ``None`` certifies the network's own predictions.
    eps : float
        :math:`L_\infty` radius in pixel units.
    method : {"ibp", "lp", "dual"}
        Interval bounds, the exact LP of the triangle relaxation (tiny networks; one LP per
        input and margin), or the Kolter--Wong dual bound (batched).
    norm : {"linf"}
        The threat model (only :math:`L_\infty`).
    bounds : {"dual", "ibp", "lp"} or LayerBounds
        Pre-activation bounds of the lp/dual relaxations (see :func:`margin_bounds`).
    alpha_steps : int
        Slope optimization steps of the dual bound (0: Kolter and Wong's fixed slopes).
    batch_size : int
        Inputs per batch (ibp and dual).

    Returns
    -------
    Certificate
        ``method`` ``"ibp"``, ``"lp"`` or ``"dual"``, unit ``UNITS["linf"]``, ``alpha``
        None, and the statistics ``margin_lower`` ((B, K) lower bounds of
        :math:`z_y - z_j` for the label certified, 0 in column y), ``eps`` and
        ``certified`` ((B,) bool), all on the CPU.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=1)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    >>> cert = certify(model, x, None, eps=0.0)
    >>> bool(cert.certified.all())  # at eps = 0 the bounds are exact: every input is certified
    True
    >>> certify(model, x, y, eps=0.0).certified_accuracy(y) == rl.train.evaluate(model, (x, y))
    True
    >>> wide = certify(model, x, y, eps=0.3)
    >>> wide.method, wide.unit, bool((wide.radius[~wide.certified] == 0).all())
    ('ibp', 'Linf pixels', True)
    """
    check_model(model)
    check_images(x, "x")
    eps = float(check_nonneg(eps, "eps", allow_tensor=False))
    check_choice(method, "method", METHODS)
    if parse_norm(norm) != math.inf:
        raise ValueError(f"norm must be 'linf' (the only threat model of certify.bounds), got {norm!r}")
    check_positive_int(batch_size, "batch_size")
    if y is not None:
        check_labels(y, "y", batch_size=x.shape[0])
    with _models.eval_mode(model):
        prediction = _train.predict(model, x).cpu()
        target = prediction if y is None else y
        step = x.shape[0] if method == "lp" else batch_size
        chunks = [margin_bounds(model, x[i:i + step], target[i:i + step], eps, method, bounds=bounds,
                                alpha_steps=alpha_steps, progress=progress)
                  for i in range(0, x.shape[0], step)]
    lower = torch.cat(chunks).cpu()
    target = target.cpu()
    own = F.one_hot(target, lower.shape[1]).bool()
    lower = lower.masked_fill(own, 0.0)
    certified = (lower.masked_fill(own, math.inf).amin(1) > 0) & (prediction == target)
    radius = torch.where(certified, torch.tensor(eps, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))
    return Certificate(prediction, radius, UNITS["linf"], method, alpha=None,
                       stats={"margin_lower": lower, "eps": eps, "certified": certified})


def certified_accuracy(model: nn.Module, data, eps: float, method: str = "ibp", **kwargs) -> float:
    """Fraction of ``data = (x, y)`` certified at radius ``eps`` with its true label.

    The certified accuracy of :func:`certify`'s certificate at radius ``eps``; at
    ``eps = 0`` the clean accuracy.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=1)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    >>> certified_accuracy(model, (x, y), 0.0) == rl.train.evaluate(model, (x, y))
    True
    """
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError(f"data must be a Split or an (x, y) pair of tensors, got {type(data).__name__}")
    eps = float(check_nonneg(eps, "eps", allow_tensor=False))
    return certify(model, data[0], data[1], eps, method, **kwargs).certified_accuracy(data[1], at=eps)


# --------------------------------------------------------------------------- IBP under an L2 ball


@torch.no_grad()
def ibp_l2_certify(model: nn.Module, x: torch.Tensor, *, max_radius: float = 4.0, steps: int = 30) -> Certificate:
    r"""The largest L2 radius interval bounds certify, per input, for a ReLU network (a baseline).

    Over :math:`\{\|x' - x\|_2 \le r\} \cap [0, 1]^d` the first pre-activations lie in
    :math:`W_1 x + b_1 \pm r \|W_{1,j}\|_2` (exact for the ball), intersected with the interval
    of the box :math:`[x - r, x + r] \cap [0, 1]^d`; interval propagation
    (:func:`ibp_margin_bounds`) does the rest. Certification at
    :math:`r` implies it at every smaller radius, so ``steps`` bisections on
    :math:`[0, \text{max\_radius}]` find the radius; the returned one is certified
    (closed ball). A network without hidden layers gets the exact linear bound
    :math:`z_{\hat y} - z_j - r\|W_{\hat y} - W_j\|_2`. Prediction: the network's argmax; unit
    ``UNITS["l2"]``. Chapter 15 compares the Lipschitz-margin and curvature certificates
    against it.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=1)
    >>> cert = ibp_l2_certify(model, torch.rand(3, 1, 8, 8))
    >>> cert.unit, cert.method, bool((cert.radius >= 0).all())
    ('L2 pixels', 'ibp-l2', True)
    """
    check_model(model)
    check_images(x, "x")
    check_positive(max_radius, "max_radius")
    check_positive_int(steps, "steps")
    net = relu_network(model, tuple(x.shape[1:]))
    device, dtype = net.weights[0].device, net.weights[0].dtype
    x_flat = x.detach().to(device=device, dtype=dtype).flatten(1)
    pred = net.forward(x_flat).argmax(1)
    w1, b1 = net.weights[0], net.biases[0]
    row_norms = w1.norm(dim=1)

    def certified(r):
        if net.depth == 1:
            z = x_flat @ w1.T + b1
            pair = (w1[pred][:, None, :] - w1[None]).norm(dim=2)
            margin = z.gather(1, pred[:, None]) - z - r[:, None] * pair
            return margin.scatter(1, pred[:, None], math.inf).amin(1) > 0
        lo_box, hi_box = (x_flat - r[:, None]).clamp(0, 1), (x_flat + r[:, None]).clamp(0, 1)
        lo1, hi1 = _affine_interval(w1, b1, lo_box, hi_box)
        centre = x_flat @ w1.T + b1
        lo, hi = torch.maximum(lo1, centre - r[:, None] * row_norms), torch.minimum(hi1, centre + r[:, None] * row_norms)
        lowers, uppers = [lo], [hi]
        for w, b in zip(net.weights[1:-1], net.biases[1:-1]):
            lo, hi = _affine_interval(w, b, lo.clamp_min(0), hi.clamp_min(0))
            lowers.append(lo)
            uppers.append(hi)
        lowers.append(None)
        uppers.append(None)
        margin = ibp_margin_bounds(net, x_flat, pred, 0.0, bounds=LayerBounds(tuple(lowers), tuple(uppers)))
        margin = margin.scatter(1, pred[:, None], math.inf)
        return margin.amin(1) > 0

    lo = torch.zeros(x_flat.shape[0], dtype=dtype, device=device)
    hi = torch.full_like(lo, float(max_radius))
    for _ in range(steps):
        mid = (lo + hi) / 2
        ok = certified(mid)
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    radius = torch.where(certified(lo), lo, torch.zeros_like(lo))
    return Certificate(_models.to_input(x, pred), _models.to_input(x, radius.double()), UNITS["l2"], "ibp-l2",
                       alpha=None, stats={"max_radius": float(max_radius)})



# --------------------------------------------------------------------------- certified training


def _worst_case_logits(margin_lower: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Logits whose cross-entropy upper-bounds that of every point of the threat set: -margin bounds."""
    return (-margin_lower).masked_fill(F.one_hot(y, margin_lower.shape[1]).bool(), 0.0)


@dataclasses.dataclass(frozen=True)
class IBPLoss:
    r"""Certified training with interval bounds (Gowal et al., 2018).

    .. math::

        \mathcal{L} = \kappa\, \mathcal{L}_{\mathrm{CE}}\big(z(x), y\big)
        + (1 - \kappa)\, \mathcal{L}_{\mathrm{CE}}\big(\hat z(x, \varepsilon), y\big),
        \qquad \hat z_j = -\underline{m}_j, \quad \hat z_y = 0,

    where :math:`\underline{m}_j` is the IBP lower bound of the margin :math:`z_y - z_j`:
    :math:`\hat z` are the worst-case logits, and their cross-entropy bounds the
    cross-entropy of every input of the threat set from above. Following Gowal et al.,
    the first ``warmup`` batches are clean (:math:`\varepsilon = 0`, :math:`\kappa = 1`),
    then over ``ramp`` batches :math:`\varepsilon` grows linearly to ``eps`` and
    :math:`\kappa` falls linearly to ``kappa``.

    Parameters
    ----------
    eps : float
        Training radius (:math:`L_\infty`, pixel units).
    kappa : float
        Final weight of the clean loss, in [0, 1] (Gowal et al.: 0.5).
    warmup, ramp : int
        Numbers of training batches of the two phases. :func:`robustlab.train.fit` passes
        the batch of the run (``wants_step``), so the object holds no state; called
        outside ``fit`` (no ``step``), the loss is at the final ``(eps, kappa)``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=1)
    >>> loss_fn = IBPLoss(eps=0.1, kappa=0.5)
    >>> x, y = torch.rand(8, 1, 8, 8), torch.arange(8)
    >>> loss, logits = loss_fn(model, x, y)
    >>> bool(loss >= rl.train.cross_entropy_loss(model, x, y)[0] * 0.5)
    True
    """

    eps: float
    kappa: float = 0.5
    warmup: int = 0
    ramp: int = 0
    wants_step = True  # fit calls loss_fn(model, x, y, step=TrainingStep(...))

    def __post_init__(self):
        check_nonneg(self.eps, "eps", allow_tensor=False)
        check_probability(self.kappa, "kappa", closed=True)
        check_positive_int(self.warmup, "warmup", allow_zero=True)
        check_positive_int(self.ramp, "ramp", allow_zero=True)

    def schedule(self, step=None) -> tuple:
        """``(eps, kappa)`` of training batch ``step`` (counted from 0, or a
        :class:`robustlab.train.TrainingStep`; ``None``: after the ramp), by the shared
        schedule :func:`robustlab.train.ramp` with a delay of ``warmup`` batches."""
        t = _train.ramp(step, self.ramp, delay=self.warmup)
        return float(self.eps) * t, 1.0 - (1.0 - float(self.kappa)) * t

    def margin_lower_bounds(self, net: ReLUNetwork, x_flat, y, eps) -> torch.Tensor:
        """The bound the robust term uses: :func:`ibp_margin_bounds` (:class:`DualLoss`: the dual bound)."""
        return ibp_margin_bounds(net, x_flat, y, eps)

    def __call__(self, model, x, y, step=None):
        eps, kappa = self.schedule(step)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if kappa < 1.0:
            net = relu_network(model, tuple(x.shape[1:]))
            lower = self.margin_lower_bounds(net, x.flatten(1), y, eps)
            loss = kappa * loss + (1 - kappa) * F.cross_entropy(_worst_case_logits(lower, y), y)
        return loss, logits


# Recipes of :func:`ibp_trained_model`: epochs, then warm-up and ramp in epochs.
IBP_RECIPES = {
    "quick": dict(width=4, epochs=20, warmup_epochs=2, ramp_epochs=10, lr=3e-3, batch_size=64, kappa=0.5),
    "full": dict(width=16, epochs=20, warmup_epochs=1, ramp_epochs=8, lr=1e-3, batch_size=128, kappa=0.5),
}


def ibp_trained_model(dataset: str | None = None, eps: float | None = None, *, train_eps: float | None = None,
                      seed: int = 0, device=None, progress: bool | None = None, cache: bool = True,
                      **overrides) -> _train.Trained:
    """An MLP trained with :class:`IBPLoss` on the profile's data set (cached on disk).

    The certified-training counterpart of :func:`robustlab.train.trained_model`: the
    profile's recipe (:data:`IBP_RECIPES`: MLP width, epochs, warm-up and ramp epochs,
    learning rate, final kappa) through :func:`robustlab.train.fit` with ``cache``.

    Parameters
    ----------
    dataset : str, optional
        Default: the profile's data set.
    eps : float, optional
        The radius to certify (default ``robustlab.config.default_eps("certified", dataset)``:
        0.1 on the digits and MNIST).
    train_eps : float, optional
        The training radius; default ``1.1 * eps`` (training slightly above the test
        radius helps, as Gowal et al. report).
    seed, device, progress, cache
        As in :func:`robustlab.train.trained_model`.
    **overrides
        Replace entries of the recipe.

    Returns
    -------
    Trained
        ``(model, history)``, the model in eval mode; the same architecture as
        ``rl.train.trained_model(arch="mlp", width=recipe["width"])``.
    """
    return _certified_trained_model(IBPLoss, IBP_RECIPES, "IBP", dataset, eps, train_eps, seed, device, progress,
                                    cache, overrides)


def _certified_trained_model(loss_cls, recipes, label, dataset, eps, train_eps, seed, device, progress, cache,
                             overrides) -> _train.Trained:
    """The recipe, the ramped loss ``loss_cls`` and fit, shared by the certified-training models."""
    prof = config.profile()
    dataset = prof.dataset if dataset is None else dataset
    meta = _data.info(dataset)
    eps = config.default_eps("certified", meta.name) if eps is None else eps
    check_nonneg(eps, "eps", allow_tensor=False)
    train_eps = 1.1 * eps if train_eps is None else train_eps
    check_nonneg(train_eps, "train_eps", allow_tensor=False)
    recipe = dict(recipes[prof.name])
    unknown = set(overrides) - set(recipe)
    if unknown:
        raise TypeError(f"unknown recipe entries {sorted(unknown)}; the recipe has {sorted(recipe)}")
    recipe.update(overrides)
    if prof.smoke:
        recipe.update(epochs=1, warmup_epochs=0, ramp_epochs=1)
    from ..zoo import profile_model

    def train_fn(model, train, test):
        batches = math.ceil(train.x.shape[0] / recipe["batch_size"])
        loss_fn = loss_cls(eps=float(train_eps), kappa=recipe["kappa"], warmup=recipe["warmup_epochs"] * batches,
                           ramp=recipe["ramp_epochs"] * batches)
        return _train.fit(model, train, epochs=recipe["epochs"], lr=recipe["lr"], batch_size=recipe["batch_size"],
                          seed=seed, loss_fn=loss_fn, eval_data=test, progress=progress, cache=cache,
                          schedule="constant", desc=f"{label} training MLP on {dataset}")

    return profile_model(train_fn, dataset, "mlp", width=recipe["width"], seed=seed, device=device)


@dataclasses.dataclass(frozen=True)
class DualLoss(IBPLoss):
    r"""Certified training with the dual bound (Wong and Kolter, 2018).

    The loss of :class:`IBPLoss` with the margin bounds :math:`\underline{m}_j` of the dual
    network (:func:`dual_margin_bounds`, Kolter and Wong's slopes :math:`u/(u - l)`, the
    hidden layers' bounds computed layer by layer by the same dual network) in place of
    IBP's:

    .. math::

        \mathcal{L} = \kappa\, \mathcal{L}_{\mathrm{CE}}\big(z(x), y\big)
        + (1 - \kappa)\, \mathcal{L}_{\mathrm{CE}}\big(-J(x, \varepsilon), y\big),

    with :math:`J_j` the dual bound of the margin :math:`z_y - z_j` (0 for :math:`j = y`).
    Wong and Kolter minimize the robust term alone (:math:`\kappa = 0`); with
    :math:`\kappa > 0` and the warm-up and ramp of :class:`IBPLoss` the two certified
    trainings differ only in their bound. Every bound is a differentiable function of the
    weights, batched over the inputs; one training batch costs about one backward pass of
    the dual network per hidden unit of the layers after the first, more than IBP's two
    forward passes.

    Parameters
    ----------
    eps, kappa, warmup, ramp
        As in :class:`IBPLoss` (the schedule is the same, :meth:`IBPLoss.schedule`).

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=1)
    >>> x, y = torch.rand(8, 1, 8, 8), torch.arange(8)
    >>> loss, logits = DualLoss(eps=0.05, kappa=0.0)(model, x, y)
    >>> bool(loss >= rl.train.cross_entropy_loss(model, x, y)[0])  # the worst case is no better
    True
    >>> DualLoss(eps=0.1, warmup=2, ramp=4).schedule(3)
    (0.05, 0.75)
    """

    def margin_lower_bounds(self, net: ReLUNetwork, x_flat, y, eps) -> torch.Tensor:
        """The Kolter--Wong dual bound :func:`dual_margin_bounds`."""
        return dual_margin_bounds(net, x_flat, y, eps)


# Recipes of :func:`dual_trained_model`: the IBP recipes' network and schedule.
DUAL_RECIPES = {name: dict(recipe) for name, recipe in IBP_RECIPES.items()}


def dual_trained_model(dataset: str | None = None, eps: float | None = None, *, train_eps: float | None = None,
                       seed: int = 0, device=None, progress: bool | None = None, cache: bool = True,
                       **overrides) -> _train.Trained:
    """An MLP trained with :class:`DualLoss` on the profile's data set (cached on disk).

    The same network, data, schedule and arguments as :func:`ibp_trained_model`, with the
    recipe :data:`DUAL_RECIPES` (by default equal to :data:`IBP_RECIPES`, so the two
    models differ only in the bound they were trained with).

    Examples
    --------
    >>> DUAL_RECIPES["quick"] == IBP_RECIPES["quick"]
    True
    """
    return _certified_trained_model(DualLoss, DUAL_RECIPES, "dual-bound", dataset, eps, train_eps, seed, device,
                                    progress, cache, overrides)
