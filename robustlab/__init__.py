"""robustlab: the computing package of a course on robust machine learning.

Chapters and labs import it as ``import robustlab as rl`` and call it; every formula of
the course is implemented once, here, in the notation of the chapters.

Modules (one per concept of the course map):

* :mod:`robustlab.config` -- the profile ("quick" CPU digits / "full" GPU data sets),
  cache and data directories, progress bars.
* :mod:`robustlab.data` -- the embedded digits, torchvision data sets, synthetic data.
* :mod:`robustlab.models` -- ``Normalize`` and the architectures, device choice.
* :mod:`robustlab.train` -- the training loop, evaluation, the trained-model cache.
* :mod:`robustlab.norms` -- Lp norms, distances and projections.
* :mod:`robustlab.attacks` -- adversarial attacks (FGSM, ...).
* :mod:`robustlab.training` -- adversarial training (PGD, fast FGSM, TRADES, noise).
* :mod:`robustlab.features` -- robustness, accuracy and features (Tsipras, Ilyas,
  saliency, Schmidt).
* :mod:`robustlab.certify` -- deterministic certificates (IBP, the Kolter-Wong relaxation).
* :mod:`robustlab.smoothing` -- randomized smoothing (PixelDP, Gaussian smoothing).
* :mod:`robustlab.theory` -- limits of robustness (concentration of measure, adversarial
  spheres, the curse of dimensionality for smoothing).
* :mod:`robustlab.robuststats` -- robust statistics (median and MAD, Tukey depth and median,
  the filter for the high-dimensional mean).
* :mod:`robustlab.poisoning` -- data poisoning (label flips, backdoors), spectral signatures,
  partition-aggregation certificates (DPA, SS-DPA, Finite Aggregation).
* :mod:`robustlab.influence` -- influence functions (inverse-Hessian-vector products,
  leave-one-out comparisons, the fragility study).
* :mod:`robustlab.certificates` -- the one result type of every certifier (prediction,
  abstain, radius in a named unit, alpha, the method's statistics), certified accuracy and
  its plot.
* :mod:`robustlab.stats` -- Clopper-Pearson, the binomial test, Hoeffding, the DKW band,
  Bonferroni, the normal CDF and quantile.
* :mod:`robustlab.votes` -- vote counts, the plurality with the lower-index tie rule, the
  top two classes and the gap radius of the aggregation certificates.
* :mod:`robustlab.plot` -- shared figures.
* :mod:`robustlab.widgets` -- live lecture demos (ipywidgets) with static snapshots.
"""

from . import (attacks, certificates, certify, config, data, features, influence, models, norms, plot, poisoning,
               robuststats, smoothing, stats, theory, train, training, votes, widgets)
from .config import cache_dir, profile, set_cache_dir, set_data_dir, set_profile, set_progress

__version__ = "0.1.0"

__all__ = [
    "attacks", "certificates", "certify", "config", "data", "features", "influence", "models", "norms", "plot",
    "poisoning", "robuststats", "smoothing", "stats", "theory", "train", "training", "votes", "widgets",
    "profile", "set_profile", "cache_dir", "set_cache_dir", "set_data_dir", "set_progress",
    "__version__",
]
