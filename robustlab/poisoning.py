r"""Data poisoning: attacks on the training set, a detector, and certified aggregation (chapter 10).

An adversary who controls part of the *training* set can lower a model's accuracy (label
flipping) or plant a backdoor: a small trigger that turns any test input into a chosen
class while clean accuracy stays high. This module has the attacks, one classic
detector, and the certified defenses of Levine and Feizi:

1. **Attacks.** :func:`label_flip` relabels a fraction of the training set;
   :func:`backdoor` stamps a :class:`Trigger` (a small patch) on images of other classes
   and labels them ``target`` (a dirty-label backdoor, Gu et al.'s BadNets);
   :func:`apply_trigger` stamps it at test time and :func:`backdoor_success` measures the
   attack. Both attacks return a :class:`Poisoned` pair: the poisoned
   :class:`~robustlab.data.Split` and the boolean mask of the poisoned samples.
2. **Spectral signatures** (Tran, Li and Madry, 2018). Poisoned samples of a label leave a
   trace in the top singular direction of that label's centred learned representations:
   :func:`representations`, :func:`spectral_signature_scores`, :func:`spectral_filter`.
3. **Deep Partition Aggregation** (Levine and Feizi, 2021). A deterministic hash of each
   sample (:func:`hash_partition`) splits the training set into :math:`k` partitions; one
   base model per partition; the plurality vote of the :math:`k` models, the lower class
   index winning ties, is certified against
   :math:`\lfloor (n_{c_1} - n_{c_2} - [c_2 < c_1]) / 2 \rfloor` insertions or deletions of
   training samples (:func:`certify_dpa`; the votes are counted by :mod:`robustlab.votes`).
   **SS-DPA** certifies against label flips: its base models see every (unlabeled) training
   input and the labels of one partition (:class:`SSDPA`).
4. **Finite Aggregation** (Wang, Levine and Feizi, 2022): :math:`kd` buckets, each of the
   :math:`kd` base models trains on :math:`d` of them, each bucket feeds :math:`d` models
   (:func:`fa_assignment`, :func:`certify_fa`); :math:`d = 1` is DPA.
5. **The Lethal Dose Conjecture** (Wang, Levine and Feizi, 2022): certified poison size
   against the number of partitions and the base learner's data efficiency, with and
   without data augmentation of the base models (:func:`lethal_dose_study`).

The base models of an aggregation are trained together as one vectorized ensemble
(:func:`train_ensemble`: ``torch.func.stack_module_state`` + ``vmap``, one forward and one
backward pass for all of them), and each base model is a deterministic function of its
own training samples: the partition of a sample depends on the sample alone, the order in
which a model sees its samples depends only on their contents and on the model's index,
and a model whose samples are used up waits without an optimizer step. That is what the
certificates assume, and :mod:`tests.test_poisoning` checks it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from numbers import Real
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import config
from . import data as _data
from . import models as _models
from .certificates import UNITS, Certificate
from .votes import gap_radius, plurality, top_two, vote_counts
from ._validate import (check_choice, check_finite, check_images, check_labels, check_model, check_positive,
                        check_positive_int, check_tensor, check_xy)

__all__ = [
    "Poisoned",
    "Trigger",
    "label_flip",
    "apply_trigger",
    "backdoor",
    "backdoor_success",
    "representations",
    "spectral_signature_scores",
    "spectral_filter",
    "hash_partition",
    "fa_shifts",
    "fa_assignment",
    "certify_dpa",
    "certify_fa",
    "PartitionEnsemble",
    "train_ensemble",
    "train_dpa",
    "train_fa",
    "SSDPA",
    "AUGMENTATIONS",
    "median_radius",
    "LethalDoseStudy",
    "lethal_dose_study",
]


def _rate(rate, name: str = "rate", *, high: float = 1.0, high_open: bool = False) -> float:
    if isinstance(rate, bool) or not isinstance(rate, Real):
        raise TypeError(f"{name} must be a real number, got {type(rate).__name__}")
    if math.isnan(rate) or rate < 0 or rate > high or (high_open and rate == high):
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [0, {high}{bracket}, got {rate}")
    return float(rate)


def _class_index(value, name: str, n_classes: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer class index, got {type(value).__name__}")
    value = int(value)
    if value < 0 or (n_classes is not None and value >= n_classes):
        upper = "" if n_classes is None else f" and < {n_classes}"
        raise ValueError(f"{name} must be a class index >= 0{upper}, got {value}")
    return value


def _n_classes_of(y: torch.Tensor | None, n_classes) -> int:
    if n_classes is None:
        if y is None:
            raise TypeError("n_classes must be given (an integer >= 2)")
        return max(int(y.max()) + 1, 2) if y.numel() else 2
    check_positive_int(n_classes, "n_classes")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    return n_classes


# =========================================================================== 1. attacks


class Poisoned(NamedTuple):
    """A poisoned training set and which of its samples the adversary touched.

    ``split`` is a :class:`~robustlab.data.Split` of the same length as the clean one;
    ``mask`` is a boolean (N,) tensor, True at the poisoned indices.
    """

    split: _data.Split
    mask: torch.Tensor


def label_flip(split, rate: float, *, seed: int = 0, target: int | None = None,
               n_classes: int | None = None) -> Poisoned:
    r"""Flip the labels of a ``rate`` fraction of the training samples.

    :math:`m = \mathrm{round}(\text{rate} \cdot N)` samples are drawn uniformly without
    replacement (seeded); each gets a new label drawn uniformly from the *other* classes,
    or ``target`` if given (samples already labelled ``target`` are then not drawn). The
    inputs are untouched: this is the threat model SS-DPA certifies against.

    Parameters
    ----------
    split : Split or (x, y)
        The clean training set.
    rate : float in [0, 1]
        Fraction of the whole set to relabel.
    seed : int
        Seeds the choice of samples and of the new labels.
    target : int, optional
        Flip every chosen label to this class (a targeted flip).
    n_classes : int, optional
        Number of classes (default: ``max(y) + 1``).

    Returns
    -------
    Poisoned
        ``(split, mask)``; ``split.y[mask] != y[mask]`` everywhere.

    Examples
    --------
    >>> import robustlab as rl
    >>> train, _ = rl.data.load("digits")
    >>> poisoned, mask = label_flip(train, 0.1, seed=0)
    >>> int(mask.sum()), bool((poisoned.y[mask] != train.y[mask]).all()), bool((poisoned.x == train.x).all())
    (144, True, True)
    """
    x, y = check_xy(split, "split")
    rate = _rate(rate)
    check_positive_int(seed, "seed", allow_zero=True)
    n_classes = _n_classes_of(y, n_classes)
    check_labels(y, "split.y", n_classes=n_classes)
    g = torch.Generator().manual_seed(seed)
    n = y.shape[0]
    eligible = torch.arange(n)
    if target is not None:
        target = _class_index(target, "target", n_classes)
        eligible = eligible[y != target]
    m = int(round(rate * n))
    if m > eligible.numel():
        raise ValueError(f"rate={rate} asks for {m} flips but only {eligible.numel()} samples can be flipped")
    chosen = eligible[torch.randperm(eligible.numel(), generator=g)[:m]]
    y_new = y.clone()
    if target is not None:
        y_new[chosen] = target
    else:  # a uniform *other* class: add 1..C-1 modulo C
        offset = torch.randint(1, n_classes, (m,), generator=g)
        y_new[chosen] = (y[chosen] + offset) % n_classes
    mask = torch.zeros(n, dtype=torch.bool)
    mask[chosen] = True
    return Poisoned(_data.Split(x, y_new), mask)


@dataclasses.dataclass(frozen=True)
class Trigger:
    """A backdoor trigger: a ``size`` x ``size`` patch of constant ``value`` pasted at
    ``location``.

    ``location`` is the (row, column) of the patch's top-left pixel; ``None`` puts it in the
    bottom-right corner of the image. ``value`` is a pixel value in [0, 1] written into
    every channel (1.0: a white square, the BadNets trigger on dark digits).
    """

    size: int = 2
    location: tuple | None = None
    value: float = 1.0

    def __post_init__(self):
        check_positive_int(self.size, "trigger.size")
        _rate(self.value, "trigger.value")
        if self.location is not None:
            loc = self.location
            if not (isinstance(loc, (tuple, list)) and len(loc) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in loc)):
                raise ValueError(f"trigger.location must be None or a (row, column) pair of integers >= 0, got {loc!r}")

    def corner(self, height: int, width: int) -> tuple:
        """Top-left (row, column) of the patch in an image of this size (checked to fit)."""
        r, c = (height - self.size, width - self.size) if self.location is None else tuple(self.location)
        if r < 0 or c < 0 or r + self.size > height or c + self.size > width:
            raise ValueError(f"a trigger of size {self.size} at {(r, c)} does not fit in a {height}x{width} image")
        return r, c


def _trigger(trigger) -> Trigger:
    if trigger is None:
        return Trigger()
    if not isinstance(trigger, Trigger):
        raise TypeError(f"trigger must be a robustlab.poisoning.Trigger, got {type(trigger).__name__}")
    return trigger


def apply_trigger(x: torch.Tensor, trigger: Trigger | None = None) -> torch.Tensor:
    """Stamp the trigger on images ``x`` of shape (B, C, H, W) in [0, 1] (a new tensor).

    Examples
    --------
    >>> x = torch.zeros(1, 1, 4, 4)
    >>> apply_trigger(x, Trigger(size=2, value=1.0))[0, 0]
    tensor([[0., 0., 0., 0.],
            [0., 0., 0., 0.],
            [0., 0., 1., 1.],
            [0., 0., 1., 1.]])
    """
    check_images(x, "x")
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images of shape (B, C, H, W), got shape {tuple(x.shape)}")
    trigger = _trigger(trigger)
    r, c = trigger.corner(x.shape[2], x.shape[3])
    out = x.clone()
    out[:, :, r:r + trigger.size, c:c + trigger.size] = trigger.value
    return out


def backdoor(split, rate: float, target: int, trigger: Trigger | None = None, *, source: int | None = None,
             seed: int = 0, n_classes: int | None = None) -> Poisoned:
    r"""Plant a dirty-label backdoor: stamp ``trigger`` on images of other classes, label them ``target``.

    The poisoned images replace the clean ones they were made from (the set keeps its size).
    ``rate`` is Tran et al.'s :math:`\varepsilon`: the fraction of the samples labelled
    ``target`` *after* poisoning that are poisoned, so
    :math:`m = \mathrm{round}(\varepsilon\, n_t / (1 - \varepsilon))` images are taken,
    uniformly and seeded, from the images of class ``source`` (Tran et al. poison one
    source class, e.g. airplanes labelled as birds) or, without ``source``, of all other
    classes (:math:`n_t` clean images of ``target``).

    Parameters
    ----------
    split : Split or (x, y)
        The clean training set, images (N, C, H, W) in [0, 1].
    rate : float in [0, 1)
        Fraction of the target label that is poisoned.
    target : int
        The class the trigger should produce.
    trigger : Trigger, optional
        Defaults to a 2x2 white square in the bottom-right corner.
    source : int, optional
        Take the poisoned images from this class only (default: any class but ``target``).
    seed : int
        Seeds the choice of images.

    Returns
    -------
    Poisoned
        ``(split, mask)``: ``mask`` marks the stamped, relabelled images.

    Examples
    --------
    >>> import robustlab as rl
    >>> train, _ = rl.data.load("digits")
    >>> poisoned, mask = backdoor(train, 0.1, target=0)
    >>> n_target = int((poisoned.y == 0).sum())
    >>> round(int(mask.sum()) / n_target, 2), bool((poisoned.y[mask] == 0).all())
    (0.1, True)
    """
    x, y = check_xy(split, "split")
    if x.dim() != 4:
        raise ValueError(f"split.x must hold images of shape (N, C, H, W), got shape {tuple(x.shape)}")
    rate = _rate(rate, high_open=True)
    n_classes = _n_classes_of(y, n_classes)
    target = _class_index(target, "target", n_classes)
    trigger = _trigger(trigger)
    check_positive_int(seed, "seed", allow_zero=True)
    if source is None:
        others = torch.nonzero(y != target).flatten()
    else:
        source = _class_index(source, "source", n_classes)
        if source == target:
            raise ValueError(f"source must differ from target, got both = {target}")
        others = torch.nonzero(y == source).flatten()
    n_t = int((y == target).sum())
    m = int(round(rate * n_t / (1.0 - rate)))
    if m > others.numel():
        raise ValueError(f"rate={rate} asks for {m} poisoned images but only {others.numel()} can be taken "
                         f"({'class ' + str(source) if source is not None else 'not of class ' + str(target)})")
    g = torch.Generator().manual_seed(seed)
    chosen = others[torch.randperm(others.numel(), generator=g)[:m]]
    x_new, y_new = x.clone(), y.clone()
    if m:
        x_new[chosen] = apply_trigger(x[chosen], trigger)
    y_new[chosen] = target
    mask = torch.zeros(y.shape[0], dtype=torch.bool)
    mask[chosen] = True
    return Poisoned(_data.Split(x_new, y_new), mask)


def backdoor_success(model: nn.Module, test, target: int, trigger: Trigger | None = None, *,
                     source: int | None = None, batch_size: int = 1024) -> float:
    """Attack success rate: the fraction of test inputs *not* of class ``target`` that the
    model classifies as ``target`` once the trigger is stamped on them.

    With ``source``, only the test inputs of that class count (the success rate of a
    backdoor planted with :func:`backdoor`'s ``source``). The model runs in eval mode
    (restored afterwards).
    """
    from .train import predict

    check_model(model)
    x, y = check_xy(test, "test")
    target = _class_index(target, "target")
    keep = y != target
    if source is not None:
        keep = y == _class_index(source, "source")
    if not bool(keep.any()):
        raise ValueError(f"test has no input of class {source}" if source is not None
                         else f"test has no input outside class {target}")
    pred = predict(model, apply_trigger(x[keep], trigger), batch_size=batch_size)
    return float((pred == target).float().mean())


# =========================================================================== 2. spectral signatures


def representations(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """The learned representation of ``x``: the input of the model's last linear layer.

    Uses :func:`robustlab.features.split_representation` (MLP, SmallCNN, ResNet); eval mode,
    no gradients, returned on the CPU, shape (N, D).
    """
    from .features import split_representation
    from .train import _batched

    g, _ = split_representation(check_model(model))
    was_training = model.training
    try:
        return _batched(g, x, batch_size, lambda r: r.flatten(1))
    finally:
        model.train(was_training)


def spectral_signature_scores(representations: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Outlier scores of Tran, Li and Madry (2018), computed label by label.

    For each label :math:`y`, with :math:`R_y` the (n_y, D) representations of the samples
    labelled :math:`y` and :math:`\hat\mu_y` their mean, take the top right singular vector
    :math:`v` of :math:`R_y - \hat\mu_y` and score each sample

    .. math:: \tau_i = \big( (R_i - \hat\mu_y) \cdot v \big)^2 .

    If an :math:`\varepsilon` fraction of a label carries a backdoor whose representation
    differs from the clean one by enough (the paper's spectral separability), the poisoned
    samples are the largest scores.

    Parameters
    ----------
    representations : tensor (N, D)
        E.g. :func:`representations` of a model trained on the poisoned set.
    labels : int64 tensor (N,)

    Returns
    -------
    tensor (N,)
        The scores (0 for a label with a single sample).

    Examples
    --------
    >>> r = torch.tensor([[0., 0.], [1., 0.], [2., 0.], [0., 5.], [0., 6.]])
    >>> spectral_signature_scores(r, torch.tensor([0, 0, 0, 1, 1]))
    tensor([1.0000, 0.0000, 1.0000, 0.2500, 0.2500])
    """
    check_tensor(representations, "representations")
    if representations.dim() != 2:
        raise ValueError(f"representations must have shape (N, D), got {tuple(representations.shape)}")
    check_finite(representations, "representations")
    check_labels(labels, "labels", batch_size=representations.shape[0])
    r = representations.detach().double()
    labels = labels.to(r.device)
    scores = torch.zeros(r.shape[0], dtype=torch.float64, device=r.device)
    for c in torch.unique(labels).tolist():  # one SVD per label
        idx = torch.nonzero(labels == c).flatten()
        if idx.numel() < 2:
            continue
        centred = r[idx] - r[idx].mean(0)
        v = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        scores[idx] = (centred @ v) ** 2
    return scores.to(representations.dtype if representations.is_floating_point() else torch.float32)


def spectral_filter(representations: torch.Tensor, labels: torch.Tensor, rate: float, *, factor: float = 1.5,
                    classes=None) -> torch.Tensor:
    r"""Tran et al.'s filter: drop the top ``factor * rate`` fraction of spectral scores per label.

    As in the paper's Algorithm 1 every label is filtered by default (the defender does
    not know the target); ``classes`` restricts the filter to some labels (e.g. a known
    target, as in the paper's per-target evaluation). From a label with :math:`n_y`
    samples, :math:`\lfloor \text{factor}\cdot\varepsilon\, n_y \rfloor` samples with the
    largest :func:`spectral_signature_scores` are removed, so at most
    ``factor * rate`` of any label goes. Retrain on the kept samples. ``rate`` is Tran et
    al.'s :math:`\varepsilon`, a poison fraction, named as in :func:`backdoor` and
    :func:`label_flip` (the name ``eps`` is kept for the contamination fraction of
    :mod:`robustlab.robuststats`, chapter 9).

    Parameters
    ----------
    representations : tensor (N, D)
    labels : int64 tensor (N,)
    rate : float in [0, 1]
        An upper bound on the poisoned fraction of a label.
    factor : float
        1.5 in the paper.
    classes : sequence of int, optional
        The labels to filter (default: all).

    Returns
    -------
    bool tensor (N,)
        True for the samples to keep.

    Examples
    --------
    >>> r = torch.cat([torch.zeros(9, 2), torch.tensor([[4., 4.]])]) + 0.01 * torch.arange(10.)[:, None]
    >>> keep = spectral_filter(r, torch.zeros(10, dtype=torch.long), rate=0.1)
    >>> keep.tolist()
    [True, True, True, True, True, True, True, True, True, False]
    """
    scores = spectral_signature_scores(representations, labels)
    rate = _rate(rate, "rate")
    check_positive(factor, "factor")
    labels = labels.to(scores.device)
    present = torch.unique(labels).tolist()
    if classes is None:
        classes = present
    else:
        classes = [_class_index(c, "classes") for c in classes]
    keep = torch.ones(labels.shape[0], dtype=torch.bool, device=scores.device)
    for c in classes:
        idx = torch.nonzero(labels == c).flatten()
        n_remove = int(math.floor(factor * rate * idx.numel() + 1e-9))
        if n_remove == 0:
            continue
        # a stable sort: equal scores are removed in index order, reproducibly
        order = torch.sort(scores[idx], descending=True, stable=True).indices
        keep[idx[order[:n_remove]]] = False
    return keep.cpu()


# =========================================================================== 3. partitions and votes


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
    check_positive_int(seed, "seed", allow_zero=True)
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


# =========================================================================== 4. the vectorized ensemble


def _content_rank(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The rank of each sample in the lexicographic order of (8-bit pixels, label): a
    training order that depends on the samples' contents, not on their positions."""
    levels = torch.round(x.detach().flatten(1).double() * 255).to(torch.int16).cpu().numpy()
    keys = np.concatenate([y.cpu().numpy()[None, :].astype(np.int64), levels.T[::-1]], axis=0)
    order = np.lexsort(keys)  # the last key (the first pixel) is the primary one
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return torch.from_numpy(rank)


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class PartitionEnsemble:
    """``k * d`` base models trained on their own parts of the data, evaluated as one vectorized ensemble.

    Made by :func:`train_dpa` (``d = 1``) and :func:`train_fa`. ``votes(x)`` runs all base
    models in one ``vmap``-ed forward pass; ``certify(x)`` returns the shared
    :class:`~robustlab.certificates.Certificate` (:func:`certify_dpa` for ``d = 1``,
    :func:`certify_fa` otherwise); ``model(i)`` gives base model ``i`` as an ordinary module.
    """

    def __init__(self, template: nn.Module, params: dict, buffers: dict, *, k: int, d: int, seed: int, n_classes: int,
                 history: dict | None = None):
        self.template = template  # on the meta device: structure only
        self.params = params
        self.buffers = buffers
        self.k, self.d, self.seed, self.n_classes = k, d, seed, n_classes
        self.history = history or {}

    @property
    def n_models(self) -> int:
        return self.k * self.d

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def model(self, i: int) -> nn.Module:
        """Base model ``i`` as a standalone ``nn.Module`` (a copy, on the ensemble's device)."""
        check_positive_int(i, "i", allow_zero=True)
        if i >= self.n_models:
            raise ValueError(f"i must be < {self.n_models} (the number of base models), got {i}")
        m = copy.deepcopy(self.template).to_empty(device=self.device)
        m.load_state_dict({**{n: p[i].detach() for n, p in self.params.items()},
                           **{n: b[i] for n, b in self.buffers.items()}})
        return m.eval()

    @torch.no_grad()
    def logits(self, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
        """Logits of every base model, shape (n_models, B, C), on the CPU."""
        from torch.func import functional_call, vmap

        check_images(x, "x")
        check_positive_int(batch_size, "batch_size")
        template = self.template

        def one(p, b, xb):
            return functional_call(template, (p, b), (xb,))

        run = vmap(one, in_dims=(0, 0, None))
        out = [run(self.params, self.buffers, x[i:i + batch_size].to(self.device)).cpu()
               for i in range(0, x.shape[0], batch_size)]
        return torch.cat(out, dim=1)

    def votes(self, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
        """The class each base model predicts, shape (B, n_models)."""
        return self.logits(x, batch_size=batch_size).argmax(2).T.contiguous()

    def certify(self, x: torch.Tensor, *, batch_size: int = 512) -> Certificate:
        """Plurality prediction and certified poison size of each input (:func:`certify_dpa`, :func:`certify_fa`)."""
        votes = self.votes(x, batch_size=batch_size)
        if self.d == 1:
            return certify_dpa(votes, self.n_classes)
        return certify_fa(votes, self.n_classes, self.k, self.d, seed=self.seed)

    def predict(self, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
        """The plurality vote (ties to the lower class index), shape (B,)."""
        return plurality(vote_counts(self.votes(x, batch_size=batch_size), self.n_classes))

    def base_accuracy(self, data) -> torch.Tensor:
        """Accuracy of every base model on ``data = (x, y)``, shape (n_models,)."""
        x, y = check_xy(data, "data")
        return (self.votes(x) == y[:, None]).float().mean(0)

    def __repr__(self) -> str:
        kind = "DPA" if self.d == 1 else "FiniteAggregation"
        return f"PartitionEnsemble({kind}, k={self.k}, d={self.d}, base={self.template.__class__.__name__})"


def _model_orders(groups: list, epochs: int, seed: int, *, n_random: int = 0):
    """(M, epochs, L) sample indices, -1 padded: model m's order in each epoch, drawn from a
    generator seeded by (seed, m) alone, over its samples sorted by content. With
    ``n_random > 0`` also (M, epochs, L, n_random) uniform numbers for the augmentation of
    each visit, drawn from the same generator after the orders (else None)."""
    n_models = len(groups)
    longest = max((g.numel() for g in groups), default=0)
    out = torch.full((n_models, epochs, max(longest, 1)), -1, dtype=torch.long)
    rand = torch.zeros((n_models, epochs, max(longest, 1), n_random)) if n_random else None
    gen = torch.Generator()
    for m, members in enumerate(groups):  # index bookkeeping only, one call per model
        if members.numel() == 0:
            continue
        gen.manual_seed(seed * 1_000_003 + m)
        perm = torch.rand(epochs, members.numel(), generator=gen).argsort(1)
        out[m, :, :members.numel()] = members[perm]
        if n_random:
            rand[m, :, :members.numel()] = torch.rand(epochs, members.numel(), n_random, generator=gen)
    return out, rand


AUGMENTATIONS = ("shift", "flip", "cutout", "affine")
_N_RANDOM = 9  # uniform numbers per visit: shift (2), flip (1), cutout position (2), affine (4)


def _augment_plan(augment, n_models: int):
    """Per-model augmentation as a (M, 4) bool tensor (shift, flip, cutout, affine), or None."""
    if augment is None:
        return None
    kinds = [augment] if isinstance(augment, str) else list(augment)
    if not kinds:
        raise ValueError("augment must be None, an augmentation name or a non-empty sequence of them")
    plan = torch.zeros(n_models, len(AUGMENTATIONS), dtype=torch.bool)
    for m in range(n_models):
        kind = kinds[m % len(kinds)]
        if kind is None or kind == "none":
            continue
        if not isinstance(kind, str):
            raise TypeError(f"augment entries must be strings or None, got {type(kind).__name__}")
        for part in kind.split("+"):
            if part not in AUGMENTATIONS:
                raise ValueError(f"augment: unknown augmentation {part!r}; choose from {AUGMENTATIONS} "
                                 f"(combine with '+', e.g. 'shift+flip', or None)")
            plan[m, AUGMENTATIONS.index(part)] = True
    return plan if bool(plan.any()) else None


def _apply_augment(xb: torch.Tensor, u: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
    """Augment a (M, b, C, H, W) batch; ``u`` (M, b, 9) uniform numbers, ``plan`` (M, 4) bools.

    shift: a translation by up to max(1, round(H / 8)) pixels each way, zero fill;
    flip: a horizontal flip with probability 1/2; cutout: a zeroed square of side
    max(1, round(H / 4)) at a uniform position; affine: a rotation by up to 10 degrees, a
    scaling by up to 10% and a shift by up to H / 16 pixels (bilinear, zero fill). Pixels
    stay in [0, 1]."""
    n_models, b, c, h, w = xb.shape
    x = xb.reshape(n_models * b, c, h, w)
    u = u.reshape(n_models * b, -1)
    use = plan.to(x.device).repeat_interleave(b, dim=0)  # (R, 3)
    rows = torch.arange(x.shape[0], device=x.device)
    if bool(use[:, 0].any()):
        s = max(1, round(h / 8))
        dy = (u[:, 0] * (2 * s + 1)).floor().long().clamp(max=2 * s) - s
        dx = (u[:, 1] * (2 * s + 1)).floor().long().clamp(max=2 * s) - s
        dy, dx = torch.where(use[:, 0], dy, 0), torch.where(use[:, 0], dx, 0)
        padded = F.pad(x, (s, s, s, s))
        ri = (s - dy)[:, None] + torch.arange(h, device=x.device)  # out[i, j] = x[i - dy, j - dx]
        ci = (s - dx)[:, None] + torch.arange(w, device=x.device)
        x = padded[rows[:, None, None], :, ri[:, :, None], ci[:, None, :]].permute(0, 3, 1, 2)
    if bool(use[:, 3].any()):
        angle = (u[:, 5] * 2 - 1) * math.radians(10)
        scale = 1 + (u[:, 6] * 2 - 1) * 0.1
        ty = (u[:, 7] * 2 - 1) / 8  # half a pixel on 8x8 images, in [-1, 1] grid units
        tx = (u[:, 8] * 2 - 1) / 8
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = torch.where(use[:, 3].view(-1, 1, 1, 1), warped, x)
    if bool(use[:, 1].any()):
        flip = (use[:, 1] & (u[:, 2] < 0.5)).view(-1, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)
    if bool(use[:, 2].any()):
        side = max(1, round(h / 4))
        top = (u[:, 3] * (h - side + 1)).floor().long().clamp(max=h - side)
        left = (u[:, 4] * (w - side + 1)).floor().long().clamp(max=w - side)
        ii = torch.arange(h, device=x.device)[None, :, None]
        jj = torch.arange(w, device=x.device)[None, None, :]
        hole = ((ii >= top[:, None, None]) & (ii < (top + side)[:, None, None])
                & (jj >= left[:, None, None]) & (jj < (left + side)[:, None, None]))
        hole = hole & use[:, 2, None, None]
        x = x.masked_fill(hole[:, None], 0.0)
    return x.reshape(n_models, b, c, h, w)


def train_ensemble(train, assignment: torch.Tensor, n_models: int, *, base: Callable[[int], nn.Module],
                   epochs: int, lr: float = 1e-3, batch_size: int = 16, seed: int = 0, augment=None,
                   device=None, progress: bool | None = None, desc: str = "training the ensemble"):
    r"""Train ``n_models`` copies of an architecture, model ``m`` only on the samples assigned to it.

    All models are trained at once: their parameters are stacked
    (``torch.func.stack_module_state``) and one ``vmap``-ed forward and backward pass per
    step serves every model. At each step model :math:`m` takes the next ``batch_size``
    samples of its own shuffled list; partitions of unequal size are handled by masking:
    every list is padded to the same whole number of batches, the padding rows (a zero
    input) carry weight 0, a model's loss is the mean over its real rows, and a model
    whose list is used up for this epoch takes no optimizer step (a per-model Adam, so
    waiting changes nothing). Every batch is ``batch_size`` rows wide, so even the
    floating-point arithmetic of model :math:`m` does not depend on the other partitions:
    model :math:`m` is a deterministic function, bit for bit, of the *set* of its samples,
    its index and ``seed``: its
    initial weights come from ``base(seed * 1_000_003 + m)``, its sample order from a
    generator seeded by ``(seed, m)`` over its samples sorted by content (8-bit pixels,
    then label). That is what the aggregation certificates require. Data augmentation
    (``augment``) keeps it so: the random numbers of model :math:`m`'s augmentations come
    from the same per-model generator.

    Parameters
    ----------
    train : Split or (x, y)
    assignment : int64 tensor (N, d)
        The models each sample trains (e.g. :func:`fa_assignment`); values in [0, n_models).
    n_models : int
    base : callable
        ``base(seed) -> nn.Module``, a fresh base model (no BatchNorm: its running statistics
        cannot be updated under ``vmap``).
    epochs, lr, batch_size, seed : int, float, int, int
        Passes over each model's samples, Adam's learning rate, per-model batch size, seed.
    augment : str or sequence of (str or None), optional
        Data augmentation of image batches: ``"shift"`` (a random translation by up to
        ``max(1, round(H / 8))`` pixels, zero fill), ``"flip"`` (horizontal, probability
        1/2), ``"cutout"`` (a zeroed square of side ``max(1, round(H / 4))``),
        ``"affine"`` (a rotation by up to 10 degrees, a scaling by up to 10% and a shift by
        up to ``H / 16`` pixels, bilinear), combined with ``+`` (``"shift+cutout"``). A sequence gives *different augmentations to
        different base models*: model ``m`` uses ``augment[m % len(augment)]`` (``None``:
        none), as in Wang, Levine and Feizi's experiments for the Lethal Dose Conjecture.
    device : torch.device, optional
        Default :func:`robustlab.models.best_device`.
    progress : bool, optional
        Show a progress bar (default: the global setting).

    Returns
    -------
    (template, params, buffers, history)
        The meta-device template, the stacked parameters and buffers (leading dim
        ``n_models``) and ``{"loss": [...]}``, the mean training loss per epoch.
    """
    from torch.func import functional_call, grad, stack_module_state, vmap

    x, y = check_xy(train, "train")
    check_positive_int(n_models, "n_models")
    check_tensor(assignment, "assignment")
    if assignment.dim() == 1:
        assignment = assignment[:, None]
    if assignment.dtype != torch.int64 or assignment.dim() != 2 or assignment.shape[0] != x.shape[0]:
        raise ValueError(f"assignment must be an int64 tensor of shape (N, d) with N = {x.shape[0]}, got "
                         f"{assignment.dtype} {tuple(assignment.shape)}")
    if assignment.numel() and (int(assignment.min()) < 0 or int(assignment.max()) >= n_models):
        raise ValueError(f"assignment must hold model indices in [0, {n_models})")
    if not callable(base):
        raise TypeError(f"base must be callable as base(seed) -> nn.Module, got {type(base).__name__}")
    check_positive_int(epochs, "epochs")
    check_positive(lr, "lr")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(seed, "seed", allow_zero=True)
    plan = _augment_plan(augment, n_models)
    if plan is not None and x.dim() != 4:
        raise ValueError(f"augment needs image samples (N, C, H, W), got train.x of shape {tuple(x.shape)}")
    device = _models.best_device() if device is None else torch.device(device)

    models = [base(seed * 1_000_003 + m) for m in range(n_models)]
    for m in models[:1]:
        check_model(m, "base(seed)")
        if _has_batchnorm(m):
            raise ValueError("base must build models without BatchNorm (use 'mlp' or 'cnn'): running statistics "
                             "cannot be updated inside the vectorized ensemble")
    params, buffers = stack_module_state([m.to(device) for m in models])
    params = {n: p.detach().clone() for n, p in params.items()}
    template = copy.deepcopy(models[0]).to("meta")
    del models

    # each model's samples, sorted by content
    rank = _content_rank(x, y)
    flat_model = assignment.flatten()
    flat_sample = torch.arange(x.shape[0]).repeat_interleave(assignment.shape[1])
    order = torch.argsort(flat_model * (x.shape[0] + 1) + rank[flat_sample])
    flat_model, flat_sample = flat_model[order], flat_sample[order]
    sizes = torch.bincount(flat_model, minlength=n_models)
    groups = list(torch.split(flat_sample, sizes.tolist()))
    orders, aug_rand = _model_orders(groups, epochs, seed, n_random=_N_RANDOM if plan is not None else 0)
    # every step's batch is batch_size rows wide for every model: the lists are padded to a
    # whole number of batches, so no model's arithmetic depends on the longest partition
    steps = math.ceil(orders.shape[2] / batch_size)
    pad = steps * batch_size - orders.shape[2]
    if pad:
        orders = F.pad(orders, (0, pad), value=-1)
        if aug_rand is not None:
            aug_rand = F.pad(aug_rand, (0, 0, 0, pad))
    orders = orders.to(device)
    x_dev, y_dev = x.to(device), y.to(device)
    zero_x = torch.zeros((), dtype=x_dev.dtype, device=device)

    def loss_one(p, b, xb, yb, wb):
        logits = functional_call(template, (p, b), (xb,))
        loss = F.cross_entropy(logits, yb, reduction="none")
        return (loss * wb).sum() / wb.sum().clamp_min(1.0), loss

    grad_all = vmap(grad(loss_one, has_aux=True), in_dims=(0, 0, 0, 0, 0))
    beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
    m1 = {n: torch.zeros_like(p) for n, p in params.items()}
    m2 = {n: torch.zeros_like(p) for n, p in params.items()}
    t = torch.zeros(n_models, device=device)
    history = {"loss": []}
    bar = config.progress_bar(epochs * steps, desc, config.progress_enabled(progress), unit="step")
    try:
        for epoch in range(epochs):
            loss_sum = torch.zeros((), device=device)
            for s in range(steps):
                idx = orders[:, epoch, s * batch_size:(s + 1) * batch_size]  # (M, b)
                real = idx >= 0
                w = real.float()
                safe = idx.clamp_min(0)
                # padding rows: a zero input of weight 0, the same whatever the data set
                xb = torch.where(real.view(real.shape + (1,) * (x_dev.dim() - 1)), x_dev[safe], zero_x)
                if plan is not None:
                    u = aug_rand[:, epoch, s * batch_size:(s + 1) * batch_size].to(device)
                    xb = _apply_augment(xb, u, plan)
                grads, losses = grad_all(params, buffers, xb, torch.where(real, y_dev[safe], 0), w)
                active = w.sum(1) > 0
                t = t + active.float()
                tc = t.clamp_min(1.0)
                for n, p in params.items():
                    shape = (-1,) + (1,) * (p.dim() - 1)
                    act = active.view(shape)
                    g = grads[n]
                    m1[n] = torch.where(act, beta1 * m1[n] + (1 - beta1) * g, m1[n])
                    m2[n] = torch.where(act, beta2 * m2[n] + (1 - beta2) * g * g, m2[n])
                    m_hat = m1[n] / (1 - beta1 ** tc).view(shape)
                    v_hat = m2[n] / (1 - beta2 ** tc).view(shape)
                    params[n] = torch.where(act, p - lr * m_hat / (v_hat.sqrt() + adam_eps), p)
                loss_sum += (losses.detach() * w).sum()
                bar.update(1)
            history["loss"].append(float(loss_sum) / max(float(sizes.sum()), 1.0))
            bar.set_postfix({"epoch": epoch + 1, "loss": f"{history['loss'][-1]:.3f}"})
    finally:
        bar.close()
    return template, params, buffers, history


def _build_base(arch: str, dataset: str, width: int | None):
    def base(seed: int) -> nn.Module:
        return _models.build(arch, dataset, width=width, seed=seed)
    return base


def _ensemble_cache_path(train, settings: dict):
    from . import cache

    return cache.entry("ensembles", {"kind": "partition-ensemble", "format": 2, **settings}, *train)


def train_fa(train, k: int, d: int = 1, *, arch: str = "mlp", dataset: str | None = None, width: int | None = 2,
             epochs: int = 30, lr: float = 2e-3, batch_size: int = 16, seed: int = 0, augment=None, device=None,
             progress: bool | None = None, cache: bool = False) -> PartitionEnsemble:
    r"""Train a Finite Aggregation ensemble: :math:`kd` base models over :math:`kd` hashed buckets.

    Each base model trains on the :math:`d` buckets of :func:`fa_assignment`, about
    :math:`1/k` of the data; :math:`d = 1` is DPA with :math:`k` partitions
    (:func:`train_dpa`). The base models are :func:`robustlab.models.build` ``(arch,
    dataset, width)`` trained together by :func:`train_ensemble`.

    Parameters
    ----------
    train : Split
        The (possibly poisoned) training set.
    k, d : int
        Number of partitions, spread.
    arch : {"mlp", "cnn"}
        Base architecture (no BatchNorm).
    dataset : str, optional
        Fixes input shape and normalization (default: the profile's).
    width, epochs, lr, batch_size, seed, augment : see :func:`train_ensemble`
    cache : bool
        Store the trained ensemble on disk under a key of the full configuration and the
        data, and load it from there next time.

    Returns
    -------
    PartitionEnsemble
    """
    x, y = check_xy(train, "train")
    check_positive_int(k, "k")
    check_positive_int(d, "d")
    check_choice(arch, "arch", ("mlp", "cnn"))
    meta = _data.info(dataset)
    if tuple(x.shape[1:]) != tuple(meta.shape):
        raise ValueError(f"train.x has samples of shape {tuple(x.shape[1:])} "
                         f"but dataset {meta.name!r} has {meta.shape}")
    device = _models.best_device() if device is None else torch.device(device)
    _augment_plan(augment, k * d)  # checks the argument before any work
    settings = dict(k=k, d=d, arch=arch, dataset=meta.name, width=width, epochs=epochs, lr=lr, batch_size=batch_size,
                    seed=seed)
    if augment is not None:
        settings["augment"] = [augment] if isinstance(augment, str) else list(augment)
    path = _ensemble_cache_path((x, y), settings) if cache else None
    base = _build_base(arch, meta.name, width)
    from . import cache

    blob = cache.load(path, map_location=device) if path is not None else None
    if blob is not None:
        template = base(0).to("meta")
        return PartitionEnsemble(template, blob["params"], blob["buffers"], k=k, d=d, seed=seed,
                                 n_classes=meta.n_classes, history=blob["history"])
    assignment = fa_assignment(x, k, d, seed=seed)
    kind = "DPA" if d == 1 else "FA"
    template, params, buffers, history = train_ensemble(
        (x, y), assignment, k * d, base=base, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
        augment=augment, device=device, progress=progress, desc=f"{kind}: training {k * d} base models")
    if path is not None:
        cache.store(path, {"params": {n: p.cpu() for n, p in params.items()},
                           "buffers": {n: b.cpu() for n, b in buffers.items()}, "history": history})
    return PartitionEnsemble(template, params, buffers, k=k, d=d, seed=seed, n_classes=meta.n_classes,
                             history=history)


def train_dpa(train, k: int, **kwargs) -> PartitionEnsemble:
    """Train a Deep Partition Aggregation ensemble of ``k`` base models, one per hash partition.

    ``train_dpa(train, k, ...)`` is ``train_fa(train, k, d=1, ...)``; see :func:`train_fa`
    for the arguments.

    Examples
    --------
    >>> import robustlab as rl
    >>> train, test = rl.data.load("digits")
    >>> ens = train_dpa(train, 5, arch="mlp", width=1, epochs=1, device="cpu", progress=False)
    >>> cert = ens.certify(test.x[:4])
    >>> cert.counts.sum(1).tolist()
    [5, 5, 5, 5]
    """
    if "d" in kwargs:
        raise TypeError("train_dpa has no argument d (it is 1); use train_fa for Finite Aggregation")
    return train_fa(train, k, 1, **kwargs)


# =========================================================================== 5. SS-DPA


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


# =========================================================================== 6. the Lethal Dose Conjecture


def median_radius(cert: Certificate, y: torch.Tensor) -> float:
    """Median certified poison size over the test set, a wrong prediction counting as 0.

    Levine and Feizi's summary number ("median certified robustness"). A misclassified
    input is certified for nothing, so it counts below every radius; with more than half
    of the inputs misclassified the median is 0.
    """
    if not isinstance(cert, Certificate):
        raise TypeError(f"cert must be a robustlab.certificates.Certificate, got {type(cert).__name__}")
    check_labels(y, "y", batch_size=len(cert))
    correct = cert.correct(y)
    r = torch.where(correct, cert.radius, torch.full_like(cert.radius, -1))
    return float(r.double().median().clamp_min(0))


class LethalDoseStudy(NamedTuple):
    """What :func:`lethal_dose_study` measured: one row per (learner, k).

    ``rows`` are dicts with ``learner``, ``k``, ``samples_per_model`` (N / k),
    ``base_accuracy`` (mean test accuracy of one base model), ``clean_accuracy`` (of the
    vote), ``median_radius`` (:func:`median_radius`) and ``certified`` (``{r: certified
    accuracy at poison size r}`` for every ``r`` in ``radii``, from
    :meth:`Certificate.certified_accuracy <robustlab.certificates.Certificate.certified_accuracy>`).
    """

    rows: list
    radii: tuple
    n_train: int

    def learners(self) -> list:
        return list(dict.fromkeys(r["learner"] for r in self.rows))

    def of(self, learner: str) -> list:
        """The rows of one learner, in increasing k."""
        if learner not in self.learners():
            raise ValueError(f"learner must be one of {self.learners()}, got {learner!r}")
        return sorted((r for r in self.rows if r["learner"] == learner), key=lambda r: r["k"])

    def table(self) -> str:
        """The rows as an aligned text table."""
        head = (f"{'learner':<28}{'k':>5}{'N/k':>7}{'base acc':>10}{'DPA acc':>9}{'median r':>10}"
                + "".join(f"{'cert@' + str(r):>9}" for r in self.radii))
        lines = [head]
        for row in self.rows:
            lines.append(f"{row['learner']:<28}{row['k']:>5}{row['samples_per_model']:>7.0f}"
                         f"{row['base_accuracy']:>10.3f}{row['clean_accuracy']:>9.3f}{row['median_radius']:>10.0f}"
                         + "".join(f"{row['certified'][r]:>9.3f}" for r in self.radii))
        return "\n".join(lines)

    def plot(self, *, radius: int | None = None, figsize=(11, 3.6)):
        """Two panels: data efficiency (base accuracy against samples per model) and the
        certificate against k (median radius, the k / 2 ceiling, and the certified
        accuracy at ``radius``, default the largest of ``radii``). Returns the figure."""
        import matplotlib.pyplot as plt

        radius = max(self.radii) if radius is None else radius
        if radius not in self.radii:
            raise ValueError(f"radius must be one of the study's radii {self.radii}, got {radius}")
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=figsize)
        ax2 = ax1.twinx()
        for i, name in enumerate(self.learners()):
            rows = self.of(name)
            ks = [r["k"] for r in rows]
            ax0.semilogx([r["samples_per_model"] for r in rows], [r["base_accuracy"] for r in rows], "o-",
                         color=f"C{i}", label=name)
            ax1.plot(ks, [r["median_radius"] for r in rows], "o-", color=f"C{i}", label=f"{name}: median radius")
            ax2.plot(ks, [r["certified"][radius] for r in rows], "s--", color=f"C{i}", alpha=0.7,
                     label=f"{name}: certified at r = {radius}")
        all_k = sorted({r["k"] for r in self.rows})
        ax1.plot(all_k, [k / 2 for k in all_k], "k:", label="k / 2 (the ceiling)")
        per_model = sorted({r["samples_per_model"] for r in self.rows})
        ax0.set_xticks(per_model, [f"{n:.0f}" for n in per_model])
        ax0.minorticks_off()
        ax1.set_ylim(bottom=0)
        ax0.set_xlabel("samples per base model N / k (log scale)")
        ax0.set_ylabel("test accuracy of one base model")
        ax0.set_ylim(0, 1.02)
        ax0.legend(fontsize=8)
        ax0.set_title("data efficiency of the base learner", fontsize=10)
        ax1.set_xlabel("number of partitions k")
        ax1.set_ylabel("poisoned samples")
        ax2.set_ylabel(f"certified accuracy at r = {radius}")
        ax2.set_ylim(0, 1.02)
        ax1.legend(loc="upper left", fontsize=7)
        ax2.legend(loc="lower right", fontsize=7)
        ax1.set_title("DPA's certificate against k", fontsize=10)
        fig.tight_layout()
        return fig


def lethal_dose_study(train, test, ks=(10, 25, 50, 100), learners: dict | None = None, *, radii=(5, 10, 20),
                      arch: str = "mlp", width: int | None = 2, epochs: int = 100, seed: int = 0,
                      cache: bool = True, progress: bool | None = None) -> LethalDoseStudy:
    r"""The Lethal Dose Conjecture made visible: DPA's certificate against k, per base learner.

    Wang, Levine and Feizi (2022) conjecture that if a learner needs :math:`n` clean samples
    to be accurate, no defense tolerates more than :math:`\Theta(N/n)` poisoned samples of a
    size-:math:`N` training set, and DPA reaches this order with :math:`k \approx N/n`.
    The lever is the base learner's *data efficiency*: a learner that is accurate on fewer
    samples allows more partitions at the same accuracy, hence larger certificates; their
    example is giving the base models data augmentation. For every learner and every k
    this trains a DPA ensemble (:func:`train_dpa`, vectorized, cached) and measures the
    base models' accuracy, the vote's accuracy, the median certified radius and the
    certified accuracy at each of ``radii``.

    Parameters
    ----------
    train, test : Split
    ks : sequence of int
        Numbers of partitions.
    learners : dict, optional
        ``{name: train_dpa keyword arguments}``, e.g. ``{"MLP": {}, "MLP + affine":
        {"augment": "affine"}}`` (the default; ``arch``, ``width``, ``epochs`` and ``seed``
        below are the shared defaults a learner may override).
    radii : sequence of int
        Poison sizes at which to report certified accuracy.
    cache, progress : bool
        Cache every ensemble on disk; show a progress bar over the trainings.

    Returns
    -------
    LethalDoseStudy
    """
    x, y = check_xy(train, "train")
    xt, yt = check_xy(test, "test")
    ks = tuple(ks) if not isinstance(ks, int) else (ks,)
    if not ks:
        raise ValueError("ks must hold at least one number of partitions")
    for k in ks:
        check_positive_int(k, "ks")
    radii = tuple(radii) if not isinstance(radii, int) else (radii,)
    for r in radii:
        check_positive_int(r, "radii", allow_zero=True)
    if learners is None:
        learners = {"MLP": {}, "MLP + affine augmentation": {"augment": "affine"}}
    if not isinstance(learners, dict) or not learners:
        raise TypeError("learners must be a non-empty dict {name: train_dpa keyword arguments}")
    for name, kw in learners.items():
        if not isinstance(kw, dict):
            raise TypeError(f"learners[{name!r}] must be a dict of train_dpa keyword arguments, "
                            f"got {type(kw).__name__}")
        if "k" in kw or "d" in kw:
            raise ValueError(f"learners[{name!r}] must not set k or d (the study varies k; d is 1)")
    rows = []
    bar = config.progress_bar(len(learners) * len(ks), "Lethal Dose study", config.progress_enabled(progress),
                              unit="ensemble")
    try:
        for name, kw in learners.items():
            settings = dict(arch=arch, width=width, epochs=epochs, seed=seed, cache=cache, progress=False)
            settings.update(kw)
            for k in ks:
                ens = train_dpa((x, y), k, **settings)
                cert = ens.certify(xt)
                rows.append({
                    "learner": name, "k": k, "samples_per_model": x.shape[0] / k,
                    "base_accuracy": float(ens.base_accuracy((xt, yt)).mean()),
                    "clean_accuracy": cert.certified_accuracy(yt, at=0),
                    "median_radius": median_radius(cert, yt),
                    "certified": dict(zip(radii, cert.certified_accuracy(yt, at=list(radii)).tolist())),
                })
                bar.update(1)
                bar.set_postfix({"learner": name, "k": k})
    finally:
        bar.close()
    return LethalDoseStudy(rows, radii, x.shape[0])
