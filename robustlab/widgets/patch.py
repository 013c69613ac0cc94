"""The explorers of chapter 12: a patch moved over a digit against the band votes of column
(block) smoothing, and the ablation budget k against the certified number of pixels."""

from __future__ import annotations

import numpy as np
import torch

from .._validate import (check_choice, check_images, check_labels, check_model, check_positive_int,
                         check_seed)
from ..certificates import Certificate
from ..smoothing import ablation as _ablation
from ..smoothing import patch as _patch
from ._live import live

__all__ = ["PatchVoteExplorer", "AblationBudgetExplorer"]


class PatchVoteExplorer:
    r"""Put one square patch on a digit and watch the band votes of column (block) smoothing move.

    The clean images are certified once (:func:`robustlab.smoothing.patch.certify`: counts
    :math:`n_c` over all :math:`T` bands, plurality :math:`c_1`, certified side :math:`R`).
    :meth:`update` pastes an ``side`` x ``side`` patch with its top-left corner at
    ``(row, col)`` on image ``index`` and counts the votes again on the patched image. The
    patch can be ``"white"`` (1), ``"black"`` (0), ``"noise"`` (seeded uniform values) or
    ``"adversarial"``: :func:`robustlab.attacks.patch` at that location against the
    smoothed classifier's differentiable surrogate
    (:class:`robustlab.smoothing.patch.SmoothedSurrogate`), ``steps`` signed-gradient steps.

    Only the bands that see a patched pixel can change their vote (at most
    :math:`\Delta` = :func:`~robustlab.smoothing.patch.votes_affected` of them), so when
    ``side`` :math:`\le R` the plurality cannot change, whatever the content.
    Every result is cached, so a redraw costs at most ``T`` forward passes (``steps`` times
    that for an adversarial patch, once per setting).

    Parameters
    ----------
    model : torch.nn.Module
        The base classifier on encoded bands (:func:`robustlab.smoothing.patch.base_model`).
    x, y : torch.Tensor
        Images (B, C, H, W) in [0, 1] and their labels.
    kind : {"column", "block"}
    size : int
        Band width (block side) ``s`` the model was trained for.
    theta : float or None
        Vote threshold (as in :func:`~robustlab.smoothing.patch.band_counts`).
    steps : int
        Steps of the adversarial patch.
    seed : int
        Seeds the noise and adversarial contents.

    Examples
    --------
    >>> from robustlab.smoothing import patch as SP
    >>> model = SP.build_base("mlp", "digits", width=2)
    >>> demo = PatchVoteExplorer(model, torch.rand(2, 1, 8, 8), torch.tensor([3, 5]), size=2, steps=2)
    >>> out = demo.update(index=1, row=2, col=3, side=2, content="white")
    >>> out["bands_hit"] <= out["delta"], out["delta"], out["counts"].shape
    (True, 3, torch.Size([10]))
    """

    CONTENTS = ("white", "black", "noise", "adversarial")

    def __init__(self, model, x, y, *, kind: str = "column", size: int, theta: float | None = _patch.DEFAULT_THETA,
                 steps: int = 20, seed: int = 0):
        self.model = check_model(model).eval()
        self.x = check_images(x, "x", min_dim=4).detach().cpu()
        if self.x.dim() != 4:
            raise ValueError(f"x must be images (B, C, H, W), got shape {tuple(self.x.shape)}")
        self.y = check_labels(y, "y", batch_size=self.x.shape[0]).cpu()
        self.kind = check_choice(kind, "kind", _patch.KINDS)
        self.size = check_positive_int(size, "size")
        self.theta = theta
        self.steps = check_positive_int(steps, "steps")
        self.seed = check_seed(seed)
        self.family = _patch.smoothing_family(self.kind, self.size, self.x.shape)
        self.height, self.width = self.x.shape[-2:]
        self.clean = _patch.certify(self.model, self.x, kind=self.kind, size=self.size, theta=theta, progress=False)
        self._cache: dict = {}

    def _check(self, index, row, col, side, content):
        index = check_positive_int(index, "index", allow_zero=True)
        if index >= self.x.shape[0]:
            raise ValueError(f"index must be below the {self.x.shape[0]} images, got {index}")
        side = check_positive_int(side, "side")
        if side > min(self.height, self.width):
            raise ValueError(f"side must be at most {min(self.height, self.width)}, got {side}")
        row = check_positive_int(row, "row", allow_zero=True)
        col = check_positive_int(col, "col", allow_zero=True)
        row, col = min(row, self.height - side), min(col, self.width - side)  # keep the patch inside the image
        return index, row, col, side, check_choice(content, "content", self.CONTENTS)

    def patch_mask(self, row: int, col: int, side: int) -> torch.Tensor:
        """bool (1, 1, H, W): the square of the patch."""
        mask = torch.zeros(1, 1, self.height, self.width, dtype=torch.bool)
        mask[..., row:row + side, col:col + side] = True
        return mask

    def patched(self, index: int = 0, row: int = 0, col: int = 0, side: int = 2, content: str = "white"):
        """The patched image (1, C, H, W) (a corner past the edge is moved back inside)."""
        index, row, col, side, content = self._check(index, row, col, side, content)
        x = self.x[index:index + 1]
        mask = self.patch_mask(row, col, side)
        if content == "white":
            return torch.where(mask, torch.ones_like(x), x)
        if content == "black":
            return torch.where(mask, torch.zeros_like(x), x)
        if content == "noise":
            gen = torch.Generator().manual_seed(self.seed + index)
            return torch.where(mask, torch.rand(x.shape, generator=gen), x)
        from ..attacks import patch as _patch_attack

        surrogate = _patch.SmoothedSurrogate(self.model, self.family).eval()
        return _patch_attack(surrogate, x, self.y[index:index + 1], eps=side, locations=(row, col),
                             steps=self.steps, seed=self.seed).detach()

    def update(self, index: int = 0, row: int = 0, col: int = 0, side: int = 2, content: str = "white") -> dict:
        """Votes on the clean and the patched image, and whether the certificate covers the patch."""
        key = self._check(index, row, col, side, content)
        if key not in self._cache:
            index, row, col, side, content = key
            xp = self.patched(*key)
            counts = _patch.band_counts(self.model, xp, kind=self.kind, size=self.size, theta=self.theta,
                                        progress=False)[0].cpu()
            hit = (self.family.masks()[:, 0].bool() & self.patch_mask(row, col, side)[0, 0]).flatten(1).any(1)
            prediction = int(_patch.certify_counts(counts[None], kind=self.kind, size=self.size,
                                                   shape=self.x.shape).prediction[0])
            radius = int(self.clean.radius[index])
            self._cache[key] = {
                "index": index, "row": row, "col": col, "side": side, "content": content,
                "image": xp[0], "label": int(self.y[index]),
                "clean_counts": self.clean.counts[index], "counts": counts,
                "clean_prediction": int(self.clean.prediction[index]), "prediction": prediction,
                "certified_side": radius, "covered": side <= radius,
                "changed": prediction != int(self.clean.prediction[index]),
                "bands_hit": int(hit.sum()), "hit": hit,
                "delta": _patch.votes_affected(self.kind, side, self.size, self.x.shape),
            }
        return self._cache[key]

    def _draw(self, axes, out):
        from matplotlib.patches import Rectangle

        ax = axes[0]
        ax.imshow(out["image"][0], cmap="gray", vmin=0, vmax=1)
        if self.kind == "column":  # shade the bands' first columns that see the patch
            for t in np.flatnonzero(out["hit"].numpy()):
                ax.add_patch(Rectangle((t - 0.5, self.height - 0.5), 1, 0.35, color="C1", clip_on=False))
        ax.add_patch(Rectangle((out["col"] - 0.5, out["row"] - 0.5), out["side"], out["side"], fill=False,
                               edgecolor="C3", lw=2))
        ax.set_xticks([])
        ax.set_yticks([])
        what = "bands" if self.kind == "column" else "blocks"
        ax.set_title(f"label {out['label']}, {out['content']} {out['side']}x{out['side']} patch\n"
                     f"{out['bands_hit']} of {len(self.family)} {what} see it (bound Δ = {out['delta']})",
                     fontsize=9)

        ax = axes[1]
        classes = np.arange(out["counts"].shape[0])
        ax.bar(classes - 0.2, out["clean_counts"].numpy(), width=0.4, color="0.6", label="clean")
        ax.bar(classes + 0.2, out["counts"].numpy(), width=0.4, color="C3" if out["changed"] else "C0",
               label="patched")
        ax.set_xticks(classes)
        ax.set_xlabel("class")
        ax.set_ylabel(f"votes of the {len(self.family)} {what}")
        ax.set_ylim(0, len(self.family) * 1.05)
        ax.legend(fontsize=7, loc="upper right")
        verdict = ("covered by the certificate" if out["covered"]
                   else "beyond the certified side")
        ax.set_title(f"clean {out['clean_prediction']} (certified side {out['certified_side']}), "
                     f"patched {out['prediction']}\nside {out['side']}: {verdict}", fontsize=9,
                     color="C3" if out["changed"] else "k")

    def snapshot(self, settings=((0, 2, 2, 1, "adversarial"), (0, 2, 2, 3, "adversarial"))):
        """A static figure: one row per ``(index, row, col, side, content)`` in ``settings``."""
        import matplotlib.pyplot as plt

        settings = list(settings)
        if not settings:
            raise ValueError("settings must hold at least one (index, row, col, side, content) tuple")
        fig, axes = plt.subplots(len(settings), 2, figsize=(8.5, 3.1 * len(settings)), squeeze=False,
                                 gridspec_kw={"width_ratios": [1, 2]})
        for row_axes, setting in zip(axes, settings):
            self._draw(row_axes, self.update(*setting))
        fig.tight_layout()
        return fig

    def widget(self, *, index: int = 0, side: int = 2, content: str = "white"):
        """The live demo: sliders for the image, the patch's row, column and side, and its content."""
        import ipywidgets as W
        import matplotlib.pyplot as plt

        top = min(self.height, self.width)
        image = W.IntSlider(value=index, min=0, max=self.x.shape[0] - 1, description="image",
                            continuous_update=False)
        row = W.IntSlider(value=0, min=0, max=self.height - 1, description="row", continuous_update=False)
        col = W.IntSlider(value=0, min=0, max=self.width - 1, description="column", continuous_update=False)
        size = W.IntSlider(value=min(side, top), min=1, max=top, description="side", continuous_update=False)
        fill = W.Dropdown(options=list(self.CONTENTS), value=check_choice(content, "content", self.CONTENTS),
                          description="content")

        def draw():
            fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.1), gridspec_kw={"width_ratios": [1, 2]})
            self._draw(axes, self.update(image.value, row.value, col.value, size.value, fill.value))
            return fig

        return live([[image, fill], [row, col, size]], draw)


class AblationBudgetExplorer:
    r"""The ablation budget :math:`k` against the certified number of pixels, from precomputed certificates.

    ``certificates`` maps each trained :math:`k` to the randomized-ablation certificate of
    the same images (:func:`robustlab.smoothing.ablation.certify`). :meth:`update` returns
    the certified-accuracy curve of that :math:`k`, the bound
    :math:`\underline{p_A} > 1/2 + \Delta(\rho)` needed for each radius
    (:func:`~robustlab.smoothing.ablation.p_lower_needed`), and one ablated view of image
    ``index``: ``k`` kept pixels drawn from ``seed`` (:func:`~robustlab.smoothing.ablation.random_masks`).
    Nothing is certified while the demo runs, so every redraw is cheap.

    Parameters
    ----------
    certificates : dict
        ``{k: Certificate}`` of method ``"ablation"``, all on the images ``x``.
    x, y : torch.Tensor
        The certified images (B, C, H, W) and their labels.
    seed : int
        Seeds the kept pixels shown.

    Examples
    --------
    >>> from robustlab.smoothing import ablation as SA
    >>> x, y = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2])
    >>> model = SA.build("mlp", "digits", width=2)
    >>> certs = {k: SA.certify(model, x, k=k, n0=10, n=50) for k in (5, 20)}
    >>> out = AblationBudgetExplorer(certs, x, y).update(k=5, index=1)
    >>> out["k"], int(out["kept"].sum()), len(out["radii"]) == len(out["certified_accuracy"])
    (5, 5, True)
    """

    def __init__(self, certificates: dict, x, y, *, seed: int = 0):
        if not isinstance(certificates, dict) or not certificates:
            raise TypeError("certificates must be a non-empty dict {k: Certificate}")
        self.x = check_images(x, "x", min_dim=4).detach().cpu()
        if self.x.dim() != 4:
            raise ValueError(f"x must be images (B, C, H, W), got shape {tuple(self.x.shape)}")
        self.y = check_labels(y, "y", batch_size=self.x.shape[0]).cpu()
        self.d = int(self.x.shape[2] * self.x.shape[3])
        self.certificates = {}
        for k, cert in certificates.items():
            k = check_positive_int(k, "k (a key of certificates)")
            if not isinstance(cert, Certificate) or not cert.method.startswith("ablation"):
                raise TypeError(f"certificates[{k}] must be a randomized-ablation Certificate")
            if len(cert) != self.x.shape[0]:
                raise ValueError(f"certificates[{k}] holds {len(cert)} inputs, x holds {self.x.shape[0]}")
            self.certificates[k] = cert
        self.seed = check_seed(seed)
        self.ks = sorted(self.certificates)
        top = max(int(c.radius.max()) for c in self.certificates.values())
        self.radii = list(range(0, max(top, max(_ablation.max_radius(self.d, k) for k in self.ks)) + 2))

    def update(self, k: int, index: int = 0) -> dict:
        """What the demo shows for budget ``k`` and image ``index``."""
        k = check_positive_int(k, "k")
        if k not in self.certificates:
            raise ValueError(f"k must be one of the certified budgets {self.ks}, got {k}")
        index = check_positive_int(index, "index", allow_zero=True)
        if index >= self.x.shape[0]:
            raise ValueError(f"index must be below the {self.x.shape[0]} images, got {index}")
        cert = self.certificates[k]
        gen = torch.Generator().manual_seed(self.seed + index)
        kept = _ablation.random_masks(1, self.x.shape[2:], k, generator=gen)[0]
        return {
            "k": k, "index": index, "kept": kept, "image": self.x[index],
            "radii": self.radii, "certified_accuracy": cert.certified_accuracy(self.y, self.radii).tolist(),
            "needed": _ablation.p_lower_needed(self.radii[1:], self.d, k).tolist(),
            "max_radius": _ablation.max_radius(self.d, k),
            "prediction": int(cert.prediction[index]), "radius": int(cert.radius[index]),
            "pA_lower": float(cert.pA_lower[index]), "label": int(self.y[index]),
        }

    def _draw(self, axes, out):
        ax = axes[0]
        for k in self.ks:
            acc = self.certificates[k].certified_accuracy(self.y, self.radii)
            bold = k == out["k"]
            ax.step(self.radii, acc, where="post", lw=2.2 if bold else 1, alpha=1 if bold else 0.45,
                    label=f"k = {k}")
        ax.set_xlabel("changed pixels ρ")
        ax.set_ylabel("certified accuracy")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
        ax.set_title(f"k = {out['k']} of d = {self.d}: at most ρ = {out['max_radius']} even at p_A = 1",
                     fontsize=9)

        ax = axes[1]
        img = out["image"][0].numpy()
        shown = np.where(out["kept"].numpy(), img, np.nan)
        from matplotlib import colormaps, colors

        cmap = colormaps["gray"].with_extremes(bad=colors.to_rgba("C1", 0.35))
        ax.imshow(shown, cmap=cmap, vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        pred = "abstain" if out["prediction"] < 0 else f"class {out['prediction']}"
        ax.set_title(f"one draw of k = {out['k']} kept pixels (orange: NULL)\nlabel {out['label']}: {pred}, "
                     f"p_A ≥ {out['pA_lower']:.3f}, {out['radius']} px certified", fontsize=9)

    def snapshot(self, ks=None, index: int = 0):
        """A static figure: one row per budget in ``ks`` (default: every certified one)."""
        import matplotlib.pyplot as plt

        ks = self.ks if ks is None else list(ks)
        if not ks:
            raise ValueError("ks must hold at least one budget")
        fig, axes = plt.subplots(len(ks), 2, figsize=(8.5, 3.0 * len(ks)), squeeze=False,
                                 gridspec_kw={"width_ratios": [2, 1]})
        for row, k in zip(axes, ks):
            self._draw(row, self.update(k, index))
        fig.tight_layout()
        return fig

    def widget(self, *, index: int = 0):
        """The live demo: a slider over the certified budgets k and one over the images."""
        import ipywidgets as W
        import matplotlib.pyplot as plt

        k = W.SelectionSlider(options=self.ks, value=self.ks[0], description="k", continuous_update=False)
        image = W.IntSlider(value=index, min=0, max=self.x.shape[0] - 1, description="image",
                            continuous_update=False)

        def draw():
            fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.0), gridspec_kw={"width_ratios": [2, 1]})
            self._draw(axes, self.update(k.value, image.value))
            return fig

        return live([[k, image]], draw)
