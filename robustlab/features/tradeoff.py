r"""The accuracy--robustness trade-off (Tsipras et al., 2019): the distribution, its exact
accuracies, the bound and the trade-off curve of linear classifiers."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from .. import data as _data
from .. import models as _models
from .. import train as _train
from .. import training as _training
from .._validate import check_nonneg, check_positive, check_positive_int, check_probability, check_seed, check_tensor
from ._common import _bar, _phi


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
    g = torch.Generator().manual_seed(check_seed(seed))
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
        robust_accuracy = check_probability(robust_accuracy, "robust_accuracy", closed=True)
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
    torch.manual_seed(check_seed(seed))
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
