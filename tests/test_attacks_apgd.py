"""APGD, APGD-T, the DLR losses, the attack ensemble, the last iterate and FGSM's step.

Unit tests on closed forms and small models; the strength of APGD and of the ensemble
against torchattacks on the PGD-trained digits model is in test_attacks_strength.py.
"""

import functools
import math

import pytest
import torch

import robustlab as rl
from helpers import Linear2

A = rl.attacks


def reference_checkpoints(steps):
    """The paper's schedule written out: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0 + 1e-9:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * steps, 6)) for q in p[1:]} - {0})


def test_apgd_checkpoints_follow_the_paper():
    # p = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99: the gaps shrink by 0.03 down to 0.06
    assert A.apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert A.apgd_checkpoints(10) == [3, 5, 6, 7, 8, 9, 10]
    for steps in (1, 2, 5, 17, 50, 250, 1000):
        w = A.apgd_checkpoints(steps)
        assert w == reference_checkpoints(steps), steps
        assert w == sorted(set(w)) and 0 < w[0] and w[-1] <= steps
    with pytest.raises(ValueError, match="steps must be"):
        A.apgd_checkpoints(0)


def reference_dlr(z, y, t=None):
    """The DLR losses written from their definitions, one sample at a time."""
    out = []
    for zi, yi, ti in zip(z.tolist(), y.tolist(), (t.tolist() if t is not None else [None] * len(y))):
        s = sorted(zi, reverse=True)
        if ti is None:
            other = max(v for j, v in enumerate(zi) if j != yi)
            out.append(-(zi[yi] - other) / (s[0] - s[2] + 1e-12))
        else:
            out.append(-(zi[yi] - zi[ti]) / (s[0] - (s[2] + s[3]) / 2 + 1e-12))
    return torch.tensor(out, dtype=torch.float64)


def test_dlr_losses_match_their_definitions_and_are_shift_and_scale_invariant():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 6, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 6, (50,), generator=g)
    t = (y + 1 + torch.randint(0, 5, (50,), generator=g)) % 6
    assert torch.allclose(A.dlr_loss(z, y), reference_dlr(z, y))
    assert torch.allclose(A.dlr_loss(z, y, t), reference_dlr(z, y, t))
    for a, b in ((2.5, -1.0), (0.1, 7.0)):
        assert torch.allclose(A.dlr_loss(a * z + b, y), A.dlr_loss(z, y))
        assert torch.allclose(A.dlr_loss(a * z + b, y, t), A.dlr_loss(z, y, t))
    # the untargeted loss is positive exactly where y is not the top class
    assert torch.equal(A.dlr_loss(z, y) > 0, z.argmax(1) != y)
    with pytest.raises(ValueError, match="at least 3 classes"):
        A.dlr_loss(torch.randn(4, 2), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="at least 4 classes"):
        A.dlr_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.int64), torch.ones(4, dtype=torch.int64))


class ModeProbe(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(self.training)
        return x


def probed_cnn(seed, classes=5):
    torch.manual_seed(seed)
    probe = ModeProbe()
    model = torch.nn.Sequential(probe, torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 64, classes))
    return model, probe


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack", ["apgd-ce", "apgd-dlr", "apgd-targeted", "apgd_t"])
def test_apgd_keeps_the_attack_contract(attack, norm):
    model, probe = probed_cnn(1)
    model.train()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(12, 1, 8, 8, generator=g)
    x[:3] = 0.0
    x[3:6] = 1.0
    y = torch.randint(0, 5, (12,), generator=g)
    eps = torch.rand(12, generator=g) * (0.3 if norm == "linf" else 2.0)
    before = x.clone()
    if attack == "apgd_t":
        run = functools.partial(A.apgd_t, model, x, y, eps=eps, norm=norm, steps=8, n_targets=3, seed=0)
    else:
        targets = (y + 1) % 5 if attack == "apgd-targeted" else None
        run = functools.partial(A.apgd, model, x, y, eps=eps, norm=norm, steps=8, restarts=2, targets=targets, seed=0,
                                loss="ce" if attack == "apgd-ce" else "dlr")
    x_adv = run()
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert bool((rl.norms.lp_distance(x_adv, x, norm) <= eps + 1e-5).all())
    assert torch.equal(x, before), "the attack must not modify its input"
    assert model.training and probe.seen and not any(probe.seen), "eval mode inside, the mode restored after"
    assert all(p.grad is None for p in model.parameters()), "gradients on the input only"
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert torch.equal(run(), x_adv), "seeded: repeats exactly"


def test_apgd_reaches_the_optimal_corner_of_a_linear_model():
    # two classes, logits w_k . x: raising the CE of y means moving along sign(w_other - w_y);
    # inside the box the optimum of the Linf ball is the corner x + eps * that sign
    torch.manual_seed(0)
    w0, w1 = torch.randn(16), torch.randn(16)
    model = Linear2(w0, w1)
    x = torch.full((4, 16), 0.5)
    y = torch.tensor([0, 1, 0, 1])
    direction = torch.where(y[:, None] == 0, torch.sign(w1 - w0), torch.sign(w0 - w1))
    with torch.no_grad():
        margin = (model(x).gather(1, y[:, None]).squeeze(1) - model(x).gather(1, 1 - y[:, None]).squeeze(1))
    for eps in (0.01, 0.3):
        x_adv = A.apgd(model, x, y, eps=eps, steps=20, seed=0)
        with torch.no_grad():
            fooled = model(x_adv).argmax(1) != y
        # the corner lowers the margin by eps * ||w1 - w0||_1: exactly the inputs it can flip are fooled
        assert torch.equal(fooled, margin < eps * (w1 - w0).abs().sum()), eps
        # an input not fooled ends at the loss-maximising corner
        assert torch.allclose((x_adv - x)[~fooled], eps * direction[~fooled], atol=1e-6)


def test_targeted_apgd_and_apgd_t_on_the_standard_cnn(digits):
    _, test = digits
    model, _ = rl.train.trained_model("digits", "cnn", progress=False)
    x, y = test.x[:60], test.y[:60]
    t = (y + 3) % 10
    # the targeted CE lowers the loss of t; the targeted DLR only raises z_t above z_y (and is
    # made for APGD-T's untargeted goal), so it reaches the target itself less often
    for loss, at_least in (("ce", 0.9), ("dlr", 0.8)):
        x_t = A.apgd(model, x, y, eps=0.3, loss=loss, steps=25, targets=t, seed=0)
        reached = float((rl.train.predict(model, x_t) == t).float().mean())
        assert reached >= at_least, (loss, reached)
    # APGD-T's goal is any misclassification: on the undefended CNN at eps 0.2 nearly all fall
    x_u = A.apgd_t(model, x, y, eps=0.2, steps=20, n_targets=3, seed=0)
    assert float((rl.train.predict(model, x_u) != y).float().mean()) >= 0.95
    with pytest.raises(ValueError, match="targets must be None"):
        A.apgd_t(model, x, y, eps=0.2, targets=t)


def test_apgd_t_tries_the_top_classes_in_order(monkeypatch):
    # a linear model on 4 pixels with 5 classes; logits z_k = w_k . x. Recording the labels
    # each targeted run pushes towards shows the order: by decreasing clean logit, never y.
    seen = []

    class Recording(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 5, bias=False)
            with torch.no_grad():
                self.lin.weight.copy_(torch.eye(5, 4) * 10)

        def forward(self, x):
            return self.lin(x)

    model = Recording()
    x = torch.tensor([[0.9, 0.5, 0.7, 0.1]])  # logits 9, 5, 7, 1, 0: order 0, 2, 1, 3, 4
    y = torch.tensor([0])
    orig = A.autopgd._apgd_run

    def spy(model, x, y, targets, *args, **kwargs):
        seen.append(int(targets[0]))
        return orig(model, x, y, targets, *args, **kwargs)

    monkeypatch.setattr(A.autopgd, "_apgd_run", spy)
    A.apgd_t(model, x, y, eps=0.01, steps=3, n_targets=9, seed=0)  # too small to fool: every target runs
    assert seen == [2, 1, 3, 4], "targets: the classes other than y by decreasing logit, capped at classes - 1"


def test_return_last_gives_the_last_iterate_beside_the_best():
    torch.manual_seed(0)
    w0, w1 = torch.randn(16), torch.randn(16)
    model = Linear2(w0, w1)
    x = torch.rand(6, 16) * 0.5 + 0.25
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    eps, a, steps = 0.1, 0.03, 4
    best, last = A.pgd(model, x, y, eps=eps, steps=steps, step_size=a, random_start=False, return_last=True)
    assert isinstance(A.pgd(model, x, y, eps=eps, steps=steps, step_size=a, random_start=False, return_last=True),
                      A.Iterates)
    assert torch.equal(best, A.pgd(model, x, y, eps=eps, steps=steps, step_size=a, random_start=False))
    manual = x.clone()
    for _ in range(steps):  # PGD without any bookkeeping: the last iterate
        g = A.input_gradient(model, manual, y)
        manual = torch.minimum(torch.maximum(manual + a * g.sign(), x - eps), x + eps).clamp(0, 1)
    assert torch.allclose(last, manual, atol=1e-6)
    for attack in (functools.partial(A.apgd, steps=6), functools.partial(A.apgd_t, steps=4, n_targets=1)):
        model5, _ = probed_cnn(2)
        xi, yi = torch.rand(8, 1, 8, 8), torch.arange(8) % 5
        b, l = attack(model5, xi, yi, eps=0.1, seed=3, return_last=True)
        assert torch.equal(b, attack(model5, xi, yi, eps=0.1, seed=3))
        assert float((l - xi).abs().max()) <= 0.1 + 1e-6 and float(l.min()) >= 0 and float(l.max()) <= 1
    model5, _ = probed_cnn(3)
    xi, yi = torch.rand(8, 1, 8, 8), torch.arange(8) % 5
    b, l = A.patch(model5, xi, yi, eps=3, steps=4, locations=(1, 1), seed=0, return_last=True)
    assert torch.equal(b, A.patch(model5, xi, yi, eps=3, steps=4, locations=(1, 1), seed=0))
    assert not bool((l != xi)[:, :, 4:, :].any() or (l != xi)[:, :, :, 4:].any() or (l != xi)[:, :, :1].any())
    with pytest.raises(TypeError, match="return_last must be True or False"):
        A.pgd(model, x, y, eps=0.1, return_last=1)


def test_fgsm_step_and_random_start():
    torch.manual_seed(0)
    w0, w1 = torch.randn(16), torch.randn(16)
    model = Linear2(w0, w1)
    x = torch.full((3, 16), 0.5)
    y = torch.tensor([0, 1, 0])
    plain = A.fgsm(model, x, y, eps=0.1)
    assert torch.equal(A.fgsm(model, x, y, eps=0.1, step_size=0.1), plain)
    # a step larger than eps is projected back onto the ball: the same corner
    assert torch.allclose(A.fgsm(model, x, y, eps=0.1, step_size=0.3), plain)
    # a smaller step stops inside the ball
    assert torch.allclose(A.fgsm(model, x, y, eps=0.1, step_size=0.04) - x, 0.4 * (plain - x), atol=1e-6)
    fast = A.fgsm(model, x, y, eps=0.1, step_size=0.125, random_start=True, seed=0)
    assert float((fast - x).abs().max()) <= 0.1 + 1e-6
    assert torch.equal(fast, A.fgsm(model, x, y, eps=0.1, step_size=0.125, random_start=True, seed=0))
    assert not torch.equal(fast, plain)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        A.fgsm(model, x, y, eps=0.1, step_size=0.0)
    with pytest.raises(TypeError, match="random_start must be True or False"):
        A.fgsm(model, x, y, eps=0.1, random_start="yes")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(eps=-0.1), ValueError, "eps must be >= 0"),
    (dict(eps=0.1, norm="l1"), ValueError, "norm must be one of"),
    (dict(eps=0.1, loss="cw"), ValueError, "loss must be one of"),
    (dict(eps=0.1, steps=0), ValueError, "steps must be"),
    (dict(eps=0.1, restarts=0), ValueError, "restarts must be"),
    (dict(eps=0.1, rho=1.5), ValueError, r"rho must be in \[0, 1\]"),
    (dict(eps=0.1, momentum=0.0), ValueError, r"momentum must be in \(0, 1\]"),
    (dict(eps=0.1, seed=-1), ValueError, "seed must be an integer >= 0"),
])
def test_apgd_arguments_are_checked(kwargs, error, message):
    model, _ = probed_cnn(0)
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    with pytest.raises(error, match=message):
        A.apgd(model, x, y, **kwargs)


def test_apgd_t_needs_four_classes_and_checks_its_targets():
    model, _ = probed_cnn(0, classes=3)
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4) % 3
    with pytest.raises(ValueError, match="at least 4 classes"):
        A.apgd_t(model, x, y, eps=0.1, steps=2)
    model, _ = probed_cnn(0)
    with pytest.raises(ValueError, match="n_targets must be"):
        A.apgd_t(model, x, y, eps=0.1, n_targets=0)


# ----------------------------------------------------------------------------- the ensemble


@pytest.fixture(scope="module")
def standard_subset():
    model, _ = rl.train.trained_model("digits", "cnn", progress=False)
    _, test = rl.data.load("digits")
    return model, test.x[:100], test.y[:100]


def test_an_input_is_robust_only_if_every_part_fails(standard_subset):
    model, x, y = standard_subset
    # deterministic parts, so running them alone gives exactly what they do inside the ensemble
    weak = ("fgsm", functools.partial(A.fgsm, step_size=None))
    strong = ("pgd no start", functools.partial(A.pgd, steps=10, random_start=False))
    eps = 0.08
    res = A.ensemble(model, x, y, eps=eps, attacks=[weak, strong], progress=False, return_result=True)
    pred = lambda xa: rl.train.predict(model, xa)  # noqa: E731
    clean = pred(x) == y
    weak_fails = pred(A.fgsm(model, x, y, eps=eps)) == y
    strong_fails = pred(A.pgd(model, x, y, eps=eps, steps=10, random_start=False)) == y
    assert torch.equal(res.clean, clean)
    assert torch.equal(res.robust, clean & weak_fails & strong_fails)
    assert torch.equal(res.broken_by == 0, clean & ~weak_fails)
    assert torch.equal(res.broken_by == 1, clean & weak_fails & ~strong_fails)
    assert res.names == ("fgsm", "pgd no start")
    assert res.stages[0] >= res.stages[1] == res.robust_accuracy
    assert res.counts() == {"fgsm": int((res.broken_by == 0).sum()), "pgd no start": int((res.broken_by == 1).sum())}
    broken = res.broken_by >= 0
    assert bool((pred(res.x_adv)[broken] != y[broken]).all()), "x_adv is the successful input where one was found"
    assert torch.equal(res.x_adv[~broken], x[~broken])
    assert float((res.x_adv - x).abs().max()) <= eps + 1e-6
    assert "robust accuracy" in res.table() and "pgd no start" in repr(res)
    # the contract form returns x_adv alone
    assert torch.equal(A.ensemble(model, x, y, eps=eps, attacks=[weak, strong], progress=False), res.x_adv)


def test_each_part_runs_only_on_the_inputs_still_robust(standard_subset):
    model, x, y = standard_subset
    sizes = []

    def recording(name, attack):
        def run(m, xb, yb, *, eps):
            sizes.append((name, len(xb)))
            return attack(m, xb, yb, eps=eps)
        return name, run

    res = A.ensemble(model, x, y, eps=0.1, batch_size=32, progress=False, return_result=True,
                     attacks=[recording("fgsm", A.fgsm), recording("pgd", functools.partial(A.pgd, steps=5, seed=0))])
    seen = {name: sum(n for k, n in sizes if k == name) for name in ("fgsm", "pgd")}
    assert seen["fgsm"] == int(res.clean.sum())
    assert seen["pgd"] == int(res.clean.sum()) - res.counts()["fgsm"]
    assert all(n <= 32 for _, n in sizes)


def test_the_default_ensemble_and_robust_accuracy(standard_subset, capsys):
    model, x, y = standard_subset
    x, y = x[:16], y[:16]  # at eps 0.1 APGD-CE breaks nearly all of them: a quick run of all three parts
    res = A.ensemble(model, x, y, eps=0.1, return_result=True, progress=True)
    assert res.names == A.DEFAULT_ENSEMBLE == ("apgd-ce", "apgd-t", "square")
    assert "ensemble: apgd-ce" in capsys.readouterr().err, "one progress bar per part"
    acc = A.robust_accuracy(model, (x, y), eps=0.1, progress=False)
    assert acc == res.robust_accuracy, "robust_accuracy runs the ensemble by default, seeded"
    apgd_only = A.robust_accuracy(model, (x, y), eps=0.1, attacks=["apgd-ce"], progress=False)
    assert acc <= apgd_only
    pgd_acc = A.robust_accuracy(model, (x, y), A.pgd, eps=0.1, steps=10, seed=0, progress=False)
    assert acc <= pgd_acc + 1e-9
    l2 = A.ensemble(model, x, y, eps=0.5, norm="l2", attacks=["apgd-dlr", "pgd"], progress=False, return_result=True)
    assert float(rl.norms.lp_distance(l2.x_adv, x, "l2").max()) <= 0.5 + 1e-5


def test_ensemble_arguments_are_checked(standard_subset):
    model, x, y = standard_subset
    x, y = x[:8], y[:8]
    with pytest.raises(ValueError, match="targets must be None"):
        A.ensemble(model, x, y, eps=0.1, targets=y)
    with pytest.raises(ValueError, match="attacks must be one of"):
        A.ensemble(model, x, y, eps=0.1, attacks=["autoattack"])
    with pytest.raises(ValueError, match="at least one attack"):
        A.ensemble(model, x, y, eps=0.1, attacks=[])
    with pytest.raises(ValueError, match="distinct names"):
        A.ensemble(model, x, y, eps=0.1, attacks=["pgd", "pgd"])
    with pytest.raises(TypeError, match="attacks must hold"):
        A.ensemble(model, x, y, eps=0.1, attacks=[3])
    with pytest.raises(ValueError, match="norm must be one of"):
        A.ensemble(model, x, y, eps=0.1, norm="l0")
    with pytest.raises(ValueError, match="eps must be >= 0"):
        A.ensemble(model, x, y, eps=-1.0)
    with pytest.raises(ValueError, match="y has 7 labels but the batch has 8"):
        A.ensemble(model, x, y[:7], eps=0.1)
    cheat = ("too far", lambda m, xb, yb, *, eps: (xb + 2 * eps).clamp(0, 1))
    with pytest.raises(ValueError, match="'too far' broke the contract"):
        A.ensemble(model, x, y, eps=0.1, attacks=[cheat], progress=False)
    with pytest.raises(TypeError, match="must return x_adv as a tensor"):
        A.ensemble(model, x, y, eps=0.1, attacks=[("none", lambda m, xb, yb, *, eps: None)], progress=False)
    with pytest.raises(TypeError, match="attack must be callable"):
        A.robust_accuracy(model, (x, y), "pgd", eps=0.1)
