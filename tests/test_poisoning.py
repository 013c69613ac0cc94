"""Poisoning attacks, spectral signatures and the aggregation certificates (DPA, SS-DPA, FA).

The certificates are checked by brute force on tiny data sets whose base learner is a
deterministic 1-nearest-neighbour rule, so that retraining after a poisoning is instant:
no set of insertions, deletions or label flips within the certified size may change the
aggregated prediction.
"""

import itertools

import pytest
import torch

import robustlab as rl
from robustlab import poisoning as P
from robustlab.poisoning import ensemble as E

N_CLASSES = 3


# --------------------------------------------------------------------------- a tiny world


def tiny_data(n, seed):
    """``n`` points in [0, 1]^3 on the 8-bit grid, labelled by the nearest of three centres."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3), generator=g).double() / 255
    y = torch.cdist(x, CENTRES).argmin(1)
    return x, y


def one_nn_votes(x_train, y_train, members, x_test):
    """Base model m = 1-nearest neighbour on the samples with ``members[m]`` (ties: lower
    label; no sample: class 0). Returns votes (B, M)."""
    dist = torch.cdist(x_test, x_train)  # (B, N)
    dist = torch.where(members[:, None, :], dist[None], torch.full_like(dist[None], float("inf")))  # (M, B, N)
    best = dist.min(2, keepdim=True).values
    label = torch.where(dist == best, y_train[None, None, :].expand_as(dist), N_CLASSES).min(2).values
    label = torch.where(torch.isinf(best[..., 0]), torch.zeros_like(label), label)
    return label.T.contiguous()


def aggregate(x_train, y_train, x_test, k, d):
    """The whole defense, from a training set: hash, partition, train, vote."""
    assignment = P.fa_assignment(x_train, k, d)
    members = torch.stack([(assignment == m).any(1) for m in range(k * d)])
    votes = one_nn_votes(x_train, y_train, members, x_test)
    return rl.votes.plurality(rl.votes.vote_counts(votes, N_CLASSES)), votes


def near_copy(x_test, bucket, n_buckets):
    """A point at most (n_buckets - 1) / 255 away from ``x_test`` that hashes to ``bucket``."""
    h = int(P.hash_partition(x_test[None], n_buckets))
    z = x_test.clone()
    z[0] += ((bucket - h) % n_buckets) / 255
    assert int(P.hash_partition(z[None], n_buckets)) == bucket
    return z


CENTRES = torch.tensor([[0.2, 0.2, 0.5], [0.8, 0.3, 0.5], [0.5, 0.8, 0.5]], dtype=torch.float64)


def query_points(x_train, n, seed, clearance):
    """Test points in [0, 0.9]^3 whose nearest training point is farther than ``clearance``:
    the first half near the class centres (large margins), the rest anywhere (small ones)."""
    x, _ = tiny_data(400, seed)
    near = CENTRES.repeat(50, 1) + 0.15 * (x[:150] - 0.5)
    x = torch.round(torch.cat([near, 0.9 * x[150:]]) * 255) / 255  # on the 8-bit grid, as the data
    x = x[torch.cdist(x, x_train).min(1).values > clearance]
    return torch.cat([x[:150][: n // 2], x[150:][: n - n // 2]]) if x.shape[0] >= n else x


def insertion_sets(n_buckets, size):
    """Every way to insert ``size`` points into distinct buckets with chosen labels. (More
    than one insertion into a bucket gains nothing here: one near-copy of the test point
    already sets the bucket's models' votes to any class.)"""
    for buckets in itertools.combinations(range(n_buckets), size):
        for labels in itertools.product(range(N_CLASSES), repeat=size):
            yield list(zip(buckets, labels))


def poisoned_prediction(x_train, y_train, x_t, inserts, deleted, k, d):
    keep = torch.ones(x_train.shape[0], dtype=torch.bool)
    keep[list(deleted)] = False
    xs = [x_train[keep]] + [near_copy(x_t, b, k * d)[None] for b, _ in inserts]
    ys = [y_train[keep], torch.tensor([c for _, c in inserts], dtype=torch.long)]
    return int(aggregate(torch.cat(xs), torch.cat(ys), x_t[None], k, d)[0][0])


# --------------------------------------------------------------------------- attacks


def test_label_flip_changes_exactly_the_masked_labels(digits):
    train, _ = digits
    poisoned, mask = P.label_flip(train, 0.2, seed=1)
    assert int(mask.sum()) == round(0.2 * len(train.y))
    assert bool((poisoned.y[mask] != train.y[mask]).all()) and bool((poisoned.y[~mask] == train.y[~mask]).all())
    assert torch.equal(poisoned.x, train.x)
    again, mask2 = P.label_flip(train, 0.2, seed=1)
    assert torch.equal(again.y, poisoned.y) and torch.equal(mask, mask2), "label flipping must be seeded"
    targeted, tmask = P.label_flip(train, 0.1, seed=0, target=3)
    assert bool((targeted.y[tmask] == 3).all()) and bool((train.y[tmask] != 3).all())


def test_backdoor_poisons_the_requested_fraction_of_the_target_label(digits):
    train, _ = digits
    trigger = P.Trigger(size=2, location=(0, 0), value=1.0)
    poisoned, mask = P.backdoor(train, 0.1, target=0, trigger=trigger, source=7, seed=0)
    assert abs(int(mask.sum()) / int((poisoned.y == 0).sum()) - 0.1) < 0.01
    assert bool((train.y[mask] == 7).all()) and bool((poisoned.y[mask] == 0).all())
    assert bool((poisoned.x[mask][:, :, :2, :2] == 1).all()), "the trigger is stamped on every poisoned image"
    assert torch.equal(poisoned.x[~mask], train.x[~mask]) and torch.equal(poisoned.y[~mask], train.y[~mask])
    before = train.x.clone()
    P.apply_trigger(train.x[:5], trigger)
    assert torch.equal(train.x, before), "apply_trigger returns a new tensor"


def test_attacks_name_their_bad_arguments(digits):
    train, _ = digits
    with pytest.raises(ValueError, match="rate"):
        P.label_flip(train, 1.5)
    with pytest.raises(ValueError, match="target"):
        P.backdoor(train, 0.1, target=10)
    with pytest.raises(ValueError, match="source"):
        P.backdoor(train, 0.1, target=2, source=2)
    with pytest.raises(ValueError, match="trigger"):
        P.apply_trigger(train.x[:2], P.Trigger(size=3, location=(6, 6)))
    with pytest.raises(ValueError, match="trigger.size"):
        P.Trigger(size=0)


# --------------------------------------------------------------------------- spectral signatures


def test_spectral_scores_single_out_a_planted_cluster():
    """90 clean points ~ N(0, I) in R^20 and 10 points shifted by 6 along one direction:
    the top singular direction is the shift and the 10 largest scores are the planted points."""
    g = torch.Generator().manual_seed(0)
    r = torch.randn(100, 20, generator=g)
    r[90:, 3] += 6.0
    labels = torch.zeros(100, dtype=torch.long)
    scores = P.spectral_signature_scores(r, labels)
    assert set(scores.topk(10).indices.tolist()) == set(range(90, 100))
    keep = P.spectral_filter(r, labels, rate=0.1)
    assert int((~keep).sum()) == 15 and bool((~keep[90:]).all())


def test_spectral_filter_removes_at_most_factor_rate_of_each_label():
    g = torch.Generator().manual_seed(1)
    r = torch.randn(301, 5, generator=g)
    labels = torch.arange(301) % 3
    keep = P.spectral_filter(r, labels, rate=0.05)
    for c in range(3):
        n_c = int((labels == c).sum())
        assert int((~keep[labels == c]).sum()) == int(1.5 * 0.05 * n_c)
    only = P.spectral_filter(r, labels, rate=0.05, classes=[1])
    assert bool(only[labels != 1].all()), "with classes=[1] the other labels are untouched"


def test_spectral_signatures_defeat_a_digit_backdoor(digits):
    """A 2x2 trigger on 10% of the target label: the backdoor works, the filter removes
    >= 90% of the poisoned samples and at most 1.5 rate of the label, retraining kills it."""
    train, test = digits
    target, source, rate = 0, 7, 0.1
    poisoned, mask = P.backdoor(train, rate, target=target, source=source, seed=0)

    def fit(data):
        model = rl.models.build("cnn", "digits", width=8, seed=0)
        rl.train.fit(model, data, epochs=30, lr=2e-3, batch_size=64, progress=False)
        return model.eval()

    model = fit(poisoned)
    before = P.backdoor_success(model, test, target, source=source)
    assert rl.train.evaluate(model, test) > 0.93
    assert before > 0.8, f"the backdoor should work before filtering, success {before:.3f}"
    keep = P.spectral_filter(P.representations(model, poisoned.x), poisoned.y, rate, classes=[target])
    n_label = int((poisoned.y == target).sum())
    assert int((~keep).sum()) <= 1.5 * rate * n_label
    caught = float((~keep & mask).sum() / mask.sum())
    assert caught >= 0.9, f"only {caught:.2f} of the poisoned samples were removed"
    after = P.backdoor_success(fit((poisoned.x[keep], poisoned.y[keep])), test, target, source=source)
    assert after < 0.2 < before, f"backdoor success {before:.3f} -> {after:.3f}"


# --------------------------------------------------------------------------- partitions and votes


def test_hash_partition_depends_on_the_sample_alone(digits):
    train, _ = digits
    part = P.hash_partition(train.x, 50)
    assert part.min() >= 0 and part.max() < 50
    perm = torch.randperm(train.x.shape[0], generator=torch.Generator().manual_seed(0))
    assert torch.equal(P.hash_partition(train.x[perm], 50), part[perm]), "the order of the set must not matter"
    assert torch.equal(P.hash_partition(train.x[:10], 50), part[:10]), "nor the rest of the set"
    expected = torch.round(train.x[:10].flatten(1) * 255).sum(1).long() % 50
    assert torch.equal(part[:10], expected)


def test_aggregation_predicts_the_plurality_with_ties_to_the_lower_class():
    votes = torch.tensor([[0, 1, 1, 2, 2, 3], [0, 1, 2, 3, 0, 1], [3, 2, 3, 2, 1, 1], [3, 3, 3, 3, 0, 1]])
    for cert in (P.certify_dpa(votes, 4), P.certify_fa(votes, 4, 6, 1)):
        assert cert.prediction.tolist() == [1, 0, 1, 3]
        assert torch.equal(cert.counts, rl.votes.vote_counts(votes, 4))


def test_aggregation_certificates_are_the_shared_certificate():
    votes = torch.tensor([[0, 0, 0, 0, 1, 2], [1, 1, 0, 0, 2, 2], [2, 2, 2, 2, 2, 1]])
    y = torch.tensor([0, 1, 2])
    x_train, y_train = tiny_data(20, seed=7)
    ss = P.SSDPA((x_train, y_train), 5, n_components=2, n_classes=N_CLASSES).certify(x_train[:4])
    for cert, method, unit in ((P.certify_dpa(votes, 3), "dpa", "poison"), (P.certify_fa(votes, 3, 3, 2), "fa", "poison"),
                               (ss, "ssdpa", "label_flips")):
        assert isinstance(cert, rl.certificates.Certificate)
        assert cert.method == method and cert.unit == rl.certificates.UNITS[unit] and cert.alpha is None
        assert not cert.abstained.any() and cert.radius.dtype == torch.int64
        assert cert.counts.shape == (len(cert), N_CLASSES)
    cert = P.certify_dpa(votes, 3)
    assert cert.radius.tolist() == [1, 0, 1]  # counts (0, 1, 5): floor((5 - 1 - [1 < 2]) / 2)
    top = rl.votes.top_two(cert.counts)
    assert torch.equal(cert.radius, rl.votes.gap_radius(top.n1, top.n2, top.c1, top.c2))
    # certified at r: correct and radius >= r; at r = 0 the clean accuracy of the vote
    acc = cert.certified_accuracy(y, at=[0, 1, 2, 3])
    assert acc.tolist() == pytest.approx([2 / 3, 2 / 3, 0.0, 0.0])
    assert cert.certified_accuracy(y) == pytest.approx(float((cert.prediction == y).float().mean()))


def test_dpa_certificate_on_hand_computed_votes():
    # counts (4, 2, 0): floor((4 - 2 - 0) / 2) = 1; counts (3, 3): class 0 wins, runner-up 1, floor(0 / 2) = 0
    # counts (2, 3) predicting 1 with runner-up 0 < 1: floor((3 - 2 - 1) / 2) = 0
    # counts (0, 0, 6): runner-up 0 < 2, floor((6 - 0 - 1) / 2) = 2 (after 3 flips 0 ties 2 and wins)
    votes = torch.tensor([[0, 0, 0, 0, 1, 1], [0, 1, 0, 1, 0, 1], [1, 1, 1, 0, 0, 2], [2, 2, 2, 2, 2, 2]])
    cert = P.certify_dpa(votes, 3)
    assert cert.prediction.tolist() == [0, 0, 1, 2]
    assert cert.radius.tolist() == [1, 0, 0, 2]


def test_finite_aggregation_with_spread_one_is_dpa():
    g = torch.Generator().manual_seed(0)
    for k, c in ((7, 3), (20, 10), (50, 4)):
        skew = torch.rand(c, generator=g) ** 3  # some classes far more popular than others
        votes = torch.multinomial(skew / skew.sum(), 200 * k, replacement=True, generator=g).view(200, k)
        dpa, fa = P.certify_dpa(votes, c), P.certify_fa(votes, c, k, 1)
        assert torch.equal(dpa.prediction, fa.prediction) and torch.equal(dpa.radius, fa.radius)
    x = torch.rand(100, 1, 8, 8)
    assert torch.equal(P.fa_assignment(x, 13, 1)[:, 0], P.hash_partition(x, 13))


def test_finite_aggregation_buckets_feed_d_distinct_models():
    x = torch.rand(500, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = P.fa_assignment(x, 10, 4)
    assert a.shape == (500, 4) and all(len(set(row)) == 4 for row in a.tolist())
    assert torch.equal(a[:, 0], P.hash_partition(x, 40)), "shift 0 first"


# --------------------------------------------------------------------------- brute force


def test_dpa_certificate_is_exact_against_insertions_and_sound_against_deletions():
    """k = 5 partitions, 1-NN base models, 30 training points. Insertions: a near-copy of
    the test point with a chosen label, hashed into a chosen partition, turns that model's
    vote to any class, so every possible effect of r insertions is enumerated; the smallest
    insertion set that changes the prediction has exactly radius + 1 points. Deletions:
    every subset of at most radius training points is removed; none changes the prediction."""
    k = 5
    x_train, y_train = tiny_data(30, seed=0)
    x_test = query_points(x_train, 10, seed=1, clearance=5 / 255)
    pred, votes = aggregate(x_train, y_train, x_test, k, 1)
    cert = P.certify_dpa(votes, N_CLASSES)
    assert torch.equal(cert.prediction, pred)
    assert len(set(cert.radius.tolist())) >= 2, "the test points should have different radii"
    for i in range(x_test.shape[0]):
        r, p = int(cert.radius[i]), int(pred[i])
        smallest = None
        for size in range(0, r + 2):
            if any(poisoned_prediction(x_train, y_train, x_test[i], ins, (), k, 1) != p
                   for ins in insertion_sets(k, size)):
                smallest = size
                break
        assert smallest == r + 1, f"test point {i}: certified {r}, smallest successful insertion {smallest}"
        for size in range(1, r + 1):
            for deleted in itertools.combinations(range(x_train.shape[0]), size):
                assert poisoned_prediction(x_train, y_train, x_test[i], (), deleted, k, 1) == p


def test_dpa_certificate_holds_against_mixed_insertions_and_deletions():
    k = 7
    x_train, y_train = tiny_data(40, seed=2)
    x_test = query_points(x_train, 8, seed=3, clearance=7 / 255)
    pred, votes = aggregate(x_train, y_train, x_test, k, 1)
    cert = P.certify_dpa(votes, N_CLASSES)
    g = torch.Generator().manual_seed(0)
    for i in range(x_test.shape[0]):
        r = int(cert.radius[i])
        for _ in range(60):
            n_del = int(torch.randint(0, r + 1, (1,), generator=g))
            deleted = torch.randperm(40, generator=g)[:n_del].tolist()
            buckets = torch.randint(0, k, (r - n_del,), generator=g).tolist()
            labels = torch.randint(0, N_CLASSES, (r - n_del,), generator=g).tolist()
            out = poisoned_prediction(x_train, y_train, x_test[i], list(zip(buckets, labels)), deleted, k, 1)
            assert out == int(pred[i]), f"{r} poisoned samples changed a prediction certified for {r}"


def test_finite_aggregation_certificate_is_sound_by_brute_force():
    """k = 4, d = 2 (8 buckets, 8 models of 2 buckets each), 1-NN base models: no set of
    radius insertions (into any buckets, with any labels) changes the prediction, nor any
    single deletion, nor sampled pairs of deletions; and the brute force finds a change
    just beyond the radius for some inputs (there the certificate is tight)."""
    k, d = 4, 2
    x_train, y_train = tiny_data(40, seed=4)
    x_test = query_points(x_train, 8, seed=5, clearance=k * d / 255)
    pred, votes = aggregate(x_train, y_train, x_test, k, d)
    cert = P.certify_fa(votes, N_CLASSES, k, d)
    assert torch.equal(cert.prediction, pred)
    assert set(cert.radius.tolist()) >= {0, 1, 2}
    g = torch.Generator().manual_seed(0)
    tight = 0
    for i in range(x_test.shape[0]):
        r, p = int(cert.radius[i]), int(pred[i])
        for size in range(1, r + 1):
            for ins in insertion_sets(k * d, size):
                assert poisoned_prediction(x_train, y_train, x_test[i], ins, (), k, d) == p
        if r >= 1:
            for j in range(x_train.shape[0]):
                assert poisoned_prediction(x_train, y_train, x_test[i], (), (j,), k, d) == p
        if r >= 2:
            for _ in range(100):
                pair = torch.randperm(x_train.shape[0], generator=g)[:2].tolist()
                assert poisoned_prediction(x_train, y_train, x_test[i], (), pair, k, d) == p
        if any(poisoned_prediction(x_train, y_train, x_test[i], ins, (), k, d) != p
               for ins in insertion_sets(k * d, r + 1)):
            tight += 1
    assert tight >= 3, f"the brute force reached a change at radius + 1 for only {tight} inputs"


def test_ss_dpa_certificate_holds_against_every_small_set_of_label_flips():
    """k = 5 partitions of 20 points; every set of at most radius flips, to every other label."""
    k = 5
    x_train, y_train = tiny_data(20, seed=7)
    x_test = query_points(x_train, 4, seed=7, clearance=0.0)
    cert = P.SSDPA((x_train, y_train), k, n_components=2, n_classes=N_CLASSES).certify(x_test)
    assert cert.unit == rl.certificates.UNITS["label_flips"] and int(cert.radius.max()) == 2
    for i in range(x_test.shape[0]):
        r = int(cert.radius[i])
        for size in range(1, r + 1):
            for flipped in itertools.combinations(range(20), size):
                for offsets in itertools.product((1, 2), repeat=size):
                    y = y_train.clone()
                    y[list(flipped)] = (y[list(flipped)] + torch.tensor(offsets)) % N_CLASSES
                    ss = P.SSDPA((x_train, y), k, n_components=2, n_classes=N_CLASSES)
                    assert int(ss.predict(x_test[i:i + 1])[0]) == int(cert.prediction[i])


# --------------------------------------------------------------------------- the vectorized ensemble


def test_each_base_model_depends_only_on_its_own_partition(digits):
    """Insert one sample and shuffle the set: only the model of the sample's partition changes."""
    train, _ = digits
    sub = rl.data.subset(train, 200, seed=0)
    k = 4
    kw = dict(arch="mlp", width=1, epochs=3, batch_size=8, device="cpu", progress=False)
    ens = P.train_dpa(sub, k, **kw)
    extra = train.x[-1:], train.y[-1:]
    j = int(P.hash_partition(extra[0], k))
    perm = torch.randperm(201, generator=torch.Generator().manual_seed(1))
    x2, y2 = torch.cat([sub.x, extra[0]])[perm], torch.cat([sub.y, extra[1]])[perm]
    ens2 = P.train_dpa((x2, y2), k, **kw)
    for name, p in ens.params.items():
        for m in range(k):
            same = torch.equal(p[m], ens2.params[name][m])
            assert same == (m != j), f"model {m}, parameter {name}: changed={not same}, poisoned partition {j}"


def test_no_base_model_depends_on_the_length_of_another_partition(digits):
    """Bit for bit: one sample inserted into the longest partition changes that model only
    (the batches of every step have the same width, whatever the longest partition)."""
    train, _ = digits
    sub = rl.data.subset(train, 200, seed=0)
    k = 4
    kw = dict(arch="mlp", width=1, epochs=3, batch_size=8, device="cpu", progress=False)
    part = P.hash_partition(sub.x, k)
    sizes = torch.bincount(part, minlength=k)
    longest = int(sizes.argmax())
    assert int(sizes[longest]) % 8 != 0, "the inserted sample widens the last batch of the longest partition"
    rest = train.x[200:]
    pick = int(torch.nonzero(P.hash_partition(rest, k) == longest)[0])
    x2, y2 = torch.cat([sub.x, rest[pick:pick + 1]]), torch.cat([sub.y, train.y[200 + pick:201 + pick]])
    for augment in (None, "shift"):
        ens = P.train_dpa(sub, k, augment=augment, **kw)
        ens2 = P.train_dpa((x2, y2), k, augment=augment, **kw)
        for name, p in ens.params.items():
            for m in range(k):
                same = torch.equal(p[m], ens2.params[name][m])
                assert same == (m != longest), f"augment {augment}, model {m}, {name}: changed={not same}"


class _BatchWidths(torch.nn.Module):
    """An identity layer that records the width of every batch it sees (in a class list:
    the ensemble trains a copy of the module)."""

    seen = []

    def forward(self, x):
        _BatchWidths.seen.append(x.shape[0])
        return x


def test_every_training_batch_is_batch_size_wide(digits):
    """The reason the test above holds on every device: no batch width depends on the
    longest partition (uneven partitions are padded, not cut to the longest list)."""
    train, _ = digits
    sub = rl.data.subset(train, 150, seed=0)
    sizes = torch.bincount(P.hash_partition(sub.x, 3), minlength=3)
    assert int(sizes.max()) % 16 != 0

    def base(seed):
        torch.manual_seed(seed)
        return torch.nn.Sequential(_BatchWidths(), torch.nn.Flatten(), torch.nn.Linear(64, 10))

    _BatchWidths.seen.clear()
    P.train_ensemble(sub, P.fa_assignment(sub.x, 3), 3, base=base, epochs=2, batch_size=16, device="cpu",
                     progress=False)
    steps = -(-int(sizes.max()) // 16)
    assert len(_BatchWidths.seen) == 2 * steps and set(_BatchWidths.seen) == {16}, _BatchWidths.seen


def test_partition_ensemble_certifies_its_own_votes(digits):
    train, test = digits
    sub = rl.data.subset(train, 300, seed=0)
    ens = P.train_fa(sub, 3, 2, arch="mlp", width=1, epochs=2, device="cpu", progress=False)
    assert ens.n_models == 6
    votes = ens.votes(test.x[:50])
    cert = ens.certify(test.x[:50])
    ref = P.certify_fa(votes, 10, 3, 2)
    assert torch.equal(cert.prediction, ref.prediction) and torch.equal(cert.radius, ref.radius)
    assert torch.equal(ens.predict(test.x[:50]), cert.prediction)
    single = ens.model(4)
    assert torch.equal(rl.train.predict(single, test.x[:50]), votes[:, 4])


def test_certificate_functions_name_their_bad_arguments():
    with pytest.raises(ValueError, match="votes"):
        P.certify_dpa(torch.tensor([[0, 3]]), 3)
    with pytest.raises(ValueError, match="k\\*d"):
        P.certify_fa(torch.zeros(2, 5, dtype=torch.long), 3, 2, 2)
    with pytest.raises(ValueError, match="n_partitions"):
        P.hash_partition(torch.rand(2, 3), 0)
    with pytest.raises(ValueError, match="arch"):
        P.train_dpa(rl.data.subset(rl.data.load("digits")[0], 20), 2, arch="resnet")


# --------------------------------------------------------------------------- augmentation and the Lethal Dose study


def _augment(x, u, kinds):
    plan = E._augment_plan(kinds, x.shape[0])
    return E._apply_augment(x, u, plan)


def test_shift_moves_a_pixel_by_the_drawn_offset():
    x = torch.zeros(1, 1, 1, 8, 8)
    x[..., 3, 4] = 1.0
    for uy, ux in ((0.0, 0.0), (0.99, 0.5), (0.5, 0.99), (0.4, 0.1)):
        u = torch.zeros(1, 1, E._N_RANDOM)
        u[..., 0], u[..., 1] = uy, ux
        out = _augment(x, u, "shift")
        dy, dx = int(uy * 3) - 1, int(ux * 3) - 1  # a shift of up to 1 pixel on 8 x 8 images
        assert out.sum() == 1 and out[0, 0, 0, 3 + dy, 4 + dx] == 1, (uy, ux)


def test_flip_cutout_and_identity_affine_do_what_they_say():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 1, 8, 8, generator=g)
    u = torch.full((2, 3, E._N_RANDOM), 0.5)
    u[0, :, 2] = 0.2  # flip
    u[1, :, 2] = 0.7  # no flip
    out = _augment(x, u, "flip")
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])
    u = torch.zeros(2, 3, E._N_RANDOM)
    out = _augment(x, u, "cutout")  # a 2 x 2 square at the top left corner
    assert bool((out[..., :2, :2] == 0).all()) and torch.equal(out[..., 2:, :], x[..., 2:, :])
    assert int((out != x).sum()) <= 2 * 3 * 4
    u = torch.full((2, 3, E._N_RANDOM), 0.5)  # angle 0, scale 1, no translation
    assert torch.allclose(_augment(x, u, "affine"), x, atol=1e-6)
    u = torch.rand(2, 3, E._N_RANDOM, generator=g)
    out = _augment(x, u, "shift+flip+cutout+affine")
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1 + 1e-6


def test_different_models_get_different_augmentations():
    plan = E._augment_plan(("shift", None, "affine+cutout"), 5)
    names = P.AUGMENTATIONS
    assert plan[:, names.index("shift")].tolist() == [True, False, False, True, False]
    assert plan[:, names.index("affine")].tolist() == [False, False, True, False, False]
    assert E._augment_plan(None, 3) is None and E._augment_plan([None], 3) is None
    with pytest.raises(ValueError, match="augment"):
        E._augment_plan("rotate", 2)
    with pytest.raises(ValueError, match="augment"):
        E._augment_plan([], 2)


def test_augmented_base_models_still_depend_only_on_their_own_partition(digits):
    """The certificates need it with augmentation too: the random numbers of model m come
    from model m's own generator, so inserting a sample and shuffling changes one model."""
    train, _ = digits
    sub = rl.data.subset(train, 160, seed=0)
    k = 4
    kw = dict(arch="mlp", width=1, epochs=2, batch_size=8, device="cpu", progress=False,
              augment=("affine+cutout", "shift+flip"))
    ens = P.train_dpa(sub, k, **kw)
    plain = P.train_dpa(sub, k, **{**kw, "augment": None})
    assert any(not torch.equal(p, plain.params[n]) for n, p in ens.params.items()), "augmentation did nothing"
    extra = train.x[-1:], train.y[-1:]
    j = int(P.hash_partition(extra[0], k))
    perm = torch.randperm(161, generator=torch.Generator().manual_seed(1))
    ens2 = P.train_dpa((torch.cat([sub.x, extra[0]])[perm], torch.cat([sub.y, extra[1]])[perm]), k, **kw)
    for name, p in ens.params.items():
        for m in range(k):
            assert torch.equal(p[m], ens2.params[name][m]) == (m != j), f"model {m}, parameter {name}"


def test_vectorized_ensemble_equals_training_each_model_alone(digits):
    """Model m of the vmapped ensemble = the same model trained by itself with torch.optim.Adam
    on its own samples in the same order (the per-model masking and Adam are exact)."""
    train, _ = digits
    sub = rl.data.subset(train, 90, seed=3)
    k, epochs, batch, lr, seed = 3, 3, 8, 2e-3, 5
    ens = P.train_dpa(sub, k, arch="mlp", width=1, epochs=epochs, batch_size=batch, lr=lr, seed=seed,
                      device="cpu", progress=False)
    part = P.hash_partition(sub.x, k)
    rank = E._content_rank(sub.x, sub.y)
    groups = [torch.nonzero(part == m).flatten() for m in range(k)]
    groups = [g[torch.argsort(rank[g])] for g in groups]
    orders, _ = E._model_orders(groups, epochs, seed)
    for m in range(k):
        model = rl.models.build("mlp", "digits", width=1, seed=seed * 1_000_003 + m)
        opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-8)
        for e in range(epochs):
            order = orders[m, e][orders[m, e] >= 0]
            for s in range(0, order.numel(), batch):
                idx = order[s:s + batch]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(sub.x[idx]), sub.y[idx]).backward()
                opt.step()
        alone = dict(model.named_parameters())
        for name, p in ens.params.items():
            assert torch.allclose(p[m], alone[name], atol=2e-5), f"model {m}, {name}: {float((p[m] - alone[name]).abs().max())}"


def test_lethal_dose_study_measures_what_the_ensembles_certify(digits):
    train, test = digits
    sub = rl.data.subset(train, 240, seed=0)
    tst = rl.data.subset(test, 80, seed=0)
    learners = {"plain": {}, "augmented": {"augment": "affine"}}
    study = P.lethal_dose_study(sub, tst, ks=(4, 12), learners=learners, radii=(0, 1, 3), epochs=3, width=1,
                                cache=False, progress=False)
    assert [(r["learner"], r["k"]) for r in study.rows] == [("plain", 4), ("plain", 12), ("augmented", 4),
                                                            ("augmented", 12)]
    cert = P.train_dpa(sub, 12, arch="mlp", width=1, epochs=3, augment="affine", progress=False).certify(tst.x)
    row = study.of("augmented")[1]
    assert row["samples_per_model"] == 20
    assert row["clean_accuracy"] == pytest.approx(float((cert.prediction == tst.y).float().mean()))
    assert row["certified"] == dict(zip((0, 1, 3), cert.certified_accuracy(tst.y, at=[0, 1, 3]).tolist()))
    assert row["median_radius"] == P.median_radius(cert, tst.y)
    for r in study.rows:
        acc = [r["certified"][x] for x in (0, 1, 3)]
        assert acc == sorted(acc, reverse=True) and acc[0] == r["clean_accuracy"]
        assert 0 <= r["median_radius"] <= r["k"] // 2
    assert "augmented" in study.table()
    fig = study.plot(radius=1)
    assert len(fig.axes) == 3
    with pytest.raises(ValueError, match="radius"):
        study.plot(radius=7)


def test_median_radius_counts_wrong_predictions_as_zero():
    cert = P.certify_dpa(torch.tensor([[0, 0, 0, 0, 0], [1, 1, 1, 1, 0], [2, 2, 2, 2, 2]]), 3)
    assert cert.radius.tolist() == [2, 1, 2]
    assert P.median_radius(cert, torch.tensor([0, 1, 2])) == 2
    assert P.median_radius(cert, torch.tensor([1, 0, 2])) == 0  # two wrong of three


def test_lethal_dose_study_names_its_bad_arguments(digits):
    train, test = digits
    with pytest.raises(ValueError, match="ks"):
        P.lethal_dose_study(train, test, ks=())
    with pytest.raises(ValueError, match="ks"):
        P.lethal_dose_study(train, test, ks=(0, 5))
    with pytest.raises(TypeError, match="learners"):
        P.lethal_dose_study(train, test, learners=["MLP"])
    with pytest.raises(ValueError, match="learners"):
        P.lethal_dose_study(train, test, learners={"x": {"k": 3}})
    with pytest.raises(ValueError, match="radii"):
        P.lethal_dose_study(train, test, radii=(-1,))
    with pytest.raises(ValueError, match="augment"):
        P.train_dpa(rl.data.subset(train, 20), 2, augment="rotate")


# --------------------------------------------------------------------------- the full-profile data sets


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_poisoning_pipeline_runs_on_the_full_profile_data_sets(name, fake_data_root, skip_cifar_md5):
    """Backdoor, spectral filtering and a DPA / FA ensemble of CNNs with augmentation on
    28 x 28 and 3 x 32 x 32 images loaded through torchvision (small stand-in files)."""
    train, test = rl.data.load(name, root=fake_data_root, download=False)
    train, test = rl.data.subset(train, 240, seed=0), rl.data.subset(test, 40, seed=0)
    c, h, _ = rl.data.info(name).shape
    trigger = P.Trigger(size=max(2, h // 7))
    poisoned, mask = P.backdoor(train, 0.2, 0, trigger, seed=0)
    assert poisoned.x.shape == train.x.shape and int(mask.sum()) > 0
    stamped = P.apply_trigger(test.x[:4], trigger)
    r, col = trigger.corner(h, h)
    assert bool((stamped[..., r:r + trigger.size, col:col + trigger.size] == trigger.value).all())
    model = rl.models.build("cnn", name, width=4, seed=0)
    rl.train.fit(model, poisoned, epochs=1, batch_size=32, progress=False)
    reps = P.representations(model, poisoned.x)
    keep = P.spectral_filter(reps, poisoned.y, 0.2)
    assert keep.shape == (240,) and keep.dtype == torch.bool and int((~keep).sum()) > 0
    assert 0.0 <= P.backdoor_success(model, test, 0, trigger) <= 1.0
    augment = "shift+flip" if c == 3 else ("affine", "shift+cutout")
    ens = P.train_fa(train, 3, 2, arch="cnn", dataset=name, width=1, epochs=1, augment=augment, device="cpu",
                     progress=False)
    cert = ens.certify(test.x)
    assert cert.prediction.shape == (40,) and int(cert.counts.sum(1).min()) == 6
    assert bool((cert.radius >= 0).all()) and bool((cert.radius <= 3).all())
