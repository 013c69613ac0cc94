r"""Segment and Complete (SAC): find an adversarial patch, complete it to a square, erase it.

Liu, Levine, Lau, Chellappa and Feizi, "Segment and Complete: Defending Object Detectors
against Adversarial Patch Attacks with Robust Patch Detection", CVPR 2022
(arXiv 2112.04532). The paper defends object detectors; this module is its
classification version at digits scale.

The defense has three steps.

1. A **patch segmenter** :math:`\sigma` (a small fully-convolutional net,
   :class:`PatchSegmenter`) predicts per pixel whether it belongs to a patch; thresholded at
   ``threshold`` it gives the raw mask :math:`M \in \{0, 1\}^{H \times W}`.
2. **Square completion** (:func:`complete_squares`). For every candidate side
   :math:`s` and every top-left corner :math:`(r, c)`, :math:`0 \le r \le H - s`,
   :math:`0 \le c \le W - s`, the square :math:`S_{r,c}` has Hamming distance

   .. math:: d(M, S_{r,c}) = |M \,\triangle\, S_{r,c}| = s^2 - |M \cap S_{r,c}| + |M \setminus S_{r,c}|
             = s^2 + |M| - 2\,|M \cap S_{r,c}|,

   computed for all corners at once with 2-D prefix sums. The completed mask is the
   **union of every square with** :math:`d(M, S) < \gamma_k s^2`, at the first level
   :math:`k` at which at least one square (of any candidate side) qualifies, with
   :math:`\gamma_0 = \gamma` and :math:`\gamma_k = 1 - (1 - \gamma)\,\rho^k`
   (``decay`` :math:`\rho`), :math:`k < ` ``levels``. If no level selects a square the
   completed mask is empty. The paper's code uses :math:`\gamma = 0.1`, :math:`\rho = 0.7`
   and 15 levels.
3. The completed mask's pixels are set to 0 and the masked image goes to a classifier
   trained on randomly masked images. An image is **detected** (flagged as attacked)
   when its completed mask is not empty.

The guarantee (conditional, not a certificate)
----------------------------------------------
Let :math:`P` be the true patch, a square whose side is one of the candidate sides. If

.. math:: |M \,\triangle\, P| < \gamma s^2,

then :math:`P` qualifies at level 0, so level 0 is used and :math:`P \subseteq C(M)`:
the completed mask covers the whole patch. Then :math:`x' \odot (1 - C) = x \odot (1 - C)`
for the clean image :math:`x` and *any* patch content: the masked image carries no
adversarial pixel, and the prediction equals the classifier's prediction on the clean
image under the same mask :math:`C`. By the triangle inequality every square selected at
level 0 also satisfies :math:`|S \,\triangle\, P| < 2\gamma s^2`, which bounds how much
the completion can over-mask. (The relaxed levels :math:`k > 0` are only reached when no
square qualifies at level 0, so they never affect the guarantee.)

**How this differs from a certificate.** A certificate (:class:`robustlab.certificates.
Certificate`) states that *no* perturbation inside a radius changes the prediction,
proven from the input alone. Here the premise :math:`|M \triangle P| < \gamma s^2` is a
property of the segmenter's output on the attacked image, which nothing proves: a patch
that fools the segmenter escapes the guarantee. Nor does it say the masked prediction is
correct (masking may erase part of the digit). So :func:`defend` returns a
:class:`Detection` (what the defense saw and did), not a ``Certificate``; :func:`evaluate`
measures empirically how often the premise held (``coverage``) and checks the implication
on every image where it did (``consistent``).

Examples
--------
>>> mask = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
>>> mask[0, 0, 1:4, 2:5] = True
>>> mask[0, 0, 2, 3] = False            # the segmenter missed one pixel of a 3x3 patch
>>> completed = complete_squares(mask, 3, gamma=0.2)
>>> completed.mask[0, 0, 1:4, 2:5].all().item(), int(completed.mask.sum()), completed.level.tolist()
(True, 9, [0])
"""

from __future__ import annotations

import dataclasses
import math
import time
from numbers import Integral
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import config
from . import data as _data
from . import models as _models
from ._validate import (check_choice, check_images, check_interval, check_labels, check_model, check_positive,
                        check_positive_int, check_probability, check_seed)

__all__ = [
    "DEFAULT_GAMMA",
    "DEFAULT_DECAY",
    "DEFAULT_LEVELS",
    "default_side",
    "square_distances",
    "Completion",
    "complete_squares",
    "square_mask",
    "paste_patch",
    "covers",
    "PatchSegmenter",
    "build_segmenter",
    "segment",
    "Detection",
    "defend",
    "PatchedBatch",
    "adaptive_patch",
    "transfer_patch",
    "PatchMaskLoss",
    "MaskedTrainingLoss",
    "segmenter_model",
    "classifier_model",
    "SACEvaluation",
    "evaluate",
]

DEFAULT_GAMMA = 0.1
"""Relative Hamming budget of the first level, :math:`\\gamma` (the code's ``1 - 0.9``)."""
DEFAULT_DECAY = 0.7
"""Factor :math:`\\rho` of the relaxation :math:`1 - \\gamma_k = (1 - \\gamma)\\rho^k`."""
DEFAULT_LEVELS = 15
"""Number of levels tried before the completion gives up (empty mask)."""
CONTENTS = ("uniform", "binary", "mixed")


def default_side(dataset: str | None = None) -> int:
    """The patch side of the classroom setting: 3 pixels on 8x8 digits, 5 on 28x28 (or larger) images.

    >>> default_side("digits"), default_side("mnist")
    (3, 5)
    """
    h = _data.info(dataset).shape[1]
    return 3 if h <= 8 else 5


# --------------------------------------------------------------------------- square completion


def _check_mask(mask, name: str = "mask") -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of booleans, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a boolean tensor (a thresholded mask), got dtype {mask.dtype}")
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"{name} must have shape (B, 1, H, W), got shape {tuple(mask.shape)}")
    if mask.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    return mask


def _check_sizes(sizes, h: int, w: int, name: str = "sizes") -> tuple:
    if isinstance(sizes, Integral) and not isinstance(sizes, bool):
        sizes = (sizes,)
    if not isinstance(sizes, (tuple, list)) or not sizes:
        raise TypeError(f"{name} must be a patch side (int) or a non-empty sequence of sides, got {sizes!r}")
    out = []
    for s in sizes:
        s = check_positive_int(s, name)
        if s > min(h, w):
            raise ValueError(f"{name} holds side {s}, larger than the {h}x{w} image")
        out.append(s)
    return tuple(sorted(set(out)))


def _check_completion_args(gamma, decay, levels):
    gamma = check_interval(gamma, "gamma", 0.0, 1.0, low_open=True)
    decay = check_interval(decay, "decay", 0.0, 1.0, low_open=True)
    levels = check_positive_int(levels, "levels")
    return gamma, decay, levels


def square_distances(mask: torch.Tensor, side: int) -> torch.Tensor:
    r"""Hamming distances :math:`d(M, S_{r,c}) = s^2 + |M| - 2|M \cap S_{r,c}|` to every ``side`` square.

    Entry ``[b, r, c]`` is the distance of image ``b``'s mask to the square whose **top-left
    corner is** :math:`(r, c)`, for :math:`0 \le r \le H - s`, :math:`0 \le c \le W - s`
    (every position, the borders included), from 2-D prefix sums in exact integers.

    Parameters
    ----------
    mask : torch.Tensor
        bool (B, 1, H, W).
    side : int
        The square's side :math:`s`, ``1 <= s <= min(H, W)``.

    Returns
    -------
    torch.Tensor
        int64 (B, H - s + 1, W - s + 1).

    Examples
    --------
    >>> m = torch.zeros(1, 1, 4, 4, dtype=torch.bool); m[0, 0, :2, :2] = True
    >>> square_distances(m, 2)[0]
    tensor([[0, 4, 8],
            [4, 6, 8],
            [8, 8, 8]])
    """
    mask = _check_mask(mask)
    h, w = mask.shape[-2:]
    (side,) = _check_sizes(side, h, w, "side")
    m = mask[:, 0].to(torch.int64)
    prefix = F.pad(m.cumsum(1).cumsum(2), (1, 0, 1, 0))  # prefix[b, i, j] = sum of m[b, :i, :j]
    s = side
    inside = prefix[:, s:, s:] - prefix[:, :-s, s:] - prefix[:, s:, :-s] + prefix[:, :-s, :-s]
    total = m.sum((1, 2))[:, None, None]
    return s * s + total - 2 * inside


def _paint(selected: torch.Tensor, side: int) -> torch.Tensor:
    """Union of the squares whose top-left corners are True in ``selected`` (B, H-s+1, W-s+1) -> bool (B, 1, H, W)."""
    s = side
    padded = F.pad(selected[:, None].to(torch.float32), (s - 1, s - 1, s - 1, s - 1))
    return F.max_pool2d(padded, kernel_size=s, stride=1) > 0.5


class Completion(NamedTuple):
    """The result of :func:`complete_squares`.

    ``mask`` -- bool (B, 1, H, W), the completed mask (the union of the selected squares);
    ``level`` -- int64 (B,), the level :math:`k` whose budget :math:`\\gamma_k s^2` selected
    them, -1 where no level selected any square (empty mask);
    ``selected`` -- the selected top-left corners per side: a dict ``side -> bool (B, H-s+1, W-s+1)``.
    """

    mask: torch.Tensor
    level: torch.Tensor
    selected: dict


def complete_squares(mask: torch.Tensor, sizes, *, gamma: float = DEFAULT_GAMMA, decay: float = DEFAULT_DECAY,
                     levels: int = DEFAULT_LEVELS) -> Completion:
    r"""Square completion: the union of the candidate squares within Hamming distance :math:`< \gamma_k s^2` of ``mask``.

    Per image, the level :math:`k` is the first of :math:`0, \dots,` ``levels - 1`` at which some
    square of some side in ``sizes`` has :math:`d(M, S) < \gamma_k s^2`, with
    :math:`\gamma_0 = \gamma` and :math:`\gamma_k = 1 - (1 - \gamma)\rho^k`; the completed mask is
    the union of all squares (of all sides) selected at that level. The comparison is strict.
    An empty mask never completes: :math:`d(\emptyset, S) = s^2 \ge \gamma_k s^2`.

    Guarantee: if the true patch :math:`P` is a square of a side in ``sizes`` and
    :math:`|M \triangle P| < \gamma s^2`, then ``level == 0`` and :math:`P \subseteq` ``mask``;
    every square selected then lies within :math:`2\gamma s^2` of :math:`P`.

    Parameters
    ----------
    mask : torch.Tensor
        bool (B, 1, H, W), the segmenter's thresholded mask.
    sizes : int or sequence of int
        Candidate square sides.
    gamma : float
        :math:`\gamma \in (0, 1]`, the relative budget of the first level.
    decay : float
        :math:`\rho \in (0, 1]` of the relaxed levels (1: no relaxation).
    levels : int
        Levels tried (1: only the first, the guarantee's level).

    Returns
    -------
    Completion

    Examples
    --------
    >>> m = torch.zeros(1, 1, 5, 5, dtype=torch.bool); m[0, 0, 0, 0:2] = True   # top row of a 2x2 square
    >>> complete_squares(m, 2, gamma=0.6, levels=1).mask[0, 0, :3, :3].int()
    tensor([[1, 1, 0],
            [1, 1, 0],
            [0, 0, 0]], dtype=torch.int32)
    """
    mask = _check_mask(mask)
    b, _, h, w = mask.shape
    sizes = _check_sizes(sizes, h, w)
    gamma, decay, levels = _check_completion_args(gamma, decay, levels)
    dists = {s: square_distances(mask, s).double() for s in sizes}
    budgets = [gamma] + [1.0 - (1.0 - gamma) * decay ** k for k in range(1, levels)]
    level = torch.full((b,), -1, dtype=torch.int64, device=mask.device)
    for k, g in enumerate(budgets):
        found = torch.zeros(b, dtype=torch.bool, device=mask.device)
        for s, d in dists.items():
            found |= (d < g * s * s).flatten(1).any(1)
        level = torch.where((level < 0) & found, torch.full_like(level, k), level)
        if bool((level >= 0).all()):
            break
    budget = torch.tensor(budgets, dtype=torch.float64, device=mask.device)[level.clamp(min=0)]
    out = torch.zeros_like(mask)
    selected = {}
    for s, d in dists.items():
        sel = (d < budget[:, None, None] * (s * s)) & (level >= 0)[:, None, None]
        selected[s] = sel
        out |= _paint(sel, s)
    return Completion(out, level, selected)


def square_mask(rows: torch.Tensor, cols: torch.Tensor, side: int, shape) -> torch.Tensor:
    """bool (B, 1, H, W): per image the ``side`` x ``side`` square with top-left corner ``(rows[i], cols[i])``.

    >>> square_mask(torch.tensor([1]), torch.tensor([0]), 2, (3, 3))[0, 0].int()
    tensor([[0, 0, 0],
            [1, 1, 0],
            [1, 1, 0]], dtype=torch.int32)
    """
    h, w = (int(v) for v in shape)
    (side,) = _check_sizes(side, h, w, "side")
    for t, name, limit in ((rows, "rows", h - side), (cols, "cols", w - side)):
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.dtype != torch.int64:
            raise TypeError(f"{name} must be an int64 tensor of shape (B,)")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > limit):
            raise ValueError(f"{name} must hold top-left corners in [0, {limit}] for a side-{side} square")
    if rows.shape != cols.shape:
        raise ValueError("rows and cols must have the same shape")
    r = torch.arange(h, device=rows.device)
    c = torch.arange(w, device=rows.device)
    in_r = (r[None] >= rows[:, None]) & (r[None] < rows[:, None] + side)
    in_c = (c[None] >= cols[:, None]) & (c[None] < cols[:, None] + side)
    return (in_r[:, :, None] & in_c[:, None, :])[:, None]


def paste_patch(x: torch.Tensor, patch_mask: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    r"""The patched image :math:`x' = (1 - P) \odot x + P \odot \text{content}` (all channels).

    ``x`` and ``content`` (B, C, H, W) in [0, 1]; ``patch_mask`` bool (B, 1, H, W).
    """
    check_images(x, "x")
    check_images(content, "content")
    _check_mask(patch_mask, "patch_mask")
    if content.shape != x.shape or patch_mask.shape[-2:] != x.shape[-2:] or patch_mask.shape[0] != x.shape[0]:
        raise ValueError(f"content must have the shape of x {tuple(x.shape)} and patch_mask (B, 1, H, W) of the "
                         f"same B, H, W; got {tuple(content.shape)} and {tuple(patch_mask.shape)}")
    return torch.where(patch_mask.to(x.device), content.to(x.device, x.dtype), x)


def covers(completed: torch.Tensor, patch_mask: torch.Tensor) -> torch.Tensor:
    """bool (B,): the completed mask contains every pixel of the patch (the guarantee's conclusion)."""
    _check_mask(completed, "completed")
    _check_mask(patch_mask, "patch_mask")
    if completed.shape != patch_mask.shape:
        raise ValueError(f"completed and patch_mask must have the same shape, got {tuple(completed.shape)} "
                         f"and {tuple(patch_mask.shape)}")
    return ~(patch_mask.to(completed.device) & ~completed).flatten(1).any(1)


def _masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked pixels set to 0 in every channel."""
    return x.masked_fill(mask.to(x.device), 0.0)


# --------------------------------------------------------------------------- segmenter


class PatchSegmenter(nn.Sequential):
    """Normalize -> (conv 3x3 -> ReLU) x (depth - 1) -> conv 3x3 to one channel: per-pixel patch logits.

    Fully convolutional (padding 1 keeps H x W); the output (B, 1, H, W) is the logit that a
    pixel belongs to a patch. ``depth=3`` sees a 7x7 neighbourhood per pixel.

    >>> PatchSegmenter(1, width=4)(torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 1, 8, 8])
    """

    def __init__(self, in_channels: int = 1, width: int = 16, depth: int = 3, mean=(0.0,), std=(1.0,)):
        check_positive_int(in_channels, "in_channels")
        check_positive_int(width, "width")
        depth = check_positive_int(depth, "depth")
        if depth < 2:
            raise ValueError(f"depth must be >= 2 convolutions, got {depth}")
        layers: list[nn.Module] = [_models.Normalize(mean, std)]
        c = in_channels
        for _ in range(depth - 1):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
            c = width
        layers.append(nn.Conv2d(c, 1, 3, padding=1))
        super().__init__(*layers)


def build_segmenter(arch=None, dataset: str | None = None, *, width: int | None = None, seed: int | None = 0,
                    depth: int = 3) -> PatchSegmenter:
    """A fresh seeded :class:`PatchSegmenter` for ``dataset`` (its channels and normalization).

    The signature is that of :func:`robustlab.models.build` (``arch`` is ignored), so
    :func:`robustlab.zoo.profile_model` can use it as ``build``; ``width`` defaults to 16.
    """
    meta = _data.info(dataset)
    if seed is not None:
        torch.manual_seed(check_seed(seed))
    return PatchSegmenter(meta.shape[0], width=16 if width is None else width, depth=depth, mean=meta.mean,
                          std=meta.std)


@torch.no_grad()
def segment(segmenter: nn.Module, x: torch.Tensor, *, threshold: float = 0.5) -> torch.Tensor:
    """The raw mask :math:`M`: bool (B, 1, H, W), ``sigmoid(segmenter(x)) > threshold``, in eval mode."""
    check_model(segmenter, "segmenter")
    check_images(x, "x")
    threshold = check_probability(threshold, "threshold")
    with _models.eval_mode(segmenter):
        logits = segmenter(_models.to_model(segmenter, x))
    _check_logit_map(logits, x)
    return _models.to_input(x, torch.sigmoid(logits) > threshold)


def _check_logit_map(logits, x):
    if logits.dim() != 4 or logits.shape[1] != 1 or logits.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"segmenter must map (B, C, H, W) to per-pixel logits (B, 1, H, W), got "
                         f"{tuple(logits.shape)} for input {tuple(x.shape)}")


# --------------------------------------------------------------------------- the defense


class Detection(NamedTuple):
    """What the SAC defense did for each image of a batch (see :func:`defend`).

    ``prediction`` int64 (B,): the classifier on the masked image; ``detected`` bool (B,):
    the completed mask is not empty (the image is flagged as patched); ``raw_mask`` and
    ``completed_mask`` bool (B, 1, H, W); ``level`` int64 (B,) of the completion (-1: none);
    ``masked`` (B, C, H, W): the image the classifier saw.
    """

    prediction: torch.Tensor
    detected: torch.Tensor
    raw_mask: torch.Tensor
    completed_mask: torch.Tensor
    level: torch.Tensor
    masked: torch.Tensor


def _completion_settings(x, side, gamma, decay, levels, threshold):
    h, w = x.shape[-2:]
    sizes = _check_sizes(default_side() if side is None else side, h, w, "side")
    gamma, decay, levels = _check_completion_args(gamma, decay, levels)
    threshold = check_probability(threshold, "threshold")
    return sizes, gamma, decay, levels, threshold


@torch.no_grad()
def defend(segmenter: nn.Module, classifier: nn.Module, x: torch.Tensor, *, side=None, gamma: float = DEFAULT_GAMMA,
           decay: float = DEFAULT_DECAY, levels: int = DEFAULT_LEVELS, threshold: float = 0.5,
           union: bool = False, batch_size: int = 1024) -> Detection:
    r"""Segment, complete, erase, classify: the SAC prediction of a batch.

    :math:`M = [\sigma(x) > \text{threshold}]`, :math:`C = ` :func:`complete_squares` ``(M, side)``
    (with ``union=True``, :math:`C \cup M`, the code's option), and the prediction is
    ``classifier(x * (1 - C)).argmax(1)``. If :math:`C` covers the true patch the masked
    image equals the clean image under the same mask (the module's guarantee, conditional
    on the segmenter).

    Parameters
    ----------
    segmenter, classifier : torch.nn.Module
        Per-pixel patch logits (B, 1, H, W), and class logits, from inputs in [0, 1]; both
        are run in eval mode (restored afterwards), each on its own device.
    x : torch.Tensor
        Images (B, C, H, W) in [0, 1].
    side : int or sequence of int, optional
        Candidate patch sides (default :func:`default_side`).
    gamma, decay, levels : float, float, int
        The completion's budgets (see :func:`complete_squares`).
    threshold : float
        Probability threshold of the raw mask.
    union : bool
        Also erase the raw mask's pixels outside the completed squares.
    batch_size : int
        Images per forward pass (results do not depend on it).

    Returns
    -------
    Detection

    Examples
    --------
    >>> import robustlab as rl
    >>> seg, clf = build_segmenter(dataset="digits", width=2), rl.models.build("mlp", "digits", width=1)
    >>> out = defend(seg, clf, torch.rand(3, 1, 8, 8), side=3)
    >>> out.prediction.shape, out.completed_mask.shape
    (torch.Size([3]), torch.Size([3, 1, 8, 8]))
    """
    check_model(segmenter, "segmenter")
    check_model(classifier, "classifier")
    check_images(x, "x")
    if x.dim() != 4:
        raise ValueError(f"x must be images of shape (B, C, H, W), got shape {tuple(x.shape)}")
    sizes, gamma, decay, levels, threshold = _completion_settings(x, side, gamma, decay, levels, threshold)
    if not isinstance(union, bool):
        raise TypeError(f"union must be True or False, got {type(union).__name__}")
    check_positive_int(batch_size, "batch_size")
    parts = []
    with _models.eval_mode(classifier):
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size]
            raw = segment(segmenter, xb, threshold=threshold)
            comp = complete_squares(raw, sizes, gamma=gamma, decay=decay, levels=levels)
            cmask = comp.mask | raw if union else comp.mask
            masked = _masked(xb, cmask)
            pred = _models.to_input(xb, classifier(_models.to_model(classifier, masked)).argmax(1))
            parts.append((pred, cmask.flatten(1).any(1), raw, cmask, comp.level, masked))
    return Detection(*(torch.cat(p) for p in zip(*parts)))


# --------------------------------------------------------------------------- attacks


class PatchedBatch(NamedTuple):
    """Patched images and where their patches are: ``x`` (B, C, H, W), ``rows``/``cols`` int64 (B,)
    top-left corners, ``patch_mask`` bool (B, 1, H, W)."""

    x: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    patch_mask: torch.Tensor


def _corners(n, side, h, w, gen):
    rows = torch.randint(0, h - side + 1, (n,), generator=gen)
    cols = torch.randint(0, w - side + 1, (n,), generator=gen)
    return rows, cols


def _straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Forward ``hard``, backward the gradient of ``soft`` (BPDA through the threshold and the completion)."""
    return hard.to(soft.dtype) + soft - soft.detach()


def _check_attack_inputs(classifier, x, y) -> torch.Tensor:
    """The checks both patch attacks make; returns the labels as a checked tensor."""
    check_model(classifier, "classifier")
    check_images(x, "x")
    if x.dim() != 4:
        raise ValueError(f"x must be images of shape (B, C, H, W), got shape {tuple(x.shape)}")
    return check_labels(y, "y", batch_size=x.shape[0])


def adaptive_patch(segmenter: nn.Module, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, *, side: int,
                   steps: int = 50, step_size: float = 0.1, tries: int = 4, hide_weight: float = 1.0,
                   gamma: float = DEFAULT_GAMMA, decay: float = DEFAULT_DECAY, levels: int = DEFAULT_LEVELS,
                   threshold: float = 0.5, seed: int = 0, progress: bool | None = None) -> PatchedBatch:
    r"""An adaptive (BPDA) patch attack on the whole SAC pipeline.

    Each try puts one ``side`` x ``side`` patch at a random corner per image and runs
    ``steps`` signed-gradient ascent steps on its content (clipped to [0, 1]) of

    .. math:: J = \mathrm{CE}\big(f(x' \odot (1 - \tilde C)), y\big) - \lambda\,
              \frac{1}{s^2}\sum_{P} \mathrm{sigmoid}(\sigma(x')),

    where :math:`\tilde C` is the hard completed mask in the forward pass and the soft mask
    :math:`\mathrm{sigmoid}(\sigma(x'))` in the backward pass (backward pass differentiable
    approximation, Athalye et al., 2018, through the threshold and the completion, as the
    paper's adaptive attack), and the second term (``hide_weight`` :math:`\lambda`) pushes
    the segmenter to miss the patch. Per image the best iterate over all steps and tries is
    kept: one the *defended* pipeline (:func:`defend`) misclassifies first, then the highest
    :math:`J`.

    Returns
    -------
    PatchedBatch
        The patched images (equal to ``x`` outside one square each) and their squares.
    """
    check_model(segmenter, "segmenter")
    y = _check_attack_inputs(classifier, x, y)
    n, _, h, w = x.shape
    sizes, gamma, decay, levels, threshold = _completion_settings(x, side, gamma, decay, levels, threshold)
    if len(sizes) != 1:
        raise ValueError("side must be one patch side for the attack")
    s = sizes[0]
    steps = check_positive_int(steps, "steps", allow_zero=True)
    check_positive(step_size, "step_size")
    tries = check_positive_int(tries, "tries")
    if hide_weight < 0:
        raise ValueError(f"hide_weight must be >= 0, got {hide_weight}")
    gen = torch.Generator().manual_seed(check_seed(seed))
    device = _models.device_of(classifier)
    xd, yd = x.to(device, _models.dtype_of(classifier)), y.to(device)
    best_x, best_rows, best_cols = xd.clone(), torch.zeros(n, dtype=torch.int64), torch.zeros(n, dtype=torch.int64)
    best_success = torch.zeros(n, dtype=torch.bool)
    best_obj = torch.full((n,), -math.inf, dtype=torch.float64)
    settings = dict(side=s, gamma=gamma, decay=decay, levels=levels, threshold=threshold)

    def consider(x_adv, obj, rows, cols):
        pred = defend(segmenter, classifier, x_adv, **settings).prediction.cpu()
        success = pred != y.cpu()
        obj = obj.detach().double().cpu()
        better = (success & ~best_success) | ((success == best_success) & (obj > best_obj))
        best_x[better.to(device)] = x_adv[better.to(device)]
        best_rows[better], best_cols[better] = rows[better], cols[better]
        best_obj[better] = obj[better]
        best_success.copy_(best_success | success)

    bar = config.progress_bar(tries * (steps + 1), "SAC adaptive patch attack", config.progress_enabled(progress),
                              unit="step")
    try:
        with _models.eval_mode(segmenter), _models.eval_mode(classifier):
            for _ in range(tries):
                rows, cols = _corners(n, s, h, w, gen)
                pmask = square_mask(rows, cols, s, (h, w)).to(device)
                content = torch.rand(xd.shape, generator=gen).to(device, xd.dtype)
                x_adv = torch.where(pmask, content, xd)
                for step in range(steps + 1):
                    x_adv = x_adv.detach().requires_grad_(True)
                    with torch.enable_grad():
                        soft = torch.sigmoid(segmenter(_models.to_model(segmenter, x_adv)).to(device, xd.dtype))
                        raw = soft.detach() > threshold
                        hard = complete_squares(raw, s, gamma=gamma, decay=decay, levels=levels).mask
                        kept = 1.0 - _straight_through(hard, soft)
                        logits = classifier(x_adv * kept)
                        hidden = (soft * pmask).flatten(1).sum(1) / (s * s)
                        obj = F.cross_entropy(logits, yd, reduction="none") - hide_weight * hidden
                        (grad,) = torch.autograd.grad(obj.sum(), x_adv)
                    consider(x_adv.detach(), obj, rows, cols)
                    if step < steps:
                        x_adv = torch.where(pmask, (x_adv.detach() + step_size * grad.sign()).clamp(0.0, 1.0), xd)
                    bar.update(1)
    finally:
        bar.close()
    return PatchedBatch(_models.to_input(x, best_x), _models.to_input(x, best_rows), _models.to_input(x, best_cols),
                        _models.to_input(x, square_mask(best_rows, best_cols, s, (h, w))))


def transfer_patch(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, *, side: int, steps: int = 50,
                   step_size: float = 0.1, seed: int = 0, progress: bool | None = None) -> PatchedBatch:
    """A non-adaptive patch: :func:`robustlab.attacks.patch` on the classifier alone, at a random corner per image.

    The images are grouped by their (seeded, random) corner and each group is attacked at
    its fixed location, so the square of every patch is known. The classifier is the
    undefended one: these patches test the defense against attacks that ignore it.
    """
    from .attacks import patch as _patch_attack

    y = _check_attack_inputs(classifier, x, y)
    n, _, h, w = x.shape
    (s,) = _check_sizes(side, h, w, "side")
    gen = torch.Generator().manual_seed(check_seed(seed))
    rows, cols = _corners(n, s, h, w, gen)
    out = x.clone()
    keys = rows * w + cols
    groups = torch.unique(keys)
    bar = config.progress_bar(len(groups), "patch attack by location", config.progress_enabled(progress),
                              unit="location")
    try:
        for key in groups.tolist():
            idx = (keys == key).nonzero().flatten()
            r, c = divmod(int(key), w)
            out[idx.to(x.device)] = _patch_attack(classifier, x[idx.to(x.device)], y[idx.to(y.device)], eps=s,
                                                  steps=steps, step_size=step_size, locations=(r, c), seed=seed)
            bar.update(1)
    finally:
        bar.close()
    return PatchedBatch(out, _models.to_input(x, rows), _models.to_input(x, cols),
                        _models.to_input(x, square_mask(rows, cols, s, (h, w))))


# --------------------------------------------------------------------------- training


def _random_contents(shape, kind: str, device, dtype) -> torch.Tensor:
    """Patch contents from torch's global generator: uniform noise, binary (0/1) noise, or half of each."""
    uniform = torch.rand(shape, device=device, dtype=dtype)
    binary = (torch.rand(shape, device=device, dtype=dtype) < 0.5).to(dtype)
    if kind == "uniform":
        return uniform
    if kind == "binary":
        return binary
    pick = torch.rand(shape[0], device=device) < 0.5
    return torch.where(pick.view(-1, *([1] * (len(shape) - 1))), binary, uniform)


@dataclasses.dataclass(frozen=True)
class PatchMaskLoss:
    r"""Training of the patch segmenter: per-pixel binary cross-entropy on randomly pasted patches.

    Per example, with probability ``1 - clean_fraction`` a ``side`` x ``side`` patch is pasted at
    a uniformly random corner, its content drawn by ``content`` (``"uniform"`` noise,
    ``"binary"`` 0/1 noise -- ink-like, as signed-gradient patches on digits mostly are --
    or ``"mixed"``, half of each); the target is the patch's square (all zeros for a
    clean example). With ``steps > 0`` the content is first made adversarial *to the
    segmenter* by that many signed-gradient steps raising its loss (the paper's self
    adversarial training of the segmenter). Randomness comes from torch's global generator,
    which :func:`robustlab.train.fit` seeds.

    The call returns ``(loss, scores)``: ``scores`` is not a class prediction but a (B, K)
    table whose argmax equals ``y`` exactly where the thresholded mask (at 0.5) equals the
    target, so the training accuracy that :func:`robustlab.train.fit` records is the rate of
    exactly segmented examples.

    Examples
    --------
    >>> seg = build_segmenter(dataset="digits", width=2)
    >>> loss, scores = PatchMaskLoss(3)(seg, torch.zeros(4, 1, 8, 8), torch.arange(4))
    >>> loss.shape, scores.shape
    (torch.Size([]), torch.Size([4, 5]))
    """

    side: int
    content: str = "mixed"
    clean_fraction: float = 0.25
    steps: int = 0
    step_size: float = 0.25

    def __post_init__(self):
        check_positive_int(self.side, "side")
        check_choice(self.content, "content", CONTENTS)
        check_interval(self.clean_fraction, "clean_fraction", 0.0, 1.0, high_open=True)
        check_positive_int(self.steps, "steps", allow_zero=True)
        check_positive(self.step_size, "step_size")

    def patched(self, x: torch.Tensor):
        """One draw of ``(patched images, target masks)`` for the batch ``x`` (B, C, H, W)."""
        n, _, h, w = x.shape
        if self.side > min(h, w):
            raise ValueError(f"side {self.side} is larger than the {h}x{w} images")
        rows = torch.randint(0, h - self.side + 1, (n,), device=x.device)
        cols = torch.randint(0, w - self.side + 1, (n,), device=x.device)
        target = square_mask(rows, cols, self.side, (h, w))
        target &= (torch.rand(n, device=x.device) >= self.clean_fraction).view(-1, 1, 1, 1)
        return torch.where(target, _random_contents(x.shape, self.content, x.device, x.dtype), x), target

    def __call__(self, model, x, y):
        xp, target = self.patched(x)
        t = target.to(x.dtype)
        for _ in range(self.steps):
            xp = xp.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(F.binary_cross_entropy_with_logits(model(xp), t), xp)
            xp = torch.where(target, (xp + self.step_size * g.sign()).clamp(0.0, 1.0), x).detach()
        logits = model(xp)
        loss = F.binary_cross_entropy_with_logits(logits, t)
        exact = ((logits.detach() > 0) == target).flatten(1).all(1)
        scores = F.one_hot(torch.where(exact, y, y + 1), int(y.max()) + 2).to(x.dtype)
        return loss, scores


@dataclasses.dataclass(frozen=True)
class MaskedTrainingLoss:
    """Training of the classifier behind SAC: cross-entropy on images with a random square erased.

    Per example, with probability ``p`` a ``side`` x ``side`` square at a uniformly random
    corner is set to 0 (what the defense does to a detected patch), so the classifier
    learns to read partly erased digits. Randomness: torch's global generator (seeded by
    :func:`robustlab.train.fit`).

    >>> import robustlab as rl
    >>> loss, logits = MaskedTrainingLoss(3)(rl.models.build("mlp", "digits", width=1), torch.rand(4, 1, 8, 8),
    ...                                      torch.arange(4))
    >>> logits.shape
    torch.Size([4, 10])
    """

    side: int
    p: float = 0.5

    def __post_init__(self):
        check_positive_int(self.side, "side")
        check_interval(self.p, "p", 0.0, 1.0)

    def __call__(self, model, x, y):
        n, _, h, w = x.shape
        rows = torch.randint(0, h - self.side + 1, (n,), device=x.device)
        cols = torch.randint(0, w - self.side + 1, (n,), device=x.device)
        erase = square_mask(rows, cols, self.side, (h, w)) & (torch.rand(n, device=x.device) < self.p).view(-1, 1, 1, 1)
        logits = model(_masked(x, erase))
        return F.cross_entropy(logits, y), logits


def segmenter_model(side: int | None = None, *, content: str = "mixed", clean_fraction: float = 0.25, steps: int = 0,
                    dataset: str | None = None, width: int = 32, depth: int = 4, epochs: int | None = None,
                    seed: int = 0, device=None, progress: bool | None = None, cache: bool = True):
    """The patch segmenter trained with :class:`PatchMaskLoss` on the profile's data (cached).

    A :class:`PatchSegmenter` of ``width`` and ``depth`` trained by :func:`robustlab.train.fit`
    at the profile's learning rate, batch size and epochs; made by
    :func:`robustlab.zoo.profile_model`. Every argument has a default, so
    ``segmenter_model()`` is a zoo recipe.

    Returns
    -------
    robustlab.train.Trained
        ``(segmenter, history)``, in eval mode; ``history.train_acc`` is the rate of exactly
        segmented training examples.
    """
    from .zoo import loss_trained_model

    side = default_side(dataset) if side is None else side
    loss = PatchMaskLoss(side, content=content, clean_fraction=clean_fraction, steps=steps)

    def build(arch, ds, width, seed):
        return build_segmenter(arch, ds, width=width, seed=seed, depth=depth)

    return loss_trained_model(loss, desc=f"patch segmenter (side {side})", dataset=dataset, width=width,
                              epochs=epochs, seed=seed, device=device, progress=progress, cache=cache, build=build)


def classifier_model(side: int | None = None, *, p: float = 0.5, dataset: str | None = None, arch: str | None = None,
                     width: int | None = None, epochs: int | None = None, seed: int = 0, device=None,
                     progress: bool | None = None, cache: bool = True):
    """The classifier behind SAC: the profile's model trained with :class:`MaskedTrainingLoss` (cached).

    Returns
    -------
    robustlab.train.Trained
        ``(model, history)``, the model in eval mode.
    """
    from .zoo import loss_trained_model

    side = default_side(dataset) if side is None else side
    return loss_trained_model(MaskedTrainingLoss(side, p=p), desc=f"classifier on masked images (side {side})",
                              dataset=dataset, arch=arch, width=width, epochs=epochs, seed=seed, device=device,
                              progress=progress, cache=cache, evaluate=True)


# --------------------------------------------------------------------------- evaluation


class SACEvaluation(NamedTuple):
    """The numbers of :func:`evaluate` (fractions of the ``n`` images).

    ``clean_accuracy``: the defended pipeline on clean images; ``undefended_accuracy``: the
    classifier alone on clean images; ``undefended_robust_accuracy``: the classifier alone
    under the transfer patch; ``transfer_robust_accuracy``: the defense under the same
    patches; ``robust_accuracy``: the defense under the adaptive attack; ``coverage``: of
    the adaptively attacked images, the fraction whose completed mask covers the patch
    square; ``transfer_coverage``: the same for the transfer patches; ``consistent``: of the
    covered images (both attacks), the fraction whose prediction equals the classifier's on
    the clean image under the same completed mask (the guarantee's implication: must be 1);
    ``false_alarm``: clean images flagged as patched; ``detection_rate``: adaptively
    attacked images flagged; ``seconds_per_image``: the defense's time per clean image
    (two forward passes and the completion); ``side`` and ``n``.
    """

    clean_accuracy: float
    undefended_accuracy: float
    undefended_robust_accuracy: float
    transfer_robust_accuracy: float
    robust_accuracy: float
    coverage: float
    transfer_coverage: float
    consistent: float
    false_alarm: float
    detection_rate: float
    seconds_per_image: float
    side: int
    n: int


def evaluate(segmenter: nn.Module, classifier: nn.Module, data, *, side: int | None = None, n: int | None = None,
             steps: int = 50, step_size: float = 0.1, tries: int = 4, gamma: float = DEFAULT_GAMMA,
             decay: float = DEFAULT_DECAY, levels: int = DEFAULT_LEVELS, threshold: float = 0.5, seed: int = 0,
             progress: bool | None = None) -> SACEvaluation:
    """Clean accuracy, robust accuracy against patch attacks and the coverage rate of SAC on ``data``.

    The first ``n`` images of ``data = (x, y)`` (all by default) are classified clean by the
    classifier alone and by :func:`defend`; attacked with :func:`transfer_patch` (the
    classifier alone) and :func:`adaptive_patch` (the whole pipeline, BPDA, ``tries`` random
    corners of ``steps`` steps); for every attacked image the completed mask is compared with
    the known patch square (``coverage``), and on every covered image the prediction is
    checked against the classifier on the clean image under the same mask (``consistent``).

    Returns
    -------
    SACEvaluation
    """
    from ._validate import check_xy
    from .train import predict

    check_model(segmenter, "segmenter")
    check_model(classifier, "classifier")
    x, y = check_xy(data, "data")
    if x.dim() != 4:
        raise ValueError(f"data.x must be images of shape (N, C, H, W), got shape {tuple(x.shape)}")
    if n is not None:
        n = check_positive_int(n, "n")
        x, y = x[:n], y[:n]
    side = default_side() if side is None else side
    sizes, gamma, decay, levels, threshold = _completion_settings(x, side, gamma, decay, levels, threshold)
    if len(sizes) != 1:
        raise ValueError("side must be one patch side for the evaluation")
    s = sizes[0]
    settings = dict(side=s, gamma=gamma, decay=decay, levels=levels, threshold=threshold)
    y_cpu = y.cpu()

    start = time.perf_counter()
    clean = defend(segmenter, classifier, x, **settings)
    seconds = (time.perf_counter() - start) / x.shape[0]
    plain = predict(classifier, x).cpu()

    transfer = transfer_patch(classifier, x, y, side=s, steps=steps, step_size=step_size, seed=seed,
                              progress=progress)
    on_transfer = defend(segmenter, classifier, transfer.x, **settings)
    adaptive = adaptive_patch(segmenter, classifier, x, y, side=s, steps=steps, step_size=step_size, tries=tries,
                              seed=seed, progress=progress, **{k: v for k, v in settings.items() if k != "side"})
    on_adaptive = defend(segmenter, classifier, adaptive.x, **settings)

    checks = []
    for attacked, out in ((transfer, on_transfer), (adaptive, on_adaptive)):
        cov = covers(out.completed_mask, attacked.patch_mask.to(out.completed_mask.device)).cpu()
        clean_masked = predict(classifier, _masked(x, out.completed_mask)).cpu()
        checks.append((cov, clean_masked == out.prediction.cpu()))
    covered = torch.cat([c for c, _ in checks])
    agree = torch.cat([a for _, a in checks])

    def frac(t):
        return float(t.double().mean()) if t.numel() else math.nan

    return SACEvaluation(
        clean_accuracy=frac(clean.prediction.cpu() == y_cpu),
        undefended_accuracy=frac(plain == y_cpu),
        undefended_robust_accuracy=frac(predict(classifier, transfer.x).cpu() == y_cpu),
        transfer_robust_accuracy=frac(on_transfer.prediction.cpu() == y_cpu),
        robust_accuracy=frac(on_adaptive.prediction.cpu() == y_cpu),
        coverage=frac(checks[1][0]),
        transfer_coverage=frac(checks[0][0]),
        consistent=frac(agree[covered]),
        false_alarm=frac(clean.detected.cpu()),
        detection_rate=frac(on_adaptive.detected.cpu()),
        seconds_per_image=seconds,
        side=s,
        n=int(x.shape[0]),
    )
