"""The PCA generator inverts exactly on its range; the on-manifold attack stays in its latent budget
and on the manifold, and finds what brute force finds; DMAT beats standard training against
on-manifold attacks and OM-AT against pixel attacks; the threat evaluation is cached and
right; bad arguments are refused by name."""

import math

import pytest
import torch
import torch.nn.functional as F

import robustlab as rl
from robustlab.perceptual import manifold as M
from robustlab.perceptual.evaluation import Threat, robust_mask, threat_table


@pytest.fixture(scope="module")
def digits():
    return rl.data.load("digits")


@pytest.fixture(scope="module")
def gen(digits):
    train, _ = digits
    return M.fit_pca(train.x, 16)


@pytest.fixture(scope="module")
def om(digits, gen):
    train, test = digits
    return M.on_manifold_data(gen, train), M.on_manifold_data(gen, rl.data.subset(test, 150, seed=0))


def _train(method, om, gen, epochs=10):
    """A width-8 CNN on 600 on-manifold training digits, with one of the four losses."""
    train, test = om
    part = rl.data.subset(train, 600, seed=0)
    model = rl.models.build("cnn", "digits", width=8, seed=0)
    loss = {"standard": None,
            "omat": M.OnManifoldLoss(gen, eps=0.5, steps=3),
            "dmat": M.DualManifoldLoss(gen, eps_pixel=0.2, eps_latent=0.5, steps=3)}[method]
    rl.train.fit(model, part, epochs=epochs, lr=5e-3, batch_size=64, loss_fn=loss, seed=0, progress=False)
    return model.eval()


@pytest.fixture(scope="module")
def trained(om, gen):
    return {m: _train(m, om, gen) for m in ("standard", "omat", "dmat")}


# ----------------------------------------------------------------------------- the generator


def test_the_encoder_inverts_the_generator_exactly_on_its_range(gen):
    z = 1.5 * torch.randn(64, gen.k, generator=torch.Generator().manual_seed(0))
    x = gen(z)
    assert x.shape == (64, 1, 8, 8) and 0 < float(x.min()) and float(x.max()) < 1
    assert torch.allclose(gen.encode(x), z, atol=1e-3)
    assert float(gen.off_manifold(x).max()) < 1e-3
    assert float(gen.round_trip_error(x).max()) < M.MANIFOLD_TOLERANCE


def test_natural_digits_are_off_the_manifold_and_their_projections_on_it(digits, gen):
    _, test = digits
    x = test.x[:50]
    assert float(gen.off_manifold(x).min()) > 1.0, "a natural digit is not in a 16-dimensional family"
    proj = gen.project(x)
    assert float(gen.off_manifold(proj).max()) < 1e-3
    gen.check_on_manifold(proj)
    with pytest.raises(ValueError, match="manifold"):
        gen.check_on_manifold(x)


def test_pca_recovers_a_logit_subspace_and_standardizes_the_latents():
    torch.manual_seed(0)
    d, k, n = 20, 3, 400
    basis = torch.linalg.qr(torch.randn(d, k))[0]
    w = torch.randn(n, k) * torch.tensor([1.0, 0.6, 0.3])
    x = torch.sigmoid(0.4 * torch.randn(d) + w @ basis.T)  # in (0.1, 0.9): the clip changes nothing
    assert 0.03125 < float(x.min()) and float(x.max()) < 1 - 0.03125
    g = M.fit_pca(x, k)
    assert torch.allclose(g.project(x), x, atol=1e-4), "data on a k-dimensional logit subspace are on the manifold"
    # the fitted directions span the true subspace, and the latents have unit variance
    overlap = torch.linalg.svdvals(basis.T @ g.components.double().float())
    assert torch.allclose(overlap, torch.ones(k), atol=1e-3)
    assert torch.allclose(g.encode(x).std(0), torch.ones(k), atol=1e-3)


def test_the_cached_generator_is_the_fitted_one(digits):
    a = M.pca_generator("digits")
    b = M.pca_generator("digits")  # from the cache
    c = M.fit_pca(digits[0].x, M.DEFAULT_LATENTS["digits"])
    assert repr(a) == repr(b) == repr(c) and a.k == 16


# ----------------------------------------------------------------------------- the on-manifold attack


def test_the_latent_attack_stays_in_its_latent_budget_and_on_the_manifold(trained, om, gen):
    model = trained["standard"]
    model.train()
    x, y = om[1].x[:60], om[1].y[:60]
    eps = 0.4
    x_adv = M.on_manifold_pgd(model, x, y, eps=eps, generator=gen, steps=10, seed=0)
    assert model.training and all(p.grad is None for p in model.parameters()), "mode restored, no parameter grads"
    model.eval()
    z, z_adv = gen.encode(x), gen.encode(x_adv)
    assert float((z_adv - z).abs().max()) <= eps + 1e-3
    assert float(gen.off_manifold(x_adv).max()) < 1e-3, "every output is an image of the generator"
    assert 0 < float(x_adv.min()) and float(x_adv.max()) < 1
    # the latent version: the budget holds to float precision
    za = M.latent_pgd(model, gen, z, y, eps=eps, steps=10, restarts=2, seed=1)
    assert float((za - z).abs().max()) <= eps + 1e-6
    # and it is an attack: far more errors than random latent moves of the same size
    with torch.no_grad():
        rand = z + eps * (2 * torch.rand(z.shape, generator=torch.Generator().manual_seed(0)) - 1)
        acc_rand = float((model(gen(rand)).argmax(1) == y).float().mean())
        acc_adv = float((model(gen(za)).argmax(1) == y).float().mean())
    assert acc_adv < acc_rand - 0.3, (acc_adv, acc_rand)


def test_the_latent_attack_finds_what_brute_force_over_a_two_dimensional_latent_box_finds():
    """k = 2: a grid over the box finds every input the budget can break; PGD must find them too."""
    torch.manual_seed(0)
    x = torch.sigmoid(torch.randn(300, 6) @ torch.randn(6, 12) * 0.5)
    g = M.fit_pca(x, 2)
    model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        model[0].weight.mul_(8)  # decision boundaries inside the box
    z = torch.randn(40, 2)
    with torch.no_grad():
        y = model(g(z)).argmax(1)  # every point starts correct
    eps = 0.6
    grid = torch.linspace(-eps, eps, 41)
    offsets = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        breakable = torch.stack([(model(g(zi + offsets)).argmax(1) != yi).any() for zi, yi in zip(z, y)])
    assert 3 <= int(breakable.sum()) <= 37, "the case must have both outcomes"
    z_adv = M.latent_pgd(model, g, z, y, eps=eps, steps=40, restarts=4, seed=0)
    with torch.no_grad():
        broken = model(g(z_adv)).argmax(1) != y
    assert float((z_adv - z).abs().max()) <= eps + 1e-6
    # (a region thinner than the grid's spacing could hold a success the grid misses: allow one)
    assert int((broken & ~breakable).sum()) <= 1, "PGD breaks only what points of the box break"
    assert int((breakable & ~broken).sum()) <= 1, "PGD misses at most one point that the grid breaks"


# ----------------------------------------------------------------------------- training


def test_dmat_beats_standard_training_on_manifold_and_omat_against_pixel_pgd(trained, om, gen):
    x, y = om[1]
    on_manifold = {m: rl.attacks.robust_accuracy(model, (x, y), M.on_manifold_pgd, eps=0.5, generator=gen, steps=10,
                                                 seed=0, progress=False) for m, model in trained.items()}
    pixel = {m: rl.attacks.robust_accuracy(model, (x, y), rl.attacks.apgd, eps=0.2, norm="linf", steps=50, seed=0,
                                           progress=False) for m, model in trained.items()}
    assert on_manifold["dmat"] > on_manifold["standard"] + 0.15, on_manifold
    assert on_manifold["omat"] > on_manifold["standard"] + 0.15, on_manifold
    assert pixel["dmat"] > pixel["omat"] + 0.15, pixel
    assert rl.train.evaluate(trained["dmat"], (x, y)) > 0.8


def test_the_losses_train_on_the_attack_they_name(om, gen):
    train, _ = om
    x, y = train.x[:32], train.y[:32]
    model = rl.models.build("cnn", "digits", width=4, seed=0)
    with torch.no_grad():
        ce = F.cross_entropy(model.eval()(x), y)
    model.train()
    for loss_fn in (M.OnManifoldLoss(gen, eps=0.5, steps=3),
                    M.DualManifoldLoss(gen, eps_pixel=0.2, eps_latent=0.5, steps=3)):
        loss, logits = loss_fn(model, x, y)
        assert logits.shape == (32, 10) and float(loss.detach()) > float(ce), "an attack raises the loss"
        assert model.training and all(p.grad is None for p in model.parameters())
    # with zero budgets both are the clean cross-entropy; DMAT's two halves then coincide
    for loss_fn in (M.OnManifoldLoss(gen, eps=0.0), M.DualManifoldLoss(gen, eps_pixel=0.0, eps_latent=0.0)):
        model.eval()
        loss, _ = loss_fn(model, x, y)
        assert math.isclose(float(loss.detach()), float(ce), rel_tol=1e-4)
    # the ramp: the budget at the first of 10 ramp batches is a tenth
    step = rl.train.TrainingStep(0, 0, 0, 10, 100)
    assert math.isclose(M.OnManifoldLoss(gen, eps=0.5, ramp=10).factor(step) * 0.5, 0.05)


def test_manifold_models_are_cached_and_trained_on_the_manifold(monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_SMOKE", "1")
    rl.config._state.update(profile=None)
    first = M.manifold_model("dmat")
    second = M.manifold_model("dmat")
    assert second.history.from_cache and not first.history.from_cache
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()))
    assert {"pca-generator", "manifold-standard", "manifold-pgd", "omat", "dmat"} <= set(rl.zoo.names(chapter=16))


# ----------------------------------------------------------------------------- evaluation


def test_robust_masks_are_cached_and_agree_with_the_attack(trained, om, gen):
    x, y = om[1].x[:40], om[1].y[:40]
    model = trained["standard"]
    threat = Threat("on-manifold", 0.5, options=dict(steps=10, seed=0), generator=gen)
    mask = robust_mask(model, x, y, threat)
    again = robust_mask(model, x, y, threat)  # from the cache
    assert torch.equal(mask, again)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    x_adv = M.on_manifold_pgd(model, x[clean], y[clean], eps=0.5, generator=gen, steps=10, seed=0)
    direct = clean.clone()
    with torch.no_grad():
        direct[clean] = model(x_adv).argmax(1) == y[clean]
    assert torch.equal(mask, direct)
    assert not bool((mask & ~clean).any()), "a misclassified input is never robust"
    table = threat_table({"standard": model}, x, y, [threat, Threat("linf", 0.2, options=dict(attacks=["apgd-ce"]))])
    assert table.accuracy("standard", threat.label) == float(mask.float().mean())
    assert table.union("standard", [threat.label, "Linf 0.2"]) <= min(table.accuracy("standard", t)
                                                                        for t in (threat.label, "Linf 0.2"))
    assert "standard" in table.text({"union": [threat.label, "Linf 0.2"]})


# ----------------------------------------------------------------------------- argument errors


def test_bad_arguments_name_the_argument(gen, om, trained):
    model = trained["standard"]
    x, y = om[1].x[:4], om[1].y[:4]
    z = gen.encode(x)
    with pytest.raises(ValueError, match="eps"):
        M.latent_pgd(model, gen, z, y, eps=-0.1)
    with pytest.raises(ValueError, match="z must"):
        M.latent_pgd(model, gen, z[:, :3], y, eps=0.1)
    with pytest.raises(ValueError, match="restarts"):
        M.latent_pgd(model, gen, z, y, eps=0.1, restarts=2, random_start=False)
    with pytest.raises(ValueError, match="manifold"):
        M.on_manifold_pgd(model, rl.data.load("digits")[1].x[:4], y, eps=0.1, generator=gen)
    with pytest.raises(TypeError, match="generator"):
        M.on_manifold_pgd(model, x, y, eps=0.1, generator="pca")
    with pytest.raises(ValueError, match="k must"):
        M.fit_pca(x, 10)
    with pytest.raises(ValueError, match="clip"):
        M.fit_pca(om[0].x, 4, clip=0.5)
    with pytest.raises(ValueError, match="orthonormal"):
        M.PCAGenerator(torch.zeros(64), torch.ones(64, 2), torch.ones(2), (1, 8, 8))
    with pytest.raises(ValueError, match="eps_latent"):
        M.DualManifoldLoss(gen, eps_pixel=0.1, eps_latent=-1.0)
    with pytest.raises(ValueError, match="the training batch x"):
        M.OnManifoldLoss(gen, eps=0.1)(model, rl.data.load("digits")[1].x[:4], y)
    with pytest.raises(ValueError, match="method"):
        M.manifold_model("trades")
    with pytest.raises(ValueError, match="distance"):
        Threat("lpa", 0.25)
    with pytest.raises(ValueError, match="kind"):
        Threat("jpeg", 0.1)
