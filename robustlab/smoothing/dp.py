r"""Certification from differential privacy (PixelDP, Lecuyer et al., 2019).

A randomized scoring function :math:`A : [0,1]^d \to [0,1]^K` is
:math:`(\varepsilon, \delta)`-differentially private with respect to the :math:`L_p`
metric at distance :math:`L` if for all inputs with :math:`\|x - x'\|_p \le L` and every
set :math:`S` of outputs

.. math::

    P(A(x) \in S) \le e^{\varepsilon} P(A(x') \in S) + \delta .

**Lemma 1.** If the outputs lie in :math:`[0, 1]`, the expected output is stable:
:math:`E[A(x)] \le e^{\varepsilon} E[A(x')] + \delta`.

**Proposition.** If for some class :math:`i`

.. math::

    E[A_i(x)] > e^{2\varepsilon} \max_{j \ne i} E[A_j(x)] + (1 + e^{\varepsilon})\,\delta ,

then the smoothed classifier :math:`g(x) = \arg\max_k E[A_k(x)]` predicts :math:`i` at
every :math:`x'` with :math:`\|x' - x\|_p \le L`.

The noise layer makes a network DP: its first layer :math:`h(x) = Wx + b` is divided by
its sensitivity :math:`N_{p,q} = \|W\|_{p,q} = \sup_{x \ne 0} \|Wx\|_q / \|x\|_p`
(:func:`sensitivity`), so that it has sensitivity at most 1, and noise calibrated by
:math:`(\varepsilon, \delta, L)` is added to its output:

* Laplace mechanism (:math:`L_1` attacks, :math:`q = 1`): scale
  :math:`b = N_{1,1} L / \varepsilon` per coordinate, :math:`(\varepsilon, 0)`-DP
  (:func:`laplace_scale`);
* Gaussian mechanism (:math:`L_2` attacks with :math:`q = 2`, and :math:`L_\infty`
  attacks with :math:`N_{\infty,2}`): standard deviation
  :math:`\sigma = \sqrt{2\ln(1.25/\delta)}\, N_{p,2} L / \varepsilon`,
  :math:`(\varepsilon, \delta)`-DP for :math:`\varepsilon \le 1` (:func:`gaussian_sigma`).

Everything after the noise layer is post-processing and keeps the guarantee. The noise
is on at training and at prediction time. :func:`expected_scores` estimates
:math:`E[A(x)]` by Monte Carlo on the sampling engine (:mod:`robustlab.smoothing.sampling`:
the layers before the noise run once per input, each input's noise comes from its own
seeded stream, the estimate does not depend on the batch size), :func:`score_bounds`
bounds it simultaneously for all classes (Bonferroni, with :mod:`robustlab.stats`), and
:func:`certify` applies the proposition to the bounds and returns the shared
:class:`~robustlab.certificates.Certificate` with the largest radius at which it holds.
The operator norms behind :func:`sensitivity` live in :mod:`robustlab.lipschitz`.

References: Lecuyer, Atlidakis, Geambasu, Hsu, Jana, "Certified robustness to adversarial
examples with differential privacy", IEEE S&P 2019; Dwork and Roth, "The algorithmic
foundations of differential privacy", 2014 (the Laplace and Gaussian mechanisms).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import config
from .. import data as _data
from .. import lipschitz as _lip
from .. import models as _models
from .. import stats as _stats
from .. import train as _train
from ..certificates import UNITS, Certificate
from ..lipschitz.operators import _check_layer, _name
from .._validate import (
    check_choice,
    check_images,
    check_model,
    check_nonneg,
    check_positive,
    check_positive_int,
    check_probability,
)
from . import sampling as _sampling

__all__ = [
    "ATTACK_NORMS",
    "Sensitivity",
    "sensitivity",
    "laplace_scale",
    "gaussian_sigma",
    "robustness_condition",
    "max_eps",
    "NoiseLayer",
    "PixelDP",
    "NOISE_AT",
    "noise_on_input",
    "build",
    "pixeldp_model",
    "expected_scores",
    "score_bounds",
    "predict",
    "certify",
    "SmoothedScores",
    "L1_NOISES",
    "l1_smoothing_radius",
    "l1_smoothing_sigma",
]

ATTACK_NORMS = {
    # attack norm: (p, q, mechanism); the noise lives in the q-norm geometry of the layer output
    "l1": (1.0, 1.0, "laplace"),
    "l2": (2.0, 2.0, "gaussian"),
    "linf": (math.inf, 2.0, "gaussian"),
}
SCORES = ("argmax", "softmax")


# =========================================================================== sensitivity


Sensitivity = _lip.OperatorNorm


def sensitivity(layer, p="l2", q="l2", *, input_shape=None, max_vertices: int = 2 ** 16,
                unroll_limit: int = 4096) -> Sensitivity:
    r"""The sensitivity :math:`N_{p,q} = \|W\|_{p,q} = \sup_{x \ne 0} \|Wx\|_q / \|x\|_p` of a layer.

    The bias cancels in :math:`h(x) - h(x')`, so the sensitivity of :math:`h(x) = Wx + b`
    is the operator norm of its linear part (Lecuyer et al., 2019): exact for
    :math:`p = 1`, :math:`q = \infty`, :math:`p = q = 2` and, on small layers, by vertex
    enumeration; an upper bound otherwise, with a lower estimate beside it. This is
    :func:`robustlab.lipschitz.operator_norm` (see there for the cases and the parameters).

    Returns
    -------
    Sensitivity
        ``(value, exact, method, lower, p, q)``.

    Examples
    --------
    >>> first = build("mlp", "digits", width=2).first  # the layer the noise follows
    >>> s = sensitivity(first, "l2", "l2")
    >>> s.exact, s.method, s.lower == s.value
    (True, 'largest singular value', True)
    >>> sensitivity(first, "linf", "l2", max_vertices=1).exact  # NP-hard in general: an upper bound
    False
    """
    return _lip.operator_norm(layer, p, q, input_shape=input_shape, max_vertices=max_vertices,
                              unroll_limit=unroll_limit)


# =========================================================================== mechanisms


def laplace_scale(eps, L=1.0, sensitivity=1.0) -> float:
    r"""Scale :math:`b = N_{1,1} L / \varepsilon` of the Laplace mechanism.

    Adding independent :math:`\mathrm{Laplace}(0, b)` noise to every coordinate of a
    function with :math:`L_1` sensitivity ``sensitivity`` makes it
    :math:`(\varepsilon, 0)`-DP for inputs at :math:`L_p` distance up to ``L`` (Dwork and
    Roth, 2014, Theorem 3.6).

    >>> laplace_scale(eps=0.5, L=0.1, sensitivity=2.0)
    0.4
    """
    check_positive(eps, "eps")
    check_positive(L, "L")
    check_positive(sensitivity, "sensitivity")
    return float(sensitivity) * float(L) / float(eps)


def gaussian_sigma(eps, delta, L=1.0, sensitivity=1.0) -> float:
    r"""Standard deviation :math:`\sigma = \sqrt{2 \ln(1.25/\delta)}\, N_{p,2} L / \varepsilon`.

    Adding independent :math:`\mathcal{N}(0, \sigma^2)` noise to every coordinate of a
    function with :math:`L_2` sensitivity ``sensitivity`` makes it
    :math:`(\varepsilon, \delta)`-DP for inputs at distance up to ``L``, for
    :math:`0 < \varepsilon \le 1` and :math:`0 < \delta < 1` (Dwork and Roth, 2014,
    Theorem A.1; the classical analysis does not cover :math:`\varepsilon > 1`).

    >>> round(gaussian_sigma(eps=1.0, delta=1e-5, L=0.1), 4)
    0.4845
    """
    check_positive(eps, "eps")
    if eps > 1:
        raise ValueError(f"eps must be <= 1 for the Gaussian mechanism (its guarantee needs eps <= 1), got {eps}")
    check_probability(delta, "delta")
    check_positive(L, "L")
    check_positive(sensitivity, "sensitivity")
    return math.sqrt(2.0 * math.log(1.25 / float(delta))) * float(sensitivity) * float(L) / float(eps)


# =========================================================================== the proposition


def robustness_condition(expected_top, expected_runner_up, eps, delta) -> torch.Tensor:
    r"""The proposition's condition :math:`E_i > e^{2\varepsilon} E_j + (1 + e^{\varepsilon})\delta`.

    With ``expected_top`` :math:`= E[A_i(x)]` (or a lower bound of it) and
    ``expected_runner_up`` :math:`= \max_{j \ne i} E[A_j(x)]` (or an upper bound), True
    means that the prediction :math:`i` of the smoothed classifier cannot change under
    perturbations that the mechanism's :math:`(\varepsilon, \delta)`-DP covers.

    >>> robustness_condition(torch.tensor([0.8, 0.6]), torch.tensor([0.1, 0.3]), eps=0.5, delta=0.0)
    tensor([ True, False])
    """
    top = torch.as_tensor(expected_top, dtype=torch.float64)
    second = torch.as_tensor(expected_runner_up, dtype=torch.float64)
    eps = torch.as_tensor(eps, dtype=torch.float64)
    if bool((eps < 0).any()) or bool(torch.isnan(eps).any()):
        raise ValueError("eps must be >= 0")
    delta = check_probability(delta, "delta", closed=True, high_open=True)
    return top > torch.exp(2 * eps) * second + (1 + torch.exp(eps)) * delta


def max_eps(expected_top, expected_runner_up, delta) -> torch.Tensor:
    r"""The supremum of the :math:`\varepsilon` for which :func:`robustness_condition` holds.

    With :math:`t = e^{\varepsilon}`, the condition reads
    :math:`E_j t^2 + \delta t + (\delta - E_i) < 0`, true exactly for
    :math:`t < t^\star = \big(-\delta + \sqrt{\delta^2 + 4 E_j (E_i - \delta)}\big) / (2 E_j)`
    (:math:`t^\star = (E_i - \delta)/\delta` if :math:`E_j = 0`, and :math:`\infty` if
    also :math:`\delta = 0`). Returns :math:`\ln t^\star`, or 0 where :math:`t^\star \le 1`
    (the condition fails at every :math:`\varepsilon \ge 0`).

    >>> max_eps(torch.tensor([0.8]), torch.tensor([0.2]), delta=0.0)  # (1/2) ln 4
    tensor([0.6931], dtype=torch.float64)
    """
    top = torch.as_tensor(expected_top, dtype=torch.float64)
    second = torch.as_tensor(expected_runner_up, dtype=torch.float64)
    delta = check_probability(delta, "delta", closed=True, high_open=True)
    for t, name in ((top, "expected_top"), (second, "expected_runner_up")):
        if bool(torch.isnan(t).any()) or bool((t < 0).any()) or bool((t > 1).any()):
            raise ValueError(f"{name} must hold expected scores in [0, 1]")
    safe = second.clamp_min(1e-300)
    t_star = (-delta + torch.sqrt(delta ** 2 + 4 * second * (top - delta)).nan_to_num(0.0)) / (2 * safe)
    if delta > 0:
        t_zero = (top - delta) / delta
    else:
        t_zero = torch.where(top > 0, torch.full_like(top, math.inf), torch.zeros_like(top))
    t_star = torch.where(second > 0, t_star, t_zero)
    return torch.where(t_star > 1, torch.log(t_star.clamp_min(1.0)), torch.zeros_like(t_star))


# =========================================================================== the noise layer


class NoiseLayer(nn.Module):
    r"""Adds Laplace(0, ``scale``) or N(0, ``scale``\ :sup:`2`) noise, in training *and* evaluation.

    The noise is :attr:`distribution`, a :class:`~robustlab.smoothing.sampling.LaplaceNoise`
    or :class:`~robustlab.smoothing.sampling.GaussianNoise` of the sampling engine. A
    forward pass draws from torch's global generator (training, attacks);
    :func:`expected_scores` and :func:`certify` draw each input's noise from its own
    seeded stream instead.
    """

    def __init__(self, mechanism: str, scale: float):
        super().__init__()
        self.mechanism = check_choice(mechanism, "mechanism", ("laplace", "gaussian"))
        self.scale = float(check_positive(scale, "scale"))
        self.distribution = (_sampling.GaussianNoise(self.scale) if self.mechanism == "gaussian"
                             else _sampling.LaplaceNoise(self.scale))

    def sample(self, shape, like: torch.Tensor) -> torch.Tensor:
        """Noise of shape ``shape`` on the device and dtype of ``like``, from the global generator."""
        return self.distribution.draw(tuple(shape), None, like.device, like.dtype)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.sample(h.shape, h)

    def extra_repr(self) -> str:
        return f"mechanism={self.mechanism!r}, scale={self.scale:.6g}"


def _split(model: nn.Module):
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be a torch.nn.Sequential whose first Linear or Conv2d becomes the noisy "
                        f"layer, got {type(model).__name__}")
    mods = list(model)
    for i, mod in enumerate(mods):
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            pre = mods[:i]
            for m in pre:
                if not isinstance(m, (_models.Normalize, nn.Flatten)):
                    raise ValueError(f"model may only hold Normalize and Flatten before its first Linear or "
                                     f"Conv2d (the sensitivity is that of an affine map), found {type(m).__name__}")
            return pre, mod, mods[i + 1:]
    raise ValueError("model holds no Linear or Conv2d layer to make noisy")


class PixelDP(nn.Module):
    r"""A PixelDP network: first layer / sensitivity, a noise layer, then the rest of ``model``.

    ``model`` is a ``torch.nn.Sequential`` (as :func:`robustlab.models.build` makes them)
    whose modules up to its first ``Linear`` or ``Conv2d`` are a ``Normalize`` and a
    ``Flatten`` at most. That affine prefix :math:`h(x) = W\,\mathrm{norm}(x) + b` is
    divided, at every forward pass, by the current :math:`N_{p,q}` of its linear part (the
    per-channel ``1/std`` of ``Normalize`` folded into :math:`W`), computed differentiably,
    exactly where a formula is exact and as an upper bound otherwise (see
    :func:`sensitivity`); the normalized layer therefore has sensitivity at most 1. Then
    :class:`NoiseLayer` adds noise of scale :func:`laplace_scale` (``norm="l1"``) or
    :func:`gaussian_sigma` (``"l2"``, ``"linf"``) at ``(eps, delta, L)`` with sensitivity
    1, so :math:`x \mapsto \mathrm{softmax}(\text{rest}(\cdot))` is
    :math:`(\varepsilon, \delta)`-DP for :math:`\|x - x'\|_p \le L`. The noise is on in
    train and eval mode alike; :func:`robustlab.train.fit` trains the model with it.

    Parameters
    ----------
    model : torch.nn.Sequential
    input_shape : tuple
        Shape of one input, e.g. (1, 8, 8).
    norm : {"l1", "l2", "linf"}
        Attack norm :math:`p`; fixes :math:`q` and the mechanism (:data:`ATTACK_NORMS`).
    eps, delta, L : float
        The DP guarantee the noise is calibrated for (``delta`` is ignored, and set to 0,
        for the Laplace mechanism).
    unroll_limit : int
        Convolutions with at most this many inputs are unrolled at every forward pass
        (exact spectral norm); larger ones use the cheaper circular-convolution bound.

    Examples
    --------
    >>> import robustlab as rl
    >>> net = PixelDP(rl.models.build("mlp", "digits", width=2), (1, 8, 8), norm="l2", eps=1.0, delta=1e-5, L=0.1)
    >>> net.mechanism, round(net.noise.scale, 4), net.sensitivity_exact
    ('gaussian', 0.4845, True)
    >>> round(net.eps_at(0.05), 3), round(net.radius_at(1.0), 3)
    (0.5, 0.1)
    """

    def __init__(self, model: nn.Module, input_shape, *, norm: str = "l2", eps: float = 1.0,
                 delta: float = 1e-5, L: float = 0.1, unroll_limit: int = 256):
        super().__init__()
        check_model(model)
        check_choice(norm, "norm", ATTACK_NORMS)
        self.p, self.q, self.mechanism = ATTACK_NORMS[norm]
        self.norm = norm
        check_positive(eps, "eps")
        check_positive(L, "L")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.unroll_limit = check_positive_int(unroll_limit, "unroll_limit", allow_zero=True)
        pre, first, rest = _split(model)
        if isinstance(first, nn.Linear) and first.in_features != math.prod(self.input_shape):
            raise ValueError(f"input_shape {self.input_shape} has {math.prod(self.input_shape)} values but the first "
                             f"Linear takes {first.in_features}")
        _check_layer(first, self.input_shape if isinstance(first, nn.Conv2d) else None, "the first layer")
        self.pre, self.first, self.rest = nn.Sequential(*pre), first, nn.Sequential(*rest)
        if self.mechanism == "laplace":
            self.eps, self.delta, self.L = float(eps), 0.0, float(L)
            scale = laplace_scale(eps, L)
        else:
            self.eps, self.delta, self.L = float(eps), check_probability(delta, "delta"), float(L)
            scale = gaussian_sigma(eps, delta, L)
        self.noise = NoiseLayer(self.mechanism, scale)
        with torch.no_grad():
            _, self.sensitivity_exact, self.sensitivity_method = self._sensitivity()

    def _effective_weight(self) -> torch.Tensor:
        w = self.first.weight
        std = None
        for m in self.pre:
            if isinstance(m, _models.Normalize):
                std = m.std.to(w.dtype)
        if std is None:
            return w
        if isinstance(self.first, nn.Conv2d):
            return w / std.view(1, -1, 1, 1)
        c = self.input_shape[0]
        per_input = std.view(c, 1).expand(c, math.prod(self.input_shape[1:])).reshape(1, -1)
        return w / per_input

    def _sensitivity(self):
        op = _lip.linear_operator(self.first, self._effective_weight(), self.input_shape, self.unroll_limit)
        return _lip.norm_bound(op, self.p, self.q)

    def layer_sensitivity(self) -> float:
        r"""The current :math:`N_{p,q}` (or its upper bound) of the first layer before normalization."""
        with torch.no_grad():
            return float(self._sensitivity()[0])

    def features(self, x: torch.Tensor, sensitivity=None) -> torch.Tensor:
        """The first layer's output divided by its sensitivity, before the noise.

        ``sensitivity`` (the value of :meth:`layer_sensitivity`) skips recomputing it.
        """
        value = self._sensitivity()[0] if sensitivity is None else sensitivity
        return self.first(self.pre(x)) / value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.noise(self.features(x)))

    def eps_at(self, radius):
        r"""The :math:`\varepsilon` that the noise guarantees at :math:`L_p` distance ``radius``.

        Laplace: :math:`\varepsilon = L / b`; Gaussian:
        :math:`\varepsilon = \sqrt{2\ln(1.25/\delta)}\, L / \sigma` (valid while
        :math:`\varepsilon \le 1`). Linear in the radius.
        """
        return radius * self._eps_per_unit()

    def radius_at(self, eps):
        r"""The radius at which the noise is :math:`(\varepsilon, \delta)`-DP (inverse of :meth:`eps_at`)."""
        return eps / self._eps_per_unit()

    @property
    def max_certifiable_eps(self) -> float:
        """The largest eps the mechanism's guarantee covers: 1 for Gaussian noise, unbounded for Laplace."""
        return 1.0 if self.mechanism == "gaussian" else math.inf

    def _eps_per_unit(self) -> float:
        if self.mechanism == "laplace":
            return 1.0 / self.noise.scale
        return math.sqrt(2.0 * math.log(1.25 / self.delta)) / self.noise.scale

    def extra_repr(self) -> str:
        return (f"norm={self.norm!r}, p={_name(self.p)}, q={_name(self.q)}, eps={self.eps:g}, delta={self.delta:g}, "
                f"L={self.L:g}, input_shape={self.input_shape}")


NOISE_AT = ("layer", "input")


def noise_on_input(model: nn.Module, input_shape) -> nn.Sequential:
    r"""``model`` behind a fixed identity layer, so that :class:`PixelDP` puts its noise on the input.

    Returns ``Sequential(Flatten, Linear(d, d) = identity, Unflatten, *model)`` with the
    identity's weights frozen (``requires_grad=False``). :class:`PixelDP` makes the identity its
    noisy layer: the noise is added to the pixels, at the sensitivity of the identity,
    :math:`N_{p,q}(I) = \sup_{x \ne 0} \|x\|_q / \|x\|_p`, which is 1 for
    :math:`p = q` (the L1 and L2 attacks) and :math:`\sqrt d` for the :math:`L_\infty`
    attack with the Gaussian mechanism (:math:`p = \infty`, :math:`q = 2`). The whole of
    ``model``, its normalization included, is post-processing.

    Examples
    --------
    >>> import robustlab as rl
    >>> net = PixelDP(noise_on_input(rl.models.build("mlp", "digits", width=1), (1, 8, 8)), (1, 8, 8), norm="l2")
    >>> round(net.layer_sensitivity(), 6), net.sensitivity_exact, net(torch.rand(2, 1, 8, 8)).shape
    (1.0, True, torch.Size([2, 10]))
    """
    check_model(model)
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__len__") or len(input_shape) == 0:
        raise TypeError(f"input_shape must be the shape of one input, e.g. (1, 8, 8), got {input_shape!r}")
    shape = tuple(check_positive_int(int(s), "input_shape") for s in input_shape)
    d = math.prod(shape)
    identity = nn.Linear(d, d)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(d))
        identity.bias.zero_()
    identity.requires_grad_(False)
    ref = next(iter(model.parameters()), None)
    if ref is not None:
        identity.to(device=ref.device, dtype=ref.dtype)
    return nn.Sequential(nn.Flatten(), identity, nn.Unflatten(1, shape), *(model if isinstance(model, nn.Sequential)
                                                                          else [model]))


def build(arch: str | None = None, dataset: str | None = None, *, norm: str = "l2", eps: float = 1.0,
          delta: float = 1e-5, L: float = 0.1, width: int | None = None, seed: int | None = 0,
          noise_at: str = "layer") -> PixelDP:
    """A fresh :class:`PixelDP` network around :func:`robustlab.models.build`'s architecture.

    ``noise_at="layer"`` (PixelDP's placement) adds the noise after the first layer;
    ``"input"`` adds it to the input (:func:`noise_on_input`), with the same network after it.

    >>> net = build("cnn", "digits", norm="l1", eps=1.0, L=0.5)
    >>> net(torch.rand(3, 1, 8, 8)).shape, net.noise.mechanism, net.noise.scale
    (torch.Size([3, 10]), 'laplace', 0.5)
    >>> build("mlp", "digits", noise_at="input").first.in_features  # the identity on the 64 pixels
    64
    """
    meta = _data.info(dataset or config.profile().dataset)
    arch = arch or config.profile().arch
    check_choice(arch, "arch", ("mlp", "cnn"))
    check_choice(noise_at, "noise_at", NOISE_AT)
    model = _models.build(arch, meta.name, width=width, seed=seed)
    if noise_at == "input":
        model = noise_on_input(model, meta.shape)
    return PixelDP(model, meta.shape, norm=norm, eps=eps, delta=delta, L=L)


def pixeldp_model(dataset: str | None = None, *, norm: str = "l2", eps: float = 1.0, delta: float = 1e-5,
                  L: float | None = None, arch: str | None = None, width: int | None = None,
                  epochs: int | None = None, seed: int = 0, device=None, progress: bool | None = None,
                  cache: bool = True, noise_at: str = "layer") -> _train.Trained:
    """A PixelDP network of the active profile trained with its noise on (cached on disk).

    ``L`` defaults to 0.1 (L2), 0.5 (L1) or 0.02 (Linf) pixels for the 8x8 digits and to
    0.3, 1.0, 0.02 for the larger data sets. Training is :func:`robustlab.train.fit` with
    the profile's epochs, learning rate and batch size. ``noise_at`` places the noise
    after the first layer (``"layer"``) or on the input (``"input"``), as in :func:`build`.
    """
    prof = config.profile()
    meta = _data.info(dataset or prof.dataset)
    check_choice(norm, "norm", ATTACK_NORMS)
    check_choice(noise_at, "noise_at", NOISE_AT)
    where = "" if noise_at == "layer" else ", noise on the input"
    if L is None:
        small = meta.name == "digits"
        L = {"l2": 0.1 if small else 0.3, "l1": 0.5 if small else 1.0, "linf": 0.02}[norm]
    from ..zoo import profile_model

    def train_fn(model, train, test):
        return _train.fit(model, train, epochs=prof.epochs if epochs is None else epochs, lr=prof.lr,
                          batch_size=prof.batch_size, seed=seed, eval_data=test, progress=progress, cache=cache,
                          desc=f"PixelDP ({norm}{where}) training on {meta.name}")

    def make(arch, dataset, *, width, seed):
        return build(arch, dataset, norm=norm, eps=eps, delta=delta, L=L, width=width, seed=seed, noise_at=noise_at)

    return profile_model(train_fn, meta.name, arch, width=width, seed=seed, device=device, build=make)


# =========================================================================== expected scores


class _NoisyFeatures(_sampling.Noise):
    """PixelDP's randomization of one input: its normalized first-layer output plus the noise
    layer's noise (the part of the network before the noise runs once per block, deterministically)."""

    def __init__(self, net: "PixelDP", sensitivity: torch.Tensor):
        self.net, self.value = net, sensitivity
        self.device, self.dtype = _models.device_of(net), _models.dtype_of(net)

    def sample(self, x_i, size, generator):
        h = self.net.features(x_i[None].to(device=self.device, dtype=self.dtype), self.value)[0]
        noise = self.net.noise.distribution.draw((size, *h.shape), generator, h.device, h.dtype)
        return noise.add_(h)


def _check_scoring_args(model, x, n, scores, batch_size, seed):
    if not isinstance(model, PixelDP):
        raise TypeError(f"model must be a PixelDP network (its noise layer is what is sampled), "
                        f"got {type(model).__name__}")
    check_images(x, "x")
    check_positive_int(n, "n")
    check_choice(scores, "scores", SCORES)
    check_positive_int(batch_size, "batch_size")
    if seed is not None:
        _sampling.seeds(seed, x.shape[0])  # checks the seed(s)


def _score_sums(model: "PixelDP", x, n, scores, batch_size, seed, progress):
    """Sums over n noise draws of the scores, (B, K) float64 on the device of x: input i's noise
    from its own stream seeded seed + i, through the sampling engine on the rest of the network."""
    with _models.eval_mode(model), torch.no_grad():
        noise = _NoisyFeatures(model, model._sensitivity()[0])
        mode = "counts" if scores == "argmax" else "scores"
        sums = _sampling.sample(model.rest, x, n, noise, mode=mode, seed=seed, batch_size=batch_size,
                                progress=progress, desc="PixelDP: noise draws")
    return sums.double()


def expected_scores(model: nn.Module, x: torch.Tensor, *, n: int = 1000, scores: str = "argmax",
                    batch_size: int = 4096, seed=0, progress: bool | None = None) -> torch.Tensor:
    r"""Monte Carlo estimate :math:`\hat E[A(x)] = \frac1n \sum_{t=1}^n A^{(t)}(x)`, shape (B, K), float64.

    ``model`` is a :class:`PixelDP` network. With ``scores="argmax"`` the score vector of a
    draw is the one-hot of its predicted class, so the estimate holds class frequencies;
    with ``"softmax"`` it is the softmax output. Both lie in :math:`[0, 1]^K`, as Lemma 1
    needs. The part of the network before the noise runs once per input; input
    :math:`i`'s noise comes from its own stream seeded ``seed + i`` (or ``seed[i]``;
    ``None`` draws the seeds from torch's global generator), and the noisy representations
    are packed into forward passes of ``batch_size`` through the rest of the network
    (:func:`robustlab.smoothing.sampling.sample`), so an estimate does not depend on
    ``batch_size`` or on the other inputs of the batch. Returned on the device of ``x``.

    Examples
    --------
    >>> net = build("mlp", "digits", norm="l2", L=0.1, width=2)
    >>> est = expected_scores(net, torch.rand(3, 1, 8, 8), n=50)
    >>> est.shape, bool(torch.allclose(est.sum(1), torch.ones(3, dtype=torch.float64)))
    (torch.Size([3, 10]), True)
    """
    _check_scoring_args(model, x, n, scores, batch_size, seed)
    return _score_sums(model, x, n, scores, batch_size, seed, progress) / n


def score_bounds(mean: torch.Tensor, n: int, *, alpha: float = 0.05, scores: str = "argmax"):
    r"""Bounds ``(lower, upper)`` on every :math:`E[A_k(x)]`, simultaneously at confidence 1 - alpha.

    Each of the :math:`K` classes gets a two-sided interval at level
    :math:`a = \alpha / K` (:func:`robustlab.stats.bonferroni`), so that all :math:`K`
    intervals hold at once with probability at least :math:`1 - \alpha`:

    * ``"argmax"`` (counts :math:`c_k = n \hat E_k`, exactly binomial): the two-sided
      Clopper--Pearson interval at level :math:`a` (:func:`robustlab.stats.clopper_pearson`);
    * ``"softmax"`` (averages of scores in [0, 1]): Hoeffding's inequality,
      :math:`\hat E_k \pm \sqrt{\ln(2/a) / (2n)}` (:func:`robustlab.stats.hoeffding`), cut
      to [0, 1] (where the expectation lies).

    >>> lo, hi = score_bounds(torch.tensor([[0.9, 0.1]]), 100, alpha=0.05)
    >>> bool(lo[0, 0] < 0.9 < hi[0, 0]), bool(lo[0, 1] < 0.1 < hi[0, 1])
    (True, True)
    """
    if not isinstance(mean, torch.Tensor) or mean.dim() != 2:
        raise ValueError("mean must be a (B, K) tensor of estimated expected scores")
    mean = mean.double().cpu()
    if bool(torch.isnan(mean).any()) or bool((mean < 0).any()) or bool((mean > 1).any()):
        raise ValueError("mean must hold estimated expected scores in [0, 1]")
    check_positive_int(n, "n")
    alpha = check_probability(alpha, "alpha")
    check_choice(scores, "scores", SCORES)
    a = _stats.bonferroni(alpha, mean.shape[1])
    if scores == "softmax":
        t = _stats.hoeffding(n, a)
        return (mean - t).clamp_min(0.0), (mean + t).clamp_max(1.0)
    counts = torch.round(mean * n)
    if bool((torch.abs(counts - mean * n) > 1e-6 * n).any()):
        raise ValueError(f"with scores='argmax', mean * n must be whole counts (n = {n})")
    lower, upper = _stats.clopper_pearson(counts.long(), n, a, side="two-sided")
    return torch.from_numpy(lower), torch.from_numpy(upper)


def predict(model: nn.Module, x: torch.Tensor, *, n: int = 1000, scores: str = "argmax", batch_size: int = 4096,
            seed=0, progress: bool | None = None) -> torch.Tensor:
    r"""The smoothed prediction :math:`\arg\max_k \hat E[A_k(x)]` (B,), ties to the lower index."""
    return expected_scores(model, x, n=n, scores=scores, batch_size=batch_size, seed=seed,
                           progress=progress).argmax(1)


# =========================================================================== certify


def certify(model: PixelDP, x: torch.Tensor, *, n: int = 1000, alpha: float = 0.05, scores: str = "argmax",
            batch_size: int = 4096, seed=0, progress: bool | None = None) -> Certificate:
    r"""PixelDP certification: the largest radius at which the proposition holds on the bounds.

    1. Estimate :math:`\hat E[A(x)]` from ``n`` noise draws (:func:`expected_scores`) and
       predict :math:`i = \arg\max_k \hat E_k` (the lower index on a tie).
    2. Bound every class at once at confidence :math:`1 - \alpha`
       (:func:`score_bounds`): :math:`\underline{E}_i` and
       :math:`\overline{E}_{j} = \max_{j \ne i} \overline{E}_j`.
    3. The network's noise is :math:`(\varepsilon(R), \delta)`-DP at radius :math:`R` with
       :math:`\varepsilon(R)` linear in :math:`R` (:meth:`PixelDP.eps_at`). The
       proposition holds at :math:`R` iff
       :math:`\underline{E}_i > e^{2\varepsilon(R)} \overline{E}_j + (1 + e^{\varepsilon(R)})\delta`,
       i.e. iff :math:`\varepsilon(R) <` :func:`max_eps`; the certified radius is
       :math:`R^\star = \varepsilon^{-1}(\min(\varepsilon^\star, \varepsilon_{\max}))`, with
       :math:`\varepsilon_{\max} = 1` for Gaussian noise (the limit of its DP guarantee).
       Where the condition fails even as :math:`R \to 0`, the radius is 0.

    PixelDP always predicts (it never abstains): the certificate's ``prediction`` is
    :math:`i` for every input, with radius 0 where nothing is certified, so its certified
    accuracy at radius 0 is the accuracy of the smoothed classifier and at :math:`r > 0`
    counts the correct inputs with ``radius >= r``.

    Guarantee: with probability at least :math:`1 - \alpha`, every input keeps its
    prediction under every perturbation of :math:`L_p` norm below its radius.

    Returns
    -------
    Certificate
        Method ``"pixeldp"``, unit from the attack norm (L2, L1 or Linf pixels), ``alpha``;
        statistics ``eps`` (the :math:`\varepsilon^\star` at the radius), ``lower_top``,
        ``upper_runner_up`` (the bounds the proposition was applied to), ``expected``
        ((B, K) Monte Carlo estimates), and the settings ``delta``, ``norm``, ``n``, ``scores``.

    Examples
    --------
    >>> net = build("mlp", "digits", norm="l2", L=0.1, width=2)
    >>> cert = certify(net, torch.rand(4, 1, 8, 8), n=200)
    >>> len(cert), bool((cert.radius >= 0).all()), cert.norm, cert.unit
    (4, True, 'l2', 'L2 pixels')
    """
    _check_scoring_args(model, x, n, scores, batch_size, seed)
    alpha = check_probability(alpha, "alpha")
    mean = (_score_sums(model, x, n, scores, batch_size, seed, progress) / n).cpu()
    lower, upper = score_bounds(mean, n, alpha=alpha, scores=scores)
    pred = mean.argmax(1)
    lower_top = lower.gather(1, pred.view(-1, 1)).squeeze(1)
    others = upper.scatter(1, pred.view(-1, 1), -1.0)
    upper_second = others.amax(1).clamp_min(0.0)
    eps_star = max_eps(lower_top, upper_second, model.delta).clamp_max(model.max_certifiable_eps)
    radius = model.radius_at(eps_star)
    stats = {"eps": eps_star, "lower_top": lower_top, "upper_runner_up": upper_second, "expected": mean,
             "delta": model.delta, "norm": model.norm, "n": int(n), "scores": scores}
    return Certificate(pred, radius, UNITS[model.norm], "pixeldp", alpha, stats)


class SmoothedScores(nn.Module):
    r"""The log of the Monte Carlo expected softmax, :math:`\log \frac1m \sum_t \mathrm{softmax}(A^{(t)}(x))`.

    A differentiable stand-in for the smoothed classifier, to be attacked like any model
    (every forward pass draws ``draws`` fresh noise samples per input): the cross-entropy
    of these "logits" is :math:`-\log \hat E[\mathrm{softmax}_y]`, the objective of
    expectation-over-transformation (EOT) attacks.

    >>> net = build("mlp", "digits", norm="l2", L=0.1, width=2)
    >>> SmoothedScores(net, draws=8)(torch.rand(2, 1, 8, 8)).exp().sum(1).detach().round(decimals=4)
    tensor([1., 1.])
    """

    def __init__(self, model: nn.Module, draws: int = 32):
        super().__init__()
        self.model = check_model(model)
        self.draws = check_positive_int(draws, "draws")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x.repeat_interleave(self.draws, dim=0))
        logp = logits.log_softmax(1).view(x.shape[0], self.draws, -1)
        return torch.logsumexp(logp, dim=1) - math.log(self.draws)


# =========================================================================== L1 smoothing: cube against Laplace


L1_NOISES = ("uniform", "laplace")


def _check_l1_args(p_a, noise):
    check_choice(noise, "noise", L1_NOISES)
    p = torch.as_tensor(p_a, dtype=torch.float64)
    if bool(torch.isnan(p).any()) or bool((p < 0).any()) or bool((p > 1).any()):
        raise ValueError("p_a must hold probabilities in [0, 1]")
    return p


def l1_smoothing_radius(p_a, noise: str, sigma) -> torch.Tensor:
    r"""Certified :math:`L_1` radius of smoothing with i.i.d. noise of standard deviation ``sigma`` per coordinate.

    For a smoothed classifier whose top class has probability :math:`p_A > 1/2` under the
    noise (the rest of the mass on the other classes), the Neyman--Pearson worst case gives

    * ``"uniform"``: noise uniform in the cube :math:`[-\lambda, \lambda]^d`,
      :math:`\lambda = \sqrt{3}\,\sigma`: :math:`R = 2\lambda\,(p_A - 1/2)`. Shifting the cube
      by :math:`\Delta` moves at most :math:`\|\Delta\|_1 / (2\lambda)` of its mass, and
      only that mass can change class (Yang et al., 2020);
    * ``"laplace"``: :math:`\mathrm{Laplace}(0, b)`, :math:`b = \sigma / \sqrt 2`:
      :math:`R = b \ln\big(1 / (2 (1 - p_A))\big)`, attained by a half-space on one
      coordinate (Teng et al., 2020).

    Both radii are 0 for :math:`p_A \le 1/2`. The two noises have the same variance, so
    the comparison is at equal noise magnitude; the cube is the Wulff crystal of the
    :math:`L_1` ball (Yang et al., 2020).

    Examples
    --------
    >>> l1_smoothing_radius(torch.tensor([0.5, 0.9]), "uniform", sigma=1.0)  # 2 sqrt(3) (p_A - 1/2)
    tensor([0.0000, 1.3856], dtype=torch.float64)
    >>> l1_smoothing_radius(0.75, "laplace", sigma=2 ** 0.5)  # b = 1: ln 2
    tensor(0.6931, dtype=torch.float64)
    """
    p = _check_l1_args(p_a, noise)
    sigma = float(check_positive(sigma, "sigma"))
    if noise == "uniform":
        radius = 2.0 * math.sqrt(3.0) * sigma * (p - 0.5)
    else:
        radius = sigma / math.sqrt(2.0) * -torch.log(2.0 * (1.0 - p).clamp_min(1e-300))
    return torch.where(p > 0.5, radius, torch.zeros_like(p))


def l1_smoothing_sigma(p_a, noise: str, radius) -> torch.Tensor:
    r"""The per-coordinate standard deviation for which :func:`l1_smoothing_radius` equals ``radius``.

    The inverse of the radius in :math:`\sigma` (both radii are linear in it): the noise
    each distribution needs for the same :math:`L_1` guarantee at top-class probability
    ``p_a``; infinite where :math:`p_A \le 1/2` (nothing is certified), 0 for radius 0.

    >>> l1_smoothing_sigma(0.75, "laplace", radius=math.log(2.0))
    tensor(1.4142, dtype=torch.float64)
    """
    p = _check_l1_args(p_a, noise)
    radius = float(check_nonneg(radius, "radius", allow_tensor=False))
    per_sigma = l1_smoothing_radius(p, noise, 1.0)
    out = radius / per_sigma.where(per_sigma > 0, torch.full_like(per_sigma, math.nan))
    out = torch.where(per_sigma > 0, out, torch.full_like(p, math.inf))
    return torch.where(torch.tensor(radius == 0.0), torch.zeros_like(p), out)
