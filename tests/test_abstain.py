"""Abstaining classifiers: the losses, the evaluation's semantics, and attacks that know about abstention.

The evaluation must count abstention as a natural error but as safe under attack; an
attack that ignores the abstain output can stop in the abstain region, and a hand-built
model where the abstain region shields the nearest wrong class shows the abstain-aware
attacks finding the error the plain ones miss.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import robustlab as rl
from robustlab import abstain as ab
from robustlab.certificates import ABSTAIN


def linear(w, b):
    w, b = torch.as_tensor(w, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    model = torch.nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        model.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
        model.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
    return model.eval()


def shielded():
    """Inputs (a, b) in [0, 1]^2 around (0.5, 0.5), label 0; logits z0, z1, z2, z_abstain.

    z1 = 4(a - 0.5) - 0.5 leads at the start, but wherever it beats z0 the abstain logit
    z_abstain = 8(a - 0.5) - 0.8 beats it: class 1 is shielded by the abstain region. Class 2,
    z2 = 4(0.5 - b) - 0.9, wins at b = 0.2 (inside Linf eps 0.3): the real error."""
    return linear([[0.0, 0.0], [4.0, 0.0], [0.0, -4.0], [8.0, 0.0]], [0.0, -2.5, 1.1, -4.8])


def always_abstain():
    """Three classes and the abstain output, which wins by 5 everywhere on [0, 1]^2."""
    return linear([[0.1, 0.0], [0.0, 0.1], [-0.1, 0.0], [0.0, 0.0]], [0.0, 0.0, 0.0, 5.0])


def test_sum_loss_is_minus_log_of_label_plus_abstain_and_prodlog_the_product():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(20, 5, generator=gen) * 3
    y = torch.randint(0, 4, (20,), generator=gen)
    p = z.softmax(1)
    direct = -torch.log(p.gather(1, y[:, None]).squeeze(1) + p[:, -1])
    assert torch.allclose(ab.carl_adversarial_loss(z, y, "sum", reduction="none"), direct, atol=1e-5)
    product = F.cross_entropy(z, y, reduction="none") * F.cross_entropy(z, torch.full_like(y, 4), reduction="none")
    assert torch.allclose(ab.carl_adversarial_loss(z, y, "prodlog", reduction="none"), product, atol=1e-4)
    assert float(ab.carl_adversarial_loss(z, y)) == pytest.approx(float(direct.mean()), rel=1e-5)


def test_abstain_margin_is_positive_exactly_on_a_wrong_class():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(200, 4, generator=gen)
    y = torch.randint(0, 3, (200,), generator=gen)
    wrong = (z.argmax(1) != y) & (z.argmax(1) != 3)
    assert torch.equal(ab.abstain_margin(z, y) > 0, wrong)


def test_abstain_model_has_one_more_output_and_predict_maps_it_to_abstain():
    model = ab.abstain_model("mlp", "digits", width=2)
    assert model(torch.rand(3, 1, 8, 8)).shape == (3, 11)
    pred = ab.predict(always_abstain(), torch.rand(4, 2))
    assert pred.tolist() == [ABSTAIN] * 4


def test_always_abstaining_classifier_has_natural_error_one_and_adversarial_error_zero():
    x, y = torch.rand(12, 2), torch.randint(0, 3, (12,))
    ev = ab.evaluate(always_abstain(), x, y, eps=0.3, steps=5)
    assert ev.natural_error == 1.0 and ev.abstention == 1.0
    assert ev.adversarial_error == 0.0 and ev.robust_accuracy == 0.0


def test_linear_classifier_with_margin_beyond_eps_has_no_adversarial_error():
    """Margins z_y - z_j > eps ||w_y - w_j||_1 everywhere: no Linf perturbation of size eps changes the class."""
    w, b = torch.tensor([[4.0, 0.0], [-4.0, 0.0]]), torch.tensor([-2.0, 2.0])
    model = ab.MarginAbstainer(linear(w, b), 0.0)
    a = torch.cat([torch.rand(20) * 0.3, 0.7 + torch.rand(20) * 0.3])
    x = torch.stack([a, torch.rand(40)], 1)
    y = (a < 0.5).long()
    margin = (x @ w.T + b).gather(1, y[:, None]).squeeze(1) * 2
    assert (margin > 0.15 * 8.0).all()
    ev = ab.evaluate(model, x, y, eps=0.15, steps=20)
    assert ev.accuracy == 1.0 and ev.abstention == 0.0
    assert ev.adversarial_error == 0.0 and ev.robust_accuracy == 1.0
    ev = ab.evaluate(model, x, y, eps=0.45, steps=20)  # beyond the margin of the nearest points
    assert ev.adversarial_error > 0.2


def test_abstain_aware_attacks_find_the_error_behind_the_abstain_region():
    model = shielded()
    x, y = torch.tensor([[0.5, 0.5]]), torch.tensor([0])
    assert ab.predict(model, x).tolist() == [0]
    plain = ab.abstain_pgd(model, x, y, eps=0.3, variant="plain", steps=40, random_start=False)
    assert ab.predict(model, plain).tolist() in ([0], [ABSTAIN]), "the plain margin finds no wrong class"
    for variant in ("sum",):
        out = ab.abstain_pgd(model, x, y, eps=0.3, variant=variant, steps=40, random_start=False)
        assert ab.predict(model, out).tolist() == [2], variant
    out = ab.abstain_targeted(model, x, y, eps=0.3, steps=40, n_targets=2)
    assert ab.predict(model, out).tolist() == [2]
    # the package's plain PGD "succeeds" (the label is gone) by abstaining: no error at all
    fooled = rl.attacks.pgd(model, x, y, eps=0.3, steps=40, random_start=False)
    assert rl.train.predict(model, fooled).tolist() == [3]
    ev_plain = ab.evaluate(model, x, y, eps=0.3, attacks=[("pgd", lambda m, a, b, *, eps: rl.attacks.pgd(
        m, a, b, eps=eps, steps=40, random_start=False))])
    ev_union = ab.evaluate(model, x, y, eps=0.3, attacks=["sum", "targeted"], steps=40)
    assert ev_plain.adversarial_error == 0.0 and ev_union.adversarial_error == 1.0


def test_targeted_apgd_finds_the_error_behind_the_abstain_region_and_untargeted_apgd_does_not():
    """The package's untargeted APGD succeeds by abstaining (its goal is "not the label"),
    which is no error; targeted APGD at the wrong classes reaches class 2."""
    model = shielded()
    x, y = torch.tensor([[0.5, 0.5]]), torch.tensor([0])
    out = ab.abstain_targeted(model, x, y, eps=0.3, steps=40, n_targets=2, method="apgd", seed=0)
    assert ab.predict(model, out).tolist() == [2]
    assert (out - x).abs().max() <= 0.3 + 1e-6
    fooled = rl.attacks.apgd(model, x, y, eps=0.3, steps=40, seed=0)
    assert ab.predict(model, fooled).tolist() in ([0], [ABSTAIN])
    ev = ab.evaluate(model, x, y, eps=0.3, attacks=["apgd-targeted"], steps=40)
    assert ev.adversarial_error == 1.0


def test_with_abstain_output_keeps_the_logits_and_abstains_nowhere_at_first():
    base = rl.models.build("cnn", "digits", width=4, seed=3)
    model = ab.with_abstain_output(base)
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        z, zb = model(x), base(x)
    assert torch.allclose(z[:, :10], zb, atol=1e-6)
    assert torch.allclose(z[:, 10], zb.mean(1), atol=1e-5), "the abstain logit starts as the mean logit"
    assert not (ab.predict(model, x) == ABSTAIN).any()
    assert base(x).shape == (64, 10), "the base model is not changed"


def test_cached_evaluation_is_the_computed_one():
    model = ab.abstain_model("mlp", "digits", width=2)
    x, y = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(6)), torch.arange(20) % 10
    first = ab.evaluate(model, x, y, eps=0.1, steps=5, cache=True)
    again = ab.evaluate(model, x, y, eps=0.1, steps=5, cache=True)
    assert first.per_attack == again.per_attack and torch.equal(first.error, again.error)
    assert first.robust_accuracy == again.robust_accuracy and first.accuracy == again.accuracy
    base = rl.models.build("mlp", "digits", width=2)
    tight = ab.evaluate(ab.MarginAbstainer(base, 0.0), x, y, eps=0.1, steps=5, cache=True)
    loose = ab.evaluate(ab.MarginAbstainer(base, 50.0), x, y, eps=0.1, steps=5, cache=True)
    assert tight.abstention == 0.0 and loose.abstention == 1.0, "the threshold must be part of the cache key"
    with pytest.raises(ValueError, match="cache"):
        ab.evaluate(model, x, y, eps=0.1, attacks=[("pgd", lambda m, a, b, *, eps: a)], cache=True)


def test_carl_fine_tuning_starts_from_the_pgd_model(monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_SMOKE", "1")
    robust, _ = rl.training.robust_model(progress=False)
    tuned, _ = ab.carl_model(lam=1.0, init="pgd", lr=1e-9, progress=False)
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(tuned(x)[:, :10], robust(x), atol=1e-4)


def test_union_error_is_at_least_every_single_attack():
    model = ab.abstain_model("mlp", "digits", width=2)
    x, y = torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(2)), torch.arange(30) % 10
    ev = ab.evaluate(model, x, y, eps=0.05, steps=5)
    assert set(ev.per_attack) == set(ab.DEFAULT_UNION)
    assert all(ev.adversarial_error >= e for e in ev.per_attack.values())
    assert ev.adversarial_error == pytest.approx(float(ev.error.float().mean()))
    assert ev.natural_error <= ev.adversarial_error + ev.abstention + 1e-9
    assert "adversarial error" in repr(ev)


@pytest.mark.parametrize("norm, variant", [("linf", "switch"), ("l2", "interp"), ("linf", "abstain"), ("l2", "sum")])
def test_abstain_pgd_keeps_the_attack_contract(norm, variant):
    model = ab.abstain_model("mlp", "digits", width=2)
    model.train()
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
    out = ab.abstain_pgd(model, x, y, eps=0.3, norm=norm, variant=variant, steps=5, seed=0, restarts=2)
    dist = (out - x).flatten(1)
    dist = dist.abs().amax(1) if norm == "linf" else dist.norm(dim=1)
    assert (dist <= 0.3 + 1e-5).all() and out.min() >= 0 and out.max() <= 1
    assert model.training, "the model's mode is restored"
    assert all(p.grad is None for p in model.parameters())


def test_margin_abstainer_abstains_exactly_below_the_threshold_and_more_with_a_larger_one():
    base = rl.models.build("mlp", "digits", width=2)
    x = torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        top = base(x).topk(2, dim=1).values
    margin = top[:, 0] - top[:, 1]
    # a threshold halfway between two neighbouring margins: no margin sits at t, where
    # "margin < t" and "runner-up + t > top" could round differently in float32
    ordered = margin.sort().values
    t = float(ordered[24] + ordered[25]) / 2
    pred = ab.predict(ab.MarginAbstainer(base, t), x)
    assert int((pred == ABSTAIN).sum()) == 25
    assert torch.equal(pred == ABSTAIN, margin < t)
    assert not (ab.predict(ab.MarginAbstainer(base, 0.0), x) == ABSTAIN).any()


def test_carl_loss_values_on_a_linear_model():
    """Lam 0: CE plus gamma times ||w_j* - w_y||_1 with j* the top wrong class (a linear model's
    input gradient of the margin); lam > 0 adds the adversarial term."""
    w = torch.tensor([[1.0, -2.0], [0.5, 0.5], [-1.0, 3.0], [0.0, 0.2]])
    model = linear(w, torch.zeros(4))
    x, y = torch.tensor([[0.2, 0.3], [0.9, 0.1]]), torch.tensor([0, 1])
    z = model(x).detach()
    top_wrong = z[:, :3].masked_fill(F.one_hot(y, 3).bool(), -math.inf).argmax(1)
    penalty = (w[top_wrong] - w[y]).abs().sum(1).mean()
    loss, logits = ab.CARLLoss(eps=0.1, lam=0.0, grad_penalty=0.5)(model, x, y)
    assert float(loss.detach()) == pytest.approx(float(F.cross_entropy(z, y) + 0.5 * penalty), rel=1e-5)
    loss_adv, _ = ab.CARLLoss(eps=0.1, lam=2.0, grad_penalty=0.0, variants=("sum",))(model, x, y)
    clean = F.cross_entropy(z, y) + 2.0 * ab.carl_adversarial_loss(z, y)
    assert float(loss_adv.detach()) >= float(clean) - 1e-4, "the attack must not lower the adversarial term"
    loss_adv.backward()
    assert model.weight.grad is not None


def test_carl_loss_ramps_eps_with_the_training_step():
    loss = ab.CARLLoss(eps=0.2, ramp=4)
    step = rl.train.TrainingStep(index=1, epoch=0, batch=1, batches_per_epoch=10, total=100)
    assert loss.eps_at(step) == pytest.approx(0.1) and loss.eps_at(None) == pytest.approx(0.2)


def test_carl_model_is_cached(monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_SMOKE", "1")
    m1, h1 = ab.carl_model(lam=1.0, progress=False)
    m2, h2 = ab.carl_model(lam=1.0, progress=False)
    assert h2.from_cache and not h1.from_cache
    assert m1(torch.rand(2, 1, 8, 8)).shape == (2, 11)


@pytest.mark.parametrize("call, name", [
    (lambda: ab.abstain_pgd(shielded(), torch.rand(2, 2), torch.tensor([0, 1]), eps=0.1, variant="max"), "variant"),
    (lambda: ab.abstain_pgd(shielded(), torch.rand(2, 2), torch.tensor([0, 3]), eps=0.1), "y"),
    (lambda: ab.abstain_pgd(shielded(), torch.rand(2, 2), torch.tensor([0, 1]), eps=-0.1), "eps"),
    (lambda: ab.abstain_pgd(shielded(), torch.rand(2, 2), torch.tensor([0, 1]), eps=0.1, norm="l1"), "norm"),
    (lambda: ab.abstain_pgd(linear(torch.eye(2), torch.zeros(2)), torch.rand(2, 2), torch.tensor([0, 1]), eps=0.1),
     "model"),
    (lambda: ab.evaluate(shielded(), torch.rand(2, 2), torch.tensor([0, 1]), eps=0.1, attacks=[3]), "attacks"),
    (lambda: ab.evaluate(shielded(), torch.rand(2, 2), torch.tensor([0, 1]), eps=0.1, attacks=["fgsm"]), "attacks"),
    (lambda: ab.evaluate(shielded(), torch.rand(2, 2), torch.tensor([0, 1]), eps=0.1, attacks=[
        ("far", lambda m, x, y, *, eps: (x + 0.5).clamp(0, 1))]), "contract"),
    (lambda: ab.carl_adversarial_loss(torch.rand(2, 4), torch.tensor([0, 1]), "hinge"), "kind"),
    (lambda: ab.CARLLoss(eps=0.1, variants=("sum", "cw")), "variants"),
    (lambda: ab.CARLLoss(eps=0.1, lam=-1.0), "lam"),
    (lambda: ab.MarginAbstainer(shielded(), -0.5), "threshold"),
    (lambda: ab.abstain_targeted(shielded(), torch.rand(2, 2), torch.tensor([0, 1]), eps=0.1, method="cw"), "method"),
    (lambda: ab.carl_model(init="standard"), "init"),
])
def test_bad_input_names_the_argument(call, name):
    with pytest.raises((ValueError, TypeError), match=name):
        call()
