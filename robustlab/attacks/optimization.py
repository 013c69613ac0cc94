r"""Optimisation attacks: Carlini--Wagner L2, the smallest perturbation that succeeds."""

from __future__ import annotations

import math

import torch

from .._validate import check_nonneg, check_positive, check_positive_int
from ._common import (_batch_eps, _check_flag, _eps_flat, _prepare_inputs, _success, _to_input, attack_objective,
                      eval_mode)

__all__ = ["cw_l2"]


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
        device of ``x``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv = cw_l2(model, x, y, binary_steps=2, steps=20, eps=1.0)
    >>> bool(rl.norms.lp_distance(x_adv, x, "l2").max() <= 1.0)
    True
    """
    x_in = x
    x, y, targets = _prepare_inputs(model, x, y, targets)
    check_nonneg(kappa, "kappa", allow_tensor=False)
    check_positive(c_init, "c_init")
    check_positive_int(binary_steps, "binary_steps")
    check_positive_int(steps, "steps")
    check_positive(lr, "lr")
    _check_flag(lr_decay, "lr_decay")
    _check_flag(abort_early, "abort_early")
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
    return _to_input(x_in, best_x)
