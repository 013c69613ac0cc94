"""Deterministic certification of small ReLU networks.

* :mod:`robustlab.certify.bounds` -- interval bound propagation, the convex (linear)
  relaxation of the ReLU (Kolter and Wong) as an exact linear program and by its dual
  bound, and certified training with IBP.
"""

from . import bounds

__all__ = ["bounds"]
