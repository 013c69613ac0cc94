r"""Influence functions: which training points is a prediction owed to? (chapter 11)

The influence curve of robust statistics measures the change of an estimator when one
point of the sample is up-weighted. Koh and Liang (2017) applied it to a trained model.
Let the parameters :math:`\hat\theta` minimize the (regularized) empirical risk

.. math::

    R(\theta) = \frac{1}{n} \sum_{i=1}^{n} L(z_i; \theta) + \frac{\lambda}{2} \lVert\theta\rVert_2^2 ,

with :math:`L` the cross-entropy of one example :math:`z = (x, y)` and :math:`\lambda` the
weight decay. Up-weighting one training point :math:`z` by :math:`\epsilon`,
:math:`\hat\theta_{\epsilon} = \arg\min_\theta R(\theta) + \epsilon L(z; \theta)`, moves the
parameters by :math:`d\hat\theta_\epsilon/d\epsilon|_{0} = -H^{-1} \nabla_\theta L(z; \hat\theta)`
with :math:`H = \nabla^2_\theta R(\hat\theta)` (implicit function theorem, :math:`H` positive
definite), and the loss at a test point :math:`z_{\text{test}}` by

.. math::

    \mathcal{I}_{\text{up,loss}}(z, z_{\text{test}})
      = -\nabla_\theta L(z_{\text{test}}; \hat\theta)^\top H^{-1} \nabla_\theta L(z; \hat\theta).

**Sign convention** (used everywhere in this module). Removing :math:`z` is
:math:`\epsilon = -1/n`, so the predicted change of the test loss when :math:`z` is left out is

.. math::

    L(z_{\text{test}}; \hat\theta_{-z}) - L(z_{\text{test}}; \hat\theta)
      \approx -\tfrac{1}{n}\, \mathcal{I}_{\text{up,loss}}(z, z_{\text{test}}).

A point with :math:`\mathcal{I}_{\text{up,loss}} > 0` is **harmful** (up-weighting it raises
the test loss, removing it lowers it); one with :math:`\mathcal{I}_{\text{up,loss}} < 0` is
**helpful**. The leave-one-out objective keeps the factor :math:`1/n` and the penalty:
:math:`R_{-z}(\theta) = \frac1n \sum_{z_i \ne z} L(z_i; \theta) + \frac{\lambda}{2}\lVert\theta\rVert^2`,
which is exactly :math:`\epsilon = -1/n` (what :func:`leave_one_out` retrains).

What the module computes:

* :class:`EmpiricalRisk` -- :math:`R` over a chosen subset of a model's parameters
  (``params="all"``, ``"last"`` for the last layer only, a common choice for deep nets, or a
  list of names), its per-sample gradients (``torch.func.vmap`` over ``grad``) and
  Hessian-vector products :math:`Hv` by double backpropagation, batch-first.
* :func:`inverse_hvp` -- :math:`(H + \text{damping}\,I)^{-1} v` by an exact solve, conjugate
  gradients, or LiSSA (Agarwal, Bullins and Hazan, 2017).
* :func:`influences` -- :math:`\mathcal{I}_{\text{up,loss}}` of every training point on every
  test point; :meth:`Influences.helpful`, :meth:`Influences.harmful`,
  :func:`plot_influential`.
* :func:`leave_one_out` -- the ground truth by retraining: exact (Newton's method, to a
  gradient tolerance) for strongly convex risks such as L2-regularized logistic regression,
  approximate (warm-started L-BFGS) for small nets; :func:`fit_to_optimum` trains a model to
  a stationary point of :math:`R` first; :func:`pearson`, :func:`spearman`.
* :func:`fragility_study` -- Basu, Pope and Feizi (2021) at small scale: how well influence
  tracks leave-one-out retraining for a linear model against deeper nets, with and without
  weight decay, across test points.
* :func:`spurious_digits` -- a two-digit task with a spurious cue (a bright corner square)
  planted on part of one class in training only, :func:`plant_cue`, and
  :func:`planted_among_top`: how many of the training points influence blames for the
  model's mistakes are the planted ones.

Everything here is for small problems (hundreds of training points, thousands of parameters):
the whole training set is one batch and :meth:`EmpiricalRisk.hessian` builds :math:`H`.
The model is evaluated in eval mode; the loss is the cross-entropy of its logits.

One module per step: :mod:`~robustlab.influence.risk` (the risk, its gradients and Hessian),
:mod:`~robustlab.influence.ihvp` (inverse Hessian-vector products),
:mod:`~robustlab.influence.scores` (influence scores), :mod:`~robustlab.influence.retrain`
(the ground truth by retraining), :mod:`~robustlab.influence.correlation`,
:mod:`~robustlab.influence.fragility`, :mod:`~robustlab.influence.spurious`; every name is also here (``rl.influence.influences``).
"""

from __future__ import annotations

from .risk import METHODS, MAX_EXACT_PARAMS, select_parameters, EmpiricalRisk
from .ihvp import inverse_hvp
from .scores import Influences, influences, plot_influential
from .retrain import fit_to_optimum, LeaveOneOut, leave_one_out
from .correlation import pearson, spearman
from .fragility import FragilityTable, fragility_study
from .spurious import SpuriousTask, plant_cue, spurious_digits, planted_among_top

__all__ = [
    "select_parameters",
    "EmpiricalRisk",
    "inverse_hvp",
    "Influences",
    "influences",
    "plot_influential",
    "fit_to_optimum",
    "LeaveOneOut",
    "leave_one_out",
    "pearson",
    "spearman",
    "FragilityTable",
    "fragility_study",
    "SpuriousTask",
    "plant_cue",
    "spurious_digits",
    "planted_among_top",
]
