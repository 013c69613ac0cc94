r"""Influence scores of every training point on every test point, and their picture."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .._validate import check_positive_int, check_xy
from .risk import EmpiricalRisk
from .ihvp import inverse_hvp


class Influences(NamedTuple):
    r"""Influence of every training point on every test point.

    Attributes
    ----------
    scores : torch.Tensor
        (T, N): :math:`\mathcal{I}_{\text{up,loss}}(z_i, z_{\text{test},t})`; > 0 harmful,
        < 0 helpful.
    test_loss : torch.Tensor
        (T,) :math:`L(z_{\text{test}}; \hat\theta)`.
    n : int
        The number of training points.
    """

    scores: torch.Tensor
    test_loss: torch.Tensor
    n: int

    @property
    def predicted_change(self) -> torch.Tensor:
        r"""(T, N): predicted :math:`L(z_{\text{test}}; \hat\theta_{-i}) - L(z_{\text{test}}; \hat\theta)
        = -\mathcal{I}_{\text{up,loss}} / n` when training point i is removed."""
        return -self.scores / self.n

    def helpful(self, k: int) -> torch.Tensor:
        """(T, k) indices of the k most helpful training points (most negative scores) per test point."""
        check_positive_int(k, "k")
        return torch.topk(-self.scores, min(k, self.n), dim=1).indices

    def harmful(self, k: int) -> torch.Tensor:
        """(T, k) indices of the k most harmful training points (most positive scores) per test point."""
        check_positive_int(k, "k")
        return torch.topk(self.scores, min(k, self.n), dim=1).indices


def influences(model: torch.nn.Module, train, test, *, params="all", weight_decay: float = 0.0,
               method: str = "cg", damping: float = 0.0, chunk_size: int = 256, **solver) -> Influences:
    r"""Koh and Liang's :math:`\mathcal{I}_{\text{up,loss}}` of every training point on every test point.

    .. math::

        \mathcal{I}_{\text{up,loss}}(z_i, z_{\text{test}}) = -\, s_{\text{test}}^\top \nabla_\theta L(z_i; \hat\theta),
        \qquad s_{\text{test}} = (H + \text{damping}\,I)^{-1} \nabla_\theta L(z_{\text{test}}; \hat\theta),

    one inverse-HVP per test point (all at once, :func:`inverse_hvp`) and one matrix product
    with the per-sample training gradients. The model must sit at (or near) a minimum of the
    risk with this ``weight_decay`` (see :func:`fit_to_optimum`): the formula assumes
    :math:`\nabla R(\hat\theta) = 0`.

    Parameters
    ----------
    model : torch.nn.Module
    train, test : Split or (x, y)
        Batch-first; ``test`` may hold a single point (batch of one).
    params : "all", "last" or sequence of str
        Parameters the influence is taken over (:func:`select_parameters`).
    weight_decay : float
        :math:`\lambda` of the risk the model was trained on.
    method, damping, **solver
        Passed to :func:`inverse_hvp`.

    Returns
    -------
    Influences
        ``scores`` (T, N); ``predicted_change`` = ``-scores / n``.

    Examples
    --------
    >>> import robustlab as rl
    >>> train, test = rl.data.load("digits")
    >>> tr = (train.x[:40], (train.y[:40] % 2)); te = (test.x[:2], test.y[:2] % 2)
    >>> model = rl.models.MLP((1, 8, 8), 2, hidden=()).double()
    >>> grad_norm = rl.influence.fit_to_optimum(model, tr, weight_decay=0.1)
    >>> inf = influences(model, tr, te, weight_decay=0.1, method="exact")
    >>> inf.scores.shape, inf.harmful(3).shape
    (torch.Size([2, 40]), torch.Size([2, 3]))
    """
    risk = EmpiricalRisk(model, train, params=params, weight_decay=weight_decay)
    xt, yt = check_xy(test, "test")
    test_grads = risk.per_sample_grads((xt, yt), chunk_size=chunk_size)  # (T, P)
    s_test = inverse_hvp(risk, test_grads, method=method, damping=damping, **solver)  # (T, P)
    train_grads = risk.per_sample_grads(chunk_size=chunk_size)  # (N, P)
    scores = -s_test @ train_grads.T
    return Influences(scores, risk.losses((xt, yt)), risk.n)


def plot_influential(train, test, result: Influences, index: int = 0, *, k: int = 5, size: float = 1.4,
                     classes=None):
    """The test point, its k most helpful and its k most harmful training points, as images.

    Each training image is titled with its label and its predicted change of the test loss
    when it is removed (:attr:`Influences.predicted_change`): negative for harmful points
    (removing them lowers the loss), positive for helpful ones. Returns the figure.
    """
    import matplotlib.pyplot as plt

    from ..plot import _to_numpy_image

    xtr, ytr = check_xy(train, "train")
    xte, yte = check_xy(test, "test")
    if not isinstance(result, Influences):
        raise TypeError(f"result must be an Influences (from influences()), got {type(result).__name__}")
    if result.scores.shape != (xte.shape[0], xtr.shape[0]):
        raise ValueError(f"result.scores has shape {tuple(result.scores.shape)}, but train and test give "
                         f"({xte.shape[0]}, {xtr.shape[0]})")
    index = check_positive_int(index, "index", allow_zero=True)
    if index >= xte.shape[0]:
        raise ValueError(f"index must be an integer in [0, {xte.shape[0]}), got {index!r}")
    check_positive_int(k, "k")
    k = min(k, xtr.shape[0])
    if xtr.dim() != 4:
        raise ValueError(f"train.x must be images (N, C, H, W) to be shown, got shape {tuple(xtr.shape)}")
    name = (lambda c: classes[c]) if classes is not None else str
    change = result.predicted_change[index].cpu()
    rows = [("helpful", result.helpful(k)[index].cpu()), ("harmful", result.harmful(k)[index].cpu())]
    fig, axes = plt.subplots(2, k + 1, figsize=(size * (k + 1), size * 2.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    arr, cmap = _to_numpy_image(xte[index])
    axes[0, 0].imshow(arr, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    axes[0, 0].set_title(f"test: {name(int(yte[index]))}\nloss {float(result.test_loss[index]):.3f}", fontsize=9)
    for r, (label, idx) in enumerate(rows):
        axes[r, 1].text(-0.15, 0.5, label, transform=axes[r, 1].transAxes, rotation=90, va="center", ha="right")
        for j, i in enumerate(idx.tolist()):
            arr, cmap = _to_numpy_image(xtr[i])
            ax = axes[r, j + 1]
            ax.imshow(arr, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"#{i} y={name(int(ytr[i]))}\nΔloss {float(change[i]):+.2g}", fontsize=8)
    fig.suptitle("predicted change of the test loss when the training point is removed", fontsize=10)
    fig.tight_layout()
    return fig
