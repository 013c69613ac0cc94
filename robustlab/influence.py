r"""Influence functions: which training points is a prediction owed to? (chapter 11)

The influence curve of robust statistics measures the change of an estimator when one
point of the sample is up-weighted. Koh and Liang (2017) applied it to a trained model.
Let the parameters :math:`\hat\theta` minimize the (regularized) empirical risk

.. math::

    R(\theta) = \frac{1}{n} \sum_{i=1}^{n} L(z_i; \theta) + \frac{\lambda}{2} \lVert\theta\rVert_2^2 ,

with :math:`L` the cross-entropy of one example :math:`z = (x, y)` and :math:`\lambda` the
weight decay. Up-weighting one training point :math:`z` by :math:`\epsilon`,
:math:`\hat\theta_{\epsilon} = \arg\min_\theta R(\theta) + \epsilon L(z; \theta)`, moves the
parameters by :math:`d\hat\theta_\epsilon/d\epsilon|_{0} = -H^{-1} \nabla_\theta L(z; \hat\theta)`
with :math:`H = \nabla^2_\theta R(\hat\theta)` (implicit function theorem, :math:`H` positive
definite), and the loss at a test point :math:`z_{\text{test}}` by

.. math::

    \mathcal{I}_{\text{up,loss}}(z, z_{\text{test}})
      = -\nabla_\theta L(z_{\text{test}}; \hat\theta)^\top H^{-1} \nabla_\theta L(z; \hat\theta).

**Sign convention** (used everywhere in this module). Removing :math:`z` is
:math:`\epsilon = -1/n`, so the predicted change of the test loss when :math:`z` is left out is

.. math::

    L(z_{\text{test}}; \hat\theta_{-z}) - L(z_{\text{test}}; \hat\theta)
      \approx -\tfrac{1}{n}\, \mathcal{I}_{\text{up,loss}}(z, z_{\text{test}}).

A point with :math:`\mathcal{I}_{\text{up,loss}} > 0` is **harmful** (up-weighting it raises
the test loss, removing it lowers it); one with :math:`\mathcal{I}_{\text{up,loss}} < 0` is
**helpful**. The leave-one-out objective keeps the factor :math:`1/n` and the penalty:
:math:`R_{-z}(\theta) = \frac1n \sum_{z_i \ne z} L(z_i; \theta) + \frac{\lambda}{2}\lVert\theta\rVert^2`,
which is exactly :math:`\epsilon = -1/n` (what :func:`leave_one_out` retrains).

What the module computes:

* :class:`EmpiricalRisk` -- :math:`R` over a chosen subset of a model's parameters
  (``params="all"``, ``"last"`` for the last layer only, a common choice for deep nets, or a
  list of names), its per-sample gradients (``torch.func.vmap`` over ``grad``) and
  Hessian-vector products :math:`Hv` by double backpropagation, batch-first.
* :func:`inverse_hvp` -- :math:`(H + \text{damping}\,I)^{-1} v` by an exact solve, conjugate
  gradients, or LiSSA (Agarwal, Bullins and Hazan, 2017).
* :func:`influences` -- :math:`\mathcal{I}_{\text{up,loss}}` of every training point on every
  test point; :meth:`Influences.helpful`, :meth:`Influences.harmful`,
  :func:`plot_influential`.
* :func:`leave_one_out` -- the ground truth by retraining: exact (Newton's method, to a
  gradient tolerance) for strongly convex risks such as L2-regularized logistic regression,
  approximate (warm-started L-BFGS) for small nets; :func:`fit_to_optimum` trains a model to
  a stationary point of :math:`R` first; :func:`pearson`, :func:`spearman`.
* :func:`fragility_study` -- Basu, Pope and Feizi (2021) at small scale: how well influence
  tracks leave-one-out retraining for a linear model against deeper nets, with and without
  weight decay, across test points.

Everything here is for small problems (hundreds of training points, thousands of parameters):
the whole training set is one batch and :meth:`EmpiricalRisk.hessian` builds :math:`H`.
The model is evaluated in eval mode; the loss is the cross-entropy of its logits.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from . import config
from ._validate import (check_choice, check_class_index, check_finite, check_model, check_nonneg, check_positive,
                        check_positive_int, check_seed, check_tensor, check_xy)

__all__ = [
    "select_parameters",
    "EmpiricalRisk",
    "inverse_hvp",
    "Influences",
    "influences",
    "plot_influential",
    "fit_to_optimum",
    "LeaveOneOut",
    "leave_one_out",
    "pearson",
    "spearman",
    "FragilityTable",
    "fragility_study",
]

METHODS = ("exact", "cg", "lissa")
MAX_EXACT_PARAMS = 5000  # building H takes P Hessian-vector products and P^2 numbers


# --------------------------------------------------------------------------- parameters and the risk

def select_parameters(model: torch.nn.Module, params="all") -> list[str]:
    """Names of the parameters influence is computed over.

    Parameters
    ----------
    model : torch.nn.Module
    params : "all", "last" or sequence of str
        ``"all"``: every parameter; ``"last"``: those of the last submodule that owns
        parameters (the output layer: influence over the last layer only, with the features
        below it fixed, as Koh and Liang did for Inception); or explicit names from
        ``model.named_parameters()``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.MLP((1, 8, 8), 10, hidden=(4,))
    >>> select_parameters(model, "last")
    ['4.weight', '4.bias']
    """
    check_model(model)
    named = [n for n, _ in model.named_parameters()]
    if not named:
        raise ValueError("model has no parameters")
    if isinstance(params, str):
        check_choice(params, "params", ("all", "last"))
        if params == "all":
            return named
        last = None
        for mod_name, mod in model.named_modules():
            own = [n for n, _ in mod.named_parameters(recurse=False)]
            if own:
                last = [f"{mod_name}.{n}" if mod_name else n for n in own]
        return last
    try:
        names = list(params)
    except TypeError:
        raise TypeError(f"params must be 'all', 'last' or a sequence of parameter names, got {type(params).__name__}")
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError("params must be a non-empty sequence of parameter names")
    unknown = [n for n in names if n not in named]
    if unknown:
        raise ValueError(f"params names unknown parameters {unknown}; the model has {named}")
    if len(set(names)) != len(names):
        raise ValueError(f"params lists a parameter twice: {names}")
    return names


@contextlib.contextmanager
def _eval_mode(model):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _rows(v, n_params: int, like: torch.Tensor, name: str = "v"):
    """``v`` of shape (P,) or (B, P) as (B, P) on ``like``'s device and dtype, and whether it was 1-D."""
    check_tensor(v, name)
    if v.dim() not in (1, 2) or v.shape[-1] != n_params:
        raise ValueError(f"{name} must have shape ({n_params},) or (B, {n_params}), got {tuple(v.shape)}")
    check_finite(v, name)
    single = v.dim() == 1
    v = v.to(device=like.device, dtype=like.dtype)
    return (v[None] if single else v), single


class EmpiricalRisk:
    r"""The regularized empirical risk of a model over a subset of its parameters.

    .. math::

        R_w(\theta) = \frac{1}{n} \sum_{i=1}^n w_i\, L(z_i; \theta) + \frac{\lambda}{2}\lVert\theta\rVert_2^2,

    with :math:`L` the cross-entropy, :math:`w = \mathbf{1}` the training risk and
    :math:`w = \mathbf{1} - e_j` the risk with point :math:`j` left out (the same :math:`1/n`,
    see the module docstring). :math:`\theta` is the flat vector of the chosen parameters
    (``params``); the other parameters and the buffers stay fixed at their values when the
    object was made. The model's own parameters are never changed (only
    :func:`fit_to_optimum` writes them).

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs in [0, 1] to logits; evaluated in eval mode.
    train : Split or (x, y)
        The training set, ``x`` (N, ...) in [0, 1], ``y`` int64 (N,); moved to the model's
        device and dtype.
    params : "all", "last" or sequence of str
        See :func:`select_parameters`.
    weight_decay : float
        :math:`\lambda \ge 0`; note that ``torch.optim``'s ``weight_decay=λ`` adds
        :math:`\lambda\theta` to the gradient, the same penalty.

    Attributes
    ----------
    theta : torch.Tensor
        (P,) the chosen parameters, flattened (a detached copy).
    n, n_params : int

    Examples
    --------
    >>> import torch, robustlab as rl
    >>> model = rl.models.MLP((1, 8, 8), 2, hidden=()).double()
    >>> train = rl.data.subset(rl.data.load("digits")[0], 20)
    >>> train = (train.x, train.y % 2)
    >>> risk = EmpiricalRisk(model, train, weight_decay=0.1)
    >>> risk.n_params
    130
    >>> v = torch.randn(3, 130, dtype=torch.float64)
    >>> torch.allclose(risk.hvp(v), v @ risk.hessian())
    True
    """

    def __init__(self, model: torch.nn.Module, train, *, params="all", weight_decay: float = 0.0):
        check_model(model)
        x, y = check_xy(train, "train")
        check_nonneg(weight_decay, "weight_decay", allow_tensor=False)
        self.model = model
        self.names = select_parameters(model, params)
        named = dict(model.named_parameters())
        chosen = [named[n] for n in self.names]
        self.shapes = [p.shape for p in chosen]
        self.numels = [p.numel() for p in chosen]
        self.theta = torch.cat([p.detach().reshape(-1) for p in chosen]).clone()
        self.fixed = {n: p.detach() for n, p in named.items() if n not in self.names}
        self.fixed.update({n: b for n, b in model.named_buffers()})
        self.x = x.to(device=self.theta.device, dtype=self.theta.dtype)
        self.y = y.to(self.theta.device)
        self.n = int(x.shape[0])
        self.n_params = int(self.theta.numel())
        self.weight_decay = float(weight_decay)
        with _eval_mode(model):
            n_classes = self.logits(self.theta, self.x[:1]).shape[-1]
        if int(self.y.max()) >= n_classes:
            raise ValueError(f"train.y holds class {int(self.y.max())} but the model has {n_classes} classes")

    # -- the functional model
    def _unflatten(self, theta):
        out, start = dict(self.fixed), 0
        for name, shape, k in zip(self.names, self.shapes, self.numels):
            out[name] = theta[start:start + k].view(shape)
            start += k
        return out

    def logits(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The model's logits at parameters ``theta`` (P,) on inputs ``x`` (B, ...)."""
        return torch.func.functional_call(self.model, self._unflatten(theta), (x,))

    def _losses(self, theta, x, y):
        return F.cross_entropy(self.logits(theta, x), y, reduction="none")

    def _weighted(self, theta, w):
        return (w * self._losses(theta, self.x, self.y)).sum() / self.n + 0.5 * self.weight_decay * (theta * theta).sum()

    def _check_theta(self, theta):
        if theta is None:
            return self.theta
        check_tensor(theta, "theta")
        if theta.shape != (self.n_params,):
            raise ValueError(f"theta must have shape ({self.n_params},), got {tuple(theta.shape)}")
        return theta.to(device=self.theta.device, dtype=self.theta.dtype)

    def _check_weights(self, weights):
        if weights is None:
            return torch.ones(self.n, device=self.theta.device, dtype=self.theta.dtype)
        check_tensor(weights, "weights")
        if weights.shape != (self.n,):
            raise ValueError(f"weights must have shape ({self.n},), got {tuple(weights.shape)}")
        return weights.to(device=self.theta.device, dtype=self.theta.dtype)

    # -- values and derivatives
    def losses(self, data=None, theta=None) -> torch.Tensor:
        """Per-example losses :math:`L(z_i; \\theta)`, shape (N,), on ``data`` (default: the training set)."""
        theta = self._check_theta(theta)
        x, y = self._data(data)
        with _eval_mode(self.model), torch.no_grad():
            return self._losses(theta, x, y)

    def value(self, theta=None, weights=None) -> torch.Tensor:
        """:math:`R_w(\\theta)` (a scalar tensor); ``weights`` (N,) default all ones."""
        theta, w = self._check_theta(theta), self._check_weights(weights)
        with _eval_mode(self.model), torch.no_grad():
            return self._weighted(theta, w)

    def gradient(self, theta=None, weights=None) -> torch.Tensor:
        """:math:`\\nabla_\\theta R_w(\\theta)`, shape (P,)."""
        theta, w = self._check_theta(theta), self._check_weights(weights)
        with _eval_mode(self.model):
            return torch.func.grad(self._weighted)(theta, w).detach()

    def _data(self, data):
        if data is None:
            return self.x, self.y
        x, y = check_xy(data, "data")
        return x.to(device=self.theta.device, dtype=self.theta.dtype), y.to(self.theta.device)

    def per_sample_grads(self, data=None, *, chunk_size: int = 256) -> torch.Tensor:
        r"""Per-example gradients :math:`\nabla_\theta L(z_i; \theta)` at :attr:`theta`, shape (N, P).

        Without the penalty (it belongs to the risk, not to one example). Computed with
        ``torch.func.vmap`` over ``torch.func.grad``, ``chunk_size`` examples at a time.
        """
        check_positive_int(chunk_size, "chunk_size")
        x, y = self._data(data)

        def one(theta, xi, yi):
            return self._losses(theta, xi[None], yi[None])[0]

        with _eval_mode(self.model):
            g = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0), chunk_size=chunk_size)(self.theta, x, y)
        return g.detach()

    def hvp(self, v: torch.Tensor, *, indices=None, chunk_size: int = 512) -> torch.Tensor:
        r"""Hessian-vector products :math:`Hv` at :attr:`theta` by double backpropagation.

        :math:`H = \nabla^2 R(\theta)`; the vector-Jacobian product of
        :math:`\nabla R` (reverse over reverse) gives :math:`v^\top H = (Hv)^\top` since
        :math:`H` is symmetric. Batch-first: ``v`` (P,) or (B, P), the B products share one
        backward graph (``torch.func.vmap`` over the VJP).

        Parameters
        ----------
        v : torch.Tensor
            (P,) or (B, P).
        indices : torch.Tensor, optional
            Use only these training points: :math:`\frac{1}{|S|}\sum_{i\in S}\nabla^2 L(z_i)
            + \lambda I`, an unbiased estimate of :math:`H` (LiSSA's mini-batches).
        """
        V, single = _rows(v, self.n_params, self.theta)
        HV = self.hvp_operator(indices, chunk_size=chunk_size)(V)
        return HV[0] if single else HV

    def hvp_operator(self, indices=None, *, chunk_size: int = 512):
        """The map ``V (B, P) -> V H (B, P)`` with the gradient graph built once (for iterative solvers)."""
        check_positive_int(chunk_size, "chunk_size")
        x, y = self.x, self.y
        if indices is not None:
            x, y = x[indices], y[indices]

        def risk(theta):
            return self._losses(theta, x, y).mean() + 0.5 * self.weight_decay * (theta * theta).sum()

        with _eval_mode(self.model):
            _, vjp_fn = torch.func.vjp(torch.func.grad(risk), self.theta)
        batched = torch.func.vmap(lambda u: vjp_fn(u)[0], chunk_size=chunk_size)

        def apply(V):
            with _eval_mode(self.model):
                return batched(V).detach()

        return apply

    def hessian(self) -> torch.Tensor:
        """The exact Hessian :math:`H` (P, P): the products :math:`He_k` for every basis vector."""
        if self.n_params > MAX_EXACT_PARAMS:
            raise ValueError(f"the risk has {self.n_params} parameters; building H is limited to {MAX_EXACT_PARAMS} "
                             f"(choose params='last' or an iterative method)")
        eye = torch.eye(self.n_params, device=self.theta.device, dtype=self.theta.dtype)
        H = self.hvp(eye)
        return 0.5 * (H + H.T)  # symmetric up to rounding


# --------------------------------------------------------------------------- inverse Hessian-vector products

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


# --------------------------------------------------------------------------- influence

class Influences(NamedTuple):
    r"""Influence of every training point on every test point.

    Attributes
    ----------
    scores : torch.Tensor
        (T, N): :math:`\mathcal{I}_{\text{up,loss}}(z_i, z_{\text{test},t})`; > 0 harmful,
        < 0 helpful.
    test_loss : torch.Tensor
        (T,) :math:`L(z_{\text{test}}; \hat\theta)`.
    n : int
        The number of training points.
    """

    scores: torch.Tensor
    test_loss: torch.Tensor
    n: int

    @property
    def predicted_change(self) -> torch.Tensor:
        r"""(T, N): predicted :math:`L(z_{\text{test}}; \hat\theta_{-i}) - L(z_{\text{test}}; \hat\theta)
        = -\mathcal{I}_{\text{up,loss}} / n` when training point i is removed."""
        return -self.scores / self.n

    def helpful(self, k: int) -> torch.Tensor:
        """(T, k) indices of the k most helpful training points (most negative scores) per test point."""
        check_positive_int(k, "k")
        return torch.topk(-self.scores, min(k, self.n), dim=1).indices

    def harmful(self, k: int) -> torch.Tensor:
        """(T, k) indices of the k most harmful training points (most positive scores) per test point."""
        check_positive_int(k, "k")
        return torch.topk(self.scores, min(k, self.n), dim=1).indices


def influences(model: torch.nn.Module, train, test, *, params="all", weight_decay: float = 0.0,
               method: str = "cg", damping: float = 0.0, chunk_size: int = 256, **solver) -> Influences:
    r"""Koh and Liang's :math:`\mathcal{I}_{\text{up,loss}}` of every training point on every test point.

    .. math::

        \mathcal{I}_{\text{up,loss}}(z_i, z_{\text{test}}) = -\, s_{\text{test}}^\top \nabla_\theta L(z_i; \hat\theta),
        \qquad s_{\text{test}} = (H + \text{damping}\,I)^{-1} \nabla_\theta L(z_{\text{test}}; \hat\theta),

    one inverse-HVP per test point (all at once, :func:`inverse_hvp`) and one matrix product
    with the per-sample training gradients. The model must sit at (or near) a minimum of the
    risk with this ``weight_decay`` (see :func:`fit_to_optimum`): the formula assumes
    :math:`\nabla R(\hat\theta) = 0`.

    Parameters
    ----------
    model : torch.nn.Module
    train, test : Split or (x, y)
        Batch-first; ``test`` may hold a single point (batch of one).
    params : "all", "last" or sequence of str
        Parameters the influence is taken over (:func:`select_parameters`).
    weight_decay : float
        :math:`\lambda` of the risk the model was trained on.
    method, damping, **solver
        Passed to :func:`inverse_hvp`.

    Returns
    -------
    Influences
        ``scores`` (T, N); ``predicted_change`` = ``-scores / n``.

    Examples
    --------
    >>> import robustlab as rl
    >>> train, test = rl.data.load("digits")
    >>> tr = (train.x[:40], (train.y[:40] % 2)); te = (test.x[:2], test.y[:2] % 2)
    >>> model = rl.models.MLP((1, 8, 8), 2, hidden=()).double()
    >>> grad_norm = fit_to_optimum(model, tr, weight_decay=0.1)
    >>> inf = influences(model, tr, te, weight_decay=0.1, method="exact")
    >>> inf.scores.shape, inf.harmful(3).shape
    (torch.Size([2, 40]), torch.Size([2, 3]))
    """
    risk = EmpiricalRisk(model, train, params=params, weight_decay=weight_decay)
    xt, yt = check_xy(test, "test")
    test_grads = risk.per_sample_grads((xt, yt), chunk_size=chunk_size)  # (T, P)
    s_test = inverse_hvp(risk, test_grads, method=method, damping=damping, **solver)  # (T, P)
    train_grads = risk.per_sample_grads(chunk_size=chunk_size)  # (N, P)
    scores = -s_test @ train_grads.T
    return Influences(scores, risk.losses((xt, yt)), risk.n)


def plot_influential(train, test, result: Influences, index: int = 0, *, k: int = 5, size: float = 1.4,
                     classes=None):
    """The test point, its k most helpful and its k most harmful training points, as images.

    Each training image is titled with its label and its predicted change of the test loss
    when it is removed (:attr:`Influences.predicted_change`): negative for harmful points
    (removing them lowers the loss), positive for helpful ones. Returns the figure.
    """
    import matplotlib.pyplot as plt

    from .plot import _to_numpy_image

    xtr, ytr = check_xy(train, "train")
    xte, yte = check_xy(test, "test")
    if not isinstance(result, Influences):
        raise TypeError(f"result must be an Influences (from influences()), got {type(result).__name__}")
    if result.scores.shape != (xte.shape[0], xtr.shape[0]):
        raise ValueError(f"result.scores has shape {tuple(result.scores.shape)}, but train and test give "
                         f"({xte.shape[0]}, {xtr.shape[0]})")
    index = check_positive_int(index, "index", allow_zero=True)
    if index >= xte.shape[0]:
        raise ValueError(f"index must be an integer in [0, {xte.shape[0]}), got {index!r}")
    check_positive_int(k, "k")
    k = min(k, xtr.shape[0])
    if xtr.dim() != 4:
        raise ValueError(f"train.x must be images (N, C, H, W) to be shown, got shape {tuple(xtr.shape)}")
    name = (lambda c: classes[c]) if classes is not None else str
    change = result.predicted_change[index].cpu()
    rows = [("helpful", result.helpful(k)[index].cpu()), ("harmful", result.harmful(k)[index].cpu())]
    fig, axes = plt.subplots(2, k + 1, figsize=(size * (k + 1), size * 2.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    arr, cmap = _to_numpy_image(xte[index])
    axes[0, 0].imshow(arr, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    axes[0, 0].set_title(f"test: {name(int(yte[index]))}\nloss {float(result.test_loss[index]):.3f}", fontsize=9)
    for r, (label, idx) in enumerate(rows):
        axes[r, 1].text(-0.15, 0.5, label, transform=axes[r, 1].transAxes, rotation=90, va="center", ha="right")
        for j, i in enumerate(idx.tolist()):
            arr, cmap = _to_numpy_image(xtr[i])
            ax = axes[r, j + 1]
            ax.imshow(arr, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"#{i} y={name(int(ytr[i]))}\nΔloss {float(change[i]):+.2g}", fontsize=8)
    fig.suptitle("predicted change of the test loss when the training point is removed", fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- retraining: the ground truth

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


# --------------------------------------------------------------------------- correlations

def _pair(a, b):
    a = torch.as_tensor(a, dtype=torch.float64).reshape(-1).cpu().numpy() if not isinstance(a, np.ndarray) else a
    b = torch.as_tensor(b, dtype=torch.float64).reshape(-1).cpu().numpy() if not isinstance(b, np.ndarray) else b
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same number of entries, got {a.size} and {b.size}")
    if a.size < 2:
        raise ValueError(f"a correlation needs at least 2 pairs, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a and b must be finite")
    return a, b


def pearson(a, b) -> float:
    r"""Pearson's correlation :math:`\frac{\sum (a_i-\bar a)(b_i-\bar b)}{\sqrt{\sum (a_i-\bar a)^2 \sum (b_i-\bar b)^2}}`.

    NaN if either input is constant.

    >>> pearson([1, 2, 3], [2, 4, 7])
    0.9933992677987828
    """
    a, b = _pair(a, b)
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / denom if denom > 0 else math.nan


def spearman(a, b) -> float:
    """Spearman's rank correlation: Pearson's on the ranks (ties share their average rank).

    >>> spearman([1, 2, 3, 4], [1, 4, 9, 16])
    1.0
    """
    from scipy.stats import rankdata

    a, b = _pair(a, b)
    return pearson(rankdata(a), rankdata(b))


# --------------------------------------------------------------------------- fragility (Basu, Pope, Feizi)

class FragilityTable(NamedTuple):
    """One row per (model, weight decay, test point): the agreement of influence with retraining.

    Columns (equal-length lists): ``model``, ``weight_decay``, ``test_index``, ``pearson``,
    ``spearman``, ``n_removed``, ``train_accuracy``, ``grad_norm`` (of the trained model's risk).
    :meth:`summary` averages over the test points; ``str(table)`` prints both.
    """

    model: list
    weight_decay: list
    test_index: list
    pearson: list
    spearman: list
    n_removed: list
    train_accuracy: list
    grad_norm: list

    def summary(self) -> list[dict]:
        """Mean and spread (min, max) of the correlations over test points, per (model, weight decay)."""
        out = []
        keys = list(dict.fromkeys(zip(self.model, self.weight_decay)))
        for m, wd in keys:
            rows = [i for i in range(len(self.model)) if self.model[i] == m and self.weight_decay[i] == wd]
            p = np.array([self.pearson[i] for i in rows])
            s = np.array([self.spearman[i] for i in rows])
            out.append(dict(model=m, weight_decay=wd, pearson_mean=float(np.nanmean(p)), pearson_min=float(np.nanmin(p)),
                            pearson_max=float(np.nanmax(p)), spearman_mean=float(np.nanmean(s)),
                            train_accuracy=self.train_accuracy[rows[0]], grad_norm=self.grad_norm[rows[0]]))
        return out

    def __str__(self) -> str:
        lines = [f"{'model':<14}{'wd':>8}{'test':>6}{'pearson':>9}{'spearman':>10}"]
        for i in range(len(self.model)):
            lines.append(f"{self.model[i]:<14}{self.weight_decay[i]:>8.3g}{self.test_index[i]:>6}"
                         f"{self.pearson[i]:>9.3f}{self.spearman[i]:>10.3f}")
        lines.append("")
        lines.append(f"{'model':<14}{'wd':>8}{'pearson (min..max)':>24}{'spearman':>10}{'train acc':>10}{'|grad R|':>10}")
        for r in self.summary():
            rng = f"{r['pearson_mean']:.3f} ({r['pearson_min']:.2f}..{r['pearson_max']:.2f})"
            lines.append(f"{r['model']:<14}{r['weight_decay']:>8.3g}{rng:>24}{r['spearman_mean']:>10.3f}"
                         f"{r['train_accuracy']:>10.3f}{r['grad_norm']:>10.1e}")
        return "\n".join(lines)


def _two_classes(split, classes, n, seed):
    x, y = check_xy(split, "data")
    keep = (y == classes[0]) | (y == classes[1])
    x, y = x[keep], (y[keep] == classes[1]).long()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(x.shape[0], generator=g)[:n].sort().values
    return x[idx].double(), y[idx]


def fragility_study(data=None, *, classes=(1, 7), n_train: int = 100, n_test_points: int = 4, k: int = 15,
                    hidden=((), (16,), (16, 16)), weight_decays=(1e-4, 1e-2), damping: float = 0.001,
                    lbfgs_iter: int = 300, seed: int = 0, progress: bool | None = None) -> FragilityTable:
    r"""Basu, Pope and Feizi (2021) at small scale: does influence track leave-one-out retraining?

    For each architecture (``hidden=()`` is logistic regression, ``(16,)`` an MLP with one
    hidden layer of 16 ReLUs, ...) and each weight decay :math:`\lambda`: train to a stationary
    point of :math:`R` (float64, full batch: Newton for the strongly convex logistic
    regression with :math:`\lambda > 0`, L-BFGS otherwise, :func:`fit_to_optimum`); for each of
    ``n_test_points`` test points, compute influence over all parameters with the exact
    Hessian plus ``damping`` (the same damping everywhere: it keeps the non-convex cases
    solvable, as in Koh and Liang's code), take the ``k`` training points of largest
    :math:`|\mathcal{I}_{\text{up,loss}}|` (the paper's choice), retrain without each
    (:func:`leave_one_out`, exact or warm-started L-BFGS) and correlate the predicted with
    the actual changes of the test loss (Pearson and Spearman).

    The paper's findings to compare with: accurate for shallow models, often erroneous for
    deeper ones; weight decay matters; the quality varies a lot across test points.

    With ``weight_decay=0`` on two separable digit classes the risk has no minimum: L-BFGS
    drives every training loss to 0 in floating point, the gradients vanish, retraining
    changes nothing and the correlations are undefined (NaN rows). That is the degenerate
    end of the paper's point that regularization is needed; a small weight decay (1e-4)
    gives a measurable "almost unregularized" row.

    Parameters
    ----------
    data : (Split, Split), optional
        ``(train, test)``; default the digits (``rl.data.load("digits")``), whatever the profile.
    classes : (int, int)
        The two classes kept (relabelled 0 and 1).
    n_train, n_test_points, k : int
        Training points, test points (the first of a seeded draw), removals per test point.
    hidden : sequence of tuples
        Hidden-layer widths of each architecture (``rl.models.MLP``).
    weight_decays : sequence of float
    damping : float
        Added to :math:`H` before solving.
    lbfgs_iter : int
        L-BFGS iterations for training and for each retraining (the whole budget is used:
        without weight decay there is no minimum to converge to).

    Returns
    -------
    FragilityTable
    """
    from . import data as _data
    from .models import MLP

    if data is None:
        data = _data.load("digits")
    train, test = data
    if not (isinstance(classes, (tuple, list)) and len(classes) == 2):
        raise ValueError(f"classes must be two different class indices, got {classes!r}")
    classes = tuple(check_class_index(c, "classes") for c in classes)
    if classes[0] == classes[1]:
        raise ValueError(f"classes must be two different class indices, got {classes!r}")
    seed = check_seed(seed)
    check_positive_int(n_train, "n_train")
    check_positive_int(n_test_points, "n_test_points")
    check_positive_int(k, "k")
    check_nonneg(damping, "damping", allow_tensor=False)
    for wd in weight_decays:
        check_nonneg(wd, "weight_decays", allow_tensor=False)
    xtr, ytr = _two_classes(train, classes, n_train, seed)
    xte, yte = _two_classes(test, classes, n_test_points, seed + 1)
    if xtr.shape[0] < 2 or xte.shape[0] < 1:
        raise ValueError(f"classes {classes} leave too few points")
    k = min(k, xtr.shape[0])
    shape = tuple(xtr.shape[1:])
    mean, std = float(xtr.mean()), float(xtr.std())
    cols = {f: [] for f in FragilityTable._fields}
    configs = [(tuple(h), wd) for h in hidden for wd in weight_decays]
    bar = config.progress_bar(len(configs), "fragility study", config.progress_enabled(progress), unit="model")
    for h, wd in configs:
        name = "logistic" if not h else "mlp " + "x".join(str(w) for w in h)
        torch.manual_seed(seed)
        model = MLP(shape, 2, hidden=h, mean=(mean,), std=(std,)).double()
        convex = not h and wd > 0
        method = "newton" if convex else "lbfgs"
        # L-BFGS runs its whole budget: without weight decay the loss of separable data has no
        # minimum, the gradient vanishes as the weights grow, and any gradient tolerance would
        # stop the retraining at once
        it, tol = (None, 1e-10) if convex else (lbfgs_iter, 1e-30)
        gnorm = fit_to_optimum(model, (xtr, ytr), weight_decay=wd, method=method, max_iter=it, tol=tol)
        with torch.no_grad():
            acc = float((model(xtr).argmax(1) == ytr).double().mean())
        inf = influences(model, (xtr, ytr), (xte, yte), weight_decay=wd, method="exact", damping=damping)
        top = torch.topk(inf.scores.abs(), k, dim=1).indices  # (T, k)
        removed = torch.unique(top)
        loo = leave_one_out(model, (xtr, ytr), (xte, yte), removed, weight_decay=wd, method=method, max_iter=it,
                            tol=tol, progress=False)
        col = {int(i): j for j, i in enumerate(loo.indices.tolist())}
        pred = inf.predicted_change
        for t in range(xte.shape[0]):
            sel = top[t].tolist()
            p = pred[t, sel]
            a = loo.change[t, [col[i] for i in sel]]
            for f, v in zip(FragilityTable._fields, (name, float(wd), t, pearson(p, a), spearman(p, a), len(sel), acc,
                                                     gnorm)):
                cols[f].append(v)
        bar.update(1)
    bar.close()
    return FragilityTable(**cols)
