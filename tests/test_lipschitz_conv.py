"""CONV-SV: the four-reshape bound is never below a convolution's spectral norm, meets it where the
paper says it is tight, and the exact norm agrees with the unrolled Jacobian.

Ground truth is the explicit Jacobian of ``F.conv2d`` (built here, independently of the module)
and its SVD, in float64.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from robustlab.lipschitz import conv as C
from robustlab.lipschitz import operators


def jacobian(K, n, padding, mode, stride):
    """The unrolled matrix of the convolution on (c_in, n, n) inputs, from basis vectors."""
    c_in = K.shape[1]
    d = c_in * n * n
    eye = torch.eye(d, dtype=K.dtype).view(d, c_in, n, n)
    if mode == "circular":
        eye = F.pad(eye, (padding,) * 4, mode="circular")
        out = F.conv2d(eye, K, stride=stride)
    else:
        out = F.conv2d(eye, K, stride=stride, padding=padding)
    return out.flatten(1).T


def spectral(J):
    return float(torch.linalg.matrix_norm(J, ord=2))


def random_cases(count, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for t in range(count):
        c_out, c_in = (int(v) for v in torch.randint(1, 5, (2,), generator=gen))
        h, w = (int(v) for v in torch.tensor([1, 2, 3, 5])[torch.randint(0, 4, (2,), generator=gen)])
        K = torch.randn(c_out, c_in, h, w, generator=gen, dtype=torch.float64)
        if t % 3 == 0:  # structured kernels too: a shared tap plus noise
            K = K + 2 * torch.randn(c_out, c_in, 1, 1, generator=gen, dtype=torch.float64)
        yield K


def test_every_reshape_bound_and_their_minimum_exceed_the_exact_norm_on_random_kernels():
    checked, below_without_factor = 0, 0
    for K in random_cases(200):
        h, w = K.shape[2:]
        b = C.conv_sv_bound(K)
        assert b.value == pytest.approx(min(b.bounds)) and b.factor == pytest.approx(math.sqrt(h * w))
        exact = []
        for stride in (1, 2):
            exact.append(spectral(jacobian(K, 8, max(h, w) // 2, "zeros", stride)))
            exact.append(spectral(jacobian(K, 8, 0, "zeros", stride)))
        if h == w and h % 2:  # circular padding keeping the size: the FFT formula and the Jacobian
            J = jacobian(K, 8, h // 2, "circular", 1)
            exact.append(spectral(J))
            assert float(operators.circular_conv_norm(K, (8, 8))) == pytest.approx(exact[-1], rel=1e-10)
            exact.append(spectral(jacobian(K, 8, h // 2, "circular", 2)))
        top = max(exact)
        for bound in b.bounds:
            assert bound >= top * (1 - 1e-10), (tuple(K.shape), bound, top)
        checked += len(exact)
        below_without_factor += min(b.norms) < top * (1 - 1e-6)
    assert checked > 800
    # the test can fail: forgetting sqrt(hw) gives a "bound" below the true norm on many kernels
    assert below_without_factor > 50


def test_the_bound_is_attained_by_equal_taps_under_circular_padding_and_by_1x1_kernels():
    gen = torch.Generator().manual_seed(1)
    for k in (3, 5):
        A = torch.randn(3, 2, generator=gen, dtype=torch.float64)
        K = A[:, :, None, None].expand(3, 2, k, k).contiguous()
        b = C.conv_sv_bound(K)
        circ = C.exact_conv_norm(K, (2, 8, 8), padding=k // 2, padding_mode="circular")
        assert circ.method == "fft"
        assert b.value == pytest.approx(circ.value, rel=1e-12) == pytest.approx(k * k * spectral(A), rel=1e-12)
        zero = spectral(jacobian(K, 8, k // 2, "zeros", 1))
        assert zero < b.value * 0.99, "zero padding loses the wrap-around, the bound stays above it"
    K = torch.randn(4, 3, 1, 1, generator=gen, dtype=torch.float64)
    b = C.conv_sv_bound(K)
    assert b.value == pytest.approx(spectral(K[:, :, 0, 0]), rel=1e-12)
    assert C.exact_conv_norm(K, (3, 5, 5)).value == pytest.approx(b.value, rel=1e-9)


def test_the_digits_published_check_equal_taps_value():
    # part4's check: the constant-tap kernel's bound equals the FFT value, and zero padding at n = 8 is lower
    A = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    K = A[:, :, None, None].expand(4, 4, 3, 3).contiguous()
    circ = C.exact_conv_norm(K, (4, 8, 8), padding=1, padding_mode="circular").value
    zero = C.exact_conv_norm(K, (4, 8, 8), padding=1).value
    assert C.conv_sv_bound(K).value == pytest.approx(circ, rel=1e-12)
    assert zero < circ


def test_exact_norm_methods_agree_with_the_unrolled_jacobian():
    for K in random_cases(30, seed=3):
        h, w = K.shape[2:]
        for stride in (1, 2):
            for padding in {0, max(h, w) // 2}:
                truth = spectral(jacobian(K, 7, padding, "zeros", stride))
                for method in ("auto", "lanczos", "jacobian"):
                    r = C.exact_conv_norm(K, (K.shape[1], 7, 7), stride=stride, padding=padding, method=method)
                    assert r.converged and r.value == pytest.approx(truth, rel=1e-8), (method, r, truth)
                power = C.exact_conv_norm(K, (K.shape[1], 7, 7), stride=stride, padding=padding, method="power",
                                          iters=300)
                assert power.value <= truth * (1 + 1e-9), "power iteration approaches the norm from below"
                assert power.value >= truth * 0.97
        if h == w and h % 2:
            truth = spectral(jacobian(K, 6, h // 2, "circular", 2))
            r = C.exact_conv_norm(K, (K.shape[1], 6, 6), stride=2, padding=h // 2, padding_mode="circular")
            assert r.method == "lanczos" and r.value == pytest.approx(truth, rel=1e-8)


def test_fft_norm_wraps_kernels_larger_than_the_grid():
    K = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    truth = spectral(jacobian(K, 3, 2, "circular", 1))
    assert C.exact_conv_norm(K, (3, 3, 3), padding=2, padding_mode="circular").value == pytest.approx(truth, rel=1e-10)


def test_a_conv2d_layer_is_read_with_its_own_stride_and_padding():
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(3, 5, 3, stride=2, padding=1).double()
    truth = spectral(jacobian(layer.weight.detach(), 8, 1, "zeros", 2))
    assert C.exact_conv_norm(layer, (3, 8, 8)).value == pytest.approx(truth, rel=1e-8)
    assert C.conv_sv_bound(layer).value >= truth


def test_reshape_layout_and_gradient():
    K = torch.randn(3, 2, 2, 4, dtype=torch.float64)
    r1, r2, r3, r4 = C.reshape_matrices(K)
    o, i, p, q = 2, 1, 1, 3
    assert r1[o * 2 + p, i * 4 + q] == K[o, i, p, q]
    assert r2[o * 4 + q, i * 2 + p] == K[o, i, p, q]
    assert r3[o, i * 8 + p * 4 + q] == K[o, i, p, q]
    assert r4[o * 8 + p * 4 + q, i] == K[o, i, p, q]
    K.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda k: C.reshape_norms(k), (K,), eps=1e-6, atol=1e-5)


def test_product_of_layer_bounds_covers_the_network_jacobian():
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 2, 3, padding=1)).double()
    product = math.prod(C.conv_sv_bound(m).value for m in net if isinstance(m, torch.nn.Conv2d))
    worst = 0.0
    for _ in range(5):
        x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
        J = torch.autograd.functional.jacobian(lambda v: net(v.view(1, 1, 6, 6)).flatten(), x.flatten())
        worst = max(worst, spectral(J))
    assert 0 < worst <= product


def test_bad_inputs_name_the_argument():
    K = torch.randn(2, 2, 3, 3)
    with pytest.raises(ValueError, match="kernel must have shape"):
        C.conv_sv_bound(torch.randn(2, 3, 3))
    with pytest.raises(ValueError, match="kernel contains NaN"):
        C.conv_sv_bound(torch.full((1, 1, 3, 3), math.nan))
    with pytest.raises(TypeError, match="kernel must be a floating-point"):
        C.conv_sv_bound(torch.ones(1, 1, 3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="kernel must be an ungrouped"):
        C.conv_sv_bound(torch.nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="input_shape must have C = c_in = 2"):
        C.exact_conv_norm(K, (3, 8, 8))
    with pytest.raises(ValueError, match="input_shape must be"):
        C.exact_conv_norm(K, (8, 8))
    with pytest.raises(ValueError, match="padding_mode"):
        C.exact_conv_norm(K, (2, 8, 8), padding_mode="reflect")
    with pytest.raises(ValueError, match="method='fft' needs circular padding"):
        C.exact_conv_norm(K, (2, 8, 8), padding=1, method="fft")
    with pytest.raises(ValueError, match="method"):
        C.exact_conv_norm(K, (2, 8, 8), method="svd")
    with pytest.raises(ValueError, match="max_unrolled"):
        C.exact_conv_norm(K, (2, 8, 8), method="jacobian", max_unrolled=10)
    with pytest.raises(ValueError, match="stride"):
        C.exact_conv_norm(K, (2, 8, 8), stride=0)
