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

__all__ = ["fgsm", "eval_mode", "input_gradient"]


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Put ``model`` in eval mode for the ``with`` block and restore its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def input_gradient(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Gradient of the summed per-sample loss with respect to the input ``x`` only.

    Uses :func:`torch.autograd.grad` on a detached copy of ``x``, so no parameter
    ``.grad`` is created or changed. ``loss`` is ``"ce"`` (cross-entropy).
    """
    if loss != "ce":
        raise ValueError(f"loss must be 'ce', got {loss!r}")
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value = F.cross_entropy(model(x), labels, reduction="sum")
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
