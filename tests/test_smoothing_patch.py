"""Column and block smoothing against patches: the certificate is never exceeded (brute force over
patch positions and contents, a patch attack on a trained digits model), it is tight, the tie
rule and the wrap-around are the paper's, the randomized variant's violation rate stays within
alpha, and bad arguments raise."""

import itertools

import pytest
import torch
from scipy.stats import binom
from torch import nn

import robustlab as rl
from robustlab.certificates import ABSTAIN
from robustlab.smoothing import patch as P


# --------------------------------------------------------------------------- tiny base classifiers


class Bright(nn.Module):
    """Votes class 1 if the kept region holds a pixel of value 1, else class 0 (an attacker owns it)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, z):
        c = z.shape[1] // 2
        keep = (z[:, :c] + z[:, c:]) > 0.5
        bright = ((z[:, :c] > 0.99) & keep).flatten(1).any(1)
        return torch.stack([(~bright).float(), bright.float()], 1) * 10.0


class KeepsColumns(nn.Module):
    """Votes class 0 iff the band keeps a column in ``cols`` (class 1 otherwise): p_0 known exactly."""

    def __init__(self, cols):
        super().__init__()
        self.cols = list(cols)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, z):
        keep = (z[:, 0] + z[:, 1]) > 0.5  # (N, H, W)
        hit = keep[:, 0, self.cols].any(1)
        return torch.stack([hit.float(), (~hit).float()], 1)


def tiny_model(seed=0, h=6, w=6, k=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * h * w, 16), nn.ReLU(), nn.Linear(16, k)).eval()


class RowProfile(nn.Module):
    """A random linear classifier of the kept pixels' row sums (both channels): every column band of a
    row-constant image sees the same profile, so votes agree and certificates are not vacuous."""

    def __init__(self, seed, h=6, k=3):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(2 * h, k)

    def forward(self, z):
        return 3.0 * self.lin(z.sum(-1).flatten(1))


def all_patched(x, m, values=(0.0, 1.0)):
    """Every image equal to x (1, 1, H, W) outside one m x m square, over all positions and contents."""
    h, w = x.shape[-2:]
    contents = torch.tensor(list(itertools.product(values, repeat=m * m)), dtype=x.dtype).view(-1, m, m)
    out = []
    for r in range(h - m + 1):
        for c in range(w - m + 1):
            xs = x.repeat(contents.shape[0], 1, 1, 1)
            xs[:, 0, r:r + m, c:c + m] = contents
            out.append(xs)
    return torch.cat(out)


# --------------------------------------------------------------------------- families and encoding


def test_encoding_distinguishes_ablated_from_black():
    x = torch.zeros(1, 1, 2, 2)
    z = P.encode(x, torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]))
    assert z[0, :, 0, 0].tolist() == [0.0, 1.0], "a kept black pixel is (0, 1)"
    assert z[0, :, 0, 1].tolist() == [0.0, 0.0], "an ablated pixel is (0, 0)"


def test_column_bands_wrap_around():
    fam = P.ColumnBands(2, width=6, height=6)
    x = torch.rand(3, 1, 6, 6)
    z = fam.apply(x, 5)
    assert z.shape == (3, 2, 6, 6)
    kept = (z[:, 0] + z[:, 1] > 0.5)[0, 0]
    assert kept.tolist() == [True, False, False, False, False, True], "band 5 keeps columns 5 and 0"
    assert torch.equal(z[:, 0, :, 5], x[:, 0, :, 5]) and torch.equal(z[:, 1, :, 0], 1 - x[:, 0, :, 0])
    assert all(int(fam.masks()[t].sum()) == 2 * 6 for t in range(6)), "every band keeps s full columns"


def test_blocks_wrap_in_both_axes():
    fam = P.Blocks(2, height=6, width=6)
    assert len(fam) == 36
    mask = fam.masks()[5 * 6 + 5, 0].bool()
    assert sorted(map(tuple, mask.nonzero().tolist())) == [(0, 0), (0, 5), (5, 0), (5, 5)]
    assert bool((fam.masks().sum((1, 2, 3)) == 4).all()), "every block keeps s * s pixels"


@pytest.mark.parametrize("kind", P.KINDS)
@pytest.mark.parametrize("s", [1, 2, 3])
def test_counting_lemma_patch_meets_exactly_delta_bands(kind, s):
    h = w = 6
    fam = P.smoothing_family(kind, s, (h, w))
    masks = fam.masks().bool()[:, 0]
    for m in (1, 2, 3):
        delta = P.votes_affected(kind, m, s, (h, w))
        for r in range(h - m + 1):
            for c in range(w - m + 1):
                met = int(masks[:, r:r + m, c:c + m].flatten(1).any(1).sum())
                assert met == delta, f"{kind} s={s}: patch {m} at ({r}, {c}) meets {met} bands, Delta = {delta}"


# --------------------------------------------------------------------------- votes


def test_threshold_votes_match_a_direct_count():
    model = tiny_model(1)
    x = torch.rand(5, 1, 6, 6)
    for kind, theta in [("column", 0.2), ("column", 0.6), ("block", 0.3), ("block", None)]:
        fam = P.smoothing_family(kind, 2, x.shape)
        with torch.no_grad():
            probs = torch.stack([model(fam.apply(x, t)).softmax(1) for t in range(len(fam))], 1)  # (B, T, K)
        expected = (probs.argmax(2)[..., None] == torch.arange(3)).sum(1) if theta is None \
            else (probs >= theta).sum(1)
        got = P.band_counts(model, x, kind=kind, size=2, theta=theta, batch_size=7)
        assert torch.equal(got, expected), f"{kind} theta={theta}"


def test_votes_do_not_depend_on_batch_size():
    model = tiny_model(2)
    x = torch.rand(6, 1, 6, 6)
    a = P.band_counts(model, x, kind="block", size=3, theta=0.3, batch_size=5)
    b = P.band_counts(model, x, kind="block", size=3, theta=0.3, batch_size=1000)
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- certificate


def test_tie_rule_cases():
    shape = (8, 8)
    counts = torch.tensor([
        [8, 0, 0],   # unanimous for class 0: the 4-4 tie at Delta = 4 goes to 0 -> m = 3 (s = 2)
        [0, 8, 0],   # unanimous for class 1: runner-up 0 has the lower index, gap 7 -> Delta 3 -> m = 2
        [0, 4, 4],   # a tie: class 1 wins it, nothing certified
        [1, 6, 1],   # gap 5 - 1 = 4 -> Delta 2 -> m = 1
        [0, 6, 1],   # gap 5, c2 = 2 > c1 -> 5 -> Delta 2 -> m = 1
        [0, 0, 0],   # no votes: class 0 by the tie rule, radius 0
    ])
    cert = P.certify_counts(counts, kind="column", size=2, shape=shape)
    assert cert.prediction.tolist() == [0, 1, 1, 1, 1, 0]
    assert cert.radius.tolist() == [3, 2, 0, 1, 1, 0]
    assert cert.unit == rl.certificates.UNITS["patch"] and cert.alpha is None
    assert cert.runner_up.tolist() == [1, 0, 2, 0, 2, 1]
    # (s = 2, m = 2): a gap of 6 certifies only with the tie rule in c1's favour
    two = P.certify_counts(torch.tensor([[7, 1], [1, 7]]), kind="column", size=2, shape=shape)
    assert two.radius.tolist() == [2, 1]


def test_block_certificate_thresholds():
    # s = 4, 8x8: m = 1 needs Delta 16 -> gap >= 32; m = 2 needs Delta 25 -> gap >= 50
    counts = torch.tensor([[32, 0], [31, 0], [0, 50], [50, 0]])
    cert = P.certify_counts(counts, kind="block", size=4, shape=(8, 8))
    assert cert.radius.tolist() == [1, 0, 1, 2]


@pytest.mark.parametrize("kind,s", [("column", 1), ("column", 2), ("block", 1)])
def test_certificate_is_tight_for_an_attacker_owned_base(kind, s):
    """All-black image, Bright base: a patch of side radius + 1 (of ones) flips the prediction."""
    x = torch.zeros(1, 1, 6, 6)
    cert = P.certify(Bright(), x, kind=kind, size=s, theta=None)
    r = int(cert.radius[0])
    assert cert.prediction.tolist() == [0] and r >= 1
    for m in range(1, r + 1):
        values = (0.0, 1.0) if m <= 2 else (1.0,)  # every binary content up to side 2, then all-ones
        preds = P.predict(Bright(), all_patched(x, m, values), kind=kind, size=s, theta=None)
        assert bool((preds == 0).all()), f"a patch of side {m} <= radius {r} flipped the prediction"
    beyond = x.clone()
    beyond[0, 0, 1:r + 2, 1:r + 2] = 1.0
    assert P.predict(Bright(), beyond, kind=kind, size=s, theta=None).tolist() == [1], "radius + 1 must flip"


@pytest.mark.parametrize("kind,s,theta", [("column", 1, 0.3), ("column", 2, None), ("block", 2, 0.6),
                                          ("column", 1, 0.6)])
def test_brute_force_no_patch_inside_the_radius_changes_the_prediction(kind, s, theta):
    """Tiny random model, 6x6 binary images: every patch position and binary content of side <= radius."""
    model = RowProfile(3 if kind == "column" else 4)
    gen = torch.Generator().manual_seed(0)
    rows = (torch.rand(40, 1, 6, 1, generator=gen) > 0.5).float().expand(40, 1, 6, 6)
    flips = (torch.rand(40, 1, 6, 6, generator=gen) < 0.1).float()
    x = (rows - flips).abs()  # row-constant binary images with 10% of the pixels flipped
    cert = P.certify(model, x, kind=kind, size=s, theta=theta)
    checked = 0
    for i in torch.nonzero(cert.radius >= 1).flatten().tolist():
        base_counts = cert.counts[i]
        for m in range(1, min(int(cert.radius[i]), 2) + 1):
            xs = all_patched(x[i:i + 1], m)
            counts = P.band_counts(model, xs, kind=kind, size=s, theta=theta)
            delta = P.votes_affected(kind, m, s, (6, 6))
            assert int((counts - base_counts).abs().max()) <= delta, "a patch moved a count by more than Delta"
            assert bool((rl.votes.plurality(counts) == cert.prediction[i]).all()), \
                f"image {i}: a patch of side {m} <= radius {int(cert.radius[i])} changed the prediction"
            checked += 1
    assert checked >= 3, f"too few certified images to test ({checked})"


# --------------------------------------------------------------------------- randomized variant


def test_randomized_violation_rate_within_alpha():
    """W = 20, s = 1, the base votes 0 on 13 of 20 columns: p_0 = 0.65 = 1/2 + 3/20 exactly, so radius 3
    (Delta = 3) is false; CERTIFY may claim it with probability at most alpha."""
    model = KeepsColumns(range(13))
    x = torch.rand(1, 1, 20, 20).expand(300, 1, 20, 20).contiguous()
    alpha = 0.2
    cert = P.certify_randomized(model, x, kind="column", size=1, n0=10, n=200, alpha=alpha, seed=0)
    wrong_class = (cert.prediction != 0) & ~cert.abstained
    violations = int((wrong_class | (cert.radius >= 3)).sum())
    limit = binom.ppf(1 - 1e-3, 300, alpha)
    assert violations <= limit, f"{violations} violations of 300 exceed the binomial limit {limit} at alpha {alpha}"
    assert bool((cert.radius[~cert.abstained] >= 1).any()), "the certificate must not be vacuous"


def test_randomized_is_seeded_and_batch_independent():
    model = tiny_model(5)
    x = torch.rand(3, 1, 6, 6)
    a = P.certify_randomized(model, x, size=2, n0=20, n=300, batch_size=7, seed=3)
    b = P.certify_randomized(model, x, size=2, n0=20, n=300, batch_size=1000, seed=3)
    c = P.certify_randomized(model, x[1:2], size=2, n0=20, n=300, seed=4)
    assert torch.equal(a.count, b.count) and torch.equal(a.prediction, b.prediction)
    assert int(a.count[1]) == int(c.count[0]), "image i uses the stream seeded seed + i"
    assert bool((a.radius[a.prediction == ABSTAIN] == 0).all())


# --------------------------------------------------------------------------- training and attack


def test_band_ablation_loss_uses_one_band_per_example():
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2 * 36, 3)

        def forward(self, z):
            seen.append(z.detach().clone())
            return self.lin(z.flatten(1))

    x, y = torch.rand(64, 1, 6, 6), torch.zeros(64, dtype=torch.long)
    P.BandAblationLoss("column", 2)(Spy(), x, y)
    keep = (seen[0][:, 0] + seen[0][:, 1] > 0.5)[:, 0]  # (B, W)
    assert bool((keep.sum(1) == 2).all())
    assert len({tuple(k.tolist()) for k in keep}) > 1, "different examples get different bands"
    assert "column" in repr(P.BandAblationLoss("column", 2))


@pytest.mark.slow
@pytest.mark.parametrize("kind,s", [("column", 2), ("block", 4)])
def test_patch_attack_never_succeeds_inside_the_certified_size(kind, s):
    trained = P.base_model(kind, s, width=8, epochs=6, progress=False)
    _, test = rl.data.load("digits")
    x, y = test.x[:40], test.y[:40]
    cert = P.certify(trained.model, x, kind=kind, size=s)
    surrogate = P.SmoothedSurrogate(trained.model, P.smoothing_family(kind, s, x.shape))
    assert bool((cert.radius >= 1).any()), "no image certified: the test would be vacuous"
    flipped_beyond = 0
    for m in (1, 2, 3):
        x_adv = rl.attacks.patch(surrogate, x, cert.prediction, eps=m, steps=15, tries=2, step_size=0.25, seed=m)
        pred = P.predict(trained.model, x_adv, kind=kind, size=s)
        inside = cert.radius >= m
        assert bool((pred[inside] == cert.prediction[inside]).all()), \
            f"a {m}x{m} patch changed a prediction certified at that size"
        flipped_beyond += int((pred[~inside] != cert.prediction[~inside]).sum())
    assert flipped_beyond > 0, "the attack should flip some images not certified at its size"


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise():
    model = tiny_model(0)
    x = torch.rand(2, 1, 6, 6)
    with pytest.raises(ValueError, match="kind"):
        P.certify(model, x, kind="row", size=2)
    with pytest.raises(ValueError, match="size"):
        P.certify(model, x, kind="column", size=7)
    with pytest.raises(ValueError, match="size"):
        P.certify(model, x, kind="block", size=0)
    with pytest.raises(TypeError, match="size"):
        P.certify(model, x, kind="column", size=2.0)
    with pytest.raises(ValueError, match="theta"):
        P.certify(model, x, size=2, theta=0.0)
    with pytest.raises(ValueError, match="theta"):
        P.certify(model, x, size=2, theta=1.5)
    with pytest.raises(ValueError, match="x"):
        P.certify(model, x * 2, size=2)
    with pytest.raises(ValueError, match="x"):
        P.certify(model, torch.rand(2, 36), size=2)
    with pytest.raises(TypeError, match="model"):
        P.certify(lambda z: z, x, size=2)
    with pytest.raises(ValueError, match="alpha"):
        P.certify_randomized(model, x, size=2, alpha=0.0)
    with pytest.raises(ValueError, match="n0"):
        P.certify_randomized(model, x, size=2, n0=0)
    with pytest.raises(TypeError, match="counts"):
        P.certify_counts(torch.zeros(2, 3), kind="column", size=2, shape=(6, 6))
    with pytest.raises(ValueError, match="counts"):
        P.certify_counts(torch.tensor([[-1, 2]]), kind="column", size=2, shape=(6, 6))
    with pytest.raises(ValueError, match="patch"):
        P.votes_affected("column", -1, 2, (6, 6))
    with pytest.raises(ValueError, match="kind"):
        P.BandAblationLoss("diagonal", 2)
    with pytest.raises(ValueError, match="size"):
        P.base_model("block", dataset="cifar10")
    # the zoo's recipes call base_model(kind) without a size: the full profile's MNIST has defaults too
    assert P.DEFAULT_SIZES["column"]["mnist"] == 2 and P.DEFAULT_SIZES["block"]["mnist"] == 12
