r"""The delta-ball demo of chapter 3: standard and adversarial training of a linear classifier.

On linearly separable points in the plane, draw the ball :math:`\{x + \delta :
\|\delta\|_p \le \varepsilon\}` around every training point. Wherever a ball crosses the
decision boundary, that point has an adversarial example. Adversarial training (Madry
et al., 2018) asks for a boundary that no ball crosses.

For a linear score :math:`s(x) = w^\top x + b` with labels :math:`y_\pm \in \{-1, +1\}`,
the inner maximisation of the robust loss is solved exactly by the dual norm
(Hölder's inequality, with equality at :math:`\delta^\star = -\varepsilon\, y_\pm\,
\partial\|w\|_q`):

.. math::

    \min_{\|\delta\|_p \le \varepsilon} y_\pm\, s(x + \delta) = y_\pm\, s(x) -
    \varepsilon \|w\|_q, \qquad \tfrac1p + \tfrac1q = 1,

so the adversarial logistic loss is :math:`\log\big(1 + \exp(\varepsilon\|w\|_q -
y_\pm s(x))\big)`, a convex function of :math:`(w, b)`. A point is robustly classified
exactly when :math:`y_\pm s(x) > \varepsilon\|w\|_q`, i.e. when its :math:`L_p` distance
to the boundary, :math:`|s(x)|/\|w\|_q`, exceeds :math:`\varepsilon` on the right side.
"""

from __future__ import annotations

import dataclasses

import torch

from .. import data as _data
from ..norms import lp_norm
from .._validate import check_choice, check_nonneg, check_positive, check_positive_int, check_seed
from ._live import live

__all__ = ["DeltaBallDemo", "LinearClassifier", "fit_linear", "worst_perturbation"]

# The dual of each norm of the threat model: max_{||d||_p <= 1} w.d = ||w||_q.
DUAL = {"linf": "l1", "l2": "l2", "l1": "linf"}


@dataclasses.dataclass(frozen=True)
class LinearClassifier:
    r"""The two-class linear classifier :math:`\hat y = \mathbf{1}[w^\top x + b > 0]`.

    Attributes
    ----------
    w : torch.Tensor
        Weights (d,), float64.
    b : float
        Bias.
    """

    w: torch.Tensor
    b: float

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`s(x) = w^\\top x + b`, shape (n,)."""
        return x.double() @ self.w + self.b

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Labels in {0, 1}, shape (n,)."""
        return (self.score(x) > 0).long()

    def robust_margin(self, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
        r"""The worst score margin in the ball, :math:`y_\pm s(x) - \varepsilon\|w\|_q`, shape (n,).

        Positive exactly where no perturbation with :math:`\|\delta\|_p \le \varepsilon`
        changes the prediction (the input box is not imposed: the plane is not an image).
        """
        check_nonneg(eps, "eps", allow_tensor=False)
        check_choice(norm, "norm", tuple(DUAL))
        ypm = 2.0 * y.double() - 1.0
        return ypm * self.score(x) - float(eps) * float(lp_norm(self.w[None], DUAL[norm]))

    def distance(self, x: torch.Tensor, y: torch.Tensor, norm: str = "linf") -> torch.Tensor:
        r"""Signed :math:`L_p` distance to the boundary, :math:`y_\pm s(x) / \|w\|_q` (negative: wrong side)."""
        check_choice(norm, "norm", tuple(DUAL))
        ypm = 2.0 * y.double() - 1.0
        return ypm * self.score(x) / max(float(lp_norm(self.w[None], DUAL[norm])), 1e-300)


def worst_perturbation(w: torch.Tensor, ypm: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    r"""The exact inner maximiser for a linear score: :math:`\delta^\star_i = -\varepsilon\, y_{\pm,i}\, u`,
    where :math:`u` is a unit-:math:`L_p` vector with :math:`w^\top u = \|w\|_q` (shape (n, d)).

    For Linf, :math:`u = \operatorname{sign}(w)` (the FGSM step is exact for a linear model);
    for L2, :math:`u = w / \|w\|_2`; for L1, the unit vector on the largest :math:`|w_k|`.

    Examples
    --------
    >>> w = torch.tensor([3.0, -4.0], dtype=torch.float64)
    >>> worst_perturbation(w, torch.tensor([1.0, -1.0], dtype=torch.float64), 0.5, "l2")
    tensor([[-0.3000,  0.4000],
            [ 0.3000, -0.4000]], dtype=torch.float64)
    """
    if norm == "linf":
        u = w.sign()
    elif norm == "l2":
        u = w / w.norm().clamp_min(1e-300)
    else:
        u = torch.zeros_like(w)
        k = int(w.abs().argmax())
        u[k] = w[k].sign()
    return -float(eps) * ypm[:, None] * u[None, :]


def fit_linear(x: torch.Tensor, y: torch.Tensor, *, eps: float = 0.0, norm: str = "linf", steps: int = 400,
               lr: float = 0.1, seed: int = 0) -> LinearClassifier:
    r"""Standard (``eps=0``) or adversarial training of a linear classifier, with the exact inner maximum.

    Minimises the adversarial logistic loss over :math:`(w, b)`,

    .. math::

        \frac1n \sum_{i=1}^n \max_{\|\delta_i\|_p \le \varepsilon}
        \log\big(1 + e^{-y_{\pm,i}\, s(x_i + \delta_i)}\big)
        = \frac1n \sum_{i=1}^n \log\big(1 + e^{\varepsilon \|w\|_q - y_{\pm,i}\, s(x_i)}\big),

    by full-batch Adam from a small seeded start. The gradient of the right-hand side is
    the gradient of the loss at the worst-case perturbation :math:`\delta_i^\star`
    (Danskin's theorem), which is what PGD adversarial training approximates for a deep
    network. With ``eps=0`` this is plain logistic regression.

    Parameters
    ----------
    x : torch.Tensor
        Points (n, d).
    y : torch.Tensor
        Labels (n,) in {0, 1}.
    eps : float
        Radius of the training threat model (>= 0).
    norm : {"linf", "l2", "l1"}
    steps : int
        Adam steps.
    lr : float
        Adam learning rate.
    seed : int
        Seed of the starting point.

    Returns
    -------
    LinearClassifier

    Examples
    --------
    >>> import robustlab as rl
    >>> x, y = rl.data.linearly_separable(40, margin=0.2, seed=0)
    >>> clf = fit_linear(x, y, eps=0.05, norm="l2")
    >>> bool((clf.robust_margin(x, y, 0.05, "l2") > 0).all())   # every 0.05-ball is on the right side
    True
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a tensor of points of shape (n, d), got {getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],):
        raise ValueError(f"y must be a tensor of {x.shape[0]} labels in {{0, 1}}")
    if y.numel() and not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("y must hold labels in {0, 1}")
    check_nonneg(eps, "eps", allow_tensor=False)
    check_choice(norm, "norm", tuple(DUAL))
    check_positive_int(steps, "steps")
    check_positive(lr, "lr")
    x, ypm = x.detach().double(), 2.0 * y.detach().double() - 1.0
    n = x.shape[0]
    g = torch.Generator().manual_seed(check_seed(seed))
    theta = torch.cat([0.01 * torch.randn(x.shape[1], generator=g, dtype=torch.float64),
                       torch.zeros(1, dtype=torch.float64)])
    # Adam, written out: 2-D problems are too small for autograd's per-step overhead.
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    beta1, beta2 = 0.9, 0.999
    for t in range(1, steps + 1):
        w, b = theta[:-1], theta[-1]
        x_adv = x + worst_perturbation(w, ypm, eps, norm)
        weight = torch.sigmoid(-ypm * (x_adv @ w + b)) * ypm / n   # -dloss/dscore per point
        # Danskin: the gradient of the robust loss is the gradient of the loss at x_adv.
        grad = -torch.cat([weight @ x_adv, weight.sum()[None]])
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        theta -= lr * (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + 1e-8)
    return LinearClassifier(theta[:-1].clone(), float(theta[-1]))


class DeltaBallDemo:
    r"""Eps-balls around separable points, and the boundaries of a standard and a robust linear classifier.

    The data are :func:`robustlab.data.linearly_separable` points in :math:`[0, 1]^2`. The
    standard classifier is logistic regression (:func:`fit_linear` with ``eps=0``, fitted
    once); the robust one is adversarially trained at the slider's radius and norm
    (:func:`fit_linear`, exact inner maximum, a fraction of a second). For each, the demo
    reports the clean and the robust training accuracy, checked exactly with
    :meth:`LinearClassifier.robust_margin`, and the :math:`L_p` margin
    :math:`\min_i y_{\pm,i}\, s(x_i)/\|w\|_q` (the distance from the boundary to the
    closest training point; negative when a point is misclassified).

    Parameters
    ----------
    n : int
        Number of training points.
    margin : float
        Width of the empty gap between the two classes (see
        :func:`robustlab.data.linearly_separable`): a perfect robust linear classifier
        exists for Linf radii up to about ``margin / 2`` in the gap's direction.
    seed : int
        Seed of the data and of the training starts (the default draws a set on which
        the robust boundary visibly turns once ``eps`` exceeds half the gap).
    steps : int
        Adam steps per fit (:func:`fit_linear`).

    Examples
    --------
    >>> demo = DeltaBallDemo(n=30, seed=0)
    >>> out = demo.update(eps=0.05, norm="linf")
    >>> sorted(out)  # doctest: +NORMALIZE_WHITESPACE
    ['margin_robust', 'margin_standard', 'robust', 'robust_acc_robust', 'robust_acc_standard',
     'robust_mask_robust', 'robust_mask_standard', 'standard', 'train_acc_robust', 'train_acc_standard']
    >>> out["robust_acc_robust"] >= out["robust_acc_standard"]
    True
    """

    NORMS = tuple(DUAL)

    def __init__(self, n: int = 40, *, margin: float = 0.2, seed: int = 5, steps: int = 400):
        check_positive_int(n, "n")
        self.data = _data.linearly_separable(n, margin=margin, seed=seed)
        self.margin, self.seed, self.steps = float(margin), seed, check_positive_int(steps, "steps")
        self.standard = fit_linear(self.data.x, self.data.y, eps=0.0, steps=steps, seed=seed)
        self._robust: dict = {}

    def robust_classifier(self, eps: float, norm: str = "linf") -> LinearClassifier:
        """The classifier adversarially trained at ``eps`` in ``norm`` (fitted once per setting)."""
        check_nonneg(eps, "eps", allow_tensor=False)
        check_choice(norm, "norm", self.NORMS)
        key = (round(float(eps), 6), norm)
        if key not in self._robust:
            self._robust[key] = fit_linear(self.data.x, self.data.y, eps=float(eps), norm=norm, steps=self.steps,
                                           seed=self.seed)
        return self._robust[key]

    def update(self, eps: float, norm: str = "linf") -> dict:
        """Fit (or reuse) the robust classifier at ``eps`` and report both classifiers at ``eps``.

        Returns a dict with the two :class:`LinearClassifier` (``"standard"``,
        ``"robust"``) and, for each (suffix ``_standard`` / ``_robust``): ``train_acc``
        (clean training accuracy), ``robust_acc`` (fraction of points whose whole
        ``eps``-ball is classified correctly), ``robust_mask`` (that per point, (n,)
        bool) and ``margin`` (the :math:`L_p` margin of the training set).
        """
        robust = self.robust_classifier(eps, norm)
        x, y = self.data.x, self.data.y
        out = {"standard": self.standard, "robust": robust}
        for name, clf in (("standard", self.standard), ("robust", robust)):
            mask = clf.robust_margin(x, y, eps, norm) > 0
            out[f"train_acc_{name}"] = float((clf.predict(x) == y).double().mean())
            out[f"robust_acc_{name}"] = float(mask.double().mean())
            out[f"robust_mask_{name}"] = mask
            out[f"margin_{name}"] = float(clf.distance(x, y, norm).min())
        return out

    # ------------------------------------------------------------------ drawing

    @staticmethod
    def _ball(center, eps, norm, **style):
        from matplotlib.patches import Circle, Polygon, Rectangle

        cx, cy = float(center[0]), float(center[1])
        if norm == "l2":
            return Circle((cx, cy), eps, **style)
        if norm == "linf":
            return Rectangle((cx - eps, cy - eps), 2 * eps, 2 * eps, **style)
        return Polygon([(cx + eps, cy), (cx, cy + eps), (cx - eps, cy), (cx, cy - eps)], closed=True, **style)

    def _draw(self, ax, result, eps, norm):
        import numpy as np
        from matplotlib.lines import Line2D

        x, y = self.data.x, self.data.y
        colors = np.array(["C0", "C1"])[y.numpy()]
        broken = ~result["robust_mask_standard"]
        if eps > 0:
            for point, color, bad in zip(x, colors, broken.tolist()):
                ax.add_patch(self._ball(point, eps, norm, facecolor=color, alpha=0.18,
                                        edgecolor="C3" if bad else color, lw=1.4 if bad else 0.6))
        ax.scatter(x[:, 0], x[:, 1], c=colors, s=14, zorder=3)
        grid = torch.linspace(-0.1, 1.1, 241, dtype=torch.float64)
        gx, gy = torch.meshgrid(grid, grid, indexing="xy")
        pts = torch.stack([gx.flatten(), gy.flatten()], 1)
        for key, style in (("standard", dict(colors="k", linestyles="--")), ("robust", dict(colors="C2"))):
            s = result[key].score(pts).reshape(gx.shape)
            if float(s.min()) < 0 < float(s.max()):
                ax.contour(gx.numpy(), gy.numpy(), s.numpy(), levels=[0.0], linewidths=1.8, **style)
        ax.set_xlim(-0.1, 1.1)
        ax.set_ylim(-0.1, 1.1)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{norm}, ε = {eps:.2f}\nstandard: robust {result['robust_acc_standard']:.0%}, "
                     f"margin {result['margin_standard']:.3f}\nadv. trained: robust {result['robust_acc_robust']:.0%}"
                     f", clean {result['train_acc_robust']:.0%}, margin {result['margin_robust']:.3f}", fontsize=8)
        return [Line2D([], [], color="k", ls="--", label="standard boundary"),
                Line2D([], [], color="C2", label="adversarially trained boundary (at the panel's ε)"),
                Line2D([], [], color="C3", lw=1.4, label="ball that crosses the standard boundary")]

    def snapshot(self, eps_values=(0.0, 0.05, 0.1, 0.15), *, norm: str = "linf"):
        """A static figure: one panel per radius in ``eps_values`` (for the printed book)."""
        import matplotlib.pyplot as plt

        eps_values = list(eps_values)
        if not eps_values:
            raise ValueError("eps_values must hold at least one radius")
        fig, axes = plt.subplots(1, len(eps_values), figsize=(3.3 * len(eps_values), 4.4), squeeze=False)
        for ax, eps in zip(axes[0], eps_values):
            handles = self._draw(ax, self.update(eps, norm), eps, norm)
        fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        return fig

    def widget(self, *, eps_max: float = 0.25):
        """The live demo: a slider for the radius and a menu for the norm."""
        import ipywidgets as W
        import matplotlib.pyplot as plt

        check_positive(eps_max, "eps_max")
        eps = W.FloatSlider(value=min(0.05, eps_max), min=0.0, max=eps_max, step=0.01, description="ε",
                            continuous_update=False)
        norm = W.Dropdown(options=list(self.NORMS), value="linf", description="norm")

        def draw():
            fig, ax = plt.subplots(figsize=(4.6, 5.2))
            handles = self._draw(ax, self.update(eps.value, norm.value), eps.value, norm.value)
            ax.legend(handles=handles, fontsize=7, loc="lower left", framealpha=0.8)
            return fig

        return live([[eps, norm]], draw)
