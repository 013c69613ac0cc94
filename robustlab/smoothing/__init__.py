"""Certification by randomized smoothing: classify many noisy copies of an input and
certify the majority vote.

* :mod:`robustlab.smoothing.dp` -- certification from differential privacy (PixelDP,
  Lecuyer et al.): a calibrated noise layer and the expected-score condition.
* :mod:`robustlab.smoothing.gaussian` -- Gaussian randomized smoothing (Cohen et al.):
  PREDICT and CERTIFY with exact Clopper-Pearson bounds, certified L2 radii.
"""

from . import dp
from . import gaussian
