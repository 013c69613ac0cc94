"""The attack explorer of chapter 2: one input attacked at a chosen budget and norm."""

from __future__ import annotations

import torch

from .. import attacks as _attacks
from .._validate import check_choice, check_images, check_labels, check_model, check_nonneg
from ._live import live

__all__ = ["AttackExplorer"]


class AttackExplorer:
    """Attack one input at a chosen budget and norm and show what the model sees.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier under attack.
    x, y : torch.Tensor
        A few inputs (B, C, H, W) in [0, 1] and their labels.
    class_names : sequence of str, optional
        Names of the classes for the probability bars.
    steps : int
        PGD steps per update (FGSM ignores it).

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> demo = AttackExplorer(model, torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2]))
    >>> out = demo.update(eps=0.1, norm="linf", attack="fgsm", index=1)
    >>> sorted(out)
    ['confidence', 'confidence_adv', 'distance', 'pred', 'pred_adv', 'probs', 'probs_adv', 'x', 'x_adv']
    """

    ATTACKS = ("fgsm", "pgd")
    NORMS = ("linf", "l2")

    def __init__(self, model, x, y, *, class_names=None, steps: int = 20):
        self.model = check_model(model)
        self.x = check_images(x, "x", min_dim=4).detach().cpu()
        self.y = check_labels(y, "y", batch_size=self.x.shape[0]).cpu()
        self.class_names = list(class_names) if class_names is not None else None
        self.steps = steps

    def update(self, eps: float, norm: str = "linf", attack: str = "pgd", index: int = 0) -> dict:
        """Attack input ``index`` and return images, predictions and probabilities."""
        check_nonneg(eps, "eps", allow_tensor=False)
        check_choice(norm, "norm", self.NORMS)
        check_choice(attack, "attack", self.ATTACKS)
        if not 0 <= index < self.x.shape[0]:
            raise ValueError(f"index must be in [0, {self.x.shape[0] - 1}], got {index}")
        if attack == "fgsm" and norm != "linf":
            raise ValueError("attack 'fgsm' is an Linf attack: use norm='linf' (or attack='pgd' for L2)")
        x, y = self.x[index:index + 1], self.y[index:index + 1]
        if attack == "fgsm":
            x_adv = _attacks.fgsm(self.model, x, y, eps=eps)
        else:
            x_adv = _attacks.pgd(self.model, x, y, eps=eps, norm=norm, steps=self.steps, seed=0)
        from ..norms import lp_distance
        from ..train import predict_proba

        probs = predict_proba(self.model, torch.cat([x, x_adv.cpu()]))
        return {
            "x": x[0], "x_adv": x_adv[0].cpu(),
            "probs": probs[0], "probs_adv": probs[1],
            "pred": int(probs[0].argmax()), "pred_adv": int(probs[1].argmax()),
            "confidence": float(probs[0].max()), "confidence_adv": float(probs[1].max()),
            "distance": float(lp_distance(x, x_adv.cpu(), norm)[0]),
        }

    def _name(self, k: int) -> str:
        return self.class_names[k] if self.class_names is not None else str(k)

    def _draw(self, axes, result, eps, norm, attack):
        import numpy as np

        def show(ax, img, title, cmap="gray", vmin=0.0, vmax=1.0):
            arr = img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()
            ax.imshow(arr, cmap=cmap if img.shape[0] == 1 else None, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")

        show(axes[0], result["x"], f"clean: {self._name(result['pred'])} ({result['confidence']:.0%})")
        delta = result["x_adv"] - result["x"]
        scale = max(float(delta.abs().max()), 1e-6)
        show(axes[1], delta.mean(0, keepdim=True), f"{attack.upper()} {norm}, ε = {eps:.2f}", cmap="seismic",
             vmin=-scale, vmax=scale)
        show(axes[2], result["x_adv"], f"attacked: {self._name(result['pred_adv'])} ({result['confidence_adv']:.0%})")
        k = result["probs"].shape[0]
        pos = np.arange(k)
        axes[3].bar(pos - 0.2, result["probs"].numpy(), width=0.4, label="clean")
        axes[3].bar(pos + 0.2, result["probs_adv"].numpy(), width=0.4, label="attacked")
        axes[3].set_xticks(pos, [self._name(i) for i in range(k)], fontsize=7, rotation=90 if k > 10 else 0)
        axes[3].set_ylim(0, 1)
        axes[3].set_title("class probabilities", fontsize=9)
        axes[3].legend(fontsize=7)

    def snapshot(self, eps_values=(0.0, 0.1, 0.2, 0.3), *, norm: str = "linf", attack: str = "pgd", index: int = 0):
        """A static figure: one row per budget in ``eps_values`` (for the printed book)."""
        import matplotlib.pyplot as plt

        eps_values = list(eps_values)
        if not eps_values:
            raise ValueError("eps_values must hold at least one budget")
        fig, axes = plt.subplots(len(eps_values), 4, figsize=(10, 2.4 * len(eps_values)), squeeze=False,
                                 gridspec_kw={"width_ratios": [1, 1, 1, 2.2]})
        for row, eps in zip(axes, eps_values):
            self._draw(row, self.update(eps, norm, attack, index), eps, norm, attack)
        fig.tight_layout()
        return fig

    def widget(self, *, eps_max: float = 0.5):
        """The live demo: sliders for the input and the budget, menus for norm and attack."""
        import ipywidgets as W
        import matplotlib.pyplot as plt

        check_nonneg(eps_max, "eps_max", allow_tensor=False)
        eps = W.FloatSlider(value=min(0.1, eps_max), min=0.0, max=eps_max, step=0.01, description="ε",
                            continuous_update=False)
        norm = W.Dropdown(options=list(self.NORMS), value="linf", description="norm")
        attack = W.Dropdown(options=list(self.ATTACKS), value="pgd", description="attack")
        index = W.IntSlider(value=0, min=0, max=self.x.shape[0] - 1, description="input", continuous_update=False)

        def draw():
            if attack.value == "fgsm" and norm.value != "linf":
                print("FGSM is an Linf attack: choose norm linf, or the PGD attack for L2.")
                return None
            fig, axes = plt.subplots(1, 4, figsize=(10, 2.6), gridspec_kw={"width_ratios": [1, 1, 1, 2.2]})
            self._draw(axes, self.update(eps.value, norm.value, attack.value, index.value),
                       eps.value, norm.value, attack.value)
            return fig

        return live([[index, eps], [attack, norm]], draw)
