r"""Certified accuracy under distribution shift: a model randomized over a transformation space.

Kumar, Levine, Goldstein and Feizi (2022) certify the *accuracy* of a model, not each of its
predictions, under every shift of the data distribution within a Wasserstein ball, with the
distance measured in the parameter space of a family of transformations
:math:`T(x, \theta)`, :math:`\theta \in \mathbb R^p` (a brightness exponent, a sub-pixel
translation, an additive perturbation). How far each input moves may vary from input to
input; only the average is bounded.

The defence is a **randomized model**: every input gets a fresh random transformation before
the base model :math:`h`,

.. math:: \tilde h(x) = h\big(T(x, \delta)\big), \qquad \delta \sim \mu
          \ (\mathcal N(0, \sigma^2 I) \text{ or } U[-w, w]^p),

and its accuracy :math:`\mathrm{Acc}_D = P_{(x, y) \sim D,\, \delta \sim \mu}(\tilde h(x) = y)`
is what is certified. The transformations must *compose additively*,
:math:`T(T(x, \theta), \delta) = T(x, \theta + \delta)`, so that the randomized model on a
shifted input :math:`x' = T(x, \theta_x)` sees :math:`T(x, \theta_x + \delta)`: a shift of the
data is a shift of the randomization's distribution. :class:`Brightness` (a gamma exponent,
:math:`x^{2^{-\theta}}`), :class:`Translation` (a band-limited circular translation by the
Fourier shift theorem) and :class:`Additive` (:math:`x + \theta`) compose exactly; a clipped
brightness scaling or a bilinear translation would not, and the certificate would not hold
for them.

**The certificates** (:func:`shift_bound`). Let :math:`A = \mathrm{Acc}_D` and let
:math:`D'` be the distribution of :math:`(T(x, \theta_x), y)` for a (possibly random) choice
of :math:`\theta_x` per input. The accuracy under :math:`D'` is the expectation of the same
[0, 1]-valued function :math:`f(x, v) = \mathbb 1[h(T(x, v)) = y]` under
:math:`Q = \mathrm{law}(x, \theta_x + \delta)` instead of :math:`P = \mathrm{law}(x, \delta)`.

* ``bound="hellinger"``: by the data-processing inequality the Bhattacharyya coefficient
  (Hellinger affinity) of the two Bernoulli outcomes is at least
  :math:`\mathrm{BC}(P, Q) = E_x\,\mathrm{BC}(\mu, \mu + \theta_x)`, and for Bernoulli laws
  :math:`\sqrt{ab} + \sqrt{(1-a)(1-b)} = \cos(\arccos\sqrt a - \arccos\sqrt b)`, so

  .. math:: \mathrm{Acc}_{D'} \ \ge\ \cos^2\!\Big(\min\big(\arccos\sqrt{A} + \arccos \beta,\ \tfrac\pi2\big)\Big),

  with :math:`\beta` a lower bound of :math:`\mathrm{BC}(P, Q)`. Gaussian:
  :math:`\mathrm{BC} = e^{-\|\theta\|_2^2 / (8\sigma^2)}`, convex in :math:`\|\theta\|^2`, so
  :math:`\beta = e^{-\varepsilon^2/(8\sigma^2)}` for every :math:`D'` with
  :math:`W_2(D, D') \le \varepsilon` (Jensen). Uniform on :math:`[-w, w]^p`:
  :math:`\mathrm{BC} = \prod_j (1 - |\theta_j| / 2w)_+ \ge 1 - \|\theta\|_1 / 2w`, so
  :math:`\beta = 1 - \varepsilon / 2w` for :math:`W_1(D, D') \le \varepsilon` in the L1
  ground metric.
* ``bound="tv"``: :math:`\mathrm{Acc}_{D'} \ge A - \mathrm{TV}`, with
  :math:`\mathrm{TV} \le \operatorname{erf}(\varepsilon / (2\sqrt2\sigma))` (Gaussian,
  concave in :math:`\|\theta\|_2`, so :math:`W_1` in L2 suffices) or :math:`\varepsilon / 2w`
  (uniform, :math:`W_1` in L1).

The Hellinger form loses less than the TV form where :math:`A` is high under Gaussian
randomization (its slope at :math:`\varepsilon = 0` is :math:`\sqrt{A(1-A)}/\sigma` against
:math:`1/(\sigma\sqrt{2\pi})`); for uniform randomization the TV form is never worse.

**Statistics** (:func:`certify_shift`). :math:`A` is replaced by a one-sided Clopper--Pearson
lower bound (:func:`robustlab.stats.clopper_pearson`), valid with probability at least
:math:`1 - \alpha`; every bound above is increasing in :math:`A`. ``target="empirical"``
certifies the accuracy on the given set (its empirical distribution): ``n`` pairs
:math:`(x_i, \delta)` are drawn with replacement, so the number of correct ones is exactly
binomial. ``target="population"`` certifies the accuracy on the distribution the set was drawn
from (i.i.d.): each input is used once with one draw of :math:`\delta`.

**Checking it** (:func:`accuracy_grid`, :func:`worst_shift`): the accuracy of the randomized
model on each input shifted by each parameter of a grid, and the worst per-input plan of
shifts whose average cost stays within the budget (a linear programme: a Wasserstein
coupling may split an input's mass between shifts). The certified bound must never exceed it.

References: Kumar, Levine, Goldstein and Feizi, "Certifying Model Accuracy under Distribution
Shifts", arXiv 2201.12440 (2022).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from . import config
from . import models as _models
from ._validate import (check_choice, check_images, check_labels, check_model, check_nonneg, check_positive,
                        check_positive_int, check_probability, check_seed, check_tensor)
from .smoothing.sampling import GaussianNoise, Noise, UniformNoise
from .stats import clopper_pearson

__all__ = [
    "TransformationSpace",
    "Brightness",
    "Translation",
    "Additive",
    "RandomizedTransform",
    "RandomizedModel",
    "ShiftLoss",
    "base_model",
    "shift_bound",
    "shift_metric",
    "ShiftCertificate",
    "certify_shift",
    "shifted_accuracy",
    "accuracy_grid",
    "parameter_grid",
    "WorstShift",
    "worst_shift",
]

BOUNDS = ("hellinger", "tv")
TARGETS = ("empirical", "population")


# =========================================================================== transformation spaces


class TransformationSpace(abc.ABC):
    r"""A family :math:`T(x, \theta)` of transformations with parameters :math:`\theta \in \mathbb R^p`
    that compose additively, :math:`T(T(x, a), b) = T(x, a + b)`.

    ``dim`` is :math:`p`; ``apply(x, theta)`` maps a batch ``x`` (B, ...) and parameters
    ``theta`` (B, p) (or (p,), the same for every input) to the transformed batch.
    """

    dim: int = 1

    @abc.abstractmethod
    def apply(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The batch ``x`` transformed by the parameters ``theta``."""

    def _theta(self, x: torch.Tensor, theta) -> torch.Tensor:
        theta = torch.as_tensor(theta, dtype=x.dtype, device=x.device)
        if theta.dim() == 1:
            theta = theta.expand(x.shape[0], -1)
        if theta.dim() != 2 or theta.shape != (x.shape[0], self.dim):
            raise ValueError(f"theta must have shape ({x.shape[0]}, {self.dim}) or ({self.dim},) for "
                             f"{type(self).__name__}, got {tuple(theta.shape)}")
        return theta

    def __repr__(self):
        return f"{type(self).__name__}()"


class Brightness(TransformationSpace):
    r"""Brightness as a gamma exponent: :math:`T(x, \theta) = x^{2^{-\theta}}` (pixels in [0, 1]).

    :math:`\theta > 0` brightens, :math:`\theta < 0` darkens; black and white pixels stay as
    they are, and the values stay in [0, 1]. One parameter, in units of a doubling of the
    exponent; it composes exactly, :math:`(x^{2^{-a}})^{2^{-b}} = x^{2^{-(a + b)}}`
    (a clipped scaling :math:`\min(1, 2^\theta x)` does not: clipping loses information).

    >>> x = torch.tensor([[0.0, 0.25, 1.0]])
    >>> Brightness().apply(x, torch.tensor([1.0])).tolist()
    [[0.0, 0.5, 1.0]]
    """

    dim = 1

    def apply(self, x, theta):
        theta = self._theta(x, theta)
        exponent = torch.exp2(-theta[:, 0]).view(-1, *([1] * (x.dim() - 1)))
        return x.clamp_min(0.0) ** exponent


class Translation(TransformationSpace):
    r"""Sub-pixel circular translation of images (B, C, H, W) by :math:`\theta = (\Delta y, \Delta x)` pixels.

    By the Fourier shift theorem, :math:`\widehat{T(x, \theta)}(k) = e^{-2\pi i\,k\cdot\theta}
    \widehat{Px}(k)`, where :math:`P` removes the Nyquist frequencies of even sizes (at which a
    fractional shift of a real image is not real). :math:`P` is a projection that commutes
    with the shifts, so the translations compose exactly,
    :math:`T(T(x, a), b) = T(x, a + b)`, and integer shifts of :math:`Px` are circular shifts
    (a bilinear interpolation blurs at every step and does not compose). Band-limited images
    ring slightly: their values may leave [0, 1] by a little.

    >>> x = torch.rand(2, 1, 8, 8)
    >>> t = Translation()
    >>> bool(torch.allclose(t.apply(t.apply(x, torch.tensor([0.3, -0.2])), torch.tensor([0.7, 1.2])),
    ...                     torch.roll(t.apply(x, torch.tensor([0.0, 0.0])), (1, 1), (-2, -1)), atol=1e-5))
    True
    """

    dim = 2

    def apply(self, x, theta):
        if x.dim() != 4:
            raise ValueError(f"x must be images (B, C, H, W) for Translation, got shape {tuple(x.shape)}")
        theta = self._theta(x, theta)
        h, w = x.shape[-2:]
        real = torch.float64 if x.dtype == torch.float64 else torch.float32
        ky = torch.fft.fftfreq(h, device=x.device, dtype=real)
        kx = torch.fft.fftfreq(w, device=x.device, dtype=real)
        keep = torch.ones(h, w, device=x.device, dtype=real)
        if h % 2 == 0:
            keep[h // 2, :] = 0
        if w % 2 == 0:
            keep[:, w // 2] = 0
        th = theta.to(real)
        angle = -2 * math.pi * (ky.view(1, h, 1) * th[:, 0].view(-1, 1, 1) + kx.view(1, 1, w) * th[:, 1].view(-1, 1, 1))
        phase = torch.polar(keep.expand_as(angle), angle)
        return torch.fft.ifft2(torch.fft.fft2(x.to(real)) * phase[:, None]).real.to(x.dtype)


class Additive(TransformationSpace):
    r"""The input space itself: :math:`T(x, \theta) = x + \theta`, one parameter per input element
    (``dim`` elements), for shifts measured in pixel space (and tests in one dimension).

    >>> Additive(2).apply(torch.tensor([[0.5, 0.5]]), torch.tensor([0.25, -0.5])).tolist()
    [[0.75, 0.0]]
    """

    def __init__(self, dim: int):
        self.dim = check_positive_int(dim, "dim")

    def apply(self, x, theta):
        theta = self._theta(x, theta)
        if x[0].numel() != self.dim:
            raise ValueError(f"x must have {self.dim} elements per input for Additive({self.dim}), "
                             f"got shape {tuple(x.shape)}")
        return x + theta.view(x.shape)

    def __repr__(self):
        return f"Additive(dim={self.dim})"


def _check_space(space):
    if not (callable(getattr(space, "apply", None)) and isinstance(getattr(space, "dim", None), int)):
        raise TypeError(f"space must be a TransformationSpace (an integer dim and apply(x, theta)), "
                        f"got {type(space).__name__}")
    return space


def _check_parameter_noise(noise):
    if not isinstance(noise, (GaussianNoise, UniformNoise)):
        raise TypeError("noise must be the distribution of the parameters, rl.smoothing.sampling.GaussianNoise(sigma) "
                        f"or UniformNoise(width), got {type(noise).__name__}")
    return noise


# =========================================================================== the randomized model


class RandomizedTransform(Noise):
    r"""The randomization :math:`x \mapsto T(x, \delta)`, :math:`\delta \sim` ``noise``, as a
    :class:`robustlab.smoothing.sampling.Noise`: ``sample(x_i, size, generator)`` returns
    ``size`` randomized copies of one input, so :func:`robustlab.smoothing.sampling.sample`
    counts the randomized model's votes.

    >>> rt = RandomizedTransform(Brightness(), GaussianNoise(0.5))
    >>> rt.sample(torch.rand(1, 8, 8), 4, torch.Generator().manual_seed(0)).shape
    torch.Size([4, 1, 8, 8])
    """

    def __init__(self, space: TransformationSpace, noise):
        self.space = _check_space(space)
        self.noise = _check_parameter_noise(noise)

    def parameters(self, size: int, generator, device, dtype) -> torch.Tensor:
        """``size`` draws of :math:`\\delta`, shape (size, p)."""
        return self.noise.draw((size, self.space.dim), generator, device, dtype)

    def sample(self, x_i, size, generator):
        delta = self.parameters(size, generator, x_i.device, x_i.dtype)
        return self.space.apply(x_i.unsqueeze(0).expand(size, *x_i.shape), delta)

    def __repr__(self):
        return f"RandomizedTransform({self.space!r}, {self.noise!r})"


class RandomizedModel(torch.nn.Module):
    r"""The deployed randomized model :math:`\tilde h(x) = h(T(x, \delta))`: a fresh
    :math:`\delta` for every input of every call (torch's global generator).

    >>> model = _models.build("mlp", "digits", width=2)
    >>> RandomizedModel(model, Brightness(), GaussianNoise(0.5))(torch.rand(3, 1, 8, 8)).shape
    torch.Size([3, 10])
    """

    def __init__(self, model: torch.nn.Module, space: TransformationSpace, noise):
        super().__init__()
        self.model = check_model(model)
        self.randomization = RandomizedTransform(space, noise)

    def forward(self, x):
        delta = self.randomization.parameters(x.shape[0], None, x.device, x.dtype)
        return self.model(self.randomization.space.apply(x, delta))


@dataclasses.dataclass(frozen=True)
class ShiftLoss:
    r"""Training under the randomization: the cross-entropy of :math:`h(T_m(\cdots T_1(x, \delta_1) \cdots, \delta_m))`,
    a fresh :math:`\delta_j` per example from each ``(space, noise)`` pair in ``randomizations``
    (torch's global generator, which :func:`robustlab.train.fit` seeds).

    >>> loss = ShiftLoss(((Brightness(), GaussianNoise(0.5)),))
    >>> value, logits = loss(_models.build("mlp", "digits", width=2), torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    >>> logits.shape
    torch.Size([4, 10])
    """

    randomizations: tuple

    def __post_init__(self):
        if not isinstance(self.randomizations, tuple) or not self.randomizations:
            raise TypeError("randomizations must be a non-empty tuple of (space, noise) pairs")
        for pair in self.randomizations:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise TypeError("randomizations must be a non-empty tuple of (space, noise) pairs")
            _check_space(pair[0])
            _check_parameter_noise(pair[1])

    def __call__(self, model, x, y):
        for space, noise in self.randomizations:
            x = space.apply(x, noise.draw((x.shape[0], space.dim), None, x.device, x.dtype))
        logits = model(x)
        return F.cross_entropy(logits, y), logits


DEFAULT_SIGMA = {"brightness": 0.5, "translation": 0.5}
"""The randomization scales the chapter's base model is trained at (brightness exponent, pixels)."""


def base_model(sigma_brightness: float = DEFAULT_SIGMA["brightness"],
               sigma_translation: float = DEFAULT_SIGMA["translation"], *, dataset: str | None = None,
               arch: str = "mlp", width: int = 8, epochs: int | None = None, seed: int = 0, device=None,
               progress: bool | None = None, cache: bool = True):
    r"""The base model :math:`h` of the randomized models: trained with Gaussian brightness
    (:math:`\sigma_b`) *and* translation (:math:`\sigma_t`) randomization together (cached).

    One model serves every randomization of the chapter: the certificate holds for any
    :math:`h`, training only decides how high the certified accuracy starts. Trained by
    :func:`robustlab.zoo.loss_trained_model` with :class:`ShiftLoss` (an MLP of width 8 for ten
    epochs by default, at most the profile's: fast on two cores).
    """
    from .zoo import loss_trained_model

    sb, st = check_positive(sigma_brightness, "sigma_brightness"), check_positive(sigma_translation, "sigma_translation")
    if epochs is None:  # ten epochs reach the profile's accuracy on the digits; the smoke profile's one stays one
        epochs = min(10, config.profile().epochs)
    loss = ShiftLoss(((Brightness(), GaussianNoise(sb)), (Translation(), GaussianNoise(st))))
    return loss_trained_model(loss, desc=f"randomized brightness ({sb:g}) and translation ({st:g}) training",
                              dataset=dataset, arch=arch, width=width, epochs=epochs, seed=seed, device=device,
                              progress=progress, cache=cache)


# =========================================================================== the certificate


def _eps_array(eps) -> np.ndarray:
    if isinstance(eps, torch.Tensor):
        eps = eps.detach().cpu().numpy()
    arr = np.asarray(eps, dtype=np.float64) if not isinstance(eps, (bool, np.bool_)) else None
    if arr is None or arr.ndim > 1 or arr.size == 0:
        raise TypeError("eps must be a shift size >= 0 or a 1-D sequence of them")
    if np.isnan(arr).any() or (arr < 0).any() or np.isinf(arr).any():
        raise ValueError(f"eps must hold finite shift sizes >= 0, got {arr.tolist()}")
    return arr


def shift_metric(noise, bound: str = "hellinger") -> tuple[int, str]:
    r"""The Wasserstein distance a bound certifies: ``(p, ground)`` for :math:`W_p` with the
    ``ground`` norm on the parameters (see the module docstring).

    >>> shift_metric(GaussianNoise(0.5)), shift_metric(GaussianNoise(0.5), "tv"), shift_metric(UniformNoise(1.0))
    ((2, 'l2'), (1, 'l2'), (1, 'l1'))
    """
    _check_parameter_noise(noise)
    check_choice(bound, "bound", BOUNDS)
    if isinstance(noise, UniformNoise):
        return 1, "l1"
    return (2, "l2") if bound == "hellinger" else (1, "l2")


def shift_bound(accuracy, eps, noise, bound: str = "hellinger"):
    r"""The certified accuracy under every shift within ``eps``, from the accuracy without shift.

    ``accuracy`` is :math:`A` (or a lower bound of it); returns, for each shift size
    :math:`\varepsilon` in ``eps``, the lower bound of :math:`\mathrm{Acc}_{D'}` over every
    :math:`D'` within :math:`\varepsilon` in the metric :func:`shift_metric` names:

    * Gaussian :math:`\sigma`, ``"hellinger"``: :math:`\cos^2(\min(\arccos\sqrt A + \arccos e^{-\varepsilon^2/8\sigma^2}, \pi/2))`;
    * Gaussian, ``"tv"``: :math:`(A - \operatorname{erf}(\varepsilon / 2\sqrt2\sigma))_+`;
    * uniform on :math:`[-w, w]^p`, ``"hellinger"``: :math:`\cos^2(\min(\arccos\sqrt A + \arccos(1 - \varepsilon/2w)_+, \pi/2))`;
    * uniform, ``"tv"``: :math:`(A - \varepsilon / 2w)_+`.

    Parameters
    ----------
    accuracy : float
        In [0, 1].
    eps : float or 1-D array of float
        Shift sizes >= 0 in parameter units.
    noise : GaussianNoise or UniformNoise
        The distribution of the randomization's parameters.
    bound : {"hellinger", "tv"}

    Returns
    -------
    float, or numpy.ndarray for several ``eps``

    Examples
    --------
    >>> shift_bound(0.9, 0.0, GaussianNoise(0.5))
    0.9
    >>> round(shift_bound(0.9, 0.5, GaussianNoise(0.5), "tv"), 4)  # 0.9 - erf(1 / (2 sqrt 2))
    0.5171
    >>> shift_bound(0.8, [0.5, 2.0], UniformNoise(1.0), "tv").round(4).tolist()
    [0.55, 0.0]
    >>> float(shift_bound(0.5, 5.0, GaussianNoise(0.5)))  # saturated: exactly 0
    0.0
    """
    a = check_probability(accuracy, "accuracy", closed=True)
    _check_parameter_noise(noise)
    check_choice(bound, "bound", BOUNDS)
    scalar = np.ndim(eps) == 0 and not isinstance(eps, torch.Tensor)
    e = _eps_array(eps).reshape(-1)
    if isinstance(noise, GaussianNoise):
        s = noise.sigma
        if bound == "tv":
            from scipy.special import erf
            out = a - erf(e / (2 * math.sqrt(2) * s))
        else:
            affinity = np.exp(-e ** 2 / (8 * s ** 2))
            out = _cos2_bound(a, affinity)
    else:
        a_width = 2 * noise.width
        if bound == "tv":
            out = a - e / a_width
        else:
            out = _cos2_bound(a, np.clip(1 - e / a_width, 0.0, 1.0))
    out = np.clip(out, 0.0, 1.0)
    out = np.where(e == 0, a, out)  # exactly A without shift (no rounding through arccos)
    return float(out[0]) if scalar else out


def _cos2_bound(a: float, affinity: np.ndarray) -> np.ndarray:
    angle = np.arccos(np.sqrt(a)) + np.arccos(np.clip(affinity, 0.0, 1.0))
    # cos(pi/2) is 6e-17 in floating point: a saturated bound is exactly 0, not 4e-33
    return np.where(angle >= math.pi / 2, 0.0, np.cos(np.minimum(angle, math.pi / 2)) ** 2)


class ShiftCertificate(NamedTuple):
    """What :func:`certify_shift` certifies: with probability at least ``1 - alpha``,
    the accuracy of the randomized model is at least ``accuracy[j]`` under every shift of
    size at most ``eps[j]`` (``wasserstein_p``, ``ground``)."""

    eps: np.ndarray
    """The shift sizes, in parameter units."""
    accuracy: np.ndarray
    """The certified lower bounds on the accuracy, one per shift size."""
    accuracy_lower: float
    """The Clopper--Pearson lower bound of the accuracy without shift."""
    correct: int
    """Correct predictions among the ``n`` draws."""
    n: int
    """Draws of (input, parameters)."""
    alpha: float
    bound: str
    wasserstein_p: int
    ground: str
    target: str
    """"empirical" (the given set) or "population" (the distribution it was drawn from)."""
    noise: object


def _forward_correct(model, space, x, y, delta, batch_size, bar=None) -> torch.Tensor:
    """bool (N,): h(T(x_j, delta_j)) == y_j, in forward passes of batch_size."""
    out = []
    for s in range(0, x.shape[0], batch_size):
        e = slice(s, s + batch_size)
        out.append(model(space.apply(x[e], delta[e])).argmax(1) == y[e])
        if bar is not None:
            bar.update(out[-1].shape[0])
    return torch.cat(out)


def certify_shift(model, x, y, space, noise, eps, *, n: int | None = None, alpha: float = 0.001,
                  bound: str = "hellinger", target: str = "empirical", seed: int = 0, batch_size: int = 2000,
                  progress: bool | None = None) -> ShiftCertificate:
    r"""Certify the accuracy of the randomized model :math:`h(T(x, \delta))` under distribution shift.

    Estimates the accuracy without shift from draws of :math:`(x_i, \delta)`, takes its
    one-sided Clopper--Pearson lower bound at level ``alpha`` and maps it through
    :func:`shift_bound` (see the module docstring for the derivation and the metric).

    Parameters
    ----------
    model : torch.nn.Module
        The base model :math:`h` (inputs (B, ...) to logits).
    x, y : torch.Tensor
        Inputs (B, ...) in [0, 1] and int64 labels (B,).
    space : TransformationSpace
        :class:`Brightness`, :class:`Translation`, :class:`Additive`, ...
    noise : GaussianNoise or UniformNoise
        The randomization of the parameters.
    eps : float or 1-D sequence of float
        Shift sizes >= 0 to certify.
    n : int, optional
        ``target="empirical"``: draws with replacement (default 10,000). ``"population"``:
        must be ``None`` (each input once).
    alpha : float
        Failure probability of the certificate.
    bound : {"hellinger", "tv"}
    target : {"empirical", "population"}
    seed : int
        Seeds the draws.
    batch_size : int
        Rows per forward pass.

    Returns
    -------
    ShiftCertificate

    Examples
    --------
    >>> model = _models.build("mlp", "digits", width=2)
    >>> x, y = torch.rand(20, 1, 8, 8), torch.randint(0, 10, (20,))
    >>> cert = certify_shift(model, x, y, Brightness(), GaussianNoise(0.5), [0.0, 0.25], n=500)
    >>> cert.n, bool(cert.accuracy[1] <= cert.accuracy[0] == cert.accuracy_lower)
    (500, True)
    """
    check_model(model)
    check_images(x, "x")
    check_labels(y, "y", batch_size=x.shape[0])
    _check_space(space)
    _check_parameter_noise(noise)
    e = _eps_array(eps).reshape(-1)
    alpha = check_probability(alpha, "alpha")
    check_choice(bound, "bound", BOUNDS)
    check_choice(target, "target", TARGETS)
    seed = check_seed(seed)
    batch_size = check_positive_int(batch_size, "batch_size")
    if target == "population":
        if n is not None:
            raise ValueError("n must be None for target='population' (each input is used once)")
        n_draws = x.shape[0]
    else:
        n_draws = 10_000 if n is None else check_positive_int(n, "n")
    device, dtype = _models.device_of(model), _models.dtype_of(model)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    idx = (torch.arange(x.shape[0]) if target == "population" else torch.randint(0, x.shape[0], (n_draws,), generator=gen))
    delta = noise.draw((n_draws, space.dim), gen, "cpu", dtype).to(device)
    xd, yd = x.detach().to(device=device, dtype=dtype), y.to(device)
    with _models.eval_mode(model), torch.no_grad(), \
            config.progress_bar(n_draws, "shift: certifying", config.progress_enabled(progress), unit="sample") as bar:
        correct = int(_forward_correct(model, space, xd[idx.to(device)], yd[idx.to(device)], delta, batch_size,
                                       bar).sum())
    acc_lower = float(clopper_pearson(correct, n_draws, alpha))
    certified = np.asarray(shift_bound(acc_lower, e, noise, bound), dtype=np.float64).reshape(-1)
    p, ground = shift_metric(noise, bound)
    return ShiftCertificate(e, certified, acc_lower, correct, n_draws, alpha, bound, p, ground, target, noise)


# =========================================================================== checking it: shifted accuracies


def shifted_accuracy(model, x, y, space, noise, theta, *, n: int = 1000, seed: int = 0,
                     batch_size: int = 4000) -> torch.Tensor:
    r"""The randomized model's accuracy on each shifted input :math:`T(x_i, \theta_i)`, estimated
    from ``n`` draws: :math:`\frac1n\sum_j \mathbb 1[h(T(x_i, \theta_i + \delta_j)) = y_i]`.

    Uses the composition :math:`T(T(x, \theta), \delta) = T(x, \theta + \delta)`. The same
    ``n`` draws :math:`\delta_j` (seeded ``seed``) serve every input and every ``theta``
    (common random numbers: shifted accuracies are compared with less noise).

    Parameters
    ----------
    theta : torch.Tensor
        (B, p) per input, or (p,) for one shift of the whole set.

    Returns
    -------
    torch.Tensor
        float64 (B,), on the device of ``x``.
    """
    check_model(model)
    check_images(x, "x")
    check_labels(y, "y", batch_size=x.shape[0])
    _check_space(space)
    _check_parameter_noise(noise)
    n = check_positive_int(n, "n")
    seed = check_seed(seed)
    batch_size = check_positive_int(batch_size, "batch_size")
    check_tensor(theta, "theta")
    device, dtype = _models.device_of(model), _models.dtype_of(model)
    xd, yd = x.detach().to(device=device, dtype=dtype), y.to(device)
    theta = space._theta(xd, theta.to(device=device, dtype=dtype))
    delta = noise.draw((n, space.dim), torch.Generator(device="cpu").manual_seed(seed), "cpu", dtype).to(device)
    hits = torch.zeros(x.shape[0], dtype=torch.float64, device=device)
    per = max(1, batch_size // n)  # inputs per forward pass, all n draws each
    with _models.eval_mode(model), torch.no_grad():
        for s in range(0, x.shape[0], per):
            xs, ys, ts = xd[s:s + per], yd[s:s + per], theta[s:s + per]
            b = xs.shape[0]
            rep = xs.repeat_interleave(n, 0)
            par = (ts[:, None, :] + delta[None]).reshape(b * n, space.dim)
            pred = model(space.apply(rep, par)).argmax(1).view(b, n)
            hits[s:s + b] = (pred == ys[:, None]).double().mean(1)
    return _models.to_input(x, hits)


def parameter_grid(space_or_dim, radius: float, steps: int = 9) -> torch.Tensor:
    r"""A regular grid of parameters :math:`\theta` in :math:`[-r, r]^p`: ``steps`` values per axis,
    shape (steps ** p, p), float64.

    >>> parameter_grid(1, 1.0, 5).flatten().tolist()
    [-1.0, -0.5, 0.0, 0.5, 1.0]
    >>> parameter_grid(Translation(), 1.0, 3).shape
    torch.Size([9, 2])
    """
    dim = space_or_dim if isinstance(space_or_dim, int) else _check_space(space_or_dim).dim
    check_positive_int(dim, "dim")
    radius = check_nonneg(radius, "radius", allow_tensor=False)
    steps = check_positive_int(steps, "steps")
    axis = torch.linspace(-radius, radius, steps, dtype=torch.float64)
    mesh = torch.meshgrid(*([axis] * dim), indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], 1)


def accuracy_grid(model, x, y, space, noise, grid, *, n: int = 500, seed: int = 0,
                  batch_size: int = 4000, progress: bool | None = None) -> torch.Tensor:
    r"""The table :math:`p_{ig}` of :func:`shifted_accuracy` for every input and every
    parameter :math:`\theta_g` of ``grid`` (G, p): float64 (B, G), on the CPU.

    The same draws of :math:`\delta` serve every grid point (common random numbers).
    """
    check_tensor(grid, "grid")
    _check_space(space)
    if grid.dim() != 2 or grid.shape[1] != space.dim:
        raise ValueError(f"grid must have shape (G, {space.dim}), got {tuple(grid.shape)}")
    cols = []
    with config.progress_bar(grid.shape[0], "shift: accuracy grid", config.progress_enabled(progress),
                             unit="shift") as bar:
        for g in range(grid.shape[0]):
            cols.append(shifted_accuracy(model, x, y, space, noise, grid[g], n=n, seed=seed,
                                         batch_size=batch_size).cpu())
            bar.update(1)
    return torch.stack(cols, 1)


class WorstShift(NamedTuple):
    """The worst plan of per-input shifts on a grid within a Wasserstein budget (:func:`worst_shift`)."""

    accuracy: float
    """The lowest mean accuracy of the randomized model that a plan within the budget reaches."""
    plan: np.ndarray
    """(B, G): the mass of input i sent to shift g (rows sum to 1; most rows are one-hot)."""
    mean_cost: float
    """The plan's mean cost, the p-th power of its Wasserstein distance (<= budget)."""
    constant: float
    """The lowest accuracy of one shift for the whole set (a grid point of norm <= eps)."""


def worst_shift(table, grid, eps: float, *, p: int = 1, ground: str = "l2") -> WorstShift:
    r"""The worst distribution shift on a grid: the plan of per-input shifts that minimizes the
    mean accuracy subject to a Wasserstein budget.

    With :math:`p_{ig}` the accuracy of input :math:`i` shifted by :math:`\theta_g` (``table``)
    and :math:`c_g = \|\theta_g\|^p` in the ``ground`` norm, solves the linear programme

    .. math:: \min_{\pi \ge 0} \frac1B \sum_{i,g} \pi_{ig}\, p_{ig} \quad\text{s.t.}\quad
              \sum_g \pi_{ig} = 1, \qquad \frac1B \sum_{i,g} \pi_{ig}\, c_g \le \varepsilon^p,

    whose value is the lowest accuracy over every shift of the (empirical) distribution
    within :math:`W_p \le \varepsilon` that moves inputs only by grid parameters (SciPy's
    HiGHS). A certified bound for :math:`W_p \le \varepsilon` must not exceed it.

    >>> table = torch.tensor([[1.0, 0.0], [1.0, 1.0]])           # input 0 fails when shifted by 1
    >>> grid = torch.tensor([[0.0], [1.0]])
    >>> round(worst_shift(table, grid, 0.5).accuracy, 6)          # half a unit of mean shift
    0.5
    """
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix, identity, kron

    check_tensor(table, "table")
    check_tensor(grid, "grid")
    t = table.detach().cpu().double().numpy()
    g = grid.detach().cpu().double().numpy()
    if t.ndim != 2 or g.ndim != 2 or t.shape[1] != g.shape[0]:
        raise ValueError(f"table (B, G) and grid (G, p) must agree on G, got {t.shape} and {g.shape}")
    eps = check_nonneg(eps, "eps", allow_tensor=False)
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2 (W1 or W2), got {p!r}")
    check_choice(ground, "ground", ("l1", "l2"))
    norms = np.abs(g).sum(1) if ground == "l1" else np.sqrt((g ** 2).sum(1))
    cost = norms ** p
    b, n_g = t.shape
    a_eq = kron(identity(b, format="csr"), csr_matrix(np.ones((1, n_g))), format="csr")
    a_ub = csr_matrix(np.tile(cost, b)[None] / b)
    res = linprog(t.reshape(-1) / b, A_ub=a_ub, b_ub=[eps ** p + 1e-12], A_eq=a_eq, b_eq=np.ones(b),
                  bounds=(0, 1), method="highs")
    if not res.success:
        raise RuntimeError(f"the linear programme failed: {res.message}")
    plan = res.x.reshape(b, n_g)
    inside = norms <= eps + 1e-12
    constant = float(t[:, inside].mean(0).min()) if inside.any() else float("nan")
    return WorstShift(float(res.fun), plan, float((plan * cost).sum() / b), constant)
