r"""APGD (Croce and Hein, 2020): PGD with a step-size schedule of its own, CE and DLR losses.

Auto-PGD needs no step size. It starts with :math:`\eta^{(0)} = 2\varepsilon`, adds
momentum, and halves the step (restarting from the best point so far) at checkpoints
:math:`w_j = \lceil p_j N \rceil` of the :math:`N` iterations, where

.. math::

    p_0 = 0, \quad p_1 = 0.22, \quad p_{j+1} = p_j + \max(p_j - p_{j-1} - 0.03,\ 0.06),

whenever, per sample, either

1. the loss rose in fewer than a fraction :math:`\rho = 0.75` of the steps since the last
   checkpoint, :math:`\sum_{i=w_{j-1}}^{w_j - 1} \mathbb{1}[f(x^{(i+1)}) > f(x^{(i)})] <
   \rho\,(w_j - w_{j-1})`, or
2. the step was not halved at the last checkpoint and the best loss has not improved
   since: :math:`\eta^{(w_{j-1})} = \eta^{(w_j)}` and :math:`f_{\max}^{(w_{j-1})} =
   f_{\max}^{(w_j)}`.

Each iteration takes a projected step and mixes it with the previous move (momentum
:math:`\alpha = 0.75`; the first step has none):

.. math::

    z^{(k+1)} = P\big(x^{(k)} + \eta^{(k)} s(\nabla f(x^{(k)}))\big), \qquad
    x^{(k+1)} = P\big(x^{(k)} + \alpha (z^{(k+1)} - x^{(k)}) + (1 - \alpha)(x^{(k)} - x^{(k-1)})\big),

with :math:`P` the projection onto the ball and the box and :math:`s` the sign (Linf) or
the normalised gradient (L2). Besides the cross-entropy, APGD maximises the
*difference of logits ratio*, invariant to shifting and scaling the logits
(:math:`z_{\pi_1} \ge z_{\pi_2} \ge \dots` are the sorted logits):

.. math::

    \mathrm{DLR}(z, y) = -\frac{z_y - \max_{i \ne y} z_i}{z_{\pi_1} - z_{\pi_3} + 10^{-12}},
    \qquad
    \mathrm{DLR}_t(z, y) = -\frac{z_y - z_t}{z_{\pi_1} - \tfrac12(z_{\pi_3} + z_{\pi_4}) + 10^{-12}},

the second one targeted at a class :math:`t`. APGD-T (:func:`apgd_t`) runs the targeted
DLR loss once for each of the top classes other than :math:`y`.
"""

from __future__ import annotations

import math

import torch

from .._validate import check_choice, check_interval, check_positive_int
from ._common import (Iterates, _check_flag, _eps_flat, _generator, _prepare, _to_input, attack_objective,
                      eval_mode)

__all__ = ["apgd", "apgd_t", "apgd_checkpoints", "dlr_loss", "APGD_LOSSES"]

APGD_LOSSES = ("ce", "dlr")


def apgd_checkpoints(steps: int) -> list:
    r"""The iterations :math:`w_j = \lceil p_j \cdot \texttt{steps} \rceil` at which APGD may halve its step.

    :math:`p_0 = 0`, :math:`p_1 = 0.22`, :math:`p_{j+1} = p_j + \max(p_j - p_{j-1} - 0.03,
    0.06)` while :math:`p_j \le 1`; the distinct values in ``(0, steps]``, increasing.

    Examples
    --------
    >>> apgd_checkpoints(100)
    [22, 41, 57, 70, 80, 87, 93, 99]
    """
    steps = check_positive_int(steps, "steps")
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if nxt > 1.0 + 1e-12:
            break
        p.append(nxt)
    # round before ceil: 0.41 * 100 is 41.00000000000001 in floating point
    w = {math.ceil(round(q * steps, 9)) for q in p[1:]}
    return sorted(v for v in w if 0 < v <= steps)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    r"""The difference-of-logits-ratio loss, per sample (B,): the quantity APGD-DLR maximises.

    Untargeted, :math:`-(z_y - \max_{i \ne y} z_i) / (z_{\pi_1} - z_{\pi_3} + 10^{-12})`
    (needs at least 3 classes); targeted at ``targets``,
    :math:`-(z_y - z_t) / (z_{\pi_1} - \tfrac12(z_{\pi_3} + z_{\pi_4}) + 10^{-12})` (at
    least 4 classes), where :math:`z_{\pi_1} \ge z_{\pi_2} \ge \dots` are the sorted
    logits. Both are invariant to adding a constant to the logits and to scaling them by
    a positive factor; the untargeted loss is positive exactly when ``y`` is not the top class.

    Examples
    --------
    >>> z = torch.tensor([[4.0, 1.0, 0.0, -1.0]])
    >>> round(float(dlr_loss(z, torch.tensor([0]))), 6)  # -(4 - 1) / (4 - 0)
    -0.75
    >>> round(float(dlr_loss(z, torch.tensor([0]), torch.tensor([1]))), 6)  # -(4 - 1) / (4 - (0 - 1) / 2)
    -0.666667
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError("logits must be a tensor of shape (B, classes)")
    need = 3 if targets is None else 4
    if logits.shape[1] < need:
        kind = "untargeted" if targets is None else "targeted"
        raise ValueError(f"the {kind} DLR loss needs at least {need} classes, got {logits.shape[1]}")
    top = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    if targets is None:
        others = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        return -(z_y - others) / (top[:, 0] - top[:, 2] + 1e-12)
    z_t = logits.gather(1, targets[:, None]).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def _apgd_objective(logits, y, targets, loss):
    """What APGD maximises: CE (untargeted), minus the CE of the target, or the DLR losses."""
    if loss == "ce":
        return attack_objective(logits, y if targets is None else targets, "ce", targets is not None)
    return dlr_loss(logits, y, targets)


def _apgd_start(x, eps, norm, gen):
    """APGD's random start on the sphere of the ball: Linf, a uniform direction scaled to
    max-norm eps; L2, a Gaussian direction scaled to norm eps; clamped to the box."""
    if norm == "linf":
        t = torch.empty_like(x).uniform_(-1.0, 1.0, generator=gen)
        t = t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view_as(eps)
    else:
        t = torch.empty_like(x).normal_(generator=gen)
        t = t / t.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(eps)
    return (x + eps * t).clamp(0.0, 1.0)


def _project(v, x, eps, norm, low, high):
    """Onto the ``norm`` ball of radius ``eps`` around ``x``, then the box [0, 1]."""
    if norm == "linf":
        return torch.maximum(torch.minimum(v, high), low)
    d = v - x
    factor = (eps.flatten() / d.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
    return (x + d * factor.view_as(eps)).clamp(0.0, 1.0)


def _apgd_run(model, x, y, targets, eps, norm, loss, steps, rho, momentum, gen, goal_is_target):
    """One APGD run over the batch. Returns (x_best, obj_best, success, x_last), each (B, ...).

    A sample leaves the batch at its first success (misclassified, or classified as its
    target when ``goal_is_target``); its best and last iterate are that input. Elsewhere the
    best iterate is the one of highest objective, the last where the run ended.
    """
    n, shape = x.shape[0], (-1,) + (1,) * (x.dim() - 1)
    checkpoints = set(apgd_checkpoints(steps))
    out_best, out_last = x.clone(), x.clone()
    out_obj = torch.full((n,), float("-inf"), device=x.device, dtype=x.dtype)
    out_succ = torch.zeros(n, dtype=torch.bool, device=x.device)

    def evaluate(xa, yy, tt):
        xa = xa.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xa)
            obj = _apgd_objective(logits, yy, tt, loss)
            (grad,) = torch.autograd.grad(obj.sum(), xa)
        pred = logits.detach().argmax(1)
        succ = pred == tt if goal_is_target else pred != yy
        return obj.detach(), grad, succ

    def direction(g):
        if norm == "linf":
            return g.sign()
        return g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)

    s = {"idx": torch.arange(n, device=x.device), "x": x, "y": y, "eps": eps}
    if targets is not None:
        s["t"] = targets
    if norm == "linf":
        s["low"], s["high"] = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)
    else:
        s["low"] = s["high"] = None
    s["cur"] = _apgd_start(x, eps, norm, gen)
    s["f"], s["g"], succ = evaluate(s["cur"], y, s.get("t"))
    s["prev"] = s["cur"]
    s["xmax"], s["fmax"], s["gmax"] = s["cur"], s["f"].clone(), s["g"]
    s["eta"] = 2.0 * eps
    s["prev_f"] = s["f"]
    s["inc"] = torch.zeros(n, device=x.device, dtype=x.dtype)
    s["fmax_ckpt"] = s["fmax"].clone()
    s["halved"] = torch.zeros(n, dtype=torch.bool, device=x.device)

    def retire(succ):
        """Record the samples that succeeded and drop them from the state."""
        nonlocal s
        if not bool(succ.any()):
            return
        where = s["idx"][succ]
        out_best[where] = s["cur"][succ]
        out_last[where] = s["cur"][succ]
        out_obj[where] = s["f"][succ]
        out_succ[where] = True
        keep = ~succ
        s = {k: (v[keep] if isinstance(v, torch.Tensor) else v) for k, v in s.items()}

    retire(succ)
    last_ckpt = 0
    for k in range(steps):
        if s["idx"].numel() == 0:
            break
        a = 1.0 if k == 0 else momentum
        cur, eta = s["cur"], s["eta"]
        z = _project(cur + eta * direction(s["g"]), s["x"], s["eps"], norm, s["low"], s["high"])
        new = _project(cur + a * (z - cur) + (1.0 - a) * (cur - s["prev"]), s["x"], s["eps"], norm, s["low"], s["high"])
        s["prev"], s["cur"] = cur, new
        s["f"], s["g"], succ = evaluate(new, s["y"], s.get("t"))
        s["inc"] = s["inc"] + (s["f"] > s["prev_f"]).to(x.dtype)
        s["prev_f"] = s["f"]
        better = s["f"] > s["fmax"]
        s["xmax"] = torch.where(better.view(shape), new, s["xmax"])
        s["gmax"] = torch.where(better.view(shape), s["g"], s["gmax"])
        s["fmax"] = torch.where(better, s["f"], s["fmax"])
        retire(succ)
        if k + 1 in checkpoints and k + 1 < steps and s["idx"].numel():
            rose_rarely = s["inc"] < rho * (k + 1 - last_ckpt)
            stalled = ~s["halved"] & (s["fmax"] <= s["fmax_ckpt"])
            halve = rose_rarely | stalled
            hv = halve.view(shape)
            s["eta"] = torch.where(hv, s["eta"] / 2, s["eta"])
            # restart from the best point, with its gradient and no momentum
            s["cur"] = torch.where(hv, s["xmax"], s["cur"])
            s["prev"] = torch.where(hv, s["xmax"], s["prev"])
            s["g"] = torch.where(hv, s["gmax"], s["g"])
            s["prev_f"] = torch.where(halve, s["fmax"], s["prev_f"])
            s["halved"] = halve
            s["fmax_ckpt"] = s["fmax"].clone()
            s["inc"] = torch.zeros_like(s["inc"])
            last_ckpt = k + 1
    where = s["idx"]
    out_best[where] = s["xmax"]
    out_obj[where] = s["fmax"]
    out_last[where] = s["cur"]
    return out_best, out_obj, out_succ, out_last


def _merge(state, idx, run):
    """Fold a run on the samples ``idx`` into the overall result: a success beats a failure,
    and among failures the higher objective wins."""
    best, obj, succ, last = state
    r_best, r_obj, r_succ, r_last = run
    take = r_succ | (~succ[idx] & (r_obj > obj[idx]))
    tv = take.view((-1,) + (1,) * (best.dim() - 1))
    best[idx] = torch.where(tv, r_best, best[idx])
    obj[idx] = torch.where(take, r_obj, obj[idx])
    succ[idx] = succ[idx] | r_succ
    last[idx] = r_last


def _check_apgd_args(norm, steps, restarts, rho, momentum, return_last):
    check_choice(norm, "norm", ("linf", "l2"))
    check_positive_int(steps, "steps")
    check_positive_int(restarts, "restarts")
    check_interval(rho, "rho", 0.0, 1.0)
    check_interval(momentum, "momentum", 0.0, 1.0, low_open=True)
    _check_flag(return_last, "return_last")


def apgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps,
    norm: str = "linf",
    loss: str = "ce",
    steps: int = 100,
    restarts: int = 1,
    targets: torch.Tensor | None = None,
    rho: float = 0.75,
    momentum: float = 0.75,
    seed: int | None = None,
    return_last: bool = False,
):
    r"""Auto-PGD (Croce and Hein, 2020) in the Linf or L2 ball, with the CE or the DLR loss.

    The step-size schedule, momentum and losses are described in
    :mod:`robustlab.attacks.autopgd`: initial step ``2 * eps``, halving at the checkpoints
    :func:`apgd_checkpoints` when the loss rose in fewer than ``rho`` of the steps or
    stalled, each halving restarting from the best point. Each run starts from a random
    point on the sphere of the ball; ``restarts`` runs from new random starts are tried on
    the samples not yet fooled. A sample stops at its first success (misclassified, or
    classified as its target): the attack's goal is reached, and the rest of the batch
    runs faster. Costs ``steps + 1`` forward and backward passes per run.

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs in [0, 1] to logits.
    x, y : torch.Tensor
        Inputs (B, ...) in [0, 1] and their true labels (B,).
    eps : float or torch.Tensor
        Radius of the ball in pixel units (a number or one per sample).
    norm : {"linf", "l2"}
        The threat model's norm.
    loss : {"ce", "dlr"}
        Cross-entropy, or the difference of logits ratio :func:`dlr_loss` (targeted: its
        targeted form).
    steps : int
        Iterations per run.
    restarts : int
        Runs from independent random starts (only on the samples not yet fooled).
    targets : torch.Tensor, optional
        Target labels (B,) for a targeted attack (success: the target is predicted).
    rho : float
        Condition 1's fraction of steps that must raise the loss, in [0, 1].
    momentum : float
        :math:`\alpha` in (0, 1]; 1 is no momentum.
    seed : int, optional
        Seed of the random starts.
    return_last : bool
        Also return the last iterate (of the last run each sample took part in), as
        :class:`Iterates`.

    Returns
    -------
    torch.Tensor or Iterates
        ``x_adv`` in [0, 1] with ``||x_adv - x||_p <= eps``, on the device of ``x``: per
        sample its first success, else the iterate of highest loss; with ``return_last=True``
        the pair ``(best, last)``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv = apgd(model, x, y, eps=0.1, steps=10, seed=0)
    >>> bool(rl.norms.lp_distance(x_adv, x, "linf").max() <= 0.1 + 1e-6)
    True
    """
    x_in = x
    x, y, targets, eps_b = _prepare(model, x, y, targets, eps)
    _check_apgd_args(norm, steps, restarts, rho, momentum, return_last)
    check_choice(loss, "loss", APGD_LOSSES)
    shape = (-1,) + (1,) * (x.dim() - 1)
    eps_t = _eps_flat(eps_b, x).view(shape)
    gen = _generator(seed, x.device)
    state = (x.clone(), torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype),
             torch.zeros(x.shape[0], dtype=torch.bool, device=x.device), x.clone())
    with eval_mode(model):
        for _ in range(restarts):
            idx = torch.nonzero(~state[2]).flatten()
            if idx.numel() == 0:
                break
            t = targets[idx] if targets is not None else None
            run = _apgd_run(model, x[idx], y[idx], t, eps_t[idx], norm, loss, steps, rho, momentum, gen,
                            goal_is_target=targets is not None)
            _merge(state, idx, run)
    if return_last:
        return Iterates(*_to_input(x_in, state[0], state[3]))
    return _to_input(x_in, state[0])


def apgd_t(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps,
    norm: str = "linf",
    steps: int = 100,
    n_targets: int = 9,
    restarts: int = 1,
    targets: torch.Tensor | None = None,
    rho: float = 0.75,
    momentum: float = 0.75,
    seed: int | None = None,
    return_last: bool = False,
):
    r"""APGD-T (Croce and Hein, 2020): targeted-DLR APGD against each of the top classes, untargeted goal.

    For ``k = 1, ..., n_targets`` the target of every input is the class with the k-th
    largest logit on the clean input among the classes other than ``y``; APGD with the
    targeted DLR loss :math:`\mathrm{DLR}_t` (see :func:`dlr_loss`) runs ``steps``
    iterations (``restarts`` times) on the inputs not yet misclassified. Success is any
    misclassification, as for an untargeted attack: the targets only steer the search.
    ``n_targets`` is capped at the number of classes minus 1; the targeted DLR loss needs
    at least 4 classes.

    Parameters
    ----------
    model, x, y, eps, norm, steps, restarts, rho, momentum, seed, return_last
        As for :func:`apgd`.
    n_targets : int
        Number of top classes tried (the reference setting is 9).
    targets : None
        APGD-T chooses its own targets; for a targeted attack on given targets use
        ``apgd(..., targets=t, loss="dlr")``.

    Returns
    -------
    torch.Tensor or Iterates
        ``x_adv`` in [0, 1] within ``eps`` of ``x``, on the device of ``x``: per sample its
        first misclassified iterate, else the iterate of highest targeted DLR loss over
        all targets; with ``return_last=True`` also the last iterate.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv = apgd_t(model, x, y, eps=0.1, steps=10, n_targets=3, seed=0)
    >>> bool(rl.norms.lp_distance(x_adv, x, "linf").max() <= 0.1 + 1e-6)
    True
    """
    if targets is not None:
        raise ValueError("targets must be None: apgd_t targets the top classes itself "
                         "(for given targets use apgd(..., targets=t, loss='dlr'))")
    x_in = x
    x, y, _, eps_b = _prepare(model, x, y, None, eps)
    _check_apgd_args(norm, steps, restarts, rho, momentum, return_last)
    check_positive_int(n_targets, "n_targets")
    shape = (-1,) + (1,) * (x.dim() - 1)
    eps_t = _eps_flat(eps_b, x).view(shape)
    gen = _generator(seed, x.device)
    n = x.shape[0]
    state = (x.clone(), torch.full((n,), float("-inf"), device=x.device, dtype=x.dtype),
             torch.zeros(n, dtype=torch.bool, device=x.device), x.clone())
    with eval_mode(model), torch.no_grad():
        logits = model(x)
    classes = logits.shape[1]
    if classes < 4:
        raise ValueError(f"apgd_t's targeted DLR loss needs at least 4 classes, the model has {classes}")
    # the classes other than y, by decreasing clean logit
    order = logits.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)
    state[2][:] = logits.argmax(1) != y  # already misclassified: x itself is a success
    with eval_mode(model):
        for k in range(min(n_targets, classes - 1)):
            for _ in range(restarts):
                idx = torch.nonzero(~state[2]).flatten()
                if idx.numel() == 0:
                    break
                run = _apgd_run(model, x[idx], y[idx], order[idx, k], eps_t[idx], norm, "dlr", steps, rho, momentum,
                                gen, goal_is_target=False)
                _merge(state, idx, run)
    if return_last:
        return Iterates(*_to_input(x_in, state[0], state[3]))
    return _to_input(x_in, state[0])
