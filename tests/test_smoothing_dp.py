"""PixelDP (certification from differential privacy): the proposition, the sensitivity, the
mechanisms, Lemma 1, and certificates that an attack cannot break."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, norm as normal

import robustlab as rl
from robustlab.smoothing import dp

INF = math.inf


# --------------------------------------------------------------------------- the proposition


@pytest.mark.parametrize("eps,delta,runner_up", [(0.1, 0.0, 0.3), (0.5, 1e-3, 0.2), (1.0, 0.05, 0.1), (0.0, 0.01, 0.45)])
def test_the_condition_certifies_exactly_above_the_threshold(eps, delta, runner_up):
    threshold = math.exp(2 * eps) * runner_up + (1 + math.exp(eps)) * delta
    top = torch.tensor([threshold + 1e-9, threshold, threshold - 1e-9], dtype=torch.float64)
    holds = dp.robustness_condition(top, torch.full((3,), runner_up, dtype=torch.float64), eps, delta)
    assert holds.tolist() == [True, False, False], "the proposition's inequality is strict"


@pytest.mark.parametrize("delta", [0.0, 1e-5, 0.05])
def test_max_eps_is_the_boundary_of_the_condition(delta):
    gen = torch.Generator().manual_seed(0)
    second = torch.rand(500, generator=gen, dtype=torch.float64) * 0.5
    top = second + torch.rand(500, generator=gen, dtype=torch.float64) * (1 - second)
    eps = dp.max_eps(top, second, delta)
    assert bool((eps >= 0).all())
    inside = eps > 1e-6
    assert bool(dp.robustness_condition(top[inside], second[inside], eps[inside] * (1 - 1e-7), delta).all())
    assert not bool(dp.robustness_condition(top, second, eps * (1 + 1e-7) + 1e-12, delta).any())
    # where max_eps is 0, even eps -> 0 fails: top <= runner_up + 2 delta
    assert bool((top[~inside] <= second[~inside] + 2 * delta + 1e-6).all())


def test_max_eps_closed_forms():
    # delta = 0: the condition is top > e^{2 eps} second, so eps* = ln(top / second) / 2
    eps = dp.max_eps(torch.tensor([0.9, 0.5]), torch.tensor([0.1, 0.5]), 0.0)
    assert eps.tolist() == pytest.approx([0.5 * math.log(9.0), 0.0])
    assert dp.max_eps(torch.tensor([0.3]), torch.tensor([0.0]), 0.0).item() == math.inf
    assert dp.max_eps(torch.tensor([0.3]), torch.tensor([0.0]), 0.1).item() == pytest.approx(math.log(2.0))


class Margin(torch.nn.Module):
    """Logits (0, h): class 1 exactly when the noisy first-layer output is positive."""

    def forward(self, h):
        return torch.cat([torch.zeros_like(h), h], dim=1)


def analytic_net(norm, w, bias=0.0, **kw):
    lin = torch.nn.Linear(w.numel(), 1)
    with torch.no_grad():
        lin.weight.copy_(w.view(1, -1))
        lin.bias.fill_(bias)
    return dp.PixelDP(torch.nn.Sequential(torch.nn.Flatten(), lin, Margin()), (w.numel(),), norm=norm, **kw)


def exact_top_score(net, h):
    """E[A_1(x)] = P(h + Z > 0) for h >= 0, Z the network's noise."""
    if net.mechanism == "laplace":
        return 1 - 0.5 * torch.exp(-h / net.noise.scale)
    return torch.from_numpy(normal.cdf((h / net.noise.scale).numpy()))


@pytest.mark.parametrize("norm,kw", [("l1", dict(eps=1.0, L=0.5)), ("l2", dict(eps=1.0, delta=1e-5, L=0.3)),
                                     ("l2", dict(eps=0.5, delta=0.05, L=0.3)), ("linf", dict(eps=1.0, delta=1e-3, L=0.05))])
def test_with_exact_expectations_the_certified_radius_never_exceeds_the_true_one(norm, kw):
    # One linear unit: the smoothed classifier switches exactly where h(x') = 0, at Lp
    # distance |h(x)| (the first layer is divided by N_{p,q} = ||w||_{p*}).
    w = torch.tensor([0.5, -2.0, 1.0, 0.25], dtype=torch.float64)
    net = analytic_net(norm, w.float(), **kw)
    h = torch.linspace(1e-3, 3.0, 300, dtype=torch.float64)
    top = exact_top_score(net, h)
    eps = dp.max_eps(top, 1 - top, net.delta).clamp_max(net.max_certifiable_eps)
    radius = net.radius_at(eps)
    assert bool((radius <= h * (1 + 1e-9)).all()), "a certificate beyond the decision boundary"
    assert float(radius.max()) > 0
    if net.mechanism == "laplace":
        # the Laplace certificate is nearly tight at small margins: R = (b/2) ln(2 e^{h/b} - 1) -> h
        assert float(radius[0] / h[0]) > 0.99
        assert radius.tolist() == pytest.approx((0.5 * net.noise.scale * torch.log(2 * torch.exp(h / net.noise.scale) - 1)).tolist())


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_monte_carlo_scores_match_the_exact_expectation(norm):
    # checks the noise layer's distribution and scale through the certified quantity itself
    net = analytic_net(norm, torch.tensor([1.0, 0.0, 0.0]), eps=1.0, delta=1e-5, L=0.2)
    x = torch.tensor([[0.0, 0.3, 0.3], [0.1, 0.5, 0.5], [0.3, 0.2, 0.9], [0.6, 0.0, 0.0]])
    n = 20000
    est = dp.expected_scores(net, x, n=n, seed=1, progress=False)
    exact = exact_top_score(net, x[:, 0].double())
    for k, p in zip((est[:, 1] * n).round().long().tolist(), exact.tolist()):
        ci = binomtest(k, n).proportion_ci(confidence_level=0.999)
        assert ci.low <= p <= ci.high


# --------------------------------------------------------------------------- sensitivity


def brute_force_ratio(W, p, q, samples=10000, seed=0):
    """max ||Wx||_q / ||x||_p over random points, sign vectors, basis vectors, refined by ascent."""
    gen = torch.Generator().manual_seed(seed)
    m, n = W.shape
    pts = [torch.randn(samples, n, generator=gen, dtype=W.dtype), torch.eye(n, dtype=W.dtype),
           torch.tensor(list(itertools.product((1.0, -1.0), repeat=n)), dtype=W.dtype)]
    pts = torch.cat(pts)

    def ratio(x):
        return torch.linalg.vector_norm(x @ W.T, ord=q, dim=1) / torch.linalg.vector_norm(x, ord=p, dim=1)

    best = ratio(pts)
    start = pts[best.topk(16).indices].clone().requires_grad_(True)
    opt = torch.optim.Adam([start], lr=1e-3)
    for _ in range(200):
        opt.zero_grad()
        (-ratio(start).sum()).backward()
        opt.step()
    return max(float(best.max()), float(ratio(start.detach()).max()))


PAIRS = list(itertools.product((1.0, 2.0, INF), repeat=2))


@pytest.mark.parametrize("p,q", PAIRS)
def test_sensitivity_equals_brute_force_where_exact_and_bounds_it_elsewhere(p, q):
    layer = torch.nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.3, 1.0, -1.0, 2.0], [-0.7, 0.2, 0.4, 1.5]]))
    W = layer.weight.detach().double()
    brute = brute_force_ratio(W, p, q)
    exact = dp.sensitivity(layer, p, q)  # small enough for vertex enumeration in every case
    assert exact.exact
    assert exact.value == pytest.approx(brute, rel=2e-3)
    assert exact.value >= brute * (1 - 1e-9)
    bounded = dp.sensitivity(layer, p, q, max_vertices=1)  # no enumeration: the hard cases are bounded
    assert bounded.value >= brute * (1 - 1e-9)
    assert bounded.lower <= brute + 1e-9
    assert bounded.exact == (p == 1.0 or q == INF or (p, q) == (2.0, 2.0))
    if bounded.exact:
        assert bounded.value == pytest.approx(exact.value, rel=1e-9)


def unrolled(conv, shape):
    eye = torch.eye(math.prod(shape), dtype=torch.float64)
    with torch.no_grad():
        return torch.nn.functional.conv2d(eye.view((-1,) + shape), conv.weight.double(), stride=conv.stride,
                                          padding=conv.padding).flatten(1).T


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_sensitivity_without_unrolling_agrees_with_the_unrolled_matrix(stride):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, stride=stride, padding=1)
    shape = (2, 6, 6)
    dense = torch.nn.Linear(72, 1)
    dense.weight = torch.nn.Parameter(unrolled(conv, shape).float())
    for p, q in PAIRS:
        ref = dp.sensitivity(dense, p, q, max_vertices=1)
        small = dp.sensitivity(conv, p, q, input_shape=shape, max_vertices=1)  # unrolled internally
        assert small.value == pytest.approx(ref.value, rel=1e-5) and small.exact == ref.exact
        big = dp.sensitivity(conv, p, q, input_shape=shape, unroll_limit=0)  # through convolutions only
        assert big.value >= ref.value * (1 - 1e-6)
        if p == 1.0 or q == INF:
            assert big.exact and big.value == pytest.approx(ref.value, rel=1e-5)
    spectral = dp.sensitivity(conv, 2, 2, input_shape=shape, unroll_limit=0)
    exact = dp.sensitivity(conv, 2, 2, input_shape=shape)
    assert not spectral.exact and exact.exact
    assert exact.value <= spectral.value <= 1.5 * exact.value, "the circular-convolution bound is close"


def test_the_noisy_layer_has_sensitivity_one_after_normalization():
    net = dp.build("mlp", "digits", norm="l2", width=2, seed=0)
    gen = torch.Generator().manual_seed(0)
    x, x2 = torch.rand(200, 1, 8, 8, generator=gen), torch.rand(200, 1, 8, 8, generator=gen)
    with torch.no_grad():
        ratio = (net.features(x) - net.features(x2)).flatten(1).norm(dim=1) / (x - x2).flatten(1).norm(dim=1)
        # the top right singular vector of the effective weight reaches sensitivity 1 exactly
        w = net._effective_weight().double()
        v = torch.linalg.svd(w).Vh[0].float().view(1, 1, 8, 8)
        top = (net.features(0.5 + 0.1 * v) - net.features(0.5 - 0.1 * v)).norm() / (0.2 * v).norm()
    assert float(ratio.max()) <= 1 + 1e-5
    assert float(top) == pytest.approx(1.0, rel=1e-4)


# --------------------------------------------------------------------------- mechanisms and Lemma 1


def test_noise_scales_follow_the_mechanisms():
    assert dp.laplace_scale(0.5, L=0.2, sensitivity=3.0) == pytest.approx(1.2)
    assert dp.gaussian_sigma(1.0, 0.05, L=0.2, sensitivity=2.0) == pytest.approx(math.sqrt(2 * math.log(25.0)) * 0.4)
    net = dp.build("mlp", "digits", norm="l1", eps=0.5, L=0.25, width=2)
    assert net.noise.scale == pytest.approx(0.5) and net.delta == 0.0
    assert net.eps_at(0.25) == pytest.approx(0.5) and net.radius_at(1.0) == pytest.approx(0.5)
    gauss = dp.build("mlp", "digits", norm="l2", eps=0.8, delta=1e-4, L=0.1, width=2)
    assert gauss.noise.scale == pytest.approx(math.sqrt(2 * math.log(1.25e4)) * 0.1 / 0.8)
    assert gauss.eps_at(0.1) == pytest.approx(0.8)
    # the samples have the calibrated scale: E|Z| = b for Laplace(b), std sigma for the Gaussian
    torch.manual_seed(0)
    lap = net.noise.sample((200000,), torch.zeros(1))
    assert float(lap.abs().mean()) == pytest.approx(0.5, rel=0.01)
    assert float(gauss.noise.sample((200000,), torch.zeros(1)).std()) == pytest.approx(gauss.noise.scale, rel=0.01)


def laplace_expectation(f, x, b):
    """E[f(x + Z)], Z ~ Laplace(0, b), by the trapezoid rule on a fine grid."""
    z = torch.linspace(-25 * b, 25 * b, 40001, dtype=torch.float64)
    density = torch.exp(-z.abs() / b) / (2 * b)
    return torch.trapezoid(f(x.view(-1, 1) + z) * density, z, dim=1)


def test_lemma_1_holds_and_is_tight_for_the_laplace_mechanism():
    # f has sensitivity-1 inputs; Laplace noise of scale 1/eps makes x -> f(x + Z) (eps, 0)-DP
    eps = 0.7
    b = dp.laplace_scale(eps, L=1.0)
    x = torch.linspace(-3, 3, 31, dtype=torch.float64)
    for f in (lambda t: (1 + torch.sin(3 * t)) / 2, lambda t: (t > 0.2).double(), lambda t: torch.sigmoid(4 * t)):
        e = laplace_expectation(f, x, b)
        for shift in (1.0, -1.0, 0.5):
            e_shift = laplace_expectation(f, x + shift, b)
            assert bool((e <= math.exp(eps) * e_shift + 1e-9).all()), "E[A(x)] <= e^eps E[A(x')] for |x - x'| <= 1"
    # the half-line indicator attains the constant: the lemma cannot be sharpened
    step = lambda t: (t > 5.0).double()  # noqa: E731
    ratio = laplace_expectation(step, x, b) / laplace_expectation(step, x - 1.0, b)
    assert float(ratio.max()) == pytest.approx(math.exp(eps), rel=1e-3)


# --------------------------------------------------------------------------- bounds and certify


def test_argmax_bounds_are_bonferroni_clopper_pearson():
    n, alpha = 500, 0.01
    mean = torch.tensor([[0.0, 0.1, 0.3, 0.6], [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    lower, upper = dp.score_bounds(mean, n, alpha=alpha)
    for i, j in itertools.product(range(2), range(4)):
        k = round(float(mean[i, j]) * n)
        ci = binomtest(k, n).proportion_ci(confidence_level=1 - alpha / 4, method="exact")
        assert float(lower[i, j]) == pytest.approx(ci.low, abs=1e-9)
        assert float(upper[i, j]) == pytest.approx(ci.high, abs=1e-9)
    lo, hi = dp.score_bounds(torch.tensor([[0.5, 0.5]]), 200, alpha=0.1, scores="softmax")
    half = math.sqrt(math.log(2 * 2 / 0.1) / 400)
    assert float(hi[0, 0] - lo[0, 0]) == pytest.approx(2 * half)


@pytest.mark.parametrize("norm", ["l1", "l2", "linf"])
def test_certify_returns_the_shared_certificate_in_the_unit_of_its_norm(norm):
    net = dp.build("mlp", "digits", norm=norm, width=2, seed=0)
    cert = dp.certify(net, torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)), n=100, alpha=0.1,
                      progress=False)
    assert isinstance(cert, rl.certificates.Certificate)
    assert (cert.method, cert.unit, cert.alpha) == ("pixeldp", rl.certificates.UNITS[norm], 0.1)
    assert (cert.norm, cert.n, cert.scores, cert.delta) == (norm, 100, "argmax", net.delta)
    assert cert.expected.shape == (3, 10) and cert.eps.shape == cert.lower_top.shape == cert.upper_runner_up.shape == (3,)
    assert torch.equal(cert.radius, torch.as_tensor(net.radius_at(cert.eps)))
    # the bounds are the shared statistics: Clopper-Pearson at alpha / K, Hoeffding for softmax scores
    lo, hi = rl.stats.clopper_pearson((cert.expected * 100).round().long(), 100, rl.stats.bonferroni(0.1, 10),
                                      side="two-sided")
    top = cert.expected.argmax(1)
    assert np.array_equal(cert.lower_top.numpy(), lo[np.arange(3), top.numpy()])
    soft = dp.certify(net, torch.rand(2, 1, 8, 8), n=50, alpha=0.1, scores="softmax", progress=False)
    t = rl.stats.hoeffding(50, rl.stats.bonferroni(0.1, 10))
    mean_top = soft.expected.gather(1, soft.prediction[:, None])[:, 0]
    assert torch.allclose(soft.lower_top, (mean_top - t).clamp_min(0))


@pytest.fixture(scope="module")
def trained_l2():
    train, test = rl.data.load("digits")
    net = dp.build("mlp", "digits", norm="l2", eps=1.0, delta=0.05, L=0.25, width=4, seed=0)
    rl.train.fit(net, train, epochs=15, lr=3e-3, batch_size=64, seed=0, progress=False)
    return net.eval(), rl.data.subset(test, 80, seed=0)


def test_certify_reports_the_largest_radius_where_the_proposition_holds(trained_l2):
    net, (x, y) = trained_l2
    cert = dp.certify(net, x, n=1000, alpha=0.05, progress=False)
    ok = cert.radius > 0
    assert ok.any() and (~ok).any()
    r = cert.radius[ok]
    eps_in = torch.as_tensor(net.eps_at(r * (1 - 1e-6)))
    assert bool(dp.robustness_condition(cert.lower_top[ok], cert.upper_runner_up[ok], eps_in, net.delta).all())
    uncapped = cert.eps[ok] < net.max_certifiable_eps - 1e-9
    eps_out = torch.as_tensor(net.eps_at(r * (1 + 1e-6)))[uncapped]
    assert not bool(dp.robustness_condition(cert.lower_top[ok][uncapped], cert.upper_runner_up[ok][uncapped], eps_out,
                                            net.delta).any())
    assert bool((cert.radius <= net.radius_at(1.0) + 1e-12).all()), "the Gaussian mechanism stops at eps = 1"
    # PixelDP always predicts: the smoothed argmax everywhere, radius 0 where nothing certifies
    assert not cert.abstained.any() and torch.equal(cert.prediction, cert.expected.argmax(1))
    assert bool((cert.eps[~ok] == 0).all())
    smoothed_accuracy = float((cert.prediction == y).double().mean())
    assert cert.certified_accuracy(y, 0.0) == pytest.approx(smoothed_accuracy)
    assert cert.certified_accuracy(y, 0.0) >= cert.certified_accuracy(y, 0.05) >= cert.certified_accuracy(y, 0.2)
    at = float(r.min())  # the convention: radius >= r counts
    assert cert.certified_accuracy(y, at) == pytest.approx(float(((cert.radius >= at) & (cert.prediction == y)).double().mean()))
    again = dp.certify(net, x, n=1000, alpha=0.05, progress=False)
    assert torch.equal(again.radius, cert.radius), "certification is seeded"


def test_an_eot_attack_never_changes_the_smoothed_prediction_inside_the_certified_radius(trained_l2):
    net, (x, y) = trained_l2
    cert = dp.certify(net, x, n=2000, alpha=0.05, progress=False)
    ok = cert.radius > 0
    xs, preds, radii = x[ok], cert.prediction[ok], cert.radius[ok].float()
    assert len(xs) >= 10
    smoothed = dp.SmoothedScores(net, draws=64)
    x_adv = rl.attacks.pgd(smoothed, xs, preds, eps=radii, norm="l2", steps=20, seed=0)
    assert bool((rl.norms.lp_distance(x_adv, xs, "l2") <= radii + 1e-5).all())
    after = dp.predict(net, x_adv, n=4000, seed=3, progress=False)
    assert torch.equal(after, preds), "an attack inside the certified radius changed the smoothed prediction"
    # the same attack with a budget far beyond the certificates does change predictions
    big = rl.attacks.pgd(smoothed, xs, preds, eps=2.5, norm="l2", steps=20, seed=0)
    flipped = (dp.predict(net, big, n=1000, seed=3, progress=False) != preds).double().mean()
    assert float(flipped) >= 0.3


def test_arguments_are_checked():
    layer = torch.nn.Linear(3, 2)
    with pytest.raises(TypeError, match="layer must be a torch.nn.Linear or torch.nn.Conv2d"):
        dp.sensitivity(torch.nn.ReLU(), "l2", "l2")
    with pytest.raises(ValueError, match="input_shape"):
        dp.sensitivity(torch.nn.Conv2d(1, 2, 3), "l2", "l2")
    with pytest.raises(ValueError, match="p must be 1, 2 or inf"):
        dp.sensitivity(layer, "l0", "l2")
    with pytest.raises(ValueError, match="eps must be <= 1"):
        dp.gaussian_sigma(1.5, 1e-5)
    with pytest.raises(ValueError, match=r"delta must be a probability in \(0, 1\)"):
        dp.gaussian_sigma(1.0, 0.0)
    with pytest.raises(ValueError, match=r"delta must be a probability in \[0, 1\)"):
        dp.robustness_condition(torch.tensor([0.8]), torch.tensor([0.1]), eps=0.5, delta=1.0)
    with pytest.raises(TypeError, match="delta must be a real number"):
        dp.max_eps(torch.tensor([0.8]), torch.tensor([0.1]), delta=True)
    assert dp.gaussian_sigma(1.0, np.float64(1e-5)) == dp.gaussian_sigma(1.0, 1e-5)
    with pytest.raises(ValueError, match="eps must be > 0"):
        dp.laplace_scale(0.0)
    with pytest.raises(ValueError, match="norm must be one of"):
        dp.build("mlp", "digits", norm="l0")
    with pytest.raises(TypeError, match="model must be a PixelDP network"):
        dp.certify(rl.models.build("mlp", "digits", width=2), torch.rand(2, 1, 8, 8))
    net = dp.build("mlp", "digits", width=2)
    with pytest.raises(ValueError, match="x must have values in"):
        dp.certify(net, torch.rand(2, 1, 8, 8) + 1)
    with pytest.raises(ValueError, match="scores must be one of"):
        dp.expected_scores(net, torch.rand(2, 1, 8, 8), scores="logits")
    with pytest.raises(ValueError, match="expected_top must hold expected scores"):
        dp.max_eps(torch.tensor([1.5]), torch.tensor([0.1]), 0.0)
    with pytest.raises(ValueError, match="may only hold Normalize and Flatten"):
        dp.PixelDP(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(3, 2)), (3,))


# --------------------------------------------------------------------------- noise on the input


def test_noise_on_input_is_the_same_network_behind_a_frozen_identity():
    model = rl.models.build("mlp", "digits", width=1, seed=0)
    wrapped = dp.noise_on_input(model, (1, 8, 8))
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(wrapped(x), model(x), atol=1e-6)
    assert not any(p.requires_grad for p in wrapped[1].parameters())
    for norm, value in (("l2", 1.0), ("l1", 1.0)):
        net = dp.PixelDP(wrapped, (1, 8, 8), norm=norm, eps=0.5, L=0.2)
        assert net.layer_sensitivity() == pytest.approx(value, abs=1e-6) and net.sensitivity_exact
        assert net.noise.scale == pytest.approx(dp.laplace_scale(0.5, 0.2) if norm == "l1"
                                                else dp.gaussian_sigma(0.5, 1e-5, 0.2))
    linf = dp.PixelDP(wrapped, (1, 8, 8), norm="linf", L=0.02)
    assert linf.layer_sensitivity() >= 8.0 - 1e-5, "N_inf,2 of the identity on 64 pixels is sqrt(64)"
    # the noise is on the pixels: the first features are the input itself
    assert torch.allclose(linf.features(x), x.flatten(1) / linf.layer_sensitivity(), atol=1e-6)
    assert dp.build("mlp", "digits", noise_at="input", width=1).first.weight.requires_grad is False
    with pytest.raises(ValueError, match="noise_at"):
        dp.build("mlp", "digits", noise_at="output")
    with pytest.raises(TypeError, match="input_shape"):
        dp.noise_on_input(model, 64)


def test_input_noise_network_trains_only_its_own_weights():
    net = dp.build("mlp", "digits", noise_at="input", width=1, L=0.1)
    x, y = torch.rand(32, 1, 8, 8), torch.arange(32) % 10
    identity = net.first.weight.clone()
    before = [p.clone() for p in net.rest.parameters() if p.requires_grad]
    rl.train.fit(net, (x, y), epochs=2, lr=1e-2, batch_size=16, progress=False)
    assert torch.equal(net.first.weight, identity)
    after = [p for p in net.rest.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


# --------------------------------------------------------------------------- L1 smoothing: cube and Laplace


def test_l1_radii_are_the_neyman_pearson_worst_cases():
    sigma = 0.7
    lam, b = math.sqrt(3) * sigma, sigma / math.sqrt(2)
    p = torch.tensor([0.3, 0.5, 0.6, 0.9, 0.99], dtype=torch.float64)
    uni = dp.l1_smoothing_radius(p, "uniform", sigma)
    lap = dp.l1_smoothing_radius(p, "laplace", sigma)
    assert (uni[:2] == 0).all() and (lap[:2] == 0).all()
    # uniform cube, shift delta along one axis: the top class keeps mass p - delta / (2 lam), >= 1/2 up to R
    for pa, r in zip(p[2:].tolist(), uni[2:].tolist()):
        assert pa - r / (2 * lam) == pytest.approx(0.5)
    # Laplace: the worst set is the half-line {z < t} of mass p; the shift by R leaves it mass exactly 1/2
    for pa, r in zip(p[2:].tolist(), lap[2:].tolist()):
        t = -b * math.log(2 * (1 - pa))
        assert 1 - 0.5 * math.exp(-t / b) == pytest.approx(pa)
        assert t == pytest.approx(r), "shifted by R, the half-line {z < t} keeps P(z < t - R) = P(z < 0) = 1/2"
    # Monte Carlo in 1-D for the cube: the half-interval of mass p shifted by R keeps 1/2
    gen = torch.Generator().manual_seed(0)
    z = (torch.rand(400_000, generator=gen, dtype=torch.float64) * 2 - 1) * lam
    t = -lam + 2 * lam * 0.9
    assert float(((z + float(uni[3])) < t).double().mean()) == pytest.approx(0.5, abs=3e-3)
    # the two noises trade places: the cube certifies more at moderate p_A, Laplace near p_A = 1
    assert uni[3] > lap[3] and lap[4] > uni[4]


def test_l1_noise_needed_inverts_the_radius():
    p = torch.tensor([0.4, 0.7, 0.95], dtype=torch.float64)
    for noise in dp.L1_NOISES:
        s = dp.l1_smoothing_sigma(p, noise, radius=0.3)
        assert math.isinf(float(s[0]))
        assert torch.allclose(dp.l1_smoothing_radius(p[1:], noise, 1.0) * s[1:], torch.full((2,), 0.3,
                                                                                         dtype=torch.float64))
        assert (dp.l1_smoothing_sigma(p, noise, radius=0.0) == 0).all()
    with pytest.raises(ValueError, match="noise"):
        dp.l1_smoothing_radius(0.9, "gaussian", 1.0)
    with pytest.raises(ValueError, match="p_a"):
        dp.l1_smoothing_radius(1.2, "uniform", 1.0)
    with pytest.raises(ValueError, match="sigma"):
        dp.l1_smoothing_radius(0.9, "uniform", 0.0)
    with pytest.raises(ValueError, match="radius"):
        dp.l1_smoothing_sigma(0.9, "uniform", -1.0)
