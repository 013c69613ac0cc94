"""Every attack keeps the attack contract, checked on random models and inputs.

The contract (see the architecture guide): ``x_adv`` in [0, 1] and within the budget in
the attack's own unit; the model runs in eval mode inside the attack and gets its mode
back; no parameter gradient is created; the result is a plain tensor (no graph) on the
device of the input batch; the input is not modified; seeded attacks repeat exactly. Arguments are
checked with errors that name them.
"""

import pytest
import torch

import robustlab as rl

A = rl.attacks


class ModeProbe(torch.nn.Module):
    """An identity layer that records, at every forward, the mode and whether autograd was on."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, torch.is_grad_enabled()))
        return x


def colour_cnn(seed):
    """A random 3-channel CNN on 6x6 images (5 classes), with a probe after its input."""
    torch.manual_seed(seed)
    probe = ModeProbe()
    model = torch.nn.Sequential(probe, torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Dropout(0.5), torch.nn.Flatten(), torch.nn.Linear(6 * 36, 5))
    return model, probe


def inputs(seed, n=10):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 6, 6, generator=g)
    x[:2] = 0.0
    x[2:4] = 1.0  # inputs on the box's faces must stay inside it
    y = torch.randint(0, 5, (n,), generator=g)
    return x, y


def pixels_changed(x_adv, x):
    """Per sample, the number of locations (h, w) where any channel changed."""
    return (x_adv != x).any(1).flatten(1).sum(1)


def inside_one_square(x_adv, x, side):
    changed = (x_adv != x).any(1)  # (B, H, W)
    for m in changed:
        rows, cols = torch.nonzero(m, as_tuple=True)
        if len(rows) and (int(rows.max() - rows.min()) >= side or int(cols.max() - cols.min()) >= side):
            return False
    return True


def linf_eps(n, g):
    return torch.rand(n, generator=g) * 0.3


def l2_eps(n, g):
    return torch.rand(n, generator=g) * 2.0


# name -> (run(model, x, y, targets, seed) -> x_adv, budget_ok(x_adv, x) -> bool)
def _cases():
    def pgd(norm):
        def run(model, x, y, targets, seed):
            g = torch.Generator().manual_seed(seed)
            eps = linf_eps(len(x), g) if norm == "linf" else l2_eps(len(x), g)
            run.eps = eps
            return A.pgd(model, x, y, eps=eps, norm=norm, steps=5, restarts=2, targets=targets, seed=seed)
        return run, lambda xa, x: bool((rl.norms.lp_distance(xa, x, norm) <= run.eps + 1e-5).all())

    def square(norm):
        def run(model, x, y, targets, seed):
            g = torch.Generator().manual_seed(seed)
            eps = linf_eps(len(x), g) if norm == "linf" else l2_eps(len(x), g)
            run.eps = eps
            return A.square(model, x, y, eps=eps, norm=norm, queries=40, targets=targets, seed=seed)
        return run, lambda xa, x: bool((rl.norms.lp_distance(xa, x, norm) <= run.eps + 1e-5).all())

    def cw(model, x, y, targets, seed):
        return A.cw_l2(model, x, y, eps=0.4, binary_steps=3, steps=15, targets=targets)

    def sparse(model, x, y, targets, seed):
        return A.sparse_l0(model, x, y, eps=5, pixels_per_step=2, targets=targets)

    def patch(locations):
        def run(model, x, y, targets, seed):
            return A.patch(model, x, y, eps=3, steps=5, locations=locations, tries=2, targets=targets, seed=seed)
        return run, lambda xa, x: inside_one_square(xa, x, 3)

    def fgsm(model, x, y, targets, seed):
        return A.fgsm(model, x, y, eps=0.1, targets=targets)

    return {
        "fgsm": (fgsm, lambda xa, x: bool((rl.norms.lp_distance(xa, x, "linf") <= 0.1 + 1e-6).all())),
        "pgd-linf": pgd("linf"),
        "pgd-l2": pgd("l2"),
        "cw_l2": (cw, lambda xa, x: bool((rl.norms.lp_distance(xa, x, "l2") <= 0.4 + 1e-5).all())),
        "square-linf": square("linf"),
        "square-l2": square("l2"),
        "sparse_l0": (sparse, lambda xa, x: bool((pixels_changed(xa, x) <= 5).all())),
        "patch-fixed": patch((2, 1)),
        "patch-random": patch("random"),
    }


CASES = _cases()


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_attack_respects_the_contract_on_random_models_and_inputs(name, seed, targeted):
    run, budget_ok = CASES[name]
    model, probe = colour_cnn(seed)
    model.train()
    x, y = inputs(seed)
    x_before = x.clone()
    targets = (y + 1 + torch.arange(len(y)) % 4) % 5 if targeted else None
    x_adv = run(model, x, y, targets, seed)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0, "x_adv must stay in the box [0, 1]"
    assert budget_ok(x_adv, x), f"{name} left its budget"
    assert torch.equal(x, x_before), "the attack must not modify its input"
    assert model.training, "the model's mode must be restored"
    assert probe.seen and not any(training for training, _ in probe.seen), "the model must run in eval mode inside"
    assert all(p.grad is None for p in model.parameters()), "attacks must not touch parameter gradients"
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert x_adv.device == x.device


def test_the_black_box_attack_never_enables_autograd():
    model, probe = colour_cnn(0)
    x, y = inputs(0)
    for norm in ("linf", "l2"):
        probe.seen.clear()
        A.square(model, x, y, eps=0.2 if norm == "linf" else 1.0, norm=norm, queries=30, seed=0)
        assert probe.seen and not any(grad for _, grad in probe.seen), "square must use only the model's outputs"


@pytest.mark.parametrize("attack, kwargs", [
    (A.pgd, dict(eps=0.2, steps=3)),
    (A.square, dict(eps=0.2, queries=30)),
    (A.patch, dict(eps=2, steps=3)),
], ids=["pgd", "square", "patch"])
def test_seeded_attacks_repeat_exactly_and_seeds_matter(attack, kwargs):
    model, _ = colour_cnn(1)
    x, y = inputs(1)
    a = attack(model, x, y, seed=5, **kwargs)
    b = attack(model, x, y, seed=5, **kwargs)
    c = attack(model, x, y, seed=6, **kwargs)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_deterministic_attacks_repeat_exactly():
    model, _ = colour_cnn(2)
    x, y = inputs(2)
    assert torch.equal(A.cw_l2(model, x, y, binary_steps=2, steps=10), A.cw_l2(model, x, y, binary_steps=2, steps=10))
    assert torch.equal(A.sparse_l0(model, x, y, eps=3), A.sparse_l0(model, x, y, eps=3))


def test_zero_budgets_return_the_input():
    model, _ = colour_cnn(3)
    x, y = inputs(3)
    assert torch.equal(A.square(model, x, y, eps=0.0, queries=10, seed=0), x)
    assert torch.equal(A.square(model, x, y, eps=0.0, norm="l2", queries=10, seed=0), x)
    assert torch.equal(A.sparse_l0(model, x, y, eps=0), x)
    assert torch.equal(A.patch(model, x, y, eps=0), x)
    assert torch.equal(A.cw_l2(model, x, y, eps=0.0, binary_steps=1, steps=5), x)


def test_sparse_l0_counts_pixels_not_channels_and_works_on_flat_inputs():
    model, _ = colour_cnn(4)
    x, y = inputs(4)
    x_adv = A.sparse_l0(model, x, y, eps=4)
    channel_changes = (x_adv != x).flatten(1).sum(1)
    assert bool((pixels_changed(x_adv, x) <= 4).all())
    assert bool((channel_changes > 4).any()), "a pixel carries all its channels: more than 4 values may change"
    flat = torch.nn.Sequential(torch.nn.Linear(12, 3))
    xf, yf = torch.rand(6, 12), torch.arange(6) % 3
    xf_adv = A.sparse_l0(flat, xf, yf, eps=2)
    assert bool(((xf_adv != xf).sum(1) <= 2).all())
    assert bool(((xf_adv == xf) | (xf_adv == 0) | (xf_adv == 1)).all()), "changed features go to 0 or 1"


def test_square_reports_the_queries_it_used():
    model, _ = colour_cnn(5)
    x, y = inputs(5)
    x_adv, used = A.square(model, x, y, eps=0.3, queries=25, seed=0, return_queries=True)
    with torch.no_grad():
        fooled = model.eval()(x_adv).argmax(1) != y
    assert used.dtype == torch.int64 and used.shape == (len(x),)
    assert bool((used >= 1).all()) and bool((used <= 25).all())
    assert bool((used[~fooled] == 25).all()), "a sample not fooled uses the whole budget"


# ----------------------------------------------------------------------------- argument checks


@pytest.fixture
def batch():
    model, _ = colour_cnn(0)
    x, y = inputs(0, n=4)
    return model, x, y


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(kappa=-1.0), ValueError, "kappa must be >= 0"),
    (dict(c_init=0.0), ValueError, "c_init must be > 0"),
    (dict(binary_steps=0), ValueError, "binary_steps must be an integer >= 1"),
    (dict(steps=2.5), TypeError, "steps must be an integer"),
    (dict(lr=-0.1), ValueError, "lr must be > 0"),
    (dict(lr_decay="yes"), TypeError, "lr_decay must be True or False"),
    (dict(abort_early=1), TypeError, "abort_early must be True or False"),
    (dict(eps=-0.5), ValueError, "eps must be >= 0"),
    (dict(eps=torch.ones(3)), ValueError, r"eps must be a number or a tensor of shape \(4,\)"),
])
def test_cw_l2_arguments_are_checked(batch, kwargs, error, message):
    model, x, y = batch
    with pytest.raises(error, match=message):
        A.cw_l2(model, x, y, **kwargs)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(eps=-0.1), ValueError, "eps must be >= 0"),
    (dict(eps=0.1, norm="l1"), ValueError, "norm must be one of"),
    (dict(eps=0.1, queries=0), ValueError, "queries must be an integer >= 1"),
    (dict(eps=0.1, p_init=1.5), ValueError, r"p_init must be a fraction of the pixels in \(0, 1\]"),
    (dict(eps=0.1, p_init=0.0), ValueError, "p_init must be > 0"),
    (dict(eps=0.1, seed=-1), ValueError, "seed must be an integer >= 0"),
    (dict(eps=0.1, return_queries="no"), TypeError, "return_queries must be True or False"),
    (dict(eps=0.1, targets=torch.arange(3)), ValueError, "targets has 3 labels but the batch has 4"),
])
def test_square_arguments_are_checked(batch, kwargs, error, message):
    model, x, y = batch
    with pytest.raises(error, match=message):
        A.square(model, x, y, **kwargs)


def test_square_and_patch_need_images():
    flat = torch.nn.Linear(12, 3)
    x, y = torch.rand(4, 12), torch.arange(4) % 3
    with pytest.raises(ValueError, match=r"x must be a batch of images of shape \(B, C, H, W\) for square"):
        A.square(flat, x, y, eps=0.1)
    with pytest.raises(ValueError, match=r"x must be a batch of images of shape \(B, C, H, W\) for patch"):
        A.patch(flat, x, y, eps=2)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(eps=2.0), TypeError, "eps must be an integer number of pixels"),
    (dict(eps=True), TypeError, "eps must be an integer number of pixels"),
    (dict(eps=-1), ValueError, "eps must be an integer >= 0"),
    (dict(eps=3, pixels_per_step=0), ValueError, "pixels_per_step must be an integer >= 1"),
    (dict(eps=3, loss="mse"), ValueError, "loss must be one of"),
])
def test_sparse_l0_arguments_are_checked(batch, kwargs, error, message):
    model, x, y = batch
    with pytest.raises(error, match=message):
        A.sparse_l0(model, x, y, **kwargs)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(eps=0.5), TypeError, "eps must be an integer number of pixels"),
    (dict(eps=7), ValueError, r"eps \(the patch side\) must be at most min\(H, W\) = 6"),
    (dict(eps=2, locations="corner"), ValueError, "locations must be one of"),
    (dict(eps=2, locations=(1,)), TypeError, r"locations must be 'random' or a \(row, col\) pair"),
    (dict(eps=2, locations=(0.5, 1)), TypeError, r"locations must be 'random' or a \(row, col\) pair"),
    (dict(eps=3, locations=(4, 0)), ValueError, r"locations \(4, 0\) puts the 3x3 patch outside the 6x6 image"),
    (dict(eps=2, tries=0), ValueError, "tries must be an integer >= 1"),
    (dict(eps=2, steps=0), ValueError, "steps must be an integer >= 1"),
    (dict(eps=2, step_size=0.0), ValueError, "step_size must be > 0"),
])
def test_patch_arguments_are_checked(batch, kwargs, error, message):
    model, x, y = batch
    with pytest.raises(error, match=message):
        A.patch(model, x, y, **kwargs)


@pytest.mark.parametrize("attack, kwargs", [
    (A.cw_l2, {}), (A.square, dict(eps=0.1)), (A.sparse_l0, dict(eps=2)), (A.patch, dict(eps=2)),
], ids=["cw_l2", "square", "sparse_l0", "patch"])
def test_new_attacks_check_model_inputs_and_labels(batch, attack, kwargs):
    model, x, y = batch
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        attack(lambda t: t, x, y, **kwargs)
    with pytest.raises(ValueError, match=r"x must have values in \[0, 1\]"):
        attack(model, x * 2, y, **kwargs)
    with pytest.raises(ValueError, match="y has 3 labels but the batch has 4"):
        attack(model, x, y[:3], **kwargs)
    with pytest.raises(TypeError, match="y must be an int64"):
        attack(model, x, y.float(), **kwargs)
