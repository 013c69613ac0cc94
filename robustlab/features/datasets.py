r"""Robust and non-robust features (Ilyas et al., 2019): data sets built from a model's
representation and the experiment that trains on them."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from .. import attacks as _attacks
from .. import data as _data
from .. import models as _models
from .. import train as _train
from .._validate import (check_choice, check_model, check_nonneg, check_positive, check_positive_int, check_seed,
                         check_xy)
from ._common import _bar


def split_representation(model: nn.Module):
    r"""Split a robustlab model into its representation :math:`g` and its linear head.

    ``model(x) == head(g(x))``; :math:`g(x)` is the input of the last linear layer (the
    penultimate layer, 128 units for :class:`robustlab.models.SmallCNN`). Both parts share
    the model's modules (no copy), so they follow its device and mode changes.

    Supports ``nn.Sequential`` models (:class:`~robustlab.models.MLP`,
    :class:`~robustlab.models.SmallCNN`) and :class:`~robustlab.models.ResNet`.

    Returns
    -------
    (nn.Sequential, nn.Module)
        ``g`` and ``head``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("cnn", "digits")
    >>> g, head = split_representation(model)
    >>> x = torch.rand(2, 1, 8, 8)
    >>> g(x).shape, bool(torch.allclose(head(g(x)), model(x)))
    (torch.Size([2, 128]), True)
    """
    check_model(model)
    if isinstance(model, _models.ResNet):
        *pool, last = list(model.head)
        return nn.Sequential(model.normalize, model.stem, model.stages, *pool), last
    if isinstance(model, nn.Sequential):
        layers = list(model)
        idx = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
        if not idx or idx[-1] == 0:
            raise ValueError("model must be an nn.Sequential with a linear layer after some representation layers")
        i = idx[-1]
        return nn.Sequential(*layers[:i]), nn.Sequential(*layers[i:])
    raise TypeError(f"model must be an nn.Sequential or a robustlab ResNet to split it, got {type(model).__name__}")


def robust_dataset(
    model: nn.Module,
    data,
    *,
    steps: int = 200,
    step_size: float = 0.1,
    init: str = "image",
    batch_size: int = 256,
    seed: int = 0,
    progress: bool | None = None,
) -> _data.Split:
    r"""The "robustified" data set of Ilyas et al. (2019): inputs that carry only the
    features ``model``'s representation sees.

    For every training pair :math:`(x, y)`, starting from an unrelated input
    :math:`x_0` (a random other training image, or uniform noise), normalised gradient
    descent in input space solves

    .. math::

        x_r = \arg\min_{x' \in [0, 1]^d} \|g(x') - g(x)\|_2, \qquad
        x' \leftarrow \Pi_{[0,1]^d}\Big(x' - \alpha \frac{\nabla_{x'} \|g(x') - g(x)\|_2}
        {\|\nabla_{x'} \|g(x') - g(x)\|_2\|_2}\Big),

    and :math:`(x_r, y)` joins the new data set. :math:`g` is the representation of
    :func:`split_representation`. With a *robust* model, :math:`g` depends only on robust
    features, so :math:`x_r` keeps those and loses the rest: standard training on the
    result yields a model with non-trivial robust accuracy (Ilyas et al.'s
    :math:`\widehat{\mathcal{D}}_R`). With a standard model the same construction gives
    :math:`\widehat{\mathcal{D}}_{NR}`.

    Parameters
    ----------
    model : nn.Module
        Split with :func:`split_representation`; used in eval mode, its parameters get no
        gradients.
    data : Split or (x, y)
        Images in [0, 1] and labels.
    steps, step_size : int, float
        Normalised gradient steps (L2 length ``step_size``). Ilyas et al. use 1000 steps of
        0.1 on CIFAR-10; 8x8 digits need far fewer.
    init : {"image", "noise"}
        Start from a random other image of ``data`` (as Ilyas et al.) or from uniform noise.
    batch_size, seed, progress
        Batching, the seed of the starting points, the progress bar.

    Returns
    -------
    Split
        ``(x_r, y)`` on the CPU, ``x_r`` in [0, 1].
    """
    check_model(model)
    x, y = check_xy(data)
    check_positive_int(steps, "steps")
    check_positive(step_size, "step_size")
    check_choice(init, "init", ("image", "noise"))
    check_positive_int(batch_size, "batch_size")
    check_seed(seed)
    g, _ = split_representation(model)
    device = _models.device_of(model)
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    if init == "image":
        # a derangement-free shuffle is enough: a start equal to the target image is rare and harmless
        start = x[torch.randperm(n, generator=gen)]
    else:
        start = torch.rand(x.shape, generator=gen)
    out = []
    bar = _bar(math.ceil(n / batch_size) * steps, "robustified data set", progress)
    try:
        with _attacks.eval_mode(model):
            for i in range(0, n, batch_size):
                xb = x[i:i + batch_size].to(device)
                with torch.no_grad():
                    target = g(xb)
                xr = start[i:i + batch_size].to(device).clone()
                for _ in range(steps):
                    xr.requires_grad_(True)
                    with torch.enable_grad():
                        dist = (g(xr) - target).flatten(1).norm(dim=1).sum()
                        (grad,) = torch.autograd.grad(dist, xr)
                    norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view((-1,) + (1,) * (grad.dim() - 1))
                    xr = (xr.detach() - step_size * grad / norm).clamp(0.0, 1.0)
                    bar.update(1)
                out.append(xr.detach().cpu())
    finally:
        bar.close()
    return _data.Split(torch.cat(out), y.cpu().clone())


def non_robust_dataset(
    model: nn.Module,
    data,
    *,
    eps: float = 0.5,
    norm: str = "l2",
    steps: int = 50,
    step_size: float | None = None,
    target: str = "next",
    batch_size: int = 512,
    seed: int = 0,
    progress: bool | None = None,
) -> _data.Split:
    r"""The "non-robust features" data set of Ilyas et al. (2019): adversarial examples
    relabelled as their target class.

    For every :math:`(x, y)` pick a target :math:`t` -- :math:`t = (y + 1) \bmod K`
    (``target="next"``, their :math:`\widehat{\mathcal{D}}_{det}`) or uniform among the
    other classes (``"random"``, :math:`\widehat{\mathcal{D}}_{rand}`) -- and take a
    small targeted PGD step towards it with a *standard* model,

    .. math::

        x_{adv} = \arg\min_{\|x' - x\|_p \le \varepsilon} \mathcal{L}(f(x'), t),

    then label it :math:`t`. To a human every :math:`x_{adv}` still shows class :math:`y`,
    so the new data set looks mislabelled; yet a model trained on it only from scratch
    generalises to the *original* test set above chance, because the non-robust features
    the attack planted are genuinely predictive of :math:`t` in the real data.

    Parameters
    ----------
    model : nn.Module
        The (standard) model whose non-robust features are used.
    data : Split or (x, y)
    eps, norm, steps, step_size
        The targeted :func:`robustlab.attacks.pgd` (Ilyas et al.: L2, eps 0.5 on CIFAR-10).
    target : {"next", "random"}
    batch_size, seed, progress

    Returns
    -------
    Split
        ``(x_adv, t)`` on the CPU.
    """
    check_model(model)
    x, y = check_xy(data)
    check_nonneg(eps, "eps", allow_tensor=False)
    check_choice(norm, "norm", ("linf", "l2"))
    check_positive_int(steps, "steps")
    check_choice(target, "target", ("next", "random"))
    check_positive_int(batch_size, "batch_size")
    check_seed(seed)
    with torch.no_grad(), _attacks.eval_mode(model):
        k = model(x[:1].to(_models.device_of(model))).shape[1]
    if int(y.max()) >= k:
        raise ValueError(f"data.y holds class {int(y.max())} but the model has {k} classes")
    gen = torch.Generator().manual_seed(seed)
    if target == "next":
        t = (y + 1) % k
    else:
        t = (y + torch.randint(1, k, y.shape, generator=gen)) % k
    out = []
    bar = _bar(math.ceil(x.shape[0] / batch_size), "non-robust data set", progress)
    try:
        for i in range(0, x.shape[0], batch_size):
            sl = slice(i, i + batch_size)
            out.append(_attacks.pgd(model, x[sl], y[sl], eps=eps, norm=norm, steps=steps, step_size=step_size,
                                    targets=t[sl], seed=seed + i).cpu())
            bar.update(1)
    finally:
        bar.close()
    return _data.Split(torch.cat(out), t.clone())


@dataclasses.dataclass
class FeatureDatasets:
    """Standard models trained on each data set of :func:`feature_datasets_experiment`.

    ``names[k]`` is a data set, ``clean[k]`` the accuracy of a standard model trained on
    it, on the *original* test set, and ``robust[k]`` its PGD accuracy there at
    ``eps`` (Linf). ``datasets`` maps names to the data sets themselves.
    """

    names: list
    clean: list
    robust: list
    eps: float
    datasets: dict

    def as_table(self) -> list:
        return [dict(dataset=n, clean=c, robust=r) for n, c, r in zip(self.names, self.clean, self.robust)]

    def plot(self, ax=None):
        """Grouped bars: clean and robust test accuracy per training set."""
        import matplotlib.pyplot as plt
        import numpy as np

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 3.5))
        pos = np.arange(len(self.names))
        ax.bar(pos - 0.2, self.clean, 0.4, label="clean test accuracy")
        ax.bar(pos + 0.2, self.robust, 0.4, label=f"robust test accuracy (Linf eps={self.eps:g})")
        ax.set_xticks(pos)
        ax.set_xticklabels(self.names, fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("accuracy (original test set)")
        ax.legend(fontsize=8)
        return ax


def feature_datasets_experiment(
    standard_model: nn.Module,
    robust_model: nn.Module,
    train,
    test,
    *,
    eps: float = 0.1,
    arch: str = "cnn",
    dataset: str | None = None,
    steps: int = 200,
    step_size: float = 0.1,
    adv_eps: float = 2.0,
    epochs: int = 30,
    lr: float = 2e-3,
    attack: str = "ensemble",
    eval_steps: int = 20,
    seed: int = 0,
    progress: bool | None = None,
) -> FeatureDatasets:
    r"""Ilyas et al.'s experiment: train a *standard* model on each constructed data set
    and test it on the real test set.

    Data sets: the original ``train``; :math:`\widehat{\mathcal{D}}_R` =
    :func:`robust_dataset` of ``robust_model``; :math:`\widehat{\mathcal{D}}_{NR}` =
    :func:`robust_dataset` of ``standard_model``; :math:`\widehat{\mathcal{D}}_{det}` and
    :math:`\widehat{\mathcal{D}}_{rand}` = :func:`non_robust_dataset` of ``standard_model``
    (L2 radius ``adv_eps``, target :math:`y + 1` or random). ``adv_eps = 2`` makes the
    targeted attack succeed on practically every 8x8 digit (Ilyas et al. use 0.5 on 32x32
    CIFAR-10 images). Each trains a fresh ``arch`` model with standard training
    (:func:`robustlab.train.fit`, Adam); the result records its clean test accuracy and
    its robust accuracy at Linf ``eps``: under the attack ensemble of
    :func:`robustlab.attacks.robust_accuracy` (``attack="ensemble"``, the number to report
    as a model's robustness), or under one Linf PGD of ``eval_steps`` steps (``attack="pgd"``).

    Expected shape of the result (Ilyas et al., CIFAR-10): :math:`\widehat{\mathcal{D}}_R`
    gives a standard-trained model real robust accuracy; :math:`\widehat{\mathcal{D}}_{NR}`
    and the original data give none; :math:`\widehat{\mathcal{D}}_{det}` and
    :math:`\widehat{\mathcal{D}}_{rand}`, whose labels look wrong, still give clean accuracy
    far above chance. On the 8x8 digits (``benchmarks/adversarial_training.py``) the
    relabelled sets reproduce clearly (about 80% and 87% clean accuracy against 10%
    chance), while :math:`\widehat{\mathcal{D}}_R` gives a smaller robustness gain than on
    CIFAR-10: more than :math:`\widehat{\mathcal{D}}_{NR}` and the original data at Linf
    0.1, by a few points.

    Returns
    -------
    FeatureDatasets
        With ``.plot()``.
    """
    check_model(standard_model, "standard_model")
    check_model(robust_model, "robust_model")
    train = _data.Split(*check_xy(train, "train"))
    test = _data.Split(*check_xy(test, "test"))
    check_nonneg(eps, "eps", allow_tensor=False)
    check_positive_int(epochs, "epochs")
    check_choice(attack, "attack", ("ensemble", "pgd"))
    check_positive_int(eval_steps, "eval_steps")
    sets = {
        "original": train,
        "robust (D_R)": robust_dataset(robust_model, train, steps=steps, step_size=step_size, seed=seed,
                                       progress=progress),
        "non-robust (D_NR)": robust_dataset(standard_model, train, steps=steps, step_size=step_size, seed=seed,
                                            progress=progress),
        "relabelled adv. (D_det)": non_robust_dataset(standard_model, train, eps=adv_eps, norm="l2", seed=seed,
                                                      progress=progress),
        "relabelled adv. (D_rand)": non_robust_dataset(standard_model, train, eps=adv_eps, norm="l2",
                                                       target="random", seed=seed, progress=progress),
    }
    result = FeatureDatasets([], [], [], eps=float(eps), datasets=sets)
    device = _models.device_of(robust_model)
    for name, split in sets.items():
        model = _models.build(arch, dataset, seed=seed).to(device)
        _train.fit(model, split, epochs=epochs, lr=lr, seed=seed, progress=progress, desc=f"training on {name}")
        result.names.append(name)
        result.clean.append(_train.evaluate(model, test))
        if eps == 0:
            result.robust.append(result.clean[-1])
        elif attack == "ensemble":
            result.robust.append(_attacks.robust_accuracy(model, test, eps=eps, seed=seed, progress=progress))
        else:
            x_adv = _attacks.pgd(model, test.x, test.y, eps=eps, steps=eval_steps, seed=seed)
            result.robust.append(_train.evaluate(model, (x_adv.cpu(), test.y)))
    return result
