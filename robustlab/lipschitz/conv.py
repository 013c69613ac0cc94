r"""The spectral norm of a convolution layer: the CONV-SV ("Fantastic Four") bound and the exact value.

A ``Conv2d`` with kernel :math:`K \in \mathbb R^{c_{out} \times c_{in} \times h \times w}` is,
on inputs of a given size, a linear map with Jacobian :math:`J`; its spectral norm
:math:`\|J\|_2` is the layer's L2 Lipschitz constant, the factor a product bound on a
network multiplies in.

**The bound** (:func:`conv_sv_bound`; Singla and Feizi, *Fantastic Four: differentiable
bounds on singular values of convolution layers*, ICLR 2021, arXiv 1911.10258). Reshape
:math:`K` into four matrices (:func:`reshape_matrices`),

* :math:`R_1`: :math:`(c_{out} h) \times (c_{in} w)`, rows :math:`(o, p)`, columns :math:`(i, q)`;
* :math:`R_2`: :math:`(c_{out} w) \times (c_{in} h)`, rows :math:`(o, q)`, columns :math:`(i, p)`;
* :math:`R_3`: :math:`c_{out} \times (c_{in} h w)` (the matrix of Miyato et al.'s spectral
  normalization);
* :math:`R_4`: :math:`(c_{out} h w) \times c_{in}`;

then, for every input size, zero or circular padding and every stride,

.. math:: \|J\|_2 \le \sqrt{h w}\, \min\big(\|R_1\|_2, \|R_2\|_2, \|R_3\|_2, \|R_4\|_2\big).
   :label: eq-conv-sv

Why: with circular padding the singular values of :math:`J` are those of the matrices
:math:`P(\omega) = \sum_{p,q} K_{:,:,p,q}\, e^{-i(\omega_1 p + \omega_2 q)}` (Sedghi, Gupta
and Long, 2019), and :math:`P(\omega) = A(\omega_1) R_1 B(\omega_2)` with the block row
:math:`A = [e^{-i\omega_1 p} I]_p` of norm :math:`\sqrt h` and the block column
:math:`B = [e^{-i\omega_2 q} I]_q` of norm :math:`\sqrt w`; the other three factor the same
way (:math:`R_3 = R_3 \cdot` a block column of norm :math:`\sqrt{hw}`, and so on). A zero-padded
convolution is a compression of a circular one on a larger grid and a stride keeps a
subset of the outputs, so neither can raise the norm. The bound does not depend on the
input size, costs four SVDs of matrices of at most :math:`(c k) \times (c k)` entries, and
is differentiable. It is attained by a kernel with equal taps under circular padding
(:math:`P(0) = hw\, A` while :math:`\|R_1\| = \sqrt{hw}\,\|A\|`) and by every
:math:`1 \times 1` kernel. The matrix norms are computed exactly: a truncated power
iteration under-estimates them and would not give a bound.

**The exact norm** (:func:`exact_conv_norm`): for circular padding at stride 1 with the
output the size of the input, the largest :math:`\|P(\omega)\|_2` over the grid's
frequencies (:func:`robustlab.lipschitz.operators.circular_conv_norm`); otherwise (zero
padding, strides) the largest eigenvalue of :math:`J^\top J`, with :math:`J` applied as the
convolution and :math:`J^\top` as the transposed convolution, in float64: by Lanczos
iteration (the default; power iteration, ``method="power"``, uses the same two products but
converges slowly on the clustered top of a convolution's spectrum);
``method="jacobian"`` takes the SVD of the unrolled matrix (small layers only).

Examples
--------
>>> K = torch.ones(1, 1, 3, 3)
>>> b = conv_sv_bound(K)
>>> [round(v, 4) for v in b.norms], round(b.value, 4)
([3.0, 3.0, 3.0, 3.0], 9.0)
>>> round(exact_conv_norm(K, (1, 6, 6), padding=1, padding_mode="circular").value, 4)
9.0
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_choice, check_positive, check_positive_int, check_seed, check_tensor
from .operators import circular_conv_norm

__all__ = [
    "ConvSVBound",
    "ConvNorm",
    "reshape_matrices",
    "reshape_norms",
    "conv_sv_bound",
    "exact_conv_norm",
    "PADDING_MODES",
    "NORM_METHODS",
]

PADDING_MODES = ("zeros", "circular")
NORM_METHODS = ("auto", "fft", "lanczos", "power", "jacobian")
_RESHAPES = ("R1 (c_out h) x (c_in w)", "R2 (c_out w) x (c_in h)", "R3 c_out x (c_in h w)", "R4 (c_out h w) x c_in")


class ConvSVBound(NamedTuple):
    r"""The CONV-SV bound of one kernel, :math:`\sqrt{hw}\,\min_i \|R_i\|_2` (eq. :math:numref:`eq-conv-sv`).

    ``value`` is the bound; ``norms`` the four exact :math:`\|R_i\|_2`; ``factor`` is
    :math:`\sqrt{hw}`; ``best`` names the reshape that attains the minimum; ``bounds`` is
    ``factor * norms`` (each alone is a bound too).
    """

    value: float
    norms: tuple
    factor: float
    best: str

    @property
    def bounds(self) -> tuple:
        return tuple(self.factor * n for n in self.norms)


class ConvNorm(NamedTuple):
    """The exact spectral norm of a convolution on inputs of ``input_shape``.

    ``method`` says how it was computed (``"fft"``, ``"power"``, ``"jacobian"``); for
    ``"power"``, ``iterations`` were run and ``converged`` says the relative change of the
    estimate fell below the tolerance (the value is then exact to about that tolerance;
    power iteration approaches the norm from below).
    """

    value: float
    method: str
    iterations: int
    converged: bool
    input_shape: tuple
    output_shape: tuple


def _kernel_of(kernel, name: str = "kernel") -> torch.Tensor:
    if isinstance(kernel, nn.Conv2d):
        if kernel.groups != 1 or tuple(kernel.dilation) != (1, 1):
            raise ValueError(f"{name} must be an ungrouped, undilated Conv2d (the bound is stated for those), "
                             f"got groups={kernel.groups}, dilation={tuple(kernel.dilation)}")
        kernel = kernel.weight
    kernel = check_tensor(kernel, name)
    if kernel.dim() != 4:
        raise ValueError(f"{name} must have shape (c_out, c_in, h, w), got {tuple(kernel.shape)}")
    if not kernel.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {kernel.dtype}")
    if kernel.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(kernel.shape)}")
    if not bool(torch.isfinite(kernel).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return kernel


def reshape_matrices(kernel) -> tuple:
    r"""The four reshapes :math:`R_1, \dots, R_4` of a kernel (c_out, c_in, h, w), differentiable.

    Examples
    --------
    >>> [tuple(r.shape) for r in reshape_matrices(torch.zeros(4, 2, 3, 5))]
    [(12, 10), (20, 6), (4, 30), (60, 2)]
    """
    K = _kernel_of(kernel)
    c_out, c_in, h, w = K.shape
    r1 = K.permute(0, 2, 1, 3).reshape(c_out * h, c_in * w)
    r2 = K.permute(0, 3, 1, 2).reshape(c_out * w, c_in * h)
    r3 = K.reshape(c_out, c_in * h * w)
    r4 = K.permute(0, 2, 3, 1).reshape(c_out * h * w, c_in)
    return r1, r2, r3, r4


def reshape_norms(kernel) -> torch.Tensor:
    r"""The exact :math:`\|R_i\|_2` of the four reshapes, a (4,) tensor differentiable in the kernel.

    ``reshape_norms(K).amin()`` is the normalizer of skew orthogonal convolutions
    (:class:`robustlab.lipschitz.soc.SOCConv2d`); times :math:`\sqrt{hw}` it is the bound.
    """
    return torch.stack([torch.linalg.matrix_norm(r, ord=2) for r in reshape_matrices(kernel)])


def conv_sv_bound(kernel) -> ConvSVBound:
    r"""The CONV-SV / Fantastic-Four bound :math:`\sqrt{hw}\,\min_i \|R_i\|_2 \ge \|J\|_2`.

    Valid for every input size, zero or circular padding, and every stride (see the module
    docstring). The norms are computed in float64 with an exact matrix 2-norm.

    Parameters
    ----------
    kernel : torch.Tensor or torch.nn.Conv2d
        The filter (c_out, c_in, h, w), or an ungrouped, undilated ``Conv2d``.

    Returns
    -------
    ConvSVBound
        ``(value, norms, factor, best)``.

    Examples
    --------
    >>> b = conv_sv_bound(torch.tensor([[[[3.0]]]]))  # a 1x1 kernel: the bound is exact
    >>> b.value, b.factor
    (3.0, 1.0)
    """
    K = _kernel_of(kernel).detach().double()
    norms = reshape_norms(K)
    factor = math.sqrt(K.shape[2] * K.shape[3])
    i = int(norms.argmin())
    return ConvSVBound(factor * float(norms[i]), tuple(float(n) for n in norms), factor, _RESHAPES[i])


def _conv_setup(kernel, input_shape, stride, padding, padding_mode):
    if isinstance(kernel, nn.Conv2d):
        layer = kernel
        if layer.stride != (stride, stride) and stride != 1:
            raise ValueError("stride must not be given for a Conv2d layer (its own stride is used)")
        stride = layer.stride
        if padding is None:
            padding = layer.padding
        if padding_mode is None:
            padding_mode = layer.padding_mode
        if isinstance(padding, str):
            raise ValueError("padding must be numeric; 'same' / 'valid' layers are not supported")
    K = _kernel_of(kernel)
    padding = (0, 0) if padding is None else padding
    padding_mode = "zeros" if padding_mode is None else padding_mode
    check_choice(padding_mode, "padding_mode", PADDING_MODES)
    stride = (stride, stride) if isinstance(stride, int) else tuple(stride)
    padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
    for s in stride:
        check_positive_int(s, "stride")
    for p in padding:
        check_positive_int(p, "padding", allow_zero=True)
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
    if shape is None or len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {input_shape!r}")
    if shape[0] != K.shape[1]:
        raise ValueError(f"input_shape must have C = c_in = {K.shape[1]} channels, got {shape}")
    return K, shape, stride, padding, padding_mode


def _apply(K, x, stride, padding, padding_mode):
    if padding_mode == "circular":
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]), mode="circular")
        return F.conv2d(x, K, stride=stride)
    return F.conv2d(x, K, stride=stride, padding=padding)


def _apply_transpose(K, u, stride, padding, padding_mode, shape):
    if padding_mode == "zeros":
        h, w = shape[1:]
        out = F.conv_transpose2d(u, K, stride=stride, padding=padding)
        # the rows and columns a stride skipped at the end: output_padding puts them back
        extra = (h - out.shape[2], w - out.shape[3])
        if extra != (0, 0):
            out = F.conv_transpose2d(u, K, stride=stride, padding=padding, output_padding=extra)
        return out
    v = torch.zeros((u.shape[0],) + shape, dtype=u.dtype, device=u.device, requires_grad=True)
    with torch.enable_grad():
        out = _apply(K, v, stride, padding, padding_mode)
        return torch.autograd.grad(out, v, u)[0]


@torch.no_grad()
def exact_conv_norm(kernel, input_shape, *, stride=1, padding=None, padding_mode=None, method: str = "auto",
                    iters: int = 2000, tol: float = 1e-12, seed: int = 0, max_unrolled: int = 4096) -> ConvNorm:
    r"""The spectral norm :math:`\|J\|_2` of a convolution on inputs of shape ``input_shape`` (C, H, W).

    Parameters
    ----------
    kernel : torch.Tensor or torch.nn.Conv2d
        The filter (c_out, c_in, h, w), or a layer (its stride, padding and padding mode
        are used unless ``padding`` / ``padding_mode`` are given).
    input_shape : tuple
        (C, H, W) of the layer's inputs.
    stride, padding : int or pair
        As in ``torch.nn.functional.conv2d`` (default stride 1, padding 0).
    padding_mode : {"zeros", "circular"}
    method : {"auto", "fft", "power", "jacobian"}
        ``"fft"``: the circular-convolution formula (stride 1, circular padding, output of
        the input's size); ``"power"``: power iteration on :math:`J^\top J` with conv2d and
        conv_transpose2d (it approaches the norm from below, slowly when the top of the
        spectrum is clustered, as it is for convolutions); ``"lanczos"``: the same products
        in a Krylov method (scipy's ARPACK), exact to ``tol`` in a few dozen products;
        ``"jacobian"``: SVD of the unrolled matrix (at most ``max_unrolled`` inputs);
        ``"auto"``: ``"fft"`` where it applies, else ``"lanczos"``.
    iters, tol : int, float
        Most power iterations, and the relative change of the estimate that stops them.
    seed : int
        Seed of the power iteration's start vector.

    Returns
    -------
    ConvNorm

    Examples
    --------
    >>> K = torch.zeros(1, 1, 3, 3); K[0, 0, 1, 1] = 2.0
    >>> r = exact_conv_norm(K, (1, 5, 5), padding=1)
    >>> round(r.value, 6), r.method, r.converged
    (2.0, 'lanczos', True)
    """
    K, shape, stride, padding, padding_mode = _conv_setup(kernel, input_shape, stride, padding, padding_mode)
    check_choice(method, "method", NORM_METHODS)
    check_positive_int(iters, "iters")
    check_positive(tol, "tol")
    gen = torch.Generator().manual_seed(check_seed(seed))
    K = K.detach().double()
    probe = _apply(K, torch.zeros((1,) + shape, dtype=K.dtype, device=K.device), stride, padding, padding_mode)
    out_shape = tuple(probe.shape[1:])
    if out_shape[1] < 1 or out_shape[2] < 1:
        raise ValueError(f"input_shape {shape} is too small for this kernel and padding")
    fft_ok = padding_mode == "circular" and stride == (1, 1) and out_shape[1:] == shape[1:]
    if method == "auto":
        method = "fft" if fft_ok else "lanczos"
    if method == "fft":
        if not fft_ok:
            raise ValueError("method='fft' needs circular padding, stride 1 and an output of the input's size "
                             "(padding = (k - 1) / 2)")
        return ConvNorm(float(circular_conv_norm(K, shape[1:])), "fft", 0, True, shape, out_shape)
    n = math.prod(shape)
    if method == "jacobian":
        if n > max_unrolled:
            raise ValueError(f"method='jacobian' unrolls the layer into a matrix with {n} columns, more than "
                             f"max_unrolled={max_unrolled}")
        eye = torch.eye(n, dtype=K.dtype, device=K.device).view((n,) + shape)
        J = _apply(K, eye, stride, padding, padding_mode).flatten(1).T
        return ConvNorm(float(torch.linalg.matrix_norm(J, ord=2)), "jacobian", 0, True, shape, out_shape)
    v = torch.randn((1,) + shape, generator=gen, dtype=K.dtype).to(K.device)
    v = v / v.norm()
    if method == "lanczos":
        return _lanczos(K, v, stride, padding, padding_mode, shape, out_shape, iters, tol)
    sigma, converged, it = 0.0, False, 0
    for it in range(1, iters + 1):
        u = _apply(K, v, stride, padding, padding_mode)
        new = float(u.norm())
        v = _apply_transpose(K, u, stride, padding, padding_mode, shape)
        norm = float(v.norm())
        if norm == 0.0:  # the zero operator (or a start vector in its kernel)
            sigma, converged = new, True
            break
        v = v / norm
        if abs(new - sigma) <= tol * max(new, 1e-300):
            sigma, converged = new, True
            break
        sigma = new
    return ConvNorm(sigma, "power", it, converged, shape, out_shape)


def _lanczos(K, v, stride, padding, padding_mode, shape, out_shape, iters, tol):
    # the largest eigenvalue of J^T J by implicitly restarted Lanczos (ARPACK): the Krylov
    # space of the power iteration, which converges far faster on the clustered top of a
    # convolution's spectrum
    import numpy as np
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    n = math.prod(shape)
    if n == 1:
        u = _apply(K, v, stride, padding, padding_mode)
        return ConvNorm(float(u.norm() / v.norm()), "lanczos", 1, True, shape, out_shape)
    count = [0]

    def gram(z):
        count[0] += 1
        t = torch.as_tensor(np.asarray(z).reshape((1,) + shape), dtype=K.dtype, device=K.device)
        u = _apply(K, t, stride, padding, padding_mode)
        return _apply_transpose(K, u, stride, padding, padding_mode, shape).flatten().cpu().numpy()

    op = LinearOperator((n, n), matvec=gram, dtype=np.float64)
    start = v.flatten().cpu().numpy()
    try:
        lam = eigsh(op, k=1, which="LA", v0=start, tol=tol, maxiter=iters, ncv=min(n, 20),
                    return_eigenvectors=False)[0]
        converged = True
    except ArpackNoConvergence as err:
        lam = err.eigenvalues[0] if len(err.eigenvalues) else 0.0
        converged = False
    return ConvNorm(math.sqrt(max(float(lam), 0.0)), "lanczos", count[0], converged, shape, out_shape)
