"""Lipschitz constants of layers and networks, and the certificates they give.

:mod:`robustlab.lipschitz.operators` holds the operator norms of linear layers (exact where a
formula is exact, bounds and lower estimates elsewhere); its public names are re-exported
here, so ``rl.lipschitz.operator_norm`` is the same function.
"""

from .operators import *  # noqa: F401,F403
from .operators import __all__ as _operators_all
from . import operators

__all__ = ["operators", *_operators_all]
