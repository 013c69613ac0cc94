r"""Adversarial vulnerability as a misalignment of metrics (Ilyas et al., 2019, section 4).

The data are a two-class Gaussian, :math:`y \in \{\pm 1\}` uniform and
:math:`x \sim \mathcal{N}(y\,\mu, \Sigma)`. The maximum-likelihood classifier compares
the two class likelihoods; its score is linear, :math:`s(x) = w^\top x` with
:math:`w = \Sigma^{-1}\mu`, and its input gradient is :math:`w`. The data's own metric is
the Mahalanobis distance of :math:`\Sigma^{-1}`; the adversary's is the round L2 ball.
Where :math:`\Sigma` has a direction of small variance, :math:`\Sigma^{-1}` is large there,
the gradient :math:`w` turns towards it and away from :math:`\mu`, and a small L2 step
along it changes the score a lot: the vulnerability comes from the misalignment of the
two metrics.

Ilyas et al. (Theorem 2) show that maximum likelihood under an L2 adversary keeps the
mean and learns the covariance

.. math::

    \Sigma_r = \tfrac12 \Sigma + \tfrac1\lambda I + \sqrt{\tfrac1\lambda \Sigma + \tfrac14 \Sigma^2},

where :math:`\lambda > 0` is the Lagrange multiplier of the adversary's budget (small
:math:`\lambda`: a large budget; :math:`\lambda \to \infty`: no adversary,
:math:`\Sigma_r \to \Sigma`). Each eigenvalue :math:`s` of :math:`\Sigma` becomes
:math:`s_r`, the root above :math:`1/\lambda` of :math:`(\lambda s_r - 1)^2 = \lambda^2 s s_r`;
the additive :math:`1/\lambda` makes the spectrum flatter, so the learned metric moves
towards the adversary's, and the robust gradient :math:`w_r = \Sigma_r^{-1}\mu` turns
towards :math:`\mu` (their Theorem 3: the gradient of the robust model is better aligned
with the vector between the class means).

For any linear classifier :math:`\operatorname{sign}(w^\top x)` on this distribution the
accuracies are exact: :math:`y\,w^\top x \sim \mathcal{N}(w^\top\mu, w^\top\Sigma w)`, and
an L2 adversary of radius :math:`\varepsilon` lowers it by :math:`\varepsilon\|w\|_2`, so

.. math::

    \text{acc}_\varepsilon(w) = \Phi\Big(\frac{w^\top\mu - \varepsilon\|w\|_2}{\sqrt{w^\top\Sigma w}}\Big).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .._validate import check_nonneg, check_positive as _check_positive
from ._common import _phi

__all__ = [
    "gaussian_ml_direction",
    "ilyas_robust_covariance",
    "gaussian_linear_accuracy",
    "gradient_angle",
    "Misalignment",
    "misalignment",
]


def _as_mean_cov(mu, sigma):
    mu = torch.as_tensor(mu, dtype=torch.float64)
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    if mu.dim() != 1 or mu.numel() < 1:
        raise ValueError(f"mu must be a vector (d,), got shape {tuple(mu.shape)}")
    d = mu.numel()
    if sigma.shape != (d, d):
        raise ValueError(f"sigma must be a (d, d) covariance with d = {d}, got shape {tuple(sigma.shape)}")
    if not torch.isfinite(mu).all() or not torch.isfinite(sigma).all():
        raise ValueError("mu and sigma must be finite")
    if not torch.allclose(sigma, sigma.T, atol=1e-10):
        raise ValueError("sigma must be symmetric")
    if torch.linalg.eigvalsh(sigma).min() <= 0:
        raise ValueError("sigma must be positive definite")
    return mu, sigma


def gaussian_ml_direction(mu, sigma) -> torch.Tensor:
    r"""The maximum-likelihood classifier of :math:`\mathcal{N}(\pm\mu, \Sigma)`: :math:`w = \Sigma^{-1}\mu`.

    The log-likelihood ratio of the two classes is :math:`2\,w^\top x`, so the classifier is
    :math:`\operatorname{sign}(w^\top x)` and its input gradient is :math:`w` (float64).

    >>> gaussian_ml_direction([1.0, 1.0], [[1.0, 0.0], [0.0, 0.25]]).tolist()
    [1.0, 4.0]
    """
    mu, sigma = _as_mean_cov(mu, sigma)
    return torch.linalg.solve(sigma, mu)


def ilyas_robust_covariance(sigma, lam: float) -> torch.Tensor:
    r"""Ilyas et al.'s robustly learned covariance :math:`\tfrac12\Sigma + \tfrac1\lambda I + (\tfrac1\lambda\Sigma + \tfrac14\Sigma^2)^{1/2}`.

    Computed in the eigenbasis of :math:`\Sigma` (the matrix square root of a symmetric
    positive matrix); ``lam`` is the Lagrange multiplier :math:`\lambda > 0` of the L2
    adversary (``math.inf``: no adversary, the result is :math:`\Sigma`).

    >>> ilyas_robust_covariance([[2.0]], 1.0).item()  # 1 + 1 + sqrt(2 + 1)
    3.732050807568877
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    _as_mean_cov(torch.zeros(sigma.shape[0], dtype=torch.float64), sigma)
    if isinstance(lam, bool) or not isinstance(lam, (int, float)):
        raise TypeError(f"lam must be a number, got {type(lam).__name__}")
    if not lam > 0:
        raise ValueError(f"lam must be > 0 (math.inf for no adversary), got {lam}")
    s, v = torch.linalg.eigh(sigma)
    inv = 0.0 if math.isinf(lam) else 1.0 / lam
    s_r = s / 2 + inv + torch.sqrt(inv * s + s ** 2 / 4)
    return (v * s_r) @ v.T


def gaussian_linear_accuracy(w, mu, sigma, eps: float = 0.0) -> float:
    r"""Exact accuracy of :math:`\operatorname{sign}(w^\top x)` on :math:`\mathcal{N}(\pm\mu, \Sigma)`
    under an L2 adversary of radius ``eps``: :math:`\Phi\big((w^\top\mu - \varepsilon\|w\|_2)/\sqrt{w^\top\Sigma w}\big)`.

    >>> round(gaussian_linear_accuracy([1.0, 0.0], [1.0, 0.0], [[1.0, 0.0], [0.0, 1.0]]), 4)  # Phi(1)
    0.8413
    """
    mu, sigma = _as_mean_cov(mu, sigma)
    w = torch.as_tensor(w, dtype=torch.float64)
    if w.shape != mu.shape:
        raise ValueError(f"w must have the shape of mu {tuple(mu.shape)}, got {tuple(w.shape)}")
    if not w.abs().sum() > 0:
        raise ValueError("w must not be zero")
    check_nonneg(eps, "eps", allow_tensor=False)
    z = (w @ mu - eps * w.norm()) / torch.sqrt(w @ sigma @ w)
    return float(_phi(z))


def gradient_angle(w, mu) -> float:
    r"""The angle in degrees between a classifier's input gradient ``w`` and the mean direction ``mu``.

    >>> gradient_angle([1.0, 1.0], [1.0, 0.0])
    45.0
    """
    w = torch.as_tensor(w, dtype=torch.float64)
    mu = torch.as_tensor(mu, dtype=torch.float64)
    if w.shape != mu.shape or w.dim() != 1:
        raise ValueError(f"w and mu must be vectors of one shape, got {tuple(w.shape)} and {tuple(mu.shape)}")
    nw, nm = w.norm(), mu.norm()
    if nw == 0 or nm == 0:
        raise ValueError("w and mu must not be zero")
    cos = float((w @ mu) / (nw * nm))
    return round(math.degrees(math.acos(max(-1.0, min(1.0, cos)))), 10)


@dataclasses.dataclass
class Misalignment:
    """The standard and robust Gaussian classifiers along a range of adversary strengths.

    ``inv_lams`` holds :math:`1/\\lambda` (0 is the maximum-likelihood classifier); for each,
    ``directions`` the classifier :math:`w_r`, ``angles`` its angle with :math:`\\mu`
    (degrees), ``condition`` the condition number of :math:`\\Sigma_r`, ``clean`` and
    ``robust`` its exact accuracy without and with an L2 adversary of radius ``eps``.
    """

    mu: torch.Tensor
    sigma: torch.Tensor
    eps: float
    inv_lams: list
    directions: list
    angles: list
    condition: list
    clean: list
    robust: list

    def plot(self, axes=None, *, n_points: int = 300, seed: int = 0):
        """Left: samples of a 2-D model with the standard and the most robust boundary and
        their gradients; right: angle and accuracies against :math:`1/\\lambda`."""
        import matplotlib.pyplot as plt

        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        left, right = axes
        if self.mu.numel() == 2:
            g = torch.Generator().manual_seed(seed)
            chol = torch.linalg.cholesky(self.sigma)
            y = torch.randint(0, 2, (n_points,), generator=g) * 2 - 1
            x = y[:, None] * self.mu + torch.randn(n_points, 2, generator=g, dtype=torch.float64) @ chol.T
            left.scatter(x[:, 0], x[:, 1], c=(y > 0).numpy(), cmap="coolwarm", s=6, alpha=0.5)
            span = float(x.abs().max())
            t = torch.linspace(-2 * span, 2 * span, 2, dtype=torch.float64)
            for w, color, name in ((self.directions[0], "k", "maximum likelihood"),
                                   (self.directions[-1], "g", f"robust, 1/λ = {self.inv_lams[-1]:g}")):
                u = w / w.norm()
                perp = torch.stack([-u[1], u[0]])
                left.plot(t * perp[0], t * perp[1], color=color, label=f"{name} boundary")
                left.arrow(0, 0, float(u[0]) * span / 3, float(u[1]) * span / 3, color=color, width=0.01 * span,
                           length_includes_head=True)
            m = self.mu / self.mu.norm()
            left.arrow(0, 0, float(m[0]) * span / 3, float(m[1]) * span / 3, color="C2", width=0.01 * span,
                       length_includes_head=True, label="μ")
            left.set_xlim(-span, span)
            left.set_ylim(-span / 2, span / 2)
            left.set_aspect("equal")
            left.legend(fontsize=7, loc="lower right")
            left.set_title("boundaries and gradients (arrows)")
        right.plot(self.inv_lams, self.angles, "o-", color="k", label="angle(gradient, μ), degrees")
        positive = [v for v in self.inv_lams if v > 0]
        if positive:
            right.set_xscale("symlog", linthresh=min(positive))
        right.set_xlabel("1/λ (adversary's strength in training)")
        right.set_ylabel("degrees")
        ax2 = right.twinx()
        ax2.plot(self.inv_lams, self.clean, "s--", color="C0", label="clean accuracy")
        ax2.plot(self.inv_lams, self.robust, "s-", color="C3", label=f"accuracy, L2 ε = {self.eps:g}")
        ax2.set_ylim(0, 1.02)
        ax2.set_ylabel("exact accuracy")
        lines = right.get_lines() + ax2.get_lines()
        right.legend(lines, [ln.get_label() for ln in lines], fontsize=7, loc="center right")
        right.set_title("robust training aligns the gradient with μ")
        return axes


def misalignment(mu, sigma, *, eps: float, inv_lams=(0.0, 0.01, 0.03, 0.1, 0.3, 1.0)) -> Misalignment:
    r"""The maximum-likelihood and the robust (Ilyas et al., Theorem 2) classifiers of
    :math:`\mathcal{N}(\pm\mu, \Sigma)` for each :math:`1/\lambda` in ``inv_lams``.

    For each: :math:`\Sigma_r` (:func:`ilyas_robust_covariance`), :math:`w_r = \Sigma_r^{-1}\mu`,
    the angle between :math:`w_r` and :math:`\mu` (:func:`gradient_angle`), the condition
    number of :math:`\Sigma_r`, and the exact clean and L2-robust accuracies
    (:func:`gaussian_linear_accuracy`). ``0`` in ``inv_lams`` is the standard classifier.

    >>> m = misalignment([1.0, 0.2], [[1.0, 0.0], [0.0, 0.01]], eps=0.1)
    >>> m.angles[0] > m.angles[-1]
    True
    """
    mu, sigma = _as_mean_cov(mu, sigma)
    _check_positive(eps, "eps")
    inv_lams = [float(v) for v in inv_lams]
    if not inv_lams or any(not math.isfinite(v) or v < 0 for v in inv_lams):
        raise ValueError(f"inv_lams must be a non-empty list of finite numbers >= 0, got {inv_lams}")
    out = Misalignment(mu, sigma, float(eps), inv_lams, [], [], [], [], [])
    for v in inv_lams:
        sigma_r = ilyas_robust_covariance(sigma, math.inf if v == 0 else 1.0 / v)
        w = torch.linalg.solve(sigma_r, mu)
        eig = torch.linalg.eigvalsh(sigma_r)
        out.directions.append(w)
        out.angles.append(gradient_angle(w, mu))
        out.condition.append(float(eig.max() / eig.min()))
        out.clean.append(gaussian_linear_accuracy(w, mu, sigma))
        out.robust.append(gaussian_linear_accuracy(w, mu, sigma, eps))
    return out
