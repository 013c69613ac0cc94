"""The LPIPS budget explorer of chapter 16: perturbed digits at a chosen perceptual budget."""

from __future__ import annotations

import numpy as np
import torch

from .. import models as _models
from .._validate import check_images, check_labels, check_model, check_nonneg, check_seed
from ..perceptual import attacks as _pattacks
from ..perceptual.lpips import LPIPS
from ._live import live

__all__ = ["PerceptualBudgetExplorer"]


class PerceptualBudgetExplorer:
    r"""A few inputs attacked by LPA at each LPIPS budget of a grid, next to random noise of the same size.

    At construction, for every budget :math:`\varepsilon` of ``budgets`` and every input,
    the explorer computes the LPA adversarial input
    (:func:`robustlab.perceptual.attacks.lpa`, with ``lpips`` as the distance) and Gaussian
    noise scaled to the same LPIPS size
    (:func:`robustlab.perceptual.attacks.random_perturbation`), with their predictions and
    their LPIPS, L2 and Linf distances to the input; a redraw only looks results up.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier attacked.
    lpips : LPIPS
        The distance of the threat model.
    x, y : torch.Tensor
        A few inputs (B, C, H, W) in [0, 1] and their labels.
    budgets : sequence of float
        The LPIPS budgets of the slider (each >= 0).
    steps, rounds : int
        LPA's iterations per round and rounds.
    seed : int
        Seed of the attacks' random start and of the noise.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("cnn", "digits", width=4)
    >>> dist = LPIPS(rl.models.build("cnn", "digits", width=4, seed=1))
    >>> demo = PerceptualBudgetExplorer(model, dist, torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2]),
    ...                                 budgets=(0.0, 0.2), steps=2, rounds=1)
    >>> out = demo.update(0.2)
    >>> sorted(out)
    ['adversarial', 'budget', 'l2_adv', 'labels', 'linf_adv', 'lpips_adv', 'lpips_noise', 'noise', 'pred_adv', 'pred_clean', 'pred_noise']
    >>> bool((out["lpips_adv"] <= 0.2).all()), out["adversarial"].shape
    (True, torch.Size([3, 1, 8, 8]))
    """

    def __init__(self, model, lpips: LPIPS, x, y, *, budgets=(0.0, 0.1, 0.2, 0.3, 0.5), steps: int = 20,
                 rounds: int = 5, seed: int = 0):
        self.model = check_model(model)
        if not isinstance(lpips, LPIPS):
            raise TypeError(f"lpips must be a robustlab.perceptual.LPIPS distance, got {type(lpips).__name__}")
        self.lpips = lpips
        self.x = check_images(x, "x").detach().cpu()
        self.y = check_labels(y, "y", batch_size=self.x.shape[0]).cpu()
        budgets = tuple(float(check_nonneg(b, "budgets", allow_tensor=False)) for b in budgets)
        if not budgets:
            raise ValueError("budgets must hold at least one LPIPS budget")
        self.budgets = tuple(sorted(set(budgets)))
        self.seed = check_seed(seed)
        with _models.eval_mode(model), torch.no_grad():
            self.pred_clean = model(_models.to_model(model, self.x)).argmax(1).cpu()
        self._results = {}
        for eps in self.budgets:
            adv = _pattacks.lpa(model, self.x, self.y, eps=eps, lpips=lpips, steps=steps, rounds=rounds,
                                seed=self.seed).cpu()
            noise = _pattacks.random_perturbation(lpips, self.x, eps, seed=self.seed).cpu()
            with _models.eval_mode(model), _models.eval_mode(lpips.net), torch.no_grad():
                pred_adv = model(_models.to_model(model, adv)).argmax(1).cpu()
                pred_noise = model(_models.to_model(model, noise)).argmax(1).cpu()
                d_adv, d_noise = lpips(self.x, adv).cpu(), lpips(self.x, noise).cpu()
            delta = (adv - self.x).flatten(1)
            self._results[eps] = {
                "adversarial": adv, "noise": noise, "pred_adv": pred_adv, "pred_noise": pred_noise,
                "lpips_adv": d_adv, "lpips_noise": d_noise, "l2_adv": delta.norm(dim=1),
                "linf_adv": delta.abs().amax(1),
            }

    def update(self, budget: float) -> dict:
        """What the demo shows at the LPIPS ``budget`` (one of :attr:`budgets`)."""
        budget = float(budget)
        if budget not in self._results:
            raise ValueError(f"budget must be one of {list(self.budgets)}, got {budget}")
        return {"budget": budget, "labels": self.y, "pred_clean": self.pred_clean, **self._results[budget]}

    def _draw(self, axes, out):
        shape = self.x.shape[1:]

        def show(ax, img, title, ok):
            img = img.reshape(shape).numpy()
            ax.imshow(img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8, color="k" if ok else "C3")

        n = len(self.y)
        for i in range(n):
            label = int(self.y[i])
            show(axes[0][i], self.x[i], f"clean: {int(self.pred_clean[i])}", int(self.pred_clean[i]) == label)
            show(axes[1][i], out["adversarial"][i], f"LPA: {int(out['pred_adv'][i])} (d={out['lpips_adv'][i]:.2f})",
                 int(out["pred_adv"][i]) == label)
            show(axes[2][i], out["noise"][i], f"noise: {int(out['pred_noise'][i])} (d={out['lpips_noise'][i]:.2f})",
                 int(out["pred_noise"][i]) == label)
        axes[0][0].set_ylabel("input", fontsize=8)
        axes[1][0].set_ylabel(f"LPA, eps {out['budget']:.2f}", fontsize=8)
        axes[2][0].set_ylabel("noise, same LPIPS", fontsize=8)

    def _figure(self, budgets):
        import matplotlib.pyplot as plt

        n = len(self.y)
        fig, axes = plt.subplots(3 * len(budgets), n, figsize=(1.3 * n, 1.5 * 3 * len(budgets)), squeeze=False)
        for k, b in enumerate(budgets):
            self._draw(axes[3 * k:3 * k + 3], self.update(b))
        return fig

    def snapshot(self, budgets=None):
        """A static figure: for each budget (default the smallest non-zero and the largest) three rows of digits."""
        if budgets is None:
            nonzero = [b for b in self.budgets if b > 0]
            budgets = sorted({nonzero[0], self.budgets[-1]}) if nonzero else [self.budgets[0]]
        budgets = list(budgets)
        if not budgets:
            raise ValueError("budgets must hold at least one budget")
        fig = self._figure(budgets)
        fig.tight_layout()
        return fig

    def widget(self):
        """The live demo: a slider over the LPIPS budgets."""
        import ipywidgets as W

        slider = W.SelectionSlider(options=list(self.budgets), value=self.budgets[min(1, len(self.budgets) - 1)],
                                   description="LPIPS eps", continuous_update=False)
        return live([[slider]], lambda: self._figure([slider.value]))
