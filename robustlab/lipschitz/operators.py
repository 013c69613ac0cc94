r"""Operator norms of linear layers: the Lipschitz constants of their linear parts.

A layer :math:`h(x) = Wx + b` (``torch.nn.Linear``, or a ``torch.nn.Conv2d`` read as the
linear map on inputs of a given shape) changes its output by at most
:math:`\|W\|_{p,q}\,\|x - x'\|_p` in the :math:`q`-norm, with the operator norm

.. math::

    \|W\|_{p,q} = \sup_{x \ne 0} \frac{\|Wx\|_q}{\|x\|_p} .

It is the sensitivity :math:`N_{p,q}` that PixelDP calibrates its noise with
(:func:`robustlab.smoothing.dp.sensitivity`), and the per-layer factor of every product
bound on a network's Lipschitz constant. :func:`operator_norm` computes it:

* exactly where a formula is exact: :math:`p = 1` (the largest column :math:`q`-norm),
  :math:`q = \infty` (the largest row :math:`p^*`-norm), :math:`p = q = 2` (the largest
  singular value), and the NP-hard cases on small layers by enumerating the vertices of
  the cube (:func:`vertex_enumeration`);
* otherwise as the smaller of two upper bounds (:func:`norm_bound` names which), with a
  lower estimate from test points (:func:`lower_estimate`) so the true value lies in
  ``[lower, value]``.

A convolution is never unrolled unless it is small (:func:`linear_operator`): its column
and row norms come from convolutions of :math:`|K|^r`, and its spectral norm is bounded by
that of the circular convolution on a grid large enough to avoid wrap-around, whose
singular values are those of the per-frequency matrices of the kernel's 2-D DFT
(:func:`conv_spectral_bound`; Sedghi, Gupta and Long, *The singular values of
convolutional layers*, ICLR 2019).

The operators (:class:`DenseOperator`, :class:`ConvOperator`) are computed
differentiably, so a training loop can divide a layer by its current norm (PixelDP does).
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_positive_int, parse_norm

__all__ = [
    "OperatorNorm",
    "operator_norm",
    "DenseOperator",
    "ConvOperator",
    "linear_operator",
    "unrolled",
    "norm_bound",
    "conv_spectral_bound",
    "circular_conv_norm",
    "vertex_enumeration",
    "lower_estimate",
]

_INF = math.inf


def _dual(p: float) -> float:
    return 1.0 if p == _INF else (_INF if p == 1.0 else p / (p - 1.0))


def _vec_norm(v: torch.Tensor, q: float, dim=-1) -> torch.Tensor:
    return torch.linalg.vector_norm(v, ord=q, dim=dim)


class DenseOperator:
    """The matrix W (m, n) of a linear map, as a dense tensor.

    ``apply(x)`` maps (B, n) to (B, m); ``col_norms(q)`` and ``row_norms(r)`` are the
    norms of its columns and rows; ``spectral()`` is ``(largest singular value, True, method)``.
    """

    def __init__(self, weight: torch.Tensor):
        self.W = weight
        self.m, self.n = weight.shape

    def apply(self, x):  # x (B, n) -> (B, m)
        return x @ self.W.T

    def col_norms(self, q):
        return _vec_norm(self.W, q, dim=0)

    def row_norms(self, r):
        return _vec_norm(self.W, r, dim=1)

    def spectral(self):
        return torch.linalg.matrix_norm(self.W, ord=2), True, "largest singular value"


class ConvOperator:
    """A Conv2d's linear part (no bias) on inputs of shape ``input_shape``, never unrolled.

    The same methods as :class:`DenseOperator`, computed by convolutions: column and row
    norms exactly, the spectral norm as :func:`conv_spectral_bound`.
    """

    def __init__(self, layer: nn.Conv2d, weight: torch.Tensor, input_shape):
        self.K, self.layer, self.shape = weight, layer, tuple(input_shape)
        self.kw = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups)
        with torch.no_grad():
            out = F.conv2d(torch.zeros((1,) + self.shape, dtype=weight.dtype, device=weight.device), weight, **self.kw)
        self.out_shape = tuple(out.shape[1:])
        self.n, self.m = math.prod(self.shape), math.prod(self.out_shape)

    def apply(self, x):
        return F.conv2d(x.view((-1,) + self.shape), self.K, **self.kw).flatten(1)

    def col_norms(self, q):
        if q == _INF:  # every column holds a subset of the kernel's taps of its channel
            return self.K.abs().amax(dim=(0, 2, 3))
        ones = torch.ones((1,) + self.out_shape, dtype=self.K.dtype, device=self.K.device)
        cols = torch.nn.grad.conv2d_input((1,) + self.shape, self.K.abs() ** q, ones, **self.kw)
        return cols.flatten().clamp_min(0) ** (1.0 / q)

    def row_norms(self, r):
        if r == _INF:
            return self.K.abs().amax(dim=(1, 2, 3))
        ones = torch.ones((1,) + self.shape, dtype=self.K.dtype, device=self.K.device)
        return F.conv2d(ones, self.K.abs() ** r, **self.kw).flatten().clamp_min(0) ** (1.0 / r)

    def spectral(self):
        if self.layer.groups == 1 and self.layer.dilation == (1, 1):
            return _circular_bound(self.K, self.shape), False, "circular-convolution bound (FFT)"
        bound = torch.sqrt(self.col_norms(1.0).amax() * self.row_norms(1.0).amax())
        return bound, False, "sqrt(||W||_1->1 ||W||_inf->inf) bound"


def _circular_bound(kernel: torch.Tensor, input_shape) -> torch.Tensor:
    # The zero-padded (and strided) conv is a submatrix of the circular conv on an
    # N x N grid with N >= H + k - 1 (no wrap-around), whose singular values are
    # those of the per-frequency (c_out x c_in) matrices of the kernel's 2-D DFT.
    kh, kw = kernel.shape[2:]
    return circular_conv_norm(kernel, (input_shape[1] + kh - 1, input_shape[2] + kw - 1))


def circular_conv_norm(kernel: torch.Tensor, grid) -> torch.Tensor:
    r"""The exact spectral norm of the stride-1 circular convolution with ``kernel`` on a ``grid``.

    On an :math:`n_1 \times n_2` torus the convolution is block doubly circulant; its
    singular values are those of the :math:`n_1 n_2` matrices
    :math:`P(\omega) = \sum_{p,q} K_{:,:,p,q}\, e^{-2\pi i(\omega_1 p/n_1 + \omega_2 q/n_2)}`
    (Sedghi, Gupta and Long, 2019), so the norm is :math:`\max_\omega \|P(\omega)\|_2`.
    Taps beyond the grid wrap around (they are added modulo :math:`n`); a shift of the
    kernel (the padding offset) multiplies :math:`P(\omega)` by a phase and changes nothing.
    Returns a 0-d tensor, differentiable in ``kernel`` (c_out, c_in, h, w).
    """
    n1, n2 = (int(g) for g in grid)
    kh, kw = kernel.shape[2:]
    if kh > n1 or kw > n2:  # fold the taps onto the torus
        folded = kernel.new_zeros(kernel.shape[:2] + (n1, n2))
        for p in range(kh):
            for q in range(kw):
                folded[:, :, p % n1, q % n2] += kernel[:, :, p, q]
        kernel = folded
    spec = torch.fft.fft2(kernel, s=(n1, n2)).permute(2, 3, 0, 1)
    return torch.linalg.matrix_norm(spec, ord=2).amax()


def conv_spectral_bound(layer: nn.Conv2d, input_shape) -> float:
    r"""An upper bound on the spectral norm :math:`\|W\|_{2,2}` of a ``Conv2d``'s linear part.

    The zero-padded convolution on inputs of shape (C, H, W) is a submatrix of the
    circular convolution on an :math:`(H + k_h - 1) \times (W + k_w - 1)` grid (no
    wrap-around reaches the kept outputs; a stride keeps a subset of the rows), so its
    spectral norm is at most the circular one, which is the largest singular value of the
    :math:`c_{out} \times c_{in}` matrices :math:`\hat K(\omega)` of the kernel's 2-D DFT
    (Sedghi et al., 2019). Grouped or dilated convolutions get the bound
    :math:`\sqrt{\|W\|_{1,1}\|W\|_{\infty,\infty}}` instead.

    Examples
    --------
    >>> conv = nn.Conv2d(1, 1, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = conv.weight.fill_(3.0)
    >>> conv_spectral_bound(conv, (1, 4, 4))  # a 1x1 kernel multiplies by 3
    3.0
    """
    _check_layer(layer, input_shape)
    if not isinstance(layer, nn.Conv2d):
        raise TypeError(f"layer must be a torch.nn.Conv2d, got {type(layer).__name__}")
    with torch.no_grad():
        op = ConvOperator(layer, layer.weight.detach().double(), input_shape)
        return float(op.spectral()[0])


def unrolled(conv: ConvOperator) -> DenseOperator:
    """The matrix of a convolution's linear map: its images of the basis vectors (n columns)."""
    eye = torch.eye(conv.n, dtype=conv.K.dtype, device=conv.K.device)
    return DenseOperator(conv.apply(eye).T)


def linear_operator(layer, weight=None, input_shape=None, unroll_limit: int = 4096):
    """The linear part of ``layer`` with weight ``weight`` (default: the layer's own), as an operator.

    A ``Linear`` gives a :class:`DenseOperator`; a ``Conv2d`` on inputs of ``input_shape``
    gives its unrolled matrix when it has at most ``unroll_limit`` inputs, else a
    :class:`ConvOperator`. ``weight`` may carry gradients (and a folded normalization).
    """
    if weight is None:
        weight = layer.weight
    if isinstance(layer, nn.Linear):
        return DenseOperator(weight)
    conv = ConvOperator(layer, weight, input_shape)
    return unrolled(conv) if conv.n <= unroll_limit else conv


def norm_bound(op, p: float, q: float):
    r"""``(value, exact, method)``: :math:`\|W\|_{p,q}` of an operator where a formula is exact,
    else the smaller of two upper bounds; ``value`` is a 0-d tensor (differentiable in the weight).

    ``p`` and ``q`` are 1.0, 2.0 or ``math.inf``.
    """
    if p == 1.0:
        return op.col_norms(q).amax(), True, f"largest column L{_name(q)} norm"
    if q == _INF:
        return op.row_norms(_dual(p)).amax(), True, f"largest row L{_name(_dual(p))} norm"
    if p == 2.0 and q == 2.0:
        return op.spectral()
    if p == _INF and q == 2.0:
        sigma, _, _ = op.spectral()
        candidates = torch.stack([sigma * math.sqrt(op.n), _vec_norm(op.row_norms(1.0), 2.0)])
        return candidates.amin(), False, "min(sqrt(n) ||W||_2, ||row L1 norms||_2) bound"
    if p == _INF and q == 1.0:
        inf2, _, _ = norm_bound(op, _INF, 2.0)
        candidates = torch.stack([op.row_norms(1.0).sum(), inf2 * math.sqrt(op.m)])
        return candidates.amin(), False, "min(sum |W_ij|, sqrt(m) ||W||_inf,2) bound"
    # p == 2, q == 1
    sigma, _, _ = op.spectral()
    candidates = torch.stack([op.row_norms(2.0).sum(), sigma * math.sqrt(op.m)])
    return candidates.amin(), False, "min(sum of row L2 norms, sqrt(m) ||W||_2) bound"


def _name(p: float) -> str:
    return "inf" if p == _INF else str(int(p))


def _check_pq(value, name):
    p = parse_norm(value, name)
    if p == 0.0:
        raise ValueError(f"{name} must be 1, 2 or inf ('l1', 'l2', 'linf'); L0 is not a norm, got {value!r}")
    return p


def _check_layer(layer, input_shape, name="layer"):
    if not isinstance(layer, (nn.Linear, nn.Conv2d)):
        raise TypeError(f"{name} must be a torch.nn.Linear or torch.nn.Conv2d, got {type(layer).__name__}")
    if isinstance(layer, nn.Conv2d):
        if input_shape is None:
            raise ValueError("input_shape (C, H, W) is needed for a Conv2d: its operator depends on the input size")
        if len(tuple(input_shape)) != 3 or tuple(input_shape)[0] != layer.in_channels:
            raise ValueError(f"input_shape must be (C, H, W) with C = {layer.in_channels} for this Conv2d, "
                             f"got {tuple(input_shape)}")
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise ValueError("layer must use numeric zero padding (padding_mode='zeros')")


class OperatorNorm(NamedTuple):
    r"""An operator norm :math:`\|W\|_{p,q} = \sup_{x \ne 0} \|Wx\|_q / \|x\|_p` of a layer.

    ``value`` is exact when ``exact`` is True and an upper bound otherwise; ``lower`` is
    the largest ratio :math:`\|Wx\|_q / \|x\|_p` found at test points (a lower bound), so
    the true value lies in ``[lower, value]``.
    """

    value: float
    exact: bool
    method: str
    lower: float
    p: float
    q: float


def operator_norm(layer, p="l2", q="l2", *, input_shape=None, max_vertices: int = 2 ** 16,
                unroll_limit: int = 4096) -> OperatorNorm:
    r"""The operator norm :math:`\|W\|_{p,q} = \sup_{x \ne 0} \|Wx\|_q / \|x\|_p` of a layer.

    The bias cancels in :math:`h(x) - h(x')`, so this is the Lipschitz constant of the
    layer :math:`h(x) = Wx + b` from the :math:`p`- to the :math:`q`-norm (PixelDP's
    sensitivity :math:`N_{p,q}`, Lecuyer et al., 2019). Exact cases:

    * :math:`p = 1`, any :math:`q`: the largest column :math:`q`-norm (a convex function
      on the :math:`L_1` ball peaks at a vertex :math:`\pm e_j`);
    * :math:`q = \infty`, any :math:`p`: the largest row :math:`p^*`-norm (Hölder, with
      equality), :math:`1/p + 1/p^* = 1`;
    * :math:`p = q = 2`: the largest singular value;
    * :math:`p = \infty` with :math:`n \le \log_2` ``max_vertices`` + 1 inputs, or
      :math:`q = 1` with that few outputs: enumeration of the cube's vertices
      (:math:`\|W\|_{\infty,q} = \max_{s \in \{\pm 1\}^n} \|Ws\|_q`, and
      :math:`\|W\|_{p,1} = \max_{s \in \{\pm1\}^m} \|W^\top s\|_{p^*}`).

    Otherwise (:math:`(\infty, 2)`, :math:`(\infty, 1)`, :math:`(2, 1)` on larger layers,
    which are NP-hard in general) it returns the smaller of two upper bounds, named in
    ``method``. A ``Conv2d`` is handled as the linear map on inputs of ``input_shape``:
    unrolled into its matrix when it has at most ``unroll_limit`` inputs, otherwise
    through convolutions (column and row norms stay exact; its spectral norm is bounded
    by that of the circular convolution on a grid large enough to avoid wrap-around).

    Parameters
    ----------
    layer : torch.nn.Linear or torch.nn.Conv2d
    p, q : {"l1", "l2", "linf"} or {1, 2, inf}
        Input and output norms.
    input_shape : tuple (C, H, W), optional
        Needed for a ``Conv2d``.
    max_vertices : int
        Largest number of sign vectors enumerated for an exact hard case.
    unroll_limit : int
        Largest number of inputs for which a ``Conv2d`` is unrolled into its matrix.

    Returns
    -------
    OperatorNorm
        ``(value, exact, method, lower, p, q)``.

    Examples
    --------
    >>> W = nn.Linear(2, 2, bias=False)
    >>> with torch.no_grad():
    ...     _ = W.weight.copy_(torch.tensor([[3.0, 0.0], [4.0, 1.0]]))
    >>> s = operator_norm(W, "l1", "l1")
    >>> s.value, s.exact
    (7.0, True)
    >>> round(operator_norm(W, "l2", "l2").value, 4)
    5.0645
    """
    p, q = _check_pq(p, "p"), _check_pq(q, "q")
    _check_layer(layer, input_shape)
    check_positive_int(max_vertices, "max_vertices")
    check_positive_int(unroll_limit, "unroll_limit", allow_zero=True)
    with torch.no_grad():
        weight = layer.weight.detach().double()
        op = linear_operator(layer, weight, input_shape, unroll_limit)
        value, exact, method = norm_bound(op, p, q)
        value = float(value)
        if not exact and isinstance(op, DenseOperator):
            vertex = vertex_enumeration(op.W, p, q, max_vertices)
            if vertex is not None:
                value, exact, method = vertex, True, "enumeration of the vertices of the cube"
        lower = value if exact else lower_estimate(op, p, q)
    return OperatorNorm(value, exact, method, min(lower, value), p, q)


def _signs(k: int, dtype, device) -> torch.Tensor:
    """All sign vectors of length k with a fixed first sign (s and -s give the same norm)."""
    rows = torch.tensor(list(itertools.product((1.0, -1.0), repeat=k - 1)), dtype=dtype, device=device)
    return torch.cat([torch.ones(rows.shape[0], 1, dtype=dtype, device=device), rows.view(-1, k - 1)], dim=1)


def vertex_enumeration(W: torch.Tensor, p: float, q: float, max_vertices: int):
    r"""The exact :math:`\|W\|_{p,q}` by enumerating sign vectors, or None when too many.

    :math:`\|W\|_{\infty,q} = \max_{s \in \{\pm 1\}^n} \|Ws\|_q` (a convex function peaks
    at a vertex of the cube) and :math:`\|W\|_{p,1} = \max_{s \in \{\pm1\}^m} \|W^\top s\|_{p^*}`
    (duality); used when :math:`2^{k-1} \le` ``max_vertices`` for the smaller side :math:`k`.
    """
    m, n = W.shape
    options = []
    if p == _INF and 2 ** (n - 1) <= max_vertices:
        options.append((n, lambda s: _vec_norm(s @ W.T, q, dim=1)))
    if q == 1.0 and 2 ** (m - 1) <= max_vertices:
        options.append((m, lambda s: _vec_norm(s @ W, _dual(p), dim=1)))
    if not options:
        return None
    k, ratio = min(options, key=lambda o: o[0])
    s = _signs(k, W.dtype, W.device)
    return float(max(ratio(s[i:i + 4096]).amax() for i in range(0, s.shape[0], 4096)))


def lower_estimate(op, p: float, q: float, iters: int = 50, samples: int = 256) -> float:
    """A lower bound on ||W||_{p,q}: the largest ||Wx||_q / ||x||_p over basis vectors, random sign
    vectors and a power iterate of W^T W (seeded, so the same operator gives the same number)."""
    gen = torch.Generator().manual_seed(0)
    dtype = op.W.dtype if isinstance(op, DenseOperator) else op.K.dtype
    device = op.W.device if isinstance(op, DenseOperator) else op.K.device
    signs = (torch.randint(0, 2, (samples, op.n), generator=gen).to(dtype) * 2 - 1).to(device)
    v = torch.randn(1, op.n, generator=gen, dtype=dtype).to(device)
    for _ in range(iters):  # power iteration on W^T W: its direction is good for every (p, q)
        w = op.apply(v)
        v = torch.autograd.functional.vjp(op.apply, v, w)[1] if isinstance(op, ConvOperator) else w @ op.W
        v = v / v.norm().clamp_min(1e-30)
    points = torch.cat([signs, v, v.sign()])
    ratios = _vec_norm(op.apply(points), q, dim=1) / _vec_norm(points, p, dim=1)
    best = float(ratios.amax())
    return max(best, float(op.col_norms(q).amax()))  # a basis vector e_j has ||e_j||_p = 1

