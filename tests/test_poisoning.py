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
    return P.plurality(P.vote_counts(votes, N_CLASSES)), votes


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
    keep = P.spectral_filter(r, labels, eps=0.1)
    assert int((~keep).sum()) == 15 and bool((~keep[90:]).all())


def test_spectral_filter_removes_at_most_factor_eps_of_each_label():
    g = torch.Generator().manual_seed(1)
    r = torch.randn(301, 5, generator=g)
    labels = torch.arange(301) % 3
    keep = P.spectral_filter(r, labels, eps=0.05)
    for c in range(3):
        n_c = int((labels == c).sum())
        assert int((~keep[labels == c]).sum()) == int(1.5 * 0.05 * n_c)
    only = P.spectral_filter(r, labels, eps=0.05, classes=[1])
    assert bool(only[labels != 1].all()), "with classes=[1] the other labels are untouched"


def test_spectral_signatures_defeat_a_digit_backdoor(digits):
    """A 2x2 trigger on 10% of the target label: the backdoor works, the filter removes
    >= 90% of the poisoned samples and at most 1.5 eps of the label, retraining kills it."""
    train, test = digits
    target, source, eps = 0, 7, 0.1
    poisoned, mask = P.backdoor(train, eps, target=target, source=source, seed=0)

    def fit(data):
        model = rl.models.build("cnn", "digits", width=8, seed=0)
        rl.train.fit(model, data, epochs=30, lr=2e-3, batch_size=64, progress=False)
        return model.eval()

    model = fit(poisoned)
    before = P.backdoor_success(model, test, target, source=source)
    assert rl.train.evaluate(model, test) > 0.93
    assert before > 0.8, f"the backdoor should work before filtering, success {before:.3f}"
    keep = P.spectral_filter(P.representations(model, poisoned.x), poisoned.y, eps, classes=[target])
    n_label = int((poisoned.y == target).sum())
    assert int((~keep).sum()) <= 1.5 * eps * n_label
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


def test_plurality_gives_a_tie_to_the_lower_class():
    counts = torch.tensor([[2, 5, 5, 1], [3, 3, 3, 3], [0, 0, 1, 1], [0, 0, 0, 4]])
    assert P.plurality(counts).tolist() == [1, 0, 2, 3]


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
    assert cert.unit == "label flips" and int(cert.radius.max()) == 2
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
