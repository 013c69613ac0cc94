"""SOC: skew filters have skew Jacobians, the truncated exponential is orthogonal up to its proven
bound, the network's Lipschitz constant stays below the product bound, and no attack succeeds
inside the Lipschitz-margin certificate.

Jacobians are built explicitly in float64 from basis vectors; scipy's expm is the reference
exponential.
"""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

import robustlab as rl
from robustlab.certificates import UNITS
from robustlab.lipschitz import soc as S


def unrolled(fn, shape):
    d = math.prod(shape)
    eye = torch.eye(d, dtype=torch.float64).view((d,) + tuple(shape))
    return fn(eye).flatten(1).T


@pytest.mark.parametrize("k", [1, 3, 5])
def test_the_skew_filter_has_a_skew_symmetric_jacobian(k):
    gen = torch.Generator().manual_seed(k)
    for c, n in ((1, 4), (3, 5), (4, 6)):
        M = torch.randn(c, c, k, k, generator=gen, dtype=torch.float64)
        L = S.skew_filter(M)
        J = unrolled(lambda v: F.conv2d(v, L, padding=k // 2), (c, n, n))
        assert float((J + J.T).abs().max()) < 1e-12
        if c > 1 or k > 1:
            assert float(J.abs().max()) > 0.1, "not trivially zero"
        # without the spatial flip the Jacobian is not skew (the test can fail)
        bad = M - M.transpose(0, 1)
        Jb = unrolled(lambda v: F.conv2d(v, bad, padding=k // 2), (c, n, n))
        if k > 1 and c > 1:
            assert float((Jb + Jb.T).abs().max()) > 1e-3


def test_truncation_error_stays_below_its_bound_and_nearly_reaches_it():
    torch.manual_seed(0)
    layer = S.SOCConv2d(3, 3, 3, normalizer="exact").double().eval()
    shape = (3, 5, 5)
    L = layer.skew(torch.float64).detach()
    J = unrolled(lambda v: F.conv2d(v, L, padding=1), shape)
    norm = float(torch.linalg.matrix_norm(J, ord=2))
    assert norm <= layer.jacobian_norm_bound() * (1 + 1e-12), "CONV-SV bounds the skew layer's norm"
    exact = torch.from_numpy(scipy.linalg.expm(J.numpy()))
    assert float((exact.T @ exact - torch.eye(J.shape[0], dtype=torch.float64)).abs().max()) < 1e-10
    ratios = []
    for terms in (2, 3, 5, 8, 12):
        with torch.no_grad():
            series = unrolled(lambda v: layer.exponential(v, terms), shape)
        error = float(torch.linalg.matrix_norm(series - exact, ord=2))
        bound = S.truncation_bound(norm, terms)
        assert error <= bound * (1 + 1e-9) + 1e-14, (terms, error, bound)
        ratios.append(error / bound)
    # the bound is nearly attained (one eigenvalue sits at the norm): T! in place of (T+1)! would show here
    assert max(ratios[:3]) > 0.5


def test_eval_layer_is_orthogonal_up_to_delta_and_training_layer_within_its_own_delta():
    torch.manual_seed(1)
    layer = S.SOCConv2d(4, 4, 3).double()
    shape = (4, 6, 6)
    for mode in ("eval", "train"):
        getattr(layer, mode)()
        with torch.no_grad():
            J = unrolled(layer.linear, shape)
        delta = layer.truncation_error()
        gram_error = float((J.T @ J - torch.eye(J.shape[0], dtype=torch.float64)).abs().max())
        sv = torch.linalg.svdvals(J)
        assert gram_error <= delta * (2 + delta) + 1e-12, (mode, gram_error, delta)
        assert float(sv.max()) <= 1 + delta + 1e-12 and float(sv.min()) >= 1 - delta - 1e-12
    assert layer.truncation_error(12) < 3e-6 < 1e-2 < layer.truncation_error(5) < 0.13


def test_strides_channel_padding_and_slicing_keep_the_layer_within_one_plus_delta():
    torch.manual_seed(2)
    for c_in, c_out, stride, k in ((1, 4, 1, 3), (2, 4, 2, 3), (4, 2, 2, 1), (4, 2, 1, 3)):
        layer = S.SOCConv2d(c_in, c_out, k, stride=stride).double().eval()
        shape = (c_in, 4, 4)
        with torch.no_grad():
            J = unrolled(layer.linear, shape)
        sv = torch.linalg.svdvals(J)
        delta = layer.truncation_error()
        assert float(sv.max()) <= 1 + delta + 1e-12
        if layer.channels == c_out:  # no slicing: the whole map is orthogonal (an isometry)
            assert float(sv.min()) >= 1 - delta - 1e-12
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    z = F.pixel_unshuffle(x, 2)
    assert torch.allclose(z.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1)), "space-to-depth is a permutation"


def test_maxmin_preserves_norms_and_is_one_lipschitz():
    gen = torch.Generator().manual_seed(3)
    mm = S.MaxMin()
    x, x2 = torch.randn(200, 6, 3, 3, generator=gen), torch.randn(200, 6, 3, 3, generator=gen)
    assert torch.allclose(mm(x).flatten(1).norm(dim=1), x.flatten(1).norm(dim=1))
    assert bool(((mm(x) - mm(x2)).flatten(1).norm(dim=1) <= (x - x2).flatten(1).norm(dim=1) + 1e-6).all())
    assert torch.equal(mm(torch.tensor([[1.0, 5.0, 3.0, 2.0]])), torch.tensor([[3.0, 5.0, 1.0, 2.0]]))


@pytest.fixture(scope="module")
def trained():
    """A small SOC network trained for a few epochs on the digits (seconds)."""
    train, test = rl.data.load("digits")
    net = S.soc_net("digits", width=4, blocks=1, seed=0)
    rl.train.fit(net, train, epochs=6, lr=5e-3, batch_size=64, seed=0, progress=False)
    return net.eval(), test


def test_the_networks_measured_constant_stays_below_its_bound(trained):
    net, test = trained
    consts = S.lipschitz_constants(net)
    assert consts.bound == pytest.approx(math.prod(r.bound for r in consts.layers))
    assert consts.layers[0].bound == pytest.approx(1 / rl.data.info("digits").std[0], rel=1e-6)
    for row in consts.layers:
        assert row.measured <= row.bound * (1 + 1e-6), row  # float32 forward: 1e-6 slack
    soc_rows = [r for r in consts.layers if "SOCConv2d" in r.name]
    assert len(soc_rows) == 4 and all(r.measured > 1 - 1e-3 for r in soc_rows), "the layers are (nearly) orthogonal"
    big = net.double()
    try:
        gen = torch.Generator().manual_seed(0)
        x = test.x[:40].double()
        x2 = (x + 0.3 * torch.randn(x.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
        with torch.no_grad():
            ratio = (big(x) - big(x2)).norm(dim=1) / (x - x2).flatten(1).norm(dim=1)
        assert float(ratio.max()) <= consts.bound
        worst = 0.0
        for i in range(3):
            J = torch.autograd.functional.jacobian(lambda v: big(v.view(1, 1, 8, 8)).flatten(), x[i].flatten())
            worst = max(worst, float(torch.linalg.matrix_norm(J, ord=2)))
        assert worst <= consts.bound
    finally:
        net.float()


def test_no_attack_succeeds_inside_the_certificate_and_attacks_succeed_beyond_it(trained):
    net, test = trained
    x, y = test.x[:80], test.y[:80]
    cert = S.certify(net, x)
    assert cert.unit == UNITS["l2"] and cert.alpha is None
    ok = cert.correct(y) & (cert.radius > 1e-3)
    assert int(ok.sum()) >= 30, "the small network certifies many digits"
    xs, ys, r = x[ok], y[ok], cert.radius[ok].float()
    inside = 0.999 * r
    x_pgd = rl.attacks.pgd(net, xs, ys, eps=inside, norm="l2", steps=25, restarts=2, seed=0)
    assert bool(((x_pgd - xs).flatten(1).norm(dim=1) <= inside + 1e-5).all())
    assert torch.equal(rl.train.predict(net, x_pgd), ys), "PGD changed a certified prediction"
    x_cw = rl.attacks.cw_l2(net, xs, ys, binary_steps=4, steps=60)
    changed = rl.train.predict(net, x_cw) != ys
    dist = (x_cw - xs).flatten(1).norm(dim=1)
    assert bool((dist[changed] >= r[changed] * (1 - 1e-4)).all()), "CW found an adversarial inside the radius"
    # non-vacuity: at a few times the radius, the attacks do succeed on some inputs
    x_far = rl.attacks.pgd(net, xs, ys, eps=4 * r, norm="l2", steps=20, restarts=1, seed=0)
    assert float((rl.train.predict(net, x_far) != ys).float().mean()) > 0.2


def test_the_certificate_is_exact_for_a_linear_two_class_model():
    # z = (u.x, -u.x) with ||u|| = 1: L = ||W||_2 = sqrt(2), margin 2|u.x|, distance to the boundary |u.x|
    gen = torch.Generator().manual_seed(5)
    u = F.normalize(torch.randn(16, generator=gen, dtype=torch.float64), dim=0)
    W = torch.stack([u, -u])
    x = torch.randn(50, 16, generator=gen, dtype=torch.float64)
    L = float(torch.linalg.matrix_norm(W, ord=2))
    cert = S.lipschitz_certificate(x @ W.T, L)
    distance = (x @ u).abs()
    assert torch.allclose(cert.radius, distance, rtol=1e-12), "sound and tight: radius = distance"
    assert torch.equal(cert.prediction, (x @ u < 0).long())


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="kernel must have shape"):
        S.skew_filter(torch.randn(2, 3, 3, 3))
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        S.SOCConv2d(2, 2, 2)
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        S.SOCConv2d(2, 2, 3, stride=3)
    with pytest.raises(ValueError, match="normalizer"):
        S.SOCConv2d(2, 2, 3, normalizer="svd")
    with pytest.raises(ValueError, match="x must have shape"):
        S.SOCConv2d(2, 2, 3)(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="needs even H and W"):
        S.SOCConv2d(2, 2, 3, stride=2)(torch.randn(1, 2, 5, 5))
    with pytest.raises(ValueError, match="MaxMin needs an even number of channels"):
        S.MaxMin()(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="width must be even"):
        S.soc_net("digits", width=5)
    with pytest.raises(ValueError, match="must be divisible by 16"):
        S.soc_net("digits", stages=4)
    with pytest.raises(ValueError, match="jacobian_norm must be"):
        S.truncation_bound(-1.0, 3)
    with pytest.raises(ValueError, match="terms"):
        S.truncation_bound(1.0, 0)
    with pytest.raises(ValueError, match="lipschitz must be a finite number > 0"):
        S.lipschitz_certificate(torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError, match="logits must have shape"):
        S.lipschitz_certificate(torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="logits contain NaN"):
        S.lipschitz_certificate(torch.full((1, 3), math.nan), 1.0)
    relu_net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.ReLU())
    with pytest.raises(TypeError, match="no known Lipschitz constant"):
        S.lipschitz_constants(relu_net, (1, 8, 8))
    with pytest.raises(ValueError, match="x"):
        S.certify(S.soc_net("digits", width=4, blocks=1), torch.full((1, 1, 8, 8), 2.0))
