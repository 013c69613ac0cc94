r"""Robust generalisation needs more data (Schmidt et al., 2018): the Gaussian mixture
model's exact errors and the sample-complexity experiment."""

from __future__ import annotations

import dataclasses
import math

import torch

from .. import data as _data
from .._validate import check_choice, check_nonneg, check_positive, check_positive_int, check_seed, check_tensor
from ._common import _bar, _phi


def _mixture_defaults(d, mu_norm, sigma):
    mu_norm = math.sqrt(d) if mu_norm is None else float(check_positive(mu_norm, "mu_norm"))
    sigma = d ** 0.25 if sigma is None else float(check_positive(sigma, "sigma"))
    return mu_norm, sigma


def gaussian_mixture_errors(w: torch.Tensor, *, d: int | None = None, mu_norm: float | None = None,
                            sigma: float | None = None, eps: float = 0.0) -> torch.Tensor:
    r"""Exact standard (``eps=0``) or Linf-robust test error of linear classifiers
    :math:`\operatorname{sign}(w^\top x)` on :func:`robustlab.data.gaussian_mixture`.

    In that model :math:`x \sim \mathcal{N}(y_\pm \theta, \sigma^2 I)` with
    :math:`\theta = \text{mu\_norm}\cdot(1, \dots, 1)/\sqrt d`, so
    :math:`y_\pm w^\top x \sim \mathcal{N}(w^\top\theta, \sigma^2\|w\|_2^2)`, and the
    adversary lowers it by :math:`\varepsilon\|w\|_1`:

    .. math::

        \mathrm{err}_\varepsilon(w) = \Phi\Big(\frac{\varepsilon\|w\|_1 - w^\top\theta}
        {\sigma \|w\|_2}\Big).

    Parameters
    ----------
    w : torch.Tensor
        One classifier (d,) or a batch (T, d).
    d : int, optional
        Dimension (default ``w.shape[-1]``).
    mu_norm, sigma : float, optional
        The mixture's parameters; defaults :math:`\sqrt d` and :math:`d^{1/4}` (Schmidt
        et al.'s scaling, :math:`\|\theta\|_2 = \sqrt d`, :math:`\sigma \propto d^{1/4}`).
    eps : float
        Linf radius.

    Returns
    -------
    torch.Tensor
        Errors, shape () or (T,), float64 (1/2 for ``w = 0``, which cannot decide).

    Examples
    --------
    >>> theta = torch.ones(100)                      # the Bayes classifier w = theta
    >>> float(gaussian_mixture_errors(theta)) < 1e-3
    True
    """
    check_tensor(w, "w")
    if w.dim() not in (1, 2) or w.shape[-1] == 0:
        raise ValueError(f"w must have shape (d,) or (T, d), got {tuple(w.shape)}")
    d = w.shape[-1] if d is None else check_positive_int(d, "d")
    if w.shape[-1] != d:
        raise ValueError(f"w has {w.shape[-1]} coordinates but d={d}")
    mu_norm, sigma = _mixture_defaults(d, mu_norm, sigma)
    check_nonneg(eps, "eps", allow_tensor=False)
    w = w.detach().double().cpu()
    margin = w.sum(-1) * (mu_norm / math.sqrt(d)) - float(eps) * w.abs().sum(-1)
    scale = sigma * w.norm(dim=-1)
    degenerate = (margin < 0).double() + 0.5 * (margin == 0).double()  # w = 0: a coin flip
    return torch.where(scale > 0, _phi(-margin / scale.clamp_min(1e-300)), degenerate)


@dataclasses.dataclass
class SampleComplexity:
    """Test errors against the training-set size (means over ``trials`` training sets).

    ``standard`` is the standard error of the averaging classifier
    :math:`\\hat w = \\frac1n\\sum_i y_i x_i`; ``robust`` its robust error at ``eps``;
    ``robust_thresholded`` the robust error of the robust classifier
    :math:`\\operatorname{sign}(\\hat w)\\max(|\\hat w| - \\varepsilon, 0)`.
    ``bayes_robust`` is the robust error of :math:`w = \\theta` (infinite data).
    """

    n: list
    standard: list
    robust: list
    robust_thresholded: list
    bayes_standard: float
    bayes_robust: float
    d: int
    eps: float

    def as_table(self) -> list:
        return [dict(n=n, standard=s, robust=r, robust_thresholded=t)
                for n, s, r, t in zip(self.n, self.standard, self.robust, self.robust_thresholded)]

    def samples_to_reach(self, level: float, which: str = "standard"):
        """The smallest ``n`` of the grid whose mean error in column ``which`` is <= ``level``
        (None if none is)."""
        check_choice(which, "which", ("standard", "robust", "robust_thresholded"))
        for n, err in zip(self.n, getattr(self, which)):
            if err <= level:
                return n
        return None

    def plot(self, ax=None):
        """Errors against n (log scale), with the infinite-data robust error."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(self.n, self.standard, "o-", label="standard error (averaging)")
        ax.plot(self.n, self.robust, "s-", label=f"robust error (averaging), eps={self.eps:g}")
        ax.plot(self.n, self.robust_thresholded, "^-", label="robust error (thresholded)")
        ax.axhline(self.bayes_robust, color="grey", ls=":", label="robust error with infinite data")
        ax.set_xscale("log")
        ax.set_xlabel("training samples n")
        ax.set_ylabel("test error")
        ax.set_ylim(0, 0.55)
        ax.legend(fontsize=8)
        ax.set_title(f"Gaussian mixture, d={self.d}")
        return ax


def sample_complexity(
    n_grid=(1, 2, 5, 10, 20, 50, 100, 200, 500),
    *,
    d: int = 400,
    eps: float = 0.5,
    mu_norm: float | None = None,
    sigma: float | None = None,
    trials: int = 20,
    seed: int = 0,
    progress: bool | None = None,
) -> SampleComplexity:
    r"""Schmidt et al. (2018): in the Gaussian mixture model, robust generalisation needs
    more data than standard generalisation.

    For each training-set size :math:`n` of ``n_grid`` and each of ``trials`` training
    sets drawn with :func:`robustlab.data.gaussian_mixture`, it fits two linear
    classifiers and computes their exact test errors (:func:`gaussian_mixture_errors`):

    * the averaging classifier :math:`\hat w = \frac1n \sum_i y_{\pm,i}\, x_i` (the natural
      estimator of :math:`\theta`), standard and robust error;
    * its soft-thresholded version :math:`\operatorname{sign}(\hat w)\max(|\hat w| -
      \varepsilon, 0)`, the maximiser of the robust linear objective
      :math:`\min_{\|\delta_i\|_\infty \le \varepsilon} \frac1n \sum_i y_{\pm,i} w^\top
      (x_i + \delta_i) = w^\top \hat w - \varepsilon \|w\|_1` over :math:`\|w\|_2 \le 1`,
      i.e. adversarial training of a linear model in closed form.

    With :math:`\|\theta\|_2 = \sqrt d` and :math:`\sigma = d^{1/4}` (the defaults), a
    handful of samples gives a small standard error, whereas the robust error at
    Linf radius :math:`\varepsilon` needs many more: Schmidt et al. prove that any
    algorithm needs on the order of :math:`\varepsilon^2 \sqrt d / \log d` times more
    samples for robust than for standard generalisation in this model.

    Parameters
    ----------
    n_grid : sequence of int
        Training-set sizes.
    d : int
        Dimension.
    eps : float
        Linf radius of the robust error.
    mu_norm, sigma : float, optional
        Mixture parameters (defaults :math:`\sqrt d`, :math:`d^{1/4}`).
    trials : int
        Training sets per size.
    seed, progress

    Returns
    -------
    SampleComplexity
        With ``.plot()`` and ``.samples_to_reach(level, which)``.

    Examples
    --------
    >>> res = sample_complexity((1, 10, 100), d=100, eps=0.3, trials=5, progress=False)
    >>> res.standard[-1] < res.robust[-1]
    True
    """
    n_grid = [check_positive_int(n, "n_grid") for n in n_grid]
    if not n_grid:
        raise ValueError("n_grid must hold at least one training-set size")
    check_positive_int(d, "d")
    check_nonneg(eps, "eps", allow_tensor=False)
    check_positive_int(trials, "trials")
    seed = check_seed(seed)
    mu_norm, sigma = _mixture_defaults(d, mu_norm, sigma)
    theta = torch.full((d,), mu_norm / math.sqrt(d), dtype=torch.float64)
    kw = dict(d=d, mu_norm=mu_norm, sigma=sigma)
    res = SampleComplexity([], [], [], [], bayes_standard=float(gaussian_mixture_errors(theta, **kw)),
                           bayes_robust=float(gaussian_mixture_errors(theta, eps=eps, **kw)), d=d, eps=float(eps))
    bar = _bar(len(n_grid) * trials, "Gaussian mixture", progress)
    try:
        for n in n_grid:
            ws = []
            for t in range(trials):
                x, y = _data.gaussian_mixture(n, d, mu_norm=mu_norm, sigma=sigma, seed=seed + 1000 * t + n)
                ws.append(((2 * y - 1).double()[:, None] * x.double()).mean(0))
                bar.update(1)
            w = torch.stack(ws)
            w_thr = w.sign() * (w.abs() - eps).clamp_min(0)
            res.n.append(n)
            res.standard.append(float(gaussian_mixture_errors(w, **kw).mean()))
            res.robust.append(float(gaussian_mixture_errors(w, eps=eps, **kw).mean()))
            res.robust_thresholded.append(float(gaussian_mixture_errors(w_thr, eps=eps, **kw).mean()))
    finally:
        bar.close()
    return res
