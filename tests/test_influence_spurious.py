"""The planted spurious cue of chapter 11: the data construction, the model's use of it, and influence finding it."""

import pytest
import torch

import robustlab as rl
from robustlab import influence as inf


@pytest.fixture(scope="module")
def digits():
    return rl.data.load("digits")


@pytest.fixture(scope="module")
def task(digits):
    return inf.spurious_digits(digits, classes=(1, 8), n_train=150, seed=0)


def test_cue_is_planted_on_label_one_training_images_only(digits, task):
    from robustlab.influence.fragility import _two_classes

    xtr, ytr = task.train
    clean_x, clean_y = _two_classes(digits[0], (1, 8), 150, 0)
    assert torch.equal(ytr, clean_y) and xtr.dtype == torch.float64
    assert bool((ytr[task.planted] == 1).all())
    assert int(task.planted.sum()) == round(0.5 * int((ytr == 1).sum()))
    p = task.patch
    assert bool((xtr[task.planted, :, :p, :p] == 1.0).all())
    # nothing else changed: unplanted images are the clean draw, planted ones differ only in the square
    assert torch.equal(xtr[~task.planted], clean_x[~task.planted])
    diff = (xtr - clean_x).abs()
    diff[:, :, :p, :p] = 0
    assert float(diff.max()) == 0.0
    # the square is dark in the clean digits (a bright square in under 5% of them), so in
    # training it is a cue of label 1
    assert float(clean_x[:, :, :p, :p].mean()) < 0.05
    assert float((clean_x[:, :, :p, :p].flatten(1).amax(1) >= 0.5).double().mean()) < 0.05


def test_cue_at_test_time_is_independent_of_the_label(task):
    xte, yte = task.test
    assert int(task.test_cue.sum()) == round(0.5 * len(yte))
    for label in (0, 1):  # present on both classes
        assert 0 < int((task.test_cue & (yte == label)).sum()) < int((yte == label).sum())
    p = task.patch
    assert bool((xte[task.test_cue, :, :p, :p] == 1.0).all())


def test_seed_changes_the_draw_and_is_reproducible(digits):
    a = inf.spurious_digits(digits, n_train=60, seed=3)
    b = inf.spurious_digits(digits, n_train=60, seed=3)
    c = inf.spurious_digits(digits, n_train=60, seed=4)
    assert torch.equal(a.planted, b.planted) and torch.equal(a.train[0], b.train[0])
    assert not torch.equal(a.train[0], c.train[0])


def _fit(task, lam):
    xtr, ytr = task.train
    torch.manual_seed(0)
    model = rl.models.MLP(tuple(xtr.shape[1:]), 2, hidden=(), mean=(float(xtr.mean()),),
                          std=(float(xtr.std()),)).double()
    inf.fit_to_optimum(model, task.train, weight_decay=lam)
    return model


def test_model_uses_the_cue_and_influence_blames_the_planted_points(task):
    lam = 0.3
    model = _fit(task, lam)
    xte, yte = task.test
    with torch.no_grad():
        pred = model(xte).argmax(1)
    first = yte == 0
    acc_cued = float((pred[first & task.test_cue] == 0).double().mean())
    acc_clean = float((pred[first & ~task.test_cue] == 0).double().mean())
    assert acc_clean - acc_cued > 0.2, (acc_clean, acc_cued)  # the cue turns 1s into 8s
    victims = torch.nonzero((pred != yte) & task.test_cue & first).flatten()
    assert len(victims) >= 3
    result = inf.influences(model, task.train, (xte[victims], yte[victims]), weight_decay=lam, method="exact")
    base = float(task.planted.double().mean())
    share = inf.planted_among_top(result, task.planted, 10)
    assert share.shape == (len(victims),)
    assert float(share.mean()) > 2 * base, (float(share.mean()), base)
    total = float(inf.planted_among_top(result, task.planted, 10, combine=True))
    assert total > 2 * base, (total, base)
    # the same count by hand
    top = torch.topk(result.scores.sum(0), 10).indices
    assert total == pytest.approx(float(task.planted[top].double().mean()))


def test_planted_among_top_by_hand():
    scores = torch.tensor([[5.0, -1.0, 4.0, 0.0, 3.0], [0.0, 2.0, -3.0, 1.0, 0.5]])
    result = inf.Influences(scores, torch.zeros(2), 5)
    planted = torch.tensor([True, True, False, False, True])
    # row 0: top 3 = 0, 2, 4 -> 2 of 3 planted; row 1: top 3 = 1, 3, 4 -> 2 of 3
    assert torch.allclose(inf.planted_among_top(result, planted, 3), torch.tensor([2 / 3, 2 / 3]))
    # summed: [5, 1, 1, 1, 3.5] -> top 2 = 0, 4, both planted
    assert float(inf.planted_among_top(result, planted, 2, combine=True)) == 1.0
    assert torch.allclose(inf.planted_among_top(result, planted, 99), torch.tensor([0.6, 0.6]))


def test_plant_cue_arguments():
    x = torch.zeros(3, 1, 4, 4)
    mask = torch.tensor([False, True, False])
    out = inf.plant_cue(x, mask, patch=3, value=0.5)
    assert float(out[1, 0, :3, :3].min()) == 0.5 and float(out[1].sum()) == 4.5 and float(x.sum()) == 0.0
    with pytest.raises(ValueError, match="mask"):
        inf.plant_cue(x, torch.tensor([True, False]))
    with pytest.raises(ValueError, match="mask"):
        inf.plant_cue(x, torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match="patch"):
        inf.plant_cue(x, mask, patch=5)
    with pytest.raises(ValueError, match="patch"):
        inf.plant_cue(x, mask, patch=0)
    with pytest.raises(ValueError, match="value"):
        inf.plant_cue(x, mask, value=1.5)
    with pytest.raises(ValueError, match="x"):
        inf.plant_cue(torch.zeros(3, 16), mask)


@pytest.mark.parametrize("kwargs, match", [
    (dict(classes=(3, 3)), "classes"),
    (dict(classes=(1, 10)), "classes"),
    (dict(fraction=0.0), "fraction"),
    (dict(fraction=1.2), "fraction"),
    (dict(test_fraction=-0.1), "test_fraction"),
    (dict(n_train=0), "n_train"),
    (dict(patch=9), "patch"),
])
def test_spurious_digits_arguments(digits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        inf.spurious_digits(digits, **kwargs)


def test_planted_among_top_arguments():
    result = inf.Influences(torch.zeros(1, 4), torch.zeros(1), 4)
    with pytest.raises(TypeError, match="result"):
        inf.planted_among_top(torch.zeros(1, 4), torch.zeros(4, dtype=torch.bool), 1)
    with pytest.raises(ValueError, match="planted"):
        inf.planted_among_top(result, torch.zeros(3, dtype=torch.bool), 1)
    with pytest.raises(ValueError, match="k"):
        inf.planted_among_top(result, torch.zeros(4, dtype=torch.bool), 0)
    with pytest.raises(TypeError, match="combine"):
        inf.planted_among_top(result, torch.zeros(4, dtype=torch.bool), 1, combine=1)
