"""Plots the chapters and labs share: image grids, perturbations, adversarial examples.

matplotlib is imported when a function is called, not when robustlab is imported.
Every function returns the matplotlib figure (or axes) it drew on.
"""

from __future__ import annotations

import math

import torch

from ._validate import check_images, check_same_shape

__all__ = ["images", "adversarial_examples"]


def _to_numpy_image(img: torch.Tensor):
    img = img.detach().cpu()
    if img.shape[0] == 1:
        return img[0].numpy(), "gray"
    return img.permute(1, 2, 0).numpy(), None


def images(x: torch.Tensor, titles=None, *, ncols: int = 8, size: float = 1.3, suptitle: str | None = None):
    """Show a batch of images (B, C, H, W) in [0, 1] as a grid, with optional titles."""
    import matplotlib.pyplot as plt

    check_images(x, "x", min_dim=4)
    n = x.shape[0]
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles must have one entry per image ({n}), got {len(titles)}")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            arr, cmap = _to_numpy_image(x[i])
            ax.imshow(arr, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def adversarial_examples(x: torch.Tensor, x_adv: torch.Tensor, pred, pred_adv, *, confidence=None,
                         confidence_adv=None, max_images: int = 6, size: float = 1.6):
    """Three rows per example column: the clean input, the perturbation (scaled to the
    full colour range, grey = 0) and the adversarial input, titled with predictions."""
    import matplotlib.pyplot as plt

    check_images(x, "x", min_dim=4)
    check_images(x_adv, "x_adv", min_dim=4)
    check_same_shape(x, x_adv, "x", "x_adv")
    n = min(max_images, x.shape[0])
    fig, axes = plt.subplots(3, n, figsize=(size * n, size * 3.2), squeeze=False)
    delta = (x_adv - x).detach().cpu()
    scale = float(delta.abs().max()) or 1.0
    for i in range(n):
        arr, cmap = _to_numpy_image(x[i])
        axes[0, i].imshow(arr, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        c = f" ({float(confidence[i]):.0%})" if confidence is not None else ""
        axes[0, i].set_title(f"pred {int(pred[i])}{c}", fontsize=9)
        d = delta[i]
        shown = (d.mean(0) if d.shape[0] > 1 else d[0]).numpy()
        axes[1, i].imshow(shown, cmap="seismic", vmin=-scale, vmax=scale, interpolation="nearest")
        axes[1, i].set_title(f"perturbation ±{scale:.2f}", fontsize=8)
        arr, cmap = _to_numpy_image(x_adv[i])
        axes[2, i].imshow(arr, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        c = f" ({float(confidence_adv[i]):.0%})" if confidence_adv is not None else ""
        axes[2, i].set_title(f"pred {int(pred_adv[i])}{c}", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].text(-0.3, 0.5, "clean", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    axes[2, 0].text(-0.3, 0.5, "adversarial", transform=axes[2, 0].transAxes, rotation=90, va="center", ha="right")
    fig.tight_layout()
    return fig
