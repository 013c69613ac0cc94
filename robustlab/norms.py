r"""Lp norms, distances and projections, batch-first.

All functions treat dimension 0 as the batch and everything else as one vector per
sample: for ``x`` of shape (B, C, H, W), :func:`lp_norm` returns shape (B,).

Norms (``p`` may be given as ``"linf"``, ``"l2"``, ``"l1"``, ``"l0"`` or as a number):

.. math::

    \|v\|_\infty = \max_i |v_i|,\quad \|v\|_2 = \Big(\sum_i v_i^2\Big)^{1/2},\quad
    \|v\|_1 = \sum_i |v_i|,\quad \|v\|_0 = \#\{i : v_i \neq 0\}.

Projections map a point ``x`` to the nearest point (in L2) of the ball
:math:`\{z : \|z - c\|_p \le \varepsilon\}` around a centre ``c``; ``eps`` is a number or a
per-sample tensor of shape (B,). :func:`project_box` is the projection onto the image
box [0, 1]^d. Attacks apply them in the order step, project onto the ball around the
*original* input, then clamp to the box.
"""

from __future__ import annotations

import math

import torch

from ._validate import as_batch_param, check_nonneg, check_same_shape, check_tensor, check_finite, parse_norm

__all__ = ["lp_norm", "lp_distance", "pairwise_lp_distance", "project_linf", "project_l2", "project_l1", "project", "project_box"]


def _flat(x: torch.Tensor, name: str) -> torch.Tensor:
    check_tensor(x, name)
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must be batch-first with at least one sample, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    check_finite(x, name)
    return x.reshape(x.shape[0], -1)


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view((-1,) + (1,) * (like.dim() - 1))


def lp_norm(x: torch.Tensor, p="l2") -> torch.Tensor:
    """Per-sample Lp norm of a batch: shape (B,).

    >>> lp_norm(torch.tensor([[3.0, -4.0]]), "l2")
    tensor([5.])
    >>> lp_norm(torch.tensor([[3.0, -4.0]]), "linf")
    tensor([4.])
    """
    p = parse_norm(p, "p")
    v = _flat(x, "x")
    if p == 0:
        return (v != 0).sum(1).to(v.dtype)
    if p == math.inf:
        return v.abs().amax(1)
    return torch.linalg.vector_norm(v, ord=p, dim=1)


def lp_distance(x: torch.Tensor, x2: torch.Tensor, p="l2") -> torch.Tensor:
    """Per-sample Lp distance ``||x - x2||_p`` between two batches of the same shape: (B,).

    Computed and returned on ``x``'s device (``x2`` is moved there), so a batch of
    adversarial examples from a GPU model and its CPU originals can be compared.
    """
    check_tensor(x, "x")
    check_tensor(x2, "x2")
    check_same_shape(x, x2, "x", "x2")
    return lp_norm(x - x2.to(x.device), p)


def pairwise_lp_distance(x: torch.Tensor, refs: torch.Tensor, p="l2", *, chunk: int = 64, device=None) -> torch.Tensor:
    """Matrix (B, R) of the Lp distances from every ``x[i]`` to every ``refs[j]``.

    Computed in chunks of ``chunk`` rows on ``device`` (default: ``x``'s device; pass a
    model's device to use a GPU) and returned on the CPU.
    """
    from ._validate import check_positive_int

    p_val = parse_norm(p, "p")
    xf, rf = _flat(x, "x"), _flat(refs, "refs")
    if xf.shape[1] != rf.shape[1]:
        raise ValueError(f"x and refs must hold inputs of the same size, got {tuple(x.shape[1:])} and {tuple(refs.shape[1:])}")
    check_positive_int(chunk, "chunk")
    device = xf.device if device is None else torch.device(device)
    rf = rf.to(device)
    rows = []
    for start in range(0, xf.shape[0], chunk):
        diff = xf[start:start + chunk].to(device)[:, None, :] - rf[None, :, :]
        if p_val == 0:
            d = (diff != 0).sum(2).to(xf.dtype)
        elif p_val == math.inf:
            d = diff.abs().amax(2)
        else:
            d = torch.linalg.vector_norm(diff, ord=p_val, dim=2)
        rows.append(d.cpu())
    return torch.cat(rows)


def _prepare(x, center, eps):
    _flat(x, "x")
    _flat(center, "center")
    check_same_shape(x, center, "x", "center")
    check_nonneg(eps, "eps")
    return as_batch_param(eps, x.shape[0], x, "eps")


def project_linf(x: torch.Tensor, center: torch.Tensor, eps) -> torch.Tensor:
    """Project ``x`` onto the Linf ball of radius ``eps`` around ``center`` (clip each coordinate).

    >>> project_linf(torch.tensor([[0.9, 0.1]]), torch.tensor([[0.5, 0.5]]), 0.2)
    tensor([[0.7000, 0.3000]])
    """
    e = _view(_prepare(x, center, eps), x)
    return torch.minimum(torch.maximum(x, center - e), center + e)


def project_l2(x: torch.Tensor, center: torch.Tensor, eps) -> torch.Tensor:
    """Project ``x`` onto the L2 ball of radius ``eps`` around ``center`` (rescale the offset).

    >>> project_l2(torch.tensor([[3.0, 4.0]]), torch.zeros(1, 2), 1.0)
    tensor([[0.6000, 0.8000]])
    """
    e = _prepare(x, center, eps)
    delta = x - center
    norm = delta.reshape(x.shape[0], -1).norm(dim=1)
    factor = torch.where(norm > e, e / norm.clamp_min(torch.finfo(x.dtype).tiny), torch.ones_like(norm))
    return center + delta * _view(factor, x)


def project_l1(x: torch.Tensor, center: torch.Tensor, eps) -> torch.Tensor:
    """Project ``x`` onto the L1 ball of radius ``eps`` around ``center``.

    Exact Euclidean projection by sorting (Duchi et al., 2008): the offset ``v`` is
    soft-thresholded, ``sign(v) * max(|v| - theta, 0)``, with the ``theta`` that puts it on
    the sphere of radius ``eps`` (``theta = 0`` when ``v`` is already inside).

    >>> project_l1(torch.tensor([[2.0, 1.0]]), torch.zeros(1, 2), 1.0)
    tensor([[1., 0.]])
    """
    e = _prepare(x, center, eps)
    delta = (x - center).reshape(x.shape[0], -1)
    a = delta.abs()
    inside = a.sum(1) <= e
    u = a.sort(dim=1, descending=True).values
    css = u.cumsum(1)
    j = torch.arange(1, u.shape[1] + 1, device=x.device, dtype=x.dtype)
    cond = u - (css - e[:, None]) / j > 0
    rho = cond.to(torch.int64).cumsum(1).argmax(1)  # last index where cond holds (cond is a prefix)
    theta = (css.gather(1, rho[:, None]).squeeze(1) - e) / (rho + 1).to(x.dtype)
    theta = torch.where(inside, torch.zeros_like(theta), theta.clamp_min(0))
    out = delta.sign() * (a - theta[:, None]).clamp_min(0)
    return center + out.reshape(x.shape)


def project(x: torch.Tensor, center: torch.Tensor, eps, norm="linf") -> torch.Tensor:
    """Project onto the ``norm`` ball (``"linf"``, ``"l2"`` or ``"l1"``) of radius ``eps`` around ``center``."""
    p = parse_norm(norm, "norm")
    if p == math.inf:
        return project_linf(x, center, eps)
    if p == 2:
        return project_l2(x, center, eps)
    if p == 1:
        return project_l1(x, center, eps)
    raise ValueError("norm must be 'linf', 'l2' or 'l1' for a projection (the L0 ball is not convex), got 'l0'")


def project_box(x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Project onto the box [low, high]^d (elementwise clamp); the image box by default."""
    _flat(x, "x")
    if not low < high:
        raise ValueError(f"low must be below high, got low={low}, high={high}")
    return x.clamp(low, high)
