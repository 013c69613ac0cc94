"""Limits of robustness: concentration on the sphere, the adversarial-spheres bound and the
curse of dimensionality for smoothing, checked against closed forms, brute force and
Monte Carlo within its error."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import robustlab as rl  # noqa: E402
from robustlab import theory  # noqa: E402


# --------------------------------------------------------------------------- sampling


def test_sphere_samples_have_the_right_norm_and_the_uniform_moments():
    n, d, r = 40000, 6, 1.7
    x = theory.sample_sphere(n, d, radius=r, seed=1, dtype=torch.float64)
    assert x.shape == (n, d)
    assert torch.allclose(x.norm(dim=1), torch.full((n,), r, dtype=torch.float64), atol=1e-12)
    # uniform on the sphere: mean 0 and second-moment matrix (r^2 / d) I
    se_mean = r / math.sqrt(d * n)
    assert float(x.mean(0).abs().max()) < 5 * se_mean
    second = x.T @ x / n
    target = r * r / d * torch.eye(d, dtype=torch.float64)
    assert float((second - target).abs().max()) < 0.02 * r * r / d * 5
    # fourth moment of one coordinate of the unit sphere: 3 / (d (d + 2))
    u1 = x[:, 0] / r
    m4 = float((u1 ** 4).mean())
    assert m4 == pytest.approx(3 / (d * (d + 2)), rel=0.05)


def test_sphere_samples_are_seeded():
    a = theory.sample_sphere(10, 4, seed=3)
    assert torch.equal(a, theory.sample_sphere(10, 4, seed=3))
    assert not torch.equal(a, theory.sample_sphere(10, 4, seed=4))


# --------------------------------------------------------------------------- caps


def test_cap_measure_matches_archimedes_and_the_circle():
    t = np.linspace(-1, 1, 41)
    # S^2: the measure of {x_1 >= t} is (1 - t)/2 (Archimedes' hat-box theorem)
    assert np.allclose(theory.cap_measure(t, 3), (1 - t) / 2, atol=1e-12)
    # S^1: an arc of half-angle arccos(t) out of 2 pi
    assert np.allclose(theory.cap_measure(t, 2), np.arccos(t) / math.pi, atol=1e-12)
    assert theory.cap_measure(2.0, 10) == 0.0 and theory.cap_measure(-2.0, 10) == 1.0


def test_cap_height_inverts_cap_measure_and_approaches_the_gaussian_quantile():
    mus = np.array([1e-4, 0.01, 0.2, 0.5, 0.8, 0.999])
    for d in (2, 3, 17, 500):
        assert np.allclose(theory.cap_measure(theory.cap_height(mus, d), d), mus, atol=1e-10)
    from scipy.stats import norm

    d = 100_000
    assert theory.cap_height(0.01, d) * math.sqrt(d) == pytest.approx(norm.ppf(0.99), rel=1e-3)


def test_distance_to_cap_equals_brute_force_over_the_cap():
    # many points of the cap of S^2, the minimum distance over them converges to the exact distance
    mu = 0.2
    t = theory.cap_height(mu, 3)
    pts = theory.sample_sphere(200_000, 3, seed=2, dtype=torch.float64)
    cap = pts[pts[:, 0] >= t]
    x = theory.sample_sphere(20, 3, seed=5, dtype=torch.float64)
    brute = torch.cdist(x, cap).amin(1)
    exact = theory.distance_to_cap(x, mu)
    assert bool((exact <= brute + 1e-12).all()), "no point of the cap is closer than the exact distance"
    assert float((brute - exact).max()) < 0.02
    assert bool((exact[x[:, 0] >= t] == 0).all())


@pytest.mark.parametrize("d", [2, 5, 50, 500])
@pytest.mark.parametrize("mu", [0.01, 0.3])
def test_sampled_neighbourhood_measure_matches_the_incomplete_beta_formula(d, mu):
    eps = np.array([0.0, 0.05, 0.1, 0.2, 0.4, 0.8])
    res = theory.concentration([d], eps, mu=mu, n=20000, seed=d)
    exact = theory.cap_neighbourhood_measure(mu, eps, d)
    assert np.allclose(res.exact[0], exact)
    se = np.sqrt(exact * (1 - exact) / res.n) + 1e-4
    assert (np.abs(res.estimate[0] - exact) < 4.5 * se).all(), (res.estimate[0], exact)


def test_neighbourhood_on_the_circle_grows_the_arc_by_the_chord_angle():
    mu, eps = 0.1, np.linspace(0, 2, 9)
    expected = np.minimum(1.0, mu + 2 * (2 * np.arcsin(eps / 2)) / (2 * math.pi))
    assert np.allclose(theory.cap_neighbourhood_measure(mu, eps, 2), expected, atol=1e-12)


def test_concentration_grows_with_the_dimension_and_the_gaussian_approximation_converges():
    eps = 0.2
    values = [theory.cap_neighbourhood_measure(0.01, eps, d) for d in (10, 100, 1000, 10000)]
    assert values == sorted(values) and values[-1] > 1 - 1e-9
    errors = [abs(theory.cap_neighbourhood_measure(0.01, 1 / math.sqrt(d), d)
                  - theory.gaussian_neighbourhood_measure(0.01, 1 / math.sqrt(d), d)) for d in (10, 100, 1000, 10000)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-3


def test_the_half_sphere_respects_the_lecture_bound():
    for d in (2, 3, 10, 100, 1000):
        eps = np.linspace(0, 2, 201)
        assert (theory.cap_neighbourhood_measure(0.5, eps, d) >= theory.levy_bound(eps, d) - 1e-12).all()


def test_a_slab_grows_faster_than_the_cap_of_the_same_measure():
    # Levy's isoperimetric inequality: the cap has the smallest eps-neighbourhood; the
    # equatorial slab {|x_1| <= s} of the same measure grows much faster
    d, mu = 50, 0.2
    s = theory.cap_height(0.5 - mu / 2, d)
    x = theory.sample_sphere(20000, d, seed=9, dtype=torch.float64)
    phi = torch.arcsin(x[:, 0].abs())
    dist_slab = 2 * torch.sin((phi - math.asin(s)).clamp_min(0) / 2)
    assert float((dist_slab == 0).double().mean()) == pytest.approx(mu, abs=0.02)
    for eps in (0.05, 0.1, 0.2):
        assert float((dist_slab <= eps).double().mean()) > theory.cap_neighbourhood_measure(mu, eps, d) + 0.05


# --------------------------------------------------------------------------- the isoperimetric bound


@pytest.mark.parametrize("d", [3, 30, 300])
def test_the_cap_attains_the_isoperimetric_bound(d):
    mu = 0.05
    x = theory.sample_sphere(20000, d, seed=d, dtype=torch.float64)
    dist = theory.distance_to_cap(x, mu)
    se = float(dist.std()) / math.sqrt(dist.numel())
    assert float(dist.mean()) == pytest.approx(theory.isoperimetric_bound(mu, d), abs=4 * se)
    assert float(dist.median()) == pytest.approx(theory.isoperimetric_bound(mu, d, statistic="median"),
                                                 abs=0.03 / math.sqrt(d))


def test_any_other_set_of_the_same_measure_is_closer_on_average():
    d, mu = 40, 0.1
    s = theory.cap_height(0.5 - mu / 2, d)
    x = theory.sample_sphere(20000, d, seed=11, dtype=torch.float64)
    dist_slab = 2 * torch.sin((torch.arcsin(x[:, 0].abs()) - math.asin(s)).clamp_min(0) / 2)
    # two antipodal caps of measure mu / 2 each
    t2 = theory.cap_height(mu / 2, d)
    dist_caps = 2 * torch.sin((torch.arccos(x[:, 0].abs()) - math.acos(t2)).clamp_min(0) / 2)
    bound = theory.isoperimetric_bound(mu, d)
    assert float(dist_slab.mean()) < bound and float(dist_caps.mean()) < bound


def test_the_bound_shrinks_like_one_over_root_d_and_matches_its_headline_form():
    mu = 0.01
    ds = [10, 100, 1000, 10000]
    bounds = [theory.isoperimetric_bound(mu, d, statistic="median") for d in ds]
    assert bounds == sorted(bounds, reverse=True)
    ratios = [b / theory.isoperimetric_approximation(mu, d) for b, d in zip(bounds, ds)]
    assert abs(ratios[-1] - 1) < 0.01 and abs(ratios[-1] - 1) < abs(ratios[0] - 1)
    scaled = [theory.isoperimetric_bound(mu, d) * math.sqrt(d) for d in ds]
    assert max(scaled) / min(scaled) < 1.3
    assert theory.isoperimetric_bound(0.0, 10) == math.inf
    assert theory.isoperimetric_bound(0.7, 10, statistic="median") == 0.0


# --------------------------------------------------------------------------- the attack on the sphere


class CapClassifier(torch.nn.Module):
    """Class 1 exactly on the cap {x_1 >= t r} of a sphere of radius r (in sphere
    coordinates after the box map): its errors on inner-sphere points are the cap."""

    def __init__(self, t, r, box):
        super().__init__()
        self.norm = rl.models.Normalize((0.5,), (1 / (2 * box),))
        self.t, self.r = t, r
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, u):
        x = self.norm(u)
        margin = x[:, 0] - self.t * self.r + 0 * self.dummy
        return torch.stack([torch.zeros_like(margin), margin], 1)


@pytest.mark.parametrize("d", [3, 20, 200])
def test_the_attack_finds_the_exact_nearest_error_of_a_cap(d):
    mu, r, box = 0.05, 1.0, 1.3
    t = theory.cap_height(mu, d)
    model = CapClassifier(t, r, box)
    x = theory.sample_sphere(64, d, radius=r, seed=d)
    y = torch.zeros(64, dtype=torch.int64)
    res = theory.nearest_error_on_sphere(model, x, y, box=box, steps=20, search_steps=12)
    exact = theory.distance_to_cap(x.double(), mu).float()
    assert bool(res.found.all())
    assert torch.allclose(res.x_adv.norm(dim=1), torch.full((64,), r), atol=1e-5), "x_adv stays on the sphere"
    assert bool((res.x_adv[:, 0] >= t * r - 1e-6).all()), "every x_adv is an error (in the cap)"
    assert bool((res.distance >= exact - 1e-5).all()), "no point of the cap is closer than the exact distance"
    assert float((res.distance - exact).max()) < 0.01, "the search converges to the nearest error"
    assert torch.allclose(res.distance, (res.x_adv - x).norm(dim=1), atol=1e-6)


def test_misclassified_inputs_are_at_distance_zero_and_unreachable_errors_are_reported():
    box = 1.3
    model = CapClassifier(0.5, 1.0, box)
    x = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    res = theory.nearest_error_on_sphere(model, x, torch.tensor([0, 0]), box=box, search_steps=12)
    assert res.found[0] and res.distance[0] == 0 and torch.equal(res.x_adv[0], x[0])  # e_1 is in the cap
    # from -e_1 the cap {x_1 >= 1/2} is 120 degrees away: a chord of length sqrt(3)
    assert res.found[1] and math.sqrt(3) - 1e-5 <= float(res.distance[1]) < math.sqrt(3) + 0.01
    never = CapClassifier(2.0, 1.0, box)  # the cap is empty: class 0 everywhere on the sphere
    res = theory.nearest_error_on_sphere(never, x, torch.tensor([0, 0]), box=box)
    assert not bool(res.found.any()) and bool(torch.isinf(res.distance).all())
    assert torch.equal(res.x_adv, x)


@pytest.fixture(scope="module")
def spheres():
    # the default networks (two hidden layers of 128 ReLUs, 2,000 training points); fewer attacked points
    return theory.adversarial_spheres((16, 64), n_error=10000, n_attack=60, steps=12, search_steps=7,
                                      progress=False)


def test_attack_points_on_a_trained_net_are_errors_on_the_sphere():
    d, box = 32, 1.3
    train = rl.data.concentric_spheres(1000, d, seed=0)
    model = theory.sphere_model(d, width=32, box=box)
    rl.train.fit(model, (theory.to_unit_box(train.x, box), train.y), epochs=5, progress=False)
    x = theory.sample_sphere(40, d, radius=1.3, seed=1)
    y = torch.ones(40, dtype=torch.int64)
    res = theory.nearest_error_on_sphere(model, x, y, box=box, steps=10, search_steps=6)
    assert bool(res.found.any())
    xa = res.x_adv[res.found]
    assert torch.allclose(xa.norm(dim=1), torch.full((xa.shape[0],), 1.3), atol=1e-5)
    pred = rl.train.predict(model, theory.to_unit_box(xa, box))
    assert bool((pred != 1).all()), "every returned point is misclassified"


def test_measured_distances_respect_the_isoperimetric_bound(spheres):
    rows = spheres.as_table()
    assert {(r["d"], r["sphere"]) for r in rows} == {(16, "inner"), (16, "outer"), (64, "inner"), (64, "outer")}
    for r in rows:
        if r["error_lower"] > 0:
            # the true mean distance is below the bound; the attack's distances are upper
            # estimates of the true ones, so this holds only for an attack that finds near errors
            assert r["distance_mean"] <= r["bound_mean_conservative"], r
            assert r["found"] == 1.0
    for sphere in ("inner", "outer"):
        low, high = (next(r for r in rows if r["d"] == d and r["sphere"] == sphere) for d in (16, 64))
        assert high["distance_mean"] < low["distance_mean"], "errors come closer as the dimension grows"
        assert high["bound_mean"] < low["bound_mean"] or high["error"] >= low["error"]


def test_spheres_result_plots(spheres):
    ax = spheres.plot()
    assert len(ax.get_lines()) == 4


# --------------------------------------------------------------------------- the curse of dimensionality


def test_curse_of_dimensionality_matches_the_closed_form_and_is_monotone():
    d = np.array([1, 4, 64, 784, 3072, 150528])
    for p in (2, 3, 4, 8, math.inf):
        expected = d ** (1 / p - 0.5)
        assert np.allclose(theory.curse_of_dimensionality(d, p), expected)
    assert theory.curse_of_dimensionality(3072, "linf") == pytest.approx(1 / math.sqrt(3072))
    assert np.allclose(theory.curse_of_dimensionality(d, 2), 1.0)
    for p in (3, 4, math.inf):
        assert (np.diff(theory.curse_of_dimensionality(d, p)) < 0).all(), "shrinks with d for p > 2"
    by_p = [theory.curse_of_dimensionality(784, p) for p in (2, 3, 4, 8, math.inf)]
    assert by_p == sorted(by_p, reverse=True), "shrinks with p"


@pytest.mark.parametrize("p", [3, 4, math.inf])
def test_the_lp_radius_from_an_l2_certificate_is_sound_and_tight(p):
    d, r2 = 100, 0.5
    rp = theory.lp_radius_from_l2(r2, d, p)
    # sound: every delta on the Lp sphere of radius rp lies in the L2 ball of radius r2
    g = torch.Generator().manual_seed(0)
    for delta in (torch.randn(2000, d, generator=g, dtype=torch.float64),
                  torch.sign(torch.randn(2000, d, generator=g, dtype=torch.float64))):
        delta = delta / torch.linalg.vector_norm(delta, ord=p, dim=1, keepdim=True) * rp
        assert float(delta.norm(dim=1).max()) <= r2 + 1e-12
    # tight: the constant perturbation reaches the L2 radius exactly
    const = torch.full((d,), rp * d ** (-1 / p) if p != math.inf else rp, dtype=torch.float64)
    assert float(torch.linalg.vector_norm(const, ord=p)) == pytest.approx(rp)
    assert float(const.norm()) == pytest.approx(r2)


def test_curse_plot_draws_one_line_per_p():
    ax = theory.plot_curse_of_dimensionality(p_values=(2, 4, math.inf), mark={"MNIST": 784})
    assert [ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")] == ["p = 2", "p = 4", "p = ∞"]


# --------------------------------------------------------------------------- argument checks


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="d must be an integer >= 2"):
        theory.cap_measure(0.1, 1)
    with pytest.raises(ValueError, match=r"mu must be in \[0, 1\]"):
        theory.cap_height(1.5, 10)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        theory.cap_neighbourhood_measure(0.1, -0.1, 10)
    with pytest.raises(ValueError, match="statistic must be one of"):
        theory.isoperimetric_bound(0.1, 10, statistic="mode")
    with pytest.raises(ValueError, match="x must lie on the sphere of radius 1"):
        theory.distance_to_cap(torch.ones(3, 4), 0.1)
    with pytest.raises(ValueError, match="p must be >= 2"):
        theory.curse_of_dimensionality(10, 1)
    with pytest.raises(ValueError, match="d must hold integers >= 1"):
        theory.curse_of_dimensionality(0, 3)
    with pytest.raises(ValueError, match="every point of x must have norm <= box"):
        theory.nearest_error_on_sphere(CapClassifier(0.5, 1.0, 1.3), torch.tensor([[2.0, 0.0]]),
                                       torch.tensor([0]), box=1.3)
    with pytest.raises(TypeError, match="y must be an int64"):
        theory.nearest_error_on_sphere(CapClassifier(0.5, 1.0, 1.3), torch.tensor([[1.0, 0.0]]),
                                       torch.tensor([0.0]), box=1.3)
    with pytest.raises(ValueError, match="mu must be in"):
        theory.concentration([3], [0.1], mu=0.0)
    with pytest.raises(ValueError, match=r"alpha must be a probability in \(0, 1\)"):
        theory.adversarial_spheres([4], alpha=1.5)
    with pytest.raises(ValueError, match="x must lie in the cube"):
        theory.to_unit_box(torch.tensor([[2.0]]), 1.3)
