"""Perceptual threat models: the LPIPS distance, perceptual attacks and perceptual adversarial training.

Submodules:

- :mod:`robustlab.perceptual.lpips`: LPIPS as a distance, with a fixed feature network
  trained once on the data (:func:`lpips_net`) or the classifier's own features
  (:meth:`LPIPS.self_bound`).
- :mod:`robustlab.perceptual.attacks`: PPGD, LPA and Fast-LPA in an LPIPS ball, the
  projection onto it, and random noise of a given LPIPS size.
- :mod:`robustlab.perceptual.training`: perceptual adversarial training (PAT) as a loss
  object for :func:`robustlab.train.fit`, and the cached PAT models of the chapter.
- :mod:`robustlab.perceptual.manifold`: dual-manifold adversarial training (DMAT) and
  on-manifold training (OM-AT) with a PCA generator in logit space: on-manifold attacks in
  its latent space beside pixel attacks, and the cached models of the comparison.
- :mod:`robustlab.perceptual.evaluation`: one model against many threat models (the Lp
  ensemble, PPGD, LPA, flow, on-manifold), per input and cached: the chapter's tables.

The spatial (flow-field) attack of the chapter's unseen threat models is
:func:`robustlab.attacks.spatial.flow`.
"""
from robustlab.perceptual import lpips, attacks, training, manifold, evaluation  # noqa: F401
from robustlab.perceptual.lpips import LPIPS, lpips_net  # noqa: F401
from robustlab.perceptual.attacks import fast_lpa, lpa, ppgd, project, random_perturbation  # noqa: F401
from robustlab.perceptual.training import PATLoss, pat_model  # noqa: F401
from robustlab.perceptual.manifold import (DualManifoldLoss, OnManifoldLoss, PCAGenerator, fit_pca,  # noqa: F401
                                           latent_pgd, manifold_model, on_manifold_data, on_manifold_pgd,
                                           pca_generator)
from robustlab.perceptual.evaluation import Threat, robust_mask, threat_table  # noqa: F401
from robustlab.attacks import spatial as _spatial  # noqa: F401  (makes rl.attacks.spatial available)
