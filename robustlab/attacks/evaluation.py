r"""Evaluation over a data set: robust accuracy, the attack ensemble, the smallest successful eps."""

from __future__ import annotations

import dataclasses

import torch

from .. import config
from .._validate import (check_choice, check_images, check_labels, check_model, check_nonneg, check_positive_int,
                         check_seed, check_xy)
from ..models import device_of
from ._common import _check_flag, _to_input, eval_mode
from .autopgd import apgd, apgd_t
from .blackbox import square
from .gradient import pgd

__all__ = ["robust_accuracy", "ensemble", "EnsembleResult", "ENSEMBLE_PARTS", "DEFAULT_ENSEMBLE", "smallest_eps"]


def robust_accuracy(model: torch.nn.Module, data, attack="ensemble", *, batch_size: int = 256,
                    progress: bool | None = None, desc: str | None = None, **attack_kwargs) -> float:
    r"""Robust accuracy: the fraction of a data set classified correctly both clean and attacked.

    .. math::

        \text{robust accuracy} = \frac{1}{N} \sum_{i=1}^N \mathbb{1}\big[f(x_i) = y_i
        \ \text{and}\ f(x_i') = y_i\big], \qquad x_i' = \texttt{attack}(f, x_i, y_i, \ldots)

    The data go through in batches of ``batch_size`` on the model's device, in eval mode,
    with a progress bar. Only the inputs classified correctly are attacked (the others
    count as failures anyway). Per-sample tensors among the keyword arguments (``eps`` of
    shape (N,), ``targets``) are sliced along with the batches.

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs in [0, 1] to logits.
    data : Split or (x, y)
        ``x`` (N, ...) in [0, 1], ``y`` int64 (N,).
    attack : callable or "ensemble"
        ``attack(model, x, y, **attack_kwargs) -> x_adv``, e.g. :func:`pgd`; or
        ``"ensemble"`` (the default): the robust accuracy of :func:`ensemble` (``eps``,
        ``norm``, ``attacks``, ``seed`` among the keyword arguments), the number to report
        as a model's robustness.
    batch_size : int
        Inputs per call of the attack.
    progress : bool, optional
        Show a progress bar (default: the global setting, see
        :func:`robustlab.config.set_progress`).
    desc : str, optional
        The progress bar's label (default: the attack's name).
    **attack_kwargs
        Passed to ``attack`` (``eps``, ``steps``, ``seed``, ...).

    Returns
    -------
    float

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> x, y = torch.rand(8, 1, 8, 8), torch.arange(8)
    >>> acc = robust_accuracy(model, (x, y), rl.attacks.fgsm, eps=0.1, progress=False)
    >>> 0.0 <= acc <= 1.0
    True
    """
    check_model(model)
    x, y = check_xy(data, "data")
    if isinstance(attack, str) and attack == "ensemble":
        return ensemble(model, x, y, batch_size=batch_size, progress=progress, return_result=True,
                        **attack_kwargs).robust_accuracy
    if not callable(attack):
        raise TypeError(f"attack must be callable as attack(model, x, y, **kwargs) or the string 'ensemble', "
                        f"got {attack!r}")
    check_positive_int(batch_size, "batch_size")
    enabled = config.progress_enabled(progress)
    n = x.shape[0]
    per_sample = {k for k in ("eps", "targets") if isinstance(attack_kwargs.get(k), torch.Tensor)
                  and attack_kwargs[k].dim() == 1 and attack_kwargs[k].shape[0] == n}
    device = device_of(model)
    robust = torch.zeros((), dtype=torch.int64, device=device)
    bar = config.progress_bar((n + batch_size - 1) // batch_size, desc or getattr(attack, "__name__", "attack"), enabled)
    try:
        for start in range(0, n, batch_size):
            xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            with torch.no_grad(), eval_mode(model):
                correct = torch.nonzero(model(xb).argmax(1) == yb).flatten()
            if len(correct):
                kwargs = dict(attack_kwargs)
                for k in per_sample:
                    kwargs[k] = attack_kwargs[k][start:start + batch_size].to(device)[correct]
                x_adv = attack(model, xb[correct], yb[correct], **kwargs)
                if not isinstance(x_adv, torch.Tensor):
                    raise TypeError(f"attack must return x_adv as a tensor, got {type(x_adv).__name__} "
                                    "(pass return_queries=False to square)")
                with torch.no_grad(), eval_mode(model):
                    robust += (model(x_adv.to(device)).argmax(1) == yb[correct]).sum()
            bar.update(1)
    finally:
        bar.close()
    return float(robust) / n


#: The named parts :func:`ensemble` knows: APGD with 100 iterations (CE or DLR loss), APGD-T
#: with 100 iterations against each of the 9 top classes (the budgets of AutoAttack's
#: standard version, Croce and Hein, 2020), the Square Attack with 1,000 queries (AutoAttack
#: gives it 5,000, sized for CIFAR-10 and ImageNet; see :func:`ensemble`) and PGD-50.
ENSEMBLE_PARTS = ("apgd-ce", "apgd-dlr", "apgd-t", "square", "pgd")

#: The default ensemble: APGD-CE, APGD-T (targeted DLR), and the score-based Square Attack,
#: which needs no gradient and so adds an attack that gradient masking cannot fool.
DEFAULT_ENSEMBLE = ("apgd-ce", "apgd-t", "square")


def _named_part(name: str, norm: str, seed: int | None):
    check_choice(name, "attacks", ENSEMBLE_PARTS)
    if name == "apgd-ce":
        return lambda m, x, y, *, eps: apgd(m, x, y, eps=eps, norm=norm, loss="ce", steps=100, seed=seed)
    if name == "apgd-dlr":
        return lambda m, x, y, *, eps: apgd(m, x, y, eps=eps, norm=norm, loss="dlr", steps=100, seed=seed)
    if name == "apgd-t":
        def part(m, x, y, *, eps):
            with torch.no_grad(), eval_mode(m):
                classes = m(x[:1].to(device_of(m))).shape[1]
            n_targets = min(9, classes - 1)
            if classes < 4:  # the targeted DLR loss needs 4 classes: fall back on the untargeted one
                return apgd(m, x, y, eps=eps, norm=norm, loss="dlr", steps=100, seed=seed)
            return apgd_t(m, x, y, eps=eps, norm=norm, steps=100, n_targets=n_targets, seed=seed)
        return part
    if name == "square":
        return lambda m, x, y, *, eps: square(m, x, y, eps=eps, norm=norm, queries=1000, seed=seed)
    return lambda m, x, y, *, eps: pgd(m, x, y, eps=eps, norm=norm, steps=50, seed=seed)


@dataclasses.dataclass(frozen=True)
class EnsembleResult:
    """What :func:`ensemble` found, per input: robust or not, the adversarial input, which part broke it.

    ``robust`` (bool, (N,)) is True where the clean prediction is right and every part of
    the ensemble failed; ``x_adv`` (N, ...) is the first successful adversarial input, or
    ``x`` itself where none was found (robust inputs, and inputs already misclassified);
    ``broken_by`` (int64, (N,)) is the index into ``names`` of the part that broke the
    input, -1 where none did (see ``clean`` for the inputs misclassified to begin with);
    ``stages`` the robust accuracy after each part, in order.
    """

    robust: torch.Tensor
    x_adv: torch.Tensor
    broken_by: torch.Tensor
    clean: torch.Tensor
    names: tuple
    stages: tuple
    eps: float
    norm: str

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.float().mean()) if self.robust.numel() else 0.0

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean.float().mean()) if self.clean.numel() else 0.0

    def counts(self) -> dict:
        """The number of inputs each part broke (the first to succeed on an input counts)."""
        return {name: int((self.broken_by == i).sum()) for i, name in enumerate(self.names)}

    def table(self) -> str:
        """A plain-text summary: clean accuracy, then each part with what it broke and the accuracy left."""
        lines = [f"ensemble at {self.norm} eps={self.eps:g}, {self.robust.numel()} inputs: "
                 f"clean accuracy {self.clean_accuracy:.1%}"]
        counts = self.counts()
        width = max([len(n) for n in self.names] + [4])
        for name, acc in zip(self.names, self.stages):
            lines.append(f"  {name:<{width}}  broke {counts[name]:5d}   robust accuracy {acc:.1%}")
        lines.append(f"  => robust accuracy {self.robust_accuracy:.1%}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.table()


def _attack_parts(attacks, named, choices) -> list:
    """``attacks`` (a name, an attack, or a sequence of names, ``(name, attack)`` pairs and
    attacks) as a list of ``(name, attack)`` pairs with distinct names; ``named(name)`` makes
    the attack of a name among ``choices`` (the names the error message lists)."""
    if isinstance(attacks, str) or callable(attacks):
        attacks = (attacks,)
    try:
        attacks = list(attacks)
    except TypeError:
        raise TypeError(f"attacks must be a sequence of names, (name, attack) pairs or attacks, "
                        f"got {type(attacks).__name__}") from None
    if not attacks:
        raise ValueError("attacks must name at least one attack")
    parts = []
    for a in attacks:
        if isinstance(a, str):
            parts.append((a, named(a)))
        elif isinstance(a, tuple) and len(a) == 2 and isinstance(a[0], str) and callable(a[1]):
            parts.append(a)
        elif callable(a):
            parts.append((getattr(a, "__name__", "attack"), a))
        else:
            raise TypeError(f"attacks must hold names {list(choices)}, (name, attack) pairs or "
                            f"callables attack(model, x, y, *, eps), got {a!r}")
    names = [n for n, _ in parts]
    if len(set(names)) != len(names):
        raise ValueError(f"attacks must have distinct names, got {names}")
    return parts


def _ensemble_parts(attacks, norm, seed):
    return _attack_parts(DEFAULT_ENSEMBLE if attacks is None else attacks,
                         lambda name: _named_part(name, norm, seed), ENSEMBLE_PARTS)


def ensemble(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    attacks=None,
    targets: torch.Tensor | None = None,
    seed: int | None = 0,
    batch_size: int = 256,
    progress: bool | None = None,
    return_result: bool = False,
):
    r"""An ensemble of attacks in the manner of AutoAttack (Croce and Hein, 2020): robust only if all fail.

    The parts run in order, each only on the inputs still robust: an input classified
    correctly counts as robust only if every part fails on it, so the ensemble is at
    least as strong as its strongest part, and each later part costs only what the
    earlier ones left. The default parts (:data:`DEFAULT_ENSEMBLE`) are APGD with the
    cross-entropy (:func:`apgd`, 100 iterations), APGD-T with the targeted DLR loss
    against the 9 top classes (:func:`apgd_t`, 100 iterations each) and the score-based
    Square Attack (:func:`square`, 5,000 queries): two losses, targeted and untargeted
    search, and a black box that gradient masking does not fool. This is the evaluation
    to report a model's robustness with (``robust_accuracy(model, data, eps=...)``
    calls it).

    Follows the attack contract: returns ``x_adv`` in [0, 1] within ``eps`` of ``x``
    (every part's output is checked against the ball); ``return_result=True`` returns the
    whole :class:`EnsembleResult` instead.

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs in [0, 1] to logits.
    x, y : torch.Tensor
        Inputs (N, ...) in [0, 1] and their labels (N,); any number, run in batches.
    eps : float
        Radius in pixel units.
    norm : {"linf", "l2"}
        The threat model's norm (passed to the named parts, and used to check every part).
    attacks : sequence, optional
        The parts, in order: names from :data:`ENSEMBLE_PARTS` (``"apgd-ce"``,
        ``"apgd-dlr"``, ``"apgd-t"``, ``"square"``, ``"pgd"`` for PGD-50), ``(name,
        attack)`` pairs, or attacks ``attack(model, x, y, *, eps) -> x_adv`` (bind other
        arguments with :func:`functools.partial`). Default :data:`DEFAULT_ENSEMBLE`.
    targets : None
        The ensemble is untargeted; passing targets raises ``ValueError``.
    seed : int, optional
        Seed of the named parts' random starts and searches.
    batch_size : int
        Inputs per call of a part.
    progress : bool, optional
        One progress bar per part (default: the global setting).
    return_result : bool
        Return the :class:`EnsembleResult` (robust flags, adversarial inputs, which part
        broke each input, accuracy after each part) instead of ``x_adv``.

    Returns
    -------
    torch.Tensor or EnsembleResult
        ``x_adv`` (N, ...) on the device of ``x``: the first successful adversarial input,
        ``x`` itself where none was found.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> x, y = torch.rand(8, 1, 8, 8), torch.arange(8)
    >>> res = ensemble(model, x, y, eps=0.1, attacks=["apgd-ce", "apgd-t"], progress=False, return_result=True)
    >>> res.names, bool(res.robust.sum() <= res.clean.sum())
    (('apgd-ce', 'apgd-t'), True)
    """
    check_model(model)
    check_images(x, "x")
    check_labels(y, "y", batch_size=x.shape[0])
    if targets is not None:
        raise ValueError("targets must be None: the ensemble is an untargeted evaluation (its APGD-T part "
                         "chooses its own targets)")
    check_nonneg(eps, "eps", allow_tensor=False)
    check_choice(norm, "norm", ("linf", "l2"))
    if seed is not None:
        seed = check_seed(seed)
    check_positive_int(batch_size, "batch_size")
    _check_flag(return_result, "return_result")
    enabled = config.progress_enabled(progress)
    parts = _ensemble_parts(attacks, norm, seed)
    x_in = x
    device = device_of(model)
    x, y = x.detach().to(device), y.to(device)
    n = x.shape[0]
    with torch.no_grad(), eval_mode(model):
        clean = torch.cat([model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size] for i in range(0, n, batch_size)]
                          ) if n else torch.zeros(0, dtype=torch.bool, device=device)
    robust = clean.clone()
    x_adv = x.clone()
    broken_by = torch.full((n,), -1, dtype=torch.int64, device=device)
    stages = []
    for k, (name, attack) in enumerate(parts):
        todo = torch.nonzero(robust).flatten()
        bar = config.progress_bar((len(todo) + batch_size - 1) // batch_size, f"ensemble: {name}", enabled)
        try:
            for start in range(0, len(todo), batch_size):
                idx = todo[start:start + batch_size]
                xb, yb = x[idx], y[idx]
                out = attack(model, xb, yb, eps=eps)
                if not isinstance(out, torch.Tensor) or out.shape != xb.shape:
                    raise TypeError(f"attack {name!r} must return x_adv as a tensor of the batch's shape "
                                    f"{tuple(xb.shape)}, got {type(out).__name__}")
                out = out.detach().to(device=device, dtype=x.dtype)
                dist = _distance(out, xb, norm)
                if bool((dist > eps + 1e-5).any()) or float(out.min()) < 0.0 or float(out.max()) > 1.0:
                    raise ValueError(f"attack {name!r} broke the contract: x_adv must lie in [0, 1] within "
                                     f"{norm} eps={eps:g} of x (largest distance {float(dist.max()):.6g})")
                with torch.no_grad(), eval_mode(model):
                    fooled = model(out).argmax(1) != yb
                hit = idx[fooled]
                x_adv[hit] = out[fooled]
                robust[hit] = False
                broken_by[hit] = k
                bar.update(1)
        finally:
            bar.close()
        stages.append(float(robust.float().mean()) if n else 0.0)
    if not return_result:
        return _to_input(x_in, x_adv)
    robust, x_adv, broken_by, clean = _to_input(x_in, robust, x_adv, broken_by, clean)
    return EnsembleResult(robust=robust, x_adv=x_adv, broken_by=broken_by, clean=clean,
                          names=tuple(name for name, _ in parts), stages=tuple(stages), eps=float(eps), norm=norm)


def _distance(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    d = (a - b).flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


def smallest_eps(attack, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps_grid, *,
                 targets: torch.Tensor | None = None, **attack_kwargs):
    """Per input, the smallest ``eps`` of a grid at which ``attack`` succeeds.

    Runs ``attack(model, x, y, eps=e, targets=targets, **attack_kwargs)`` for every ``e`` of
    the increasing ``eps_grid`` on the inputs not yet fooled and records, per input, the
    first ``e`` that changes the prediction (untargeted) or reaches the target.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``eps`` (B,), NaN where no ``e`` of the grid succeeds, and ``x_adv`` (B, ...): the
        successful input at that ``eps``, or ``x`` itself where none succeeded; both on the
        device of ``x``.
    """
    from ..train import predict

    if not callable(attack):
        raise TypeError(f"attack must be callable as attack(model, x, y, *, eps, ...), got {type(attack).__name__}")
    check_images(x, "x")
    x_in = x
    grid = [float(e) for e in eps_grid]
    if not grid:
        raise ValueError("eps_grid must hold at least one value")
    if any(e < 0 for e in grid) or any(b <= a for a, b in zip(grid, grid[1:])):
        raise ValueError(f"eps_grid must be increasing and >= 0, got {grid}")
    x = x.detach().cpu()
    y = y.cpu()
    found = torch.full((x.shape[0],), float("nan"))
    x_found = x.clone()
    for e in grid:
        todo = torch.nonzero(found.isnan()).flatten()
        if len(todo) == 0:
            break
        t = targets.cpu()[todo] if targets is not None else None
        x_e = attack(model, x[todo], y[todo], eps=e, targets=t, **attack_kwargs).cpu()
        pred = predict(model, x_e)
        ok = pred == t if t is not None else pred != y[todo]
        found[todo[ok]] = e
        x_found[todo[ok]] = x_e[ok]
    return _to_input(x_in, found, x_found)
