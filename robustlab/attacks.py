r"""Adversarial attacks under one contract.

An attack is ``attack(model, x, y, *, eps, ...) -> x_adv``: batch-first, ``x`` in [0, 1],
``x_adv`` in [0, 1] and within ``eps`` of ``x`` in the attack's norm. It is untargeted by
default (raise the loss of the true label ``y``); passing ``targets`` makes it targeted
(lower the loss of the target labels). Inside every attack the model is in eval mode
(its mode is restored afterwards) and gradients are taken with respect to the input
only, so the model's parameter gradients are never touched.

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

import torch
import torch.nn.functional as F

from . import models as _models
from ._validate import check_images, check_labels, check_model, check_nonneg

__all__ = ["fgsm", "pgd", "smallest_eps", "eval_mode", "input_gradient", "attack_objective", "LOSSES"]

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
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value = attack_objective(model(x), labels, loss, targeted).sum()
        (grad,) = torch.autograd.grad(value, x)
    return grad


def _prepare(model, x, y, targets, eps):
    check_model(model)
    check_images(x, "x")
    check_nonneg(eps, "eps")
    device = _models.device_of(model)
    x = x.detach().to(device)
    check_labels(y, "y", batch_size=x.shape[0])
    y = y.to(device)
    if targets is not None:
        check_labels(targets, "targets", batch_size=x.shape[0])
        targets = targets.to(device)
    if isinstance(eps, torch.Tensor):
        if eps.dim() == 0:
            eps = eps.expand(x.shape[0])
        if eps.shape != (x.shape[0],):
            raise ValueError(f"eps must be a number or a tensor of shape ({x.shape[0]},), got shape {tuple(eps.shape)}")
        eps = eps.to(device=device, dtype=x.dtype).view((-1,) + (1,) * (x.dim() - 1))
    return x, y, targets, eps


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
    """A uniformly random point of the ``norm`` ball of radius ``eps`` around ``x``, in the box."""
    if norm == "linf":
        delta = (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    else:  # uniform in the L2 ball: Gaussian direction, radius eps * U^(1/d)
        d = x[0].numel()
        direction = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(eps)
        radius = torch.rand(eps.shape, generator=gen, device=x.device, dtype=x.dtype) ** (1.0 / d)
        delta = direction * radius * eps
    return (x + delta).clamp(0.0, 1.0)


def _ascent_step(x_adv: torch.Tensor, grad: torch.Tensor, step: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "linf":
        return x_adv + step * grad.sign()
    g_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view((-1,) + (1,) * (grad.dim() - 1))
    return x_adv + step * grad / g_norm


def _success(logits: torch.Tensor, y: torch.Tensor, targets) -> torch.Tensor:
    pred = logits.argmax(1)
    return pred == targets if targets is not None else pred != y


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
    from ._validate import check_choice, check_positive, check_positive_int

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
    eps_t = eps_b if isinstance(eps_b, torch.Tensor) else torch.full((x.shape[0],), float(eps_b), device=x.device, dtype=x.dtype).view(shape)
    if step_size is None:
        step_t = 2.5 * eps_t / steps
    else:
        check_positive(step_size, "step_size")
        step_t = torch.full_like(eps_t, float(step_size))
    eps_flat = eps_t.flatten()
    labels = targets if targets is not None else y
    targeted = targets is not None
    gen = None
    if seed is not None:
        gen = torch.Generator(device=x.device).manual_seed(seed)

    from .norms import project

    best_x = x.clone()
    best_obj = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
    best_succ = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def keep_best(candidate, logits):
        obj = attack_objective(logits, labels, loss, targeted).detach()
        succ = _success(logits, y, targets)
        better = (succ & ~best_succ) | ((succ == best_succ) & (obj > best_obj))
        best_x[better] = candidate[better]
        best_obj[better] = obj[better]
        best_succ[better] = succ[better]

    with eval_mode(model):
        for _ in range(restarts):
            x_adv = _random_start(x, eps_t, norm, gen) if random_start else x.clone()
            for _ in range(steps):
                x_adv.requires_grad_(True)
                with torch.enable_grad():
                    logits = model(x_adv)
                    (grad,) = torch.autograd.grad(attack_objective(logits, labels, loss, targeted).sum(), x_adv)
                x_adv = x_adv.detach()
                keep_best(x_adv, logits.detach())
                x_adv = _ascent_step(x_adv, grad, step_t, norm)
                x_adv = project(x_adv, x, eps_flat, norm).clamp_(0.0, 1.0)
            with torch.no_grad():
                keep_best(x_adv, model(x_adv))
    return best_x.detach()


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
