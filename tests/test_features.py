import math

import pytest
import torch
from torch import nn

import robustlab as rl
from robustlab import features as feat


@pytest.fixture(autouse=True)
def _agg():
    import matplotlib

    matplotlib.use("Agg")


@pytest.fixture(scope="module")
def models():
    """A standard and a PGD-trained digits CNN (small budgets: about 5 s together)."""
    torch.set_num_threads(1)
    train, _ = rl.data.load("digits")
    standard = rl.models.build("cnn", "digits", seed=0)
    rl.train.fit(standard, train, epochs=10, lr=5e-3, progress=False)
    robust = rl.models.build("cnn", "digits", seed=0)
    rl.training.adversarial_training(robust, train, eps=0.2, steps=3, epochs=10, lr=5e-3, eps_ramp_epochs=2,
                                     schedule="onecycle", progress=False)
    return standard.eval(), robust.eval()


# =========================================================================== Tsipras et al.


def test_tsipras_data_has_the_stated_distribution():
    p, d, eta = 0.8, 50, 0.3
    x, y = feat.tsipras_data(20000, d, p=p, eta=eta, seed=1)
    assert x.shape == (20000, d + 1) and y.dtype == torch.int64 and set(y.unique().tolist()) == {0, 1}
    ypm = (2 * y - 1).float()
    assert set(x[:, 0].unique().tolist()) == {-1.0, 1.0}
    assert (x[:, 0] == ypm).float().mean().item() == pytest.approx(p, abs=0.01)
    signed = ypm[:, None] * x[:, 1:]
    assert signed.mean().item() == pytest.approx(eta, abs=0.01)
    assert signed.std().item() == pytest.approx(1.0, abs=0.01)
    assert abs(y.float().mean().item() - 0.5) < 0.02


@pytest.mark.parametrize("seed", range(3))
def test_tsipras_accuracy_is_the_accuracy_of_sampled_data_under_the_worst_attack(seed):
    d, p, eta = 20, 0.85, 0.4
    g = torch.Generator().manual_seed(seed)
    w, b = torch.randn(d + 1, generator=g), 0.3 * float(torch.randn((), generator=g))
    x, y = feat.tsipras_data(200000, d, p=p, eta=eta, seed=seed)
    ypm = (2 * y - 1).float()
    for eps in (0.0, 0.1, 0.5):
        x_adv = x - eps * ypm[:, None] * w.sign()  # the exact worst Linf perturbation of a linear classifier
        mc = ((x_adv @ w + b) * ypm > 0).float().mean().item()
        assert feat.tsipras_accuracy(w, b, p=p, eta=eta, eps=eps) == pytest.approx(mc, abs=0.005)


def test_the_trade_off_theorem_holds_for_many_linear_classifiers():
    """Robust accuracy r at eps >= 2 eta forces standard accuracy <= 1 - r (1 - p) / p."""
    d, p = 100, 0.9
    eta = 3 / math.sqrt(d)
    g = torch.Generator().manual_seed(0)
    tightest = -1.0
    for k in range(300):
        mix = k / 300
        w = torch.randn(d + 1, generator=g).abs() * torch.rand((), generator=g)
        w[0] = 10 * mix * float(torch.rand((), generator=g))
        for eps in (2 * eta, 3 * eta):
            clean = feat.tsipras_accuracy(w, p=p, eta=eta)
            robust = feat.tsipras_accuracy(w, p=p, eta=eta, eps=eps)
            assert clean <= feat.tsipras_bound(robust, p) + 1e-9, (k, clean, robust)
            tightest = max(tightest, clean - feat.tsipras_bound(robust, p))
    assert tightest > -0.01, "the bound is nearly attained (by the robust feature alone)"
    with pytest.raises(ValueError, match=r"robust_accuracy must be a probability in \[0, 1\]"):
        feat.tsipras_bound(1.5)


def test_standard_training_uses_non_robust_features_and_robust_training_drops_them():
    d = 100
    eta = 3 / math.sqrt(d)
    curve = feat.tsipras_tradeoff([0.0, 2 * eta], d=d, p=0.9, n=1000, epochs=8, lr=0.05, progress=False)
    (std_clean, rob_clean), (std_rob, rob_rob) = curve.clean, curve.robust
    assert std_clean > 0.97 and std_rob < 0.1, "standard: accurate, not robust"
    assert rob_rob > 0.8 and rob_clean < 0.92, "robust: robust, and no more accurate than the robust feature"
    assert all(c <= b + 1e-9 for c, b in zip(curve.clean, curve.bound))
    w_std, w_rob = curve.weights
    share = [float(w[0].abs() / w.abs().sum()) for w in (w_std, w_rob)]
    assert share[1] > 0.3 > share[0], share
    axes = curve.plot()
    assert len(axes) == 2 and len(curve.as_table()) == 2


# =========================================================================== Ilyas et al.


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet"])
def test_split_representation_recomposes_the_model(arch):
    model = rl.models.build(arch, "cifar10" if arch == "resnet" else "digits", width=4).eval()
    g, head = feat.split_representation(model)
    x = torch.rand(3, *rl.data.info("cifar10" if arch == "resnet" else "digits").shape)
    assert torch.allclose(head(g(x)), model(x), atol=1e-6)
    assert g(x).dim() == 2
    with pytest.raises(TypeError, match="model must be an nn.Sequential or a robustlab ResNet"):
        feat.split_representation(nn.Identity())


def test_a_robustified_image_matches_the_representation_not_the_pixels(models, digits):
    _, robust = models
    train, _ = digits
    small = rl.data.subset(train, 96, seed=0)
    out = feat.robust_dataset(robust, small, steps=100, seed=0, progress=False)
    assert out.x.shape == small.x.shape and torch.equal(out.y, small.y)
    assert out.x.min() >= 0 and out.x.max() <= 1
    g, _ = feat.split_representation(robust)
    with torch.no_grad():
        rel = ((g(out.x) - g(small.x)).norm(dim=1) / g(small.x).norm(dim=1)).median()
    pixel = rl.norms.lp_distance(out.x, small.x, "l2").median()
    assert rel < 0.15 and pixel > 1.0, (rel, pixel)
    assert (rl.train.predict(robust, out.x) == small.y).float().mean() > 0.9


def test_features_of_a_robust_representation_carry_more_robustness(models, digits):
    """Standard training on D_R (from the robust model) beats D_NR (from the standard one)."""
    standard, robust = models
    train, test = digits
    small = rl.data.subset(train, 700, seed=0)
    accs = {}
    for name, source in (("D_R", robust), ("D_NR", standard)):
        data = feat.robust_dataset(source, small, steps=100, seed=0, progress=False)
        model = rl.models.build("cnn", "digits", seed=0)
        rl.train.fit(model, data, epochs=15, lr=2e-3, progress=False)
        x_adv = rl.attacks.pgd(model, test.x, test.y, eps=0.1, steps=20, seed=0)
        accs[name] = (rl.train.evaluate(model, test), rl.train.evaluate(model, (x_adv, test.y)))
    assert accs["D_R"][0] > 0.9 and accs["D_NR"][0] > 0.9, accs
    assert accs["D_R"][1] > accs["D_NR"][1] + 0.03, accs


def test_robustified_data_from_noise_also_reaches_the_representation(models, digits):
    _, robust = models
    train, _ = digits
    small = rl.data.subset(train, 32, seed=3)
    out = feat.robust_dataset(robust, small, steps=100, init="noise", seed=0, progress=False)
    assert (rl.train.predict(robust, out.x) == small.y).float().mean() > 0.85


def test_relabelled_adversarial_examples_teach_the_real_task(models, digits):
    """Ilyas et al.'s D_det: every label looks wrong, yet the model generalises."""
    standard, _ = models
    train, test = digits
    small = rl.data.subset(train, 700, seed=0)
    d_det = feat.non_robust_dataset(standard, small, eps=2.0, progress=False)
    assert torch.equal(d_det.y, (small.y + 1) % 10)
    assert rl.norms.lp_distance(d_det.x, small.x, "l2").max() <= 2.0 + 1e-4
    assert (rl.train.predict(standard, d_det.x) == d_det.y).float().mean() > 0.9
    model = rl.models.build("cnn", "digits", seed=1)
    rl.train.fit(model, d_det, epochs=15, lr=2e-3, progress=False)
    acc = rl.train.evaluate(model, test)
    assert acc > 0.4, f"clean test accuracy {acc:.2f} after training only on relabelled adversarial examples"
    d_rand = feat.non_robust_dataset(standard, small, eps=2.0, target="random", seed=1, progress=False)
    assert bool((d_rand.y != small.y).all())


def test_feature_datasets_experiment_reports_and_plots(models, digits):
    standard, robust = models
    train, test = digits
    res = feat.feature_datasets_experiment(standard, robust, rl.data.subset(train, 200), rl.data.subset(test, 100),
                                           eps=0.1, steps=20, epochs=2, eval_steps=3, dataset="digits",
                                           progress=False)
    assert [r["dataset"] for r in res.as_table()] == ["original", "robust (D_R)", "non-robust (D_NR)",
                                                     "relabelled adv. (D_det)", "relabelled adv. (D_rand)"]
    assert all(0 <= a <= 1 for a in res.clean + res.robust)
    assert len(res.plot().patches) == 10
    # the robust column is the ensemble's by default: never above a single PGD run's on the same models
    pgd = feat.feature_datasets_experiment(standard, robust, rl.data.subset(train, 200), rl.data.subset(test, 100),
                                           eps=0.1, steps=20, epochs=2, attack="pgd", eval_steps=3,
                                           dataset="digits", progress=False)
    assert pgd.clean == res.clean
    assert all(e <= p + 1e-12 for e, p in zip(res.robust, pgd.robust)), (res.robust, pgd.robust)
    with pytest.raises(ValueError, match="attack must be one of"):
        feat.feature_datasets_experiment(standard, robust, train, test, attack="fgsm")


# =========================================================================== saliency


def test_saliency_of_a_linear_model_is_its_weight_row():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x = torch.rand(5, 1, 8, 8)
    y = torch.tensor([0, 3, 3, 9, 1])
    sal = feat.saliency(model, x, y)
    assert torch.allclose(sal, model[1].weight[y].view(5, 1, 8, 8))
    assert all(p.grad is None for p in model.parameters())
    loss_sal = feat.saliency(model, x, y, of="loss")
    p = model(x).softmax(1)
    expected = (p @ model[1].weight - model[1].weight[y]).view(5, 1, 8, 8)
    assert torch.allclose(loss_sal, expected, atol=1e-6)


def test_saliency_defaults_to_the_predicted_class_and_restores_the_mode(models):
    standard, _ = models
    standard.train()
    x = torch.rand(4, 1, 8, 8)
    try:
        pred = rl.train.predict(standard, x)
        assert torch.equal(feat.saliency(standard, x), feat.saliency(standard, x, pred))
        assert standard.training
    finally:
        standard.eval()


def test_robust_models_have_human_aligned_gradients(models, digits):
    standard, robust = models
    _, test = digits
    small = rl.data.subset(test, 200, seed=0)
    a_std = feat.saliency_alignment(standard, small.x, small.y)
    a_rob = feat.saliency_alignment(robust, small.x, small.y)
    assert a_std.shape == (200,) and bool(((a_rob >= -1) & (a_rob <= 1)).all())
    assert a_rob.mean() > a_std.mean() + 0.15, (a_std.mean(), a_rob.mean())
    assert (a_rob > a_std).float().mean() > 0.75
    fig = feat.plot_saliency(small.x, {"standard": standard, "robust": robust}, small.y, max_images=5)
    assert len(fig.axes) == 15


# =========================================================================== Schmidt et al.


def test_gaussian_mixture_errors_match_sampling():
    d = 50
    g = torch.Generator().manual_seed(0)
    w = torch.rand(d, generator=g) + 0.2
    x, y = rl.data.gaussian_mixture(200000, d, mu_norm=math.sqrt(d), sigma=d ** 0.25, seed=2)
    ypm = (2 * y - 1).float()
    for eps in (0.0, 0.3):
        x_adv = x - eps * ypm[:, None] * w.sign()
        mc = ((x_adv @ w) * ypm <= 0).float().mean().item()
        assert float(feat.gaussian_mixture_errors(w, eps=eps)) == pytest.approx(mc, abs=0.004)
    assert float(feat.gaussian_mixture_errors(torch.zeros(d))) == 0.5


def test_robust_generalisation_needs_more_data():
    res = feat.sample_complexity((1, 2, 5, 10, 20, 50, 100, 200), d=400, eps=0.5, trials=10, progress=False)
    n_std = res.samples_to_reach(0.05, "standard")
    n_rob = min(n for n in (res.samples_to_reach(0.05, "robust"), res.samples_to_reach(0.05, "robust_thresholded"))
                if n is not None)
    assert n_std is not None and n_rob >= 5 * n_std, (n_std, n_rob)
    assert all(s < r for s, r in zip(res.standard, res.robust))
    assert res.bayes_robust < 0.05 and res.bayes_standard < 1e-4
    assert res.plot().get_xscale() == "log"


# =========================================================================== arguments


def test_arguments_are_checked(models, digits):
    standard, _ = models
    train, _ = digits
    with pytest.raises(ValueError, match=r"p must be in \[0.5, 1\)"):
        feat.tsipras_data(10, 5, p=0.3)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        feat.tsipras_data(0)
    with pytest.raises(ValueError, match="w must be a vector"):
        feat.tsipras_accuracy(torch.ones(2, 3))
    with pytest.raises(ValueError, match="eps must be >= 0"):
        feat.tsipras_accuracy(torch.ones(3), eps=-1.0)
    with pytest.raises(ValueError, match="eps_grid must be >= 0"):
        feat.tsipras_tradeoff([-0.1], progress=False)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        feat.robust_dataset(standard, rl.data.subset(train, 4), steps=0)
    with pytest.raises(ValueError, match="init must be one of"):
        feat.robust_dataset(standard, rl.data.subset(train, 4), init="zeros")
    with pytest.raises(TypeError, match="data must be a Split"):
        feat.robust_dataset(standard, train.x)
    with pytest.raises(ValueError, match=r"data.x must have values in \[0, 1\]"):
        feat.non_robust_dataset(standard, (train.x[:4] * 3, train.y[:4]))
    with pytest.raises(ValueError, match="target must be one of"):
        feat.non_robust_dataset(standard, rl.data.subset(train, 4), target="all")
    with pytest.raises(ValueError, match="of must be one of"):
        feat.saliency(standard, train.x[:2], of="margin")
    with pytest.raises(ValueError, match="y holds class 12"):
        feat.saliency(standard, train.x[:2], torch.tensor([0, 12]))
    with pytest.raises(TypeError, match="models must be a non-empty mapping"):
        feat.plot_saliency(train.x[:2], [standard])
    with pytest.raises(ValueError, match="w has 3 coordinates but d=4"):
        feat.gaussian_mixture_errors(torch.ones(3), d=4)
    with pytest.raises(ValueError, match="which must be one of"):
        feat.sample_complexity((1,), d=4, trials=1, progress=False).samples_to_reach(0.1, "bayes")
    with pytest.raises(ValueError, match="n_grid must be an integer >= 1"):
        feat.sample_complexity((0,), d=4, progress=False)


def test_numpy_scalars_are_numbers_and_seeds_are_checked():
    import numpy as np

    ref = feat.tsipras_data(50, 10, p=0.9, seed=2)
    got = feat.tsipras_data(np.int64(50), np.int32(10), p=np.float32(0.9).item(), seed=np.int64(2))
    assert torch.equal(got.x, ref.x) and torch.equal(got.y, ref.y)
    assert feat.tsipras_accuracy(torch.ones(11), p=np.float64(0.9)) == feat.tsipras_accuracy(torch.ones(11), p=0.9)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        feat.tsipras_data(10, 5, seed=-2)
    with pytest.raises(TypeError, match="seed must be an integer"):
        feat.tsipras_linear_model(5, seed=0.5)


# --------------------------------------------------------------------------- misalignment (Ilyas et al., section 4)


def _random_cov(d, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T + 0.05 * torch.eye(d, dtype=torch.float64)


@pytest.mark.parametrize("seed", range(3))
def test_the_ml_direction_is_the_likelihood_ratio_gradient(seed):
    sigma = _random_cov(4, seed)
    mu = torch.randn(4, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    prec = torch.linalg.inv(sigma)
    log_ratio = 0.5 * (((x + mu) @ prec) * (x + mu)).sum(1) - 0.5 * (((x - mu) @ prec) * (x - mu)).sum(1)
    (grad,) = torch.autograd.grad(log_ratio.sum(), x)
    assert torch.allclose(grad, 2 * feat.gaussian_ml_direction(mu, sigma).expand(5, 4), atol=1e-9)


def test_the_robust_covariance_solves_its_eigenvalue_equation_and_flattens_the_spectrum():
    sigma = _random_cov(5, 0)
    s = torch.linalg.eigvalsh(sigma)
    assert torch.allclose(feat.ilyas_robust_covariance(sigma, math.inf), sigma, atol=1e-10)
    previous = float(s.max() / s.min())
    for lam in (100.0, 10.0, 1.0, 0.1):
        s_r = torch.linalg.eigvalsh(feat.ilyas_robust_covariance(sigma, lam))
        assert torch.allclose((lam * s_r - 1) ** 2, lam ** 2 * s * s_r, rtol=1e-9)
        assert (s_r > 1 / lam).all() and (s_r >= s - 1e-12).all()
        condition = float(s_r.max() / s_r.min())
        assert condition < previous
        previous = condition


@pytest.mark.parametrize("seed", range(3))
def test_gaussian_linear_accuracy_is_the_accuracy_of_samples_under_the_worst_l2_attack(seed):
    g = torch.Generator().manual_seed(seed)
    sigma = _random_cov(3, seed)
    mu = torch.randn(3, generator=g, dtype=torch.float64)
    w = torch.randn(3, generator=g, dtype=torch.float64)
    n, eps = 200_000, 0.3
    y = (torch.randint(0, 2, (n,), generator=g) * 2 - 1).double()
    x = y[:, None] * mu + torch.randn(n, 3, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(sigma).T
    x_worst = x - eps * y[:, None] * w / w.norm()
    for data, e in ((x, 0.0), (x_worst, eps)):
        sampled = float(((data @ w) * y > 0).double().mean())
        assert sampled == pytest.approx(feat.gaussian_linear_accuracy(w, mu, sigma, e), abs=4e-3)


def test_robust_training_turns_the_gradient_towards_mu_and_trades_clean_for_robust_accuracy():
    mu, sigma = [1.0, 0.1], [[1.0, 0.0], [0.0, 0.001]]
    m = feat.misalignment(mu, sigma, eps=0.1, inv_lams=(0.0, 0.01, 0.1, 1.0, 10.0))
    assert all(a > b for a, b in zip(m.angles, m.angles[1:]))
    assert all(a > b for a, b in zip(m.condition, m.condition[1:]))
    assert m.angles[0] > 80 and m.angles[-1] < 5       # from nearly orthogonal to nearly aligned
    assert m.clean[0] == max(m.clean)                  # maximum likelihood is the most accurate
    assert max(m.robust) > m.robust[0] + 0.1           # and far from the most robust
    assert m.angles[0] == pytest.approx(feat.gradient_angle(feat.gaussian_ml_direction(mu, sigma), mu))
    axes = m.plot()
    assert len(axes) == 2


def test_misalignment_functions_check_their_arguments():
    with pytest.raises(ValueError, match="positive definite"):
        feat.gaussian_ml_direction([1.0, 0.0], [[1.0, 0.0], [0.0, -1.0]])
    with pytest.raises(ValueError, match="sigma"):
        feat.gaussian_ml_direction([1.0, 0.0], [[1.0]])
    with pytest.raises(ValueError, match="lam"):
        feat.ilyas_robust_covariance([[1.0]], 0.0)
    with pytest.raises(ValueError, match="eps"):
        feat.misalignment([1.0], [[1.0]], eps=0.0)
    with pytest.raises(ValueError, match="inv_lams"):
        feat.misalignment([1.0], [[1.0]], eps=0.1, inv_lams=(-1.0,))
    with pytest.raises(ValueError, match="zero"):
        feat.gradient_angle([0.0, 0.0], [1.0, 0.0])
