"""The policy-smoothing explorer of chapter 17: a running CartPole episode under noise and attack,
beside the certified expected reward."""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_model, check_nonneg, check_positive, check_positive_int, check_probability, check_seed
from ..smoothing import policy as _policy
from ._live import live

__all__ = ["PolicySmoothingExplorer"]


class PolicySmoothingExplorer:
    r"""One CartPole episode of the smoothed policy at a chosen noise level and per-step attack.

    For a setting ``(sigma, eps)`` the demo plays one recorded episode (the same start state
    for every setting) with :math:`N(0, \sigma^2 I)` noise on every observation and the
    per-step attack of :func:`robustlab.smoothing.policy.run_episodes` within L2 ``eps``,
    and shows the cart and pole at step ``t``, the pole angle and cart position over the
    episode, and the certificate of :func:`robustlab.smoothing.policy.certify_policy` at
    ``sigma``: the certified expected reward against the per-step budget
    (:math:`B = \epsilon\sqrt T`), with the mean reward of ``n_attacked`` attacked episodes
    at ``eps`` beside it. Results are computed on first use and kept, so moving ``t``
    costs nothing and a new ``(sigma, eps)`` costs one certificate (``n_episodes`` clean
    episodes, once per sigma) and ``n_attacked`` attacked episodes.

    Parameters
    ----------
    policy : torch.nn.Module or dict
        One base policy for every sigma, or ``{sigma: policy}`` (e.g. each fitted under its
        own noise by :func:`robustlab.smoothing.policy.fit_policy`).
    sigmas : sequence of float
        The noise levels to choose from (> 0); ignored when ``policy`` is a dict.
    eps_values : sequence of float
        The per-step budgets to choose from (>= 0).
    n_episodes, n_attacked : int
        Clean episodes per certificate, attacked episodes per setting.
    alpha : float
    horizon : int
    seed : int
    attack_steps : int
        Gradient steps of the attack (1 is exact for a linear policy).
    certificates : dict, optional
        ``{sigma: RewardCertificate}`` already computed for these policies (e.g. by the
        chapter), used instead of new clean episodes; their ``horizon`` must match.

    Examples
    --------
    >>> from robustlab.smoothing.policy import hand_policy
    >>> demo = PolicySmoothingExplorer(hand_policy(), sigmas=(0.2,), eps_values=(0.0, 0.05), n_episodes=200,
    ...                                n_attacked=20)
    >>> out = demo.update(sigma=0.2, eps=0.05, t=10)
    >>> sorted(out)[:7]
    ['attacked_mean', 'budget', 'certified', 'clean_mean', 'curve', 'episode_reward', 'eps']
    >>> bool(out["certified"] <= out["clean_mean"]), out["state"].shape
    (True, (4,))
    """

    def __init__(self, policy, *, sigmas=(0.1, 0.2, 0.4), eps_values=(0.0, 0.01, 0.02, 0.05, 0.1),
                 n_episodes: int = 2000, n_attacked: int = 200, alpha: float = _policy.DEFAULT_ALPHA,
                 horizon: int = _policy.HORIZON, seed: int = 0, attack_steps: int = 1, certificates=None):
        if isinstance(policy, dict):
            if not policy:
                raise ValueError("policy must be a module or a non-empty dict {sigma: policy}")
            self.policies = {float(check_positive(s, "sigma")): check_model(p, "policy") for s, p in policy.items()}
        else:
            check_model(policy, "policy")
            sigmas = [float(check_positive(s, "sigmas")) for s in sigmas]
            if not sigmas:
                raise ValueError("sigmas must hold at least one noise level > 0")
            self.policies = {s: policy for s in sigmas}
        self.sigmas = sorted(self.policies)
        self.eps_values = sorted({float(check_nonneg(e, "eps_values", allow_tensor=False)) for e in eps_values})
        if not self.eps_values:
            raise ValueError("eps_values must hold at least one per-step budget >= 0")
        self.n_episodes = check_positive_int(n_episodes, "n_episodes")
        self.n_attacked = check_positive_int(n_attacked, "n_attacked")
        self.alpha = check_probability(alpha, "alpha")
        self.horizon = check_positive_int(horizon, "horizon")
        self.seed = check_seed(seed)
        self.attack_steps = check_positive_int(attack_steps, "attack_steps")
        top = max(self.eps_values) if max(self.eps_values) > 0 else 0.1
        self.curve_eps = np.linspace(0.0, 1.1 * top, 60)
        self._certs, self._attacked, self._episodes = {}, {}, {}
        for sigma, cert in (certificates or {}).items():
            if not isinstance(cert, _policy.RewardCertificate) or cert.horizon != self.horizon:
                raise TypeError(f"certificates must map sigma -> RewardCertificate of horizon {self.horizon}")
            sigma, _ = self._check(sigma, self.eps_values[0])
            if not math.isclose(cert.sigma, sigma):
                raise ValueError(f"certificates[{sigma}] was computed at sigma {cert.sigma}")
            self._certs[sigma] = cert

    def _check(self, sigma, eps):
        sigma, eps = float(sigma), float(eps)
        if not any(math.isclose(sigma, s) for s in self.sigmas):
            raise ValueError(f"sigma must be one of {self.sigmas}, got {sigma}")
        if not any(math.isclose(eps, e) for e in self.eps_values):
            raise ValueError(f"eps must be one of {self.eps_values}, got {eps}")
        return (min(self.sigmas, key=lambda s: abs(s - sigma)), min(self.eps_values, key=lambda e: abs(e - eps)))

    def certificate(self, sigma: float) -> _policy.RewardCertificate:
        """The certificate at ``sigma`` (computed once on the budgets of the curve, unless given)."""
        sigma, _ = self._check(sigma, self.eps_values[0])
        if sigma not in self._certs:
            self._certs[sigma] = _policy.certify_policy(
                self.policies[sigma], sigma=sigma, budget=_policy.episode_budget(self.curve_eps, self.horizon),
                n_episodes=self.n_episodes, horizon=self.horizon, alpha=self.alpha, seed=self.seed)
        return self._certs[sigma]

    def attacked_mean(self, sigma: float, eps: float) -> float:
        """Mean reward of ``n_attacked`` episodes at ``(sigma, eps)`` (computed once)."""
        key = self._check(sigma, eps)
        if key not in self._attacked:
            if key[1] == 0:
                self._attacked[key] = self.certificate(key[0]).clean_mean
            else:
                self._attacked[key] = _policy.run_episodes(
                    self.policies[key[0]], self.n_attacked, sigma=key[0], eps=key[1], horizon=self.horizon,
                    seed=self.seed + 1, attack_steps=self.attack_steps).mean
        return self._attacked[key]

    def episode(self, sigma: float, eps: float) -> _policy.Episodes:
        """The recorded episode at ``(sigma, eps)``, always from the same start state."""
        key = self._check(sigma, eps)
        if key not in self._episodes:
            self._episodes[key] = _policy.run_episodes(
                self.policies[key[0]], 1, sigma=key[0], eps=key[1], horizon=self.horizon, seed=self.seed + 2,
                attack_steps=self.attack_steps, record=True)
        return self._episodes[key]

    def update(self, sigma: float = 0.2, eps: float = 0.0, t: int | None = None) -> dict:
        """What the demo shows at ``(sigma, eps)`` and step ``t`` (default: the last step)."""
        sigma, eps = self._check(sigma, eps)
        ep = self.episode(sigma, eps)
        length = int(ep.rewards[0])
        t = length if t is None else check_positive_int(t, "t", allow_zero=True)
        if t > self.horizon:
            raise ValueError(f"t must be at most the horizon {self.horizon}, got {t}")
        t = min(t, length)
        cert = self.certificate(sigma)
        states = ep.states[: length + 1, 0]
        budget = _policy.episode_budget(eps, self.horizon)
        # the pole angle the agent saw: one fresh noise draw per step, for the picture only
        rng = np.random.default_rng([self.seed, 3])
        return {
            "sigma": sigma, "eps": eps, "t": t, "budget": budget, "state": states[t],
            "x": states[:, 0], "theta": states[:, 2],
            "noisy_theta": states[:, 2] + sigma * rng.standard_normal(len(states)),
            "episode_reward": length, "certified": float(cert.at(budget)), "clean_mean": cert.clean_mean,
            "attacked_mean": self.attacked_mean(sigma, eps), "curve": (cert.per_step, cert.reward),
        }

    def _draw(self, axes, out):
        ax = axes[0]
        x, _, theta, _ = out["state"]
        ax.plot([-2.4, 2.4], [0, 0], color="0.6", lw=1)
        ax.add_patch(__import__("matplotlib.patches", fromlist=["Rectangle"]).Rectangle(
            (x - 0.25, -0.08), 0.5, 0.16, color="C0"))
        ax.plot([x, x + 2 * 0.5 * math.sin(theta)], [0, 2 * 0.5 * math.cos(theta)], color="C1", lw=4)
        ax.set_xlim(-2.6, 2.6)
        ax.set_ylim(-0.3, 1.2)
        ax.set_aspect("equal")
        ax.set_yticks([])
        ax.set_title(f"step {out['t']} of {out['episode_reward']} (sigma {out['sigma']:g}, eps {out['eps']:g})",
                     fontsize=8)
        ax = axes[1]
        steps = np.arange(len(out["theta"]))
        ax.plot(steps, out["noisy_theta"], ".", color="0.75", ms=2, label="angle + noise (one draw)")
        ax.plot(steps, out["theta"], color="C1", label="pole angle (rad)")
        ax.plot(steps, out["x"] / 10, color="C0", label="cart position / 10")
        for sign in (-1, 1):
            ax.axhline(sign * _policy.CartPole.theta_threshold, color="C3", lw=0.8, ls=":")
        ax.axvline(out["t"], color="0.5", lw=0.8)
        ax.set_xlim(0, self.horizon)
        ax.set_xlabel("step", fontsize=8)
        ax.set_title(f"this episode: reward {out['episode_reward']}", fontsize=8)
        ax.legend(fontsize=6, loc="lower left")
        ax = axes[2]
        per_step, reward = out["curve"]
        ax.plot(per_step, reward, color="C2", label="certified E[R]")
        attacked = [(e, self._attacked[(out["sigma"], e)]) for e in self.eps_values
                    if (out["sigma"], e) in self._attacked]
        if attacked:
            ax.plot(*zip(*attacked), "o", color="C3", ms=4, label="attacked mean")
        ax.plot([out["eps"]], [out["certified"]], "s", color="C2", ms=6)
        ax.set_ylim(0, 1.05 * self.horizon)
        ax.set_xlabel("per-step L2 budget eps", fontsize=8)
        ax.set_ylabel("total reward", fontsize=8)
        kind = "attacked" if out["eps"] > 0 else "clean"
        ax.set_title(f"certified {out['certified']:.1f} / {kind} mean {out['attacked_mean']:.1f} "
                     f"(alpha {self.alpha:g})", fontsize=8)
        ax.legend(fontsize=6)

    def snapshot(self, settings=((0.2, 0.0), (0.2, 0.05))):
        """A static figure: one row per ``(sigma, eps)`` in ``settings``, at the episode's last step."""
        import matplotlib.pyplot as plt

        settings = list(settings)
        if not settings:
            raise ValueError("settings must hold at least one (sigma, eps) pair")
        fig, axes = plt.subplots(len(settings), 3, figsize=(13, 2.8 * len(settings)), squeeze=False,
                                 gridspec_kw={"width_ratios": [1.2, 1.6, 1.3]})
        for row, (sigma, eps) in zip(axes, settings):
            self._draw(row, self.update(sigma, eps))
        fig.tight_layout()
        return fig

    def widget(self):
        """The live demo: a noise slider, a per-step budget slider and a play button over the steps."""
        import ipywidgets as W
        import matplotlib.pyplot as plt

        sigma = W.SelectionSlider(options=self.sigmas, value=self.sigmas[len(self.sigmas) // 2],
                                  description="sigma", continuous_update=False)
        eps = W.SelectionSlider(options=self.eps_values, value=self.eps_values[0], description="eps / step",
                                continuous_update=False)
        t = W.IntSlider(value=0, min=0, max=self.horizon, description="step", continuous_update=False)
        play = W.Play(value=0, min=0, max=self.horizon, step=5, interval=200)
        W.link((play, "value"), (t, "value"))

        def draw():
            fig, axes = plt.subplots(1, 3, figsize=(13, 2.9), gridspec_kw={"width_ratios": [1.2, 1.6, 1.3]})
            self._draw(axes, self.update(sigma.value, eps.value, t.value))
            return fig

        box = live([[sigma, eps], [t]], draw)
        box.children[1].children = (play,) + tuple(box.children[1].children)  # the play button drives t only
        return box
