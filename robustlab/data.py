"""Data sets as in-memory tensors in [0, 1] pixel space, batch-first.

The embedded default is scikit-learn's bundled 8x8 handwritten digits (1,797 images,
no download). MNIST, Fashion-MNIST and CIFAR-10 load through torchvision from its usual
on-disk layout under ``root`` (downloaded there when ``download`` is true and the files
are missing). Every loader returns ``(train, test)``, two :class:`Split` tuples ``(x, y)``
with ``x`` float32 of shape (N, C, H, W) in [0, 1] and ``y`` int64 of shape (N,).

Normalization is *not* applied here: it is the first layer of every model
(:class:`robustlab.models.Normalize`), so that every epsilon is in pixel units.

:func:`sample_photographs` returns scikit-learn's two bundled colour photographs (a Chinese
temple and a flower, no download) as ImageNet-sized inputs for chapter 1.

The synthetic generators serve the theory chapters: a two-Gaussian mixture, linearly
separable points in the unit square, and two concentric spheres; :func:`parallel_pancakes`
is a hidden-direction task in the manner of Bubeck, Price and Razenshteyn (2019).
"""

from __future__ import annotations

import math
from numbers import Integral
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from . import config
from ._validate import check_choice, check_positive, check_positive_int, check_seed, check_tensor

__all__ = [
    "Split",
    "DatasetInfo",
    "DATASETS",
    "info",
    "load",
    "subset",
    "shift",
    "Photographs",
    "sample_photographs",
    "gaussian_mixture",
    "linearly_separable",
    "concentric_spheres",
    "Pancakes",
    "parallel_pancakes",
]


class Split(NamedTuple):
    """One split of a data set: inputs ``x`` (N, C, H, W) in [0, 1] and labels ``y`` (N,)."""

    x: torch.Tensor
    y: torch.Tensor


class DatasetInfo(NamedTuple):
    """What a model needs to know about a data set."""

    name: str
    shape: tuple  # (C, H, W) of one input
    n_classes: int
    classes: tuple
    mean: tuple  # per-channel mean of the training inputs, for Normalize
    std: tuple  # per-channel standard deviation of the training inputs


_DIGIT_CLASSES = tuple(str(i) for i in range(10))
_INFO = {
    # digits: statistics of the fixed training split, checked by tests/test_data.py
    "digits": DatasetInfo("digits", (1, 8, 8), 10, _DIGIT_CLASSES, (0.3054,), (0.3761,)),
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10, _DIGIT_CLASSES, (0.1307,), (0.3081,)),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", (1, 28, 28), 10,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        (0.2860,), (0.3530,),
    ),
    "cifar10": DatasetInfo(
        "cifar10", (3, 32, 32), 10,
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
    ),
}
DATASETS = tuple(_INFO)

DIGITS_TEST_SIZE = 360  # 20% of the 1,797 digits, stratified, seed 0
SMOKE_TRAIN, SMOKE_TEST = 512, 256


def info(name: str | None = None) -> DatasetInfo:
    """Shape, number of classes, class names and normalization statistics of a data set.

    >>> info("digits").shape
    (1, 8, 8)
    """
    name = config.profile().dataset if name is None else name
    check_choice(name, "name", _INFO)
    return _INFO[name]


def load(name: str | None = None, *, root=None, download: bool = True) -> tuple[Split, Split]:
    """Load a data set as ``(train, test)`` tensors in [0, 1].

    Parameters
    ----------
    name : {"digits", "mnist", "fashion_mnist", "cifar10"}, optional
        Defaults to the active profile's data set (``"digits"`` under ``"quick"``).
    root : path, optional
        torchvision's data root (ignored for the digits); defaults to
        :func:`robustlab.config.data_dir`.
    download : bool
        Let torchvision download missing files into ``root``.

    Returns
    -------
    (Split, Split)
        ``train`` and ``test``; with ``ROBUSTLAB_SMOKE=1`` each is cut to a small
        seeded subset.

    Examples
    --------
    >>> train, test = load("digits")
    >>> tuple(train.x.shape[1:]), train.x.dtype, float(train.x.max()) <= 1.0
    ((1, 8, 8), torch.float32, True)
    """
    name = config.profile().dataset if name is None else name
    check_choice(name, "name", _INFO)
    if not isinstance(download, bool):
        raise TypeError(f"download must be True or False, got {type(download).__name__}")
    if name == "digits":
        train, test = _load_digits()
    else:
        train, test = _load_torchvision(name, config.data_dir() if root is None else root, download)
    if config.smoke():
        train, test = subset(train, SMOKE_TRAIN, seed=0), subset(test, SMOKE_TEST, seed=0)
    return train, test


def subset(split: Split, n: int, *, seed: int = 0) -> Split:
    """A seeded random subset of ``n`` examples (all of them if ``n`` >= the size)."""
    check_positive_int(n, "n")
    total = split.x.shape[0]
    if n >= total:
        return split
    g = torch.Generator().manual_seed(check_seed(seed))
    idx = torch.randperm(total, generator=g)[:n].sort().values
    return Split(split.x[idx], split.y[idx])


def shift(x: torch.Tensor, dy: int = 0, dx: int = 0) -> torch.Tensor:
    """Translate images (B, C, H, W) by ``dy`` rows down and ``dx`` columns right.

    Pixels that move out of the frame are lost and black (0) pixels enter on the other
    side, as when a digit is written a little off-centre. Negative values shift up / left.

    >>> shift(torch.eye(3).view(1, 1, 3, 3), dy=1)[0, 0]
    tensor([[0., 0., 0.],
            [1., 0., 0.],
            [0., 1., 0.]])
    """
    from ._validate import check_tensor

    check_tensor(x, "x")
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images of shape (B, C, H, W), got shape {tuple(x.shape)}")
    for value, name, size in ((dy, "dy", x.shape[2]), (dx, "dx", x.shape[3])):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
            raise TypeError(f"{name} must be an integer number of pixels, got {type(value).__name__}")
        if abs(value) >= size:
            raise ValueError(f"{name} must be smaller than the image ({size} pixels) in absolute value, got {value}")
    dy, dx = int(dy), int(dx)
    h, w = x.shape[2], x.shape[3]
    out = torch.zeros_like(x)
    out[:, :, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[:, :, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def _load_digits() -> tuple[Split, Split]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=DIGITS_TEST_SIZE, random_state=0, stratify=y)
    return (
        Split(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
        Split(torch.from_numpy(x_te), torch.from_numpy(y_te)),
    )


def _load_torchvision(name: str, root, download: bool) -> tuple[Split, Split]:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    splits = []
    for train in (True, False):
        try:
            ds = cls(root=str(root), train=train, download=download)
        except Exception as err:  # torchvision raises RuntimeError / URLError for missing files offline
            raise RuntimeError(
                f"could not load {name!r} from root={str(root)!r} (download={download}): {err}. "
                "Put torchvision's files there, set ROBUSTLAB_DATA, or use the 'quick' profile "
                "(embedded digits, no download)."
            ) from err
        data = ds.data
        if isinstance(data, np.ndarray):  # CIFAR-10 keeps (N, H, W, C) uint8 numpy
            x = torch.from_numpy(data).permute(0, 3, 1, 2)
        else:  # MNIST keeps (N, H, W) uint8 tensors
            x = data.unsqueeze(1)
        x = x.contiguous().float().div_(255.0)
        y = torch.as_tensor(ds.targets, dtype=torch.int64)
        splits.append(Split(x, y))
    return splits[0], splits[1]


class Photographs(NamedTuple):
    """Natural images: ``x`` (N, 3, size, size) float32 in [0, 1] and their file ``names``."""

    x: torch.Tensor
    names: tuple


def sample_photographs(size: int = 224) -> Photographs:
    """scikit-learn's two bundled photographs, ``china.jpg`` and ``flower.jpg``, as a batch.

    Each 427 x 640 photograph is cropped to its central square and resized (bilinear, with
    antialiasing) to ``size`` x ``size`` pixels, 224 being the resolution of torchvision's
    ImageNet classifiers. No download: the files ship with scikit-learn.

    >>> photos = sample_photographs(64)
    >>> tuple(photos.x.shape), photos.names
    ((2, 3, 64, 64), ('china', 'flower'))
    """
    check_positive_int(size, "size")
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    images, names = [], []
    for image, filename in zip(bunch.images, bunch.filenames):
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, H, W)
        h, w = x.shape[1:]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[:, top:top + side, left:left + side]
        x = torch.nn.functional.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False,
                                            antialias=True)[0]
        images.append(x.clamp_(0.0, 1.0))
        names.append(Path(filename).stem)
    return Photographs(torch.stack(images), tuple(names))


# --------------------------------------------------------------------------- synthetic


def gaussian_mixture(n: int, d: int, *, mu_norm: float = 1.0, sigma: float = 1.0, seed: int = 0) -> Split:
    """The two-Gaussian model of Schmidt et al. (2018): ``y`` uniform in {0, 1},
    ``x ~ N((2y - 1) * theta, sigma^2 I)`` with ``theta = mu_norm * (1, ..., 1) / sqrt(d)``.

    Inputs live in R^d (not in [0, 1]); ``x`` has shape (n, d).
    """
    check_positive_int(n, "n")
    check_positive_int(d, "d")
    check_positive(sigma, "sigma")
    if mu_norm < 0:
        raise ValueError(f"mu_norm must be >= 0, got {mu_norm}")
    g = torch.Generator().manual_seed(check_seed(seed))
    y = torch.randint(0, 2, (n,), generator=g)
    theta = torch.full((d,), mu_norm / math.sqrt(d))
    x = (2 * y - 1).float()[:, None] * theta + sigma * torch.randn(n, d, generator=g)
    return Split(x, y.long())


def linearly_separable(n: int, *, margin: float = 0.1, seed: int = 0) -> Split:
    """``n`` points in the unit square [0, 1]^2 split by a line through its centre with a
    gap of width ``margin`` between the classes (no point lies within ``margin / 2`` of it).

    The separating unit normal is returned implicitly by the labels; shape (n, 2).
    """
    check_positive_int(n, "n")
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin}")
    g = torch.Generator().manual_seed(check_seed(seed))
    angle = torch.rand((), generator=g) * 2 * math.pi
    w = torch.stack([torch.cos(angle), torch.sin(angle)])
    points = []
    count = 0
    while count < n:
        x = torch.rand(4 * n, 2, generator=g)
        keep = ((x - 0.5) @ w).abs() >= margin / 2
        points.append(x[keep])
        count += int(keep.sum())
    x = torch.cat(points)[:n]
    y = (((x - 0.5) @ w) > 0).long()
    return Split(x, y)


def concentric_spheres(n: int, d: int, *, r_inner: float = 1.0, r_outer: float = 1.3, seed: int = 0) -> Split:
    """Points uniform on two concentric spheres in R^d (Gilmer et al., 2018): label 0 on the
    sphere of radius ``r_inner``, 1 on radius ``r_outer``, half each. Shape (n, d)."""
    check_positive_int(n, "n")
    check_positive_int(d, "d")
    check_positive(r_inner, "r_inner")
    check_positive(r_outer, "r_outer")
    if r_outer <= r_inner:
        raise ValueError(f"r_outer must exceed r_inner, got r_inner={r_inner}, r_outer={r_outer}")
    g = torch.Generator().manual_seed(check_seed(seed))
    z = torch.randn(n, d, generator=g)
    z = z / z.norm(dim=1, keepdim=True)
    y = torch.zeros(n, dtype=torch.int64)
    y[n // 2:] = 1
    y = y[torch.randperm(n, generator=g)]
    radius = torch.where(y == 1, torch.tensor(float(r_outer)), torch.tensor(float(r_inner)))
    return Split(z * radius[:, None], y)


class Pancakes(NamedTuple):
    """A sample of :func:`parallel_pancakes` and what the learner is not told."""

    data: Split  # x (n, d) float32, y (n,) int64
    v: torch.Tensor  # (d,) the hidden unit direction
    spacing: float  # distance between neighbouring slabs along v

    def classify(self, x: torch.Tensor):
        """The exact robust classifier, which knows ``v``: the parity of the nearest slab of
        ``<v, x>``, and the L2 distance to the nearest boundary between slabs (half-way between
        two centres), within which no perturbation changes its answer. Returns ``(pred, radius)``."""
        check_tensor(x, "x")
        if x.dim() != 2 or x.shape[1] != self.v.numel():
            raise ValueError(f"x must have shape (n, {self.v.numel()}), got {tuple(x.shape)}")
        k = torch.round(x.to(self.v.dtype) @ self.v / self.spacing)
        offset = (x.to(self.v.dtype) @ self.v - k * self.spacing).abs()
        return k.remainder(2).long(), self.spacing / 2 - offset


def parallel_pancakes(n: int, d: int, *, spacing: float = 0.5, width: float = 0.02, seed: int = 0) -> Pancakes:
    r"""Two classes in thin parallel slabs along a hidden direction, Gaussian in every other.

    A unit vector :math:`v` is drawn at random. Along :math:`v` the input is a discretized
    standard Gaussian: the slab index :math:`k \in \mathbb{Z}` has probability proportional
    to :math:`\varphi(k\,\text{spacing})`, and :math:`\langle v, x\rangle = k\,\text{spacing}
    + \text{width}\cdot\xi`, :math:`\xi \sim N(0, 1)`. The label is the parity of
    :math:`k`. Orthogonally to :math:`v`, :math:`x` is standard Gaussian, for both classes.
    Each class's law along :math:`v` is then a discretized Gaussian too (on the even or the
    odd slabs), whose low moments agree with those of :math:`N(0, 1 + \text{width}^2)` up to
    errors of order :math:`e^{-\pi^2 / (2\,\text{spacing}^2)}` (Poisson summation): the
    means and covariances of the two classes are the same in every direction, although the
    slabs separate them exactly.

    Examples
    --------
    >>> task = parallel_pancakes(1000, 5)
    >>> pred, radius = task.classify(task.data.x)
    >>> bool((pred == task.data.y).all()), float(radius.min()) > 0
    (True, True)
    """
    check_positive_int(n, "n")
    check_positive_int(d, "d")
    spacing = check_positive(spacing, "spacing")
    width = check_positive(width, "width")
    if width >= spacing / 8:
        raise ValueError(f"width must be below spacing / 8 = {spacing / 8:g} so that the slabs stay apart, "
                         f"got {width}")
    g = torch.Generator().manual_seed(check_seed(seed))
    v = torch.randn(d, generator=g, dtype=torch.float64)
    v = v / v.norm()
    k_max = int(math.ceil(8.0 / spacing))
    ks = torch.arange(-k_max, k_max + 1, dtype=torch.float64)
    k = ks[torch.multinomial(torch.exp(-0.5 * (ks * spacing) ** 2), n, replacement=True, generator=g)]
    along = k * spacing + width * torch.randn(n, generator=g, dtype=torch.float64)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    z = z - (z @ v)[:, None] * v[None, :]  # the part orthogonal to v: standard Gaussian there
    x = z + along[:, None] * v[None, :]
    y = k.remainder(2).long()
    return Pancakes(Split(x.float(), y), v, float(spacing))
