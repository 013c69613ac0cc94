r"""The Lethal Dose Conjecture (Wang, Levine and Feizi, 2022) made visible: DPA's certificate
against the number of partitions, per base learner, and the median certified radius.
"""

from __future__ import annotations

from numbers import Integral
from typing import NamedTuple

import torch

from .. import config
from ..certificates import Certificate
from .._validate import check_labels, check_positive_int, check_xy
from .ensemble import train_dpa

__all__ = ["median_radius", "LethalDoseStudy", "lethal_dose_study"]


def median_radius(cert: Certificate, y: torch.Tensor) -> float:
    """Median certified poison size over the test set, a wrong prediction counting as 0.

    Levine and Feizi's summary number ("median certified robustness"). A misclassified
    input is certified for nothing, so it counts below every radius; with more than half
    of the inputs misclassified the median is 0.
    """
    if not isinstance(cert, Certificate):
        raise TypeError(f"cert must be a robustlab.certificates.Certificate, got {type(cert).__name__}")
    check_labels(y, "y", batch_size=len(cert))
    correct = cert.correct(y)
    r = torch.where(correct, cert.radius, torch.full_like(cert.radius, -1))
    return float(r.double().median().clamp_min(0))


class LethalDoseStudy(NamedTuple):
    """What :func:`lethal_dose_study` measured: one row per (learner, k).

    ``rows`` are dicts with ``learner``, ``k``, ``samples_per_model`` (N / k),
    ``base_accuracy`` (mean test accuracy of one base model), ``clean_accuracy`` (of the
    vote), ``median_radius`` (:func:`median_radius`) and ``certified`` (``{r: certified
    accuracy at poison size r}`` for every ``r`` in ``radii``, from
    :meth:`Certificate.certified_accuracy <robustlab.certificates.Certificate.certified_accuracy>`).
    """

    rows: list
    radii: tuple
    n_train: int

    def learners(self) -> list:
        return list(dict.fromkeys(r["learner"] for r in self.rows))

    def of(self, learner: str) -> list:
        """The rows of one learner, in increasing k."""
        if learner not in self.learners():
            raise ValueError(f"learner must be one of {self.learners()}, got {learner!r}")
        return sorted((r for r in self.rows if r["learner"] == learner), key=lambda r: r["k"])

    def table(self) -> str:
        """The rows as an aligned text table."""
        head = (f"{'learner':<28}{'k':>5}{'N/k':>7}{'base acc':>10}{'DPA acc':>9}{'median r':>10}"
                + "".join(f"{'cert@' + str(r):>9}" for r in self.radii))
        lines = [head]
        for row in self.rows:
            lines.append(f"{row['learner']:<28}{row['k']:>5}{row['samples_per_model']:>7.0f}"
                         f"{row['base_accuracy']:>10.3f}{row['clean_accuracy']:>9.3f}{row['median_radius']:>10.0f}"
                         + "".join(f"{row['certified'][r]:>9.3f}" for r in self.radii))
        return "\n".join(lines)

    def plot(self, *, radius: int | None = None, figsize=(11, 3.6)):
        """Two panels: data efficiency (base accuracy against samples per model) and the
        certificate against k (median radius, the k / 2 ceiling, and the certified
        accuracy at ``radius``, default the largest of ``radii``). Returns the figure."""
        import matplotlib.pyplot as plt

        radius = max(self.radii) if radius is None else radius
        if radius not in self.radii:
            raise ValueError(f"radius must be one of the study's radii {self.radii}, got {radius}")
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=figsize)
        ax2 = ax1.twinx()
        for i, name in enumerate(self.learners()):
            rows = self.of(name)
            ks = [r["k"] for r in rows]
            ax0.semilogx([r["samples_per_model"] for r in rows], [r["base_accuracy"] for r in rows], "o-",
                         color=f"C{i}", label=name)
            ax1.plot(ks, [r["median_radius"] for r in rows], "o-", color=f"C{i}", label=f"{name}: median radius")
            ax2.plot(ks, [r["certified"][radius] for r in rows], "s--", color=f"C{i}", alpha=0.7,
                     label=f"{name}: certified at r = {radius}")
        all_k = sorted({r["k"] for r in self.rows})
        ax1.plot(all_k, [k / 2 for k in all_k], "k:", label="k / 2 (the ceiling)")
        per_model = sorted({r["samples_per_model"] for r in self.rows})
        ax0.set_xticks(per_model, [f"{n:.0f}" for n in per_model])
        ax0.minorticks_off()
        ax1.set_ylim(bottom=0)
        ax0.set_xlabel("samples per base model N / k (log scale)")
        ax0.set_ylabel("test accuracy of one base model")
        ax0.set_ylim(0, 1.02)
        ax0.legend(fontsize=8)
        ax0.set_title("data efficiency of the base learner", fontsize=10)
        ax1.set_xlabel("number of partitions k")
        ax1.set_ylabel("poisoned samples")
        ax2.set_ylabel(f"certified accuracy at r = {radius}")
        ax2.set_ylim(0, 1.02)
        ax1.legend(loc="upper left", fontsize=7)
        ax2.legend(loc="lower right", fontsize=7)
        ax1.set_title("DPA's certificate against k", fontsize=10)
        fig.tight_layout()
        return fig


def lethal_dose_study(train, test, ks=(10, 25, 50, 100), learners: dict | None = None, *, radii=(5, 10, 20),
                      arch: str = "mlp", width: int | None = 2, epochs: int = 100, seed: int = 0,
                      cache: bool = True, progress: bool | None = None) -> LethalDoseStudy:
    r"""The Lethal Dose Conjecture made visible: DPA's certificate against k, per base learner.

    Wang, Levine and Feizi (2022) conjecture that if a learner needs :math:`n` clean samples
    to be accurate, no defense tolerates more than :math:`\Theta(N/n)` poisoned samples of a
    size-:math:`N` training set, and DPA reaches this order with :math:`k \approx N/n`.
    The lever is the base learner's *data efficiency*: a learner that is accurate on fewer
    samples allows more partitions at the same accuracy, hence larger certificates; their
    example is giving the base models data augmentation. For every learner and every k
    this trains a DPA ensemble (:func:`train_dpa`, vectorized, cached) and measures the
    base models' accuracy, the vote's accuracy, the median certified radius and the
    certified accuracy at each of ``radii``.

    Parameters
    ----------
    train, test : Split
    ks : sequence of int
        Numbers of partitions.
    learners : dict, optional
        ``{name: train_dpa keyword arguments}``, e.g. ``{"MLP": {}, "MLP + affine":
        {"augment": "affine"}}`` (the default; ``arch``, ``width``, ``epochs`` and ``seed``
        below are the shared defaults a learner may override).
    radii : sequence of int
        Poison sizes at which to report certified accuracy.
    cache, progress : bool
        Cache every ensemble on disk; show a progress bar over the trainings.

    Returns
    -------
    LethalDoseStudy
    """
    x, y = check_xy(train, "train")
    xt, yt = check_xy(test, "test")
    ks = (ks,) if isinstance(ks, Integral) and not isinstance(ks, bool) else tuple(ks)
    if not ks:
        raise ValueError("ks must hold at least one number of partitions")
    for k in ks:
        check_positive_int(k, "ks")
    radii = tuple(radii) if not isinstance(radii, int) else (radii,)
    for r in radii:
        check_positive_int(r, "radii", allow_zero=True)
    if learners is None:
        learners = {"MLP": {}, "MLP + affine augmentation": {"augment": "affine"}}
    if not isinstance(learners, dict) or not learners:
        raise TypeError("learners must be a non-empty dict {name: train_dpa keyword arguments}")
    for name, kw in learners.items():
        if not isinstance(kw, dict):
            raise TypeError(f"learners[{name!r}] must be a dict of train_dpa keyword arguments, "
                            f"got {type(kw).__name__}")
        if "k" in kw or "d" in kw:
            raise ValueError(f"learners[{name!r}] must not set k or d (the study varies k; d is 1)")
    rows = []
    bar = config.progress_bar(len(learners) * len(ks), "Lethal Dose study", config.progress_enabled(progress),
                              unit="ensemble")
    try:
        for name, kw in learners.items():
            settings = dict(arch=arch, width=width, epochs=epochs, seed=seed, cache=cache, progress=False)
            settings.update(kw)
            for k in ks:
                ens = train_dpa((x, y), k, **settings)
                cert = ens.certify(xt)
                rows.append({
                    "learner": name, "k": k, "samples_per_model": x.shape[0] / k,
                    "base_accuracy": float(ens.base_accuracy((xt, yt)).mean()),
                    "clean_accuracy": cert.certified_accuracy(yt, at=0),
                    "median_radius": median_radius(cert, yt),
                    "certified": dict(zip(radii, cert.certified_accuracy(yt, at=list(radii)).tolist())),
                })
                bar.update(1)
                bar.set_postfix({"learner": name, "k": k})
    finally:
        bar.close()
    return LethalDoseStudy(rows, radii, x.shape[0])
