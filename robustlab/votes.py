r"""Votes of an ensemble, counted once: counts, the plurality with the lower-index tie
rule, the top two classes, and the gap radius of the aggregation certificates.

Every aggregation defense of the course ends the same way. Some base classifiers (trained
on partitions of the data, or evaluated on bands, blocks or offsets of the input) vote;
the prediction is the plurality class :math:`c_1`, a tie going to the lower class index;
the runner-up :math:`c_2` is the plurality of the other classes under the same rule. If one
unit of the threat (one poisoned sample, one patch position, one quantization step)
can change at most ``per_change`` votes, each change moves the gap :math:`n_{c_1} - n_{c_2}`
by at most :math:`2\cdot` ``per_change``, and :math:`c_1` still wins after :math:`r`
changes as long as :math:`n_{c_1} - n_{c_2} - [c_2 < c_1] - 2r\cdot\text{per\_change} \ge 0`
(the tie term: a tie with a lower-indexed :math:`c_2` would go to :math:`c_2`). Hence

.. math::

    r^\star = \Big\lfloor \frac{n_{c_1} - n_{c_2} - [c_2 < c_1]}{2\,\text{per\_change}} \Big\rfloor,

used by DPA (Levine and Feizi, 2021), Finite Aggregation's ``d = 1`` case, column and
block smoothing (Levine and Feizi, 2020) and deterministic L1 smoothing (Levine and
Feizi, 2021).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._validate import check_positive_int, check_tensor

__all__ = ["vote_counts", "vote_counts_by_owner", "plurality", "TopTwo", "top_two", "gap_radius"]


def _as_int(value, name: str) -> int:
    if hasattr(value, "item") and not isinstance(value, torch.Tensor):  # NumPy integers
        value = value.item()
    return check_positive_int(value, name)


def vote_counts(votes: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Count votes: (B, M) class indices -> (B, n_classes) int64 counts.

    >>> vote_counts(torch.tensor([[2, 0, 2, 1]]), 3)
    tensor([[1, 1, 2]])
    """
    check_tensor(votes, "votes")
    if votes.dtype != torch.int64 or votes.dim() != 2:
        raise ValueError("votes must be an int64 tensor of shape (B, n_voters), "
                         f"got {votes.dtype} {tuple(votes.shape)}")
    n_classes = _as_int(n_classes, "n_classes")
    if votes.numel() and (int(votes.min()) < 0 or int(votes.max()) >= n_classes):
        raise ValueError(f"votes must be class indices in [0, {n_classes}), got values in "
                         f"[{int(votes.min())}, {int(votes.max())}]")
    counts = torch.zeros(votes.shape[0], n_classes, dtype=torch.long, device=votes.device)
    return counts.scatter_add_(1, votes, torch.ones_like(votes))


def vote_counts_by_owner(owner: torch.Tensor, votes: torch.Tensor, n_owners: int, n_classes: int) -> torch.Tensor:
    """Count a flat list of votes by who cast them: ``votes[j]`` is a vote of input
    ``owner[j]`` -> (n_owners, n_classes) int64 counts (the votes of many noisy copies of
    many inputs, packed into one forward pass).

    >>> vote_counts_by_owner(torch.tensor([0, 0, 1, 1, 1]), torch.tensor([2, 2, 0, 1, 0]), 2, 3)
    tensor([[0, 0, 2],
            [2, 1, 0]])
    """
    check_tensor(owner, "owner")
    check_tensor(votes, "votes")
    for name, t in (("owner", owner), ("votes", votes)):
        if t.dtype != torch.int64 or t.dim() != 1:
            raise ValueError(f"{name} must be an int64 tensor of shape (M,), got {t.dtype} {tuple(t.shape)}")
    if owner.shape != votes.shape:
        raise ValueError(f"owner and votes must have the same shape, got {tuple(owner.shape)} and {tuple(votes.shape)}")
    n_owners, n_classes = _as_int(n_owners, "n_owners"), _as_int(n_classes, "n_classes")
    if votes.numel():
        if int(votes.min()) < 0 or int(votes.max()) >= n_classes:
            raise ValueError(f"votes must be class indices in [0, {n_classes})")
        if int(owner.min()) < 0 or int(owner.max()) >= n_owners:
            raise ValueError(f"owner must hold indices in [0, {n_owners})")
    flat = torch.bincount(owner * n_classes + votes, minlength=n_owners * n_classes)
    return flat.view(n_owners, n_classes)

def _check_counts(counts) -> torch.Tensor:
    check_tensor(counts, "counts")
    if counts.dim() != 2 or counts.shape[1] < 1:
        raise ValueError(f"counts must have shape (B, n_classes), got {tuple(counts.shape)}")
    return counts


def plurality(counts: torch.Tensor) -> torch.Tensor:
    """The plurality class of each row of ``counts`` (B, C); a tie goes to the lower class index.

    >>> plurality(torch.tensor([[1, 3, 3], [2, 0, 1]]))
    tensor([1, 0])
    """
    counts = _check_counts(counts)
    n_classes = counts.shape[1]
    index = torch.arange(n_classes, device=counts.device).expand_as(counts)
    best = counts.max(1, keepdim=True).values
    return torch.where(counts == best, index, n_classes).min(1).values


class TopTwo(NamedTuple):
    """The plurality class ``c1`` and the runner-up ``c2`` with their counts, each (B,)."""

    c1: torch.Tensor
    n1: torch.Tensor
    c2: torch.Tensor
    n2: torch.Tensor


def top_two(counts: torch.Tensor) -> TopTwo:
    """The plurality class and the runner-up (the plurality of the other classes), both
    under the lower-index tie rule, with their counts.

    ``counts`` must have at least two columns.

    >>> t = top_two(torch.tensor([[1, 3, 3], [2, 0, 1]]))
    >>> t.c1.tolist(), t.n1.tolist(), t.c2.tolist(), t.n2.tolist()
    ([1, 0], [3, 2], [2, 2], [3, 1])
    """
    counts = _check_counts(counts)
    if counts.shape[1] < 2:
        raise ValueError(f"counts must have at least 2 classes for a runner-up, got {counts.shape[1]}")
    c1 = plurality(counts)
    others = counts.clone()
    others.scatter_(1, c1[:, None], torch.iinfo(others.dtype).min if not others.is_floating_point() else -float("inf"))
    c2 = plurality(others)
    return TopTwo(c1, counts.gather(1, c1[:, None])[:, 0], c2, counts.gather(1, c2[:, None])[:, 0])


def gap_radius(n1, n2, c1, c2, per_change: int = 1) -> torch.Tensor:
    r"""The certified number of changes :math:`\lfloor (n_1 - n_2 - [c_2 < c_1]) / (2\,\text{per\_change}) \rfloor`.

    Parameters
    ----------
    n1, n2 : int64 tensors (B,)
        Votes of the plurality class and of the runner-up (:func:`top_two`).
    c1, c2 : int64 tensors (B,)
        The two classes (for the tie term).
    per_change : int >= 1
        How many votes one change of the threat can move (1 for DPA; the number of bands a
        patch meets for column smoothing).

    Returns
    -------
    torch.Tensor
        int64 (B,), >= 0 whenever ``c1`` is the plurality class under the tie rule.

    >>> t = top_two(torch.tensor([[0, 6, 0], [3, 3, 0], [0, 3, 3]]))
    >>> gap_radius(t.n1, t.n2, t.c1, t.c2).tolist(), gap_radius(t.n1, t.n2, t.c1, t.c2, per_change=2).tolist()
    ([2, 0, 0], [1, 0, 0])
    """
    per_change = _as_int(per_change, "per_change")
    for name, t in (("n1", n1), ("n2", n2), ("c1", c1), ("c2", c2)):
        check_tensor(t, name)
    gap = n1 - n2 - (c2 < c1).long()
    if bool((gap < 0).any()):
        raise ValueError("c1 must win the vote under the lower-index tie rule (n1 > n2, or n1 == n2 with c1 < c2)")
    return torch.div(gap, 2 * per_change, rounding_mode="floor")
