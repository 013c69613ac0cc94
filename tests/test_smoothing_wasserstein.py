"""Wasserstein smoothing: the flow lemma, the noise, and certificates that an exact case can refute.

The exact case: a binary *linear* classifier of the image, f(x) = [u . x + c > 0]. Under
flow noise its margin is m (u . mu + c / m) + m (div^T u) . Phi, a fixed linear form of
independent Laplace flows, so the smoothed probability has a closed form (partial
fractions of the characteristic function) and the smoothed classifier is robust exactly as
long as u . mu' + c / m stays positive. On a 1x2 image there is one flow variable and the
certificate is tight.
"""

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom

import robustlab as rl
from robustlab.oracles import HalfSpace
from robustlab.smoothing import wasserstein as W

TAIL = 1 - 1e-6  # a count above this quantile of Bin(reps, alpha) is a failure, not bad luck


# --------------------------------------------------------------------------- helpers


def laplace_cdf(t, scale):
    t = np.asarray(t, dtype=np.float64)
    return np.where(t < 0, 0.5 * np.exp(t / scale), 1 - 0.5 * np.exp(-t / scale))


def exact_cdf(s, w, b):
    """P(w . Phi < s) for i.i.d. Laplace(0, b) Phi, the |w_k| distinct: the characteristic function
    prod_k 1 / (1 + a_k t^2), a_k = b^2 w_k^2, is sum_k c_k / (1 + a_k t^2), c_k = prod_{j != k} a_k / (a_k - a_j)."""
    w = np.asarray([v for v in np.abs(np.asarray(w, dtype=np.float64)) if v > 0])
    a = (b * w) ** 2
    assert len(np.unique(np.round(a / a.max(), 9))) == len(a), "the partial fractions need distinct |w_k|"
    total = 0.0
    for k in range(len(a)):
        c = np.prod([a[k] / (a[k] - a[j]) for j in range(len(a)) if j != k])
        total = total + c * laplace_cdf(s, math.sqrt(a[k]))
    return total


def edge_weights(u):
    """div^T u: the change of u . mu per unit of flow on each edge (the flow layout of W.flow_size)."""
    u = torch.as_tensor(u, dtype=torch.float64)
    eye = torch.eye(W.flow_size(u.shape), dtype=torch.float64)
    return (W.divergence(eye, u.shape) * u).flatten(1).sum(1).numpy()


def linear_case(u, mu, s, mass):
    """A HalfSpace f(x) = [u . x + c > 0] whose unit-mass margin u . mu + c / m at mu equals s."""
    u = torch.as_tensor(u, dtype=torch.float64)
    c = mass * (s - float((u * mu).sum()))
    return HalfSpace(u.reshape(-1), c, dtype=torch.float64)


def random_unit_mass(shape, gen, positive=True):
    x = torch.rand(shape, generator=gen, dtype=torch.float64) + (0.05 if positive else 0.0)
    return x / x.sum()


def transport_attack(mu, u, eps, ground="l2"):
    """The mu' within W1 <= eps of mu that minimizes u . mu' (exact, LP over transport plans)."""
    from scipy.optimize import linprog

    h, w = mu.shape[-2:]
    k = h * w
    r, c = np.divmod(np.arange(k), w)
    dy, dx = r[:, None] - r[None, :], c[:, None] - c[None, :]
    d = np.hypot(dy, dx) if ground == "l2" else np.abs(dy) + np.abs(dx)
    cost = np.tile(np.asarray(u, dtype=np.float64).reshape(1, k), (k, 1))  # P[p, q] -> u_q
    a_eq = np.kron(np.eye(k), np.ones((1, k)))
    res = linprog(cost.ravel(), A_ub=d.reshape(1, -1), b_ub=[eps], A_eq=a_eq, b_eq=mu.reshape(-1).numpy(),
                  bounds=(0, None), method="highs")
    assert res.status == 0
    return torch.from_numpy(res.x.reshape(k, k).sum(0).reshape(mu.shape))


# --------------------------------------------------------------------------- representation


def test_unit_mass_conversion_and_its_inverse():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 4, 5, generator=gen)
    mu, mass = W.to_unit_mass(x)
    assert torch.allclose(mu.flatten(1).sum(1), torch.ones(3))
    assert torch.allclose(mass, x.flatten(1).sum(1))
    assert torch.allclose(W.from_unit_mass(mu, mass), x)


def test_divergence_moves_each_edge_flow_from_its_first_pixel_to_its_second():
    """Against the definition, written edge by edge on 2-channel 3x4 images."""
    gen = torch.Generator().manual_seed(1)
    c, h, w = 2, 3, 4
    flows = torch.randn(5, W.flow_size((c, h, w)), generator=gen, dtype=torch.float64)
    mu = random_unit_mass((c, h, w), gen)
    got = W.apply_flow(mu, flows)
    for row in range(5):
        want = mu.clone()
        k = 0
        for ch in range(c):
            for i in range(h - 1):
                for j in range(w):
                    want[ch, i, j] -= flows[row, k]
                    want[ch, i + 1, j] += flows[row, k]
                    k += 1
            for i in range(h):
                for j in range(w - 1):
                    want[ch, i, j] -= flows[row, k]
                    want[ch, i, j + 1] += flows[row, k]
                    k += 1
        assert k == flows.shape[1]
        assert torch.allclose(got[row], want, atol=1e-12)
    # mass is only moved, channel by channel
    assert torch.allclose(got.sum((-1, -2)), mu.sum((-1, -2)).expand(5, c), atol=1e-12)


def test_flow_noise_is_laplace_flows_on_the_unit_mass_image_with_the_mass_restored():
    """FlowNoise.sample equals its definition with the same random numbers, and the flows have scale sigma / sqrt 2."""
    sigma = 0.03
    x = torch.rand(1, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = W.FlowNoise(sigma).sample(x, 4000, torch.Generator().manual_seed(7))
    flows = rl.smoothing.sampling.LaplaceNoise(sigma / math.sqrt(2)).draw(
        (4000, W.flow_size(x.shape)), torch.Generator().manual_seed(7), "cpu", torch.float64)
    m = float(x.sum())
    want = torch.stack([m * W.apply_flow(x / m, f) for f in flows[:5]])
    assert torch.allclose(got[:5], want, atol=1e-12)
    # the flows have mean absolute value b, and the noisy copies keep the mass of x
    assert abs(float(flows.abs().mean()) - sigma / math.sqrt(2)) < 0.02 * sigma
    assert torch.allclose(got.sum((1, 2, 3)), torch.full((4000,), m, dtype=torch.float64), atol=1e-10)
    # the pixel baseline: Laplace on the unit-mass pixels
    z = rl.smoothing.sampling.LaplaceNoise(sigma / math.sqrt(2)).draw((3, *x.shape), torch.Generator().manual_seed(7),
                                                                       "cpu", torch.float64)
    assert torch.allclose(W.PixelMassNoise(sigma).sample(x, 3, torch.Generator().manual_seed(7)), m * (x / m + z))


# --------------------------------------------------------------------------- the lemma


def test_wasserstein_distance_is_at_most_the_l1_norm_of_any_flow_between_the_images():
    """W1 (L2 ground) <= W1 (L1 ground) = min flow norm <= ||phi||_1 for any phi with b = a + div phi,
    and min flow norm <= sqrt 2 W1 (L2 ground): the exact transport LP on 40 random 3x3 pairs."""
    gen = torch.Generator().manual_seed(3)
    for trial in range(40):
        a = random_unit_mass((1, 3, 3), gen)
        phi = torch.randn(W.flow_size(a.shape), generator=gen, dtype=torch.float64)
        phi *= 0.9 * float(a.min()) / float(W.divergence(phi, a.shape).abs().max())  # keeps b >= 0
        b = W.apply_flow(a, phi)
        assert float(b.min()) >= 0
        w2, w1 = W.wasserstein_distance(a, b), W.wasserstein_distance(a, b, ground="l1")
        best = W.minimum_flow(a, b)
        assert torch.allclose(W.apply_flow(a, best), b, atol=1e-9)
        norm_best = float(best.abs().sum())
        assert w2 <= w1 + 1e-9
        assert abs(norm_best - w1) < 1e-7, "the min-cost flow on the grid is the transport with the L1 ground metric"
        assert w1 <= float(phi.abs().sum()) + 1e-9
        assert norm_best <= math.sqrt(2) * w2 + 1e-9


def test_the_constant_sqrt2_of_the_lemma_is_attained_and_one_pixel_moves_cost_their_mass():
    a = torch.zeros(3, 3, dtype=torch.float64)
    a[0, 0] = 1.0
    diagonal = torch.zeros_like(a)
    diagonal[1, 1] = 1.0
    assert W.wasserstein_distance(a, diagonal) == pytest.approx(math.sqrt(2))
    assert float(W.minimum_flow(a, diagonal).abs().sum()) == pytest.approx(2.0)
    half = a.clone()
    half[0, 0], half[0, 1] = 0.7, 0.3
    assert W.wasserstein_distance(a, half) == pytest.approx(0.3)
    assert float(W.minimum_flow(a, half).abs().sum()) == pytest.approx(0.3)


def test_pixel_l1_distance_is_at_most_twice_the_wasserstein_distance():
    """The conversion of the Laplace-pixel baseline, ||mu - mu'||_1 <= 2 W1, on random pairs."""
    gen = torch.Generator().manual_seed(4)
    for _ in range(20):
        a, b = random_unit_mass((3, 3), gen, False), random_unit_mass((3, 3), gen, False)
        assert float((a - b).abs().sum()) <= 2 * W.wasserstein_distance(a, b) + 1e-9


# --------------------------------------------------------------------------- radii


def test_radius_formulas():
    p = torch.tensor([0.3, 0.5, 0.7, 0.9, 0.999], dtype=torch.float64)
    sigma = 0.05
    b = sigma / math.sqrt(2)
    tight = W.flow_radius(p, sigma)
    assert torch.equal(tight, rl.smoothing.dp.l1_smoothing_radius(p, "laplace", sigma))
    assert torch.allclose(tight[2:], b * torch.log(1 / (2 * (1 - p[2:]))))
    dp = W.flow_radius(p, sigma, bound="dp")
    assert torch.allclose(dp[2:], b / 2 * torch.log(p[2:] / (1 - p[2:])))
    assert torch.equal(tight[:2], torch.zeros(2, dtype=torch.float64)) and torch.equal(dp[:2], tight[:2])
    assert bool((tight >= dp).all())
    assert torch.allclose(W.certified_radius(p, sigma), tight / math.sqrt(2))
    assert torch.allclose(W.certified_radius(p, sigma, ground="l1"), tight)
    assert torch.allclose(W.certified_radius(p, sigma, noise="pixel"), tight / 2)


# --------------------------------------------------------------------------- exact smoothed classifiers


def test_closed_form_of_the_smoothed_linear_classifier_matches_sampling():
    """The helper the soundness tests rely on: exact P(class 1) against the sampling engine."""
    u = torch.tensor([[[0.0, 1.0], [3.0, 7.0]]], dtype=torch.float64)
    mu = torch.tensor([[[0.4, 0.1], [0.2, 0.3]]], dtype=torch.float64)
    mass, sigma, s = 0.5, 0.05, 0.5
    model = linear_case(u, mu, s, mass)
    p = exact_cdf(s, edge_weights(u), sigma / math.sqrt(2))
    counts = W.sample_counts(model, (mass * mu)[None], 20000, sigma, seed=5)
    k = int(counts[0, 1])
    lo, hi = rl.stats.clopper_pearson(k, 20000, 1e-4, side="two-sided")
    assert lo <= p <= hi


def test_no_flow_inside_the_radius_changes_the_exact_smoothed_prediction_of_a_linear_classifier():
    """2x2 image: from the exact p_A, every flow of L1 norm below the flow radius (the vertices of the ball,
    where a linear margin is smallest, and random flows) and the LP-optimal transport attack inside the
    Wasserstein radius keep the exact smoothed probability above 1/2."""
    u = torch.tensor([[[0.0, 1.0], [3.0, 7.0]]], dtype=torch.float64)
    mu = torch.tensor([[[0.4, 0.1], [0.2, 0.3]]], dtype=torch.float64)
    sigma, s = 0.05, 0.5
    w, b = edge_weights(u), sigma / math.sqrt(2)
    p_a = exact_cdf(s, w, b)
    assert 0.75 < p_a < 0.99
    rho = float(W.flow_radius(p_a, sigma))
    assert 0 < rho <= s / np.abs(w).max()  # the exact robust flow radius of a linear classifier
    inside = 0.999 * rho
    gen = torch.Generator().manual_seed(6)
    directions = torch.cat([torch.eye(4, dtype=torch.float64), -torch.eye(4, dtype=torch.float64),
                            torch.randn(200, 4, generator=gen, dtype=torch.float64)])
    for phi in directions:
        phi = inside * phi / phi.abs().sum()
        shifted = s + float(np.dot(w, phi.numpy()))  # the margin at mu + div phi
        assert exact_cdf(shifted, w, b) > 0.5
    for ground in W.GROUNDS:
        eps = 0.999 * float(W.certified_radius(p_a, sigma, ground=ground))
        attacked = transport_attack(mu, u, eps, ground)
        assert W.wasserstein_distance(mu, attacked, ground=ground) <= eps + 1e-9
        margin = s + float((u * (attacked - mu)).sum())
        assert margin < s  # the attack does push towards the boundary
        assert exact_cdf(margin, w, b) > 0.5


def test_on_a_1x2_image_the_certificate_is_tight():
    """One flow variable: the exact p_A gives the exact robust radius, and a flow just beyond it flips g."""
    mu = torch.tensor([[[0.7, 0.3]]], dtype=torch.float64)
    u = torch.tensor([[[1.0, -1.0]]], dtype=torch.float64)  # class 1 iff more mass on the left
    sigma, s = 0.12, float((u * mu).sum())
    w, b = edge_weights(u), sigma / math.sqrt(2)
    assert np.allclose(w, [-2.0])
    p_a = float(exact_cdf(s, w, b))
    rho = float(W.flow_radius(p_a, sigma))
    assert rho == pytest.approx(s / 2, rel=1e-9)  # the margin 0.4 shrinks by 2 per unit of flow
    for factor, robust in ((0.999, True), (1.001, False)):
        moved = W.apply_flow(mu, torch.tensor([factor * rho], dtype=torch.float64))
        assert W.wasserstein_distance(mu, moved, ground="l1") == pytest.approx(factor * rho)
        assert bool(exact_cdf(float((u * moved).sum()), w, b) > 0.5) is robust


def test_certify_violates_the_exact_radius_at_most_alpha_of_the_time():
    """1x2 image, 1,500 independent certificates: a wrong class or a radius above the exact robust
    radius (W1 = 0.2, L1 ground) may happen at most at rate alpha (binomial tail, 1e-6)."""
    mass = 0.8
    mu = torch.tensor([[[0.7, 0.3]]], dtype=torch.float64)
    u = torch.tensor([[[1.0, -1.0]]], dtype=torch.float64)
    model = linear_case(u, mu, 0.4, mass)
    sigma = 0.2 / math.log(5) * math.sqrt(2)  # p_A = 1 - exp(-0.2 / b) / 2 = 0.9
    reps, alpha, truth = 1500, 0.05, 0.2
    x = (mass * mu).expand(reps, 1, 1, 2).contiguous()
    cert = W.certify(model, x, sigma=sigma, n0=50, n=500, alpha=alpha, ground="l1", batch_size=5000, seed=0)
    wrong = (cert.prediction != 1) | (cert.radius > truth)
    assert int(wrong.sum()) <= binom.ppf(TAIL, reps, alpha)
    # not vacuous: most certificates come close to the exact radius
    assert float(cert.radius.median()) > 0.6 * truth
    # the paper's bound is never larger
    dp = W.certify(model, x[:50], sigma=sigma, n0=50, n=500, alpha=alpha, ground="l1", bound="dp", seed=0)
    assert bool((dp.radius <= cert.radius[:50] + 1e-12).all())


def test_certify_is_independent_of_batch_size_and_reports_its_settings():
    gen = torch.Generator().manual_seed(8)
    x = torch.rand(3, 1, 3, 3, generator=gen)
    model = HalfSpace(torch.randn(9, generator=gen), 0.0)
    a = W.certify(model, x, sigma=0.05, n0=30, n=200, batch_size=7, seed=3)
    b = W.certify(model, x, sigma=0.05, n0=30, n=200, batch_size=1000, seed=3)
    assert torch.equal(a.count, b.count) and torch.equal(a.prediction, b.prediction)
    assert (a.method, a.unit, a.alpha, a.sigma, a.n0, a.n, a.bound, a.ground, a.noise) == (
        "wasserstein", rl.certificates.UNITS["wasserstein"], 0.05, 0.05, 30, 200, "tight", "l2", "flow")
    assert np.array_equal(a.pA_lower.numpy(), rl.stats.clopper_pearson(a.count, 200, 0.05))
    assert bool((a.radius[a.abstained] == 0).all())
    pred = W.predict(model, x, sigma=0.05, n=200, seed=3)
    assert pred.shape == (3,) and pred.dtype == torch.int64


# --------------------------------------------------------------------------- training


def test_training_noise_is_shared_across_the_batch_like_the_paper_or_drawn_per_image():
    x = torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(9))
    mu, mass = W.to_unit_mass(x)
    torch.manual_seed(0)
    moved = W.WassersteinNoiseLoss(0.02).noisy(x) / mass.view(-1, 1, 1, 1) - mu
    assert torch.allclose(moved, moved[:1].expand_as(moved), atol=1e-6)
    torch.manual_seed(0)
    own = W.WassersteinNoiseLoss(0.02, shared=False).noisy(x) / mass.view(-1, 1, 1, 1) - mu
    assert not torch.allclose(own[0], own[1], atol=1e-6)
    assert torch.allclose(own.sum((1, 2, 3)), torch.zeros(4), atol=1e-5)  # flows only move mass
    assert torch.equal(W.WassersteinNoiseLoss(0.0).noisy(x), x)
    assert repr(W.WassersteinNoiseLoss(0.02, noise="pixel")) == \
        "WassersteinNoiseLoss(sigma=0.02, noise='pixel', shared=True)"


@pytest.mark.slow
def test_base_model_trains_under_flow_noise_through_the_cache():
    trained = W.base_model(0.02, epochs=2, width=4)
    again = W.base_model(0.02, epochs=2, width=4)
    assert again.history.from_cache and not trained.history.from_cache
    _, test = rl.data.load()
    cert = W.certify(trained.model, test.x[:20], sigma=0.02, n0=20, n=100)
    assert cert.certified_accuracy(test.y[:20], at=[0.0])[0] > 0.2


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_errors_naming_the_argument():
    model = HalfSpace(torch.ones(4), -1.0)
    x = torch.rand(2, 1, 2, 2)
    with pytest.raises(ValueError, match="x"):
        W.certify(model, x * 2, sigma=0.1)  # outside [0, 1]
    with pytest.raises(ValueError, match=r"x\[1\] has zero total mass"):
        W.certify(model, torch.stack([x[0], torch.zeros_like(x[0])]), sigma=0.1)
    with pytest.raises(ValueError, match="x must be a batch of images"):
        W.certify(model, x[0], sigma=0.1)
    with pytest.raises(ValueError, match="at least two pixels"):
        W.to_unit_mass(torch.rand(2, 1, 1, 1))
    with pytest.raises(ValueError, match="sigma"):
        W.certify(model, x, sigma=0.0)
    with pytest.raises(ValueError, match="noise"):
        W.certify(model, x, sigma=0.1, noise="gaussian")
    with pytest.raises(ValueError, match="bound"):
        W.flow_radius(0.9, 0.1, bound="loose")
    with pytest.raises(ValueError, match="ground"):
        W.certified_radius(0.9, 0.1, ground="linf")
    with pytest.raises(ValueError, match="p_a"):
        W.flow_radius(1.5, 0.1, bound="dp")
    with pytest.raises(ValueError, match="n0"):
        W.certify(model, x, sigma=0.1, n0=0)
    with pytest.raises(ValueError, match="alpha"):
        W.certify(model, x, sigma=0.1, alpha=1.0)
    a = torch.tensor([[0.5, 0.5], [0.0, 0.0]])
    with pytest.raises(ValueError, match="b must have unit mass"):
        W.wasserstein_distance(a, a * 2)
    with pytest.raises(ValueError, match="a must be nonnegative"):
        W.wasserstein_distance(torch.tensor([[1.5, -0.5], [0.0, 0.0]]), a)
    with pytest.raises(ValueError, match="same shape"):
        W.wasserstein_distance(a, torch.full((3, 3), 1 / 9))
    with pytest.raises(ValueError, match="same mass in every channel"):
        W.minimum_flow(torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]]), torch.tensor([[[0.0, 0.0]], [[0.0, 1.0]]]))
    with pytest.raises(ValueError, match="flow must have shape"):
        W.divergence(torch.zeros(5), (1, 2, 2))
    with pytest.raises(ValueError, match="mass must have shape"):
        W.from_unit_mass(torch.rand(2, 1, 2, 2), torch.ones(3))
    with pytest.raises(ValueError, match="sigma"):
        W.WassersteinNoiseLoss(-0.1)
    with pytest.raises(ValueError, match="noise"):
        W.WassersteinNoiseLoss(0.1, noise="flows")
    with pytest.raises(TypeError, match="selection"):
        W.certify_counts(torch.rand(2, 3), torch.ones(2, 3, dtype=torch.long), sigma=0.1)
