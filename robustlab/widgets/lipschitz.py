"""The CONV-SV explorer of chapter 15: a kernel's four reshape bounds against its exact spectral norm."""

from __future__ import annotations

import torch

from .._validate import check_interval, check_positive_int, check_seed
from ..lipschitz import conv as _conv
from ._live import live

__all__ = ["ConvBoundExplorer"]


class ConvBoundExplorer:
    r"""A kernel blended towards equal taps, its CONV-SV bounds and its exact norms.

    For a kernel :math:`K` and a blend :math:`t \in [0, 1]`, the demo uses
    :math:`K_t = (1 - t) K + t \bar K`, where :math:`\bar K` has every tap equal to the mean
    tap :math:`\frac{1}{hw}\sum_{p,q} K_{:,:,p,q}` (the case where the bound is exact under
    circular padding). It shows the tap norms :math:`\|K_{t,:,:,p,q}\|_2`, the four bounds
    :math:`\sqrt{hw}\|R_i\|_2` of :func:`robustlab.lipschitz.conv.conv_sv_bound` and the exact
    norms on :math:`n \times n` inputs with zero and circular padding
    (:func:`robustlab.lipschitz.conv.exact_conv_norm`).

    Parameters
    ----------
    kernels : dict name -> tensor (c_out, c_in, k, k), optional
        The kernels to choose from (odd k); default: a random 4x4x3x3 kernel (seeded) and a
        random 4x4x5x5 one.
    seed : int
        Seed of the default kernels.

    Examples
    --------
    >>> demo = ConvBoundExplorer()
    >>> out = demo.update("random 3x3", mix=1.0, n=8)
    >>> sorted(out)
    ['best', 'bound', 'bounds', 'circular', 'mix', 'n', 'name', 'tap_norms', 'zeros']
    >>> abs(out["bound"] - out["circular"]) < 1e-9 * out["bound"]  # equal taps: the bound is exact
    True
    """

    def __init__(self, kernels: dict | None = None, *, seed: int = 0):
        if kernels is None:
            gen = torch.Generator().manual_seed(check_seed(seed))
            kernels = {f"random {k}x{k}": torch.randn(4, 4, k, k, generator=gen, dtype=torch.float64)
                       for k in (3, 5)}
        if not isinstance(kernels, dict) or not kernels:
            raise ValueError("kernels must be a non-empty dict name -> kernel (c_out, c_in, k, k)")
        self.kernels = {}
        for name, K in kernels.items():
            K = _conv._kernel_of(K, f"kernels[{name!r}]").detach().double().cpu()
            if K.shape[2] != K.shape[3] or K.shape[2] % 2 == 0:
                raise ValueError(f"kernels[{name!r}] must be square and odd (k x k), got {tuple(K.shape)}")
            self.kernels[str(name)] = K

    def kernel(self, name: str, mix: float = 0.0) -> torch.Tensor:
        """The blended kernel :math:`K_t`."""
        if name not in self.kernels:
            raise ValueError(f"name must be one of {sorted(self.kernels)}, got {name!r}")
        mix = check_interval(mix, "mix", 0.0, 1.0)
        K = self.kernels[name]
        equal = K.mean(dim=(2, 3), keepdim=True).expand_as(K)
        return (1 - mix) * K + mix * equal

    def update(self, name: str | None = None, mix: float = 0.0, n: int = 8) -> dict:
        """What the demo shows for kernel ``name`` blended by ``mix`` on ``n`` x ``n`` inputs."""
        name = next(iter(self.kernels)) if name is None else name
        K = self.kernel(name, mix)
        n = check_positive_int(n, "n")
        k = K.shape[2]
        if n < k:
            raise ValueError(f"n must be at least the kernel size {k}, got {n}")
        b = _conv.conv_sv_bound(K)
        shape = (K.shape[1], n, n)
        return {
            "name": name, "mix": float(mix), "n": n,
            "tap_norms": torch.linalg.matrix_norm(K.permute(2, 3, 0, 1), ord=2).numpy(),
            "bounds": b.bounds, "bound": b.value, "best": b.best,
            "zeros": _conv.exact_conv_norm(K, shape, padding=k // 2).value,
            "circular": _conv.exact_conv_norm(K, shape, padding=k // 2, padding_mode="circular").value,
        }

    def _draw(self, axes, out):
        ax = axes[0]
        im = ax.imshow(out["tap_norms"], cmap="viridis", vmin=0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{out['name']}, blend {out['mix']:.2f}:\nnorm of each tap", fontsize=8)
        ax.figure.colorbar(im, ax=ax, fraction=0.046)
        ax = axes[1]
        labels = ["R1", "R2", "R3", "R4"]
        colors = ["C0" if abs(v - out["bound"]) > 1e-12 * out["bound"] else "C2" for v in out["bounds"]]
        ax.bar(labels, out["bounds"], color=colors, label="sqrt(hw) ||R_i|| (bounds)")
        ax.axhline(out["circular"], color="C3", lw=2, label=f"exact, circular: {out['circular']:.3g}")
        ax.axhline(out["zeros"], color="k", ls="--", lw=1.5, label=f"exact, zero padding: {out['zeros']:.3g}")
        ax.set_ylim(0, 1.15 * max(out["bounds"]))
        ax.set_ylabel("spectral norm", fontsize=8)
        ax.set_title(f"bound {out['bound']:.3g} = {out['bound'] / out['circular']:.2f} x exact "
                     f"(n = {out['n']})", fontsize=8)
        ax.legend(fontsize=7, loc="lower right")

    def snapshot(self, settings=((None, 0.0), (None, 0.5), (None, 1.0)), n: int = 8):
        """A static figure: one panel pair per ``(name, mix)`` in ``settings`` (for the printed book)."""
        import matplotlib.pyplot as plt

        settings = list(settings)
        if not settings:
            raise ValueError("settings must hold at least one (name, mix) pair")
        fig, axes = plt.subplots(1, 2 * len(settings), figsize=(4.2 * len(settings), 3.2),
                                 gridspec_kw={"width_ratios": [1, 1.6] * len(settings)})
        for i, (name, mix) in enumerate(settings):
            self._draw(axes[2 * i:2 * i + 2], self.update(name, mix, n))
        fig.tight_layout()
        return fig

    def widget(self, n_max: int = 16):
        """The live demo: the kernel, the blend towards equal taps, the input size."""
        import ipywidgets as W
        import matplotlib.pyplot as plt

        names = list(self.kernels)
        k_max = max(K.shape[2] for K in self.kernels.values())
        name = W.Dropdown(options=names, value=names[0], description="kernel")
        mix = W.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.05, description="blend", continuous_update=False)
        n = W.IntSlider(value=max(8, k_max), min=k_max, max=max(check_positive_int(n_max, "n_max"), k_max),
                        description="n", continuous_update=False)

        def draw():
            fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.2), gridspec_kw={"width_ratios": [1, 1.6]})
            self._draw(axes, self.update(name.value, mix.value, n.value))
            return fig

        return live([[name, mix, n]], draw)
