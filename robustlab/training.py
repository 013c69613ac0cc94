r"""Adversarial training through the shared loop :func:`robustlab.train.fit`.

Standard training minimises the average loss; adversarial training (Madry et al., 2018)
minimises the loss of the worst input in a ball around every training point,

.. math::

    \min_\theta\; \mathbb{E}_{(x, y) \sim \mathcal{D}} \Big[ \max_{\|\delta\|_p \le \varepsilon}
    \mathcal{L}\big(f_\theta(x + \delta), y\big) \Big],

a saddle-point (robust optimisation) problem: the inner maximisation is an attack, the
outer minimisation is ordinary gradient descent on the loss at the attack's output
(Danskin's theorem makes that the right gradient at the inner maximiser).

Every method here is a loss object usable as ``fit(model, train, loss_fn=...)``:

* :class:`PGDLoss` -- the inner maximisation by PGD (Madry et al., 2018);
* :class:`FastFGSMLoss` -- one FGSM step from a random start (Wong, Rice and Kolter, 2020);
* :class:`TradesLoss` -- clean loss plus a KL robustness regulariser (Zhang et al., 2019);
* :class:`GaussianNoiseLoss` -- Gaussian data augmentation (Cohen, Rosenfeld and Kolter, 2019).

They are small frozen dataclasses whose ``repr`` lists every setting, so ``fit(...,
cache=True)`` keys the disk cache on them. They hold no state: a loss with an eps ramp
declares ``wants_step = True`` and ``fit`` passes it the batch of the run
(:class:`robustlab.train.TrainingStep`), from which the radius follows by the shared
schedule :func:`robustlab.train.ramp`; the same object can train any number of runs. :class:`CatastrophicOverfittingGuard` is an
epoch callback that watches the PGD accuracy of a fixed training batch and rolls the model
back when fast FGSM training collapses. :func:`adversarial_training` puts the pieces
together, and :func:`robust_model` is the cached, profile-driven robust model the chapters
use (the robust counterpart of :func:`robustlab.train.trained_model`).

Inside every loss the attack runs with the model in eval mode and with gradients taken
with respect to the input only; the model is back in its own (training) mode for the
forward pass whose loss is returned, so BatchNorm statistics are updated once per batch,
by the adversarial batch the model is trained on, and never by the attack's iterates.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import attacks as _attacks
from . import cache as _cache
from . import config
from . import data as _data
from . import models as _models
from . import train as _train
from ._validate import (
    check_choice,
    check_images,
    check_labels,
    check_model,
    check_nonneg,
    check_positive,
    check_positive_int,
)

__all__ = [
    "PGDLoss",
    "FastFGSMLoss",
    "TradesLoss",
    "GaussianNoiseLoss",
    "fast_fgsm_example",
    "CatastrophicOverfittingGuard",
    "make_loss",
    "METHODS",
    "DEFAULT_EPS",
    "TRAINING_RECIPES",
    "adversarial_training",
    "robust_model",
    "PlanarClassifiers",
    "planar_mlp",
    "fit_planar",
    "ball_robust_mask",
    "RobustAccuracyMonitor",
    "GeneralizationCurve",
    "robust_generalization",
    "TrainingSizeCurve",
    "accuracy_against_training_size",
]

METHODS = ("pgd", "fgsm", "trades", "noise")

# The threat model's Linf radii per data set: config's one table of default radii (its "attack" row).
DEFAULT_EPS = config.DEFAULT_EPS["attack"]


# --------------------------------------------------------------------------- helpers


def _check_eps_ramp(ramp) -> int:
    return check_positive_int(ramp, "ramp", allow_zero=True)


class _Ramp:
    """The eps ramp of the loss objects: a function of the training step that ``fit`` passes."""

    wants_step = True  # fit calls loss_fn(model, x, y, step=TrainingStep(...))

    def eps_at(self, step=None) -> float:
        """The radius of training batch ``step`` (a :class:`robustlab.train.TrainingStep` or a
        batch index from 0): ``eps * ramp(step, self.ramp)``; ``None`` (a call outside
        ``fit``) gives ``eps``."""
        return float(self.eps) * _train.ramp(step, self.ramp)


# --------------------------------------------------------------------------- losses


@dataclasses.dataclass(frozen=True)
class PGDLoss(_Ramp):
    r"""PGD adversarial training (Madry et al., 2018): the loss at a PGD adversarial example.

    For every batch, :func:`robustlab.attacks.pgd` approximates the inner maximisation
    :math:`x' \approx \arg\max_{\|x' - x\|_p \le \varepsilon,\ x' \in [0,1]^d}
    \mathcal{L}(f_\theta(x'), y)` (in eval mode, input gradients only), and the returned
    loss is the mean cross-entropy :math:`\mathcal{L}(f_\theta(x'), y)` computed in the
    model's training mode. Its gradient in :math:`\theta` is the gradient of the robust
    loss at the maximiser (Danskin).

    Parameters
    ----------
    eps : float
        Radius of the threat model in pixel units (Madry et al.: 0.3 on MNIST, Linf).
    norm : {"linf", "l2"}
    steps : int
        PGD iterations of the training attack (Madry et al.: 40 on MNIST, 7 on CIFAR-10).
    step_size : float, optional
        PGD step; default ``2.5 * eps / steps`` (of the current, possibly ramped, eps).
    random_start : bool
        Start PGD from a uniform point of the ball (as Madry et al. do).
    ramp : int
        Number of training batches over which the radius grows linearly from ``eps/ramp``
        to ``eps`` (0: no ramp): batch ``s`` of the run trains at :meth:`eps_at` ``(s)``,
        ``s`` coming from ``fit``. Called outside ``fit`` (no ``step``), the loss is at ``eps``.

    Notes
    -----
    Called as ``loss_fn(model, x, y, step=None)`` it returns ``(loss, logits)``: the scalar mean loss
    and the logits of the adversarial batch, so ``fit``'s training accuracy is the robust
    accuracy on the training batches.

    Examples
    --------
    >>> import robustlab as rl
    >>> loss_fn = PGDLoss(eps=0.2, steps=5)
    >>> loss_fn
    PGDLoss(eps=0.2, norm='linf', steps=5, step_size=None, random_start=True, ramp=0)
    >>> model = rl.models.build("cnn", "digits", width=4)
    >>> x, y = torch.rand(8, 1, 8, 8), torch.arange(8)
    >>> loss, logits = loss_fn(model, x, y)
    >>> bool(loss >= rl.train.cross_entropy_loss(model, x, y)[0])
    True
    """

    eps: float
    norm: str = "linf"
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    ramp: int = 0

    def __post_init__(self):
        check_nonneg(self.eps, "eps", allow_tensor=False)
        check_choice(self.norm, "norm", ("linf", "l2"))
        check_positive_int(self.steps, "steps")
        if self.step_size is not None:
            check_positive(self.step_size, "step_size")
        if not isinstance(self.random_start, bool):
            raise TypeError(f"random_start must be True or False, got {type(self.random_start).__name__}")
        _check_eps_ramp(self.ramp)

    def __call__(self, model, x, y, step=None):
        eps = self.eps_at(step)
        if eps > 0:
            x = _attacks.pgd(model, x, y, eps=eps, norm=self.norm, steps=self.steps, step_size=self.step_size,
                             random_start=self.random_start)
        logits = model(x)
        return F.cross_entropy(logits, y), logits


@dataclasses.dataclass(frozen=True)
class FastFGSMLoss(_Ramp):
    r"""Fast adversarial training (Wong, Rice and Kolter, 2020): FGSM from a random start.

    For every batch, with :math:`\eta \sim U[-\varepsilon, \varepsilon]^d`,

    .. math::

        x^0 = \Pi_{[0,1]^d}(x + \eta), \qquad
        x' = \Pi_{[0,1]^d}\Big(\Pi_{B_\infty(x, \varepsilon)}\big(x^0 + s\,
        \operatorname{sign} \nabla_x \mathcal{L}(f_\theta(x^0), y)\big)\Big),

    with the step :math:`s = 1.25\,\varepsilon` by default, and the loss is
    :math:`\mathcal{L}(f_\theta(x'), y)`. One gradient step per batch makes it about as cheap
    as two standard steps. The random start is what makes it work; with a large step
    :math:`s` (or a large :math:`\varepsilon`) training can still suffer *catastrophic
    overfitting*: within an epoch the model becomes robust to the FGSM step only while its
    PGD robust accuracy collapses to near 0. Watch it with
    :class:`CatastrophicOverfittingGuard`.

    The gradient step is taken in eval mode (as every robustlab attack is); the returned
    loss is computed in the model's training mode.

    Parameters
    ----------
    eps : float
        Linf radius in pixel units.
    step_size : float, optional
        The FGSM step's size in pixel units (``step_size`` of :func:`robustlab.attacks.fgsm`);
        default ``1.25 * eps``. It is given at the full radius ``eps`` and scales with a
        ramped eps.
    random_start : bool
        Start from a uniform point of the ball (default). ``False`` is the plain FGSM
        training of Goodfellow et al. (2015), the variant most prone to collapse.
    ramp : int
        Batches over which eps grows linearly to ``eps`` (see :class:`PGDLoss`).

    Examples
    --------
    >>> FastFGSMLoss(eps=0.2)
    FastFGSMLoss(eps=0.2, step_size=None, random_start=True, ramp=0)
    """

    eps: float
    step_size: float | None = None
    random_start: bool = True
    ramp: int = 0

    def __post_init__(self):
        check_nonneg(self.eps, "eps", allow_tensor=False)
        if self.step_size is not None:
            check_positive(self.step_size, "step_size")
        if not isinstance(self.random_start, bool):
            raise TypeError(f"random_start must be True or False, got {type(self.random_start).__name__}")
        _check_eps_ramp(self.ramp)

    def step_for(self, eps: float) -> float:
        """The FGSM step size used at radius ``eps``."""
        if self.step_size is None:
            return 1.25 * eps
        return float(self.step_size) if self.eps == 0 else float(self.step_size) * eps / float(self.eps)

    def __call__(self, model, x, y, step=None):
        eps = self.eps_at(step)
        if eps > 0:
            x = fast_fgsm_example(model, x, y, eps=eps, step_size=self.step_for(eps), random_start=self.random_start)
        logits = model(x)
        return F.cross_entropy(logits, y), logits


def fast_fgsm_example(model, x, y, *, eps: float, step_size: float, random_start: bool = True) -> torch.Tensor:
    """The adversarial input of :class:`FastFGSMLoss`: random start (or ``x`` itself), one
    signed step of size ``step_size``, projection onto the Linf ball around ``x``, clamp to [0, 1].

    This is :func:`robustlab.attacks.fgsm` with ``step_size`` and ``random_start`` (its start
    drawn from the global torch generator, so a training run's seed fixes it)."""
    return _attacks.fgsm(model, x.detach(), y, eps=eps, step_size=step_size, random_start=random_start).detach()


def _kl(logits_p: torch.Tensor, logits_q: torch.Tensor, reduction: str = "batchmean") -> torch.Tensor:
    """KL(p || q) of the softmax distributions, from logits."""
    return F.kl_div(F.log_softmax(logits_q, 1), F.log_softmax(logits_p, 1), reduction=reduction, log_target=True)


@dataclasses.dataclass(frozen=True)
class TradesLoss(_Ramp):
    r"""TRADES (Zhang et al., 2019): clean loss plus a robustness regulariser.

    .. math::

        \mathcal{L}_{\mathrm{TRADES}} = \mathcal{L}\big(f_\theta(x), y\big)
        + \beta\, \mathrm{KL}\big(p_\theta(x)\,\|\,p_\theta(x')\big),
        \qquad x' \approx \arg\max_{\|x' - x\|_\infty \le \varepsilon}
        \mathrm{KL}\big(p_\theta(x)\,\|\,p_\theta(x')\big),

    where :math:`p_\theta` is the softmax of the logits. The inner maximisation starts
    from :math:`x + 0.001\,\mathcal{N}(0, I)` (clamped to [0, 1]) and takes ``steps``
    signed-gradient steps of the KL, each projected onto the ball around ``x`` and clamped
    to [0, 1] (in eval mode, input gradients only); the label is not used, so the
    regulariser pushes the decision boundary away from the data without label leaking.
    :math:`\beta` trades accuracy (small) for robustness (large); the paper uses 6 on
    CIFAR-10. The KL is averaged over the batch; its gradient flows through both
    :math:`p_\theta(x)` and :math:`p_\theta(x')`, as in the reference implementation.

    Parameters
    ----------
    eps : float
        Linf radius in pixel units.
    beta : float
        Weight of the KL term (>= 0; ``beta=0`` is standard training).
    steps : int
        Ascent steps of the inner maximisation.
    step_size : float, optional
        Default ``2.5 * eps / steps``.
    ramp : int
        Batches over which eps grows linearly to ``eps`` (see :class:`PGDLoss`).

    Notes
    -----
    Called as ``loss_fn(model, x, y, step=None)`` it returns ``(loss, logits)`` with the logits of the
    *clean* batch (``fit``'s training accuracy is then the clean accuracy).

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> trades, _ = TradesLoss(eps=0.1, beta=0.0)(model, x, y)
    >>> bool(torch.isclose(trades, rl.train.cross_entropy_loss(model, x, y)[0]))
    True
    """

    eps: float
    beta: float = 6.0
    steps: int = 10
    step_size: float | None = None
    ramp: int = 0

    def __post_init__(self):
        check_nonneg(self.eps, "eps", allow_tensor=False)
        check_nonneg(self.beta, "beta", allow_tensor=False)
        check_positive_int(self.steps, "steps")
        if self.step_size is not None:
            check_positive(self.step_size, "step_size")
        _check_eps_ramp(self.ramp)

    def adversarial_example(self, model, x: torch.Tensor, eps: float) -> torch.Tensor:
        """The inner maximiser ``x'`` of the KL term at radius ``eps``."""
        x = x.detach()
        step = 2.5 * eps / self.steps if self.step_size is None else float(self.step_size)
        with _models.eval_mode(model):
            with torch.no_grad():
                logits_x = model(x)
            x_adv = (x + 0.001 * torch.randn_like(x)).clamp(0.0, 1.0)
            x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps)
            for _ in range(self.steps):
                x_adv.requires_grad_(True)
                with torch.enable_grad():
                    kl = _kl(logits_x, model(x_adv), reduction="sum")
                    (grad,) = torch.autograd.grad(kl, x_adv)
                x_adv = x_adv.detach() + step * grad.sign()
                x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
        return x_adv.detach()

    def __call__(self, model, x, y, step=None):
        eps = self.eps_at(step)
        x_adv = self.adversarial_example(model, x, eps)
        logits = model(x)
        loss = F.cross_entropy(logits, y) + float(self.beta) * _kl(logits, model(x_adv))
        return loss, logits


@dataclasses.dataclass(frozen=True)
class GaussianNoiseLoss:
    r"""Gaussian data augmentation: the loss at :math:`x + \sigma\,\mathcal{N}(0, I)`.

    .. math::

        \mathcal{L}_\sigma = \mathcal{L}\big(f_\theta(x + \delta), y\big), \qquad
        \delta \sim \mathcal{N}(0, \sigma^2 I),

    a fresh draw for every batch. This is the training Cohen, Rosenfeld and Kolter (2019)
    use for the base classifier of Gaussian randomized smoothing, whose prediction is
    :math:`g(x) = \arg\max_c P(f(x + \delta) = c)`. The noise is *not* clamped to [0, 1] by
    default: the smoothed classifier's certificate is about exactly this unclamped
    distribution, so the base classifier should be trained on it (the model's first layer
    is an affine normalisation, so inputs slightly outside [0, 1] are harmless). Pass
    ``clamp=True`` for plain augmentation that keeps the inputs valid images.

    Parameters
    ----------
    sigma : float
        Noise standard deviation in pixel units (>= 0; ``sigma=0`` is standard training).
    clamp : bool
        Clamp the noisy inputs to [0, 1].

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> noisy, _ = GaussianNoiseLoss(sigma=0.0)(model, x, y)
    >>> bool(torch.equal(noisy, rl.train.cross_entropy_loss(model, x, y)[0]))
    True
    """

    sigma: float
    clamp: bool = False

    def __post_init__(self):
        check_nonneg(self.sigma, "sigma", allow_tensor=False)
        if not isinstance(self.clamp, bool):
            raise TypeError(f"clamp must be True or False, got {type(self.clamp).__name__}")

    def __call__(self, model, x, y):
        if self.sigma > 0:
            x = x + float(self.sigma) * torch.randn_like(x)
            if self.clamp:
                x = x.clamp(0.0, 1.0)
        logits = model(x)
        return F.cross_entropy(logits, y), logits


# --------------------------------------------------------------------------- the guard


class CatastrophicOverfittingGuard:
    r"""Epoch callback that detects catastrophic overfitting and rolls the model back.

    Fast FGSM training can collapse: the model learns to defeat its own single-step
    attack while its PGD robust accuracy falls to near zero, often within one epoch
    (Wong, Rice and Kolter, 2020, section 5). The guard measures, after every epoch,

    .. math::

        a_e = \frac{1}{m} \sum_{i=1}^m \mathbf{1}\big[f(\mathrm{PGD}_\varepsilon(x_i)) = y_i\big]

    on a *fixed* training batch :math:`(x_i, y_i)_{i \le m}` (fixed attack seed, so
    :math:`a_e` changes only because the model does), keeps a copy of the weights of the
    best epoch so far, :math:`e^* = \arg\max_{e' < e} a_{e'}`, and declares a collapse when

    .. math::

        a_e < a_{e^*} - \text{drop}, \qquad\text{or}\qquad a_e < \text{floor} \le a_{e^*},
        \qquad\text{or}\qquad t_e - a_e > \text{max\_gap},

    where :math:`t_e` is the epoch's training accuracy as ``fit`` recorded it
    (``history.train_acc``; for fast FGSM and PGD training, the accuracy on the training
    attack's examples). The first two are Wong et al.'s check, a sharp fall of the PGD
    accuracy; the third catches a run that is robust to its own attack but was never
    robust to PGD, the form the collapse takes when it happens in the first epochs.
    No collapse is declared in the first ``warmup`` epochs (e.g. while eps ramps up and
    the training attack is weaker than the check).

    On a collapse it loads the weights of epoch :math:`e^*` into the model (if an earlier
    epoch was recorded), appends a note to ``history.notes`` and returns True, which stops
    :func:`robustlab.train.fit`. Epochs in the note are counted from 1, as in
    :meth:`robustlab.train.History.plot`.

    Parameters
    ----------
    x, y : torch.Tensor
        The fixed training batch, ``x`` in [0, 1] (B, ...) and labels (B,).
    eps : float
        Linf radius of the PGD check (the training radius).
    steps : int
        PGD steps of the check (default 10, step ``2.5 * eps / steps``, one random start).
    drop : float
        Largest tolerated fall of the accuracy below the best so far (absolute, in [0, 1]).
    floor : float, optional
        Also a collapse when the accuracy falls below ``floor`` after having reached it.
    max_gap : float, optional
        Also a collapse when the training accuracy exceeds the PGD accuracy by more than
        this (off by default; meaningful when the loss reports adversarial logits).
    warmup : int
        Epochs at the start in which no collapse is declared.
    seed : int
        Seed of the PGD random starts.

    Attributes
    ----------
    accuracies : list of float
        :math:`a_e` of every epoch of the current run (plot them with :meth:`plot`).
    best_epoch : int or None
        0-based epoch whose weights are kept.
    rolled_back_at : int or None
        0-based epoch at which a collapse was detected (None: no collapse).

    Its ``repr`` names every setting and a fingerprint of the batch, so a run with the
    guard can be cached (``fit(..., cache=True)``). A run starting at epoch 0 resets it.

    Examples
    --------
    >>> import robustlab as rl
    >>> train, _ = rl.data.load("digits")
    >>> guard = CatastrophicOverfittingGuard(train.x[:64], train.y[:64], eps=0.2)
    >>> repr(guard).startswith("CatastrophicOverfittingGuard(eps=0.2, steps=10, drop=0.2")
    True
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 10, drop: float = 0.2,
                 floor: float | None = None, max_gap: float | None = None, warmup: int = 0, seed: int = 0):
        check_images(x, "x")
        check_labels(y, "y", batch_size=x.shape[0])
        check_nonneg(eps, "eps", allow_tensor=False)
        check_positive_int(steps, "steps")
        for value, name in ((drop, "drop"), (floor, "floor"), (max_gap, "max_gap")):
            if value is None and name != "drop":
                continue
            check_nonneg(value, name, allow_tensor=False)
            if value > 1:
                raise ValueError(f"{name} must be an accuracy (difference) in [0, 1], got {value}")
        check_positive_int(warmup, "warmup", allow_zero=True)
        check_positive_int(seed, "seed", allow_zero=True)
        self.x, self.y = x.detach().cpu(), y.detach().cpu()
        self.eps, self.steps, self.drop, self.floor, self.seed = eps, steps, drop, floor, seed
        self.max_gap, self.warmup = max_gap, warmup
        self._batch_id = _cache.fingerprint(self.x, self.y)
        self._reset()

    def _reset(self):
        self.accuracies: list = []
        self.best_epoch: int | None = None
        self.best_accuracy = -math.inf
        self.rolled_back_at: int | None = None
        self._best_state = None

    def __repr__(self) -> str:
        return (f"CatastrophicOverfittingGuard(eps={self.eps!r}, steps={self.steps}, drop={self.drop!r}, "
                f"floor={self.floor!r}, max_gap={self.max_gap!r}, warmup={self.warmup}, seed={self.seed}, "
                f"batch={self.x.shape[0]} examples sha256:{self._batch_id})")

    def robust_accuracy(self, model) -> float:
        """PGD accuracy of ``model`` on the fixed batch (the quantity the guard watches)."""
        x_adv = _attacks.pgd(model, self.x, self.y, eps=self.eps, steps=self.steps, seed=self.seed)
        return _train.evaluate(model, (x_adv.cpu(), self.y))

    def _why(self, epoch: int, acc: float, history) -> str | None:
        """The reason for declaring a collapse at this epoch, or None."""
        if epoch < self.warmup:
            return None
        if self._best_state is not None:
            fell = acc < self.best_accuracy - self.drop or (self.floor is not None and acc < self.floor <= self.best_accuracy)
            if fell:
                return (f"PGD accuracy (eps={self.eps:g}) on the fixed training batch fell from "
                        f"{self.best_accuracy:.3f} (epoch {self.best_epoch + 1}) to {acc:.3f}")
        train_acc = history.train_acc[-1] if len(history.train_acc) else math.nan
        if self.max_gap is not None and train_acc - acc > self.max_gap:
            return (f"training accuracy {train_acc:.3f} but PGD accuracy (eps={self.eps:g}) on the fixed training "
                    f"batch only {acc:.3f}")
        return None

    def __call__(self, epoch: int, model, history) -> bool:
        if epoch == 0:
            self._reset()
        acc = self.robust_accuracy(model)
        self.accuracies.append(acc)
        why = self._why(epoch, acc, history)
        if why is None:
            if acc > self.best_accuracy:
                self.best_accuracy, self.best_epoch = acc, epoch
                self._best_state = copy.deepcopy(model.state_dict())
            return False
        self.rolled_back_at = epoch
        if self._best_state is not None:
            model.load_state_dict(self._best_state)
            action = f"rolled back to the weights of epoch {self.best_epoch + 1} and stopped"
        else:
            action = "no earlier epoch to roll back to; stopped"
        history.notes.append(f"catastrophic overfitting at epoch {epoch + 1}: {why}; {action}")
        return True

    def plot(self, ax=None):
        """PGD accuracy on the fixed batch against the epoch, the rollback marked."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3))
        epochs = range(1, len(self.accuracies) + 1)
        ax.plot(epochs, self.accuracies, marker="o", label=f"PGD accuracy, eps={self.eps:g} (fixed batch)")
        if self.rolled_back_at is not None:
            ax.axvline(self.rolled_back_at + 1, color="C3", ls="--", label="collapse detected")
            if self.best_epoch is not None:
                ax.plot([self.best_epoch + 1], [self.best_accuracy], "*", color="C2", ms=12, label="weights kept")
        ax.set_xlabel("epoch")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(0, 1.02)
        ax.legend(loc="lower right", fontsize=8)
        return ax


# --------------------------------------------------------------------------- convenience


def _as_split(train, name="train"):
    if isinstance(train, (tuple, list)) and len(train) == 2:
        return _data.Split(*train)
    raise TypeError(f"{name} must be a Split or an (x, y) pair of tensors, got {type(train).__name__}")


def make_loss(method: str = "pgd", *, eps=None, sigma=None, norm: str = "linf", steps: int | None = None,
              step_size: float | None = None, beta: float = 6.0, ramp: int = 0,
              clamp: bool = False):
    """The loss object of a training ``method`` (see :func:`adversarial_training`)."""
    check_choice(method, "method", METHODS)
    if method == "noise":
        if sigma is None:
            raise ValueError("sigma is required for method='noise' (the noise standard deviation)")
        return GaussianNoiseLoss(sigma=sigma, clamp=clamp)
    if eps is None:
        raise ValueError(f"eps is required for method={method!r} (the radius of the threat model)")
    if method == "pgd":
        return PGDLoss(eps=eps, norm=norm, steps=10 if steps is None else steps, step_size=step_size, ramp=ramp)
    if norm != "linf":
        raise ValueError(f"norm must be 'linf' for method={method!r}, got {norm!r}")
    if method == "fgsm":
        return FastFGSMLoss(eps=eps, step_size=step_size, ramp=ramp)
    return TradesLoss(eps=eps, beta=beta, steps=10 if steps is None else steps, step_size=step_size, ramp=ramp)


def adversarial_training(
    model: torch.nn.Module,
    train,
    *,
    method: str = "pgd",
    eps: float | None = None,
    sigma: float | None = None,
    norm: str = "linf",
    steps: int | None = None,
    step_size: float | None = None,
    beta: float = 6.0,
    eps_ramp_epochs: int = 0,
    guard: bool | CatastrophicOverfittingGuard | None = None,
    guard_size: int = 256,
    callbacks=(),
    epochs: int,
    batch_size: int = 64,
    **fit_kwargs,
) -> _train.History:
    r"""Train ``model`` in place with an adversarial (or noise) training ``method``.

    A thin layer over :func:`robustlab.train.fit`: it builds the loss object of the method
    and, for fast FGSM, a :class:`CatastrophicOverfittingGuard`, and passes everything else
    to ``fit`` (``lr``, ``optimizer``, ``schedule``, ``seed``, ``eval_data``, ``cache``, ...).

    Parameters
    ----------
    model : torch.nn.Module
    train : Split or (x, y)
    method : {"pgd", "fgsm", "trades", "noise"}
        :class:`PGDLoss`, :class:`FastFGSMLoss`, :class:`TradesLoss` or
        :class:`GaussianNoiseLoss`.
    eps : float
        Radius of the threat model (pgd, fgsm, trades).
    sigma : float
        Noise level (noise).
    norm : {"linf", "l2"}
        Threat model of ``"pgd"`` (the others are Linf).
    steps, step_size : int, float, optional
        Attack steps and step size (pgd, trades: default 10 steps of ``2.5 * eps / steps``;
        fgsm: its one step, default ``1.25 * eps``).
    beta : float
        TRADES weight.
    eps_ramp_epochs : int
        Grow eps linearly from ``eps / (eps_ramp_epochs * batches)`` to ``eps`` over the
        first ``eps_ramp_epochs`` epochs (0: full radius from the start).
    guard : bool or CatastrophicOverfittingGuard, optional
        Watch for catastrophic overfitting; by default on for ``"fgsm"`` only. ``True``
        builds a guard at the training radius on ``guard_size`` seeded training examples,
        silent during the eps ramp, with ``drop=0.2`` and (for fgsm) ``max_gap=0.4``.
    callbacks : sequence of callables
        More epoch callbacks for ``fit`` (run after the guard).
    epochs, batch_size : int
    **fit_kwargs
        Passed to :func:`robustlab.train.fit`.

    Returns
    -------
    History
        Training accuracy in it is measured on the training method's inputs (adversarial
        for pgd and fgsm, clean for trades, noisy for noise).

    Examples
    --------
    >>> import robustlab as rl
    >>> train, _ = rl.data.load("digits")
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> hist = adversarial_training(model, rl.data.subset(train, 128), eps=0.1, steps=2, epochs=1, progress=False)
    >>> hist.epochs
    1
    """
    check_model(model)
    split = _as_split(train)
    check_choice(method, "method", METHODS)
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(eps_ramp_epochs, "eps_ramp_epochs", allow_zero=True)
    if eps_ramp_epochs and method == "noise":
        raise ValueError("eps_ramp_epochs applies to the attack-based methods, not to method='noise'")
    if "loss_fn" in fit_kwargs:
        raise TypeError("adversarial_training builds loss_fn from method; call robustlab.train.fit to pass your own")
    ramp = eps_ramp_epochs * math.ceil(split.x.shape[0] / batch_size)
    loss_fn = make_loss(method, eps=eps, sigma=sigma, norm=norm, steps=steps, step_size=step_size,
                        beta=beta, ramp=ramp)
    if guard is None:
        guard = method == "fgsm"
    if isinstance(guard, bool):
        if guard:
            if method == "noise":
                raise ValueError("guard=True needs an attack radius; pass a CatastrophicOverfittingGuard for 'noise'")
            check_positive_int(guard_size, "guard_size")
            batch = _data.subset(split, guard_size, seed=0)
            guard = CatastrophicOverfittingGuard(batch.x, batch.y, eps=eps, max_gap=0.4 if method == "fgsm" else None,
                                                 warmup=eps_ramp_epochs)
        else:
            guard = None
    elif not isinstance(guard, CatastrophicOverfittingGuard):
        raise TypeError(f"guard must be True, False, None or a CatastrophicOverfittingGuard, got {type(guard).__name__}")
    all_callbacks = ((guard,) if guard is not None else ()) + tuple(callbacks)
    fit_kwargs.setdefault("desc", f"{method} training")
    return _train.fit(model, split, epochs=epochs, batch_size=batch_size, loss_fn=loss_fn, callbacks=all_callbacks,
                      **fit_kwargs)


# Training recipes of :func:`robust_model`, per profile and method. The quick digits PGD
# recipe reaches about 98% clean and 67% robust accuracy under the attack ensemble at eps
# 0.2 (74% under PGD-50 alone) in about 20 s on one CPU thread
# (benchmarks/adversarial_training.py prints the measured numbers).
TRAINING_RECIPES = {
    "quick": {
        "pgd": dict(epochs=30, lr=5e-3, batch_size=64, steps=7, eps_ramp_epochs=5, schedule="onecycle"),
        "fgsm": dict(epochs=30, lr=5e-3, batch_size=64, eps_ramp_epochs=5, schedule="onecycle"),
        "trades": dict(epochs=30, lr=5e-3, batch_size=64, steps=7, eps_ramp_epochs=5, schedule="onecycle"),
        "noise": dict(epochs=30, lr=2e-3, batch_size=64, schedule="constant"),
    },
    "full": {
        "pgd": dict(epochs=10, lr=1e-3, batch_size=128, steps=20, eps_ramp_epochs=2, schedule="onecycle"),
        "fgsm": dict(epochs=10, lr=1e-3, batch_size=128, eps_ramp_epochs=2, schedule="onecycle"),
        "trades": dict(epochs=10, lr=1e-3, batch_size=128, steps=10, eps_ramp_epochs=2, schedule="onecycle"),
        "noise": dict(epochs=8, lr=1e-3, batch_size=128, schedule="constant"),
    },
}


def robust_model(
    dataset: str | None = None,
    method: str = "pgd",
    eps: float | None = None,
    *,
    sigma: float = 0.25,
    arch: str | None = None,
    width: int | None = None,
    seed: int = 0,
    device=None,
    progress: bool | None = None,
    cache: bool = True,
    **overrides,
) -> _train.Trained:
    """A robustly trained model of the active profile (cached on disk).

    The robust counterpart of :func:`robustlab.train.trained_model`: the profile's
    architecture trained on ``dataset`` with :func:`adversarial_training` and the
    profile's recipe (:data:`TRAINING_RECIPES`) for ``method``; the first call trains (with a
    progress bar), later calls with the same arguments load the cached weights.
    Made by the zoo's one factory, :func:`robustlab.zoo.profile_model`.

    Parameters
    ----------
    dataset : str, optional
        Default: the profile's data set.
    method : {"pgd", "fgsm", "trades", "noise"}
    eps : float, optional
        Training radius; default :data:`DEFAULT_EPS` of the data set (0.2 for the digits).
    sigma : float
        Noise level of ``method="noise"``.
    arch, width, seed, device, progress, cache
        As in :func:`robustlab.train.trained_model`.
    **overrides
        Replace entries of the recipe (``epochs``, ``lr``, ``steps``, ...) or pass more
        arguments of :func:`adversarial_training`.

    Returns
    -------
    Trained
        ``(model, history)``; the model is in eval mode.
    """
    prof = config.profile()
    dataset = prof.dataset if dataset is None else dataset
    check_choice(method, "method", METHODS)
    meta = _data.info(dataset)
    if eps is None:
        eps = DEFAULT_EPS[meta.name]
    recipe = dict(TRAINING_RECIPES[prof.name][method])
    recipe.update(overrides)
    if prof.smoke:
        recipe["epochs"] = 1
        recipe["eps_ramp_epochs"] = 0
    kw = dict(sigma=sigma) if method == "noise" else dict(eps=eps)

    def train_fn(model, train, test):
        return adversarial_training(model, train, method=method, seed=seed, eval_data=test, progress=progress,
                                    cache=cache, desc=f"{method} training {model.__class__.__name__} on {dataset}",
                                    **kw, **recipe)

    from .zoo import profile_model

    return profile_model(train_fn, dataset, arch, width=width, seed=seed, device=device)


# --------------------------------------------------------------------------- a network in the plane


class PlanarClassifiers(NamedTuple):
    """A standard and an adversarially trained small network on points of the plane."""

    standard: torch.nn.Module
    robust: torch.nn.Module
    eps: float
    norm: str


def planar_mlp(width: int = 32, *, seed: int = 0) -> torch.nn.Module:
    """A two-hidden-layer ReLU network from :math:`[0, 1]^2` to two logits (``width`` units per layer)."""
    check_positive_int(width, "width")
    check_positive_int(seed, "seed", allow_zero=True)
    torch.manual_seed(seed)
    return _models.MLP((2,), n_classes=2, hidden=(width, width))


def fit_planar(data, eps: float, *, norm: str = "linf", width: int = 32, epochs: int = 400, lr: float = 1e-2,
               steps: int = 10, seed: int = 0, cache: bool = False) -> PlanarClassifiers:
    r"""Train :func:`planar_mlp` twice on 2-D points: standardly, and with PGD at radius ``eps``.

    Both runs use the same initialisation (``seed``), full-batch Adam for ``epochs`` steps
    and :func:`robustlab.train.fit`; the robust one minimises the PGD loss
    :class:`PGDLoss` (``steps`` steps, Madry et al., 2018) in the ``norm`` ball. Unlike a
    line, the network's boundary can bend around the :math:`\varepsilon`-balls of the
    training points (draw it with :func:`robustlab.plot.eps_balls_and_boundaries`; check
    the balls with :func:`ball_robust_mask`).

    Parameters
    ----------
    data : Split or (x, y)
        ``x`` (n, 2) in [0, 1], labels in {0, 1}.
    eps : float
        Training radius (> 0).
    norm : {"linf", "l2"}
    width, epochs, lr, steps, seed : int, int, float, int, int
    cache : bool
        Passed to ``fit``.

    Returns
    -------
    PlanarClassifiers
        Both models in eval mode, on the CPU.

    Examples
    --------
    >>> import robustlab as rl
    >>> pair = fit_planar(rl.data.linearly_separable(20, margin=0.2), 0.05, epochs=5)
    >>> pair.robust(torch.rand(3, 2)).shape
    torch.Size([3, 2])
    """
    x, y = _as_split(data, "data")
    check_images(x, "data.x")
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"data.x must hold points of the plane, shape (n, 2), got {tuple(x.shape)}")
    check_labels(y, "data.y", batch_size=x.shape[0], n_classes=2)
    check_positive(eps, "eps")
    check_choice(norm, "norm", ("linf", "l2"))
    check_positive_int(epochs, "epochs")
    check_positive(lr, "lr")
    check_positive_int(steps, "steps")
    models = []
    for loss_fn in (None, PGDLoss(eps=float(eps), norm=norm, steps=steps)):
        model = planar_mlp(width, seed=seed)
        _train.fit(model, (x, y), epochs=epochs, lr=lr, batch_size=x.shape[0], seed=seed, loss_fn=loss_fn,
                   progress=False, cache=cache)
        models.append(model.eval())
    return PlanarClassifiers(models[0], models[1], float(eps), norm)


def _ball_grid(eps: float, norm: str, resolution: int) -> torch.Tensor:
    t = torch.linspace(-eps, eps, resolution)
    grid = torch.cartesian_prod(t, t)
    if norm == "l2":
        grid = grid[grid.norm(dim=1) <= eps * (1 + 1e-9)]
        angles = torch.linspace(0, 2 * math.pi, 4 * resolution + 1)[:-1]
        grid = torch.cat([grid, eps * torch.stack([angles.cos(), angles.sin()], 1)])
    return grid


@torch.no_grad()
def ball_robust_mask(model, x: torch.Tensor, y: torch.Tensor, eps: float, *, norm: str = "linf",
                     resolution: int = 41, pgd_steps: int = 50) -> torch.Tensor:
    r"""Which 2-D points have their whole :math:`\varepsilon`-ball (within :math:`[0, 1]^2`) classified correctly.

    In the plane the inner maximisation can be searched almost exhaustively: a point
    counts as robust only if the model is correct at the point, at every node of a
    ``resolution`` :math:`\times` ``resolution`` grid over its ball clipped to the unit
    square (for L2 the grid nodes inside the disc and points on its circle), and at the
    output of PGD (``pgd_steps`` steps, which finds thin wrong regions between the nodes).
    Stronger than either search alone; exact up to the grid's spacing
    :math:`2\varepsilon / (\text{resolution} - 1)` and PGD's reach.

    Returns
    -------
    torch.Tensor
        (n,) bool.
    """
    check_images(x, "x")
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"x must hold points of the plane, shape (n, 2), got {tuple(x.shape)}")
    check_labels(y, "y", batch_size=x.shape[0])
    check_nonneg(eps, "eps", allow_tensor=False)
    check_choice(norm, "norm", ("linf", "l2"))
    check_positive_int(resolution, "resolution")
    if resolution < 2:
        raise ValueError(f"resolution must be at least 2 grid nodes per side, got {resolution}")
    check_positive_int(pgd_steps, "pgd_steps", allow_zero=True)
    model.eval()
    grid = _ball_grid(float(eps), norm, resolution)
    points = (x[:, None, :] + grid[None]).clamp(0, 1)                         # (n, g, 2)
    pred = model(points.reshape(-1, 2)).argmax(1).reshape(x.shape[0], -1)
    robust = (pred == y[:, None]).all(1) & (model(x).argmax(1) == y)
    if pgd_steps and eps > 0:
        with torch.enable_grad():
            x_adv = _attacks.pgd(model, x, y, eps=eps, norm=norm, steps=pgd_steps, seed=0)
        robust &= model(x_adv).argmax(1) == y
    return robust


# --------------------------------------------------------------------------- robust generalisation


class RobustAccuracyMonitor:
    r"""Epoch callback that records clean and PGD accuracy of fixed training and test subsets.

    After every epoch it measures, on the same ``m`` training and ``m`` test inputs, the
    clean accuracy and the accuracy under :func:`robustlab.attacks.pgd` (``steps`` steps of
    ``2.5 * eps / steps``, one random start, fixed seed, so the numbers change only because
    the model does). The difference between the two robust accuracies is the *robust
    generalisation gap* (Schmidt et al., 2018; Rice, Wong and Kolter, 2020). A single PGD
    run overestimates robustness, so these curves track the gap's trend; report a model's
    robustness with :func:`robustlab.attacks.robust_accuracy`.

    Attributes
    ----------
    records : dict of lists
        ``"train_clean"``, ``"train_robust"``, ``"test_clean"``, ``"test_robust"``, one
        entry per epoch of the current run.
    """

    KEYS = ("train_clean", "train_robust", "test_clean", "test_robust")

    def __init__(self, train, test, *, eps: float, norm: str = "linf", steps: int = 10, seed: int = 0):
        self.train = tuple(t.detach().cpu() for t in _as_split(train, "train"))
        self.test = tuple(t.detach().cpu() for t in _as_split(test, "test"))
        for (xs, ys), name in ((self.train, "train"), (self.test, "test")):
            check_images(xs, f"{name}.x")
            check_labels(ys, f"{name}.y", batch_size=xs.shape[0])
        check_positive(eps, "eps")
        check_choice(norm, "norm", ("linf", "l2"))
        check_positive_int(steps, "steps")
        check_positive_int(seed, "seed", allow_zero=True)
        self.eps, self.norm, self.steps, self.seed = float(eps), norm, steps, seed
        self._ids = (_cache.fingerprint(*self.train), _cache.fingerprint(*self.test))
        self.records = {k: [] for k in self.KEYS}

    def __repr__(self) -> str:
        return (f"RobustAccuracyMonitor(eps={self.eps!r}, norm={self.norm!r}, steps={self.steps}, seed={self.seed}, "
                f"train={self.train[0].shape[0]} examples sha256:{self._ids[0]}, "
                f"test={self.test[0].shape[0]} examples sha256:{self._ids[1]})")

    def measure(self, model) -> dict:
        """Clean and PGD accuracy of ``model`` on the two subsets (model left in eval mode)."""
        model.eval()
        device = _models.device_of(model)
        out = {}
        for name, (xs, ys) in (("train", self.train), ("test", self.test)):
            xs, ys = xs.to(device), ys.to(device)
            out[f"{name}_clean"] = _train.evaluate(model, (xs, ys))
            x_adv = _attacks.pgd(model, xs, ys, eps=self.eps, norm=self.norm, steps=self.steps, seed=self.seed)
            out[f"{name}_robust"] = _train.evaluate(model, (x_adv, ys))
        return out

    def __call__(self, epoch: int, model, history) -> bool:
        if epoch == 0:
            self.records = {k: [] for k in self.KEYS}
        was_training = model.training
        for key, value in self.measure(model).items():
            self.records[key].append(value)
        model.train(was_training)
        return False


@dataclasses.dataclass
class GeneralizationCurve:
    """Per-epoch clean and PGD accuracies on training and test subsets, and the final evaluation.

    ``final`` holds the trained model's robust accuracies on the same subsets under the
    strongest evaluation, :func:`robustlab.attacks.robust_accuracy` with its default
    ensemble (``"train_ensemble"``, ``"test_ensemble"``).
    """

    records: dict
    final: dict
    eps: float
    steps: int

    @property
    def epochs(self) -> int:
        return len(self.records["train_robust"])

    def gap(self, kind: str = "robust") -> list:
        """Training minus test accuracy after every epoch (``kind`` "robust" or "clean")."""
        check_choice(kind, "kind", ("robust", "clean"))
        return [a - b for a, b in zip(self.records[f"train_{kind}"], self.records[f"test_{kind}"])]

    def plot(self, ax=None):
        """The four curves against the epoch; returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6.5, 3.6))
        ep = range(1, self.epochs + 1)
        styles = {"train_clean": ("C0", "--", "training, clean"), "test_clean": ("C1", "--", "test, clean"),
                  "train_robust": ("C0", "-", f"training, PGD-{self.steps}"),
                  "test_robust": ("C1", "-", f"test, PGD-{self.steps}")}
        for key, (color, ls, label) in styles.items():
            ax.plot(ep, self.records[key], ls=ls, color=color, label=label)
        ax.set_xlabel("epoch of PGD training")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        return ax


def robust_generalization(dataset: str | None = None, eps: float | None = None, *, n_monitor: int = 300,
                          steps: int = 10, seed: int = 0, progress: bool | None = None,
                          cache: bool = True) -> GeneralizationCurve:
    """The robust generalisation gap over PGD training: the profile's PGD recipe, monitored every epoch.

    Trains the profile's architecture exactly as :func:`robust_model` does (``method="pgd"``,
    :data:`TRAINING_RECIPES`), with a :class:`RobustAccuracyMonitor` on ``n_monitor`` seeded
    training and test inputs; then evaluates the final model on the same inputs with the
    default ensemble of :func:`robustlab.attacks.robust_accuracy`. With ``cache=True`` the
    curve (the records and the final evaluation, not the model) is stored in the cache's
    ``curves`` folder, so a second call loads it without training.
    """
    prof = config.profile()
    dataset = prof.dataset if dataset is None else dataset
    meta = _data.info(dataset)
    eps = DEFAULT_EPS[meta.name] if eps is None else eps
    check_positive(eps, "eps")
    check_positive_int(n_monitor, "n_monitor")
    check_positive_int(steps, "steps")
    recipe = dict(TRAINING_RECIPES[prof.name]["pgd"])
    if prof.smoke:
        recipe.update(epochs=1, eps_ramp_epochs=0)
    train, test = _data.load(dataset)
    sub_train, sub_test = _data.subset(train, n_monitor, seed=seed), _data.subset(test, n_monitor, seed=seed)
    monitor = RobustAccuracyMonitor(sub_train, sub_test, eps=eps, steps=steps, seed=seed)
    settings = {"kind": "robust_generalization", "dataset": meta.name, "profile": prof.name, "smoke": prof.smoke,
                "eps": float(eps), "recipe": recipe, "monitor": repr(monitor), "seed": seed}
    path = _cache.entry("curves", settings) if cache else None
    if path is not None:
        blob = _cache.load(path)
        if blob is not None:
            return GeneralizationCurve(blob["records"], blob["final"], float(eps), steps)
    model = _models.build(None, dataset, seed=seed).to(_models.best_device())
    adversarial_training(model, train, method="pgd", eps=eps, seed=seed, callbacks=(monitor,), progress=progress,
                         desc=f"PGD training {model.__class__.__name__} on {dataset}, monitored", **recipe)
    model.eval()
    final = {f"{name}_ensemble": _attacks.robust_accuracy(model, part, eps=eps, progress=progress)
             for name, part in (("train", sub_train), ("test", sub_test))}
    curve = GeneralizationCurve({k: list(v) for k, v in monitor.records.items()}, final, float(eps), steps)
    if path is not None:
        _cache.store(path, {"records": curve.records, "final": curve.final})
    return curve


@dataclasses.dataclass
class TrainingSizeCurve:
    """Clean test accuracy of standard and PGD training against the number of training examples.

    ``clean[method]`` is a list over ``sizes`` of lists over ``seeds`` (``method`` in
    ``"standard"``, ``"pgd"``).
    """

    sizes: list
    seeds: list
    clean: dict
    eps: float

    def mean(self, method: str) -> list:
        check_choice(method, "method", tuple(self.clean))
        return [sum(row) / len(row) for row in self.clean[method]]

    def as_table(self) -> list:
        """One dict per size: ``n``, mean clean accuracy of each method and their difference."""
        std, pgd = self.mean("standard"), self.mean("pgd")
        return [{"n": n, "standard": s, "pgd": p, "pgd_minus_standard": p - s} for n, s, p in zip(self.sizes, std, pgd)]

    def plot(self, ax=None):
        """Mean clean accuracy (and each seed) against the training-set size, log x axis."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.6))
        for k, (method, label) in enumerate((("standard", "standard training"),
                                             ("pgd", f"PGD training, eps {self.eps:g}"))):
            ax.plot(self.sizes, self.mean(method), "o-", color=f"C{k}", label=label)
            for n, row in zip(self.sizes, self.clean[method]):
                ax.scatter([n] * len(row), row, s=10, color=f"C{k}", alpha=0.4)
        ax.set_xscale("log")
        ax.set_xlabel("training examples")
        ax.set_ylabel("clean test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        return ax


def accuracy_against_training_size(sizes=(50, 100, 200, 400), dataset: str | None = None, eps: float | None = None,
                                   *, seeds=(0, 1, 2), min_steps: int = 300, n_test: int | None = None,
                                   progress: bool | None = None, cache: bool = True) -> TrainingSizeCurve:
    """Does adversarial training help standard accuracy with little data? Measure it.

    For every size ``n`` and seed, a seeded subset of ``n`` training examples trains the
    profile's architecture twice from the same initialisation: standardly and with PGD at
    ``eps`` (the profile's PGD recipe: steps, learning rate, schedule, eps ramp). Small
    sets get more epochs, so every run takes at least ``min_steps`` optimizer steps
    (and at least the recipe's epochs). Both are scored on the same ``n_test`` test inputs
    (default: the profile's ``n_eval``). Each run is cached (``fit(cache=True)``). Under
    ``ROBUSTLAB_SMOKE`` every run is one epoch and only the first seed is used.
    """
    prof = config.profile()
    dataset = prof.dataset if dataset is None else dataset
    meta = _data.info(dataset)
    eps = DEFAULT_EPS[meta.name] if eps is None else eps
    check_positive(eps, "eps")
    sizes = [check_positive_int(n, "sizes") for n in sizes]
    seeds = [check_positive_int(s, "seeds", allow_zero=True) for s in seeds]
    if not sizes or not seeds:
        raise ValueError("sizes and seeds must not be empty")
    check_positive_int(min_steps, "min_steps")
    n_test = prof.n_eval if n_test is None else check_positive_int(n_test, "n_test")
    train, test = _data.load(dataset)
    if max(sizes) > train.x.shape[0]:
        raise ValueError(f"sizes must not exceed the {train.x.shape[0]} training examples, got {max(sizes)}")
    test_part = _data.subset(test, n_test, seed=0)
    if prof.smoke:
        seeds = seeds[:1]
    recipe = dict(TRAINING_RECIPES[prof.name]["pgd"])
    batch_size = recipe.pop("batch_size")
    clean = {"standard": [], "pgd": []}
    for n in sizes:
        rows = {"standard": [], "pgd": []}
        epochs = max(recipe["epochs"], math.ceil(min_steps / math.ceil(n / batch_size)))
        if prof.smoke:
            epochs = 1
        for seed in seeds:
            part = _data.subset(train, n, seed=seed)
            for method in ("standard", "pgd"):
                model = _models.build(None, dataset, seed=seed).to(_models.best_device())
                if method == "standard":
                    _train.fit(model, part, epochs=epochs, lr=recipe["lr"], batch_size=batch_size,
                               schedule=recipe["schedule"], seed=seed, progress=progress, cache=cache,
                               desc=f"standard training on {n}")
                else:
                    ramp = 0 if prof.smoke else max(1, round(recipe["eps_ramp_epochs"] * epochs / recipe["epochs"]))
                    adversarial_training(model, part, method="pgd", eps=eps, steps=recipe["steps"], epochs=epochs,
                                         lr=recipe["lr"], batch_size=batch_size, schedule=recipe["schedule"],
                                         eps_ramp_epochs=ramp, seed=seed, progress=progress, cache=cache,
                                         desc=f"PGD training on {n}")
                rows[method].append(_train.evaluate(model.eval(), test_part))
        for method in clean:
            clean[method].append(rows[method])
    return TrainingSizeCurve(sizes, seeds, clean, float(eps))
