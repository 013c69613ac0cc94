"""Certified accuracy under distribution shift (robustlab.shift): the bound never exceeds the
worst shift a grid search finds within the budget, is attained in an analytic case, and its
confidence bound fails at most alpha of the time."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm

import robustlab as rl
from robustlab import shift
from robustlab.smoothing.sampling import GaussianNoise, UniformNoise


class Threshold(torch.nn.Module):
    """1-D classifier: class 1 where z >= t, else class 0 (logits (B, 2))."""

    def __init__(self, t):
        super().__init__()
        self.register_buffer("t", torch.tensor(float(t), dtype=torch.float64))

    def forward(self, z):
        s = z.reshape(z.shape[0], -1)[:, :1] - self.t
        return torch.cat([-s, s], 1)


def gaussian_accuracy(x, t, sigma, theta=0.0):
    """Exact accuracy of the randomized threshold model (label 1) at x + theta."""
    return norm.cdf((x + theta - t) / sigma)


def uniform_accuracy(x, t, w, theta=0.0):
    return np.clip((x + theta - t + w) / (2 * w), 0.0, 1.0)


# --------------------------------------------------------------------------- transformations


def test_every_transformation_composes_additively():
    torch.manual_seed(0)
    x = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    for space in (shift.Brightness(), shift.Translation()):
        a, b = torch.randn(5, space.dim, dtype=torch.float64), torch.randn(5, space.dim, dtype=torch.float64)
        twice = space.apply(space.apply(x, a), b)
        assert torch.allclose(twice, space.apply(x, a + b), atol=1e-10), space
    add = shift.Additive(64)
    a, b = torch.randn(5, 64, dtype=torch.float64), torch.randn(5, 64, dtype=torch.float64)
    assert torch.allclose(add.apply(add.apply(x, a), b), add.apply(x, a + b))


def test_translation_by_whole_pixels_is_a_circular_shift_of_the_band_limited_image():
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    t = shift.Translation()
    base = t.apply(x, torch.zeros(2, dtype=torch.float64))
    moved = t.apply(x, torch.tensor([2.0, -1.0], dtype=torch.float64))
    assert torch.allclose(moved, torch.roll(base, (2, -1), (-2, -1)), atol=1e-10)
    assert torch.allclose(t.apply(base, torch.zeros(2, dtype=torch.float64)), base, atol=1e-12)  # P is a projection


def test_brightness_keeps_pixels_in_range_and_is_monotone_in_theta():
    x = torch.rand(4, 1, 8, 8)
    lo, hi = shift.Brightness().apply(x, torch.tensor([-1.0])), shift.Brightness().apply(x, torch.tensor([1.0]))
    assert float(lo.min()) >= 0 and float(hi.max()) <= 1 and bool((hi >= lo).all())


# --------------------------------------------------------------------------- the bound, analytic case


@pytest.mark.parametrize("sigma,eps", [(0.5, 0.3), (1.0, 1.0), (0.25, 0.8)])
def test_gaussian_tv_bound_is_the_exact_worst_case_for_a_point_mass_at_the_tight_threshold(sigma, eps):
    t = -eps / 2  # accuracy Phi(eps / 2 sigma); the shift -eps brings it to Phi(-eps / 2 sigma)
    a = float(gaussian_accuracy(0.0, t, sigma))
    bound = shift.shift_bound(a, eps, GaussianNoise(sigma), "tv")
    grid = torch.tensor(sorted(set(np.linspace(-3, 3, 121).tolist()) | {-eps}), dtype=torch.float64)[:, None]
    table = torch.from_numpy(gaussian_accuracy(0.0, t, sigma, grid[:, 0].numpy()))[None]
    worst = shift.worst_shift(table, grid, eps, p=1, ground="l2")
    assert worst.accuracy >= bound - 1e-9, "the TV bound exceeds an achievable shift"
    assert worst.accuracy == pytest.approx(bound, abs=1e-7), "the TV bound is attained here"
    assert bound == pytest.approx(norm.cdf(-eps / (2 * sigma)), abs=1e-12)


@pytest.mark.parametrize("w,t,eps", [(0.5, 0.1, 0.2), (1.0, -0.3, 0.5)])
def test_uniform_tv_bound_is_the_exact_worst_case_for_a_point_mass(w, t, eps):
    a = float(uniform_accuracy(0.0, t, w))
    bound = shift.shift_bound(a, eps, UniformNoise(w), "tv")
    grid = torch.tensor(sorted(set(np.linspace(-2, 2, 81).tolist()) | {-eps}), dtype=torch.float64)[:, None]
    table = torch.from_numpy(uniform_accuracy(0.0, t, w, grid[:, 0].numpy()))[None]
    worst = shift.worst_shift(table, grid, eps, p=1, ground="l1")
    assert worst.accuracy >= bound - 1e-9
    assert worst.accuracy == pytest.approx(bound, abs=1e-7)
    assert bound == pytest.approx(a - eps / (2 * w))


@pytest.mark.parametrize("noise,bound", [(GaussianNoise(0.5), "hellinger"), (GaussianNoise(0.5), "tv"),
                                         (UniformNoise(0.6), "hellinger"), (UniformNoise(0.6), "tv")])
def test_bound_never_exceeds_the_worst_per_point_shift_of_a_spread_out_distribution(noise, bound):
    """Many points and thresholds, the LP over every per-point plan of shifts on a fine grid
    with the bound's own metric: the exact accuracies of the 1-D model are known."""
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1.5, size=40)
    t = 0.0
    grid = torch.linspace(-3, 3, 241, dtype=torch.float64)[:, None]
    if isinstance(noise, GaussianNoise):
        table = gaussian_accuracy(xs[:, None], t, noise.sigma, grid[:, 0].numpy()[None])
        acc0 = float(gaussian_accuracy(xs, t, noise.sigma).mean())
    else:
        table = uniform_accuracy(xs[:, None], t, noise.width, grid[:, 0].numpy()[None])
        acc0 = float(uniform_accuracy(xs, t, noise.width).mean())
    p, ground = shift.shift_metric(noise, bound)
    for eps in (0.05, 0.2, 0.5, 1.0):
        certified = shift.shift_bound(acc0, eps, noise, bound)
        worst = shift.worst_shift(torch.from_numpy(table), grid, eps, p=p, ground=ground)
        assert worst.mean_cost <= eps ** p + 1e-9
        assert certified <= worst.accuracy + 1e-9, (eps, certified, worst.accuracy)


def test_hellinger_bound_beats_tv_at_high_accuracy_and_both_start_at_the_accuracy():
    g = GaussianNoise(0.5)
    assert shift.shift_bound(0.95, 0.0, g) == 0.95 == shift.shift_bound(0.95, 0.0, g, "tv")
    eps = np.array([0.1, 0.3])
    assert (shift.shift_bound(0.95, eps, g) > shift.shift_bound(0.95, eps, g, "tv")).all()
    assert (np.diff(shift.shift_bound(0.95, np.linspace(0, 3, 30), g)) <= 0).all()


# --------------------------------------------------------------------------- the statistics


def test_accuracy_lower_bound_fails_at_most_alpha_of_the_time():
    """A known base classifier: the Clopper-Pearson bound on the empirical accuracy of the
    randomized model exceeds the true accuracy in at most alpha of repeated certifications."""
    sigma, alpha, trials = 0.5, 0.1, 300
    xs = torch.linspace(-0.5, 1.0, 30, dtype=torch.float64)[:, None]
    x01 = (xs + 0.5) / 1.5   # inputs in [0, 1]; the threshold moves with them
    model = Threshold(0.5 / 1.5)
    truth = float(gaussian_accuracy(x01[:, 0].numpy(), 0.5 / 1.5, sigma).mean())
    y = torch.ones(30, dtype=torch.long)
    fails = 0
    for seed in range(trials):
        cert = shift.certify_shift(model, x01, y, shift.Additive(1), GaussianNoise(sigma), 0.0, n=200, alpha=alpha,
                                   seed=seed)
        fails += cert.accuracy_lower > truth
    assert fails <= binom.ppf(0.999, trials, alpha), f"{fails} of {trials} bounds above the true accuracy"
    assert fails > 0  # the bound is not trivially low: it is exceeded now and then, as alpha allows


def test_population_target_uses_each_input_once():
    model = Threshold(0.5)
    x = torch.rand(50, 1, dtype=torch.float64)
    cert = shift.certify_shift(model, x, torch.ones(50, dtype=torch.long), shift.Additive(1), UniformNoise(0.2),
                               [0.0, 0.1], target="population", alpha=0.05)
    assert cert.n == 50 and cert.target == "population" and (cert.wasserstein_p, cert.ground) == (1, "l1")


# --------------------------------------------------------------------------- digits scale


@pytest.fixture(scope="module")
def shift_model():
    torch.manual_seed(0)
    return shift.base_model(arch="mlp", width=4, epochs=4, cache=False).model


@pytest.mark.parametrize("space,noise,radius,steps", [
    (shift.Brightness(), GaussianNoise(0.5), 2.0, 17),
    (shift.Brightness(), UniformNoise(0.8), 2.0, 17),
    (shift.Translation(), GaussianNoise(0.5), 1.5, 5),
    (shift.Translation(), UniformNoise(0.8), 1.5, 5),
])
def test_digits_certified_accuracy_holds_against_the_worst_grid_shift(shift_model, digits, space, noise, radius, steps):
    _, test = digits
    x, y = test.x[:60], test.y[:60]
    grid = shift.parameter_grid(space, radius, steps)
    # 300 draws per cell: the TV bound of uniform translation comes within about 0.02 of the worst plan,
    # and a minimum over noisy estimates is biased low
    table = shift.accuracy_grid(shift_model, x, y, space, noise, grid, n=300 if space.dim == 2 else 100, seed=1)
    for bound in ("hellinger", "tv"):
        p, ground = shift.shift_metric(noise, bound)
        eps = [0.25, 0.5, 1.0]
        cert = shift.certify_shift(shift_model, x, y, space, noise, eps, n=4000, alpha=0.001, bound=bound, seed=2)
        for e, certified in zip(eps, cert.accuracy):
            worst = shift.worst_shift(table, grid, e, p=p, ground=ground)
            assert certified <= worst.accuracy, (bound, e, certified, worst.accuracy)
            assert certified <= worst.constant


# --------------------------------------------------------------------------- argument errors


def test_arguments_are_checked():
    model = Threshold(0.5)
    x, y = torch.rand(4, 1, dtype=torch.float64), torch.ones(4, dtype=torch.long)
    add, g = shift.Additive(1), GaussianNoise(0.5)
    with pytest.raises(ValueError, match="eps"):
        shift.certify_shift(model, x, y, add, g, -0.1)
    with pytest.raises(TypeError, match="noise"):
        shift.certify_shift(model, x, y, add, rl.smoothing.sampling.LaplaceNoise(1.0), 0.1)
    with pytest.raises(ValueError, match="bound"):
        shift.shift_bound(0.9, 0.1, g, "kl")
    with pytest.raises(ValueError, match="n must be None"):
        shift.certify_shift(model, x, y, add, g, 0.1, n=10, target="population")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        shift.certify_shift(model, x + 2, y, add, g, 0.1)
    with pytest.raises(ValueError, match="accuracy"):
        shift.shift_bound(1.5, 0.1, g)
    with pytest.raises(ValueError, match="theta"):
        shift.Brightness().apply(torch.rand(2, 1, 8, 8), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="images"):
        shift.Translation().apply(torch.rand(2, 64), torch.zeros(2))
    with pytest.raises(TypeError, match="space"):
        shift.certify_shift(model, x, y, "brightness", g, 0.1)
    with pytest.raises(ValueError, match="p must be"):
        shift.worst_shift(torch.ones(1, 2), torch.zeros(2, 1), 0.1, p=3)
    with pytest.raises(ValueError, match="sigma"):
        GaussianNoise(0.0)


def test_a_transformation_space_without_apply_cannot_be_made():
    class Incomplete(rl.shift.TransformationSpace):
        pass

    with pytest.raises(TypeError):
        Incomplete()
