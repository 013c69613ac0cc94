"""The oracle models' exact answers against brute force and linear programming."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize

import robustlab as rl
from robustlab.oracles import Constant, HalfSpace, OnePixel, Region


def random_halfspace(d, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    x = torch.rand(6, d, generator=g, dtype=torch.float64)
    return HalfSpace(w, -float(w @ torch.full((d,), 0.5, dtype=torch.float64))), x


def lp_box_distance(w, x, b, p):
    """min ||delta||_p s.t. w.(x + delta) + b = 0, 0 <= x + delta <= 1, as a linear program (p = 1, inf)."""
    d = len(w)
    m = float(w @ x + b)
    if p == 1:  # delta = u - v, u, v >= 0: min sum(u + v)
        c = np.ones(2 * d)
        A_eq = np.concatenate([w, -w])[None]
        bounds = [(0, 1 - xi) for xi in x] + [(0, xi) for xi in x]
    else:  # variables (delta, t): min t, -t <= delta_i <= t
        c = np.concatenate([np.zeros(d), [1.0]])
        A_eq = np.concatenate([w, [0.0]])[None]
        A_ub = np.block([[np.eye(d), -np.ones((d, 1))], [-np.eye(d), -np.ones((d, 1))]])
        bounds = [(-xi, 1 - xi) for xi in x] + [(0, None)]
        res = linprog(c, A_ub=A_ub, b_ub=np.zeros(2 * d), A_eq=A_eq, b_eq=[-m], bounds=bounds)
        return res.fun if res.status == 0 else math.inf
    res = linprog(c, A_eq=A_eq, b_eq=[-m], bounds=bounds)
    return res.fun if res.status == 0 else math.inf


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("norm,p", [("l1", 1), ("linf", math.inf)])
def test_box_distances_equal_the_linear_program(seed, norm, p):
    f, x = random_halfspace(7, seed)
    got = f.distance(x, norm, box=True)
    want = torch.tensor([lp_box_distance(f.w.numpy(), xi.numpy(), f.b, p) for xi in x], dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-9)
    assert bool((got >= f.distance(x, norm) - 1e-12).all())  # the box can only make it longer


@pytest.mark.parametrize("seed", range(4))
def test_box_l2_distance_is_the_constrained_minimum(seed):
    f, x = random_halfspace(5, seed)
    w = f.w.numpy()
    got = f.distance(x, "l2", box=True)
    for xi, g in zip(x.numpy(), got):
        res = minimize(lambda z: ((z - xi) ** 2).sum(), np.clip(xi - (w @ xi + f.b) * w / (w @ w), 0, 1),
                       constraints=[{"type": "eq", "fun": lambda z: w @ z + f.b}], bounds=[(0, 1)] * len(w),
                       method="SLSQP", options=dict(ftol=1e-14, maxiter=500))
        assert res.success
        assert float(g) == pytest.approx(math.sqrt(res.fun), rel=1e-5, abs=1e-7)


def test_pixels_to_change_is_the_smallest_subset_by_brute_force():
    for seed in range(5):
        f, x = random_halfspace(6, seed)
        for xi, k in zip(x, f.pixels_to_change(x)):
            m = float(f.margin(xi[None]))
            best = math.inf
            for r in range(0, 7):  # change r values to their extremes in the useful direction
                for S in itertools.combinations(range(6), r):
                    z = xi.clone()
                    for i in S:
                        z[i] = 0.0 if (f.w[i] > 0) == (m > 0) else 1.0
                    if float(f.margin(z[None])) * m <= 0:
                        best = min(best, r)
                if best < math.inf:
                    break
            assert float(k) == best


def test_the_unconstrained_distances_are_the_dual_norms():
    f = HalfSpace(torch.tensor([3.0, -4.0, 0.0]), b=1.0)
    x = torch.tensor([[0.0, 0.0, 0.0]])
    assert float(f.distance(x, "l2")) == pytest.approx(1 / 5)
    assert float(f.distance(x, "linf")) == pytest.approx(1 / 7)
    assert float(f.distance(x, "l1")) == pytest.approx(1 / 4)
    z = x + 1 / 25 * -torch.tensor([[3.0, -4.0, 0.0]])  # the L2-closest boundary point
    assert float(f.margin(z)) == pytest.approx(0, abs=1e-7)


def test_a_box_that_cannot_reach_the_boundary_gives_infinity():
    f = HalfSpace(torch.tensor([1.0, 1.0]), b=-3.0)  # the boundary x1 + x2 = 3 lies outside [0, 1]^2
    x = torch.tensor([[0.5, 0.5]])
    for norm in ("l2", "linf", "l1", "l0"):
        assert math.isinf(float(f.distance(x, norm, box=True)))
    assert math.isfinite(float(f.distance(x, "l2")))


def test_smoothed_probability_matches_monte_carlo_and_the_certificate_never_exceeds_it():
    f, x = random_halfspace(16, 0)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(20000, 16, generator=g, dtype=torch.float64) * 0.3
    for xi in x[:3]:
        mc = float(f.label(xi + noise).double().mean())
        assert mc == pytest.approx(float(f.smoothed_probability(xi[None], 0.3)), abs=0.015)
    cert = rl.smoothing.gaussian.certify(f, x.clamp(0, 1), sigma=0.3, n0=50, n=2000, alpha=0.001, seed=0)
    exact = f.certified_radius(x, 0.3)
    ok = cert.prediction == f.label(x)
    assert bool(ok[~cert.abstained].all())
    assert bool((cert.radius[~cert.abstained] <= exact[~cert.abstained] + 1e-9).all())


def test_one_pixel_and_region_are_half_spaces_with_their_exact_answers():
    f = OnePixel(5, n_inputs=16, threshold=0.25, gain=4.0)
    x = torch.rand(8, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(f.label(x), (x[:, 5] > 0.25).long())
    assert torch.equal(f(x).argmax(1), f.label(x))
    for norm in ("l2", "linf", "l1"):
        assert torch.allclose(f.distance(x, norm), (x[:, 5] - 0.25).abs().double())
    assert torch.equal(f.pixels_to_change(x), torch.ones(8, dtype=torch.float64))
    assert torch.allclose(f.smoothed_probability(x, 0.5), rl.oracles._phi((x[:, 5].double() - 0.25) / 0.5))

    r = Region((1, 6, 6), top=2, left=1, height=3, width=2, threshold=0.5)
    x = torch.zeros(2, 1, 6, 6)
    x[1, :, 2:5, 1:3] = 1.0
    assert r.label(x).tolist() == [0, 1] and r(x).argmax(1).tolist() == [0, 1]
    assert r.region_mean(x).tolist() == [0.0, 1.0]
    assert r.pixels_to_change(x).tolist() == [3.0, 3.0]  # three of the six values, to the other extreme
    outside = x.clone()
    outside[:, :, 0] = 1 - outside[:, :, 0]  # rows outside the region change nothing
    assert torch.equal(r.label(outside), r.label(x))


def test_constant_has_no_boundary():
    f = Constant(3, n_classes=10)
    x = torch.rand(4, 1, 8, 8)
    assert f(x).argmax(1).tolist() == [3] * 4 and f.label(x).tolist() == [3] * 4
    assert bool(torch.isinf(f.distance(x, "linf")).all()) and bool(torch.isinf(f.pixels_to_change(x)).all())
    assert f.smoothed_probability(x, 0.5).tolist() == [1.0] * 4
    assert f.smoothed_probability(x, 0.5, c=2).tolist() == [0.0] * 4


def test_attacks_do_not_beat_the_exact_box_distance():
    f, x = random_halfspace(12, 3)
    f = f.float()
    x = x.float()
    y = f.label(x)
    dist = f.distance(x, "linf", box=True)
    eps = float(dist.min()) * 0.99
    x_adv = rl.attacks.pgd(f, x, y, eps=eps, norm="linf", steps=50, seed=0)
    assert torch.equal(f.label(x_adv), y)  # inside the exact distance nothing can flip it


def test_from_rows_keeps_the_rows_and_decides_by_their_difference():
    w0, w1 = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -1.0])
    f = HalfSpace.from_rows(w0, w1, b0=0.5, b1=0.0)
    x = torch.rand(5, 2)
    assert torch.allclose(f(x), torch.stack([x @ w0 + 0.5, x @ w1], 1))
    assert torch.equal(f.label(x), (f(x)[:, 1] > f(x)[:, 0]).long())


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="not all zero"):
        HalfSpace(torch.zeros(3))
    with pytest.raises(TypeError, match="w must be a torch.Tensor"):
        HalfSpace([1.0, 2.0])
    with pytest.raises(ValueError, match="index must be < n_inputs"):
        OnePixel(4, n_inputs=4)
    with pytest.raises(ValueError, match="threshold"):
        OnePixel(0, n_inputs=4, threshold=1.0)
    with pytest.raises(ValueError, match="leave the 4x4 image"):
        Region((1, 4, 4), top=3, left=0, height=2, width=1)
    with pytest.raises(ValueError, match="c must be a class index"):
        Constant(10, n_classes=10)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        HalfSpace(torch.ones(2)).smoothed_probability(torch.zeros(1, 2), 0.0)
    with pytest.raises(ValueError, match="reads 2"):
        HalfSpace(torch.ones(2)).margin(torch.zeros(1, 3))
    f = OnePixel(np.int64(1), n_inputs=np.int64(3), threshold=np.float32(0.5))  # NumPy scalars are numbers
    assert f.index == 1
