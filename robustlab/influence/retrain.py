r"""The ground truth by retraining: a fit to the optimum and leave-one-out retraining."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .. import config
from .._validate import check_choice, check_positive, check_positive_int, check_xy
from .risk import EmpiricalRisk, _eval_mode


def _newton(risk: EmpiricalRisk, theta: torch.Tensor, W: torch.Tensor, *, tol: float, max_iter: int):
    """Newton's method on R_w for every row of W (m, N) at once, from ``theta`` (m, P)."""
    grad = torch.func.grad(risk._weighted)
    eye = torch.eye(risk.n_params, dtype=theta.dtype, device=theta.device)

    def hess(t, w):  # double backprop against every basis vector, as in EmpiricalRisk.hessian
        _, vjp_fn = torch.func.vjp(lambda u: grad(u, w), t)
        return torch.func.vmap(lambda e: vjp_fn(e)[0])(eye)

    for _ in range(max_iter):
        with _eval_mode(risk.model):
            g = torch.func.vmap(grad)(theta, W)
            if float(g.norm(dim=1).max()) <= tol:
                break
            Hs = torch.func.vmap(hess)(theta, W)
        L, info = torch.linalg.cholesky_ex(Hs)
        if bool((info != 0).any()):
            raise ValueError("the risk's Hessian is not positive definite: Newton's method needs a strongly convex "
                             "risk (weight_decay > 0 and a convex model); use method='lbfgs'")
        theta = theta - torch.cholesky_solve(g[..., None], L)[..., 0]
    with _eval_mode(risk.model):
        g = torch.func.vmap(grad)(theta, W)
    return theta.detach(), g.norm(dim=1).detach()


def _lbfgs(risk: EmpiricalRisk, theta: torch.Tensor, w: torch.Tensor, *, tol: float, max_iter: int):
    t = theta.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([t], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=0.0,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = risk._weighted(t, w)
        loss.backward()
        return loss

    with _eval_mode(risk.model):
        opt.step(closure)
    t = t.detach()
    return t, risk.gradient(t, w).norm()


def _check_solver(method, tol, max_iter):
    check_choice(method, "method", ("newton", "lbfgs"))
    check_positive(tol, "tol")
    if max_iter is None:
        max_iter = 30 if method == "newton" else 1000
    return check_positive_int(max_iter, "max_iter")


def fit_to_optimum(model: torch.nn.Module, train, *, params="all", weight_decay: float = 0.0,
                   method: str = "newton", tol: float = 1e-10, max_iter: int | None = None,
                   weights: torch.Tensor | None = None) -> float:
    r"""Minimize the risk :math:`R_w(\theta)` over ``params`` in place, full batch; return :math:`\lVert\nabla R_w\rVert`.

    ``weights`` (N,) are the :math:`w_i` of :class:`EmpiricalRisk` (default all ones);
    :math:`w_j = 1 + n\epsilon` up-weights point :math:`j` by :math:`\epsilon`.

    ``"newton"``: Newton's method with the exact Hessian, for a strongly convex risk
    (L2-regularized logistic regression; quadratic convergence, stops when
    :math:`\lVert\nabla R\rVert \le` ``tol``); ``"lbfgs"``: ``torch.optim.LBFGS`` with a strong
    Wolfe line search for any model (a stationary point, not necessarily a minimum, after at
    most ``max_iter`` iterations). Use float64 models for tight tolerances. Influence assumes
    :math:`\nabla R(\hat\theta) = 0`; the returned norm says how well that holds.
    """
    max_iter = _check_solver(method, tol, max_iter)
    risk = EmpiricalRisk(model, train, params=params, weight_decay=weight_decay)
    w = risk._check_weights(weights)
    if method == "newton":
        theta, gnorm = _newton(risk, risk.theta[None], w[None], tol=tol, max_iter=max_iter)
        theta, gnorm = theta[0], gnorm[0]
    else:
        theta, gnorm = _lbfgs(risk, risk.theta, w, tol=tol, max_iter=max_iter)
    with torch.no_grad():
        named = dict(model.named_parameters())
        start = 0
        for name, shape, k in zip(risk.names, risk.shapes, risk.numels):
            named[name].copy_(theta[start:start + k].view(shape))
            start += k
    return float(gnorm)


class LeaveOneOut(NamedTuple):
    r"""Actual changes of the test loss when single training points are removed and the model retrained.

    Attributes
    ----------
    indices : torch.Tensor
        (M,) the removed training points.
    change : torch.Tensor
        (T, M) :math:`L(z_{\text{test}}; \hat\theta_{-i}) - L(z_{\text{test}}; \hat\theta)`, both
        optima found by the same solver from the model's parameters.
    test_loss : torch.Tensor
        (T,) :math:`L(z_{\text{test}}; \hat\theta)`.
    grad_norm : torch.Tensor
        (M,) :math:`\lVert\nabla R_{-i}\rVert` at the end of each retraining.
    base_grad_norm : float
        :math:`\lVert\nabla R\rVert` at :math:`\hat\theta`.
    """

    indices: torch.Tensor
    change: torch.Tensor
    test_loss: torch.Tensor
    grad_norm: torch.Tensor
    base_grad_norm: float


def leave_one_out(model: torch.nn.Module, train, test, indices=None, *, params="all", weight_decay: float = 0.0,
                  method: str = "newton", tol: float = 1e-10, max_iter: int | None = None, chunk: int = 16,
                  progress: bool | None = None) -> LeaveOneOut:
    r"""Retrain without each training point in ``indices`` and measure the test-loss change.

    Every retraining minimizes :math:`R_{-i}(\theta) = \frac1n\sum_{j\ne i} L(z_j;\theta) +
    \frac\lambda2\lVert\theta\rVert^2` over ``params`` (the others fixed), warm-started at the
    model's parameters. The reference :math:`\hat\theta` is the minimizer of the full risk
    found by the same solver from the same start, so both sides of the difference carry the
    same optimization error.

    ``method="newton"``: exact up to ``tol`` for a strongly convex risk (L2-regularized
    logistic regression), ``chunk`` removals at a time, vectorized (``torch.func.vmap`` over
    the removal weights). ``method="lbfgs"``: one warm-started L-BFGS run per removal, for
    small nets, where it is approximate (a nearby stationary point, as in Basu, Pope and
    Feizi's retraining). The model itself is not changed.

    Parameters
    ----------
    model, train, test, params, weight_decay
        As in :func:`influences`.
    indices : sequence of int or torch.Tensor, optional
        Training points to remove, one at a time (default: all).
    tol, max_iter
        Gradient-norm tolerance and iteration limit of the solver.

    Returns
    -------
    LeaveOneOut
    """
    max_iter = _check_solver(method, tol, max_iter)
    check_positive_int(chunk, "chunk")
    risk = EmpiricalRisk(model, train, params=params, weight_decay=weight_decay)
    xt, yt = check_xy(test, "test")
    test_data = (xt, yt)
    if indices is None:
        indices = torch.arange(risk.n)
    indices = torch.as_tensor(indices).reshape(-1)
    if indices.dtype not in (torch.int64, torch.int32) or indices.numel() == 0:
        raise TypeError("indices must be a non-empty sequence of integer indices of training points")
    if int(indices.min()) < 0 or int(indices.max()) >= risk.n:
        raise ValueError(f"indices must lie in [0, {risk.n}), got values in [{int(indices.min())}, {int(indices.max())}]")
    indices = indices.long()
    dtype, device = risk.theta.dtype, risk.theta.device
    ones = torch.ones(risk.n, dtype=dtype, device=device)
    solve = _newton if method == "newton" else None
    if solve is not None:
        base, base_g = solve(risk, risk.theta[None], ones[None], tol=tol, max_iter=max_iter)
        base, base_g = base[0], float(base_g[0])
    else:
        base, base_g = _lbfgs(risk, risk.theta, ones, tol=tol, max_iter=max_iter)
        base_g = float(base_g)
    base_loss = risk.losses(test_data, base)
    changes, norms = [], []
    bar = config.progress_bar(indices.numel(), "leave-one-out", config.progress_enabled(progress), unit="point")
    step = chunk if method == "newton" else 1
    for start in range(0, indices.numel(), step):
        idx = indices[start:start + step].to(device)
        W = ones.repeat(idx.numel(), 1)
        W[torch.arange(idx.numel(), device=device), idx] = 0.0
        if method == "newton":
            thetas, g = _newton(risk, base.repeat(idx.numel(), 1), W, tol=tol, max_iter=max_iter)
        else:
            t, g = _lbfgs(risk, base, W[0], tol=tol, max_iter=max_iter)
            thetas, g = t[None], g[None]
        for t in thetas:
            changes.append(risk.losses(test_data, t) - base_loss)
        norms.append(g)
        bar.update(idx.numel())
    bar.close()
    return LeaveOneOut(indices.cpu(), torch.stack(changes, 1).cpu(), base_loss.cpu(), torch.cat(norms).cpu(), base_g)
