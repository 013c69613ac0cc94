r"""Robustness, accuracy and features (chapter 4).

Four experiments behind one question: what does a robust model learn that a standard
one does not?

1. **The accuracy--robustness trade-off** (Tsipras et al., 2019). In a simple
   distribution, one feature is robust but only weakly predictive and many features are
   individually weak, non-robust, but together highly predictive. Standard training uses
   the non-robust ones; a robust classifier cannot, and must be less accurate:
   :func:`tsipras_data`, :func:`tsipras_accuracy`, :func:`tsipras_bound`,
   :func:`tsipras_tradeoff`.
2. **Robust and non-robust features** (Ilyas et al., 2019). Data sets built from a
   model's representation: a "robustified" one that keeps only the features a robust
   model uses (standard training on it gives some robustness), and a "non-robust" one of
   relabelled adversarial examples (standard training on it still generalises to the real
   test set): :func:`split_representation`, :func:`robust_dataset`,
   :func:`non_robust_dataset`, :func:`feature_datasets_experiment`.
3. **Robust models' gradients are human-aligned** (Tsipras et al., 2019; Ilyas et al.,
   2019): :func:`saliency`, :func:`saliency_alignment`, :func:`plot_saliency`.
4. **Robust generalisation needs more data** (Schmidt et al., 2018), in their Gaussian
   mixture model: :func:`gaussian_mixture_errors`, :func:`sample_complexity`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from . import attacks as _attacks
from . import config
from . import data as _data
from . import models as _models
from . import train as _train
from . import training as _training
from ._validate import (
    check_choice,
    check_images,
    check_labels,
    check_model,
    check_nonneg,
    check_positive,
    check_positive_int,
    check_tensor,
    check_xy,
)

__all__ = [
    "tsipras_data",
    "tsipras_accuracy",
    "tsipras_bound",
    "tsipras_linear_model",
    "tsipras_tradeoff",
    "TradeoffCurve",
    "split_representation",
    "robust_dataset",
    "non_robust_dataset",
    "feature_datasets_experiment",
    "FeatureDatasets",
    "saliency",
    "saliency_alignment",
    "plot_saliency",
    "gaussian_mixture_errors",
    "sample_complexity",
    "SampleComplexity",
]


def _phi(t: torch.Tensor) -> torch.Tensor:
    """Standard normal CDF, in float64."""
    return 0.5 * torch.erfc(-t / math.sqrt(2.0))


def _bar(total: int, desc: str, progress):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not config.progress_enabled(progress), leave=False)


# =========================================================================== 1. Tsipras et al.


def _check_p(p):
    check_positive(p, "p")
    if not 0.5 <= p < 1:
        raise ValueError(f"p must be in [0.5, 1) (x1 agrees with the label with probability p), got {p}")
    return float(p)


def _default_eta(d: int) -> float:
    return 3.0 / math.sqrt(d)


def tsipras_data(n: int, d: int = 100, *, p: float = 0.9, eta: float | None = None, seed: int = 0) -> _data.Split:
    r"""Samples of the distribution of Tsipras et al. (2019, section 2.1).

    With :math:`y` uniform in :math:`\{-1, +1\}` (returned as labels 0 / 1),

    .. math::

        x_1 = \begin{cases} +y & \text{with probability } p, \\ -y & \text{with probability }
        1 - p, \end{cases} \qquad x_2, \dots, x_{d+1} \overset{\text{i.i.d.}}{\sim}
        \mathcal{N}(\eta\, y, 1).

    :math:`x_1` is *robust* (no perturbation smaller than 1 changes it) but only
    :math:`p`-predictive; each of the other :math:`d` features is weakly correlated with
    the label, but their average is :math:`\mathcal{N}(\eta y, 1/d)`, so the linear
    classifier :math:`\operatorname{sign}(\sum_{i \ge 2} x_i)` is
    :math:`\Phi(\eta\sqrt d)`-accurate -- and an Linf perturbation of size :math:`2\eta`
    shifts every one of them to :math:`\mathcal{N}(-\eta y, 1)`.

    Parameters
    ----------
    n : int
        Number of samples.
    d : int
        Number of non-robust features (inputs have ``d + 1`` coordinates).
    p : float
        Probability that the robust feature agrees with the label, in [0.5, 1).
    eta : float, optional
        Mean of the non-robust features; default :math:`3/\sqrt d` (standard accuracy of
        the averaging classifier :math:`\Phi(3) \approx 99.9\%`).
    seed : int

    Returns
    -------
    Split
        ``x`` float32 (n, d + 1) in :math:`\mathbb{R}^{d+1}` (not in [0, 1]) and ``y``
        int64 (n,) in {0, 1}, with :math:`y_{\pm} = 2y - 1`.

    Examples
    --------
    >>> x, y = tsipras_data(1000, 10, p=0.9, seed=0)
    >>> x.shape, bool(((2 * y - 1) == x[:, 0]).float().mean() > 0.85)
    (torch.Size([1000, 11]), True)
    """
    check_positive_int(n, "n")
    check_positive_int(d, "d")
    p = _check_p(p)
    eta = _default_eta(d) if eta is None else float(check_nonneg(eta, "eta", allow_tensor=False))
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    ypm = (2 * y - 1).float()
    agree = torch.rand(n, generator=g) < p
    x1 = torch.where(agree, ypm, -ypm)
    rest = eta * ypm[:, None] + torch.randn(n, d, generator=g)
    return _data.Split(torch.cat([x1[:, None], rest], 1), y.long())


def tsipras_accuracy(w, b: float = 0.0, *, p: float = 0.9, eta: float | None = None, eps: float = 0.0) -> float:
    r"""Exact accuracy of the linear classifier :math:`\operatorname{sign}(w^\top x + b)` on
    :func:`tsipras_data`, against an Linf adversary of radius ``eps`` (``eps=0``: standard).

    With :math:`S = \sum_{i \ge 2} w_i`, :math:`N = \|w_{2:}\|_2` and the adversary
    lowering the margin :math:`y_\pm (w^\top x + b)` by exactly
    :math:`\varepsilon \|w\|_1` (the perturbation :math:`-\varepsilon\, y_\pm
    \operatorname{sign}(w)`),

    .. math::

        \mathrm{acc}_\varepsilon = \frac12 \sum_{s = \pm 1} \Big[ p\,
        \Phi\Big(\frac{w_1 + \eta S + s b - \varepsilon \|w\|_1}{N}\Big) + (1 - p)\,
        \Phi\Big(\frac{-w_1 + \eta S + s b - \varepsilon \|w\|_1}{N}\Big) \Big],

    because :math:`y_\pm x_1 = \pm 1` with probabilities :math:`p, 1-p` and
    :math:`y_\pm x_i \sim \mathcal{N}(\eta, 1)` independently of :math:`y`. (With
    :math:`N = 0`, :math:`\Phi(t/N)` is read as :math:`\mathbf{1}[t > 0]`, and as 1/2 at
    :math:`t = 0`: a score of exactly 0 is a coin flip.)

    Parameters
    ----------
    w : torch.Tensor
        Weights (d + 1,); the score of label 1 minus that of label 0.
    b : float
        Bias.
    p, eta : float
        The distribution's parameters (``eta`` defaults to :math:`3/\sqrt d`).
    eps : float
        Linf radius of the adversary (unconstrained inputs, as in the paper).

    Examples
    --------
    >>> d = 100
    >>> w_std = torch.cat([torch.zeros(1), torch.ones(d) / d])   # averages the non-robust features
    >>> round(tsipras_accuracy(w_std, p=0.9), 4)                  # Phi(3)
    0.9987
    >>> round(tsipras_accuracy(w_std, p=0.9, eps=2 * 3 / d ** 0.5), 4)
    0.0013
    >>> w_rob = torch.zeros(d + 1); w_rob[0] = 1.0                # the robust feature alone
    >>> tsipras_accuracy(w_rob, p=0.9), tsipras_accuracy(w_rob, p=0.9, eps=0.6)
    (0.9, 0.9)
    """
    check_tensor(w, "w")
    if w.dim() != 1 or w.numel() < 2:
        raise ValueError(f"w must be a vector of d + 1 >= 2 weights, got shape {tuple(w.shape)}")
    w = w.detach().double().cpu()
    if not bool(torch.isfinite(w).all()):
        raise ValueError("w contains NaN or infinite values")
    d = w.numel() - 1
    p = _check_p(p)
    eta = _default_eta(d) if eta is None else float(check_nonneg(eta, "eta", allow_tensor=False))
    check_nonneg(eps, "eps", allow_tensor=False)
    b = float(b)
    S = float(w[1:].sum())
    N = float(w[1:].norm())
    shift = float(eps) * float(w.abs().sum())
    w1 = float(w[0])
    total = 0.0
    for s in (1.0, -1.0):
        for sign_x1, prob in ((1.0, p), (-1.0, 1.0 - p)):
            t = sign_x1 * w1 + eta * S + s * b - shift
            if N > 0:
                total += prob * float(_phi(torch.tensor(t / N, dtype=torch.float64)))
            else:
                total += prob * (1.0 if t > 0 else 0.5 if t == 0 else 0.0)
    return total / 2


def tsipras_bound(robust_accuracy, p: float = 0.9):
    r"""The largest standard accuracy a classifier with the given robust accuracy can have.

    Theorem (Tsipras et al., 2019, Theorem 2.1): on :func:`tsipras_data`, any classifier
    with standard accuracy at least :math:`1 - \delta` has robust accuracy at most
    :math:`\frac{p}{1 - p}\,\delta` against an Linf adversary of radius
    :math:`\varepsilon \ge 2\eta`. Equivalently, robust accuracy
    :math:`\ge r` implies

    .. math::

        \text{standard accuracy} \;\le\; 1 - \frac{1 - p}{p}\, r .

    At :math:`r = p` (the robust feature alone) the bound is :math:`p`: no classifier can
    be both fully robust and more accurate than the robust feature. (Proof sketch: the
    perturbation :math:`-2\eta y` of the non-robust features turns their distribution
    :math:`\mathcal{N}(\eta y, 1)` into that of the other class, :math:`\mathcal{N}(-\eta y,
    1)`, and leaves :math:`x_1` alone. A classifier that is robustly right on :math:`(x, y)`
    with :math:`x_1 = y` therefore answers :math:`y` on an input distributed like a sample
    of class :math:`-y` whose :math:`x_1` disagrees with its label, an event of probability
    :math:`1 - p` instead of :math:`p`: each unit of such robust accuracy costs
    :math:`(1 - p)/p` units of standard accuracy.)

    Parameters
    ----------
    robust_accuracy : float or torch.Tensor
        Robust accuracy (or accuracies) at :math:`\varepsilon \ge 2\eta`, in [0, 1].
    p : float

    Examples
    --------
    >>> tsipras_bound(0.9, p=0.9)
    0.9
    >>> round(tsipras_bound(0.5, p=0.9), 4)
    0.9444
    """
    p = _check_p(p)
    if isinstance(robust_accuracy, torch.Tensor):
        if bool(((robust_accuracy < 0) | (robust_accuracy > 1)).any()):
            raise ValueError("robust_accuracy must be in [0, 1]")
    else:
        check_nonneg(robust_accuracy, "robust_accuracy", allow_tensor=False)
        if robust_accuracy > 1:
            raise ValueError(f"robust_accuracy must be in [0, 1], got {robust_accuracy}")
    return 1 - (1 - p) / p * robust_accuracy


# Inputs of the toy model live in R^{d+1}; to train with robustlab's loop (inputs in
# [0, 1], normalisation inside the model) they are mapped affinely from [-BOX, BOX].
TSIPRAS_BOX = 8.0


def tsipras_linear_model(d: int, *, seed: int = 0) -> nn.Sequential:
    r"""A two-class linear model for :func:`tsipras_data` on robustlab's [0, 1] inputs.

    The toy inputs :math:`x \in [-8, 8]^{d+1}` are stored as :math:`u = (x + 8)/16 \in
    [0, 1]^{d+1}`; the model's first layer, :class:`robustlab.models.Normalize` with mean
    0.5 and std 1/16, maps :math:`u` back to :math:`x`, followed by ``Linear(d + 1, 2)``.
    A radius :math:`\varepsilon` of the toy model is :math:`\varepsilon / 16` in ``u``.
    """
    check_positive_int(d, "d")
    torch.manual_seed(seed)
    return nn.Sequential(_models.Normalize((0.5,), (1.0 / (2 * TSIPRAS_BOX),)), nn.Linear(d + 1, 2))


def _to_box(x: torch.Tensor) -> torch.Tensor:
    return ((x + TSIPRAS_BOX) / (2 * TSIPRAS_BOX)).clamp(0.0, 1.0)


def _linear_weights(model: nn.Sequential):
    lin = model[-1]
    w = (lin.weight[1] - lin.weight[0]).detach().double().cpu()
    b = float((lin.bias[1] - lin.bias[0]).detach())
    return w, b


@dataclasses.dataclass
class TradeoffCurve:
    """Linear classifiers of the Tsipras model trained at increasing radii.

    ``eps_train[k]`` is the training radius of classifier ``k``; ``clean[k]`` its exact
    standard accuracy and ``robust[k]`` its exact robust accuracy at ``eps_eval``
    (default :math:`2\\eta`, the radius of the theorem); ``bound[k]`` is
    :func:`tsipras_bound` of ``robust[k]``, which ``clean[k]`` can never exceed.
    ``weights[k]`` are its weights (robust feature first).
    """

    eps_train: list
    clean: list
    robust: list
    bound: list
    weights: list
    p: float
    eta: float
    eps_eval: float

    def as_table(self) -> list:
        return [dict(eps_train=e, clean=c, robust=r, bound=b)
                for e, c, r, b in zip(self.eps_train, self.clean, self.robust, self.bound)]

    def plot(self, axes=None):
        """Left: accuracies against the training radius. Right: clean against robust
        accuracy, with the region the theorem forbids shaded. Returns the two axes."""
        import matplotlib.pyplot as plt

        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        ax, ax2 = axes
        ax.plot(self.eps_train, self.clean, "o-", label="standard accuracy")
        ax.plot(self.eps_train, self.robust, "s-", label=f"robust accuracy (eps={self.eps_eval:.2f})")
        ax.axhline(self.p, color="grey", ls=":", label=f"robust feature alone (p={self.p:g})")
        ax.set_xlabel("training radius eps")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
        r = torch.linspace(0, 1, 101)
        ax2.fill_between(r.numpy(), tsipras_bound(r, self.p).numpy(), 1.02, color="C3", alpha=0.15,
                         label="impossible (Tsipras et al., Thm 2.1)")
        ax2.plot(self.robust, self.clean, "o-", color="C0", label="trained linear classifiers")
        ax2.set_xlabel(f"robust accuracy (eps={self.eps_eval:.2f})")
        ax2.set_ylabel("standard accuracy")
        ax2.set_xlim(0, 1)
        ax2.set_ylim(0.4, 1.02)
        ax2.legend(fontsize=8, loc="lower left")
        return axes


def tsipras_tradeoff(
    eps_grid=None,
    *,
    d: int = 100,
    p: float = 0.9,
    eta: float | None = None,
    n: int = 2000,
    eps_eval: float | None = None,
    epochs: int = 20,
    lr: float = 0.05,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool | None = None,
) -> TradeoffCurve:
    r"""Train linear classifiers on :func:`tsipras_data` at increasing radii and measure the
    trade-off.

    For every ``eps`` of ``eps_grid`` a :func:`tsipras_linear_model` is trained with
    :func:`robustlab.train.fit` and :class:`robustlab.training.PGDLoss` (one exact step:
    for a linear model the worst Linf perturbation is :math:`-\varepsilon\, y_\pm
    \operatorname{sign}(w)`), then its standard and robust accuracies are computed exactly
    with :func:`tsipras_accuracy`. Standard training (``eps = 0``) leans on the non-robust
    features (high accuracy, no robustness at :math:`2\eta`); as ``eps`` grows past
    :math:`\eta` the weight moves to the robust feature :math:`x_1`: robust accuracy rises
    towards :math:`p` and standard accuracy falls towards :math:`p`, never crossing
    :func:`tsipras_bound`.

    Parameters
    ----------
    eps_grid : sequence of float, optional
        Training radii (toy-model units); default ``eta * (0, 0.5, 1, 1.5, 2)``.
    d, p, eta
        See :func:`tsipras_data`.
    n : int
        Training samples.
    eps_eval : float, optional
        Radius of the robust accuracy; default :math:`2\eta`.
    epochs, lr, batch_size, seed
        Training settings (Adam).
    progress : bool, optional

    Returns
    -------
    TradeoffCurve
        With ``.plot()``.
    """
    check_positive_int(d, "d")
    p = _check_p(p)
    eta = _default_eta(d) if eta is None else float(check_positive(eta, "eta"))
    eps_grid = [eta * f for f in (0, 0.5, 1, 1.5, 2)] if eps_grid is None else [float(e) for e in eps_grid]
    if not eps_grid:
        raise ValueError("eps_grid must hold at least one radius")
    for e in eps_grid:
        check_nonneg(e, "eps_grid", allow_tensor=False)
    eps_eval = 2 * eta if eps_eval is None else float(check_nonneg(eps_eval, "eps_eval", allow_tensor=False))
    check_positive_int(n, "n")
    train = tsipras_data(n, d, p=p, eta=eta, seed=seed)
    train = _data.Split(_to_box(train.x), train.y)
    curve = TradeoffCurve([], [], [], [], [], p=p, eta=eta, eps_eval=eps_eval)
    bar = _bar(len(eps_grid), "Tsipras trade-off", progress)
    try:
        for e in eps_grid:
            model = tsipras_linear_model(d, seed=seed)
            loss = _training.PGDLoss(eps=e / (2 * TSIPRAS_BOX), steps=1, random_start=False)
            _train.fit(model, train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, loss_fn=loss,
                       progress=False)
            w, b = _linear_weights(model)
            clean = tsipras_accuracy(w, b, p=p, eta=eta)
            robust = tsipras_accuracy(w, b, p=p, eta=eta, eps=eps_eval)
            curve.eps_train.append(e)
            curve.clean.append(clean)
            curve.robust.append(robust)
            curve.bound.append(tsipras_bound(robust, p))
            curve.weights.append(w.float())
            bar.update(1)
    finally:
        bar.close()
    return curve


# =========================================================================== 2. Ilyas et al.


def split_representation(model: nn.Module):
    r"""Split a robustlab model into its representation :math:`g` and its linear head.

    ``model(x) == head(g(x))``; :math:`g(x)` is the input of the last linear layer (the
    penultimate layer, 128 units for :class:`robustlab.models.SmallCNN`). Both parts share
    the model's modules (no copy), so they follow its device and mode changes.

    Supports ``nn.Sequential`` models (:class:`~robustlab.models.MLP`,
    :class:`~robustlab.models.SmallCNN`) and :class:`~robustlab.models.ResNet`.

    Returns
    -------
    (nn.Sequential, nn.Module)
        ``g`` and ``head``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("cnn", "digits")
    >>> g, head = split_representation(model)
    >>> x = torch.rand(2, 1, 8, 8)
    >>> g(x).shape, bool(torch.allclose(head(g(x)), model(x)))
    (torch.Size([2, 128]), True)
    """
    check_model(model)
    if isinstance(model, _models.ResNet):
        *pool, last = list(model.head)
        return nn.Sequential(model.normalize, model.stem, model.stages, *pool), last
    if isinstance(model, nn.Sequential):
        layers = list(model)
        idx = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
        if not idx or idx[-1] == 0:
            raise ValueError("model must be an nn.Sequential with a linear layer after some representation layers")
        i = idx[-1]
        return nn.Sequential(*layers[:i]), nn.Sequential(*layers[i:])
    raise TypeError(f"model must be an nn.Sequential or a robustlab ResNet to split it, got {type(model).__name__}")


def robust_dataset(
    model: nn.Module,
    data,
    *,
    steps: int = 200,
    step_size: float = 0.1,
    init: str = "image",
    batch_size: int = 256,
    seed: int = 0,
    progress: bool | None = None,
) -> _data.Split:
    r"""The "robustified" data set of Ilyas et al. (2019): inputs that carry only the
    features ``model``'s representation sees.

    For every training pair :math:`(x, y)`, starting from an unrelated input
    :math:`x_0` (a random other training image, or uniform noise), normalised gradient
    descent in input space solves

    .. math::

        x_r = \arg\min_{x' \in [0, 1]^d} \|g(x') - g(x)\|_2, \qquad
        x' \leftarrow \Pi_{[0,1]^d}\Big(x' - \alpha \frac{\nabla_{x'} \|g(x') - g(x)\|_2}
        {\|\nabla_{x'} \|g(x') - g(x)\|_2\|_2}\Big),

    and :math:`(x_r, y)` joins the new data set. :math:`g` is the representation of
    :func:`split_representation`. With a *robust* model, :math:`g` depends only on robust
    features, so :math:`x_r` keeps those and loses the rest: standard training on the
    result yields a model with non-trivial robust accuracy (Ilyas et al.'s
    :math:`\widehat{\mathcal{D}}_R`). With a standard model the same construction gives
    :math:`\widehat{\mathcal{D}}_{NR}`.

    Parameters
    ----------
    model : nn.Module
        Split with :func:`split_representation`; used in eval mode, its parameters get no
        gradients.
    data : Split or (x, y)
        Images in [0, 1] and labels.
    steps, step_size : int, float
        Normalised gradient steps (L2 length ``step_size``). Ilyas et al. use 1000 steps of
        0.1 on CIFAR-10; 8x8 digits need far fewer.
    init : {"image", "noise"}
        Start from a random other image of ``data`` (as Ilyas et al.) or from uniform noise.
    batch_size, seed, progress
        Batching, the seed of the starting points, the progress bar.

    Returns
    -------
    Split
        ``(x_r, y)`` on the CPU, ``x_r`` in [0, 1].
    """
    check_model(model)
    x, y = check_xy(data)
    check_positive_int(steps, "steps")
    check_positive(step_size, "step_size")
    check_choice(init, "init", ("image", "noise"))
    check_positive_int(batch_size, "batch_size")
    check_positive_int(seed, "seed", allow_zero=True)
    g, _ = split_representation(model)
    device = _models.device_of(model)
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    if init == "image":
        # a derangement-free shuffle is enough: a start equal to the target image is rare and harmless
        start = x[torch.randperm(n, generator=gen)]
    else:
        start = torch.rand(x.shape, generator=gen)
    out = []
    bar = _bar(math.ceil(n / batch_size) * steps, "robustified data set", progress)
    try:
        with _attacks.eval_mode(model):
            for i in range(0, n, batch_size):
                xb = x[i:i + batch_size].to(device)
                with torch.no_grad():
                    target = g(xb)
                xr = start[i:i + batch_size].to(device).clone()
                for _ in range(steps):
                    xr.requires_grad_(True)
                    with torch.enable_grad():
                        dist = (g(xr) - target).flatten(1).norm(dim=1).sum()
                        (grad,) = torch.autograd.grad(dist, xr)
                    norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view((-1,) + (1,) * (grad.dim() - 1))
                    xr = (xr.detach() - step_size * grad / norm).clamp(0.0, 1.0)
                    bar.update(1)
                out.append(xr.detach().cpu())
    finally:
        bar.close()
    return _data.Split(torch.cat(out), y.cpu().clone())


def non_robust_dataset(
    model: nn.Module,
    data,
    *,
    eps: float = 0.5,
    norm: str = "l2",
    steps: int = 50,
    step_size: float | None = None,
    target: str = "next",
    batch_size: int = 512,
    seed: int = 0,
    progress: bool | None = None,
) -> _data.Split:
    r"""The "non-robust features" data set of Ilyas et al. (2019): adversarial examples
    relabelled as their target class.

    For every :math:`(x, y)` pick a target :math:`t` -- :math:`t = (y + 1) \bmod K`
    (``target="next"``, their :math:`\widehat{\mathcal{D}}_{det}`) or uniform among the
    other classes (``"random"``, :math:`\widehat{\mathcal{D}}_{rand}`) -- and take a
    small targeted PGD step towards it with a *standard* model,

    .. math::

        x_{adv} = \arg\min_{\|x' - x\|_p \le \varepsilon} \mathcal{L}(f(x'), t),

    then label it :math:`t`. To a human every :math:`x_{adv}` still shows class :math:`y`,
    so the new data set looks mislabelled; yet a model trained on it only from scratch
    generalises to the *original* test set above chance, because the non-robust features
    the attack planted are genuinely predictive of :math:`t` in the real data.

    Parameters
    ----------
    model : nn.Module
        The (standard) model whose non-robust features are used.
    data : Split or (x, y)
    eps, norm, steps, step_size
        The targeted :func:`robustlab.attacks.pgd` (Ilyas et al.: L2, eps 0.5 on CIFAR-10).
    target : {"next", "random"}
    batch_size, seed, progress

    Returns
    -------
    Split
        ``(x_adv, t)`` on the CPU.
    """
    check_model(model)
    x, y = check_xy(data)
    check_nonneg(eps, "eps", allow_tensor=False)
    check_choice(norm, "norm", ("linf", "l2"))
    check_positive_int(steps, "steps")
    check_choice(target, "target", ("next", "random"))
    check_positive_int(batch_size, "batch_size")
    check_positive_int(seed, "seed", allow_zero=True)
    with torch.no_grad(), _attacks.eval_mode(model):
        k = model(x[:1].to(_models.device_of(model))).shape[1]
    if int(y.max()) >= k:
        raise ValueError(f"data.y holds class {int(y.max())} but the model has {k} classes")
    gen = torch.Generator().manual_seed(seed)
    if target == "next":
        t = (y + 1) % k
    else:
        t = (y + torch.randint(1, k, y.shape, generator=gen)) % k
    out = []
    bar = _bar(math.ceil(x.shape[0] / batch_size), "non-robust data set", progress)
    try:
        for i in range(0, x.shape[0], batch_size):
            sl = slice(i, i + batch_size)
            out.append(_attacks.pgd(model, x[sl], y[sl], eps=eps, norm=norm, steps=steps, step_size=step_size,
                                    targets=t[sl], seed=seed + i).cpu())
            bar.update(1)
    finally:
        bar.close()
    return _data.Split(torch.cat(out), t.clone())


@dataclasses.dataclass
class FeatureDatasets:
    """Standard models trained on each data set of :func:`feature_datasets_experiment`.

    ``names[k]`` is a data set, ``clean[k]`` the accuracy of a standard model trained on
    it, on the *original* test set, and ``robust[k]`` its PGD accuracy there at
    ``eps`` (Linf). ``datasets`` maps names to the data sets themselves.
    """

    names: list
    clean: list
    robust: list
    eps: float
    datasets: dict

    def as_table(self) -> list:
        return [dict(dataset=n, clean=c, robust=r) for n, c, r in zip(self.names, self.clean, self.robust)]

    def plot(self, ax=None):
        """Grouped bars: clean and robust test accuracy per training set."""
        import matplotlib.pyplot as plt
        import numpy as np

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 3.5))
        pos = np.arange(len(self.names))
        ax.bar(pos - 0.2, self.clean, 0.4, label="clean test accuracy")
        ax.bar(pos + 0.2, self.robust, 0.4, label=f"robust test accuracy (Linf eps={self.eps:g})")
        ax.set_xticks(pos)
        ax.set_xticklabels(self.names, fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("accuracy (original test set)")
        ax.legend(fontsize=8)
        return ax


def feature_datasets_experiment(
    standard_model: nn.Module,
    robust_model: nn.Module,
    train,
    test,
    *,
    eps: float = 0.1,
    arch: str = "cnn",
    dataset: str | None = None,
    steps: int = 200,
    step_size: float = 0.1,
    adv_eps: float = 2.0,
    epochs: int = 30,
    lr: float = 2e-3,
    eval_steps: int = 20,
    seed: int = 0,
    progress: bool | None = None,
) -> FeatureDatasets:
    r"""Ilyas et al.'s experiment: train a *standard* model on each constructed data set
    and test it on the real test set.

    Data sets: the original ``train``; :math:`\widehat{\mathcal{D}}_R` =
    :func:`robust_dataset` of ``robust_model``; :math:`\widehat{\mathcal{D}}_{NR}` =
    :func:`robust_dataset` of ``standard_model``; :math:`\widehat{\mathcal{D}}_{det}` and
    :math:`\widehat{\mathcal{D}}_{rand}` = :func:`non_robust_dataset` of ``standard_model``
    (L2 radius ``adv_eps``, target :math:`y + 1` or random). ``adv_eps = 2`` makes the
    targeted attack succeed on practically every 8x8 digit (Ilyas et al. use 0.5 on 32x32
    CIFAR-10 images). Each trains a fresh ``arch`` model with standard training
    (:func:`robustlab.train.fit`, Adam); the result records its clean test accuracy and
    its accuracy under Linf PGD (``eval_steps`` steps) at ``eps``.

    Expected shape of the result (Ilyas et al., CIFAR-10): :math:`\widehat{\mathcal{D}}_R`
    gives a standard-trained model real robust accuracy; :math:`\widehat{\mathcal{D}}_{NR}`
    and the original data give none; :math:`\widehat{\mathcal{D}}_{det}` and
    :math:`\widehat{\mathcal{D}}_{rand}`, whose labels look wrong, still give clean accuracy
    far above chance. On the 8x8 digits (``benchmarks/adversarial_training.py``) the
    relabelled sets reproduce clearly (about 80% and 87% clean accuracy against 10%
    chance), while :math:`\widehat{\mathcal{D}}_R` gives a smaller robustness gain than on
    CIFAR-10: more than :math:`\widehat{\mathcal{D}}_{NR}` and the original data at Linf
    0.1, by a few points.

    Returns
    -------
    FeatureDatasets
        With ``.plot()``.
    """
    check_model(standard_model, "standard_model")
    check_model(robust_model, "robust_model")
    train = _data.Split(*check_xy(train, "train"))
    test = _data.Split(*check_xy(test, "test"))
    check_nonneg(eps, "eps", allow_tensor=False)
    check_positive_int(epochs, "epochs")
    sets = {
        "original": train,
        "robust (D_R)": robust_dataset(robust_model, train, steps=steps, step_size=step_size, seed=seed,
                                       progress=progress),
        "non-robust (D_NR)": robust_dataset(standard_model, train, steps=steps, step_size=step_size, seed=seed,
                                            progress=progress),
        "relabelled adv. (D_det)": non_robust_dataset(standard_model, train, eps=adv_eps, norm="l2", seed=seed,
                                                      progress=progress),
        "relabelled adv. (D_rand)": non_robust_dataset(standard_model, train, eps=adv_eps, norm="l2",
                                                       target="random", seed=seed, progress=progress),
    }
    result = FeatureDatasets([], [], [], eps=float(eps), datasets=sets)
    device = _models.device_of(robust_model)
    for name, split in sets.items():
        model = _models.build(arch, dataset, seed=seed).to(device)
        _train.fit(model, split, epochs=epochs, lr=lr, seed=seed, progress=progress, desc=f"training on {name}")
        result.names.append(name)
        result.clean.append(_train.evaluate(model, test))
        x_adv = _attacks.pgd(model, test.x, test.y, eps=eps, steps=eval_steps, seed=seed) if eps > 0 else test.x
        result.robust.append(_train.evaluate(model, (x_adv.cpu(), test.y)))
    return result


# =========================================================================== 3. saliency


def saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, of: str = "logit") -> torch.Tensor:
    r"""Input-gradient saliency: :math:`\nabla_x z_y(x)` (``of="logit"``) or
    :math:`\nabla_x \mathcal{L}(f(x), y)` (``of="loss"``), batch-first.

    The gradient of the class-``y`` logit (default: the predicted class) with respect to
    the input, per sample, in eval mode; only the input gets a gradient (parameter
    ``.grad`` fields are not touched). For a standard model these maps look like noise;
    for an adversarially trained model they concentrate on the strokes of the digit,
    i.e. they are aligned with what a human would call evidence (Tsipras et al., 2019,
    section 4; see :func:`saliency_alignment`).

    Parameters
    ----------
    model : nn.Module
    x : torch.Tensor
        Inputs (B, ...) in [0, 1].
    y : torch.Tensor, optional
        Classes (B,) whose logit (or loss) is differentiated; default the prediction.
    of : {"logit", "loss"}

    Returns
    -------
    torch.Tensor
        The gradient, same shape as ``x``, on the CPU.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("cnn", "digits")
    >>> saliency(model, torch.rand(3, 1, 8, 8)).shape
    torch.Size([3, 1, 8, 8])
    """
    check_model(model)
    check_images(x, "x")
    check_choice(of, "of", ("logit", "loss"))
    device = _models.device_of(model)
    xg = x.detach().to(device).requires_grad_(True)
    with _attacks.eval_mode(model), torch.enable_grad():
        logits = model(xg)
        if y is None:
            y = logits.argmax(1)
        else:
            check_labels(y, "y", batch_size=x.shape[0], n_classes=logits.shape[1])
            y = y.to(device)
        if of == "logit":
            value = logits.gather(1, y[:, None]).sum()
        else:
            value = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(value, xg)
    return grad.detach().cpu()


def saliency_alignment(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    r"""How much a model's saliency looks like the image: per-sample Pearson correlation
    between :math:`|\nabla_x z_y|` and the image's ink.

    .. math::

        a(x) = \operatorname{corr}\big(|\nabla_x z_y(x)|,\ x\big)
        \quad\text{over the pixels (channels summed)},

    in [-1, 1]; 1 means the gradient's magnitude follows the strokes exactly. Robust
    models score higher than standard ones (their gradients are "human-aligned").

    Returns
    -------
    torch.Tensor
        (B,) on the CPU; 0 for an image or saliency map that is constant.
    """
    grad = saliency(model, x, y).abs()
    ink = x.detach().cpu()
    if ink.dim() > 2:
        grad, ink = grad.sum(1), ink.sum(1)
    a = grad.flatten(1).double()
    b = ink.flatten(1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denom = a.norm(dim=1) * b.norm(dim=1)
    corr = torch.where(denom > 0, (a * b).sum(1) / denom.clamp_min(1e-300), torch.zeros_like(denom))
    return corr.float()


def plot_saliency(x: torch.Tensor, models: Mapping[str, nn.Module], y: torch.Tensor | None = None, *,
                  max_images: int = 8, size: float = 1.3):
    """Images (top row) and each model's saliency :math:`|\\nabla_x z_y|` below them,
    titled with :func:`saliency_alignment`. Returns the figure.

    ``models`` maps a row label to a model, e.g. ``{"standard": std, "robust": rob}``.
    """
    import matplotlib.pyplot as plt

    check_images(x, "x", min_dim=4)
    if not isinstance(models, Mapping) or not models:
        raise TypeError("models must be a non-empty mapping from a name to a model")
    check_positive_int(max_images, "max_images")
    n = min(max_images, x.shape[0])
    x = x[:n]
    y = None if y is None else y[:n]
    fig, axes = plt.subplots(1 + len(models), n, figsize=(size * n, size * (1 + len(models)) + 0.3), squeeze=False)
    for i in range(n):
        img = x[i].detach().cpu()
        axes[0, i].imshow((img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)).numpy(), cmap="gray", vmin=0, vmax=1)
    for r, (name, model) in enumerate(models.items(), start=1):
        sal = saliency(model, x, y).abs().sum(1)
        align = saliency_alignment(model, x, y)
        for i in range(n):
            axes[r, i].imshow(sal[i].numpy(), cmap="inferno")
            axes[r, i].set_title(f"{float(align[i]):.2f}", fontsize=8)
        axes[r, 0].text(-0.25, 0.5, name, transform=axes[r, 0].transAxes, rotation=90, va="center", ha="right")
    axes[0, 0].text(-0.25, 0.5, "image", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("|input gradient| of the class logit (title: correlation with the ink)", fontsize=9)
    fig.tight_layout()
    return fig


# =========================================================================== 4. Schmidt et al.


def _mixture_defaults(d, mu_norm, sigma):
    mu_norm = math.sqrt(d) if mu_norm is None else float(check_positive(mu_norm, "mu_norm"))
    sigma = d ** 0.25 if sigma is None else float(check_positive(sigma, "sigma"))
    return mu_norm, sigma


def gaussian_mixture_errors(w: torch.Tensor, *, d: int | None = None, mu_norm: float | None = None,
                            sigma: float | None = None, eps: float = 0.0) -> torch.Tensor:
    r"""Exact standard (``eps=0``) or Linf-robust test error of linear classifiers
    :math:`\operatorname{sign}(w^\top x)` on :func:`robustlab.data.gaussian_mixture`.

    In that model :math:`x \sim \mathcal{N}(y_\pm \theta, \sigma^2 I)` with
    :math:`\theta = \text{mu\_norm}\cdot(1, \dots, 1)/\sqrt d`, so
    :math:`y_\pm w^\top x \sim \mathcal{N}(w^\top\theta, \sigma^2\|w\|_2^2)`, and the
    adversary lowers it by :math:`\varepsilon\|w\|_1`:

    .. math::

        \mathrm{err}_\varepsilon(w) = \Phi\Big(\frac{\varepsilon\|w\|_1 - w^\top\theta}
        {\sigma \|w\|_2}\Big).

    Parameters
    ----------
    w : torch.Tensor
        One classifier (d,) or a batch (T, d).
    d : int, optional
        Dimension (default ``w.shape[-1]``).
    mu_norm, sigma : float, optional
        The mixture's parameters; defaults :math:`\sqrt d` and :math:`d^{1/4}` (Schmidt
        et al.'s scaling, :math:`\|\theta\|_2 = \sqrt d`, :math:`\sigma \propto d^{1/4}`).
    eps : float
        Linf radius.

    Returns
    -------
    torch.Tensor
        Errors, shape () or (T,), float64 (1/2 for ``w = 0``, which cannot decide).

    Examples
    --------
    >>> theta = torch.ones(100)                      # the Bayes classifier w = theta
    >>> float(gaussian_mixture_errors(theta)) < 1e-3
    True
    """
    check_tensor(w, "w")
    if w.dim() not in (1, 2) or w.shape[-1] == 0:
        raise ValueError(f"w must have shape (d,) or (T, d), got {tuple(w.shape)}")
    d = w.shape[-1] if d is None else check_positive_int(d, "d")
    if w.shape[-1] != d:
        raise ValueError(f"w has {w.shape[-1]} coordinates but d={d}")
    mu_norm, sigma = _mixture_defaults(d, mu_norm, sigma)
    check_nonneg(eps, "eps", allow_tensor=False)
    w = w.detach().double().cpu()
    margin = w.sum(-1) * (mu_norm / math.sqrt(d)) - float(eps) * w.abs().sum(-1)
    scale = sigma * w.norm(dim=-1)
    degenerate = (margin < 0).double() + 0.5 * (margin == 0).double()  # w = 0: a coin flip
    return torch.where(scale > 0, _phi(-margin / scale.clamp_min(1e-300)), degenerate)


@dataclasses.dataclass
class SampleComplexity:
    """Test errors against the training-set size (means over ``trials`` training sets).

    ``standard`` is the standard error of the averaging classifier
    :math:`\\hat w = \\frac1n\\sum_i y_i x_i`; ``robust`` its robust error at ``eps``;
    ``robust_thresholded`` the robust error of the robust classifier
    :math:`\\operatorname{sign}(\\hat w)\\max(|\\hat w| - \\varepsilon, 0)`.
    ``bayes_robust`` is the robust error of :math:`w = \\theta` (infinite data).
    """

    n: list
    standard: list
    robust: list
    robust_thresholded: list
    bayes_standard: float
    bayes_robust: float
    d: int
    eps: float

    def as_table(self) -> list:
        return [dict(n=n, standard=s, robust=r, robust_thresholded=t)
                for n, s, r, t in zip(self.n, self.standard, self.robust, self.robust_thresholded)]

    def samples_to_reach(self, level: float, which: str = "standard"):
        """The smallest ``n`` of the grid whose mean error in column ``which`` is <= ``level``
        (None if none is)."""
        check_choice(which, "which", ("standard", "robust", "robust_thresholded"))
        for n, err in zip(self.n, getattr(self, which)):
            if err <= level:
                return n
        return None

    def plot(self, ax=None):
        """Errors against n (log scale), with the infinite-data robust error."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(self.n, self.standard, "o-", label="standard error (averaging)")
        ax.plot(self.n, self.robust, "s-", label=f"robust error (averaging), eps={self.eps:g}")
        ax.plot(self.n, self.robust_thresholded, "^-", label="robust error (thresholded)")
        ax.axhline(self.bayes_robust, color="grey", ls=":", label="robust error with infinite data")
        ax.set_xscale("log")
        ax.set_xlabel("training samples n")
        ax.set_ylabel("test error")
        ax.set_ylim(0, 0.55)
        ax.legend(fontsize=8)
        ax.set_title(f"Gaussian mixture, d={self.d}")
        return ax


def sample_complexity(
    n_grid=(1, 2, 5, 10, 20, 50, 100, 200, 500),
    *,
    d: int = 400,
    eps: float = 0.5,
    mu_norm: float | None = None,
    sigma: float | None = None,
    trials: int = 20,
    seed: int = 0,
    progress: bool | None = None,
) -> SampleComplexity:
    r"""Schmidt et al. (2018): in the Gaussian mixture model, robust generalisation needs
    more data than standard generalisation.

    For each training-set size :math:`n` of ``n_grid`` and each of ``trials`` training
    sets drawn with :func:`robustlab.data.gaussian_mixture`, it fits two linear
    classifiers and computes their exact test errors (:func:`gaussian_mixture_errors`):

    * the averaging classifier :math:`\hat w = \frac1n \sum_i y_{\pm,i}\, x_i` (the natural
      estimator of :math:`\theta`), standard and robust error;
    * its soft-thresholded version :math:`\operatorname{sign}(\hat w)\max(|\hat w| -
      \varepsilon, 0)`, the maximiser of the robust linear objective
      :math:`\min_{\|\delta_i\|_\infty \le \varepsilon} \frac1n \sum_i y_{\pm,i} w^\top
      (x_i + \delta_i) = w^\top \hat w - \varepsilon \|w\|_1` over :math:`\|w\|_2 \le 1`,
      i.e. adversarial training of a linear model in closed form.

    With :math:`\|\theta\|_2 = \sqrt d` and :math:`\sigma = d^{1/4}` (the defaults), a
    handful of samples gives a small standard error, whereas the robust error at
    Linf radius :math:`\varepsilon` needs many more: Schmidt et al. prove that any
    algorithm needs on the order of :math:`\varepsilon^2 \sqrt d / \log d` times more
    samples for robust than for standard generalisation in this model.

    Parameters
    ----------
    n_grid : sequence of int
        Training-set sizes.
    d : int
        Dimension.
    eps : float
        Linf radius of the robust error.
    mu_norm, sigma : float, optional
        Mixture parameters (defaults :math:`\sqrt d`, :math:`d^{1/4}`).
    trials : int
        Training sets per size.
    seed, progress

    Returns
    -------
    SampleComplexity
        With ``.plot()`` and ``.samples_to_reach(level, which)``.

    Examples
    --------
    >>> res = sample_complexity((1, 10, 100), d=100, eps=0.3, trials=5, progress=False)
    >>> res.standard[-1] < res.robust[-1]
    True
    """
    n_grid = [check_positive_int(n, "n_grid") for n in n_grid]
    if not n_grid:
        raise ValueError("n_grid must hold at least one training-set size")
    check_positive_int(d, "d")
    check_nonneg(eps, "eps", allow_tensor=False)
    check_positive_int(trials, "trials")
    mu_norm, sigma = _mixture_defaults(d, mu_norm, sigma)
    theta = torch.full((d,), mu_norm / math.sqrt(d), dtype=torch.float64)
    kw = dict(d=d, mu_norm=mu_norm, sigma=sigma)
    res = SampleComplexity([], [], [], [], bayes_standard=float(gaussian_mixture_errors(theta, **kw)),
                           bayes_robust=float(gaussian_mixture_errors(theta, eps=eps, **kw)), d=d, eps=float(eps))
    bar = _bar(len(n_grid) * trials, "Gaussian mixture", progress)
    try:
        for n in n_grid:
            ws = []
            for t in range(trials):
                x, y = _data.gaussian_mixture(n, d, mu_norm=mu_norm, sigma=sigma, seed=seed + 1000 * t + n)
                ws.append(((2 * y - 1).double()[:, None] * x.double()).mean(0))
                bar.update(1)
            w = torch.stack(ws)
            w_thr = w.sign() * (w.abs() - eps).clamp_min(0)
            res.n.append(n)
            res.standard.append(float(gaussian_mixture_errors(w, **kw).mean()))
            res.robust.append(float(gaussian_mixture_errors(w, eps=eps, **kw).mean()))
            res.robust_thresholded.append(float(gaussian_mixture_errors(w_thr, eps=eps, **kw).mean()))
    finally:
        bar.close()
    return res
