r"""Closed-form oracle models: classifiers whose robustness questions have exact answers.

Each oracle is a plain ``torch.nn.Module`` mapping inputs in [0, 1] to logits, like every
model of the course, so attacks, certifiers and training loops take it as they are. Each
also knows its exact answers, computed in float64 from the closed form, so a test, a lab or
a chapter can check an attack (it can never beat the exact distance), a certificate (it may
never claim more than the exact distance) or a Monte Carlo estimate (against the exact
smoothed probability) without a second copy of the model.

* :class:`HalfSpace` -- the two-class linear classifier, class 1 iff
  :math:`w^\top x + b > 0`, logits :math:`(0,\ w^\top x + b)`. Exact distance to the
  boundary in every norm, :math:`|w^\top x + b| / \lVert w\rVert_{q}` with :math:`q` the dual
  exponent (also inside the box [0, 1]^D), the Gaussian-smoothed class probability
  :math:`\Phi\big((w^\top x + b)/(\sigma\lVert w\rVert_2)\big)`, and the number of pixels
  that must change.
* :class:`OnePixel` -- class 1 iff one pixel exceeds a threshold (a half-space with
  :math:`w = e_i`).
* :class:`Region` -- class 1 iff the mean of one rectangular region (a patch) exceeds a
  threshold (a half-space whose weights are uniform on the region).
* :class:`Constant` -- always the same class: no perturbation changes it.

Distances are per sample, shape (B,), float64; ``math.inf`` where no perturbation (in the
box, for ``box=True``) reaches the boundary.

>>> import torch
>>> f = HalfSpace(torch.tensor([3.0, -4.0]), b=0.5)
>>> x = torch.tensor([[0.5, 0.25]])
>>> f.margin(x)
tensor([1.], dtype=torch.float64)
>>> f.label(x)
tensor([1])
>>> [round(float(f.distance(x, p)), 4) for p in ("l2", "linf", "l1")]
[0.2, 0.1429, 0.25]
>>> round(float(f.smoothed_probability(x, sigma=0.2)), 4)  # Phi(1 / (0.2 * 5)) = Phi(1)
0.8413
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ._validate import check_class_index, check_images, check_positive, check_positive_int, check_real, parse_norm

__all__ = ["HalfSpace", "OnePixel", "Region", "Constant"]


def _phi(t: torch.Tensor) -> torch.Tensor:
    """Standard normal CDF, in float64."""
    return 0.5 * torch.erfc(-t / math.sqrt(2.0))


def _check_sigma(sigma) -> float:
    return float(check_positive(sigma, "sigma"))


class HalfSpace(nn.Module):
    r"""The two-class linear classifier :math:`f(x) = [\,w^\top x + b > 0\,]`.

    The logits are :math:`(0,\ w^\top x + b)` (class 1 exactly where the margin is positive;
    a margin of exactly 0 is class 0, the lower index). Inputs of any shape (B, ...) are
    flattened to (B, D).

    Parameters
    ----------
    w : torch.Tensor
        Weights, D numbers (any shape; flattened), not all zero.
    b : float
        Bias.
    dtype : torch.dtype, optional
        The model's dtype (its logits); the default is ``w``'s floating dtype (float32 for
        integer ``w``). The exact answers are computed in float64 whatever this is.

    The exact answers (methods): :meth:`margin`, :meth:`label`, :meth:`distance`,
    :meth:`smoothed_probability`, :meth:`certified_radius`, :meth:`pixels_to_change`.

    >>> f = HalfSpace(torch.tensor([1.0, 1.0]), b=-1.0)
    >>> f(torch.tensor([[0.75, 0.75]]))
    tensor([[0.0000, 0.5000]], grad_fn=<AddmmBackward0>)
    >>> f.pixels_to_change(torch.tensor([[0.75, 0.75]]))
    tensor([1.], dtype=torch.float64)
    """

    def __init__(self, w: torch.Tensor, b: float = 0.0, *, dtype: torch.dtype | None = None):
        super().__init__()
        if not isinstance(w, torch.Tensor):
            raise TypeError(f"w must be a torch.Tensor of weights, got {type(w).__name__}")
        if w.numel() == 0 or not bool(torch.isfinite(w.double()).all()) or not bool((w != 0).any()):
            raise ValueError("w must hold finite weights, not all zero")
        b = float(check_real(b, "b"))
        if dtype is None:
            dtype = w.dtype if w.is_floating_point() else torch.float32
        w64 = w.detach().reshape(-1).to(torch.float64).cpu()
        self.lin = nn.Linear(w64.numel(), 2).to(dtype)
        with torch.no_grad():
            self.lin.weight.copy_(torch.stack([torch.zeros_like(w64), w64]))
            self.lin.bias.copy_(torch.tensor([0.0, b]))
        # the exact answers' own copy, float64 on the CPU (model.to(...) moves and casts only the layer)
        self.w, self.b = w64, b

    @classmethod
    def from_rows(cls, w0: torch.Tensor, w1: torch.Tensor, b0: float = 0.0, b1: float = 0.0) -> HalfSpace:
        """The two-class linear model with logits :math:`(w_0^\\top x + b_0,\\ w_1^\\top x + b_1)`.

        Its decision is the half-space :math:`w = w_1 - w_0`, :math:`b = b_1 - b_0`, and every
        exact answer is that half-space's; its logits are the two rows as given (a softmax,
        a cross-entropy and a logit margin depend on their difference only).

        >>> f = HalfSpace.from_rows(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
        >>> f.w
        tensor([-1.,  1.], dtype=torch.float64)
        >>> f(torch.tensor([[0.25, 0.5]]))
        tensor([[0.2500, 0.5000]], grad_fn=<AddmmBackward0>)
        """
        for v, name in ((w0, "w0"), (w1, "w1")):
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor of weights, got {type(v).__name__}")
        if w0.numel() != w1.numel():
            raise ValueError(f"w0 and w1 must have the same number of weights, got {w0.numel()} and {w1.numel()}")
        b0, b1 = float(check_real(b0, "b0")), float(check_real(b1, "b1"))
        model = cls(w1.reshape(-1).double() - w0.reshape(-1).double(), b1 - b0,
                    dtype=w0.dtype if w0.is_floating_point() else torch.float32)
        with torch.no_grad():
            model.lin.weight.copy_(torch.stack([w0.reshape(-1), w1.reshape(-1)]))
            model.lin.bias.copy_(torch.tensor([b0, b1]))
        return model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1).to(self.lin.weight.dtype))

    # ------------------------------------------------------------------ exact answers

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        v = x.detach().flatten(1).to(device="cpu", dtype=torch.float64)
        if v.shape[1] != self.w.numel():
            raise ValueError(f"x has {v.shape[1]} values per input, the model reads {self.w.numel()}")
        return v

    def margin(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`w^\top x + b` per input, float64, shape (B,)."""
        return self._flat(x) @ self.w + self.b

    def label(self, x: torch.Tensor) -> torch.Tensor:
        """The class the model gives each input (1 iff the margin is > 0), int64, shape (B,)."""
        return (self.margin(x) > 0).long()

    def distance(self, x: torch.Tensor, norm="l2", *, box: bool = False) -> torch.Tensor:
        r"""The exact distance of each input to the decision boundary, float64, shape (B,).

        In :math:`\mathbb{R}^D` (``box=False``) it is :math:`|w^\top x + b| / \lVert w\rVert_q`
        with :math:`q` the dual exponent of ``norm`` (L2: 2, Linf: 1, L1: inf). With
        ``box=True`` the perturbed point must stay in [0, 1]^D (what an attack may do), which
        can only make it larger; ``math.inf`` where the box does not reach the boundary.
        ``norm="l0"`` is :meth:`pixels_to_change` (always in the box).

        >>> f = HalfSpace(torch.tensor([1.0, 1.0]), b=-1.5)
        >>> x = torch.tensor([[0.9, 0.9]])
        >>> round(float(f.distance(x, "linf")), 4), round(float(f.distance(x, "linf", box=True)), 4)
        (0.15, 0.15)
        >>> round(float(f.distance(x, "l1")), 4), round(float(f.distance(x, "l1", box=True)), 4)
        (0.3, 0.3)
        >>> g = HalfSpace(torch.tensor([1.0, 0.1]), b=-0.5)    # only the first pixel matters much
        >>> x = torch.tensor([[0.55, 0.5]])
        >>> round(float(g.distance(x, "l2")), 4), round(float(g.distance(x, "l2", box=True)), 4)
        (0.0995, 0.0995)
        """
        p = parse_norm(norm, "norm")
        if p == 0:
            return self.pixels_to_change(x)
        v = self._flat(x)
        m = v @ self.w + self.b
        if not box:
            q = {math.inf: 1.0, 2.0: 2.0, 1.0: math.inf}[p]
            return m.abs() / torch.linalg.vector_norm(self.w, ord=q)
        return torch.tensor([_box_distance(self.w.numpy(), row.numpy(), float(mi), p) for row, mi in zip(v, m)],
                            dtype=torch.float64)

    def pixels_to_change(self, x: torch.Tensor) -> torch.Tensor:
        r"""The fewest input values that must change (each within [0, 1]) for the margin to reach 0.

        Each value :math:`x_i` can move the margin towards the boundary by at most
        :math:`|w_i|` times its room in the box (:math:`x_i` if that lowers the margin by going
        to 0, :math:`1 - x_i` if by going to 1); the answer is the smallest number of the largest
        of these that add up to :math:`|w^\top x + b|`, float64 (``math.inf`` if all of them do
        not). An input on the boundary needs 0.
        """
        v = self._flat(x)
        m = v @ self.w + self.b
        return torch.tensor([_box_distance(self.w.numpy(), row.numpy(), float(mi), 0.0) for row, mi in zip(v, m)],
                            dtype=torch.float64)

    def smoothed_probability(self, x: torch.Tensor, sigma: float, c: int = 1) -> torch.Tensor:
        r"""The exact probability that :math:`f(x + \delta)` is class ``c``, :math:`\delta \sim \mathcal N(0, \sigma^2 I)`.

        :math:`w^\top(x + \delta) + b \sim \mathcal N(w^\top x + b,\ \sigma^2\lVert w\rVert_2^2)`,
        so class 1 has probability :math:`\Phi\big((w^\top x + b)/(\sigma\lVert w\rVert_2)\big)`
        and class 0 the rest (noise in pixel space, not clamped: what
        :mod:`robustlab.smoothing.gaussian` samples). Float64, shape (B,).
        """
        sigma = _check_sigma(sigma)
        c = check_class_index(c, "c", 2)
        p1 = _phi(self.margin(x) / (sigma * float(self.w.norm())))
        return p1 if c == 1 else 1 - p1

    def certified_radius(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        r"""The exact certified L2 radius of the Gaussian-smoothed classifier, :math:`\sigma\,\Phi^{-1}(p_A)`.

        For a half-space the smoothed classifier is the classifier itself and this radius is
        its L2 distance to the boundary, :math:`|w^\top x + b| / \lVert w\rVert_2`, for every
        sigma: the largest radius any sound certificate may claim. Float64, shape (B,).
        """
        _check_sigma(sigma)
        return self.distance(x, "l2")


def _box_distance(w: np.ndarray, x: np.ndarray, m: float, p: float) -> float:
    """The smallest ||delta||_p with x + delta in [0, 1]^D and w.(x + delta) + b = 0 (m = w.x + b)."""
    if m == 0:
        return 0.0
    # moving value i by t in its useful direction lowers |margin| by a_i * t, for t up to room r_i
    a = np.abs(w)
    toward_zero = (w > 0) == (m > 0)  # lowering x_i lowers the margin where w_i > 0
    r = np.where(toward_zero, x, 1.0 - x)
    useful = (a > 0) & (r > 0)
    a, r = a[useful], r[useful]
    need = abs(m)
    total = float((a * r).sum())
    if total < need * (1 - 1e-12):
        return math.inf
    if p == 0:  # the fewest values: the largest capacities first
        cum = np.cumsum(np.sort(a * r)[::-1])
        return float(np.searchsorted(cum, need * (1 - 1e-12)) + 1)
    if p == 1:  # fractional knapsack: the largest |w_i| first, each up to its room
        order = np.argsort(-a)
        a, r = a[order], r[order]
        cap = np.cumsum(a * r)
        j = int(np.searchsorted(cap, need * (1 - 1e-12)))
        before = cap[j - 1] if j > 0 else 0.0
        return float(r[:j].sum() + (need - before) / a[j])
    # Linf: delta_i = min(t, r_i); L2: delta_i = min(lam * a_i, r_i) (KKT). Both are min(lam * c_i, r_i).
    c = np.ones_like(a) if p == math.inf else a
    brk = r / c
    order = np.argsort(brk)
    a, r, c, brk = a[order], r[order], c[order], brk[order]
    # margin reduction at lam = brk_j: sum_{i<=j} a_i r_i + brk_j * sum_{i>j} a_i c_i
    full = np.cumsum(a * r)
    rest = np.concatenate([np.cumsum((a * c)[::-1])[::-1][1:], [0.0]])
    reduction = full + brk * rest
    j = int(np.searchsorted(reduction, need * (1 - 1e-12)))
    j = min(j, len(a) - 1)
    saturated = full[j - 1] if j > 0 else 0.0
    slope = float((a * c)[j:].sum())
    lam = (need - saturated) / slope
    delta = np.minimum(lam * c, r)
    if p == math.inf:
        return float(delta.max())
    return float(np.sqrt((delta ** 2).sum()))


class OnePixel(HalfSpace):
    r"""Class 1 iff input value ``index`` (of the flattened input) exceeds ``threshold``.

    The half-space :math:`w = \text{gain}\cdot e_i`, :math:`b = -\text{gain}\cdot t`: the logits are
    :math:`(0,\ \text{gain}\,(x_i - t))`. Its distance to the boundary is :math:`|x_i - t|` in
    every Lp norm; one pixel must change (none on the boundary); Gaussian smoothing gives
    class 1 with probability :math:`\Phi((x_i - t)/\sigma)`.

    >>> f = OnePixel(3, n_inputs=4, threshold=0.5)
    >>> x = torch.tensor([[0.0, 0.0, 0.0, 0.8]])
    >>> f.label(x), f.distance(x, "linf"), f.pixels_to_change(x)
    (tensor([1]), tensor([0.3000], dtype=torch.float64), tensor([1.], dtype=torch.float64))
    """

    def __init__(self, index: int, n_inputs: int, *, threshold: float = 0.5, gain: float = 1.0,
                 dtype: torch.dtype = torch.float32):
        n_inputs = check_positive_int(n_inputs, "n_inputs")
        index = check_positive_int(index, "index", allow_zero=True)
        if index >= n_inputs:
            raise ValueError(f"index must be < n_inputs ({n_inputs}), got {index}")
        threshold = float(check_real(threshold, "threshold"))
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1) (pixel values), got {threshold}")
        gain = float(check_positive(gain, "gain"))
        w = torch.zeros(n_inputs, dtype=torch.float64)
        w[index] = gain
        super().__init__(w, -gain * threshold, dtype=dtype)
        self.index, self.threshold = index, threshold


class Region(HalfSpace):
    r"""Class 1 iff the mean of one rectangular region of the image exceeds ``threshold``.

    Inputs have shape (B, C, H, W) = (B,) + ``shape``; the region is rows
    ``top .. top + height - 1`` and columns ``left .. left + width - 1`` of every channel (a
    patch). It is the half-space with weights ``gain / n`` on the region's ``n`` values and 0
    elsewhere, bias ``-gain * threshold``: only a perturbation that touches the region can
    change it, and :meth:`pixels_to_change` says how many of its values must change.

    >>> f = Region((1, 4, 4), top=1, left=1, height=2, width=2, threshold=0.5)
    >>> x = torch.zeros(1, 1, 4, 4)
    >>> f.label(x), f.pixels_to_change(x)      # mean 0: two of the four values must go to 1
    (tensor([0]), tensor([2.], dtype=torch.float64))
    >>> f.distance(x, "linf")
    tensor([0.5000], dtype=torch.float64)
    """

    def __init__(self, shape, *, top: int, left: int, height: int, width: int, threshold: float = 0.5,
                 gain: float = 1.0, dtype: torch.dtype = torch.float32):
        if not (isinstance(shape, (tuple, list, torch.Size)) and len(shape) == 3):
            raise ValueError(f"shape must be an input shape (C, H, W), got {shape!r}")
        C, H, W = (check_positive_int(s, "shape") for s in shape)
        top, left = check_positive_int(top, "top", allow_zero=True), check_positive_int(left, "left", allow_zero=True)
        height, width = check_positive_int(height, "height"), check_positive_int(width, "width")
        if top + height > H or left + width > W:
            raise ValueError(f"the region rows {top}..{top + height - 1}, columns {left}..{left + width - 1} "
                             f"leave the {H}x{W} image")
        threshold = float(check_real(threshold, "threshold"))
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1) (pixel values), got {threshold}")
        gain = float(check_positive(gain, "gain"))
        mask = torch.zeros(C, H, W, dtype=torch.float64)
        mask[:, top:top + height, left:left + width] = 1.0
        super().__init__(gain * mask.reshape(-1) / mask.sum(), -gain * threshold, dtype=dtype)
        self.shape = (C, H, W)
        self.top, self.left, self.height, self.width, self.threshold = top, left, height, width, threshold

    def region_mean(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of each input's region, float64, shape (B,)."""
        check_images(x, "x", min_dim=4)
        return x.detach().double()[:, :, self.top:self.top + self.height, self.left:self.left + self.width] \
            .flatten(1).mean(1).cpu()


class Constant(nn.Module):
    """Always class ``c`` of ``n_classes``: logits ``scale * one_hot(c)``, whatever the input.

    No perturbation changes it (every distance is ``math.inf``), and its Gaussian-smoothed
    classifier gives class ``c`` with probability 1 at every sigma. It has one parameter (the
    scale, 1), so the device and dtype of the model are defined.

    >>> f = Constant(3, n_classes=10)
    >>> f(torch.rand(2, 1, 8, 8)).argmax(1)
    tensor([3, 3])
    >>> f.distance(torch.rand(2, 5), "l2")
    tensor([inf, inf], dtype=torch.float64)
    """

    def __init__(self, c: int, n_classes: int = 10):
        super().__init__()
        n_classes = check_positive_int(n_classes, "n_classes")
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.c, self.n_classes = check_class_index(c, "c", n_classes), n_classes
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hot = torch.zeros(x.shape[0], self.n_classes, dtype=self.scale.dtype, device=self.scale.device)
        hot[:, self.c] = 1.0
        return hot * self.scale

    def label(self, x: torch.Tensor) -> torch.Tensor:
        """Class ``c`` for every input, int64, shape (B,)."""
        return torch.full((x.shape[0],), self.c, dtype=torch.int64)

    def distance(self, x: torch.Tensor, norm="l2", *, box: bool = False) -> torch.Tensor:
        """``math.inf`` for every input and every norm: there is no decision boundary."""
        parse_norm(norm, "norm")
        return torch.full((x.shape[0],), math.inf, dtype=torch.float64)

    def pixels_to_change(self, x: torch.Tensor) -> torch.Tensor:
        """``math.inf``: no number of changed pixels changes the class."""
        return self.distance(x, "l0")

    def smoothed_probability(self, x: torch.Tensor, sigma: float, c: int | None = None) -> torch.Tensor:
        """The probability of class ``c`` (default: the constant's class) under noise: 1 or 0."""
        _check_sigma(sigma)
        c = self.c if c is None else check_class_index(c, "c", self.n_classes)
        return torch.full((x.shape[0],), 1.0 if c == self.c else 0.0, dtype=torch.float64)
