r"""Sparse and local attacks: a greedy L0 attack (few pixels) and an adversarial patch (one square)."""

from __future__ import annotations

import math
from numbers import Integral

import torch

from .._validate import check_choice, check_positive, check_positive_int
from ._common import (LOSSES, Iterates, _BestIterate, _check_flag, _check_pixel_count, _check_spatial, _generator,
                      _objective_and_gradient, _prepare_inputs, _random_corners, _square_mask, _success, _to_input,
                      attack_objective, eval_mode)

__all__ = ["sparse_l0", "patch"]


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
        ``x_adv`` in [0, 1] differing from ``x`` in at most ``eps`` pixels, on the device of
        ``x``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv = sparse_l0(model, x, y, eps=3)
    >>> int(((x_adv - x) != 0).flatten(1).sum(1).max()) <= 3
    True
    """
    x_in = x
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
        return _to_input(x_in, x_adv)
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
    return _to_input(x_in, x_adv)


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
    return_last: bool = False,
):
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
    return_last : bool
        Also return the last iterate (of the last try), as :class:`Iterates`.

    Returns
    -------
    torch.Tensor or Iterates
        ``x_adv`` in [0, 1] on the device of ``x``, equal to ``x`` outside one ``eps`` x
        ``eps`` square per image; with ``return_last=True`` the pair ``(best, last)``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("cnn", "digits", width=4)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv = patch(model, x, y, eps=3, locations=(0, 0), steps=5, seed=0)
    >>> bool((x_adv != x)[:, :, 3:, :].any() or (x_adv != x)[:, :, :, 3:].any())
    False
    """
    x_in = x
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
    _check_flag(return_last, "return_last")
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
        return Iterates(*_to_input(x_in, x, x)) if return_last else _to_input(x_in, x)
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
    if return_last:
        return Iterates(*_to_input(x_in, best.x, x_adv))
    return _to_input(x_in, best.x)
