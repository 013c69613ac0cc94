"""SSN and DSSN: the L1 certificates hold, are tight where they should be, and reject bad input.

DSSN is deterministic, so on a tiny grid every perturbation inside the certified radius
can be enumerated; SSN is statistical, so a base classifier whose smoothed probabilities
are known exactly shows its violation rate stays below alpha.
"""

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import binom

import robustlab as rl
from robustlab.certificates import ABSTAIN, UNITS
from robustlab.smoothing import l1 as L1

TAIL = 1 - 1e-6  # a correct method exceeds this quantile of Bin(reps, alpha) with probability < 1e-6


class Threshold(torch.nn.Module):
    """Class 1 iff the representation of coordinate 0 is above 1/2 (for lam >= 1/2: x_0 above its split)."""

    def forward(self, z):
        v = z.flatten(1)[:, 0]
        return torch.stack([0.5 - v, v - 0.5], 1)


def grid_points(q, d):
    return torch.tensor(list(itertools.product(range(q + 1), repeat=d)), dtype=torch.float32) / q


class Hashed(torch.nn.Module):
    """An arbitrary base classifier: a hash of the representation picks the class."""

    def __init__(self, seed, d=3, k=3):
        super().__init__()
        self.k = k
        self.w = torch.randint(1, 10 ** 6, (d,), generator=torch.Generator().manual_seed(seed))

    def forward(self, z):
        key = (torch.round(z * 1000).long() * self.w).sum(1)
        return torch.nn.functional.one_hot(key * 2654435761 % 1000003 % self.k, self.k).float()


def random_linear(seed, d=3, k=3):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.Tanh(), torch.nn.Linear(8, k))


# --------------------------------------------------------------------------- DSSN: brute force


@pytest.mark.parametrize("seed,lam", [(0, 0.5), (1, 0.5), (2, 0.3), (3, 0.9)])
def test_every_grid_perturbation_inside_the_radius_keeps_the_dssn_prediction(seed, lam):
    q, d = 4, 3
    model = random_linear(seed)
    pts = grid_points(q, d)  # all 125 grid points
    cert = L1.certify_dssn(model, pts, lam=lam, q=q, seed=seed)
    dist = torch.cdist(pts.double(), pts.double(), p=1)
    inside = dist <= cert.radius[:, None] + 1e-9
    same = cert.prediction[:, None] == cert.prediction[None, :]
    assert bool(same[inside].all()), "a grid point inside a certified L1 radius changes the DSSN prediction"
    assert float(cert.radius.max()) > 0, "the test must certify something"


@pytest.mark.parametrize("seed,lam", [(0, 0.5), (3, 0.9), (4, 1.0), (5, 0.6)])
def test_dssn_brute_force_with_an_arbitrary_classifier_and_one_step_beyond(seed, lam):
    q, d = 4, 3
    pts = grid_points(q, d)
    cert = L1.certify_dssn(Hashed(seed), pts, lam=lam, q=q, seed=seed)
    dist = torch.cdist(pts.double(), pts.double(), p=1)
    same = cert.prediction[:, None] == cert.prediction[None, :]
    assert bool(same[dist <= cert.radius[:, None] + 1e-9].all())
    # one grid step more than certified: the hash classifier breaks it somewhere
    assert not bool(same[dist <= cert.radius[:, None] + 1 / q + 1e-9].all())


def test_one_grid_step_changes_at_most_one_offset_per_coordinate():
    # the counting argument of the certificate: moving x_i by j steps alters <= j of the L cells
    q = 8
    for lam in (0.25, 0.5, 1.0):
        fam = L1.SplitFamily.dssn(lam, q, seed=3)
        pts = grid_points(q, 1)
        reps = torch.stack([fam.apply(pts.view(-1, 1), t) for t in range(len(fam))], 1)[..., 0]  # (q+1, L)
        for a in range(q + 1):
            for b in range(q + 1):
                assert int((reps[a] != reps[b]).sum()) <= abs(a - b)


def test_dssn_radius_is_tight_for_a_threshold_classifier():
    # lam = 1/2, q = 4: L = 4 splits at (k + 1/2)/4; class 1 gets q * x_0 votes
    q = 4
    x = torch.zeros(1, 3)
    cert = L1.certify_dssn(Threshold(), x, lam=0.5, q=q)
    assert cert.prediction.tolist() == [0] and cert.counts.tolist() == [[4, 0]]
    assert float(cert.radius[0]) == 0.5  # floor(4 / 2) steps of 1/4
    at = torch.tensor([[0.5, 0.0, 0.0]])  # radius exactly: a 2-2 tie goes to class 0
    beyond = torch.tensor([[0.75, 0.0, 0.0]])  # one grid step beyond
    assert L1.certify_dssn(Threshold(), at, lam=0.5, q=q).prediction.tolist() == [0]
    assert L1.certify_dssn(Threshold(), beyond, lam=0.5, q=q).prediction.tolist() == [1]


def test_dssn_counts_and_tie_rule_come_from_the_shared_vote_layer():
    cert = L1.certify_dssn_counts(torch.tensor([[5, 5, 0], [2, 7, 0], [0, 6, 5]]), q=16)
    assert cert.prediction.tolist() == [0, 1, 1]
    # a lower-indexed runner-up needs one more vote: floor((6 - 5 - 0)/2), floor((7 - 2 - 1)/2)
    assert cert.radius_steps.tolist() == [0, 2, 0]
    assert cert.alpha is None and cert.unit == UNITS["l1"]


def test_dssn_is_independent_of_batch_size_and_input_order():
    model = rl.models.build("mlp", "digits", width=4)
    x = L1.quantize(torch.rand(6, 1, 8, 8), 16)
    a = L1.certify_dssn(model, x, lam=0.6, q=16, batch_size=5)
    b = L1.certify_dssn(model, x.flip(0), lam=0.6, q=16, batch_size=1000)
    assert torch.equal(a.counts, b.counts.flip(0)) and torch.equal(a.radius, b.radius.flip(0))
    assert a.n_offsets == L1.n_offsets(0.6, 16) == 19


# --------------------------------------------------------------------------- SSN: exact base classifier


def test_ssn_representation_matches_the_split_formula():
    x = torch.rand(2000)
    s = torch.rand(2000) * 1.4
    lam = 0.7
    expected = ((x > s).double() + s.clamp(max=1).double()) / 2
    assert torch.allclose(L1.split_centres(x.double(), s.double(), lam), expected)
    # lam < 1/2: a cell never spans more than 2 lam and always contains x
    lam = 0.2
    s = torch.rand(2000) * 2 * lam
    z = L1.split_centres(x, s, lam)
    assert bool(((z - x).abs() <= lam + 1e-6).all())


def test_ssn_certificate_violation_rate_is_at_most_alpha():
    # Threshold under SSN with lam = 1/2: P(class 1) = P(s < x_0) = x_0 exactly, so at x_0 = 0.1
    # pA = 0.9 and g changes only past x_0 = 1/2: the true L1 radius is 0.4 = 2 lam (pA - 1/2).
    reps, alpha, n = 400, 0.05, 200
    x = torch.full((reps, 1), 0.1)
    cert = L1.certify_ssn(Threshold(), x, lam=0.5, n0=16, n=n, alpha=alpha, seed=11)
    assert bool((cert.prediction == 0).all())
    violations = int((cert.radius > 0.4 + 1e-12).sum())
    assert violations <= binom.ppf(TAIL, reps, alpha), f"{violations} of {reps} certificates exceed the true radius"
    assert 0.3 < float(cert.radius.mean()) < 0.4  # close to the truth: the bound is not vacuous either


def test_ssn_prediction_abstains_on_a_coin_flip():
    x = torch.full((50, 1), 0.5)  # P(class 1) = 1/2
    pred = L1.predict_ssn(Threshold(), x, lam=0.5, n=200, alpha=0.01)
    assert int((pred != ABSTAIN).sum()) <= binom.ppf(TAIL, 50, 0.01)


def test_ssn_counts_do_not_depend_on_batch_size():
    model = rl.models.build("mlp", "digits", width=4)
    x = torch.rand(3, 1, 8, 8)
    a = L1.certify_ssn(model, x, lam=0.5, n0=8, n=300, batch_size=7, alpha=0.01)
    b = L1.certify_ssn(model, x, lam=0.5, n0=8, n=300, batch_size=1000, alpha=0.01)
    assert torch.equal(a.count, b.count) and torch.equal(a.prediction, b.prediction)


# --------------------------------------------------------------------------- quantization and bad input


def test_off_grid_inputs_are_rejected_by_name():
    model = rl.models.build("mlp", "digits", width=2)
    x = torch.full((1, 1, 8, 8), 0.3)
    with pytest.raises(ValueError, match="x must lie on the quantization grid"):
        L1.certify_dssn(model, x, lam=0.5, q=16)
    assert L1.certify_dssn(model, L1.quantize(x, 16), lam=0.5, q=16).prediction.shape == (1,)
    with pytest.raises(ValueError, match="q = 16"):
        L1.check_quantized(torch.full((1, 4), 1 / 255), 16)
    L1.check_quantized(torch.full((1, 4), 3 / 16), 256)  # the digits' grid is inside q = 256


@pytest.mark.parametrize("kwargs,match", [
    (dict(lam=0.0, q=16), "lam"),
    (dict(lam=0.5, q=0), "q"),
    (dict(lam=0.01, q=16), "lam must be at least"),
])
def test_dssn_bad_parameters(kwargs, match):
    model = rl.models.build("mlp", "digits", width=2)
    with pytest.raises((ValueError, TypeError), match=match):
        L1.certify_dssn(model, torch.zeros(1, 1, 8, 8), **kwargs)


def test_ssn_bad_parameters():
    model = rl.models.build("mlp", "digits", width=2)
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="alpha"):
        L1.certify_ssn(model, x, lam=0.5, alpha=1.5)
    with pytest.raises(ValueError, match="n0"):
        L1.certify_ssn(model, x, lam=0.5, n0=0)
    with pytest.raises(ValueError, match="x must have values in"):
        L1.certify_ssn(model, x + 2, lam=0.5)
    with pytest.raises(ValueError, match="lam"):
        L1.SplittingNoise(-1.0)
    with pytest.raises(ValueError, match="kind"):
        L1.SplittingNoiseLoss(0.5, kind="gauss")
    with pytest.raises(ValueError, match="p_a"):
        L1.ssn_radius(1.5, 0.5)


# --------------------------------------------------------------------------- a trained model and attacks


def l1_pgd(model, x, y, eps, steps=30, k=4):
    """A small L1 PGD: steepest ascent on the top-k gradient coordinates, projection on the L1 ball and [0, 1]."""
    x_adv = x.clone()
    step = (torch.as_tensor(eps, dtype=x.dtype) / 4).reshape(-1, *[1] * (x.dim() - 1))
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(x_adv), y)
        (g,) = torch.autograd.grad(loss, x_adv)
        g = g.flatten(1)
        top = g.abs().topk(k, dim=1).indices
        d = torch.zeros_like(g).scatter_(1, top, g.gather(1, top).sign()) / k
        x_adv = x_adv.detach() + step * d.view_as(x)
        x_adv = rl.norms.project_l1(x_adv, x, eps).clamp(0, 1)
    return x_adv.detach()


def to_grid_inside(x, x_adv, q):
    """Round the perturbation toward zero on the grid: the L1 norm can only shrink."""
    return x + torch.trunc((x_adv - x) * q) / q


@pytest.mark.slow
def test_l1_attacks_inside_the_certified_radius_fail_on_a_trained_model():
    q, lam = 16, 1.0
    train, test = rl.data.load("digits")
    trained = L1.base_model("dssn", lam, q, arch="mlp", width=64, epochs=4, progress=False)
    model = trained.model
    x, y = test.x[:40], test.y[:40]
    cert = L1.certify_dssn(model, x, lam=lam, q=q)
    assert cert.certified_accuracy(y) > 0.5  # the base classifier learned something
    ok = cert.radius > 0
    assert int(ok.sum()) >= 5
    xs, ys, r, pred = x[ok], y[ok], cert.radius[ok], cert.prediction[ok]
    adv = to_grid_inside(xs, l1_pgd(model, xs, pred, r.float()), q)
    assert bool(((adv - xs).abs().flatten(1).sum(1) <= r + 1e-6).all())
    assert torch.equal(L1.certify_dssn(model, adv, lam=lam, q=q).prediction, pred)
    # random grid perturbations spending the whole radius
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        steps = (r * q).round().long()
        delta = torch.zeros_like(xs).flatten(1)
        for i, s in enumerate(steps.tolist()):
            idx = torch.randint(0, delta.shape[1], (s,), generator=gen)
            delta[i].index_add_(0, idx, torch.ones(s))
        cand = xs.flatten(1)
        up = (cand + delta / q <= 1)
        moved = torch.where(up, cand + delta / q, cand - delta / q).clamp(0, 1)
        moved = to_grid_inside(xs, moved.view_as(xs), q)
        assert torch.equal(L1.certify_dssn(model, moved, lam=lam, q=q).prediction, pred)
    # SSN on the same threat: an attack inside the radius never changes a confident prediction
    ssn = L1.certify_ssn(model, xs[:5], lam=lam, n0=32, n=2000, alpha=0.001)
    keep = ssn.radius > 0
    if bool(keep.any()):
        adv = l1_pgd(model, xs[:5][keep], ssn.prediction[keep], ssn.radius[keep].float() * 0.999)
        again = L1.predict_ssn(model, adv, lam=lam, n=2000, alpha=0.001, seed=100)
        assert bool(((again == ssn.prediction[keep]) | (again == ABSTAIN)).all())


def test_split_surrogate_averages_the_offsets_votes_and_passes_a_gradient():
    torch.manual_seed(0)
    model = rl.models.build("mlp", "digits", width=8, seed=0).eval()
    lam, q = 0.5, 16
    surrogate = L1.SplitSurrogate(model, lam=lam, q=q)
    x = torch.rand(3, 1, 8, 8)
    family = L1.SplitFamily.dssn(lam, q)
    grid = L1.quantize(x, q)
    expected = torch.stack([model(family.represent(grid, o)).softmax(1) for o in range(len(family))], 1).mean(1)
    with torch.no_grad():
        assert torch.allclose(surrogate(x).exp(), expected, atol=1e-6)
        # the plurality of the offsets' votes is DSSN's prediction; the surrogate averages the same L passes
        counts = L1.dssn_counts(model, grid, lam=lam, q=q)
    assert counts.sum(1).tolist() == [len(family)] * 3
    xr = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(surrogate(xr)[:, 0].sum(), xr)
    assert float(grad.abs().sum()) > 0, "the straight-through gradient reaches the input"
    y = surrogate(x).argmax(1)
    x_adv = rl.attacks.pgd(surrogate, x, y, eps=0.5, norm="l1", steps=5, seed=0)
    assert bool((rl.norms.lp_distance(x_adv, x, "l1") <= 0.5 + 1e-5).all())
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        L1.SplitSurrogate("f", lam=lam, q=q)
