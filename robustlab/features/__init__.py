r"""Robustness, accuracy and features (chapter 4).

Four experiments behind one question: what does a robust model learn that a standard
one does not?

1. **The accuracy--robustness trade-off** (Tsipras et al., 2019). In a simple
   distribution, one feature is robust but only weakly predictive and many features are
   individually weak, non-robust, but together highly predictive. Standard training uses
   the non-robust ones; a robust classifier cannot, and must be less accurate:
   :func:`tsipras_data`, :func:`tsipras_accuracy`, :func:`tsipras_bound`,
   :func:`tsipras_tradeoff`.
2. **Robust and non-robust features** (Ilyas et al., 2019). Data sets built from a
   model's representation: a "robustified" one that keeps only the features a robust
   model uses (standard training on it gives some robustness), and a "non-robust" one of
   relabelled adversarial examples (standard training on it still generalises to the real
   test set): :func:`split_representation`, :func:`robust_dataset`,
   :func:`non_robust_dataset`, :func:`feature_datasets_experiment`.
3. **Robust models' gradients are human-aligned** (Tsipras et al., 2019; Ilyas et al.,
   2019): :func:`saliency`, :func:`saliency_alignment`, :func:`plot_saliency`.
4. **Robust generalisation needs more data** (Schmidt et al., 2018), in their Gaussian
   mixture model: :func:`gaussian_mixture_errors`, :func:`sample_complexity`.
5. **Vulnerability as a misalignment of metrics** (Ilyas et al., 2019, section 4): in a
   Gaussian model, the maximum-likelihood gradient against the robust one:
   :func:`gaussian_ml_direction`, :func:`ilyas_robust_covariance`,
   :func:`gaussian_linear_accuracy`, :func:`gradient_angle`, :func:`misalignment`.

One module per experiment: :mod:`~robustlab.features.tradeoff` (1),
:mod:`~robustlab.features.datasets` (2), :mod:`~robustlab.features.saliency` (3),
:mod:`~robustlab.features.sample_complexity` (4), :mod:`~robustlab.features.misalignment` (5); every name is also here
(``rl.features.tsipras_data``).
"""

from __future__ import annotations

from .tradeoff import (tsipras_data, tsipras_accuracy, tsipras_bound, TSIPRAS_BOX, tsipras_linear_model,
                       TradeoffCurve, tsipras_tradeoff)
from .datasets import (split_representation, robust_dataset, non_robust_dataset, FeatureDatasets,
                       feature_datasets_experiment)
from .saliency import saliency, saliency_alignment, plot_saliency
from .sample_complexity import gaussian_mixture_errors, SampleComplexity, sample_complexity
from .misalignment import (gaussian_ml_direction, ilyas_robust_covariance, gaussian_linear_accuracy, gradient_angle,
                           Misalignment, misalignment)

__all__ = [
    "tsipras_data",
    "tsipras_accuracy",
    "tsipras_bound",
    "tsipras_linear_model",
    "tsipras_tradeoff",
    "TradeoffCurve",
    "split_representation",
    "robust_dataset",
    "non_robust_dataset",
    "feature_datasets_experiment",
    "FeatureDatasets",
    "saliency",
    "saliency_alignment",
    "plot_saliency",
    "gaussian_mixture_errors",
    "sample_complexity",
    "SampleComplexity",
    "gaussian_ml_direction",
    "ilyas_robust_covariance",
    "gaussian_linear_accuracy",
    "gradient_angle",
    "Misalignment",
    "misalignment",
]
