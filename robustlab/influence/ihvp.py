r"""Inverse Hessian-vector products: an exact solve, conjugate gradients, LiSSA."""

from __future__ import annotations

import math
import warnings

import torch

from .. import config
from .._validate import (check_choice, check_finite, check_nonneg, check_positive, check_positive_int, check_seed,
                         check_tensor)
from .risk import EmpiricalRisk, MAX_EXACT_PARAMS, METHODS, _rows


def _operator(H):
    """A batched ``(B, P) -> (B, P)`` product and its dimension, from an EmpiricalRisk or a matrix."""
    if isinstance(H, EmpiricalRisk):
        full = H.hvp_operator()
        return (lambda V, idx=None: full(V) if idx is None else H.hvp_operator(idx)(V)), H.n_params, H.theta
    check_tensor(H, "H")
    if H.dim() != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"H must be an EmpiricalRisk or a square matrix (P, P), got shape {tuple(H.shape)}")
    check_finite(H, "H")
    if not torch.allclose(H, H.T, rtol=1e-5, atol=1e-8 * float(H.abs().max() + 1)):
        raise ValueError("H must be symmetric")
    return (lambda V, idx=None: V @ H), H.shape[0], H


def inverse_hvp(H, v: torch.Tensor, *, method: str = "cg", damping: float = 0.0, tol: float = 1e-8,
                max_iter: int | None = None, scale: float | None = None, depth: int = 5000, repeats: int = 1,
                batch_size: int | None = None, seed: int = 0, progress: bool | None = None) -> torch.Tensor:
    r"""Inverse-Hessian-vector products, batch-first.

    Parameters
    ----------
    H : EmpiricalRisk or torch.Tensor
        The risk whose Hessian is inverted, or a symmetric matrix (P, P).
    v : torch.Tensor
        (P,) or (B, P): every row is solved for.
    method : {"exact", "cg", "lissa"}
        ``"exact"``: build :math:`H` and solve :math:`(H + \text{damping}\,I)\,x = v`
        (``torch.linalg.solve``; P at most 5000).

        ``"cg"``: conjugate gradients on :math:`(H + \text{damping}\,I)\,x = v`, all rows at
        once, until every residual satisfies :math:`\lVert r\rVert \le \text{tol}\,\lVert v\rVert`.
        Needs :math:`H + \text{damping}\,I` positive definite (convex risk, or enough
        damping); converges in at most P steps in exact arithmetic, and the error falls by
        :math:`(\sqrt\kappa-1)/(\sqrt\kappa+1)` per step (:math:`\kappa` the condition number).
        A direction of non-positive curvature raises ``ValueError``.

        ``"lissa"``: the recursion of Agarwal, Bullins and Hazan (2017), as Koh and Liang ran it,

        .. math::

            h_0 = v, \qquad h_j = v + (1 - \text{damping})\, h_{j-1} - \tilde H_j h_{j-1} / \text{scale},

        where :math:`\tilde H_j` is :math:`H` on a random mini-batch of ``batch_size`` training
        points (all of them if None: then the recursion is deterministic and stops once
        :math:`\lVert h_j - h_{j-1}\rVert \le \text{tol}\,\lVert h_j\rVert`). The fixed point is
        :math:`h = \text{scale}\,(H + \text{damping}\cdot\text{scale}\,I)^{-1} v`, and
        :math:`h_{\text{depth}}/\text{scale}` is returned, averaged over ``repeats`` runs: LiSSA
        inverts the Hessian shifted by :math:`\text{damping}\times\text{scale}` (not by
        ``damping`` as the other two methods). It converges iff every eigenvalue
        :math:`\mu` of :math:`H` has :math:`-\text{damping}\cdot\text{scale} < \mu <
        (2 - \text{damping})\,\text{scale}`; the error shrinks by
        :math:`1 - \text{damping} - \mu_{\min}/\text{scale}` per step, so ``depth`` must be a
        few times :math:`\text{scale}/(\mu_{\min} + \text{damping}\cdot\text{scale})`.
        ``scale`` defaults to 1.1 times the largest eigenvalue of :math:`H` (power iteration).
    damping : float
        >= 0, see above.
    tol : float
        Relative tolerance of ``"cg"`` and deterministic ``"lissa"``.
    max_iter : int, optional
        CG steps (default 2 P + 20); a CG run that does not reach ``tol`` warns.
    scale, depth, repeats, batch_size, seed
        LiSSA's settings (see above); ``seed`` draws the mini-batches.
    progress : bool, optional
        Progress bar for LiSSA.

    Returns
    -------
    torch.Tensor
        The same shape as ``v``.

    Examples
    --------
    >>> import torch
    >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    >>> v = torch.tensor([1.0, 2.0], dtype=torch.float64)
    >>> x = inverse_hvp(A, v, method="cg")
    >>> torch.allclose(A @ x, v)
    True
    >>> torch.allclose(inverse_hvp(A, v, method="lissa"), x, atol=1e-6)
    True
    """
    check_choice(method, "method", METHODS)
    check_nonneg(damping, "damping", allow_tensor=False)
    check_positive(tol, "tol")
    seed = check_seed(seed)
    apply, P, like = _operator(H)
    V, single = _rows(v, P, like)
    if method == "exact":
        M = H.hessian() if isinstance(H, EmpiricalRisk) else H.to(V)
        if P > MAX_EXACT_PARAMS:
            raise ValueError(f"method='exact' builds H; {P} parameters exceed {MAX_EXACT_PARAMS}")
        M = M + damping * torch.eye(P, dtype=M.dtype, device=M.device)
        X = torch.linalg.solve(M, V.T).T
    elif method == "cg":
        X = _cg(apply, V, damping=damping, tol=tol, max_iter=2 * P + 20 if max_iter is None else
                check_positive_int(max_iter, "max_iter"))
    else:
        X = _lissa(H, apply, V, damping=damping, tol=tol, scale=scale, depth=check_positive_int(depth, "depth"),
                   repeats=check_positive_int(repeats, "repeats"), batch_size=batch_size, seed=seed,
                   progress=config.progress_enabled(progress))
    return X[0] if single else X


def _cg(apply, V, *, damping, tol, max_iter):
    X = torch.zeros_like(V)
    R = V.clone()
    D = R.clone()
    rs = (R * R).sum(1)
    target = tol * V.norm(dim=1)
    for _ in range(max_iter):
        active = rs.sqrt() > target
        if not bool(active.any()):
            return X
        AD = apply(D) + damping * D
        curvature = (D * AD).sum(1)
        if bool((curvature[active] <= 0).any()):
            raise ValueError("H + damping I is not positive definite (CG met a direction of non-positive "
                             "curvature); increase damping or use method='exact'")
        alpha = torch.where(active, rs / curvature.clamp_min(torch.finfo(V.dtype).tiny), torch.zeros_like(rs))
        X = X + alpha[:, None] * D
        R = R - alpha[:, None] * AD
        rs_new = (R * R).sum(1)
        beta = torch.where(active, rs_new / rs.clamp_min(torch.finfo(V.dtype).tiny), torch.zeros_like(rs))
        D = R + beta[:, None] * D
        rs = rs_new
    if bool((rs.sqrt() > target).any()):
        worst = float((rs.sqrt() / V.norm(dim=1).clamp_min(torch.finfo(V.dtype).tiny)).max())
        warnings.warn(f"conjugate gradients stopped after max_iter={max_iter} steps with relative residual "
                      f"{worst:.2e} > tol={tol:.2e}", RuntimeWarning, stacklevel=3)
    return X


def _largest_eigenvalue(apply, P, like, iters: int = 50) -> float:
    g = torch.Generator().manual_seed(0)
    u = torch.randn(1, P, generator=g, dtype=like.dtype).to(like.device)
    u = u / u.norm()
    mu = 0.0
    for _ in range(iters):
        w = apply(u)
        mu = float((u * w).sum())
        u = w / w.norm().clamp_min(torch.finfo(like.dtype).tiny)
    return abs(mu)


def _lissa(H, apply, V, *, damping, tol, scale, depth, repeats, batch_size, seed, progress):
    if not damping < 1:
        raise ValueError(f"damping must be < 1 for LiSSA (the recursion multiplies by 1 - damping), got {damping}")
    if scale is None:
        scale = 1.1 * _largest_eigenvalue(apply, V.shape[1], V)
    check_positive(scale, "scale")
    stochastic = batch_size is not None
    if stochastic:
        check_positive_int(batch_size, "batch_size")
        if not isinstance(H, EmpiricalRisk):
            raise ValueError("batch_size (mini-batch Hessians) needs H to be an EmpiricalRisk, not a matrix")
        batch_size = min(batch_size, H.n)
    g = torch.Generator().manual_seed(seed)
    total = torch.zeros_like(V)
    bar = config.progress_bar(repeats * depth, "LiSSA", progress, unit="step")
    for _ in range(repeats):
        h = V.clone()
        for _ in range(depth):
            idx = torch.randperm(H.n, generator=g)[:batch_size].to(V.device) if stochastic else None
            h_new = V + (1 - damping) * h - apply(h, idx) / scale
            bar.update(1)
            size = float(h_new.norm())
            if not math.isfinite(size):
                raise ValueError(f"LiSSA diverged: scale={scale:.4g} must exceed the largest eigenvalue of H "
                                 f"divided by (2 - damping), and H + damping*scale*I must be positive definite")
            done = not stochastic and float((h_new - h).norm()) <= tol * size
            h = h_new
            if done:
                break
        total += h / scale
    bar.close()
    return total / repeats
