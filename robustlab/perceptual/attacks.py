r"""Perceptual attacks (Laidlaw, Singla and Feizi, 2021): PPGD, LPA and Fast-LPA in an LPIPS ball.

The neural perceptual threat model allows every :math:`\tilde x \in [0, 1]^n` with
:math:`d(x, \tilde x) \le \varepsilon`, :math:`d` an :class:`~robustlab.perceptual.lpips.LPIPS`
distance; ``eps`` is in LPIPS units (dimensionless). The attacks maximize the margin loss

.. math::

    \mathcal{L}(f(\tilde x), y) = \min\Big(\max_{i \ne y} z_i(\tilde x) - z_y(\tilde x),\ \kappa\Big),

capped at :math:`\kappa = 1` for PPGD and LPA (no reward for a margin beyond 1), uncapped for
Fast-LPA; it is positive exactly when :math:`\tilde x` is misclassified.

* :func:`ppgd`, perceptual PGD: a first-order step that maximizes :math:`\nabla\mathcal{L}^\top\delta`
  subject to :math:`\|J\delta\|_2 \le \eta`, :math:`J = \partial\phi/\partial x` the Jacobian
  of the LPIPS embedding. Its solution is :math:`\delta \propto (J^\top J)^{-1}\nabla\mathcal{L}`,
  found by conjugate gradient with Jacobian-vector products, scaled so that
  :math:`\|J\delta\| = \eta`; then :func:`project` back onto the ball.
* :func:`lpa`, the Lagrangian perceptual attack: minimize
  :math:`-\mathcal{L}(f(\tilde x), y) + \lambda\max(0, d(x, \tilde x) - \varepsilon)` by normalized
  gradient steps whose length is set, by a finite difference, to move :math:`d` by a
  decaying ``step_size``; :math:`\lambda` grows tenfold after each round wherever the point
  is still outside the ball; a final :func:`project`.
* :func:`fast_lpa`: one round, :math:`\lambda` ramped from 1 to 10, used for training (PAT).
  The paper does not project its output (a soft bound); here ``project=True`` by default so
  that it obeys the attack contract, and :class:`~robustlab.perceptual.training.PATLoss`
  passes ``project=False``.

Every attack follows the package's contract (:mod:`robustlab.attacks`): batch-first, ``x``
and the output in [0, 1], the output within ``eps`` of ``x`` (here: ``d(x, x_adv) <= eps``,
checked at the end; a sample whose projection failed is returned as ``x`` itself), the
model in eval mode, gradients with respect to the input only, the best iterate per sample
(a misclassified point inside the ball if one was seen), the result on the device of ``x``.

Differences from the reference code (perceptual-advex): Jacobian-vector products are
exact (forward-mode automatic differentiation) where the reference uses finite differences
with h = 1e-3; CG always runs its ``cg_steps`` (the reference stops once the squared residual
is below 0.1, a threshold with no scale); LPA stops moving a sample once it is misclassified
inside the ball *before* taking the step (the reference updates that mask after it, so
successful samples keep moving: perceptual-advex issue #6).
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch

from .. import models as _models
from .._validate import (check_choice, check_images, check_nonneg, check_positive, check_positive_int,
                         check_real, check_same_shape, check_seed)
from ..attacks._common import _generator, _prepare, _to_input, attack_objective, eval_mode
from .lpips import LPIPS

__all__ = ["ppgd", "lpa", "fast_lpa", "project", "random_perturbation", "margin_loss", "PROJECTIONS"]

PROJECTIONS = ("newton", "bisection")
_TINY = 1e-20  # inside square roots taken for gradients (d has an infinite slope at 0)


def margin_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = 1.0, targets=None) -> torch.Tensor:
    r"""The perceptual attacks' objective :math:`\min(\max_{i \ne y} z_i - z_y, \kappa)`, shape (B,).

    Targeted (``targets`` given): :math:`\min(z_t - \max_{i \ne t} z_i, \kappa)`. Positive
    exactly when the attack has succeeded.

    >>> margin_loss(torch.tensor([[3.0, 1.0, 0.0], [0.0, 5.0, 1.0]]), torch.tensor([0, 0])).tolist()
    [-2.0, 1.0]
    """
    if targets is None:
        return attack_objective(logits, y, "cw").clamp(max=kappa)
    return attack_objective(logits, targets, "cw", targeted=True).clamp(max=kappa)


def _distance(lpips, model) -> LPIPS:
    if isinstance(lpips, str) and lpips == "self":
        return LPIPS.self_bound(model)
    if not isinstance(lpips, LPIPS):
        raise TypeError("lpips must be a robustlab.perceptual.LPIPS distance (e.g. lpips_net()) or 'self', "
                        f"got {type(lpips).__name__}")
    return lpips


@contextlib.contextmanager
def _frozen(model, dist: LPIPS):
    """The model and the distance's network in eval mode, restored afterwards."""
    with eval_mode(model):
        if dist.net is model:
            yield
        else:
            with eval_mode(dist.net):
                yield


def _eps_number(eps) -> float:
    check_nonneg(eps, "eps", allow_tensor=False)
    return float(eps)


def _start(x: torch.Tensor, gen) -> torch.Tensor:
    """The reference's start: ``x + N(0, 0.01^2)``, clamped to [0, 1]."""
    noise = torch.empty_like(x).normal_(generator=gen)
    return (x + 0.01 * noise).clamp(0.0, 1.0)


def _view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view((-1,) + (1,) * (x.dim() - 1))


def _dist_from(dist: LPIPS, phi0: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``d`` between the fixed embedding ``phi0`` and ``z`` (differentiable, also at 0)."""
    return ((dist.embed(z) - phi0).pow(2).sum(1) + _TINY).sqrt()


class _BestInside:
    """Per sample, the best point seen *inside* the ball: a successful one if any, else the highest objective."""

    def __init__(self, x: torch.Tensor):
        self.x = x.clone()
        self.obj = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
        self.succ = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def update(self, cand, obj, inside):
        succ = (obj > 0) & inside
        obj = torch.where(inside, obj, torch.full_like(obj, float("-inf")))
        better = (succ & ~self.succ) | ((succ == self.succ) & (obj > self.obj))
        self.x = torch.where(_view(better, cand), cand.detach(), self.x)
        self.obj = torch.where(better, obj, self.obj)
        self.succ |= succ


def _objective(model, z, y, kappa, targets):
    with torch.no_grad():
        return margin_loss(model(z), y, kappa, targets)


def _finish(model, dist, x, phi0, x_adv, eps, y, kappa, targets, best: _BestInside | None):
    """Check the budget (points outside it fall back to ``x``) and keep the best point per sample."""
    with torch.no_grad():
        d = (dist.embed(x_adv) - phi0).pow(2).sum(1).sqrt()
    x_adv = torch.where(_view(d <= eps, x), x_adv, x)
    if best is None:
        return x_adv
    best.update(x_adv, _objective(model, x_adv, y, kappa, targets), torch.ones_like(d, dtype=torch.bool))
    return best.x


def project(lpips: LPIPS, x: torch.Tensor, x_adv: torch.Tensor, eps, *, method: str = "newton",
            newton_steps: int = 10, bisection_steps: int = 10) -> torch.Tensor:
    r"""Project ``x_adv`` onto the LPIPS ball :math:`\{z : d(x, z) \le \varepsilon\}` (approximately), in [0, 1].

    Points already inside are returned unchanged. ``"newton"`` (the reference's default)
    takes up to ``newton_steps`` steps :math:`z \leftarrow \Pi_{[0,1]}\big(z - 1.1\,(d(x, z) -
    \varepsilon)\,\nabla d / \|\nabla d\|^2\big)` on the points still outside; whatever is
    still outside then (and every outside point with ``"bisection"``) is moved by
    ``bisection_steps`` of bisection along the segment from ``x`` to it, keeping the end
    that is inside. Since :math:`d(x, x) = 0`, every returned point is inside the ball
    (checked; a point where it does not hold numerically is returned as ``x``).

    Returns
    -------
    torch.Tensor
        The projected batch, on the device of ``x``.
    """
    if not isinstance(lpips, LPIPS):
        raise TypeError(f"lpips must be a robustlab.perceptual.LPIPS distance, got {type(lpips).__name__}")
    dist = lpips
    check_images(x, "x")
    check_images(x_adv, "x_adv")
    check_same_shape(x, x_adv, "x", "x_adv")
    eps = _eps_number(eps)
    check_choice(method, "method", PROJECTIONS)
    check_positive_int(newton_steps, "newton_steps", allow_zero=True)
    check_positive_int(bisection_steps, "bisection_steps", allow_zero=True)
    x_in = x
    x, z = _models.to_model(dist.net, x.detach(), x_adv.detach())
    with torch.no_grad():
        phi0 = dist.embed(x)
    return _to_input(x_in, _project(dist, x, phi0, z, eps, method, newton_steps, bisection_steps))


def _project(dist, x, phi0, z, eps, method, newton_steps, bisection_steps):
    z = z.clone()
    with torch.no_grad():
        d = (dist.embed(z) - phi0).pow(2).sum(1).sqrt()
    outside = d > eps
    if method == "newton":
        for _ in range(newton_steps):
            idx = torch.nonzero(outside).flatten()
            if len(idx) == 0:
                break
            zo = z[idx].detach().requires_grad_(True)
            with torch.enable_grad():
                do = _dist_from(dist, phi0[idx], zo)
                (g,) = torch.autograd.grad(do.sum(), zo)
            g2 = g.flatten(1).pow(2).sum(1).clamp_min(1e-12)
            step = 1.1 * (do.detach() - eps) / g2
            z[idx] = (zo.detach() - _view(step, zo) * g).clamp(0.0, 1.0)
            with torch.no_grad():
                d[idx] = (dist.embed(z[idx]) - phi0[idx]).pow(2).sum(1).sqrt()
            outside = d > eps
    idx = torch.nonzero(outside).flatten()
    if len(idx):
        x0, z1 = x[idx], z[idx]
        lo = torch.zeros(len(idx), device=x.device, dtype=x.dtype)
        hi = torch.ones_like(lo)
        with torch.no_grad():
            for _ in range(bisection_steps):
                mid = (lo + hi) / 2
                dm = (dist.embed(x0 + _view(mid, x0) * (z1 - x0)) - phi0[idx]).pow(2).sum(1).sqrt()
                inside = dm <= eps
                lo = torch.where(inside, mid, lo)
                hi = torch.where(inside, hi, mid)
        z[idx] = x0 + _view(lo, x0) * (z1 - x0)
    with torch.no_grad():
        d = (dist.embed(z) - phi0).pow(2).sum(1).sqrt()
    return torch.where(_view(d <= eps, x), z, x)


def _check_common(steps, kappa, projection, seed):
    check_positive_int(steps, "steps")
    check_real(kappa, "kappa", finite=False)
    if not kappa > 0:
        raise ValueError(f"kappa must be > 0 (the cap of the margin loss), got {kappa}")
    check_choice(projection, "projection", PROJECTIONS)
    check_seed(seed, allow_none=True)


def _jvp(fn, z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The Jacobian-vector product of ``fn`` at ``z`` along ``v`` (forward mode)."""
    with warnings.catch_warnings():  # torch's forward-mode decompositions warn about torch.jit once
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        return torch.func.jvp(fn, (z,), (v,))[1]


def _cg(apply, b: torch.Tensor, steps: int) -> torch.Tensor:
    """Batched conjugate gradient for ``A v = b`` (A symmetric positive semi-definite), from 0."""
    sol = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = r.flatten(1).pow(2).sum(1)
    rs0 = rs.clone()
    for _ in range(steps):
        active = rs > 1e-12 * rs0.clamp_min(1e-30)
        if not bool(active.any()):
            break
        ap = apply(p)
        pap = (p * ap).flatten(1).sum(1)
        alpha = torch.where(active & (pap > 0), rs / pap.clamp_min(1e-30), torch.zeros_like(rs))
        sol = sol + _view(alpha, b) * p
        r = r - _view(alpha, b) * ap
        rs_new = r.flatten(1).pow(2).sum(1)
        beta = torch.where(active, rs_new / rs.clamp_min(1e-30), torch.zeros_like(rs))
        p = r + _view(beta, b) * p
        rs = torch.where(active, rs_new, rs)
    return sol


def ppgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps, lpips, steps: int = 40,
         step_size: float | None = None, cg_steps: int = 5, kappa: float = 1.0, targets: torch.Tensor | None = None,
         projection: str = "newton", seed: int | None = 0) -> torch.Tensor:
    r"""Perceptual projected gradient descent (PPGD) in the LPIPS ball of radius ``eps``.

    From :math:`\tilde x^0 = \Pi_{[0,1]}(x + \mathcal N(0, 0.01^2 I))`, each of ``steps``
    iterations solves the first-order problem

    .. math::

        \max_\delta\ \nabla\mathcal{L}^\top\delta \quad\text{s.t.}\quad \|J\delta\|_2 \le \eta,
        \qquad \delta^\star = \eta\, \frac{(J^\top J)^{-1}\nabla\mathcal{L}}
        {\|J (J^\top J)^{-1}\nabla\mathcal{L}\|_2},

    with :math:`J` the Jacobian of the LPIPS embedding :math:`\phi` at :math:`\tilde x` and
    :math:`(J^\top J)^{-1}\nabla\mathcal{L}` approximated by ``cg_steps`` of conjugate gradient
    (each needs one Jacobian-vector and one vector-Jacobian product), steps to
    :math:`\Pi_{[0,1]}(\tilde x + \delta^\star)` (samples with :math:`\|\nabla\mathcal{L}\| < 10^{-4}`
    stay), and projects onto the ball (:func:`project`).

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs in [0, 1] to logits.
    x, y : torch.Tensor
        Inputs (B, C, H, W) in [0, 1] and labels (B,).
    eps : float
        LPIPS budget (>= 0), in the units of ``lpips``.
    lpips : LPIPS or "self"
        The distance (e.g. :func:`~robustlab.perceptual.lpips.lpips_net`); ``"self"``: the
        model's own features (:meth:`LPIPS.self_bound`).
    steps : int
        Iterations (the paper's evaluation: 40).
    step_size : float, optional
        :math:`\eta`, in LPIPS units; default ``2 * eps / steps`` (the reference's).
    cg_steps : int
        Conjugate-gradient iterations per step (the reference's 5).
    kappa : float
        Cap of the margin loss.
    targets : torch.Tensor, optional
        Target labels for a targeted attack.
    projection : {"newton", "bisection"}
    seed : int, optional
        Seed of the random start (``None``: torch's global generator, which ``fit`` seeds).

    Returns
    -------
    torch.Tensor
        ``x_adv`` in [0, 1] with ``lpips(x, x_adv) <= eps``, on the device of ``x``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("cnn", "digits", width=4)
    >>> dist = LPIPS(rl.models.build("cnn", "digits", width=4, seed=1))
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv = ppgd(model, x, y, eps=0.3, lpips=dist, steps=3)
    >>> bool((dist(x, x_adv) <= 0.3).all())
    True
    """
    x_in = x
    eps = _eps_number(eps)
    x, y, targets, _ = _prepare(model, x, y, targets, eps)
    _check_common(steps, kappa, projection, seed)
    check_positive_int(cg_steps, "cg_steps")
    if step_size is not None:
        check_positive(step_size, "step_size")
    eta = 2.0 * eps / steps if step_size is None else float(step_size)
    dist = _distance(lpips, model)
    if eps == 0:
        return _to_input(x_in, x)
    gen = _generator(seed, x.device)
    with _frozen(model, dist):
        with torch.no_grad():
            phi0 = dist.embed(x)
        best = _BestInside(x)
        z = _start(x, gen)
        for _ in range(steps):
            zr = z.detach().requires_grad_(True)
            with torch.enable_grad():
                obj = margin_loss(model(zr), y, kappa, targets)
                (grad,) = torch.autograd.grad(obj.sum(), zr)
                d_now = _dist_from(dist, phi0, zr).detach()
            best.update(z, obj.detach(), d_now <= eps)
            z0 = z.detach()
            _, vjp_fn = torch.func.vjp(dist.embed, z0)

            def jtj(v, z0=z0, vjp_fn=vjp_fn):
                return vjp_fn(_jvp(dist.embed, z0, v))[0]

            delta = _cg(jtj, grad, cg_steps)
            jd = _jvp(dist.embed, z0, delta)
            scale = eta / jd.flatten(1).norm(dim=1).clamp_min(1e-12)
            active = grad.flatten(1).norm(dim=1) >= 1e-4
            stepped = (z0 + _view(scale, z0) * delta).clamp(0.0, 1.0)
            z = torch.where(_view(active, z0), stepped, z0)
            z = _project(dist, x, phi0, z, eps, projection, 10, 10)
        x_adv = _finish(model, dist, x, phi0, z, eps, y, kappa, targets, best)
    return _to_input(x_in, x_adv)


def _lagrangian_step(model, dist, x, phi0, z, y, lam, eps, kappa, targets, step_size, h):
    """One LPA step: the loss, its normalized descent direction and a step of ``step_size`` in d."""
    zr = z.detach().requires_grad_(True)
    with torch.enable_grad():
        obj = margin_loss(model(zr), y, kappa, targets)
        d = _dist_from(dist, phi0, zr)
        loss = -obj + lam * torch.relu(d - eps)
        (g,) = torch.autograd.grad(loss.sum(), zr)
    direction = -g / _view(g.flatten(1).norm(dim=1).clamp_min(1e-12), g)
    with torch.no_grad():
        d_h = (dist.embed(z + h * direction) - phi0).pow(2).sum(1).sqrt()
    rate = ((d_h - d.detach()) / h).abs().clamp_min(1e-6)  # change of d per pixel-unit move
    stepped = (z + _view(step_size / rate, z) * direction).clamp(0.0, 1.0)
    return stepped.detach(), obj.detach(), d.detach()


def _check_lagrangian(lam, h):
    check_positive(lam, "lam")
    check_positive(h, "h")


def lpa(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps, lpips, steps: int = 20, rounds: int = 5,
        lam: float = 0.01, h: float = 0.1, kappa: float = 1.0, targets: torch.Tensor | None = None,
        projection: str = "newton", seed: int | None = 0) -> torch.Tensor:
    r"""The Lagrangian perceptual attack (LPA) in the LPIPS ball of radius ``eps``.

    Minimizes :math:`-\mathcal{L}(f(\tilde x), y) + \lambda\,\max(0, d(x, \tilde x) - \varepsilon)`
    over ``rounds`` rounds of ``steps`` iterations each, from
    :math:`\Pi_{[0,1]}(x + \mathcal N(0, 0.01^2 I))` with :math:`\lambda` = ``lam`` per sample.
    An iteration moves along the normalized negative gradient :math:`u` by
    :math:`s_i / r` pixel units, where :math:`r = |d(x, \tilde x + h u) - d(x, \tilde x)| / h`
    is the finite-difference rate of change of :math:`d`, so that :math:`d` changes by about
    the step :math:`s_i`, which decays geometrically from :math:`\varepsilon` to
    :math:`0.1\varepsilon` over the round; clamps to [0, 1]. A sample stops moving once it is
    misclassified inside the ball. After each round :math:`\lambda \leftarrow 10\lambda` where
    :math:`d \ge \varepsilon`. Finally the iterate is projected onto the ball
    (:func:`project`), and the best point inside the ball is returned.

    Parameters
    ----------
    model, x, y, eps, lpips, kappa, targets, projection, seed
        As in :func:`ppgd`.
    steps : int
        Iterations per round (the reference's 20; the paper's evaluation 40).
    rounds : int
        Rounds ("binary steps") of increasing :math:`\lambda` (5).
    lam : float
        Initial :math:`\lambda` (0.01).
    h : float
        Finite-difference step, pixel units (0.1).

    Returns
    -------
    torch.Tensor
        ``x_adv`` in [0, 1] with ``lpips(x, x_adv) <= eps``, on the device of ``x``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("cnn", "digits", width=4)
    >>> dist = LPIPS(rl.models.build("cnn", "digits", width=4, seed=1))
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv = lpa(model, x, y, eps=0.3, lpips=dist, steps=3, rounds=2)
    >>> bool((dist(x, x_adv) <= 0.3).all())
    True
    """
    x_in = x
    eps = _eps_number(eps)
    x, y, targets, _ = _prepare(model, x, y, targets, eps)
    _check_common(steps, kappa, projection, seed)
    check_positive_int(rounds, "rounds")
    _check_lagrangian(lam, h)
    dist = _distance(lpips, model)
    if eps == 0:
        return _to_input(x_in, x)
    gen = _generator(seed, x.device)
    with _frozen(model, dist):
        with torch.no_grad():
            phi0 = dist.embed(x)
        best = _BestInside(x)
        z = _start(x, gen)
        lam_t = torch.full((x.shape[0],), float(lam), device=x.device, dtype=x.dtype)
        d = torch.zeros_like(lam_t)
        for _ in range(rounds):
            for i in range(steps):
                s = eps * 0.1 ** (i / max(steps - 1, 1))
                stepped, obj, d = _lagrangian_step(model, dist, x, phi0, z, y, _view(lam_t, lam_t), eps, kappa,
                                                   targets, s, h)
                inside = d <= eps
                best.update(z, obj, inside)
                live = ~((obj > 0) & inside)  # decided before the step (perceptual-advex issue #6)
                z = torch.where(_view(live, z), stepped, z)
            with torch.no_grad():
                d = (dist.embed(z) - phi0).pow(2).sum(1).sqrt()
            lam_t = torch.where(d >= eps, lam_t * 10, lam_t)
        z = _project(dist, x, phi0, z, eps, projection, 10, 10)
        x_adv = _finish(model, dist, x, phi0, z, eps, y, kappa, targets, best)
    return _to_input(x_in, x_adv)


def fast_lpa(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps, lpips, steps: int = 10,
             lam: float = 10.0, h: float = 0.1, kappa: float = math.inf, targets: torch.Tensor | None = None,
             project: bool = True, projection: str = "newton", seed: int | None = 0) -> torch.Tensor:
    r"""Fast-LPA: one round of LPA with :math:`\lambda` ramped up, the attack PAT trains against.

    Iteration :math:`i = 0, \dots, N-1` of ``steps`` :math:`= N` is an LPA step
    (:func:`lpa`) with :math:`\lambda_i = \lambda_0\, 0.1^{1 - i/N}` (from 1 to nearly 10 for
    :math:`\lambda_0 = 10`) and step :math:`\varepsilon\, 0.1^{i/N}`, on the uncapped margin
    loss (:math:`\kappa = \infty`). Every sample moves at every iteration.

    Parameters
    ----------
    model, x, y, eps, lpips, targets, projection, seed
        As in :func:`ppgd`.
    steps : int
        Iterations (10 in the paper's PAT runs).
    lam : float
        :math:`\lambda_0`.
    h : float
        Finite-difference step, pixel units.
    kappa : float
        Cap of the margin loss (default: none).
    project : bool
        Project the last iterate onto the ball and return the best point inside it (the
        attack contract). ``False`` returns the last iterate as the paper does: a soft
        bound, so ``d(x, x_adv)`` may exceed ``eps`` a little (what PAT trains on).

    Returns
    -------
    torch.Tensor
        ``x_adv`` in [0, 1] on the device of ``x``; within ``eps`` when ``project``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("cnn", "digits", width=4)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv = fast_lpa(model, x, y, eps=0.3, lpips="self", steps=3)
    >>> bool((LPIPS.self_bound(model)(x, x_adv) <= 0.3).all())
    True
    """
    x_in = x
    eps = _eps_number(eps)
    x, y, targets, _ = _prepare(model, x, y, targets, eps)
    _check_common(steps, kappa, projection, seed)
    _check_lagrangian(lam, h)
    if not isinstance(project, bool):
        raise TypeError(f"project must be True or False, got {type(project).__name__}")
    dist = _distance(lpips, model)
    if eps == 0:
        return _to_input(x_in, x)
    gen = _generator(seed, x.device)
    with _frozen(model, dist):
        with torch.no_grad():
            phi0 = dist.embed(x)
        best = _BestInside(x) if project else None
        z = _start(x, gen)
        for i in range(steps):
            lam_i = float(lam) * 0.1 ** (1 - i / steps)
            s = eps * 0.1 ** (i / steps)
            z_next, obj, d = _lagrangian_step(model, dist, x, phi0, z, y, lam_i, eps, kappa, targets, s, h)
            if best is not None:
                best.update(z, obj, d <= eps)
            z = z_next
        if project:
            z = _project(dist, x, phi0, z, eps, projection, 10, 10)
            z = _finish(model, dist, x, phi0, z, eps, y, kappa, targets, best)
    return _to_input(x_in, z)


def random_perturbation(lpips: LPIPS, x: torch.Tensor, eps, *, seed: int = 0, bisection_steps: int = 20,
                        model: torch.nn.Module | None = None) -> torch.Tensor:
    r"""Random Gaussian noise scaled to LPIPS size (just below) ``eps``: the baseline an attack must beat.

    Per sample, a direction :math:`n \sim \mathcal N(0, I)` is scaled by the largest
    :math:`t` (found by bisection after doubling) with
    :math:`d(x, \Pi_{[0,1]}(x + t n)) \le \varepsilon`; where clamping keeps :math:`d` below
    ``eps`` for every :math:`t` up to about 65 the noise at the largest one tried is returned.
    ``lpips="self"`` needs ``model``.

    Returns
    -------
    torch.Tensor
        Inputs in [0, 1] with ``lpips(x, x_noisy) <= eps``, on the device of ``x``.
    """
    if isinstance(lpips, str) and lpips == "self" and model is None:
        raise ValueError("model is required with lpips='self' (the distance uses its features)")
    dist = _distance(lpips, model)
    check_images(x, "x")
    eps = _eps_number(eps)
    seed = check_seed(seed)
    check_positive_int(bisection_steps, "bisection_steps")
    x_in = x
    x = _models.to_model(dist.net, x.detach())
    gen = torch.Generator(device=x.device).manual_seed(seed)
    n = torch.empty_like(x).normal_(generator=gen)
    with eval_mode(dist.net), torch.no_grad():
        phi0 = dist.embed(x)

        def d_at(t):
            return (dist.embed((x + _view(t, x) * n).clamp(0, 1)) - phi0).pow(2).sum(1).sqrt()

        lo = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        hi = torch.full_like(lo, 1e-3)
        for _ in range(17):  # double hi until it leaves the ball (up to 64)
            out = d_at(hi) > eps
            if bool(out.all()):
                break
            lo = torch.where(out, lo, hi)
            hi = torch.where(out, hi, hi * 2)
        for _ in range(bisection_steps):
            mid = (lo + hi) / 2
            inside = d_at(mid) <= eps
            lo = torch.where(inside, mid, lo)
            hi = torch.where(inside, hi, mid)
        z = (x + _view(lo, x) * n).clamp(0, 1)
        z = torch.where(_view(d_at(lo) <= eps, x), z, x)
    return _to_input(x_in, z)
