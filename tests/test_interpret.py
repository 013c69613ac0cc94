"""Certified interpretation (robustlab.interpret): the top-K certificate is the exact minimum
over its intervals (brute force), holds on a model whose smoothed map is known in closed form
(grid search over the certified disc), and no attack within the radius breaks it."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

import robustlab as rl
from robustlab import interpret


# --------------------------------------------------------------------------- combinatorics, brute force


def test_interval_overlap_is_the_exact_minimum_over_every_map_in_the_intervals():
    rng = np.random.default_rng(0)
    for _ in range(40):
        d, k = 5, 2
        a, b = rng.uniform(0, 1, d), rng.uniform(0, 1, d)
        lo, hi = torch.tensor(np.minimum(a, b))[None], torch.tensor(np.maximum(a, b))[None]
        top = torch.tensor(rng.choice(d, k, replace=False))[None].long()
        cert = int(interpret.interval_overlap(lo, hi, top)[0])
        vertices = [torch.where(torch.tensor(c, dtype=torch.bool), hi[0], lo[0])
                    for c in itertools.product([0, 1], repeat=d)]
        inside = [lo[0] + (hi[0] - lo[0]) * torch.tensor(rng.uniform(0, 1, d)) for _ in range(200)]
        overlaps = [len(set(top[0].tolist()) & set(interpret.top_k(v[None], k)[0].tolist())) for v in vertices + inside]
        assert min(overlaps) == cert, "the certified overlap must be reached by some map in the intervals"


def test_radius_formula_agrees_with_the_intervals_at_every_radius():
    rng = np.random.default_rng(1)
    sigma = 0.5
    for _ in range(20):
        d, k = 10, 4
        a, b = rng.uniform(0.02, 0.98, d), rng.uniform(0.02, 0.98, d)
        lo, hi = torch.tensor(np.minimum(a, b))[None], torch.tensor(np.maximum(a, b))[None]
        top = interpret.top_k(((lo + hi) / 2), k)
        radii = interpret.overlap_radii(lo, hi, top, sigma)
        assert bool((radii[:, :-1] >= radii[:, 1:]).all())
        for rho in np.linspace(0, 1.5, 31):
            lo_r, hi_r = interpret.bounds_at_radius(lo, hi, float(rho), sigma)
            assert int((radii[0] > rho).sum()) == int(interpret.interval_overlap(lo_r, hi_r, top)[0]), rho


def test_radius_is_infinite_when_the_top_set_cannot_all_be_displaced():
    lo, hi = torch.full((1, 5), 0.1, dtype=torch.float64), torch.full((1, 5), 0.9, dtype=torch.float64)
    radii = interpret.overlap_radii(lo, hi, torch.tensor([[0, 1, 2]]), sigma=1.0)
    assert math.isinf(radii[0, 0]) and radii[0, 1] == 0  # 2 outsiders can take at most 2 of the 3 places


# --------------------------------------------------------------------------- analytic case


class Quadratic(torch.nn.Module):
    """Logit 0 = -|z - 1/2|^2 / 2, logit 1 = 0: saliency of class 0 is |z - 1/2| elementwise."""

    def __init__(self):
        super().__init__()
        self.register_buffer("c", torch.tensor(0.5, dtype=torch.float64))

    def forward(self, z):
        s = -0.5 * ((z - self.c) ** 2).sum(1, keepdim=True)
        return torch.cat([s, torch.zeros_like(s)], 1)


def exact_map_first(x, sigma):
    """P(|u1 + d1| >= |u2 + d2|), u = x - 1/2: u1 - u2 and u1 + u2 are independent normals."""
    u = np.asarray(x, dtype=np.float64) - 0.5
    a = (u[..., 0] - u[..., 1]) / (math.sqrt(2) * sigma)
    b = (u[..., 0] + u[..., 1]) / (math.sqrt(2) * sigma)
    return norm.cdf(a) * norm.cdf(b) + norm.cdf(-a) * norm.cdf(-b)


def test_sparsified_smoothgrad_matches_the_closed_form_and_its_bounds_contain_it():
    sigma, n = 0.2, 4000
    x = torch.tensor([[0.9, 0.6], [0.3, 0.75], [0.55, 0.5]], dtype=torch.float64)
    sums, _ = interpret.smoothgrad_sums(Quadratic(), x, 0, sigma=sigma, n=n, k_sparse=1, seed=3)
    exact = exact_map_first(x.numpy(), sigma)
    lo, hi = interpret.element_bounds(sums, n, alpha=0.01)
    assert bool((lo[:, 0].numpy() <= exact).all() and (exact <= hi[:, 0].numpy()).all())
    assert np.abs(sums[:, 0].numpy() / n - exact).max() < 0.03


def test_inverse_normal_of_the_smoothed_map_is_one_over_sigma_lipschitz():
    rng = np.random.default_rng(2)
    sigma = 0.2
    x = rng.uniform(0, 1, (500, 2))
    xp = np.clip(x + rng.normal(0, 0.2, (500, 2)), 0, 1)
    lhs = np.abs(norm.ppf(exact_map_first(x, sigma)) - norm.ppf(exact_map_first(xp, sigma)))
    assert (lhs <= np.linalg.norm(x - xp, axis=1) / sigma + 1e-9).all()


def test_top_1_is_kept_everywhere_inside_the_certified_disc_of_the_closed_form_model():
    sigma = 0.2
    x = torch.tensor([[0.9, 0.6], [0.2, 0.45], [0.1, 0.6]], dtype=torch.float64)
    cert = interpret.certify_interpretation(Quadratic(), x, 0, k=1, sigma=sigma, n=4000, alpha=0.001, seed=4)
    angles = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    for i in range(3):
        r = float(cert.radii[i, 0])
        assert 0 < r < 1
        t = int(cert.top[i, 0])
        for frac in (0.5, 0.9, 0.999):
            pts = x[i].numpy() + frac * r * np.stack([np.cos(angles), np.sin(angles)], 1)
            g1 = exact_map_first(pts, sigma)
            kept = (g1 >= 0.5) if t == 0 else (g1 < 0.5)   # the top-1 of (g1, 1 - g1), ties to index 0
            assert kept.all(), (i, frac)
        # and the certificate is not far from tight: the set where the top element changes is near
        u = x[i].numpy() - 0.5
        boundary = min(abs(u[0] - u[1]), abs(u[0] + u[1])) / math.sqrt(2)
        assert r <= boundary and r > 0.6 * boundary


# --------------------------------------------------------------------------- an attack within the radius


def test_no_attack_within_the_radius_lowers_the_overlap_below_the_certificate(digits):
    torch.manual_seed(0)
    model = rl.models.build("mlp", "digits", width=2)
    _, test = digits
    rl.train.fit(model, (test.x[:200], test.y[:200]), epochs=3, progress=False)
    model.eval()
    x = test.x[:4]
    sigma, k = 0.5, 8
    cert = interpret.certify_interpretation(model, x, k=k, sigma=sigma, n=2000, alpha=0.01, keep=4, seed=5)
    assert bool((cert.radius > 0).any()), "some map is certified: otherwise the test checks nothing"
    bite = 0
    for i in range(x.shape[0]):
        r = float(cert.radii[i, 0])
        if r == 0:
            continue
        xi, ci = x[i:i + 1], cert.prediction[i:i + 1]
        for eps in (0.5 * r, 0.95 * r, 6 * r):
            adv = interpret.attack_interpretation(model, xi, cert.top[i:i + 1], ci, eps=eps, sigma=sigma, k_sparse=k,
                                                  steps=8, n=200, seed=6)
            assert float((adv - xi).flatten().norm()) <= eps + 1e-5 and float(adv.min()) >= 0 and float(adv.max()) <= 1
            sums, _ = interpret.smoothgrad_sums(model, adv, ci, sigma=sigma, n=4000, k_sparse=k, seed=7)
            attacked = int(interpret.topk_overlap(cert.map[i:i + 1], sums.double(), k)[0])
            certified = int(interpret.certified_overlap(cert[i:i + 1], [eps])[0, 0])
            if eps < r:
                assert certified >= 1
                assert attacked >= certified, (i, eps, attacked, certified)
            else:
                bite += attacked < int(interpret.topk_overlap(cert.map[i:i + 1], cert.map[i:i + 1], k)[0])
    assert bite > 0, "the attack changes the map beyond the radius (it is not a vacuous attack)"


# --------------------------------------------------------------------------- argument errors


def test_arguments_are_checked():
    model = rl.models.build("mlp", "digits", width=2)
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="sigma"):
        interpret.certify_interpretation(model, x, sigma=0.0)
    with pytest.raises(ValueError, match="k must be <"):
        interpret.certify_interpretation(model, x, k=64, sigma=0.5, n=10)
    with pytest.raises(ValueError, match="keep"):
        interpret.certify_interpretation(model, x, k=4, keep=5, sigma=0.5, n=10)
    with pytest.raises(ValueError, match="method"):
        interpret.certify_interpretation(model, x, sigma=0.5, n=10, method="gradcam")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        interpret.saliency(model, x + 1)
    with pytest.raises(ValueError, match="target"):
        interpret.saliency(model, x, target=-1)
    with pytest.raises(ValueError, match="eps"):
        interpret.attack_interpretation(model, x, torch.zeros(2, 4, dtype=torch.long), eps=-1.0, sigma=0.5)
    with pytest.raises(TypeError, match="Certificate"):
        interpret.certified_overlap("cert", [0.1])
    with pytest.raises(ValueError, match="k_sparse"):
        interpret.smoothgrad_sums(model, x, sigma=0.5, n=10, k_sparse=65)
