"""rl.data.parallel_pancakes: the hidden-direction task of chapter 8."""

import math

import pytest
import torch

import robustlab as rl


@pytest.fixture(scope="module")
def task():
    return rl.data.parallel_pancakes(40000, 20, spacing=0.5, width=0.02, seed=0)


def test_shapes_labels_and_hidden_direction(task):
    x, y = task.data
    assert x.shape == (40000, 20) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(y.unique().tolist()) == {0, 1}
    assert abs(float(y.float().mean()) - 0.5) < 0.02
    assert float(task.v.norm()) == pytest.approx(1.0, abs=1e-12)


def test_slab_classifier_is_exact_with_a_positive_radius(task):
    x, y = task.data
    pred, radius = task.classify(x)
    assert bool((pred == y).all())
    assert float(radius.min()) > 0 and float(radius.max()) <= task.spacing / 2
    # the radius is certified: a step of slightly less than it along v keeps the answer,
    # a step of slightly more (towards the nearest boundary) changes it
    proj = x.double() @ task.v
    toward = torch.sign(proj - task.spacing * torch.round(proj / task.spacing))
    toward[toward == 0] = 1.0
    inside = x.double() + (0.99 * radius * toward)[:, None] * task.v[None, :]
    outside = x.double() + (radius + 0.01)[:, None] * toward[:, None] * task.v[None, :]
    assert bool((task.classify(inside)[0] == y).all())
    assert bool((task.classify(outside)[0] != y).all())


def test_each_class_looks_gaussian_in_low_moments_along_v(task):
    x, y = task.data
    var = 1 + 0.02 ** 2
    for c in (0, 1):
        p = (x[y == c].double() @ task.v)
        se = math.sqrt(var / len(p))
        assert abs(float(p.mean())) < 5 * se
        assert float(p.var()) == pytest.approx(var, abs=0.05)
        assert float((p ** 4).mean()) == pytest.approx(3 * var ** 2, abs=0.25)


def test_orthogonal_part_is_standard_gaussian_for_both_classes(task):
    x, y = task.data
    xo = x.double() - (x.double() @ task.v)[:, None] * task.v[None, :]
    gap = xo[y == 0].mean(0) - xo[y == 1].mean(0)
    assert float(gap.abs().max()) < 5 * math.sqrt(2 * 2 / len(y))
    cov = torch.cov(xo[y == 0].T)
    proj = torch.eye(20, dtype=torch.float64) - torch.outer(task.v, task.v)
    assert float((cov - proj).abs().max()) < 0.06


def test_seed_and_arguments():
    a = rl.data.parallel_pancakes(50, 3, seed=1)
    b = rl.data.parallel_pancakes(50, 3, seed=1)
    assert torch.equal(a.data.x, b.data.x) and torch.equal(a.v, b.v)
    with pytest.raises(ValueError, match="width"):
        rl.data.parallel_pancakes(10, 3, spacing=0.5, width=0.1)
    with pytest.raises(ValueError, match="spacing"):
        rl.data.parallel_pancakes(10, 3, spacing=0.0)
    with pytest.raises(ValueError, match="n"):
        rl.data.parallel_pancakes(0, 3)
    with pytest.raises(ValueError, match="x"):
        a.classify(torch.zeros(4, 5))
