"""The sampling engine: per-input noise streams whose counts do not depend on the batch size
or on the batch neighbours (Gaussian and PixelDP noise), streams that continue, the noises,
the two modes, and the enumeration twin of deterministic smoothing."""

import math

import numpy as np
import pytest
import torch

import robustlab as rl
from robustlab.smoothing import dp
from robustlab.smoothing import gaussian as G
from robustlab.smoothing import sampling as S


def inputs(b, seed=0):
    return torch.rand(b, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- batch independence


def test_gaussian_counts_do_not_depend_on_batch_size_or_neighbours(tiny_model):
    x = inputs(6)
    others = inputs(6, seed=1)
    n, sigma = 2500, 0.5  # not a whole number of blocks: the last block of each input is partial
    reference = G.sample_counts(tiny_model, x, n, sigma, seed=40, batch_size=1000)
    for batch_size in (1, 97, 1000, 4096, 20_000):
        assert torch.equal(G.sample_counts(tiny_model, x, n, sigma, seed=40, batch_size=batch_size), reference)
    for i in range(6):
        alone = G.sample_counts(tiny_model, x[i:i + 1], n, sigma, seed=40 + i, batch_size=333)
        assert torch.equal(alone, reference[i:i + 1]), i
    # input 2 among other neighbours, at another position, keeps its counts when it keeps its seed
    mixed = torch.cat([others[:3], x[2:3], others[3:]])
    seeds = [7, 8, 9, 42, 10, 11, 12]
    counts = G.sample_counts(tiny_model, mixed, n, sigma, seed=seeds, batch_size=256)
    assert torch.equal(counts[3], reference[2])
    # the seed is what matters: another seed gives other counts
    assert not torch.equal(G.sample_counts(tiny_model, x[2:3], n, sigma, seed=43), reference[2:3])


@pytest.mark.parametrize("norm", ["l2", "l1"])
@pytest.mark.parametrize("scores", ["argmax", "softmax"])
def test_pixeldp_scores_do_not_depend_on_batch_size_or_neighbours(norm, scores):
    net = dp.build("mlp", "digits", norm=norm, width=2, seed=0)
    x, others = inputs(5), inputs(5, seed=1)
    n = 1500
    reference = dp.expected_scores(net, x, n=n, scores=scores, seed=3, batch_size=4096, progress=False)
    for batch_size in (8, 64, 1000, 10_000):
        again = dp.expected_scores(net, x, n=n, scores=scores, seed=3, batch_size=batch_size, progress=False)
        assert torch.equal(again, reference), batch_size
    # forward passes of one to three rows take another matrix kernel (torch 2.14 on this CPU):
    # the same noise, logits equal to rounding
    for batch_size in (1, 2):
        small = dp.expected_scores(net, x, n=n, scores=scores, seed=3, batch_size=batch_size, progress=False)
        assert torch.allclose(small, reference, rtol=0, atol=1e-9), batch_size
    for i in range(5):
        alone = dp.expected_scores(net, x[i:i + 1], n=n, scores=scores, seed=3 + i, batch_size=700, progress=False)
        assert torch.equal(alone, reference[i:i + 1]), i
    mixed = torch.cat([others[:2], x[4:5], others[2:]])
    est = dp.expected_scores(net, mixed, n=n, scores=scores, seed=[0, 1, 7, 2, 3, 4], batch_size=512,
                             progress=False)
    assert torch.equal(est[2], reference[4])
    cert = dp.certify(net, x, n=n, scores=scores, seed=3, batch_size=100, progress=False)
    assert torch.equal(cert.expected, reference)


def test_pixeldp_noise_is_the_noise_layers_on_the_first_layers_output():
    """The engine draws the noise layer's distribution on the normalized first layer: a
    network whose rest reads one coordinate votes with the exact probability of the mechanism."""
    lin = torch.nn.Linear(3, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 0.0]]))
        lin.bias.zero_()

    class Margin(torch.nn.Module):
        def forward(self, h):
            return torch.cat([torch.zeros_like(h), h], 1)

    net = dp.PixelDP(torch.nn.Sequential(torch.nn.Flatten(), lin, Margin()), (3,), norm="l1", eps=1.0, L=0.2)
    x = torch.tensor([[0.1, 0.5, 0.5]])
    n = 40_000
    p = float(dp.expected_scores(net, x, n=n, seed=0, progress=False)[0, 1])
    exact = 1 - 0.5 * math.exp(-0.1 / net.noise.scale)  # P(0.1 + Laplace(b) > 0)
    assert abs(p - exact) < 4 * math.sqrt(exact * (1 - exact) / n)


# --------------------------------------------------------------------------- streams and modes


def test_a_sampler_continues_each_stream(tiny_model):
    x = inputs(4)
    noise = S.GaussianNoise(0.5)
    with S.Sampler(tiny_model, x, noise, seed=5, block=10, batch_size=37) as sampler:
        first, second = sampler.draw(30), sampler.draw(50)
    whole = S.sample(tiny_model, x, 80, noise, seed=5, block=10, batch_size=1000)
    assert torch.equal(first + second, whole)
    assert not torch.equal(second, S.sample(tiny_model, x, 50, noise, seed=5, block=10)), "fresh draws, not repeats"


def test_score_mode_sums_softmax_outputs_and_counts_mode_sums_to_n(tiny_model):
    x = inputs(3)
    noise = S.GaussianNoise(0.25)
    sums = S.sample(tiny_model, x, 300, noise, mode="scores", seed=1, batch_size=128)
    counts = S.sample(tiny_model, x, 300, noise, mode="counts", seed=1, batch_size=128)
    assert sums.dtype == torch.float64 and counts.dtype == torch.int64
    assert torch.allclose(sums.sum(1), torch.full((3,), 300.0, dtype=torch.float64))
    assert counts.sum(1).tolist() == [300] * 3
    # by hand: the same noise, one input at a time
    gen = torch.Generator().manual_seed(1)
    copies = torch.randn((300, 1, 8, 8), generator=gen).mul_(0.25).add_(x[0])
    with torch.no_grad():
        logits = tiny_model(copies)
    assert torch.allclose(sums[0], logits.double().softmax(1).sum(0))
    assert torch.equal(counts[0], torch.bincount(logits.argmax(1), minlength=10))


def test_the_model_runs_in_eval_mode_and_gets_its_mode_back(tiny_model):
    seen = []
    tiny_model.register_forward_pre_hook(lambda m, args: seen.append(m.training))
    tiny_model.train()
    S.sample(tiny_model, inputs(2), 20, S.UniformNoise(0.1), batch_size=7)
    assert seen and not any(seen) and tiny_model.training


class HalfMask(S.Noise):
    """A non-additive randomization: keep each pixel with probability 1/2, else set it to 0."""

    def sample(self, x_i, size, generator):
        keep = torch.rand((size, *x_i.shape), generator=generator, device=x_i.device) < 0.5
        return x_i * keep


def test_noises_have_their_distributions_and_any_sampler_object_plugs_in(tiny_model):
    gen = torch.Generator().manual_seed(0)
    z = S.LaplaceNoise(0.5).draw((200_000,), gen, "cpu", torch.float64)
    assert float(z.abs().mean()) == pytest.approx(0.5, rel=0.01) and abs(float(z.mean())) < 0.01
    g = S.GaussianNoise(0.3).draw((200_000,), gen, "cpu", torch.float64)
    assert float(g.std()) == pytest.approx(0.3, rel=0.01)
    u = S.UniformNoise(0.2).draw((200_000,), gen, "cpu", torch.float64)
    assert float(u.min()) >= -0.2 and float(u.max()) <= 0.2 and float(u.var()) == pytest.approx(0.04 / 3, rel=0.02)
    x = inputs(3)
    counts = S.sample(tiny_model, x, 64, HalfMask(), seed=0, batch_size=50)
    assert counts.sum(1).tolist() == [64] * 3
    assert torch.equal(counts, S.sample(tiny_model, x, 64, HalfMask(), seed=0, batch_size=1000))
    with pytest.raises(TypeError, match="noise must have a method sample"):
        S.sample(tiny_model, x, 10, "gaussian")
    with pytest.raises(NotImplementedError, match="must implement draw"):
        S.sample(tiny_model, x, 10, S.Noise())


def test_arguments_are_checked(tiny_model):
    x = inputs(2)
    with pytest.raises(ValueError, match="mode must be one of"):
        S.sample(tiny_model, x, 10, S.GaussianNoise(0.1), mode="logits")
    with pytest.raises(ValueError, match="sigma must be > 0"):
        S.GaussianNoise(0.0)
    with pytest.raises(ValueError, match="seed must hold one seed per input"):
        S.sample(tiny_model, x, 10, S.GaussianNoise(0.1), seed=[1])
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        S.sample(tiny_model, x, 0, S.GaussianNoise(0.1))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        S.sample(tiny_model, x.long(), 10, S.GaussianNoise(0.1))
    with pytest.raises(TypeError, match="family must have"):
        S.enumerate_votes(tiny_model, x, [1, 2])
    with pytest.raises(TypeError, match="model must be a PixelDP network"):
        dp.expected_scores(tiny_model, x)


# --------------------------------------------------------------------------- enumeration


class CountingTranslations(S.Translations):
    def __init__(self, shifts):
        super().__init__(shifts)
        self.seen = []

    def apply(self, x, t):
        self.seen.append((x.shape[0], t))
        return super().apply(x, t)


def test_enumeration_applies_every_transform_to_every_input_exactly_once(tiny_model):
    x = inputs(5)
    shifts = [(dy, dx) for dy in range(3) for dx in range(3)]
    fam = CountingTranslations(shifts)
    votes = S.enumerate_votes(tiny_model, x, fam, batch_size=7)
    assert votes.shape == (5, 9) and votes.dtype == torch.int64
    assert sum(b for b, _ in fam.seen) == 5 * 9, "each (input, transform) pair once"
    with torch.no_grad():
        brute = torch.stack([tiny_model(torch.roll(x, s, dims=(-2, -1))).argmax(1) for s in shifts], 1)
    assert torch.equal(votes, brute)
    for batch_size in (1, 9, 45, 10_000):
        assert torch.equal(S.enumerate_votes(tiny_model, x, S.Translations(shifts), batch_size=batch_size), votes)
    counts = S.enumerate_votes(tiny_model, x, S.Translations(shifts), mode="counts")
    assert torch.equal(counts, rl.votes.vote_counts(votes, 10))
    # the smoothed prediction and its certificate are the shared vote rules on these counts
    top = rl.votes.top_two(counts)
    assert torch.equal(top.c1, rl.votes.plurality(counts))
    assert bool((rl.votes.gap_radius(top.n1, top.n2, top.c1, top.c2) >= 0).all())
    assert torch.equal(S.enumerate_votes(tiny_model, x[2:3], S.Translations(shifts)), votes[2:3])


# --------------------------------------------------------------------------- the Monte Carlo decisions


def test_certify_counts_bounds_the_selected_class_and_abstains_at_one_half():
    from robustlab.smoothing.sampling import certify_counts

    selection = torch.tensor([[3, 7, 0], [5, 5, 0], [0, 0, 10]])
    estimation = torch.tensor([[10, 90, 0], [60, 40, 0], [50, 0, 50]])
    d = certify_counts(selection, estimation, alpha=0.01)
    # the class comes from the selection draws (ties to the lower index), the count from the estimation draws
    assert d.count.tolist() == [90, 60, 50] and (d.n0, d.n) == (10, 100)
    assert np.array_equal(d.pA_lower.numpy(), rl.stats.clopper_pearson(d.count, 100, 0.01))
    assert d.prediction.tolist() == [1, rl.certificates.ABSTAIN, rl.certificates.ABSTAIN]
    # a lower bound of exactly 1/2 is not enough to certify: the prediction is withheld
    k = next(k for k in range(1000, 2001) if rl.stats.clopper_pearson(k, 2000, 0.01) > 0.5)
    below = certify_counts(torch.tensor([[1, 0]]), torch.tensor([[k - 1, 2001 - k]]), alpha=0.01)
    above = certify_counts(torch.tensor([[1, 0]]), torch.tensor([[k, 2000 - k]]), alpha=0.01)
    assert below.prediction.tolist() == [rl.certificates.ABSTAIN] and above.prediction.tolist() == [0]


def test_predict_counts_is_the_binomial_test_of_the_top_two():
    from robustlab.smoothing.sampling import predict_counts

    counts = torch.tensor([[60, 40, 0], [75, 25, 0], [0, 0, 100], [30, 30, 40]])
    p = rl.stats.binomial_test_half(torch.tensor([60, 75, 100, 40]), torch.tensor([100, 100, 100, 70]))
    expected = [c if pv <= 0.01 else rl.certificates.ABSTAIN for c, pv in zip([0, 0, 2, 2], p)]
    assert predict_counts(counts, alpha=0.01).tolist() == expected == [-1, 0, 2, -1]
    assert predict_counts(torch.tensor([[20]]), alpha=0.01).tolist() == [0]  # one class, no runner-up


@pytest.mark.parametrize("call, match", [
    (lambda f: f.certify_counts(torch.ones(2, 3), torch.ones(2, 3, dtype=torch.long), 0.1), "selection"),
    (lambda f: f.certify_counts(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 2, dtype=torch.long), 0.1), "same shape"),
    (lambda f: f.certify_counts(torch.tensor([[1, 1], [2, 0]]), torch.tensor([[1, 1], [3, 0]]), 0.1), "same sample size"),
    (lambda f: f.certify_counts(torch.tensor([[1, -1]]), torch.tensor([[1, 1]]), 0.1), "selection must hold counts"),
    (lambda f: f.certify_counts(torch.tensor([[1, 1]]), torch.tensor([[1, 1]]), 1.5), "alpha"),
    (lambda f: f.predict_counts(torch.ones(3), 0.1), "counts"),
])
def test_the_decisions_name_their_bad_arguments(call, match):
    from robustlab.smoothing import sampling

    with pytest.raises((TypeError, ValueError), match=match):
        call(sampling)


def test_a_transform_family_must_implement_its_interface():
    class OnlyLength(S.TransformFamily):
        def __len__(self):
            return 3

    with pytest.raises(TypeError, match="apply"):
        OnlyLength()
