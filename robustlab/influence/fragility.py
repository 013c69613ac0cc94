r"""The fragility study (Basu, Pope and Feizi, 2021) at small scale."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .. import config
from .._validate import check_class_index, check_nonneg, check_positive_int, check_seed, check_xy
from .retrain import fit_to_optimum, leave_one_out
from .scores import influences
from .correlation import pearson, spearman


class FragilityTable(NamedTuple):
    """One row per (model, weight decay, test point): the agreement of influence with retraining.

    Columns (equal-length lists): ``model``, ``weight_decay``, ``test_index``, ``pearson``,
    ``spearman``, ``n_removed``, ``train_accuracy``, ``grad_norm`` (of the trained model's risk).
    :meth:`summary` averages over the test points; ``str(table)`` prints both.
    """

    model: list
    weight_decay: list
    test_index: list
    pearson: list
    spearman: list
    n_removed: list
    train_accuracy: list
    grad_norm: list

    def summary(self) -> list[dict]:
        """Mean and spread (min, max) of the correlations over test points, per (model, weight decay)."""
        out = []
        keys = list(dict.fromkeys(zip(self.model, self.weight_decay)))
        for m, wd in keys:
            rows = [i for i in range(len(self.model)) if self.model[i] == m and self.weight_decay[i] == wd]
            p = np.array([self.pearson[i] for i in rows])
            s = np.array([self.spearman[i] for i in rows])
            out.append(dict(model=m, weight_decay=wd, pearson_mean=float(np.nanmean(p)), pearson_min=float(np.nanmin(p)),
                            pearson_max=float(np.nanmax(p)), spearman_mean=float(np.nanmean(s)),
                            train_accuracy=self.train_accuracy[rows[0]], grad_norm=self.grad_norm[rows[0]]))
        return out

    def __str__(self) -> str:
        lines = [f"{'model':<14}{'wd':>8}{'test':>6}{'pearson':>9}{'spearman':>10}"]
        for i in range(len(self.model)):
            lines.append(f"{self.model[i]:<14}{self.weight_decay[i]:>8.3g}{self.test_index[i]:>6}"
                         f"{self.pearson[i]:>9.3f}{self.spearman[i]:>10.3f}")
        lines.append("")
        lines.append(f"{'model':<14}{'wd':>8}{'pearson (min..max)':>24}{'spearman':>10}{'train acc':>10}{'|grad R|':>10}")
        for r in self.summary():
            rng = f"{r['pearson_mean']:.3f} ({r['pearson_min']:.2f}..{r['pearson_max']:.2f})"
            lines.append(f"{r['model']:<14}{r['weight_decay']:>8.3g}{rng:>24}{r['spearman_mean']:>10.3f}"
                         f"{r['train_accuracy']:>10.3f}{r['grad_norm']:>10.1e}")
        return "\n".join(lines)


def _two_classes(split, classes, n, seed):
    x, y = check_xy(split, "data")
    keep = (y == classes[0]) | (y == classes[1])
    x, y = x[keep], (y[keep] == classes[1]).long()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(x.shape[0], generator=g)[:n].sort().values
    return x[idx].double(), y[idx]


def fragility_study(data=None, *, classes=(1, 7), n_train: int = 100, n_test_points: int = 4, k: int = 15,
                    hidden=((), (16,), (16, 16)), weight_decays=(1e-4, 1e-2), damping: float = 0.001,
                    lbfgs_iter: int = 300, seed: int = 0, progress: bool | None = None) -> FragilityTable:
    r"""Basu, Pope and Feizi (2021) at small scale: does influence track leave-one-out retraining?

    For each architecture (``hidden=()`` is logistic regression, ``(16,)`` an MLP with one
    hidden layer of 16 ReLUs, ...) and each weight decay :math:`\lambda`: train to a stationary
    point of :math:`R` (float64, full batch: Newton for the strongly convex logistic
    regression with :math:`\lambda > 0`, L-BFGS otherwise, :func:`fit_to_optimum`); for each of
    ``n_test_points`` test points, compute influence over all parameters with the exact
    Hessian plus ``damping`` (the same damping everywhere: it keeps the non-convex cases
    solvable, as in Koh and Liang's code), take the ``k`` training points of largest
    :math:`|\mathcal{I}_{\text{up,loss}}|` (the paper's choice), retrain without each
    (:func:`leave_one_out`, exact or warm-started L-BFGS) and correlate the predicted with
    the actual changes of the test loss (Pearson and Spearman).

    The paper's findings to compare with: accurate for shallow models, often erroneous for
    deeper ones; weight decay matters; the quality varies a lot across test points.

    With ``weight_decay=0`` on two separable digit classes the risk has no minimum: L-BFGS
    drives every training loss to 0 in floating point, the gradients vanish, retraining
    changes nothing and the correlations are undefined (NaN rows). That is the degenerate
    end of the paper's point that regularization is needed; a small weight decay (1e-4)
    gives a measurable "almost unregularized" row.

    Parameters
    ----------
    data : (Split, Split), optional
        ``(train, test)``; default the digits (``rl.data.load("digits")``), whatever the profile.
    classes : (int, int)
        The two classes kept (relabelled 0 and 1).
    n_train, n_test_points, k : int
        Training points, test points (the first of a seeded draw), removals per test point.
    hidden : sequence of tuples
        Hidden-layer widths of each architecture (``rl.models.MLP``).
    weight_decays : sequence of float
    damping : float
        Added to :math:`H` before solving.
    lbfgs_iter : int
        L-BFGS iterations for training and for each retraining (the whole budget is used:
        without weight decay there is no minimum to converge to).

    Returns
    -------
    FragilityTable
    """
    from .. import data as _data
    from ..models import MLP

    if data is None:
        data = _data.load("digits")
    train, test = data
    if not (isinstance(classes, (tuple, list)) and len(classes) == 2):
        raise ValueError(f"classes must be two different class indices, got {classes!r}")
    classes = tuple(check_class_index(c, "classes") for c in classes)
    if classes[0] == classes[1]:
        raise ValueError(f"classes must be two different class indices, got {classes!r}")
    seed = check_seed(seed)
    check_positive_int(n_train, "n_train")
    check_positive_int(n_test_points, "n_test_points")
    check_positive_int(k, "k")
    check_nonneg(damping, "damping", allow_tensor=False)
    for wd in weight_decays:
        check_nonneg(wd, "weight_decays", allow_tensor=False)
    xtr, ytr = _two_classes(train, classes, n_train, seed)
    xte, yte = _two_classes(test, classes, n_test_points, seed + 1)
    if xtr.shape[0] < 2 or xte.shape[0] < 1:
        raise ValueError(f"classes {classes} leave too few points")
    k = min(k, xtr.shape[0])
    shape = tuple(xtr.shape[1:])
    mean, std = float(xtr.mean()), float(xtr.std())
    cols = {f: [] for f in FragilityTable._fields}
    configs = [(tuple(h), wd) for h in hidden for wd in weight_decays]
    bar = config.progress_bar(len(configs), "fragility study", config.progress_enabled(progress), unit="model")
    for h, wd in configs:
        name = "logistic" if not h else "mlp " + "x".join(str(w) for w in h)
        torch.manual_seed(seed)
        model = MLP(shape, 2, hidden=h, mean=(mean,), std=(std,)).double()
        convex = not h and wd > 0
        method = "newton" if convex else "lbfgs"
        # L-BFGS runs its whole budget: without weight decay the loss of separable data has no
        # minimum, the gradient vanishes as the weights grow, and any gradient tolerance would
        # stop the retraining at once
        it, tol = (None, 1e-10) if convex else (lbfgs_iter, 1e-30)
        gnorm = fit_to_optimum(model, (xtr, ytr), weight_decay=wd, method=method, max_iter=it, tol=tol)
        with torch.no_grad():
            acc = float((model(xtr).argmax(1) == ytr).double().mean())
        inf = influences(model, (xtr, ytr), (xte, yte), weight_decay=wd, method="exact", damping=damping)
        top = torch.topk(inf.scores.abs(), k, dim=1).indices  # (T, k)
        removed = torch.unique(top)
        loo = leave_one_out(model, (xtr, ytr), (xte, yte), removed, weight_decay=wd, method=method, max_iter=it,
                            tol=tol, progress=False)
        col = {int(i): j for j, i in enumerate(loo.indices.tolist())}
        pred = inf.predicted_change
        for t in range(xte.shape[0]):
            sel = top[t].tolist()
            p = pred[t, sel]
            a = loo.change[t, [col[i] for i in sel]]
            for f, v in zip(FragilityTable._fields, (name, float(wd), t, pearson(p, a), spearman(p, a), len(sel), acc,
                                                     gnorm)):
                cols[f].append(v)
        bar.update(1)
    bar.close()
    return FragilityTable(**cols)
