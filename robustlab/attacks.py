r"""Adversarial attacks under one contract.

An attack is ``attack(model, x, y, *, eps, ...) -> x_adv``: batch-first, ``x`` in [0, 1],
``x_adv`` in [0, 1] and within ``eps`` of ``x`` in the attack's norm. It is untargeted by
default (raise the loss of the true label ``y``); passing ``targets`` makes it targeted
(lower the loss of the target labels). Inside every attack the model is in eval mode
(its mode is restored afterwards) and gradients are taken with respect to the input
only, so the model's parameter gradients are never touched; the black-box attack
(:func:`square`) takes no gradients at all.

The attacks and the unit of their budget ``eps``:

=====================  ==========================================================
:func:`fgsm`           Linf, pixel units (one signed-gradient step)
:func:`pgd`            Linf or L2, pixel units (projected gradient ascent)
:func:`cw_l2`          L2, pixel units; minimal-norm, ``eps`` optional
:func:`square`         Linf or L2, pixel units; score-based black box (outputs only)
:func:`sparse_l0`      number of pixels changed (a pixel = one location, all channels)
:func:`patch`          side of one square patch, in pixels
=====================  ==========================================================

:func:`robust_accuracy` evaluates any of them over a data set, and
:func:`gradient_masking_checklist` runs the sanity checks that tell a robust model from
one that only hides its gradients.

FGSM (Goodfellow, Shlens and Szegedy, 2015) takes one step of size ``eps`` along the sign
of the input gradient of the cross-entropy loss,

.. math::

    x' = \operatorname{clip}_{[0,1]}\big(x + \varepsilon\,\operatorname{sign}\nabla_x
    \mathcal{L}(f(x), y)\big)

and, targeted at a label :math:`t`, steps *down* the loss of :math:`t`:
:math:`x' = \operatorname{clip}_{[0,1]}(x - \varepsilon\,\operatorname{sign}\nabla_x
\mathcal{L}(f(x), t))`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from numbers import Integral

import torch
import torch.nn.functional as F

from . import config
from . import models as _models
from ._validate import (check_choice, check_images, check_labels, check_model, check_nonneg, check_positive,
                        check_positive_int, check_xy)

__all__ = [
    "fgsm", "pgd", "cw_l2", "square", "sparse_l0", "patch",
    "robust_accuracy", "gradient_masking_checklist", "MaskingCheck", "MaskingChecklist",
    "smallest_eps", "eval_mode", "input_gradient", "attack_objective", "LOSSES",
]

LOSSES = ("ce", "cw")


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Put ``model`` in eval mode for the ``with`` block and restore its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def attack_objective(logits: torch.Tensor, labels: torch.Tensor, loss: str = "ce", targeted: bool = False) -> torch.Tensor:
    r"""Per-sample quantity an attack *maximizes*, shape (B,).

    ``"ce"``: the cross-entropy :math:`\mathcal{L}(f(x), y)` (untargeted) or
    :math:`-\mathcal{L}(f(x), t)` (targeted). ``"cw"``: the Carlini--Wagner margin
    :math:`\max_{j \ne y} z_j - z_y` (untargeted) or :math:`z_t - \max_{j \ne t} z_j`
    (targeted); it is positive exactly when the attack has succeeded.
    """
    if loss == "ce":
        value = F.cross_entropy(logits, labels, reduction="none")
        return -value if targeted else value
    if loss == "cw":
        own = logits.gather(1, labels[:, None]).squeeze(1)
        others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(1)
        return own - others if targeted else others - own
    raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")


def input_gradient(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, loss: str = "ce",
                   targeted: bool = False) -> torch.Tensor:
    """Gradient of the summed :func:`attack_objective` with respect to the input ``x`` only.

    Uses :func:`torch.autograd.grad` on a detached copy of ``x``, so no parameter
    ``.grad`` is created or changed. With the defaults this is the gradient of the
    summed cross-entropy loss of ``labels``.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    return _objective_and_gradient(model, x, labels, loss, targeted)[2]


def _objective_and_gradient(model, x, labels, loss, targeted):
    """Logits, per-sample objective (both detached) and the input gradient of its sum at ``x``.

    The one forward and backward pass of every gradient attack step; parameter gradients
    are never created (``torch.autograd.grad`` on a detached copy of ``x``).
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        obj = attack_objective(logits, labels, loss, targeted)
        (grad,) = torch.autograd.grad(obj.sum(), x)
    return logits.detach(), obj.detach(), grad


def _labels_to_device(x, y, targets, device):
    """Check the labels against the batch ``x`` (already checked) and move all three to ``device``."""
    x = x.detach().to(device)
    check_labels(y, "y", batch_size=x.shape[0])
    y = y.to(device)
    if targets is not None:
        check_labels(targets, "targets", batch_size=x.shape[0])
        targets = targets.to(device)
    return x, y, targets


def _prepare_inputs(model, x, y, targets):
    """Check the model, the batch and the labels; move the batch to the model's device."""
    check_model(model)
    check_images(x, "x")
    return _labels_to_device(x, y, targets, _models.device_of(model))


def _prepare(model, x, y, targets, eps):
    check_model(model)
    check_images(x, "x")
    check_nonneg(eps, "eps")
    x, y, targets = _labels_to_device(x, y, targets, _models.device_of(model))
    return x, y, targets, _batch_eps(eps, x)


def _batch_eps(eps, x):
    """A per-sample ``eps`` tensor as a (B, 1, ..., 1) view on ``x``'s device; numbers pass through."""
    if isinstance(eps, torch.Tensor):
        if eps.dim() == 0:
            eps = eps.expand(x.shape[0])
        if eps.shape != (x.shape[0],):
            raise ValueError(f"eps must be a number or a tensor of shape ({x.shape[0]},), got shape {tuple(eps.shape)}")
        eps = eps.to(device=x.device, dtype=x.dtype).view((-1,) + (1,) * (x.dim() - 1))
    return eps


def _eps_flat(eps, x) -> torch.Tensor:
    """``eps`` (a number or the output of :func:`_batch_eps`) as a (B,) tensor on ``x``'s device."""
    if isinstance(eps, torch.Tensor):
        return eps.flatten()
    return torch.full((x.shape[0],), float(eps), device=x.device, dtype=x.dtype)


def _generator(seed, device):
    if seed is None:
        return None
    check_positive_int(seed, "seed", allow_zero=True)
    return torch.Generator(device=device).manual_seed(seed)


def _check_pixel_count(value, name: str) -> int:
    """A whole number of pixels >= 0 (a Python or NumPy integer, not a float or bool)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer number of pixels, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be an integer >= 0 (a number of pixels), got {value}")
    return int(value)


def _check_spatial(x: torch.Tensor, attack: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images of shape (B, C, H, W) for {attack}, got shape {tuple(x.shape)}")


def fgsm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps, targets: torch.Tensor | None = None) -> torch.Tensor:
    r"""Fast Gradient Sign Method, Linf: one signed-gradient step of size ``eps``.

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs in [0, 1] to logits.
    x : torch.Tensor
        Inputs (B, C, H, W) or (B, D) with values in [0, 1].
    y : torch.Tensor
        True labels, int64 (B,).
    eps : float or torch.Tensor
        Linf budget in pixel units (a number or one per sample, shape (B,)); ``eps >= 0``.
    targets : torch.Tensor, optional
        Target labels (B,) for a targeted attack.

    Returns
    -------
    torch.Tensor
        ``x_adv`` on the model's device, with ``||x_adv - x||_inf <= eps`` and values in [0, 1].

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv = fgsm(model, x, y, eps=0.1)
    >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6)
    True
    """
    x, y, targets, eps = _prepare(model, x, y, targets, eps)
    with eval_mode(model):
        if targets is None:
            step = input_gradient(model, x, y).sign()
        else:
            step = -input_gradient(model, x, targets).sign()
    return (x + eps * step).clamp(0.0, 1.0).detach()


def _random_start(x: torch.Tensor, eps: torch.Tensor, norm: str, gen) -> torch.Tensor:
    """A uniformly random point of the ``norm`` ball of radius ``eps`` around ``x``, in the box.

    The start is laid out in memory like ``x`` (``empty_like``), and so are all later
    iterates: the model then runs in the memory format the data came in.
    """
    if norm == "linf":
        delta = (torch.empty_like(x).uniform_(generator=gen) * 2 - 1) * eps
    else:  # uniform in the L2 ball: Gaussian direction, radius eps * U^(1/d)
        d = x[0].numel()
        direction = torch.empty_like(x).normal_(generator=gen)
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(eps)
        radius = torch.rand(eps.shape, generator=gen, device=x.device, dtype=x.dtype) ** (1.0 / d)
        delta = direction * radius * eps
    return torch.empty_like(x).copy_((x + delta).clamp_(0.0, 1.0))


def _success(logits: torch.Tensor, y: torch.Tensor, targets) -> torch.Tensor:
    pred = logits.argmax(1)
    return pred == targets if targets is not None else pred != y


class _BestIterate:
    """Per sample, the best input seen so far: a successful one if any (misclassified, or
    classified as the target), and among equals the one with the highest objective."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, targets):
        self.x = x.clone()
        self.obj = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
        self.succ = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        self.y, self.targets = y, targets
        self._shape = (-1,) + (1,) * (x.dim() - 1)

    def update(self, candidate: torch.Tensor, logits: torch.Tensor, obj: torch.Tensor) -> None:
        succ = _success(logits, self.y, self.targets)
        better = (succ & ~self.succ) | ((succ == self.succ) & (obj > self.obj))
        self.x = torch.where(better.view(self._shape), candidate, self.x)
        self.obj = torch.where(better, obj, self.obj)
        self.succ |= succ

    def update_subset(self, idx: torch.Tensor, candidate: torch.Tensor, logits: torch.Tensor, obj: torch.Tensor) -> None:
        """:meth:`update` for the samples ``idx`` only (``candidate``, ``logits``, ``obj`` are theirs)."""
        succ = _success(logits, self.y[idx], self.targets[idx] if self.targets is not None else None)
        best_succ, best_obj = self.succ[idx], self.obj[idx]
        better = (succ & ~best_succ) | ((succ == best_succ) & (obj > best_obj))
        self.x[idx] = torch.where(better.view(self._shape), candidate, self.x[idx])
        self.obj[idx] = torch.where(better, obj, best_obj)
        self.succ[idx] = best_succ | succ


def pgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    targets: torch.Tensor | None = None,
    loss: str = "ce",
    seed: int | None = None,
) -> torch.Tensor:
    r"""Projected gradient descent (Madry et al., 2018) in the Linf or L2 ball.

    Each of ``steps`` iterations ascends the attack objective and projects back:

    .. math::

        x^{k+1} = \Pi_{[0,1]^d}\Big(\Pi_{B_p(x, \varepsilon)}\big(x^k + \alpha\, s(\nabla_x
        J(x^k))\big)\Big), \qquad s(g) = \operatorname{sign}(g) \text{ (Linf)},\ \
        g / \|g\|_2 \text{ (L2)},

    where :math:`J` is the cross-entropy of the true label (or minus that of the target,
    or the CW margin with ``loss="cw"``, see :func:`attack_objective`). The projection is
    always around the *original* ``x``. ``random_start`` draws :math:`x^0` uniformly from
    the ball; with ``restarts > 1`` the whole attack is repeated from new random starts.
    Per sample, the attack returns the best iterate it saw over all steps and restarts: a
    successful one (misclassified, or classified as the target) if any, otherwise the one
    with the highest objective.

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs in [0, 1] to logits.
    x, y : torch.Tensor
        Inputs (B, ...) in [0, 1] and their true labels (B,).
    eps : float or torch.Tensor
        Radius of the ball in pixel units (a number or one per sample).
    norm : {"linf", "l2"}
        The threat model's norm.
    steps : int
        Number of gradient steps (each costs one forward and one backward pass).
    step_size : float, optional
        :math:`\alpha`; defaults to ``2.5 * eps / steps``.
    random_start : bool
        Start from a uniform random point of the ball instead of ``x``.
    restarts : int
        Independent runs (random starts); the best result per sample is kept.
    targets : torch.Tensor, optional
        Target labels (B,) for a targeted attack.
    loss : {"ce", "cw"}
        Cross-entropy or Carlini--Wagner margin objective.
    seed : int, optional
        Seed of the random starts.

    Returns
    -------
    torch.Tensor
        ``x_adv`` in [0, 1] with ``||x_adv - x||_p <= eps``, on the model's device.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv = pgd(model, x, y, eps=0.1, steps=5, seed=0)
    >>> bool(rl.norms.lp_distance(x_adv, x, "linf").max() <= 0.1 + 1e-6)
    True
    """
    x, y, targets, eps_b = _prepare(model, x, y, targets, eps)
    check_choice(norm, "norm", ("linf", "l2"))
    check_positive_int(steps, "steps")
    check_positive_int(restarts, "restarts")
    check_choice(loss, "loss", LOSSES)
    if not isinstance(random_start, bool):
        raise TypeError(f"random_start must be True or False, got {type(random_start).__name__}")
    if restarts > 1 and not random_start:
        raise ValueError("restarts > 1 needs random_start=True (every restart would repeat the same run)")
    shape = (-1,) + (1,) * (x.dim() - 1)
    eps_t = _eps_flat(eps_b, x).view(shape)
    if step_size is None:
        step_t = 2.5 * eps_t / steps
    else:
        check_positive(step_size, "step_size")
        step_t = torch.full_like(eps_t, float(step_size))
    labels = targets if targets is not None else y
    targeted = targets is not None
    gen = _generator(seed, x.device)
    if norm == "linf":
        # the Linf ball and the box are both boxes: projecting onto one and then clamping
        # to the other is one clamp to their intersection
        low, high = (x - eps_t).clamp_(min=0.0), (x + eps_t).clamp_(max=1.0)

    best = _BestIterate(x, y, targets)
    with eval_mode(model):
        for _ in range(restarts):
            x_adv = _random_start(x, eps_t, norm, gen) if random_start else x.clone()
            for _ in range(steps):
                x_adv = x_adv.detach()
                logits, obj, grad = _objective_and_gradient(model, x_adv, labels, loss, targeted)
                best.update(x_adv, logits, obj)
                if norm == "linf":
                    x_adv = torch.addcmul(x_adv, step_t, grad.sign_()).clamp_(low, high)
                else:  # in place on x_adv, which keeps the input's memory layout
                    g_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
                    delta = x_adv.addcmul_(grad, (step_t.flatten() / g_norm).view(shape)).sub_(x)
                    factor = (eps_t.flatten() / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp_(max=1.0)
                    x_adv = delta.mul_(factor.view(shape)).add_(x).clamp_(0.0, 1.0)
            # the last iterate matters only where no iterate has succeeded yet
            todo = torch.nonzero(~best.succ).flatten()
            if len(todo):
                with torch.no_grad():
                    logits = model(x_adv[todo])
                    best.update_subset(todo, x_adv[todo], logits, attack_objective(logits, labels[todo], loss, targeted))
    return best.x.detach()


def cw_l2(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    targets: torch.Tensor | None = None,
    kappa: float = 0.0,
    c_init: float = 1.0,
    binary_steps: int = 6,
    steps: int = 100,
    lr: float = 0.2,
    lr_decay: bool = True,
    abort_early: bool = True,
    eps=None,
) -> torch.Tensor:
    r"""Carlini--Wagner L2 attack (Carlini and Wagner, 2017): the smallest L2 perturbation.

    The box constraint disappears by a change of variables, :math:`x' = \tfrac12(\tanh w + 1)`,
    and for a constant :math:`c > 0` Adam minimises over :math:`w`

    .. math::

        \|x' - x\|_2^2 + c \cdot \max\big(Z_y(x') - \max_{j \ne y} Z_j(x'),\; -\kappa\big)

    (untargeted; targeted at :math:`t` the second term is
    :math:`c \cdot \max(\max_{j \ne t} Z_j(x') - Z_t(x'), -\kappa)`), where :math:`Z` are
    the logits. :math:`c` trades distance against success; a binary search *per sample*
    finds the smallest :math:`c` that still succeeds: after each of ``binary_steps`` runs
    of ``steps`` Adam steps, a sample that succeeded lowers its upper bound on :math:`c`, a
    sample that failed raises its lower bound, and the next :math:`c` is the midpoint (or
    ten times the old one while no upper bound is known). Every run restarts from
    :math:`x' = x` with a fresh Adam state, as in the paper's reference code. An iterate
    counts as a success when the prediction changes (or reaches the target) with margin
    at least :math:`\kappa`.

    The defaults (``c_init=1``, 6 binary steps of 100 Adam steps starting at ``lr=0.2``
    and decaying to 0 along a cosine) are sized for the 8x8 digits on a CPU (about ten
    seconds for the 360 test digits on one core). The paper's reference runs are longer: ``c_init=1e-3``, 9 binary
    steps of up to 10,000 steps at a constant ``lr=0.01``
    (``cw_l2(..., c_init=1e-3, binary_steps=9, steps=10_000, lr=0.01, lr_decay=False)``).
    Why not 100 steps at 0.01: Adam moves each :math:`w_i` by about ``lr`` per step, and a
    pixel at 0 or 1 starts at :math:`|w_i| \approx 7.3`, so 100 small steps cannot change
    the many black or white pixels of a digit; a large rate that decays keeps the reach and
    still ends with fine steps at the decision boundary.

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs in [0, 1] to logits.
    x, y : torch.Tensor
        Inputs (B, ...) in [0, 1] and their true labels (B,).
    targets : torch.Tensor, optional
        Target labels (B,) for a targeted attack.
    kappa : float
        Confidence :math:`\kappa \ge 0`: the margin by which the adversarial class must win.
    c_init : float
        Initial :math:`c` of every sample (> 0).
    binary_steps : int
        Rounds of the binary search over :math:`c`.
    steps : int
        Adam steps per round.
    lr : float
        Adam's learning rate (in tanh space) at the start of every round.
    lr_decay : bool
        Decay the rate to 0 along a cosine, :math:`\eta_t = \tfrac{\eta}{2}(1 + \cos(\pi
        (t - 1) / \text{steps}))`, within every round; ``False`` keeps it constant (the paper).
    abort_early : bool
        End a round when the total loss has not fallen by 0.01 % over ``steps // 10`` steps.
    eps : float or torch.Tensor, optional
        An L2 budget (pixel units): a success farther than ``eps`` from ``x`` counts as a
        failure, so ``x_adv`` stays within ``eps`` as the attack contract asks.

    Returns
    -------
    torch.Tensor
        Per sample, the successful ``x'`` of smallest L2 distance found over all rounds, or
        ``x`` itself where none was found (or none within ``eps``); in [0, 1], on the
        model's device.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv = cw_l2(model, x, y, binary_steps=2, steps=20, eps=1.0)
    >>> bool(rl.norms.lp_distance(x_adv, x, "l2").max() <= 1.0)
    True
    """
    x, y, targets = _prepare_inputs(model, x, y, targets)
    check_nonneg(kappa, "kappa", allow_tensor=False)
    check_positive(c_init, "c_init")
    check_positive_int(binary_steps, "binary_steps")
    check_positive_int(steps, "steps")
    check_positive(lr, "lr")
    if not isinstance(lr_decay, bool):
        raise TypeError(f"lr_decay must be True or False, got {type(lr_decay).__name__}")
    if not isinstance(abort_early, bool):
        raise TypeError(f"abort_early must be True or False, got {type(abort_early).__name__}")
    if eps is not None:
        check_nonneg(eps, "eps")
        eps_flat = _eps_flat(_batch_eps(eps, x), x)
    n, shape = x.shape[0], (-1,) + (1,) * (x.dim() - 1)
    labels = targets if targets is not None else y
    targeted = targets is not None
    beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
    check_every = max(steps // 10, 1)

    # x = (tanh(w0) + 1) / 2; the factor keeps w0 finite at x = 0 and x = 1
    w0 = torch.atanh((2 * x - 1) * (1 - 1e-6))
    c = torch.full((n,), float(c_init), device=x.device, dtype=x.dtype)
    lower = torch.zeros_like(c)
    upper = torch.full_like(c, math.inf)
    best_l2 = torch.full_like(c, math.inf)
    best_x = x.clone()
    with eval_mode(model):
        for _ in range(binary_steps):
            dw = torch.zeros_like(x)
            m, v = torch.zeros_like(x), torch.zeros_like(x)
            succeeded = torch.zeros(n, dtype=torch.bool, device=x.device)
            previous = math.inf
            for t in range(1, steps + 1):
                dw.requires_grad_(True)
                with torch.enable_grad():
                    x_new = (torch.tanh(w0 + dw) + 1) / 2
                    logits = model(x_new)
                    obj = attack_objective(logits, labels, "cw", targeted)  # > 0 exactly on success
                    dist2 = (x_new - x).flatten(1).pow(2).sum(1)
                    loss = dist2 + c * torch.clamp(-obj, min=-float(kappa))
                    (grad,) = torch.autograd.grad(loss.sum(), dw)
                with torch.no_grad():
                    dw = dw.detach()
                    obj, l2 = obj.detach(), dist2.detach().sqrt()
                    succ = _success(logits.detach(), y, targets) & (obj >= kappa)
                    improved = succ & (l2 < best_l2)
                    best_l2 = torch.where(improved, l2, best_l2)
                    best_x = torch.where(improved.view(shape), x_new.detach(), best_x)
                    succeeded |= succ
                    # Adam on w (elementwise, so every sample is optimised independently)
                    m.mul_(beta1).add_(grad, alpha=1 - beta1)
                    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
                    rate = lr * 0.5 * (1 + math.cos(math.pi * (t - 1) / steps)) if lr_decay else lr
                    dw = dw - rate * m_hat / (v_hat.sqrt() + adam_eps)
                if abort_early and t % check_every == 0:
                    total = float(loss.detach().sum())
                    if total > previous * 0.9999:
                        break
                    previous = total
            # binary search on c, per sample
            upper = torch.where(succeeded, torch.minimum(upper, c), upper)
            lower = torch.where(succeeded, lower, torch.maximum(lower, c))
            c = torch.where(torch.isfinite(upper), (lower + upper) / 2, c * 10)
    if eps is not None:
        too_far = (best_x - x).flatten(1).norm(dim=1) > eps_flat
        best_x = torch.where(too_far.view(shape), x, best_x)
    return best_x.detach()


def _p_schedule(p_init: float, i: int, queries: int) -> float:
    """Square Attack's piecewise-constant schedule of the fraction ``p`` of pixels changed,
    halved at fixed fractions of the query budget (the breakpoints of a 10,000-query run)."""
    it = int(i / queries * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
                       (8000, 256), (10000, 512)):
        if it <= bound:
            return p_init / div
    return p_init


def _square_mask(rows: torch.Tensor, cols: torch.Tensor, side: int, h: int, w: int) -> torch.Tensor:
    """Boolean masks (n, 1, h, w): per sample the ``side`` x ``side`` square at (rows[i], cols[i])."""
    r = torch.arange(h, device=rows.device)
    c = torch.arange(w, device=rows.device)
    in_r = (r[None, :] >= rows[:, None]) & (r[None, :] < rows[:, None] + side)
    in_c = (c[None, :] >= cols[:, None]) & (c[None, :] < cols[:, None] + side)
    return (in_r[:, :, None] & in_c[:, None, :])[:, None]


def _random_corners(n: int, side: int, h: int, w: int, gen, device):
    rows = torch.randint(0, h - side + 1, (n,), generator=gen, device=device)
    cols = torch.randint(0, w - side + 1, (n,), generator=gen, device=device)
    return rows, cols


def _random_signs(shape, gen, device, dtype) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=gen, device=device).to(dtype).mul_(2).sub_(1)


def _pseudo_gaussian(rows: int, cols: int, device, dtype) -> torch.Tensor:
    """Square Attack's bump: concentric rectangles, weight sum_{k >= d} 1/(k+1)^2 at ring d, unit L2 norm."""
    out = torch.zeros(rows, cols, device=device, dtype=dtype)
    if rows == 0 or cols == 0:
        return out
    rings = max(rows // 2 + 1, cols // 2 + 1)
    ri = (torch.arange(rows, device=device) - rows // 2).abs()
    ci = (torch.arange(cols, device=device) - cols // 2).abs()
    d = torch.maximum(ri[:, None], ci[None, :])
    tail = torch.tensor([sum(1.0 / (k + 1) ** 2 for k in range(j, rings)) for j in range(rings)], device=device, dtype=dtype)
    out = tail[d]
    return out / out.norm()


def _meta_pseudo_gaussian(side: int, device, dtype) -> torch.Tensor:
    """Two bumps of opposite sign, stacked (top half +, bottom half -), unit L2 norm."""
    top = _pseudo_gaussian(side // 2, side, device, dtype)
    bottom = -_pseudo_gaussian(side - side // 2, side, device, dtype)
    out = torch.cat([top, bottom])
    return out / out.norm()


def _place(pattern: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Put per-sample ``pattern`` (n, s, s) at corners (rows, cols) of zero (n, 1, h, w) canvases."""
    n, s = pattern.shape[0], pattern.shape[1]
    ri = torch.arange(h, device=rows.device)[None, :] - rows[:, None]
    ci = torch.arange(w, device=rows.device)[None, :] - cols[:, None]
    inside = ((ri >= 0) & (ri < s))[:, :, None] & ((ci >= 0) & (ci < s))[:, None, :]
    b = torch.arange(n, device=rows.device)[:, None, None]
    vals = pattern[b, ri.clamp(0, s - 1)[:, :, None], ci.clamp(0, s - 1)[:, None, :]]
    return (vals * inside)[:, None]


def _square_linf_init(x, eps, gen):
    """Vertical stripes: every column of every channel moves by +eps or -eps."""
    n, c, _, w = x.shape
    return (x + eps * _random_signs((n, c, 1, w), gen, x.device, x.dtype)).clamp(0.0, 1.0)


def _square_linf_candidate(x, x_best, eps, side, gen):
    """Move one random square per sample to a vertex of the eps-box: x + (+-eps per channel)."""
    n, c, h, w = x.shape
    rows, cols = _random_corners(n, side, h, w, gen, x.device)
    mask = _square_mask(rows, cols, side, h, w)
    signs = _random_signs((n, c, 1, 1), gen, x.device, x.dtype)
    cand = torch.where(mask, (x + eps * signs).clamp(0.0, 1.0), x_best)
    # where the square would change nothing (at most one sign pattern can do that, for
    # eps > 0), draw uniformly among the other patterns: flip a random nonempty set of channels
    same = (cand == x_best).flatten(1).all(1)
    flips = torch.randint(1, 2 ** c, (n,), generator=gen, device=x.device)
    flip = (flips[:, None] >> torch.arange(c, device=x.device)) & 1
    signs = torch.where(same[:, None, None, None], signs * (1 - 2 * flip.to(x.dtype)).view(n, c, 1, 1), signs)
    return torch.where(mask, (x + eps * signs).clamp(0.0, 1.0), x_best)


def _square_l2_init(x, eps, gen):
    """A grid of meta-pseudo-Gaussian bumps with random signs, rescaled to L2 norm eps."""
    n, c, h, w = x.shape
    side = max(min(h, w) // 5, 1)
    bump = _meta_pseudo_gaussian(side, x.device, x.dtype)
    delta = torch.zeros_like(x)
    for r in range(0, h - side + 1, side):
        for col in range(0, w - side + 1, side):
            signs = _random_signs((n, c, 1, 1), gen, x.device, x.dtype)
            delta[:, :, r:r + side, col:col + side] += bump * signs
    delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1))
    return (x + delta).clamp(0.0, 1.0)


def _square_l2_candidate(x, x_best, eps, side, gen):
    """Square Attack's L2 proposal: a new bump in window 1, the mass of window 2 moved into
    it, the whole perturbation rescaled to norm eps."""
    n, c, h, w = x.shape
    delta = x_best - x
    r1, c1 = _random_corners(n, side, h, w, gen, x.device)
    r2, c2 = _random_corners(n, side, h, w, gen, x.device)
    m1 = _square_mask(r1, c1, side, h, w).to(x.dtype)
    m2 = _square_mask(r2, c2, side, h, w).to(x.dtype)
    m12 = torch.maximum(m1, m2)
    norm_w1 = (delta * m1).pow(2).sum((2, 3), keepdim=True).sqrt()  # per channel
    norm_img = delta.pow(2).sum((1, 2, 3), keepdim=True).sqrt()
    norm_w12 = (delta * m12).pow(2).sum((2, 3), keepdim=True).sqrt()
    bump = _meta_pseudo_gaussian(side, x.device, x.dtype)
    flip = torch.rand(n, generator=gen, device=x.device) < 0.5
    bumps = torch.where(flip[:, None, None], bump.t()[None], bump[None])
    new = _place(bumps, r1, c1, h, w) * _random_signs((n, c, 1, 1), gen, x.device, x.dtype)
    new = new + delta * m1 / (norm_w1 + 1e-10)
    budget = ((eps.view(-1, 1, 1, 1) ** 2 - norm_img ** 2).clamp_min(0.0) / c + norm_w12 ** 2).sqrt()
    new = new / new.pow(2).sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12) * budget
    delta = delta * (1 - m12) + new  # window 2 emptied, window 1 replaced
    delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, 1, 1, 1)
    return (x + delta).clamp(0.0, 1.0)


def square(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps,
    norm: str = "linf",
    queries: int = 1000,
    p_init: float | None = None,
    targets: torch.Tensor | None = None,
    seed: int | None = None,
    return_queries: bool = False,
):
    r"""Square Attack (Andriushchenko, Croce, Flammarion and Hein, 2020): score-based black box.

    Uses only the model's outputs, never its gradients (everything runs under
    :func:`torch.no_grad`). It is a random search that minimises the margin loss

    .. math::

        L(x') = Z_y(x') - \max_{j \ne y} Z_j(x')
        \qquad \big(\text{targeted: } \max_{j \ne t} Z_j(x') - Z_t(x')\big),

    which is negative exactly when the attack has succeeded. Linf: start from vertical
    stripes, :math:`x^0 = \operatorname{clip}_{[0,1]}(x + \varepsilon\,\sigma)` with one
    random sign :math:`\sigma` per column and channel; every iteration proposes, per
    sample, to move one random square of side
    :math:`s = \operatorname{round}(\sqrt{p\,H W})` (clipped to [1, min(H, W) - 1]) to
    :math:`x \pm \varepsilon` (one random sign per channel). L2: start from a grid of
    random-signed "meta pseudo-Gaussian" bumps scaled to norm :math:`\varepsilon`; every
    iteration proposes a new bump in one random window (odd side :math:`s \ge 3`) and moves
    the perturbation's mass out of a second window into it, then rescales the whole
    perturbation to norm :math:`\varepsilon`. A proposal is accepted, per sample, only if it
    lowers the loss. The fraction :math:`p` follows the paper's schedule: ``p_init``, halved
    at fixed fractions of the query budget (10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000
    per 10,000). Samples already fooled are not queried again; every iteration is one
    forward pass over the batch of the unfinished samples.

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs in [0, 1] to logits (only its outputs are used).
    x, y : torch.Tensor
        Images (B, C, H, W) in [0, 1] and their true labels (B,).
    eps : float or torch.Tensor
        Radius in pixel units (a number or one per sample).
    norm : {"linf", "l2"}
        The threat model's norm.
    queries : int
        Query budget per sample, the initial query included.
    p_init : float, optional
        Initial fraction of pixels a square covers, in (0, 1]. Defaults to 0.3 (Linf) and
        0.1 (L2). The reference code's Linf default, 0.05, is set for 224x224 ImageNet
        images, where it means 50x50 squares; on 8x8 digits it would start from 2x2 squares,
        0.3 starts from 4x4 ones.
    targets : torch.Tensor, optional
        Target labels (B,) for a targeted attack.
    seed : int, optional
        Seed of the random search.
    return_queries : bool
        Also return the number of queries each sample used.

    Returns
    -------
    torch.Tensor or (torch.Tensor, torch.Tensor)
        ``x_adv`` in [0, 1] with ``||x_adv - x||_p <= eps`` on the model's device, and with
        ``return_queries=True`` the queries used per sample (int64, (B,)).

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("cnn", "digits", width=4)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv, used = square(model, x, y, eps=0.1, queries=50, seed=0, return_queries=True)
    >>> bool(rl.norms.lp_distance(x_adv, x, "linf").max() <= 0.1 + 1e-6), int(used.max()) <= 50
    (True, True)
    """
    x, y, targets, eps_b = _prepare(model, x, y, targets, eps)
    _check_spatial(x, "square")
    check_choice(norm, "norm", ("linf", "l2"))
    check_positive_int(queries, "queries")
    if p_init is None:
        p_init = 0.3 if norm == "linf" else 0.1
    check_positive(p_init, "p_init")
    if p_init > 1:
        raise ValueError(f"p_init must be a fraction of the pixels in (0, 1], got {p_init}")
    if not isinstance(return_queries, bool):
        raise TypeError(f"return_queries must be True or False, got {type(return_queries).__name__}")
    n, _, h, w = x.shape
    eps_t = _eps_flat(eps_b, x)
    labels = targets if targets is not None else y
    targeted = targets is not None
    gen = _generator(seed, x.device)
    used = torch.zeros(n, dtype=torch.int64, device=x.device)

    def margin(logits, idx):
        return -attack_objective(logits, labels[idx], "cw", targeted)

    with torch.no_grad(), eval_mode(model):
        everyone = torch.arange(n, device=x.device)
        init = _square_linf_init if norm == "linf" else _square_l2_init
        x_best = init(x, eps_t.view(-1, 1, 1, 1), gen)
        logits = model(x_best)
        used += 1
        loss = margin(logits, everyone)
        done = _success(logits, y, targets)
        for i in range(queries - 1):
            todo = torch.nonzero(~done).flatten()
            if len(todo) == 0:
                break
            p = _p_schedule(p_init, i, queries)
            if norm == "linf":
                side = min(max(int(round(math.sqrt(p * h * w))), 1), max(min(h, w) - 1, 1))
                cand = _square_linf_candidate(x[todo], x_best[todo], eps_t[todo].view(-1, 1, 1, 1), side, gen)
            else:
                side = max(int(round(math.sqrt(p * h * w))), 3)
                side = min(side + 1 - side % 2, min(h, w))
                cand = _square_l2_candidate(x[todo], x_best[todo], eps_t[todo], side, gen)
            logits = model(cand)
            used[todo] += 1
            new_loss = margin(logits, todo)
            better = new_loss < loss[todo]
            loss[todo] = torch.where(better, new_loss, loss[todo])
            x_best[todo] = torch.where(better.view(-1, 1, 1, 1), cand, x_best[todo])
            t = targets[todo] if targets is not None else None
            done[todo] = better & _success(logits, y[todo], t)
    x_best = x_best.detach()
    return (x_best, used) if return_queries else x_best


def sparse_l0(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: int,
    targets: torch.Tensor | None = None,
    pixels_per_step: int = 1,
    loss: str = "cw",
) -> torch.Tensor:
    r"""Greedy sparse (L0) attack: change at most ``eps`` pixels, each to 0 or 1.

    The unit of ``eps`` is the *pixel*, a spatial location with all its channels: for
    images (B, C, H, W) the budget counts the locations :math:`(h, w)` where any channel
    changed, :math:`\|x' - x\|_0 = \#\{(h, w) : x'_{:, h, w} \ne x_{:, h, w}\}`; for flat
    inputs (B, D) every feature is a pixel.

    Every iteration takes the gradient :math:`g = \nabla_x J(x')` of the attack objective
    :math:`J` (by default the Carlini--Wagner margin, see :func:`attack_objective`, whose
    gradient does not vanish when the softmax saturates) and scores every pixel not
    changed yet by the first-order gain of its best corner of the box,

    .. math::

        \text{gain}(h, w) = \sum_c \max\big(g_{c,h,w}\,(1 - x'_{c,h,w}),\; -g_{c,h,w}\, x'_{c,h,w}\big),

    i.e. each channel goes to 1 where its gradient is positive and to 0 otherwise. The
    ``pixels_per_step`` pixels of largest gain are set, per sample; a sample stops as soon
    as it is misclassified (or reaches its target) or has used its ``eps`` pixels. This is
    the greedy saliency-map idea of JSMA (Papernot et al., 2016) with a margin objective;
    on a linear two-class model the first-order gain is exact and the greedy choice is
    optimal.

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs in [0, 1] to logits.
    x, y : torch.Tensor
        Inputs (B, C, H, W) or (B, D) in [0, 1] and their true labels (B,).
    eps : int
        The largest number of pixels changed per input (``>= 0``).
    targets : torch.Tensor, optional
        Target labels (B,) for a targeted attack.
    pixels_per_step : int
        Pixels set per gradient evaluation (more is faster, 1 is the most careful).
    loss : {"cw", "ce"}
        The objective whose gradient scores the pixels.

    Returns
    -------
    torch.Tensor
        ``x_adv`` in [0, 1] differing from ``x`` in at most ``eps`` pixels, on the model's
        device.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv = sparse_l0(model, x, y, eps=3)
    >>> int(((x_adv - x) != 0).flatten(1).sum(1).max()) <= 3
    True
    """
    x, y, targets = _prepare_inputs(model, x, y, targets)
    eps = _check_pixel_count(eps, "eps")
    check_positive_int(pixels_per_step, "pixels_per_step")
    check_choice(loss, "loss", LOSSES)
    if x.dim() not in (2, 4):
        raise ValueError(f"x must have shape (B, C, H, W) or (B, D) for sparse_l0, got shape {tuple(x.shape)}")
    n = x.shape[0]
    channels = x.shape[1] if x.dim() == 4 else 1
    pixels = x[0].numel() // channels
    budget = min(eps, pixels)
    labels = targets if targets is not None else y
    targeted = targets is not None
    x_adv = x.clone()
    changed = torch.zeros(n, pixels, dtype=torch.bool, device=x.device)
    n_changed = torch.zeros(n, dtype=torch.int64, device=x.device)
    if budget == 0:
        return x_adv
    rank = torch.arange(min(pixels_per_step, budget), device=x.device)
    with eval_mode(model):
        while True:
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                logits = model(x_adv)
                (grad,) = torch.autograd.grad(attack_objective(logits, labels, loss, targeted).sum(), x_adv)
            x_adv = x_adv.detach()
            active = ~_success(logits.detach(), y, targets) & (n_changed < budget)
            if not bool(active.any()):
                break
            g = grad.reshape(n, channels, pixels)
            xa = x_adv.reshape(n, channels, pixels)
            corner = (g > 0).to(x.dtype)  # the better end of [0, 1] per channel, to first order
            gain = (g * (corner - xa)).sum(1).masked_fill(changed, -math.inf)
            top = gain.topk(len(rank), dim=1).indices  # (n, k)
            # per sample: only while budget is left, and only active samples
            allowed = (rank[None, :] < (budget - n_changed)[:, None]) & active[:, None]
            pick = torch.zeros_like(changed).scatter_(1, top, allowed)
            xa = torch.where(pick[:, None, :], corner, xa)
            x_adv = xa.reshape(x.shape)
            changed |= pick
            n_changed += pick.sum(1)
    return x_adv.detach()


def patch(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: int,
    steps: int = 50,
    step_size: float = 0.1,
    locations="random",
    tries: int = 4,
    targets: torch.Tensor | None = None,
    loss: str = "ce",
    seed: int | None = None,
) -> torch.Tensor:
    r"""Adversarial patch: an ``eps`` x ``eps`` square of free pixel values, per image.

    The unit of ``eps`` is the side of the square in pixels; the patch covers all
    channels. Inside the square at :math:`(r, c)` (mask :math:`M`) the values :math:`P`
    are free in [0, 1]; outside, the image is untouched:
    :math:`x' = (1 - M) \odot x + M \odot P`. Starting from uniform random values,
    ``steps`` signed-gradient ascent steps (the Linf PGD step of the patch values, in the
    spirit of Brown et al., 2017, but optimised per image)

    .. math::

        P \leftarrow \operatorname{clip}_{[0,1]}\big(P + \alpha\,\operatorname{sign}(M \odot
        \nabla_{x'} J(x'))\big)

    raise the objective :math:`J` (see :func:`attack_objective`). ``locations`` is either
    a fixed ``(row, col)`` for the top-left corner, shared by all images, or ``"random"``:
    ``tries`` runs, each at a new random corner per image. Per sample the best iterate over
    all steps and tries is kept (a successful one first, then the highest objective), so
    ``x_adv`` differs from ``x`` inside one square only.

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs in [0, 1] to logits.
    x, y : torch.Tensor
        Images (B, C, H, W) in [0, 1] and their true labels (B,).
    eps : int
        Side of the square patch in pixels, ``0 <= eps <= min(H, W)``.
    steps : int
        Signed-gradient steps per try.
    step_size : float
        :math:`\alpha`, in pixel units.
    locations : (int, int) or "random"
        The patch's top-left corner, or random corners per image and try.
    tries : int
        Random locations tried per image (with ``locations="random"``).
    targets : torch.Tensor, optional
        Target labels (B,) for a targeted attack.
    loss : {"ce", "cw"}
        Cross-entropy or Carlini--Wagner margin objective.
    seed : int, optional
        Seed of the random locations and initial patch values.

    Returns
    -------
    torch.Tensor
        ``x_adv`` in [0, 1] on the model's device, equal to ``x`` outside one ``eps`` x
        ``eps`` square per image.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("cnn", "digits", width=4)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv = patch(model, x, y, eps=3, locations=(0, 0), steps=5, seed=0)
    >>> bool((x_adv != x)[:, :, 3:, :].any() or (x_adv != x)[:, :, :, 3:].any())
    False
    """
    x, y, targets = _prepare_inputs(model, x, y, targets)
    _check_spatial(x, "patch")
    n, _, h, w = x.shape
    eps = _check_pixel_count(eps, "eps")
    if eps > min(h, w):
        raise ValueError(f"eps (the patch side) must be at most min(H, W) = {min(h, w)}, got {eps}")
    check_positive_int(steps, "steps")
    check_positive(step_size, "step_size")
    check_positive_int(tries, "tries")
    check_choice(loss, "loss", LOSSES)
    if isinstance(locations, str):
        check_choice(locations, "locations", ("random",))
    else:
        ok = (isinstance(locations, (tuple, list)) and len(locations) == 2
              and all(isinstance(v, Integral) and not isinstance(v, bool) for v in locations))
        if not ok:
            raise TypeError(f"locations must be 'random' or a (row, col) pair of integers, got {locations!r}")
        if not (0 <= locations[0] <= h - eps and 0 <= locations[1] <= w - eps):
            raise ValueError(f"locations {tuple(locations)} puts the {eps}x{eps} patch outside the {h}x{w} image "
                             f"(row must be in [0, {h - eps}], col in [0, {w - eps}])")
    if eps == 0:
        return x.clone()
    labels = targets if targets is not None else y
    targeted = targets is not None
    gen = _generator(seed, x.device)
    best = _BestIterate(x, y, targets)
    with eval_mode(model):
        for _ in range(tries if locations == "random" else 1):
            if locations == "random":
                rows, cols = _random_corners(n, eps, h, w, gen, x.device)
            else:
                rows = torch.full((n,), int(locations[0]), device=x.device)
                cols = torch.full((n,), int(locations[1]), device=x.device)
            mask = _square_mask(rows, cols, eps, h, w)
            x_adv = torch.where(mask, torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype), x)
            for _ in range(steps):
                x_adv = x_adv.detach()
                logits, obj, grad = _objective_and_gradient(model, x_adv, labels, loss, targeted)
                best.update(x_adv, logits, obj)
                x_adv = torch.where(mask, (x_adv + step_size * grad.sign()).clamp_(0.0, 1.0), x)
            with torch.no_grad():
                logits = model(x_adv)
                best.update(x_adv, logits, attack_objective(logits, labels, loss, targeted))
    return best.x.detach()


def robust_accuracy(model: torch.nn.Module, data, attack, *, batch_size: int = 256, progress: bool | None = None,
                    desc: str | None = None, **attack_kwargs) -> float:
    r"""Robust accuracy: the fraction of a data set classified correctly both clean and attacked.

    .. math::

        \text{robust accuracy} = \frac{1}{N} \sum_{i=1}^N \mathbb{1}\big[f(x_i) = y_i
        \ \text{and}\ f(x_i') = y_i\big], \qquad x_i' = \texttt{attack}(f, x_i, y_i, \ldots)

    The data go through in batches of ``batch_size`` on the model's device, in eval mode,
    with a progress bar. Only the inputs classified correctly are attacked (the others
    count as failures anyway). Per-sample tensors among the keyword arguments (``eps`` of
    shape (N,), ``targets``) are sliced along with the batches.

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs in [0, 1] to logits.
    data : Split or (x, y)
        ``x`` (N, ...) in [0, 1], ``y`` int64 (N,).
    attack : callable
        ``attack(model, x, y, **attack_kwargs) -> x_adv``, e.g. :func:`pgd`.
    batch_size : int
        Inputs per call of the attack.
    progress : bool, optional
        Show a progress bar (default: the global setting, see
        :func:`robustlab.config.set_progress`).
    desc : str, optional
        The progress bar's label (default: the attack's name).
    **attack_kwargs
        Passed to ``attack`` (``eps``, ``steps``, ``seed``, ...).

    Returns
    -------
    float

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> x, y = torch.rand(8, 1, 8, 8), torch.arange(8)
    >>> acc = robust_accuracy(model, (x, y), fgsm, eps=0.1, progress=False)
    >>> 0.0 <= acc <= 1.0
    True
    """
    check_model(model)
    x, y = check_xy(data, "data")
    if not callable(attack):
        raise TypeError(f"attack must be callable as attack(model, x, y, **kwargs), got {type(attack).__name__}")
    check_positive_int(batch_size, "batch_size")
    enabled = config.progress_enabled(progress)
    n = x.shape[0]
    per_sample = {k for k in ("eps", "targets") if isinstance(attack_kwargs.get(k), torch.Tensor)
                  and attack_kwargs[k].dim() == 1 and attack_kwargs[k].shape[0] == n}
    device = _models.device_of(model)
    robust = torch.zeros((), dtype=torch.int64, device=device)
    bar = config.progress_bar((n + batch_size - 1) // batch_size, desc or getattr(attack, "__name__", "attack"), enabled)
    try:
        for start in range(0, n, batch_size):
            xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            with torch.no_grad(), eval_mode(model):
                correct = torch.nonzero(model(xb).argmax(1) == yb).flatten()
            if len(correct):
                kwargs = dict(attack_kwargs)
                for k in per_sample:
                    kwargs[k] = attack_kwargs[k][start:start + batch_size].to(device)[correct]
                x_adv = attack(model, xb[correct], yb[correct], **kwargs)
                if not isinstance(x_adv, torch.Tensor):
                    raise TypeError(f"attack must return x_adv as a tensor, got {type(x_adv).__name__} "
                                    "(pass return_queries=False to square)")
                with torch.no_grad(), eval_mode(model):
                    robust += (model(x_adv.to(device)).argmax(1) == yb[correct]).sum()
            bar.update(1)
    finally:
        bar.close()
    return float(robust) / n


@dataclasses.dataclass(frozen=True)
class MaskingCheck:
    """One check of :func:`gradient_masking_checklist`: what it states, its numbers, the verdict."""

    name: str
    statement: str
    numbers: dict
    passed: bool

    def __str__(self) -> str:
        nums = ", ".join(f"{k} {v:.3f}" for k, v in self.numbers.items())
        return f"[{'pass' if self.passed else 'FAIL'}] {self.name}: {nums}"


@dataclasses.dataclass(frozen=True)
class MaskingChecklist:
    """The result of :func:`gradient_masking_checklist`: one :class:`MaskingCheck` per sanity check.

    ``passed`` is True when every check passed. Passing is *necessary* for a robustness
    claim, not sufficient: it rules out the common signs of gradient masking only.
    """

    eps: float
    norm: str
    n: int
    clean_accuracy: float
    tolerance: float
    checks: tuple

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list:
        """The names of the checks that failed."""
        return [c.name for c in self.checks if not c.passed]

    def __getitem__(self, name: str) -> MaskingCheck:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; the checks are {[c.name for c in self.checks]}")

    def table(self) -> str:
        """A plain-text table: one line per check with its numbers and verdict."""
        head = (f"gradient-masking checklist: {self.norm} eps={self.eps:g}, {self.n} inputs, "
                f"clean accuracy {self.clean_accuracy:.3f}, tolerance {self.tolerance:g}")
        width = max(len(c.name) for c in self.checks)
        lines = [head]
        for c in self.checks:
            nums = ", ".join(f"{k} {v:.3f}" for k, v in c.numbers.items())
            lines.append(f"  {'pass' if c.passed else 'FAIL'}  {c.name:<{width}}  {nums}")
            lines.append(f"        {'':<{width}}  ({c.statement})")
        lines.append(f"  => {'passed' if self.passed else 'FAILED: ' + ', '.join(self.failed)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.table()


def gradient_masking_checklist(
    model: torch.nn.Module,
    data,
    *,
    eps: float,
    norm: str = "linf",
    steps: tuple = (10, 100),
    restarts: int = 5,
    queries: int = 1000,
    tolerance: float = 0.05,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool | None = None,
) -> MaskingChecklist:
    r"""Sanity checks that tell a robust model from one that only masks its gradients.

    A defense that makes gradients useless (non-differentiable layers, saturated
    softmax, randomness) can show high accuracy under gradient attacks without being
    robust. Athalye, Carlini and Wagner (2018) and Carlini et al. (2019, "On evaluating
    adversarial robustness") list symptoms; this function measures four of them, as
    robust accuracies :math:`a` (:func:`robust_accuracy`) on ``data``:

    ``more steps``
        more PGD iterations never make the attack weaker:
        :math:`a_{\text{PGD-}k_2} \le a_{\text{PGD-}k_1} + \tau` for ``steps = (k1, k2)``.
    ``unbounded``
        with a budget covering the whole box (Linf 1, L2 :math:`\sqrt{d}`) PGD-:math:`k_2`
        fools (almost) everything: :math:`a \le \tau`.
    ``black box``
        the score-based black-box :func:`square` (``queries`` queries) is not stronger than
        the best white-box PGD: :math:`a_{\text{square}} \ge \min a_{\text{PGD}} - \tau`.
    ``restarts``
        random restarts change little: :math:`a_{\text{PGD-}k_1 \times R} \ge
        a_{\text{PGD-}k_1} - \tau` for ``restarts = R``.

    where :math:`\tau` is ``tolerance``. A failed check is a red flag to investigate
    (adaptive attacks, BPDA, EOT), not a proof of masking; passing all is necessary for a
    robustness claim, not sufficient.

    Parameters
    ----------
    model : torch.nn.Module
        The defended model (inputs in [0, 1], logits out).
    data : Split or (x, y)
        Evaluation inputs; a few hundred are enough.
    eps : float
        The budget of the robustness claim, in pixel units.
    norm : {"linf", "l2"}
        The claim's norm.
    steps : (int, int)
        The PGD step counts compared (fewer, more).
    restarts : int
        Random restarts of the restart check (>= 2).
    queries : int
        Query budget of the black-box attack.
    tolerance : float
        :math:`\tau`, in accuracy (0.05 = 5 points). Random starts alone move the PGD
        accuracy of an undefended model by 2 to 3 points on a few hundred inputs, so a
        smaller tolerance needs more data.
    batch_size : int
        Inputs per attack call.
    seed : int
        Seeds every attack.
    progress : bool, optional
        Progress bars (default: the global setting).

    Returns
    -------
    MaskingChecklist
        ``.passed``, ``.checks`` (name, statement, numbers, passed) and ``.table()``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("cnn", "digits", width=4)
    >>> x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    >>> report = gradient_masking_checklist(model, (x, y), eps=0.1, steps=(2, 4), restarts=2,
    ...                                     queries=20, progress=False)
    >>> [c.name for c in report.checks]
    ['more steps', 'unbounded', 'black box', 'restarts']
    """
    check_model(model)
    x, y = check_xy(data, "data")
    check_nonneg(eps, "eps", allow_tensor=False)
    check_choice(norm, "norm", ("linf", "l2"))
    if not (isinstance(steps, (tuple, list)) and len(steps) == 2):
        raise TypeError(f"steps must be a pair (fewer, more) of step counts, got {steps!r}")
    for k in steps:
        check_positive_int(k, "steps")
    if not steps[0] < steps[1]:
        raise ValueError(f"steps must be increasing (fewer, more), got {tuple(steps)}")
    check_positive_int(restarts, "restarts")
    if restarts < 2:
        raise ValueError(f"restarts must be >= 2 to compare against a single run, got {restarts}")
    check_positive_int(queries, "queries")
    check_nonneg(tolerance, "tolerance", allow_tensor=False)
    check_positive_int(seed, "seed", allow_zero=True)
    few, many = steps
    whole_box = 1.0 if norm == "linf" else math.sqrt(x[0].numel())

    def acc(attack, desc, **kw):
        return robust_accuracy(model, (x, y), attack, batch_size=batch_size, progress=progress, desc=desc, **kw)

    clean = acc(lambda m, xb, yb: xb, "clean")
    pgd_few = acc(pgd, f"PGD-{few}", eps=eps, norm=norm, steps=few, seed=seed)
    pgd_many = acc(pgd, f"PGD-{many}", eps=eps, norm=norm, steps=many, seed=seed)
    pgd_restarts = acc(pgd, f"PGD-{few} x {restarts} restarts", eps=eps, norm=norm, steps=few, restarts=restarts,
                       seed=seed)
    unbounded = acc(pgd, f"PGD-{many}, eps={whole_box:g}", eps=whole_box, norm=norm, steps=many, seed=seed)
    black_box = acc(square, f"square ({queries} queries)", eps=eps, norm=norm, queries=queries, seed=seed)
    best_white = min(pgd_few, pgd_many, pgd_restarts)
    checks = (
        MaskingCheck("more steps", f"PGD-{many} accuracy is at most PGD-{few} accuracy + tolerance",
                     {f"PGD-{few}": pgd_few, f"PGD-{many}": pgd_many}, pgd_many <= pgd_few + tolerance),
        MaskingCheck("unbounded", f"PGD-{many} at eps={whole_box:g} (the whole box) leaves accuracy <= tolerance",
                     {"accuracy": unbounded}, unbounded <= tolerance),
        MaskingCheck("black box", "square-attack accuracy is at least the best PGD accuracy - tolerance",
                     {"square": black_box, "best PGD": best_white}, black_box >= best_white - tolerance),
        MaskingCheck("restarts", f"PGD-{few} with {restarts} restarts is at least PGD-{few} accuracy - tolerance",
                     {f"PGD-{few}": pgd_few, f"x{restarts} restarts": pgd_restarts},
                     pgd_restarts >= pgd_few - tolerance),
    )
    return MaskingChecklist(eps=float(eps), norm=norm, n=x.shape[0], clean_accuracy=clean, tolerance=float(tolerance),
                            checks=checks)


def smallest_eps(attack, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps_grid, *,
                 targets: torch.Tensor | None = None, **attack_kwargs):
    """Per input, the smallest ``eps`` of a grid at which ``attack`` succeeds.

    Runs ``attack(model, x, y, eps=e, targets=targets, **attack_kwargs)`` for every ``e`` of
    the increasing ``eps_grid`` on the inputs not yet fooled and records, per input, the
    first ``e`` that changes the prediction (untargeted) or reaches the target.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``eps`` (B,), NaN where no ``e`` of the grid succeeds, and ``x_adv`` (B, ...) on the
        CPU: the successful input at that ``eps``, or ``x`` itself where none succeeded.
    """
    from ._validate import check_images
    from .train import predict

    if not callable(attack):
        raise TypeError(f"attack must be callable as attack(model, x, y, *, eps, ...), got {type(attack).__name__}")
    check_images(x, "x")
    grid = [float(e) for e in eps_grid]
    if not grid:
        raise ValueError("eps_grid must hold at least one value")
    if any(e < 0 for e in grid) or any(b <= a for a, b in zip(grid, grid[1:])):
        raise ValueError(f"eps_grid must be increasing and >= 0, got {grid}")
    x = x.detach().cpu()
    y = y.cpu()
    found = torch.full((x.shape[0],), float("nan"))
    x_found = x.clone()
    for e in grid:
        todo = torch.nonzero(found.isnan()).flatten()
        if len(todo) == 0:
            break
        t = targets.cpu()[todo] if targets is not None else None
        x_e = attack(model, x[todo], y[todo], eps=e, targets=t, **attack_kwargs).cpu()
        pred = predict(model, x_e)
        ok = pred == t if t is not None else pred != y[todo]
        found[todo[ok]] = e
        x_found[todo[ok]] = x_e[ok]
    return found, x_found
