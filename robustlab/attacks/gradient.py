r"""Gradient attacks in a norm ball: FGSM (one step) and PGD (many steps, restarts).

FGSM (Goodfellow, Shlens and Szegedy, 2015) takes one step of size ``eps`` along the sign
of the input gradient of the cross-entropy loss,

.. math::

    x' = \operatorname{clip}_{[0,1]}\big(x + \varepsilon\,\operatorname{sign}\nabla_x
    \mathcal{L}(f(x), y)\big)

and, targeted at a label :math:`t`, steps *down* the loss of :math:`t`:
:math:`x' = \operatorname{clip}_{[0,1]}(x - \varepsilon\,\operatorname{sign}\nabla_x
\mathcal{L}(f(x), t))`. With ``random_start`` and a ``step_size`` of its own it is the fast
FGSM of Wong, Rice and Kolter (2020).

PGD in the L1 ball (``norm="l1"``) moves only the ``topk`` coordinates of largest gradient
magnitude per step, the sparse steepest-ascent direction of the L1 geometry (Tramer and
Boneh, 2019; Croce and Hein, 2021), and projects exactly onto the intersection of the L1
ball with the box [0, 1]^d.
"""

from __future__ import annotations

import math

import torch

from .._validate import check_choice, check_positive, check_positive_int
from ._common import (LOSSES, Iterates, _BestIterate, _check_flag, _check_restarts, _step_tensor, _eps_flat, _generator, _objective_and_gradient,
                      _prepare, _random_start, _to_input, attack_objective, eval_mode)

__all__ = ["fgsm", "pgd"]


def fgsm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps, targets: torch.Tensor | None = None,
         step_size: float | None = None, random_start: bool = False, seed: int | None = None) -> torch.Tensor:
    r"""Fast Gradient Sign Method, Linf: one signed-gradient step, of size ``eps`` by default.

    Plain FGSM steps from ``x`` itself by ``step_size = eps``. With ``random_start=True`` it
    first draws :math:`x^0` uniformly from the ball (in the box), steps by ``step_size`` from
    there and projects back onto the ball,
    :math:`x' = \Pi_{[0,1]^d}(\Pi_{B_\infty(x, \varepsilon)}(x^0 + \texttt{step\_size}\cdot
    \operatorname{sign}\nabla_x \mathcal{L}(f(x^0), y)))`: the fast FGSM of Wong, Rice and
    Kolter (2020), who use ``step_size = 1.25 * eps``.

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
    step_size : float, optional
        The signed step's size in pixel units (> 0); default ``eps`` (per sample). A step
        larger than ``eps`` is projected back onto the ball.
    random_start : bool
        Step from a uniform random point of the ball instead of ``x``.
    seed : int, optional
        Seed of the random start.

    Returns
    -------
    torch.Tensor
        ``x_adv`` on the device of ``x``, with ``||x_adv - x||_inf <= eps`` and values in [0, 1].

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv = fgsm(model, x, y, eps=0.1)
    >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6)
    True
    >>> x_fast = fgsm(model, x, y, eps=0.1, step_size=0.125, random_start=True, seed=0)
    >>> bool((x_fast - x).abs().max() <= 0.1 + 1e-6)
    True
    """
    x_in = x
    x, y, targets, eps = _prepare(model, x, y, targets, eps)
    _check_flag(random_start, "random_start")
    if step_size is not None:
        check_positive(step_size, "step_size")
    eps_t = _eps_flat(eps, x).view((-1,) + (1,) * (x.dim() - 1))
    step_t = eps_t if step_size is None else torch.full_like(eps_t, float(step_size))
    labels = targets if targets is not None else y
    with eval_mode(model):
        x0 = _random_start(x, eps_t, "linf", _generator(seed, x.device)) if random_start else x
        sign = _objective_and_gradient(model, x0, labels, "ce", targets is not None)[2].sign()
    x_adv = x0 + step_t * sign
    if random_start or step_size is not None:  # a step from x itself of size eps stays in the ball
        x_adv = torch.minimum(torch.maximum(x_adv, x - eps_t), x + eps_t)
    return _to_input(x_in, x_adv.clamp(0.0, 1.0))


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
    return_last: bool = False,
    topk: int | None = None,
):
    r"""Projected gradient descent (Madry et al., 2018) in the Linf, L2 or L1 ball.

    Each of ``steps`` iterations ascends the attack objective and projects back:

    .. math::

        x^{k+1} = \Pi_{[0,1]^d}\Big(\Pi_{B_p(x, \varepsilon)}\big(x^k + \alpha\, s(\nabla_x
        J(x^k))\big)\Big), \qquad s(g) = \operatorname{sign}(g) \text{ (Linf)},\ \
        g / \|g\|_2 \text{ (L2)},\ \ \frac1k \operatorname{sign}(g) \odot 1_{T_k(g)} \text{ (L1)},

where for L1 :math:`T_k(g)` holds the ``topk`` coordinates of largest :math:`|g_i|` among
those that can still move in the direction of :math:`g_i` (not already at 1 with
:math:`g_i > 0`, nor at 0 with :math:`g_i < 0`): the steepest L1 ascent is one coordinate,
and a few at a time is the sparse step of Tramer and Boneh (2019) and Croce and Hein (2021),
of L1 size :math:`\alpha`. In L1 the two projections are done at once, exactly: the
Euclidean projection of :math:`x + v` onto
:math:`\{x + \delta : \|\delta\|_1 \le \varepsilon,\ x + \delta \in [0, 1]^d\}` is
:math:`\delta_i = \operatorname{sign}(v_i)\min\big(\max(|v_i| - \theta, 0), u_i\big)`, with
:math:`u_i` the room of coordinate :math:`i` towards :math:`\operatorname{sign}(v_i)` and
:math:`\theta \ge 0` the threshold that puts :math:`\|\delta\|_1` at :math:`\varepsilon` (0
when the box-clipped step is inside the ball), found by sorting the breakpoints.

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
    norm : {"linf", "l2", "l1"}
        The threat model's norm; ``eps`` is in its unit (for ``"l1"`` the sum of the absolute
        pixel changes).
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
    return_last : bool
        Also return the last iterate (of the last restart), as :class:`Iterates`.
    topk : int, optional
        L1 only: the number of coordinates each step moves; default ``max(1, d // 100)`` for
        inputs of ``d`` values (the top 1%, as in Tramer and Boneh's SLIDE).

    Returns
    -------
    torch.Tensor or Iterates
        ``x_adv`` in [0, 1] with ``||x_adv - x||_p <= eps``, on the device of ``x``; with
        ``return_last=True`` the pair ``(best, last)``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv = pgd(model, x, y, eps=0.1, steps=5, seed=0)
    >>> bool(rl.norms.lp_distance(x_adv, x, "linf").max() <= 0.1 + 1e-6)
    True
    >>> best, last = pgd(model, x, y, eps=0.1, steps=5, seed=0, return_last=True)
    >>> torch.equal(best, x_adv)
    True
    >>> x_l1 = pgd(model, x, y, eps=0.5, norm="l1", steps=5, seed=0)
    >>> bool(rl.norms.lp_distance(x_l1, x, "l1").max() <= 0.5 + 1e-5)
    True
    """
    x_in = x
    x, y, targets, eps_b = _prepare(model, x, y, targets, eps)
    _check_flag(return_last, "return_last")
    check_choice(norm, "norm", ("linf", "l2", "l1"))
    check_positive_int(steps, "steps")
    check_choice(loss, "loss", LOSSES)
    _check_restarts(random_start, restarts)
    shape = (-1,) + (1,) * (x.dim() - 1)
    eps_t = _eps_flat(eps_b, x).view(shape)
    step_t = _step_tensor(eps_t, steps, step_size)
    if norm == "l1":
        k = max(1, x[0].numel() // 100) if topk is None else check_positive_int(topk, "topk")
        k = min(k, x[0].numel())
    elif topk is not None:
        raise ValueError(f"topk is a parameter of norm='l1' only, got topk={topk!r} with norm={norm!r}")
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
                elif norm == "l1":
                    x_adv = _project_l1_box(x_adv + step_t * _sparse_direction(grad, x_adv, k), x, eps_t.flatten())
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
    if return_last:
        return Iterates(*_to_input(x_in, best.x, x_adv))
    return _to_input(x_in, best.x)


def _sparse_direction(grad: torch.Tensor, x_adv: torch.Tensor, k: int) -> torch.Tensor:
    """The L1 step direction: ``sign(g) / k`` on the ``k`` coordinates of largest ``|g|`` that can
    still move towards ``sign(g)`` inside [0, 1], zero elsewhere (L1 norm 1 per row)."""
    g = grad.flatten(1)
    v = x_adv.flatten(1)
    movable = ((g > 0) & (v < 1.0)) | ((g < 0) & (v > 0.0))
    score = torch.where(movable, g.abs(), torch.full_like(g, -1.0))
    idx = score.topk(k, dim=1).indices
    direction = torch.zeros_like(g)
    direction.scatter_(1, idx, g.gather(1, idx).sign() / k)
    return direction.view_as(grad)


def _project_l1_box(z: torch.Tensor, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    r"""The Euclidean projection of ``z`` onto :math:`\{x + \delta : \|\delta\|_1 \le arepsilon,
    x + \delta \in [0, 1]^d\}`, per row (``x`` in [0, 1], ``eps`` of shape (B,), >= 0).

    The solution is :math:`\delta_i = \operatorname{sign}(v_i)\min(\max(|v_i| - 	heta, 0), u_i)`,
    :math:`v = z - x`, :math:`u_i` the room of :math:`x_i` towards :math:`\operatorname{sign}(v_i)`
    (KKT conditions of the separable problem). The L1 size
    :math:`f(	heta) = \sum_k s_k \max(c_k - 	heta, 0)` is piecewise linear in :math:`	heta`, with
    breakpoints :math:`c = |v_i|` (:math:`s = +1`) and :math:`c = |v_i| - u_i` (:math:`s = -1`):
    sorting them gives :math:`f` at every breakpoint by cumulative sums, and :math:`	heta` solves
    :math:`f(	heta) = arepsilon` on the segment where :math:`f` crosses :math:`arepsilon`.
    """
    shape = z.shape
    v = (z - x).flatten(1)
    xf = x.flatten(1)
    a = v.abs()
    room = torch.where(v > 0, 1.0 - xf, xf)
    clipped = torch.minimum(a, room)
    eps = eps.to(dtype=v.dtype).flatten()
    need = clipped.sum(1) > eps  # rows where the L1 constraint is active
    theta = torch.zeros_like(eps)
    if bool(need.any()):
        c = torch.cat([a, a - room], 1)[need]
        s = torch.cat([torch.ones_like(a), -torch.ones_like(a)], 1)[need]
        c, order = c.sort(dim=1, descending=True)
        s = s.gather(1, order)
        sc = (s * c).cumsum(1)
        ss = s.cumsum(1)
        f_at = (sc - s * c) - c * (ss - s)  # f at each breakpoint, nondecreasing along the row
        e = eps[need]
        m = (f_at < e[:, None]).sum(1).clamp(1, c.shape[1] - 1)  # first breakpoint with f >= eps
        prev = m - 1  # theta lies in [c[m], c[m - 1]], where f = sc[m - 1] - theta * ss[m - 1]
        slope = ss.gather(1, prev[:, None])[:, 0]  # an integer: the number of coordinates still shrinking
        c_lo, c_hi = c.gather(1, m[:, None])[:, 0], c.gather(1, prev[:, None])[:, 0]
        # on a flat segment (slope 0) every theta in it gives the same delta
        t = torch.where(slope > 0.5, (sc.gather(1, prev[:, None])[:, 0] - e) / slope.clamp_min(1.0), c_lo)
        theta[need] = torch.minimum(torch.maximum(t, c_lo), c_hi).clamp_min(0.0)
    delta = v.sign() * torch.minimum((a - theta[:, None]).clamp_min(0.0), room)
    delta = torch.where((eps > 0)[:, None], delta, torch.zeros_like(delta))
    return (xf + delta).clamp_(0.0, 1.0).view(shape)
