"""The bounds explorer of chapter 5: IBP and dual bounds on the logit margins of one input."""

from __future__ import annotations

import torch

from .. import attacks as _attacks
from .._validate import check_images, check_labels, check_model, check_nonneg
from ..certify import bounds as _bounds
from ._live import live

__all__ = ["BoundsExplorer"]


class BoundsExplorer:
    r"""Lower bounds of the margins :math:`z_y - z_j` of one input as the radius grows.

    For a chosen :math:`\varepsilon` it shows, per rival class :math:`j`, the IBP bound,
    the Kolter--Wong dual bound (with optimized slopes, equal to the LP of the triangle
    relaxation up to the optimizer's tolerance) and the margin reached by a targeted PGD
    attack (an upper bound on the true minimum). The input is certified by a method when
    all its bounds are above 0; the true minimum lies between the bounds and the attack.

    Parameters
    ----------
    model : torch.nn.Module
        A Normalize/Flatten/Linear/ReLU network (see :func:`robustlab.certify.bounds.relu_network`).
    x, y : torch.Tensor
        A few inputs (B, ...) in [0, 1] and their labels.
    alpha_steps : int
        Slope optimization steps of the dual bound.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=1)
    >>> demo = BoundsExplorer(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), alpha_steps=2)
    >>> out = demo.update(eps=0.02, index=1)
    >>> sorted(out)
    ['attack', 'certified', 'dual', 'ibp', 'label']
    >>> bool((out["ibp"] <= out["attack"] + 1e-5).all())
    True
    """

    METHODS = ("ibp", "dual")

    def __init__(self, model, x, y, *, alpha_steps: int = 20, steps: int = 20):
        self.model = check_model(model)
        self.x = check_images(x, "x").detach().cpu()
        self.y = check_labels(y, "y", batch_size=self.x.shape[0]).cpu()
        _bounds.relu_network(model, tuple(self.x.shape[1:]))  # refuse unsupported models now
        self.alpha_steps = alpha_steps
        self.steps = steps

    def update(self, eps: float, index: int = 0) -> dict:
        """Bounds (K,) of input ``index`` at radius ``eps``, the attack's margins, and the verdicts."""
        check_nonneg(eps, "eps", allow_tensor=False)
        if not 0 <= index < self.x.shape[0]:
            raise ValueError(f"index must be in [0, {self.x.shape[0] - 1}], got {index}")
        x, y = self.x[index:index + 1], self.y[index:index + 1]
        ibp = _bounds.certify(self.model, x, y, eps, "ibp")
        dual = _bounds.certify(self.model, x, y, eps, "dual", alpha_steps=self.alpha_steps)
        n_classes = ibp.margin_lower.shape[1]
        rivals = torch.tensor([j for j in range(n_classes) if j != int(y)])
        reached = torch.zeros(n_classes)
        if eps > 0:
            xs = x.expand(len(rivals), *x.shape[1:])
            adv = _attacks.pgd(self.model, xs, y.expand(len(rivals)), eps=eps, steps=self.steps, targets=rivals,
                               loss="cw", seed=0)
            with torch.no_grad():
                z = self.model(adv).cpu()
            reached[rivals] = z[:, int(y)] - z[torch.arange(len(rivals)), rivals]
        else:
            with torch.no_grad():
                z = self.model(x).cpu()[0]
            reached = z[int(y)] - z
        return {"label": int(y), "ibp": ibp.margin_lower[0], "dual": dual.margin_lower[0], "attack": reached,
                "certified": {"ibp": bool(ibp.certified[0]), "dual": bool(dual.certified[0]),
                              "attack": bool((reached[rivals] > 0).all())}}

    def _draw(self, ax, result, eps):
        import numpy as np

        k = result["ibp"].shape[0]
        pos = np.arange(k)
        for shift, key, label in ((-0.27, "ibp", "IBP bound"), (0.0, "dual", "dual (= LP) bound"),
                                  (0.27, "attack", "PGD margin")):
            values = result[key].numpy().copy()
            values[result["label"]] = np.nan
            ax.bar(pos + shift, values, width=0.27, label=label)
        ax.axhline(0, color="k", lw=0.8)
        verdict = ", ".join(f"{m}: {'certified' if result['certified'][m] else 'not certified'}" for m in self.METHODS)
        broken = "" if result["certified"]["attack"] else " — PGD breaks it"
        ax.set_title(f"ε = {eps:.3f}, label {result['label']}; {verdict}{broken}", fontsize=9)
        ax.set_xticks(pos)
        ax.set_xlabel("rival class j")
        ax.set_ylabel("margin $z_y - z_j$")
        ax.legend(fontsize=7, loc="lower left")

    def snapshot(self, eps_values=(0.0, 0.05, 0.1, 0.15), *, index: int = 0):
        """A static figure: one panel per radius in ``eps_values`` (for the printed book)."""
        import matplotlib.pyplot as plt

        eps_values = list(eps_values)
        if not eps_values:
            raise ValueError("eps_values must hold at least one radius")
        fig, axes = plt.subplots(len(eps_values), 1, figsize=(7, 2.6 * len(eps_values)), squeeze=False)
        lows = []
        for ax, eps in zip(axes[:, 0], eps_values):
            result = self.update(eps, index)
            self._draw(ax, result, eps)
            lows.append(float(result["ibp"].min()))
        for ax in axes[:, 0]:
            ax.set_ylim(min(lows) * 1.05 - 0.5, None)
        fig.tight_layout()
        return fig

    def widget(self, *, eps_max: float = 0.3):
        """The live demo: sliders for the input and the radius."""
        import ipywidgets as W
        import matplotlib.pyplot as plt

        check_nonneg(eps_max, "eps_max", allow_tensor=False)
        eps = W.FloatSlider(value=min(0.05, eps_max), min=0.0, max=eps_max, step=0.005, description="ε",
                            continuous_update=False, readout_format=".3f")
        index = W.IntSlider(value=0, min=0, max=self.x.shape[0] - 1, description="input", continuous_update=False)

        def draw():
            fig, ax = plt.subplots(figsize=(7, 3))
            self._draw(ax, self.update(eps.value, index.value), eps.value)
            return fig

        return live([[index, eps]], draw)
