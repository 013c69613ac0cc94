"""Certification by randomized smoothing: classify many noisy copies of an input and
certify the majority vote.

* :mod:`robustlab.smoothing.sampling` -- the one sampling engine: per-input seeded noise
  streams drawn in fixed blocks (counts independent of the batch size and of the other
  inputs), the noise as an argument (Gaussian, Laplace, uniform, ...), counts and score
  sums, and the enumeration twin for deterministic smoothing.
* :mod:`robustlab.smoothing.dp` -- certification from differential privacy (PixelDP,
  Lecuyer et al.): a calibrated noise layer and the expected-score condition.
* :mod:`robustlab.smoothing.gaussian` -- Gaussian randomized smoothing (Cohen et al.):
  PREDICT and CERTIFY with exact Clopper-Pearson bounds, certified L2 radii.
* :mod:`robustlab.smoothing.ablation` -- randomized ablation against L0 attacks (Levine and
  Feizi): k kept pixels in a two-channel encoding, base models trained on ablated inputs,
  PREDICT and CERTIFY with the certified number of pixels.
* :mod:`robustlab.smoothing.patch` -- (de)randomized smoothing against patches (Levine and
  Feizi): column and block smoothing with wrap-around, the vote threshold, the deterministic
  certificate with the lower-index tie rule, and the randomized variant.
* :mod:`robustlab.smoothing.l1` -- smoothing against L1 threats (Levine and Feizi): randomized
  splitting noise (SSN) and its deterministic version on quantized inputs (DSSN).
* :mod:`robustlab.smoothing.wasserstein` -- Wasserstein smoothing (Levine and Feizi): Laplace
  noise on the flows between neighbouring pixels of a unit-mass image, certified Wasserstein radii.
* :mod:`robustlab.smoothing.fractional` -- the deterministic certificate for Lp threats with
  0 < p < 1 on quantized inputs (Levine and Feizi), its design an integer program.
* :mod:`robustlab.smoothing.second_order` -- second-order smoothing (SoS: the gradient norm of
  the smoothed probability as a second constraint) and Gaussian dipole smoothing (Levine et al.).
* :mod:`robustlab.smoothing.confidence` -- CDF smoothing: certified lower bounds on the expected
  confidence (softmax score or margin) of the smoothed classifier (Kumar et al.).
* :mod:`robustlab.smoothing.policy` -- policy smoothing for reinforcement learning (Kumar,
  Levine and Feizi): Gaussian noise on every observation, the certified total reward under an
  episode L2 budget on a vectorized CartPole.

Every certifier of a prediction returns the shared :class:`robustlab.certificates.Certificate`;
policy smoothing certifies an expected reward, not a prediction per input, and returns its
own :class:`robustlab.smoothing.policy.RewardCertificate`.
"""

from . import sampling
from . import dp
from . import gaussian
from . import ablation
from . import patch
from . import l1
from . import fractional
from . import wasserstein
from . import second_order, confidence
from . import policy
