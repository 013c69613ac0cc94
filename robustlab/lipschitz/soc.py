r"""Skew orthogonal convolutions (SOC), 1-Lipschitz networks and their Lipschitz-margin certificate.

(Singla and Feizi, *Skew orthogonal convolutions*, ICML 2021, arXiv 2105.11417.)

**Skew-symmetric filters.** For an odd kernel with zero padding :math:`k // 2` and stride 1,
convolving with the *transposed filter* :math:`M^\top` (in and out channels swapped, both
spatial axes flipped; :func:`transpose_filter`) has Jacobian :math:`J_M^\top`, the transpose
of the Jacobian of convolving with :math:`M`. So the filter

.. math:: L = M - M^\top
   :label: eq-skew-filter

(:func:`skew_filter`) has a skew-symmetric Jacobian, :math:`J_L^\top = -J_L`, whatever
:math:`M` is, and the matrix exponential of a skew-symmetric matrix is orthogonal:
:math:`\exp(J)^\top \exp(J) = \exp(-J)\exp(J) = I`.

**The layer.** :class:`SOCConv2d` computes :math:`\exp(J)x` with its Taylor series cut after
:math:`T` terms, each term one more convolution,

.. math:: z = \sum_{i=0}^{T} \frac{J^i x}{i!} = x + \frac{L \star x}{1!} + \frac{L \star (L \star x)}{2!} + \cdots
   :label: eq-soc-taylor

at a cost of :math:`T` convolutions. **The error is provably small**: :math:`J` is normal with
eigenvalues :math:`i\theta`, :math:`|\theta| \le \|J\|_2`, and for an imaginary argument the
Taylor remainder obeys :math:`|e^{i\theta} - \sum_{i \le T} (i\theta)^i/i!| \le
|\theta|^{T+1}/(T+1)!`, so

.. math:: \Big\|\exp(J) - \sum_{i=0}^{T} \frac{J^i}{i!}\Big\|_2 \le \delta = \frac{\|J\|_2^{T+1}}{(T+1)!},
   :label: eq-soc-truncation

and every singular value of the truncated layer lies in :math:`[1 - \delta, 1 + \delta]`
(:func:`truncation_bound`). To keep :math:`\|J\|_2` small the filter is divided by the
smallest of the four reshape norms of :func:`robustlab.lipschitz.conv.reshape_norms` and
multiplied by 0.7 (1 for a :math:`1 \times 1` kernel), so the CONV-SV bound gives
:math:`\|J\|_2 \le 0.7 \sqrt{hw} = 2.1` for :math:`3 \times 3`; with the 12 terms of evaluation
:math:`\delta \le 2.5 \cdot 10^{-6}`, with the 5 terms of training up to 0.12 (training-mode
layers are only roughly orthogonal: certify in eval mode). The norms are computed exactly
for the certificate (an SVD of a small matrix); the scale itself is estimated as in the
reference code, by one power-iteration step per training step.

Strides and channels: a stride-2 layer first rearranges each :math:`2 \times 2` block into
channels (``pixel_unshuffle``, a permutation); if :math:`c_{out}` exceeds the input's channels
they are padded with zeros (an isometry), and if it is smaller the first :math:`c_{out}` are
kept (a projection, norm 1). :class:`MaxMin` (GroupSort with groups of 2: the halves
:math:`a, b` of the channels become :math:`(\max(a, b), \min(a, b))`) has a permutation as its
Jacobian, so it is 1-Lipschitz and preserves gradient norms.

**The certificate** (:func:`lipschitz_certificate`, :func:`certify`). If the logits
:math:`f` are :math:`L`-Lipschitz in L2, the margin
:math:`M(x) = f_{\hat y}(x) - \max_{j \ne \hat y} f_j(x)` moves by at most
:math:`\|e_{\hat y} - e_j\|_2\, L \|\delta\|_2 = \sqrt2 L \|\delta\|_2`, so the prediction
cannot change while

.. math:: \|\delta\|_2 < R(x) = \frac{M(x)}{\sqrt2\, L}.
   :label: eq-lipschitz-margin

:math:`L` is the product of the layers' constants (:func:`lipschitz_constants`): the input
standardization's :math:`1/\min_c \sigma_c`, :math:`1 + \delta_l` for every SOC layer (with
:math:`\delta_l` from eq. :math:numref:`eq-soc-truncation` and :math:`\|J_l\|_2` bounded by
CONV-SV, so it is an upper bound), 1 for MaxMin and the rearrangements, and the exact
spectral norm of the final linear layer. The power-method constant of each layer
(measured, the NeurIPS-2022 follow-up's correction) is reported beside it.

Examples
--------
>>> net = soc_net("digits", width=4, blocks=1, seed=0).eval()
>>> x = torch.rand(2, 1, 8, 8)
>>> cert = certify(net, x)
>>> cert.unit, cert.method, cert.alpha, bool((cert.radius >= 0).all())
('L2 pixels', 'soc-lipschitz-margin', None, True)
>>> round(truncation_bound(2.1, 12), 8)
2.48e-06
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import config
from .. import data as _data
from .. import models as _models
from .. import train as _train
from ..certificates import UNITS, Certificate
from .._validate import check_choice, check_images, check_model, check_positive, check_positive_int, check_seed, check_tensor
from .conv import exact_conv_norm, reshape_matrices, reshape_norms

__all__ = [
    "transpose_filter",
    "skew_filter",
    "truncation_bound",
    "MaxMin",
    "SOCConv2d",
    "SpectralLinear",
    "soc_net",
    "SOC_RECIPES",
    "soc_model",
    "LayerConstant",
    "LipschitzConstants",
    "lipschitz_constants",
    "lipschitz_certificate",
    "certify",
]


def transpose_filter(kernel: torch.Tensor) -> torch.Tensor:
    r"""The filter :math:`M^\top` (c_in, c_out, h, w): channels swapped and both spatial axes flipped.

    For an odd kernel, zero padding :math:`k // 2` and stride 1, convolving with it is the
    transpose of convolving with ``kernel`` (the adjoint, i.e. ``conv_transpose2d``).
    """
    kernel = check_tensor(kernel, "kernel")
    if kernel.dim() != 4:
        raise ValueError(f"kernel must have shape (c_out, c_in, h, w), got {tuple(kernel.shape)}")
    return kernel.transpose(0, 1).flip(2, 3)


def skew_filter(kernel: torch.Tensor) -> torch.Tensor:
    r"""The skew-symmetric filter :math:`L = M - M^\top` (eq. :math:numref:`eq-skew-filter`).

    ``kernel`` must be square in channels and spatially odd (c, c, k, k): then convolving
    with the result, with zero padding :math:`k // 2`, has a skew-symmetric Jacobian.

    Examples
    --------
    >>> L = skew_filter(torch.randn(2, 2, 3, 3))
    >>> bool(torch.equal(transpose_filter(L), -L))
    True
    """
    kernel = check_tensor(kernel, "kernel")
    if kernel.dim() != 4 or kernel.shape[0] != kernel.shape[1] or kernel.shape[2] != kernel.shape[3] \
            or kernel.shape[2] % 2 == 0:
        raise ValueError(f"kernel must have shape (c, c, k, k) with k odd, got {tuple(kernel.shape)}")
    return kernel - transpose_filter(kernel)


def truncation_bound(jacobian_norm: float, terms: int) -> float:
    r""":math:`\delta = \|J\|^{T+1} / (T+1)!`, the bound of eq. :math:numref:`eq-soc-truncation`.

    ``terms`` is :math:`T`, the highest power kept (the layer costs :math:`T` convolutions).

    Examples
    --------
    >>> round(truncation_bound(1.0, 2), 12)  # 1/3!
    0.166666666667
    """
    if not isinstance(jacobian_norm, (int, float)) or not math.isfinite(jacobian_norm) or jacobian_norm < 0:
        raise ValueError(f"jacobian_norm must be a finite number >= 0, got {jacobian_norm!r}")
    terms = check_positive_int(terms, "terms")
    return math.exp((terms + 1) * math.log(jacobian_norm) - math.lgamma(terms + 2)) if jacobian_norm > 0 else 0.0


class MaxMin(nn.Module):
    """GroupSort with groups of two: channel halves ``a, b`` become ``(max(a, b), min(a, b))``.

    Its Jacobian is a permutation almost everywhere: 1-Lipschitz and gradient-norm preserving.
    Needs an even number of channels (dimension 1).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] % 2:
            raise ValueError(f"MaxMin needs an even number of channels (dimension 1), got shape {tuple(x.shape)}")
        a, b = x.chunk(2, dim=1)
        return torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=1)


class SOCConv2d(nn.Module):
    r"""A skew orthogonal convolution: :math:`z = \sum_{i \le T} J^i x / i! + b` with :math:`J` skew.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int
        Odd (1, 3, 5, ...).
    stride : {1, 2}
        2 rearranges 2x2 blocks into channels first (``pixel_unshuffle``).
    terms_train, terms_eval : int
        :math:`T` in training and in eval mode (the reference's 5 and 12).
    scale : float, optional
        The normalized filter is ``scale * L / min_i ||R_i(L)||``; default 0.7, or 1.0 for
        a 1x1 kernel.
    bias : bool
    normalizer : {"power", "exact"}
        How the filter's scale is estimated (see :meth:`skew`).

    The internal width is :math:`c = \max(c_{in} s^2, c_{out})`; the parameter ``weight``
    is :math:`M`, of shape (c, c, k, k).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, *,
                 terms_train: int = 5, terms_eval: int = 12, scale: float | None = None, bias: bool = True,
                 normalizer: str = "power"):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.kernel_size = check_positive_int(kernel_size, "kernel_size")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (the transpose trick needs a centred kernel), got {kernel_size}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        self.stride = stride
        self.terms_train = check_positive_int(terms_train, "terms_train")
        self.terms_eval = check_positive_int(terms_eval, "terms_eval")
        self.scale = (1.0 if kernel_size == 1 else 0.7) if scale is None else float(check_positive(scale, "scale"))
        self.channels = max(in_channels * stride ** 2, out_channels)
        c, k = self.channels, self.kernel_size
        self.weight = nn.Parameter(torch.randn(c, c, k, k) / math.sqrt(c * k * k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        check_choice(normalizer, "normalizer", ("power", "exact"))
        self.normalizer = normalizer
        if normalizer == "power":
            # the power-iteration vectors of the four reshapes, kept between steps (one
            # iteration per training step, none in eval; 50 now)
            with torch.no_grad():
                for i, r in enumerate(reshape_matrices(skew_filter(self.weight))):
                    self.register_buffer(f"_u{i}", F.normalize(torch.randn(r.shape[0]), dim=0))
                    self.register_buffer(f"_v{i}", F.normalize(torch.randn(r.shape[1]), dim=0))
                self._power_step(50)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"terms_train={self.terms_train}, terms_eval={self.terms_eval}, scale={self.scale}, "
                f"bias={self.bias is not None}, normalizer={self.normalizer!r}")

    @property
    def terms(self) -> int:
        """The number of Taylor terms :math:`T` used now (training or eval mode)."""
        return self.terms_train if self.training else self.terms_eval

    @torch.no_grad()
    def _power_step(self, iters: int = 1) -> None:
        mats = reshape_matrices(skew_filter(self.weight.detach()))
        for i, r in enumerate(mats):
            u, v = getattr(self, f"_u{i}"), getattr(self, f"_v{i}")
            for _ in range(iters):
                v = F.normalize(r.T @ u, dim=0, eps=1e-12)
                u = F.normalize(r @ v, dim=0, eps=1e-12)
            getattr(self, f"_u{i}").copy_(u)
            getattr(self, f"_v{i}").copy_(v)

    def _sigma(self, L: torch.Tensor) -> torch.Tensor:
        if self.normalizer == "exact":
            return reshape_norms(L).amin()
        if self.training and torch.is_grad_enabled():
            self._power_step(1)
        mats = reshape_matrices(L)
        est = [getattr(self, f"_u{i}").to(L.dtype) @ r @ getattr(self, f"_v{i}").to(L.dtype)
               for i, r in enumerate(mats)]
        return torch.stack(est).abs().amin()

    def skew(self, dtype=None) -> torch.Tensor:
        r"""The normalized skew filter ``scale * L / sigma`` (differentiable).

        ``sigma`` estimates :math:`\min_i \|R_i(L)\|_2`: by one power-iteration step per
        training step with the vectors kept between steps (``normalizer="power"``, the
        reference's choice, fixed in eval mode), or exactly (``"exact"``, an SVD per
        forward pass). Either way the layer's constant comes from the *exact* norms of the
        normalized filter (:meth:`jacobian_norm_bound`), so the certificate never relies on
        the estimate.
        """
        M = self.weight if dtype is None else self.weight.to(dtype)
        L = skew_filter(M)
        return self.scale * L / self._sigma(L).clamp_min(1e-12)

    def jacobian_norm_bound(self) -> float:
        r"""An upper bound on :math:`\|J\|_2` of the normalized filter: CONV-SV, in float64."""
        with torch.no_grad():
            L = self.skew(torch.float64)
            return math.sqrt(self.kernel_size ** 2) * float(reshape_norms(L).amin())

    def truncation_error(self, terms: int | None = None) -> float:
        r""":math:`\delta` of eq. :math:numref:`eq-soc-truncation` at ``terms`` (default: the current :math:`T`)."""
        return truncation_bound(self.jacobian_norm_bound(), self.terms if terms is None else terms)

    def lipschitz_bound(self, terms: int | None = None) -> float:
        r""":math:`1 + \delta`, an upper bound on the layer's L2 Lipschitz constant."""
        return 1.0 + self.truncation_error(terms)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The isometric part before the exponential: space-to-depth and channel padding."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if self.stride == 2:
            if x.shape[2] % 2 or x.shape[3] % 2:
                raise ValueError(f"a stride-2 SOC layer needs even H and W, got {tuple(x.shape[2:])}")
            x = F.pixel_unshuffle(x, 2)
        if x.shape[1] < self.channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.channels - x.shape[1]))
        return x

    def exponential(self, x: torch.Tensor, terms: int | None = None) -> torch.Tensor:
        """The truncated series of eq. :math:numref:`eq-soc-taylor` on prepared inputs (c channels)."""
        L = self.skew().to(x.dtype)
        pad = self.kernel_size // 2
        inplace = not (torch.is_grad_enabled() and (x.requires_grad or L.requires_grad))
        z, term = (x.clone() if inplace else x), x
        for i in range(1, (self.terms if terms is None else terms) + 1):
            term = F.conv2d(term, L / i, padding=pad)  # the 1/i! folded into the (small) filter
            z = z.add_(term) if inplace else z + term
        return z

    def linear(self, x: torch.Tensor, terms: int | None = None) -> torch.Tensor:
        """The layer without its bias (its linear part)."""
        return self.exponential(self.prepare(x), terms)[:, :self.out_channels]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        return z if self.bias is None else z + self.bias.view(1, -1, 1, 1)


class SpectralLinear(nn.Linear):
    r"""A linear layer with weight :math:`W / \|W\|_2` (exact largest singular value): 1-Lipschitz."""

    def normalized_weight(self) -> torch.Tensor:
        return self.weight / torch.linalg.matrix_norm(self.weight, ord=2).clamp_min(1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)


#: Architecture and training per profile. The digits: width 8, 2 SOC layers per stage, three
#: stages (8 -> 4 -> 2 -> 1), 20 epochs of Adam at 2e-3 (about 15 s on one CPU thread;
#: chapter 15 must run in about a minute cold);
#: MNIST: width 32, two stages (28 -> 14 -> 7), 20 epochs at 1e-3.
SOC_RECIPES = {
    "quick": dict(width=8, blocks=2, stages=3, epochs=20, lr=2e-3),
    "full": dict(width=32, blocks=2, stages=2, epochs=20, lr=1e-3),
}


def soc_net(dataset: str | None = None, *, width: int | None = None, blocks: int | None = None,
            stages: int | None = None, terms_train: int = 5, terms_eval: int = 12,
            seed: int | None = 0) -> nn.Sequential:
    r"""A LipConvNet: Normalize, SOC + MaxMin layers in stages, Flatten, :class:`SpectralLinear`.

    The first SOC layer maps the input channels to ``width``; every stage has ``blocks``
    SOC + MaxMin layers, the last one with stride 2 and twice the channels (the spatial
    size halves, so H and W must be divisible by :math:`2^{\text{stages}}`). Defaults from
    :data:`SOC_RECIPES` of the active profile.
    """
    meta = _data.info(dataset)
    rec = SOC_RECIPES[config.profile().name]
    width = rec["width"] if width is None else check_positive_int(width, "width")
    blocks = rec["blocks"] if blocks is None else check_positive_int(blocks, "blocks")
    stages = rec["stages"] if stages is None else check_positive_int(stages, "stages")
    if width % 2:
        raise ValueError(f"width must be even (MaxMin splits the channels in halves), got {width}")
    c, h, w = meta.shape
    if h % 2 ** stages or w % 2 ** stages:
        raise ValueError(f"stages={stages} halves the {h}x{w} inputs {stages} times: H and W must be divisible by "
                         f"{2 ** stages}")
    if seed is not None:
        torch.manual_seed(check_seed(seed))
    kw = dict(terms_train=terms_train, terms_eval=terms_eval)
    layers: list = [_models.Normalize(meta.mean, meta.std), SOCConv2d(c, width, 3, **kw), MaxMin()]
    ch, size = width, h
    for _ in range(stages):
        for _ in range(blocks - 1):
            layers += [SOCConv2d(ch, ch, 3 if size > 1 else 1, **kw), MaxMin()]
        layers += [SOCConv2d(ch, 2 * ch, 3 if size > 2 else 1, stride=2, **kw), MaxMin()]
        ch, size = 2 * ch, size // 2
    layers += [nn.Flatten(), SpectralLinear(ch * (h // 2 ** stages) * (w // 2 ** stages), meta.n_classes)]
    return nn.Sequential(*layers)


def soc_model(dataset: str | None = None, *, width: int | None = None, blocks: int | None = None,
              epochs: int | None = None, seed: int = 0, device=None, progress: bool | None = None,
              cache: bool = True) -> _train.Trained:
    """The SOC network :func:`soc_net` trained with cross-entropy on the profile's data (cached).

    Settings from :data:`SOC_RECIPES`; one epoch under the smoke profile.
    """
    from ..zoo import loss_trained_model

    prof = config.profile()
    rec = SOC_RECIPES[prof.name]

    def build(arch, dataset, width=None, seed=0):
        return soc_net(dataset, width=width, blocks=blocks, seed=seed)

    epochs = (1 if prof.smoke else rec["epochs"]) if epochs is None else check_positive_int(epochs, "epochs")
    return loss_trained_model(_train.cross_entropy_loss, desc="SOC network", dataset=dataset,
                              width=rec["width"] if width is None else width, epochs=epochs, lr=rec["lr"],
                              seed=seed, device=device, progress=progress, cache=cache, evaluate=True, build=build)


class LayerConstant(NamedTuple):
    """One layer's L2 Lipschitz constant: ``bound`` (provable) and ``measured`` (power method)."""

    name: str
    bound: float
    measured: float
    input_shape: tuple


class LipschitzConstants(NamedTuple):
    r"""A network's L2 Lipschitz constant as a product over its layers (a result, not a certificate).

    ``bound`` is :math:`\prod_l` of the layers' provable constants (an upper bound on the
    network's); ``measured`` the product of their power-method values (each a lower
    estimate of its layer's norm, so the product is neither bound); ``layers`` lists them.
    """

    bound: float
    measured: float
    layers: tuple


def _power_norm(fn, shape, dtype, device, iters, seed=0):
    # largest singular value of a linear map fn by power iteration on its Gram operator
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn((1,) + tuple(shape), generator=gen, dtype=dtype).to(device)
    v = v / v.norm()
    sigma = 0.0
    for _ in range(iters):
        v = v.detach().requires_grad_(True)
        with torch.enable_grad():
            u = fn(v)
            (g,) = torch.autograd.grad(u, v, u.detach())
        sigma = float(u.norm())
        if float(g.norm()) == 0.0:
            break
        v = g / g.norm()
    return sigma


def lipschitz_constants(model: nn.Module, input_shape=None, *, measure: bool = True,
                        iters: int = 50) -> LipschitzConstants:
    r"""The per-layer L2 Lipschitz constants of a :func:`soc_net`-style ``nn.Sequential``.

    Known layers: ``Normalize`` (:math:`1/\min_c \sigma_c`), :class:`SOCConv2d`
    (:math:`1 + \delta` at the eval-mode terms), :class:`MaxMin`, ``Flatten``, ``Identity``
    (1), :class:`SpectralLinear` and ``Linear`` (the exact largest singular value) and
    ``Conv2d`` (its exact norm at the layer's input size,
    :func:`robustlab.lipschitz.conv.exact_conv_norm`). Anything else raises a
    ``TypeError``: a product bound is only as good as its weakest factor. The
    measured value of an SOC layer is a power iteration (``iters`` steps) on its linear
    part, NaN when ``measure`` is False (the bound alone is cheap).
    """
    check_model(model)
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential of known layers, got {type(model).__name__}")
    shape = tuple(_data.info().shape) if input_shape is None else tuple(int(s) for s in input_shape)
    check_positive_int(iters, "iters")
    device, dtype = _models.device_of(model), torch.float64
    rows = []
    with _models.eval_mode(model), torch.no_grad():
        z = torch.zeros((1,) + shape, device=device, dtype=_models.dtype_of(model))
        for i, layer in enumerate(model):
            name = f"{i}: {type(layer).__name__}"
            if isinstance(layer, _models.Normalize):
                bound = measured = float(1.0 / layer.std.double().min())
            elif isinstance(layer, SOCConv2d):
                bound = layer.lipschitz_bound()
                measured = (_power_norm(lambda v, l=layer: l.linear(v.to(l.weight.dtype)).double(), z.shape[1:],
                                        dtype, device, iters) if measure else math.nan)
            elif isinstance(layer, (MaxMin, nn.Flatten, nn.Identity)):
                bound = measured = 1.0
            elif isinstance(layer, nn.Linear):
                W = layer.normalized_weight() if isinstance(layer, SpectralLinear) else layer.weight
                bound = measured = float(torch.linalg.matrix_norm(W.double(), ord=2))
            elif isinstance(layer, nn.Conv2d):
                bound = measured = exact_conv_norm(layer, tuple(z.shape[1:])).value
            else:
                raise TypeError(f"layer {name} has no known Lipschitz constant; use the layers of soc_net")
            rows.append(LayerConstant(name, bound, measured, tuple(z.shape[1:])))
            z = layer(z)
    return LipschitzConstants(math.prod(r.bound for r in rows), math.prod(r.measured for r in rows), tuple(rows))


def lipschitz_certificate(logits: torch.Tensor, lipschitz: float, *, method: str = "lipschitz-margin",
                          stats: dict | None = None) -> Certificate:
    r"""The certificate :math:`R = (f_{\hat y} - \max_{j \ne \hat y} f_j) / (\sqrt2 L)` of eq. :math:numref:`eq-lipschitz-margin`.

    ``logits`` (B, C) of a network whose logits are ``lipschitz``-Lipschitz in L2 (from the
    input in pixels). The prediction is the argmax (the lower index on a tie, which then
    has radius 0) and holds for every perturbation of L2 norm below the radius.
    Deterministic (``alpha`` None), unit ``UNITS["l2"]``.

    Examples
    --------
    >>> cert = lipschitz_certificate(torch.tensor([[3.0, 1.0, 0.0]]), 2 ** -0.5)
    >>> cert.prediction.tolist(), round(float(cert.radius[0]), 12)
    ([0], 2.0)
    """
    logits = check_tensor(logits, "logits")
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (B, C) with C >= 2, got {tuple(logits.shape)}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits contain NaN or infinite values")
    if not isinstance(lipschitz, (int, float)) or not math.isfinite(lipschitz) or lipschitz <= 0:
        raise ValueError(f"lipschitz must be a finite number > 0, got {lipschitz!r}")
    top = logits.double().topk(2, dim=1)
    pred = logits.argmax(1)
    margin = top.values[:, 0] - top.values[:, 1]
    radius = (margin / (math.sqrt(2.0) * lipschitz)).clamp_min(0.0)
    return Certificate(pred.to(torch.int64), radius, UNITS["l2"], method, alpha=None,
                       stats={"margin": margin, "lipschitz": float(lipschitz), **(stats or {})})


@torch.no_grad()
def certify(model: nn.Module, x: torch.Tensor, *, lipschitz: float | None = None, batch_size: int = 512) -> Certificate:
    r"""Lipschitz-margin certificates of a 1-Lipschitz-by-construction network on a batch ``x``.

    The model runs in eval mode (so SOC layers use their eval-mode terms); ``lipschitz``
    defaults to the provable product bound of :func:`lipschitz_constants`. Results on the
    device of ``x``; stats ``margin`` and ``lipschitz``.
    """
    check_model(model)
    x = check_images(x, "x")
    check_positive_int(batch_size, "batch_size")
    if lipschitz is None:
        lipschitz = lipschitz_constants(model, tuple(x.shape[1:]), measure=False).bound
    with _models.eval_mode(model):
        logits = torch.cat([model(_models.to_model(model, x[i:i + batch_size])) for i in range(0, len(x), batch_size)])
    cert = lipschitz_certificate(logits, float(lipschitz), method="soc-lipschitz-margin")
    return Certificate(_models.to_input(x, cert.prediction), _models.to_input(x, cert.radius), cert.unit, cert.method,
                       alpha=None, stats=dict(cert.stats))
