"""Small models with known answers, shared by the tests."""

from robustlab.oracles import HalfSpace


def Linear2(w0, w1):
    """Two-class linear model f(x) = W x with rows ``w0`` and ``w1``: its margin is linear in x,
    so the FGSM step, the best PGD step, the smallest L2 perturbation and the best L0 changes
    all have closed forms (robustlab.oracles.HalfSpace.from_rows, whose exact answers are those
    of the half-space w1 - w0)."""
    return HalfSpace.from_rows(w0, w1)
