r"""Partitions and certificates of the aggregation defenses: DPA's hash partition, Finite
Aggregation's buckets, the certificates of DPA, Finite Aggregation and SS-DPA.

Every certificate is the shared :class:`robustlab.certificates.Certificate`; the votes are
counted by :mod:`robustlab.votes` (the plurality with the lower-index tie rule, the top two
classes and the gap radius).
"""

from __future__ import annotations

import math

import torch

from ..certificates import UNITS, Certificate
from .._validate import check_images, check_labels, check_positive_int, check_seed, check_xy
from ..votes import gap_radius, plurality, top_two, vote_counts
from ._common import _n_classes_of

__all__ = ["hash_partition", "fa_shifts", "fa_assignment", "certify_dpa", "certify_fa", "SSDPA"]


def hash_partition(x: torch.Tensor, n_partitions: int) -> torch.Tensor:
    r"""The DPA hash: the sum of a sample's 8-bit pixel values modulo ``n_partitions``.

    :math:`h(x) = \big(\sum_j \mathrm{round}(255\, x_j)\big) \bmod k`, as in Levine and
    Feizi's reference code (which sums the 0..255 pixel values). Rounding to the 8-bit
    levels first makes the integer sum exact in floating point. The partition of a sample
    is a function of that sample alone: the same image lands in the same partition
    whatever the order or the rest of the training set, so one inserted or deleted sample
    changes exactly one partition. (It does not depend on the label, which SS-DPA needs.)

    Parameters
    ----------
    x : tensor (N, ...) in [0, 1]
    n_partitions : int >= 1

    Returns
    -------
    int64 tensor (N,) with values in [0, n_partitions)

    Examples
    --------
    >>> hash_partition(torch.tensor([[0.0, 1.0], [1.0, 1.0], [2 / 255, 0.0]]), 4)
    tensor([3, 2, 2])
    """
    check_images(x, "x")
    check_positive_int(n_partitions, "n_partitions")
    levels = torch.round(x.detach().flatten(1).double() * 255).long()
    return levels.sum(1) % n_partitions


def fa_shifts(k: int, d: int, *, seed: int = 0) -> torch.Tensor:
    """The ``d`` distinct shifts of Finite Aggregation's spread function: 0, then ``d - 1``
    values drawn (seeded) from 1..kd-1. With ``d = 1`` the only shift is 0 (DPA).

    >>> fa_shifts(4, 1).tolist()
    [0]
    >>> len(set(fa_shifts(4, 3).tolist()))
    3
    """
    check_positive_int(k, "k")
    check_positive_int(d, "d")
    seed = check_seed(seed)
    n = k * d
    g = torch.Generator().manual_seed(seed)
    others = torch.randperm(n - 1, generator=g)[:d - 1] + 1
    return torch.cat([torch.zeros(1, dtype=torch.long), others])


def fa_assignment(x: torch.Tensor, k: int, d: int = 1, *, seed: int = 0) -> torch.Tensor:
    r"""Which base models train on each sample under Finite Aggregation (DPA for ``d = 1``).

    A sample goes to bucket :math:`b = h(x) \bmod kd` (:func:`hash_partition`), and bucket
    :math:`b` feeds the :math:`d` base models :math:`(b + s) \bmod kd` for the shifts
    :math:`s` of :func:`fa_shifts` (Wang, Levine and Feizi's spread function). There are
    :math:`kd` base models; each trains on :math:`d` buckets, i.e. on about :math:`1/k` of
    the data, as a DPA model with :math:`k` partitions does.

    Returns
    -------
    int64 tensor (N, d)
        Column ``j``: the model fed through shift ``j``.

    Examples
    --------
    >>> x = torch.tensor([[3 / 255], [4 / 255]])
    >>> bool((fa_assignment(x, 5, 1)[:, 0] == hash_partition(x, 5)).all())
    True
    """
    check_positive_int(k, "k")
    check_positive_int(d, "d")
    n_models = k * d
    bucket = hash_partition(x, n_models)
    return (bucket[:, None] + fa_shifts(k, d, seed=seed)[None, :]) % n_models


def _aggregation_certificate(votes: torch.Tensor, n_classes: int, method: str, unit: str) -> Certificate:
    counts = vote_counts(votes, _n_classes_of(None, n_classes))
    top = top_two(counts)
    radius = gap_radius(top.n1, top.n2, top.c1, top.c2)
    return Certificate(top.c1, radius, unit, method, alpha=None, stats={"counts": counts})


def certify_dpa(votes: torch.Tensor, n_classes: int) -> Certificate:
    r"""DPA's certificate from the votes of the :math:`k` base models (Levine and Feizi, 2021, Thm. 1).

    With :math:`c_1` the plurality class (ties to the lower index), :math:`c_2` the runner-up
    (the plurality of the other classes, same tie rule) and :math:`n_c` the votes for
    :math:`c`, the prediction is certified against

    .. math:: \bar\rho = \Big\lfloor \frac{n_{c_1} - n_{c_2} - [c_2 < c_1]}{2} \Big\rfloor

    insertions or deletions of training samples: each one changes one partition, hence one
    vote, which moves the gap between two classes by at most 2, and :math:`c_1` still wins
    while :math:`n_{c_1} - n_{c_2} - [c_2 < c_1] \ge 0` (:func:`robustlab.votes.gap_radius`
    of :func:`robustlab.votes.top_two`). This holds for *any* deterministic base learner,
    provided each base model depends only on its own partition. Replacing one sample by
    another counts as a deletion and an insertion.

    Parameters
    ----------
    votes : int64 tensor (B, k)
        ``votes[i, j]``: the class base model ``j`` predicts for input ``i``.
    n_classes : int >= 2

    Returns
    -------
    Certificate
        The shared :class:`robustlab.certificates.Certificate`: ``prediction`` the
        plurality vote (aggregation always predicts: it never abstains), ``radius`` the
        certified poison size (int64), unit ``UNITS["poison"]``, method ``"dpa"``,
        ``alpha`` None, and the statistic ``counts`` (B, C), the votes per class.

    Examples
    --------
    >>> cert = certify_dpa(torch.tensor([[0, 0, 0, 0, 1, 2], [1, 1, 0, 0, 2, 2]]), 3)
    >>> cert.prediction.tolist(), cert.radius.tolist(), cert.counts[0].tolist()
    ([0, 0], [1, 0], [4, 1, 1])
    >>> cert.certified_accuracy(torch.tensor([0, 0]), at=[0, 1, 2])
    array([1. , 0.5, 0. ])
    """
    return _aggregation_certificate(votes, n_classes, "dpa", UNITS["poison"])


def certify_fa(votes: torch.Tensor, n_classes: int, k: int, d: int, *, seed: int = 0,
               chunk: int = 256) -> Certificate:
    r"""Finite Aggregation's certificate (Wang, Levine and Feizi, 2022, Thm. 2).

    The :math:`kd` base models vote; bucket :math:`b` feeds the models
    :math:`S_b = \{(b + s) \bmod kd\}` (:func:`fa_assignment`), so one poisoned sample, which
    lands in one bucket, can change the votes of :math:`S_b` only. Against a class
    :math:`c' \ne c` (the prediction), changing model :math:`i`'s vote lowers the margin
    :math:`n_c - n_{c'}` by at most :math:`\delta_i = 1 + [f_i = c] - [f_i = c']`, so
    bucket :math:`b` is worth at most :math:`P_b(c') = \sum_{i \in S_b} \delta_i`. With
    :math:`P_{(1)} \ge P_{(2)} \ge \dots` sorted, :math:`c` beats :math:`c'` after
    :math:`r` poisoned samples whenever

    .. math:: \sum_{j=1}^{r} P_{(j)}(c') \le n_c - n_{c'} - [c' < c],

    and the certified radius is the smallest over :math:`c'` of the largest such
    :math:`r`. (Summing the :math:`P_b` overcounts models shared by two buckets: the bound
    stays sound.) For :math:`d = 1`, :math:`P_b \le 2` and the radius equals
    :func:`certify_dpa`'s.

    Parameters
    ----------
    votes : int64 tensor (B, k*d)
        Column ``i``: base model ``i`` of :func:`fa_assignment` with the same ``seed``.
    n_classes, k, d : int
    seed : int
        The seed of :func:`fa_shifts`.
    chunk : int
        Inputs processed at a time (memory: chunk x n_classes x kd x d).

    Returns
    -------
    Certificate
        As :func:`certify_dpa`'s, with method ``"fa"``.

    Examples
    --------
    >>> votes = torch.tensor([[0, 0, 0, 0, 1, 2], [1, 1, 0, 0, 2, 2]])
    >>> certify_fa(votes, 3, k=6, d=1).radius.tolist() == certify_dpa(votes, 3).radius.tolist()
    True
    >>> unanimous = torch.zeros(1, 6, dtype=torch.long)  # k = 3, d = 2: each bucket can flip 2 models
    >>> certify_fa(unanimous, 3, k=3, d=2).radius.tolist(), certify_dpa(unanimous[:, :3], 3).radius.tolist()
    ([1], [1])
    """
    check_positive_int(k, "k")
    check_positive_int(d, "d")
    n_classes = _n_classes_of(None, n_classes)
    counts = vote_counts(votes, n_classes)
    n_models = k * d
    if votes.shape[1] != n_models:
        raise ValueError(f"votes must have k*d = {n_models} columns (one per base model), got {votes.shape[1]}")
    check_positive_int(chunk, "chunk")
    pred = plurality(counts)
    shifts = fa_shifts(k, d, seed=seed).to(votes.device)
    models_of_bucket = (torch.arange(n_models, device=votes.device)[:, None] + shifts[None, :]) % n_models  # (kd, d)
    classes = torch.arange(n_classes, device=votes.device)
    radius = torch.empty_like(pred)
    for i in range(0, votes.shape[0], chunk):
        v, c, n = votes[i:i + chunk], pred[i:i + chunk], counts[i:i + chunk]
        # delta[b, c', m] = 1 + [v_m = c] - [v_m = c']
        delta = 1 + (v == c[:, None]).long()[:, None, :] - (v[:, None, :] == classes[None, :, None]).long()
        power = delta[:, :, models_of_bucket].sum(-1)  # (b, C, kd)
        top = power.sort(dim=2, descending=True).values.cumsum(2)
        n_c = n.gather(1, c[:, None])
        margin = n_c - n - (classes[None, :] < c[:, None]).long()  # (b, C)
        r = (top <= margin[:, :, None]).sum(2)
        r = torch.where(classes[None, :] == c[:, None], torch.full_like(r, n_models + 1), r)
        radius[i:i + chunk] = r.min(1).values
    return Certificate(pred, radius, UNITS["poison"], "fa", alpha=None, stats={"counts": counts})


class SSDPA:
    r"""Semi-supervised DPA (Levine and Feizi, 2021), in a simple form for small data.

    SS-DPA certifies against *label flips*: every base model may use all training inputs
    (without labels), but only the labels of its own partition. Here:

    1. an unsupervised step on all training inputs, with no label: PCA to ``n_components``
       dimensions (the top right singular vectors of the centred inputs), the features
       standardized;
    2. base model :math:`j` is a nearest-class-centroid classifier in that feature space,
       its centroids computed from the samples of partition :math:`j`
       (:func:`hash_partition`; the partition depends on the input only). A class absent
       from a partition has no centroid there; a partition with no sample votes class 0.

    A label flip changes one partition's labels, hence at most one vote, so
    :func:`certify_dpa`'s bound holds, counted in label flips (the certificate's unit is
    ``UNITS["label_flips"]``, its method ``"ssdpa"``). The inputs themselves are
    trusted: an adversary who alters them is outside this threat model (use DPA).

    Parameters
    ----------
    train : Split or (x, y)
        Training set (its labels possibly flipped).
    k : int
        Number of partitions.
    n_components : int
        PCA dimension.
    n_classes : int, optional
        Default ``max(y) + 1``.

    Examples
    --------
    >>> import robustlab as rl
    >>> train, test = rl.data.load("digits")
    >>> ss = SSDPA(train, k=10)
    >>> cert = ss.certify(test.x)
    >>> cert.method, cert.unit, float((cert.prediction == test.y).float().mean()) > 0.8
    ('ssdpa', 'label flips', True)
    """

    def __init__(self, train, k: int, *, n_components: int = 20, n_classes: int | None = None):
        x, y = check_xy(train, "train")
        check_positive_int(k, "k")
        check_positive_int(n_components, "n_components")
        self.k = k
        self.n_classes = _n_classes_of(y, n_classes)
        check_labels(y, "train.y", n_classes=self.n_classes)
        flat = x.detach().flatten(1).double()
        if n_components > min(flat.shape):
            raise ValueError(f"n_components must be <= min(N, D) = {min(flat.shape)}, got {n_components}")
        # unsupervised step, on every input and no label
        self.mean = flat.mean(0)
        vh = torch.linalg.svd(flat - self.mean, full_matrices=False).Vh[:n_components]
        self.components = vh * torch.sign(vh[:, :1] + (vh[:, :1] == 0).double())  # a fixed sign per component
        z = (flat - self.mean) @ self.components.T
        self.scale = z.std(0).clamp_min(1e-12)
        z = z / self.scale
        # one nearest-centroid classifier per partition: sums and counts per (partition, class)
        part = hash_partition(x, k)
        cell = part * self.n_classes + y
        sums = torch.zeros(k * self.n_classes, n_components, dtype=torch.float64).index_add_(0, cell, z)
        counts = torch.bincount(cell, minlength=k * self.n_classes).double()
        self.centroids = (sums / counts.clamp_min(1)[:, None]).view(k, self.n_classes, n_components)
        self.present = (counts > 0).view(k, self.n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The unsupervised features (B, n_components) of inputs shaped like the training ones."""
        check_images(x, "x")
        flat = x.detach().flatten(1).double()
        if flat.shape[1] != self.mean.shape[0]:
            raise ValueError(f"x has {flat.shape[1]} values per sample, the training inputs had {self.mean.shape[0]}")
        return ((flat - self.mean) @ self.components.T) / self.scale

    def votes(self, x: torch.Tensor) -> torch.Tensor:
        """Each partition's nearest-centroid class, shape (B, k)."""
        z = self.features(x)
        dist = ((z[:, None, None, :] - self.centroids[None]) ** 2).sum(-1)  # (B, k, C)
        dist = torch.where(self.present[None], dist, torch.full_like(dist, math.inf))
        votes = dist.argmin(2)  # the first minimum: ties to the lower class index
        return torch.where(self.present.any(1)[None, :], votes, torch.zeros_like(votes))

    def certify(self, x: torch.Tensor) -> Certificate:
        """Plurality prediction and the number of label flips it is certified against."""
        return _aggregation_certificate(self.votes(x), self.n_classes, "ssdpa", UNITS["label_flips"])

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.certify(x).prediction
