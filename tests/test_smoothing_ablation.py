"""Randomized ablation (L0): the certificate is sound, tight where it should be, and built on the shared layer.

Tiny images make the smoothed classifier exactly computable: every one of the C(d, k)
kept-pixel sets is enumerated, so a brute force over every change of up to r pixels can
check the certified radius with no sampling at all.
"""

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy.stats import binom, chisquare
from torch import nn

import robustlab as rl
from robustlab.smoothing import ablation as A

# a count above this quantile of Bin(reps, alpha) has probability < 1e-6 under a correct method
TAIL = 1 - 1e-6


class Lookup(nn.Module):
    """An arbitrary fixed base function of the kept (index, value) pairs, values in {0, 1/2, 1}.

    Sees the paper's encoding (x m, (1 - x) m): pixel code 0 if ablated, 1 + 2x if kept.
    """

    def __init__(self, d, n_classes=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(d, 4, n_classes, generator=g))
        self.register_buffer("v", 0.5 * torch.randn(97, n_classes, generator=g))
        self.register_buffer("powers", torch.tensor([4 ** j for j in range(d)], dtype=torch.long))
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, e):
        b = e.shape[0]
        value, kept = e[:, 0].reshape(b, -1), (e[:, 0] + e[:, 1]).reshape(b, -1)
        code = (kept * (1 + torch.round(2 * value))).round().long()  # (B, d) in {0..3}
        additive = self.w[torch.arange(code.shape[1]), code].sum(1)  # (B, K)
        return self.scale * (additive + self.v[(code * self.powers).sum(1) % 97])


class HotPixel(nn.Module):
    """Class 0 if any kept pixel equals 1, else class 1 (ties of the smoothed vote go to the attacker's class 0)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, e):
        hot = (e[:, 0] > 0.75).flatten(1).any(1).to(self.scale.dtype)
        return self.scale * torch.stack([hot, torch.full_like(hot, 0.5)], 1)


def ablated(net, channels=1):
    return A.AblatedClassifier(net, channels)


def changes_within(x, r, values):
    """Every image differing from x (1, 1, H, W) in at most r pixels, each changed to another of ``values``."""
    flat = x.flatten()
    out = [flat.clone()]
    for size in range(1, r + 1):
        for where in itertools.combinations(range(flat.numel()), size):
            choices = [[v for v in values if v != float(flat[j])] for j in where]
            for vals in itertools.product(*choices):
                z = flat.clone()
                z[list(where)] = torch.tensor(vals, dtype=flat.dtype)
                out.append(z)
    return torch.stack(out).view(-1, *x.shape[1:])


# --------------------------------------------------------------------------- the radius function


@pytest.mark.parametrize("d,k", [(5, 2), (6, 2), (7, 3), (8, 1)])
def test_delta_is_the_probability_that_the_kept_set_meets_the_changed_pixels(d, k):
    subsets = list(itertools.combinations(range(d), k))
    for rho in range(d + 1):
        hit = sum(1 for s in subsets if set(s) & set(range(rho)))
        assert A.delta(rho, d, k) == pytest.approx(hit / len(subsets), abs=1e-15)


@pytest.mark.parametrize("d,k", [(6, 2), (9, 2), (9, 3), (12, 4)])
def test_radius_is_the_largest_rho_with_p_minus_delta_above_half(d, k):
    n = math.comb(d, k)
    rng = np.random.default_rng(0)
    ps = np.concatenate([rng.uniform(0, 1, 200), np.arange(n + 1) / n, [0.5, 1.0]])

    def by_definition(p, grid):
        p = Fraction(math.ceil(Fraction(p) * n - Fraction(1, 10 ** 6)), n) if grid else Fraction(p)
        best = -1
        for rho in range(d + 1):
            if p - (1 - Fraction(math.comb(d - rho, k), n)) > Fraction(1, 2):
                best = rho
        return best

    for grid in (False, True):
        got = A.certified_radius(ps, d, k, round_to_grid=grid)
        want = [by_definition(float(p), grid) for p in ps]
        assert got.tolist() == want
    assert (np.diff(A.certified_radius(np.sort(ps), d, k)) >= 0).all(), "the radius must grow with p_lower"


def test_radius_exactly_on_the_threshold_is_not_certified():
    # d = 6, k = 2: N = 15, C(5, 2) = 10: rho = 1 needs p - 5/15 > 1/2, i.e. p > 12.5 / 15
    assert A.certified_radius(12 / 15, 6, 2, round_to_grid=True) == 0
    assert A.certified_radius(13 / 15, 6, 2, round_to_grid=True) == 1
    # d = 8, k = 1: Delta(rho) = rho / 8; p = 3/4 gives p - 2/8 = 1/2 exactly: rho = 2 fails
    assert A.certified_radius(0.75, 8, 1) == 1
    assert A.certified_radius(np.nextafter(0.75, 1), 8, 1) == 2
    assert A.certified_radius(0.5, 8, 1) == -1 and A.certified_radius(np.nextafter(0.5, 1), 8, 1) == 0


def test_published_feasibility_numbers():
    # digits, d = 64: the bound needed for 1..4 pixels at k = 5, 10, 20
    assert A.p_lower_needed([1, 2, 3, 4], 64, 5).round(3).tolist() == [0.578, 0.651, 0.72, 0.784]
    assert A.p_lower_needed([1, 2, 3], 64, 10).round(3).tolist() == [0.656, 0.79, 0.905]
    assert round(A.p_lower_needed(1, 64, 20), 3) == 0.812
    assert A.p_lower_needed(4, 64, 10) > 1 and A.p_lower_needed(2, 64, 20) > 1
    assert [A.max_radius(64, k) for k in (5, 10, 20)] == [8, 3, 1]
    # MNIST, d = 784, k = 45: 8 pixels need 0.878, 12 are impossible
    assert round(A.p_lower_needed(8, 784, 45), 3) == 0.878
    assert A.p_lower_needed(12, 784, 45) > 1 and A.max_radius(784, 45) == 11
    # and the ImageNet scale is computed exactly without factorials of 50,176
    assert A.certified_radius(0.8, 224 * 224, 1000) >= 16


# --------------------------------------------------------------------------- exact brute force


@pytest.mark.parametrize("shape,k,seed", [((2, 3), 2, 0), ((3, 3), 2, 1), ((3, 3), 1, 2)])
def test_no_change_within_the_exact_radius_changes_the_exact_smoothed_prediction(shape, k, seed):
    d = shape[0] * shape[1]
    n = math.comb(d, k)
    values = (0.0, 0.5, 1.0)
    model = ablated(Lookup(d, seed=seed))
    g = torch.Generator().manual_seed(seed)
    xs = torch.tensor(values)[torch.randint(0, 3, (300, 1, *shape), generator=g)]
    exact = A.certify_exact(model, xs, k=k)
    p_a = exact.counts.gather(1, exact.prediction[:, None])[:, 0].double() / n
    half = torch.from_numpy(A.certified_radius(p_a.numpy(), d, k, round_to_grid=True))
    assert bool((half <= exact.radius).all()), "the 1/2 form can never beat the exact two-class form"
    chosen = [i for i in exact.radius.argsort(descending=True, stable=True).tolist() if exact.radius[i] >= 1][:6]
    assert len(chosen) >= 3
    for i in chosen:
        r = int(exact.radius[i])
        neighbours = changes_within(xs[i:i + 1], r, values)
        counts = A.exact_counts(model, neighbours, k=k)
        assert bool((rl.votes.plurality(counts) == exact.prediction[i]).all()), f"input {i}: a change of {r} flips"
        # every class probability moves by at most Delta(rho) for rho changed pixels
        changed = (neighbours != xs[i]).flatten(1).sum(1).numpy()
        slack = torch.from_numpy(A.delta(changed, d, k) * n + 1e-9)
        move = (counts - exact.counts[i]).abs().double()
        assert bool((move <= slack[:, None]).all())
    if k == 1:  # one pixel seen: the worst case is reached, one more changed pixel flips the vote
        i = chosen[0]
        beyond = A.exact_counts(model, changes_within(xs[i:i + 1], int(exact.radius[i]) + 1, values), k=k)
        assert bool((rl.votes.plurality(beyond) != exact.prediction[i]).any())


@pytest.mark.parametrize("shape,k", [((2, 3), 2), ((3, 3), 2), ((3, 3), 3), ((4, 4), 2)])
def test_the_radius_is_tight_a_change_of_one_more_pixel_flips_the_hot_pixel_classifier(shape, k):
    d = shape[0] * shape[1]
    model = ablated(HotPixel())
    x = torch.zeros(1, 1, *shape)
    cert = A.certify_exact(model, x, k=k)
    rho = int(cert.radius[0])
    assert cert.prediction.tolist() == [1] and rho == A.certified_radius(1.0, d, k)
    for changed, flips in ((rho, False), (rho + 1, True)):
        x2 = x.clone().flatten()
        x2[:changed] = 1.0
        pred = A.certify_exact(model, x2.view_as(x), k=k).prediction.item()
        assert (pred != 1) == flips, f"{changed} hot pixels (radius {rho})"


# --------------------------------------------------------------------------- sampling


def test_masks_are_uniform_over_the_subsets_and_the_encoding_marks_ablated_pixels():
    masks = A.random_masks(30_000, (2, 3), 2, generator=torch.Generator().manual_seed(0)).flatten(1)
    assert bool((masks.sum(1) == 2).all())
    index = {s: i for i, s in enumerate(itertools.combinations(range(6), 2))}
    ids = [index[tuple(torch.nonzero(m).flatten().tolist())] for m in masks]
    assert chisquare(np.bincount(ids, minlength=15)).pvalue > 1e-6
    x = torch.tensor([[[[0.0, 0.3], [1.0, 0.0]]]])
    mask = torch.tensor([[[True, True], [True, False]]])
    enc = A.AblatedClassifier(nn.Identity()).encode(A.ablate(x, mask))[0]
    kept = enc[:, mask[0]].T.flatten().tolist()
    assert kept == pytest.approx([0.0, 1.0, 0.3, 0.7, 1.0, 0.0])  # a kept 0 is (0, 1) ...
    assert enc[:, 1, 1].tolist() == [0.0, 0.0]  # ... an ablated pixel (0, 0)
    fill = A.AblatedClassifier(nn.Identity(), encoding="fill", fill=0.25).encode(A.ablate(x, mask))
    assert fill[0, 0, 1, 1].item() == 0.25 and fill.shape == x.shape


def test_sampled_counts_match_the_exact_probabilities():
    model = ablated(Lookup(6, seed=3))
    x = torch.tensor([0.0, 0.5, 1.0])[torch.randint(0, 3, (3, 1, 2, 3), generator=torch.Generator().manual_seed(3))]
    exact = A.exact_counts(model, x, k=2).double() / 15
    n = 20_000
    sampled = A.sample_counts(model, x, n, k=2, batch_size=999).double() / n
    assert bool(((sampled - exact).abs() <= 5 * (exact * (1 - exact) / n).sqrt() + 1e-9).all())


def test_certificates_do_not_depend_on_batch_size_or_on_the_other_inputs():
    torch.manual_seed(0)
    model = A.build("mlp", "digits", width=2)
    x = torch.rand(3, 1, 8, 8)
    a = A.certify(model, x, k=10, n0=30, n=250, batch_size=1000, seed=5)
    b = A.certify(model, x, k=10, n0=30, n=250, batch_size=7, seed=5)
    c = A.certify(model, x[2:], k=10, n0=30, n=250, seed=7)
    assert torch.equal(a.count, b.count) and torch.equal(a.radius, b.radius)
    assert a.count[2] == c.count[0]
    assert torch.equal(A.predict(model, x, k=10, n=200, seed=1), A.predict(model, x, k=10, n=200, seed=1, batch_size=3))


def test_certify_holds_with_probability_alpha_on_a_known_base_classifier():
    # one hot pixel on an 8x8 image: p(class 1) = C(63, k) / C(64, k) = (64 - k) / 64 exactly
    k, alpha, reps = 10, 0.1, 300
    p_true = (64 - k) / 64
    x = torch.zeros(reps, 1, 8, 8)
    x[:, 0, 3, 4] = 1.0
    cert = A.certify(ablated(HotPixel()), x, k=k, n0=10, n=60, alpha=alpha, seed=0)
    wrong = (cert.prediction != rl.certificates.ABSTAIN) & ((cert.prediction != 1) | (cert.pA_lower > p_true))
    assert int(wrong.sum()) <= binom.ppf(TAIL, reps, alpha)
    assert int(wrong.sum()) >= 1, "at alpha = 0.1 some bounds must exceed p: the bound is not vacuous"
    ok = ~wrong & ~cert.abstained
    assert bool((cert.radius[ok] <= A.certified_radius(p_true, 64, k)).all())
    assert cert.unit == rl.certificates.UNITS["l0"] and cert.alpha == alpha


def test_abstention_and_radius_zero_are_distinct():
    sel = torch.tensor([[10, 0], [10, 0], [5, 5]])
    est = torch.tensor([[600, 400], [700, 300], [100, 900]])
    cert = A.certify_counts(sel, est, d=64, k=10, alpha=0.05)
    assert cert.prediction.tolist() == [0, 0, rl.certificates.ABSTAIN]
    assert cert.radius.tolist() == [0, 1, 0]  # certified prediction with 0 pixels, vs abstention


# --------------------------------------------------------------------------- a trained model


@pytest.mark.slow
def test_sparse_attacks_within_the_certified_radius_do_not_flip_the_smoothed_prediction():
    model, hist = A.base_model(10, epochs=25, progress=False)
    _, test = rl.data.load("digits")
    x, y = test.x[:40], test.y[:40]
    cert = A.certify(model, x, k=10, n0=100, n=1000, alpha=0.05)
    ok = torch.nonzero(cert.correct(y) & (cert.radius >= 1)).flatten()[:8]
    assert len(ok) >= 3, f"the trained model certifies too little: {cert}"
    surrogate = A.SmoothedSurrogate(model, 10, n_masks=64)
    for i in ok.tolist():
        r = int(cert.radius[i])
        x_adv = rl.attacks.sparse_l0(surrogate, x[i:i + 1], y[i:i + 1], eps=r)
        assert int((x_adv != x[i:i + 1]).flatten(2).any(1).sum()) <= r
        pred = A.predict(model, x_adv, k=10, n=1000, alpha=0.05, seed=100 + i)
        assert pred.item() in (cert.prediction[i].item(), rl.certificates.ABSTAIN)
    # the attack itself is not vacuous: with many pixels it does flip the smoothed classifier
    x_big = rl.attacks.sparse_l0(surrogate, x[ok], y[ok], eps=24)
    flipped = A.predict(model, x_big, k=10, n=500, alpha=0.05) != y[ok]
    assert bool(flipped.any())


def test_training_loss_is_cacheable_and_trains_on_ablated_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path))
    rl.config._state.update(cache_dir=None)
    train, _ = rl.data.load("digits")
    part = rl.data.subset(train, 64)
    loss = A.AblationLoss(10)
    assert repr(loss) == "AblationLoss(k=10, shared_mask=False)"
    z = loss.ablated(part.x)
    assert z.shape == (64, 2, 8, 8) and bool((z[:, 1].flatten(1).sum(1) == 10).all())
    shared = A.AblationLoss(10, shared_mask=True).ablated(part.x)[:, 1]
    assert bool((shared == shared[0]).all())
    runs = [rl.train.fit(A.build("mlp", "digits", width=2), part, epochs=1, loss_fn=loss, cache=True, progress=False)
            for _ in range(2)]
    assert not runs[0].from_cache and runs[1].from_cache


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_errors_that_name_the_argument():
    model = A.build("mlp", "digits", width=2)
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="k must be at most d = 64"):
        A.certify(model, x, k=65, n0=10, n=10)
    with pytest.raises(ValueError, match="k must be"):
        A.certify(model, x, k=0, n0=10, n=10)
    with pytest.raises(TypeError, match="k must be an integer"):
        A.predict(model, x, k=2.5, n=10)
    for kw, name in (({"n0": 0}, "n0"), ({"n": -1}, "n"), ({"alpha": 1.0}, "alpha"), ({"batch_size": 0}, "batch_size")):
        args = dict(k=10, n0=10, n=10)
        args.update(kw)
        with pytest.raises(ValueError, match=name):
            A.certify(model, x, **args)
    with pytest.raises(ValueError, match="x must"):
        A.certify(model, torch.rand(2, 64), k=10, n0=10, n=10)
    with pytest.raises(ValueError, match=r"x must have values in \[0, 1\]"):
        A.certify(model, x + 1, k=10, n0=10, n=10)
    with pytest.raises(TypeError, match="model"):
        A.certify(lambda z: z, x, k=10, n0=10, n=10)
    with pytest.raises(ValueError, match="p_lower"):
        A.certified_radius(1.2, 64, 10)
    with pytest.raises(ValueError, match="k must be at most d"):
        A.certified_radius(0.9, 5, 6)
    with pytest.raises(ValueError, match="rho"):
        A.delta(-1, 64, 10)
    with pytest.raises(ValueError, match="n and alpha"):
        A.max_radius(64, 10, n=100)
    with pytest.raises(ValueError, match="too many to enumerate"):
        A.AllAblations((8, 8), 10)
    with pytest.raises(ValueError, match="ablated images"):
        model(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="same shape"):
        A.certify_counts(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 2, dtype=torch.long), d=64, k=10)
    with pytest.raises(ValueError, match="C\\(d, k\\) = 15"):
        A.certify_exact_counts(torch.tensor([[10, 4]]), d=6, k=2)
    with pytest.raises(ValueError, match="encoding"):
        A.AblatedClassifier(nn.Identity(), encoding="mean")
