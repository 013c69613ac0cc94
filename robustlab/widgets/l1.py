"""The DSSN explorer of chapter 13: the split images of a digit, their votes and the certified L1 radius."""

from __future__ import annotations

import numpy as np
import torch

from .._validate import check_images, check_labels, check_model, check_positive_int, check_seed
from ..smoothing import l1 as _l1
from ..smoothing import sampling as _sampling
from .. import models as _models
from .. import votes as _votes
from ._live import live

__all__ = ["DSSNExplorer"]


class DSSNExplorer:
    r"""Deterministic L1 smoothing (DSSN) of a few grid inputs, every offset evaluated once.

    At construction every input is passed through the base classifier under each of the
    :math:`L = \lfloor 2\lambda q \rfloor` offsets of
    :meth:`robustlab.smoothing.l1.SplitFamily.dssn` (``L`` forward passes per input, with
    :func:`robustlab.smoothing.sampling.enumerate_votes`), so every redraw only looks
    results up. For an input and an offset the demo shows the input, the split images of
    a few offsets starting at the chosen one, which class each offset voted for, the vote
    counts with the top two classes, and the certified L1 radius
    :math:`\lfloor (n_{c_1} - n_{c_2} - [c_2 < c_1])/2 \rfloor / q` of
    :func:`robustlab.smoothing.l1.certify_dssn_counts`.

    Parameters
    ----------
    model : torch.nn.Module
        DSSN base classifier trained at ``lam`` and ``q`` with template ``seed``.
    x, y : torch.Tensor
        Inputs (B, ...) on the grid ``{0, 1/q, ..., 1}`` and their labels.
    lam : float
        :math:`\lambda`.
    q : int
        The quantization grid.
    seed : int
        The template's seed.
    shown : int
        How many split images to show (consecutive offsets from the chosen one).

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> demo = DSSNExplorer(model, torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), lam=0.5, q=16)
    >>> out = demo.update(index=1, offset=3)
    >>> sorted(out)
    ['certificate_radius', 'counts', 'index', 'label', 'offset', 'offsets', 'prediction', 'radius_steps', 'runner_up', 'split_images', 'votes']
    >>> int(out["counts"].sum()), out["offsets"]
    (16, [3, 4, 5])
    """

    def __init__(self, model, x, y, *, lam: float, q: int, seed: int = 0, shown: int = 3, batch_size: int = 1000):
        self.model = check_model(model)
        self.x = check_images(x, "x").detach().cpu()
        self.y = check_labels(y, "y", batch_size=self.x.shape[0]).cpu()
        self.q = check_positive_int(q, "q")
        _l1.check_quantized(self.x, self.q, "x")
        self.lam = float(lam)
        self.seed = check_seed(seed)
        self.family = _l1.SplitFamily.dssn(self.lam, self.q, seed=self.seed)
        self.shown = min(check_positive_int(shown, "shown"), len(self.family))
        self.votes = _sampling.enumerate_votes(self.model, self.x, self.family, mode="votes",
                                               batch_size=check_positive_int(batch_size, "batch_size"),
                                               progress=False).cpu()
        with _models.eval_mode(self.model), torch.no_grad():
            n_classes = int(self.model(_models.to_model(self.model, self.x[:1])).shape[1])
        self.counts = _votes.vote_counts(self.votes, max(n_classes, 2))
        self.certificate = _l1.certify_dssn_counts(self.counts, q=self.q,
                                                   stats={"lam": self.lam, "n_offsets": len(self.family),
                                                          "seed": self.seed})
        self._top = _votes.top_two(self.counts)

    @property
    def n_offsets(self) -> int:
        """L, the number of offsets (forward passes per input)."""
        return len(self.family)

    def update(self, index: int = 0, offset: int = 0) -> dict:
        """What the demo shows for input ``index`` with the split images from ``offset`` on."""
        index = check_positive_int(index, "index", allow_zero=True)
        offset = check_positive_int(offset, "offset", allow_zero=True)
        if index >= len(self.y):
            raise ValueError(f"index must be below the number of inputs {len(self.y)}, got {index}")
        if offset >= self.n_offsets:
            raise ValueError(f"offset must be below the number of offsets L = {self.n_offsets}, got {offset}")
        offsets = [(offset + k) % self.n_offsets for k in range(self.shown)]
        xi = self.x[index:index + 1]
        images = torch.cat([self.family.represent(xi, o) for o in offsets])
        return {
            "index": index, "offset": offset, "offsets": offsets, "label": int(self.y[index]),
            "split_images": images, "votes": self.votes[index], "counts": self.counts[index],
            "prediction": int(self._top.c1[index]), "runner_up": int(self._top.c2[index]),
            "radius_steps": int(self.certificate.radius_steps[index]),
            "certificate_radius": float(self.certificate.radius[index]),
        }

    def _draw(self, axes, out):
        shape = self.x.shape[1:]

        def show(ax, img, title):
            img = img.reshape(shape).numpy()
            ax.imshow(img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8)

        show(axes[0], self.x[out["index"]], f"input {out['index']} (label {out['label']})")
        for k, (o, img) in enumerate(zip(out["offsets"], out["split_images"])):
            show(axes[1 + k], img, f"offset {o}: votes {int(out['votes'][o])}")
        ax = axes[1 + self.shown]
        counts = out["counts"].numpy()
        colors = ["0.7"] * len(counts)
        colors[out["runner_up"]] = "C1"
        colors[out["prediction"]] = "C0"
        ax.bar(np.arange(len(counts)), counts, color=colors)
        ax.set_xticks(np.arange(len(counts)))
        ax.set_xlabel("class", fontsize=8)
        ax.set_ylabel(f"votes of the L = {self.n_offsets} offsets", fontsize=8)
        ax.set_title(f"predicts {out['prediction']}: radius {out['radius_steps']}/{self.q} = "
                     f"{out['certificate_radius']:.3g} (L1)", fontsize=8)
        ax = axes[2 + self.shown]
        votes = out["votes"].numpy()
        ax.scatter(np.arange(len(votes)), votes, s=10, c=np.where(votes == out["prediction"], "C0", "C3"))
        for o in out["offsets"]:
            ax.axvline(o, color="0.8", lw=3, zorder=0)
        ax.set_ylim(-0.5, len(counts) - 0.5)
        ax.set_xlabel("offset", fontsize=8)
        ax.set_ylabel("vote", fontsize=8)
        ax.set_title("each offset's vote (shown offsets shaded)", fontsize=8)

    def _axes(self, fig, rows):
        import matplotlib.gridspec as gridspec

        grid = gridspec.GridSpec(rows, self.shown + 3, figure=fig,
                                 width_ratios=[1] * (self.shown + 1) + [2.2, 2.2])
        return [[fig.add_subplot(grid[r, c]) for c in range(self.shown + 3)] for r in range(rows)]

    def snapshot(self, settings=((0, 0),)):
        """A static figure: one row per ``(index, offset)`` in ``settings`` (for the printed book)."""
        import matplotlib.pyplot as plt

        settings = list(settings)
        if not settings:
            raise ValueError("settings must hold at least one (index, offset) pair")
        fig = plt.figure(figsize=(2.0 * (self.shown + 1) + 8, 2.6 * len(settings)))
        for row, (index, offset) in zip(self._axes(fig, len(settings)), settings):
            self._draw(row, self.update(index, offset))
        fig.tight_layout()
        return fig

    def widget(self):
        """The live demo: a slider for the input and one for the first offset shown."""
        import ipywidgets as W
        import matplotlib.pyplot as plt

        index = W.IntSlider(value=0, min=0, max=len(self.y) - 1, description="input", continuous_update=False)
        offset = W.IntSlider(value=0, min=0, max=self.n_offsets - 1, description="offset", continuous_update=False)

        def draw():
            fig = plt.figure(figsize=(2.0 * (self.shown + 1) + 8, 2.8))
            self._draw(self._axes(fig, 1)[0], self.update(index.value, offset.value))
            return fig

        return live([[index, offset]], draw)
