"""The shared vote rules (robustlab.votes) against brute force on small random vote tables:
counts, the plurality with the lower-index tie rule, the runner-up, and the gap radius."""

import itertools

import pytest
import torch

from robustlab import votes


def random_tables(seed, tables=300, max_voters=9, max_classes=5):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(tables):
        k = int(torch.randint(2, max_classes + 1, (1,), generator=gen))
        m = int(torch.randint(1, max_voters + 1, (1,), generator=gen))
        b = int(torch.randint(1, 6, (1,), generator=gen))
        # few classes in use, so that ties are frequent
        yield torch.randint(0, k, (b, m), generator=gen), k


def brute_plurality(row):
    best = max(row)
    return min(c for c, v in enumerate(row) if v == best)


def test_counts_and_plurality_against_brute_force():
    for table, k in random_tables(0):
        counts = votes.vote_counts(table, k)
        for i in range(table.shape[0]):
            row = [sum(int(v) == c for v in table[i]) for c in range(k)]
            assert counts[i].tolist() == row
            assert int(votes.plurality(counts[i:i + 1])) == brute_plurality(row)


def test_top_two_is_the_plurality_of_the_other_classes():
    for table, k in random_tables(1):
        counts = votes.vote_counts(table, k)
        top = votes.top_two(counts)
        for i, row in enumerate(counts.tolist()):
            c1 = brute_plurality(row)
            others = [v if c != c1 else -1 for c, v in enumerate(row)]
            c2 = brute_plurality(others)
            assert (int(top.c1[i]), int(top.n1[i]), int(top.c2[i]), int(top.n2[i])) == (c1, row[c1], c2, row[c2])


def test_the_tie_rule_gives_a_tie_to_the_lower_class_index():
    counts = torch.tensor([[2, 2, 0], [0, 3, 3], [1, 1, 1], [0, 0, 4]])
    assert votes.plurality(counts).tolist() == [0, 1, 0, 2]
    top = votes.top_two(counts)
    assert top.c2.tolist() == [1, 2, 1, 0] and top.n2.tolist() == [2, 3, 1, 0]


@pytest.mark.parametrize("per_change", [1, 2, 3])
def test_gap_radius_is_the_largest_number_of_changes_that_cannot_flip_the_vote(per_change):
    """Brute force: each change moves at most per_change votes from anyone to anyone; the
    radius is the largest r such that no r changes make another class the plurality."""
    for table, k in itertools.islice(random_tables(2, max_voters=7, max_classes=3), 120):
        counts = votes.vote_counts(table, k)
        top = votes.top_two(counts)
        radius = votes.gap_radius(top.n1, top.n2, top.c1, top.c2, per_change=per_change)
        for i, row in enumerate(counts.tolist()):
            c1 = int(top.c1[i])

            def flippable(r):
                # the adversary's best: move r * per_change votes from c1 to one rival j
                moved = r * per_change
                for j in range(k):
                    if j == c1:
                        continue
                    new = list(row)
                    take = min(moved, new[c1])
                    new[c1] -= take
                    new[j] += moved  # votes taken from elsewhere if c1 has run out
                    if brute_plurality(new) != c1:
                        return True
                return False

            r = int(radius[i])
            assert not any(flippable(s) for s in range(r + 1)), (row, per_change, r)
            assert flippable(r + 1), (row, per_change, r)


def test_vote_counts_by_owner_counts_a_flat_list():
    gen = torch.Generator().manual_seed(3)
    owner = torch.randint(0, 4, (200,), generator=gen)
    cast = torch.randint(0, 6, (200,), generator=gen)
    counts = votes.vote_counts_by_owner(owner, cast, 4, 6)
    for i in range(4):
        assert torch.equal(counts[i], torch.bincount(cast[owner == i], minlength=6))
    assert int(counts.sum()) == 200


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="votes must be an int64 tensor"):
        votes.vote_counts(torch.zeros(2, 3), 3)
    with pytest.raises(ValueError, match="votes must be class indices"):
        votes.vote_counts(torch.tensor([[0, 3]]), 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        votes.top_two(torch.tensor([[3]]))
    with pytest.raises(ValueError, match="c1 must win the vote"):
        votes.gap_radius(torch.tensor([2]), torch.tensor([3]), torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="per_change must be an integer >= 1"):
        votes.gap_radius(torch.tensor([3]), torch.tensor([1]), torch.tensor([0]), torch.tensor([1]), per_change=0)
    with pytest.raises(ValueError, match="owner must hold indices"):
        votes.vote_counts_by_owner(torch.tensor([0, 2]), torch.tensor([0, 1]), 2, 2)
    with pytest.raises(ValueError, match="same shape"):
        votes.vote_counts_by_owner(torch.tensor([0, 1]), torch.tensor([0]), 2, 2)
