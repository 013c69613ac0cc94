import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustlab as rl
from robustlab.training import (
    CatastrophicOverfittingGuard,
    FastFGSMLoss,
    GaussianNoiseLoss,
    PGDLoss,
    TradesLoss,
)


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def _pgd_accuracy(model, data, eps, steps=20):
    x_adv = rl.attacks.pgd(model, data.x, data.y, eps=eps, steps=steps, seed=0)
    return rl.train.evaluate(model, (x_adv, data.y))


@pytest.fixture(scope="module")
def batch():
    train, _ = rl.data.load("digits")
    return rl.data.subset(train, 64, seed=1)


@pytest.fixture(scope="module")
def fitted(batch):
    """A small CNN fitted to the batch, so that its losses are far from uniform."""
    model = rl.models.build("cnn", "digits", width=8, seed=0)
    rl.train.fit(model, batch, epochs=8, lr=5e-3, progress=False)
    return model.eval()


# --------------------------------------------------------------------------- loss values


def test_gaussian_noise_with_sigma_zero_is_cross_entropy(batch):
    model = rl.models.build("cnn", "digits", width=4)
    loss, logits = GaussianNoiseLoss(sigma=0.0)(model, batch.x, batch.y)
    ce, ce_logits = rl.train.cross_entropy_loss(model, batch.x, batch.y)
    assert torch.equal(loss, ce) and torch.equal(logits, ce_logits)


def test_gaussian_noise_draws_unclamped_noise_of_the_right_scale(batch):
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x.detach().clone())
            return x.flatten(1)[:, :10]

    torch.manual_seed(0)
    GaussianNoiseLoss(sigma=0.5)(Spy(), batch.x, batch.y)
    noise = seen[0] - batch.x
    assert noise.std().item() == pytest.approx(0.5, rel=0.1) and abs(noise.mean().item()) < 0.05
    assert seen[0].min() < 0 and seen[0].max() > 1, "the default noise is not clamped (Cohen et al.)"
    GaussianNoiseLoss(sigma=0.5, clamp=True)(Spy(), batch.x, batch.y)
    assert seen[1].min() >= 0 and seen[1].max() <= 1


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_trades_with_beta_zero_is_cross_entropy(batch, eps):
    model = rl.models.build("cnn", "digits", width=4)
    loss, logits = TradesLoss(eps=eps, beta=0.0, steps=3)(model, batch.x, batch.y)
    ce, _ = rl.train.cross_entropy_loss(model, batch.x, batch.y)
    assert torch.allclose(loss, ce, atol=1e-6)
    assert torch.allclose(logits, model(batch.x)), "TRADES reports the clean logits"


def test_trades_with_eps_zero_has_no_regulariser(batch):
    model = rl.models.build("cnn", "digits", width=4)
    loss, _ = TradesLoss(eps=0.0, beta=6.0, steps=3)(model, batch.x, batch.y)
    assert torch.allclose(loss, rl.train.cross_entropy_loss(model, batch.x, batch.y)[0], atol=1e-6)


def test_trades_regulariser_is_beta_times_the_kl_it_maximised(batch, fitted):
    model = fitted
    torch.manual_seed(3)
    l1, _ = TradesLoss(eps=0.2, beta=1.0, steps=5)(model, batch.x, batch.y)
    torch.manual_seed(3)
    l6, _ = TradesLoss(eps=0.2, beta=6.0, steps=5)(model, batch.x, batch.y)
    ce = rl.train.cross_entropy_loss(model, batch.x, batch.y)[0]
    kl = l1 - ce
    assert kl > 0
    assert torch.allclose(l6 - ce, 6 * kl, rtol=1e-3)
    # the KL it found beats the KL of the initial 0.001-noise point by a wide margin
    with torch.no_grad():
        p = model(batch.x)
        near = F.kl_div(F.log_softmax(model((batch.x + 0.001 * torch.randn_like(batch.x)).clamp(0, 1)), 1),
                        F.log_softmax(p, 1), reduction="batchmean", log_target=True)
    assert kl > 10 * near


def test_trades_example_stays_in_the_ball_and_the_box(batch):
    model = rl.models.build("cnn", "digits", width=4)
    x_adv = TradesLoss(eps=0.15, steps=4).adversarial_example(model, batch.x, 0.15)
    assert (x_adv - batch.x).abs().max() <= 0.15 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_training_loss_is_at_least_the_clean_loss(batch, fitted):
    model = fitted
    torch.manual_seed(0)
    adv, adv_logits = PGDLoss(eps=0.1, steps=5)(model, batch.x, batch.y)
    clean, _ = rl.train.cross_entropy_loss(model, batch.x, batch.y)
    assert adv > clean
    assert PGDLoss(eps=0.0)(model, batch.x, batch.y)[0].item() == pytest.approx(clean.item())
    # the logits are those of the adversarial batch: fewer of them are right
    assert (adv_logits.argmax(1) == batch.y).sum() < (model(batch.x).argmax(1) == batch.y).sum()


def test_fast_fgsm_example_follows_wong_et_al(batch):
    model = rl.models.build("cnn", "digits", width=4)
    torch.manual_seed(0)
    x_adv = rl.training.fast_fgsm_example(model, batch.x, batch.y, eps=0.1, step_size=0.125)
    delta = x_adv - batch.x
    assert delta.abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    # from a random start, a step of 1.25 eps leaves some coordinates inside the ball
    inside = (delta.abs() < 0.1 - 1e-4) & (x_adv > 0) & (x_adv < 1)
    assert inside.any()
    # without the random start the step is plain FGSM
    x_fgsm = rl.training.fast_fgsm_example(model, batch.x, batch.y, eps=0.1, step_size=0.1, random_start=False)
    assert torch.allclose(x_fgsm, rl.attacks.fgsm(model, batch.x, batch.y, eps=0.1))
    # it is rl.attacks.fgsm with a random start drawn from the global generator
    torch.manual_seed(0)
    x_attack = rl.attacks.fgsm(model, batch.x, batch.y, eps=0.1, step_size=0.125, random_start=True)
    assert torch.equal(x_adv, x_attack)


def test_fast_fgsm_step_defaults_to_one_and_a_quarter_eps():
    assert FastFGSMLoss(eps=0.2).step_for(0.2) == pytest.approx(0.25)
    assert FastFGSMLoss(eps=0.2, step_size=0.4).step_for(0.1) == pytest.approx(0.2), "the step scales with a ramped eps"


def _old_counter_eps(eps, ramp, k):
    """The radius the former call-counting ramp gave its k-th call (0-based)."""
    if ramp <= 0 or k >= ramp:
        return float(eps)
    return float(eps) * (k + 1) / ramp


@pytest.mark.parametrize("make", [lambda r: PGDLoss(eps=0.3, ramp=r), lambda r: FastFGSMLoss(eps=0.2, ramp=r),
                                  lambda r: TradesLoss(eps=0.22000000000000003, ramp=r)])
@pytest.mark.parametrize("ramp", [0, 3, 115, 230])
def test_eps_ramp_per_step_equals_the_former_call_counter(make, ramp):
    loss = make(ramp)
    assert loss.wants_step
    for k in range(ramp + 5):
        new, old = loss.eps_at(k), _old_counter_eps(loss.eps, ramp, k)
        assert new == pytest.approx(old, rel=1e-15, abs=0)
        # the training tensors are float32: there the two are the same number
        assert torch.tensor(new, dtype=torch.float32) == torch.tensor(old, dtype=torch.float32)
    assert loss.eps_at(None) == loss.eps, "a call outside fit is at the full radius"
    assert loss.eps_at(rl.train.TrainingStep(1, 0, 1, 10, 10)) == loss.eps_at(1)


def test_fit_passes_the_step_and_the_ramp_restarts_with_every_run():
    seen = []

    class Recording(PGDLoss):
        def __call__(self, model, x, y, step=None):
            seen.append((step, self.eps_at(step)))
            return super().__call__(model, x, y, step=step)

    loss = Recording(eps=0.3, steps=1, ramp=3)
    model = rl.models.build("mlp", "digits", width=1)
    data = (torch.rand(10, 1, 8, 8), torch.arange(10))
    for _ in range(2):  # the same object trains two runs; each starts its ramp from batch 0
        seen.clear()
        rl.train.fit(model, data, epochs=2, batch_size=4, progress=False, loss_fn=loss)
        assert [s.index for s, _ in seen] == list(range(6))
        assert [(s.epoch, s.batch) for s, _ in seen] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
        assert {(s.batches_per_epoch, s.total) for s, _ in seen} == {(3, 6)}
        assert [e for _, e in seen] == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3, 0.3])
    assert repr(loss).endswith("(eps=0.3, norm='linf', steps=1, step_size=None, random_start=True, ramp=3)")


def test_ibp_schedule_is_the_shared_ramp_with_a_delay():
    loss = rl.certify.bounds.IBPLoss(eps=0.2, kappa=0.5, warmup=2, ramp=4)
    assert loss.wants_step
    old = []  # the former counter's formula
    for k in range(8):
        t = 0.0 if k < 2 else min(1.0, (k - 2 + 1) / 4)
        old.append((0.0, 1.0) if k < 2 else (0.2 * t, 1.0 - 0.5 * t))
    assert [loss.schedule(k) for k in range(8)] == old  # bit for bit
    assert loss.schedule(None) == (0.2, 0.5)
    assert rl.certify.bounds.IBPLoss(eps=0.2, warmup=0, ramp=0).schedule(0) == (0.2, 0.5)


def test_ramp_checks_its_arguments():
    with pytest.raises(ValueError, match="length"):
        rl.train.ramp(0, -1)
    with pytest.raises(ValueError, match="delay"):
        rl.train.ramp(0, 2, delay=-1)
    with pytest.raises((ValueError, TypeError), match="step"):
        rl.train.ramp(-1, 2)


# --------------------------------------------------------------------------- modes and parameters


class ModeSpy(nn.Module):
    """Records the mode of every forward pass and whether parameters get gradients there."""

    def __init__(self):
        super().__init__()
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return x


def _bn_model(spy):
    torch.manual_seed(0)
    return nn.Sequential(spy, nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(256, 10))


@pytest.mark.parametrize("make", [
    lambda: PGDLoss(eps=0.1, steps=3),
    lambda: FastFGSMLoss(eps=0.1),
    lambda: TradesLoss(eps=0.1, steps=3),
])
def test_the_attack_runs_in_eval_mode_and_the_update_in_train_mode(batch, make):
    spy = ModeSpy()
    model = _bn_model(spy).train()
    bn = model[2]
    loss, _ = make()(model, batch.x, batch.y)
    assert model.training, "the loss leaves the model in training mode"
    assert all(p.grad is None for p in model.parameters()), "the attack does not touch parameter gradients"
    trained = [m for m in spy.modes if m]
    assert spy.modes[-1] and False in spy.modes, "attack forwards in eval mode, the loss forward in train mode"
    # BatchNorm statistics move only with the train-mode forwards of the loss, never with the attack's iterates
    assert int(bn.num_batches_tracked) == len(trained) == (2 if isinstance(make(), TradesLoss) else 1)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_pgd_training_matches_a_hand_written_madry_step(batch):
    model = _bn_model(nn.Identity()).train()
    ref = copy.deepcopy(model)
    torch.manual_seed(5)
    loss, _ = PGDLoss(eps=0.1, steps=3)(model, batch.x, batch.y)
    torch.manual_seed(5)
    x_adv = rl.attacks.pgd(ref, batch.x, batch.y, eps=0.1, steps=3)
    ref_loss = F.cross_entropy(ref(x_adv), batch.y)
    assert torch.allclose(loss, ref_loss)
    assert torch.allclose(model[2].running_mean, ref[2].running_mean)


# --------------------------------------------------------------------------- robustness


def test_pgd_training_makes_the_digits_cnn_far_more_robust(digits):
    train, test = digits
    small = rl.data.subset(test, 200, seed=0)
    standard = rl.models.build("cnn", "digits", seed=0)
    rl.train.fit(standard, train, epochs=10, lr=5e-3, progress=False)
    robust = rl.models.build("cnn", "digits", seed=0)
    hist = rl.training.adversarial_training(robust, train, eps=0.2, steps=3, epochs=10, lr=5e-3,
                                            eps_ramp_epochs=2, schedule="onecycle", progress=False)
    assert hist.epochs == 10
    std_rob, rob_rob = _pgd_accuracy(standard, small, 0.2), _pgd_accuracy(robust, small, 0.2)
    assert std_rob < 0.1 and rob_rob > std_rob + 0.3, (std_rob, rob_rob)
    assert rl.train.evaluate(robust, small) > 0.85


def test_robust_model_reaches_the_published_digits_numbers():
    """Ensemble robust accuracy >= 60% at Linf eps 0.2 with clean accuracy >= 94% (quick profile).

    Its training time is a benchmark (benchmarks/adversarial_training.py), not a test."""
    _, test = rl.data.load("digits")
    model, hist = rl.training.robust_model("digits", progress=False)
    assert not model.training and hist.epochs == rl.training.TRAINING_RECIPES["quick"]["pgd"]["epochs"]
    clean = rl.train.evaluate(model, test)
    robust = rl.attacks.robust_accuracy(model, test, eps=0.2, seed=0, progress=False)  # the ensemble
    assert clean >= 0.94 and robust >= 0.60, (clean, robust)
    again, hist2 = rl.training.robust_model("digits", progress=False)
    assert hist2.from_cache and all(torch.equal(a, b) for a, b in zip(_params(model), _params(again)))


@pytest.mark.parametrize("method, kw", [("fgsm", dict(eps=0.1)), ("trades", dict(eps=0.1, steps=3)),
                                        ("noise", dict(sigma=0.3))])
def test_every_method_trains_through_the_shared_loop(digits, method, kw):
    train, test = digits
    model = rl.models.build("cnn", "digits", width=8, seed=0)
    hist = rl.training.adversarial_training(model, rl.data.subset(train, 600), method=method, epochs=6, lr=5e-3,
                                            eval_data=test, progress=False, **kw)
    assert hist.epochs >= 1 and hist.loss[-1] < hist.loss[0] and hist.test_acc[-1] > 0.5


def test_noise_training_makes_the_model_robust_to_noise(digits):
    train, test = digits
    noisy_test = (test.x + 0.4 * torch.randn(test.x.shape, generator=torch.Generator().manual_seed(0)), test.y)
    accs = {}
    for name, sigma in (("standard", 0.0), ("noise", 0.4)):
        model = rl.models.build("cnn", "digits", width=8, seed=0)
        rl.training.adversarial_training(model, train, method="noise", sigma=sigma, epochs=8, lr=5e-3, progress=False)
        model.eval()
        with torch.no_grad():
            accs[name] = float((model(noisy_test[0]).argmax(1) == test.y).float().mean())
    assert accs["noise"] > accs["standard"] + 0.1, accs


# --------------------------------------------------------------------------- the guard


class Recorder:
    """Keeps a copy of the weights after every epoch."""

    def __init__(self):
        self.states = []

    def __call__(self, epoch, model, history):
        self.states.append(copy.deepcopy(model.state_dict()))
        return False


class Corrupt:
    """Destroys the model's robustness at one epoch: big noise on every weight."""

    def __init__(self, at):
        self.at = at

    def __call__(self, epoch, model, history):
        if epoch == self.at:
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 3 * p.abs().mean())
        return False


def test_the_guard_rolls_back_a_run_that_collapses(digits):
    train, _ = digits
    small = rl.data.subset(train, 400, seed=0)
    guard = CatastrophicOverfittingGuard(small.x[:128], small.y[:128], eps=0.1, steps=5)
    recorder = Recorder()
    model = rl.models.build("cnn", "digits", width=8, seed=0)
    hist = rl.training.adversarial_training(model, small, method="fgsm", eps=0.1, epochs=8, lr=5e-3, guard=guard,
                                            callbacks=[recorder, Corrupt(at=4)], progress=False)
    # the guard runs first, so it sees the corruption one epoch later, at epoch index 5
    assert guard.rolled_back_at == 5 and hist.epochs == 6, hist.notes
    assert guard.best_epoch <= 4 and guard.accuracies[-1] < guard.best_accuracy - 0.2
    assert all(torch.equal(model.state_dict()[k], v) for k, v in recorder.states[guard.best_epoch].items())
    assert guard.robust_accuracy(model) == pytest.approx(guard.best_accuracy)
    assert len(hist.notes) == 1 and "catastrophic overfitting at epoch 6" in hist.notes[0]
    assert f"rolled back to the weights of epoch {guard.best_epoch + 1}" in hist.notes[0]


def test_the_default_guard_stops_fast_fgsm_that_overfits_catastrophically(digits):
    """At eps 0.4 fast FGSM learns to beat its own attack while PGD accuracy stays near 0
    (PGD training reaches about 50% there, see benchmarks/adversarial_training.py)."""
    train, _ = digits
    model = rl.models.build("cnn", "digits", seed=0)
    hist = rl.training.adversarial_training(model, train, method="fgsm", eps=0.4, epochs=30, lr=5e-3, progress=False)
    assert 5 < hist.epochs < 30 and len(hist.notes) == 1, hist.notes
    assert "catastrophic overfitting" in hist.notes[0] and "but PGD accuracy (eps=0.4)" in hist.notes[0]
    assert hist.train_acc[-1] > 0.4
    assert _pgd_accuracy(model, rl.data.subset(train, 256, seed=0), 0.4) < 0.1


def test_the_guard_does_nothing_on_a_healthy_run(digits):
    train, _ = digits
    small = rl.data.subset(train, 400, seed=0)
    runs = []
    for use_guard in (True, False):
        model = rl.models.build("cnn", "digits", width=8, seed=0)
        guard = CatastrophicOverfittingGuard(small.x[:128], small.y[:128], eps=0.1, steps=5) if use_guard else False
        hist = rl.training.adversarial_training(model, small, method="fgsm", eps=0.1, epochs=5, lr=5e-3, guard=guard,
                                                progress=False)
        runs.append((model, hist, guard))
    (m1, h1, guard), (m2, h2, _) = runs
    assert h1.epochs == 5 and h1.notes == [] and guard.rolled_back_at is None and len(guard.accuracies) == 5
    assert all(torch.equal(a, b) for a, b in zip(_params(m1), _params(m2))), "the guard never changes training"


def test_the_guard_is_cacheable_and_its_repr_names_the_batch(digits, tmp_path):
    train, _ = digits
    rl.set_cache_dir(tmp_path)
    small = rl.data.subset(train, 200, seed=0)
    g1 = CatastrophicOverfittingGuard(small.x[:64], small.y[:64], eps=0.2, steps=3)
    g2 = CatastrophicOverfittingGuard(small.x[64:128], small.y[64:128], eps=0.2, steps=3)
    assert repr(g1) != repr(g2) and "64 examples sha256:" in repr(g1)
    kw = dict(method="fgsm", eps=0.2, epochs=2, progress=False, cache=True)
    h1 = rl.training.adversarial_training(rl.models.build("mlp", "digits", width=2), small, guard=g1, **kw)
    h2 = rl.training.adversarial_training(rl.models.build("mlp", "digits", width=2), small, guard=g1, **kw)
    h3 = rl.training.adversarial_training(rl.models.build("mlp", "digits", width=2), small, guard=g2, **kw)
    assert not h1.from_cache and h2.from_cache and not h3.from_cache


def test_the_guard_plots(digits):
    import matplotlib

    matplotlib.use("Agg")
    train, _ = digits
    guard = CatastrophicOverfittingGuard(train.x[:32], train.y[:32], eps=0.1, steps=2)
    model = rl.models.build("mlp", "digits", width=2)
    for epoch in range(3):
        guard(epoch, model, rl.train.History())
    ax = guard.plot()
    assert ax.get_xlabel() == "epoch" and len(guard.accuracies) == 3


# --------------------------------------------------------------------------- cache and arguments


@pytest.mark.parametrize("loss_fn", [PGDLoss(eps=0.1, steps=2), FastFGSMLoss(eps=0.1), TradesLoss(eps=0.1, steps=2),
                                     GaussianNoiseLoss(sigma=0.1)])
def test_losses_are_cacheable(digits, tmp_path, loss_fn):
    train, _ = digits
    rl.set_cache_dir(tmp_path)
    small = rl.data.subset(train, 100)
    h1 = rl.train.fit(rl.models.build("mlp", "digits", width=2), small, epochs=1, loss_fn=loss_fn, cache=True,
                      progress=False)
    h2 = rl.train.fit(rl.models.build("mlp", "digits", width=2), small, epochs=1, loss_fn=loss_fn, cache=True,
                      progress=False)
    assert not h1.from_cache and h2.from_cache
    other = dataclasses_replace(loss_fn)
    h3 = rl.train.fit(rl.models.build("mlp", "digits", width=2), small, epochs=1, loss_fn=other, cache=True,
                      progress=False)
    assert not h3.from_cache, "a different setting is a different cache entry"


def dataclasses_replace(loss_fn):
    import dataclasses

    field = "sigma" if isinstance(loss_fn, GaussianNoiseLoss) else "eps"
    return dataclasses.replace(loss_fn, **{field: 0.05})


def test_arguments_are_checked(digits):
    train, _ = digits
    model = rl.models.build("mlp", "digits", width=2)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        PGDLoss(eps=-0.1)
    with pytest.raises(TypeError, match="eps must be a real number"):
        PGDLoss(eps=torch.tensor(0.1))
    with pytest.raises(ValueError, match="norm must be one of"):
        PGDLoss(eps=0.1, norm="l1")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        TradesLoss(eps=0.1, steps=0)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        TradesLoss(eps=0.1, beta=-1.0)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        FastFGSMLoss(eps=0.1, step_size=0.0)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        GaussianNoiseLoss(sigma=-1.0)
    with pytest.raises(ValueError, match="ramp must be an integer >= 0"):
        PGDLoss(eps=0.1, ramp=-1)
    with pytest.raises(ValueError, match="method must be one of"):
        rl.training.adversarial_training(model, train, method="mart", eps=0.1, epochs=1)
    with pytest.raises(ValueError, match="eps is required for method='pgd'"):
        rl.training.adversarial_training(model, train, epochs=1)
    with pytest.raises(ValueError, match="sigma is required for method='noise'"):
        rl.training.adversarial_training(model, train, method="noise", epochs=1)
    with pytest.raises(ValueError, match="norm must be 'linf' for method='fgsm'"):
        rl.training.adversarial_training(model, train, method="fgsm", eps=0.1, norm="l2", epochs=1)
    with pytest.raises(ValueError, match="eps_ramp_epochs must be an integer >= 0"):
        rl.training.adversarial_training(model, train, eps=0.1, eps_ramp_epochs=-1, epochs=1)
    with pytest.raises(TypeError, match="guard must be True, False, None or a CatastrophicOverfittingGuard"):
        rl.training.adversarial_training(model, train, eps=0.1, guard="yes", epochs=1)
    with pytest.raises(TypeError, match="train must be a Split"):
        rl.training.adversarial_training(model, train.x, eps=0.1, epochs=1)
    with pytest.raises(TypeError, match="builds loss_fn from method"):
        rl.training.adversarial_training(model, train, eps=0.1, epochs=1, loss_fn=rl.train.cross_entropy_loss)
    with pytest.raises(ValueError, match=r"x must have values in \[0, 1\]"):
        CatastrophicOverfittingGuard(train.x[:4] * 2, train.y[:4], eps=0.1)
    with pytest.raises(ValueError, match="y has 3 labels"):
        CatastrophicOverfittingGuard(train.x[:4], train.y[:3], eps=0.1)
    with pytest.raises(ValueError, match=r"drop must be an accuracy \(difference\) in \[0, 1\]"):
        CatastrophicOverfittingGuard(train.x[:4], train.y[:4], eps=0.1, drop=2.0)
    with pytest.raises(ValueError, match="dataset|name must be one of"):
        rl.training.robust_model("imagenet")
    with pytest.raises(ValueError, match="method must be one of"):
        rl.training.robust_model("digits", method="mart")


def test_a_partial_of_a_loss_class_is_cacheable_too(digits, tmp_path):
    train, _ = digits
    rl.set_cache_dir(tmp_path)
    loss_fn = functools.partial(PGDLoss(eps=0.1, steps=1))
    hist = rl.train.fit(rl.models.build("mlp", "digits", width=2), rl.data.subset(train, 64), epochs=1,
                        loss_fn=loss_fn, cache=True, progress=False)
    assert hist.epochs == 1


# --------------------------------------------------------------------------- a network in the plane


@pytest.fixture(scope="module")
def planar():
    data = rl.data.linearly_separable(40, margin=0.1, seed=5)
    return data, rl.training.fit_planar(data, 0.08, width=32, epochs=150, steps=5)


def test_the_robust_planar_network_keeps_more_balls_whole_than_the_standard_one(planar):
    data, pair = planar
    masks = [rl.training.ball_robust_mask(m, data.x, data.y, pair.eps) for m in (pair.standard, pair.robust)]
    assert masks[1].float().mean() > masks[0].float().mean(), [m.float().mean() for m in masks]


def test_a_ball_counts_as_robust_only_if_the_grid_and_pgd_find_no_error(planar):
    data, pair = planar
    mask = rl.training.ball_robust_mask(pair.robust, data.x, data.y, 0.08)
    # every point reported robust resists PGD with restarts and random points of its ball
    x, y = data.x[mask], data.y[mask]
    x_adv = rl.attacks.pgd(pair.robust, x, y, eps=0.08, steps=100, restarts=3, seed=1)
    assert (rl.train.predict(pair.robust, x_adv) == y).all()
    g = torch.Generator().manual_seed(0)
    noise = (torch.rand(200, *x.shape, generator=g) * 2 - 1) * 0.08
    inside = (x[None] + noise).clamp(0, 1).reshape(-1, 2)
    assert (rl.train.predict(pair.robust, inside) == y.repeat(200)).all()
    # a zero radius is the clean accuracy, a huge one leaves nothing robust
    clean = rl.train.predict(pair.robust, data.x) == data.y
    assert torch.equal(rl.training.ball_robust_mask(pair.robust, data.x, data.y, 0.0), clean)
    assert not rl.training.ball_robust_mask(pair.robust, data.x, data.y, 1.0).any()
    # an L2 ball is inside the Linf ball of the same radius
    l2 = rl.training.ball_robust_mask(pair.robust, data.x, data.y, 0.08, norm="l2")
    assert (l2 | ~mask).all()


def test_planar_functions_check_their_arguments(planar):
    data, pair = planar
    with pytest.raises(ValueError, match="eps"):
        rl.training.fit_planar(data, 0.0)
    with pytest.raises(ValueError, match="plane"):
        rl.training.fit_planar((torch.rand(4, 3), torch.zeros(4, dtype=torch.int64)), 0.1)
    with pytest.raises(ValueError, match="norm"):
        rl.training.ball_robust_mask(pair.robust, data.x, data.y, 0.1, norm="l1")
    with pytest.raises(ValueError, match="resolution"):
        rl.training.ball_robust_mask(pair.robust, data.x, data.y, 0.1, resolution=1)
    with pytest.raises(TypeError, match="width"):
        rl.training.planar_mlp(2.5)


def test_eps_balls_and_boundaries_draws_one_ball_per_point_and_one_boundary_per_model(planar):
    import matplotlib
    matplotlib.use("Agg")
    data, pair = planar
    ax = rl.plot.eps_balls_and_boundaries(data, {"robust": pair.robust, "standard": pair.standard}, 0.08)
    assert len(ax.patches) == len(data.y)
    assert [t.get_text() for t in ax.get_legend().get_texts()][-2:] == ["robust", "standard"]
    with pytest.raises(TypeError, match="models"):
        rl.plot.eps_balls_and_boundaries(data, {}, 0.08)


# --------------------------------------------------------------------------- robust generalisation


@pytest.fixture
def smoke(monkeypatch, tmp_path):
    """Training cut to one epoch (ROBUSTLAB_SMOKE), in a private cache."""
    monkeypatch.setenv("ROBUSTLAB_SMOKE", "1")
    rl.config.set_cache_dir(tmp_path / "cache")


def test_the_monitor_records_clean_and_pgd_accuracy_of_both_subsets_every_epoch():
    train, test = rl.data.load("digits")
    part = rl.data.subset(train, 128, seed=0)
    monitor = rl.training.RobustAccuracyMonitor(rl.data.subset(train, 64, seed=1), rl.data.subset(test, 64),
                                                eps=0.2, steps=3)
    model = rl.models.build("mlp", "digits", width=2, seed=0)
    hist = rl.training.adversarial_training(model, part, eps=0.2, steps=2, epochs=3, callbacks=(monitor,),
                                            progress=False)
    assert hist.epochs == 3 and all(len(v) == 3 for v in monitor.records.values())
    for kind in ("train", "test"):
        assert all(r <= c for r, c in zip(monitor.records[f"{kind}_robust"], monitor.records[f"{kind}_clean"]))
    assert monitor.measure(model)["test_robust"] == monitor.records["test_robust"][-1]
    assert "RobustAccuracyMonitor(eps=0.2" in repr(monitor) and "sha256:" in repr(monitor)
    with pytest.raises(ValueError, match="eps"):
        rl.training.RobustAccuracyMonitor(part, part, eps=0.0)


def test_robust_generalization_is_cached_and_its_gap_is_train_minus_test(smoke):
    first = rl.training.robust_generalization(n_monitor=32)
    again = rl.training.robust_generalization(n_monitor=32)
    assert first.records == again.records and first.final == again.final
    assert first.gap() == [a - b for a, b in zip(first.records["train_robust"], first.records["test_robust"])]
    assert set(first.final) == {"train_ensemble", "test_ensemble"}
    for kind in ("train", "test"):  # the ensemble is at least as strong as the monitor's PGD
        assert first.final[f"{kind}_ensemble"] <= first.records[f"{kind}_robust"][-1] + 1e-12
    with pytest.raises(ValueError, match="kind"):
        first.gap("linf")


def test_accuracy_against_training_size_scores_both_methods_on_every_size_and_seed(smoke):
    curve = rl.training.accuracy_against_training_size(sizes=(20, 40), seeds=(0, 1), n_test=50)
    assert curve.sizes == [20, 40] and all(len(row) == 1 for m in curve.clean.values() for row in m)  # smoke: 1 seed
    assert all(0 <= a <= 1 for m in curve.clean.values() for row in m for a in row)
    table = curve.as_table()
    assert [r["n"] for r in table] == [20, 40]
    assert table[0]["pgd_minus_standard"] == pytest.approx(table[0]["pgd"] - table[0]["standard"])
    with pytest.raises(ValueError, match="sizes"):
        rl.training.accuracy_against_training_size(sizes=(10 ** 9,))
    with pytest.raises(ValueError, match="empty"):
        rl.training.accuracy_against_training_size(sizes=())
