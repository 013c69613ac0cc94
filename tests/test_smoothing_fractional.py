"""Fractional Lp smoothing (0 < p < 1): the deterministic l_p^p certificate holds on the grid.

The change count c(j) is checked against the family itself (how many positions really
change their cell), and on a tiny grid every perturbation inside the radius is enumerated.
"""

import itertools

import numpy as np
import pytest
import torch

import robustlab as rl
from robustlab.certificates import UNITS
from robustlab.smoothing import fractional as FR
from robustlab.smoothing import l1 as L1


def grid_points(q, d):
    return torch.tensor(list(itertools.product(range(q + 1), repeat=d)), dtype=torch.float32) / q


def random_net(seed, d=2, k=3):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.Tanh(), torch.nn.Linear(8, k))


def test_change_counts_bound_the_family_and_the_budget():
    q, p = 8, 0.5
    design = FR.solve_design(q, p, budget=24, s=1.5)
    fam = design.family(seed=1)
    pts = grid_points(q, 1)
    reps = torch.stack([fam.apply(pts.view(-1, 1), t) for t in range(len(fam))], 1)[..., 0]  # (q+1, N)
    c = design.change_counts()
    for a in range(q + 1):
        for b in range(q + 1):
            assert int((reps[a] != reps[b]).sum()) <= c[abs(a - b)]
    j = np.arange(1, q + 1)
    assert (c[1:] <= 24 * (j / q) ** p + 1e-9).all(), "the design breaks the budget curve"
    assert (c[1:] <= design.lipschitz(p) * (j / q) ** p).all()
    assert design.n_samples == 36 and design.ablations > 0


@pytest.mark.parametrize("seed,p,budget", [(0, 0.5, 12), (1, 0.5, 20), (2, 1 / 3, 16)])
def test_every_grid_perturbation_inside_the_radius_keeps_the_prediction(seed, p, budget):
    q, d = 8, 2
    design = FR.solve_design(q, p, budget)
    model = random_net(seed)
    pts = grid_points(q, d)  # 81 points
    cert = FR.certify_fractional(model, pts, design=design, p=p, seed=seed)
    dist = (pts[:, None, :].double() - pts[None, :, :].double()).abs().pow(p).sum(-1)
    same = cert.prediction[:, None] == cert.prediction[None, :]
    assert bool(same[dist <= cert.radius[:, None]].all()), "an l_p^p perturbation inside the radius flips"
    # the sharper statement in changed votes
    changes = torch.stack([FR.perturbation_changes(pts, pts[i].expand_as(pts), design) for i in range(len(pts))])
    assert bool(same[changes <= cert.changes[:, None]].all())
    assert float(cert.radius.max()) > 0


def test_certificate_from_counts_and_units():
    design = FR.ConcaveDesign(4, ((1, 2), (4, 1)), ablations=2)
    cert = FR.certify_fractional_counts(torch.tensor([[8, 0], [4, 4], [1, 7]]), design, p=0.5)
    assert cert.prediction.tolist() == [0, 0, 1]
    assert cert.changes.tolist() == [4, 0, 2]  # (7 - 1 - [0 < 1]) // 2
    assert cert.unit == UNITS["lp"] and cert.alpha is None and cert.p == 0.5
    assert torch.allclose(cert.radius, cert.changes.double() / 6.0)


def test_concave_design_beats_dssn_with_norm_inequality_at_small_changes():
    # one coordinate moved by one grid step: DSSN with N samples alters one of them per step,
    # the concave design far fewer relative to the d_p cost of the step
    q, p = 16, 0.5
    design = FR.solve_design(q, p, budget=200)
    k = design.lipschitz(p)
    assert k <= 200 * (1 + 1e-9)
    # radius at a unanimous vote: N / (2K) in d_p units; DSSN at lam = 1/2 (L = q): max(r, r^p), r = 1/2
    assert design.n_samples / (2 * k) >= 0.49
    assert float(FR.dssn_lp_radius(torch.tensor(0.5), p)) == pytest.approx(0.5 ** 0.5)


def test_lpp_distance_and_baseline():
    assert FR.lpp_distance(torch.zeros(1, 3), torch.tensor([[1.0, 0.25, 0.0]]), 0.5).tolist() == [1.5]
    assert FR.dssn_lp_radius(torch.tensor([0.04, 4.0]), 0.5).tolist() == pytest.approx([0.2, 4.0])


def test_off_grid_and_bad_input():
    design = FR.ConcaveDesign(16, ((4, 2), (16, 1)))
    model = rl.models.build("mlp", "digits", width=2)
    with pytest.raises(ValueError, match="x must lie on the quantization grid"):
        FR.certify_fractional(model, torch.full((1, 1, 8, 8), 0.3), design=design, p=0.5)
    with pytest.raises(ValueError, match="p must be in"):
        FR.certify_fractional(model, torch.zeros(1, 1, 8, 8), design=design, p=1.0)
    with pytest.raises(TypeError, match="design"):
        FR.certify_fractional(model, torch.zeros(1, 1, 8, 8), design={4: 2}, p=0.5)
    with pytest.raises(ValueError, match="widths"):
        FR.ConcaveDesign(4, ((5, 1),))
    with pytest.raises(ValueError, match="budget"):
        FR.solve_design(16, 0.5, budget=2)
    with pytest.raises(ValueError, match="s must be in"):
        FR.solve_design(16, 0.5, budget=50, s=0.5)


def test_batch_size_independence():
    design = FR.solve_design(16, 0.5, budget=60)
    model = rl.models.build("mlp", "digits", width=4)
    x = L1.quantize(torch.rand(4, 1, 8, 8), 16)
    a = FR.certify_fractional(model, x, design=design, p=0.5, batch_size=9)
    b = FR.certify_fractional(model, x, design=design, p=0.5, batch_size=1000)
    assert torch.equal(a.counts, b.counts)


@pytest.mark.slow
def test_trained_model_certifies_and_random_perturbations_inside_fail():
    q, p = 16, 0.5
    trained = FR.base_model(p, q, budget=100, arch="mlp", width=64, epochs=4, progress=False)
    design = trained.model.split_design
    _, test = rl.data.load("digits")
    x, y = test.x[:30], test.y[:30]
    cert = FR.certify_fractional(trained.model, x, design=design, p=p)
    assert cert.certified_accuracy(y) > 0.5
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        # move random pixels by one grid step while the changed-vote count stays within budget
        moved = x.clone().flatten(1)
        for i in range(len(x)):
            budget = int(cert.changes[i])
            for idx in torch.randperm(moved.shape[1], generator=gen).tolist():
                trial = moved[i].clone()
                trial[idx] = trial[idx] + 1 / q if trial[idx] < 1 else trial[idx] - 1 / q
                if int(FR.perturbation_changes(x[i:i + 1].flatten(1), trial[None], design)) > budget:
                    break
                moved[i] = trial
        moved = moved.view_as(x)
        assert torch.equal(FR.certify_fractional(trained.model, moved, design=design, p=p).prediction,
                           cert.prediction)
