import pytest
import torch

import robustlab as rl
from helpers import Linear2


def test_fgsm_matches_the_closed_form_on_a_linear_model():
    torch.manual_seed(0)
    w0, w1 = torch.randn(16), torch.randn(16)
    model = Linear2(w0, w1)
    x = torch.full((3, 16), 0.5)
    y = torch.tensor([0, 1, 0])
    x_adv = rl.attacks.fgsm(model, x, y, eps=0.1)
    # raising the CE of the true class y moves along sign(w_other - w_y)
    expected = torch.stack([torch.sign(w1 - w0), torch.sign(w0 - w1), torch.sign(w1 - w0)])
    assert torch.allclose(x_adv - x, 0.1 * expected)
    # targeted at the other class: the same direction
    x_t = rl.attacks.fgsm(model, x, y, eps=0.1, targets=1 - y)
    assert torch.allclose(x_t, x_adv)


@pytest.mark.parametrize("seed", range(4))
def test_fgsm_respects_the_contract_on_random_models_and_inputs(seed):
    torch.manual_seed(seed)
    model = rl.models.build("cnn", "digits", width=4, seed=seed)
    model.train()
    x = torch.rand(16, 1, 8, 8)
    x[:4] = 0.0
    x[4:8] = 1.0  # inputs on the box's faces must stay inside it
    y = torch.randint(0, 10, (16,))
    eps = torch.rand(16) * 0.3
    x_adv = rl.attacks.fgsm(model, x, y, eps=eps)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert bool(((x_adv - x).abs().flatten(1).amax(1) <= eps + 1e-6).all())
    assert model.training, "the model's mode must be restored"
    assert all(p.grad is None for p in model.parameters()), "attacks must not touch parameter gradients"
    assert not x_adv.requires_grad


def test_fgsm_with_zero_budget_returns_the_input(tiny_model):
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    assert torch.equal(rl.attacks.fgsm(tiny_model, x, y, eps=0.0), x)


def test_fgsm_is_much_stronger_than_random_noise_of_the_same_size(digits):
    _, test = digits
    model, _ = rl.train.trained_model("digits", "cnn", progress=False)
    x, y = test
    clean = rl.train.evaluate(model, test)
    adv = rl.train.evaluate(model, (rl.attacks.fgsm(model, x, y, eps=0.2), y))
    g = torch.Generator().manual_seed(0)
    noise = (x + 0.2 * torch.randint(0, 2, x.shape, generator=g).mul(2).sub(1)).clamp(0, 1)
    rand = rl.train.evaluate(model, (noise, y))
    assert clean > 0.95
    assert adv < 0.35 and rand > 0.85, (clean, adv, rand)


def test_targeted_fgsm_raises_the_target_probability(digits):
    _, test = digits
    model, _ = rl.train.trained_model("digits", "cnn", progress=False)
    x, y = test.x[:100], test.y[:100]
    t = (y + 1) % 10
    x_t = rl.attacks.fgsm(model, x, y, eps=0.1, targets=t)
    with torch.no_grad():
        before = model(x).softmax(1).gather(1, t[:, None])
        after = model(x_t).softmax(1).gather(1, t[:, None])
    assert float((after > before).float().mean()) > 0.9


def test_fgsm_arguments_are_checked(tiny_model):
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        rl.attacks.fgsm(tiny_model, x, y, eps=-0.1)
    with pytest.raises(ValueError, match=r"x must have values in \[0, 1\]"):
        rl.attacks.fgsm(tiny_model, x * 255, y, eps=0.1)
    with pytest.raises(ValueError, match="x contains NaN"):
        rl.attacks.fgsm(tiny_model, torch.full((4, 1, 8, 8), float("nan")), y, eps=0.1)
    with pytest.raises(ValueError, match="y has 3 labels but the batch has 4"):
        rl.attacks.fgsm(tiny_model, x, y[:3], eps=0.1)
    with pytest.raises(TypeError, match="y must be an int64"):
        rl.attacks.fgsm(tiny_model, x, y.float(), eps=0.1)
    with pytest.raises(ValueError, match="targets has 2 labels"):
        rl.attacks.fgsm(tiny_model, x, y, eps=0.1, targets=y[:2])
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        rl.attacks.fgsm(lambda t: t, x, y, eps=0.1)
    with pytest.raises(ValueError, match=r"eps must be a number or a tensor of shape \(4,\)"):
        rl.attacks.fgsm(tiny_model, x, y, eps=torch.ones(2))
    with pytest.raises(TypeError, match="eps must be a real number"):
        rl.attacks.fgsm(tiny_model, x, y, eps=None)


def test_eval_mode_is_restored_even_after_an_error(tiny_model):
    tiny_model.train()
    with pytest.raises(RuntimeError):
        with rl.attacks.eval_mode(tiny_model):
            assert not tiny_model.training
            raise RuntimeError("boom")
    assert tiny_model.training


def test_input_gradient_leaves_parameters_alone(tiny_model):
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    g = rl.attacks.input_gradient(tiny_model, x, y)
    assert g.shape == x.shape and float(g.abs().sum()) > 0
    assert all(p.grad is None for p in tiny_model.parameters())
    with pytest.raises(ValueError, match="loss must be one of"):
        rl.attacks.input_gradient(tiny_model, x, y, loss="mse")


# ----------------------------------------------------------------------------- PGD


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("seed", range(3))
def test_pgd_respects_the_contract_on_random_models_and_inputs(norm, seed):
    torch.manual_seed(seed)
    model = rl.models.build("cnn", "digits", width=4, seed=seed).train()
    x = torch.rand(12, 1, 8, 8)
    x[:3] = 0.0
    x[3:6] = 1.0
    y = torch.randint(0, 10, (12,))
    eps = torch.rand(12) * (0.3 if norm == "linf" else 2.0)
    x_adv = rl.attacks.pgd(model, x, y, eps=eps, norm=norm, steps=7, restarts=2, seed=seed)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert bool((rl.norms.lp_distance(x_adv, x, norm) <= eps + 1e-5).all())
    assert model.training and all(p.grad is None for p in model.parameters())


def test_pgd_reaches_the_analytic_optimum_on_a_linear_model():
    torch.manual_seed(1)
    w0, w1 = torch.randn(16), torch.randn(16)
    model = Linear2(w0, w1)
    x = torch.full((2, 16), 0.5)
    y = torch.tensor([0, 1])
    margin = lambda z: (model(z)[:, 1] - model(z)[:, 0]) * torch.tensor([1.0, -1.0])  # other minus own  # noqa: E731
    d = w1 - w0
    for norm, best_gain in (("linf", 0.1 * d.abs().sum()), ("l2", 0.1 * d.norm())):
        x_adv = rl.attacks.pgd(model, x, y, eps=0.1, norm=norm, steps=20, loss="cw", random_start=False)
        gain = margin(x_adv) - margin(x)
        assert torch.allclose(gain, best_gain.expand(2), rtol=1e-3), (norm, gain, best_gain)


def test_pgd_finds_an_adversarial_example_whenever_brute_force_does():
    # tiny inputs: a 2-D ReLU network, and a dense grid of the Linf ball as ground truth
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 3))
    with torch.no_grad():  # steeper first layer: several decision boundaries inside the unit square
        model[0].weight.mul_(8)
        model[0].bias.uniform_(-4, 4)
    x = torch.rand(60, 2)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = 0.15
    t = torch.linspace(-eps, eps, 121)
    offsets = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    exists = []
    with torch.no_grad():
        for i in range(60):
            pts = (x[i] + offsets).clamp(0, 1)
            exists.append(bool((model(pts).argmax(1) != y[i]).any()))
    exists = torch.tensor(exists)
    assert 5 <= int(exists.sum()) < 60, "the test needs both robust and non-robust points"
    x_adv = rl.attacks.pgd(model, x, y, eps=eps, steps=50, restarts=5, seed=0)
    with torch.no_grad():
        found = model(x_adv).argmax(1) != y
    assert bool(found[exists].all()), f"PGD missed {int((exists & ~found).sum())} of {int(exists.sum())} attackable points"
    assert not bool(found[~exists].any()), "PGD 'found' an example the grid says cannot exist"


def test_pgd_restarts_keep_the_best_result_per_sample(digits):
    _, test = digits
    model, _ = rl.train.trained_model("digits", "cnn", progress=False)
    x, y = test.x[:200], test.y[:200]
    one = rl.attacks.pgd(model, x, y, eps=0.1, steps=5, restarts=1, seed=3)
    five = rl.attacks.pgd(model, x, y, eps=0.1, steps=5, restarts=5, seed=3)
    fooled_one = rl.train.predict(model, one) != y
    fooled_five = rl.train.predict(model, five) != y
    assert bool(fooled_five[fooled_one].all()), "a restart may never undo another restart's success"
    assert int(fooled_five.sum()) >= int(fooled_one.sum())


def test_pgd_is_stronger_than_fgsm_and_more_steps_are_never_weaker(digits):
    _, test = digits
    model, _ = rl.train.trained_model("digits", "cnn", progress=False)
    x, y = test
    acc = lambda xa: rl.train.evaluate(model, (xa, y))  # noqa: E731
    fgsm_acc = acc(rl.attacks.fgsm(model, x, y, eps=0.1))
    pgd10 = acc(rl.attacks.pgd(model, x, y, eps=0.1, steps=10, seed=0))
    pgd50 = acc(rl.attacks.pgd(model, x, y, eps=0.1, steps=50, seed=0))
    assert pgd10 <= fgsm_acc and pgd50 <= pgd10 + 0.01, (fgsm_acc, pgd10, pgd50)
    assert acc(rl.attacks.pgd(model, x, y, eps=1.0, steps=20, seed=0)) == 0.0  # the whole box: nothing survives


def test_targeted_pgd_reaches_its_targets(digits):
    _, test = digits
    model, _ = rl.train.trained_model("digits", "cnn", progress=False)
    x, y = test.x[:100], test.y[:100]
    t = (y + 3) % 10
    for loss in ("ce", "cw"):
        x_t = rl.attacks.pgd(model, x, y, eps=0.3, steps=40, targets=t, loss=loss, seed=0)
        assert float((rl.train.predict(model, x_t) == t).float().mean()) > 0.9, loss


def test_pgd_arguments_are_checked(tiny_model):
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    with pytest.raises(ValueError, match="norm must be one of"):
        rl.attacks.pgd(tiny_model, x, y, eps=0.1, norm="l0")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        rl.attacks.pgd(tiny_model, x, y, eps=0.1, steps=0)
    with pytest.raises(ValueError, match="restarts > 1 needs random_start"):
        rl.attacks.pgd(tiny_model, x, y, eps=0.1, restarts=3, random_start=False)
    with pytest.raises(ValueError, match="loss must be one of"):
        rl.attacks.pgd(tiny_model, x, y, eps=0.1, loss="kl")
    with pytest.raises(ValueError, match="step_size must be > 0"):
        rl.attacks.pgd(tiny_model, x, y, eps=0.1, step_size=-1.0)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        rl.attacks.pgd(tiny_model, x, y, eps=-0.1)


def test_smallest_eps_finds_the_first_successful_radius_on_a_linear_model():
    # for FGSM on a 2-class linear model the margin falls linearly in eps: the first grid
    # point past margin / ||w1 - w0||_1 is the answer
    torch.manual_seed(2)
    w0, w1 = torch.randn(16), torch.randn(16)
    model = Linear2(w0, w1)
    x = 0.3 + 0.4 * torch.rand(8, 16)
    with torch.no_grad():
        y = model(x).argmax(1)
        logits = model(x)
    margin = (logits.gather(1, y[:, None]) - logits.gather(1, (1 - y)[:, None])).squeeze(1)
    needed = margin / (w1 - w0).abs().sum()
    grid = torch.linspace(0.01, 0.3, 30)
    found, x_found = rl.attacks.smallest_eps(rl.attacks.fgsm, model, x, y, grid)
    for i in range(8):
        if needed[i] > 0.3:
            assert torch.isnan(found[i]) and torch.equal(x_found[i], x[i])
        else:
            expected = float(grid[grid >= needed[i] - 1e-6][0])
            assert float(found[i]) == pytest.approx(expected, abs=1e-6)
            assert int(model(x_found[i:i + 1]).argmax(1)) != int(y[i])


def test_smallest_eps_arguments_are_checked(tiny_model):
    x, y = torch.rand(2, 1, 8, 8), torch.arange(2)
    with pytest.raises(ValueError, match="eps_grid must be increasing"):
        rl.attacks.smallest_eps(rl.attacks.fgsm, tiny_model, x, y, [0.2, 0.1])
    with pytest.raises(ValueError, match="eps_grid must hold at least one value"):
        rl.attacks.smallest_eps(rl.attacks.fgsm, tiny_model, x, y, [])
    with pytest.raises(TypeError, match="attack must be callable"):
        rl.attacks.smallest_eps("fgsm", tiny_model, x, y, [0.1])


# ----------------------------------------------------------------------------- PGD in the L1 ball


def _l1_box_projection_by_bisection(z, x, eps):
    """Reference: the projection onto {||delta||_1 <= eps} and the box by bisection on the threshold (float64)."""
    v, x = (z - x).double().flatten(1), x.double().flatten(1)
    a, room = v.abs(), torch.where(v > 0, 1.0 - x, x)
    out = []
    for i in range(len(v)):
        size = lambda t: torch.minimum((a[i] - t).clamp_min(0.0), room[i]).sum()  # noqa: E731
        lo, hi = 0.0, float(a[i].max()) + 1.0
        if float(size(0.0)) <= float(eps[i]):
            hi = 0.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if float(size(mid)) > float(eps[i]) else (lo, mid)
        out.append(x[i] + v[i].sign() * torch.minimum((a[i] - hi).clamp_min(0.0), room[i]))
    return torch.stack(out)


def test_pgd_l1_projects_exactly_onto_the_l1_ball_in_the_box_and_keeps_the_contract():
    from robustlab.attacks.gradient import _project_l1_box

    torch.manual_seed(0)
    for _ in range(20):
        x = torch.rand(30, 24)
        x[:4], x[4:8] = 0.0, 1.0
        x[8:16] = torch.randint(0, 17, (8, 24)).float() / 16  # many coordinates on the faces of the box
        v = torch.randn(30, 24) * torch.rand(30, 1) * 2 * (torch.rand(30, 24) < torch.rand(30, 1))  # sparse steps
        eps = torch.rand(30) * 3
        eps[0] = 0.0
        p = _project_l1_box(x + v, x, eps)
        assert torch.allclose(p.double(), _l1_box_projection_by_bisection(x + v, x, eps), atol=1e-5)
        assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0
        assert bool(((p - x).abs().sum(1) <= eps + 1e-5).all())
    # and the attack itself, on random models and inputs on the faces of the box
    model = rl.models.build("cnn", "digits", width=4, seed=1).train()
    x = torch.rand(12, 1, 8, 8)
    x[:3], x[3:6] = 0.0, 1.0
    y = torch.randint(0, 10, (12,))
    eps = torch.rand(12) * 3.0
    x_adv = rl.attacks.pgd(model, x, y, eps=eps, norm="l1", steps=7, restarts=2, seed=0)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert bool((rl.norms.lp_distance(x_adv, x, "l1") <= eps + 1e-5).all())
    assert model.training and all(p.grad is None for p in model.parameters())
    again = rl.attacks.pgd(model, x, y, eps=eps, norm="l1", steps=7, restarts=2, seed=0)
    assert torch.equal(x_adv, again), "the random start is seeded"


def test_pgd_l1_beats_random_l1_noise_and_checks_its_arguments(digits, tiny_model):
    _, test = digits
    model, _ = rl.train.trained_model("digits", "cnn", progress=False)
    x, y = test.x[:300], test.y[:300]
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    noise = noise / noise.flatten(1).abs().sum(1).view(-1, 1, 1, 1)
    for eps in (1.0, 2.0):
        x_adv = rl.attacks.pgd(model, x, y, eps=eps, norm="l1", steps=20, seed=0)
        assert bool((rl.norms.lp_distance(x_adv, x, "l1") <= eps + 1e-5).all())
        adv, rand = rl.train.evaluate(model, (x_adv, y)), rl.train.evaluate(model, ((x + eps * noise).clamp(0, 1), y))
        assert rand > 0.9 and adv < rand - 0.25, (eps, adv, rand)
    xs, ys = torch.rand(4, 1, 8, 8), torch.arange(4)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        rl.attacks.pgd(tiny_model, xs, ys, eps=-0.5, norm="l1")
    with pytest.raises(ValueError, match=r"eps must be a number or a tensor of shape \(4,\)"):
        rl.attacks.pgd(tiny_model, xs, ys, eps=torch.ones(3), norm="l1")
    with pytest.raises(ValueError, match="topk must be an integer >= 1"):
        rl.attacks.pgd(tiny_model, xs, ys, eps=0.5, norm="l1", topk=0)
    with pytest.raises(ValueError, match="topk is a parameter of norm='l1' only"):
        rl.attacks.pgd(tiny_model, xs, ys, eps=0.5, norm="l2", topk=3)
    assert torch.equal(rl.attacks.pgd(tiny_model, xs, ys, eps=0.0, norm="l1", steps=3, seed=0), xs)
