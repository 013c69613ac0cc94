r"""A planted spurious cue, and whether influence finds the training points that carry it.

A *spurious* feature predicts the label in the training set for a reason that does not hold
at test time: a watermark on the photographs of one class, the scanner of one hospital.
:func:`spurious_digits` plants one in a two-digit task: a bright square of ``patch`` x
``patch`` pixels in the top-left corner (where the digits are dark) on a ``fraction`` of the
training images of the second class, and on no other training image. In the test set the
same square is put on a random ``test_fraction`` of the images *of both classes*, so there it
says nothing about the label. A model that learned the cue calls the first class's cued test
images the second class; :func:`planted_among_top` measures how many of the training points
that influence blames for those mistakes (the most harmful ones,
:meth:`~robustlab.influence.Influences.harmful`) are the planted ones.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .._validate import check_images, check_interval, check_positive_int, check_seed, check_tensor, check_xy
from .scores import Influences

__all__ = ["SpuriousTask", "plant_cue", "spurious_digits", "planted_among_top"]


class SpuriousTask(NamedTuple):
    """A two-class task with a planted cue.

    Attributes
    ----------
    train, test : tuple
        ``(x, y)``: float64 images (N, 1, 8, 8) in [0, 1] and labels 0 / 1 (``classes[1]`` is 1).
    planted : torch.Tensor
        (N,) bool: the training images that carry the cue (all of label 1).
    test_cue : torch.Tensor
        (T,) bool: the test images that carry it (of either label).
    classes : tuple
        The two digits, as labels 0 and 1.
    patch : int
        Side of the cue square, in pixels.
    """

    train: tuple
    test: tuple
    planted: torch.Tensor
    test_cue: torch.Tensor
    classes: tuple
    patch: int


def plant_cue(x: torch.Tensor, mask: torch.Tensor, *, patch: int = 2, value: float = 1.0) -> torch.Tensor:
    """A copy of images ``x`` (B, C, H, W) with the top-left ``patch`` x ``patch`` square set to ``value``
    in every channel of the images where ``mask`` (B,) is true.

    >>> x = plant_cue(torch.zeros(2, 1, 3, 3), torch.tensor([True, False]))
    >>> x[0, 0]
    tensor([[1., 1., 0.],
            [1., 1., 0.],
            [0., 0., 0.]])
    >>> float(x[1].sum())
    0.0
    """
    x = check_images(x, "x", min_dim=4)
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    mask = check_tensor(mask, "mask")
    if mask.dtype != torch.bool or mask.shape != x.shape[:1]:
        raise ValueError(f"mask must be a bool tensor of shape ({x.shape[0]},), got {mask.dtype} {tuple(mask.shape)}")
    patch = check_positive_int(patch, "patch")
    if patch > min(x.shape[2:]):
        raise ValueError(f"patch must be at most the image side {min(x.shape[2:])}, got {patch}")
    value = check_interval(value, "value", 0.0, 1.0)
    out = x.clone()
    out[mask.to(x.device), :, :patch, :patch] = value
    return out


def _exact_draw(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """A bool mask of length n with exactly k true entries, at seeded random places."""
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=gen)[:k]] = True
    return mask


def spurious_digits(data=None, *, classes=(1, 8), n_train: int = 150, n_test: int = 1000, fraction: float = 0.5,
                    test_fraction: float = 0.5, patch: int = 2, value: float = 1.0, seed: int = 0) -> SpuriousTask:
    """Two digits of the 8x8 data set with a cue planted on part of one class in training only.

    Parameters
    ----------
    data : (Split, Split), optional
        ``(train, test)`` of the digits; defaults to ``rl.data.load("digits")``.
    classes : (int, int)
        The two digits, relabelled 0 and 1; the cue goes on training images of ``classes[1]``.
    n_train, n_test : int
        Seeded draws of that many images of the two digits from each split (all of them if
        there are fewer), in float64, as the influence functions need.
    fraction : float in (0, 1]
        Share of the label-1 training images that carry the cue (rounded to a whole number,
        at least one); no label-0 training image carries it.
    test_fraction : float in [0, 1]
        Share of all test images that carry it, drawn regardless of the label.
    patch, value : int, float
        Side of the bright top-left square and its grey value (:func:`plant_cue`).
    seed : int
        Seed of the draws (training images ``seed``, test images ``seed + 1``, cue ``seed + 2``).

    Examples
    --------
    >>> task = spurious_digits(n_train=40)
    >>> bool((task.train[1][task.planted] == 1).all()), int(task.planted.sum()) == round(0.5 * int(task.train[1].sum()))
    (True, True)
    """
    from .. import data as _data
    from .fragility import _two_classes

    if (not isinstance(classes, (tuple, list)) or len(classes) != 2
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 9 for c in classes)
            or classes[0] == classes[1]):
        raise ValueError(f"classes must be two different digits 0..9, got {classes!r}")
    n_train = check_positive_int(n_train, "n_train")
    n_test = check_positive_int(n_test, "n_test")
    fraction = check_interval(fraction, "fraction", 0.0, 1.0, low_open=True)
    test_fraction = check_interval(test_fraction, "test_fraction", 0.0, 1.0)
    seed = check_seed(seed)
    if data is None:
        data = _data.load("digits")
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError("data must be a (train, test) pair of (x, y) splits")
    train, test = (check_xy(split, name) for split, name in zip(data, ("data[0]", "data[1]")))
    xtr, ytr = _two_classes(train, tuple(classes), n_train, seed)
    xte, yte = _two_classes(test, tuple(classes), n_test, seed + 1)
    if not bool((ytr == 1).any()):
        raise ValueError(f"no training image of digit {classes[1]} in data")
    gen = torch.Generator().manual_seed(seed + 2)
    ones = torch.nonzero(ytr == 1).flatten()
    planted = torch.zeros(len(ytr), dtype=torch.bool)
    planted[ones[_exact_draw(len(ones), max(1, round(fraction * len(ones))), gen)]] = True
    test_cue = _exact_draw(len(yte), round(test_fraction * len(yte)), gen)
    return SpuriousTask((plant_cue(xtr, planted, patch=patch, value=value), ytr),
                        (plant_cue(xte, test_cue, patch=patch, value=value), yte),
                        planted, test_cue, tuple(classes), patch)


def planted_among_top(result: Influences, planted: torch.Tensor, k: int, *, combine: bool = False) -> torch.Tensor:
    r"""Share of planted training points among the ``k`` most harmful ones.

    Per test point (``combine=False``): a (T,) tensor, the fraction of
    ``result.harmful(k)[t]`` that is planted. With ``combine=True`` the training points are
    ranked once, by their total influence on all the test points of ``result``
    (:math:`\sum_t \mathcal{I}_{\text{up,loss}}(z_i, z_t)`, the predicted rise of the summed
    test loss), and a 0-dimensional tensor is returned. A ranking that knew nothing would
    find the base rate ``planted.float().mean()``.

    >>> scores = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 3.0, 2.0]])
    >>> result = Influences(scores, torch.zeros(2), 4)
    >>> planted = torch.tensor([True, False, False, True])
    >>> planted_among_top(result, planted, 2)
    tensor([0.5000, 0.5000])
    >>> planted_among_top(result, planted, 1, combine=True)
    tensor(0.)
    """
    if not isinstance(result, Influences):
        raise TypeError(f"result must be an Influences (from rl.influence.influences), got {type(result).__name__}")
    planted = check_tensor(planted, "planted")
    if planted.dtype != torch.bool or planted.shape != (result.n,):
        raise ValueError(f"planted must be a bool tensor of shape ({result.n},), got {planted.dtype} "
                         f"{tuple(planted.shape)}")
    k = check_positive_int(k, "k")
    if not isinstance(combine, bool):
        raise TypeError(f"combine must be True or False, got {type(combine).__name__}")
    planted = planted.to(result.scores.device)
    if combine:
        top = torch.topk(result.scores.sum(0), min(k, result.n)).indices
        return planted[top].float().mean()
    return planted[result.harmful(k)].float().mean(1)
