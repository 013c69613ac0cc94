"""Plots the chapters and labs share: image grids, perturbations, adversarial examples.

matplotlib is imported when a function is called, not when robustlab is imported.
Every function returns the matplotlib figure (or axes) it drew on.
"""

from __future__ import annotations

import math

import torch

from ._validate import check_images, check_same_shape

__all__ = ["images", "adversarial_examples", "eps_balls_and_boundaries"]


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


def eps_balls_and_boundaries(data, models: dict, eps: float, *, norm: str = "linf", robust_masks: dict | None = None,
                             ax=None, resolution: int = 300):
    r"""Points of the plane with their :math:`\varepsilon`-balls and the decision boundaries of ``models``.

    Draws the two classes of ``data = (x, y)`` (x of shape (n, 2) in [0, 1], labels 0/1),
    a square (Linf) or disc (L2) of radius ``eps`` around every point, and the zero level
    set of the logit difference of each model in ``models`` (name -> module on 2-D
    inputs), each in its own colour. With ``robust_masks`` (name -> (n,) bool, e.g. from
    :func:`robustlab.training.ball_robust_mask`) a ball is edged red when it is broken for
    the first model of ``robust_masks``. Returns the axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Rectangle

    from ._validate import check_choice, check_nonneg

    x, y = data
    check_images(x, "data.x")
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"data.x must hold points of the plane, shape (n, 2), got {tuple(x.shape)}")
    if not isinstance(models, dict) or not models:
        raise TypeError("models must be a non-empty dict name -> model")
    check_nonneg(eps, "eps", allow_tensor=False)
    check_choice(norm, "norm", ("linf", "l2"))
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    broken = None
    if robust_masks:
        first = next(iter(robust_masks))
        broken = ~torch.as_tensor(robust_masks[first]).bool()
    xs, ys = x.detach().cpu(), y.detach().cpu()
    for i, (p, label) in enumerate(zip(xs.tolist(), ys.tolist())):
        color = "C0" if label == 0 else "C1"
        edge = "red" if broken is not None and bool(broken[i]) else color
        if norm == "linf":
            patch = Rectangle((p[0] - eps, p[1] - eps), 2 * eps, 2 * eps, facecolor=color, alpha=0.15,
                              edgecolor=edge, lw=1.2 if edge == "red" else 0.5)
        else:
            patch = Circle(p, eps, facecolor=color, alpha=0.15, edgecolor=edge, lw=1.2 if edge == "red" else 0.5)
        ax.add_patch(patch)
    for label, marker in ((0, "o"), (1, "s")):
        pts = xs[ys == label]
        ax.scatter(pts[:, 0], pts[:, 1], s=14, marker=marker, color=f"C{label}", zorder=3, label=f"class {label}")
    t = torch.linspace(0, 1, resolution)
    gx, gy = torch.meshgrid(t, t, indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    styles = ["k-", "g-", "m--", "c-."]
    for k, (name, model) in enumerate(models.items()):
        with torch.no_grad():
            logits = model.eval()(grid.to(next(model.parameters()).device)).cpu()
        score = (logits[:, 1] - logits[:, 0]).reshape(resolution, resolution)
        ls = styles[k % len(styles)]
        ax.contour(gx.numpy(), gy.numpy(), score.numpy(), levels=[0.0], colors=ls[0], linestyles=ls[1:])
        ax.plot([], [], ls, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(f"{'Linf' if norm == 'linf' else 'L2'} balls of radius {eps:g}")
    return ax
