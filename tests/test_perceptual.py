"""LPIPS is a bounded pseudo-distance with the stated closed form; the perceptual attacks stay in
their LPIPS budget and beat random noise of the same size; PAT helps against them; the flow
attack moves pixels by at most its budget."""

import math

import pytest
import torch
import torch.nn.functional as F

import robustlab as rl
from robustlab import perceptual as P
from robustlab.attacks import spatial
from robustlab.perceptual import attacks as PA
from robustlab.perceptual.lpips import LPIPS


def _small_cnn(seed, width=8):
    return rl.models.build("cnn", "digits", width=width, seed=seed)


@pytest.fixture(scope="module")
def digits():
    train, test = rl.data.load("digits")
    return train, rl.data.subset(test, 120, seed=0)


@pytest.fixture(scope="module")
def dist(digits):
    """A fixed LPIPS net: a small CNN trained briefly on the digits, then frozen."""
    train, _ = digits
    net = _small_cnn(1)
    rl.train.fit(net, train, epochs=4, lr=3e-3, seed=1, progress=False)
    return LPIPS(net.eval().requires_grad_(False)).eval()


@pytest.fixture(scope="module")
def classifier(digits):
    train, _ = digits
    model = _small_cnn(0)
    rl.train.fit(model, train, epochs=6, lr=3e-3, seed=0, progress=False)
    return model.eval()


# ----------------------------------------------------------------------------- LPIPS


def test_lpips_is_zero_on_equal_inputs_symmetric_and_bounded(dist, digits):
    _, (x, _) = digits
    other = x.flip(0)
    assert torch.equal(dist(x, x), torch.zeros(len(x)))
    assert torch.allclose(dist(x, other), dist(other, x), atol=1e-6)
    d = dist(x, torch.rand_like(x))
    assert bool((d > 0).all()) and bool((d <= 2 * math.sqrt(len(dist.layers)) + 1e-5).all())
    assert torch.allclose(dist.layer_distances(x, other).sum(1), dist(x, other) ** 2, rtol=1e-4)
    c = torch.rand_like(x)
    assert bool((dist(x, c) <= dist(x, other) + dist(other, c) + 1e-5).all()), "the triangle inequality"


def test_lpips_has_the_closed_form_with_an_identity_feature_layer():
    torch.manual_seed(0)
    x1, x2 = torch.rand(4, 3, 5, 6), torch.rand(4, 3, 5, 6)
    ident = torch.nn.Sequential(torch.nn.Identity())
    unit = lambda v: v / (v.norm(dim=1, keepdim=True) + 1e-10)  # noqa: E731
    expected = ((unit(x1) - unit(x2)) ** 2).sum(1).mean((1, 2)).sqrt()
    assert torch.allclose(LPIPS(ident, layers=(0,))(x1, x2), expected, atol=1e-6)
    # without normalization and averaging it is the plain L2 distance of the pixels
    raw = LPIPS(ident, layers=(0,), normalize=False, spatial_average=False)
    assert torch.allclose(raw(x1, x2), (x1 - x2).flatten(1).norm(dim=1), atol=1e-6)
    # averaging alone divides the squared distance by the number of positions
    avg = LPIPS(ident, layers=(0,), normalize=False)
    assert torch.allclose(avg(x1, x2), (x1 - x2).flatten(1).norm(dim=1) / math.sqrt(30), atol=1e-6)


def test_the_linearized_distance_approaches_lpips_for_small_moves(dist, digits):
    _, (x, _) = digits
    x0 = x[:8].clamp(0.05, 0.95)
    v = torch.randn_like(x0)
    v = v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    errors = []
    for t in (1e-1, 1e-2, 1e-3):
        jv = torch.func.jvp(dist.embed, (x0,), (t * v,))[1].norm(dim=1)
        d = dist(x0, (x0 + t * v).clamp(0, 1))
        errors.append(float(((jv - d).abs() / d).median()))
    assert errors[2] < errors[0] and errors[2] < 0.05, errors


def test_the_fixed_distance_repr_fingerprints_its_weights_and_self_bound_shares_the_model():
    net = _small_cnn(3, width=4)
    a = repr(LPIPS(net))
    with torch.no_grad():
        net[1].weight.add_(1.0)
    assert a != repr(LPIPS(net)) and "SmallCNN@" in a
    model = _small_cnn(4, width=4)
    own = LPIPS.self_bound(model)
    assert own.net is model and "net=self" in repr(own)


# ----------------------------------------------------------------------------- projection


def test_projection_lands_inside_the_ball_and_keeps_inside_points(dist, digits):
    _, (x, _) = digits
    x = x[:40]
    far = (x + 0.4 * torch.randn_like(x)).clamp(0, 1)
    near = (x + 0.002 * torch.randn_like(x)).clamp(0, 1)
    eps = 0.2
    assert bool((dist(x, far) > eps).all()) and bool((dist(x, near) < eps).all())
    for method in PA.PROJECTIONS:
        z = P.project(dist, x, far, eps, method=method)
        assert bool((dist(x, z) <= eps).all()) and 0 <= float(z.min()) and float(z.max()) <= 1
        assert float(dist(x, z).mean()) > 0.5 * eps, "the projection should not collapse onto x"
        assert torch.equal(P.project(dist, x, near, eps, method=method), near)


def test_conjugate_gradient_solves_a_positive_definite_system_in_n_steps():
    torch.manual_seed(0)
    n = 6
    a = torch.randn(3, n, n, dtype=torch.float64)
    a = a @ a.transpose(1, 2) + 0.5 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(3, n, dtype=torch.float64)
    sol = PA._cg(lambda v: (a @ v[..., None])[..., 0], b, n)
    assert torch.allclose(a @ sol[..., None], b[..., None], atol=1e-8)


# ----------------------------------------------------------------------------- attacks


@pytest.mark.parametrize("name", ["ppgd", "lpa", "fast_lpa"])
def test_attacks_stay_in_their_lpips_budget_and_leave_the_model_alone(name, dist, classifier, digits):
    _, (x, y) = digits
    x, y = x[:48], y[:48]
    attack = getattr(P, name)
    kw = dict(steps=5) if name != "lpa" else dict(steps=5, rounds=2)
    classifier.train()
    x_adv = attack(classifier, x, y, eps=0.3, lpips=dist, **kw)
    assert classifier.training, "the model's mode is restored"
    assert all(p.grad is None for p in classifier.parameters()), "no parameter gradients"
    classifier.eval()
    assert x_adv.shape == x.shape and 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
    assert bool((dist(x, x_adv) <= 0.3 + 1e-6).all())
    assert float((x_adv - x).abs().max()) > 0, "the attack moved"
    assert torch.equal(attack(classifier, x, y, eps=0.0, lpips=dist, **kw), x)


def test_fast_lpa_without_projection_is_the_soft_bound_of_training(dist, classifier, digits):
    _, (x, y) = digits
    x, y = x[:48], y[:48]
    soft = dist(x, P.fast_lpa(classifier, x, y, eps=0.2, lpips=dist, steps=10, project=False))
    assert float(soft.max()) > 0.2, "the soft bound is exceeded somewhere"
    stiff = dist(x, P.fast_lpa(classifier, x, y, eps=0.2, lpips=dist, steps=10, lam=1e4, project=False))
    assert float(stiff.median()) < float(soft.median()), "a larger lambda pulls the iterates towards the ball"
    hard = dist(x, P.fast_lpa(classifier, x, y, eps=0.2, lpips=dist, steps=10))
    assert bool((hard <= 0.2).all())


def test_perceptual_attacks_beat_random_noise_of_the_same_lpips_size(dist, classifier, digits):
    _, data = digits
    eps = 0.4
    noisy = P.random_perturbation(dist, data[0], eps, seed=0)
    d_noise = dist(data[0], noisy)
    assert bool((d_noise <= eps).all()) and float(d_noise.median()) > 0.9 * eps, "the noise uses the budget"
    acc_noise = rl.train.evaluate(classifier, (noisy, data[1]))
    acc_ppgd = rl.attacks.robust_accuracy(classifier, data, P.ppgd, eps=eps, lpips=dist, steps=10, progress=False)
    acc_lpa = rl.attacks.robust_accuracy(classifier, data, P.lpa, eps=eps, lpips=dist, steps=10, rounds=3,
                                         progress=False)
    assert acc_noise > 0.8, acc_noise
    assert acc_ppgd < acc_noise - 0.4 and acc_lpa < acc_noise - 0.4, (acc_noise, acc_ppgd, acc_lpa)


def test_lpa_accuracy_does_not_grow_with_the_budget(dist, classifier, digits):
    _, data = digits
    clean = rl.train.evaluate(classifier, data)
    accs = [rl.attacks.robust_accuracy(classifier, data, P.lpa, eps=e, lpips=dist, steps=8, rounds=3,
                                       progress=False) for e in (0.0, 0.1, 0.2, 0.4)]
    assert accs[0] == pytest.approx(clean)
    assert all(b <= a + 0.03 for a, b in zip(accs, accs[1:])), accs
    assert accs[-1] < accs[0] - 0.3, accs


def test_a_ppgd_step_moves_the_linearized_distance_by_eta(dist, classifier, digits):
    _, (x, y) = digits
    x = x[:16]
    eta = 0.05
    z = PA._start(x, torch.Generator().manual_seed(0))
    zr = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(PA.margin_loss(classifier(zr), y[:16]).sum(), zr)
    _, vjp_fn = torch.func.vjp(dist.embed, z)
    jtj = lambda v: vjp_fn(torch.func.jvp(dist.embed, (z,), (v,))[1])[0]  # noqa: E731
    delta = PA._cg(jtj, g, 5)
    live = g.flatten(1).norm(dim=1) >= 1e-4  # ppgd leaves the others (margin already at its cap)
    assert int(live.sum()) >= 8
    delta, g, z = delta[live], g[live], z[live]
    jd = torch.func.jvp(dist.embed, (z,), (delta,))[1].norm(dim=1)
    step = delta * (eta / jd).view(-1, 1, 1, 1)
    reached = torch.func.jvp(dist.embed, (z,), (step,))[1].norm(dim=1)
    assert torch.allclose(reached, torch.full_like(reached, eta), rtol=1e-4)
    # the step ascends the loss: its inner product with the gradient is positive
    assert bool(((step * g).flatten(1).sum(1) > 0).all())


# ----------------------------------------------------------------------------- PAT


def test_pat_loss_leaves_misclassified_inputs_clean():
    model = _small_cnn(5, width=4)
    x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        wrong = (model(x).argmax(1) + 1) % 10
    loss, logits = P.PATLoss(eps=0.5, steps=2)(model, x, wrong)
    with torch.no_grad():
        assert torch.allclose(logits, model(x)) and torch.isclose(loss, F.cross_entropy(model(x), wrong))


def test_pat_raises_accuracy_against_perceptual_attacks_over_standard_training(dist, classifier, digits):
    train, data = digits
    pat = _small_cnn(0)
    rl.train.fit(pat, train, epochs=6, lr=3e-3, seed=0, progress=False,
                 loss_fn=P.PATLoss(eps=0.4, lpips=dist, steps=3))
    pat.eval()
    for attack, kw in ((P.ppgd, dict(steps=10)), (P.lpa, dict(steps=10, rounds=3))):
        std_acc = rl.attacks.robust_accuracy(classifier, data, attack, eps=0.25, lpips=dist, progress=False, **kw)
        pat_acc = rl.attacks.robust_accuracy(pat, data, attack, eps=0.25, lpips=dist, progress=False, **kw)
        assert pat_acc > std_acc + 0.15, (attack.__name__, std_acc, pat_acc)


# ----------------------------------------------------------------------------- the flow attack


def test_an_integer_flow_is_a_shift_with_zeros_entering():
    x = torch.rand(2, 1, 5, 5)
    f = torch.zeros(2, 2, 5, 5)
    f[:, 0] = 1.0  # read one row below: the image moves up
    expected = torch.cat([x[:, :, 1:], torch.zeros(2, 1, 1, 5)], dim=2)
    assert torch.allclose(spatial.warp(x, f), expected, atol=1e-6)
    assert torch.allclose(spatial.warp(x, torch.zeros_like(f)), x, atol=1e-6)


def test_the_flow_attack_stays_in_budget_and_beats_random_flows(classifier, digits):
    _, (x, y) = digits
    eps = 0.3
    x_adv, f = spatial.flow(classifier, x, y, eps=eps, steps=20, return_flow=True)
    assert float(f.abs().max()) <= eps + 1e-6 and torch.allclose(x_adv, spatial.warp(x, f), atol=1e-6)
    assert 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
    gen = torch.Generator().manual_seed(0)
    rand_f = (torch.rand(f.shape, generator=gen) * 2 - 1).sign() * eps
    acc_random = rl.train.evaluate(classifier, (spatial.warp(x, rand_f), y))
    acc_attack = rl.train.evaluate(classifier, (x_adv, y))
    assert acc_attack < acc_random - 0.2, (acc_random, acc_attack)
    assert torch.equal(spatial.flow(classifier, x, y, eps=0.0), x)


# ----------------------------------------------------------------------------- bad input


def test_bad_arguments_name_the_argument(dist, classifier, digits):
    _, (x, y) = digits
    x, y = x[:4], y[:4]
    with pytest.raises(ValueError, match="eps"):
        P.ppgd(classifier, x, y, eps=-0.1, lpips=dist)
    with pytest.raises(TypeError, match="lpips must be"):
        P.lpa(classifier, x, y, eps=0.1, lpips="alexnet")
    with pytest.raises(ValueError, match="kappa"):
        P.ppgd(classifier, x, y, eps=0.1, lpips=dist, kappa=0)
    with pytest.raises(ValueError, match="projection"):
        P.lpa(classifier, x, y, eps=0.1, lpips=dist, projection="exact")
    with pytest.raises(ValueError, match="steps"):
        P.fast_lpa(classifier, x, y, eps=0.1, lpips=dist, steps=0)
    with pytest.raises(ValueError, match=r"x must have values in \[0, 1\]"):
        P.ppgd(classifier, x * 2, y, eps=0.1, lpips=dist)
    with pytest.raises(ValueError, match="x1 and x2 must have the same shape"):
        dist(x, x[:2])
    with pytest.raises(ValueError, match="layers must hold indices"):
        LPIPS(_small_cnn(0, width=4), layers=(2, 40))
    with pytest.raises(TypeError, match="net must be an nn.Sequential"):
        LPIPS(torch.nn.Module())
    with pytest.raises(TypeError, match="lpips must be an LPIPS distance or 'self'"):
        P.PATLoss(eps=0.1, lpips="net")
    with pytest.raises(ValueError, match="model is required"):
        P.random_perturbation("self", x, 0.1)
    with pytest.raises(ValueError, match="flow_field must have shape"):
        spatial.warp(x, torch.zeros(4, 2, 3, 3))
    with pytest.raises(ValueError, match="eps"):
        spatial.flow(classifier, x, y, eps=-1.0)
