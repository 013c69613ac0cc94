"""Gaussian randomized smoothing: the certificates are sound and come from the shared layer.

The soundness tests use a case with a closed form: smoothing a binary *linear* classifier
gives back the same classifier, and its exact certified radius sigma * Phi^-1(pA) is the
L2 distance to the hyperplane. A certificate that claims more than that distance is wrong,
and must not happen more often than alpha allows.
"""

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm

import robustlab as rl
from robustlab.oracles import Constant, HalfSpace
from robustlab.smoothing import gaussian as G

# A count above this quantile of Bin(reps, alpha) has probability below 1e-6 under a
# correct method: the tests are not flaky, and a wrong bound exceeds it by far.
TAIL = 1 - 1e-6


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


# --------------------------------------------------------------------------- the shared layer


def test_the_statistics_and_the_result_come_from_the_shared_layer(tiny_model):
    """One Clopper-Pearson, one binomial test, one Certificate: the names here are re-exports."""
    assert G.clopper_pearson is rl.stats.clopper_pearson and G.binomial_test_half is rl.stats.binomial_test_half
    assert G.Certificate is rl.certificates.Certificate and G.ABSTAIN == rl.certificates.ABSTAIN
    assert G.certified_accuracy is rl.certificates.certified_accuracy
    assert G.plot_certified_accuracy is rl.certificates.plot_certified_accuracy
    cert = G.certify(tiny_model, torch.rand(3, 1, 8, 8), sigma=0.25, n0=10, n=100, alpha=0.01, seed=0)
    assert isinstance(cert, rl.certificates.Certificate)
    assert (cert.method, cert.unit, cert.alpha, cert.sigma, cert.n0, cert.n) == (
        "gaussian", rl.certificates.UNITS["l2"], 0.01, 0.25, 10, 100)
    assert cert.pA_lower.dtype == torch.float64 and cert.count.dtype == torch.int64 and len(cert) == 3
    expected = rl.stats.clopper_pearson(cert.count, 100, 0.01)
    assert np.array_equal(cert.pA_lower.numpy(), expected)


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


def test_the_lower_bound_of_certify_covers_the_exact_probability_of_a_half_space(halfspace):
    """Under Gaussian noise a half-space votes class 1 with probability exactly
    Phi((w.x + b) / (sigma ||w||)); a certificate whose pA_lower exceeds the probability of
    its class may occur in at most an alpha fraction of independent runs."""
    model, d = halfspace
    sigma, alpha, reps, n = 0.25, 0.1, 2000, 100
    points = points_at_distances(model, [0.15, -0.3], d)
    x = points.repeat_interleave(reps, 0)
    cert = G.certify(model, x, sigma=sigma, n0=30, n=n, alpha=alpha, seed=11)
    p_one = model.smoothed_probability(x, sigma, c=1)
    p_class = torch.where(cert.prediction == 1, p_one, 1 - p_one)
    violated = ~cert.abstained & (cert.pA_lower > p_class)
    limit = binom.ppf(TAIL, reps, alpha)
    for j in range(points.shape[0]):
        rows = slice(j * reps, (j + 1) * reps)
        assert int(violated[rows].sum()) <= limit, f"point {j}: the bound missed {int(violated[rows].sum())} times"
        assert float(cert.abstained[rows].double().mean()) < 0.1, "both points are mostly certified"
    # the bound is exact, not vacuous: it misses at a rate of the order of alpha
    assert int(violated.sum()) > 0.3 * alpha * 2 * reps


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


def test_an_unanimous_vote_certifies_the_largest_radius_n_samples_allow():
    cert = G.certify(Constant(3, n_classes=10), torch.rand(3, 1, 8, 8), sigma=0.5, n0=10, n=1000, alpha=0.001)
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
    with pytest.raises(ValueError, match="p_a must hold probabilities"):
        G.certified_radius(1.5, 0.25)


def test_the_paper_defaults():
    assert (G.DEFAULT_N0, G.DEFAULT_N, G.DEFAULT_ALPHA, G.ABSTAIN) == (100, 100_000, 0.001, -1)
    import inspect

    sig = inspect.signature(G.certify).parameters
    assert (sig["n0"].default, sig["n"].default, sig["alpha"].default) == (100, 100_000, 0.001)
    assert rl.smoothing.gaussian is G


def test_certify_is_certify_counts_of_its_two_vote_tables():
    """CERTIFY's decision is certify_counts of the selection and estimation counts of one continuing stream."""
    model = rl.models.build("mlp", "digits", width=2, seed=0)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    cert = rl.smoothing.gaussian.certify(model, x, sigma=0.25, n0=30, n=300, alpha=0.01, seed=3, progress=False)
    both = rl.smoothing.gaussian.sample_counts(model, x, 330, 0.25, seed=3, progress=False)
    with rl.smoothing.sampling.Sampler(model, x, rl.smoothing.sampling.GaussianNoise(0.25), mode="counts",
                                       seed=3) as s:
        sel, est = s.draw(30).cpu(), s.draw(300).cpu()
    assert torch.equal(sel + est, both)
    again = rl.smoothing.gaussian.certify_counts(sel, est, sigma=0.25, alpha=0.01)
    assert torch.equal(again.prediction, cert.prediction) and torch.equal(again.radius, cert.radius)
    with pytest.raises(ValueError, match="same shape"):
        rl.smoothing.gaussian.certify_counts(sel, est[:, :5], sigma=0.25)
    with pytest.raises(TypeError, match="selection must be an integer tensor"):
        rl.smoothing.gaussian.certify_counts(sel.double(), est, sigma=0.25)
