"""The PixelDP condition explorer of chapter 6: which expected scores the proposition certifies."""

from __future__ import annotations

import math

import torch

from .._validate import check_nonneg, check_positive
from ..certificates import Certificate
from ..smoothing import dp as _dp
from ._live import live

__all__ = ["DPConditionExplorer"]


class DPConditionExplorer:
    r"""Sliders for :math:`(\varepsilon, \delta, L)`: the certified region and the noise it costs.

    The proposition certifies an input whose expected scores satisfy
    :math:`E_{\text{top}} > e^{2\varepsilon} E_{\text{runner-up}} + (1 + e^{\varepsilon})\delta`.
    In the plane of (runner-up, top) scores that is the region above a line; the scores
    of real inputs (the bounds a certificate of :func:`~robustlab.smoothing.dp.certify` used) are
    drawn as points. The same :math:`(\varepsilon, \delta)` at radius :math:`L` costs
    Laplace noise of scale :math:`b = N L / \varepsilon` or Gaussian noise of
    :math:`\sigma = \sqrt{2\ln(1.25/\delta)}\, N L / \varepsilon` on a first layer of
    sensitivity :math:`N`.

    Parameters
    ----------
    top, runner_up : torch.Tensor, optional
        (N,) lower bounds of the top expected score and upper bounds of the runner-up's
        (e.g. ``cert.lower_top`` and ``cert.upper_runner_up``).
    sensitivity : float
        Sensitivity :math:`N` of the first layer (1 for a PixelDP network's normalized layer).

    Examples
    --------
    >>> demo = DPConditionExplorer(torch.tensor([0.9, 0.6]), torch.tensor([0.05, 0.3]))
    >>> out = demo.update(eps=0.5, delta=0.0, L=0.1)
    >>> out["certified"].tolist(), round(out["laplace_scale"], 3)
    ([True, False], 0.2)
    """

    def __init__(self, top=None, runner_up=None, *, sensitivity: float = 1.0):
        if (top is None) != (runner_up is None):
            raise ValueError("top and runner_up must be given together")
        if top is None:
            top, runner_up = torch.zeros(0), torch.zeros(0)
        for t, name in ((top, "top"), (runner_up, "runner_up")):
            if not isinstance(t, torch.Tensor) or t.dim() != 1:
                raise ValueError(f"{name} must be a 1-D tensor of expected scores")
            if bool(torch.isnan(t).any()) or bool((t < 0).any()) or bool((t > 1).any()):
                raise ValueError(f"{name} must hold expected scores in [0, 1]")
        if top.shape != runner_up.shape:
            raise ValueError(f"top and runner_up must have the same shape, got {tuple(top.shape)} and "
                             f"{tuple(runner_up.shape)}")
        self.top = top.detach().double().cpu()
        self.runner_up = runner_up.detach().double().cpu()
        self.sensitivity = float(check_positive(sensitivity, "sensitivity"))

    @classmethod
    def from_certificate(cls, cert: Certificate) -> "DPConditionExplorer":
        """The explorer of a PixelDP certificate's bounds (its scores, sensitivity 1)."""
        if not isinstance(cert, Certificate) or cert.method != "pixeldp":
            raise TypeError(f"cert must be a PixelDP Certificate (from rl.smoothing.dp.certify), "
                            f"got {type(cert).__name__}")
        return cls(cert.lower_top, cert.upper_runner_up)

    def update(self, eps: float, delta: float = 0.0, L: float = 0.1) -> dict:
        """The condition's boundary line, which points it certifies, and the noise scales."""
        check_nonneg(eps, "eps", allow_tensor=False)
        check_positive(L, "L")
        _dp.robustness_condition(0.0, 0.0, eps, delta)  # checks delta
        runner = torch.linspace(0.0, 0.5, 101, dtype=torch.float64)
        boundary = math.exp(2 * eps) * runner + (1 + math.exp(eps)) * delta
        certified = _dp.robustness_condition(self.top, self.runner_up, eps, delta)
        laplace = _dp.laplace_scale(eps, L, self.sensitivity) if eps > 0 else math.inf
        gauss = _dp.gaussian_sigma(eps, delta, L, self.sensitivity) if 0 < eps <= 1 and 0 < delta < 1 else None
        return {
            "runner_up_grid": runner, "boundary": boundary, "certified": certified,
            "fraction": float(certified.double().mean()) if len(certified) else math.nan,
            "laplace_scale": laplace, "gaussian_sigma": gauss,
        }

    def _draw(self, ax, result, eps, delta, L):
        runner, boundary = result["runner_up_grid"].numpy(), result["boundary"].numpy()
        ax.fill_between(runner, boundary, 1.0, where=boundary < 1, color="C2", alpha=0.15, label="certified")
        ax.plot(runner, boundary, color="C2")
        ax.plot(runner, 1 - runner, color="0.5", ls=":", label="top + runner-up = 1")
        if len(self.top):
            ok = result["certified"].numpy()
            ax.scatter(self.runner_up.numpy()[ok], self.top.numpy()[ok], s=10, color="C2", label="inputs, certified")
            ax.scatter(self.runner_up.numpy()[~ok], self.top.numpy()[~ok], s=10, color="C3", label="not certified")
        ax.set_xlim(0, 0.5)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("runner-up expected score (upper bound)")
        ax.set_ylabel("top expected score (lower bound)")
        gauss = result["gaussian_sigma"]
        noise = f"Laplace b = {result['laplace_scale']:.3g}"
        noise += f", Gaussian σ = {gauss:.3g}" if gauss is not None else ", Gaussian: needs 0 < ε ≤ 1, δ > 0"
        title = f"ε = {eps:g}, δ = {delta:g}, L = {L:g}"
        if len(self.top):
            title += f": {result['fraction']:.0%} certified"
        ax.set_title(title + "\n" + noise, fontsize=9)
        ax.legend(fontsize=7, loc="lower right")

    def snapshot(self, settings=((0.1, 0.0), (0.5, 1e-5), (1.0, 0.05)), *, L: float = 0.1):
        """A static figure: one panel per ``(eps, delta)`` in ``settings`` (for the printed book)."""
        import matplotlib.pyplot as plt

        settings = list(settings)
        if not settings:
            raise ValueError("settings must hold at least one (eps, delta) pair")
        fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 4), squeeze=False)
        for ax, (eps, delta) in zip(axes[0], settings):
            self._draw(ax, self.update(eps, delta, L), eps, delta, L)
        fig.tight_layout()
        return fig

    def widget(self, *, eps_max: float = 2.0):
        """The live demo: sliders for eps, log10(delta) and the radius L."""
        import ipywidgets as W
        import matplotlib.pyplot as plt

        check_positive(eps_max, "eps_max")
        eps = W.FloatSlider(value=min(0.5, eps_max), min=0.0, max=eps_max, step=0.05, description="ε",
                            continuous_update=False)
        log_delta = W.FloatSlider(value=-5.0, min=-8.0, max=-1.0, step=0.5, description="log10 δ",
                                  continuous_update=False)
        radius = W.FloatSlider(value=0.1, min=0.01, max=1.0, step=0.01, description="L", continuous_update=False)

        def draw():
            delta = 10.0 ** log_delta.value
            fig, ax = plt.subplots(figsize=(5, 4))
            self._draw(ax, self.update(eps.value, delta, radius.value), eps.value, delta, radius.value)
            return fig

        return live([[eps, log_delta, radius]], draw)
