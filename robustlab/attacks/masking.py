r"""The gradient-masking checklist: sanity checks that tell a robust model from one that hides its gradients."""

from __future__ import annotations

import dataclasses
import math

import torch

from .._validate import check_choice, check_model, check_nonneg, check_positive_int, check_seed, check_xy
from .blackbox import square
from .evaluation import robust_accuracy
from .gradient import pgd

__all__ = ["gradient_masking_checklist", "MaskingCheck", "MaskingChecklist"]


@dataclasses.dataclass(frozen=True)
class MaskingCheck:
    """One check of :func:`gradient_masking_checklist`: what it states, its numbers, the verdict."""

    name: str
    statement: str
    numbers: dict
    passed: bool

    def __str__(self) -> str:
        nums = ", ".join(f"{k} {v:.3f}" for k, v in self.numbers.items())
        return f"[{'pass' if self.passed else 'FAIL'}] {self.name}: {nums}"


@dataclasses.dataclass(frozen=True)
class MaskingChecklist:
    """The result of :func:`gradient_masking_checklist`: one :class:`MaskingCheck` per sanity check.

    ``passed`` is True when every check passed. Passing is *necessary* for a robustness
    claim, not sufficient: it rules out the common signs of gradient masking only.
    """

    eps: float
    norm: str
    n: int
    clean_accuracy: float
    tolerance: float
    checks: tuple

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list:
        """The names of the checks that failed."""
        return [c.name for c in self.checks if not c.passed]

    def __getitem__(self, name: str) -> MaskingCheck:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; the checks are {[c.name for c in self.checks]}")

    def table(self) -> str:
        """A plain-text table: one line per check with its numbers and verdict."""
        head = (f"gradient-masking checklist: {self.norm} eps={self.eps:g}, {self.n} inputs, "
                f"clean accuracy {self.clean_accuracy:.3f}, tolerance {self.tolerance:g}")
        width = max(len(c.name) for c in self.checks)
        lines = [head]
        for c in self.checks:
            nums = ", ".join(f"{k} {v:.3f}" for k, v in c.numbers.items())
            lines.append(f"  {'pass' if c.passed else 'FAIL'}  {c.name:<{width}}  {nums}")
            lines.append(f"        {'':<{width}}  ({c.statement})")
        lines.append(f"  => {'passed' if self.passed else 'FAILED: ' + ', '.join(self.failed)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.table()


def gradient_masking_checklist(
    model: torch.nn.Module,
    data,
    *,
    eps: float,
    norm: str = "linf",
    steps: tuple = (10, 100),
    restarts: int = 5,
    queries: int = 1000,
    tolerance: float = 0.05,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool | None = None,
) -> MaskingChecklist:
    r"""Sanity checks that tell a robust model from one that only masks its gradients.

    A defense that makes gradients useless (non-differentiable layers, saturated
    softmax, randomness) can show high accuracy under gradient attacks without being
    robust. Athalye, Carlini and Wagner (2018) and Carlini et al. (2019, "On evaluating
    adversarial robustness") list symptoms; this function measures four of them, as
    robust accuracies :math:`a` (:func:`robust_accuracy`) on ``data``:

    ``more steps``
        more PGD iterations never make the attack weaker:
        :math:`a_{\text{PGD-}k_2} \le a_{\text{PGD-}k_1} + \tau` for ``steps = (k1, k2)``.
    ``unbounded``
        with a budget covering the whole box (Linf 1, L2 :math:`\sqrt{d}`) PGD-:math:`k_2`
        fools (almost) everything: :math:`a \le \tau`.
    ``black box``
        the score-based black-box :func:`square` (``queries`` queries) is not stronger than
        the best white-box PGD: :math:`a_{\text{square}} \ge \min a_{\text{PGD}} - \tau`.
    ``restarts``
        random restarts change little: :math:`a_{\text{PGD-}k_1 \times R} \ge
        a_{\text{PGD-}k_1} - \tau` for ``restarts = R``.

    where :math:`\tau` is ``tolerance``. A failed check is a red flag to investigate
    (adaptive attacks, BPDA, EOT), not a proof of masking; passing all is necessary for a
    robustness claim, not sufficient.

    Parameters
    ----------
    model : torch.nn.Module
        The defended model (inputs in [0, 1], logits out).
    data : Split or (x, y)
        Evaluation inputs; a few hundred are enough.
    eps : float
        The budget of the robustness claim, in pixel units.
    norm : {"linf", "l2"}
        The claim's norm.
    steps : (int, int)
        The PGD step counts compared (fewer, more).
    restarts : int
        Random restarts of the restart check (>= 2).
    queries : int
        Query budget of the black-box attack.
    tolerance : float
        :math:`\tau`, in accuracy (0.05 = 5 points). Random starts alone move the PGD
        accuracy of an undefended model by 2 to 3 points on a few hundred inputs, so a
        smaller tolerance needs more data.
    batch_size : int
        Inputs per attack call.
    seed : int
        Seeds every attack.
    progress : bool, optional
        Progress bars (default: the global setting).

    Returns
    -------
    MaskingChecklist
        ``.passed``, ``.checks`` (name, statement, numbers, passed) and ``.table()``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("cnn", "digits", width=4)
    >>> x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    >>> report = gradient_masking_checklist(model, (x, y), eps=0.1, steps=(2, 4), restarts=2,
    ...                                     queries=20, progress=False)
    >>> [c.name for c in report.checks]
    ['more steps', 'unbounded', 'black box', 'restarts']
    """
    check_model(model)
    x, y = check_xy(data, "data")
    check_nonneg(eps, "eps", allow_tensor=False)
    check_choice(norm, "norm", ("linf", "l2"))
    if not (isinstance(steps, (tuple, list)) and len(steps) == 2):
        raise TypeError(f"steps must be a pair (fewer, more) of step counts, got {steps!r}")
    for k in steps:
        check_positive_int(k, "steps")
    if not steps[0] < steps[1]:
        raise ValueError(f"steps must be increasing (fewer, more), got {tuple(steps)}")
    check_positive_int(restarts, "restarts")
    if restarts < 2:
        raise ValueError(f"restarts must be >= 2 to compare against a single run, got {restarts}")
    check_positive_int(queries, "queries")
    check_nonneg(tolerance, "tolerance", allow_tensor=False)
    check_seed(seed)
    few, many = steps
    whole_box = 1.0 if norm == "linf" else math.sqrt(x[0].numel())

    def acc(attack, desc, **kw):
        return robust_accuracy(model, (x, y), attack, batch_size=batch_size, progress=progress, desc=desc, **kw)

    clean = acc(lambda m, xb, yb: xb, "clean")
    pgd_few = acc(pgd, f"PGD-{few}", eps=eps, norm=norm, steps=few, seed=seed)
    pgd_many = acc(pgd, f"PGD-{many}", eps=eps, norm=norm, steps=many, seed=seed)
    pgd_restarts = acc(pgd, f"PGD-{few} x {restarts} restarts", eps=eps, norm=norm, steps=few, restarts=restarts,
                       seed=seed)
    unbounded = acc(pgd, f"PGD-{many}, eps={whole_box:g}", eps=whole_box, norm=norm, steps=many, seed=seed)
    black_box = acc(square, f"square ({queries} queries)", eps=eps, norm=norm, queries=queries, seed=seed)
    best_white = min(pgd_few, pgd_many, pgd_restarts)
    checks = (
        MaskingCheck("more steps", f"PGD-{many} accuracy is at most PGD-{few} accuracy + tolerance",
                     {f"PGD-{few}": pgd_few, f"PGD-{many}": pgd_many}, pgd_many <= pgd_few + tolerance),
        MaskingCheck("unbounded", f"PGD-{many} at eps={whole_box:g} (the whole box) leaves accuracy <= tolerance",
                     {"accuracy": unbounded}, unbounded <= tolerance),
        MaskingCheck("black box", "square-attack accuracy is at least the best PGD accuracy - tolerance",
                     {"square": black_box, "best PGD": best_white}, black_box >= best_white - tolerance),
        MaskingCheck("restarts", f"PGD-{few} with {restarts} restarts is at least PGD-{few} accuracy - tolerance",
                     {f"PGD-{few}": pgd_few, f"x{restarts} restarts": pgd_restarts},
                     pgd_restarts >= pgd_few - tolerance),
    )
    return MaskingChecklist(eps=float(eps), norm=norm, n=x.shape[0], clean_accuracy=clean, tolerance=float(tolerance),
                            checks=checks)
