"""Operator norms of linear layers (robustlab.lipschitz): exact where a formula is exact, upper
bounds elsewhere, the conv spectral bound against the unrolled matrix, and differentiability."""

import itertools
import math

import pytest
import torch

import robustlab as rl
from robustlab import lipschitz as L

INF = math.inf


def ratio(W, x, p, q):
    return torch.linalg.vector_norm(x @ W.T, ord=q, dim=1) / torch.linalg.vector_norm(x, ord=p, dim=1)


def test_pixeldp_sensitivity_is_the_lipschitz_operator_norm():
    layer = torch.nn.Linear(5, 3)
    for p, q in itertools.product(("l1", "l2", "linf"), repeat=2):
        assert rl.smoothing.dp.sensitivity(layer, p, q) == L.operator_norm(layer, p, q)
    assert rl.smoothing.dp.Sensitivity is L.OperatorNorm


@pytest.mark.parametrize("p,q", [(1.0, 1.0), (1.0, 2.0), (2.0, 2.0), (2.0, INF), (INF, INF)])
def test_the_exact_cases_are_attained(p, q):
    """Where the formula is exact, some input reaches the value (a basis vector, a sign vector,
    the top singular vector or a Hoelder-extremal vector) and no random input passes it."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 4).double()
    W = layer.weight.detach()
    norm = L.operator_norm(layer, p, q, max_vertices=1)
    assert norm.exact and norm.lower == pytest.approx(norm.value)
    xs = torch.randn(20_000, 6, dtype=torch.float64)
    assert float(ratio(W, xs, p, q).max()) <= norm.value * (1 + 1e-12)
    if p == 1.0:
        best = ratio(W, torch.eye(6, dtype=torch.float64), p, q).max()
    elif (p, q) == (2.0, 2.0):
        best = ratio(W, torch.linalg.svd(W).Vh[:1], p, q)[0]
    else:  # q = inf: the best row with the Hoelder-extremal vector of the dual norm
        r = 2.0 if p == 2.0 else 1.0
        row = W[torch.linalg.vector_norm(W, ord=r, dim=1).argmax()]
        x = row / row.norm() if p == 2.0 else row.sign()
        best = ratio(W, x[None], p, q)[0]
    assert float(best) == pytest.approx(norm.value, rel=1e-9)


def test_vertex_enumeration_is_the_maximum_over_sign_vectors():
    torch.manual_seed(1)
    W = torch.randn(3, 5, dtype=torch.float64)
    signs = torch.tensor(list(itertools.product((1.0, -1.0), repeat=5)), dtype=torch.float64)
    for q in (1.0, 2.0):
        assert L.vertex_enumeration(W, INF, q, 2 ** 16) == pytest.approx(float(ratio(W, signs, INF, q).max() * 1.0))
    assert L.vertex_enumeration(W, INF, 2.0, max_vertices=1) is None, "too many vertices: no answer"
    dense = L.DenseOperator(W)
    value, exact, _ = L.norm_bound(dense, INF, 2.0)
    assert not exact and float(value) >= L.vertex_enumeration(W, INF, 2.0, 2 ** 16) - 1e-12
    assert L.lower_estimate(dense, INF, 2.0) <= L.vertex_enumeration(W, INF, 2.0, 2 ** 16) + 1e-12


def unrolled_matrix(conv, shape):
    eye = torch.eye(math.prod(shape), dtype=torch.float64)
    with torch.no_grad():
        return torch.nn.functional.conv2d(eye.view((-1,) + shape), conv.weight.double(), stride=conv.stride,
                                          padding=conv.padding).flatten(1).T


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, 0)])
def test_conv_spectral_bound_is_an_upper_bound_close_to_the_exact_norm(stride, padding):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, stride=stride, padding=padding)
    shape = (2, 7, 7)
    exact = float(torch.linalg.matrix_norm(unrolled_matrix(conv, shape), ord=2))
    bound = L.conv_spectral_bound(conv, shape)
    assert exact * (1 - 1e-9) <= bound <= 1.6 * exact
    # the operator through convolutions agrees with the unrolled one on norms that are exact
    op = L.linear_operator(conv, conv.weight.detach().double(), shape, unroll_limit=0)
    assert isinstance(op, L.ConvOperator)
    dense = L.linear_operator(conv, conv.weight.detach().double(), shape, unroll_limit=10_000)
    assert isinstance(dense, L.DenseOperator)
    for q in (1.0, 2.0, INF):
        assert float(L.norm_bound(op, 1.0, q)[0]) == pytest.approx(float(L.norm_bound(dense, 1.0, q)[0]), rel=1e-9)


def test_a_one_by_one_convolution_has_the_norm_of_its_channel_matrix():
    conv = torch.nn.Conv2d(3, 2, 1, bias=False)
    M = conv.weight.detach()[:, :, 0, 0].double()
    assert L.conv_spectral_bound(conv, (3, 5, 5)) == pytest.approx(float(torch.linalg.matrix_norm(M, ord=2)), rel=1e-6)


def test_the_norm_is_differentiable_in_the_weight():
    layer = torch.nn.Linear(4, 3)
    op = L.linear_operator(layer)
    value, exact, _ = L.norm_bound(op, 2.0, 2.0)
    value.backward()
    assert exact and layer.weight.grad is not None
    u, s, vh = torch.linalg.svd(layer.weight.detach())
    assert torch.allclose(layer.weight.grad, torch.outer(u[:, 0], vh[0]), atol=1e-5), "d sigma_max / dW = u v^T"


def test_arguments_are_checked():
    with pytest.raises(TypeError, match="layer must be a torch.nn.Linear or torch.nn.Conv2d"):
        L.operator_norm(torch.nn.ReLU())
    with pytest.raises(ValueError, match="input_shape"):
        L.conv_spectral_bound(torch.nn.Conv2d(1, 2, 3), None)
    with pytest.raises(ValueError, match="q must be 1, 2 or inf"):
        L.operator_norm(torch.nn.Linear(2, 2), "l2", "l0")
    with pytest.raises(TypeError, match="must be a torch.nn.Conv2d"):
        L.conv_spectral_bound(torch.nn.Linear(2, 2), (1, 2, 2))
