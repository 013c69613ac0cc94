r"""The shift-size explorer of chapter 17: the certified accuracy under distribution shift, and
what a shift of that size does to the digits."""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import shift as _shift
from .._validate import (check_choice, check_images, check_labels, check_model, check_nonneg, check_positive,
                         check_positive_int, check_probability, check_seed)
from ..smoothing.sampling import GaussianNoise, UniformNoise
from ._live import live

__all__ = ["ShiftExplorer"]

FAMILIES = {"brightness": _shift.Brightness, "translation": _shift.Translation}
"""The transformation families of the demo, by name."""


def _default_randomizations():
    # the chapter's two randomizations: sigma 0.5, and the uniform law of the same variance
    return {"Gaussian": GaussianNoise(0.5), "uniform": UniformNoise(0.5 * math.sqrt(3))}


def _same_noise(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, GaussianNoise):
        return math.isclose(a.sigma, b.sigma)
    return math.isclose(a.width, b.width)


class ShiftExplorer:
    r"""The certified accuracy of a randomized model against the shift size, for a chosen family
    and randomization, beside a few test digits shifted by that size.

    For every transformation family (``"brightness"``: :class:`robustlab.shift.Brightness`,
    ``"translation"``: :class:`robustlab.shift.Translation`) and every randomization
    :math:`\mu` of ``randomizations``, the explorer needs one certificate of
    :func:`robustlab.shift.certify_shift`: the Clopper--Pearson lower bound
    :math:`\underline A` of the randomized model's accuracy without shift. It computes them once
    at construction (or takes them from ``certificates``). A redraw at shift size
    :math:`\varepsilon` only evaluates :func:`robustlab.shift.shift_bound` at
    :math:`\underline A`: the Hellinger form (for :math:`W_2`, Gaussian, or :math:`W_1` in L1,
    uniform) and the total-variation form, and transforms ``n_show`` digits by
    :math:`\theta = \varepsilon` (brightness) or :math:`\theta = (0, \varepsilon)` (a shift to
    the right by :math:`\varepsilon` pixels), whose L1 and L2 norms are both
    :math:`\varepsilon`; the third row is what the randomized model sees,
    :math:`T(x, \theta + \delta)` for one seeded draw :math:`\delta \sim \mu`.

    Parameters
    ----------
    model : torch.nn.Module
        The base model :math:`h` (e.g. :func:`robustlab.shift.base_model`).
    x, y : torch.Tensor
        Test images (B, C, H, W) in [0, 1] and their labels: the set whose accuracy is
        certified (``target="empirical"``); the first ``n_show`` are drawn.
    randomizations : dict, optional
        ``{name: GaussianNoise or UniformNoise}``, default ``{"Gaussian": GaussianNoise(0.5),
        "uniform": UniformNoise(0.5 * sqrt(3))}`` (the same variance).
    eps_max : float
        The largest shift size of the slider (> 0), in the family's parameter units.
    steps : int
        Slider positions from 0 to ``eps_max`` (>= 2).
    n, alpha, seed :
        Draws, failure probability and seed of each certificate
        (:func:`robustlab.shift.certify_shift`); ``seed`` also seeds the pictured draw.
    certificates : dict, optional
        ``{(family, randomization): ShiftCertificate}`` already computed on ``x, y`` with the
        same randomization (e.g. by the chapter); missing settings are certified here.
    n_show : int
        Digits drawn.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    >>> demo = ShiftExplorer(model, x, y, n=200, n_show=3)
    >>> out = demo.update("translation", "uniform", 0.5)
    >>> bool(out["tv"] <= out["accuracy_lower"]), out["shifted"].shape
    (True, torch.Size([3, 1, 8, 8]))
    """

    def __init__(self, model, x, y, *, randomizations=None, eps_max: float = 1.5, steps: int = 31,
                 n: int = 10_000, alpha: float = 0.001, seed: int = 0, certificates=None, n_show: int = 6):
        self.model = check_model(model)
        self.x = check_images(x, "x").detach().cpu()
        if self.x.dim() != 4:
            raise ValueError(f"x must be images (B, C, H, W), got shape {tuple(self.x.shape)}")
        self.y = check_labels(y, "y", batch_size=self.x.shape[0]).cpu()
        randomizations = _default_randomizations() if randomizations is None else randomizations
        if not isinstance(randomizations, dict) or not randomizations:
            raise TypeError("randomizations must be a non-empty dict {name: GaussianNoise or UniformNoise}")
        for name, noise in randomizations.items():
            if not isinstance(name, str) or not isinstance(noise, (GaussianNoise, UniformNoise)):
                raise TypeError(f"randomizations must map names to GaussianNoise or UniformNoise, got "
                                f"{name!r}: {type(noise).__name__}")
        self.randomizations = dict(randomizations)
        self.families = tuple(FAMILIES)
        self.spaces = {f: FAMILIES[f]() for f in self.families}
        self.eps_max = float(check_positive(eps_max, "eps_max"))
        self.steps = check_positive_int(steps, "steps")
        if self.steps < 2:
            raise ValueError(f"steps must be at least 2, got {steps}")
        self.eps_values = np.linspace(0.0, self.eps_max, self.steps)
        self.n = check_positive_int(n, "n")
        self.alpha = check_probability(alpha, "alpha")
        self.seed = check_seed(seed)
        self.n_show = check_positive_int(n_show, "n_show")
        if self.n_show > self.x.shape[0]:
            raise ValueError(f"n_show must be at most the {self.x.shape[0]} inputs, got {n_show}")
        self.curve_eps = np.linspace(0.0, self.eps_max, 121)
        self.certificates = {}
        for key, cert in (certificates or {}).items():
            if not (isinstance(key, tuple) and len(key) == 2):
                raise TypeError(f"certificates must map (family, randomization) -> ShiftCertificate, got key {key!r}")
            family, rand = self._check_setting(*key)
            if not isinstance(cert, _shift.ShiftCertificate):
                raise TypeError(f"certificates[{key!r}] must be a ShiftCertificate, got {type(cert).__name__}")
            if not _same_noise(cert.noise, self.randomizations[rand]):
                raise ValueError(f"certificates[{key!r}] was computed with {cert.noise!r}, not with "
                                 f"{self.randomizations[rand]!r}")
            self.certificates[(family, rand)] = cert
        for family in self.families:
            for rand, noise in self.randomizations.items():
                if (family, rand) not in self.certificates:
                    self.certificates[(family, rand)] = _shift.certify_shift(
                        self.model, self.x, self.y, self.spaces[family], noise, [0.0], n=self.n, alpha=self.alpha,
                        seed=self.seed, progress=False)
        # one seeded draw of the randomization per shown digit and family, for the picture
        gen = torch.Generator().manual_seed(self.seed)
        self._draws = {(f, r): noise.draw((self.n_show, self.spaces[f].dim), gen, "cpu", self.x.dtype)
                       for f in self.families for r, noise in self.randomizations.items()}

    def _check_setting(self, family, randomization):
        check_choice(family, "family", self.families)
        check_choice(randomization, "randomization", tuple(self.randomizations))
        return family, randomization

    def theta(self, family: str, eps: float) -> torch.Tensor:
        r"""The parameter of a shift of size ``eps`` in ``family``: :math:`(\varepsilon)` (brightness)
        or :math:`(0, \varepsilon)` (translation)."""
        check_choice(family, "family", self.families)
        eps = float(check_nonneg(eps, "eps", allow_tensor=False))
        return torch.tensor([eps] if family == "brightness" else [0.0, eps], dtype=self.x.dtype)

    def update(self, family: str = "brightness", randomization: str = "Gaussian", eps: float = 0.5) -> dict:
        """What the demo shows for ``family``, ``randomization`` and shift size ``eps`` (>= 0)."""
        family, randomization = self._check_setting(family, randomization)
        theta = self.theta(family, eps)
        eps = float(eps)
        cert = self.certificates[(family, randomization)]
        noise, a = self.randomizations[randomization], cert.accuracy_lower
        space, shown = self.spaces[family], self.x[: self.n_show]
        out = {"family": family, "randomization": randomization, "eps": eps, "theta": theta,
               "accuracy_lower": a, "n": cert.n, "curve_eps": self.curve_eps}
        for bound in _shift.BOUNDS:
            out[bound] = _shift.shift_bound(a, eps, noise, bound)
            out[f"curve_{bound}"] = _shift.shift_bound(a, self.curve_eps, noise, bound)
            out[f"metric_{bound}"] = _shift.shift_metric(noise, bound)
        out["inputs"] = shown
        out["shifted"] = space.apply(shown, theta)
        out["randomized"] = space.apply(shown, theta + self._draws[(family, randomization)])
        out["labels"] = self.y[: self.n_show]
        return out

    def _draw(self, ax_curve, ax_images, out):
        styles = {"hellinger": "-", "tv": "--"}
        for bound in _shift.BOUNDS:
            p, ground = out[f"metric_{bound}"]
            ax_curve.plot(out["curve_eps"], out[f"curve_{bound}"], styles[bound], color="C0",
                          label=f"{bound} ($W_{p}$, {ground})")
            ax_curve.plot([out["eps"]], [out[bound]], "o", color="C3", ms=6, gid=f"marker-{bound}")
        ax_curve.axvline(out["eps"], color="0.6", lw=0.8)
        ax_curve.set_xlim(0, self.eps_max)
        ax_curve.set_ylim(0, 1.02)
        unit = "exponent doublings" if out["family"] == "brightness" else "pixels"
        ax_curve.set_xlabel(f"shift size $\\varepsilon$ ({unit})", fontsize=10)
        ax_curve.set_ylabel("certified accuracy", fontsize=10)
        ax_curve.set_title(f"{out['family']}, {out['randomization']}: at $\\varepsilon$ = {out['eps']:.2f}\n"
                           f"Hellinger {out['hellinger']:.1%}, TV {out['tv']:.1%}", fontsize=10)
        ax_curve.legend(fontsize=9, loc="lower left")
        ax_curve.grid(alpha=0.3)
        ax_curve.tick_params(labelsize=9)
        # the digits as one montage (rows: input, shifted, one draw of the randomization)
        rows = [out[key][:, 0].clamp(0, 1).numpy() for key in ("inputs", "shifted", "randomized")]
        k, (h, w) = rows[0].shape[0], rows[0].shape[1:]
        gap = max(1, h // 4)
        mont = np.full((3 * h + 2 * gap, k * w + (k - 1) * gap), np.nan)
        for r, imgs in enumerate(rows):
            for j in range(k):
                mont[r * (h + gap):r * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = imgs[j]
        import matplotlib

        cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
        ax_images.imshow(np.ma.masked_invalid(mont), cmap=cmap, vmin=0, vmax=1)
        ax_images.set_xticks([(j * (w + gap) + (w - 1) / 2) for j in range(k)])
        ax_images.set_xticklabels([f"label {int(v)}" for v in out["labels"]], fontsize=9)
        ax_images.xaxis.tick_top()
        ax_images.set_yticks([(r * (h + gap) + (h - 1) / 2) for r in range(3)])
        move = "brighter" if out["family"] == "brightness" else "right"
        ax_images.set_yticklabels(["input", f"{move} by\n{out['eps']:.2f}", "+ one draw"], fontsize=9)
        ax_images.tick_params(length=0)
        for side in ax_images.spines.values():
            side.set_visible(False)

    def _figure(self, settings):
        import matplotlib.pyplot as plt

        k = self.n_show
        fig, axes = plt.subplots(len(settings), 2, figsize=(4.6 + 0.9 * k, 3.4 * len(settings)), squeeze=False,
                                 gridspec_kw={"width_ratios": [4.0, 0.9 * k]})
        for (ax_curve, ax_images), setting in zip(axes, settings):
            self._draw(ax_curve, ax_images, self.update(*setting))
        return fig

    def snapshot(self, settings=(("brightness", "Gaussian", 0.5), ("translation", "Gaussian", 0.5))):
        """A static figure: one row per ``(family, randomization, eps)`` in ``settings``."""
        settings = [tuple(s) for s in settings]
        if not settings:
            raise ValueError("settings must hold at least one (family, randomization, eps) triple")
        for s in settings:
            if len(s) != 3:
                raise ValueError(f"settings must hold (family, randomization, eps) triples, got {s!r}")
        fig = self._figure(settings)
        fig.tight_layout()
        return fig

    def widget(self):
        """The live demo: the family, the randomization and a shift-size slider."""
        import ipywidgets as W

        family = W.ToggleButtons(options=list(self.families), value=self.families[0], description="family")
        rand = W.ToggleButtons(options=list(self.randomizations), value=next(iter(self.randomizations)),
                               description="random")
        eps = W.FloatSlider(value=float(self.eps_values[self.steps // 3]), min=0.0, max=self.eps_max,
                            step=float(self.eps_values[1]), description="shift eps", continuous_update=False,
                            readout_format=".2f")
        return live([[family, rand], [eps]], lambda: self._figure([(family.value, rand.value, eps.value)]))
