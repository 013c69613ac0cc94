"""Perceptual threat models: the LPIPS distance, perceptual attacks and perceptual adversarial training.

Submodules:

- :mod:`robustlab.perceptual.lpips`: LPIPS as a distance, with a fixed feature network
  trained once on the data (:func:`lpips_net`) or the classifier's own features
  (:meth:`LPIPS.self_bound`).
- :mod:`robustlab.perceptual.attacks`: PPGD, LPA and Fast-LPA in an LPIPS ball, the
  projection onto it, and random noise of a given LPIPS size.
- :mod:`robustlab.perceptual.training`: perceptual adversarial training (PAT) as a loss
  object for :func:`robustlab.train.fit`, and the cached PAT models of the chapter.

The spatial (flow-field) attack of the chapter's unseen threat models is
:func:`robustlab.attacks.spatial.flow`.
"""
from robustlab.perceptual import lpips, attacks, training  # noqa: F401
from robustlab.perceptual.lpips import LPIPS, lpips_net  # noqa: F401
from robustlab.perceptual.attacks import fast_lpa, lpa, ppgd, project, random_perturbation  # noqa: F401
from robustlab.perceptual.training import PATLoss, pat_model  # noqa: F401
from robustlab.attacks import spatial as _spatial  # noqa: F401  (makes rl.attacks.spatial available)
