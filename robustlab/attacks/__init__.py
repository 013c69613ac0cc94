r"""Adversarial attacks under one contract, and the evaluations built on them.

An attack is ``attack(model, x, y, *, eps, targets=None, ...) -> x_adv``: batch-first,
``x`` in [0, 1], ``x_adv`` in [0, 1] and within ``eps`` of ``x`` in the attack's norm, on
the device of ``x``. It is untargeted by default (raise the loss of the true label
``y``); passing ``targets`` makes it targeted (lower the loss of the target labels).
Inside every attack the model is in eval mode (:func:`robustlab.models.eval_mode`, its
mode is restored afterwards) and gradients are taken with respect to the input only, so
the model's parameter gradients are never touched; the black-box attack (:func:`square`)
takes no gradients at all. The iterative attacks :func:`pgd`, :func:`apgd`,
:func:`apgd_t` and :func:`patch` return the best iterate; with ``return_last=True`` they
return :class:`Iterates` ``(best, last)``, the last iterate as well.

The attacks and the unit of their budget ``eps``:

=====================  ==========================================================
:func:`fgsm`           Linf, pixel units (one signed-gradient step of size ``step``)
:func:`pgd`            Linf, L2 or L1, pixel units (projected gradient ascent)
:func:`apgd`           Linf or L2, pixel units (Auto-PGD: own step sizes; CE or DLR)
:func:`apgd_t`         Linf or L2, pixel units (APGD, targeted DLR over the top classes)
:func:`cw_l2`          L2, pixel units; minimal-norm, ``eps`` optional
:func:`square`         Linf or L2, pixel units; score-based black box (outputs only)
:func:`sparse_l0`      number of pixels changed (a pixel = one location, all channels)
:func:`patch`          side of one square patch, in pixels
:func:`ensemble`       Linf or L2, pixel units; APGD-CE, APGD-T, Square in turn
=====================  ==========================================================

:func:`ensemble` runs several attacks in the manner of AutoAttack (Croce and Hein,
2020): an input counts as robust only if every attack fails on it. It is the
evaluation to report a model's robustness with, and what :func:`robust_accuracy` runs
by default; ``robust_accuracy(model, data, attack, ...)`` evaluates any single attack
(a chapter that studies PGD itself says so). :func:`gradient_masking_checklist` runs
the sanity checks that tell a robust model from one that only hides its gradients.

The modules, by concept: :mod:`~robustlab.attacks.gradient` (FGSM, PGD),
:mod:`~robustlab.attacks.autopgd` (APGD, APGD-T, the DLR loss),
:mod:`~robustlab.attacks.optimization` (Carlini--Wagner), :mod:`~robustlab.attacks.blackbox`
(Square), :mod:`~robustlab.attacks.sparse` (L0, patch), :mod:`~robustlab.attacks.evaluation`
(robust accuracy, the ensemble, the smallest eps) and :mod:`~robustlab.attacks.masking`
(the checklist). Every public name is importable as ``robustlab.attacks.NAME``.
"""

from ._common import LOSSES, Iterates, attack_objective, eval_mode, input_gradient
from .autopgd import APGD_LOSSES, apgd, apgd_checkpoints, apgd_t, dlr_loss
from .blackbox import square
from .evaluation import DEFAULT_ENSEMBLE, ENSEMBLE_PARTS, EnsembleResult, ensemble, robust_accuracy, smallest_eps
from .gradient import fgsm, pgd
from .masking import MaskingCheck, MaskingChecklist, gradient_masking_checklist
from .optimization import cw_l2
from .sparse import patch, sparse_l0

__all__ = [
    "fgsm", "pgd", "apgd", "apgd_t", "cw_l2", "square", "sparse_l0", "patch",
    "ensemble", "EnsembleResult", "ENSEMBLE_PARTS", "DEFAULT_ENSEMBLE",
    "robust_accuracy", "gradient_masking_checklist", "MaskingCheck", "MaskingChecklist",
    "smallest_eps", "eval_mode", "input_gradient", "attack_objective", "LOSSES",
    "dlr_loss", "apgd_checkpoints", "APGD_LOSSES", "Iterates",
]
