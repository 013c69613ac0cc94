"""What every attack shares: the objective, the input gradient, argument checks, the best iterate.

Private to :mod:`robustlab.attacks`, which re-exports :func:`attack_objective`,
:func:`input_gradient`, :data:`LOSSES`, :class:`Iterates` and :func:`eval_mode` (the one
of :mod:`robustlab.models`).
"""

from __future__ import annotations

from numbers import Integral
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .. import models as _models
from .._validate import (check_images, check_labels, check_model, check_nonneg, check_positive, check_positive_int,
                         check_seed)
from ..models import eval_mode

__all__ = ["LOSSES", "Iterates", "attack_objective", "input_gradient", "eval_mode"]

LOSSES = ("ce", "cw")


class Iterates(NamedTuple):
    """What an attack called with ``return_last=True`` returns: the best and the last iterate.

    ``best`` is what the attack returns by default (per sample, a successful iterate if
    any, otherwise the one of highest objective); ``last`` is where the iteration ended.
    Both satisfy the attack contract (in [0, 1], within ``eps``). Unpacks as
    ``x_best, x_last = attack(..., return_last=True)``.
    """

    best: torch.Tensor
    last: torch.Tensor


def _check_flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return value


def _step_tensor(eps_t: torch.Tensor, steps: int, step_size) -> torch.Tensor:
    """Per-input step sizes shaped like ``eps_t``: ``2.5 eps / steps`` (Madry et al.'s choice) or
    the given positive ``step_size`` for every input."""
    if step_size is None:
        return 2.5 * eps_t / steps
    check_positive(step_size, "step_size")
    return torch.full_like(eps_t, float(step_size))


def _check_restarts(random_start, restarts) -> None:
    """The restart options of an iterative attack: ``restarts >= 1``, ``random_start`` a bool,
    and several restarts only from random starts (from one fixed start they repeat one run)."""
    check_positive_int(restarts, "restarts")
    _check_flag(random_start, "random_start")
    if restarts > 1 and not random_start:
        raise ValueError("restarts > 1 needs random_start=True (every restart would repeat the same run)")


def _to_input(x_in: torch.Tensor, *tensors: torch.Tensor):
    """Detached results on the device of the caller's batch ``x_in`` (the package rule)."""
    out = tuple(t.detach().to(x_in.device) for t in tensors)
    return out[0] if len(out) == 1 else out


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


def _labels_to_device(x, y, targets, model):
    """Check the labels against the batch ``x`` (already checked) and move all three to the
    model's device (``x`` also to its dtype)."""
    x = _models.to_model(model, x.detach())
    device = x.device
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
    return _labels_to_device(x, y, targets, model)


def _prepare(model, x, y, targets, eps):
    check_model(model)
    check_images(x, "x")
    check_nonneg(eps, "eps")
    x, y, targets = _labels_to_device(x, y, targets, model)
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
    seed = check_seed(seed)
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


def _random_start(x: torch.Tensor, eps: torch.Tensor, norm: str, gen) -> torch.Tensor:
    """A uniformly random point of the ``norm`` ball of radius ``eps`` around ``x``, in the box.

    The start is laid out in memory like ``x`` (``empty_like``), and so are all later
    iterates: the model then runs in the memory format the data came in.
    """
    if norm == "linf":
        delta = (torch.empty_like(x).uniform_(generator=gen) * 2 - 1) * eps
    elif norm == "l1":  # uniform in the L1 ball: Laplace direction, radius eps * U^(1/d); clamping stays inside
        d = x[0].numel()
        direction = torch.empty_like(x).exponential_(generator=gen) * (torch.empty_like(x).bernoulli_(0.5, generator=gen) * 2 - 1)
        direction = direction / direction.flatten(1).abs().sum(1).clamp_min(1e-12).view_as(eps)
        radius = torch.rand(eps.shape, generator=gen, device=x.device, dtype=x.dtype) ** (1.0 / d)
        delta = direction * radius * eps
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
