"""Lipschitz constants of layers and networks, and the certificates they give.

:mod:`robustlab.lipschitz.operators` holds the operator norms of linear layers (exact where a
formula is exact, bounds and lower estimates elsewhere); its public names are re-exported
here, so ``rl.lipschitz.operator_norm`` is the same function.
"""

from .operators import *  # noqa: F401,F403
from .operators import __all__ as _operators_all
from . import operators
from . import curvature  # noqa: F401  (curvature bounds, CRC/CRT, low-curvature activations)
from . import conv, soc  # noqa: F401  (CONV-SV bound and exact conv norms; SOC networks and their certificate)

__all__ = ["operators", *_operators_all]
