"""Curvature bounds, the curvature certificate (CRC), CRT and low-curvature activations.

The bounds are checked against exact Hessians from autograd, the certificate against a
brute-force search of the boundary in two dimensions and against strong attacks on the
digits, and the runner-up shortcut of the reference code is shown to overclaim.
"""

import math

import pytest
import torch
from torch import nn

import robustlab as rl
from robustlab.certificates import UNITS
from robustlab.lipschitz import curvature as C


def small_net(kind="softplus", depth=1, d=4, hidden=10, k=3, beta=1.0, seed=0, scale=1.0):
    """A float64 Normalize/Flatten/(Linear/activation)^depth/Linear network on d inputs."""
    torch.manual_seed(seed)
    layers = [rl.models.Normalize((0.3,), (0.4,)), nn.Flatten()]
    n = d
    for _ in range(depth):
        layers += [nn.Linear(n, hidden), C.activation(kind, beta)]
        n = hidden
    layers.append(nn.Linear(n, k))
    net = nn.Sequential(*layers).double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return net


def pair_hessians(net, x, k):
    """Exact Hessians (k, d, d) of every logit at one flattened input x (d,)."""
    return torch.stack([torch.autograd.functional.hessian(lambda v, i=i: net(v[None])[0, i], x) for i in range(k)])


# --------------------------------------------------------------------------- activations


@pytest.mark.parametrize("module", [C.Softplus(1.0), C.Softplus(5.0), C.SiLU(1.0), C.SiLU(3.0), nn.Sigmoid(),
                                    nn.Tanh(), nn.Softplus(beta=2.0), nn.SiLU()])
def test_activation_constants_bound_the_derivatives_and_are_attained(module):
    c = C.activation_constants(module)
    x = torch.linspace(-30, 30, 600_001, dtype=torch.float64, requires_grad=True)
    (d1,) = torch.autograd.grad(module(x).sum(), x, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), x)
    d1 = d1.detach()
    assert d1.abs().max() <= c.g + 1e-9
    assert d2.min() >= c.h_low - 1e-9 and d2.max() <= c.h_high + 1e-9
    # the constants are the true extremes (up to the rounding of SiLU's numerical constants)
    assert d1.abs().max() >= c.g - 2e-4
    assert d2.max() >= c.h_high - 1e-6
    assert d2.min() <= c.h_low + 1e-4 * max(1.0, abs(c.h_low) * 100)


def test_curvature_of_the_families_is_beta_over_4_and_beta_over_2():
    assert C.max_curvature(C.Softplus(2.0)) == 0.5
    assert C.max_curvature(C.SiLU(2.0)) == 1.0
    assert C.max_curvature(nn.ReLU()) == math.inf


def test_activations_are_continuous_and_the_jumping_softplus_is_refused():
    act = C.Softplus(1.0)
    for switch in (20.0, 1.0):  # torch's switch to the identity, and the reference code's threshold
        left, right = act(torch.tensor(switch - 1e-9, dtype=torch.float64)), act(torch.tensor(switch + 1e-9,
                                                                                              dtype=torch.float64))
        assert abs(float(right - left)) < 1e-6
    with pytest.raises(ValueError, match="threshold"):
        C.activation_constants(nn.Softplus(threshold=1))
    assert torch.allclose(C.Softplus(3.0)(torch.linspace(-3, 3, 7)), nn.Softplus(beta=3.0)(torch.linspace(-3, 3, 7)))
    assert torch.allclose(C.SiLU(1.0)(torch.linspace(-3, 3, 7)), nn.SiLU()(torch.linspace(-3, 3, 7)))


# --------------------------------------------------------------------------- curvature bounds


@pytest.mark.parametrize("kind,depth", [("softplus", 1), ("sigmoid", 1), ("tanh", 1), ("silu", 1),
                                        ("softplus", 2), ("tanh", 2), ("sigmoid", 3), ("silu", 2)])
def test_curvature_bounds_contain_every_exact_hessian_eigenvalue(kind, depth):
    k = 3
    net = small_net(kind, depth, k=k, beta=2.0, seed=depth, scale=1.5)
    b = C.curvature_bounds(net)
    gen = torch.Generator().manual_seed(1)
    lo_seen = torch.full((k, k), math.inf, dtype=torch.float64)
    hi_seen = torch.full((k, k), -math.inf, dtype=torch.float64)
    for _ in range(150):
        x = torch.randn(4, generator=gen, dtype=torch.float64) * 2
        hs = pair_hessians(net, x, k)
        for y in range(k):
            for t in range(k):
                ev = torch.linalg.eigvalsh(hs[y] - hs[t])
                lo_seen[y, t] = min(lo_seen[y, t], ev[0])
                hi_seen[y, t] = max(hi_seen[y, t], ev[-1])
    assert (lo_seen >= b.lower - 1e-10).all() and (hi_seen <= b.upper + 1e-10).all()
    if depth == 1:  # Theorem 3 is close to tight: a bound twice too small would fail above
        off = ~torch.eye(k, dtype=torch.bool)
        assert (hi_seen[off] / b.upper[off]).max() > 0.5


def test_the_deep_bound_is_nearly_attained_in_one_dimension():
    # z2 = 10 softplus(2x) - 50 switches on where softplus(2x) is already linear (slope 2), so
    # f'' = sigma''(z2) (10 * 2)^2 + ... nearly reaches the second layer's term rho_1^2 w2^2 h = 4 * 100 / 4
    net = nn.Sequential(nn.Linear(1, 1), C.Softplus(), nn.Linear(1, 1), C.Softplus(), nn.Linear(1, 2)).double()
    with torch.no_grad():
        for layer, w, b in ((net[0], 2.0, 0.0), (net[2], 10.0, -50.0)):
            layer.weight.fill_(w)
            layer.bias.fill_(b)
        net[4].weight.copy_(torch.tensor([[1.0], [0.0]]))
        net[4].bias.zero_()
    bound = C.curvature_bounds(net)
    x = torch.linspace(-5, 10, 30_001, dtype=torch.float64, requires_grad=True)
    f = net(x[:, None])
    (d1,) = torch.autograd.grad((f[:, 0] - f[:, 1]).sum(), x, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), x)
    assert d2.max() <= bound.upper[0, 1] and d2.min() >= bound.lower[0, 1]
    assert d2.max() >= 0.85 * bound.upper[0, 1]


def test_the_gradient_of_the_margin_is_k_lipschitz_far_apart():
    net = small_net("tanh", 3, seed=4, scale=1.2)
    mag = C.curvature_bounds(net).magnitude
    gen = torch.Generator().manual_seed(0)
    x, x2 = torch.randn(300, 4, generator=gen, dtype=torch.float64) * 3, torch.randn(300, 4, generator=gen,
                                                                                    dtype=torch.float64) * 3
    sn = C.smooth_network(net, (4,), dtype=torch.float64)
    for y, t in [(0, 1), (2, 0)]:
        yy, tt = torch.full((300,), y), torch.full((300,), t)
        _, g1 = sn.margin_and_grad(x, yy, tt)
        _, g2 = sn.margin_and_grad(x2, yy, tt)
        assert ((g1 - g2).norm(dim=1) <= mag[y, t] * (x - x2).norm(dim=1) + 1e-10).all()


def test_power_bounds_are_lower_estimates_of_the_exact_ones():
    net = small_net("softplus", 1, hidden=30, seed=2)
    pairs = (torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0]))
    exact = C.curvature_bounds(net, pairs=pairs, method="eigh")
    power = C.curvature_bounds(net, pairs=pairs, method="power", iters=200)
    assert (power.upper <= exact.upper + 1e-9).all() and (power.lower >= exact.lower - 1e-9).all()
    assert torch.allclose(power.upper, exact.upper, rtol=1e-3)


def test_the_normalization_is_part_of_the_bound():
    net = small_net("softplus", 1)
    bare = nn.Sequential(*list(net)[1:])  # the same layers without Normalize (std 0.4)
    ratio = C.curvature_bounds(net).magnitude[0, 1] / C.curvature_bounds(bare).magnitude[0, 1]
    assert ratio == pytest.approx(1 / 0.4 ** 2)


# --------------------------------------------------------------------------- the certificate


def linear_through_softplus(a, c):
    """z = a (softplus(x) - softplus(-x)) + c = a x + c exactly, built from a softplus network."""
    d = a.shape[1]
    net = nn.Sequential(nn.Flatten(), nn.Linear(d, 2 * d), C.Softplus(1.0), nn.Linear(2 * d, a.shape[0])).double()
    with torch.no_grad():
        net[1].weight.copy_(torch.cat([torch.eye(d), -torch.eye(d)]).double())
        net[1].bias.zero_()
        net[3].weight.copy_(torch.cat([a, -a], 1).double())
        net[3].bias.copy_(c.double())
    return net


def test_with_zero_curvature_the_dual_gives_the_exact_linear_distance():
    gen = torch.Generator().manual_seed(0)
    a, c = torch.randn(3, 5, generator=gen, dtype=torch.float64), torch.randn(3, generator=gen, dtype=torch.float64)
    net = C.smooth_network(linear_through_softplus(a, c), (5,), dtype=torch.float64)
    x0 = torch.rand(20, 5, generator=gen, dtype=torch.float64)
    z = x0 @ a.T + c
    y, t = z.argmax(1), z.argmin(1)
    zero = torch.zeros(20, dtype=torch.float64)
    radius, _, _ = C.crc_distances(net, x0, y, t, zero, zero)
    exact = (z.gather(1, y[:, None]) - z.gather(1, t[:, None])).squeeze(1) / (a[y] - a[t]).norm(dim=1)
    assert torch.allclose(radius, exact, rtol=1e-6)


def boundary_distance_2d(model, x0, label, target=None, n_angles=360, r_max=6.0, n_radii=300):
    """Brute force: the smallest radius along any of n_angles rays where the prediction leaves
    ``label`` (or, with ``target``, where z_label <= z_target), refined by bisection."""
    theta = torch.linspace(0, 2 * math.pi, n_angles + 1, dtype=torch.float64)[:-1]
    dirs = torch.stack([theta.cos(), theta.sin()], 1)
    radii = torch.linspace(0, r_max, n_radii + 1, dtype=torch.float64)[1:]

    def bad(points):
        with torch.no_grad():
            z = model(points)
        if target is None:
            return z.argmax(-1) != label
        return z[..., label] <= z[..., target]

    pts = x0 + radii[None, :, None] * dirs[:, None, :]  # (angles, radii, 2)
    hit = bad(pts.view(-1, 2)).view(n_angles, n_radii)
    any_hit = hit.any(1)
    if not any_hit.any():
        return math.inf
    first = hit.float().argmax(1)
    hi = radii[first]
    lo = torch.where(first > 0, radii[(first - 1).clamp_min(0)], torch.zeros_like(hi))
    for _ in range(30):
        mid = (lo + hi) / 2
        b = bad(x0 + mid[:, None] * dirs)
        hi, lo = torch.where(b, mid, hi), torch.where(b, lo, mid)
    return float(hi[any_hit].min())


@pytest.mark.parametrize("kind,seed", [("softplus", 0), ("tanh", 1), ("sigmoid", 2)])
def test_crc_never_exceeds_the_brute_force_distance_in_two_dimensions(kind, seed):
    torch.manual_seed(seed)
    scale = {"softplus": 3.0, "tanh": 2.0, "sigmoid": 6.0}[kind]
    model = nn.Sequential(nn.Linear(2, 16), C.activation(kind), nn.Linear(16, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    x0s = torch.rand(12, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    cert = C.crc_certify(model, x0s, steps=40, inner=40)
    cheap = C.crc_certify(model, x0s, steps=6, inner=1)  # far from converged: the gradient term keeps it sound
    ratios = []
    for i in range(12):  # (the boundaries here are all closer than 6: the search never returns inf)
        pred = int(cert.prediction[i])
        true = boundary_distance_2d(model, x0s[i], pred)
        assert float(cert.radius[i]) <= true + 1e-7 and float(cheap.radius[i]) <= true + 1e-7
        ratios.append(float(cert.radius[i]) / true)
        for t in range(3):  # each targeted bound is below the distance to its own boundary z_y = z_t
            if t != pred:
                assert float(cert.per_class[i, t]) <= boundary_distance_2d(model, x0s[i], pred, t) + 1e-7
    # not vacuous: the bound uses only global curvature, tightest for softplus (sigma'' >= 0)
    assert sorted(ratios)[len(ratios) // 2] > (0.7 if kind == "softplus" else 0.2)


def test_the_runner_up_certificate_overclaims_where_the_all_class_one_does_not():
    # z0 = 3, z1 = 2 (runner-up at x0), z2 = 1 + 10 (x_0 - 0.5): class 2 wins beyond x_0 = 0.7
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0], [10.0, 0.0]], dtype=torch.float64)
    c = torch.tensor([3.0, 2.0, -4.0], dtype=torch.float64)
    model = linear_through_softplus(a, c)
    x0 = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    true = 0.2
    shortcut = C.crc_certify(model, x0, targets="runner-up")
    full = C.crc_certify(model, x0)
    assert shortcut.method == "crc-runner-up" and full.method == "crc"
    assert float(shortcut.radius[0]) > 10 * true  # claims far more than holds
    assert float(full.radius[0]) <= true + 1e-9 and float(full.radius[0]) > 0.5 * true
    assert int(full.nearest[0]) == 2
    x_adv = x0 + torch.tensor([[true * 1.01, 0.0]], dtype=torch.float64)  # inside the shortcut's radius
    assert int(model(x_adv).argmax(1)) == 2


@pytest.fixture(scope="module")
def digits_model():
    train, test = rl.data.load("digits")
    model = C.curvature_mlp("digits", hidden=32, seed=0)
    rl.train.fit(model, train, epochs=4, lr=3e-3, loss_fn=C.CRTLoss(gamma=0.01, eps=0.3, steps=5, inner=3),
                 progress=False)
    return model.eval(), rl.data.subset(test, 48, seed=0)


def test_no_attack_succeeds_inside_the_curvature_certificate(digits_model):
    model, (x, y) = digits_model
    cert = C.crc_certify(model, x, y)
    assert cert.unit == UNITS["l2"] and (cert.radius > 0).float().mean() > 0.9
    pred, radius = cert.prediction, cert.radius.float()
    inside = radius * 0.999
    x_pgd = rl.attacks.pgd(model, x, pred, eps=inside, norm="l2", steps=60, restarts=4, seed=0)
    assert (rl.train.predict(model, x_pgd) == pred).all()
    for t in range(10):  # targeted at every class
        keep = pred != t
        x_t = rl.attacks.pgd(model, x[keep], pred[keep], eps=inside[keep], norm="l2", steps=40, seed=1,
                             targets=torch.full((int(keep.sum()),), t), loss="cw")
        assert (rl.train.predict(model, x_t) == pred[keep]).all()
    x_cw = rl.attacks.cw_l2(model, x, pred)
    flipped = rl.train.predict(model, x_cw) != pred
    assert flipped.float().mean() > 0.9
    assert ((x_cw - x).flatten(1).norm(dim=1)[flipped] >= radius[flipped] * (1 - 1e-4)).all()
    x_curv = C.curvature_attack(model, x, pred, eps=float(inside.min()))
    assert (rl.train.predict(model, x_curv) == pred).all()
    # not vacuous: twice the radius, PGD succeeds on most inputs
    x_far = rl.attacks.pgd(model, x, pred, eps=radius * 2, norm="l2", steps=60, restarts=2, seed=0)
    assert (rl.train.predict(model, x_far) != pred).float().mean() > 0.5


def test_the_curvature_attack_finds_the_exact_minimum_of_a_linear_margin():
    gen = torch.Generator().manual_seed(3)
    a, c = torch.randn(3, 6, generator=gen, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    model = linear_through_softplus(a, c)
    x0 = 0.4 + 0.2 * torch.rand(5, 6, generator=gen, dtype=torch.float64)
    y, t = torch.zeros(5, dtype=torch.long), torch.ones(5, dtype=torch.long)
    eps = 0.05  # small enough to stay inside the box
    x_adv = C.curvature_attack(model, x0, y, eps=eps, targets=t)
    f = lambda v: (model(v)[:, 0] - model(v)[:, 1])  # noqa: E731
    expected = f(x0) - eps * (a[0] - a[1]).norm()
    assert ((x_adv - x0).norm(dim=1) <= eps + 1e-9).all()
    assert torch.allclose(f(x_adv), expected, atol=1e-4)


# --------------------------------------------------------------------------- training


def test_crt_loss_adds_gamma_times_the_curvature_of_the_runner_up_pairs():
    model = C.curvature_mlp("digits", hidden=16, seed=0)
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
    base, logits = C.CRTLoss(gamma=0.0, eps=0.0)(model, x, y)
    reg, _ = C.CRTLoss(gamma=0.1, eps=0.0, bound="eigh")(model, x, y)
    t = logits.detach().scatter(1, y[:, None], -math.inf).argmax(1)
    k = C.curvature_bounds(model, (1, 8, 8), pairs=(y, t)).magnitude.mean()
    assert float((reg - base).detach()) == pytest.approx(0.1 * float(k), rel=1e-4)
    reg.backward()  # the regularizer trains the weights
    assert model[2].weight.grad.abs().sum() > 0


def test_crt_model_is_a_cached_smooth_network():
    prev = rl.config.profile()
    assert prev.name == "quick"
    import os
    os.environ["ROBUSTLAB_SMOKE"] = "1"
    try:
        trained = C.crt_model("crt")
        again = C.crt_model("crt")
    finally:
        del os.environ["ROBUSTLAB_SMOKE"]
    assert again.history.from_cache and not trained.history.from_cache
    assert isinstance(trained.model[3], C.Softplus)
    C.smooth_network(trained.model, (1, 8, 8))


def test_low_curvature_study_replaces_every_relu_and_reports_its_curvature(monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_SMOKE", "1")
    model = C.with_activation(rl.models.build("cnn", "digits", width=2), "silu", 2.0)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert sum(isinstance(m, C.SiLU) for m in model.modules()) == 4
    study = C.low_curvature_study((("relu", math.inf), ("softplus", 2.0)))
    table = study.table()
    assert [r["max |sigma''|"] for r in table] == [math.inf, 0.5]
    for row in study.rows:
        assert len(row.records["test_robust"]) == 1 and 0 <= row.final["test_ensemble"] <= 1
    again = C.low_curvature_study((("softplus", 2.0),))
    assert again.rows[0].final == study.rows[1].final


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_refused_with_the_argument_named():
    relu = rl.models.build("mlp", "digits", width=1)
    smooth = C.curvature_mlp("digits", hidden=4)
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(TypeError, match="ReLU"):
        C.crc_certify(relu, x)
    with pytest.raises(ValueError, match="targets"):
        C.crc_certify(smooth, x, targets="largest")
    with pytest.raises(ValueError, match="steps"):
        C.crc_certify(smooth, x, steps=0)
    with pytest.raises(ValueError, match="x"):
        C.crc_certify(smooth, x + 2)
    with pytest.raises(ValueError, match="y"):
        C.crc_certify(smooth, x, torch.tensor([0, 11]))
    with pytest.raises(ValueError, match="bounds"):
        C.crc_certify(smooth, x, bounds=C.curvature_bounds(smooth, (1, 8, 8), method="power"))
    with pytest.raises(ValueError, match="eps"):
        C.curvature_attack(smooth, x, torch.tensor([0, 1]), eps=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        C.CRTLoss(gamma=-1.0)
    with pytest.raises(ValueError, match="method"):
        C.curvature_bounds(smooth, (1, 8, 8), method="svd")
    with pytest.raises(ValueError, match="pairs"):
        C.curvature_bounds(smooth, (1, 8, 8), pairs=(torch.tensor([0, 1]), torch.tensor([1])))
    with pytest.raises(ValueError, match="kind"):
        C.activation("gelu")
    with pytest.raises(ValueError, match="beta"):
        C.Softplus(0.0)
    with pytest.raises(TypeError, match="one activation"):
        C.smooth_network(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3), nn.Sigmoid(), nn.Linear(3, 2)),
                         (2,))
