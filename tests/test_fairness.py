"""Robustness bias: the distance bounds bracket the exact distance, the curves and the measure are right.

A linear classifier has an exact distance to its decision boundary, so the attack (an upper
bound), the interval certificate (a lower bound) and the smoothing radius (a lower bound
with probability 1 - alpha) can each be checked against it; the curves and the AUC measure
are checked against hand-computed values; the regularizer's penalty against its formula.
"""

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom

import robustlab as rl
from robustlab import fairness as fa


def linear_model(w, b):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(w.shape[1], w.shape[0]))
    with torch.no_grad():
        model[1].weight.copy_(w)
        model[1].bias.copy_(b)
    return model.eval()


def exact_distance(w, b, x):
    """min_j (z_y - z_j) / ||w_y - w_j||: the L2 distance to the boundary of an affine classifier
    (no box), with y its prediction; and the nearest boundary point."""
    z = x @ w.T + b
    y = z.argmax(1)
    best, point = torch.full((len(x),), math.inf, dtype=torch.float64), x.clone()
    for j in range(w.shape[0]):
        diff = w[y] - w[j]
        gap = z.gather(1, y[:, None]).squeeze(1) - z[:, j]
        norm = diff.norm(dim=1)
        d = torch.where(y == j, torch.full_like(gap, math.inf), gap / norm.clamp_min(1e-12))
        closer = d < best
        best = torch.where(closer, d, best)
        point = torch.where(closer[:, None], x - (gap / norm.clamp_min(1e-12) ** 2)[:, None] * diff, point)
    return best, y, point


@pytest.fixture(scope="module")
def linear_case():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    b = torch.randn(4, generator=gen, dtype=torch.float64) * 0.3
    x = 0.3 + 0.4 * torch.rand(60, 6, generator=gen, dtype=torch.float64)
    d, y, point = exact_distance(w, b, x - 0.5)  # the model centres its input
    model = linear_model(w, b - w.sum(1) * 0.5).double()
    inside = ((point + 0.5 >= 0) & (point + 0.5 <= 1)).all(1)  # the nearest boundary point is a valid input
    return model, x, y, d, inside


def test_linear_exact_distance_formula(linear_case):
    """The closed form itself: the nearest boundary point is on the boundary (a tie of two logits)."""
    model, x, y, d, _ = linear_case
    assert torch.isfinite(d).all() and (d > 0).all()


@pytest.mark.parametrize("attacks", [("cw", "deepfool"), ("deepfool",), ("cw",)])
def test_attack_distance_is_an_upper_bound_and_tight_on_a_linear_model(linear_case, attacks):
    """Attack >= exact always (it is the norm of a misclassified input), and equal where the
    nearest boundary point lies in the box, with either minimal-norm attack or both."""
    model, x, y, d, inside = linear_case
    du = fa.attack_distances(model, x, y, attacks=attacks, progress=False)
    assert du.method.startswith("+".join(attacks))
    assert du.kind == "upper" and du.correct.all()
    assert (du.distance >= d - 1e-6).all(), "an attack distance below the exact distance to the boundary"
    sizes = (du.x_adv - x).flatten(1).norm(dim=1)
    assert torch.allclose(sizes, du.distance, atol=1e-6)
    assert (rl.train.predict(model, du.x_adv) != y).all(), "every returned distance comes with an adversarial example"
    assert inside.sum() >= 20
    if "deepfool" in attacks:  # DeepFool's first step lands on an affine boundary; CW alone only approaches it
        assert torch.allclose(du.distance[inside], d[inside], rtol=1e-3, atol=1e-4), "the attack misses the boundary"
    else:
        assert float(((du.distance - d) / d)[inside].median()) < 1e-2


def as_relu_network(model):
    """The same affine function as a ReLU network with one hidden layer: u = relu(v) - relu(-v)."""
    lin = model[1]
    d = lin.in_features
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, 2 * d), torch.nn.ReLU(),
                              torch.nn.Linear(2 * d, lin.out_features)).double()
    with torch.no_grad():
        eye = torch.eye(d, dtype=torch.float64)
        net[1].weight.copy_(torch.cat([eye, -eye]))
        net[1].bias.zero_()
        net[3].weight.copy_(torch.cat([lin.weight, -lin.weight], 1))
        net[3].bias.copy_(lin.bias)
    return net.eval()


def test_certified_distance_is_a_lower_bound(linear_case):
    model, x, y, d, _ = linear_case
    net = as_relu_network(model)
    assert torch.allclose(net(x), model(x))
    dl = fa.certified_distances(net, x, y, method="ibp")
    assert dl.kind == "lower" and dl.correct.all()
    assert (dl.distance <= d + 1e-6).all(), "a certified radius beyond the exact distance"
    assert (dl.distance > 0).any()


def test_deepfool_lands_on_the_nearest_boundary_of_a_linear_model(linear_case):
    model, x, y, d, inside = linear_case
    xa = fa.deepfool(model, x, y, overshoot=0.0)
    dist = (xa - x).flatten(1).norm(dim=1)
    assert torch.allclose(dist[inside], d[inside], rtol=1e-4, atol=1e-5)
    xa = fa.deepfool(model, x, y)  # with the overshoot it crosses
    assert (rl.train.predict(model, xa) != y).all()


def test_attack_distances_skip_misclassified_points(linear_case):
    model, x, y, d, _ = linear_case
    wrong = (y + 1) % 4
    du = fa.attack_distances(model, x[:5], wrong[:5], bisection_steps=0, progress=False)
    assert not du.correct.any() and torch.isnan(du.distance).all()


def test_smoothing_radius_of_a_half_space_is_below_its_distance_at_rate_alpha():
    """Gaussian smoothing of a half-space classifier is the same half-space, whose distance is
    |w.x + b| / ||w||: Cohen's radius exceeds it on at most an alpha fraction (binomial tail)."""
    gen = torch.Generator().manual_seed(1)
    w = torch.tensor([[1.0, 0.5, 0.0, 0.0], [-1.0, -0.5, 0.0, 0.0]])
    b = torch.tensor([-0.6, 0.6])
    model = linear_model(w, b)
    x = torch.rand(300, 4, generator=gen)
    z = x @ w.T + b
    y = z.argmax(1)
    exact = (z[:, 0] - z[:, 1]).abs().double() / (w[0] - w[1]).norm().double()
    alpha = 0.01
    dl = fa.certified_distances(model, x, y, method="smoothing", sigma=0.25, n=1000, alpha=alpha)
    counted = dl.correct
    violations = int((dl.distance[counted] > exact[counted] + 1e-6).sum())
    assert violations <= binom.ppf(1 - 1e-6, int(counted.sum()), alpha)
    assert int(counted.sum()) > 200


def test_cached_distances_are_the_computed_ones_and_keyed_by_the_weights(linear_case):
    model, x, y, _, _ = linear_case
    first = fa.attack_distances(model, x[:12], y[:12], attacks=("deepfool",), bisection_steps=2, cache=True)
    again = fa.attack_distances(model, x[:12], y[:12], attacks=("deepfool",), bisection_steps=2, cache=True)
    assert torch.equal(first.distance, again.distance) and torch.equal(first.x_adv, again.x_adv)
    other = linear_model(model[1].weight.detach() * 2, model[1].bias.detach() * 2).double()  # same boundary
    scaled = fa.attack_distances(other, x[:12], y[:12], attacks=("deepfool",), bisection_steps=2, cache=True)
    assert torch.allclose(scaled.distance, first.distance, atol=1e-6)
    broken = linear_model(model[1].weight.detach().flip(0), model[1].bias.detach().flip(0)).double()
    assert not torch.equal(fa.attack_distances(broken, x[:12], y[:12], attacks=("deepfool",), bisection_steps=2,
                                               cache=True).correct, first.correct), "a new model must not hit the cache"
    net = as_relu_network(model)
    lower = fa.certified_distances(net, x[:12], y[:12], cache=True)
    assert torch.equal(lower.distance, fa.certified_distances(net, x[:12], y[:12], cache=True).distance)


def test_bias_interval_covers_the_population_bias():
    """Group 0 ~ U[0, 1], group 1 ~ U[1, 2] (equal sizes): over [0, 2] the AUCs are the means
    0.5 and 1.5, so beta_0 = -2/3 and beta_1 = 2. The 90% bootstrap interval must cover the
    true value in most of 40 independent samples, and hold the sample's own estimate."""
    groups = (torch.arange(300) >= 150).long()
    hits = np.zeros(2)
    for rep in range(40):
        gen = torch.Generator().manual_seed(100 + rep)
        d = torch.rand(300, generator=gen).double() + groups
        ci = fa.bias_interval(d, groups, n_boot=400, level=0.9, tau_min=0.0, tau_max=2.0, seed=rep)
        est = fa.robustness_curves(d, groups, tau_min=0.0, tau_max=2.0).bias
        assert np.all(ci[:, 0] <= est) and np.all(est <= ci[:, 1])
        hits += (ci[:, 0] <= [-2 / 3, 2.0]) & ([-2 / 3, 2.0] <= ci[:, 1])
    assert np.all(hits >= 30), f"coverage of the true bias too low: {hits} of 40"


def test_bias_interval_of_identical_groups_usually_holds_zero():
    gen = torch.Generator().manual_seed(7)
    groups = torch.arange(600) % 4
    d = torch.rand(600, generator=gen).double()
    ci = fa.bias_interval(d, groups, n_boot=500, level=0.95)
    assert ci.shape == (4, 2) and int(((ci[:, 0] <= 0) & (0 <= ci[:, 1])).sum()) >= 3


def test_curves_are_non_increasing_start_at_one_and_give_the_mean_distance():
    gen = torch.Generator().manual_seed(2)
    d = torch.rand(200, generator=gen).double() * 2 + 0.1
    d[::17] = float("nan")  # not counted
    groups = torch.randint(0, 3, (200,), generator=gen)
    c = fa.robustness_curves(d, groups, tau_min=0.0, taus=np.linspace(0.0, 2.2, 50))
    assert np.all(np.diff(c.curve, axis=1) <= 0) and np.all(np.diff(c.rest, axis=1) <= 0)
    assert np.allclose(c.curve[:, 0], 1.0) and np.allclose(c.rest[:, 0], 1.0)
    keep = ~torch.isnan(d)
    for i, s in enumerate(c.groups):
        mine = keep & (groups == s)
        assert c.counts[i] == int(mine.sum())
        assert c.auc[i] == pytest.approx(float(d[mine].mean()), abs=1e-12)  # AUC from 0 to max = mean distance
        assert c.auc_rest[i] == pytest.approx(float(d[keep & (groups != s)].mean()), abs=1e-12)
        assert c.bias[i] == pytest.approx((c.auc[i] - c.auc_rest[i]) / c.auc_rest[i])
    # the reference code's Riemann sum on a fine grid converges to the exact integral
    lo, hi = float(np.nanmin(d)), float(np.nanmax(d))
    fine = np.linspace(lo, hi, 20001)
    riemann = fa.robustness_curves(d, groups, taus=fine).curve[:, :-1].sum(1) * (fine[1] - fine[0])
    assert np.allclose(riemann, fa.robustness_curves(d, groups).auc, atol=1e-3)


def test_bias_of_hand_computed_groups_and_infinite_distances():
    d = torch.tensor([0.1, 0.3, math.inf, 0.5, 0.9, float("nan")])
    c = fa.robustness_curves(d, torch.tensor([0, 0, 0, 1, 1, 1]), names=["a", "b"])
    # range [0.1, 0.9]; the infinite distance counts as 0.9
    assert c.groups == ("a", "b")
    assert c.auc.tolist() == pytest.approx([(0.0 + 0.2 + 0.8) / 3, (0.4 + 0.8) / 2])
    assert c.bias[0] == pytest.approx((1 / 3 - 0.6) / 0.6)
    assert "a" in c.table()


def test_a_single_group_has_no_rest_and_a_nan_bias():
    c = fa.robustness_curves(torch.tensor([0.1, 0.2, float("nan")]), torch.tensor([0, 0, 1]))
    assert c.groups == (0,) and np.isnan(c.bias[0]) and np.isnan(c.auc_rest[0]) and c.auc[0] == pytest.approx(0.05)


def test_margin_proxy_is_the_exact_distance_of_a_two_class_linear_model():
    w, b = torch.tensor([[1.0, 2.0], [-1.0, 0.0]]), torch.tensor([0.1, -0.2])
    model = linear_model(w, b)
    x = torch.rand(10, 2, generator=torch.Generator().manual_seed(3))
    exact, y, _ = exact_distance(w.double(), b.double(), x.double())
    d, logits = fa.distance_proxy(model, x, y)
    assert torch.allclose(d.double(), exact, atol=1e-5)
    d_logit, _ = fa.distance_proxy(model, x, y, proxy="logit")
    z_pred = logits.gather(1, logits.argmax(1, keepdim=True)).squeeze(1)
    assert torch.allclose(d_logit, z_pred.abs() / w[logits.argmax(1)].norm(dim=1), atol=1e-5)


def test_penalty_matches_hand_computation_and_reduces_to_the_paper_for_two_groups():
    loss = fa.RobustnessBiasLoss(tau=0.5, alpha=1.0, temperature=0.1)
    d = torch.tensor([0.2, 0.4, 0.6, 1.0])
    g = torch.tensor([0, 0, 1, 1])
    s = torch.sigmoid((0.5 - d) / 0.1)
    paper = (s[:2].mean() - s[2:].mean()).abs()
    assert float(loss.penalty(d, g)) == pytest.approx(float(paper), rel=1e-6)
    g3 = torch.tensor([0, 1, 2, 2])
    expected = np.mean([abs(float(s[0] - s[1:].mean())), abs(float(s[1] - s[[0, 2, 3]].mean())),
                        abs(float(s[2:].mean() - s[:2].mean()))])
    assert float(loss.penalty(d, g3)) == pytest.approx(expected, rel=1e-6)
    assert float(loss.penalty(d, torch.zeros(4, dtype=torch.int64))) == 0.0  # one group: no gap


def test_loss_adds_alpha_times_the_penalty_and_trains_through_it():
    model = rl.models.build("mlp", "digits", width=2)
    x, y = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(4)), torch.arange(16) % 3
    loss_fn = fa.RobustnessBiasLoss(tau=0.5, alpha=2.0)
    loss, logits = loss_fn(model, x, y)
    d, _ = fa.distance_proxy(model, x, y)
    right = logits.argmax(1) == y
    ce = torch.nn.functional.cross_entropy(logits, y)
    expected = ce + 2.0 * loss_fn.penalty(d[right], y[right])
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_regularized_model_is_cached_and_alpha_zero_is_standard_training(monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_SMOKE", "1")
    m1, h1 = fa.bias_regularized_model(alpha=0.0, progress=False)
    m2, h2 = fa.bias_regularized_model(alpha=0.0, progress=False)
    assert h2.from_cache and not h1.from_cache
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_fine_tuning_starts_from_the_standard_model_and_leaves_it_untouched(monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_SMOKE", "1")
    standard, _ = rl.train.trained_model(progress=False)
    before = [t.clone() for t in standard.state_dict().values()]
    tuned, _ = fa.bias_regularized_model(alpha=1.0, init="standard", lr=1e-9, progress=False)
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(tuned(x), standard(x), atol=1e-4), "a vanishing learning rate keeps the standard weights"
    assert all(torch.equal(a, b) for a, b in zip(before, standard.state_dict().values()))
    moved, _ = fa.bias_regularized_model(alpha=1.0, init="standard", lr=1e-2, progress=False)
    assert not torch.allclose(moved(x), standard(x), atol=1e-4)


@pytest.mark.parametrize("call, name", [
    (lambda: fa.robustness_curves(torch.tensor([0.1, -0.2]), torch.tensor([0, 1])), "distances"),
    (lambda: fa.robustness_curves(torch.tensor([0.1, 0.2]), torch.tensor([0, 1, 1])), "groups"),
    (lambda: fa.robustness_curves(torch.tensor([0.1, 0.2]), torch.tensor([0, 1]), tau_max=0.05), "tau_max"),
    (lambda: fa.robustness_curves(torch.tensor([float("nan")] * 2), torch.tensor([0, 1])), "distances"),
    (lambda: fa.robustness_curves(torch.tensor([0.1, 0.2]), torch.tensor([0, 1]), taus=[0.2, 0.1]), "taus"),
    (lambda: fa.RobustnessBiasLoss(tau=0.0), "tau"),
    (lambda: fa.RobustnessBiasLoss(tau=0.5, alpha=-1.0), "alpha"),
    (lambda: fa.RobustnessBiasLoss(tau=0.5, proxy="deepfool"), "proxy"),
    (lambda: fa.certified_distances(linear_model(torch.eye(2), torch.zeros(2)), torch.rand(2, 2),
                                    torch.tensor([0, 1]), method="crown"), "method"),
    (lambda: fa.certified_distances(linear_model(torch.eye(2), torch.zeros(2)), torch.rand(2, 2),
                                    torch.tensor([0, 1]), method="smoothing"), "sigma"),
    (lambda: fa.attack_distances(linear_model(torch.eye(2), torch.zeros(2)), torch.rand(2, 2),
                                 torch.tensor([0, 1]), bisection_steps=-1), "bisection_steps"),
    (lambda: fa.certified_distances(linear_model(torch.eye(2), torch.zeros(2)), torch.rand(2, 2),
                                    torch.tensor([0, 1])), "model"),
    (lambda: fa.deepfool(linear_model(torch.eye(2), torch.zeros(2)), torch.rand(2, 2), torch.tensor([0, 1]),
                         overshoot=-0.1), "overshoot"),
    (lambda: fa.attack_distances(linear_model(torch.eye(2), torch.zeros(2)), torch.rand(2, 2) + 1.5,
                                 torch.tensor([0, 1])), "x"),
    (lambda: fa.attack_distances(linear_model(torch.eye(2), torch.zeros(2)), torch.rand(2, 2),
                                 torch.tensor([0, 1]), attacks=("fgsm",)), "attacks"),
    (lambda: fa.attack_distances(linear_model(torch.eye(2), torch.zeros(2)), torch.rand(2, 2),
                                 torch.tensor([0, 1]), attacks=()), "attacks"),
    (lambda: fa.bias_interval(torch.tensor([0.1, 0.2]), torch.tensor([0, 1]), level=1.5), "level"),
    (lambda: fa.bias_regularized_model(init="scratch"), "init"),
])
def test_bad_input_names_the_argument(call, name):
    with pytest.raises((ValueError, TypeError), match=name):
        call()
