r"""A spatial attack: a bounded flow field that moves every pixel a little (in the manner of StAdv).

Xiao et al. (2018, "Spatially transformed adversarial examples", StAdv) move pixels instead
of changing their values: a flow field :math:`f \in \mathbb{R}^{2 \times H \times W}` gives
every output pixel :math:`p` the value of the input at :math:`p + f_p`, read by bilinear
interpolation,

.. math::

    \operatorname{warp}(x, f)_p = \sum_{q \in \mathcal N(p + f_p)} x_q\,
    (1 - |p_1 + f_{p,1} - q_1|)(1 - |p_2 + f_{p,2} - q_2|),

over the four grid neighbours :math:`\mathcal N` of :math:`p + f_p` (positions outside
the image read 0, the background of the digits). A warp is a convex combination of
pixels, so it stays in [0, 1].

StAdv bounds the flow by a smoothness penalty. The threat model here is simpler and has one
unit: every pixel moves by at most ``eps`` pixels along each axis,
:math:`\|f\|_\infty \le \varepsilon` (pixel displacements, not pixel values), and
:func:`flow` maximizes the loss over it by PGD on :math:`f` (signed steps, projection onto
the box, best iterate per sample). This is the "unseen spatial attack" of chapter 16; it is
not the published StAdv budget (0.05 of its smoothness measure), so its numbers do not
compare with the paper's StAdv column.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._validate import check_nonneg, check_positive, check_positive_int, check_tensor
from ._common import LOSSES, _BestIterate, _check_flag, _check_restarts, _check_spatial, _generator, _prepare, _to_input, attack_objective, eval_mode

__all__ = ["warp", "flow"]


def warp(x: torch.Tensor, flow_field: torch.Tensor) -> torch.Tensor:
    r"""The image ``x`` (B, C, H, W) read at the displaced positions :math:`p + f_p` (bilinear, zeros outside).

    ``flow_field`` has shape (B, 2, H, W): channel 0 moves along the rows (down), channel 1
    along the columns (right), both in pixels. A constant integer flow is a shift: with
    :math:`f \equiv (0, 1)` every pixel takes the value of its right neighbour, so the
    image moves one pixel to the *left*, with a column of zeros entering at the right.

    >>> x = torch.arange(4.0).view(1, 1, 1, 4) / 4
    >>> f = torch.zeros(1, 2, 1, 4); f[:, 1] = 1.0
    >>> warp(x, f).flatten().tolist()
    [0.25, 0.5, 0.75, 0.0]
    """
    check_tensor(x, "x")
    check_tensor(flow_field, "flow_field")
    _check_spatial(x, "warp")
    b, _, h, w = x.shape
    if flow_field.shape != (b, 2, h, w):
        raise ValueError(f"flow_field must have shape {(b, 2, h, w)} for x of shape {tuple(x.shape)}, "
                         f"got {tuple(flow_field.shape)}")
    flow_field = flow_field.to(device=x.device, dtype=x.dtype)
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1) + flow_field[:, 0]
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w) + flow_field[:, 1]
    # grid_sample's coordinates: -1 and 1 are the centres of the first and last pixel (align_corners)
    gy = 2 * rows / max(h - 1, 1) - 1
    gx = 2 * cols / max(w - 1, 1) - 1
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def flow(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps, steps: int = 20,
         step_size: float | None = None, random_start: bool = True, restarts: int = 1,
         targets: torch.Tensor | None = None, loss: str = "ce", seed: int | None = 0,
         return_flow: bool = False):
    r"""A flow-field attack: PGD on a per-pixel displacement with :math:`\|f\|_\infty \le` ``eps`` pixels.

    Maximizes the attack objective (:func:`robustlab.attacks.attack_objective`) of
    :math:`\operatorname{warp}(x, f)` (:func:`warp`) over the flows with every displacement
    at most ``eps`` pixels per axis: ``steps`` signed-gradient steps of ``step_size`` on
    :math:`f`, each followed by clipping :math:`f` to :math:`[-\varepsilon, \varepsilon]`, from
    a uniform random flow (``random_start``) or zero; ``restarts`` runs keep the best result
    per sample (a successful one if any).

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs in [0, 1] to logits.
    x, y : torch.Tensor
        Images (B, C, H, W) in [0, 1], labels (B,).
    eps : float
        The largest displacement of a pixel along each axis, in pixels (>= 0).
    steps, step_size : int, float
        PGD iterations and step on the flow (default ``2.5 * eps / steps``).
    random_start, restarts, targets, loss, seed
        As in :func:`robustlab.attacks.pgd`.
    return_flow : bool
        Also return the flow, as ``(x_adv, flow)``.

    Returns
    -------
    torch.Tensor or (torch.Tensor, torch.Tensor)
        ``x_adv = warp(x, f)`` in [0, 1] with :math:`\|f\|_\infty \le \varepsilon`, on the
        device of ``x`` (and ``f``, (B, 2, H, W), with ``return_flow``).

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("cnn", "digits", width=4)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv, f = flow(model, x, y, eps=0.5, steps=3, return_flow=True)
    >>> bool(f.abs().max() <= 0.5), bool(torch.allclose(x_adv, warp(x, f)))
    (True, True)
    """
    x_in = x
    check_nonneg(eps, "eps", allow_tensor=False)
    eps = float(eps)
    x, y, targets, _ = _prepare(model, x, y, targets, eps)
    _check_spatial(x, "flow")
    check_positive_int(steps, "steps")
    _check_restarts(random_start, restarts)
    _check_flag(return_flow, "return_flow")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    if step_size is not None:
        check_positive(step_size, "step_size")
    step = 2.5 * eps / steps if step_size is None else float(step_size)
    b, _, h, w = x.shape
    zero = torch.zeros(b, 2, h, w, device=x.device, dtype=x.dtype)
    if eps == 0:
        return _to_input(x_in, x, zero) if return_flow else _to_input(x_in, x)
    labels = targets if targets is not None else y
    targeted = targets is not None
    gen = _generator(seed, x.device)
    best = _BestIterate(x, y, targets)
    best_flow = zero.clone()
    with eval_mode(model):
        for _ in range(restarts):
            f = (torch.rand(zero.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) * eps \
                if random_start else zero.clone()
            for _ in range(steps + 1):
                fr = f.detach().requires_grad_(True)
                with torch.enable_grad():
                    xa = warp(x, fr)
                    logits = model(xa)
                    obj = attack_objective(logits, labels, loss, targeted)
                    (g,) = torch.autograd.grad(obj.sum(), fr)
                before = best.x
                best.update(xa.detach(), logits.detach(), obj.detach())
                changed = (best.x != before).flatten(1).any(1)
                best_flow = torch.where(changed.view(-1, 1, 1, 1), f.detach(), best_flow)
                f = (f.detach() + step * g.sign()).clamp(-eps, eps)
    if return_flow:
        return _to_input(x_in, best.x, best_flow)
    return _to_input(x_in, best.x)
