import functools
import math

import pytest
import torch

import robustlab as rl


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_fit_learns_the_digits(digits):
    train, test = digits
    model = rl.models.build("mlp", "digits", width=4, seed=0)
    hist = rl.train.fit(model, train, epochs=5, lr=3e-3, eval_data=test, progress=False)
    assert hist.epochs == 5 and len(hist.test_acc) == 5 and len(hist.seconds) == 5
    assert hist.loss[-1] < hist.loss[0]
    assert hist.test_acc[-1] > 0.85
    assert rl.train.evaluate(model, test) == pytest.approx(hist.test_acc[-1])


def test_fit_is_reproducible_with_a_seed(digits):
    train, _ = digits
    runs = []
    for _ in range(2):
        model = rl.models.build("mlp", "digits", width=2, seed=5)
        rl.train.fit(model, train, epochs=1, seed=7, progress=False)
        runs.append(_params(model))
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    model = rl.models.build("mlp", "digits", width=2, seed=5)
    rl.train.fit(model, train, epochs=1, seed=8, progress=False)
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], _params(model)))


def test_cache_returns_the_same_weights_without_training(digits, tmp_path):
    train, test = digits
    rl.set_cache_dir(tmp_path)
    m1 = rl.models.build("mlp", "digits", width=2, seed=0)
    h1 = rl.train.fit(m1, train, epochs=2, eval_data=test, cache=True, progress=False)
    assert not h1.from_cache
    assert len(list((tmp_path / "models").glob("*.pt"))) == 1
    m2 = rl.models.build("mlp", "digits", width=2, seed=0)
    h2 = rl.train.fit(m2, train, epochs=2, eval_data=test, cache=True, progress=False)
    assert h2.from_cache and h2.test_acc == h1.test_acc
    assert all(torch.equal(a, b) for a, b in zip(_params(m1), _params(m2)))


@pytest.mark.parametrize("change", ["lr", "epochs", "seed", "init", "data", "loss"])
def test_cache_key_covers_the_whole_configuration(digits, tmp_path, change):
    train, _ = digits
    rl.set_cache_dir(tmp_path)
    base = dict(epochs=1, lr=1e-3, seed=0, cache=True, progress=False)
    rl.train.fit(rl.models.build("mlp", "digits", width=2, seed=0), train, **base)
    kw, init_seed, data = dict(base), 0, train
    if change in ("lr", "epochs", "seed"):
        kw[change] = {"lr": 2e-3, "epochs": 2, "seed": 1}[change]
    elif change == "init":
        init_seed = 1
    elif change == "data":
        data = rl.data.subset(train, 1000)
    else:
        kw["loss_fn"] = functools.partial(_scaled_ce, scale=2.0)
    hist = rl.train.fit(rl.models.build("mlp", "digits", width=2, seed=init_seed), data, **kw)
    assert not hist.from_cache


def _scaled_ce(model, x, y, scale=1.0):
    logits = model(x)
    return scale * torch.nn.functional.cross_entropy(logits, y), logits


def test_a_custom_loss_is_used(digits):
    train, _ = digits
    calls = []

    def loss_fn(model, x, y):
        calls.append(x.shape[0])
        return rl.train.cross_entropy_loss(model, x, y)

    rl.train.fit(rl.models.build("mlp", "digits", width=2), train, epochs=1, batch_size=500, loss_fn=loss_fn, progress=False)
    assert calls == [500, 500, train.x.shape[0] - 1000]
    with pytest.raises(ValueError, match="module-level function"):
        rl.train.fit(rl.models.build("mlp", "digits", width=2), train, epochs=1, loss_fn=loss_fn, cache=True)


def test_fit_passes_the_step_only_to_losses_that_declare_it(digits):
    train, _ = digits
    data = rl.data.subset(train, 10)
    plain, stepped = [], []

    def loss_fn(model, x, y):  # the plain protocol: three arguments, never a step
        plain.append(x.shape[0])
        return rl.train.cross_entropy_loss(model, x, y)

    class Stepped:
        wants_step = True

        def __call__(self, model, x, y, step):
            stepped.append(step)
            return rl.train.cross_entropy_loss(model, x, y)

    rl.train.fit(rl.models.build("mlp", "digits", width=1), data, epochs=2, batch_size=4, loss_fn=loss_fn,
                 progress=False)
    assert plain == [4, 4, 2] * 2
    rl.train.fit(rl.models.build("mlp", "digits", width=1), data, epochs=2, batch_size=4, loss_fn=Stepped(),
                 progress=False)
    assert stepped == [rl.train.TrainingStep(e * 3 + b, e, b, 3, 6) for e in range(2) for b in range(3)]


def test_ramp_is_linear_after_its_delay():
    assert [rl.train.ramp(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [rl.train.ramp(s, 3, delay=2) for s in range(6)] == [0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0]
    assert rl.train.ramp(rl.train.TrainingStep(2, 0, 2, 10, 10), 4) == 0.75
    assert rl.train.ramp(None, 4, delay=10) == 1.0 and rl.train.ramp(5, 0) == 1.0 and rl.train.ramp(1, 0, delay=2) == 0.0


def test_an_unreadable_cache_file_is_trained_again_and_replaced(digits, tmp_path):
    rl.set_cache_dir(tmp_path)
    train, _ = digits
    data = rl.data.subset(train, 64)
    model = rl.models.build("mlp", "digits", width=1)
    rl.train.fit(model, data, epochs=1, progress=False, cache=True)
    (path,) = (tmp_path / "models").glob("*.pt")
    path.write_bytes(path.read_bytes()[:100])  # a file cut short
    again = rl.models.build("mlp", "digits", width=1)
    with pytest.warns(RuntimeWarning, match="unreadable cache file"):
        hist = rl.train.fit(again, data, epochs=1, progress=False, cache=True)
    assert not hist.from_cache
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))
    assert rl.train.fit(rl.models.build("mlp", "digits", width=1), data, epochs=1, progress=False, cache=True).from_cache


def test_a_trained_model_carries_no_parameter_gradients(digits):
    train, _ = digits
    model = rl.models.build("mlp", "digits", width=2)
    rl.train.fit(model, train, epochs=1, progress=False)
    assert all(p.grad is None for p in model.parameters())


def test_fit_and_evaluate_restore_the_model_mode(digits):
    train, test = digits
    model = rl.models.build("mlp", "digits", width=2)
    model.eval()
    rl.train.fit(model, train, epochs=1, progress=False)
    assert not model.training
    model.train()
    rl.train.evaluate(model, test)
    assert model.training


def test_predict_batches_and_returns_labels(digits):
    _, test = digits
    model = rl.models.build("mlp", "digits", width=2)
    a = rl.train.predict(model, test.x, batch_size=7)
    b = rl.train.predict(model, test.x)
    assert torch.equal(a, b) and a.dtype == torch.int64 and a.shape == test.y.shape
    assert a.device == test.x.device  # returned on the input's device
    assert rl.train.predict_proba(model.double(), test.x[:3]).dtype == torch.float64  # x moved to the model's dtype


def test_history_plots(digits):
    import matplotlib

    matplotlib.use("Agg")
    train, test = digits
    hist = rl.train.fit(rl.models.build("mlp", "digits", width=2), train, epochs=2, eval_data=test, progress=False)
    ax = hist.plot()
    assert len(ax.get_lines()) == 1 and ax.get_xlabel() == "epoch"
    no_eval = rl.train.fit(rl.models.build("mlp", "digits", width=2), train, epochs=1, progress=False)
    assert math.isnan(no_eval.test_acc[0])
    no_eval.plot()


def test_trained_model_uses_the_profile_and_the_cache():
    model, hist = rl.train.trained_model(epochs=2, progress=False)
    assert isinstance(model, rl.models.SmallCNN) and not model.training
    again, hist2 = rl.train.trained_model(epochs=2, progress=False)
    assert hist2.from_cache and all(torch.equal(a, b) for a, b in zip(_params(model), _params(again)))


def test_fit_arguments_are_checked(digits):
    train, _ = digits
    model = rl.models.build("mlp", "digits", width=2)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        rl.train.fit(model, train, epochs=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        rl.train.fit(model, train, epochs=1, lr=-1.0)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        rl.train.fit(model, train, epochs=1, optimizer="lbfgs")
    with pytest.raises(ValueError, match=r"train.x must have values in \[0, 1\]"):
        rl.train.fit(model, (train.x * 16, train.y), epochs=1)
    with pytest.raises(ValueError, match="train.y has 10 labels"):
        rl.train.fit(model, (train.x, train.y[:10]), epochs=1)
    with pytest.raises(TypeError, match="train must be a Split or an"):
        rl.train.fit(model, train.x, epochs=1)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        rl.train.fit(model, train, epochs=1, loss_fn="ce")
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        rl.train.fit(model, train, epochs=1, weight_decay=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        rl.train.predict(model, train.x, batch_size=0)


def test_seed_everything_seeds_torch():
    rl.train.seed_everything(3)
    a = torch.rand(3)
    rl.train.seed_everything(3)
    assert torch.equal(a, torch.rand(3))
    with pytest.raises(ValueError, match="seed"):
        rl.train.seed_everything(-1)


def test_predict_proba_is_a_distribution_consistent_with_predict(digits):
    _, test = digits
    model = rl.models.build("mlp", "digits", width=2).train()
    probs = rl.train.predict_proba(model, test.x, batch_size=100)
    assert probs.shape == (test.x.shape[0], 10) and model.training
    assert torch.allclose(probs.sum(1), torch.ones(test.x.shape[0]), atol=1e-5)
    assert torch.equal(probs.argmax(1), rl.train.predict(model, test.x))


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_learning_rate_schedules_follow_their_shape(schedule):
    total = 100
    f = [rl.train._lr_factor(schedule, s, total) for s in range(total)]
    assert max(f) == pytest.approx(1.0, abs=0.03) and f[-1] == pytest.approx(0.0, abs=0.03)
    if schedule == "onecycle":
        peak = f.index(max(f))
        assert 35 <= peak <= 41 and f[0] < 0.05
        assert all(a <= b for a, b in zip(f[:peak], f[1:peak + 1])) and all(a >= b for a, b in zip(f[peak:], f[peak + 1:]))
    else:
        assert f[0] == 1.0 and all(a >= b for a, b in zip(f, f[1:]))


def test_fit_applies_the_schedule_to_the_optimizer(digits):
    train, _ = digits
    seen = []

    def spy(model, x, y):
        seen.append(None)
        return rl.train.cross_entropy_loss(model, x, y)

    model = rl.models.build("mlp", "digits", width=2)
    hist = rl.train.fit(model, train, epochs=2, lr=0.01, schedule="onecycle", loss_fn=spy, progress=False)
    assert hist.epochs == 2 and len(seen) == 2 * math.ceil(train.x.shape[0] / 64)
    with pytest.raises(ValueError, match="schedule must be one of"):
        rl.train.fit(model, train, epochs=1, schedule="step")


def test_callbacks_run_after_every_epoch_and_can_stop_training(digits):
    train, test = digits
    calls = []

    def watch(epoch, model, history):
        calls.append((epoch, history.epochs))
        if epoch == 1:
            history.notes.append("stopped by the callback")
            return True
        return False

    hist = rl.train.fit(rl.models.build("mlp", "digits", width=2), train, epochs=5, eval_data=test,
                        callbacks=[watch], progress=False)
    assert calls == [(0, 1), (1, 2)] and hist.epochs == 2
    assert hist.notes == ["stopped by the callback"]
    with pytest.raises(TypeError, match="callbacks must hold callables"):
        rl.train.fit(rl.models.build("mlp", "digits", width=2), train, epochs=1, callbacks=[3])
    with pytest.raises(ValueError, match="module-level functions"):
        rl.train.fit(rl.models.build("mlp", "digits", width=2), train, epochs=1, callbacks=[watch], cache=True)
