import math

import pytest
import torch

import robustlab as rl

N = rl.norms


def test_norms_on_a_known_vector():
    v = torch.tensor([[3.0, -4.0, 0.0]])
    assert N.lp_norm(v, "l0").item() == 2
    assert N.lp_norm(v, "l1").item() == 7
    assert N.lp_norm(v, 2).item() == pytest.approx(5)
    assert N.lp_norm(v, math.inf).item() == 4
    assert N.lp_norm(v, "inf").item() == 4


def test_norms_are_per_sample_over_all_non_batch_dimensions():
    x = torch.rand(5, 1, 3, 3)
    assert torch.allclose(N.lp_norm(x, "l2"), x.flatten(1).norm(dim=1))
    x2 = torch.rand(5, 1, 3, 3)
    assert torch.allclose(N.lp_distance(x, x2, "linf"), (x - x2).flatten(1).abs().max(1).values)


def test_norm_arguments_are_checked():
    with pytest.raises(ValueError, match="p must be one of"):
        N.lp_norm(torch.ones(1, 2), 3)
    with pytest.raises(ValueError, match="x and x2 must have the same shape"):
        N.lp_distance(torch.ones(2, 2), torch.ones(2, 3))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        N.lp_norm([[1.0]])
    with pytest.raises(ValueError, match="NaN"):
        N.lp_norm(torch.tensor([[float("nan")]]))
    with pytest.raises(TypeError, match="floating-point"):
        N.lp_norm(torch.ones(2, 2, dtype=torch.int64))


def _l1_projection_by_bisection(v, eps, iters=200):
    """Independent reference: find theta with sum(max(|v| - theta, 0)) = eps by bisection."""
    a = v.abs()
    if a.sum() <= eps:
        return v.clone()
    lo, hi = 0.0, float(a.max())
    for _ in range(iters):
        mid = (lo + hi) / 2
        if float((a - mid).clamp_min(0).sum()) > eps:
            lo = mid
        else:
            hi = mid
    return v.sign() * (a - hi).clamp_min(0)


@pytest.mark.parametrize("seed", range(5))
def test_projections_land_in_the_ball_and_match_closed_forms(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64)
    c = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.rand(6, generator=g, dtype=torch.float64) * 3
    for norm, p in (("linf", math.inf), ("l2", 2), ("l1", 1)):
        z = N.project(x, c, eps, norm)
        assert bool((N.lp_distance(z, c, p) <= eps + 1e-9).all()), norm
    # closed forms, sample by sample
    z2 = N.project_l2(x, c, eps)
    zinf = N.project_linf(x, c, eps)
    z1 = N.project_l1(x, c, eps)
    for i in range(6):
        d = (x[i] - c[i]).flatten()
        e = float(eps[i])
        exp2 = d if d.norm() <= e else d * e / d.norm()
        assert torch.allclose((z2[i] - c[i]).flatten(), exp2)
        assert torch.allclose((zinf[i] - c[i]).flatten(), d.clamp(-e, e))
        assert torch.allclose((z1[i] - c[i]).flatten(), _l1_projection_by_bisection(d, e), atol=1e-9)


def test_projection_is_the_nearest_point_of_the_ball_by_brute_force():
    # 2-D: compare against a dense sampling of each ball
    x = torch.tensor([[1.3, 0.4]], dtype=torch.float64)
    c = torch.zeros(1, 2, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 801, dtype=torch.float64),
                                      torch.linspace(-1, 1, 801, dtype=torch.float64), indexing="ij"), -1).reshape(-1, 2)
    for norm, p in (("linf", math.inf), ("l2", 2), ("l1", 1)):
        inside = grid[N.lp_norm(grid, p) <= 1.0]
        best = inside[(inside - x).norm(dim=1).argmin()]
        z = N.project(x, c, 1.0, norm)[0]
        assert (z - x[0]).norm() <= (best - x[0]).norm() + 1e-12, norm
        # and the grid's best point is no closer than the projection up to the grid spacing
        assert (best - x[0]).norm() <= (z - x[0]).norm() + 2 * 2 / 800, norm
        assert float(N.lp_norm(z[None], p)) == pytest.approx(1.0), norm  # x is outside: z is on the sphere


def test_points_inside_the_ball_do_not_move():
    c = torch.rand(4, 10)
    x = c + 0.01 * torch.randn(4, 10)
    for norm in ("linf", "l2", "l1"):
        assert torch.allclose(N.project(x, c, 10.0, norm), x)


def test_zero_radius_projects_onto_the_centre():
    c, x = torch.rand(3, 5), torch.rand(3, 5)
    for norm in ("linf", "l2", "l1"):
        assert torch.allclose(N.project(x, c, 0.0, norm), c)


def test_projection_arguments_are_checked():
    x = torch.rand(2, 3)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        N.project_linf(x, x, -0.1)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        N.project_l2(x, x, torch.tensor([0.1, -0.1]))
    with pytest.raises(ValueError, match=r"eps must be a number or a tensor of shape \(2,\)"):
        N.project_l1(x, x, torch.ones(3))
    with pytest.raises(ValueError, match="x and center must have the same shape"):
        N.project_l2(x, torch.rand(2, 4), 0.1)
    with pytest.raises(ValueError, match="not convex"):
        N.project(x, x, 1.0, "l0")
    with pytest.raises(TypeError, match="eps must be a real number"):
        N.project_linf(x, x, "0.1")
    with pytest.raises(ValueError, match="eps must be a number >= 0, got NaN"):
        N.project_linf(x, x, float("nan"))


def test_box_projection():
    x = torch.tensor([[-0.5, 0.5, 1.5]])
    assert torch.equal(N.project_box(x), torch.tensor([[0.0, 0.5, 1.0]]))
    with pytest.raises(ValueError, match="low must be below high"):
        N.project_box(x, 1.0, 0.0)


@pytest.mark.parametrize("p", ["l0", "l1", "l2", "linf"])
def test_pairwise_distances_agree_with_the_per_sample_distance(p):
    g = torch.Generator().manual_seed(0)
    x, refs = torch.rand(5, 1, 4, 4, generator=g), torch.rand(7, 1, 4, 4, generator=g)
    refs[0] = x[0]  # a zero distance
    d = N.pairwise_lp_distance(x, refs, p, chunk=2)
    assert d.shape == (5, 7) and float(d[0, 0]) == 0.0
    for j in range(7):
        assert torch.allclose(d[:, j], N.lp_distance(x, refs[j].expand_as(x), p))


def test_pairwise_distance_arguments_are_checked():
    with pytest.raises(ValueError, match="x and refs must hold inputs of the same size"):
        N.pairwise_lp_distance(torch.rand(2, 4), torch.rand(3, 5))
    with pytest.raises(ValueError, match="chunk"):
        N.pairwise_lp_distance(torch.rand(2, 4), torch.rand(3, 4), chunk=0)


def test_numpy_scalars_are_radii_like_python_numbers():
    import numpy as np

    x, c = torch.rand(4, 6), torch.rand(4, 6)
    for project in (rl.norms.project_linf, rl.norms.project_l2, rl.norms.project_l1):
        assert torch.equal(project(x, c, np.float32(0.25)), project(x, c, float(np.float32(0.25))))
        assert torch.equal(project(x, c, np.int64(1)), project(x, c, 1))
    with pytest.raises(TypeError, match="eps must be a real number"):
        rl.norms.project_l2(x, c, np.bool_(True))
