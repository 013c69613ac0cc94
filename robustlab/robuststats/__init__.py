r"""Robust statistics: estimating a mean when a fraction of the data is adversarial (chapter 9).

The model of contamination (Huber): draw :math:`n` samples from :math:`\mathcal{N}(\mu, I_d)`,
then let an adversary replace an :math:`\varepsilon` fraction of them by arbitrary points.
What can an estimator still say about :math:`\mu`? The fraction :math:`\varepsilon` is the
argument ``rate`` of every function here (as the poison fraction of :mod:`robustlab.poisoning`;
``eps`` is a threat radius elsewhere in the package).

1. **One dimension.** The mean and the standard deviation follow an
   :math:`\varepsilon`-bump to infinity; the median and the MAD move by
   :math:`O(\varepsilon)` however far the bump goes: :func:`mean`, :func:`std`,
   :func:`median`, :func:`mad`, :func:`trimmed_mean`, :func:`eps_bump`,
   :func:`eps_bump_experiment`.
2. **High dimension.** The mean, the coordinate-wise median and the geometric median all
   move by :math:`\Theta(\varepsilon\sqrt{d})` under a cluster of outliers in one
   direction: :func:`coordinatewise_median`, :func:`geometric_median`, :func:`corrupt`.
3. **Tukey depth and the Tukey median** (Tukey, 1975): robust in every direction at once,
   exact in the plane (:func:`tukey_depth`, :func:`tukey_median`), NP-hard in general
   (Johnson and Preparata, 1978), approximated here with random directions.
4. **The filter** (Diakonikolas, Kamath, Kane, Li, Moitra, Stewart, 2016): outliers that
   move the mean must inflate the variance in some direction; find it with the top
   eigenvector and remove the tail there. Error :math:`O(\varepsilon\sqrt{\log 1/\varepsilon})`,
   independent of :math:`d`: :func:`filter_mean` (one round: :func:`filter_step`),
   :func:`compare_mean_estimators`.

Samples are float torch tensors, ``(n,)`` or ``(n, d)``, samples along the first
dimension; every estimator works column by column where that makes sense and is
vectorized over the columns.

One module per concept: :mod:`~robustlab.robuststats.estimators` (1 and 2),
:mod:`~robustlab.robuststats.corruption` (the contamination models),
:mod:`~robustlab.robuststats.tukey` (3), :mod:`~robustlab.robuststats.filter` and
:mod:`~robustlab.robuststats.compare` (4); every name is also here (``rl.robuststats.median``).
"""

from __future__ import annotations

from .estimators import MAD_SCALE, mean, std, median, mad, trimmed_mean, coordinatewise_median, geometric_median
from .corruption import Corrupted, eps_bump, corrupt, BumpExperiment, eps_bump_experiment
from .tukey import tukey_depth, TukeyMedian, tukey_median
from .filter import FilterStep, FilterResult, filter_mean, filter_step
from .compare import MeanErrors, ESTIMATORS, compare_mean_estimators

__all__ = [
    "MAD_SCALE",
    "mean",
    "std",
    "median",
    "mad",
    "trimmed_mean",
    "coordinatewise_median",
    "geometric_median",
    "Corrupted",
    "eps_bump",
    "corrupt",
    "BumpExperiment",
    "eps_bump_experiment",
    "tukey_depth",
    "TukeyMedian",
    "tukey_median",
    "FilterStep",
    "FilterResult",
    "filter_step",
    "filter_mean",
    "MeanErrors",
    "compare_mean_estimators",
]
