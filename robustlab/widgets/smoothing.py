"""The smoothing explorer of chapter 7: certified radii and abstentions as sigma and n move."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
import torch  # noqa: F401  (the doctest uses it)

from .._validate import (check_images, check_labels, check_model, check_positive, check_positive_int, check_probability,
                         check_seed)
from ..smoothing import gaussian as _gaussian
from ._live import live

__all__ = ["SmoothingExplorer"]


class SmoothingExplorer:
    r"""Certify a few inputs by Gaussian smoothing at a chosen noise level and sample size.

    For every setting ``(sigma, n)`` the inputs are certified together with
    :func:`robustlab.smoothing.gaussian.certify`; the demo shows each input's lower bound
    :math:`\underline{p_A}` on the curve :math:`R = \sigma\Phi^{-1}(p)`, its certified radius,
    the abstain rate and the ceiling :math:`\sigma\Phi^{-1}(\alpha^{1/n})` that ``n``
    samples put on any radius.

    Parameters
    ----------
    model : torch.nn.Module or dict
        One base classifier for every sigma, or ``{sigma: model}`` (each trained with
        noise of that sigma); with a dict only its sigmas can be chosen.
    x, y : torch.Tensor
        The inputs (B, ...) in [0, 1] and their labels.
    n0, alpha : int, float
        Selection samples and confidence of :func:`~robustlab.smoothing.gaussian.certify`.
    seed : int
        Noise seed (input ``i`` uses ``seed + i``).
    batch_size : int
        Noisy inputs per forward pass.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> demo = SmoothingExplorer(model, torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]), n0=10)
    >>> out = demo.update(sigma=0.25, n=100)
    >>> sorted(out)
    ['abstain_rate', 'certificate', 'certified_accuracy', 'correct', 'max_radius', 'n', 'radii', 'sigma']
    """

    N_CHOICES = (100, 1000, 10_000)
    RADII = (0.0, 0.25, 0.5, 1.0)

    def __init__(self, model, x, y, *, n0: int = 100, alpha: float = 0.001, seed: int = 0, batch_size: int = 1000):
        if isinstance(model, dict):
            if not model:
                raise ValueError("model must be a module or a non-empty dict {sigma: model}")
            self.models = {}
            for sigma, m in model.items():
                check_positive(sigma, "sigma (a key of model)")
                self.models[float(sigma)] = check_model(m, f"model[{sigma}]")
        else:
            self.models = {None: check_model(model)}
        self.x = check_images(x, "x").detach().cpu()
        self.y = check_labels(y, "y", batch_size=self.x.shape[0]).cpu()
        self.n0 = check_positive_int(n0, "n0")
        self.alpha = check_probability(alpha, "alpha")
        self.seed = check_seed(seed)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self._cache: dict = {}

    @property
    def sigmas(self):
        """The sigmas a dict of models offers (None when one model serves every sigma)."""
        keys = sorted(k for k in self.models if k is not None)
        return keys or None

    def model_for(self, sigma: float):
        """The base classifier smoothed at ``sigma``."""
        check_positive(sigma, "sigma")
        if None in self.models:
            return self.models[None]
        for key, model in self.models.items():
            if math.isclose(key, float(sigma)):
                return model
        raise ValueError(f"sigma must be one of the trained noise levels {self.sigmas}, got {sigma}")

    def update(self, sigma: float, n: int = 1000) -> dict:
        """Certify every input at ``(sigma, n)`` and return what the demo shows."""
        model = self.model_for(sigma)
        check_positive_int(n, "n")
        key = (float(sigma), int(n))
        if key not in self._cache:
            cert = _gaussian.certify(model, self.x, sigma=float(sigma), n0=self.n0, n=int(n), alpha=self.alpha,
                                     seed=self.seed, batch_size=self.batch_size, progress=False)
            correct = cert.correct(self.y)
            self._cache[key] = {
                "sigma": float(sigma), "n": int(n), "certificate": cert,
                "radii": cert.radius, "correct": correct,
                "abstain_rate": float(cert.abstained.float().mean()),
                "certified_accuracy": dict(zip(self.RADII, cert.certified_accuracy(self.y, self.RADII).tolist())),
                "max_radius": _gaussian.max_radius(int(n), self.alpha, float(sigma)),
            }
        return self._cache[key]

    def _draw(self, axes, result):
        from scipy.stats import norm

        cert, correct = result["certificate"], result["correct"].numpy()
        sigma, n = result["sigma"], result["n"]
        abstained = cert.abstained.numpy()
        wrong = ~abstained & ~correct
        colors = np.where(abstained, "0.6", np.where(correct, "C0", "C3"))

        ax = axes[0]
        p = np.linspace(0.5, 1 - 1e-6, 400)
        ax.plot(p, sigma * norm.ppf(p), color="k", lw=1, label=r"$R = \sigma\Phi^{-1}(p)$")
        ax.axvspan(0.0, 0.5, color="0.9", label="abstain ($p < 1/2$)")
        ax.axhline(result["max_radius"], color="C1", ls="--", lw=1, label=f"ceiling for n = {n:,}")
        ax.scatter(cert.pA_lower.numpy(), cert.radius.numpy(), c=list(colors), s=18, zorder=3)
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.15 * max(result["max_radius"], 1e-3))
        ax.set_xlabel(r"lower bound $\underline{p_A}$")
        ax.set_ylabel("certified L2 radius")
        ax.set_title(f"σ = {sigma:g}, n = {n:,}: {result['abstain_rate']:.0%} abstain", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")

        ax = axes[1]
        order = np.argsort(-cert.radius.numpy(), kind="stable")
        ax.bar(np.arange(len(order)), cert.radius.numpy()[order], color=list(colors[order]), width=0.9)
        ax.axhline(result["max_radius"], color="C1", ls="--", lw=1)
        ax.set_ylim(0.0, 1.15 * max(result["max_radius"], 1e-3))
        ax.set_xticks([])
        ax.set_xlabel(f"{len(order)} inputs, sorted (blue right, red wrong, grey abstain)")
        ca = result["certified_accuracy"]
        ax.set_title("certified accuracy " + ", ".join(f"{v:.0%} at {r:g}" for r, v in ca.items()), fontsize=9)
        if wrong.any():
            ax.text(0.98, 0.95, f"{int(wrong.sum())} certified but wrong", transform=ax.transAxes, ha="right",
                    va="top", fontsize=7, color="C3")

    def snapshot(self, settings=((0.25, 100), (0.25, 10_000), (0.5, 10_000))):
        """A static figure: one row per ``(sigma, n)`` in ``settings`` (for the printed book)."""
        import matplotlib.pyplot as plt

        settings = list(settings)
        if not settings:
            raise ValueError("settings must hold at least one (sigma, n) pair")
        fig, axes = plt.subplots(len(settings), 2, figsize=(10, 3.0 * len(settings)), squeeze=False)
        for row, (sigma, n) in zip(axes, settings):
            self._draw(row, self.update(sigma, n))
        fig.tight_layout()
        return fig

    def widget(self, *, n_choices=N_CHOICES, sigma_max: float = 1.0):
        """The live demo: a slider for sigma (the trained levels, or continuous) and one for n."""
        import ipywidgets as W
        import matplotlib.pyplot as plt

        n_choices = [check_positive_int(v, "n_choices") for v in n_choices]
        if not n_choices:
            raise ValueError("n_choices must hold at least one sample size")
        if self.sigmas is not None:
            sigma = W.SelectionSlider(options=self.sigmas, value=self.sigmas[0], description="σ",
                                      continuous_update=False)
        else:
            if not isinstance(sigma_max, Real):
                raise TypeError(f"sigma_max must be a number, got {type(sigma_max).__name__}")
            check_positive(sigma_max, "sigma_max")
            sigma = W.FloatSlider(value=min(0.25, sigma_max), min=0.05, max=max(sigma_max, 0.05), step=0.05,
                                  description="σ", continuous_update=False)
        n = W.SelectionSlider(options=n_choices, value=n_choices[len(n_choices) // 2], description="n",
                              continuous_update=False)

        def draw():
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
            self._draw(axes, self.update(sigma.value, n.value))
            return fig

        return live([[sigma, n]], draw)

