r"""Input gradients (saliency maps) and their alignment with the image: robust models'
gradients look like the digit (Tsipras et al., 2019; Ilyas et al., 2019)."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .. import attacks as _attacks
from .. import models as _models
from .._validate import check_choice, check_images, check_labels, check_model, check_positive_int


def saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, of: str = "logit") -> torch.Tensor:
    r"""Input-gradient saliency: :math:`\nabla_x z_y(x)` (``of="logit"``) or
    :math:`\nabla_x \mathcal{L}(f(x), y)` (``of="loss"``), batch-first.

    The gradient of the class-``y`` logit (default: the predicted class) with respect to
    the input, per sample, in eval mode; only the input gets a gradient (parameter
    ``.grad`` fields are not touched). For a standard model these maps look like noise;
    for an adversarially trained model they concentrate on the strokes of the digit,
    i.e. they are aligned with what a human would call evidence (Tsipras et al., 2019,
    section 4; see :func:`saliency_alignment`).

    Parameters
    ----------
    model : nn.Module
    x : torch.Tensor
        Inputs (B, ...) in [0, 1].
    y : torch.Tensor, optional
        Classes (B,) whose logit (or loss) is differentiated; default the prediction.
    of : {"logit", "loss"}

    Returns
    -------
    torch.Tensor
        The gradient, same shape as ``x``, on the CPU.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("cnn", "digits")
    >>> saliency(model, torch.rand(3, 1, 8, 8)).shape
    torch.Size([3, 1, 8, 8])
    """
    check_model(model)
    check_images(x, "x")
    check_choice(of, "of", ("logit", "loss"))
    device = _models.device_of(model)
    xg = x.detach().to(device).requires_grad_(True)
    with _attacks.eval_mode(model), torch.enable_grad():
        logits = model(xg)
        if y is None:
            y = logits.argmax(1)
        else:
            check_labels(y, "y", batch_size=x.shape[0], n_classes=logits.shape[1])
            y = y.to(device)
        if of == "logit":
            value = logits.gather(1, y[:, None]).sum()
        else:
            value = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(value, xg)
    return grad.detach().cpu()


def saliency_alignment(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    r"""How much a model's saliency looks like the image: per-sample Pearson correlation
    between :math:`|\nabla_x z_y|` and the image's ink.

    .. math::

        a(x) = \operatorname{corr}\big(|\nabla_x z_y(x)|,\ x\big)
        \quad\text{over the pixels (channels summed)},

    in [-1, 1]; 1 means the gradient's magnitude follows the strokes exactly. Robust
    models score higher than standard ones (their gradients are "human-aligned").

    Returns
    -------
    torch.Tensor
        (B,) on the CPU; 0 for an image or saliency map that is constant.
    """
    grad = saliency(model, x, y).abs()
    ink = x.detach().cpu()
    if ink.dim() > 2:
        grad, ink = grad.sum(1), ink.sum(1)
    a = grad.flatten(1).double()
    b = ink.flatten(1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denom = a.norm(dim=1) * b.norm(dim=1)
    corr = torch.where(denom > 0, (a * b).sum(1) / denom.clamp_min(1e-300), torch.zeros_like(denom))
    return corr.float()


def plot_saliency(x: torch.Tensor, models: Mapping[str, nn.Module], y: torch.Tensor | None = None, *,
                  max_images: int = 8, size: float = 1.3):
    """Images (top row) and each model's saliency :math:`|\\nabla_x z_y|` below them,
    titled with :func:`saliency_alignment`. Returns the figure.

    ``models`` maps a row label to a model, e.g. ``{"standard": std, "robust": rob}``.
    """
    import matplotlib.pyplot as plt

    check_images(x, "x", min_dim=4)
    if not isinstance(models, Mapping) or not models:
        raise TypeError("models must be a non-empty mapping from a name to a model")
    check_positive_int(max_images, "max_images")
    n = min(max_images, x.shape[0])
    x = x[:n]
    y = None if y is None else y[:n]
    fig, axes = plt.subplots(1 + len(models), n, figsize=(size * n, size * (1 + len(models)) + 0.3), squeeze=False)
    for i in range(n):
        img = x[i].detach().cpu()
        axes[0, i].imshow((img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)).numpy(), cmap="gray", vmin=0, vmax=1)
    for r, (name, model) in enumerate(models.items(), start=1):
        sal = saliency(model, x, y).abs().sum(1)
        align = saliency_alignment(model, x, y)
        for i in range(n):
            axes[r, i].imshow(sal[i].numpy(), cmap="inferno")
            axes[r, i].set_title(f"{float(align[i]):.2f}", fontsize=8)
        axes[r, 0].text(-0.25, 0.5, name, transform=axes[r, 0].transAxes, rotation=90, va="center", ha="right")
    axes[0, 0].text(-0.25, 0.5, "image", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("|input gradient| of the class logit (title: correlation with the ink)", fontsize=9)
    fig.tight_layout()
    return fig
