r"""Dual-manifold adversarial training (DMAT, Lin, Lau, Levine, Chellappa and Feizi, 2020) on a small generator.

The paper's setting is a data set that lies *exactly* on a generator's manifold: every
image is :math:`x = G(w)` for a latent :math:`w` (OM-ImageNet, ImageNet projected onto
StyleGAN's range). Two threat models then live side by side:

* the **pixel** (off-manifold) threat, :math:`\{x + \delta : \|\delta\|_\infty \le \varepsilon_x\}`,
  attacked by PGD in pixel space (:func:`robustlab.attacks.pgd`);
* the **on-manifold** threat, :math:`\{G(w + \delta_w) : \|\delta_w\|_\infty \le \varepsilon_w\}`,
  images the generator can produce, attacked by PGD in its latent space
  (:func:`latent_pgd`, :func:`on_manifold_pgd`); the latent is not clipped.

On-manifold adversarial training (OM-AT) and DMAT are the two training objectives

.. math::

    \text{OM-AT:}\quad \min_\theta\ \mathbb E_{(w, y)} \max_{\|\delta_w\|_\infty \le \varepsilon_w}
    \mathcal L\big(f_\theta(G(w + \delta_w)), y\big),

    \text{DMAT:}\quad \min_\theta\ \mathbb E_{(w, y)} \Big[\tfrac12 \max_{\|\delta_x\|_\infty \le \varepsilon_x}
    \mathcal L\big(f_\theta(G(w) + \delta_x), y\big) + \tfrac12 \max_{\|\delta_w\|_\infty \le \varepsilon_w}
    \mathcal L\big(f_\theta(G(w + \delta_w)), y\big)\Big],

with :math:`G` frozen and no clean term (:class:`OnManifoldLoss`, :class:`DualManifoldLoss`).

The generator here is closed-form and trains in milliseconds on a CPU: **PCA in logit
space** (:class:`PCAGenerator`, :func:`fit_pca`). With :math:`\ell(x) = \log\frac{x}{1-x}`
applied to the pixels clipped to :math:`[c, 1 - c]`, :math:`\mu` their mean,
:math:`U_k` the top :math:`k` principal directions and :math:`s` the standard deviations
of the data along them,

.. math::

    G(z) = \sigma\big(\mu + U_k \operatorname{diag}(s)\, z\big), \qquad
    E(x) = \operatorname{diag}(s)^{-1} U_k^\top \big(\ell(x) - \mu\big),

so a latent coordinate of 1 is one standard deviation of the training data along that
direction. :math:`\sigma` keeps every output in (0, 1) (the package's input range), and
since :math:`\sigma` is invertible and :math:`U_k` has orthonormal columns, the encoder
inverts the generator exactly on its range: :math:`E(G(z)) = z`. So an on-manifold image
carries its latent with it, as OM-ImageNet's images do, and a loss object given only the
image batch recovers the latents. The manifold is a curved :math:`k`-dimensional surface
in pixel space; in logit space it is the affine subspace :math:`\mu + \operatorname{span}(U_k)`,
which gives tests an exact membership check (:meth:`PCAGenerator.off_manifold`). A VAE
would be a truer stand-in for StyleGAN; it needs an encoder optimisation per image and
loses the exact round trip.

Not reproduced: StyleGAN's W+ space, the paper's ResNet-50 and its cyclic SGD schedule.
The budgets are re-scaled: the paper's :math:`\varepsilon_w = 0.02` is relative to
StyleGAN's latents and does not carry over.

Examples
--------
>>> import torch
>>> g = fit_pca(torch.rand(50, 1, 4, 4), k=3)
>>> z = torch.randn(5, 3)
>>> torch.allclose(g.encode(g(z)), z, atol=1e-4)
True
>>> bool(g.off_manifold(g(z)).max() < 1e-4)
True
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import cache as _cache
from .. import config
from .. import data as _data
from .. import train as _train
from .._validate import (check_choice, check_finite, check_images, check_interval, check_model, check_nonneg,
                         check_positive, check_positive_int, check_tensor, check_xy)
from ..attacks import pgd as _pixel_pgd
from ..attacks._common import _BestIterate, _check_restarts, _generator, _labels_to_device, _objective_and_gradient, _to_input
from ..models import eval_mode
from ..training import PGDLoss, _check_eps_ramp

__all__ = ["PCAGenerator", "fit_pca", "pca_generator", "on_manifold_data", "latent_pgd", "on_manifold_pgd",
           "OnManifoldLoss", "DualManifoldLoss", "manifold_model", "MANIFOLD_METHODS", "DEFAULT_LATENTS",
           "DEFAULT_CLIP", "DEFAULT_EPS_LATENT", "MANIFOLD_RECIPES", "MANIFOLD_TOLERANCE"]

#: Latent dimensions :math:`k` of :func:`pca_generator` per data set.
DEFAULT_LATENTS = {"digits": 16, "mnist": 32}
#: Pixels are clipped to [c, 1 - c] before the logit when fitting (half of the digits' grey level 1/16).
DEFAULT_CLIP = 1 / 32
#: Latent Linf budgets of OM-AT, DMAT and the on-manifold attack, in standard deviations of the
#: data per latent (chapter 16 measures what they do; the paper's 0.02 is for StyleGAN's W+).
DEFAULT_EPS_LATENT = {"digits": 0.5, "mnist": 0.5}
#: Largest pixel distance to the manifold an image may have to count as on it (float32 round trip).
MANIFOLD_TOLERANCE = 1e-3
#: The four models of the DMAT comparison, all trained on the on-manifold data.
MANIFOLD_METHODS = ("standard", "pgd", "omat", "dmat")


class PCAGenerator(nn.Module):
    r"""The generator :math:`G(z) = \sigma(\mu + U_k \operatorname{diag}(s) z)` of PCA in logit space (see the module).

    Parameters
    ----------
    mean : torch.Tensor
        :math:`\mu`, shape (D,): the mean of the clipped, logit-transformed training pixels.
    components : torch.Tensor
        :math:`U_k`, shape (D, k), orthonormal columns.
    scales : torch.Tensor
        :math:`s`, shape (k,), positive: the data's standard deviation along each column.
    shape : tuple of int
        The image shape (C, H, W) or (D,), with D pixels in all.
    clip : float
        The :math:`c` of the fit, used by :meth:`project` on images that are not on the manifold.

    All tensors are buffers (no parameters: the generator is never trained by gradients, and
    attacks take gradients with respect to the latent only). Calls accept latents on any
    device and return images on that device.
    """

    def __init__(self, mean: torch.Tensor, components: torch.Tensor, scales: torch.Tensor, shape, *,
                 clip: float = DEFAULT_CLIP):
        super().__init__()
        for t, name in ((mean, "mean"), (components, "components"), (scales, "scales")):
            check_finite(check_tensor(t, name), name)
        shape = tuple(int(s) for s in shape)
        d = math.prod(shape)
        if mean.shape != (d,):
            raise ValueError(f"mean must have shape ({d},) for images of shape {shape}, got {tuple(mean.shape)}")
        if components.dim() != 2 or components.shape[0] != d or not 1 <= components.shape[1] <= d:
            raise ValueError(f"components must have shape ({d}, k) with 1 <= k <= {d}, got {tuple(components.shape)}")
        k = components.shape[1]
        if scales.shape != (k,) or not bool((scales > 0).all()):
            raise ValueError(f"scales must be {k} positive numbers, got shape {tuple(scales.shape)}")
        gram = components.double().T @ components.double()
        if not torch.allclose(gram, torch.eye(k, dtype=torch.float64), atol=1e-4):
            raise ValueError("components must have orthonormal columns (U^T U = I)")
        check_interval(clip, "clip", 0.0, 0.5, low_open=True, high_open=True)
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("components", components.detach().float().clone())
        self.register_buffer("scales", scales.detach().float().clone())
        self.shape = shape
        self.clip = float(clip)

    @property
    def k(self) -> int:
        """The latent dimension."""
        return self.components.shape[1]

    def __repr__(self) -> str:  # part of the cache key of every model trained with it
        return (f"PCAGenerator(k={self.k}, shape={self.shape}, clip={self.clip:g}, "
                f"weights@{_cache.fingerprint(self.mean, self.components, self.scales)})")

    def _check_latents(self, z, name="z") -> torch.Tensor:
        check_finite(check_tensor(z, name), name)
        if not z.is_floating_point() or z.dim() != 2 or z.shape[1] != self.k:
            raise ValueError(f"{name} must be a float tensor of latents of shape (B, {self.k}), got "
                             f"{z.dtype} of shape {tuple(z.shape)}")
        return z

    def _check_images(self, x, name="x") -> torch.Tensor:
        check_images(x, name)
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"{name} must have shape (B, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}")
        return x

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`G(z)`, shape (B, \*shape), values in (0, 1), differentiable in ``z``."""
        self._check_latents(z)
        u = self.components.to(z.device, z.dtype)
        pre = self.mean.to(z.device, z.dtype) + (z * self.scales.to(z.device, z.dtype)) @ u.T
        return torch.sigmoid(pre).view((-1,) + self.shape)

    def _logit_coords(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\ell(x) - \\mu` in float64, shape (B, D) (clamped only against log(0))."""
        v = x.detach().double().flatten(1).clamp(1e-12, 1 - 1e-12)
        return torch.log(v) - torch.log1p(-v) - self.mean.to(x.device).double()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`E(x) = \operatorname{diag}(s)^{-1} U_k^\top(\ell(x) - \mu)`, shape (B, k): exact on the manifold.

        For an image on the manifold, ``encode(G(z)) == z`` up to float32 rounding. For any
        other image it is the latent of the nearest manifold point in logit space; use
        :meth:`project` for natural images (it clips them first, as the fit did).
        """
        self._check_images(x)
        u = self.components.to(x.device).double()
        z = (self._logit_coords(x) @ u) / self.scales.to(x.device).double()
        return z.to(x.dtype)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        r"""The on-manifold version of images ``x``: :math:`G(E(\operatorname{clip}(x, c, 1 - c)))`, same shape."""
        self._check_images(x)
        return self(self.encode(x.clamp(self.clip, 1 - self.clip)))

    def off_manifold(self, x: torch.Tensor) -> torch.Tensor:
        r"""How far images are from the manifold, shape (B,): the L2 norm of :math:`\ell(x) - \mu` outside
        :math:`\operatorname{span}(U_k)` (0 exactly on it; in logit units)."""
        self._check_images(x)
        r = self._logit_coords(x)
        u = self.components.to(x.device).double()
        return (r - (r @ u) @ u.T).norm(dim=1).to(x.dtype)

    def round_trip_error(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\|G(E(x)) - x\|_\infty` per image, shape (B,): at most :data:`MANIFOLD_TOLERANCE` on the manifold."""
        self._check_images(x)
        with torch.no_grad():
            return (self(self.encode(x)) - x).flatten(1).abs().amax(1)

    def check_on_manifold(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Raise ``ValueError`` unless every image of ``x`` is on the manifold (round trip within tolerance)."""
        err = self.round_trip_error(x)
        if bool((err > MANIFOLD_TOLERANCE).any()):
            raise ValueError(f"{name} must lie on the generator's manifold (x = G(z)); the largest round-trip error "
                             f"|G(E(x)) - x| is {float(err.max()):.3g} > {MANIFOLD_TOLERANCE:g}. "
                             "Map natural images onto it with generator.project(x) or on_manifold_data().")
        return x

    def state(self) -> dict:
        """What :func:`pca_generator` caches: the buffers, the shape and the clip."""
        return {"mean": self.mean.cpu(), "components": self.components.cpu(), "scales": self.scales.cpu(),
                "shape": list(self.shape), "clip": self.clip}


def fit_pca(x: torch.Tensor, k: int, *, clip: float = DEFAULT_CLIP) -> PCAGenerator:
    r"""Fit :class:`PCAGenerator` to images ``x`` (N, ...) in [0, 1]: PCA of :math:`\ell(\operatorname{clip}(x))`.

    The principal directions come from the SVD of the centred logits (float64); the scale of
    direction :math:`i` is its singular value over :math:`\sqrt{N - 1}`, the standard
    deviation of the data along it, so the training latents have unit variance.

    Parameters
    ----------
    x : torch.Tensor
        Training images, (N, C, H, W) or (N, D), values in [0, 1], N >= 2.
    k : int
        Latent dimension, 1 <= k <= min(N - 1, D).
    clip : float
        :math:`c` in (0, 0.5): the pixels are clipped to [c, 1 - c] so that the logit is finite.
    """
    check_images(x, "x")
    n, d = x.shape[0], x[0].numel()
    if n < 2:
        raise ValueError(f"x must hold at least 2 images to fit a PCA, got {n}")
    k = check_positive_int(k, "k")
    if k > min(n - 1, d):
        raise ValueError(f"k must be at most min(N - 1, D) = {min(n - 1, d)}, got {k}")
    check_interval(clip, "clip", 0.0, 0.5, low_open=True, high_open=True)
    v = x.detach().double().cpu().flatten(1).clamp(clip, 1 - clip)
    logits = torch.log(v) - torch.log1p(-v)
    mean = logits.mean(0)
    _, sv, vh = torch.linalg.svd(logits - mean, full_matrices=False)
    scales = sv[:k] / math.sqrt(n - 1)
    if not bool((scales > 1e-8).all()):
        raise ValueError(f"the data span fewer than k = {k} directions; choose a smaller k")
    return PCAGenerator(mean, vh[:k].T.contiguous(), scales, tuple(x.shape[1:]), clip=clip)


def pca_generator(dataset: str | None = None, *, k: int | None = None, clip: float = DEFAULT_CLIP,
                  cache: bool = True) -> PCAGenerator:
    """The course's generator of a data set: :func:`fit_pca` on its training split (zoo recipe ``"pca-generator"``).

    ``k`` defaults to :data:`DEFAULT_LATENTS` of the data set. The fit is cached on disk,
    keyed by the settings and the training images, like a trained model.
    """
    meta = _data.info(config.profile().dataset if dataset is None else dataset)
    k = DEFAULT_LATENTS.get(meta.name, 32) if k is None else check_positive_int(k, "k")
    train, _ = _data.load(meta.name)
    path = _cache.entry("models", {"what": "pca-generator", "format": 1, "k": k, "clip": float(clip)}, train.x) \
        if cache else None
    blob = _cache.load(path) if path is not None else None
    if blob is None:
        gen = fit_pca(train.x, k, clip=clip)
        if path is not None:
            _cache.store(path, gen.state())
        return gen
    return PCAGenerator(blob["mean"], blob["components"], blob["scales"], tuple(blob["shape"]), clip=blob["clip"])


def on_manifold_data(generator: PCAGenerator, data) -> _data.Split:
    """A data set mapped onto the manifold: ``(generator.project(x), y)`` (the analogue of OM-ImageNet)."""
    if not isinstance(generator, PCAGenerator):
        raise TypeError(f"generator must be a PCAGenerator, got {type(generator).__name__}")
    x, y = check_xy(data, "data")
    with torch.no_grad():
        return _data.Split(generator.project(x), y)


def _check_generator(generator):
    if not isinstance(generator, nn.Module) or not callable(getattr(generator, "encode", None)):
        raise TypeError(f"generator must be a generator module with encode() (e.g. PCAGenerator), "
                        f"got {type(generator).__name__}")
    return generator


def latent_pgd(model: nn.Module, generator: PCAGenerator, z: torch.Tensor, y: torch.Tensor, *, eps: float,
               steps: int = 10, step_size: float | None = None, random_start: bool = True, restarts: int = 1,
               seed: int | None = None) -> torch.Tensor:
    r"""On-manifold PGD: :math:`\max_{\|\delta\|_\infty \le \varepsilon} \mathcal L(f(G(z + \delta)), y)` over latents.

    Each step is :math:`z^{t+1} = z + \Pi_{[-\varepsilon, \varepsilon]^k}\big(z^t + \alpha\,
    \operatorname{sign}\nabla_z \mathcal L(f(G(z^t)), y) - z\big)`: signed gradient ascent on
    the cross-entropy through the frozen generator, projected onto the latent
    :math:`L_\infty` ball around the *original* latents. There is no box in latent space
    (the paper leaves StyleGAN's latents unclipped), and every iterate decodes to an image
    on the manifold. The model is in eval mode; gradients are taken with respect to the
    latents only. Per sample the best iterate over all steps and restarts is returned (a
    misclassified one if any, otherwise the one of highest loss).

    Parameters
    ----------
    model : nn.Module
        Classifier of images in [0, 1].
    generator : PCAGenerator
        The frozen generator :math:`G` (a module mapping (B, k) latents to images).
    z, y : torch.Tensor
        Latents (B, k) and labels (B,).
    eps : float
        Latent :math:`L_\infty` budget, in the generator's latent units (standard deviations
        of the data for :class:`PCAGenerator`).
    steps, step_size, random_start, restarts, seed
        As in :func:`robustlab.attacks.pgd`; ``step_size`` defaults to ``2.5 * eps / steps``.

    Returns
    -------
    torch.Tensor
        ``z_adv`` (B, k) on the device of ``z``, with :math:`\|z_{adv} - z\|_\infty \le \varepsilon`.
    """
    check_model(model)
    _check_generator(generator)
    generator._check_latents(z)
    check_nonneg(eps, "eps", allow_tensor=False)
    check_positive_int(steps, "steps")
    _check_restarts(random_start, restarts)
    eps = float(eps)
    alpha = 2.5 * eps / steps if step_size is None else float(check_positive(step_size, "step_size"))
    z_in = z
    z, y, _ = _labels_to_device(z, y, None, model)
    composed = nn.Sequential(generator, model)
    gen = _generator(seed, z.device)
    best = _BestIterate(z, y, None)
    with eval_mode(model):
        for _ in range(restarts):
            if random_start:
                cur = z + (torch.rand(z.shape, generator=gen, device=z.device, dtype=z.dtype) * 2 - 1) * eps
            else:
                cur = z.clone()
            for _ in range(steps):
                logits, obj, grad = _objective_and_gradient(composed, cur, y, "ce", False)
                best.update(cur, logits, obj)
                cur = z + (cur + alpha * grad.sign() - z).clamp(-eps, eps)
            with torch.no_grad():
                logits = composed(cur)
            best.update(cur, logits, F.cross_entropy(logits, y, reduction="none"))
    return _to_input(z_in, best.x)


def on_manifold_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, generator: PCAGenerator,
                    steps: int = 10, step_size: float | None = None, random_start: bool = True, restarts: int = 1,
                    seed: int | None = None) -> torch.Tensor:
    r"""The on-manifold attack under the attack contract: images in, images out, ``eps`` in latent units.

    ``x`` must lie on the manifold (``x = G(z)``; checked, see
    :meth:`PCAGenerator.check_on_manifold`); its latents :math:`z = E(x)` are attacked by
    :func:`latent_pgd` and the result is :math:`G(z_{adv})`: an image the generator can
    produce, in (0, 1), whose latent is within ``eps`` of ``x``'s in :math:`L_\infty`. Usable
    as ``rl.attacks.robust_accuracy(model, data, on_manifold_pgd, eps=..., generator=g)``.
    """
    _check_generator(generator)
    generator._check_images(x)
    generator.check_on_manifold(x)
    z = generator.encode(x)
    z_adv = latent_pgd(model, generator, z, y, eps=eps, steps=steps, step_size=step_size, random_start=random_start,
                       restarts=restarts, seed=seed)
    with torch.no_grad():
        return generator(z_adv).to(x.device, x.dtype)


class _ScaledRamp:
    """The budget ramp of :class:`robustlab.training.PGDLoss`, for losses with two budgets."""

    wants_step = True  # fit passes the TrainingStep

    def factor(self, step=None) -> float:
        return _train.ramp(step, self.ramp)


def _check_train_batch(generator, x):
    # the batch must carry its latents: only on-manifold images do
    generator.check_on_manifold(x, "the training batch x")
    return generator.encode(x)


@dataclasses.dataclass(frozen=True, repr=True)
class OnManifoldLoss(_ScaledRamp):
    r"""On-manifold adversarial training (OM-AT): the cross-entropy at :math:`G(z_{adv})`, by :func:`latent_pgd`.

    The batch ``x`` must be on the manifold (:func:`on_manifold_data`); its latents are
    recovered exactly as :math:`E(x)`. The attack runs in eval mode with latent gradients
    only; the loss is computed back in training mode. ``ramp`` batches grow the budget
    linearly (as :class:`robustlab.training.PGDLoss`). Returns ``(loss, logits)`` of the
    on-manifold adversarial batch.

    Examples
    --------
    >>> import robustlab as rl
    >>> g = fit_pca(torch.rand(40, 1, 8, 8), k=4)
    >>> loss_fn = OnManifoldLoss(g, eps=0.5, steps=2)
    >>> x = g(torch.randn(6, 4))
    >>> loss, logits = loss_fn(rl.models.build("cnn", "digits", width=4), x, torch.arange(6))
    >>> logits.shape
    torch.Size([6, 10])
    """

    generator: PCAGenerator
    eps: float
    steps: int = 5
    step_size: float | None = None
    ramp: int = 0

    def __post_init__(self):
        _check_generator(self.generator)
        check_nonneg(self.eps, "eps", allow_tensor=False)
        check_positive_int(self.steps, "steps")
        if self.step_size is not None:
            check_positive(self.step_size, "step_size")
        _check_eps_ramp(self.ramp)

    def __call__(self, model, x, y, step=None):
        z = _check_train_batch(self.generator, x)
        eps = float(self.eps) * self.factor(step)
        if eps > 0:
            step_size = None if self.step_size is None else self.step_size * self.factor(step)
            z = latent_pgd(model, self.generator, z, y, eps=eps, steps=self.steps, step_size=step_size)
        with torch.no_grad():
            x = self.generator(z)
        logits = model(x)
        return F.cross_entropy(logits, y), logits


@dataclasses.dataclass(frozen=True, repr=True)
class DualManifoldLoss(_ScaledRamp):
    r"""Dual-manifold adversarial training (DMAT): half the loss at a pixel PGD example, half at an on-manifold one.

    .. math::

        \tfrac12\,\mathcal L\big(f(x_{adv}), y\big) + \tfrac12\,\mathcal L\big(f(G(z_{adv})), y\big),

    :math:`x_{adv}` from :func:`robustlab.attacks.pgd` (:math:`L_\infty`, ``eps_pixel``, the
    step of :class:`robustlab.training.PGDLoss`) around the on-manifold batch ``x``, and
    :math:`z_{adv}` from :func:`latent_pgd` (``eps_latent``) around its latents :math:`E(x)`.
    No clean term, as in the paper. Returns ``(loss, logits)``, the logits of the
    on-manifold adversarial batch (``fit``'s training accuracy is measured on it).

    Examples
    --------
    >>> import robustlab as rl
    >>> g = fit_pca(torch.rand(40, 1, 8, 8), k=4)
    >>> loss_fn = DualManifoldLoss(g, eps_pixel=0.1, eps_latent=0.5, steps=2)
    >>> model = rl.models.build("cnn", "digits", width=4)
    >>> loss, _ = loss_fn(model, g(torch.randn(6, 4)), torch.arange(6))
    >>> bool(loss > 0)
    True
    """

    generator: PCAGenerator
    eps_pixel: float
    eps_latent: float
    steps: int = 5
    ramp: int = 0

    def __post_init__(self):
        _check_generator(self.generator)
        check_nonneg(self.eps_pixel, "eps_pixel", allow_tensor=False)
        check_nonneg(self.eps_latent, "eps_latent", allow_tensor=False)
        check_positive_int(self.steps, "steps")
        _check_eps_ramp(self.ramp)

    def __call__(self, model, x, y, step=None):
        z = _check_train_batch(self.generator, x)
        r = self.factor(step)
        x_pix = x
        if self.eps_pixel * r > 0:  # PGDLoss's attack: random start, step 2.5 eps / steps
            x_pix = _pixel_pgd(model, x, y, eps=float(self.eps_pixel) * r, norm="linf", steps=self.steps)
        if self.eps_latent * r > 0:
            z = latent_pgd(model, self.generator, z, y, eps=float(self.eps_latent) * r, steps=self.steps)
        with torch.no_grad():
            x_lat = self.generator(z)
        logits_pix, logits_lat = model(x_pix), model(x_lat)
        loss = 0.5 * F.cross_entropy(logits_pix, y) + 0.5 * F.cross_entropy(logits_lat, y)
        return loss, logits_lat


#: Training settings of :func:`manifold_model` per profile: the optimizer schedule of the PGD
#: recipe (:data:`robustlab.training.TRAINING_RECIPES`), so the four models differ only in the
#: loss; 5 attack steps for every attack (the paper's), the budgets ramped over ``ramp_epochs``.
#: The quick profile trains for a third of the PGD recipe's 30 epochs (chapter 16's time budget;
#: 10 and 15 epochs gave the same picture).
MANIFOLD_RECIPES = {
    "quick": dict(epochs=10, lr=5e-3, batch_size=64, schedule="onecycle", steps=5, ramp_epochs=2),
    "full": dict(epochs=10, lr=1e-3, batch_size=128, schedule="onecycle", steps=5, ramp_epochs=2),
}


def manifold_model(method: str = "dmat", *, dataset: str | None = None, eps_pixel: float | None = None,
                   eps_latent: float | None = None, generator: PCAGenerator | None = None, epochs: int | None = None,
                   seed: int = 0, device=None, progress: bool | None = None, cache: bool = True):
    """One of the four models of the DMAT comparison, trained on the on-manifold data (cached).

    The profile's network (:func:`robustlab.zoo.profile_model`) trained by
    :func:`robustlab.train.fit` on ``on_manifold_data(generator, train)`` with the settings of
    :data:`MANIFOLD_RECIPES` and the loss of ``method``:

    * ``"standard"``: cross-entropy;
    * ``"pgd"``: :class:`robustlab.training.PGDLoss`, :math:`L_\\infty` ``eps_pixel``;
    * ``"omat"``: :class:`OnManifoldLoss`, ``eps_latent``;
    * ``"dmat"``: :class:`DualManifoldLoss`, both budgets.

    Zoo recipes ``"manifold-standard"``, ``"manifold-pgd"``, ``"omat"`` and ``"dmat"``.

    Parameters
    ----------
    method : {"standard", "pgd", "omat", "dmat"}
    dataset : str, optional
        Default: the profile's.
    eps_pixel, eps_latent : float, optional
        Defaults: the course's :math:`L_\\infty` radius of the data set
        (:func:`robustlab.config.default_eps`, 0.2 on the digits) and
        :data:`DEFAULT_EPS_LATENT`.
    generator : PCAGenerator, optional
        Default :func:`pca_generator` of the data set.
    epochs, seed, device, progress, cache
        Epochs (default the recipe's) and as in :func:`robustlab.train.trained_model`.

    Returns
    -------
    Trained
        ``(model, history)``, the model in eval mode; the history's test accuracy is on the
        on-manifold test split.
    """
    from ..zoo import profile_model

    check_choice(method, "method", MANIFOLD_METHODS)
    prof = config.profile()
    name = _data.info(prof.dataset if dataset is None else dataset).name
    generator = pca_generator(name, cache=cache) if generator is None else _check_generator(generator)
    eps_pixel = config.default_eps("attack", name) if eps_pixel is None else eps_pixel
    eps_latent = DEFAULT_EPS_LATENT.get(name, 0.5) if eps_latent is None else eps_latent
    check_nonneg(eps_pixel, "eps_pixel", allow_tensor=False)
    check_nonneg(eps_latent, "eps_latent", allow_tensor=False)
    recipe = dict(MANIFOLD_RECIPES[prof.name])
    if epochs is not None:
        recipe["epochs"] = check_positive_int(epochs, "epochs")
    if prof.smoke:
        recipe.update(epochs=1, ramp_epochs=0)

    def train_fn(model, train, test):
        train, test = on_manifold_data(generator, train), on_manifold_data(generator, test)
        ramp = recipe["ramp_epochs"] * -(-len(train.y) // recipe["batch_size"])
        loss_fn = {
            "standard": lambda: _train.cross_entropy_loss,
            "pgd": lambda: PGDLoss(eps=eps_pixel, steps=recipe["steps"], ramp=ramp),
            "omat": lambda: OnManifoldLoss(generator, eps=eps_latent, steps=recipe["steps"], ramp=ramp),
            "dmat": lambda: DualManifoldLoss(generator, eps_pixel=eps_pixel, eps_latent=eps_latent,
                                             steps=recipe["steps"], ramp=ramp),
        }[method]()
        return _train.fit(model, train, epochs=recipe["epochs"], lr=recipe["lr"], batch_size=recipe["batch_size"],
                          schedule=recipe["schedule"], seed=seed, loss_fn=loss_fn, eval_data=test, progress=progress,
                          cache=cache, desc=f"{method} training {model.__class__.__name__} on on-manifold {name}")

    return profile_model(train_fn, name, width=None, seed=seed, device=device)
