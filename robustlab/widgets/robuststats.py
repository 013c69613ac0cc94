"""The eps-bump explorer of chapter 9: an adversary's bump and the estimators it moves."""

from __future__ import annotations

import math

import torch

from .. import robuststats as _rs
from .._validate import check_nonneg, check_positive_int
from ._live import live

__all__ = ["EpsBumpExplorer"]


class EpsBumpExplorer:
    r"""Corrupt an :math:`\varepsilon` fraction of a Gaussian sample and watch the estimators move.

    The inliers are :math:`n` draws from :math:`\mathcal{N}(0, 1)`; a fraction
    :math:`\varepsilon` of them is replaced by a bump at ``location``
    (:func:`robustlab.robuststats.eps_bump`, the same seed for every setting, so only the
    bump changes). The mean, the median and the trimmed mean estimate :math:`\mu = 0`; the
    standard deviation and the MAD estimate :math:`\sigma = 1`.

    Parameters
    ----------
    n : int
        Sample size.
    width : float
        Standard deviation of the bump.
    trim : float
        Trimming fraction of the trimmed mean.
    seed : int
        Seed of the sample.

    Examples
    --------
    >>> demo = EpsBumpExplorer(n=1000)
    >>> out = demo.update(rate=0.2, location=30.0)
    >>> round(out["estimates"]["mean"], 1), abs(out["estimates"]["median"]) < 0.5
    (6.0, True)
    """

    ESTIMATORS = ("mean", "median", "trimmed_mean")
    SCALES = ("std", "mad")
    RATE_MAX = 0.49

    def __init__(self, n: int = 1000, *, width: float = 0.5, trim: float = 0.1, seed: int = 0):
        self.n = check_positive_int(n, "n")
        self.width = float(check_nonneg(width, "width", allow_tensor=False))
        self.trim = trim
        self.seed = seed
        _rs.trimmed_mean(torch.zeros(2), trim)  # checks trim

    def update(self, rate: float, location: float) -> dict:
        """The corrupted sample and every estimate, for one setting of the sliders."""
        check_nonneg(rate, "rate", allow_tensor=False)
        if rate > self.RATE_MAX:
            raise ValueError(f"rate must be <= {self.RATE_MAX}, got {rate}")
        s = _rs.eps_bump(self.n, rate, location, width=self.width, seed=self.seed)
        return {
            "x": s.x, "is_outlier": s.is_outlier,
            "estimates": {"mean": float(_rs.mean(s.x)), "median": float(_rs.median(s.x)),
                          "trimmed_mean": float(_rs.trimmed_mean(s.x, self.trim))},
            "scales": {"std": float(_rs.std(s.x)), "mad": float(_rs.mad(s.x))},
        }

    def _draw(self, ax, result, rate, location):
        import numpy as np

        x = result["x"].numpy()
        out = result["is_outlier"].numpy()
        lo, hi = min(-4.0, x.min() - 0.5), max(4.0, x.max() + 0.5)
        bins = np.linspace(lo, hi, 80)
        ax.hist([x[~out], x[out]], bins=bins, stacked=True, density=True, color=["0.75", "C3"],
                label=["inliers", "adversary's bump"])
        grid = np.linspace(lo, hi, 400)
        ax.plot(grid, np.exp(-grid ** 2 / 2) / math.sqrt(2 * math.pi), "k:", lw=1, label="N(0, 1)")
        styles = {"mean": ("C0", "-"), "median": ("C2", "-"), "trimmed_mean": ("C1", "--")}
        for name, value in result["estimates"].items():
            color, ls = styles[name]
            ax.axvline(value, color=color, ls=ls, lw=2, label=f"{name.replace('_', ' ')} {value:+.2f}")
        sc = result["scales"]
        ax.set_title(f"ε = {rate:.2f}, bump at {location:.0f}:  std {sc['std']:.2f},  MAD {sc['mad']:.2f}",
                     fontsize=9)
        ax.set_xlabel("x")
        ax.legend(fontsize=7, loc="upper right")

    def snapshot(self, settings=((0.0, 10.0), (0.1, 10.0), (0.1, 40.0), (0.3, 40.0))):
        """A static figure, one panel per ``(rate, location)`` pair in ``settings`` (for the printed book)."""
        import matplotlib.pyplot as plt

        settings = [tuple(s) for s in settings]
        if not settings or any(len(s) != 2 for s in settings):
            raise ValueError("settings must hold at least one (rate, location) pair")
        cols = min(2, len(settings))
        rows = math.ceil(len(settings) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.2 * rows), squeeze=False)
        for ax, (rate, loc) in zip(axes.flat, settings):
            self._draw(ax, self.update(rate, loc), rate, loc)
        for ax in list(axes.flat)[len(settings):]:
            ax.axis("off")
        fig.tight_layout()
        return fig

    def widget(self, *, location_max: float = 50.0):
        """The live demo: sliders for the corrupted fraction and the bump's location."""
        import ipywidgets as W
        import matplotlib.pyplot as plt

        check_nonneg(location_max, "location_max", allow_tensor=False)
        rate = W.FloatSlider(value=0.1, min=0.0, max=0.45, step=0.01, description="ε", continuous_update=False)
        location = W.FloatSlider(value=min(10.0, location_max), min=-location_max, max=location_max, step=0.5,
                                 description="bump at", continuous_update=False)

        def draw():
            fig, ax = plt.subplots(figsize=(7, 3.4))
            self._draw(ax, self.update(rate.value, location.value), rate.value, location.value)
            return fig

        return live([[rate, location]], draw)
