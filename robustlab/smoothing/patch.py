r"""(De)randomized smoothing against patch attacks: column (band) and block smoothing
(Levine and Feizi, *(De)Randomized Smoothing for Certifiable Defense against Patch
Attacks*, NeurIPS 2020, arXiv 2002.10733).

**Threat model.** The attacker replaces one :math:`m \times m` square of the image (all
channels) by arbitrary values; the certified "radius" is the largest patch side
:math:`m` (unit ``"patch side"``) under which the prediction cannot change.

**Ablation and encoding.** The base classifier :math:`f` never sees the whole image. It
sees one *band* of :math:`s` consecutive columns (column smoothing) or one
:math:`s \times s` *block* (block smoothing), both with wrap-around, and everything else
ablated. A kept pixel of value :math:`x` is encoded as the two channels :math:`(x, 1 - x)`
and an ablated pixel as :math:`(0, 0)`, so ablation is never confused with a real value
(a kept black pixel is :math:`(0, 1)`); an image with :math:`C` channels becomes
:math:`2C` channels (:func:`encode`). Column smoothing has :math:`T = W` bands (one per
starting column), block smoothing :math:`T = H \cdot W` blocks (one per top-left corner).

**Votes.** For each band :math:`t`, every class whose softmax score is at least the
threshold :math:`\theta` gets one vote (several classes may vote in one band when
:math:`\theta \le 1/2`, none when no score reaches :math:`\theta`); ``theta=None`` gives
the argmax vote of every band instead. The counts are
:math:`n_c(x) = \#\{t : \mathrm{softmax}_c f(T_t(x)) \ge \theta\}` and the smoothed
prediction is :math:`g(x) = \arg\max_c n_c(x)`, a tie going to the lower class index.
All :math:`T` bands are enumerated (:func:`robustlab.smoothing.sampling.enumerate_votes`
with the families :class:`ColumnBands` and :class:`Blocks`), so the procedure is
deterministic.

**The certificate.** A patch of side :math:`m` lies in columns
:math:`j, \dots, j + m - 1`; a band starting at :math:`t` meets it iff
:math:`t \in \{j - s + 1, \dots, j + m - 1\} \pmod W`, so at most

.. math::

    \Delta = \min(m + s - 1, W) \quad\text{(columns)}, \qquad
    \Delta = \min(m + s - 1, H)\,\min(m + s - 1, W) \quad\text{(blocks)}

bands see any patched pixel (:func:`votes_affected`); the others see exactly what they
saw before. Every count therefore moves by at most :math:`\Delta`, and with the plurality
class :math:`c_1` and the runner-up :math:`c_2` (:func:`robustlab.votes.top_two`), the
prediction is certified against every patch of side :math:`m` when

.. math::

    n_{c_1} - n_{c_2} \ge 2\Delta + [c_2 < c_1],

i.e. when :func:`robustlab.votes.gap_radius` with ``per_change`` :math:`= \Delta` is at
least 1. The certified radius is the largest such :math:`m` (0 if none). The bound is
tight: a base classifier that an attacker controls on the :math:`\Delta` bands it meets
flips the prediction at :math:`m + 1` (tested by brute force).

**Randomized variant.** :func:`certify_randomized` draws band positions uniformly at random
(:class:`RandomBands`, through the sampling engine) and counts argmax votes. The smoothed
classifier is then :math:`g(x) = \arg\max_c p_c(x)` with
:math:`p_c(x) = P_t(f(T_t(x)) = c)`; a patch changes the input of at most :math:`\Delta`
of the :math:`T` positions, so :math:`p_c(x') \ge p_c(x) - \Delta / T`. With a one-sided
Clopper--Pearson lower bound :math:`\underline{p}` on :math:`p_{\hat c}` at level
:math:`\alpha`, the class :math:`\hat c` is certified for patch side :math:`m` when
:math:`\underline{p} > 1/2 + \Delta(m)/T` (with probability at least :math:`1 - \alpha`).

**Training.** The base classifier is trained on ablated inputs: one random band (block)
per example and batch, :class:`BandAblationLoss` through :func:`robustlab.train.fit`
(:func:`base_model` for the profile's data, cached on disk).

References: Levine and Feizi, NeurIPS 2020, arXiv 2002.10733 (code defaults: MNIST column
:math:`s = 2`, CIFAR-10 :math:`s = 4`, :math:`\theta = 0.2` to :math:`0.3`; randomized
variant :math:`\alpha = 0.05`, :math:`n_0 = 1000`, :math:`n = 10000`).

Examples
--------
>>> import robustlab as rl
>>> model = build_base("mlp", "digits", width=2)
>>> x = torch.rand(3, 1, 8, 8)
>>> cert = certify(model, x, kind="column", size=2, theta=0.3)
>>> cert.unit, cert.method, cert.alpha, cert.counts.shape
('patch side', 'column smoothing', None, torch.Size([3, 10]))
>>> votes_affected("column", 2, 2, (8, 8)), votes_affected("block", 2, 2, (8, 8))
(3, 9)
"""

from __future__ import annotations

import abc
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import config
from .. import data as _data
from .. import models as _models
from .. import train as _train
from .. import votes as _votes
from .._validate import (check_choice, check_images, check_model, check_positive_int, check_probability,
                         check_real, check_seed)
from ..certificates import ABSTAIN, UNITS, Certificate
from . import sampling as _sampling

__all__ = [
    "KINDS",
    "DEFAULT_THETA",
    "DEFAULT_SIZES",
    "DEFAULT_N0",
    "DEFAULT_N",
    "DEFAULT_ALPHA",
    "encode",
    "ColumnBands",
    "Blocks",
    "smoothing_family",
    "votes_affected",
    "band_counts",
    "certify_counts",
    "certify",
    "predict",
    "RandomBands",
    "certify_randomized",
    "SmoothedSurrogate",
    "BandAblationLoss",
    "build_base",
    "base_model",
]

KINDS = ("column", "block")
DEFAULT_THETA = 0.3
DEFAULT_N0 = 1000
DEFAULT_N = 10_000
DEFAULT_ALPHA = 0.05
#: Band (block) sizes ``s`` of :func:`base_model` per data set: MNIST and CIFAR-10 columns as in
#: the reference checkpoints; the 8x8 digits as measured for this package.
DEFAULT_SIZES = {
    "column": {"digits": 2, "mnist": 2, "fashion_mnist": 2, "cifar10": 4},
    "block": {"digits": 4, "mnist": 12, "fashion_mnist": 12},  # 28x28: blocks of 12 (this package's choice)
}
# theta <= 1/2 lets several classes vote in one band: the vote set is then coded as a bitmask
# over the classes (one argmax over 2**K codes), which limits K
_MAX_BITMASK_CLASSES = 12


# =========================================================================== encoding and families


def encode(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    r"""The ablation encoding: a kept pixel :math:`x` becomes :math:`(x, 1 - x)`, an ablated one :math:`(0, 0)`.

    Parameters
    ----------
    x : torch.Tensor
        Images (B, C, H, W) in [0, 1].
    keep : torch.Tensor
        Mask (B or 1, 1, H, W), 1 (or True) where the pixel is kept, broadcast over the channels.

    Returns
    -------
    torch.Tensor
        (B, 2C, H, W): the channels :math:`x \odot k` followed by :math:`(1 - x) \odot k`.

    Examples
    --------
    >>> x = torch.tensor([[[[0.0, 0.25]]]])
    >>> encode(x, torch.tensor([[[[1.0, 0.0]]]])).flatten().tolist()
    [0.0, 0.0, 1.0, 0.0]
    """
    keep = keep.to(dtype=x.dtype)
    return torch.cat([x * keep, (1.0 - x) * keep], dim=1)


class _BandFamily(_sampling.TransformFamily):
    """Common part of the band and block families: ``T`` keep-masks, applied through :func:`encode`."""

    kind = ""

    @abc.abstractmethod
    def _build(self) -> torch.Tensor:
        """The (T, 1, H, W) boolean keep-masks of the family."""

    def __init__(self):
        self._masks = self._build()
        self._cache: dict = {}

    def __len__(self) -> int:
        return int(self._masks.shape[0])

    def masks(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """All keep-masks, (T, 1, H, W) in ``dtype`` on ``device`` (made once per device and dtype)."""
        key = (str(torch.device(device or "cpu")), dtype)
        if key not in self._cache:
            self._cache[key] = self._masks.to(device=device or "cpu", dtype=dtype)
        return self._cache[key]

    def _check_x(self, x):
        if x.dim() != 4 or tuple(x.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"x must be images (B, C, {self.height}, {self.width}) for this {self.kind} family, "
                             f"got shape {tuple(x.shape)}")

    def apply(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """Band (block) ``t`` of the images ``x`` (B, C, H, W), encoded: (B, 2C, H, W)."""
        self._check_x(x)
        return encode(x, self.masks(x.device, x.dtype)[t:t + 1])

    def apply_many(self, x: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        """Bands (blocks) ``ts`` of the images ``x``, encoded, band-major: (len(ts) * B, 2C, H, W)."""
        self._check_x(x)
        keep = self.masks(x.device, x.dtype)[ts.to(x.device)][:, None]  # (m, 1, 1, H, W)
        out = torch.cat([x[None] * keep, (1.0 - x)[None] * keep], dim=2)
        return out.view(-1, *out.shape[2:])


class ColumnBands(_BandFamily):
    """The ``W`` column bands of width ``size`` of images ``width`` pixels wide, with wrap-around.

    Band ``t`` keeps the columns :math:`t, t + 1, \\dots, t + s - 1 \\pmod W` (all rows).

    >>> fam = ColumnBands(2, width=4, height=1)
    >>> len(fam), fam.masks()[3, 0, 0].tolist()  # the last band wraps to column 0
    (4, [1.0, 0.0, 0.0, 1.0])
    """

    kind = "column"

    def __init__(self, size: int, width: int, height: int | None = None):
        self.size = check_positive_int(size, "size")
        self.width = check_positive_int(width, "width")
        self.height = self.width if height is None else check_positive_int(height, "height")
        if self.size > self.width:
            raise ValueError(f"size (the band width) must be at most the image width {self.width}, got {self.size}")
        super().__init__()

    def _build(self):
        cols = torch.arange(self.width)
        start = torch.arange(self.width)[:, None]
        keep = ((cols[None, :] - start) % self.width) < self.size  # (T, W)
        return keep[:, None, None, :].expand(self.width, 1, self.height, self.width).clone()

    def __repr__(self):
        return f"ColumnBands(size={self.size}, width={self.width}, height={self.height})"


class Blocks(_BandFamily):
    """The ``H * W`` square blocks of side ``size`` of (H, W) images, wrapping in both axes.

    Block ``t`` has its top-left corner at row ``t // W``, column ``t % W``.

    >>> fam = Blocks(2, height=3, width=3)
    >>> len(fam), fam.masks()[8, 0].tolist()  # corner (2, 2) wraps to rows and columns {2, 0}
    (9, [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
    """

    kind = "block"

    def __init__(self, size: int, height: int, width: int):
        self.size = check_positive_int(size, "size")
        self.height = check_positive_int(height, "height")
        self.width = check_positive_int(width, "width")
        if self.size > min(self.height, self.width):
            raise ValueError(f"size (the block side) must be at most min(H, W) = {min(self.height, self.width)}, "
                             f"got {self.size}")
        super().__init__()

    def _build(self):
        h, w, s = self.height, self.width, self.size
        rows_in = ((torch.arange(h)[None, :] - torch.arange(h)[:, None]) % h) < s  # (corner row, row)
        cols_in = ((torch.arange(w)[None, :] - torch.arange(w)[:, None]) % w) < s  # (corner col, col)
        keep = rows_in[:, None, :, None] & cols_in[None, :, None, :]  # (h, w, H, W)
        return keep.reshape(h * w, 1, h, w)

    def __repr__(self):
        return f"Blocks(size={self.size}, height={self.height}, width={self.width})"


def _shape(shape) -> tuple[int, int]:
    if isinstance(shape, torch.Tensor):
        shape = tuple(shape.shape)
    shape = tuple(int(v) for v in shape)
    if len(shape) < 2:
        raise ValueError(f"shape must end with the image size (H, W), got {shape}")
    return shape[-2], shape[-1]


def smoothing_family(kind: str, size: int, shape) -> _BandFamily:
    """The family of ``kind`` (``"column"`` or ``"block"``) with band (block) size ``size`` for images of
    ``shape`` (anything ending with (H, W), or an image batch).

    >>> smoothing_family("block", 3, (1, 8, 8))
    Blocks(size=3, height=8, width=8)
    """
    check_choice(kind, "kind", KINDS)
    h, w = _shape(shape)
    if kind == "column":
        return ColumnBands(size, width=w, height=h)
    return Blocks(size, height=h, width=w)


def votes_affected(kind: str, patch: int, size: int, shape) -> int:
    r"""How many bands (blocks) one ``patch`` x ``patch`` square can meet: the :math:`\Delta` of the certificate.

    Columns: :math:`\min(m + s - 1, W)`; blocks: :math:`\min(m + s - 1, H)\min(m + s - 1, W)`;
    0 for ``patch = 0``. Exact: a patch away from the edges meets this many.

    >>> votes_affected("column", 5, 2, (28, 28)), votes_affected("block", 1, 4, (8, 8))
    (6, 16)
    """
    check_choice(kind, "kind", KINDS)
    patch = check_positive_int(patch, "patch", allow_zero=True)
    size = check_positive_int(size, "size")
    h, w = _shape(shape)
    if patch == 0:
        return 0
    span = patch + size - 1
    return min(span, w) if kind == "column" else min(span, h) * min(span, w)


# =========================================================================== votes


class _VoteCode:
    """The base classifier's vote set on each input, coded as one int64 per input.

    ``theta > 1/2``: at most one class reaches the threshold, code ``c`` or ``K`` (no vote).
    ``theta <= 1/2``: the set of classes with score >= theta as a bitmask (``2**K`` codes).
    """

    def __init__(self, theta: float):
        self.theta = theta
        self.n_classes = None

    def __call__(self, logits):
        if logits.dim() != 2:
            raise ValueError(f"model must return logits of shape (batch, classes), got {tuple(logits.shape)}")
        k = logits.shape[1]
        self.n_classes = k
        votes = logits.softmax(1) >= self.theta
        if self.theta > 0.5:
            return torch.where(votes.any(1), votes.to(torch.uint8).argmax(1), torch.full_like(votes[:, 0], k,
                                                                                            dtype=torch.long))
        if k > _MAX_BITMASK_CLASSES:
            raise ValueError(f"theta <= 0.5 lets several classes vote per band, supported for at most "
                             f"{_MAX_BITMASK_CLASSES} classes (the model has {k}); use theta > 0.5 or theta=None")
        return (votes.long() << torch.arange(k, device=votes.device)).sum(1)


def _decode(codes: torch.Tensor, theta: float, k: int) -> torch.Tensor:
    """(B, T) vote codes -> (B, K) counts."""
    if theta > 0.5:
        return _votes.vote_counts(codes, k + 1)[:, :k]
    bits = (codes[..., None] >> torch.arange(k, device=codes.device)) & 1
    return bits.sum(1)


def _check_theta(theta):
    if theta is None:
        return None
    theta = check_real(theta, "theta")
    if not 0.0 < theta <= 1.0:
        raise ValueError(f"theta must be in (0, 1] (theta = 0 lets every class vote in every band, "
                         f"a vacuous certificate) or None for argmax votes, got {theta}")
    return float(theta)


def _check_common(model, x, kind, size, batch_size):
    check_model(model)
    check_images(x, "x")
    if x.dim() != 4:
        raise ValueError(f"x must be images (B, C, H, W), got shape {tuple(x.shape)}")
    check_choice(kind, "kind", KINDS)
    check_positive_int(batch_size, "batch_size")
    return smoothing_family(kind, size, x.shape)


def band_counts(model, x, *, kind: str = "column", size: int, theta: float | None = DEFAULT_THETA,
                batch_size: int = 1000, progress: bool | None = None) -> torch.Tensor:
    r"""The vote counts :math:`n_c(x)` of the base classifier over every band (block) of each image.

    ``counts[i, c]`` is the number of bands :math:`t` of image ``i`` on which
    :math:`\mathrm{softmax}_c f(T_t(x_i)) \ge \theta` (with ``theta=None``: on which
    :math:`c` is the argmax, lower index on a tie of the logits). All bands of many images
    are packed into forward passes of about ``batch_size`` rows
    (:func:`robustlab.smoothing.sampling.enumerate_votes`); the model runs in eval mode on
    its own device.

    Parameters
    ----------
    model : torch.nn.Module
        The base classifier, on encoded inputs (B, 2C, H, W) (:func:`build_base`).
    x : torch.Tensor
        Images (B, C, H, W) in [0, 1].
    kind : {"column", "block"}
    size : int
        Band width (column) or block side ``s``.
    theta : float in (0, 1], or None
        Vote threshold on the softmax score; ``None`` for argmax votes.
    batch_size : int
        Encoded inputs per forward pass (memory, not results).
    progress : bool, optional
        Progress bar (default: the global switch).

    Returns
    -------
    torch.Tensor
        int64 (B, K) on the device of ``x``; each row sums to at most ``T`` when
        ``theta > 1/2`` or ``None`` (exactly ``T`` for ``None``).
    """
    family = _check_common(model, x, kind, size, batch_size)
    theta = _check_theta(theta)
    desc = f"{kind} smoothing: votes"
    if theta is None:
        return _sampling.enumerate_votes(model, x, family, mode="counts", batch_size=batch_size, progress=progress,
                                         desc=desc)
    coder = _VoteCode(theta)
    codes = _sampling.enumerate_votes(model, x, family, mode="votes", batch_size=batch_size, vote=coder,
                                      progress=progress, desc=desc)
    return _decode(codes, theta, coder.n_classes)


# =========================================================================== certificates


def certify_counts(counts: torch.Tensor, *, kind: str, size: int, shape, theta: float | None = None) -> Certificate:
    r"""The deterministic patch certificate from the vote counts (B, K) of all bands (blocks).

    The prediction is the plurality class :math:`c_1` (lower index on a tie), the
    runner-up :math:`c_2` the plurality of the others; the radius is the largest patch
    side :math:`m \le \min(H, W)` with
    ``gap_radius(n1, n2, c1, c2, per_change=votes_affected(kind, m, size, shape)) >= 1``,
    i.e. :math:`n_{c_1} - n_{c_2} - [c_2 < c_1] \ge 2\Delta(m)`, and 0 if there is none.
    The method never abstains (an image on which no band votes predicts class 0, as the
    tie rule says, with radius 0).

    Parameters
    ----------
    counts : torch.Tensor
        int64 (B, K) vote counts (:func:`band_counts`).
    kind, size : str, int
        The family the counts come from.
    shape : tuple
        The image size (anything ending with (H, W)).
    theta : float or None
        Recorded in the statistics only.

    Returns
    -------
    Certificate
        Unit ``"patch side"``, deterministic (``alpha=None``), method ``"column smoothing"``
        or ``"block smoothing"``; statistics ``counts``, ``runner_up``, ``gap``
        (:math:`n_{c_1} - n_{c_2}`), ``kind``, ``size``, ``theta``, ``positions`` (T).

    Examples
    --------
    >>> counts = torch.tensor([[8, 0, 0], [0, 8, 0], [0, 4, 4]])
    >>> cert = certify_counts(counts, kind="column", size=2, shape=(8, 8))
    >>> cert.prediction.tolist(), cert.radius.tolist()  # class 0 wins the 4-4 tie at Delta = 4
    ([0, 1, 1], [3, 2, 0])
    """
    if not isinstance(counts, torch.Tensor) or counts.dim() != 2 or counts.is_floating_point() \
            or counts.dtype == torch.bool:
        raise TypeError("counts must be an integer tensor of vote counts, shape (B, K)")
    check_choice(kind, "kind", KINDS)
    family = smoothing_family(kind, size, shape)
    h, w = family.height, family.width
    counts = counts.detach().cpu().long()
    if counts.numel() and int(counts.min()) < 0:
        raise ValueError("counts must be >= 0")
    if counts.numel() and int(counts.sum(1).max()) > len(family) * counts.shape[1]:
        raise ValueError(f"counts hold more votes than {len(family)} bands can cast")
    padded = counts if counts.shape[1] >= 2 else torch.cat([counts, torch.zeros_like(counts)], 1)
    top = _votes.top_two(padded)
    radius = torch.zeros(counts.shape[0], dtype=torch.long)
    for m in range(1, min(h, w) + 1):
        delta = votes_affected(kind, m, size, (h, w))
        ok = _votes.gap_radius(top.n1, top.n2, top.c1, top.c2, per_change=delta) >= 1
        if not bool(ok.any()):
            break
        radius += ok.long()  # certified for m => for every smaller m too (Delta grows with m)
    return Certificate(top.c1, radius, UNITS["patch"], f"{kind} smoothing", None,
                       {"counts": counts, "runner_up": top.c2, "gap": top.n1 - top.n2, "kind": kind,
                        "size": int(size), "theta": theta, "positions": len(family)})


def certify(model, x, *, kind: str = "column", size: int, theta: float | None = DEFAULT_THETA,
            batch_size: int = 1000, progress: bool | None = None) -> Certificate:
    r"""Column or block smoothing: the smoothed prediction and its certified patch side, for every image.

    Enumerates every band (block) of every image (:func:`band_counts`) and applies the
    deterministic certificate (:func:`certify_counts`): the plurality class :math:`c_1`
    is certified against every :math:`m \times m` patch when
    :math:`n_{c_1} - n_{c_2} \ge 2\Delta(m) + [c_2 < c_1]`, with :math:`\Delta(m)`
    the bands a patch can meet (:func:`votes_affected`).

    Guarantee (no probability involved): for every image :math:`x'` that differs from
    :math:`x` only inside one square of side at most ``radius``, the smoothed classifier
    (the same model, family and threshold) predicts ``prediction``.

    Parameters
    ----------
    model, x, kind, size, theta, batch_size, progress
        As in :func:`band_counts`.

    Returns
    -------
    Certificate
        See :func:`certify_counts`.

    Examples
    --------
    >>> model = build_base("mlp", "digits", width=2)
    >>> cert = certify(model, torch.rand(2, 1, 8, 8), kind="block", size=3)
    >>> cert.positions, bool((cert.counts.sum(1) <= 64 * 10).all())
    (64, True)
    """
    counts = band_counts(model, x, kind=kind, size=size, theta=theta, batch_size=batch_size, progress=progress)
    cert = certify_counts(counts, kind=kind, size=size, shape=x.shape, theta=theta)
    return cert


def predict(model, x, *, kind: str = "column", size: int, theta: float | None = DEFAULT_THETA,
            batch_size: int = 1000, progress: bool | None = None) -> torch.Tensor:
    """The smoothed classifier's classes (B,): the plurality of the band votes (lower index on a tie),
    on the device of ``x``.

    >>> model = build_base("mlp", "digits", width=2)
    >>> predict(model, torch.rand(2, 1, 8, 8), size=2).shape
    torch.Size([2])
    """
    counts = band_counts(model, x, kind=kind, size=size, theta=theta, batch_size=batch_size, progress=progress)
    return _votes.plurality(counts)


# =========================================================================== randomized variant


class RandomBands(_sampling.Noise):
    """One uniformly random band (block) of a family per copy, encoded (a :class:`~robustlab.smoothing.sampling.Noise`).

    >>> noise = RandomBands(ColumnBands(2, width=8))
    >>> noise.sample(torch.rand(1, 8, 8), 5, torch.Generator().manual_seed(0)).shape
    torch.Size([5, 2, 8, 8])
    """

    def __init__(self, family: _BandFamily):
        if not isinstance(family, _BandFamily):
            raise TypeError(f"family must be ColumnBands or Blocks, got {type(family).__name__}")
        self.family = family

    def sample(self, x_i, size, generator):
        t = torch.randint(0, len(self.family), (size,), generator=generator, device=x_i.device)
        return encode(x_i[None], self.family.masks(x_i.device, x_i.dtype)[t])

    def __repr__(self):
        return f"RandomBands({self.family!r})"


def certify_randomized(model, x, *, kind: str = "column", size: int, n0: int = DEFAULT_N0, n: int = DEFAULT_N,
                       alpha: float = DEFAULT_ALPHA, batch_size: int = 1000, seed=0,
                       progress: bool | None = None) -> Certificate:
    r"""Randomized column (block) smoothing: CERTIFY with sampled band positions.

    For each image: ``n0`` random bands select the guess :math:`\hat c` (plurality of the
    argmax votes), ``n`` fresh ones count it, :math:`\underline{p}` is the one-sided
    Clopper--Pearson lower bound at level ``alpha`` (:func:`robustlab.stats.clopper_pearson`).
    Abstain (radius 0) unless :math:`\underline{p} > 1/2`; else the radius is the largest
    :math:`m \le \min(H, W)` with :math:`\underline{p} > 1/2 + \Delta(m) / T`.

    Guarantee: with probability at least :math:`1 - \alpha` over the sampling, a returned
    class equals :math:`g(x) = \arg\max_c P_t(f(T_t(x)) = c)` and :math:`g(x') = g(x)` for
    every :math:`x'` that differs from :math:`x` inside one square of side at most the radius
    (:math:`p_{\hat c}(x') \ge p_{\hat c}(x) - \Delta/T > 1/2`).

    Each image has its own seeded stream of band positions (``seed + i``, the sampling
    engine's :class:`~robustlab.smoothing.sampling.Sampler`), so results do not depend on
    ``batch_size`` or on the other images.

    Returns
    -------
    Certificate
        Unit ``"patch side"``, ``alpha``, method ``"randomized column smoothing"`` (or block);
        statistics ``pA_lower``, ``count``, ``kind``, ``size``, ``n0``, ``n``, ``positions``.

    Examples
    --------
    >>> model = build_base("mlp", "digits", width=2)
    >>> cert = certify_randomized(model, torch.rand(2, 1, 8, 8), size=2, n0=10, n=100)
    >>> cert.alpha, cert.n, bool((cert.radius[cert.abstained] == 0).all())
    (0.05, 100, True)
    """
    family = _check_common(model, x, kind, size, batch_size)
    n0, n = check_positive_int(n0, "n0"), check_positive_int(n, "n")
    alpha = check_probability(alpha, "alpha")
    with _sampling.Sampler(model, x, RandomBands(family), mode="counts", seed=seed, batch_size=batch_size,
                           progress=progress, desc=f"randomized {kind} smoothing",
                           total=x.shape[0] * (n0 + n)) as sampler:
        selection = sampler.draw(n0).cpu()
        estimation = sampler.draw(n).cpu()
    d = _sampling.certify_counts(selection, estimation, alpha)
    prediction, p_lower, count = d.prediction, d.pA_lower, d.count
    h, w = family.height, family.width
    radius = torch.zeros(x.shape[0], dtype=torch.long)
    for m in range(1, min(h, w) + 1):
        ok = (p_lower - 0.5) > votes_affected(kind, m, size, (h, w)) / len(family)
        if not bool(ok.any()):
            break
        radius += ok.long()
    radius = torch.where(prediction != ABSTAIN, radius, torch.zeros_like(radius))
    return Certificate(prediction, radius, UNITS["patch"], f"randomized {kind} smoothing", alpha,
                       {"pA_lower": p_lower, "count": count, "kind": kind, "size": int(size), "n0": n0, "n": n,
                        "positions": len(family)})


# =========================================================================== attacks and training


class SmoothedSurrogate(nn.Module):
    r"""A differentiable stand-in for the smoothed classifier, for attacks on it.

    Maps images (B, C, H, W) in [0, 1] to :math:`\log \frac1T \sum_t \mathrm{softmax}\, f(T_t(x))`,
    the log of the mean softmax over all bands (blocks): gradients flow to every pixel a
    band keeps. An attack on it proposes patches; whether one defeats the *smoothed*
    classifier is judged with :func:`predict`.

    >>> model = build_base("mlp", "digits", width=2)
    >>> SmoothedSurrogate(model, ColumnBands(2, width=8))(torch.rand(3, 1, 8, 8)).shape
    torch.Size([3, 10])
    """

    def __init__(self, model: nn.Module, family: _BandFamily):
        super().__init__()
        self.model = check_model(model)
        if not isinstance(family, _BandFamily):
            raise TypeError(f"family must be ColumnBands or Blocks, got {type(family).__name__}")
        self.family = family

    def forward(self, x):
        masks = self.family.masks(x.device, x.dtype)  # (T, 1, H, W)
        t, b = masks.shape[0], x.shape[0]
        z = encode(x.repeat(t, 1, 1, 1), masks.repeat_interleave(b, 0))
        probs = self.model(z).softmax(1).view(t, b, -1).mean(0)
        return probs.clamp_min(1e-12).log()


@dataclasses.dataclass(frozen=True)
class BandAblationLoss:
    r"""Training on ablated inputs: cross-entropy of :math:`f(T_t(x))` with one random band
    (block) :math:`t` per example, drawn uniformly from torch's generator (seeded by
    :func:`robustlab.train.fit`).

    The reference code draws one position per batch; a position per example gives each
    batch every part of the image.

    Parameters
    ----------
    kind : {"column", "block"}
    size : int
        Band width or block side.

    Examples
    --------
    >>> model = build_base("mlp", "digits", width=2)
    >>> loss, logits = BandAblationLoss("column", 2)(model, torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    >>> logits.shape, loss.dim()
    (torch.Size([4, 10]), 0)
    """

    kind: str = "column"
    size: int = 2

    def __post_init__(self):
        check_choice(self.kind, "kind", KINDS)
        check_positive_int(self.size, "size")

    def __call__(self, model, x, y):
        family = smoothing_family(self.kind, self.size, x.shape)
        masks = family.masks(x.device, x.dtype)
        t = torch.randint(0, len(family), (x.shape[0],), device=x.device)
        logits = model(encode(x, masks[t]))
        return F.cross_entropy(logits, y), logits


def build_base(arch: str | None = None, dataset: str | None = None, *, width: int | None = None,
               seed: int | None = 0) -> nn.Module:
    """A fresh base classifier for ablated inputs: the architecture of :func:`robustlab.models.build`
    with ``2C`` input channels (the encoding :math:`(x, 1 - x)`), normalized inside by the data set's
    statistics (mean ``m`` for ``x``, ``1 - m`` for ``1 - x``).

    >>> build_base("cnn", "digits", width=4)(torch.rand(2, 2, 8, 8)).shape
    torch.Size([2, 10])
    """
    prof = config.profile()
    meta = _data.info(dataset)
    if arch is None:
        arch = "resnet" if (prof.name == "full" and meta.name == "cifar10") else prof.arch
    check_choice(arch, "arch", _models.ARCHS)
    width = prof.width if width is None else check_positive_int(width, "width")
    if seed is not None:
        torch.manual_seed(check_seed(seed))
    c, h, w = meta.shape
    kw = dict(n_classes=meta.n_classes, mean=tuple(meta.mean) + tuple(1.0 - m for m in meta.mean),
              std=tuple(meta.std) * 2)
    shape = (2 * c, h, w)
    if arch == "mlp":
        return _models.MLP(shape, hidden=(16 * width, 16 * width), **kw)
    if arch == "cnn":
        return _models.SmallCNN(shape, width=width, **kw)
    return _models.ResNet(shape, width=width, **kw)


def _encoded_eval(split, family, seed: int):
    """The test images, each with one band drawn from a seeded generator: the base classifier's accuracy."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.randint(0, len(family), (split.x.shape[0],), generator=gen)
    return encode(split.x, family.masks(dtype=split.x.dtype)[t]), split.y


def base_model(kind: str = "column", size: int | None = None, *, dataset: str | None = None,
               arch: str | None = None, width: int | None = None, epochs: int | None = None, seed: int = 0,
               device=None, progress: bool | None = None, cache: bool = True) -> _train.Trained:
    """The base classifier of column (block) smoothing on the profile's data, trained on ablated inputs (cached).

    :func:`build_base` trained by :func:`robustlab.train.fit` with :class:`BandAblationLoss`
    and the profile's learning rate and batch size, through the zoo's factory
    :func:`robustlab.zoo.profile_model`. ``size`` defaults to :data:`DEFAULT_SIZES` (digits:
    column 2, block 4); ``epochs`` to twice the profile's (ablated inputs learn slower). The
    history's test accuracy is the base classifier's on one seeded random band per test image.

    Returns
    -------
    robustlab.train.Trained
        ``(model, history)``, the model in eval mode.
    """
    from ..zoo import profile_model

    check_choice(kind, "kind", KINDS)
    prof = config.profile()
    meta = _data.info(dataset or prof.dataset)
    if size is None:
        if meta.name not in DEFAULT_SIZES[kind]:
            raise ValueError(f"size must be given for {kind} smoothing on {meta.name} (defaults exist for "
                             f"{sorted(DEFAULT_SIZES[kind])})")
        size = DEFAULT_SIZES[kind][meta.name]
    size = check_positive_int(size, "size")
    epochs = 2 * prof.epochs if epochs is None else check_positive_int(epochs, "epochs")
    loss = BandAblationLoss(kind, size)

    def train_fn(model, train, test):
        family = smoothing_family(kind, size, train.x.shape)
        return _train.fit(model, train, epochs=epochs, lr=prof.lr, batch_size=prof.batch_size, seed=seed,
                          loss_fn=loss, eval_data=_encoded_eval(test, family, seed), progress=progress,
                          cache=cache, desc=f"{kind} smoothing (s = {size}) training on {meta.name}")

    return profile_model(train_fn, meta.name, arch, width=width, seed=seed, device=device, build=build_base)
