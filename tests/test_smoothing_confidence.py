"""CDF smoothing: the certified expected confidence never exceeds the exact smoothed expectation of
base classifiers whose score distribution is known in closed form, is exact for the Neyman-Pearson
worst case, is never below the Hoeffding baseline, and rejects bad input.
"""

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm

from robustlab.certificates import ABSTAIN, UNITS
from robustlab.smoothing import confidence as cf

TAIL = 1 - 1e-6


def probit_expectation(m, kappa, r):
    # E[Phi(-kappa (Z + r) - m)] for Z ~ N(0, 1)
    return norm.cdf((-kappa * r - m) / math.sqrt(1 + kappa ** 2))


def test_with_the_exact_survival_function_the_cdf_bound_is_met_by_the_worst_case():
    # s(z) = Phi(-kappa z_1 - m): every level set {s >= a} is a half-space {z_1 <= c(a)}, so shifting
    # along +z_1 is the worst case for all levels at once and the bound (with fine thresholds) is exact
    kappa, m, sigma = 1.5, -0.4, 0.5
    grid = 20_000
    levels = np.arange(1, grid + 1) / grid
    survival = norm.cdf((-norm.ppf(levels) - m) / kappa)
    radii = np.array([0.0, 0.1, 0.3, 0.6])
    bound = cf.survival_bound(levels, survival, sigma=sigma, radius=radii, low=0.0)[0]
    exact = probit_expectation(m, kappa, radii / sigma)
    assert (bound <= exact + 1e-12).all()
    assert (exact - bound < 1.0 / grid + 1e-9).all()  # the step sum loses at most one step width


def test_with_the_exact_survival_function_the_bound_is_below_the_truth_for_a_non_monotone_score():
    # s(z) = exp(-z_1^2): E[s(Z + r)] = exp(-r^2 / 3) / sqrt(3), and P(s >= a) = 2 Phi(sqrt(-ln a)) - 1
    sigma, grid = 1.0, 5_000
    levels = np.arange(1, grid + 1) / grid
    survival = 2 * norm.cdf(np.sqrt(-np.log(levels))) - 1
    for r in (0.2, 0.5, 1.0, 2.0):
        bound = cf.survival_bound(levels, survival, sigma=sigma, radius=r, low=0.0)[0, 0]
        assert bound <= math.exp(-r ** 2 / 3) / math.sqrt(3)


@pytest.mark.parametrize("n", [100, 2000])
def test_sampled_bounds_exceed_the_exact_worst_case_at_most_at_rate_alpha_and_cdf_beats_hoeffding(n):
    rng = np.random.default_rng(n)
    reps, alpha, sigma, kappa, m = 400, 0.1, 0.5, 1.5, -0.4
    z = rng.standard_normal((reps, n))
    samples = norm.cdf(-kappa * z - m)
    radii = np.array([0.0, 0.25, 0.5, 1.0])
    exact = probit_expectation(m, kappa, radii / sigma)  # the expected score at the worst shift
    cdf = cf.cdf_bound(samples, sigma=sigma, radius=radii, alpha=alpha)
    hoeff = cf.hoeffding_bound(samples, sigma=sigma, radius=radii, alpha=alpha)
    for bound in (cdf, hoeff):
        over = int((bound > exact[None, :] + 1e-12).any(1).sum())
        assert over <= binom.ppf(TAIL, reps, alpha)
    # Jensen: p -> Phi(Phi^-1(p) - r) is convex for r >= 0, so the CDF bound is never below the baseline
    assert (cdf >= hoeff - 1e-12).all()
    assert (cdf[:, 2] > hoeff[:, 2]).mean() > 0.9  # and strictly above it once r > 0


def test_fewer_thresholds_can_only_lower_the_cdf_bound():
    rng = np.random.default_rng(0)
    samples = rng.beta(5, 1, (20, 3000))
    full = cf.cdf_bound(samples, sigma=0.25, radius=[0.0, 0.3], alpha=0.01)
    coarse = cf.cdf_bound(samples, sigma=0.25, radius=[0.0, 0.3], alpha=0.01, n_thresholds=100)
    assert (coarse <= full + 1e-12).all() and (full - coarse).max() < 0.02


def test_the_one_sided_dkw_band_holds_at_rate_alpha():
    rng = np.random.default_rng(1)
    reps, n, alpha = 4000, 200, 0.1
    eps = cf.dkw_lower_epsilon(n, alpha)
    u = np.sort(rng.random((reps, n)), axis=1)
    # sup_t (S_hat(t) - S(t)) over the sample points: (n - i) / n - (1 - u_(i))
    dev = ((n - np.arange(n)) / n - (1 - u)).max(1)
    assert (dev > eps).sum() <= binom.ppf(TAIL, reps, alpha)
    assert (dev > eps).mean() > alpha / 4  # and the band is not far too wide


class Probit(torch.nn.Module):
    """Two classes with softmax (Phi(-u), Phi(u)), u = kappa (w.x + b): closed-form smoothed scores."""

    def __init__(self, w, b, kappa):
        super().__init__()
        self.w = torch.nn.Parameter(w.double(), requires_grad=False)
        self.b, self.kappa = float(b), float(kappa)

    def forward(self, z):
        u = self.kappa * (z.flatten(1).double() @ self.w + self.b)
        return torch.stack([torch.special.log_ndtr(-u), torch.special.log_ndtr(u)], 1)


def test_certify_end_to_end_on_a_probit_model_holds_at_rate_alpha():
    reps, alpha, sigma, kappa, d = 200, 0.1, 0.25, 4.0, 3
    w = torch.tensor([0.6, 0.0, 0.8])
    margin = 0.3  # the inputs sit at distance 0.3 on the class-1 side of the hyperplane
    model = Probit(w, -float(w.sum()) * 0.5, kappa)
    x = (0.5 + margin * w).expand(reps, d).contiguous()
    radii = (0.0, 0.15, 0.3)
    sampled = cf.sample_scores(model, x, sigma=sigma, n0=50, n=500, seed=0)
    assert (sampled.guess == 1).all()
    # E[Phi(kappa (w.(x + delta) + b))] at distance r towards the boundary: Phi(kappa (m - r) / sqrt(1 + kappa^2 s^2))
    exact = norm.cdf(kappa * (margin - np.array(radii)) / math.sqrt(1 + kappa ** 2 * sigma ** 2))
    for method in ("cdf", "hoeffding"):
        cert = cf.certify_scores(sampled, alpha=alpha, method=method, radii=radii)
        assert cert.unit == UNITS["l2"] and cert.method == method and cert.alpha == alpha
        over = int((cert.bound.numpy() > exact[None, :]).any(1).sum())
        assert over <= binom.ppf(TAIL, reps, alpha)
        # the exact expected score falls to tau = 1/2 at distance `margin`: a radius beyond it is a violation
        assert int((cert.radius > margin).sum()) <= binom.ppf(TAIL, reps, alpha)
        assert (cert.prediction != ABSTAIN).float().mean() > 0.5 and float(cert.radius.max()) > 0


def test_the_margin_score_and_its_range():
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    m = cf.scores(p, torch.tensor([0, 0]), "margin")
    assert torch.allclose(m, torch.tensor([0.2, -0.7]))
    assert cf.score_range("softmax") == (0.0, 1.0)


def test_certify_draws_the_gaussian_noise_of_cohens_certify():
    from robustlab.smoothing import gaussian as gs
    model = Probit(torch.tensor([1.0, -1.0]), 0.0, 2.0)
    x = torch.tensor([[0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    s = cf.sample_scores(model, x, sigma=0.25, n0=30, n=200, seed=3)
    cohen = gs.certify(model, x, sigma=0.25, n0=30, n=200, alpha=0.01, seed=3)
    votes_for_guess = (s.scores > 0.5).sum(1)  # two classes: the guess wins a copy iff its softmax > 1/2
    assert torch.equal(votes_for_guess, cohen.count)


def test_bad_arguments_are_rejected_with_their_names():
    s = np.full((2, 10), 0.5)
    with pytest.raises(ValueError, match="alpha must be < 0.5"):
        cf.cdf_bound(s, sigma=0.5, radius=0.0, alpha=0.6)
    with pytest.raises(ValueError, match="score range"):
        cf.cdf_bound(s + 1, sigma=0.5, radius=0.0, alpha=0.01)
    with pytest.raises(ValueError, match="radius"):
        cf.hoeffding_bound(s, sigma=0.5, radius=-0.1, alpha=0.01)
    with pytest.raises(ValueError, match="threshold"):
        cf.certified_radius(s, sigma=0.5, threshold=1.0, alpha=0.01)
    with pytest.raises(ValueError, match="method"):
        cf.certified_radius(s, sigma=0.5, threshold=0.5, alpha=0.01, method="mean")
    with pytest.raises(ValueError, match="score"):
        cf.scores(torch.rand(2, 3), torch.tensor([0, 1]), "logit")
    with pytest.raises(ValueError, match="sigma"):
        cf.cdf_bound(s, sigma=-1.0, radius=0.0, alpha=0.01)
    with pytest.raises(TypeError, match="sampled"):
        cf.certify_scores(s)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cf.certify(Probit(torch.ones(2), 0.0, 1.0), torch.full((1, 2), 2.0), sigma=0.5, n=10)
