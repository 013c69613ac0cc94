r"""Robustness bias (Nanda, Dooley, Singla, Feizi and Dickerson, 2021): are some groups easier to attack?

A classifier :math:`f` can be equally *accurate* on every subgroup of its data and still
be much easier to fool on some of them. The quantity that shows it is the distance of a
correctly classified point to the decision boundary,

.. math:: d_f(x) = \min\{\|\delta\|_2 : f(x + \delta) \ne f(x)\},

and, for a subgroup :math:`s` (a class, or a sensitive attribute), the fraction of its
correctly classified points that lie farther than :math:`\tau` from the boundary,

.. math:: \hat I^\tau_s = \frac{|\{x \in s : f(x) = y,\ d_f(x) > \tau\}|}{|\{x \in s : f(x) = y\}|}.

*Robustness bias* is a gap between the curve :math:`\tau \mapsto \hat I^\tau_s` and the
curve :math:`\hat I^\tau_{\neg s}` of the rest of the data; *adversarial fairness* asks
for every subgroup to be equally robust. The scalar of the reference code's heatmaps is
the relative gap of the areas under the two curves,

.. math:: \beta_s = \frac{\mathrm{AUC}_s - \mathrm{AUC}_{\neg s}}{\mathrm{AUC}_{\neg s}}, \qquad
          \mathrm{AUC} = \int_{\tau_{\min}}^{\tau_{\max}} \hat I^\tau \, d\tau,

negative when :math:`s` is *less* robust than the rest. :math:`d_f` cannot be computed
for a network, so it is bracketed:

* :func:`attack_distances` -- *upper* bounds: the size of a found adversarial example
  (the smallest of DeepFool's and Carlini--Wagner's, lowered by a bisection over PGD
  radii), each returned with the example, so the bound is checkable;
* :func:`certified_distances` -- *lower* bounds: a certified radius, deterministic for
  the network itself (interval bounds in the L2 ball,
  :func:`robustlab.certify.bounds.ibp_l2_certify`) or Cohen et al.'s randomized
  smoothing radius, which is a lower bound for a *different* classifier (the smoothed
  one, :func:`robustlab.smoothing.gaussian.certify`), as in the paper.

:func:`robustness_curves` turns either into the curves and :math:`\beta_s` per group, and
:func:`bias_interval` gives :math:`\beta_s` a bootstrap interval over the test points.
:class:`RobustnessBiasLoss` is the paper's regularizer, a loss object for
:func:`robustlab.train.fit`, and :func:`bias_regularized_model` the model trained with it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from . import config
from . import data as _data
from . import models as _models
from ._validate import (check_choice, check_images, check_labels, check_model, check_nonneg, check_positive,
                        check_positive_int, check_seed, check_tensor)

__all__ = ["BoundaryDistances", "RobustnessCurves", "attack_distances", "deepfool", "certified_distances",
           "robustness_curves", "bias_interval", "MINIMAL_ATTACKS",
           "distance_proxy", "RobustnessBiasLoss", "bias_regularized_model", "DEFAULT_TAU"]

#: The regularizer's threshold :math:`\tau` (L2 pixel units) per data set: about the median
#: attack distance of the standard model (0.49 on the digits' test split; the 8x8 digits
#: have 64 pixels, MNIST 784, so its distances are larger).
DEFAULT_TAU = {"digits": 0.5, "mnist": 1.5, "fashion_mnist": 1.0, "cifar10": 0.5}


class BoundaryDistances(NamedTuple):
    """Per input, a bound on the L2 distance to the decision boundary (pixel units).

    ``distance`` (float64, (B,)) is the bound where ``correct`` (the classifier predicts
    the label; only those points count) and NaN elsewhere; an upper bound is ``inf``
    where no adversarial example was found. ``kind`` is ``"upper"`` (attack) or
    ``"lower"`` (certificate); ``method`` names the estimator; ``x_adv`` (upper bounds
    only, else ``None``) holds the adversarial example at that distance (``x`` itself
    where none was found or the point is misclassified). All on the device of ``x``.
    """

    distance: torch.Tensor
    correct: torch.Tensor
    kind: str
    method: str
    x_adv: torch.Tensor | None = None


def _predict(model, x, batch_size=1024):
    from .train import predict
    return predict(model, x, batch_size=batch_size)


MINIMAL_ATTACKS = ("cw", "deepfool")


def attack_distances(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, attacks=MINIMAL_ATTACKS,
                     bisection_steps: int = 8, pgd_steps: int = 20, cw_kwargs: dict | None = None,
                     max_distance: float | None = None, seed: int = 0, batch_size: int = 512,
                     progress: bool | None = None, cache: bool = False) -> BoundaryDistances:
    r"""Upper bounds on the L2 distance to the boundary: the smallest adversarial example found.

    For every correctly classified input, the smallest result of the minimal-norm attacks
    ``attacks`` (:func:`robustlab.attacks.cw_l2` and :func:`deepfool`), shrunk by a bisection along its
    own direction (removing DeepFool's overshoot), gives an adversarial example at
    distance :math:`u`; then ``bisection_steps``
    rounds of bisection on :math:`[0, u]` with L2 :func:`robustlab.attacks.pgd`
    (``pgd_steps`` steps, per-input radii) lower :math:`u` wherever PGD succeeds at the
    midpoint. Where they all fail, the bisection starts from ``max_distance`` (default the
    diameter :math:`\sqrt d` of the pixel box) if PGD succeeds there. Taking the minimum
    of several attacks is the usual advice for approximating the minimal perturbation
    (the reference code uses DeepFool and CW from Foolbox). Every returned distance is
    the norm of a returned input the model misclassifies, so it is a true upper bound on
    :math:`d_f(x)`, whose quality depends on the attacks' strength.

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs in [0, 1] to logits.
    x, y : torch.Tensor
        Inputs (B, ...) in [0, 1] and labels (B,).
    attacks : sequence of {"cw", "deepfool"}
        The minimal-norm attacks whose smaller result starts the bisection (CW costs
        ``binary_steps * steps`` = 600 gradient steps by default, DeepFool about
        ``C`` backward passes per step for a few steps; DeepFool alone is the cheap choice).
    bisection_steps : int
        Rounds of PGD bisection after the minimal-norm attacks (0: none).
    pgd_steps : int
        PGD iterations per round.
    cw_kwargs : dict, optional
        Passed to :func:`robustlab.attacks.cw_l2`.
    max_distance : float, optional
        Where both attacks fail, the radius PGD tries first (default :math:`\sqrt d`).
    seed : int
        Seed of PGD's random starts.
    batch_size : int
        Inputs per attack call.
    progress : bool, optional
        A progress bar over the batches (default: the global setting).
    cache : bool
        Store the result in the cache's ``curves`` folder under a key of the settings, the
        model's ``repr`` and weights, and the data, and load it from there on a later call
        (the attacks are seeded, so the result is the same). A model whose behaviour
        depends on attributes that are neither weights nor in its ``repr`` must not be
        cached.

    Returns
    -------
    BoundaryDistances
        ``kind="upper"``, ``method`` the attacks joined by ``+`` (e.g. ``"cw+deepfool+pgd-bisection"``).

    Examples
    --------
    >>> lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2))
    >>> with torch.no_grad():
    ...     _ = lin[1].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    ...     _ = lin[1].bias.copy_(torch.tensor([-0.3, 0.3]))
    >>> d = attack_distances(lin, torch.tensor([[0.6, 0.5]]), torch.tensor([0]), progress=False)
    >>> round(float(d.distance[0]), 2)  # the boundary is the line x_0 = 0.3
    0.3
    """
    from .attacks import cw_l2, pgd

    check_model(model)
    check_images(x, "x")
    check_labels(y, "y", batch_size=x.shape[0])
    if isinstance(attacks, str):
        attacks = (attacks,)
    attacks = tuple(attacks)
    if not attacks:
        raise ValueError(f"attacks must name at least one of {list(MINIMAL_ATTACKS)}")
    for a in attacks:
        check_choice(a, "attacks", MINIMAL_ATTACKS)
    check_positive_int(bisection_steps, "bisection_steps", allow_zero=True)
    check_positive_int(pgd_steps, "pgd_steps")
    if cw_kwargs is not None and not isinstance(cw_kwargs, dict):
        raise TypeError(f"cw_kwargs must be a dict of keyword arguments of cw_l2, got {type(cw_kwargs).__name__}")
    if max_distance is not None:
        check_positive(max_distance, "max_distance")
    seed = check_seed(seed)
    check_positive_int(batch_size, "batch_size")
    d_box = math.sqrt(x[0].numel()) if max_distance is None else float(max_distance)
    method = "+".join(attacks) + ("+pgd-bisection" if bisection_steps else "")
    path = None
    if cache:
        from . import cache as _cache

        path = _cache.result_entry("attack_distances", {"attacks": list(attacks), "bisection_steps": bisection_steps,
                                                 "pgd_steps": pgd_steps, "cw_kwargs": cw_kwargs or {},
                                                 "d_box": d_box, "seed": seed, "batch_size": batch_size}, model, x, y)
        blob = _cache.load(path)
        if blob is not None:
            return BoundaryDistances(*_models.to_input(x, blob["distance"], blob["correct"]), kind="upper",
                                     method=method, x_adv=_models.to_input(x, blob["x_adv"]))
    xc, yc = x.detach().cpu(), y.cpu()
    n = xc.shape[0]
    dist = torch.full((n,), float("nan"), dtype=torch.float64)
    correct = _predict(model, xc) == yc
    x_adv = xc.clone()
    enabled = config.progress_enabled(progress)
    bar = config.progress_bar((n + batch_size - 1) // batch_size, "attack distances", enabled)
    try:
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(n, start + batch_size))
            idx = idx[correct[idx]]
            if len(idx):
                d, xa = _bracket(model, xc[idx], yc[idx], attacks, bisection_steps, pgd_steps, cw_kwargs or {},
                                 d_box, seed + start, cw_l2, pgd)
                dist[idx], x_adv[idx] = d, xa
            bar.update(1)
    finally:
        bar.close()
    if path is not None:
        from . import cache as _cache

        _cache.store(path, {"distance": dist, "correct": correct, "x_adv": x_adv})
    return BoundaryDistances(*_models.to_input(x, dist, correct), kind="upper", method=method,
                             x_adv=_models.to_input(x, x_adv))


def _l2(a, b):
    return (a - b).flatten(1).double().norm(dim=1)


def deepfool(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 50,
             overshoot: float = 0.02) -> torch.Tensor:
    r"""DeepFool, L2 (Moosavi-Dezfooli, Fawzi and Frossard, 2016): walk to the nearest linearized boundary.

    At the current point :math:`x_k`, with :math:`f_j = z_j - z_y` and :math:`g_j = \nabla_x f_j`,
    the nearest boundary of the linearized classifier is the one of class
    :math:`\hat j = \arg\min_{j \ne y} |f_j| / \|g_j\|_2`, and the step onto it is
    :math:`r_k = \frac{|f_{\hat j}|}{\|g_{\hat j}\|_2^2} g_{\hat j}`. The steps add up to
    :math:`r`, and the iterate is :math:`\operatorname{clip}_{[0,1]}(x + (1 + \text{overshoot})\,r)`,
    until the prediction changes or ``steps`` run out. For an affine classifier whose
    nearest boundary point lies in the box, the first step lands on it exactly (then
    ``overshoot`` pushes across). Costs one forward and ``C`` backward passes per step;
    eval mode, input gradients only.

    Returns ``x_adv`` in [0, 1] on the device of ``x`` (misclassified where it succeeded;
    there is no budget: the point is its size).
    """
    from .attacks import eval_mode

    check_model(model)
    check_images(x, "x")
    check_labels(y, "y", batch_size=x.shape[0])
    check_positive_int(steps, "steps")
    check_nonneg(overshoot, "overshoot", allow_tensor=False)
    x0 = _models.to_model(model, x.detach())
    yd = y.to(x0.device)
    r_tot = torch.zeros_like(x0)
    x_adv = x0.clone()
    shape = (-1,) + (1,) * (x0.dim() - 1)
    active = torch.arange(len(yd), device=x0.device)
    with eval_mode(model):
        for _ in range(steps):
            xk = x_adv[active].detach().requires_grad_(True)
            ya = yd[active]
            with torch.enable_grad():
                z = model(xk)
                todo = z.argmax(1) == ya
                if not bool(todo.any()):
                    break
                f = z - z.gather(1, ya[:, None])
                eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)[:, None, :].expand(-1, len(ya), -1)
                (grads,) = torch.autograd.grad(f, xk, eye, is_grads_batched=True)  # (C, B, ...)
            grads = grads.transpose(0, 1)  # (B, C, ...)
            f = f.detach()
            gnorm = grads.flatten(2).norm(dim=2).clamp_min(1e-12)
            ratio = (f.abs() / gnorm).masked_fill(F.one_hot(ya, z.shape[1]).bool(), float("inf"))
            j = ratio.argmin(1)
            g = grads[torch.arange(len(j)), j]
            step = (f.gather(1, j[:, None]).squeeze(1).abs() + 1e-6) / gnorm.gather(1, j[:, None]).squeeze(1) ** 2
            # only inputs still classified y move on; the others are done and leave the batch
            active, step, g = active[todo], step[todo], g[todo]
            r_tot[active] = r_tot[active] + step.view(shape) * g
            x_adv[active] = (x0[active] + (1 + float(overshoot)) * r_tot[active]).clamp(0.0, 1.0).detach()
    return _models.to_input(x, x_adv)


def _shrink(model, x, y, xa, fooled, rounds=20):
    """Bisection on t in [0, 1] along x + t (xa - x): the smallest scaling still misclassified."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    lo, hi = torch.zeros(len(y), dtype=x.dtype), torch.ones(len(y), dtype=x.dtype)
    for _ in range(rounds):
        mid = (lo + hi) / 2
        ok = _predict(model, x + mid.view(shape) * (xa - x)) != y
        hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
    out = x + hi.view(shape) * (xa - x)
    return torch.where(fooled.view(shape), out, xa)


def _bracket(model, x, y, attacks, bisection_steps, pgd_steps, cw_kwargs, d_box, seed, cw_l2, pgd):
    """The smallest of the minimal-norm attacks' distances, shrunk along its direction and lowered by
    bisection over PGD radii; inf where nothing succeeds."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    inf = torch.full((len(y),), math.inf, dtype=torch.float64)
    hi, best = inf.clone(), x.clone()
    run = {"cw": lambda: cw_l2(model, x, y, **cw_kwargs), "deepfool": lambda: deepfool(model, x, y)}
    for name in attacks:
        xa = run[name]().cpu()
        fooled = _predict(model, xa) != y
        xa = _shrink(model, x, y, xa, fooled)
        size = torch.where(fooled, _l2(xa, x), inf)
        better = size < hi
        hi, best = torch.where(better, size, hi), torch.where(better.view(shape), xa, best)
    todo = torch.nonzero(torch.isinf(hi)).flatten()
    if len(todo):  # both failed: try the whole box
        xp = pgd(model, x[todo], y[todo], eps=d_box, norm="l2", steps=pgd_steps, seed=seed).cpu()
        ok = _predict(model, xp) != y[todo]
        hi[todo[ok]] = _l2(xp[ok], x[todo[ok]])
        best[todo[ok]] = xp[ok]
    lo = torch.zeros_like(hi)
    for k in range(bisection_steps):
        todo = torch.nonzero(torch.isfinite(hi)).flatten()
        if not len(todo):
            break
        mid = ((lo + hi) / 2)[todo]
        xp = pgd(model, x[todo], y[todo], eps=mid.to(x.dtype), norm="l2", steps=pgd_steps, seed=seed + k + 1).cpu()
        ok = _predict(model, xp) != y[todo]
        size = _l2(xp, x[todo])
        hi[todo[ok]] = torch.minimum(hi[todo[ok]], size[ok])
        best[todo[ok]] = xp[ok]
        lo[todo[~ok]] = mid[~ok]
    return hi, best


def certified_distances(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, method: str = "ibp",
                        sigma: float | None = None, n0: int = 100, n: int | None = None, alpha: float = 0.001,
                        max_radius: float = 4.0, seed: int = 0, progress: bool | None = None,
                        cache: bool = False) -> BoundaryDistances:
    r"""Lower bounds on the L2 distance to the boundary: certified radii.

    ``method="ibp"``: the network's own certificate, the largest L2 radius interval bounds
    verify (:func:`robustlab.certify.bounds.ibp_l2_certify`, ReLU networks of
    linear and ReLU layers, at least one hidden; convolutions are not supported):
    deterministic, :math:`R(x) \le d_f(x)` always,
    and loose for networks not trained for it.

    ``method="smoothing"``: Cohen et al.'s radius (:func:`robustlab.smoothing.gaussian.certify`,
    noise ``sigma``, ``n0`` selection and ``n`` estimation samples, default the profile's
    ``n_smoothing``): with probability at least :math:`1 - \alpha` per input, a lower
    bound on the distance to the boundary of the *smoothed* classifier
    :math:`g(x) = \arg\max_c P(f(x + \varepsilon) = c)`, not of ``model``; correct means
    :math:`g` predicts the label without abstaining. The paper's CIFAR-10 run uses
    :math:`\sigma = 0.125`, ``n0=100``, ``n=100,000``, :math:`\alpha = 0.001`.

    ``cache=True`` stores the result (the noise is seeded) as :func:`attack_distances` does.

    Returns
    -------
    BoundaryDistances
        ``kind="lower"``, ``method`` ``"ibp-l2"`` or ``"gaussian"``, ``x_adv=None``.
    """
    check_model(model)
    check_images(x, "x")
    check_labels(y, "y", batch_size=x.shape[0])
    check_choice(method, "method", ("ibp", "smoothing"))
    if method == "smoothing" and sigma is not None:
        n = config.profile().n_smoothing if n is None else n
    path = None
    if cache:
        from . import cache as _cache

        path = _cache.result_entry("certified_distances", {"method": method, "sigma": sigma, "n0": n0, "n": n,
                                                    "alpha": alpha, "max_radius": max_radius, "seed": seed},
                            model, x, y)
        blob = _cache.load(path)
        if blob is not None:
            return BoundaryDistances(*_models.to_input(x, blob["distance"], blob["correct"]), kind="lower",
                                     method=blob["method"])
    if method == "ibp":
        from .certify.bounds import ibp_l2_certify

        from .certify.bounds import relu_network

        if sigma is not None:
            raise ValueError("sigma is a parameter of method='smoothing' only")
        if len(relu_network(model, tuple(x.shape[1:])).weights) < 2:
            raise ValueError("model must have a hidden ReLU layer for method='ibp' (the L2 interval certificate "
                             "does not handle a purely affine network)")
        cert = ibp_l2_certify(model, x, max_radius=max_radius)
    else:
        from .smoothing.gaussian import certify

        if sigma is None:
            raise ValueError("sigma must be given for method='smoothing' (the noise level of the smoothed classifier)")
        cert = certify(model, x, sigma=sigma, n0=n0, n=n, alpha=alpha, seed=seed, progress=progress)
    pred = cert.prediction.cpu()
    correct = pred == y.cpu()
    dist = torch.where(correct, cert.radius.cpu().double(), torch.tensor(float("nan"), dtype=torch.float64))
    if path is not None:
        from . import cache as _cache

        _cache.store(path, {"distance": dist, "correct": correct, "method": cert.method})
    return BoundaryDistances(*_models.to_input(x, dist, correct), kind="lower", method=cert.method)


@dataclasses.dataclass(frozen=True)
class RobustnessCurves:
    r"""The curves :math:`\hat I^\tau_s`, :math:`\hat I^\tau_{\neg s}` and the bias :math:`\beta_s` per group.

    ``taus`` (T,); ``curve`` and ``rest`` (G, T): the fraction of the group's (of the other
    groups') counted points with distance :math:`> \tau`; ``auc`` and ``auc_rest`` (G,):
    the exact areas under the step curves over :math:`[\tau_{\min}, \tau_{\max}]`;
    ``bias`` (G,): :math:`(\mathrm{AUC}_s - \mathrm{AUC}_{\neg s}) / \mathrm{AUC}_{\neg s}`;
    ``counts`` (G,): counted points per group; ``groups``: the group ids (or names);
    ``kind`` and ``method``: those of the distances. NumPy arrays. A group that holds every
    counted point has no rest: its ``rest`` curve, ``auc_rest`` and ``bias`` are NaN.
    """

    taus: np.ndarray
    curve: np.ndarray
    rest: np.ndarray
    auc: np.ndarray
    auc_rest: np.ndarray
    bias: np.ndarray
    counts: np.ndarray
    groups: tuple
    kind: str = ""
    method: str = ""

    def table(self) -> str:
        """One line per group: its count, AUC, the rest's AUC and the bias."""
        lines = [f"{'group':>8} {'n':>5} {'AUC_s':>7} {'AUC_rest':>8} {'bias':>7}"]
        for g, c, a, r, b in zip(self.groups, self.counts, self.auc, self.auc_rest, self.bias):
            lines.append(f"{str(g):>8} {int(c):5d} {a:7.3f} {r:8.3f} {b:+7.3f}")
        return "\n".join(lines)

    def plot(self, ax=None, groups=None):
        """Plot the curves of ``groups`` (default all) with the pooled curve dashed; returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        chosen = range(len(self.groups)) if groups is None else [self.groups.index(g) for g in groups]
        for i in chosen:
            ax.step(self.taus, self.curve[i], where="post", label=str(self.groups[i]))
        weights = self.counts / max(self.counts.sum(), 1)
        ax.step(self.taus, weights @ self.curve, where="post", color="k", ls="--", label="all")
        ax.set_xlabel(r"$\tau$ (L2 distance, pixel units)")
        ax.set_ylabel(r"$\hat I^\tau$: fraction with $d > \tau$")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, ncol=2)
        return ax


def _auc(d: np.ndarray, lo: float, hi: float) -> float:
    """The exact area under tau -> mean(d > tau) on [lo, hi]: mean(clip(d, lo, hi) - lo)."""
    return float(np.mean(np.clip(d, lo, hi) - lo)) if d.size else float("nan")


def robustness_curves(distances, groups: torch.Tensor, *, taus=None, n_taus: int = 100, tau_min: float | None = None,
                      tau_max: float | None = None, names=None) -> RobustnessCurves:
    r"""The robustness curves and the bias measure of every group (Nanda et al., 2021).

    For each group :math:`s` among ``groups`` (one id per input; the classes ``y`` for
    the per-class analysis), over the counted points (finite or infinite distances; NaN,
    i.e. misclassified, points are left out):

    .. math:: \hat I^\tau_s = \frac{|\{i \in s : d_i > \tau\}|}{|s|}, \qquad
              \mathrm{AUC}_s = \int_{\tau_{\min}}^{\tau_{\max}} \hat I^\tau_s\, d\tau
              = \frac{1}{|s|}\sum_{i \in s} \big(\min(\max(d_i, \tau_{\min}), \tau_{\max}) - \tau_{\min}\big),

    the same for the rest :math:`\neg s`, and :math:`\beta_s = (\mathrm{AUC}_s -
    \mathrm{AUC}_{\neg s})/\mathrm{AUC}_{\neg s}`. As in the reference code the range runs
    from the smallest to the largest finite distance of all groups (``tau_min`` and
    ``tau_max`` override it; with ``tau_min=0`` and ``tau_max`` the largest distance, the
    AUC is the group's mean distance). The reference code sums the curve over a 100-point
    grid; the integral here is that sum's exact limit. The curves are evaluated at
    ``taus`` (default ``n_taus`` points on the range) for plotting.

    Parameters
    ----------
    distances : BoundaryDistances or torch.Tensor
        Per-input distances (B,); NaN marks a point not counted.
    groups : torch.Tensor
        int64 (B,), the group of each input.
    taus : sequence, optional
        Where to evaluate the curves (increasing).
    n_taus : int
        Grid size when ``taus`` is not given.
    tau_min, tau_max : float, optional
        The range of the AUC.
    names : sequence, optional
        Display names of the group ids 0, 1, ... (e.g. the class names).

    Returns
    -------
    RobustnessCurves

    Examples
    --------
    >>> d = torch.tensor([0.2, 0.4, 0.6, 0.8, float("nan")])
    >>> c = robustness_curves(d, torch.tensor([0, 0, 1, 1, 1]), tau_min=0.0)
    >>> c.auc.round(3).tolist(), c.bias.round(3).tolist()  # mean distances 0.3 and 0.7
    ([0.3, 0.7], [-0.571, 1.333])
    """
    kind = method = ""
    if isinstance(distances, BoundaryDistances):
        kind, method = distances.kind, distances.method
        distances = distances.distance
    check_tensor(distances, "distances")
    if distances.dim() != 1:
        raise ValueError(f"distances must have shape (B,), got shape {tuple(distances.shape)}")
    check_labels(groups, "groups", batch_size=distances.shape[0])
    d = distances.detach().cpu().double().numpy()
    if np.any(d < 0):
        raise ValueError(f"distances must be >= 0 (NaN for points not counted), got a minimum of {np.nanmin(d)}")
    g = groups.cpu().numpy()
    keep = ~np.isnan(d)
    d, g = d[keep], g[keep]
    finite = d[np.isfinite(d)]
    if finite.size == 0:
        raise ValueError("distances must hold at least one finite value (NaN marks points not counted)")
    lo = float(finite.min()) if tau_min is None else float(check_nonneg(tau_min, "tau_min", allow_tensor=False))
    hi = float(finite.max()) if tau_max is None else float(tau_max)
    if not hi > lo:
        raise ValueError(f"tau_max must exceed tau_min, got the range [{lo}, {hi}]")
    if taus is None:
        check_positive_int(n_taus, "n_taus")
        taus = np.linspace(lo, hi, n_taus)
    taus = np.asarray(taus, dtype=float)
    if taus.ndim != 1 or taus.size == 0 or np.any(np.diff(taus) <= 0):
        raise ValueError("taus must be an increasing 1-D sequence")
    ids = tuple(int(v) for v in np.unique(g))
    if names is not None:
        names = list(names)
        if len(names) <= max(ids):
            raise ValueError(f"names must name every group id up to {max(ids)}, got {len(names)} names")
    curve, rest, auc, auc_rest, counts = [], [], [], [], []
    for s in ids:
        ds, dr = d[g == s], d[g != s]
        curve.append((ds[:, None] > taus[None, :]).mean(0))
        rest.append((dr[:, None] > taus[None, :]).mean(0) if dr.size else np.full(taus.shape, np.nan))
        auc.append(_auc(ds, lo, hi))
        auc_rest.append(_auc(dr, lo, hi))
        counts.append(ds.size)
    auc, auc_rest = np.array(auc), np.array(auc_rest)
    with np.errstate(divide="ignore", invalid="ignore"):
        bias = (auc - auc_rest) / auc_rest
    return RobustnessCurves(taus=taus, curve=np.array(curve), rest=np.array(rest), auc=auc, auc_rest=auc_rest,
                            bias=bias, counts=np.array(counts), groups=tuple(names[s] for s in ids) if names else ids,
                            kind=kind, method=method)


def bias_interval(distances, groups: torch.Tensor, *, n_boot: int = 1000, level: float = 0.95,
                  tau_min: float | None = None, tau_max: float | None = None, seed: int = 0) -> np.ndarray:
    r"""Bootstrap percentile intervals of the bias :math:`\beta_s` of every group, (G, 2).

    The counted points (NaN distances left out) are resampled with replacement ``n_boot``
    times, and :math:`\beta_s` is recomputed on each resample over the *fixed* range
    :math:`[\tau_{\min}, \tau_{\max}]` of the full sample (the defaults of
    :func:`robustness_curves`); the interval is the central ``level`` range of those values.
    It measures the sampling noise of a test set of this size (not the seed-to-seed spread
    of training): a class whose interval holds 0 is not shown to be more or less robust
    than the rest. Rows follow the groups of :func:`robustness_curves`.

    >>> gen = torch.Generator().manual_seed(0)
    >>> d = torch.rand(400, generator=gen).double() + (torch.arange(400) >= 200)  # group 1 is farther by 1
    >>> groups = (torch.arange(400) >= 200).long()
    >>> lo, hi = bias_interval(d, groups, n_boot=200)[0]
    >>> bool(lo <= robustness_curves(d, groups).bias[0] <= hi < 0)
    True
    """
    if isinstance(distances, BoundaryDistances):
        distances = distances.distance
    check_positive_int(n_boot, "n_boot")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    full = robustness_curves(distances, groups, tau_min=tau_min, tau_max=tau_max, n_taus=2)
    d = distances.detach().cpu().double().numpy()
    g = groups.cpu().numpy()
    keep = ~np.isnan(d)
    d, g = d[keep], g[keep]
    lo, hi = float(full.taus[0]), float(full.taus[-1])
    clipped = np.clip(d, lo, hi) - lo
    ids = np.unique(g)
    rng = np.random.default_rng(check_seed(seed))
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    cb, gb = clipped[idx], g[idx]
    out = np.empty((len(ids), 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, s in enumerate(ids):
            mine = gb == s
            auc = (cb * mine).sum(1) / mine.sum(1)
            rest = (cb * ~mine).sum(1) / (~mine).sum(1)
            beta = (auc - rest) / rest
            beta = beta[~np.isnan(beta)]
            out[i] = np.quantile(beta, [(1 - level) / 2, (1 + level) / 2]) if beta.size else np.nan
    return out


PROXIES = ("margin", "logit")


def distance_proxy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, proxy: str = "margin",
                   create_graph: bool = False) -> torch.Tensor:
    r"""A first-order estimate of the L2 distance to the boundary, differentiable in the weights.

    ``proxy="margin"``: :math:`m(x) / \|\nabla_x m(x)\|_2` with
    :math:`m(x) = z_y(x) - \max_{j \ne y} z_j(x)`: the distance to the boundary of the
    linearization of the margin at :math:`x` (DeepFool's first step towards the runner-up),
    exact for an affine model when the runner-up stays the same. ``proxy="logit"``: the
    reference code's :math:`|z_{\hat y}(x)| / \|\nabla_x z_{\hat y}(x)\|_2`, built from the
    predicted class's logit alone, which does not vanish on the boundary (a pitfall the
    margin avoids). ``create_graph=True`` keeps the graph for training (double backprop).

    Returns ``(d, logits)``: the (B,) estimates (the margin proxy is negative on
    misclassified points) and the logits of ``x`` (in the graph with ``create_graph``).
    """
    check_choice(proxy, "proxy", PROXIES)
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        z = model(x)
        if proxy == "margin":
            own = z.gather(1, y[:, None]).squeeze(1)
            other = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf")).amax(1)
            value = own - other
        else:
            value = z.gather(1, z.argmax(1, keepdim=True)).squeeze(1)
        (grad,) = torch.autograd.grad(value.sum(), x, create_graph=create_graph)
    gnorm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return (value if proxy == "margin" else value.abs()) / gnorm, z


@dataclasses.dataclass(frozen=True)
class RobustnessBiasLoss:
    r"""The robustness-bias regularizer of Nanda et al. (2021): CE plus a gap of "close to the boundary" rates.

    With :math:`\hat d(x)` the first-order distance (:func:`distance_proxy`) of the
    correctly classified points of a batch and :math:`P_s = \operatorname{mean}_{x \in s}
    \sigma((\tau - \hat d(x))/T)` the smoothed fraction of group :math:`s` closer than
    :math:`\tau` to the boundary, the loss is

    .. math:: \mathcal L = \mathrm{CE} + \alpha\,R, \qquad
              R = \frac1G\sum_s |P_s - P_{\neg s}|,

    the mean over the :math:`G` groups (here the classes) present in the batch. With two
    groups this is the paper's :math:`R = |\hat P_{\min}(\hat d < \tau) - \hat P_{\text{maj}}(\hat d < \tau)|`
    exactly (both terms are that gap). The reference code uses :math:`T = 1` with
    :math:`\tau \in \{2, 5\}` on CIFAR-10 and :math:`\alpha \in \{0.1, 1, 2, 10\}`; on the
    digits' smaller distances a smaller temperature keeps the sigmoid from being flat.
    :math:`R` is differentiated through the gradient norm (double backprop), so a step
    costs about three times a standard one.

    Parameters
    ----------
    tau : float
        Threshold distance (L2 pixel units).
    alpha : float
        Weight of :math:`R` (>= 0; 0 is standard training).
    temperature : float
        :math:`T` of the sigmoid.
    proxy : {"margin", "logit"}
        The distance estimate (see :func:`distance_proxy`; the reference code's is ``"logit"``).

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> x, y = torch.rand(8, 1, 8, 8), torch.arange(8) % 2
    >>> loss, logits = RobustnessBiasLoss(tau=0.5, alpha=0.0)(model, x, y)
    >>> bool(torch.isclose(loss, rl.train.cross_entropy_loss(model, x, y)[0]))
    True
    """

    tau: float
    alpha: float = 1.0
    temperature: float = 0.05
    proxy: str = "margin"

    def __post_init__(self):
        check_positive(self.tau, "tau")
        check_nonneg(self.alpha, "alpha", allow_tensor=False)
        check_positive(self.temperature, "temperature")
        check_choice(self.proxy, "proxy", PROXIES)

    def penalty(self, d: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """:math:`R` from per-point distances ``d`` and group ids (the points already selected)."""
        close = torch.sigmoid((float(self.tau) - d) / float(self.temperature))
        terms = []
        for s in torch.unique(groups):
            mine = groups == s
            if mine.all() or not mine.any():
                continue
            terms.append((close[mine].mean() - close[~mine].mean()).abs())
        return torch.stack(terms).mean() if terms else close.sum() * 0.0

    def __call__(self, model, x, y):
        if self.alpha == 0:
            logits = model(x)
            return F.cross_entropy(logits, y), logits
        d, logits = distance_proxy(model, x, y, proxy=self.proxy, create_graph=True)
        ce = F.cross_entropy(logits, y)
        right = (logits.argmax(1) == y).detach()
        return ce + float(self.alpha) * self.penalty(d[right], y[right]), logits


def bias_regularized_model(tau: float | None = None, alpha: float = 1.0, *, temperature: float = 0.05,
                           proxy: str = "margin", init: str | None = None, dataset: str | None = None,
                           arch: str | None = None, width: int | None = None, epochs: int | None = None,
                           lr: float | None = None, seed: int = 0, device=None, progress: bool | None = None,
                           cache: bool = True):
    """The profile's model trained with :class:`RobustnessBiasLoss` (cached; :func:`robustlab.zoo.loss_trained_model`).

    ``tau`` defaults to :data:`DEFAULT_TAU` of the data set; the other settings are the
    profile's (its epochs, learning rate and batch size), so with ``alpha=0`` this is the
    profile's standard training. ``init="standard"`` fine-tunes the profile's standard
    model (:func:`robustlab.train.trained_model`, same data, architecture, width and seed)
    instead of training from scratch, for ``epochs`` (default 3) epochs at learning rate
    ``lr`` (default a quarter of the profile's): with ``alpha=0`` the same fine-tuning is
    the control that separates the regularizer's effect from that of the extra epochs.
    """
    from .zoo import loss_trained_model

    if init is not None:
        check_choice(init, "init", ("standard",))
    name = _data.info(dataset).name
    tau = DEFAULT_TAU.get(name, 1.0) if tau is None else tau
    loss = RobustnessBiasLoss(tau=float(tau), alpha=float(alpha), temperature=float(temperature), proxy=proxy)
    build = None
    if init == "standard":
        from .train import trained_model

        epochs = 3 if epochs is None else epochs
        lr = config.profile().lr / 4 if lr is None else lr

        def build(arch_, dataset_, *, width=None, seed=0):
            import copy  # fit trains in place: never touch the caller's standard model

            return copy.deepcopy(trained_model(dataset_, arch_, width=width, seed=seed, progress=progress,
                                               cache=cache).model)
    return loss_trained_model(loss, desc=f"robustness-bias regularized training (alpha={alpha:g})", dataset=dataset,
                              arch=arch, width=width, epochs=epochs, lr=lr, seed=seed, device=device,
                              progress=progress, cache=cache, build=build)
