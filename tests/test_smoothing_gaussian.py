"""Gaussian randomized smoothing: the bounds are exact, the certificates are sound.

The soundness tests use a case with a closed form: smoothing a binary *linear* classifier
gives back the same classifier, and its exact certified radius sigma * Phi^-1(pA) is the
L2 distance to the hyperplane. A certificate that claims more than that distance is wrong,
and must not happen more often than alpha allows.
"""

import numpy as np
import pytest
import torch
from scipy.stats import beta, binom, binomtest, norm

import robustlab as rl
from robustlab.smoothing import gaussian as G

# A count above this quantile of Bin(reps, alpha) has probability below 1e-6 under a
# correct method: the tests are not flaky, and a wrong bound exceeds it by far.
TAIL = 1 - 1e-6


class HalfSpace(torch.nn.Module):
    """Binary linear classifier: class 1 iff w.x + b > 0 (logits (0, w.x + b)), float64."""

    def __init__(self, w, b):
        super().__init__()
        self.lin = torch.nn.Linear(w.numel(), 2).double()
        with torch.no_grad():
            self.lin.weight.copy_(torch.stack([torch.zeros_like(w), w]))
            self.lin.bias.copy_(torch.tensor([0.0, float(b)]))
        self.w, self.b = w.double(), float(b)

    def forward(self, x):
        return self.lin(x.flatten(1))

    def margin(self, x):
        return x.flatten(1).double() @ self.w + self.b

    def distance(self, x):
        """Exact L2 distance to the decision boundary."""
        return self.margin(x).abs() / self.w.norm()

    def label(self, x):
        return (self.margin(x) > 0).long()


def points_at_distances(model, distances, d):
    """Inputs in [0, 1]^d at the given signed distances from the hyperplane (through 1/2)."""
    centre = torch.full((d,), 0.5, dtype=torch.float64)
    unit = model.w / model.w.norm()
    return torch.stack([centre + t * unit for t in distances]).clamp(0, 1)


@pytest.fixture
def halfspace():
    torch.manual_seed(0)
    d = 16
    w = torch.randn(d, dtype=torch.float64)
    return HalfSpace(w, -0.5 * float(w.sum())), d  # the boundary passes through (1/2, ..., 1/2)


# --------------------------------------------------------------------------- Clopper-Pearson


def test_clopper_pearson_is_the_beta_quantile_with_exact_edges():
    n, alpha = 50, 0.01
    k = np.arange(n + 1)
    lower = G.clopper_pearson(k, n, alpha)
    upper = G.clopper_pearson(k, n, alpha, side="upper")
    assert np.allclose(lower[1:], beta.ppf(alpha, k[1:], n - k[1:] + 1))
    assert np.allclose(upper[:-1], beta.ppf(1 - alpha, k[:-1] + 1, n - k[:-1]))
    # k = 0 and k = n: P(K = n) = p^n = alpha gives the bound alpha^(1/n) exactly
    assert lower[0] == 0.0 and upper[-1] == 1.0
    assert lower[-1] == pytest.approx(alpha ** (1 / n), rel=1e-12)
    assert upper[0] == pytest.approx(1 - alpha ** (1 / n), rel=1e-12)
    assert np.all(np.diff(lower) > 0) and np.all(np.diff(upper) > 0) and np.all(lower < upper)
    lo, hi = G.clopper_pearson(k, n, 2 * alpha, side="two-sided")
    assert np.array_equal(lo, lower) and np.array_equal(hi, upper)
    # vectorized over broadcast shapes, NumPy or torch, scalar in, float out
    grid = G.clopper_pearson(torch.tensor([[0], [3], [10]]), np.array([10, 20, 30, 40]), alpha)
    assert grid.shape == (3, 4) and grid[1, 2] == pytest.approx(beta.ppf(alpha, 3, 28))
    assert isinstance(G.clopper_pearson(3, 10, 0.05), float)


@pytest.mark.parametrize("n", [10, 50])
def test_clopper_pearson_coverage_is_exact_for_every_p(n):
    """P(lower bound > p) <= alpha for every p, computed exactly over all outcomes k, and
    nearly attained: the bound is valid and not needlessly loose."""
    alpha = 0.05
    k = np.arange(n + 1)
    lower = G.clopper_pearson(k, n, alpha)
    upper = G.clopper_pearson(k, n, alpha, side="upper")
    # the non-coverage jumps just below each bound: probe there and on a grid
    ps = np.unique(np.concatenate([np.linspace(0.001, 0.999, 999), lower[1:] - 1e-9, upper[:-1] + 1e-9]))
    ps = ps[(ps > 0) & (ps < 1)]
    pmf = binom.pmf(k[None, :], n, ps[:, None])
    miss_low = (pmf * (lower[None, :] > ps[:, None])).sum(1)
    miss_up = (pmf * (upper[None, :] < ps[:, None])).sum(1)
    assert miss_low.max() <= alpha + 1e-12 and miss_up.max() <= alpha + 1e-12
    assert miss_low.max() > 0.5 * alpha and miss_up.max() > 0.5 * alpha


def test_clopper_pearson_coverage_by_simulation_and_a_wald_bound_fails_it():
    rng = np.random.default_rng(0)
    n, alpha, reps = 50, 0.05, 20_000
    limit = binom.ppf(TAIL, reps, alpha)
    for p in (0.05, 0.3, 0.5, 0.9, 0.97):
        k = rng.binomial(n, p, size=reps)
        misses = int((G.clopper_pearson(k, n, alpha) > p).sum())
        assert misses <= limit, f"p={p}: the lower bound exceeded p {misses} times in {reps} (limit {limit:.0f})"
    # the same check catches a bound that is too optimistic: the normal approximation
    k = rng.binomial(n, 0.97, size=reps)
    p_hat = k / n
    wald = p_hat - norm.ppf(1 - alpha) * np.sqrt(p_hat * (1 - p_hat) / n)
    assert (wald > 0.97).sum() > limit


def test_binomial_test_half_is_scipys_binomtest():
    for n in (1, 2, 7, 20, 101):
        for k in range(n + 1):
            assert G.binomial_test_half(k, n) == pytest.approx(binomtest(k, n, 0.5).pvalue, rel=1e-9, abs=1e-300)


# --------------------------------------------------------------------------- radius formula


def test_radius_formula_reduces_to_sigma_phi_inverse_and_is_zero_at_one_half():
    p = np.array([0.5, 0.7, 0.9, 0.999])
    assert np.allclose(G.certified_radius(p, 0.5), 0.5 * norm.ppf(p))
    assert np.allclose(G.certified_radius(p, 0.5, p_b=1 - p), 0.5 * norm.ppf(p))
    assert G.certified_radius(0.5, 1.0) == 0.0
    # a smaller runner-up certifies more
    assert G.certified_radius(0.6, 1.0, p_b=0.1) > G.certified_radius(0.6, 1.0)
    assert G.max_radius(1000, 0.001, 0.5) == pytest.approx(0.5 * norm.ppf(0.001 ** (1 / 1000)))


# --------------------------------------------------------------------------- soundness


def test_certified_radius_never_exceeds_the_distance_to_a_hyperplane_beyond_alpha(halfspace):
    """For a linear f the smoothed g equals f and the exact radius is |w.x + b| / ||w||:
    a wrong class or a radius past the hyperplane may happen with probability <= alpha."""
    model, d = halfspace
    sigma, alpha, reps = 0.25, 0.05, 500
    points = points_at_distances(model, [0.02, -0.1, 0.25, -0.5], d)
    x = points.repeat_interleave(reps, 0)  # reps independent certificates of each point (seeds differ)
    cert = G.certify(model, x, sigma=sigma, n0=10, n=200, alpha=alpha, seed=0)
    truth, dist = model.label(x), model.distance(x)
    assert torch.allclose(dist[::reps], torch.tensor([0.02, 0.1, 0.25, 0.5], dtype=torch.float64))
    wrong = ~cert.abstained & ((cert.prediction != truth) | (cert.radius > dist))
    limit = binom.ppf(TAIL, reps, alpha)
    for j in range(points.shape[0]):
        rows = slice(j * reps, (j + 1) * reps)
        assert int(wrong[rows].sum()) <= limit, f"point {j}: {int(wrong[rows].sum())} unsound certificates"
    assert (cert.prediction[~cert.abstained] == truth[~cert.abstained]).float().mean() > 0.9
    assert not cert.abstained[-reps:].any(), "the far point is certified every time"
    # the test has power: a radius from the point estimate nA/n instead of the lower bound
    # overshoots about half of the time
    naive = sigma * torch.from_numpy(norm.ppf(np.minimum(cert.count.numpy() / cert.n, 1 - 1e-12)))
    overshoot = (~cert.abstained & (naive > dist))[reps:2 * reps]
    assert int(overshoot.sum()) > 3 * limit


def test_certified_radius_approaches_the_true_distance_with_many_samples(halfspace):
    model, d = halfspace
    x = points_at_distances(model, [0.3, -0.6], d)
    cert = G.certify(model, x, sigma=0.5, n0=100, n=100_000, alpha=0.001, seed=1)
    dist = model.distance(x)
    assert torch.equal(cert.prediction, model.label(x))
    assert bool((cert.radius <= dist).all()) and bool((cert.radius >= 0.95 * dist).all()), (cert.radius, dist)


def test_predict_returns_a_wrong_class_no_more_often_than_alpha(halfspace):
    model, d = halfspace
    alpha, reps = 0.05, 1000
    x = points_at_distances(model, [0.02, -0.05], d).repeat_interleave(reps, 0)
    pred = G.predict(model, x, sigma=0.25, n=300, alpha=alpha, seed=0)
    truth = model.label(x)
    wrong = (pred != G.ABSTAIN) & (pred != truth)
    assert int(wrong.sum()) <= binom.ppf(TAIL, 2 * reps, alpha)
    assert (pred == truth).any() and (pred == G.ABSTAIN).any(), "near the boundary both outcomes occur"


def test_on_the_boundary_certify_and_predict_abstain_at_least_one_minus_alpha_of_the_time(halfspace):
    model, d = halfspace
    alpha, reps = 0.05, 1000
    x = points_at_distances(model, [0.0], d).repeat(reps, 1)  # pA = pB = 1/2 exactly
    limit = binom.ppf(TAIL, reps, alpha)
    cert = G.certify(model, x, sigma=0.25, n0=10, n=200, alpha=alpha, seed=0)
    assert int((~cert.abstained).sum()) <= limit
    assert bool((cert.radius[cert.abstained] == 0).all()) and bool((cert.pA_lower[cert.abstained] < 0.5).all())
    pred = G.predict(model, x, sigma=0.25, n=200, alpha=alpha, seed=0)
    assert int((pred != G.ABSTAIN).sum()) <= limit


class Constant(torch.nn.Module):
    def __init__(self, k=10, c=3):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.k, self.c = k, c

    def forward(self, x):
        return torch.nn.functional.one_hot(torch.full((x.shape[0],), self.c), self.k).float() * self.scale


def test_an_unanimous_vote_certifies_the_largest_radius_n_samples_allow():
    cert = G.certify(Constant(), torch.rand(3, 1, 8, 8), sigma=0.5, n0=10, n=1000, alpha=0.001)
    assert cert.prediction.tolist() == [3, 3, 3] and cert.count.tolist() == [1000] * 3
    assert torch.allclose(cert.pA_lower, torch.full((3,), 0.001 ** (1 / 1000), dtype=torch.float64))
    assert torch.allclose(cert.radius, torch.full((3,), G.max_radius(1000, 0.001, 0.5), dtype=torch.float64))


class AnyNegativePixel(torch.nn.Module):
    """Class 1 if some input value is below 0: sees whether noisy inputs were clamped."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        neg = (x.flatten(1) < 0).any(1).float() * self.scale
        return torch.stack([1 - neg, neg], 1)


def test_noise_is_added_in_pixel_space_and_not_clamped():
    counts = G.sample_counts(AnyNegativePixel(), torch.zeros(2, 1, 8, 8), n=500, sigma=0.25, seed=0)
    assert counts[:, 1].tolist() == [500, 500]  # 64 Gaussian pixels around 0: some are negative
    # and sigma is in pixel units: the noisy pixels of a half-grey image rarely pass 0 at sigma 0.1
    counts = G.sample_counts(AnyNegativePixel(), torch.full((1, 1, 8, 8), 0.5), n=500, sigma=0.1, seed=0)
    assert counts[0, 1] < 30


# --------------------------------------------------------------------------- batch-first


def test_batched_certification_equals_one_at_a_time_with_the_same_seeds(tiny_model):
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    batch = G.certify(tiny_model, x, sigma=0.5, n0=30, n=1500, alpha=0.01, seed=7, batch_size=256)
    for i in range(5):
        one = G.certify(tiny_model, x[i:i + 1], sigma=0.5, n0=30, n=1500, alpha=0.01, seed=7 + i, batch_size=1000)
        for field in ("prediction", "radius", "pA_lower", "count"):
            assert torch.equal(getattr(batch, field)[i:i + 1], getattr(one, field)), (i, field)
    listed = G.certify(tiny_model, x, sigma=0.5, n0=30, n=1500, alpha=0.01, seed=[7, 8, 9, 10, 11], batch_size=97)
    assert torch.equal(listed.count, batch.count) and torch.equal(listed.prediction, batch.prediction)
    other = G.sample_counts(tiny_model, x, 1500, 0.5, seed=8)
    assert not torch.equal(other, G.sample_counts(tiny_model, x, 1500, 0.5, seed=7)), "the seed matters"


def test_selection_and_estimation_use_disjoint_draws(tiny_model):
    """CERTIFY chooses the class on the first n0 draws of an input's noise stream and
    counts it on the next n: never on the draws it chose with."""
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    n0, n = 1000, 2000  # whole noise blocks, so sample_counts draws the same stream
    cert = G.certify(tiny_model, x, sigma=0.5, n0=n0, n=n, alpha=0.01, seed=3)
    first = G.sample_counts(tiny_model, x, n0, 0.5, seed=3)
    both = G.sample_counts(tiny_model, x, n0 + n, 0.5, seed=3)
    guess = first.argmax(1)
    assert torch.equal(cert.count, (both - first).gather(1, guess[:, None])[:, 0])
    certified = ~cert.abstained
    assert torch.equal(cert.prediction[certified], guess[certified])


def test_counts_are_per_input_and_sum_to_n(tiny_model):
    x = torch.rand(6, 1, 8, 8)
    counts = G.sample_counts(tiny_model, x, n=333, sigma=0.25, batch_size=100)
    assert counts.dtype == torch.int64 and counts.shape == (6, 10) and counts.sum(1).tolist() == [333] * 6


def test_the_model_mode_is_restored_and_its_dtype_is_used(tiny_model, halfspace):
    tiny_model.train()
    G.certify(tiny_model, torch.rand(2, 1, 8, 8), sigma=0.25, n0=10, n=50)
    assert tiny_model.training
    model, d = halfspace
    cert = G.certify(model.float(), torch.rand(3, d), sigma=0.25, n0=10, n=100)  # float32 model, float32 noise
    assert cert.radius.dtype == torch.float64 and len(cert) == 3


# --------------------------------------------------------------------------- evaluation


def test_certified_accuracy_counts_correct_certificates_at_least_r():
    radii = torch.tensor([0.0, 0.3, 0.5, 0.9, 2.0], dtype=torch.float64)
    correct = torch.tensor([False, True, True, True, False])
    acc = G.certified_accuracy(radii, correct, at=[0.0, 0.3, 0.31, 0.5, 0.9, 1.0])
    assert acc.tolist() == [0.6, 0.6, 0.4, 0.4, 0.2, 0.0]
    cert = G.Certificate(prediction=torch.tensor([G.ABSTAIN, 1, 2, 3, 4]), radius=radii,
                         pA_lower=torch.full((5,), 0.9, dtype=torch.float64), count=torch.full((5,), 9),
                         sigma=0.25, alpha=0.001, n0=10, n=10)
    y = torch.tensor([0, 1, 2, 3, 0])
    assert cert.correct(y).tolist() == correct.tolist()
    assert np.array_equal(cert.certified_accuracy(y, at=[0.0, 0.5]), [0.6, 0.4])


def test_plot_certified_accuracy_draws_one_curve_per_setting():
    import matplotlib

    matplotlib.use("Agg")
    radii, correct = np.array([0.1, 0.5, 1.0]), np.array([True, True, False])
    ax = G.plot_certified_accuracy({"a": (radii, correct), "b": (radii, ~correct)},
                                   reference={"paper": ([0.25, 0.5], [0.6, 0.43])})
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b", "paper"]
    assert ax.get_lines()[0].get_ydata()[0] == pytest.approx(2 / 3)


# --------------------------------------------------------------------------- argument checks


def test_arguments_are_checked_and_named(tiny_model):
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        G.certify(tiny_model, x, sigma=0.0, n=10)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        G.certify(tiny_model, x, sigma=0.25, n=0)
    with pytest.raises(ValueError, match="n0 must be an integer >= 1"):
        G.certify(tiny_model, x, sigma=0.25, n0=0, n=10)
    with pytest.raises(ValueError, match=r"alpha must be a probability in \(0, 1\)"):
        G.predict(tiny_model, x, sigma=0.25, n=10, alpha=1.0)
    with pytest.raises(ValueError, match=r"x must have values in \[0, 1\]"):
        G.sample_counts(tiny_model, x + 1, 10, 0.25)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        G.sample_counts(tiny_model, (x * 255).long(), 10, 0.25)
    with pytest.raises(ValueError, match="seed must hold one seed per input"):
        G.sample_counts(tiny_model, x, 10, 0.25, seed=[1, 2, 3])
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        G.sample_counts(tiny_model, x, 10, 0.25, seed=-1)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        G.certify("net", x, sigma=0.25, n=10)
    with pytest.raises(ValueError, match="k must be <= n"):
        G.clopper_pearson(11, 10, 0.05)
    with pytest.raises(TypeError, match="k must be an integer count"):
        G.clopper_pearson(0.5, 10, 0.05)
    with pytest.raises(ValueError, match="side must be one of"):
        G.clopper_pearson(5, 10, 0.05, side="both")
    with pytest.raises(ValueError, match="correct must have the shape of radii"):
        G.certified_accuracy([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="at must hold radii >= 0"):
        G.certified_accuracy([0.1], [True], at=[-1])
    with pytest.raises(ValueError, match="p_a must hold probabilities"):
        G.certified_radius(1.5, 0.25)


def test_the_paper_defaults():
    assert (G.DEFAULT_N0, G.DEFAULT_N, G.DEFAULT_ALPHA, G.ABSTAIN) == (100, 100_000, 0.001, -1)
    import inspect

    sig = inspect.signature(G.certify).parameters
    assert (sig["n0"].default, sig["n"].default, sig["alpha"].default) == (100, 100_000, 0.001)
    assert rl.smoothing.gaussian is G
