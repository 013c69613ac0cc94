r"""The empirical risk over a subset of a model's parameters: per-sample gradients,
Hessian-vector products, the Hessian."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .._validate import (check_choice, check_finite, check_model, check_nonneg, check_positive_int, check_tensor,
                         check_xy)


METHODS = ("exact", "cg", "lissa")
MAX_EXACT_PARAMS = 5000  # building H takes P Hessian-vector products and P^2 numbers




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
