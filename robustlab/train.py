"""Training and evaluation: one lean loop for every chapter and lab.

:func:`fit` trains a model on in-memory tensors with a seeded shuffle, shows a tqdm
progress bar (``progress=False`` or :func:`robustlab.config.set_progress` switch it off)
and returns a :class:`History`. With ``cache=True`` the trained weights are stored on
disk under a key made of the *full* configuration (architecture, initial weights, data,
every hyperparameter and the loss), so a second call with the same configuration loads
them instantly: run a chapter once before class and it starts fast in the lecture.

The loss is pluggable: ``loss_fn(model, x, y) -> (loss, logits)``. The default,
:func:`cross_entropy_loss`, is standard training; adversarial training plugs an attack
in here. A loss whose settings change during training (an eps that ramps up) declares
``wants_step = True`` and is called ``loss_fn(model, x, y, step=TrainingStep(...))``:
``fit`` tells it which batch of the run it is on, and :func:`ramp` is the one linear
schedule such losses share. The cache is :mod:`robustlab.cache`.

Every function here that returns tensors returns them on the device of its input batch
``x`` (the rule of :mod:`robustlab.models`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from . import cache as _cache
from . import config
from . import models as _models
from ._validate import check_choice, check_images, check_model, check_positive, check_positive_int, check_seed, check_xy

__all__ = [
    "History",
    "Trained",
    "TrainingStep",
    "ramp",
    "cross_entropy_loss",
    "fit",
    "evaluate",
    "predict",
    "predict_proba",
    "trained_model",
    "seed_everything",
]

CACHE_FORMAT = 1
SCHEDULES = ("constant", "onecycle", "cosine")


@dataclasses.dataclass
class History:
    """Per-epoch record of a training run.

    ``loss`` and ``train_acc`` are averages over the epoch's batches (as trained, so in
    train mode); ``test_acc`` is measured after the epoch on ``eval_data`` (NaN when none
    was given). ``notes`` holds messages that callbacks recorded (for example a rollback
    after catastrophic overfitting). ``from_cache`` says the run was loaded, not trained.
    """

    loss: list = dataclasses.field(default_factory=list)
    train_acc: list = dataclasses.field(default_factory=list)
    test_acc: list = dataclasses.field(default_factory=list)
    seconds: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    from_cache: bool = False

    @property
    def epochs(self) -> int:
        return len(self.loss)

    def as_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "from_cache"}

    def plot(self, ax=None):
        """Plot loss and accuracies against the epoch; returns the matplotlib axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        ep = range(1, self.epochs + 1)
        ax.plot(ep, self.loss, label="training loss", color="C0")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax2 = ax.twinx()
        ax2.plot(ep, self.train_acc, label="training accuracy", color="C1")
        if not all(math.isnan(a) for a in self.test_acc):
            ax2.plot(ep, self.test_acc, label="test accuracy", color="C2")
        ax2.set_ylabel("accuracy")
        ax2.set_ylim(0, 1.02)
        lines = ax.get_lines() + ax2.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines], loc="center right")
        return ax


class Trained(NamedTuple):
    """A trained model and its training history."""

    model: torch.nn.Module
    history: History


class TrainingStep(NamedTuple):
    """Where a training run is: what :func:`fit` passes to a loss that declares ``wants_step = True``.

    ``index`` counts the batches of the run from 0 (``epoch * batches_per_epoch +
    batch``); ``total`` is ``epochs * batches_per_epoch``.
    """

    index: int
    epoch: int
    batch: int
    batches_per_epoch: int
    total: int


def ramp(step, length: int, *, delay: int = 0) -> float:
    r"""The linear ramp shared by every schedule of a training run: a fraction in [0, 1].

    .. math:: t(s) = \begin{cases} 0 & s < \text{delay} \\
              \min\big(1, (s - \text{delay} + 1) / \text{length}\big) & \text{otherwise} \end{cases}

    and :math:`t = 1` after the delay when ``length`` is 0 (no ramp). ``step`` is a batch
    index counted from 0 or a :class:`TrainingStep`; ``None`` (a call outside ``fit``)
    means the ramp is over. A ramped eps is ``eps * ramp(step, length)``: batch ``s`` of
    the ramp trains at ``eps * (s + 1) / length``, so no batch trains at 0 unless
    delayed.

    Examples
    --------
    >>> [ramp(s, 4) for s in range(5)]
    [0.25, 0.5, 0.75, 1.0, 1.0]
    >>> [ramp(s, 2, delay=2) for s in range(5)]
    [0.0, 0.0, 0.5, 1.0, 1.0]
    >>> ramp(None, 4), ramp(0, 0)
    (1.0, 1.0)
    """
    check_positive_int(length, "length", allow_zero=True)
    check_positive_int(delay, "delay", allow_zero=True)
    if step is None:
        return 1.0
    if isinstance(step, TrainingStep):
        step = step.index
    check_positive_int(step, "step", allow_zero=True)
    if step < delay:
        return 0.0
    if length == 0:
        return 1.0
    return min(1.0, (step - delay + 1) / length)


def _wants_step(loss_fn) -> bool:
    return bool(getattr(loss_fn, "wants_step", False))


def cross_entropy_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Standard training: the mean cross-entropy of the model's logits on ``(x, y)``.

    Returns ``(loss, logits)`` as every ``loss_fn`` of :func:`fit` must.
    """
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's generators."""
    import random

    import numpy as np

    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fit(
    model: torch.nn.Module,
    train,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    seed: int = 0,
    loss_fn: Callable | None = None,
    eval_data=None,
    progress: bool | None = None,
    cache: bool = False,
    schedule: str = "constant",
    callbacks=(),
    desc: str = "training",
) -> History:
    """Train ``model`` in place on ``train = (x, y)`` and return its :class:`History`.

    Parameters
    ----------
    model : torch.nn.Module
        Maps inputs in [0, 1] to logits; trained on its own device.
    train : Split or (x, y)
        ``x`` (N, ...) in [0, 1], ``y`` int64 (N,).
    epochs, lr, batch_size : int, float, int
        Passes over the data, learning rate, batch size.
    optimizer : {"adam", "sgd"}
        Adam, or SGD with momentum 0.9.
    weight_decay : float
        L2 penalty of the optimizer.
    seed : int
        Seeds the shuffling (and anything random inside ``loss_fn``).
    loss_fn : callable, optional
        ``loss_fn(model, x, y) -> (loss, logits)``; defaults to :func:`cross_entropy_loss`.
        A loss with ``wants_step = True`` (an attribute of the function or object) is
        called ``loss_fn(model, x, y, step=TrainingStep(...))`` instead, with the batch
        of the run (counted from 0 over all epochs), so a schedule such as an eps ramp
        is a function of the step (:func:`ramp`) rather than of a call counter.
    eval_data : Split or (x, y), optional
        Accuracy on it is recorded after every epoch.
    progress : bool, optional
        Show a progress bar (default: the global setting).
    cache : bool
        Load the result from the disk cache if this exact configuration was trained
        before, else train and store it. ``loss_fn`` and ``callbacks`` must then be named
        functions (or objects whose ``repr`` describes them).
    schedule : {"constant", "onecycle", "cosine"}
        Learning-rate schedule, updated every batch: constant; ``"onecycle"`` rises
        linearly from 0 to ``lr`` over the first 40% of the batches and falls back to 0 (the
        cyclic schedule of fast adversarial training); ``"cosine"`` decays from ``lr`` to 0.
    callbacks : sequence of callables
        Each is called after every epoch as ``callback(epoch, model, history)`` (epoch
        counted from 0, after the epoch's entries were appended to ``history``); if any
        returns True, training stops after that epoch. A callback may change the model
        (e.g. roll it back) and append a message to ``history.notes``.

    Returns
    -------
    History

    Examples
    --------
    >>> import robustlab as rl
    >>> train, test = rl.data.load("digits")
    >>> model = rl.models.build("mlp", "digits", width=4)
    >>> hist = fit(model, train, epochs=1, progress=False)
    >>> hist.epochs
    1
    """
    check_model(model)
    x, y = check_xy(train, "train")
    check_positive_int(epochs, "epochs")
    check_positive(lr, "lr")
    check_positive_int(batch_size, "batch_size")
    check_choice(optimizer, "optimizer", ("adam", "sgd"))
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    seed = check_seed(seed)
    if loss_fn is None:
        loss_fn = cross_entropy_loss
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(model, x, y) -> (loss, logits), got {type(loss_fn).__name__}")
    if eval_data is not None:
        eval_data = check_xy(eval_data, "eval_data")
    check_choice(schedule, "schedule", SCHEDULES)
    callbacks = tuple(callbacks)
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(f"callbacks must hold callables callback(epoch, model, history), got {type(cb).__name__}")

    settings = dict(epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
                    weight_decay=weight_decay, seed=seed, loss_fn=_describe(loss_fn), schedule=schedule,
                    callbacks=[_describe(cb) for cb in callbacks])
    path = None
    if cache:
        path = _cache_path(model, (x, y), eval_data, settings)
        blob = _cache.load(path, map_location=_models.device_of(model))
        if blob is not None:
            model.load_state_dict(blob["state_dict"])
            return History(**blob["history"], from_cache=True)

    hist = _fit_loop(model, x, y, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
                     weight_decay=weight_decay, seed=seed, loss_fn=loss_fn, eval_data=eval_data,
                     progress=config.progress_enabled(progress), desc=desc, schedule=schedule, callbacks=callbacks)
    if path is not None:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        _cache.store(path, {"state_dict": state, "history": hist.as_dict(), "settings": settings})
    return hist


def _lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the base learning rate at batch ``step`` of ``total`` (0-based)."""
    t = (step + 1) / total
    if schedule == "onecycle":
        return t / 0.4 if t <= 0.4 else max(0.0, (1 - t) / 0.6)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / total))
    return 1.0


def _fit_loop(model, x, y, *, epochs, lr, batch_size, optimizer, weight_decay, seed, loss_fn, eval_data, progress, desc,
              schedule="constant", callbacks=()):
    device = _models.device_of(model)
    x, y = x.to(device), y.to(device)
    n = x.shape[0]
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n_batches = math.ceil(n / batch_size)
    with_step = _wants_step(loss_fn)
    hist = History()
    was_training = model.training
    bar = config.progress_bar(epochs * n_batches, desc, progress)
    try:
        for epoch in range(epochs):
            start = time.perf_counter()
            model.train()
            perm = torch.randperm(n, generator=gen).to(device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            for i in range(0, n, batch_size):
                step = TrainingStep(epoch * n_batches + i // batch_size, epoch, i // batch_size, n_batches,
                                    epochs * n_batches)
                if schedule != "constant":
                    factor = _lr_factor(schedule, step.index, step.total)
                    for group in opt.param_groups:
                        group["lr"] = lr * factor
                idx = perm[i:i + batch_size]
                xb, yb = x[idx], y[idx]
                loss, logits = loss_fn(model, xb, yb, step=step) if with_step else loss_fn(model, xb, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                # accumulate on the device: no host synchronisation inside the loop
                loss_sum += loss.detach() * yb.shape[0]
                correct += (logits.detach().argmax(1) == yb).sum()
                bar.update(1)
            hist.loss.append(float(loss_sum) / n)
            hist.train_acc.append(float(correct) / n)
            hist.test_acc.append(evaluate(model, eval_data) if eval_data is not None else math.nan)
            hist.seconds.append(time.perf_counter() - start)
            postfix = {"epoch": epoch + 1, "loss": f"{hist.loss[-1]:.3f}", "acc": f"{hist.train_acc[-1]:.3f}"}
            if eval_data is not None:
                postfix["test"] = f"{hist.test_acc[-1]:.3f}"
            bar.set_postfix(postfix)
            stop = [bool(cb(epoch, model, hist)) for cb in callbacks]
            if any(stop):
                break
    finally:
        bar.close()
        opt.zero_grad(set_to_none=True)  # hand back a model without training gradients
        model.train(was_training)
    return hist


@torch.no_grad()
def _batched(model: torch.nn.Module, x: torch.Tensor, batch_size: int, head) -> torch.Tensor:
    """``head(model(batch))`` over ``x`` in batches, in eval mode (restored), on ``x``'s device."""
    check_model(model)
    check_images(x, "x")
    check_positive_int(batch_size, "batch_size")
    with _models.eval_mode(model):
        out = [_models.to_input(x, head(model(_models.to_model(model, x[i:i + batch_size]))))
               for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out)


def predict(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Predicted class indices (B,) of ``x`` in [0, 1], in eval mode, returned on ``x``'s device."""
    return _batched(model, x, batch_size, lambda logits: logits.argmax(1))


def predict_proba(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Softmax probabilities (B, K) of ``x`` in [0, 1], in eval mode, returned on ``x``'s device.

    ``predict_proba(model, x).amax(1)`` is the model's confidence in its prediction.
    """
    return _batched(model, x, batch_size, lambda logits: logits.softmax(1))


def evaluate(model: torch.nn.Module, data, *, batch_size: int = 1024) -> float:
    """Accuracy of ``model`` on ``data = (x, y)``, in eval mode (the mode is restored)."""
    x, y = check_xy(data, "data")
    pred = predict(model, x, batch_size=batch_size)
    return float((pred == y.to(pred.device)).float().mean())


def trained_model(
    dataset: str | None = None,
    arch: str | None = None,
    *,
    width: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    device=None,
    progress: bool | None = None,
    cache: bool = True,
) -> Trained:
    """The standard model of the active profile, trained on ``dataset`` (cached on disk).

    Chapters call this instead of writing a training loop; the first call trains (with a
    progress bar), later calls with the same arguments load the cached weights. Made by
    the zoo's one factory, :func:`robustlab.zoo.profile_model` (recipe ``"standard"``).

    Returns
    -------
    Trained
        ``(model, history)``; the model is in eval mode on ``device`` (default
        :func:`robustlab.models.best_device`).
    """
    from .zoo import profile_model

    prof = config.profile()
    dataset = prof.dataset if dataset is None else dataset

    def train_fn(model, train, test):
        return fit(model, train, epochs=prof.epochs if epochs is None else epochs, lr=prof.lr,
                   batch_size=prof.batch_size, seed=seed, eval_data=test, progress=progress, cache=cache,
                   desc=f"training {model.__class__.__name__} on {dataset}")

    return profile_model(train_fn, dataset, arch, width=width, seed=seed, device=device)


# --------------------------------------------------------------------------- cache


def _describe(fn) -> str:
    if isinstance(fn, functools.partial):
        return f"partial({_describe(fn.func)}, args={fn.args!r}, kwargs={sorted(fn.keywords.items())!r})"
    if not hasattr(fn, "__qualname__"):  # a callable object: its class and its repr describe it
        return f"{type(fn).__module__}.{type(fn).__qualname__}:{fn!r}"
    return f"{getattr(fn, '__module__', '?')}.{fn.__qualname__}"


def _cache_path(model, train, eval_data, settings):
    for what in [settings["loss_fn"], *settings["callbacks"]]:
        if "<lambda>" in what or "<locals>" in what or " object at 0x" in what:
            raise ValueError("cache=True needs loss_fn and callbacks to be module-level functions or objects with a "
                             f"descriptive repr (lambdas and local functions have no stable name), got {what}")
    tensors = [*model.state_dict().values(), *train, *(eval_data if eval_data is not None else ())]
    return _cache.entry("models", {"format": CACHE_FORMAT, "model": repr(model), **settings}, *tensors)
