"""The concentration explorer of chapter 8: how much of a sphere lies near a small cap."""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import theory as _theory
from .._validate import check_nonneg, check_positive_int, check_probability, check_seed
from ._live import live

__all__ = ["ConcentrationExplorer"]


class ConcentrationExplorer:
    r"""A cap of measure :math:`\mu` on :math:`S^{d-1}` and its :math:`\varepsilon`-neighbourhood,
    for a chosen dimension.

    ``update(d, mu, eps)`` samples ``n`` uniform points of the sphere (once per dimension,
    seeded) and returns the exact measure of the neighbourhood
    (:func:`robustlab.theory.cap_neighbourhood_measure`), its Gaussian approximation and
    the fraction of sampled points within :math:`\varepsilon` of the cap. The figure shows
    the distribution of the first coordinate :math:`x_1` (the cap is :math:`x_1 \ge t`):
    as :math:`d` grows it concentrates at width :math:`1/\sqrt{d}` around 0, so a fixed
    :math:`\varepsilon` reaches past almost all of it.

    Parameters
    ----------
    n : int
        Points sampled per dimension.
    seed : int

    Examples
    --------
    >>> demo = ConcentrationExplorer(n=500)
    >>> out = demo.update(d=1000, mu=0.01, eps=0.2)
    >>> out["exact"] > 0.9, abs(out["estimate"] - out["exact"]) < 0.05
    (True, True)
    """

    D_CHOICES = (2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

    def __init__(self, *, n: int = 2000, seed: int = 0):
        check_positive_int(n, "n")
        check_seed(seed)
        self.n, self.seed = n, seed
        self._samples: dict = {}

    def _x1(self, d: int) -> torch.Tensor:
        if d not in self._samples:
            x = _theory.sample_sphere(self.n, d, seed=self.seed + d)
            self._samples[d] = x[:, 0].double().clone()  # keep only the coordinate the cap depends on
        return self._samples[d]

    def update(self, d: int, mu: float = 0.01, eps: float = 0.2) -> dict:
        """Measures of the cap and of its ``eps``-neighbourhood in dimension ``d``."""
        check_positive_int(d, "d")
        if d < 2:
            raise ValueError(f"d must be an integer >= 2 (the sphere S^(d-1) in R^d), got {d}")
        mu = check_probability(mu, "mu")
        eps = float(check_nonneg(eps, "eps", allow_tensor=False))
        t = float(_theory.cap_height(mu, d))
        theta = math.acos(t) + 2 * math.asin(min(eps / 2, 1.0))
        t_eps = -1.0 if theta >= math.pi else math.cos(theta)
        x1 = self._x1(d)
        # a point of the sphere is within eps of the cap exactly when x_1 >= t_eps
        estimate = float((x1 >= t_eps).double().mean())
        return {
            "d": d, "mu": float(mu), "eps": float(eps), "t": t, "t_eps": t_eps, "x1": x1,
            "exact": float(_theory.cap_neighbourhood_measure(mu, eps, d)),
            "gaussian": float(_theory.gaussian_neighbourhood_measure(mu, eps, d)),
            "estimate": estimate, "stderr": math.sqrt(max(estimate * (1 - estimate), 1e-12) / self.n),
            "typical": 1 / math.sqrt(d),
        }

    @staticmethod
    def _density(s: np.ndarray, d: int) -> np.ndarray:
        from scipy.special import betaln

        # density of x_1 on S^(d-1): (1 - s^2)^((d-3)/2) / B((d-1)/2, 1/2)
        return np.exp((d - 3) / 2 * np.log1p(-s * s) - betaln((d - 1) / 2, 0.5))

    def _draw(self, axes, r):
        ax, ax2 = axes
        d = r["d"]
        half = min(1.0, 6 / math.sqrt(d))
        lo, hi = -half, half
        lo = min(lo, r["t_eps"] - 0.05) if r["t_eps"] > -1 else -1.0
        lo, hi = max(lo, -1.0), min(max(hi, r["t"] + 0.05), 1.0)
        s = np.linspace(lo, hi, 400)[1:-1]
        dens = self._density(s, d)
        ax.hist(r["x1"].numpy(), bins=40, range=(lo, hi), density=True, color="0.8", label="sampled points")
        ax.plot(s, dens, color="k", lw=1)
        ax.fill_between(s, dens, where=s >= r["t"], color="C3", alpha=0.8, label=f"cap, μ = {r['mu']:g}")
        ax.fill_between(s, dens, where=(s >= r["t_eps"]) & (s < r["t"]), color="C1", alpha=0.5,
                        label=f"within ε = {r['eps']:.2f}")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("first coordinate x₁")
        ax.set_yticks([])
        ax.set_title(f"d = {d}: ε-neighbourhood has measure {r['exact']:.3f} (sampled {r['estimate']:.3f})",
                     fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        grid = np.linspace(0, 1, 101)
        ax2.plot(grid, _theory.cap_neighbourhood_measure(r["mu"], grid, d), color="C0", label="exact")
        ax2.plot(grid, _theory.gaussian_neighbourhood_measure(r["mu"], grid, d), color="C0", ls="--", lw=1,
                 label="Gaussian approximation")
        ax2.plot([r["eps"]], [r["estimate"]], "o", color="C1", label="sampled")
        ax2.axvline(r["typical"], color="grey", ls=":", lw=1)
        ax2.set_xlabel("ε")
        ax2.set_ylabel("measure of the ε-neighbourhood")
        ax2.set_ylim(0, 1.02)
        ax2.set_title(f"dotted: 1/√d = {r['typical']:.3f}", fontsize=9)
        ax2.legend(fontsize=7, loc="lower right")

    def snapshot(self, d_values=(3, 30, 300, 3000), *, mu: float = 0.01, eps: float = 0.2):
        """A static figure: one row per dimension in ``d_values`` (for the printed book)."""
        import matplotlib.pyplot as plt

        d_values = list(d_values)
        if not d_values:
            raise ValueError("d_values must hold at least one dimension")
        fig, axes = plt.subplots(len(d_values), 2, figsize=(10, 2.6 * len(d_values)), squeeze=False,
                                 gridspec_kw={"width_ratios": [1.4, 1]})
        for row, d in zip(axes, d_values):
            self._draw(row, self.update(d, mu, eps))
        fig.tight_layout()
        return fig

    def widget(self):
        """The live demo: a dimension slider and sliders for the cap's measure and for ε."""
        import ipywidgets as W
        import matplotlib.pyplot as plt

        dim = W.SelectionSlider(options=list(self.D_CHOICES), value=10, description="d", continuous_update=False)
        mu = W.FloatLogSlider(value=0.01, base=10, min=-4, max=math.log10(0.5), step=0.1, description="μ",
                              continuous_update=False)
        eps = W.FloatSlider(value=0.2, min=0.0, max=1.0, step=0.01, description="ε", continuous_update=False)

        def draw():
            fig, axes = plt.subplots(1, 2, figsize=(10, 3), gridspec_kw={"width_ratios": [1.4, 1]})
            self._draw(axes, self.update(dim.value, mu.value, eps.value))
            return fig

        return live([[dim, mu, eps]], draw)
