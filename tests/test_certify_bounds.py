"""Bounds on ReLU networks are sound (no input of the threat set escapes them), ordered as
the theory says (IBP <= LP of the relaxation <= exact MILP <= every reached margin; the
dual bound <= LP, and equal to it with optimized slopes), and certificates are never
contradicted by an attack."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import robustlab as rl
from robustlab.certify import bounds as B


def tiny_net(seed=0, d_in=16, hidden=(12, 10), n_classes=4, normalize=True):
    torch.manual_seed(seed)
    layers = [rl.models.Normalize([0.3], [0.4])] if normalize else []
    layers.append(nn.Flatten())
    width = d_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers).eval()


@pytest.fixture(scope="module")
def case():
    model = tiny_net()
    torch.manual_seed(1)
    x = torch.rand(4, 1, 4, 4)
    x[0, 0, 0] = 0.0  # pixels at the edge of the box: the threat set is clipped there
    x[1, 0, 1] = 1.0
    y = torch.tensor([0, 1, 2, 3])
    return model, x, y, 0.06


def reached_margins(model, x, y, eps, n=4000, seed=0):
    """Margins z_y - z_j at many points of the threat set: random points, random corners and
    targeted PGD towards every rival class; returns the smallest margin seen (B, K)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand((n,) + x.shape, generator=gen) * 2 - 1
    corners = torch.randint(0, 2, (n,) + x.shape, generator=gen).float() * 2 - 1
    points = [(x[None] + eps * noise).clamp(0, 1), (x[None] + eps * corners).clamp(0, 1)]
    for j in range(model[-1].out_features):
        targets = torch.full_like(y, j)
        keep = y != j
        adv = rl.attacks.pgd(model, x[keep], y[keep], eps=eps, steps=40, targets=targets[keep], loss="cw", seed=j)
        full = x.clone()
        full[keep] = adv
        points.append(full[None])
    xs = torch.cat(points)
    with torch.no_grad():
        z = model(xs.flatten(0, 1)).view(xs.shape[0], x.shape[0], -1)
    margins = z.gather(2, y.view(1, -1, 1).expand(xs.shape[0], -1, 1)) - z
    return margins.amin(0)


# --------------------------------------------------------------------------- the network


def test_relu_network_folds_the_normalization_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(rl.models.Normalize([0.2, 0.5, 0.7], [0.3, 0.2, 0.6]), nn.Flatten(),
                          nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    x = torch.rand(7, 3, 2, 2)
    net = B.relu_network(model, (3, 2, 2))
    assert torch.allclose(net.forward(x.flatten(1)), model(x), atol=1e-6)


def test_unsupported_layers_are_refused_by_name():
    with pytest.raises(TypeError, match="Conv2d"):
        B.relu_network(rl.models.build("cnn", "digits", width=2), (1, 8, 8))
    with pytest.raises(TypeError, match="last layer of model must be Linear"):
        B.relu_network(nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.ReLU()), (4,))
    with pytest.raises(TypeError, match="two Linear layers in a row"):
        B.relu_network(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), (4,))
    with pytest.raises(TypeError, match="Tanh"):
        B.certify(nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)), torch.rand(2, 4), None, 0.1)


# --------------------------------------------------------------------------- soundness


def test_interval_bounds_contain_every_layer_at_sampled_inputs(case):
    model, x, y, eps = case
    bounds = B.interval_bounds(model, x, eps)
    xs = (x[None] + eps * (torch.rand((3000,) + x.shape) * 2 - 1)).clamp(0, 1).flatten(0, 1)
    net = B.relu_network(model, (1, 4, 4))
    a = xs.flatten(1)
    for k, (w, b) in enumerate(zip(net.weights, net.biases)):
        z = (a @ w.T + b).view(3000, x.shape[0], -1)
        assert (z >= bounds.lower[k] - 1e-5).all() and (z <= bounds.upper[k] + 1e-5).all(), f"layer {k + 1}"
        a = z.clamp_min(0).flatten(0, 1)


@pytest.mark.parametrize("method,kw", [("ibp", {}), ("dual", {}), ("dual", {"bounds": "ibp"}),
                                       ("dual", {"alpha_steps": 30}), ("lp", {"bounds": "ibp"}), ("lp", {}),
                                       ("lp", {"bounds": "lp"})])
def test_margin_lower_bounds_hold_at_every_reached_point(case, method, kw):
    model, x, y, eps = case
    lower = B.margin_bounds(model, x, y, eps, method, progress=False, **kw)
    reached = reached_margins(model, x, y, eps)
    assert (lower <= reached + 1e-5).all(), (lower - reached).max()


def test_the_bounds_are_ordered_as_the_relaxations_are_nested(case):
    model, x, y, eps = case
    ibp = B.margin_bounds(model, x, y, eps, "ibp")
    lp_ibp = B.margin_bounds(model, x, y, eps, "lp", bounds="ibp", progress=False)
    lp_dual = B.margin_bounds(model, x, y, eps, "lp", bounds="dual", progress=False)
    lp_lp = B.margin_bounds(model, x, y, eps, "lp", bounds="lp", progress=False)
    kw_ibp = B.margin_bounds(model, x, y, eps, "dual", bounds="ibp")
    opt_ibp = B.margin_bounds(model, x, y, eps, "dual", bounds="ibp", alpha_steps=150)
    exact = torch.tensor([[B.milp_margin(model, x[i:i + 1], int(y[i]), j, eps) if j != int(y[i]) else 0.0
                           for j in range(4)] for i in range(4)])
    tol = 1e-5
    assert (lp_ibp >= ibp - tol).all(), "the LP over the triangles is never looser than IBP"
    assert (lp_dual >= lp_ibp - tol).all() and (lp_lp >= lp_ibp - tol).all(), "tighter l, u: tighter LP"
    assert (kw_ibp <= lp_ibp + tol).all(), "weak duality: the dual bound never exceeds the LP value"
    assert (opt_ibp >= kw_ibp - tol).all()
    assert torch.allclose(opt_ibp, lp_ibp, atol=2e-3), "optimized slopes reach the LP optimum"
    assert (exact >= lp_lp - tol).all(), "the exact minimum is above every relaxation"
    assert (lp_ibp < exact - 1e-3).any(), "the relaxation is not exact here (the test has unstable ReLUs)"
    assert (B.interval_bounds(model, x, eps).unstable()[0] > 0).all()


def test_two_dimensional_net_against_brute_force_on_a_grid():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x, y, eps = torch.tensor([[0.45, 0.6]]), torch.tensor([1]), 0.15
    n = 601
    g = torch.linspace(-eps, eps, n)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).view(-1, 2) + x
    grid = grid.clamp(0, 1)
    with torch.no_grad():
        z = model(grid)
    grid_min = (z[:, 1:2] - z).amin(0)
    exact = torch.tensor([B.milp_margin(model, x, 1, j, eps) if j != 1 else 0.0 for j in range(3)])
    # the net is Lipschitz: the grid misses the minimum by at most L * (half a grid step * sqrt(2))
    lip = 1.0
    for layer in model:
        if isinstance(layer, nn.Linear):
            lip *= float(torch.linalg.matrix_norm(layer.weight.detach(), 2))
    slack = 2 * lip * (2 * eps / (n - 1)) * math.sqrt(2) / 2
    assert (exact <= grid_min + 1e-6).all() and (grid_min <= exact + slack).all(), (exact, grid_min, slack)
    for method in ("ibp", "dual", "lp"):
        lower = B.margin_bounds(model, x, y, eps, method, progress=False)[0]
        assert (lower <= exact + 1e-5).all(), method


def test_at_zero_radius_every_bound_is_the_margin_itself(case):
    model, x, y, _ = case
    z = model(x).detach()
    margins = z.gather(1, y[:, None]) - z
    for method in ("ibp", "dual", "lp"):
        assert torch.allclose(B.margin_bounds(model, x, y, 0.0, method, progress=False), margins, atol=1e-5), method


# --------------------------------------------------------------------------- certificates


@pytest.fixture(scope="module")
def standard_mlp():
    model, _ = rl.train.trained_model("digits", "mlp", width=4, progress=False)
    _, test = rl.data.load("digits")
    return model, rl.data.subset(test, 150, seed=0)


def test_an_input_that_pgd_breaks_is_never_certified(standard_mlp):
    model, (x, y) = standard_mlp
    for eps in (0.03, 0.08):
        broken = rl.train.predict(model, rl.attacks.pgd(model, x, y, eps=eps, steps=30, restarts=2, seed=0)) != y
        for method, kw in (("ibp", {}), ("dual", {}), ("dual", {"alpha_steps": 10})):
            cert = B.certify(model, x, y, eps, method, **kw)
            assert not (cert.certified & broken).any(), (eps, method)
        assert broken.any(), "the attack breaks some inputs, so the test can fail"
        assert B.certify(model, x, y, eps, "dual").certified.any(), "and the dual bound certifies some"


def test_certificate_fields_follow_the_contract(standard_mlp):
    model, (x, y) = standard_mlp
    pred = rl.train.predict(model, x)
    for method, eps in (("ibp", 0.01), ("dual", 0.05)):
        cert = B.certify(model, x, y, eps, method)
        assert isinstance(cert, rl.certificates.Certificate)
        assert cert.method == method and cert.unit == rl.certificates.UNITS["linf"] and cert.alpha is None
        assert cert.eps == eps and cert.deterministic
        # the network's own prediction everywhere: a verifier never abstains
        assert torch.equal(cert.prediction, pred) and not cert.abstained.any()
        assert torch.equal(cert.radius, torch.where(cert.certified, torch.tensor(eps, dtype=torch.float64), 0.0))
        assert not (cert.certified & (pred != y)).any(), "where the network predicts another class the radius is 0"
        assert (cert.margin_lower.gather(1, y[:, None]) == 0).all()
        assert cert.certified.any() and not cert.certified.all(), "the test needs both verdicts"
        assert cert.certified_accuracy(y, at=0.0) == pytest.approx(rl.train.evaluate(model, (x, y)))
        assert cert.certified_accuracy(y, at=eps) == pytest.approx(float(cert.certified.float().mean()))
        assert cert.certified_accuracy(y, at=eps) == B.certified_accuracy(model, (x, y), eps, method)
    clean = B.certify(model, x, None, 0.0)  # certifying the model's own predictions at eps 0
    assert clean.certified.all() and torch.equal(clean.prediction, pred)


@pytest.mark.parametrize("method", ["ibp", "dual", "lp"])
def test_at_zero_radius_certified_accuracy_is_the_clean_accuracy(case, method):
    model, x, y, _ = case
    y = y.clone()
    y[0] = rl.train.predict(model, x[:1])[0]  # one input certainly correct
    for eps in (0.0, 0.03):
        cert = B.certify(model, x, y, eps, method, progress=False)
        assert cert.certified_accuracy(y, at=0.0) == pytest.approx(rl.train.evaluate(model, (x, y)))
        assert torch.equal(cert.prediction, rl.train.predict(model, x))
    assert B.certified_accuracy(model, (x, y), 0.0, method, progress=False) == pytest.approx(
        rl.train.evaluate(model, (x, y)))


def test_arguments_are_checked(case):
    model, x, y, eps = case
    with pytest.raises(ValueError, match="eps must be >= 0"):
        B.certify(model, x, y, -0.1)
    with pytest.raises(ValueError, match="method must be one of"):
        B.certify(model, x, y, eps, method="milp")
    with pytest.raises(ValueError, match="norm must be 'linf'"):
        B.certify(model, x, y, eps, norm="l2")
    with pytest.raises(ValueError, match=r"x must have values in \[0, 1\]"):
        B.certify(model, x + 1, y, eps)
    with pytest.raises(ValueError, match="y has 3 labels"):
        B.certify(model, x, y[:3], eps)
    with pytest.raises(ValueError, match="bounds must be one of"):
        B.certify(model, x, y, eps, method="dual", bounds="lp")
    with pytest.raises(ValueError, match="x must hold one input"):
        B.milp_margin(model, x, 0, 1, eps)
    with pytest.raises(ValueError, match=r"kappa must be a probability in \[0, 1\]"):
        B.IBPLoss(eps=0.1, kappa=1.5)
    with pytest.raises(TypeError, match="kappa must be a real number"):
        B.IBPLoss(eps=0.1, kappa=True)
    assert B.IBPLoss(eps=0.1, kappa=np.float32(0.25)).schedule() == (0.1, 0.25)
    assert not hasattr(B, "DEFAULT_EPS")  # the certified radii live in robustlab.config.DEFAULT_EPS


# --------------------------------------------------------------------------- certified training


def test_ibp_loss_schedule_and_worst_case_logits(case):
    model, x, y, eps = case
    loss_fn = B.IBPLoss(eps=0.2, kappa=0.5, warmup=2, ramp=4)
    assert [loss_fn.schedule(t) for t in (0, 1)] == [(0.0, 1.0), (0.0, 1.0)]
    assert loss_fn.schedule(3) == pytest.approx((0.1, 0.75)) and loss_fn.schedule(9) == pytest.approx((0.2, 0.5))
    # kappa = 0: the cross-entropy of the worst-case logits bounds that of every reached point
    robust, _ = B.IBPLoss(eps=eps, kappa=0.0)(model, x, y)
    xs = (x[None] + eps * (torch.rand((500,) + x.shape) * 2 - 1)).clamp(0, 1).flatten(0, 1)
    ce = nn.functional.cross_entropy(model(xs), y.repeat(500), reduction="none").view(500, -1)
    assert float(robust.detach()) >= float(ce.detach().max(0).values.mean()) - 1e-5
    (grad,) = torch.autograd.grad(robust, model[2].weight)
    assert grad.abs().sum() > 0, "the loss trains the model through the bounds"


def test_ibp_training_certifies_what_standard_training_cannot(standard_mlp):
    std, (x, y) = standard_mlp
    model, hist = B.ibp_trained_model("digits", eps=0.1, progress=False, epochs=10, warmup_epochs=1, ramp_epochs=5)
    eps = 0.1
    certified = B.certified_accuracy(model, (x, y), eps, "ibp")
    pgd_acc = rl.train.evaluate(model, (rl.attacks.pgd(model, x, y, eps=eps, steps=20, seed=0), y))
    assert rl.train.evaluate(model, (x, y)) >= 0.85
    assert certified >= 0.4, certified
    assert B.certified_accuracy(std, (x, y), eps, "ibp") <= 0.05
    assert certified <= pgd_acc, "a certified lower bound cannot exceed an attack's upper bound"


def test_dual_loss_bounds_every_reached_point_and_trains_through_the_dual_bound(case):
    model, x, y, eps = case
    loss_fn = B.DualLoss(eps=0.2, kappa=0.5, warmup=2, ramp=4)
    assert [loss_fn.schedule(t) for t in (0, 3, 9)] == [(0.0, 1.0), pytest.approx((0.1, 0.75)),
                                                        pytest.approx((0.2, 0.5))]
    robust, logits = B.DualLoss(eps=eps, kappa=0.0)(model, x, y)
    assert torch.allclose(logits, model(x))
    # the robust term is the cross-entropy of the dual bound's worst-case logits, exactly
    net = B.relu_network(model, tuple(x.shape[1:]))
    lower = B.dual_margin_bounds(net, x.flatten(1), y, eps)
    expected = nn.functional.cross_entropy((-lower).masked_fill(nn.functional.one_hot(y, 4).bool(), 0.0), y)
    assert torch.allclose(robust, expected)
    assert not torch.allclose(robust, B.IBPLoss(eps=eps, kappa=0.0)(model, x, y)[0]), "a different bound"
    # sound: above the cross-entropy at every reached point of the threat set
    worst = reached_margins(model, x, y, eps)
    assert (lower <= worst + 1e-5).all()
    xs = (x[None] + eps * (torch.rand((500,) + x.shape) * 2 - 1)).clamp(0, 1).flatten(0, 1)
    ce = nn.functional.cross_entropy(model(xs), y.repeat(500), reduction="none").view(500, -1)
    assert float(robust.detach()) >= float(ce.detach().max(0).values.mean()) - 1e-5
    (grad,) = torch.autograd.grad(robust, model[2].weight)
    assert grad.abs().sum() > 0, "the loss trains the model through the dual bound"
    clean, _ = B.DualLoss(eps=eps, kappa=1.0)(model, x, y)
    assert torch.allclose(clean, nn.functional.cross_entropy(model(x), y))
    for bad in (dict(eps=-0.1), dict(eps=0.1, kappa=1.5), dict(eps=0.1, warmup=-1)):
        with pytest.raises(ValueError):
            B.DualLoss(**bad)


def test_dual_training_certifies_with_the_dual_bound_and_not_with_ibp(standard_mlp):
    std, (x, y) = standard_mlp
    eps = 0.1
    model, hist = B.dual_trained_model("digits", eps=eps, progress=False, epochs=8, warmup_epochs=1, ramp_epochs=4)
    dual = B.certified_accuracy(model, (x, y), eps, "dual")
    pgd_acc = rl.train.evaluate(model, (rl.attacks.pgd(model, x, y, eps=eps, steps=20, seed=0), y))
    assert rl.train.evaluate(model, (x, y)) >= 0.85
    assert dual >= 0.4, dual
    assert B.certified_accuracy(std, (x, y), eps, "dual") <= 0.2
    assert dual <= pgd_acc, "a certified lower bound cannot exceed an attack's upper bound"
    with pytest.raises(TypeError, match="unknown recipe"):
        B.dual_trained_model("digits", eps=eps, epochz=3)


# --------------------------------------------------------------------------- the exact MILP


def _enumerated_minimum(model, x, y, j, eps):
    """The exact minimum of z_y - z_j over the box by enumerating the activation patterns of
    the unstable ReLUs: on each pattern the network is affine and its region a polytope, so
    the minimum over a region is one LP (HiGHS, float64), and the minimum over all patterns
    is the exact minimum. Returns the minimum and a minimizer."""
    import itertools

    import numpy as np
    from scipy.optimize import linprog

    net = B.relu_network(model, tuple(x.shape[1:]))
    lo, hi = B.input_box(x.flatten(1).double(), eps)
    ibp = B.interval_bounds(model, x, eps)
    weights = [w.detach().double().numpy() for w in net.weights]
    biases = [b.detach().double().numpy() for b in net.biases]
    box = list(zip(lo[0].numpy(), hi[0].numpy()))
    unstable = [np.flatnonzero((l[0].detach().numpy() < 0) & (u[0].detach().numpy() > 0))
                for l, u in zip(ibp.lower[:-1], ibp.upper[:-1])]
    active = [(l[0].detach().numpy() >= 0) for l in ibp.lower[:-1]]
    n_free = sum(len(u) for u in unstable)
    assert 4 <= n_free <= 14, n_free
    best, best_x = np.inf, None
    for bits in itertools.product((0, 1), repeat=n_free):
        bits = iter(bits)
        a_mat, a_off = np.eye(len(box)), np.zeros(len(box))  # a_k = a_mat @ x + a_off
        rows, rhs = [], []
        for k in range(net.depth - 1):
            z_mat, z_off = weights[k] @ a_mat, weights[k] @ a_off + biases[k]
            on = active[k].copy()
            for i in unstable[k]:
                on[i] = bool(next(bits))
                sign = -1.0 if on[i] else 1.0  # on: z >= 0, i.e. -z <= 0; off: z <= 0
                rows.append(sign * z_mat[i])
                rhs.append(-sign * z_off[i])
            a_mat, a_off = z_mat * on[:, None], z_off * on
        c = weights[-1][y] - weights[-1][j]
        cost, const = c @ a_mat, c @ a_off + biases[-1][y] - biases[-1][j]
        res = linprog(cost, A_ub=np.array(rows) if rows else None, b_ub=np.array(rhs) if rows else None,
                      bounds=box, method="highs")
        if res.status == 0 and res.fun + const < best:
            best, best_x = res.fun + const, res.x
    return best, best_x


def test_milp_margin_is_never_above_the_exact_minimum_by_enumeration():
    torch.manual_seed(11)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    model = model.double().eval()
    torch.manual_seed(12)
    x, eps = torch.rand(1, 6, dtype=torch.float64), 0.4  # 7 unstable ReLUs: 128 activation patterns
    gaps = []
    for j in (0, 2):
        exact, x_min = _enumerated_minimum(model, x, 1, j, eps)
        value = B.milp_margin(model, x, 1, j, eps)
        with torch.no_grad():
            z = model(torch.from_numpy(x_min)[None])[0]
        reached = float(z[1] - z[j])
        assert abs(reached - exact) < 1e-9, "the enumeration's minimizer reaches its value"
        assert value <= reached + 1e-9, f"j = {j}: the MILP returns {value}, above a margin reached ({reached})"
        assert value >= exact - 1e-6, f"j = {j}: the MILP value {value} is far below the exact minimum {exact}"
        lp = float(B.margin_bounds(model, x, torch.tensor([1]), eps, "lp", bounds="ibp", progress=False)[0, j])
        assert lp <= value + 1e-9
        gaps.append(exact - lp)
    assert max(gaps) > 1e-3, "the relaxation is not exact here, so the MILP's branching is exercised"


# --------------------------------------------------------------------------- IBP under an L2 ball


def test_ibp_under_l2_is_sound_against_attacks():
    train, test = rl.data.load("digits")
    model = rl.models.build("mlp", "digits", width=2)
    rl.train.fit(model, train, epochs=3, progress=False)
    x = rl.data.subset(test, 40, seed=0).x
    cert = B.ibp_l2_certify(model, x)
    assert cert.method == "ibp-l2" and cert.unit == rl.certificates.UNITS["l2"] and cert.alpha is None
    ok = cert.radius > 0
    assert int(ok.sum()) >= 10, "not vacuous: interval bounds certify some digits"
    pred, r = cert.prediction[ok], cert.radius[ok].float()
    x_adv = rl.attacks.pgd(model, x[ok], pred, eps=r, norm="l2", steps=40, restarts=2, seed=0)
    assert (rl.train.predict(model, x_adv) == pred).all(), "PGD changed a prediction inside the IBP radius"
    x_cw = rl.attacks.cw_l2(model, x[ok], pred)
    flipped = rl.train.predict(model, x_cw) != pred
    assert ((x_cw - x[ok]).flatten(1).norm(dim=1)[flipped] >= r[flipped] - 1e-5).all()
    # the interval bounds of the L2 ball are never looser than those of the box around it
    linf = B.certify(model, x, None, eps=0.02)
    assert bool(((cert.radius >= 0.02) | (linf.radius == 0)).all())


def test_ibp_under_l2_is_exact_for_a_linear_model():
    # no hidden layer: the radius is the distance to the nearest of the K - 1 hyperplanes
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4)).double()
    x = 0.3 + 0.4 * torch.rand(30, 6, generator=gen, dtype=torch.float64)
    cert = B.ibp_l2_certify(model, x, max_radius=10.0, steps=50)
    with torch.no_grad():
        z, w = model(x), model[1].weight
    pred = z.argmax(1)
    dist = (z.gather(1, pred[:, None]) - z) / (w[pred][:, None] - w[None]).norm(dim=2).clamp_min(1e-30)
    exact = dist.scatter(1, pred[:, None], math.inf).amin(1)
    assert torch.equal(cert.prediction, pred)
    assert bool((cert.radius <= exact).all()) and torch.allclose(cert.radius, exact, atol=1e-9)


def test_ibp_under_l2_checks_its_arguments():
    model = tiny_net()
    with pytest.raises(ValueError, match="max_radius"):
        B.ibp_l2_certify(model, torch.rand(2, 1, 4, 4), max_radius=0.0)
    with pytest.raises(ValueError, match="x"):
        B.ibp_l2_certify(model, torch.rand(2, 1, 4, 4) + 2)
    with pytest.raises(TypeError):
        B.ibp_l2_certify(nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 2)),
                         torch.rand(2, 1, 4, 4))
