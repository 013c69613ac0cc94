r"""Score-based black-box attacks: the Square Attack (outputs only, no gradients)."""

from __future__ import annotations

import math

import torch

from .._validate import check_choice, check_positive, check_positive_int
from ._common import (_check_flag, _check_spatial, _eps_flat, _generator, _prepare, _random_corners, _square_mask,
                      _success, _to_input, attack_objective, eval_mode)

__all__ = ["square"]


def _p_schedule(p_init: float, i: int, queries: int) -> float:
    """Square Attack's piecewise-constant schedule of the fraction ``p`` of pixels changed,
    halved at fixed fractions of the query budget (the breakpoints of a 10,000-query run)."""
    it = int(i / queries * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
                       (8000, 256), (10000, 512)):
        if it <= bound:
            return p_init / div
    return p_init


def _random_signs(shape, gen, device, dtype) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=gen, device=device).to(dtype).mul_(2).sub_(1)


def _pseudo_gaussian(rows: int, cols: int, device, dtype) -> torch.Tensor:
    """Square Attack's bump: concentric rectangles, weight sum_{k >= d} 1/(k+1)^2 at ring d, unit L2 norm."""
    out = torch.zeros(rows, cols, device=device, dtype=dtype)
    if rows == 0 or cols == 0:
        return out
    rings = max(rows // 2 + 1, cols // 2 + 1)
    ri = (torch.arange(rows, device=device) - rows // 2).abs()
    ci = (torch.arange(cols, device=device) - cols // 2).abs()
    d = torch.maximum(ri[:, None], ci[None, :])
    tail = torch.tensor([sum(1.0 / (k + 1) ** 2 for k in range(j, rings)) for j in range(rings)], device=device, dtype=dtype)
    out = tail[d]
    return out / out.norm()


def _meta_pseudo_gaussian(side: int, device, dtype) -> torch.Tensor:
    """Two bumps of opposite sign, stacked (top half +, bottom half -), unit L2 norm."""
    top = _pseudo_gaussian(side // 2, side, device, dtype)
    bottom = -_pseudo_gaussian(side - side // 2, side, device, dtype)
    out = torch.cat([top, bottom])
    return out / out.norm()


def _place(pattern: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Put per-sample ``pattern`` (n, s, s) at corners (rows, cols) of zero (n, 1, h, w) canvases."""
    n, s = pattern.shape[0], pattern.shape[1]
    ri = torch.arange(h, device=rows.device)[None, :] - rows[:, None]
    ci = torch.arange(w, device=rows.device)[None, :] - cols[:, None]
    inside = ((ri >= 0) & (ri < s))[:, :, None] & ((ci >= 0) & (ci < s))[:, None, :]
    b = torch.arange(n, device=rows.device)[:, None, None]
    vals = pattern[b, ri.clamp(0, s - 1)[:, :, None], ci.clamp(0, s - 1)[:, None, :]]
    return (vals * inside)[:, None]


def _square_linf_init(x, eps, gen):
    """Vertical stripes: every column of every channel moves by +eps or -eps."""
    n, c, _, w = x.shape
    return (x + eps * _random_signs((n, c, 1, w), gen, x.device, x.dtype)).clamp(0.0, 1.0)


def _square_linf_candidate(x, x_best, eps, side, gen):
    """Move one random square per sample to a vertex of the eps-box: x + (+-eps per channel)."""
    n, c, h, w = x.shape
    rows, cols = _random_corners(n, side, h, w, gen, x.device)
    mask = _square_mask(rows, cols, side, h, w)
    signs = _random_signs((n, c, 1, 1), gen, x.device, x.dtype)
    cand = torch.where(mask, (x + eps * signs).clamp(0.0, 1.0), x_best)
    # where the square would change nothing (at most one sign pattern can do that, for
    # eps > 0), draw uniformly among the other patterns: flip a random nonempty set of channels
    same = (cand == x_best).flatten(1).all(1)
    flips = torch.randint(1, 2 ** c, (n,), generator=gen, device=x.device)
    flip = (flips[:, None] >> torch.arange(c, device=x.device)) & 1
    signs = torch.where(same[:, None, None, None], signs * (1 - 2 * flip.to(x.dtype)).view(n, c, 1, 1), signs)
    return torch.where(mask, (x + eps * signs).clamp(0.0, 1.0), x_best)


def _square_l2_init(x, eps, gen):
    """A grid of meta-pseudo-Gaussian bumps with random signs, rescaled to L2 norm eps."""
    n, c, h, w = x.shape
    side = max(min(h, w) // 5, 1)
    bump = _meta_pseudo_gaussian(side, x.device, x.dtype)
    delta = torch.zeros_like(x)
    for r in range(0, h - side + 1, side):
        for col in range(0, w - side + 1, side):
            signs = _random_signs((n, c, 1, 1), gen, x.device, x.dtype)
            delta[:, :, r:r + side, col:col + side] += bump * signs
    delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1))
    return (x + delta).clamp(0.0, 1.0)


def _square_l2_candidate(x, x_best, eps, side, gen):
    """Square Attack's L2 proposal: a new bump in window 1, the mass of window 2 moved into
    it, the whole perturbation rescaled to norm eps."""
    n, c, h, w = x.shape
    delta = x_best - x
    r1, c1 = _random_corners(n, side, h, w, gen, x.device)
    r2, c2 = _random_corners(n, side, h, w, gen, x.device)
    m1 = _square_mask(r1, c1, side, h, w).to(x.dtype)
    m2 = _square_mask(r2, c2, side, h, w).to(x.dtype)
    m12 = torch.maximum(m1, m2)
    norm_w1 = (delta * m1).pow(2).sum((2, 3), keepdim=True).sqrt()  # per channel
    norm_img = delta.pow(2).sum((1, 2, 3), keepdim=True).sqrt()
    norm_w12 = (delta * m12).pow(2).sum((2, 3), keepdim=True).sqrt()
    bump = _meta_pseudo_gaussian(side, x.device, x.dtype)
    flip = torch.rand(n, generator=gen, device=x.device) < 0.5
    bumps = torch.where(flip[:, None, None], bump.t()[None], bump[None])
    new = _place(bumps, r1, c1, h, w) * _random_signs((n, c, 1, 1), gen, x.device, x.dtype)
    new = new + delta * m1 / (norm_w1 + 1e-10)
    budget = ((eps.view(-1, 1, 1, 1) ** 2 - norm_img ** 2).clamp_min(0.0) / c + norm_w12 ** 2).sqrt()
    new = new / new.pow(2).sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12) * budget
    delta = delta * (1 - m12) + new  # window 2 emptied, window 1 replaced
    delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, 1, 1, 1)
    return (x + delta).clamp(0.0, 1.0)


def square(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps,
    norm: str = "linf",
    queries: int = 1000,
    p_init: float | None = None,
    targets: torch.Tensor | None = None,
    seed: int | None = None,
    return_queries: bool = False,
):
    r"""Square Attack (Andriushchenko, Croce, Flammarion and Hein, 2020): score-based black box.

    Uses only the model's outputs, never its gradients (everything runs under
    :func:`torch.no_grad`). It is a random search that minimises the margin loss

    .. math::

        L(x') = Z_y(x') - \max_{j \ne y} Z_j(x')
        \qquad \big(\text{targeted: } \max_{j \ne t} Z_j(x') - Z_t(x')\big),

    which is negative exactly when the attack has succeeded. Linf: start from vertical
    stripes, :math:`x^0 = \operatorname{clip}_{[0,1]}(x + \varepsilon\,\sigma)` with one
    random sign :math:`\sigma` per column and channel; every iteration proposes, per
    sample, to move one random square of side
    :math:`s = \operatorname{round}(\sqrt{p\,H W})` (clipped to [1, min(H, W) - 1]) to
    :math:`x \pm \varepsilon` (one random sign per channel). L2: start from a grid of
    random-signed "meta pseudo-Gaussian" bumps scaled to norm :math:`\varepsilon`; every
    iteration proposes a new bump in one random window (odd side :math:`s \ge 3`) and moves
    the perturbation's mass out of a second window into it, then rescales the whole
    perturbation to norm :math:`\varepsilon`. A proposal is accepted, per sample, only if it
    lowers the loss. The fraction :math:`p` follows the paper's schedule: ``p_init``, halved
    at fixed fractions of the query budget (10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000
    per 10,000). Samples already fooled are not queried again; every iteration is one
    forward pass over the batch of the unfinished samples.

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs in [0, 1] to logits (only its outputs are used).
    x, y : torch.Tensor
        Images (B, C, H, W) in [0, 1] and their true labels (B,).
    eps : float or torch.Tensor
        Radius in pixel units (a number or one per sample).
    norm : {"linf", "l2"}
        The threat model's norm.
    queries : int
        Query budget per sample, the initial query included.
    p_init : float, optional
        Initial fraction of pixels a square covers, in (0, 1]. Defaults to 0.3 (Linf) and
        0.1 (L2). The reference code's Linf default, 0.05, is set for 224x224 ImageNet
        images, where it means 50x50 squares; on 8x8 digits it would start from 2x2 squares,
        0.3 starts from 4x4 ones.
    targets : torch.Tensor, optional
        Target labels (B,) for a targeted attack.
    seed : int, optional
        Seed of the random search.
    return_queries : bool
        Also return the number of queries each sample used.

    Returns
    -------
    torch.Tensor or (torch.Tensor, torch.Tensor)
        ``x_adv`` in [0, 1] with ``||x_adv - x||_p <= eps`` on the device of ``x``, and with
        ``return_queries=True`` the queries used per sample (int64, (B,)).

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("cnn", "digits", width=4)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv, used = square(model, x, y, eps=0.1, queries=50, seed=0, return_queries=True)
    >>> bool(rl.norms.lp_distance(x_adv, x, "linf").max() <= 0.1 + 1e-6), int(used.max()) <= 50
    (True, True)
    """
    x_in = x
    x, y, targets, eps_b = _prepare(model, x, y, targets, eps)
    _check_spatial(x, "square")
    check_choice(norm, "norm", ("linf", "l2"))
    check_positive_int(queries, "queries")
    if p_init is None:
        p_init = 0.3 if norm == "linf" else 0.1
    check_positive(p_init, "p_init")
    if p_init > 1:
        raise ValueError(f"p_init must be a fraction of the pixels in (0, 1], got {p_init}")
    _check_flag(return_queries, "return_queries")
    n, _, h, w = x.shape
    eps_t = _eps_flat(eps_b, x)
    labels = targets if targets is not None else y
    targeted = targets is not None
    gen = _generator(seed, x.device)
    used = torch.zeros(n, dtype=torch.int64, device=x.device)

    def margin(logits, idx):
        return -attack_objective(logits, labels[idx], "cw", targeted)

    with torch.no_grad(), eval_mode(model):
        everyone = torch.arange(n, device=x.device)
        init = _square_linf_init if norm == "linf" else _square_l2_init
        x_best = init(x, eps_t.view(-1, 1, 1, 1), gen)
        logits = model(x_best)
        used += 1
        loss = margin(logits, everyone)
        done = _success(logits, y, targets)
        for i in range(queries - 1):
            todo = torch.nonzero(~done).flatten()
            if len(todo) == 0:
                break
            p = _p_schedule(p_init, i, queries)
            if norm == "linf":
                side = min(max(int(round(math.sqrt(p * h * w))), 1), max(min(h, w) - 1, 1))
                cand = _square_linf_candidate(x[todo], x_best[todo], eps_t[todo].view(-1, 1, 1, 1), side, gen)
            else:
                side = max(int(round(math.sqrt(p * h * w))), 3)
                side = min(side + 1 - side % 2, min(h, w))
                cand = _square_l2_candidate(x[todo], x_best[todo], eps_t[todo], side, gen)
            logits = model(cand)
            used[todo] += 1
            new_loss = margin(logits, todo)
            better = new_loss < loss[todo]
            loss[todo] = torch.where(better, new_loss, loss[todo])
            x_best[todo] = torch.where(better.view(-1, 1, 1, 1), cand, x_best[todo])
            t = targets[todo] if targets is not None else None
            done[todo] = better & _success(logits, y[todo], t)
    return _to_input(x_in, x_best, used) if return_queries else _to_input(x_in, x_best)
