"""robustlab: the computing package of a course on robust machine learning.

Chapters and labs import it as ``import robustlab as rl`` and call it; every formula of
the course is implemented once, here, in the notation of the chapters.

Modules (one per concept of the course map):

* :mod:`robustlab.config` -- the profile ("quick" CPU digits / "full" GPU data sets),
  cache and data directories, progress bars, torch's thread count.
* :mod:`robustlab.data` -- the embedded digits, torchvision data sets, synthetic data.
* :mod:`robustlab.models` -- ``Normalize`` and the architectures, device choice.
* :mod:`robustlab.train` -- the training loop, evaluation, the training step and ramp of losses.
* :mod:`robustlab.cache` -- the content-addressed on-disk cache of models and ensembles.
* :mod:`robustlab.zoo` -- every trained model of the chapters and labs as a named recipe.
* :mod:`robustlab.norms` -- Lp norms, distances and projections.
* :mod:`robustlab.attacks` -- adversarial attacks (FGSM, ...).
* :mod:`robustlab.training` -- adversarial training (PGD, fast FGSM, TRADES, noise).
* :mod:`robustlab.features` -- robustness, accuracy and features (Tsipras, Ilyas,
  saliency, Schmidt).
* :mod:`robustlab.certify` -- deterministic certificates (IBP, the Kolter-Wong relaxation).
* :mod:`robustlab.smoothing` -- randomized smoothing (PixelDP, Gaussian smoothing; SSN and
  DSSN for L1, Wasserstein smoothing, fractional Lp).
* :mod:`robustlab.patch_detection` -- Segment and Complete: a patch segmenter, the square
  completion and the conditional guarantee it gives against patches.
* :mod:`robustlab.theory` -- limits of robustness (concentration of measure, adversarial
  spheres, the curse of dimensionality for smoothing).
* :mod:`robustlab.robuststats` -- robust statistics (median and MAD, Tukey depth and median,
  the filter for the high-dimensional mean).
* :mod:`robustlab.poisoning` -- data poisoning (label flips, backdoors), spectral signatures,
  partition-aggregation certificates (DPA, SS-DPA, Finite Aggregation).
* :mod:`robustlab.influence` -- influence functions (inverse-Hessian-vector products,
  leave-one-out comparisons, the fragility study).
* :mod:`robustlab.lipschitz` -- operator norms, the conv spectral bound (CONV-SV), skew
  orthogonal convolutions and 1-Lipschitz networks, curvature bounds and certificates.
* :mod:`robustlab.perceptual` -- LPIPS as a threat model, perceptual attacks (PPGD, LPA),
  perceptual and dual-manifold adversarial training.
* :mod:`robustlab.shift` -- certified accuracy under distribution shift (a model randomized
  over brightness or translation).
* :mod:`robustlab.interpret` -- sparsified SmoothGrad and its certified top-K overlap.
* :mod:`robustlab.fairness` -- robustness bias: distances to the boundary per class, the
  bias measure and its regularizer.
* :mod:`robustlab.abstain` -- classifiers with an abstain output (CARL), abstention-aware
  attacks and the accuracy / abstention / robustness trade-off.
* :mod:`robustlab.certificates` -- the one result type of every certifier (prediction,
  abstain, radius in a named unit, alpha, the method's statistics), certified accuracy and
  its plot.
* :mod:`robustlab.stats` -- Clopper-Pearson, the binomial test, Hoeffding, the DKW band,
  Bonferroni, the normal CDF and quantile.
* :mod:`robustlab.votes` -- vote counts, the plurality with the lower-index tie rule, the
  top two classes and the gap radius of the aggregation certificates.
* :mod:`robustlab.oracles` -- closed-form oracle models (a half-space, one pixel, one region,
  a constant) with their exact answers, for tests, labs and chapters.
* :mod:`robustlab.plot` -- shared figures.
* :mod:`robustlab.widgets` -- live lecture demos (ipywidgets) with static snapshots.

Parameter names (one meaning each, the same in every module):

``x``, ``y``
    A batch-first input tensor (B, C, H, W) or (B, D) with values in [0, 1], and its int64
    labels (B,). ``targets``: target labels (B,) of a targeted attack.
``model``
    A ``torch.nn.Module`` from inputs in [0, 1] to logits (normalization inside the model).
``eps``
    A threat radius, in pixel units, in the norm ``norm`` (``"linf"`` by default; ``"l2"``,
    ``"l1"``, ``"l0"``): attacks, adversarial training, certificates. Never a fraction.
``norm``
    The threat model's norm, ``"linf"``, ``"l2"``, ``"l1"`` or ``"l0"`` (or inf, 2, 1, 0).
``step_size``
    The step of an iterative attack (PGD, APGD, ...), in pixel units; ``steps`` is the number
    of its iterations, ``restarts`` the number of independent runs.
``step``
    The training batch a loss or a schedule is at (counted from 0, or a
    :class:`robustlab.train.TrainingStep`).
``sigma``
    The standard deviation of Gaussian noise, in pixel units (randomized smoothing, noise
    augmentation).
``alpha``
    A confidence level: the failure probability of a statistical certificate or bound, in
    (0, 1). Never a step size.
``n``, ``n0``
    Monte Carlo sample counts (CERTIFY: ``n0`` samples select the class, ``n`` estimate its
    probability), or the number of samples a data-set function draws.
``k``
    The number of base models (partitions) of a partition-aggregation certificate (DPA,
    Finite Aggregation); in :func:`robustlab.stats.clopper_pearson` and its kin, the number of
    successes out of ``n``.
``rate``
    A poison fraction: the share of the data the adversary changes (label flips, backdoors,
    the spectral filter's budget; the contamination fraction epsilon of
    :mod:`robustlab.robuststats`).
``n_classes``
    The number of classes.
``seed``
    An integer >= 0 that fixes every random draw of the call (the same seed, the same result).
``batch_size``
    How many inputs go through the model at once (memory only: results do not depend on it).
``progress``
    Show a progress bar (``None``: the global setting, :func:`robustlab.set_progress`).
``device``
    Where a model is built or moved to; inputs always follow the model's own device.
``cache``
    Use (and fill) the on-disk cache of trained models.
``dataset``
    A data set name (``"digits"``, ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``); the
    profile's by default.

Every argument is checked (``robustlab._validate``): a wrong one raises ``ValueError`` or
``TypeError`` naming it; NumPy integers and floats are accepted wherever Python ones are.
"""

from . import (abstain, attacks, cache, certificates, certify, config, data, fairness, features, influence, interpret,
               lipschitz, models, norms, oracles, patch_detection, perceptual, plot, poisoning, robuststats, shift,
               smoothing, stats, theory, train, training, votes, widgets, zoo)
from .config import cache_dir, profile, set_cache_dir, set_data_dir, set_profile, set_progress, set_threads

__version__ = "0.1.0"

__all__ = [
    "abstain", "attacks", "certificates", "certify", "config", "data", "fairness", "features", "influence",
    "interpret", "lipschitz", "models", "norms", "oracles", "patch_detection", "perceptual", "plot", "shift",
    "poisoning", "robuststats", "smoothing", "stats", "theory", "train", "training", "votes", "widgets",
    "profile", "set_profile", "cache_dir", "set_cache_dir", "set_data_dir", "set_progress", "set_threads",
    "__version__",
]
