r"""The sampling engine of randomized smoothing, and its enumeration twin.

A smoothed classifier is judged by what a base model says about many randomized copies
of each input. This module draws those copies and counts the answers, once for every
smoothing method of the course:

* :func:`sample` / :class:`Sampler` -- the Monte Carlo engine. Input :math:`i` owns a
  noise stream, a ``torch.Generator`` seeded ``seed + i`` (or ``seed[i]``), from which its
  copies are drawn in fixed blocks of ``block`` samples; the copies of consecutive inputs
  are then packed into forward passes of ``batch_size``. Which noise an input gets thus
  depends on its seed alone, never on ``batch_size`` or on the other inputs of the batch,
  and a :class:`Sampler` continues each stream where it stopped (CERTIFY selects its class
  on the first ``n0`` draws and estimates it on the next ``n``). Two modes: ``"counts"``,
  the votes :math:`\#\{j : \arg\max_c f(x_i + \delta_j) = c\}` (int64, lower class index
  on a tie of the logits), and ``"scores"``, the sums
  :math:`\sum_j \mathrm{softmax}(f(x_i + \delta_j))` (float64; PixelDP's expected scores).
* The noise is an argument: :class:`GaussianNoise`, :class:`LaplaceNoise`,
  :class:`UniformNoise`, or any object with a method ``sample(x_i, size, generator)``
  returning ``size`` randomized copies of one input (:class:`Noise` is the interface; an
  ablation mask is another such object).
* :func:`predict_counts` and :func:`certify_counts` -- the two Monte Carlo decisions every
  randomized certifier makes from these counts (PREDICT: the binomial test of the top two
  classes; CERTIFY: the class chosen on the selection draws, the one-sided Clopper--Pearson
  bound :math:`\underline{p_A}` of its count on the estimation draws, abstention unless
  :math:`\underline{p_A} > 1/2`); a certifier only maps :math:`\underline{p_A}` to its radius.
* :func:`enumerate_votes` -- deterministic smoothing: every transform of a finite family
  (every band, block or offset; :class:`TransformFamily`, e.g. :class:`Translations`)
  applied to every input exactly once, packed into large forward passes, returning the
  votes (B, T) or their counts.

The model runs in eval mode (restored afterwards), without gradients, on its own device
and dtype (:mod:`robustlab.models`); the returned tensors live on the device of ``x``.
The noisy copies are identical whatever the packing; counts are integers and score sums
are accumulated copy by copy in stream order, so both are identical on the CPU for every
``batch_size`` >= 2 (a forward pass of a single row may use another matrix kernel and round
its logits differently, and on a GPU the order of the additions may vary: there the sums
agree to rounding).
"""

from __future__ import annotations

import abc
from numbers import Integral
from typing import Callable, NamedTuple

import numpy as np
import torch

from .. import config
from .. import models as _models
from .. import votes as _votes
from ..certificates import ABSTAIN
from ..stats import binomial_test_half, clopper_pearson
from .._validate import (check_choice, check_model, check_positive, check_positive_int, check_probability, check_seed,
                         check_tensor)

__all__ = [
    "BLOCK",
    "Noise",
    "GaussianNoise",
    "LaplaceNoise",
    "UniformNoise",
    "seeds",
    "Sampler",
    "sample",
    "Decision",
    "predict_counts",
    "certify_counts",
    "TransformFamily",
    "Translations",
    "enumerate_votes",
]

BLOCK = 1000
"""Each input's noise is drawn in blocks of this many copies, whatever the forward batch size."""

MODES = ("counts", "scores")


# =========================================================================== noise


class Noise:
    """The interface of a noise: ``sample(x_i, size, generator)`` returns ``size`` randomized
    copies of one input ``x_i`` (shape ``(size, *x_i.shape)``, on ``x_i``'s device and dtype),
    drawing every random number from ``generator``.

    Additive noises implement ``draw(shape, generator, device, dtype)`` (the noise alone)
    and inherit ``sample`` as ``x_i + draw(...)``; a noise that is not additive (an
    ablation mask) overrides ``sample``.
    """

    def draw(self, shape, generator, device, dtype) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement draw(shape, generator, device, dtype) "
                                  "or override sample(x_i, size, generator)")

    def sample(self, x_i: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
        noise = self.draw((size, *x_i.shape), generator, x_i.device, x_i.dtype)
        return noise.add_(x_i)


class GaussianNoise(Noise):
    r""":math:`x + \delta`, :math:`\delta \sim \mathcal{N}(0, \sigma^2 I)` (Gaussian smoothing; PixelDP's
    Gaussian mechanism), not clamped.

    >>> GaussianNoise(0.5).sample(torch.zeros(3), 2, torch.Generator().manual_seed(0)).shape
    torch.Size([2, 3])
    """

    def __init__(self, sigma: float):
        self.sigma = float(check_positive(sigma, "sigma"))

    def draw(self, shape, generator, device, dtype):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype).mul_(self.sigma)

    def __repr__(self):
        return f"GaussianNoise(sigma={self.sigma:g})"


class LaplaceNoise(Noise):
    r""":math:`x + \delta`, independent :math:`\delta_k \sim \mathrm{Laplace}(0, b)` (PixelDP's Laplace
    mechanism): the difference of two Exp(1) variables, times ``scale``.

    >>> z = LaplaceNoise(2.0).draw((100_000,), torch.Generator().manual_seed(0), "cpu", torch.float64)
    >>> round(float(z.abs().mean()), 1)  # E|Z| = b
    2.0
    """

    def __init__(self, scale: float):
        self.scale = float(check_positive(scale, "scale"))

    def draw(self, shape, generator, device, dtype):
        u = torch.rand((2, *shape), generator=generator, device=device, dtype=dtype)
        return (torch.log1p(-u[1]) - torch.log1p(-u[0])).mul_(self.scale)

    def __repr__(self):
        return f"LaplaceNoise(scale={self.scale:g})"


class UniformNoise(Noise):
    r""":math:`x + \delta`, independent :math:`\delta_k \sim U[-w, w]` with half-width ``width``
    (smoothing for L1 radii, Yang et al., 2020).

    >>> z = UniformNoise(0.5).draw((1000,), torch.Generator().manual_seed(0), "cpu", torch.float32)
    >>> bool(z.abs().max() <= 0.5)
    True
    """

    def __init__(self, width: float):
        self.width = float(check_positive(width, "width"))

    def draw(self, shape, generator, device, dtype):
        u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        return u.mul_(2.0 * self.width).sub_(self.width)

    def __repr__(self):
        return f"UniformNoise(width={self.width:g})"


def _check_noise(noise):
    if not callable(getattr(noise, "sample", None)):
        raise TypeError(f"noise must have a method sample(x_i, size, generator) (a Noise such as GaussianNoise), "
                        f"got {type(noise).__name__}")
    return noise


# =========================================================================== streams


def seeds(seed, batch: int) -> list[int]:
    """One seed per input: ``seed + i`` for an integer, or a sequence of ``batch`` integers.

    ``None`` draws ``batch`` seeds from torch's global generator (not reproducible unless
    ``torch.manual_seed`` was called).

    >>> seeds(7, 3), seeds([4, 1], 2)
    ([7, 8, 9], [4, 1])
    """
    batch = check_positive_int(batch, "batch", allow_zero=True)
    if seed is None:
        return torch.randint(0, 2 ** 62, (batch,)).tolist()
    if isinstance(seed, Integral) and not isinstance(seed, (bool, np.bool_)):
        seed = check_seed(seed)
        return [seed + i for i in range(batch)]
    if isinstance(seed, torch.Tensor):
        seed = seed.detach().cpu().tolist()
    if isinstance(seed, np.ndarray):
        seed = seed.tolist()
    if not isinstance(seed, (list, tuple)):
        raise TypeError(f"seed must be an int or a sequence of one int per input, got {type(seed).__name__}")
    if len(seed) != batch:
        raise ValueError(f"seed must hold one seed per input ({batch}), got {len(seed)}")
    return [check_seed(s, "seed[i]") for s in seed]


class Sampler:
    r"""Per-input noise streams over a batch, drawn on demand: ``with Sampler(...) as s: s.draw(n)``.

    Every call of :meth:`draw` continues each input's stream: ``draw(n0)`` then ``draw(n)``
    use draws :math:`1..n_0` and :math:`n_0 + 1..n_0 + n` of it, exactly what one
    ``draw(n0 + n)`` would use when ``n0`` is a multiple of ``block`` (the blocks restart
    at each call). Inside the ``with`` block the model is in eval mode and a progress
    bar counts the samples (``total``, if given, sizes the bar for several draws).

    Parameters
    ----------
    model : torch.nn.Module
        Maps a batch of randomized copies to logits (B', K).
    x : torch.Tensor
        The inputs (B, ...) of ``model`` (pixels, or a representation inside a network).
    noise : Noise
        Any object with ``sample(x_i, size, generator)``.
    mode : {"counts", "scores"}
        Argmax votes (int64) or sums of softmax outputs (float64).
    seed : int, sequence of int, or None
        Input ``i``'s stream is seeded ``seed + i`` (or ``seed[i]``); see :func:`seeds`.
    batch_size : int
        Randomized copies per forward pass (memory, not results).
    block : int
        Copies drawn from one stream at a time (part of the definition of the noise).
    progress : bool, optional
        Progress bar (default: the global switch).
    desc : str
        The bar's label.
    total : int, optional
        Samples the bar expects (default: unknown until the first draw).
    """

    def __init__(self, model, x, noise, *, mode: str = "counts", seed=0, batch_size: int = 1000,
                 block: int = BLOCK, progress: bool | None = None, desc: str = "smoothing: sampling",
                 total: int | None = None):
        self.model = check_model(model)
        check_tensor(x, "x")
        if not x.is_floating_point() or x.dim() < 1:
            raise TypeError("x must be a floating-point tensor with a batch dimension")
        self.noise = _check_noise(noise)
        self.mode = check_choice(mode, "mode", MODES)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.block = check_positive_int(block, "block")
        self.x_in = x
        self.device, self.dtype = _models.device_of(model), _models.dtype_of(model)
        self.x = x.detach().to(device=self.device, dtype=self.dtype)
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds(seed, x.shape[0])]
        self._progress, self._desc, self._total = config.progress_enabled(progress), desc, total
        self._stack = None
        self.bar = None

    def __enter__(self) -> "Sampler":
        import contextlib

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(_models.eval_mode(self.model))
        self._stack.enter_context(torch.no_grad())
        self.bar = self._stack.enter_context(config.progress_bar(self._total or 0, self._desc, self._progress,
                                                                 unit="sample"))
        return self

    def __exit__(self, *exc):
        stack, self._stack, self.bar = self._stack, None, None
        return stack.__exit__(*exc)

    def draw(self, n: int) -> torch.Tensor:
        """The next ``n`` copies of every input: counts (B, K) int64 or score sums (B, K) float64,
        on the device of ``x``."""
        n = check_positive_int(n, "n")
        if self._stack is None:
            with self:
                return self.draw(n)
        out = self._run(n)
        return _models.to_input(self.x_in, out)

    def _run(self, n: int) -> torch.Tensor:
        batch = self.x.shape[0]
        acc: torch.Tensor | None = None
        parts: list[torch.Tensor] = []
        owners: list[torch.Tensor] = []
        filled = 0

        def forward(noisy: torch.Tensor, owner: torch.Tensor) -> None:
            nonlocal acc
            logits = self.model(noisy)
            if logits.dim() != 2:
                raise ValueError(f"model must return logits of shape (batch, classes), got {tuple(logits.shape)}")
            k = logits.shape[1]
            lo, hi = int(owner[0]), int(owner[-1]) + 1  # a forward pass covers consecutive inputs
            if acc is None:
                dtype = torch.long if self.mode == "counts" else torch.float64
                acc = torch.zeros(batch, k, dtype=dtype, device=logits.device)
            if self.mode == "counts":
                acc[lo:hi] += _votes.vote_counts_by_owner(owner - lo, logits.argmax(1), hi - lo, k)
            else:  # copy by copy, in stream order
                acc.index_add_(0, owner, logits.double().softmax(1))
            if self.bar is not None:
                self.bar.update(noisy.shape[0])

        for i in range(batch):
            for start in range(0, n, self.block):
                size = min(self.block, n - start)
                copies = self.noise.sample(self.x[i], size, self.generators[i])
                parts.append(copies)
                owners.append(torch.full((size,), i, dtype=torch.long, device=self.device))
                filled += size
                while filled >= self.batch_size:
                    noisy = parts[0] if len(parts) == 1 else torch.cat(parts)
                    owner = owners[0] if len(owners) == 1 else torch.cat(owners)
                    forward(noisy[:self.batch_size], owner[:self.batch_size])
                    filled -= self.batch_size
                    parts, owners = ([noisy[self.batch_size:]], [owner[self.batch_size:]]) if filled else ([], [])
        if filled:
            forward(torch.cat(parts), torch.cat(owners))
        return acc


def sample(model, x, n: int, noise, *, mode: str = "counts", seed=0, batch_size: int = 1000, block: int = BLOCK,
           progress: bool | None = None, desc: str = "smoothing: sampling") -> torch.Tensor:
    r"""Counts or score sums of ``model`` on ``n`` randomized copies of each input (see :class:`Sampler`).

    Returns
    -------
    torch.Tensor
        ``"counts"``: int64 (B, K), every row summing to ``n``; ``"scores"``: float64 (B, K),
        the sums of the ``n`` softmax outputs. On the device of ``x``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> x = torch.rand(3, 1, 8, 8)
    >>> counts = sample(model, x, 50, GaussianNoise(0.25), seed=0, batch_size=7)
    >>> counts.sum(1).tolist(), torch.equal(counts, sample(model, x, 50, GaussianNoise(0.25), seed=0))
    ([50, 50, 50], True)
    """
    n = check_positive_int(n, "n")
    batch = x.shape[0] if isinstance(x, torch.Tensor) and x.dim() else 0
    with Sampler(model, x, noise, mode=mode, seed=seed, batch_size=batch_size, block=block, progress=progress,
                 desc=desc, total=batch * n) as sampler:
        return sampler.draw(n)


# =========================================================================== Monte Carlo decisions


class Decision(NamedTuple):
    """CERTIFY's decision from its two vote tables (:func:`certify_counts`)."""

    prediction: torch.Tensor
    """(B,) int64: the class chosen on the selection draws, or ``ABSTAIN`` where ``pA_lower <= 1/2``."""
    pA_lower: torch.Tensor
    """(B,) float64: the one-sided Clopper--Pearson lower bound of that class's probability."""
    count: torch.Tensor
    """(B,) int64: that class's count among the estimation draws."""
    n0: int
    n: int


def _check_count_table(t, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of vote counts, shape (B, K)")
    t = t.detach().cpu().long()
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{name} must hold counts >= 0")
    return t


def predict_counts(counts: torch.Tensor, alpha: float) -> torch.Tensor:
    r"""PREDICT's decision from vote counts (B, K): the top class, or ``ABSTAIN``.

    With :math:`n_1, n_2` the counts of the two most frequent classes (lower index first
    on a tie), the top class is returned where the two-sided binomial test of :math:`n_1`
    in :math:`n_1 + n_2` at :math:`p = 1/2` has p-value :math:`\le \alpha`; then the
    probability of returning a class other than the smoothed classifier's is at most
    :math:`\alpha` (Hung et al., 2019; Cohen et al., 2019).

    >>> predict_counts(torch.tensor([[90, 10, 0], [48, 52, 0]]), alpha=0.01).tolist()
    [0, -1]
    """
    alpha = check_probability(alpha, "alpha")
    counts = _check_count_table(counts, "counts")
    if counts.shape[1] == 1:  # one class: no runner-up, n2 = 0
        counts = torch.cat([counts, torch.zeros_like(counts)], 1)
    top = _votes.top_two(counts)
    pvalue = torch.from_numpy(np.asarray(binomial_test_half(top.n1, top.n1 + top.n2), dtype=np.float64).reshape(-1))
    return torch.where(pvalue <= alpha, top.c1, torch.full_like(top.c1, ABSTAIN))


def certify_counts(selection: torch.Tensor, estimation: torch.Tensor, alpha: float) -> Decision:
    r"""CERTIFY's decision from its two independent vote tables (B, K).

    The class :math:`\hat c_A` is the plurality of ``selection`` (lower index on a tie);
    :math:`\underline{p_A}` is the one-sided Clopper--Pearson lower bound at level
    ``alpha`` of its count in ``estimation``; the prediction is :math:`\hat c_A` where
    :math:`\underline{p_A} > 1/2`, else ``ABSTAIN``. With probability at least
    :math:`1 - \alpha` over the estimation draws, :math:`p_{\hat c_A} \ge \underline{p_A}`
    (Cohen et al., 2019); the certifier turns :math:`\underline{p_A}` into its radius.
    Every row of a table must sum to the same sample size.

    >>> d = certify_counts(torch.tensor([[8, 2], [5, 5]]), torch.tensor([[990, 10], [400, 600]]), alpha=0.001)
    >>> d.prediction.tolist(), [round(p, 4) for p in d.pA_lower.tolist()], d.n0, d.n
    ([0, -1], [0.976, 0.3524], 10, 1000)
    """
    alpha = check_probability(alpha, "alpha")
    selection, estimation = _check_count_table(selection, "selection"), _check_count_table(estimation, "estimation")
    if selection.shape != estimation.shape:
        raise ValueError(f"selection and estimation must have the same shape, got {tuple(selection.shape)} "
                         f"and {tuple(estimation.shape)}")
    n0s, ns = selection.sum(1), estimation.sum(1)
    if not selection.shape[0]:
        raise ValueError("selection and estimation must hold at least one row")
    if bool((n0s != n0s[0]).any()) or bool((ns != ns[0]).any()) or int(ns[0]) < 1 or int(n0s[0]) < 1:
        raise ValueError("every row of selection (of estimation) must sum to the same sample size >= 1")
    n0, n = int(n0s[0]), int(ns[0])
    guess = _votes.plurality(selection)
    count = estimation.gather(1, guess[:, None])[:, 0]
    p_lower = torch.from_numpy(np.asarray(clopper_pearson(count, n, alpha), dtype=np.float64).reshape(-1))
    prediction = torch.where(p_lower > 0.5, guess, torch.full_like(guess, ABSTAIN))
    return Decision(prediction, p_lower, count, n0, n)


# =========================================================================== enumeration


class TransformFamily(abc.ABC):
    """The interface of a finite family of deterministic transforms :math:`\\{T_t\\}_{t < T}`.

    ``len(family)`` is :math:`T`; ``family.apply(x, t)`` maps a batch ``x`` (b, ...) to
    :math:`T_t(x)` (b, ...) for one index ``t``. Column and block smoothing (every band or
    block kept, the rest ablated) and DSSN (every offset of the quantization) are such
    families.
    """

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of transforms :math:`T`."""

    @abc.abstractmethod
    def apply(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """Transform ``t`` of the batch ``x``."""

    def apply_many(self, x: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        """Transforms ``ts`` (int64, (m,)) of the batch ``x`` (b, ...), transform-major: (m * b, ...).

        Rows ``j * b .. (j + 1) * b - 1`` hold :math:`T_{ts_j}(x)`. This default calls
        :meth:`apply` once per transform; a family that can build many transforms in one tensor
        operation overrides it (the bands of patch smoothing, the offsets of DSSN).
        """
        return torch.cat([self.apply(x, int(t)) for t in ts.tolist()])


class Translations(TransformFamily):
    """Circular shifts of images (B, C, H, W) by each ``(dy, dx)`` in ``shifts``.

    >>> fam = Translations([(0, 0), (0, 1)])
    >>> fam.apply(torch.arange(3.0).view(1, 1, 1, 3), 1).flatten().tolist(), len(fam)
    ([2.0, 0.0, 1.0], 2)
    """

    def __init__(self, shifts):
        shifts = [tuple(int(v) for v in s) for s in shifts]
        if not shifts or any(len(s) != 2 for s in shifts):
            raise ValueError("shifts must be a non-empty sequence of (dy, dx) pairs")
        self.shifts = shifts

    def __len__(self) -> int:
        return len(self.shifts)

    def apply(self, x, t):
        dy, dx = self.shifts[t]
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def enumerate_votes(model, x, family, *, mode: str = "votes", n_classes: int | None = None, batch_size: int = 1000,
                    vote: Callable | None = None, progress: bool | None = None,
                    desc: str = "smoothing: enumerating") -> torch.Tensor:
    r"""The votes of ``model`` on every transform of ``family`` applied to every input, exactly once.

    The :math:`B \cdot T` transformed inputs are packed into forward passes of at most
    ``batch_size`` rows: :math:`\lfloor \mathrm{batch\_size} / T \rfloor` inputs under all
    :math:`T` transforms (or one input under ``batch_size`` transforms when :math:`T` is
    larger), built in one call of ``family.apply_many``.

    Parameters
    ----------
    model : torch.nn.Module
    x : torch.Tensor
        Inputs (B, ...).
    family : TransformFamily
        ``len(family)`` transforms and ``family.apply(x, t)``.
    mode : {"votes", "counts"}
        ``"votes"``: int64 (B, T), ``votes[i, t] = argmax f(T_t(x_i))``; ``"counts"``: int64
        (B, K) vote counts (:func:`robustlab.votes.vote_counts`).
    n_classes : int, optional
        K for ``"counts"`` (default: the number of logits).
    vote : callable, optional
        Maps the logits (b, K) of one forward pass to int64 votes (b,) (default: the argmax);
        patch smoothing's threshold votes use it.

    Returns
    -------
    torch.Tensor
        On the device of ``x``.

    Examples
    --------
    >>> import robustlab as rl
    >>> model = rl.models.build("mlp", "digits", width=2)
    >>> fam = Translations([(0, s) for s in range(4)])
    >>> votes = enumerate_votes(model, torch.rand(3, 1, 8, 8), fam, batch_size=5)
    >>> votes.shape, votes.dtype
    (torch.Size([3, 4]), torch.int64)
    """
    check_model(model)
    check_tensor(x, "x")
    if not x.is_floating_point() or x.dim() < 1:
        raise TypeError("x must be a floating-point tensor with a batch dimension")
    if not (callable(getattr(family, "apply", None)) and callable(getattr(family, "__len__", None))):
        raise TypeError(f"family must have len(family) and apply(x, t) (a TransformFamily), "
                        f"got {type(family).__name__}")
    n_t = check_positive_int(len(family), "len(family)")
    check_choice(mode, "mode", ("votes", "counts"))
    check_positive_int(batch_size, "batch_size")
    if n_classes is not None:
        n_classes = check_positive_int(n_classes, "n_classes")
    if vote is not None and not callable(vote):
        raise TypeError(f"vote must be callable as vote(logits) -> int64 votes, got {type(vote).__name__}")
    batch = x.shape[0]
    device, dtype = _models.device_of(model), _models.dtype_of(model)
    xd = x.detach().to(device=device, dtype=dtype)
    votes = torch.empty((batch, n_t), dtype=torch.long, device=device)
    group = min(n_t, batch_size)  # transforms per forward pass, and inputs per pass so that it holds batch_size rows
    chunk = max(1, min(batch, batch_size // group))
    k_seen = None
    with _models.eval_mode(model), torch.no_grad(), \
            config.progress_bar(batch * n_t, desc, config.progress_enabled(progress), unit="input") as bar:
        for start in range(0, batch, chunk):
            rows = slice(start, min(batch, start + chunk))
            r = rows.stop - rows.start
            for t0 in range(0, n_t, group):
                ts = torch.arange(t0, min(n_t, t0 + group))
                logits = model(family.apply_many(xd[rows], ts))
                k_seen = logits.shape[1]
                pred = logits.argmax(1) if vote is None else vote(logits)
                votes[rows, t0:t0 + len(ts)] = pred.view(len(ts), r).T
                if bar is not None:
                    bar.update(len(ts) * r)
    if mode == "counts":
        out = _votes.vote_counts(votes, n_classes or k_seen)
    else:
        out = votes
    return _models.to_input(x, out)
