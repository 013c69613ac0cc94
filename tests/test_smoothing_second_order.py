"""Second-order (SoS) and dipole smoothing: the certificates reduce to Cohen's on half-spaces, are met
exactly by the tight constructions, lower-bound every other base classifier with a closed form, and
hold at the promised rate when sampled.
"""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import binom, norm

from robustlab.certificates import ABSTAIN, UNITS
from robustlab.smoothing import gaussian as gs
from robustlab.smoothing import second_order as so

TAIL = 1 - 1e-6  # a correct method exceeds this quantile of Bin(reps, alpha) with probability < 1e-6


class HalfSpace(torch.nn.Module):
    """Class 1 iff w.x + b > 0 (logits (0, w.x + b))."""

    def __init__(self, w, b):
        super().__init__()
        self.w = torch.nn.Parameter(w.double(), requires_grad=False)
        self.b = float(b)

    def forward(self, z):
        m = z.flatten(1).double() @ self.w + self.b
        return torch.stack([torch.zeros_like(m), m], 1)


class Slab(torch.nn.Module):
    """Class 1 iff lo < u.(x - c) < hi for a unit vector u."""

    def __init__(self, u, c, lo, hi):
        super().__init__()
        self.u = torch.nn.Parameter(u.double(), requires_grad=False)
        self.c, self.lo, self.hi = c.double(), lo, hi

    def forward(self, z):
        t = (z.flatten(1).double() - self.c) @ self.u
        inside = (t > self.lo) & (t < self.hi)
        return torch.stack([(~inside).double(), inside.double()], 1)


def slab_mass(t1, t2, shift):
    return norm.cdf(t2 - shift) - norm.cdf(t1 - shift)


# --------------------------------------------------------------------------- analytic: SoS


@pytest.mark.parametrize("sigma", [0.25, 1.0])
def test_on_a_half_space_sos_is_exactly_cohens_radius(sigma):
    p = np.linspace(0.51, 0.999, 40)
    g = np.asarray(so.max_gradient_norm(p, sigma))  # a half-space has the largest possible gradient
    np.testing.assert_allclose(so.sos_radius(p, g, sigma), sigma * norm.ppf(p), rtol=0, atol=1e-9)
    np.testing.assert_allclose(so.sos_radius(p, 10 * g, sigma), sigma * norm.ppf(p), rtol=0, atol=1e-9)


@pytest.mark.parametrize("a,sigma", [(0.1, 0.25), (0.3, 0.25), (0.5, 0.5), (1.2, 0.5)])
def test_on_the_symmetric_slab_sos_is_met_exactly(a, sigma):
    # f = 1[|z_1| < a] at its centre: p = 2 Phi(a / sigma) - 1, gradient 0; the true radius along z_1 solves
    # Phi((a - R) / sigma) - Phi((-a - R) / sigma) = 1/2
    p = 2 * norm.cdf(a / sigma) - 1
    if p <= 0.5:
        assert so.sos_radius(p, 0.0, sigma) == 0.0
        return
    r = so.sos_radius(p, 0.0, sigma)
    truth = brentq(lambda t: slab_mass(-a / sigma, a / sigma, t / sigma) - 0.5, 0, 10 * sigma, xtol=1e-14)
    assert abs(r - truth) < 1e-8
    assert r > sigma * norm.ppf(p)  # strictly above Cohen's


@pytest.mark.parametrize("seed", range(4))
def test_the_sos_bound_never_exceeds_the_truth_and_is_met_by_its_slab(seed):
    rng = np.random.default_rng(seed)
    sigma = 0.5
    for _ in range(25):
        t1, t2 = np.sort(rng.normal(0, 1.5, 2))
        p = slab_mass(t1, t2, 0.0)
        grad = abs(norm.pdf(t1) - norm.pdf(t2)) / sigma  # |d/dz1 of the slab's smoothed probability|
        for radius in (0.1, 0.4, 1.0):
            bound = so.sos_certified_score(p, grad, radius, sigma)
            # shift along any direction at angle theta to the slab's normal, both orientations
            cos = np.linspace(-1, 1, 41)
            truth = slab_mass(t1, t2, cos * radius / sigma)
            assert bound <= truth.min() + 1e-9
            # the worst direction meets the bound exactly: the slab is its own worst case
            assert abs(bound - truth.min()) < 1e-7


def test_a_larger_gradient_bound_never_certifies_more():
    p = np.full(30, 0.8)
    g = np.linspace(0, float(so.max_gradient_norm(0.8, 0.5)), 30)
    r = so.sos_radius(p, g, 0.5)
    assert (np.diff(r) <= 1e-12).all()
    assert r[0] > r[-1] == pytest.approx(0.5 * norm.ppf(0.8), abs=1e-9)


# --------------------------------------------------------------------------- analytic: dipole


def test_dipole_is_exact_on_a_half_space_and_on_the_symmetric_slab():
    sigma = 0.5
    for t in (0.2, 1.0, 2.5):  # half-space {z_1 < t}: C_S = 2 Phi(t) - 1, C_N = Phi(-t)
        r = so.dipole_radius(2 * norm.cdf(t) - 1, norm.cdf(-t), sigma)
        assert abs(r - sigma * t) < 1e-8
    for p in (0.6, 0.9):  # a symmetric set: C_N = 0, the symmetric slab's radius
        assert abs(so.dipole_radius(p, 0.0, sigma) - so.sos_radius(p, 0.0, sigma)) < 1e-8


def _interval_mass(lo, hi, shift=0.0):
    return max(0.0, norm.cdf(hi - shift) - norm.cdf(lo - shift)) if hi > lo else 0.0


@pytest.mark.parametrize("seed", range(4))
def test_the_dipole_bound_never_exceeds_the_truth_on_random_slabs(seed):
    rng = np.random.default_rng(10 + seed)
    sigma = 1.0
    for _ in range(25):
        t1, t2 = np.sort(rng.normal(0, 1.5, 2))
        # both members of the pair x + delta, x - delta inside: z_1 in (t1, t2) and -z_1 in (t1, t2)
        cs = _interval_mass(max(t1, -t2), min(t2, -t1))
        cn = _interval_mass(t1, t2) - cs
        if cs + cn >= 1:
            continue
        for radius in (0.2, 0.7, 1.5):
            bound = so.dipole_certified_score(cs, cn, radius, sigma)
            truth = min(slab_mass(t1, t2, s * radius / sigma) for s in np.linspace(-1, 1, 41))
            assert bound <= truth + 1e-9


# --------------------------------------------------------------------------- sampled


def _half_space_points(d, dist, gen):
    w = torch.randn(d, generator=gen, dtype=torch.float64)
    w = w / w.norm()
    x = 0.5 + dist[:, None] * w  # at signed distance dist from the hyperplane through 0.5
    return HalfSpace(w, -0.5 * float(w.sum())), x.float()


def test_sampled_sos_and_dipole_radii_exceed_the_true_distance_at_most_at_rate_alpha():
    gen = torch.Generator().manual_seed(0)
    reps, alpha, sigma = 300, 0.1, 0.25
    dist = torch.full((reps,), 0.2, dtype=torch.float64)  # p = Phi(0.8) = 0.79
    model, x = _half_space_points(3, dist, gen)
    for cert in (so.certify_sos(model, x, sigma=sigma, n0=20, n=200, alpha=alpha, seed=0),
                 so.certify_dipole(model, x, sigma=sigma, n0=20, n=200, alpha=alpha, seed=0)):
        certified = cert.prediction == 1
        assert certified.float().mean() > 0.5  # not a vacuous test
        over = int((certified & (cert.radius > 0.2)).sum())
        assert over <= binom.ppf(TAIL, reps, alpha), (cert.method, over)
        assert not (cert.prediction == 0).any()  # class 0 would be wrong: p_1 > 1/2 here


def test_the_gradient_estimate_is_unbiased_and_its_bound_holds_on_an_off_centre_slab():
    # slab lo < u.(x - c) < hi seen from x = c: ||grad p|| = |phi(lo/s) - phi(hi/s)| / s
    reps, sigma, alpha = 400, 0.5, 0.1
    d = 2
    u = torch.tensor([0.6, 0.8], dtype=torch.float64)
    c = torch.full((d,), 0.5, dtype=torch.float64)
    lo, hi = -0.1, 0.6
    model = Slab(u, c, lo, hi)
    x = c.float().expand(reps, d).contiguous()
    cert = so.certify_sos(model, x, sigma=sigma, n0=20, n=2000, alpha=alpha, seed=1)
    true_sq = ((norm.pdf(lo / sigma) - norm.pdf(hi / sigma)) / sigma) ** 2
    est = cert.grad_squared.numpy()
    stderr = est.std() / math.sqrt(reps)
    assert abs(est.mean() - true_sq) < 5 * stderr  # unbiased
    bound = est + so.gradient_concentration(1000, d, sigma, alpha / 2)
    assert (bound < true_sq).sum() <= binom.ppf(TAIL, reps, alpha / 2)


def test_sos_draws_exactly_cohens_noise_and_keeps_its_vote_tables():
    gen = torch.Generator().manual_seed(3)
    model, x = _half_space_points(4, torch.linspace(-0.3, 0.3, 6, dtype=torch.float64), gen)
    sos = so.certify_sos(model, x, sigma=0.25, n0=30, n=400, alpha=0.01, seed=5)
    cohen = gs.certify(model, x, sigma=0.25, n0=30, n=400, alpha=0.01, seed=5)
    again = gs.certify_counts(sos.selection, sos.counts, sigma=0.25, alpha=0.01)
    assert torch.equal(cohen.count, sos.count)
    assert torch.equal(cohen.prediction, again.prediction) and torch.allclose(cohen.radius, again.radius)
    assert sos.unit == UNITS["l2"] and sos.alpha == 0.01
    assert bool(((sos.prediction == ABSTAIN) | (sos.pA_lower > 0.5)).all())


def test_certificates_do_not_depend_on_the_batch_size():
    gen = torch.Generator().manual_seed(4)
    model, x = _half_space_points(4, torch.linspace(-0.3, 0.3, 5, dtype=torch.float64), gen)
    for fn in (so.certify_sos, so.certify_dipole):
        a = fn(model, x, sigma=0.25, n0=20, n=300, alpha=0.01, seed=2, batch_size=7)
        b = fn(model, x, sigma=0.25, n0=20, n=300, alpha=0.01, seed=2, batch_size=1000)
        assert torch.equal(a.prediction, b.prediction) and torch.equal(a.radius, b.radius)


def test_antithetic_noise_comes_in_opposite_pairs():
    z = so.AntitheticGaussianNoise(0.3).sample(torch.full((5,), 0.5), 6, torch.Generator().manual_seed(0))
    assert torch.allclose(z[0::2] - 0.5, -(z[1::2] - 0.5))
    with pytest.raises(ValueError, match="even"):
        so.AntitheticGaussianNoise(0.3).sample(torch.zeros(5), 3, torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- errors


def test_bad_arguments_are_rejected_with_their_names():
    model = HalfSpace(torch.ones(3), 0.0)
    x = torch.full((2, 3), 0.5)
    with pytest.raises(ValueError, match="n must be even"):
        so.certify_sos(model, x, sigma=0.25, n=101)
    with pytest.raises(ValueError, match="n0 must be even"):
        so.certify_dipole(model, x, sigma=0.25, n0=11, n=100)
    with pytest.raises(ValueError, match="sigma"):
        so.certify_sos(model, x, sigma=0.0, n=100)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        so.certify_dipole(model, x + 1, sigma=0.25, n=100)
    with pytest.raises(ValueError, match="alpha"):
        so.certify_sos(model, x, sigma=0.25, n=100, alpha=1.5)
    with pytest.raises(ValueError, match="p must"):
        so.sos_radius(1.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="grad_bound"):
        so.sos_radius(0.8, -1.0, 0.5)
    with pytest.raises(ValueError, match="c_s"):
        so.dipole_radius(0.7, 0.4, 0.5)
    with pytest.raises(TypeError, match="n_pairs"):
        so.gradient_concentration(10.0, 3, 0.5, 0.01)


# --------------------------------------------------------------------------- the chapter's widget


def test_the_explorer_shows_the_package_radii_and_draws_a_certificate():
    from robustlab.widgets import SecondOrderExplorer

    gen = torch.Generator().manual_seed(6)
    model, x = _half_space_points(3, torch.linspace(0.05, 0.3, 6, dtype=torch.float64), gen)
    cert = so.certify_sos(model, x, sigma=0.25, n0=20, n=200, alpha=0.01, seed=0)
    demo = SecondOrderExplorer(sigma=0.25, certificate=cert, resolution=12)
    out = demo.update(p_a=0.8, g_frac=0.3)
    g = 0.3 * so.max_gradient_norm(0.8, 0.25)
    assert out["radius_sos"] == pytest.approx(so.sos_radius(0.8, g, 0.25))
    assert out["radius_cohen"] == pytest.approx(0.25 * norm.ppf(0.8), abs=1e-9)
    assert out["radius_cohen"] <= out["radius_sos"] <= out["radius_slab"]
    assert (demo.gain >= 1 - 1e-9).all()  # SoS never certifies less than Cohen with the same p_A
    fig = demo.snapshot([(0.7, 0.0), (0.95, 1.0)])
    assert len(fig.axes) >= 4
    with pytest.raises(ValueError, match="g_frac"):
        demo.update(0.8, 1.5)
    with pytest.raises(TypeError, match="SoS Certificate"):
        SecondOrderExplorer(certificate=gs.certify(model, x, sigma=0.25, n0=10, n=50, alpha=0.01))
