r"""Poisoning attacks on the training set: label flips and a dirty-label backdoor (BadNets).

:func:`label_flip` relabels a fraction ``rate`` of the training set; :func:`backdoor`
stamps a :class:`Trigger` on images of other classes and labels them ``target``;
:func:`apply_trigger` stamps it at test time and :func:`backdoor_success` measures the
attack. Both attacks return a :class:`Poisoned` pair (the poisoned split and the mask of
the poisoned samples). A poison fraction is called ``rate`` everywhere in
:mod:`robustlab.poisoning`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import nn

from .. import data as _data
from .._validate import (check_class_index, check_images, check_interval, check_labels, check_model,
                         check_positive_int, check_probability, check_seed, check_xy)
from ._common import _n_classes_of

__all__ = ["Poisoned", "Trigger", "label_flip", "apply_trigger", "backdoor", "backdoor_success"]


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
    rate = check_probability(rate, "rate", closed=True)
    seed = check_seed(seed)
    n_classes = _n_classes_of(y, n_classes)
    check_labels(y, "split.y", n_classes=n_classes)
    g = torch.Generator().manual_seed(seed)
    n = y.shape[0]
    eligible = torch.arange(n)
    if target is not None:
        target = check_class_index(target, "target", n_classes)
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
        check_interval(self.value, "trigger.value", 0.0, 1.0)
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
    rate = check_probability(rate, "rate", closed=True, high_open=True)
    n_classes = _n_classes_of(y, n_classes)
    target = check_class_index(target, "target", n_classes)
    trigger = _trigger(trigger)
    seed = check_seed(seed)
    if source is None:
        others = torch.nonzero(y != target).flatten()
    else:
        source = check_class_index(source, "source", n_classes)
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
    from ..train import predict

    check_model(model)
    x, y = check_xy(test, "test")
    target = check_class_index(target, "target")
    keep = y != target
    if source is not None:
        keep = y == check_class_index(source, "source")
    if not bool(keep.any()):
        raise ValueError(f"test has no input of class {source}" if source is not None
                         else f"test has no input outside class {target}")
    pred = predict(model, apply_trigger(x[keep], trigger), batch_size=batch_size)
    return float((pred == target).float().mean())
