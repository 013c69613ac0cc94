r"""Certifiably robust interpretation: sparsified SmoothGrad and its top-K certificate.

A gradient saliency map :math:`g(x) = |\nabla_x f_c(x)|` (elementwise, class :math:`c`) can be
changed completely by a perturbation that leaves the prediction alone. Levine, Singla and
Feizi (2019) make the map certifiably stable by smoothing it the way randomized smoothing
smooths a classifier, after *sparsifying* each noisy map:

.. math:: \bar g(x) = E_{\delta \sim \mathcal N(0, \sigma^2 I)}\big[S\big(g(x + \delta)\big)\big],
          \qquad S(v)_i = \mathbb 1[v_i \text{ is among the } k_s \text{ largest entries of } v],

(ties to the lower index). Every element :math:`\bar g_i` is the expectation of a
[0, 1]-valued function under Gaussian noise, so :math:`x \mapsto \Phi^{-1}(\bar g_i(x))` is
:math:`1/\sigma`-Lipschitz in L2 (Salman et al., 2019, the lemma behind Cohen et al.'s
radius): for :math:`\|x' - x\|_2 \le \rho`,

.. math:: \Phi\big(\Phi^{-1}(\bar g_i(x)) - \rho/\sigma\big) \ \le\ \bar g_i(x')
          \ \le\ \Phi\big(\Phi^{-1}(\bar g_i(x)) + \rho/\sigma\big).

**The certificate** (derived here; :func:`certify_interpretation`). Let :math:`T` be the
top-:math:`K` set of the reported map at :math:`x`, :math:`\ell_i \le \bar g_i(x) \le u_i`
simultaneous confidence bounds (Clopper--Pearson on the counts, Bonferroni over the
:math:`d` elements; :func:`robustlab.stats.clopper_pearson`), :math:`\ell_{(1)} \ge \dots
\ge \ell_{(K)}` the lower bounds of :math:`T` and :math:`u^{(1)} \ge u^{(2)} \ge \dots` the
upper bounds of the other elements. Then with probability at least :math:`1 - \alpha`, for
every :math:`x'` with :math:`\|x' - x\|_2 < R_m`, at least :math:`m` elements of :math:`T`
are in the top :math:`K` of :math:`\bar g(x')`, where

.. math:: R_m = \frac{\sigma}{2}\Big(\Phi^{-1}(\ell_{(m)}) - \Phi^{-1}\big(u^{(K - m + 1)}\big)\Big)_+

(:math:`R_m = \infty` where fewer than :math:`K - m + 1` elements lie outside :math:`T`).
*Proof.* At radius :math:`\rho` every :math:`\bar g_i(x')` lies in the interval above
applied to :math:`[\ell_i, u_i]`; the map :math:`p \mapsto \Phi(\Phi^{-1}(p) \pm \rho/\sigma)`
is increasing, so the order of the bounds is kept. If the :math:`m`-th largest lower bound of
:math:`T` exceeds the :math:`(K - m + 1)`-th largest upper bound outside :math:`T`, at most
:math:`K - m` outside elements can rank above it, so its element and the :math:`m - 1` above
it are in the top :math:`K`. Conversely, setting :math:`T` to its lower and the rest to
their upper bounds (ties against :math:`T`) reaches the bound: it is the exact minimum of the
overlap over the intervals (:func:`interval_overlap`). The certified overlap at radius
:math:`\rho` is :math:`\#\{m : R_m > \rho\}` (:func:`certified_overlap`).

``method="scaled"`` is the baseline the paper compares with: SmoothGrad of maps scaled to
[0, 1] by their maximum, with Hoeffding bounds (the Lipschitz property holds for every
[0, 1]-valued function). Sparsification certifies more: binary maps have well separated
expectations near 0 and 1, and exact binomial bounds.

The explained class :math:`c` is fixed (by default the model's prediction at the clean
input): the certificate is about the map of that class. :func:`attack_interpretation` is the
matching attack: L2 PGD on the overlap of the smoothed map, with the gradient of the
Gaussian expectation from Stein's identity
:math:`\nabla_x E[\phi(x + \delta)] = E[\phi(x + \delta)\,\delta] / \sigma^2` (no second
derivatives of the network needed).

References: Levine, Singla and Feizi, "Certifiably Robust Interpretation in Deep Learning",
arXiv 1905.12105 (2019); Smilkov et al., "SmoothGrad" (2017); Salman et al. (2019).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import config
from . import models as _models
from .certificates import UNITS, Certificate
from ._validate import (check_choice, check_class_index, check_images, check_model, check_nonneg, check_positive,
                        check_positive_int, check_probability, check_seed, check_tensor)
from .smoothing.sampling import BLOCK, GaussianNoise, seeds
from .stats import bonferroni, clopper_pearson, hoeffding, normal_cdf, normal_ppf

__all__ = [
    "saliency",
    "top_k_mask",
    "top_k",
    "topk_overlap",
    "smoothgrad_sums",
    "sparsified_smoothgrad",
    "scaled_smoothgrad",
    "element_bounds",
    "bounds_at_radius",
    "interval_overlap",
    "overlap_radii",
    "certify_interpretation",
    "certified_overlap",
    "attack_interpretation",
]

METHODS = ("sparsified", "scaled")


# =========================================================================== maps


def _targets(model, x, target) -> torch.Tensor:
    """The explained class per input: ``target`` (int or (B,)) or the model's prediction."""
    if target is None:
        with _models.eval_mode(model), torch.no_grad():
            return model(x).argmax(1)
    if isinstance(target, torch.Tensor):
        if target.dtype != torch.int64 or target.shape != (x.shape[0],):
            raise ValueError(f"target must be an int64 tensor of shape ({x.shape[0]},), or one class index")
        return target.to(x.device)
    return torch.full((x.shape[0],), check_class_index(target, "target"), dtype=torch.long, device=x.device)


def _saliency(model, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """|d f_c / dz| of a batch (flattened to (b, d)); the model is already in eval mode."""
    z = z.detach().requires_grad_(True)
    logits = model(z)
    score = logits.gather(1, c.view(-1, 1).expand(z.shape[0], 1)).sum()
    (grad,) = torch.autograd.grad(score, z)
    return grad.abs().reshape(z.shape[0], -1)


def saliency(model, x, target=None) -> torch.Tensor:
    r"""The gradient saliency map :math:`|\nabla_x f_c(x)|`, elementwise, shape of ``x``.

    ``target``: the class :math:`c` per input (int or int64 (B,)); default the prediction.
    Only the input's gradient is computed (no parameter gradients).

    >>> model = _models.build("mlp", "digits", width=2)
    >>> saliency(model, torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 1, 8, 8])
    """
    check_model(model)
    check_images(x, "x")
    device, dtype = _models.device_of(model), _models.dtype_of(model)
    xd = x.detach().to(device=device, dtype=dtype)
    c = _targets(model, xd, target)
    with _models.eval_mode(model):
        out = _saliency(model, xd, c)
    return _models.to_input(x, out.view(x.shape))


def top_k_mask(maps: torch.Tensor, k: int) -> torch.Tensor:
    r"""Sparsification :math:`S`: 1 on the ``k`` largest entries of each row of ``maps`` (B, d),
    0 elsewhere; ties go to the lower index.

    >>> top_k_mask(torch.tensor([[0.1, 0.5, 0.5, 0.2]]), 2).tolist()
    [[0.0, 1.0, 1.0, 0.0]]
    """
    idx = top_k(maps, k)
    return torch.zeros_like(maps, dtype=torch.float32 if not maps.is_floating_point() else maps.dtype).scatter_(1, idx, 1.0)


def top_k(maps: torch.Tensor, k: int) -> torch.Tensor:
    """The indices (B, k) of the ``k`` largest entries of each row, largest first, ties to the lower index.

    >>> top_k(torch.tensor([[0.3, 0.9, 0.3, 0.1]]), 2).tolist()
    [[1, 0]]
    """
    check_tensor(maps, "maps")
    if maps.dim() != 2:
        raise ValueError(f"maps must have shape (B, d), got {tuple(maps.shape)}")
    k = check_positive_int(k, "k")
    if k > maps.shape[1]:
        raise ValueError(f"k must be <= the number of elements {maps.shape[1]}, got {k}")
    return torch.sort(maps, dim=1, descending=True, stable=True).indices[:, :k]


def topk_overlap(map_a: torch.Tensor, map_b: torch.Tensor, k: int) -> torch.Tensor:
    """int64 (B,): how many of the top-``k`` elements of ``map_a`` are in the top ``k`` of ``map_b``
    (rows of (B, d) maps, or maps of any shape (B, ...) flattened).

    >>> topk_overlap(torch.tensor([[3., 2., 1., 0.]]), torch.tensor([[3., 0., 1., 2.]]), 2).tolist()
    [1]
    """
    a, b = map_a.reshape(map_a.shape[0], -1), map_b.reshape(map_b.shape[0], -1)
    if a.shape != b.shape:
        raise ValueError(f"map_a and map_b must have the same shape, got {tuple(map_a.shape)} and {tuple(map_b.shape)}")
    ta, tb = top_k(a, k), top_k(b, k)
    return (ta[:, :, None] == tb[:, None, :]).any(2).sum(1)


def smoothgrad_sums(model, x, target=None, *, sigma: float, n: int, method: str = "sparsified",
                    k_sparse: int = 8, seed=0, batch_size: int = 1000, progress: bool | None = None):
    r"""The sums over ``n`` noisy copies of the transformed saliency maps, per input and element.

    Input :math:`i`'s noise :math:`\delta_j \sim \mathcal N(0, \sigma^2 I)` comes from its own
    stream (seeded ``seed + i``, in blocks of :data:`robustlab.smoothing.sampling.BLOCK`, as
    every sampler of the package draws it). ``"sparsified"``: :math:`\sum_j S(g(x + \delta_j))`
    with ``k_sparse`` ones per map (counts, int64); ``"scaled"``:
    :math:`\sum_j g(x + \delta_j) / \max g(x + \delta_j)` (float64).

    Returns
    -------
    (sums (B, d), targets (B,)), on the CPU.
    """
    check_model(model)
    check_images(x, "x")
    sigma = check_positive(sigma, "sigma")
    n = check_positive_int(n, "n")
    check_choice(method, "method", METHODS)
    k_sparse = check_positive_int(k_sparse, "k_sparse")
    batch_size = check_positive_int(batch_size, "batch_size")
    d = x[0].numel()
    if method == "sparsified" and k_sparse > d:
        raise ValueError(f"k_sparse must be <= the number of input elements {d}, got {k_sparse}")
    device, dtype = _models.device_of(model), _models.dtype_of(model)
    xd = x.detach().to(device=device, dtype=dtype)
    c = _targets(model, xd, target)
    noise = GaussianNoise(sigma)
    gens = [torch.Generator(device=device).manual_seed(s) for s in seeds(seed, x.shape[0])]
    sums = torch.zeros(x.shape[0], d, dtype=torch.float64)
    with _models.eval_mode(model), config.progress_bar(x.shape[0] * n, "interpretation: noisy saliency maps",
                                                       config.progress_enabled(progress), unit="sample") as bar:
        for i in range(x.shape[0]):
            for start in range(0, n, BLOCK):
                copies = noise.sample(xd[i], min(BLOCK, n - start), gens[i])
                for s in range(0, copies.shape[0], batch_size):
                    z = copies[s:s + batch_size]
                    g = _saliency(model, z, c[i])
                    if method == "sparsified":
                        t = top_k_mask(g, k_sparse)
                    else:
                        t = g / g.amax(1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)
                    sums[i] += t.double().sum(0).cpu()
                    bar.update(z.shape[0])
    if method == "sparsified":
        sums = sums.round().long()
    return sums, c.cpu()


def sparsified_smoothgrad(model, x, target=None, *, sigma: float, n: int = 1000, k_sparse: int = 8, seed=0,
                          batch_size: int = 1000, progress: bool | None = None) -> torch.Tensor:
    r"""Sparsified SmoothGrad :math:`\hat g(x) = \frac1n\sum_j S(g(x + \delta_j))`: for each element,
    the fraction of noisy maps in whose top ``k_sparse`` it is. Shape of ``x``, float64, in [0, 1].

    >>> model = _models.build("mlp", "digits", width=2)
    >>> m = sparsified_smoothgrad(model, torch.rand(2, 1, 8, 8), sigma=0.25, n=50, k_sparse=8)
    >>> m.shape, [round(float(v), 6) for v in m.flatten(1).sum(1)]   # k_sparse ones per noisy map
    (torch.Size([2, 1, 8, 8]), [8.0, 8.0])
    """
    sums, _ = smoothgrad_sums(model, x, target, sigma=sigma, n=n, method="sparsified", k_sparse=k_sparse, seed=seed,
                              batch_size=batch_size, progress=progress)
    return _models.to_input(x, (sums.double() / n).view(x.shape))


def scaled_smoothgrad(model, x, target=None, *, sigma: float, n: int = 1000, seed=0, batch_size: int = 1000,
                      progress: bool | None = None) -> torch.Tensor:
    r"""Scaled SmoothGrad: the mean of the noisy maps scaled to a maximum of 1 (shape of ``x``, float64)."""
    sums, _ = smoothgrad_sums(model, x, target, sigma=sigma, n=n, method="scaled", seed=seed, batch_size=batch_size,
                              progress=progress)
    return _models.to_input(x, (sums / n).view(x.shape))


# =========================================================================== bounds and the certificate


def element_bounds(sums: torch.Tensor, n: int, alpha: float, method: str = "sparsified"):
    r"""Simultaneous bounds :math:`\ell_i \le \bar g_i(x) \le u_i` for every element, at level ``alpha``.

    ``"sparsified"``: ``sums`` are counts of a binomial :math:`(n, \bar g_i)`; two-sided
    Clopper--Pearson at :math:`\alpha / d` per element (Bonferroni). ``"scaled"``: means of
    [0, 1] values; two-sided Hoeffding at :math:`\alpha / d`.

    Returns ``(lower, upper)``, float64 (B, d).

    >>> lo, hi = element_bounds(torch.tensor([[0, 50, 100]]), 100, 0.003)
    >>> lo[0, 0].item(), hi[0, 2].item(), bool(lo[0, 1] < 0.5 < hi[0, 1])
    (0.0, 1.0, True)
    """
    check_tensor(sums, "sums")
    if sums.dim() != 2:
        raise ValueError(f"sums must have shape (B, d), got {tuple(sums.shape)}")
    n = check_positive_int(n, "n")
    alpha = check_probability(alpha, "alpha")
    check_choice(method, "method", METHODS)
    level = bonferroni(alpha, sums.shape[1])
    if method == "sparsified":
        if sums.is_floating_point():
            raise TypeError("sums must be integer counts for method='sparsified'")
        lo, hi = clopper_pearson(sums.cpu(), n, level, side="two-sided")
        return torch.from_numpy(np.asarray(lo)).double(), torch.from_numpy(np.asarray(hi)).double()
    mean = sums.double().cpu() / n
    t = hoeffding(n, level, side="two-sided")
    return (mean - t).clamp(0.0, 1.0), (mean + t).clamp(0.0, 1.0)


def bounds_at_radius(lower, upper, rho: float, sigma: float):
    r"""The intervals that hold at every :math:`x'` with :math:`\|x' - x\|_2 \le \rho`:
    :math:`[\Phi(\Phi^{-1}(\ell) - \rho/\sigma),\ \Phi(\Phi^{-1}(u) + \rho/\sigma)]`.

    >>> lo, hi = bounds_at_radius(torch.tensor([0.5]), torch.tensor([0.5]), 0.0, 1.0)
    >>> lo.item(), hi.item()
    (0.5, 0.5)
    """
    rho, sigma = check_nonneg(rho, "rho", allow_tensor=False), check_positive(sigma, "sigma")
    lo = torch.from_numpy(np.asarray(normal_cdf(normal_ppf(lower.double().cpu().numpy()) - rho / sigma))).reshape(lower.shape)
    hi = torch.from_numpy(np.asarray(normal_cdf(normal_ppf(upper.double().cpu().numpy()) + rho / sigma))).reshape(upper.shape)
    return lo, hi


def _check_top(top, d):
    check_tensor(top, "top")
    if top.dim() != 2 or top.dtype != torch.int64:
        raise TypeError("top must be an int64 tensor of indices, shape (B, K)")
    if top.numel() and (int(top.min()) < 0 or int(top.max()) >= d):
        raise ValueError(f"top must hold element indices in [0, {d})")
    return top.cpu()


def interval_overlap(lower, upper, top) -> torch.Tensor:
    r"""The least overlap :math:`\min_v |T \cap \mathrm{top}_K(v)|` over every map :math:`v` with
    :math:`\ell \le v \le u`: elements of :math:`T` (``top``, (B, K)) at their lower bounds,
    the others at their upper bounds, ties against :math:`T`. int64 (B,).

    >>> lo = torch.tensor([[0.6, 0.5, 0.1, 0.1]]); hi = torch.tensor([[0.9, 0.8, 0.55, 0.2]])
    >>> interval_overlap(lo, hi, torch.tensor([[0, 1]])).tolist()   # element 2 can pass element 1
    [1]
    """
    if lower.shape != upper.shape or lower.dim() != 2:
        raise ValueError("lower and upper must have the same shape (B, d)")
    top = _check_top(top, lower.shape[1])
    k = top.shape[1]
    in_t = torch.zeros(lower.shape, dtype=torch.bool).scatter_(1, top, True)
    w = torch.where(in_t, lower.double().cpu(), upper.double().cpu()).numpy()
    out = []
    for row_w, row_t in zip(w, in_t.numpy()):
        order = np.lexsort((row_t, -row_w))  # largest value first; on a tie, outside T first
        out.append(int(row_t[order[:k]].sum()))
    return torch.tensor(out, dtype=torch.long)


def overlap_radii(lower, upper, top, sigma: float) -> torch.Tensor:
    r"""The radii :math:`R_1 \ge \dots \ge R_K` (float64 (B, K)): within L2 radius :math:`R_m`
    (strictly), at least :math:`m` elements of ``top`` stay in the top :math:`K` (module docstring).

    >>> lo = torch.tensor([[0.9, 0.8, 0.1, 0.05]]); hi = torch.tensor([[1.0, 1.0, 0.2, 0.1]])
    >>> overlap_radii(lo, hi, torch.tensor([[0, 1]]), sigma=1.0).round(decimals=4).tolist()  # (ppf(.9) - ppf(.1)) / 2, ...
    [[1.2816, 0.8416]]
    """
    sigma = check_positive(sigma, "sigma")
    if lower.shape != upper.shape or lower.dim() != 2:
        raise ValueError("lower and upper must have the same shape (B, d)")
    top = _check_top(top, lower.shape[1])
    b, d = lower.shape
    k = top.shape[1]
    in_t = torch.zeros(b, d, dtype=torch.bool).scatter_(1, top, True)
    lo_t = lower.double().cpu().gather(1, top).sort(1, descending=True).values            # l_(1) >= ... >= l_(K)
    hi_out = upper.double().cpu().masked_fill(in_t, -1.0).sort(1, descending=True).values[:, :d - k]
    radii = torch.full((b, k), math.inf, dtype=torch.float64)
    for m in range(1, k + 1):
        j = k - m  # u^(K - m + 1), 0-based
        if j < d - k:
            z = torch.from_numpy(np.asarray(normal_ppf(lo_t[:, m - 1].numpy()) - normal_ppf(hi_out[:, j].numpy())))
            radii[:, m - 1] = torch.nan_to_num(0.5 * sigma * z.reshape(-1), nan=0.0).clamp_min(0.0)
    return radii


def certify_interpretation(model, x, target=None, *, k: int = 8, sigma: float, n: int = 1000,
                           k_sparse: int | None = None, method: str = "sparsified", alpha: float = 0.001,
                           keep: int | None = None, seed=0, batch_size: int = 1000,
                           progress: bool | None = None) -> Certificate:
    r"""Certify the top-``k`` features of (sparsified) SmoothGrad against L2 perturbations.

    With probability at least :math:`1 - \alpha` over the noise, for every input :math:`i` and
    every :math:`x'` with :math:`\|x' - x_i\|_2 < R_{i,m}` (``cert.radii[i, m - 1]``), at least
    :math:`m` of the reported top-``k`` elements (``cert.top[i]``) are in the top ``k`` of the
    smoothed map :math:`\bar g(x')` of the same class. ``cert.radius`` is :math:`R_{\mathrm{keep}}`.

    Parameters
    ----------
    model : torch.nn.Module
    x : torch.Tensor
        Inputs (B, ...) in [0, 1]; maps have ``d = x[0].numel()`` elements.
    target : int or torch.Tensor, optional
        The explained class (default: the model's prediction at ``x``).
    k : int
        Size of the certified top set :math:`K`.
    sigma : float
        Noise level of SmoothGrad, pixels.
    n : int
        Noisy maps per input.
    k_sparse : int, optional
        Ones per sparsified noisy map (default ``k``).
    method : {"sparsified", "scaled"}
    alpha : float
        Failure probability, shared by all ``d`` elements of an input (Bonferroni).
    keep : int, optional
        The overlap whose radius is ``cert.radius`` (default ``ceil(k / 2)``).

    Returns
    -------
    Certificate
        ``prediction`` the explained class, ``radius`` in L2 pixels; statistics ``top``
        (B, K), ``map`` (B, d) the estimated map, ``lower`` / ``upper`` (B, d), ``radii``
        (B, K), and the settings.

    Examples
    --------
    >>> model = _models.build("mlp", "digits", width=2)
    >>> cert = certify_interpretation(model, torch.rand(2, 1, 8, 8), k=4, sigma=0.5, n=200, alpha=0.05)
    >>> cert.radii.shape, bool((cert.radii[:, :-1] >= cert.radii[:, 1:]).all())
    (torch.Size([2, 4]), True)
    """
    k = check_positive_int(k, "k")
    check_images(x, "x")
    d = x[0].numel()
    if k >= d:
        raise ValueError(f"k must be < the number of input elements {d}, got {k}")
    k_sparse = k if k_sparse is None else check_positive_int(k_sparse, "k_sparse")
    keep = math.ceil(k / 2) if keep is None else check_positive_int(keep, "keep")
    if keep > k:
        raise ValueError(f"keep must be <= k = {k}, got {keep}")
    alpha = check_probability(alpha, "alpha")
    sums, c = smoothgrad_sums(model, x, target, sigma=sigma, n=n, method=method, k_sparse=k_sparse, seed=seed,
                              batch_size=batch_size, progress=progress)
    est = sums.double() / n
    top = top_k(est, k)
    lower, upper = element_bounds(sums, n, alpha, method)
    radii = overlap_radii(lower, upper, top, sigma)
    return Certificate(c.long(), radii[:, keep - 1].clone(), UNITS["l2"], f"{method}_smoothgrad", alpha=alpha,
                       stats={"top": top, "map": est, "lower": lower, "upper": upper, "radii": radii, "sigma": sigma,
                              "k": k, "keep": keep, "n": n, "k_sparse": k_sparse})


def certified_overlap(cert: Certificate, eps) -> torch.Tensor:
    r"""int64 (B, len(eps)): the certified top-K overlap :math:`\#\{m : R_m > \varepsilon\}` at each radius.

    >>> model = _models.build("mlp", "digits", width=2)
    >>> cert = certify_interpretation(model, torch.rand(1, 1, 8, 8), k=4, sigma=0.5, n=100, alpha=0.05)
    >>> certified_overlap(cert, [0.0, 100.0])[:, 1].tolist()
    [0]
    """
    if not isinstance(cert, Certificate) or "radii" not in cert.stats:
        raise TypeError("cert must be a Certificate of certify_interpretation")
    e = torch.as_tensor(np.asarray(eps, dtype=np.float64)).reshape(-1)
    if bool(torch.isnan(e).any()) or bool((e < 0).any()):
        raise ValueError("eps must hold radii >= 0")
    return (cert.radii[:, :, None] > e[None, None, :]).sum(1)


# =========================================================================== the attack


def attack_interpretation(model, x, top, target=None, *, eps: float, sigma: float, k_sparse: int = 8, steps: int = 20,
                          n: int = 256, step_size: float | None = None, seed: int = 0) -> torch.Tensor:
    r"""L2 PGD against the top-K overlap of sparsified SmoothGrad, within ``eps`` of ``x``.

    Maximizes :math:`J(x') = \sum_{j \in N} \bar g_j(x') - \sum_{i \in T} \bar g_i(x')`, with
    :math:`T` = ``top`` (B, K) and :math:`N` the :math:`K` strongest elements outside
    :math:`T` at the current iterate: pushing the top set down and its rivals up. The gradient
    of the Gaussian expectation is estimated from ``n`` noisy maps per step by Stein's identity,
    :math:`\nabla J = E[(\phi - \bar\phi)\,\delta] / \sigma^2`. Order of a step: normalized
    gradient step, projection onto the L2 ball around ``x``, clamp to [0, 1]. The iterate with
    the highest estimated :math:`J` is returned.

    Returns
    -------
    torch.Tensor
        ``x_adv`` with ``||x_adv - x||_2 <= eps`` per input, values in [0, 1].
    """
    check_model(model)
    check_images(x, "x")
    eps = check_nonneg(eps, "eps", allow_tensor=False)
    sigma = check_positive(sigma, "sigma")
    k_sparse = check_positive_int(k_sparse, "k_sparse")
    steps, n = check_positive_int(steps, "steps"), check_positive_int(n, "n")
    seed = check_seed(seed)
    step = 2.5 * eps / steps if step_size is None else check_positive(step_size, "step_size")
    device, dtype = _models.device_of(model), _models.dtype_of(model)
    x0 = x.detach().to(device=device, dtype=dtype)
    b, d = x0.shape[0], x0[0].numel()
    top = _check_top(top, d).to(device)
    c = _targets(model, x0, target)
    in_t = torch.zeros(b, d, dtype=torch.bool, device=device).scatter_(1, top, True)
    gen = torch.Generator(device=device).manual_seed(seed)
    adv, best, best_j = x0.clone(), x0.clone(), torch.full((b,), -math.inf, device=device)
    if eps == 0:
        return _models.to_input(x, best)
    with _models.eval_mode(model):
        for _ in range(steps + 1):
            grads = torch.zeros_like(x0)
            for i in range(b):
                delta = torch.randn((n, *x0.shape[1:]), generator=gen, device=device, dtype=dtype) * sigma
                s = top_k_mask(_saliency(model, adv[i] + delta, c[i]), k_sparse)   # (n, d)
                mean = s.mean(0)
                rivals = top_k(mean.masked_fill(in_t[i], -1.0)[None], top.shape[1])[0]
                phi = s[:, rivals].sum(1) - s[:, in_t[i]].sum(1)
                j = float(phi.mean())
                if j > best_j[i]:
                    best_j[i], best[i] = j, adv[i]
                grads[i] = ((phi - phi.mean())[:, None] * delta.reshape(n, -1)).mean(0).view(x0.shape[1:]) / sigma ** 2
            norm = grads.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x0.dim() - 1)))
            adv = adv + step * grads / norm
            diff = adv - x0
            dn = diff.flatten(1).norm(dim=1).view(-1, *([1] * (x0.dim() - 1)))
            adv = (x0 + diff * torch.clamp(eps / dn.clamp_min(1e-12), max=1.0)).clamp(0.0, 1.0)
    return _models.to_input(x, best)
