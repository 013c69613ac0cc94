"""The second-order smoothing explorer of chapter 14: the certified radius as a function of p_A and the gradient bound."""

from __future__ import annotations

import numpy as np

from .._validate import check_interval, check_positive
from ..certificates import Certificate
from ..smoothing import second_order as _so
from ._live import live

__all__ = ["SecondOrderExplorer"]


class SecondOrderExplorer:
    r"""Sliders for :math:`p_A` and the gradient bound :math:`G` (as a fraction of
    :math:`G_{\max} = \varphi(\Phi^{-1}(p_A))/\sigma`): the worst-case probability against the
    shift for Cohen's certificate, SoS at :math:`G` and the symmetric slab (:math:`G = 0`), and
    the map of the radius gain :math:`(R_{\text{SoS}} - R_{\text{Cohen}})/\sigma` over the whole
    :math:`(p_A, G/G_{\max})` plane, with the inputs of an SoS certificate drawn on it.

    Parameters
    ----------
    sigma : float
        Noise standard deviation.
    certificate : Certificate, optional
        An SoS certificate (:func:`robustlab.smoothing.second_order.certify_sos`); its inputs with
        :math:`\underline{p_A} > 1/2` are drawn at :math:`(\underline{p_A}, G/G_{\max})`.

    Examples
    --------
    >>> demo = SecondOrderExplorer(sigma=0.5)
    >>> out = demo.update(p_a=0.9, g_frac=0.0)
    >>> round(out["radius_cohen"], 4), round(out["radius_sos"], 4), out["radius_sos"] == out["radius_slab"]
    (0.6408, 0.8218, True)
    """

    def __init__(self, *, sigma: float = 1.0, certificate: Certificate | None = None, resolution: int = 60):
        self.sigma = float(check_positive(sigma, "sigma"))
        if certificate is not None and (not isinstance(certificate, Certificate) or certificate.method != "sos"):
            raise TypeError("certificate must be an SoS Certificate (from rl.smoothing.second_order.certify_sos)")
        self.points = None
        if certificate is not None:
            ok = certificate.pA_lower > 0.5
            frac = certificate.grad_bound[ok] / certificate.grad_max[ok]
            self.points = (certificate.pA_lower[ok].numpy(), frac.numpy())
        self.p_grid = np.linspace(0.51, 0.995, resolution)
        self.f_grid = np.linspace(0.0, 1.0, resolution)
        pp, ff = np.meshgrid(self.p_grid, self.f_grid)
        g = ff * np.asarray(_so.max_gradient_norm(pp, self.sigma))
        sos, cohen = _so.sos_radius(pp, g, self.sigma), self.sigma * _norm_ppf(pp)
        self.gain = sos / cohen  # the ratio, >= 1
        self.gain_sigma = (sos - cohen) / self.sigma  # the absolute gain in units of sigma (what the map shows)

    def update(self, p_a: float, g_frac: float) -> dict:
        """The curves and radii at :math:`p_A` = ``p_a`` and :math:`G = ` ``g_frac`` :math:`\\cdot G_{\\max}`."""
        p_a = check_interval(p_a, "p_a", 0.0, 1.0, high_open=True)
        g_frac = check_interval(g_frac, "g_frac", 0.0, 1.0)
        g_max = float(_so.max_gradient_norm(p_a, self.sigma))
        r = np.linspace(0.0, 3.0 * self.sigma, 200)
        return {
            "r": r, "g_max": g_max, "a_prime": float(_so.solve_a_prime(p_a, g_frac * g_max, self.sigma)),
            "cohen": np.asarray(_so.sos_certified_score(p_a, g_max, r, self.sigma)),
            "sos": np.asarray(_so.sos_certified_score(p_a, g_frac * g_max, r, self.sigma)),
            "slab": np.asarray(_so.sos_certified_score(p_a, 0.0, r, self.sigma)),
            "radius_cohen": float(_so.sos_radius(p_a, g_max, self.sigma)),
            "radius_sos": float(_so.sos_radius(p_a, g_frac * g_max, self.sigma)),
            "radius_slab": float(_so.sos_radius(p_a, 0.0, self.sigma)),
        }

    def _draw(self, axes, out, p_a, g_frac):
        ax, heat = axes
        for key, label, style in (("cohen", "Cohen (G = G_max)", "-"), ("sos", f"SoS, G = {g_frac:.2f} G_max", "-"),
                                  ("slab", "symmetric slab (G = 0)", "--")):
            line, = ax.plot(out["r"], out[key], style, label=label)
            ax.axvline(out[f"radius_{key}"], color=line.get_color(), ls=":", lw=1)
        ax.axhline(0.5, color="k", lw=0.8)
        ax.set_xlabel("shift R (L2 pixels)")
        ax.set_ylabel("certified probability of $c_A$")
        ax.set_title(f"$p_A$ = {p_a:.3f}, σ = {self.sigma:g}: radius {out['radius_sos']:.3f} "
                     f"(Cohen {out['radius_cohen']:.3f})", fontsize=9)
        ax.legend(fontsize=7)
        im = heat.imshow(self.gain_sigma, origin="lower", aspect="auto", cmap="viridis",
                         extent=(self.p_grid[0], self.p_grid[-1], 0, 1))
        heat.figure.colorbar(im, ax=heat, fraction=0.046, label="(SoS radius - Cohen radius) / σ")
        heat.set_ylim(0, 1.04)
        if self.points is not None:
            heat.scatter(*self.points, s=8, color="w", edgecolor="k", lw=0.3, label="inputs (certificate)")
            heat.legend(fontsize=7, loc="upper left")
        heat.plot([p_a], [g_frac], "r*", ms=10)
        heat.set_xlabel("$p_A$")
        heat.set_ylabel("$G / G_{max}$")

    def snapshot(self, settings=((0.6, 0.0), (0.9, 0.5), (0.99, 0.2))):
        """A static figure: one row per ``(p_a, g_frac)`` in ``settings`` (for the printed book)."""
        import matplotlib.pyplot as plt

        settings = list(settings)
        if not settings:
            raise ValueError("settings must hold at least one (p_a, g_frac) pair")
        fig, axes = plt.subplots(len(settings), 2, figsize=(10, 3.3 * len(settings)), squeeze=False)
        for row, (p_a, g_frac) in zip(axes, settings):
            self._draw(row, self.update(p_a, g_frac), p_a, g_frac)
        fig.tight_layout()
        return fig

    def widget(self):
        """The live demo: sliders for :math:`p_A` and :math:`G/G_{\\max}`."""
        import ipywidgets as W
        import matplotlib.pyplot as plt

        p_a = W.FloatSlider(value=0.9, min=0.51, max=0.995, step=0.005, description="p_A", continuous_update=False)
        g_frac = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="G / G_max",
                               continuous_update=False)

        def draw():
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
            self._draw(axes, self.update(p_a.value, g_frac.value), p_a.value, g_frac.value)
            return fig

        return live([[p_a, g_frac]], draw)


def _norm_ppf(p):
    from scipy.special import ndtri
    return ndtri(p)
