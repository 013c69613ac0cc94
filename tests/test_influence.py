"""Influence functions: Hessian-vector products are the Hessian times v, CG and LiSSA reach the
exact inverse-HVP, Koh and Liang's formula is the derivative it claims to be and tracks exact
leave-one-out retraining on L2-regularized logistic regression, and the sign convention holds
in actual retraining."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

import robustlab as rl
from robustlab import influence as inf

WD = 0.03  # weight decay of the logistic-regression experiments


def two_class_digits(split, n, seed, classes=(1, 7)):
    """Digits of two classes relabelled 0/1, float64, a seeded subset of n."""
    keep = (split.y == classes[0]) | (split.y == classes[1])
    x, y = split.x[keep].double(), (split.y[keep] == classes[1]).long()
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return x[idx], y[idx]


@pytest.fixture(scope="module")
def digits():
    return rl.data.load("digits")


@pytest.fixture(scope="module")
def logistic(digits):
    """L2-regularized logistic regression on 150 digits (1 vs 7), trained to a gradient norm < 1e-10,
    the 10 test points of highest loss, and exact leave-one-out retraining for every training point."""
    train, test = digits
    tr = two_class_digits(train, 150, seed=0)
    xt, yt = two_class_digits(test, 1000, seed=1)
    model = rl.models.MLP((1, 8, 8), 2, hidden=(), mean=(0.3,), std=(0.37,)).double()
    grad_norm = inf.fit_to_optimum(model, tr, weight_decay=WD)
    with torch.no_grad():
        hardest = F.cross_entropy(model(xt), yt, reduction="none").topk(10).indices
    te = (xt[hardest], yt[hardest])
    result = inf.influences(model, tr, te, weight_decay=WD, method="exact")
    loo = inf.leave_one_out(model, tr, te, weight_decay=WD, progress=False)
    return dict(model=model, train=tr, test=te, grad_norm=grad_norm, result=result, loo=loo)


def tiny_mlp_risk(weight_decay=0.05):
    torch.manual_seed(0)
    model = rl.models.MLP((3,), 3, hidden=(4,)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(12, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=g)
    return model, (x, y), inf.EmpiricalRisk(model, (x, y), weight_decay=weight_decay)


def reference_risk(theta, x, y, weight_decay):
    """The same MLP written out by hand: 3 -> 4 (ReLU) -> 3, parameters in named_parameters order."""
    W1, b1 = theta[:12].view(4, 3), theta[12:16]
    W2, b2 = theta[16:28].view(3, 4), theta[28:31]
    logits = torch.relu(x @ W1.T + b1) @ W2.T + b2
    return F.cross_entropy(logits, y) + 0.5 * weight_decay * (theta ** 2).sum()


# ------------------------------------------------------------------ Hessian-vector products

def test_hvp_is_the_exact_hessian_times_v_on_a_small_net():
    model, (x, y), risk = tiny_mlp_risk()
    H_ref = torch.autograd.functional.hessian(lambda t: reference_risk(t, x, y, 0.05), risk.theta)
    V = torch.randn(5, risk.n_params, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(risk.hvp(V), V @ H_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(risk.hvp(V[0]), H_ref @ V[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(risk.hessian(), H_ref, rtol=1e-10, atol=1e-12)
    assert float(H_ref.abs().max()) > 0.1  # a real test: the Hessian is not trivial


def test_gradients_and_the_last_layer_block_match_autograd():
    model, (x, y), risk = tiny_mlp_risk()
    theta = risk.theta.clone().requires_grad_(True)
    g_ref, = torch.autograd.grad(reference_risk(theta, x, y, 0.05), theta)
    torch.testing.assert_close(risk.gradient(), g_ref)
    per_ref = torch.stack([torch.autograd.grad(reference_risk(theta, x[i:i + 1], y[i:i + 1], 0.0), theta)[0]
                           for i in range(x.shape[0])])
    torch.testing.assert_close(risk.per_sample_grads(), per_ref)
    last = inf.EmpiricalRisk(model, (x, y), params="last", weight_decay=0.05)
    assert last.names == ["4.weight", "4.bias"] and last.n_params == 15
    torch.testing.assert_close(last.hessian(), risk.hessian()[16:, 16:])


def test_the_model_is_untouched_and_evaluated_in_eval_mode():
    model, data, risk = tiny_mlp_risk()
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    risk.hvp(torch.ones(risk.n_params, dtype=torch.float64))
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ------------------------------------------------------------------ inverse-HVPs

def logistic_risk(digits, n=80, weight_decay=0.1):
    tr = two_class_digits(digits[0], n, seed=3)
    model = rl.models.MLP((1, 8, 8), 2, hidden=(), mean=(0.3,), std=(0.37,)).double()
    inf.fit_to_optimum(model, tr, weight_decay=weight_decay)
    return inf.EmpiricalRisk(model, tr, weight_decay=weight_decay)


def test_cg_and_lissa_converge_to_the_exact_solve_on_a_strongly_convex_risk(digits):
    risk = logistic_risk(digits)
    V = risk.per_sample_grads()[:4]
    exact = inf.inverse_hvp(risk, V, method="exact")
    torch.testing.assert_close(risk.hvp(exact), V, rtol=1e-9, atol=1e-10)  # it solves H x = v
    cg = inf.inverse_hvp(risk, V, method="cg", tol=1e-10)
    assert float((cg - exact).norm() / exact.norm()) < 1e-7
    lissa = inf.inverse_hvp(risk, V, method="lissa", tol=1e-12, depth=20000)
    assert float((lissa - exact).norm() / exact.norm()) < 1e-6
    # mini-batch Hessians: unbiased but noisy; averaging repeats brings it close
    noisy = inf.inverse_hvp(risk, V, method="lissa", batch_size=40, depth=300, repeats=4, seed=0)
    assert float((noisy - exact).norm() / exact.norm()) < 0.1
    cut = inf.inverse_hvp(risk, V, method="lissa", depth=5)  # too shallow: far from the solution
    assert float((cut - exact).norm() / exact.norm()) > 0.1


def test_damping_shifts_the_hessian_as_documented():
    A = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]], dtype=torch.float64)
    v = torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]], dtype=torch.float64)
    shifted = torch.linalg.solve(A + 0.5 * torch.eye(3, dtype=torch.float64), v.T).T
    torch.testing.assert_close(inf.inverse_hvp(A, v, method="exact", damping=0.5), shifted)
    torch.testing.assert_close(inf.inverse_hvp(A, v, method="cg", damping=0.5), shifted)
    # LiSSA's fixed point is scale * (A + damping * scale * I)^-1 v: damping 0.05 at scale 10 is a shift of 0.5
    torch.testing.assert_close(inf.inverse_hvp(A, v, method="lissa", damping=0.05, scale=10.0, tol=1e-14),
                               shifted, rtol=1e-9, atol=1e-11)


def test_iterative_solvers_refuse_what_they_cannot_solve():
    indefinite = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="positive definite"):
        inf.inverse_hvp(indefinite, torch.tensor([1.0, 1.0], dtype=torch.float64), method="cg")
    A = torch.diag(torch.tensor([1.0, 10.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="diverged"):  # scale below lambda_max / 2
        inf.inverse_hvp(A, torch.tensor([1.0, 1.0], dtype=torch.float64), method="lissa", scale=4.0, depth=2000)
    with pytest.warns(RuntimeWarning, match="max_iter"):
        inf.inverse_hvp(torch.diag(torch.arange(1.0, 30.0, dtype=torch.float64)),
                        torch.ones(29, dtype=torch.float64), method="cg", max_iter=3)


# ------------------------------------------------------------------ influence is the derivative it claims

def test_influence_is_the_derivative_of_the_test_loss_under_up_weighting(logistic):
    """I_up,loss(z_j, z_test) = d/d eps L(z_test; argmin R + eps L(z_j)), by central differences."""
    tr, te, result = logistic["train"], logistic["test"], logistic["result"]
    n, eps = tr[0].shape[0], 1e-4
    for j in result.harmful(1)[0].tolist() + result.helpful(1)[0].tolist():
        losses = []
        for sign in (1, -1):
            model = rl.models.MLP((1, 8, 8), 2, hidden=(), mean=(0.3,), std=(0.37,)).double()
            model.load_state_dict(logistic["model"].state_dict())
            w = torch.ones(n, dtype=torch.float64)
            w[j] += sign * n * eps  # (1/n) w_j L_j = (1/n) L_j + sign * eps * L_j
            inf.fit_to_optimum(model, tr, weight_decay=WD, weights=w)
            with torch.no_grad():
                losses.append(float(F.cross_entropy(model(te[0][:1]), te[1][:1])))
        derivative = (losses[0] - losses[1]) / (2 * eps)
        assert derivative == pytest.approx(float(result.scores[0, j]), rel=1e-4)


def test_influence_tracks_exact_leave_one_out_on_logistic_regression(logistic):
    result, loo = logistic["result"], logistic["loo"]
    assert logistic["grad_norm"] < 1e-10 and float(loo.grad_norm.max()) < 1e-10  # retraining is exact
    predicted, actual = result.predicted_change, loo.change
    assert predicted.shape == actual.shape == (10, 150)
    errors = []
    for t in range(10):
        assert inf.pearson(predicted[t], actual[t]) > 0.98, t
        assert inf.spearman(predicted[t], actual[t]) > 0.99, t
        # first order: the largest removals are underestimated, by less than half the spread
        spread = float(actual[t].max() - actual[t].min())
        errors.append(float((predicted[t] - actual[t]).abs().max()) / spread)
        # and the scale is right: actual ~ slope * predicted with a slope of order 1 (not n, not -1);
        # above 1 because the first-order prediction falls short on the largest removals
        slope = float((predicted[t] * actual[t]).sum() / (predicted[t] ** 2).sum())
        assert 0.9 < slope < 2.0, (t, slope)
    assert max(errors) < 0.5 and sum(errors) / len(errors) < 0.35, errors


def test_removing_the_most_harmful_point_lowers_the_test_loss_in_retraining(logistic):
    result, loo = logistic["result"], logistic["loo"]
    assert torch.equal(loo.indices, torch.arange(150))
    rows = torch.arange(10)
    harmful, helpful = result.harmful(1)[:, 0], result.helpful(1)[:, 0]
    assert bool((result.scores[rows, harmful] > 0).all()) and bool((result.scores[rows, helpful] < 0).all())
    assert bool((loo.change[rows, harmful] < 0).all())
    assert bool((loo.change[rows, helpful] > 0).all())
    torch.testing.assert_close(result.predicted_change, -result.scores / 150)


def test_cg_influence_agrees_with_the_exact_one(logistic):
    tr, te = logistic["train"], logistic["test"]
    cg = inf.influences(logistic["model"], tr, te, weight_decay=WD, method="cg", tol=1e-10)
    torch.testing.assert_close(cg.scores, logistic["result"].scores, rtol=1e-6, atol=1e-9)


def test_newton_refuses_a_risk_that_is_not_strongly_convex():
    torch.manual_seed(0)
    model = rl.models.MLP((3,), 2, hidden=()).double()
    x = torch.rand(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="positive definite"):  # 8 parameters, 4 points, no weight decay
        inf.leave_one_out(model, (x, torch.tensor([0, 1, 0, 1])), (x[:1], torch.tensor([0])), [0], weight_decay=0.0)


# ------------------------------------------------------------------ correlations, fragility, plots

def test_correlations_agree_with_scipy():
    g = np.random.default_rng(0)
    a = g.normal(size=30)
    b = a + g.normal(size=30)
    b[:5] = b[5]  # ties
    assert inf.pearson(a, b) == pytest.approx(scipy.stats.pearsonr(a, b)[0], rel=1e-12)
    assert inf.spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b)[0], rel=1e-12)
    assert inf.pearson(torch.tensor(a), torch.tensor(-a)) == pytest.approx(-1.0)
    assert math.isnan(inf.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_fragility_study_returns_a_table_where_logistic_regression_is_accurate(digits):
    table = inf.fragility_study(digits, n_train=60, n_test_points=2, k=8, hidden=((), (8,)),
                                weight_decays=(0.01,), lbfgs_iter=200, progress=False)
    assert table.model == ["logistic", "logistic", "mlp 8", "mlp 8"]
    assert table.n_removed == [8] * 4 and table.test_index == [0, 1, 0, 1]
    assert min(table.pearson[:2]) > 0.9 and min(table.spearman[:2]) > 0.8
    assert all(math.isfinite(p) for p in table.pearson)
    summary = table.summary()
    assert [r["model"] for r in summary] == ["logistic", "mlp 8"]
    assert "pearson" in str(table)


def test_plot_influential_shows_the_test_point_and_k_helpful_and_harmful(logistic):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = inf.plot_influential(logistic["train"], logistic["test"], logistic["result"], index=2, k=4)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 1 + 2 * 4
    harmful = logistic["result"].harmful(4)[2].tolist()
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith(f"#{harmful[0]} ") for t in titles)
    plt.close(fig)


# ------------------------------------------------------------------ input checks

def test_inputs_are_checked_with_messages_that_name_the_argument(logistic):
    model, tr, te = logistic["model"], logistic["train"], logistic["test"]
    risk = inf.EmpiricalRisk(model, tr, weight_decay=WD)
    with pytest.raises(ValueError, match="method"):
        inf.inverse_hvp(risk, risk.theta, method="newton")
    with pytest.raises(ValueError, match="damping"):
        inf.inverse_hvp(risk, risk.theta, damping=-1.0)
    with pytest.raises(ValueError, match="v must have shape"):
        inf.inverse_hvp(risk, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="symmetric"):
        inf.inverse_hvp(torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.ones(2))
    with pytest.raises(ValueError, match="weight_decay"):
        inf.EmpiricalRisk(model, tr, weight_decay=-0.1)
    with pytest.raises(ValueError, match=r"test.x must have values in \[0, 1\]"):
        inf.influences(model, tr, (te[0] * 2 + 0.5, te[1]), weight_decay=WD)
    with pytest.raises(ValueError, match="classes"):
        inf.EmpiricalRisk(model, (tr[0], tr[1] + 2))
    with pytest.raises(ValueError, match="params"):
        inf.select_parameters(model, ["nope.weight"])
    with pytest.raises(ValueError, match="params"):
        inf.select_parameters(model, "first")
    with pytest.raises(ValueError, match="indices"):
        inf.leave_one_out(model, tr, te, [150], weight_decay=WD)
    with pytest.raises(ValueError, match="method"):
        inf.leave_one_out(model, tr, te, [0], method="sgd")
    with pytest.raises(ValueError, match="index"):
        inf.plot_influential(tr, te, logistic["result"], index=10)
    with pytest.raises(ValueError, match="same number"):
        inf.pearson([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="model"):
        inf.EmpiricalRisk("model", tr)


def test_seeds_and_class_indices_go_through_the_shared_checks():
    A = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    v = torch.tensor([1.0, -1.0], dtype=torch.float64)
    x = inf.inverse_hvp(A, v, method="lissa", seed=np.int64(3))
    assert torch.allclose(A @ x, v, atol=1e-5)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        inf.inverse_hvp(A, v, method="lissa", seed=-1)
    with pytest.raises(TypeError, match="seed must be an integer"):
        inf.inverse_hvp(A, v, seed=0.5)
    with pytest.raises(ValueError, match="classes must be a class index >= 0"):
        inf.fragility_study(classes=(1, -7))
    with pytest.raises(ValueError, match="two different class indices"):
        inf.fragility_study(classes=(np.int64(3), 3))
