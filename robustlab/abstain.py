r"""Classifiers that may abstain, and CARL (Laidlaw and Feizi, "Playing it Safe", 2019).

In many safety-critical uses it is cheaper for a classifier to say "I don't know" on an
adversarial input than to answer wrongly. An *abstaining classifier* has :math:`C + 1`
outputs, the last one :math:`\bot` (abstain); its prediction is :data:`ABSTAIN`
(``-1``, the package's one abstain value) where :math:`\bot` wins. Its two errors:

.. math::

    \text{natural error} = P\big(f(x) \ne y\big), \qquad
    \text{adversarial error} = P\big(\exists x' \in B_\varepsilon(x) : f(x') \notin \{y, \bot\}\big).

Abstaining on a clean input is a natural error (the reference evaluation counts only a
correct answer as a success); under attack, abstaining is safe. An always-abstaining
classifier has natural error 1 and adversarial error 0: the two must be traded off.

*Attacks that know about abstention.* An attack that only pushes the true class down can
stop in the abstain region, where nothing is wrong, and the adversarial error then looks
smaller than it is. :func:`abstain_pgd` maximizes objectives whose success means a *wrong
class*, with :math:`z` the logits, :math:`z_\bot` the last:

* ``"plain"``: :math:`\max_{j \ne y, \bot} z_j - z_y` (ignores :math:`\bot`, a baseline);
* ``"abstain"``: :math:`\max_{j \ne y, \bot} z_j - \max(z_y, z_\bot)`, positive exactly
  on success;
* ``"sum"``: :math:`-\log(p_y + p_\bot)`, the cross-entropy of the merged "safe" class;
* ``"switch"``: ``"plain"`` for the first half of the steps, ``"abstain"`` after;
* ``"interp"``: the linear interpolation from ``"plain"`` to ``"abstain"`` over the steps;

and :func:`abstain_targeted` runs targeted PGD (or, ``method="apgd"``, targeted Auto-PGD,
the package's strongest gradient attack, :func:`robustlab.attacks.apgd`) at the top wrong
classes, whose success (the target wins, over :math:`y` and :math:`\bot` alike) is a
wrong class by definition. An untargeted attack from the package (APGD, the ensemble)
cannot be used as it is: its success, "not the label", includes abstaining, and it
stops there. :func:`evaluate` reports the *union*: an input counts as an adversarial
error if any attack finds a wrong class.

*CARL* (Combined Abstention Robustness Learning) trains the classifier and its abstain
region jointly: :class:`CARLLoss`, a loss object for :func:`robustlab.train.fit`,

.. math:: \mathcal L = \mathrm{CE}(f(x), y) + \lambda\,\ell_{\text{adv}}(f(x'), y)
          + \gamma\,\|\nabla_x b(x)\|_1,

with :math:`x'` from an abstain-aware PGD, :math:`\ell_{\text{adv}}` one of
:func:`carl_adversarial_loss` (``"sum"``: :math:`-\log(p_y + p_\bot)`; ``"prodlog"``:
:math:`\mathrm{CE}(x', y)\,\mathrm{CE}(x', \bot)`), and :math:`b` the largest wrong logit
minus the correct one (a gradient penalty, :math:`\gamma = 0.02` in the reference code).
:class:`MarginAbstainer` is the simple baseline of the paper's kind: a trained classifier
that abstains where its prediction is close to the boundary (here: where its logit
margin is below a threshold).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from . import config
from . import data as _data
from . import models as _models
from ._validate import (check_choice, check_images, check_labels, check_model, check_nonneg, check_positive,
                        check_positive_int, check_seed)
from .attacks._common import (_BestIterate, _check_restarts, _step_tensor, _eps_flat, _generator, _prepare, _random_start, _to_input,
                              eval_mode)
from .attacks.evaluation import _attack_parts
from .certificates import ABSTAIN

__all__ = ["ABSTAIN", "VARIANTS", "DEFAULT_UNION", "ADV_LOSSES", "abstain_model", "with_abstain_output", "predict", "abstain_margin",
           "carl_adversarial_loss", "abstain_pgd", "abstain_targeted", "evaluate", "AbstainEvaluation",
           "MarginAbstainer", "CARLLoss", "carl_model", "tradeoff_table"]

VARIANTS = ("plain", "abstain", "sum", "switch", "interp")
"""The objectives of :func:`abstain_pgd` (see the module docstring)."""

DEFAULT_UNION = ("sum", "switch", "interp", "targeted", "apgd-targeted")
"""The attacks :func:`evaluate` runs by default; ``"targeted"`` is :func:`abstain_targeted`
(PGD), ``"apgd-targeted"`` the same with targeted APGD-CE."""

ADV_LOSSES = ("sum", "prodlog")


def abstain_model(arch: str | None = None, dataset: str | None = None, *, width: int | None = None,
                  seed: int | None = 0) -> torch.nn.Module:
    """:func:`robustlab.models.build` with one more output, the abstain logit :math:`z_\\bot` (the last).

    The last linear layer of the built model is replaced by one with ``C + 1`` outputs
    (initialized after the rest, from the same seed).

    >>> model = abstain_model("cnn", "digits", width=4)
    >>> model(torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 11])
    """
    model = _models.build(arch, dataset, width=width, seed=seed)
    name = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    old = model.get_submodule(name)
    parent, _, child = name.rpartition(".")
    holder = model.get_submodule(parent) if parent else model
    setattr(holder, child, torch.nn.Linear(old.in_features, old.out_features + 1))
    return model


def with_abstain_output(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of a trained classifier with one more output, :math:`z_\\bot`, the last.

    The copy's first ``C`` logits are exactly ``model``'s (its last linear layer's rows are
    copied); the abstain row is their mean, so that :math:`z_\\bot = \\frac1C\\sum_j z_j`
    starts below the largest logit (nothing is abstained at first, except on exact ties)
    and close enough to it that the gradient of :func:`carl_adversarial_loss` reaches it
    (a logit far below the others gets almost none). Fine-tuning with :class:`CARLLoss`
    teaches it where to abstain (:func:`carl_model` with ``init="pgd"``).

    >>> base = _models.build("mlp", "digits", width=2)
    >>> x = torch.rand(3, 1, 8, 8)
    >>> torch.allclose(with_abstain_output(base)(x)[:, :10], base(x))
    True
    """
    import copy

    check_model(model)
    out = copy.deepcopy(model)
    name = [n for n, m in out.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    old = out.get_submodule(name)
    new = torch.nn.Linear(old.in_features, old.out_features + 1).to(old.weight.device, old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(torch.cat([old.weight, old.weight.mean(0, keepdim=True)]))
        new.bias.copy_(torch.cat([old.bias, old.bias.mean(0, keepdim=True)]))
    parent, _, child = name.rpartition(".")
    setattr(out.get_submodule(parent) if parent else out, child, new)
    return out


def _split(logits: torch.Tensor):
    if logits.dim() != 2 or logits.shape[1] < 3:
        raise ValueError(f"an abstaining model must output (B, C + 1) logits with C >= 2 classes, got shape "
                         f"{tuple(logits.shape)}")
    return logits[:, :-1], logits[:, -1]


def predict(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """The predictions of an abstaining model: the class, or :data:`ABSTAIN` where :math:`\\bot` wins.

    >>> class Fixed(torch.nn.Module):
    ...     def forward(self, x):
    ...         return torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 3.0]])
    >>> predict(Fixed(), torch.zeros(2, 1)).tolist()
    [0, -1]
    """
    from .train import _batched

    check_model(model)
    check_images(x, "x")
    with torch.no_grad():
        logits = _batched(model, x, batch_size, lambda z: z)
    _split(logits)
    pred = logits.argmax(1)
    return torch.where(pred == logits.shape[1] - 1, torch.full_like(pred, ABSTAIN), pred)


def _wrong(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The largest class logit other than y's (over the C classes, not the abstain output)."""
    return z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf")).amax(1)


def abstain_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r""":math:`\max_{j \ne y, \bot} z_j - \max(z_y, z_\bot)`, per sample: positive exactly where the answer is wrong.

    >>> abstain_margin(torch.tensor([[1.0, 3.0, 2.0], [1.0, 0.5, 2.0]]), torch.tensor([0, 0])).tolist()
    [1.0, -1.5]
    """
    z, z_abs = _split(logits)
    own = z.gather(1, y[:, None]).squeeze(1)
    return _wrong(z, y) - torch.maximum(own, z_abs)


def _objective(logits, y, variant, t):
    """The per-sample quantity the attack maximizes; ``t`` in [0, 1] is the progress."""
    z, z_abs = _split(logits)
    own = z.gather(1, y[:, None]).squeeze(1)
    if variant == "sum":
        return torch.logsumexp(logits, 1) - torch.logaddexp(own, z_abs)
    plain = _wrong(z, y) - own
    aware = _wrong(z, y) - torch.maximum(own, z_abs)
    if variant == "plain":
        return plain
    if variant == "abstain":
        return aware
    if variant == "switch":
        return plain if t < 0.5 else aware
    return (1 - t) * plain + t * aware  # interp


def carl_adversarial_loss(logits: torch.Tensor, y: torch.Tensor, kind: str = "sum",
                          reduction: str = "mean") -> torch.Tensor:
    r"""CARL's loss on an adversarial input: low when the answer is the label *or* abstain.

    ``"sum"``: :math:`\ell^{(1)} = -\log(p_y + p_\bot)`, computed stably as
    :math:`\operatorname{logsumexp}(z) - \log(e^{z_y} + e^{z_\bot})`. ``"prodlog"``:
    :math:`\ell^{(2)} = \mathrm{CE}(z, y)\cdot\mathrm{CE}(z, \bot)`, small when either
    factor is. ``reduction``: ``"mean"`` or ``"none"``.

    >>> z = torch.log(torch.tensor([[0.5, 0.2, 0.3]]))
    >>> round(float(carl_adversarial_loss(z, torch.tensor([0]))), 4)  # -log(0.5 + 0.3)
    0.2231
    """
    check_choice(kind, "kind", ADV_LOSSES)
    check_choice(reduction, "reduction", ("mean", "none"))
    z, z_abs = _split(logits)
    own = z.gather(1, y[:, None]).squeeze(1)
    log_norm = torch.logsumexp(logits, 1)
    if kind == "sum":
        value = log_norm - torch.logaddexp(own, z_abs)
    else:
        value = (log_norm - own) * (log_norm - z_abs)
    return value.mean() if reduction == "mean" else value


def _check_abstain_outputs(model, x):
    with torch.no_grad(), eval_mode(model):
        k = model(x[:1]).shape[1]
    if k < 3:
        raise ValueError(f"model must output C + 1 >= 3 logits (the last is abstain), got {k}")
    return k


def abstain_pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps, norm: str = "linf",
                variant: str = "sum", steps: int = 10, step_size: float | None = None, random_start: bool = True,
                restarts: int = 1, seed: int | None = None) -> torch.Tensor:
    r"""PGD against an abstaining classifier, with one of the objectives of :data:`VARIANTS`.

    The step, projection and clamp are those of :func:`robustlab.attacks.pgd` (Linf:
    signed gradient, one clamp to the ball-box intersection; L2: normalized gradient,
    rescaling onto the ball, then the clamp), the step size defaults to
    ``2.5 * eps / steps``, and per sample the attack returns the best iterate over all
    steps and restarts: one classified as a *wrong class* (not the label, not
    :math:`\bot`) if any, otherwise the one with the highest :func:`abstain_margin`. So
    ``"plain"`` may stop in the abstain region, but any iterate that passed through a
    wrong class is kept.

    Follows the attack contract: ``x_adv`` in [0, 1] within ``eps`` of ``x``, on the
    device of ``x``; eval mode; input gradients only. The reference code's training
    attacks run 10 steps, its evaluation 100.

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs in [0, 1] to ``C + 1`` logits, the last one abstain.
    x, y : torch.Tensor
        Inputs (B, ...) in [0, 1], labels (B,) in ``0 .. C-1``.
    eps : float or torch.Tensor
        The radius in pixel units (a number, or one per sample).
    norm : {"linf", "l2"}
    variant : str
        One of :data:`VARIANTS`.
    steps, step_size, random_start, restarts, seed
        As in :func:`robustlab.attacks.pgd`.

    Examples
    --------
    >>> model = abstain_model("mlp", "digits", width=2)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv = abstain_pgd(model, x, y, eps=0.1, steps=5, seed=0)
    >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6)
    True
    """
    x_in = x
    x, y, _, eps_b = _prepare(model, x, y, None, eps)
    check_choice(norm, "norm", ("linf", "l2"))
    check_choice(variant, "variant", VARIANTS)
    check_positive_int(steps, "steps")
    _check_restarts(random_start, restarts)
    k = _check_abstain_outputs(model, x)
    check_labels(y, "y", n_classes=k - 1)
    shape = (-1,) + (1,) * (x.dim() - 1)
    eps_t = _eps_flat(eps_b, x).view(shape)
    step_t = _step_tensor(eps_t, steps, step_size)
    gen = _generator(seed, x.device)
    low, high = (x - eps_t).clamp(min=0.0), (x + eps_t).clamp(max=1.0)
    best = _BestIterate(x, y, None)

    def merged(logits):  # C logits whose argmax is y exactly when the answer is y or abstain
        z, z_abs = _split(logits)
        return z.scatter(1, y[:, None], torch.maximum(z.gather(1, y[:, None]), z_abs[:, None]))

    with eval_mode(model):
        for _ in range(restarts):
            x_adv = _random_start(x, eps_t, norm, gen) if random_start else x.clone()
            for i in range(steps + 1):
                x_adv = x_adv.detach().requires_grad_(True)
                with torch.enable_grad():
                    logits = model(x_adv)
                    obj = _objective(logits, y, variant, i / max(steps - 1, 1))
                    (grad,) = torch.autograd.grad(obj.sum(), x_adv) if i < steps else (None,)
                logits = logits.detach()
                best.update(x_adv.detach(), merged(logits), abstain_margin(logits, y))
                if i == steps:
                    break
                with torch.no_grad():
                    if norm == "linf":
                        x_adv = torch.addcmul(x_adv, step_t, grad.sign()).clamp(low, high)
                    else:
                        g_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
                        delta = x_adv + step_t * grad / g_norm - x
                        factor = (eps_t.flatten() / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
                        x_adv = (x + delta * factor.view(shape)).clamp(0.0, 1.0)
    return _to_input(x_in, best.x)


def abstain_targeted(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps, norm: str = "linf",
                     steps: int = 10, n_targets: int = 3, method: str = "pgd", seed: int | None = None) -> torch.Tensor:
    r"""A targeted attack at each of the ``n_targets`` top wrong classes: PGD or APGD.

    The targets are the wrong classes of largest clean logit (never :math:`\bot`). A
    targeted success means the target beats every other output, :math:`y` and :math:`\bot`
    included, so it is a wrong answer in the abstain setting with no change to the attack;
    the first target that succeeds is kept per input. ``method="pgd"``:
    :func:`robustlab.attacks.pgd` with the CW loss toward the target; ``method="apgd"``:
    :func:`robustlab.attacks.apgd` with the targeted cross-entropy
    :math:`-\log p_t`, which pushes :math:`z_t` above every output, :math:`z_\bot` included
    (the targeted DLR loss compares :math:`z_t` with :math:`z_y` only). Costs ``n_targets``
    runs of ``steps`` steps.

    Examples
    --------
    >>> model = abstain_model("mlp", "digits", width=2)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv = abstain_targeted(model, x, y, eps=0.1, steps=5, method="apgd", seed=0)
    >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6)
    True
    """
    from .attacks import apgd, pgd

    x_in = x
    check_model(model)
    check_images(x, "x")
    check_labels(y, "y", batch_size=x.shape[0])
    check_positive_int(n_targets, "n_targets")
    check_choice(method, "method", ("pgd", "apgd"))
    dev_x = _models.to_model(model, x.detach())
    y_dev = y.to(dev_x.device)
    k = _check_abstain_outputs(model, dev_x)
    check_labels(y, "y", n_classes=k - 1)
    with torch.no_grad(), eval_mode(model):
        z, _ = _split(model(dev_x))
    order = z.masked_fill(F.one_hot(y_dev, k - 1).bool(), float("-inf")).argsort(1, descending=True)
    best = dev_x.clone()
    done = torch.zeros(len(y_dev), dtype=torch.bool, device=dev_x.device)
    for j in range(min(n_targets, k - 2)):
        todo = torch.nonzero(~done).flatten()
        if not len(todo):
            break
        t = order[todo, j]
        e = eps[todo.to(eps.device)] if isinstance(eps, torch.Tensor) and eps.dim() == 1 else eps
        run_seed = None if seed is None else seed + j
        if method == "pgd":
            out = pgd(model, dev_x[todo], y_dev[todo], eps=e, norm=norm, steps=steps, targets=t, loss="cw",
                      seed=run_seed)
        else:
            out = apgd(model, dev_x[todo], y_dev[todo], eps=e, norm=norm, steps=steps, targets=t, loss="ce",
                       seed=run_seed)
        with torch.no_grad(), eval_mode(model):
            hit = model(out).argmax(1) == t
        best[todo[hit]] = out[hit]
        done[todo[hit]] = True
    return _to_input(x_in, best)


@dataclasses.dataclass(frozen=True)
class AbstainEvaluation:
    r"""Natural and adversarial error of an abstaining classifier at one radius (:func:`evaluate`).

    Rates over the ``n`` inputs: ``accuracy`` (clean answer correct), ``abstention``
    (clean answer :math:`\bot`), ``natural_error = 1 - accuracy``, ``adversarial_error``
    (some attack, or the clean input itself, gets a wrong class), ``robust_accuracy``
    (clean answer correct and every attack's answer still the label: neither wrong nor
    abstaining), ``per_attack`` (each attack's adversarial error alone) and per input
    ``error`` (bool, the union) and ``abstained_under_attack`` (bool: correct clean, no
    error found, some attack's answer :math:`\bot`).
    """

    eps: float
    norm: str
    n: int
    accuracy: float
    abstention: float
    adversarial_error: float
    robust_accuracy: float
    per_attack: dict
    error: torch.Tensor
    abstained_under_attack: torch.Tensor

    @property
    def natural_error(self) -> float:
        return 1.0 - self.accuracy

    def __repr__(self) -> str:
        parts = ", ".join(f"{k} {v:.1%}" for k, v in self.per_attack.items())
        return (f"{self.norm} eps={self.eps:g}, {self.n} inputs: accuracy {self.accuracy:.1%}, abstention "
                f"{self.abstention:.1%}, adversarial error {self.adversarial_error:.1%} (union; {parts}), robust "
                f"accuracy {self.robust_accuracy:.1%}")


def _named_attack(name, norm, steps, n_targets, seed):
    if name in ("targeted", "apgd-targeted"):
        method = "pgd" if name == "targeted" else "apgd"
        return lambda m, x, y, *, eps: abstain_targeted(m, x, y, eps=eps, norm=norm, steps=steps, n_targets=n_targets,
                                                        method=method, seed=seed)
    check_choice(name, "attacks", VARIANTS + ("targeted", "apgd-targeted"))
    return lambda m, x, y, *, eps: abstain_pgd(m, x, y, eps=eps, norm=norm, variant=name, steps=steps, seed=seed)


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
             attacks=DEFAULT_UNION, steps: int = 100, n_targets: int = 3, seed: int = 0, batch_size: int = 512,
             progress: bool | None = None, cache: bool = False) -> AbstainEvaluation:
    r"""Accuracy, abstention and adversarial error (the union of ``attacks``) of an abstaining classifier.

    Every attack runs on every input (an attack that fails on an input may still make
    another abstain, which the robust accuracy counts), and each output is checked
    against the contract (in [0, 1], within ``eps``). ``attacks`` holds names from
    :data:`VARIANTS`, ``"targeted"`` and ``"apgd-targeted"``, ``(name, attack)`` pairs or attacks
    ``attack(model, x, y, *, eps) -> x_adv`` that follow the package's contract (e.g. a
    plain :func:`robustlab.attacks.pgd`, which knows nothing of abstention: its outputs
    are judged in the abstain setting all the same). ``steps`` is the named attacks'
    number of PGD steps (100 in the reference evaluation). ``cache=True`` (named attacks
    only; they are seeded) stores the evaluation in the cache's ``curves`` folder under a
    key of the settings, the model's ``repr`` and weights, and the data, and loads it on a
    later call; a model whose behaviour depends on other attributes must show them in its
    ``repr`` (as :class:`MarginAbstainer` shows its threshold).
    """
    check_model(model)
    check_images(x, "x")
    check_labels(y, "y", batch_size=x.shape[0])
    check_nonneg(eps, "eps", allow_tensor=False)
    check_choice(norm, "norm", ("linf", "l2"))
    check_positive_int(steps, "steps")
    check_positive_int(n_targets, "n_targets")
    seed = check_seed(seed)
    check_positive_int(batch_size, "batch_size")
    if isinstance(attacks, str) or callable(attacks):
        attacks = (attacks,)
    parts = _attack_parts(attacks, lambda name: _named_attack(name, norm, steps, n_targets, seed),
                          list(VARIANTS) + ["targeted", "apgd-targeted"])
    path = None
    if cache:
        from . import cache as _cache

        if not all(isinstance(a, str) for a in attacks):
            raise ValueError("cache=True needs attacks given by name (a callable has no stable key)")
        settings = {"eps": float(eps), "norm": norm, "attacks": list(attacks), "steps": steps,
                    "n_targets": n_targets, "seed": seed, "batch_size": batch_size}
        path = _cache.result_entry("abstain_evaluate", settings, model, x, y)
        blob = _cache.load(path)
        if blob is not None:
            return AbstainEvaluation(**{k: v for k, v in blob.items() if k not in ("error", "abstained")},
                                     error=_to_input(x, blob["error"]),
                                     abstained_under_attack=_to_input(x, blob["abstained"]))
    xc, yc = x.detach().cpu(), y.cpu()
    n = len(yc)
    pred = predict(model, xc).cpu()
    correct = pred == yc
    error = (~correct) & (pred != ABSTAIN)
    kept = correct.clone()  # correct clean and every attack answered y
    abstained = torch.zeros(n, dtype=torch.bool)
    per_attack = {}
    enabled = config.progress_enabled(progress)
    for name, attack in parts:
        err_a = error.clone()
        if eps > 0:
            bar = config.progress_bar((n + batch_size - 1) // batch_size, f"abstain attack: {name}", enabled)
            try:
                for start in range(0, n, batch_size):
                    idx = torch.arange(start, min(n, start + batch_size))
                    xb, yb = xc[idx], yc[idx]
                    out = attack(model, xb, yb, eps=eps)
                    if not isinstance(out, torch.Tensor) or out.shape != xb.shape:
                        raise TypeError(f"attack {name!r} must return x_adv of the batch's shape {tuple(xb.shape)}")
                    out = out.detach().cpu().to(xb.dtype)
                    d = (out - xb).flatten(1)
                    d = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
                    if bool((d > eps + 1e-5).any()) or float(out.min()) < 0 or float(out.max()) > 1:
                        raise ValueError(f"attack {name!r} broke the contract: x_adv must lie in [0, 1] within "
                                         f"{norm} eps={eps:g} of x")
                    p = predict(model, out).cpu()
                    wrong = (p != yb) & (p != ABSTAIN)
                    err_a[idx] |= wrong
                    kept[idx] &= p == yb
                    abstained[idx] |= p == ABSTAIN
                    bar.update(1)
            finally:
                bar.close()
        per_attack[name] = float(err_a.float().mean()) if n else 0.0
        error |= err_a
    abstained &= correct & ~error
    rates = dict(eps=float(eps), norm=norm, n=n, accuracy=float(correct.float().mean()) if n else 0.0,
                 abstention=float((pred == ABSTAIN).float().mean()) if n else 0.0,
                 adversarial_error=float(error.float().mean()) if n else 0.0,
                 robust_accuracy=float(kept.float().mean()) if n else 0.0, per_attack=per_attack)
    if path is not None:
        from . import cache as _cache

        _cache.store(path, {**rates, "error": error, "abstained": abstained})
    return AbstainEvaluation(**rates, error=_to_input(x, error), abstained_under_attack=_to_input(x, abstained))


class MarginAbstainer(torch.nn.Module):
    r"""A trained classifier that abstains where its logit margin is below ``threshold`` (a baseline).

    Outputs the ``C`` logits of ``model`` and :math:`z_\bot = z_{(2)} + t`, the runner-up
    logit plus the threshold :math:`t \ge 0`: :math:`\bot` wins exactly where the margin
    :math:`z_{(1)} - z_{(2)}` is below :math:`t` (a tie goes to the class), so ``t = 0``
    never abstains. For a roughly constant gradient norm the margin is proportional to
    the first-order distance to the boundary, so this is the paper's baseline (an
    adversarially trained classifier that abstains within some distance of its boundary)
    with a cheap distance estimate. Differentiable, so every attack applies to it.
    """

    def __init__(self, model: torch.nn.Module, threshold: float):
        super().__init__()
        check_model(model)
        check_nonneg(threshold, "threshold", allow_tensor=False)
        self.model, self.threshold = model, float(threshold)

    def extra_repr(self) -> str:  # the threshold is in the repr, so cached evaluations are keyed by it
        return f"threshold={self.threshold!r}"

    def forward(self, x):
        z = self.model(x)
        runner_up = z.topk(2, dim=1).values[:, 1]
        return torch.cat([z, (runner_up + self.threshold)[:, None]], 1)


@dataclasses.dataclass(frozen=True)
class CARLLoss:
    r"""CARL's training loss (Laidlaw and Feizi): clean CE, an abstain-tolerant adversarial term, a gradient penalty.

    .. math:: \mathcal L = \mathrm{CE}(f(x), y) + \lambda\,\ell_{\text{adv}}(f(x'), y)
              + \gamma\,\frac1B\sum_i \|\nabla_x b(x_i)\|_1, \qquad
              b = \max_{j \ne y, \bot} z_j - z_y,

    with :math:`x'` = :func:`abstain_pgd` (``steps`` steps, radius ``eps``) whose
    objective cycles through ``variants`` batch by batch (the reference code draws one of
    ``abstain``, ``sum``, ``interp`` per batch), :math:`\ell_{\text{adv}}` =
    :func:`carl_adversarial_loss` of kind ``adv_loss``, and the penalty differentiated by
    double backprop (``grad_penalty=0`` skips it). ``ramp`` batches grow the radius
    linearly to ``eps``, as :class:`robustlab.training.PGDLoss` does. The clean term asks for the label on
    clean inputs (abstaining there is an error); the adversarial term accepts the label
    or :math:`\bot`. :math:`\lambda` trades natural error for adversarial error.

    Returns ``(loss, clean logits)``, so ``fit``'s training accuracy is clean accuracy with
    abstentions counted as errors.

    Examples
    --------
    >>> model = abstain_model("mlp", "digits", width=2)
    >>> x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> loss, logits = CARLLoss(eps=0.1, lam=0.0, grad_penalty=0.0)(model, x, y)
    >>> bool(torch.isclose(loss, F.cross_entropy(logits, y))), logits.shape
    (True, torch.Size([4, 11]))
    """

    eps: float
    lam: float = 1.0
    norm: str = "linf"
    steps: int = 10
    variants: tuple = ("abstain", "sum", "interp")
    adv_loss: str = "sum"
    grad_penalty: float = 0.02
    ramp: int = 0

    wants_step = True

    def eps_at(self, step=None) -> float:
        """The radius of training batch ``step``: ``eps * ramp(step, self.ramp)`` (``eps`` outside ``fit``)."""
        from .train import ramp

        return float(self.eps) * ramp(step, self.ramp)

    def __post_init__(self):
        check_nonneg(self.eps, "eps", allow_tensor=False)
        check_nonneg(self.lam, "lam", allow_tensor=False)
        check_choice(self.norm, "norm", ("linf", "l2"))
        check_positive_int(self.steps, "steps")
        if isinstance(self.variants, str) or not self.variants:
            raise ValueError(f"variants must be a non-empty tuple of names from {list(VARIANTS)}")
        for v in self.variants:
            check_choice(v, "variants", VARIANTS)
        check_choice(self.adv_loss, "adv_loss", ADV_LOSSES)
        check_nonneg(self.grad_penalty, "grad_penalty", allow_tensor=False)
        check_positive_int(self.ramp, "ramp", allow_zero=True)

    def __call__(self, model, x, y, step=None):
        variant = self.variants[(step.index if step is not None else 0) % len(self.variants)]
        if self.grad_penalty > 0:
            x_req = x.detach().requires_grad_(True)
            logits = model(x_req)
            z, _ = _split(logits)
            b = _wrong(z, y) - z.gather(1, y[:, None]).squeeze(1)
            (g,) = torch.autograd.grad(b.sum(), x_req, create_graph=True)
            penalty = g.flatten(1).abs().sum(1).mean()
        else:
            logits = model(x)
            penalty = logits.sum() * 0.0
        loss = F.cross_entropy(logits, y) + float(self.grad_penalty) * penalty
        eps = self.eps_at(step)
        if self.lam > 0 and eps > 0:
            x_adv = abstain_pgd(model, x, y, eps=eps, norm=self.norm, variant=variant, steps=self.steps)
            loss = loss + float(self.lam) * carl_adversarial_loss(model(x_adv), y, self.adv_loss)
        return loss, logits


def carl_model(lam: float = 1.0, eps: float | None = None, *, norm: str = "linf", steps: int | None = None,
               adv_loss: str = "sum", grad_penalty: float = 0.02, init: str | None = None,
               dataset: str | None = None, arch: str | None = None, width: int | None = None,
               epochs: int | None = None, lr: float | None = None, seed: int = 0, device=None,
               progress: bool | None = None, cache: bool = True):
    """An abstaining model trained with :class:`CARLLoss` (cached).

    ``eps`` defaults to the data set's attack radius (:func:`robustlab.config.default_eps`:
    0.2 on the digits, 0.3 on MNIST as in the paper). The optimizer settings are those of
    the profile's PGD adversarial training (:data:`robustlab.training.TRAINING_RECIPES`:
    epochs, learning rate, batch size, schedule, eps ramp and PGD steps), so CARL and the
    ``"pgd"`` model of the zoo differ only in the loss and the abstain output. Made by
    :func:`robustlab.zoo.profile_model`.

    ``init=None`` trains a fresh :func:`abstain_model` from scratch. ``init="pgd"``
    fine-tunes the zoo's PGD-trained model (:func:`robustlab.training.robust_model`, same
    data, architecture, width and seed) given an abstain output
    (:func:`with_abstain_output`), for ``epochs`` (default 2) epochs at the full radius
    (no ramp) at learning rate ``lr`` (default the recipe's, whose one-cycle schedule
    starts and ends near 0; a fifth of it leaves the abstain region unlearned in 2
    epochs): a cheap way to add a
    learned abstain region to a robust classifier, and
    the fair comparison with that classifier's own threshold baseline
    (:class:`MarginAbstainer`), which starts from the same weights.
    """
    from .train import fit
    from .training import TRAINING_RECIPES, robust_model
    from .zoo import profile_model

    if init is not None:
        check_choice(init, "init", ("pgd",))
    prof = config.profile()
    name = _data.info(dataset).name
    eps = config.default_eps("attack", name) if eps is None else eps
    recipe = dict(TRAINING_RECIPES[prof.name]["pgd"])
    ramp_epochs = recipe["eps_ramp_epochs"] if init is None else 0
    epochs = (recipe["epochs"] if init is None else 2) if epochs is None else epochs
    if prof.smoke:
        epochs, ramp_epochs = 1, 0
    steps = recipe["steps"] if steps is None else steps
    lr = recipe["lr"] if lr is None else lr
    check_positive(lr, "lr")
    build = abstain_model
    if init == "pgd":
        def build(arch_, dataset_, *, width=None, seed=0):
            base, _ = robust_model(dataset_, method="pgd", arch=arch_, width=width, seed=seed, progress=progress,
                                   cache=cache)
            return with_abstain_output(base)

    def train_fn(model, train, test):
        per_epoch = -(-len(train[1]) // recipe["batch_size"])
        loss = CARLLoss(eps=float(eps), lam=float(lam), norm=norm, steps=steps, adv_loss=adv_loss,
                        grad_penalty=float(grad_penalty), ramp=ramp_epochs * per_epoch)
        return fit(model, train, epochs=epochs, lr=lr, batch_size=recipe["batch_size"],
                   schedule=recipe["schedule"], seed=seed, loss_fn=loss, progress=progress, cache=cache,
                   desc=f"CARL training (lambda={lam:g})")

    return profile_model(train_fn, dataset, arch, width=width, seed=seed, device=device, build=build)


def tradeoff_table(rows: dict) -> str:
    """A plain-text table of :class:`AbstainEvaluation` rows: ``{model name: [evaluation per eps]}``."""
    lines = []
    for name, evals in rows.items():
        for ev in evals:
            lines.append(f"{name:<22} eps {ev.eps:4.2f}  accuracy {ev.accuracy:6.1%}  abstain {ev.abstention:6.1%}  "
                         f"adv. error {ev.adversarial_error:6.1%}  robust acc. {ev.robust_accuracy:6.1%}")
    return "\n".join(lines)
