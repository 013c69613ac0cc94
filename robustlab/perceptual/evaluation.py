r"""One model against many threat models: per-input robustness, cached, and the tables of chapter 16.

A :class:`Threat` names a threat model and the attack that evaluates it:

==================  =================================================================  ============================
kind                attack                                                             unit of ``eps``
==================  =================================================================  ============================
``"linf"``, ``"l2"``  :func:`robustlab.attacks.ensemble` (APGD-CE, APGD-T, Square): the    pixels
                    strongest evaluation of the package, the one to report
``"ppgd"``          :func:`robustlab.perceptual.ppgd` with a fixed LPIPS distance       LPIPS
``"lpa"``           :func:`robustlab.perceptual.lpa` with a fixed LPIPS distance        LPIPS
``"flow"``          :func:`robustlab.attacks.spatial.flow`                              pixels of displacement
``"on-manifold"``   :func:`robustlab.perceptual.manifold.on_manifold_pgd`               latent standard deviations
==================  =================================================================  ============================

:func:`robust_mask` says, per input, whether the model classifies it correctly both clean
and under the threat's attack (an input misclassified clean is never robust), and caches
the answer on disk under a key made of the model's weights, the inputs and every setting
of the threat (:mod:`robustlab.cache`, folder ``curves``): a chapter re-run loads it.
:func:`threat_table` does that for several models and threats and prints accuracies and
unions (an input counts for a union only if it survives every attack in it).
"""

from __future__ import annotations

import dataclasses

import torch

from .. import cache as _cache
from .._validate import check_choice, check_labels, check_nonneg, check_images
from ..models import eval_mode, to_model

__all__ = ["Threat", "THREAT_KINDS", "robust_mask", "ThreatTable", "threat_table"]

THREAT_KINDS = ("linf", "l2", "ppgd", "lpa", "flow", "on-manifold")
_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Threat:
    """A threat model and its evaluation: ``kind`` (see the module), budget ``eps`` and the attack's options.

    ``distance`` is the LPIPS distance of ``"ppgd"`` / ``"lpa"``, ``generator`` the
    generator of ``"on-manifold"``; ``options`` are more keyword arguments of the attack
    (``steps``, ``rounds``, ...), as a dict.

    >>> Threat("linf", 0.1).label
    'Linf 0.1'
    """

    kind: str
    eps: float
    options: dict = dataclasses.field(default_factory=dict)
    distance: object = None
    generator: object = None
    name: str | None = None

    def __post_init__(self):
        check_choice(self.kind, "kind", THREAT_KINDS)
        check_nonneg(self.eps, "eps", allow_tensor=False)
        if not isinstance(self.options, dict):
            raise TypeError(f"options must be a dict of the attack's keyword arguments, "
                            f"got {type(self.options).__name__}")
        if self.kind in ("ppgd", "lpa") and self.distance is None:
            raise ValueError(f"a {self.kind!r} threat needs distance= (a fixed LPIPS distance)")
        if self.kind == "on-manifold" and self.generator is None:
            raise ValueError("an 'on-manifold' threat needs generator= (e.g. rl.perceptual.pca_generator())")

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        names = {"linf": "Linf", "l2": "L2", "ppgd": "PPGD", "lpa": "LPA", "flow": "flow", "on-manifold": "on-manifold"}
        return f"{names[self.kind]} {self.eps:g}"

    def settings(self) -> dict:
        """Everything that decides the result, as JSON (the distance and generator by their ``repr``)."""
        options = sorted((k, repr(v)) for k, v in self.options.items())
        return {"kind": self.kind, "eps": float(self.eps), "options": options,
                "distance": repr(self.distance), "generator": repr(self.generator)}

    def attack(self, model, x, y):
        """The adversarial inputs of the threat's attack (for ``"linf"``/``"l2"``: the ensemble's)."""
        from ..attacks import ensemble
        from ..attacks.spatial import flow
        from .attacks import lpa, ppgd
        from .manifold import on_manifold_pgd

        kw = dict(self.options)
        if self.kind in ("linf", "l2"):
            return ensemble(model, x, y, eps=self.eps, norm=self.kind, progress=False, **kw)
        if self.kind == "ppgd":
            return ppgd(model, x, y, eps=self.eps, lpips=self.distance, **kw)
        if self.kind == "lpa":
            return lpa(model, x, y, eps=self.eps, lpips=self.distance, **kw)
        if self.kind == "flow":
            return flow(model, x, y, eps=self.eps, **kw)
        return on_manifold_pgd(model, x, y, eps=self.eps, generator=self.generator, **kw)


def _predict_correct(model, x, y, batch_size=512):
    with torch.no_grad(), eval_mode(model):
        xm, ym = to_model(model, x, y.to(x.device))
        return torch.cat([model(xm[i:i + batch_size]).argmax(1) == ym[i:i + batch_size]
                          for i in range(0, len(ym), batch_size)]).cpu()


def robust_mask(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, threat: Threat | None, *,
                cache: bool = True) -> torch.Tensor:
    """Per input, True where ``model`` is right on ``x`` and on the threat's attack of it (bool, (N,), on the CPU).

    ``threat=None`` gives the clean correctness. Only the inputs classified correctly are
    attacked. With ``cache`` the result is stored on disk, keyed by the model (its
    ``repr`` and weights), ``x``, ``y`` and :meth:`Threat.settings`.
    """
    check_images(x, "x")
    check_labels(y, "y", batch_size=x.shape[0])
    if threat is not None and not isinstance(threat, Threat):
        raise TypeError(f"threat must be a Threat or None, got {type(threat).__name__}")
    correct = _predict_correct(model, x, y)
    if threat is None:
        return correct
    path = None
    if cache:
        settings = {"threat": threat.settings()}
        path = _cache.result_entry("robust_mask", settings, model, x, y, format=_FORMAT)
        blob = _cache.load(path)
        if blob is not None:
            return blob["mask"]
    mask = correct.clone()
    idx = torch.nonzero(correct).flatten()
    if len(idx):
        x_adv = threat.attack(model, x[idx], y[idx])
        mask[idx] = _predict_correct(model, x_adv, y[idx])
    if path is not None:
        _cache.store(path, {"mask": mask, "settings": {"what": "robust_mask", "format": _FORMAT, "model": repr(model),
                                                       **settings}})
    return mask


@dataclasses.dataclass
class ThreatTable:
    """Per model and threat, the robust mask; accuracies, unions and a printed table."""

    masks: dict  # model name -> {"clean": mask, threat label: mask, ...}
    n: int

    def accuracy(self, model: str, threat: str = "clean") -> float:
        return float(self.masks[model][threat].float().mean())

    def union(self, model: str, threats) -> float:
        """The fraction of inputs robust to every threat in ``threats`` (labels) at once."""
        return float(torch.stack([self.masks[model][t] for t in threats]).all(0).float().mean())

    def text(self, unions: dict | None = None) -> str:
        """The table: a row per model, a column per threat, then one column per named union."""
        unions = unions or {}
        first = next(iter(self.masks.values()))
        cols = list(first)
        width = max(12, *(len(c) + 1 for c in [*cols, *unions]))
        lines = [f"{'':18s}" + "".join(f"{c:>{width}s}" for c in [*cols, *unions])]
        for name in self.masks:
            cells = [self.accuracy(name, c) for c in cols] + [self.union(name, u) for u in unions.values()]
            lines.append(f"{name:18s}" + "".join(f"{a:>{width}.1%}" for a in cells))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()


def threat_table(models: dict, x: torch.Tensor, y: torch.Tensor, threats, *, cache: bool = True) -> ThreatTable:
    """:func:`robust_mask` of every model (a dict name -> model) against every threat, plus clean accuracy."""
    if not isinstance(models, dict) or not models:
        raise TypeError("models must be a non-empty dict of name -> model")
    threats = list(threats)
    labels = [t.label for t in threats]
    if len(set(labels)) != len(labels) or "clean" in labels:
        raise ValueError(f"threats must have distinct labels other than 'clean', got {labels}")
    masks = {}
    for name, model in models.items():
        masks[name] = {"clean": robust_mask(model, x, y, None)}
        for t in threats:
            masks[name][t.label] = robust_mask(model, x, y, t, cache=cache)
    return ThreatTable(masks, int(x.shape[0]))
