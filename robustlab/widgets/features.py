r"""The trade-off explorer of chapter 4: accuracy against robustness on the distribution of
Tsipras et al. (2019), in closed form."""

from __future__ import annotations

import math

import torch

from .. import features as _features
from ..features.tradeoff import _check_p
from .._validate import check_nonneg, check_positive, check_positive_int
from ._live import live

__all__ = ["TradeoffExplorer"]


class TradeoffExplorer:
    r"""Standard and robust accuracy of two linear classifiers of the Tsipras et al. toy
    model, and of every mixture of them, against the theorem's bound.

    On :func:`robustlab.features.tsipras_data` (label :math:`y \in \{-1, +1\}`, robust
    feature :math:`x_1 = y` with probability :math:`p`, non-robust features
    :math:`x_2, \dots, x_{d+1} \sim \mathcal{N}(\eta y, 1)`) the demo compares

    * the *standard* classifier :math:`\operatorname{sign}\big(\frac1d \sum_{i \ge 2}
      x_i\big)`, with standard accuracy :math:`\Phi(\eta\sqrt d)` and robust accuracy
      :math:`\Phi\big((\eta - \varepsilon)\sqrt d\big)` against an :math:`L_\infty`
      adversary of radius :math:`\varepsilon`;
    * the *robust* classifier :math:`\operatorname{sign}(x_1)`, accurate with
      probability :math:`p` whatever the adversary does as long as
      :math:`\varepsilon < 1`;
    * the mixtures :math:`\operatorname{sign}\big(\lambda x_1 + (1 - \lambda) \frac1d
      \sum_{i \ge 2} x_i\big)`, :math:`\lambda \in [0, 1]`, which trace the trade-off
      between them.

    Every accuracy is exact (:func:`robustlab.features.tsipras_accuracy`, a sum of
    Gaussian CDFs), so an update takes milliseconds. For :math:`\varepsilon \ge 2\eta` the
    theorem of Tsipras et al. (:func:`robustlab.features.tsipras_bound`) applies: no
    classifier, linear or not, lies above the line :math:`\text{standard} = 1 -
    \frac{1 - p}{p}\,\text{robust}`, and the demo shades that region.

    Parameters
    ----------
    d : int
        Default number of non-robust features.
    p : float
        Default probability that the robust feature agrees with the label, in [0.5, 1).
    eta : float, optional
        Default mean of the non-robust features (default :math:`3/\sqrt d`).
    n_mix : int
        Number of mixtures :math:`\lambda` on the trade-off curve (at least 2).

    Examples
    --------
    >>> demo = TradeoffExplorer(d=100, p=0.9)
    >>> out = demo.update(eps=0.6)                       # eps = 2 eta: the theorem applies
    >>> round(out["standard_clean"], 4), round(out["standard_robust"], 4)
    (0.9987, 0.0013)
    >>> out["robust_clean"], out["robust_robust"], out["theorem_applies"]
    (0.9, 0.9, True)
    """

    def __init__(self, d: int = 100, p: float = 0.9, eta: float | None = None, *, n_mix: int = 41):
        self.d = check_positive_int(d, "d")
        self.p = _check_p(p)
        self.eta = 3.0 / math.sqrt(d) if eta is None else float(check_positive(eta, "eta"))
        check_positive_int(n_mix, "n_mix")
        if n_mix < 2:
            raise ValueError(f"n_mix must be an integer >= 2 (the two ends of the curve), got {n_mix}")
        self.n_mix = n_mix

    def update(self, eps: float, eta: float | None = None, p: float | None = None, d: int | None = None) -> dict:
        r"""The exact accuracies at one setting.

        Parameters
        ----------
        eps : float
            :math:`L_\infty` radius of the adversary (toy-model units).
        eta, p, d : optional
            The distribution's parameters (defaults: the explorer's).

        Returns
        -------
        dict
            ``standard_clean``, ``standard_robust``, ``robust_clean``, ``robust_robust``
            (floats); ``mix_weight`` (:math:`\lambda`), ``mix_clean``, ``mix_robust``
            (float64 tensors of length ``n_mix``); ``theorem_applies`` (whether
            :math:`\varepsilon \ge 2\eta`); ``robust_cap``, the theorem's cap
            :math:`\frac{p}{1 - p}\,(1 - \text{standard accuracy})` on the standard
            classifier's robust accuracy (capped at 1; ``nan`` when the theorem does not
            apply); and the setting ``eps``, ``eta``, ``p``, ``d``.
        """
        check_nonneg(eps, "eps", allow_tensor=False)
        eta = self.eta if eta is None else float(check_positive(eta, "eta"))
        p = self.p if p is None else _check_p(p)
        d = self.d if d is None else check_positive_int(d, "d")
        eps = float(eps)
        lam = torch.linspace(0.0, 1.0, self.n_mix, dtype=torch.float64)
        # row k: lambda_k on the robust feature, (1 - lambda_k) / d on each non-robust one
        weights = torch.cat([lam[:, None], ((1 - lam) / d)[:, None].expand(-1, d)], 1)
        clean = torch.tensor([_features.tsipras_accuracy(w, p=p, eta=eta) for w in weights], dtype=torch.float64)
        robust = torch.tensor([_features.tsipras_accuracy(w, p=p, eta=eta, eps=eps) for w in weights],
                              dtype=torch.float64)
        applies = eps >= 2 * eta
        std_clean = float(clean[0])
        cap = min(1.0, p / (1 - p) * (1 - std_clean)) if applies else float("nan")
        return {
            "standard_clean": std_clean, "standard_robust": float(robust[0]),
            "robust_clean": float(clean[-1]), "robust_robust": float(robust[-1]),
            "mix_weight": lam, "mix_clean": clean, "mix_robust": robust,
            "theorem_applies": applies, "robust_cap": cap,
            "eps": eps, "eta": eta, "p": p, "d": d,
        }

    def _draw(self, axes, r: dict) -> None:
        import numpy as np

        ax, ax2 = axes
        pos = np.arange(2)
        ax.bar(pos - 0.2, [r["standard_clean"], r["robust_clean"]], 0.4, label="standard accuracy")
        ax.bar(pos + 0.2, [r["standard_robust"], r["robust_robust"]], 0.4, label="robust accuracy")
        if r["theorem_applies"]:
            ax.hlines(r["robust_cap"], 0.0, 0.4, colors="C3", linestyles="--",
                      label="theorem's cap on its robust accuracy")
        ax.set_xticks(pos, ["standard\n(non-robust features)", "robust\n(feature x₁)"], fontsize=8)
        ax.set_ylim(0, 1.45)
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7, loc="upper center", ncol=2)
        ax.set_title(f"ε = {r['eps']:.2f}, η = {r['eta']:.2f}, d = {r['d']}, p = {r['p']:.2f}", fontsize=9)

        if r["theorem_applies"]:
            grid = torch.linspace(0, 1, 101, dtype=torch.float64)
            ax2.fill_between(grid.numpy(), _features.tsipras_bound(grid, r["p"]).numpy(), 1.05, color="C3",
                             alpha=0.15, label="impossible for any classifier")
            ax2.set_title("ε ≥ 2η: the theorem forbids the shaded region", fontsize=9)
        else:
            ax2.set_title("ε < 2η: the theorem does not apply", fontsize=9, color="C3")
        ax2.plot(r["mix_robust"].numpy(), r["mix_clean"].numpy(), "-", color="grey", lw=1.5,
                 label="mixtures λ·x₁ + (1-λ)·mean")
        ax2.plot([r["standard_robust"]], [r["standard_clean"]], "o", color="C0", label="standard")
        ax2.plot([r["robust_robust"]], [r["robust_clean"]], "s", color="C1", label="robust")
        ax2.set_xlim(-0.02, 1.02)
        ax2.set_ylim(0.4, 1.05)
        ax2.set_xlabel(f"robust accuracy (ε = {r['eps']:.2f})")
        ax2.set_ylabel("standard accuracy")
        ax2.legend(fontsize=7, loc="lower left")

    def snapshot(self, settings=None):
        """A static figure, one row per setting (for the printed book).

        ``settings`` is a sequence of dicts of :meth:`update`'s arguments; the default
        shows :math:`\\varepsilon = 0, \\eta, 2\\eta` and :math:`2\\eta` with a weaker
        robust feature (:math:`p = 0.7`).
        """
        import matplotlib.pyplot as plt

        if settings is None:
            settings = [dict(eps=0.0), dict(eps=self.eta), dict(eps=2 * self.eta), dict(eps=2 * self.eta, p=0.7)]
        settings = list(settings)
        if not settings:
            raise ValueError("settings must hold at least one setting")
        for s in settings:
            if not isinstance(s, dict) or "eps" not in s:
                raise TypeError("settings must be dicts of update()'s arguments, each with an 'eps'")
        fig, axes = plt.subplots(len(settings), 2, figsize=(9, 3.0 * len(settings)), squeeze=False)
        for row, s in zip(axes, settings):
            self._draw(row, self.update(**s))
        fig.tight_layout()
        return fig

    def widget(self, *, eps_max: float = 1.0):
        """The live demo: sliders for the radius, the non-robust signal, the dimension and p."""
        import ipywidgets as W
        import matplotlib.pyplot as plt

        check_positive(eps_max, "eps_max")
        eps = W.FloatSlider(value=min(2 * self.eta, eps_max), min=0.0, max=eps_max, step=0.01, description="ε",
                            continuous_update=False)
        eta = W.FloatSlider(value=self.eta, min=0.01, max=1.0, step=0.01, description="η", continuous_update=False)
        d = W.IntSlider(value=self.d, min=1, max=max(1000, self.d), description="d", continuous_update=False)
        p = W.FloatSlider(value=self.p, min=0.5, max=0.99, step=0.01, description="p", continuous_update=False)

        def draw():
            fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
            self._draw(axes, self.update(eps.value, eta.value, p.value, d.value))
            return fig

        return live([[eps, eta], [d, p]], draw)
