r"""Tukey depth and the Tukey median (Tukey, 1975): exact in the plane, by random
directions in higher dimension."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from .._validate import check_choice, check_finite, check_positive_int, check_tensor
from ._checks import _generator, _samples
from .estimators import median


_ANGLE_TOL = 1e-9


def _points(points, data):
    data = _samples(data, "data", ndim=(2,))
    check_finite(check_tensor(points, "points"), "points")
    single = points.dim() == 1
    pts = points[None] if single else points
    if pts.dim() != 2 or pts.shape[1] != data.shape[1]:
        raise ValueError(f"points must have shape ({data.shape[1]},) or (m, {data.shape[1]}) to match data, "
                         f"got {tuple(points.shape)}")
    return pts.to(torch.float64), data.to(torch.float64), single


def _depth_exact_2d(pts: torch.Tensor, data: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Exact halfplane depth by an angular sweep around each point (vectorized over points)."""
    n = data.shape[0]
    scale = float(data.abs().max()) + float(pts.abs().max()) + 1.0
    out = []
    for start in range(0, pts.shape[0], chunk):
        p = pts[start:start + chunk]
        diff = data[None] - p[:, None]  # (m, n, 2)
        at_p = diff.abs().amax(-1) <= 1e-12 * scale
        theta = torch.atan2(diff[..., 1], diff[..., 0])
        theta = torch.where(at_p, torch.full_like(theta, 1e6), theta)  # never inside a window
        s = theta.sort(1).values
        ext = torch.cat([s - 2 * math.pi, s, s + 2 * math.pi], 1).sort(1).values.contiguous()
        # the largest open half-plane through p: for each sample angle t, the samples with
        # angle in [t, t + pi) (an open half-plane, rotated until its boundary meets a sample)
        lo = torch.searchsorted(ext, (s - _ANGLE_TOL).contiguous())
        hi = torch.searchsorted(ext, (s + math.pi - _ANGLE_TOL).contiguous())
        count = torch.where(s < 1e5, hi - lo, torch.zeros_like(hi))
        out.append(n - count.amax(1))
    return torch.cat(out)


def _depth_directions(pts: torch.Tensor, data: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Depth with respect to the halfplanes normal to the directions ``u`` (K, d): an upper bound."""
    proj = (data @ u.T).T.contiguous().sort(1).values  # (K, n)
    q = (pts @ u.T).T.contiguous()  # (K, m)
    tol = 1e-12 * (float(proj.abs().max()) + float(q.abs().max()) + 1.0)
    n = data.shape[0]
    below_or_eq = torch.searchsorted(proj, q + tol, right=True)  # #{x.u <= p.u}
    above_or_eq = n - torch.searchsorted(proj, q - tol, right=False)  # #{x.u >= p.u}
    return torch.minimum(below_or_eq, above_or_eq).amin(0)


def _directions(d: int, k: int, seed: int) -> torch.Tensor:
    u = torch.randn(k, d, generator=_generator(seed), dtype=torch.float64)
    return u / u.norm(dim=1, keepdim=True)


def tukey_depth(points: torch.Tensor, data: torch.Tensor, *, method: str = "auto", n_directions: int = 1000,
                seed: int = 0) -> torch.Tensor:
    r"""The Tukey (halfspace) depth of ``points`` in the sample ``data``.

    .. math:: D(p; S) = \min_{\|u\| = 1} \big|\{x \in S : u^\top x \ge u^\top p\}\big|,

    the fewest samples in a closed half-space whose boundary passes through :math:`p`:
    over every 1-D projection, the smaller of the counts to the left and to the right
    of :math:`p` (Tukey, 1975). A point outside the convex hull of :math:`S` has depth 0.

    ``method="exact"`` (in :math:`d \le 2`): in 1-D, :math:`\min(\#\{x \le p\}, \#\{x \ge p\})`;
    in 2-D, an angular sweep in :math:`O(n \log n)` per point: sort the angles of
    :math:`x_i - p`; the deepest open half-plane through :math:`p` can be rotated until
    its boundary meets a sample, so it holds the samples with angle in
    :math:`[\theta_j, \theta_j + \pi)` for some :math:`j`, and :math:`D(p) = n -` the
    largest such count. Angles within :math:`10^{-9}` radians count as equal, so points
    that are exactly collinear with samples (the Tukey median's candidates) get their
    exact depth.

    ``method="directions"`` (any :math:`d`): the minimum over ``n_directions`` random unit
    vectors only. A minimum over fewer half-spaces can only be larger, so this is an
    **upper bound** on the depth, tight in the limit. Computing the depth exactly is
    NP-hard when :math:`d` is part of the input (Johnson and Preparata, 1978).
    ``"auto"`` is exact in :math:`d \le 2` and uses directions above.

    Parameters
    ----------
    points : torch.Tensor
        Query points, shape (d,) or (m, d).
    data : torch.Tensor
        Samples, shape (n, d).
    method : {"auto", "exact", "directions"}
    n_directions : int
        Number of random directions (``"directions"`` only).
    seed : int
        Seed of the directions.

    Returns
    -------
    torch.Tensor
        int64 depths, shape () or (m,).

    Examples
    --------
    >>> square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    >>> tukey_depth(torch.tensor([[0.5, 0.5], [0.0, 0.0], [2.0, 2.0]]), square)
    tensor([2, 1, 0])
    """
    pts, data, single = _points(points, data)
    check_choice(method, "method", ("auto", "exact", "directions"))
    check_positive_int(n_directions, "n_directions")
    d = data.shape[1]
    if method == "exact" and d > 2:
        raise ValueError(f"method='exact' is implemented for d <= 2 (the exact depth is NP-hard in general), "
                         f"got d = {d}: use method='directions' for an upper bound")
    if method == "directions" or (method == "auto" and d > 2):
        depth = _depth_directions(pts, data, _directions(d, n_directions, seed))
    elif d == 1:
        depth = _depth_directions(pts, data, torch.ones(1, 1, dtype=torch.float64))
    else:
        depth = _depth_exact_2d(pts, data)
    return depth[0] if single else depth


class TukeyMedian(NamedTuple):
    """The Tukey median, its depth, and (in 2-D) the vertices of the deepest region."""

    median: torch.Tensor  # (d,)
    depth: int
    region: torch.Tensor | None  # (k, 2) vertices of the region of maximal depth (2-D), else None
    exact: bool


def _line_intersections(data: torch.Tensor) -> torch.Tensor:
    """All intersection points of the lines through pairs of samples (and the samples themselves)."""
    n = data.shape[0]
    i, j = torch.triu_indices(n, n, 1)
    a, b = data[i], data[j]
    normal = torch.stack([-(b - a)[:, 1], (b - a)[:, 0]], 1)  # line: normal . x = c
    keep = normal.norm(dim=1) > 0
    normal, c = normal[keep], (normal[keep] * a[keep]).sum(1)
    p, q = torch.triu_indices(normal.shape[0], normal.shape[0], 1)
    det = normal[p, 0] * normal[q, 1] - normal[p, 1] * normal[q, 0]
    ok = det.abs() > 1e-12 * (normal[p].norm(dim=1) * normal[q].norm(dim=1))
    p, q, det = p[ok], q[ok], det[ok]
    x = (c[p] * normal[q, 1] - c[q] * normal[p, 1]) / det
    y = (normal[p, 0] * c[q] - normal[q, 0] * c[p]) / det
    return torch.cat([data, torch.stack([x, y], 1)])


def _polygon_centroid(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid of the convex hull of ``pts`` (k, 2) and the hull's vertices (segments and points too)."""
    from scipy.spatial import ConvexHull, QhullError

    uniq = np.unique(pts.round(12), axis=0)
    if len(uniq) >= 3:
        try:
            hull = ConvexHull(uniq)
            v = uniq[hull.vertices]
            x, y = v[:, 0], v[:, 1]
            x1, y1 = np.roll(x, -1), np.roll(y, -1)
            cross = x * y1 - x1 * y
            area = cross.sum() / 2
            if abs(area) > 1e-12 * max(1.0, np.abs(v).max() ** 2):
                cx = ((x + x1) * cross).sum() / (6 * area)
                cy = ((y + y1) * cross).sum() / (6 * area)
                return np.array([cx, cy]), v
        except QhullError:
            pass
    # a point or a segment: its midpoint
    centred = uniq - uniq.mean(0)
    axis = np.linalg.svd(centred, full_matrices=False)[2][0] if len(uniq) > 1 else np.zeros(2)
    t = centred @ axis
    ends = uniq[[t.argmin(), t.argmax()]]
    return ends.mean(0), np.unique(ends, axis=0)


def _tukey_median_2d(data: torch.Tensor, max_exact: int, chunk: int = 4096) -> TukeyMedian:
    n = data.shape[0]
    if n > max_exact:
        raise ValueError(f"the exact 2-D Tukey median examines O(n^4) candidate points; data has n = {n} > "
                         f"max_exact = {max_exact}: raise max_exact, subsample, or use method='directions'")
    cand = _line_intersections(data)
    # Prune before the exact sweep. The maximal depth is at least k = ceil(n/3) (the
    # centerpoint theorem), so a candidate outside the slab [k-th smallest, k-th largest]
    # of the projections on any direction cannot be the deepest; neither can one whose
    # upper bound over 64 directions is below the best exact depth found so far.
    k = math.ceil(n / 3)
    angles = torch.arange(16, dtype=torch.float64) * (math.pi / 16)
    u = torch.stack([angles.cos(), angles.sin()], 1)
    proj = (data @ u.T).sort(0).values
    pc = cand @ u.T
    tol = 1e-9 * (float(data.abs().max()) + 1.0)
    inside = ((pc >= proj[k - 1] - tol) & (pc <= proj[n - k] + tol)).all(1)
    cand = cand[inside]
    upper = _depth_directions(cand, data, _directions(2, 64, 0))
    order = upper.argsort(descending=True)
    cand, upper = cand[order], upper[order]
    best, depths = -1, torch.full((cand.shape[0],), -1, dtype=torch.int64)
    for start in range(0, cand.shape[0], chunk):
        if int(upper[start]) < best:
            break
        depths[start:start + chunk] = _depth_exact_2d(cand[start:start + chunk], data)
        best = max(best, int(depths[start:start + chunk].max()))
    deepest = cand[depths == best].numpy()
    centre, region = _polygon_centroid(deepest)
    return TukeyMedian(torch.from_numpy(centre), best, torch.from_numpy(region), True)


def _tukey_median_directions(data: torch.Tensor, n_directions: int, seed: int) -> TukeyMedian:
    from scipy.optimize import linprog

    n, d = data.shape
    u = _directions(d, n_directions, seed)
    proj = (data @ u.T).sort(0).values  # (n, K)
    norms = u.norm(dim=1).numpy()
    a_ub = np.vstack([u.numpy(), -u.numpy()])

    def polytope(m):  # {p : s_(m) <= u.p <= s_(n-m+1) for every direction}
        lo, hi = proj[m - 1].numpy(), proj[n - m].numpy()
        return lo, hi

    def chebyshev(m):  # the centre of the largest ball inside the polytope, or None if empty
        lo, hi = polytope(m)
        if np.any(lo > hi + 1e-12):
            return None
        a = np.hstack([a_ub, np.concatenate([norms, norms])[:, None]])
        b = np.concatenate([hi, -lo])
        res = linprog(np.r_[np.zeros(d), -1.0], A_ub=a, b_ub=b, bounds=[(None, None)] * d + [(0, None)],
                      method="highs")
        return res.x[:d] if res.status == 0 else None

    lo_m, hi_m = 1, (n + 1) // 2  # depth 1 is always feasible (the convex hull)
    centre = chebyshev(1)
    while lo_m < hi_m:  # largest m with a non-empty polytope
        mid = (lo_m + hi_m + 1) // 2
        c = chebyshev(mid)
        if c is None:
            hi_m = mid - 1
        else:
            lo_m, centre = mid, c
    if centre is None:  # numerical corner case: fall back to depth 1's centre
        centre = data.mean(0).numpy()
    return TukeyMedian(torch.from_numpy(np.asarray(centre, dtype=np.float64)), lo_m, None, False)


def tukey_median(data: torch.Tensor, *, method: str = "auto", n_directions: int = 1000, max_exact: int = 60,
                 seed: int = 0) -> TukeyMedian:
    r"""The Tukey median: the point of maximal Tukey depth (the centroid of the deepest region).

    Its depth is at least :math:`\lceil n/(d+1) \rceil` (the centerpoint theorem), so in
    the plane at least :math:`\lceil n/3 \rceil`: an adversary must control a third of the
    samples to drag it outside the inliers' hull in some direction. Computing it is NP-hard
    when :math:`d` is part of the input.

    ``method="exact"`` (2-D): depth is constant on the cells of the arrangement of the
    lines through pairs of samples and the regions :math:`\{p : D(p) \ge k\}` are closed and
    convex, so the maximum is attained at a vertex of the arrangement. The exact depth
    (:func:`tukey_depth`) of every intersection point of two such lines is computed, after
    pruning by a cheap upper bound; the deepest region is the convex hull of the deepest
    vertices and the median is its centroid. :math:`O(n^4)` candidates: for small
    :math:`n` (``max_exact``).

    ``method="directions"`` (any :math:`d`): replace all directions by ``n_directions``
    random ones. The set of points of depth :math:`\ge m` with respect to them is the
    polytope :math:`\{p : s^{(k)}_{(m)} \le u_k^\top p \le s^{(k)}_{(n-m+1)}\}` (order statistics
    of the projections); the largest non-empty one is found by bisection on :math:`m` with a
    linear program, and its Chebyshev centre is returned. The reported depth is with
    respect to the sampled directions: an upper bound on the true depth of the point.
    ``"auto"``: exact in 1-D (the median) and 2-D, directions above.

    Parameters
    ----------
    data : torch.Tensor
        Samples, shape (n, d).
    method : {"auto", "exact", "directions"}
    n_directions : int
        Random directions of the approximate method.
    max_exact : int
        Largest :math:`n` accepted by the exact 2-D method.
    seed : int
        Seed of the directions.

    Returns
    -------
    TukeyMedian
        ``median`` (d,), ``depth``, ``region`` (2-D exact: the vertices of the deepest
        region), ``exact``.

    Examples
    --------
    >>> square = torch.tensor([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0], [1.0, 1.0]])
    >>> tm = tukey_median(square)
    >>> tm.median, tm.depth
    (tensor([1., 1.], dtype=torch.float64), 3)
    """
    data = _samples(data, "data", ndim=(2,)).to(torch.float64)
    check_choice(method, "method", ("auto", "exact", "directions"))
    check_positive_int(n_directions, "n_directions")
    check_positive_int(max_exact, "max_exact")
    d = data.shape[1]
    if method == "exact" and d > 2:
        raise ValueError(f"method='exact' is implemented for d <= 2 (the Tukey median is NP-hard in general), "
                         f"got d = {d}: use method='directions'")
    if method == "directions" or (method == "auto" and d > 2):
        return _tukey_median_directions(data, n_directions, seed)
    if d == 1:
        med = median(data)
        return TukeyMedian(med, int(tukey_depth(med, data)), None, True)
    return _tukey_median_2d(data, max_exact)
