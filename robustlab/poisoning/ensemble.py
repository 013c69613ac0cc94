r"""The vectorized ensemble: the base models of an aggregation trained together
(``torch.func.stack_module_state`` + ``vmap``), each a deterministic function of its own
training samples, with per-model data augmentation.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import config
from .. import data as _data
from .. import models as _models
from ..certificates import Certificate
from .._validate import check_choice, check_images, check_model, check_positive, check_positive_int, check_seed, check_tensor, check_xy
from ..votes import plurality, vote_counts
from .aggregation import certify_dpa, certify_fa, fa_assignment

__all__ = ["PartitionEnsemble", "train_ensemble", "train_dpa", "train_fa", "AUGMENTATIONS"]


def _content_rank(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The rank of each sample in the lexicographic order of (8-bit pixels, label): a
    training order that depends on the samples' contents, not on their positions."""
    levels = torch.round(x.detach().flatten(1).double() * 255).to(torch.int16).cpu().numpy()
    keys = np.concatenate([y.cpu().numpy()[None, :].astype(np.int64), levels.T[::-1]], axis=0)
    order = np.lexsort(keys)  # the last key (the first pixel) is the primary one
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return torch.from_numpy(rank)


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class PartitionEnsemble:
    """``k * d`` base models trained on their own parts of the data, evaluated as one vectorized ensemble.

    Made by :func:`train_dpa` (``d = 1``) and :func:`train_fa`. ``votes(x)`` runs all base
    models in one ``vmap``-ed forward pass; ``certify(x)`` returns the shared
    :class:`~robustlab.certificates.Certificate` (:func:`certify_dpa` for ``d = 1``,
    :func:`certify_fa` otherwise); ``model(i)`` gives base model ``i`` as an ordinary module.
    """

    def __init__(self, template: nn.Module, params: dict, buffers: dict, *, k: int, d: int, seed: int, n_classes: int,
                 history: dict | None = None):
        self.template = template  # on the meta device: structure only
        self.params = params
        self.buffers = buffers
        self.k, self.d, self.seed, self.n_classes = k, d, seed, n_classes
        self.history = history or {}

    @property
    def n_models(self) -> int:
        return self.k * self.d

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def model(self, i: int) -> nn.Module:
        """Base model ``i`` as a standalone ``nn.Module`` (a copy, on the ensemble's device)."""
        check_positive_int(i, "i", allow_zero=True)
        if i >= self.n_models:
            raise ValueError(f"i must be < {self.n_models} (the number of base models), got {i}")
        m = copy.deepcopy(self.template).to_empty(device=self.device)
        m.load_state_dict({**{n: p[i].detach() for n, p in self.params.items()},
                           **{n: b[i] for n, b in self.buffers.items()}})
        return m.eval()

    @torch.no_grad()
    def logits(self, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
        """Logits of every base model, shape (n_models, B, C), on the CPU."""
        from torch.func import functional_call, vmap

        check_images(x, "x")
        check_positive_int(batch_size, "batch_size")
        template = self.template

        def one(p, b, xb):
            return functional_call(template, (p, b), (xb,))

        run = vmap(one, in_dims=(0, 0, None))
        out = [run(self.params, self.buffers, x[i:i + batch_size].to(self.device)).cpu()
               for i in range(0, x.shape[0], batch_size)]
        return torch.cat(out, dim=1)

    def votes(self, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
        """The class each base model predicts, shape (B, n_models)."""
        return self.logits(x, batch_size=batch_size).argmax(2).T.contiguous()

    def certify(self, x: torch.Tensor, *, batch_size: int = 512) -> Certificate:
        """Plurality prediction and certified poison size of each input (:func:`certify_dpa`, :func:`certify_fa`)."""
        votes = self.votes(x, batch_size=batch_size)
        if self.d == 1:
            return certify_dpa(votes, self.n_classes)
        return certify_fa(votes, self.n_classes, self.k, self.d, seed=self.seed)

    def predict(self, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
        """The plurality vote (ties to the lower class index), shape (B,)."""
        return plurality(vote_counts(self.votes(x, batch_size=batch_size), self.n_classes))

    def base_accuracy(self, data) -> torch.Tensor:
        """Accuracy of every base model on ``data = (x, y)``, shape (n_models,)."""
        x, y = check_xy(data, "data")
        return (self.votes(x) == y[:, None]).float().mean(0)

    def __repr__(self) -> str:
        kind = "DPA" if self.d == 1 else "FiniteAggregation"
        return f"PartitionEnsemble({kind}, k={self.k}, d={self.d}, base={self.template.__class__.__name__})"


def _model_orders(groups: list, epochs: int, seed: int, *, n_random: int = 0):
    """(M, epochs, L) sample indices, -1 padded: model m's order in each epoch, drawn from a
    generator seeded by (seed, m) alone, over its samples sorted by content. With
    ``n_random > 0`` also (M, epochs, L, n_random) uniform numbers for the augmentation of
    each visit, drawn from the same generator after the orders (else None)."""
    n_models = len(groups)
    longest = max((g.numel() for g in groups), default=0)
    out = torch.full((n_models, epochs, max(longest, 1)), -1, dtype=torch.long)
    rand = torch.zeros((n_models, epochs, max(longest, 1), n_random)) if n_random else None
    gen = torch.Generator()
    for m, members in enumerate(groups):  # index bookkeeping only, one call per model
        if members.numel() == 0:
            continue
        gen.manual_seed(seed * 1_000_003 + m)
        perm = torch.rand(epochs, members.numel(), generator=gen).argsort(1)
        out[m, :, :members.numel()] = members[perm]
        if n_random:
            rand[m, :, :members.numel()] = torch.rand(epochs, members.numel(), n_random, generator=gen)
    return out, rand


AUGMENTATIONS = ("shift", "flip", "cutout", "affine")
_N_RANDOM = 9  # uniform numbers per visit: shift (2), flip (1), cutout position (2), affine (4)


def _augment_plan(augment, n_models: int):
    """Per-model augmentation as a (M, 4) bool tensor (shift, flip, cutout, affine), or None."""
    if augment is None:
        return None
    kinds = [augment] if isinstance(augment, str) else list(augment)
    if not kinds:
        raise ValueError("augment must be None, an augmentation name or a non-empty sequence of them")
    plan = torch.zeros(n_models, len(AUGMENTATIONS), dtype=torch.bool)
    for m in range(n_models):
        kind = kinds[m % len(kinds)]
        if kind is None or kind == "none":
            continue
        if not isinstance(kind, str):
            raise TypeError(f"augment entries must be strings or None, got {type(kind).__name__}")
        for part in kind.split("+"):
            if part not in AUGMENTATIONS:
                raise ValueError(f"augment: unknown augmentation {part!r}; choose from {AUGMENTATIONS} "
                                 f"(combine with '+', e.g. 'shift+flip', or None)")
            plan[m, AUGMENTATIONS.index(part)] = True
    return plan if bool(plan.any()) else None


def _apply_augment(xb: torch.Tensor, u: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
    """Augment a (M, b, C, H, W) batch; ``u`` (M, b, 9) uniform numbers, ``plan`` (M, 4) bools.

    shift: a translation by up to max(1, round(H / 8)) pixels each way, zero fill;
    flip: a horizontal flip with probability 1/2; cutout: a zeroed square of side
    max(1, round(H / 4)) at a uniform position; affine: a rotation by up to 10 degrees, a
    scaling by up to 10% and a shift by up to H / 16 pixels (bilinear, zero fill). Pixels
    stay in [0, 1]."""
    n_models, b, c, h, w = xb.shape
    x = xb.reshape(n_models * b, c, h, w)
    u = u.reshape(n_models * b, -1)
    use = plan.to(x.device).repeat_interleave(b, dim=0)  # (R, 3)
    rows = torch.arange(x.shape[0], device=x.device)
    if bool(use[:, 0].any()):
        s = max(1, round(h / 8))
        dy = (u[:, 0] * (2 * s + 1)).floor().long().clamp(max=2 * s) - s
        dx = (u[:, 1] * (2 * s + 1)).floor().long().clamp(max=2 * s) - s
        dy, dx = torch.where(use[:, 0], dy, 0), torch.where(use[:, 0], dx, 0)
        padded = F.pad(x, (s, s, s, s))
        ri = (s - dy)[:, None] + torch.arange(h, device=x.device)  # out[i, j] = x[i - dy, j - dx]
        ci = (s - dx)[:, None] + torch.arange(w, device=x.device)
        x = padded[rows[:, None, None], :, ri[:, :, None], ci[:, None, :]].permute(0, 3, 1, 2)
    if bool(use[:, 3].any()):
        angle = (u[:, 5] * 2 - 1) * math.radians(10)
        scale = 1 + (u[:, 6] * 2 - 1) * 0.1
        ty = (u[:, 7] * 2 - 1) / 8  # half a pixel on 8x8 images, in [-1, 1] grid units
        tx = (u[:, 8] * 2 - 1) / 8
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = torch.where(use[:, 3].view(-1, 1, 1, 1), warped, x)
    if bool(use[:, 1].any()):
        flip = (use[:, 1] & (u[:, 2] < 0.5)).view(-1, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)
    if bool(use[:, 2].any()):
        side = max(1, round(h / 4))
        top = (u[:, 3] * (h - side + 1)).floor().long().clamp(max=h - side)
        left = (u[:, 4] * (w - side + 1)).floor().long().clamp(max=w - side)
        ii = torch.arange(h, device=x.device)[None, :, None]
        jj = torch.arange(w, device=x.device)[None, None, :]
        hole = ((ii >= top[:, None, None]) & (ii < (top + side)[:, None, None])
                & (jj >= left[:, None, None]) & (jj < (left + side)[:, None, None]))
        hole = hole & use[:, 2, None, None]
        x = x.masked_fill(hole[:, None], 0.0)
    return x.reshape(n_models, b, c, h, w)


def train_ensemble(train, assignment: torch.Tensor, n_models: int, *, base: Callable[[int], nn.Module],
                   epochs: int, lr: float = 1e-3, batch_size: int = 16, seed: int = 0, augment=None,
                   device=None, progress: bool | None = None, desc: str = "training the ensemble"):
    r"""Train ``n_models`` copies of an architecture, model ``m`` only on the samples assigned to it.

    All models are trained at once: their parameters are stacked
    (``torch.func.stack_module_state``) and one ``vmap``-ed forward and backward pass per
    step serves every model. At each step model :math:`m` takes the next ``batch_size``
    samples of its own shuffled list; partitions of unequal size are handled by masking:
    every list is padded to the same whole number of batches, the padding rows (a zero
    input) carry weight 0, a model's loss is the mean over its real rows, and a model
    whose list is used up for this epoch takes no optimizer step (a per-model Adam, so
    waiting changes nothing). Every batch is ``batch_size`` rows wide, so even the
    floating-point arithmetic of model :math:`m` does not depend on the other partitions:
    model :math:`m` is a deterministic function, bit for bit, of the *set* of its samples,
    its index and ``seed``: its
    initial weights come from ``base(seed * 1_000_003 + m)``, its sample order from a
    generator seeded by ``(seed, m)`` over its samples sorted by content (8-bit pixels,
    then label). That is what the aggregation certificates require. Data augmentation
    (``augment``) keeps it so: the random numbers of model :math:`m`'s augmentations come
    from the same per-model generator.

    Parameters
    ----------
    train : Split or (x, y)
    assignment : int64 tensor (N, d)
        The models each sample trains (e.g. :func:`fa_assignment`); values in [0, n_models).
    n_models : int
    base : callable
        ``base(seed) -> nn.Module``, a fresh base model (no BatchNorm: its running statistics
        cannot be updated under ``vmap``).
    epochs, lr, batch_size, seed : int, float, int, int
        Passes over each model's samples, Adam's learning rate, per-model batch size, seed.
    augment : str or sequence of (str or None), optional
        Data augmentation of image batches: ``"shift"`` (a random translation by up to
        ``max(1, round(H / 8))`` pixels, zero fill), ``"flip"`` (horizontal, probability
        1/2), ``"cutout"`` (a zeroed square of side ``max(1, round(H / 4))``),
        ``"affine"`` (a rotation by up to 10 degrees, a scaling by up to 10% and a shift by
        up to ``H / 16`` pixels, bilinear), combined with ``+`` (``"shift+cutout"``). A sequence gives *different augmentations to
        different base models*: model ``m`` uses ``augment[m % len(augment)]`` (``None``:
        none), as in Wang, Levine and Feizi's experiments for the Lethal Dose Conjecture.
    device : torch.device, optional
        Default :func:`robustlab.models.best_device`.
    progress : bool, optional
        Show a progress bar (default: the global setting).

    Returns
    -------
    (template, params, buffers, history)
        The meta-device template, the stacked parameters and buffers (leading dim
        ``n_models``) and ``{"loss": [...]}``, the mean training loss per epoch.
    """
    from torch.func import functional_call, grad, stack_module_state, vmap

    x, y = check_xy(train, "train")
    check_positive_int(n_models, "n_models")
    check_tensor(assignment, "assignment")
    if assignment.dim() == 1:
        assignment = assignment[:, None]
    if assignment.dtype != torch.int64 or assignment.dim() != 2 or assignment.shape[0] != x.shape[0]:
        raise ValueError(f"assignment must be an int64 tensor of shape (N, d) with N = {x.shape[0]}, got "
                         f"{assignment.dtype} {tuple(assignment.shape)}")
    if assignment.numel() and (int(assignment.min()) < 0 or int(assignment.max()) >= n_models):
        raise ValueError(f"assignment must hold model indices in [0, {n_models})")
    if not callable(base):
        raise TypeError(f"base must be callable as base(seed) -> nn.Module, got {type(base).__name__}")
    check_positive_int(epochs, "epochs")
    check_positive(lr, "lr")
    check_positive_int(batch_size, "batch_size")
    seed = check_seed(seed)
    plan = _augment_plan(augment, n_models)
    if plan is not None and x.dim() != 4:
        raise ValueError(f"augment needs image samples (N, C, H, W), got train.x of shape {tuple(x.shape)}")
    device = _models.best_device() if device is None else torch.device(device)

    models = [base(seed * 1_000_003 + m) for m in range(n_models)]
    for m in models[:1]:
        check_model(m, "base(seed)")
        if _has_batchnorm(m):
            raise ValueError("base must build models without BatchNorm (use 'mlp' or 'cnn'): running statistics "
                             "cannot be updated inside the vectorized ensemble")
    params, buffers = stack_module_state([m.to(device) for m in models])
    params = {n: p.detach().clone() for n, p in params.items()}
    template = copy.deepcopy(models[0]).to("meta")
    del models

    # each model's samples, sorted by content
    rank = _content_rank(x, y)
    flat_model = assignment.flatten()
    flat_sample = torch.arange(x.shape[0]).repeat_interleave(assignment.shape[1])
    order = torch.argsort(flat_model * (x.shape[0] + 1) + rank[flat_sample])
    flat_model, flat_sample = flat_model[order], flat_sample[order]
    sizes = torch.bincount(flat_model, minlength=n_models)
    groups = list(torch.split(flat_sample, sizes.tolist()))
    orders, aug_rand = _model_orders(groups, epochs, seed, n_random=_N_RANDOM if plan is not None else 0)
    # every step's batch is batch_size rows wide for every model: the lists are padded to a
    # whole number of batches, so no model's arithmetic depends on the longest partition
    steps = math.ceil(orders.shape[2] / batch_size)
    pad = steps * batch_size - orders.shape[2]
    if pad:
        orders = F.pad(orders, (0, pad), value=-1)
        if aug_rand is not None:
            aug_rand = F.pad(aug_rand, (0, 0, 0, pad))
    orders = orders.to(device)
    x_dev, y_dev = x.to(device), y.to(device)
    zero_x = torch.zeros((), dtype=x_dev.dtype, device=device)

    def loss_one(p, b, xb, yb, wb):
        logits = functional_call(template, (p, b), (xb,))
        loss = F.cross_entropy(logits, yb, reduction="none")
        return (loss * wb).sum() / wb.sum().clamp_min(1.0), loss

    grad_all = vmap(grad(loss_one, has_aux=True), in_dims=(0, 0, 0, 0, 0))
    beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
    m1 = {n: torch.zeros_like(p) for n, p in params.items()}
    m2 = {n: torch.zeros_like(p) for n, p in params.items()}
    t = torch.zeros(n_models, device=device)
    history = {"loss": []}
    bar = config.progress_bar(epochs * steps, desc, config.progress_enabled(progress), unit="step")
    try:
        for epoch in range(epochs):
            loss_sum = torch.zeros((), device=device)
            for s in range(steps):
                idx = orders[:, epoch, s * batch_size:(s + 1) * batch_size]  # (M, b)
                real = idx >= 0
                w = real.float()
                safe = idx.clamp_min(0)
                # padding rows: a zero input of weight 0, the same whatever the data set
                xb = torch.where(real.view(real.shape + (1,) * (x_dev.dim() - 1)), x_dev[safe], zero_x)
                if plan is not None:
                    u = aug_rand[:, epoch, s * batch_size:(s + 1) * batch_size].to(device)
                    xb = _apply_augment(xb, u, plan)
                grads, losses = grad_all(params, buffers, xb, torch.where(real, y_dev[safe], 0), w)
                active = w.sum(1) > 0
                t = t + active.float()
                tc = t.clamp_min(1.0)
                for n, p in params.items():
                    shape = (-1,) + (1,) * (p.dim() - 1)
                    act = active.view(shape)
                    g = grads[n]
                    m1[n] = torch.where(act, beta1 * m1[n] + (1 - beta1) * g, m1[n])
                    m2[n] = torch.where(act, beta2 * m2[n] + (1 - beta2) * g * g, m2[n])
                    m_hat = m1[n] / (1 - beta1 ** tc).view(shape)
                    v_hat = m2[n] / (1 - beta2 ** tc).view(shape)
                    params[n] = torch.where(act, p - lr * m_hat / (v_hat.sqrt() + adam_eps), p)
                loss_sum += (losses.detach() * w).sum()
                bar.update(1)
            history["loss"].append(float(loss_sum) / max(float(sizes.sum()), 1.0))
            bar.set_postfix({"epoch": epoch + 1, "loss": f"{history['loss'][-1]:.3f}"})
    finally:
        bar.close()
    return template, params, buffers, history


def _build_base(arch: str, dataset: str, width: int | None):
    def base(seed: int) -> nn.Module:
        return _models.build(arch, dataset, width=width, seed=seed)
    return base


def _ensemble_cache_path(train, settings: dict):
    from .. import cache

    return cache.entry("ensembles", {"kind": "partition-ensemble", "format": 2, **settings}, *train)


def train_fa(train, k: int, d: int = 1, *, arch: str = "mlp", dataset: str | None = None, width: int | None = 2,
             epochs: int = 30, lr: float = 2e-3, batch_size: int = 16, seed: int = 0, augment=None, device=None,
             progress: bool | None = None, cache: bool = False) -> PartitionEnsemble:
    r"""Train a Finite Aggregation ensemble: :math:`kd` base models over :math:`kd` hashed buckets.

    Each base model trains on the :math:`d` buckets of :func:`fa_assignment`, about
    :math:`1/k` of the data; :math:`d = 1` is DPA with :math:`k` partitions
    (:func:`train_dpa`). The base models are :func:`robustlab.models.build` ``(arch,
    dataset, width)`` trained together by :func:`train_ensemble`.

    Parameters
    ----------
    train : Split
        The (possibly poisoned) training set.
    k, d : int
        Number of partitions, spread.
    arch : {"mlp", "cnn"}
        Base architecture (no BatchNorm).
    dataset : str, optional
        Fixes input shape and normalization (default: the profile's).
    width, epochs, lr, batch_size, seed, augment : see :func:`train_ensemble`
    cache : bool
        Store the trained ensemble on disk under a key of the full configuration and the
        data, and load it from there next time.

    Returns
    -------
    PartitionEnsemble
    """
    x, y = check_xy(train, "train")
    check_positive_int(k, "k")
    check_positive_int(d, "d")
    check_choice(arch, "arch", ("mlp", "cnn"))
    meta = _data.info(dataset)
    if tuple(x.shape[1:]) != tuple(meta.shape):
        raise ValueError(f"train.x has samples of shape {tuple(x.shape[1:])} "
                         f"but dataset {meta.name!r} has {meta.shape}")
    device = _models.best_device() if device is None else torch.device(device)
    _augment_plan(augment, k * d)  # checks the argument before any work
    settings = dict(k=k, d=d, arch=arch, dataset=meta.name, width=width, epochs=epochs, lr=lr, batch_size=batch_size,
                    seed=seed)
    if augment is not None:
        settings["augment"] = [augment] if isinstance(augment, str) else list(augment)
    path = _ensemble_cache_path((x, y), settings) if cache else None
    base = _build_base(arch, meta.name, width)
    from .. import cache

    blob = cache.load(path, map_location=device) if path is not None else None
    if blob is not None:
        template = base(0).to("meta")
        return PartitionEnsemble(template, blob["params"], blob["buffers"], k=k, d=d, seed=seed,
                                 n_classes=meta.n_classes, history=blob["history"])
    assignment = fa_assignment(x, k, d, seed=seed)
    kind = "DPA" if d == 1 else "FA"
    template, params, buffers, history = train_ensemble(
        (x, y), assignment, k * d, base=base, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
        augment=augment, device=device, progress=progress, desc=f"{kind}: training {k * d} base models")
    if path is not None:
        cache.store(path, {"params": {n: p.cpu() for n, p in params.items()},
                           "buffers": {n: b.cpu() for n, b in buffers.items()}, "history": history})
    return PartitionEnsemble(template, params, buffers, k=k, d=d, seed=seed, n_classes=meta.n_classes,
                             history=history)


def train_dpa(train, k: int, **kwargs) -> PartitionEnsemble:
    """Train a Deep Partition Aggregation ensemble of ``k`` base models, one per hash partition.

    ``train_dpa(train, k, ...)`` is ``train_fa(train, k, d=1, ...)``; see :func:`train_fa`
    for the arguments.

    Examples
    --------
    >>> import robustlab as rl
    >>> train, test = rl.data.load("digits")
    >>> ens = train_dpa(train, 5, arch="mlp", width=1, epochs=1, device="cpu", progress=False)
    >>> cert = ens.certify(test.x[:4])
    >>> cert.counts.sum(1).tolist()
    [5, 5, 5, 5]
    """
    if "d" in kwargs:
        raise TypeError("train_dpa has no argument d (it is 1); use train_fa for Finite Aggregation")
    return train_fa(train, k, 1, **kwargs)
