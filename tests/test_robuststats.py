"""Robust statistics: the estimators agree with numpy/scipy on clean data, the robust ones
survive corruption that breaks the naive ones, the Tukey depth is what its definition says,
and the filter beats the mean and the coordinate-wise median in high dimension."""

import math

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
import torch

from robustlab import robuststats as rs


def brute_force_depth_2d(points, data, n_directions=20000):
    """Tukey depth as the minimum over a fine grid of directions of the closed half-plane count."""
    angles = torch.arange(n_directions, dtype=torch.float64) * (2 * math.pi / n_directions)
    u = torch.stack([angles.cos(), angles.sin()], 1)  # (K, 2)
    proj_data = data.double() @ u.T  # (n, K)
    proj_pts = points.double() @ u.T  # (m, K)
    counts = (proj_data[None] >= proj_pts[:, None] - 1e-12).sum(1)  # (m, K)
    return counts.amin(1)


# ------------------------------------------------------------------ estimators on clean data

@pytest.mark.parametrize("n", [1, 2, 7, 10, 101])
def test_the_estimators_agree_with_numpy_and_scipy(n):
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(n), dtype=torch.float64) * 3 + 1
    xn = x.numpy()
    np.testing.assert_allclose(rs.mean(x).numpy(), xn.mean(0))
    np.testing.assert_allclose(rs.std(x).numpy(), xn.std(0), atol=1e-12)
    np.testing.assert_allclose(rs.median(x).numpy(), np.median(xn, 0))
    np.testing.assert_allclose(rs.coordinatewise_median(x).numpy(), np.median(xn, 0))
    np.testing.assert_allclose(rs.mad(x).numpy(), scipy.stats.median_abs_deviation(xn, axis=0, scale="normal"))
    np.testing.assert_allclose(rs.mad(x, scale=False).numpy(), scipy.stats.median_abs_deviation(xn, axis=0))
    for trim in (0.0, 0.1, 0.25, 0.4):
        np.testing.assert_allclose(rs.trimmed_mean(x, trim).numpy(), scipy.stats.trim_mean(xn, trim, axis=0))
    np.testing.assert_allclose(rs.median(x[:, 0]).numpy(), np.median(xn[:, 0]))


def test_mad_and_std_are_consistent_for_the_gaussian_sigma():
    assert rs.MAD_SCALE == pytest.approx(1 / scipy.stats.norm.ppf(0.75)) == pytest.approx(1.4826, abs=1e-4)
    x = 2.0 * torch.randn(40000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(rs.std(x)) == pytest.approx(2.0, abs=0.04)
    assert float(rs.mad(x)) == pytest.approx(2.0, abs=0.05)
    assert float(rs.mad(x, scale=False)) == pytest.approx(2.0 * 0.6745, abs=0.04)


def test_the_geometric_median_minimizes_the_sum_of_distances():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64) + torch.tensor([5.0, 0.0, 0.0]) * (
        torch.rand(40, 1, generator=g, dtype=torch.float64) < 0.2)
    y = rs.geometric_median(x)
    cost = lambda p: np.linalg.norm(x.numpy() - p, axis=1).sum()  # noqa: E731
    ref = scipy.optimize.minimize(cost, x.mean(0).numpy(), method="Nelder-Mead",
                                  options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000})
    assert cost(y.numpy()) <= ref.fun + 1e-8
    unit = (x - y) / (x - y).norm(dim=1, keepdim=True)
    assert float(unit.sum(0).norm()) < 1e-4, "the optimality condition: the unit vectors to the samples sum to 0"


def test_the_geometric_median_safeguard_handles_a_median_at_a_data_point():
    # the coordinate-wise median (Weiszfeld's start) is the data point (0, 0), which is also
    # the geometric median: plain Weiszfeld would divide by zero there
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [0.0, 0.0]], dtype=torch.float64)
    assert torch.equal(rs.geometric_median(x), torch.zeros(2, dtype=torch.float64))
    # started at a data point that is not the median, it must move away from it
    x = torch.tensor([[0.0, 0.0], [10.0, 0.0], [10.0, 1.0], [10.0, -1.0], [11.0, 0.0]], dtype=torch.float64)
    y = rs.geometric_median(x)
    assert torch.isfinite(y).all() and float((y - torch.tensor([10.0, 0.0])).norm()) < 1e-6


def test_the_geometric_median_of_one_coordinate_is_the_median():
    x = torch.randn(51, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert float(rs.geometric_median(x)[0]) == pytest.approx(float(rs.median(x[:, 0])), abs=1e-6)


# ------------------------------------------------------------------ breakdown

def test_one_point_moves_the_mean_arbitrarily_but_not_the_median():
    x = torch.randn(101, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for far in (1e3, 1e6, 1e9):
        y = x.clone()
        y[0] = far
        assert float(rs.mean(y) - rs.mean(x)) == pytest.approx((far - float(x[0])) / 101)
        s = x.sort().values  # one replaced sample moves the median by at most one order statistic
        assert float(s[49]) <= float(rs.median(y)) <= float(s[51])
        assert float(rs.std(y)) > far / 20 and float(rs.mad(y)) < 2 * float(rs.mad(x))


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.45])
def test_the_median_survives_any_corruption_below_one_half(rate):
    n = 200
    inliers = torch.randn(n, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    m = int(rate * n)
    lo, hi = float(inliers.min()), float(inliers.max())
    for far in (1e2, 1e8, -1e8):
        x = inliers.clone()
        x[:m] = far
        assert lo <= float(rs.median(x)) <= hi, "the median stays inside the inliers' range"
        assert float(rs.mad(x)) < (hi - lo) * rs.MAD_SCALE
        pts = torch.stack([x, inliers], 1)
        assert float(rs.geometric_median(pts).norm()) < 5, "the geometric median also stays bounded"
    x = inliers.clone()
    x[: n // 2 + 1] = 1e8
    assert float(rs.median(x)) == 1e8, "with more than half corrupted the median is the adversary's"


def test_the_trimmed_mean_breaks_down_once_eps_exceeds_the_trim():
    x = torch.randn(100, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y = x.clone()
    y[:8] = 1e8
    assert abs(float(rs.trimmed_mean(y, 0.1))) < 1
    y[:12] = 1e8
    assert float(rs.trimmed_mean(y, 0.1)) > 1e6


def test_the_eps_bump_moves_mean_and_std_without_bound_but_not_median_and_mad():
    rate, n = 0.1, 20000
    locations = torch.tensor([0.0, 10.0, 100.0, 1e4], dtype=torch.float64)
    out = rs.eps_bump_experiment(n, rate, locations, seed=0)
    e = out.errors
    assert float(e["mean"][-1]) == pytest.approx(rate * 1e4, rel=0.01)
    assert (e["mean"][1:].diff() > 0).all() and (e["std"][1:].diff() > 0).all()
    assert float(e["std"][-1]) > math.sqrt(rate * (1 - rate)) * 1e4 * 0.9
    # the population median of (1 - eps) N(0, 1) + eps * (a point far right) is
    # Phi^-1(1 / (2 (1 - eps))); the sample median is within sampling error of it
    shift = scipy.stats.norm.ppf(1 / (2 * (1 - rate)))
    for k in (1, 2, 3):
        assert float(e["median"][k]) == pytest.approx(shift, abs=0.03)
    assert float(e["mad"].max()) < 0.25 and float(e["trimmed_mean"][-1]) < 0.3
    assert float(e["median"][-1]) == pytest.approx(float(e["median"][1]), abs=1e-9), "bounded, whatever the distance"


def test_corruption_helpers_place_the_outliers_where_asked():
    s = rs.eps_bump(1000, 0.15, location=7.0, width=0.0, seed=1)
    assert int(s.is_outlier.sum()) == 150 and torch.all(s.x[s.is_outlier] == 7.0)
    assert torch.equal(s.x, rs.eps_bump(1000, 0.15, location=7.0, seed=1).x), "seeded"
    v = torch.tensor([3.0, 4.0, 0.0])
    c = rs.corrupt(500, 3, 0.2, distance=10.0, direction=v, mu=torch.tensor([1.0, 1.0, 1.0]), seed=2)
    assert int(c.is_outlier.sum()) == 100
    assert torch.allclose(c.x[c.is_outlier], torch.tensor([7.0, 9.0, 1.0], dtype=torch.float64))
    d = 400
    c = rs.corrupt(4000, d, 0.1, seed=3)  # defaults: the cluster is as far from mu as a typical inlier
    assert float((c.x[c.is_outlier][0] - c.mu).norm()) == pytest.approx(math.sqrt(d))
    assert float((c.x[~c.is_outlier] - c.mu).norm(dim=1).mean()) == pytest.approx(math.sqrt(d), rel=0.02)
    assert float((rs.mean(c.x) - c.mu).norm()) == pytest.approx(math.sqrt(0.01 * d + d / 4000), rel=0.05)


# ------------------------------------------------------------------ Tukey depth and median

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_exact_2d_depth_equals_a_brute_force_count_over_many_directions(seed):
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(15, 2, generator=g, dtype=torch.float64)
    pts = torch.cat([torch.randn(25, 2, generator=g, dtype=torch.float64) * 1.2, data[:5]])
    exact = rs.tukey_depth(pts, data)
    assert torch.equal(exact, brute_force_depth_2d(pts, data))
    assert exact.max() > 2, "the test covers deep points"
    approx = rs.tukey_depth(pts, data, method="directions", n_directions=50)
    assert (approx >= exact).all(), "a minimum over fewer directions is an upper bound"


def test_the_depth_of_degenerate_configurations():
    line = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    pts = torch.tensor([[1.0, 0.0], [1.5, 0.0], [0.5, 1e-4], [-1.0, 0.0]])
    assert rs.tukey_depth(pts, line).tolist() == [2, 2, 0, 0]
    square = torch.tensor([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0], [0.0, 2.0], [1.0, 1.0], [1.0, 1.0]])
    pts = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.5, 0.5], [2.0, 2.0]])
    assert rs.tukey_depth(pts, square).tolist() == [4, 1, 1, 1]
    x = torch.tensor([[3.0], [1.0], [2.0], [2.0], [5.0]])
    assert rs.tukey_depth(torch.tensor([[2.0], [4.0], [0.0]]), x).tolist() == [3, 1, 0]  # min(#<=, #>=)


def test_the_depth_is_affine_invariant():
    g = torch.Generator().manual_seed(7)
    data = torch.randn(20, 2, generator=g, dtype=torch.float64)
    pts = torch.randn(30, 2, generator=g, dtype=torch.float64)
    a = torch.tensor([[2.0, 1.0], [-0.5, 3.0]], dtype=torch.float64)
    b = torch.tensor([10.0, -4.0], dtype=torch.float64)
    assert torch.equal(rs.tukey_depth(pts @ a.T + b, data @ a.T + b), rs.tukey_depth(pts, data))


@pytest.mark.parametrize("n", [9, 20, 31])
def test_the_tukey_median_is_a_centerpoint_and_nothing_is_deeper(n):
    g = torch.Generator().manual_seed(n)
    data = torch.randn(n, 2, generator=g, dtype=torch.float64)
    tm = rs.tukey_median(data)
    assert tm.exact and tm.depth >= math.ceil(n / 3), "centerpoint theorem"
    assert int(rs.tukey_depth(tm.median, data)) == tm.depth, "the centroid of the deepest region is as deep"
    lo, hi = data.min(0).values, data.max(0).values
    grid = torch.stack(torch.meshgrid(*[torch.linspace(float(lo[k]), float(hi[k]), 120, dtype=torch.float64)
                                        for k in range(2)], indexing="ij"), -1).reshape(-1, 2)
    assert int(rs.tukey_depth(grid, data).max()) <= tm.depth, "no grid point is deeper than the Tukey median"


def test_the_tukey_median_stays_among_the_inliers_under_a_quarter_of_outliers():
    g = torch.Generator().manual_seed(11)
    inliers = torch.randn(24, 2, generator=g, dtype=torch.float64)
    outliers = torch.tensor([50.0, 50.0]) + torch.randn(8, 2, generator=g, dtype=torch.float64)
    data = torch.cat([inliers, outliers])
    tm = rs.tukey_median(data)
    assert tm.depth > 8, "deeper than the number of outliers"
    hull = scipy.spatial.Delaunay(inliers.numpy())
    assert hull.find_simplex(tm.median.numpy()) >= 0, "so it lies in the inliers' convex hull"
    assert float(rs.mean(data).norm()) > 10


def test_the_approximate_tukey_median_in_three_dimensions():
    g = torch.Generator().manual_seed(12)
    data = torch.randn(60, 3, generator=g, dtype=torch.float64)
    tm = rs.tukey_median(data, n_directions=300, seed=1)
    assert not tm.exact and tm.region is None
    depth = rs.tukey_depth(tm.median, data, n_directions=300, seed=1)
    assert int(depth) >= tm.depth >= math.ceil(60 / 4), "its depth over the sampled directions, >= n/(d+1)"
    assert float(tm.median.norm()) < 0.6


# ------------------------------------------------------------------ the filter

@pytest.fixture(scope="module")
def errors():
    return rs.compare_mean_estimators(dims=(20, 50, 100), rate_values=(0.05, 0.1, 0.2), n=2000,
                                      estimators=("mean", "coordinatewise_median", "filter"), progress=False)


def test_the_filter_beats_the_naive_estimators_by_a_margin_that_grows_with_d(errors):
    naive = torch.minimum(errors.errors["mean"], errors.errors["coordinatewise_median"])
    filt = errors.errors["filter"]
    assert (filt < naive).all()
    margin = naive - filt
    assert (margin.diff(dim=1) > 0).all(), f"the margin grows with d at every eps: {margin}"
    assert (naive > 0.8 * errors.rates["eps_sqrt_d"]).all(), "the naive error is of order eps * sqrt(d)"
    assert (filt <= errors.rates["sampling"] + errors.rates["eps_sqrt_log"]).all(), \
        "the filter is within eps * sqrt(log 1/eps) of the sampling error"


def test_the_filter_removes_mostly_outliers(errors):
    assert (errors.removed_outlier_fraction >= 0.9).all(), errors.removed_outlier_fraction
    s = rs.corrupt(2000, 50, 0.1, seed=5)
    out = rs.filter_mean(s.x, 0.1)
    assert float(out.removed[s.is_outlier].double().mean()) >= 0.95, "and finds (almost) all of them"
    assert sum(step.n_removed for step in out.history) == int(out.removed.sum())
    assert out.stopped == "spectral" and out.history[-1].eigenvalue <= out.history[-1].bound


def test_the_filter_leaves_clean_data_alone():
    x = torch.randn(2000, 50, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    out = rs.filter_mean(x, 0.1)
    assert int(out.removed.sum()) <= 20
    assert float((out.mean - x.mean(0)).norm()) < 0.05


def test_the_filter_handles_a_spread_cluster_in_a_random_direction():
    g = torch.Generator().manual_seed(8)
    direction = torch.randn(80, generator=g, dtype=torch.float64)
    s = rs.corrupt(2000, 80, 0.15, distance=6.0, direction=direction, spread=0.5, seed=9)
    out = rs.filter_mean(s.x, 0.15)
    err, naive = float((out.mean - s.mu).norm()), float((rs.mean(s.x) - s.mu).norm())
    assert err < 0.5 * naive and err < math.sqrt(80 / 2000) + 0.15 * math.sqrt(math.log(1 / 0.15))


def test_the_filter_works_in_high_dimension_with_the_randomized_eigensolver():
    s = rs.corrupt(1000, 400, 0.1, seed=10)
    out = rs.filter_mean(s.x.float(), 0.1)
    assert out.mean.dtype == torch.float32
    assert float((out.mean.double() - s.mu).norm()) < math.sqrt(400 / 900) + 0.1
    assert float((rs.mean(s.x) - s.mu).norm()) > 2


def test_filter_step_is_one_round_of_the_filter():
    """Repeating filter_step until it removes nothing is filter_mean: the same removals,
    the same rounds, the same estimate."""
    g = torch.Generator().manual_seed(13)
    cases = [rs.corrupt(2000, 20, 0.1, seed=14), rs.corrupt(1500, 60, 0.15, distance=5.0, spread=1.0, seed=15,
                                                            direction=torch.randn(60, generator=g, dtype=torch.float64))]
    for s in cases:
        rate = 0.1 if s.x.shape[1] == 20 else 0.15
        out = rs.filter_mean(s.x, rate)
        keep = torch.ones(s.x.shape[0], dtype=torch.bool)
        steps = []
        while True:
            remove, step = rs.filter_step(s.x[keep], rate)
            assert remove.shape == (int(keep.sum()),) and remove.dtype == torch.bool
            assert int(remove.sum()) == step.n_removed and step.n_remaining == int((~remove).sum())
            steps.append(step)
            if not bool(remove.any()):
                break
            idx = keep.nonzero().squeeze(1)
            keep[idx[remove]] = False
        assert torch.equal(~keep, out.removed)
        assert torch.allclose(s.x[keep].mean(0), out.mean)
        assert [(h.eigenvalue, h.n_removed) for h in steps] == [(h.eigenvalue, h.n_removed) for h in out.history]
    clean = torch.randn(3000, 10, generator=g, dtype=torch.float64)
    remove, step = rs.filter_step(clean, 0.1)
    assert not bool(remove.any()) and step.eigenvalue <= step.bound, "clean Gaussian data is left alone"
    with pytest.raises(ValueError, match="rate must satisfy 0 < rate < 0.5"):
        rs.filter_step(clean, 0.5)
    with pytest.raises(ValueError, match=r"x must have shape \(n, d\)"):
        rs.filter_step(clean[:, 0], 0.1)


# ------------------------------------------------------------------ argument checks

def test_arguments_are_checked():
    x = torch.randn(10, 2)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        rs.median([1.0, 2.0])
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        rs.mean(torch.arange(5))
    with pytest.raises(ValueError, match=r"x must have shape \(n,\) or \(n, d\)"):
        rs.mad(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"x must have shape \(n, d\)"):
        rs.geometric_median(torch.randn(5))
    with pytest.raises(ValueError, match="x holds no samples"):
        rs.mean(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="x contains NaN"):
        rs.median(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="trim must satisfy"):
        rs.trimmed_mean(x, 0.5)
    with pytest.raises(ValueError, match="rate must satisfy 0 < rate < 0.5"):
        rs.filter_mean(x, 0.0)
    with pytest.raises(ValueError, match="rate must be >= 0"):
        rs.eps_bump(10, -0.1, 1.0)
    with pytest.raises(ValueError, match="direction must be a non-zero vector"):
        rs.corrupt(10, 2, 0.1, direction=torch.zeros(2))
    with pytest.raises(ValueError, match=r"points must have shape \(2,\) or \(m, 2\)"):
        rs.tukey_depth(torch.zeros(3), x)
    with pytest.raises(ValueError, match="NP-hard"):
        rs.tukey_depth(torch.zeros(3), torch.randn(10, 3), method="exact")
    with pytest.raises(ValueError, match="max_exact"):
        rs.tukey_median(torch.randn(70, 2))
    with pytest.raises(ValueError, match="method must be one of"):
        rs.tukey_median(x, method="fast")
    with pytest.raises(ValueError, match="estimators must be one of"):
        rs.compare_mean_estimators(dims=(5,), estimators=("mode",))


def test_numpy_scalars_are_numbers_and_seeds_are_checked():
    ref = rs.eps_bump(200, 0.1, 5.0, seed=3)
    got = rs.eps_bump(np.int64(200), np.float32(0.1), np.float64(5.0), seed=np.int64(3))
    assert torch.equal(got.x, ref.x) and torch.equal(got.is_outlier, ref.is_outlier)
    s = rs.corrupt(np.int32(300), np.int64(5), np.float64(0.1), seed=np.uint8(1))
    assert s.x.shape == (300, 5)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        rs.eps_bump(100, 0.1, 5.0, seed=-1)
    with pytest.raises(TypeError, match="seed must be an integer"):
        rs.corrupt(100, 3, 0.1, seed=1.5)
    with pytest.raises(TypeError, match="location must be a real number"):
        rs.eps_bump(100, 0.1, True)
