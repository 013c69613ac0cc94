r"""The one result type of every certifier, its certified accuracy and its plot.

A certifier answers, for each input of a batch, *what* it predicts and *how far* that
prediction provably holds: :class:`Certificate` holds, batch-first,

* ``prediction`` -- int64 (B,): the class, or :data:`ABSTAIN` ``= -1`` where the method
  abstains (and only there: a method that always predicts never uses it);
* ``radius`` -- (B,) >= 0 in the certificate's ``unit`` (:data:`UNITS`): the prediction
  cannot change under any perturbation of size at most ``radius`` (strictly less, for the
  continuous radii of randomized smoothing); 0 where nothing beyond the input itself is
  certified, and where the method abstains;
* ``alpha`` -- the failure probability of a statistical certificate (it holds with
  probability at least :math:`1 - \alpha` over the method's sampling), ``None`` for a
  deterministic one;
* ``method`` -- which certifier produced it, and ``stats`` -- the method's own per-input
  statistics and settings (readable as attributes: ``cert.pA_lower``, ``cert.counts``...).

One convention for certified accuracy everywhere: at radius :math:`r`, the fraction of
inputs whose prediction is correct, is not an abstention, and has ``radius >= r``,

.. math:: \mathrm{CA}(r) = \frac1B \sum_i \mathbb 1[\hat y_i = y_i]\,\mathbb 1[\hat y_i \ne \bot]\,\mathbb 1[R_i \ge r].

At :math:`r = 0` this is the accuracy of the certified classifier itself (for a
deterministic verifier, the network's clean accuracy; for CERTIFY, the accuracy with
abstentions counted as errors).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ._validate import check_choice, check_labels, check_positive, check_probability

__all__ = [
    "ABSTAIN",
    "UNITS",
    "Certificate",
    "certified_accuracy",
    "plot_certified_accuracy",
]

ABSTAIN = -1
"""The prediction of an input on which the method abstains."""

UNITS = {
    "l2": "L2 pixels",
    "linf": "Linf pixels",
    "l1": "L1 pixels",
    "l0": "pixels (L0)",
    "patch": "patch side",
    "wasserstein": "Wasserstein (pixel mass)",
    "lp": "Lp^p distance, sum |delta_i|^p (0 < p < 1)",
    "poison": "poisoned samples (insertions or deletions)",
    "label_flips": "label flips",
}
"""The units certified radii are counted in, by key (every certifier uses one of these)."""


def _cpu(value):
    return value.detach().cpu() if isinstance(value, torch.Tensor) else value


@dataclasses.dataclass(frozen=True, eq=False)
class Certificate:
    r"""Per-input certificates of one method on one batch (see the module docstring).

    Parameters
    ----------
    prediction : torch.Tensor
        int64 (B,), a class index or :data:`ABSTAIN`.
    radius : torch.Tensor
        (B,) float or integer, >= 0, in ``unit``; 0 where the method abstains.
    unit : str
        One of the values of :data:`UNITS`.
    method : str
        The certifier, e.g. ``"gaussian"``, ``"pixeldp"``, ``"ibp"``, ``"dpa"``.
    alpha : float or None
        Failure probability of a statistical certificate; ``None`` if deterministic.
    stats : mapping, optional
        The method's own statistics: per-input tensors (first dimension B) and settings.
        Each is also readable as an attribute.

    Examples
    --------
    >>> cert = Certificate(torch.tensor([3, ABSTAIN, 1]), torch.tensor([0.5, 0.0, 0.2]), UNITS["l2"], "demo",
    ...                    alpha=0.001, stats={"sigma": 0.25})
    >>> cert.certified_accuracy(torch.tensor([3, 1, 2]), at=[0.0, 0.25])
    array([0.33333333, 0.33333333])
    >>> cert.abstained.tolist(), cert.sigma, len(cert)
    ([False, True, False], 0.25, 3)
    """

    prediction: torch.Tensor
    radius: torch.Tensor
    unit: str
    method: str
    alpha: float | None = None
    stats: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        pred, radius = _cpu(self.prediction), _cpu(self.radius)
        if not isinstance(pred, torch.Tensor) or pred.dtype != torch.int64 or pred.dim() != 1:
            raise TypeError("prediction must be an int64 tensor of shape (B,)")
        if not isinstance(radius, torch.Tensor) or radius.shape != pred.shape:
            raise ValueError(f"radius must be a tensor of the shape of prediction {tuple(pred.shape)}")
        if radius.dtype == torch.bool:
            raise TypeError("radius must hold numbers, not booleans")
        if radius.is_floating_point() and bool(torch.isnan(radius).any()):
            raise ValueError("radius contains NaN")
        if radius.numel() and bool((radius < 0).any()):
            raise ValueError(f"radius must be >= 0, got a minimum of {float(radius.min())}")
        if pred.numel() and bool((pred < ABSTAIN).any()):
            raise ValueError(f"prediction must hold class indices >= 0 or ABSTAIN = {ABSTAIN}")
        if bool((radius[pred == ABSTAIN] != 0).any()):
            raise ValueError("radius must be 0 where the method abstains")
        check_choice(self.unit, "unit", set(UNITS.values()))
        if not isinstance(self.method, str) or not self.method:
            raise TypeError("method must be a non-empty string naming the certifier")
        if self.alpha is not None:
            object.__setattr__(self, "alpha", check_probability(self.alpha, "alpha"))
        if not isinstance(self.stats, Mapping):
            raise TypeError(f"stats must be a mapping name -> value, got {type(self.stats).__name__}")
        clash = {f.name for f in dataclasses.fields(self)} & set(self.stats)
        if clash:
            raise ValueError(f"stats must not reuse the names of the certificate's fields: {sorted(clash)}")
        object.__setattr__(self, "prediction", pred)
        object.__setattr__(self, "radius", radius)
        object.__setattr__(self, "stats", {k: _cpu(v) for k, v in self.stats.items()})

    def __getattr__(self, name: str):
        # only called when normal lookup fails: the method's own statistics, by name
        if name.startswith("__") or name == "stats":
            raise AttributeError(name)
        stats = self.__dict__.get("stats", {})
        if name in stats:
            return stats[name]
        raise AttributeError(f"{type(self).__name__} of method {self.__dict__.get('method')!r} has no "
                             f"attribute or statistic {name!r} (statistics: {sorted(stats)})")

    def __len__(self) -> int:
        return int(self.prediction.shape[0])

    def __repr__(self) -> str:
        kind = "deterministic" if self.alpha is None else f"alpha={self.alpha:g}"
        return (f"Certificate(method={self.method!r}, {len(self)} inputs, unit={self.unit!r}, {kind}, "
                f"abstained={int(self.abstained.sum())}, median radius={float(self.radius.double().median()):.4g})")

    @property
    def deterministic(self) -> bool:
        """True for certificates that hold with certainty (no ``alpha``)."""
        return self.alpha is None

    @property
    def abstained(self) -> torch.Tensor:
        """bool (B,): where the method abstains."""
        return self.prediction == ABSTAIN

    def correct(self, y) -> torch.Tensor:
        """bool (B,): the prediction equals ``y`` (an abstention is never correct)."""
        y = _labels(y, len(self))
        return (self.prediction == y) & ~self.abstained

    def certified_at(self, r) -> torch.Tensor:
        """bool (B,): not abstained and ``radius >= r``."""
        r = _radii(r)
        if r.size != 1:
            raise ValueError("r must be one radius (use certified_accuracy for several)")
        return ~self.abstained & (self.radius.double() >= float(r[0]))

    def certified_accuracy(self, y, at=0.0):
        """Certified accuracy at each radius in ``at``: a float for one radius, an array for several."""
        values = certified_accuracy(self.radius, self.correct(y), at)
        return float(values[0]) if np.ndim(at) == 0 else values

    def __getitem__(self, index) -> "Certificate":
        """The certificates of a subset of the inputs (per-input statistics are indexed too)."""
        b = len(self)
        pred = self.prediction[index]
        if pred.dim() != 1:
            raise IndexError("index must select a 1-D subset of the inputs (a slice, a mask or indices)")
        stats = {k: (v[index] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == b else v)
                 for k, v in self.stats.items()}
        return Certificate(pred, self.radius[index], self.unit, self.method, self.alpha, stats)

    @classmethod
    def cat(cls, certificates: Sequence["Certificate"]) -> "Certificate":
        """Join the certificates of consecutive batches of one method with the same settings."""
        certificates = list(certificates)
        if not certificates or not all(isinstance(c, Certificate) for c in certificates):
            raise TypeError("certificates must be a non-empty sequence of Certificate")
        first = certificates[0]
        for c in certificates[1:]:
            if (c.unit, c.method, c.alpha, sorted(c.stats)) != (first.unit, first.method, first.alpha,
                                                              sorted(first.stats)):
                raise ValueError("certificates must come from one method with the same unit, alpha and statistics")
        stats = {}
        for k, v in first.stats.items():
            if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == len(first):
                stats[k] = torch.cat([c.stats[k] for c in certificates])
            else:
                stats[k] = v
        return cls(torch.cat([c.prediction for c in certificates]), torch.cat([c.radius for c in certificates]),
                   first.unit, first.method, first.alpha, stats)


def _labels(y, batch: int) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(np.asarray(y))
    return check_labels(y.cpu(), "y", batch_size=batch)


def _radii(at) -> np.ndarray:
    if isinstance(at, torch.Tensor):
        at = at.detach().cpu().numpy()
    at = np.atleast_1d(np.asarray(at))
    if at.dtype == bool or not np.issubdtype(at.dtype, np.number):
        raise TypeError(f"at must hold radii (numbers >= 0), got dtype {at.dtype}")
    at = at.astype(np.float64)
    if at.size == 0 or np.isnan(at).any() or (at < 0).any():
        raise ValueError("at must hold radii >= 0")
    return at


def certified_accuracy(radii, correct, at=0.0) -> np.ndarray:
    r"""Certified accuracy from per-input radii and correctness: at each :math:`r` in ``at``,
    :math:`\frac1B \sum_i \mathbb 1[\text{correct}_i]\,\mathbb 1[R_i \ge r]`.

    ``correct`` must already exclude abstentions (:meth:`Certificate.correct`).

    Returns
    -------
    numpy.ndarray
        float64, one value per entry of ``at``.

    Examples
    --------
    >>> certified_accuracy([0.0, 0.3, 0.6, 1.2], [False, True, True, False], at=[0, 0.25, 0.5, 1.0])
    array([0.5 , 0.5 , 0.25, 0.  ])
    """
    def as_np(v):
        return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)

    radii, correct = as_np(radii), as_np(correct)
    if radii.ndim != 1 or radii.size == 0:
        raise ValueError(f"radii must be a non-empty 1-D array, got shape {radii.shape}")
    radii = radii.astype(np.float64)
    if correct.shape != radii.shape:
        raise ValueError(f"correct must have the shape of radii {radii.shape}, got {correct.shape}")
    if correct.dtype != bool:
        raise TypeError(f"correct must be a boolean array, got dtype {correct.dtype}")
    if np.isnan(radii).any():
        raise ValueError("radii contains NaN")
    at = _radii(at)
    return (correct[None, :] & (radii[None, :] >= at[:, None])).mean(1)


def plot_certified_accuracy(curves, *, r_max: float | None = None, ax=None, reference=None, unit: str | None = None):
    """Certified accuracy against the radius, one curve per entry of ``curves``.

    Parameters
    ----------
    curves : dict
        ``label -> (certificate, y)``, or ``label -> (radii, correct)``.
    r_max : float, optional
        Right end of the radius axis (default: a little past the largest radius).
    ax : matplotlib Axes, optional
    reference : dict, optional
        ``label -> (radii, accuracies)`` drawn as markers (e.g. published numbers).
    unit : str, optional
        The radius unit for the axis label (default: the certificates' own unit).

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    if not isinstance(curves, dict) or not curves:
        raise TypeError("curves must be a non-empty dict label -> (certificate, y) or (radii, correct)")
    data, units = {}, set()
    for label, pair in curves.items():
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(f"curves[{label!r}] must be a pair (certificate, y) or (radii, correct)")
        first, second = pair
        if isinstance(first, Certificate):
            data[label] = (first.radius.double().numpy(), first.correct(second).numpy())
            units.add(first.unit)
        else:
            data[label] = (np.asarray(first, dtype=np.float64), np.asarray(second, dtype=bool))
    if unit is None:
        if len(units) > 1:
            raise ValueError(f"the certificates are in different units {sorted(units)}: plot them apart")
        unit = units.pop() if units else "radius"
    top = max(float(r.max()) for r, _ in data.values())
    r_max = 1.05 * max(top, 1e-3) if r_max is None else r_max
    check_positive(r_max, "r_max")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    grid = np.linspace(0.0, r_max, 300)
    for label, (radii, correct) in data.items():
        ax.plot(grid, certified_accuracy(radii, correct, at=grid), label=label)
    for label, (rs, accs) in (reference or {}).items():
        ax.plot(rs, accs, "x", ms=7, label=label)
    ax.set_xlabel(f"certified radius ({unit})")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, r_max)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax
