r"""Spectral signatures (Tran, Li and Madry, 2018): a backdoor's trace in the top singular
direction of a label's centred representations, and the filter that removes it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._validate import (check_class_index, check_finite, check_labels, check_model, check_positive,
                         check_probability, check_tensor)

__all__ = ["representations", "spectral_signature_scores", "spectral_filter"]


def representations(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """The learned representation of ``x``: the input of the model's last linear layer.

    Uses :func:`robustlab.features.split_representation` (MLP, SmallCNN, ResNet); eval mode,
    no gradients, returned on the CPU, shape (N, D).
    """
    from ..features import split_representation
    from ..train import _batched

    g, _ = split_representation(check_model(model))
    was_training = model.training
    try:
        return _batched(g, x, batch_size, lambda r: r.flatten(1))
    finally:
        model.train(was_training)


def spectral_signature_scores(representations: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Outlier scores of Tran, Li and Madry (2018), computed label by label.

    For each label :math:`y`, with :math:`R_y` the (n_y, D) representations of the samples
    labelled :math:`y` and :math:`\hat\mu_y` their mean, take the top right singular vector
    :math:`v` of :math:`R_y - \hat\mu_y` and score each sample

    .. math:: \tau_i = \big( (R_i - \hat\mu_y) \cdot v \big)^2 .

    If an :math:`\varepsilon` fraction of a label carries a backdoor whose representation
    differs from the clean one by enough (the paper's spectral separability), the poisoned
    samples are the largest scores.

    Parameters
    ----------
    representations : tensor (N, D)
        E.g. :func:`representations` of a model trained on the poisoned set.
    labels : int64 tensor (N,)

    Returns
    -------
    tensor (N,)
        The scores (0 for a label with a single sample).

    Examples
    --------
    >>> r = torch.tensor([[0., 0.], [1., 0.], [2., 0.], [0., 5.], [0., 6.]])
    >>> spectral_signature_scores(r, torch.tensor([0, 0, 0, 1, 1]))
    tensor([1.0000, 0.0000, 1.0000, 0.2500, 0.2500])
    """
    check_tensor(representations, "representations")
    if representations.dim() != 2:
        raise ValueError(f"representations must have shape (N, D), got {tuple(representations.shape)}")
    check_finite(representations, "representations")
    check_labels(labels, "labels", batch_size=representations.shape[0])
    r = representations.detach().double()
    labels = labels.to(r.device)
    scores = torch.zeros(r.shape[0], dtype=torch.float64, device=r.device)
    for c in torch.unique(labels).tolist():  # one SVD per label
        idx = torch.nonzero(labels == c).flatten()
        if idx.numel() < 2:
            continue
        centred = r[idx] - r[idx].mean(0)
        v = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        scores[idx] = (centred @ v) ** 2
    return scores.to(representations.dtype if representations.is_floating_point() else torch.float32)


def spectral_filter(representations: torch.Tensor, labels: torch.Tensor, rate: float, *, factor: float = 1.5,
                    classes=None) -> torch.Tensor:
    r"""Tran et al.'s filter: drop the top ``factor * rate`` fraction of spectral scores per label.

    As in the paper's Algorithm 1 every label is filtered by default (the defender does
    not know the target); ``classes`` restricts the filter to some labels (e.g. a known
    target, as in the paper's per-target evaluation). From a label with :math:`n_y`
    samples, :math:`\lfloor \text{factor}\cdot\varepsilon\, n_y \rfloor` samples with the
    largest :func:`spectral_signature_scores` are removed, so at most
    ``factor * rate`` of any label goes. Retrain on the kept samples. ``rate`` is Tran et
    al.'s :math:`\varepsilon`, a poison fraction, named as in
    :func:`~robustlab.poisoning.backdoor`, :func:`~robustlab.poisoning.label_flip` and the
    contamination fraction of :mod:`robustlab.robuststats`.

    Parameters
    ----------
    representations : tensor (N, D)
    labels : int64 tensor (N,)
    rate : float in [0, 1]
        An upper bound on the poisoned fraction of a label.
    factor : float
        1.5 in the paper.
    classes : sequence of int, optional
        The labels to filter (default: all).

    Returns
    -------
    bool tensor (N,)
        True for the samples to keep.

    Examples
    --------
    >>> r = torch.cat([torch.zeros(9, 2), torch.tensor([[4., 4.]])]) + 0.01 * torch.arange(10.)[:, None]
    >>> keep = spectral_filter(r, torch.zeros(10, dtype=torch.long), rate=0.1)
    >>> keep.tolist()
    [True, True, True, True, True, True, True, True, True, False]
    """
    scores = spectral_signature_scores(representations, labels)
    rate = check_probability(rate, "rate", closed=True)
    check_positive(factor, "factor")
    labels = labels.to(scores.device)
    present = torch.unique(labels).tolist()
    if classes is None:
        classes = present
    else:
        classes = [check_class_index(c, "classes") for c in classes]
    keep = torch.ones(labels.shape[0], dtype=torch.bool, device=scores.device)
    for c in classes:
        idx = torch.nonzero(labels == c).flatten()
        n_remove = int(math.floor(factor * rate * idx.numel() + 1e-9))
        if n_remove == 0:
            continue
        # a stable sort: equal scores are removed in index order, reproducibly
        order = torch.sort(scores[idx], descending=True, stable=True).indices
        keep[idx[order[:n_remove]]] = False
    return keep.cpu()
