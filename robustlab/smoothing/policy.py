r"""Policy smoothing: certified total reward of a reinforcement-learning agent under observation
attacks (Kumar, Levine and Feizi, *Policy smoothing for provably robust reinforcement
learning*, arXiv 2106.11420).

**Threat model.** At every step :math:`t` of an episode the adversary adds
:math:`\varepsilon_t` to the observation :math:`o_t` the agent sees. It may choose
:math:`\varepsilon_t` as any (random) function of the current and past states, observations
and the agent's past actions -- it is *adaptive* -- within a budget on the whole episode,

.. math:: \sqrt{\textstyle\sum_t \|\varepsilon_t\|_2^2} \le B.

A per-step budget :math:`\|\varepsilon_t\|_2 \le \epsilon` over at most :math:`T` steps is a
special case with :math:`B = \epsilon\sqrt T` (:func:`episode_budget`).

**The defence.** The smoothed policy adds fresh noise :math:`\delta_t \sim N(0, \sigma^2 I)`
to every observation before its base policy :math:`\pi` sees it, acting with
:math:`a_t = \pi(o_t + \varepsilon_t + \delta_t)` (here :math:`\pi` is any deterministic
function of the noisy observation; the argument allows it to depend on the noisy history).

**The adaptive Neyman--Pearson lemma.** For any event :math:`E` of the trajectory (here
:math:`\{R > \nu\}`, the total reward exceeds :math:`\nu`), every adaptive adversary of
budget :math:`B` keeps

.. math:: P_{\mathrm{adv}}[E] \ge \Phi\big(\Phi^{-1}(P_{\mathrm{clean}}[E]) - B/\sigma\big),

exactly as a *static* shift of norm :math:`B` of the joint Gaussian of all :math:`T \cdot d`
noise coordinates would. The bound is tight (Kumar et al. construct an environment that
attains it; a one-step episode is an example, see the tests).

**The reward certificate.** For integer rewards :math:`R \in \{0, \dots, T\}`,
:math:`E[R] = \sum_{\nu=0}^{T-1} P[R > \nu]`, so with lower bounds
:math:`\underline p_\nu \le P_{\mathrm{clean}}[R > \nu]` holding simultaneously,

.. math::

    E_{\mathrm{adv}}[R] \ \ge\ \underline{R}(B) = \sum_{\nu=0}^{T-1}
    \Phi\big(\Phi^{-1}(\underline p_\nu) - B/\sigma\big)

for *every* adversary of budget :math:`B` (and every :math:`B` at once). The certificate is
on the total reward: single actions may change. :func:`certify_rewards` takes the
:math:`\underline p_\nu` from :math:`N` clean episodes of the smoothed policy, either as
one-sided Clopper--Pearson bounds at :math:`\alpha / T` each (Bonferroni over the thresholds,
the reference code's choice, ``bound="clopper-pearson"``) or from the DKW band around the
empirical CDF of the rewards, :math:`\underline p_\nu = \max(0, \hat P[R > \nu] - \epsilon_{\mathrm{DKW}})`
(``bound="dkw"``, one band for all thresholds). Either way the certificate holds with
probability at least :math:`1 - \alpha` over the :math:`N` episodes.

**The classroom environment.** Gymnasium's CartPole-v1 with a 200-step cap (the paper used
the 200-step CartPole-v0), vectorized by :class:`CartPole` (the equations of
``gymnasium.envs.classic_control.CartPoleEnv``, checked step for step against it by the
tests), so :func:`run_episodes` plays thousands of episodes in about a second; a linear
policy fitted under noise by the cross-entropy method (:func:`fit_policy`, a second or
two, cached); and :func:`margin_attack`, a per-step L2 gradient attack on the action
margin of the smoothed policy (it knows the policy and :math:`\sigma`, not the noise draws).
Observations are CartPole's raw state (cart position and velocity, pole angle and angular
velocity), so budgets and :math:`\sigma` are in those units, not in pixels.

Examples
--------
>>> import numpy as np
>>> rewards = np.full(1000, 200)          # every clean episode lasted the full 200 steps
>>> cert = certify_rewards(rewards, sigma=0.2, budget=[0.0, 0.2], horizon=200, alpha=0.05)
>>> cert.reward.round(1).tolist()          # 200 * Phi(Phi^-1(p) - B / sigma), p = (0.05 / 200) ** (1 / 1000)
[198.3, 183.8]
>>> round(float(cert.per_step[1]), 4)      # the same B spread evenly over 200 steps
0.0141
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import nn

from .. import cache as _cache
from .. import config
from .. import stats as _stats
from .._validate import (check_choice, check_model, check_nonneg, check_positive, check_positive_int,
                         check_probability, check_seed)
from ..attacks import attack_objective
from ..models import eval_mode

__all__ = [
    "HORIZON",
    "DEFAULT_ALPHA",
    "DEFAULT_EPISODES",
    "BOUNDS",
    "CartPole",
    "LinearPolicy",
    "hand_policy",
    "fit_policy",
    "margin_attack",
    "ATTACKS",
    "Episodes",
    "run_episodes",
    "episode_budget",
    "survival_lower_bounds",
    "reward_bound",
    "RewardCertificate",
    "certify_rewards",
    "certify_policy",
    "plot_certified_reward",
]

HORIZON = 200
"""Episode cap: CartPole-v1 made with ``max_episode_steps=200`` (the paper's CartPole-v0 cap)."""
DEFAULT_ALPHA = 0.05
"""The reference code's confidence level (Clopper--Pearson at 0.05 / 200 per threshold)."""
DEFAULT_EPISODES = 10_000
"""The reference code's number of clean evaluation episodes per certificate."""
BOUNDS = ("clopper-pearson", "dkw")


# --------------------------------------------------------------------------------------------
# the environment
# --------------------------------------------------------------------------------------------

class CartPole:
    r"""``n`` CartPole-v1 environments stepped at once (NumPy, float64 state, float32 observations).

    The dynamics are Gymnasium's ``CartPoleEnv`` (Barto, Sutton and Anderson, 1983) with
    Euler integration, :math:`\tau = 0.02` s, force :math:`\pm 10`, gravity 9.8, cart mass 1,
    pole mass 0.1 and half-length 0.5:

    .. math::

        \ddot\theta = \frac{g\sin\theta - \cos\theta\, h}{l\,(4/3 - m_p\cos^2\theta/(m_c + m_p))},
        \quad h = \frac{F + m_p l\,\dot\theta^2 \sin\theta}{m_c + m_p}, \quad
        \ddot x = h - \frac{m_p l\,\ddot\theta\cos\theta}{m_c + m_p}.

    An episode terminates when :math:`|x| > 2.4` or :math:`|\theta| > 12°` and is truncated
    after ``horizon`` steps (Gymnasium's ``TimeLimit``). Every step of a running episode,
    the terminating one included, earns reward 1, so the total reward is the episode's
    length. Finished environments keep their last state and earn 0 (no auto-reset).

    Parameters
    ----------
    n : int
        Number of environments.
    horizon : int
        The step cap (200 by default).

    Examples
    --------
    >>> env = CartPole(3)
    >>> obs = env.reset(seed=0)
    >>> obs.shape, obs.dtype
    ((3, 4), dtype('float32'))
    >>> obs, reward, terminated, truncated = env.step(np.array([1, 0, 1]))
    >>> reward.tolist(), env.alive.tolist()
    ([1.0, 1.0, 1.0], [True, True, True])
    """

    gravity = 9.8
    masscart = 1.0
    masspole = 0.1
    length = 0.5
    force_mag = 10.0
    tau = 0.02
    theta_threshold = 12 * 2 * math.pi / 360
    x_threshold = 2.4
    obs_dim = 4
    n_actions = 2

    def __init__(self, n: int, *, horizon: int = HORIZON):
        self.n = check_positive_int(n, "n")
        self.horizon = check_positive_int(horizon, "horizon")
        self.state = None

    def reset(self, seed: int = 0, states=None) -> np.ndarray:
        """Start every episode: states uniform in [-0.05, 0.05]^4 from ``seed`` (row 0 is what
        ``gymnasium.make("CartPole-v1").reset(seed=seed)`` draws), or the given ``states`` (n, 4)."""
        if states is None:
            rng = np.random.default_rng(check_seed(seed))
            states = rng.uniform(-0.05, 0.05, size=(self.n, 4))
        states = np.array(states, dtype=np.float64)
        if states.shape != (self.n, 4) or not np.isfinite(states).all():
            raise ValueError(f"states must be a finite array of shape ({self.n}, 4), got shape {states.shape}")
        self.state = states
        self.alive = np.ones(self.n, dtype=bool)
        self.steps = 0
        return self.observation()

    def observation(self) -> np.ndarray:
        """The current observations, float32 (n, 4), as Gymnasium returns them."""
        if self.state is None:
            raise RuntimeError("call reset() before observation() or step()")
        return self.state.astype(np.float32)

    def step(self, action):
        """Apply ``action`` (n,) in {0 (push left), 1 (push right)}; returns
        ``(obs, reward, terminated, truncated)``, each of the n environments.

        ``reward`` is 1 for an environment running before this step, else 0; ``terminated``
        and ``truncated`` are Gymnasium's flags for this step (both False once finished).
        """
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action)
        if action.shape != (self.n,) or not np.isin(action, (0, 1)).all():
            raise ValueError(f"action must be an array of shape ({self.n},) with values 0 or 1")
        x, x_dot, theta, theta_dot = self.state.T
        force = np.where(action == 1, self.force_mag, -self.force_mag)
        cos, sin = np.cos(theta), np.sin(theta)
        total_mass = self.masscart + self.masspole
        pml = self.masspole * self.length
        temp = (force + pml * np.square(theta_dot) * sin) / total_mass
        theta_acc = (self.gravity * sin - cos * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * np.square(cos) / total_mass))
        x_acc = temp - pml * theta_acc * cos / total_mass
        new = np.stack([x + self.tau * x_dot, x_dot + self.tau * x_acc,
                        theta + self.tau * theta_dot, theta_dot + self.tau * theta_acc], axis=1)
        running = self.alive
        self.state = np.where(running[:, None], new, self.state)
        self.steps += 1
        fell = ((np.abs(self.state[:, 0]) > self.x_threshold)
                | (np.abs(self.state[:, 2]) > self.theta_threshold)) & running
        truncated = running & (self.steps >= self.horizon)
        reward = running.astype(np.float64)
        self.alive = running & ~fell & ~truncated
        return self.observation(), reward, fell, truncated


# --------------------------------------------------------------------------------------------
# policies
# --------------------------------------------------------------------------------------------

class LinearPolicy(nn.Module):
    r"""The linear policy :math:`\pi(o) = \mathbb 1[w^\top o + b > 0]` (push right when positive).

    Its logits are :math:`(-m/2,\ m/2)` with the margin :math:`m = w^\top o + b`, so the
    argmax is the action (push left on a tie, the lower index).

    >>> pi = LinearPolicy([0.0, 0.0, 1.0, 0.5])
    >>> pi(torch.tensor([[0.0, 0.0, 0.02, 0.1], [0.0, 0.0, -0.02, 0.0]])).argmax(1).tolist()
    [1, 0]
    """

    def __init__(self, weight, bias: float = 0.0):
        super().__init__()
        weight = torch.as_tensor(np.asarray(weight, dtype=np.float32))
        if weight.shape != (CartPole.obs_dim,) or not bool(torch.isfinite(weight).all()):
            raise ValueError(f"weight must hold {CartPole.obs_dim} finite numbers, got shape {tuple(weight.shape)}")
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(torch.tensor(float(bias), dtype=torch.float32))

    def margin(self, obs: torch.Tensor) -> torch.Tensor:
        return obs @ self.weight + self.bias

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        m = self.margin(obs)
        return torch.stack([-0.5 * m, 0.5 * m], dim=-1)


def hand_policy() -> LinearPolicy:
    r"""The hand-written controller: push towards the side the pole falls to,
    :math:`\mathbb 1[\theta + 0.5\,\dot\theta > 0]`."""
    return LinearPolicy([0.0, 0.0, 1.0, 0.5]).eval()


def _linear_rewards(weights: np.ndarray, biases: np.ndarray, sigma: float, horizon: int, rng) -> np.ndarray:
    """Rewards of one episode per row of ``weights`` (P, 4) under N(0, sigma^2) observation noise."""
    env = CartPole(len(weights), horizon=horizon)
    obs = env.reset(seed=int(rng.integers(2 ** 31)))
    total = np.zeros(len(weights))
    while env.alive.any():
        noisy = obs + sigma * rng.standard_normal(obs.shape)
        action = (np.einsum("pd,pd->p", noisy, weights) + biases > 0).astype(np.int64)
        obs, reward, _, _ = env.step(action)
        total += reward
    return total


def fit_policy(sigma: float, *, iterations: int | None = None, population: int = 64, episodes: int = 16,
               elite: int = 8, horizon: int = HORIZON, seed: int = 0, cache: bool = True) -> LinearPolicy:
    r"""A linear CartPole policy fitted *under* the smoothing noise by the cross-entropy method.

    Each iteration draws ``population`` parameter vectors :math:`(w, b) \sim N(\mu,
    \mathrm{diag}(s^2))`, scores each by its mean reward over ``episodes`` episodes with
    :math:`N(0, \sigma^2 I)` noise on every observation (all of them in one vectorized
    :class:`CartPole`), and refits :math:`\mu, s` to the ``elite`` best (plus 0.05 on
    :math:`s`, so the search does not collapse early). Cached on disk (:mod:`robustlab.cache`),
    keyed by every argument. About a second on a CPU core at the defaults.

    Parameters
    ----------
    sigma : float
        The observation noise the policy is fitted under (>= 0; 0 fits the undefended policy).
    iterations : int, optional
        CEM iterations (default 20; 2 under ``ROBUSTLAB_SMOKE``).
    population, episodes, elite : int
        Candidates per iteration, episodes per candidate, candidates kept.
    horizon : int
        Episode cap.
    seed : int
    cache : bool

    Returns
    -------
    LinearPolicy
        In eval mode.
    """
    sigma = float(check_nonneg(sigma, "sigma", allow_tensor=False))
    if iterations is None:
        iterations = 2 if config.profile().smoke else 20
    iterations = check_positive_int(iterations, "iterations")
    population = check_positive_int(population, "population")
    episodes = check_positive_int(episodes, "episodes")
    elite = check_positive_int(elite, "elite")
    if elite > population:
        raise ValueError(f"elite must be <= population ({population}), got {elite}")
    horizon = check_positive_int(horizon, "horizon")
    seed = check_seed(seed)
    settings = {"kind": "policy-smoothing-cem", "version": 1, "sigma": sigma, "iterations": iterations,
                "population": population, "episodes": episodes, "elite": elite, "horizon": horizon, "seed": seed}
    path = _cache.entry("models", settings) if cache else None
    stored = _cache.load(path) if cache else None
    if stored is not None:
        return LinearPolicy(stored["weight"].numpy(), float(stored["bias"])).eval()
    rng = np.random.default_rng([seed, 17])
    mean, spread = np.zeros(5), np.ones(5)
    for _ in range(iterations):
        cand = mean + spread * rng.standard_normal((population, 5))
        rep = np.repeat(cand, episodes, axis=0)
        scores = _linear_rewards(rep[:, :4], rep[:, 4], sigma, horizon, rng).reshape(population, episodes).mean(1)
        best = cand[np.argsort(-scores, kind="stable")[:elite]]
        mean, spread = best.mean(0), best.std(0) + 0.05
    policy = LinearPolicy(mean[:4], float(mean[4])).eval()
    if cache:
        _cache.store(path, {"weight": policy.weight.detach().clone(), "bias": policy.bias.detach().clone()})
    return policy


# --------------------------------------------------------------------------------------------
# the attack
# --------------------------------------------------------------------------------------------

def margin_attack(policy, obs, eps, *, targets=None, sigma: float = 0.0, samples: int = 8, steps: int = 5,
                  step_size: float | None = None, seed: int = 0) -> torch.Tensor:
    r"""A per-step L2 attack on the action margin of the (smoothed) policy.

    Untargeted (``targets=None``), with :math:`a = \arg\max \pi(o)` the action on the clean
    observation, it ascends the Carlini--Wagner margin
    :math:`J(o') = \max_{j \ne a} z_j(o') - z_a(o')`; with target actions :math:`t`, it ascends
    :math:`J(o') = z_t(o') - \max_{j \ne t} z_j(o')`
    (:func:`robustlab.attacks.attack_objective`, ``loss="cw"``), averaged over ``samples``
    draws :math:`o' = o + \varepsilon + \delta`, :math:`\delta \sim N(0, \sigma^2 I)`, of the
    agent's noise (its expectation is what moves the smoothed policy's action
    probabilities; the attacker knows :math:`\sigma`, not the agent's draws):

    .. math::

        \varepsilon^{k+1} = \Pi_{\|\varepsilon\|_2 \le \epsilon}\big(\varepsilon^k
        + \eta\, g / \|g\|_2\big), \qquad
        g = \nabla_\varepsilon \tfrac1S \textstyle\sum_s J(o + \varepsilon + \delta_s),

    from :math:`\varepsilon^0 = 0`, keeping per row the iterate of highest estimated
    objective. Observations are not confined to a box (CartPole's are unbounded), so there
    is no clamp: this is :func:`robustlab.attacks.pgd`'s L2 step without its [0, 1] clamp.
    The radius is shrunk by a relative 1e-5 so that float32 rounding of :math:`o + \varepsilon`
    never takes the perturbation past ``eps``.
    For a :class:`LinearPolicy` the first step is already optimal:
    :math:`\varepsilon = -\epsilon\,\mathrm{sign}(m)\, w / \|w\|`.

    Parameters
    ----------
    policy : torch.nn.Module
        Maps observations (B, d) to action logits (B, A).
    obs : torch.Tensor or numpy.ndarray
        Clean observations (B, d).
    targets : torch.Tensor, optional
        int64 (B,): the actions the attacker wants the agent to take (default: untargeted).
    eps : float or torch.Tensor
        The L2 budget of this step, one number or one per row (>= 0).
    sigma : float
        The agent's smoothing noise (0: attack the base policy itself).
    samples, steps : int
        Noise draws per gradient (1 when ``sigma`` is 0) and ascent steps.
    step_size : float, optional
        :math:`\eta`, default :math:`2.5\,\epsilon / \text{steps}` per row.
    seed : int

    Returns
    -------
    torch.Tensor
        Perturbed observations (B, d), float32, each within ``eps`` of ``obs`` in L2.
    """
    check_model(policy, "policy")
    o = torch.as_tensor(np.asarray(obs) if not isinstance(obs, torch.Tensor) else obs).detach().float()
    if o.dim() != 2 or not bool(torch.isfinite(o).all()):
        raise ValueError(f"obs must be a finite (B, d) batch of observations, got shape {tuple(o.shape)}")
    sigma = float(check_nonneg(sigma, "sigma", allow_tensor=False))
    samples = 1 if sigma == 0 else check_positive_int(samples, "samples")
    steps = check_positive_int(steps, "steps")
    eps = check_nonneg(eps, "eps")
    if isinstance(eps, torch.Tensor):
        eps = eps.detach().float().cpu()
        eps = eps.expand(o.shape[0]) if eps.dim() == 0 else eps
    else:
        eps = torch.full((o.shape[0],), float(eps))
    if eps.shape != (o.shape[0],):
        raise ValueError(f"eps must be a number or a tensor of shape ({o.shape[0]},), got shape {tuple(eps.shape)}")
    if step_size is None:
        eta = 2.5 * eps / steps
    else:
        eta = torch.full_like(eps, float(check_positive(step_size, "step_size")))
    if targets is not None:
        targets = torch.as_tensor(targets)
        if targets.dtype != torch.int64 or targets.shape != (o.shape[0],):
            raise ValueError(f"targets must be an int64 tensor of shape ({o.shape[0]},) of actions")
    if not bool((eps > 0).any()):
        return o.clone()
    eps = eps * (1 - 1e-5)
    gen = torch.Generator().manual_seed(check_seed(seed))
    noise = sigma * torch.randn((samples,) + tuple(o.shape), generator=gen)
    b = o.shape[0]
    with eval_mode(policy):
        with torch.no_grad():
            labels = (policy(o).argmax(1) if targets is None else targets).repeat(samples)

        def objective(delta):
            z = policy((o + delta).unsqueeze(0).add(noise).reshape(samples * b, -1))
            return attack_objective(z, labels, loss="cw", targeted=targets is not None).reshape(samples, b).mean(0)

        delta = torch.zeros_like(o)
        best, best_value = delta.clone(), objective(delta).detach()
        for _ in range(steps):
            delta.requires_grad_(True)
            value = objective(delta)
            (grad,) = torch.autograd.grad(value.sum(), delta)
            with torch.no_grad():
                norm = grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
                delta = delta.detach() + eta[:, None] * grad / norm
                scale = (eps / delta.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
                delta = delta * scale[:, None]
                value = objective(delta)
                better = value > best_value
                best = torch.where(better[:, None], delta, best)
                best_value = torch.where(better, value, best_value)
    return (o + best).detach()


# --------------------------------------------------------------------------------------------
# episodes
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Episodes:
    """What :func:`run_episodes` returns.

    ``rewards`` int64 (n,): each episode's total reward (its length); ``spent`` float64 (n,):
    the adversary's total L2 budget used, :math:`\\sqrt{\\sum_t \\|\\varepsilon_t\\|^2}`;
    ``states`` (steps + 1, n, 4) and ``actions`` (steps, n) when recorded, else ``None``.
    """

    rewards: np.ndarray
    spent: np.ndarray
    sigma: float
    eps: float | np.ndarray
    horizon: int
    attack: str = "none"
    states: np.ndarray | None = None
    actions: np.ndarray | None = None

    @property
    def mean(self) -> float:
        return float(self.rewards.mean())


ATTACKS = ("drift", "flip")


def run_episodes(policy, n_episodes: int, *, sigma: float, eps=0.0, attack: str = "drift",
                 horizon: int = HORIZON, seed: int = 0, attack_samples: int = 8, attack_steps: int = 5,
                 record: bool = False, batch_size: int = 10_000) -> Episodes:
    r"""Play ``n_episodes`` CartPole episodes of the smoothed policy, optionally under attack.

    At each step the adversary (where ``eps > 0``) moves each observation by
    :func:`margin_attack` within L2 ``eps`` (a per-step budget, one for all episodes or one
    per episode, so that one call plays several budgets at the cost of one; so
    :math:`\sqrt{\sum_t\|\varepsilon_t\|^2} \le \epsilon\sqrt{T}`). It sees the true
    state, so it adapts to the episode so far. ``attack="drift"`` targets the action that
    pushes the cart away from the centre, :math:`\mathbb 1[x > 0]` (on CartPole it lowers the
    reward of the fitted policies more than ``"flip"``); ``"flip"`` is untargeted (the
    opposite of the clean action). Then the agent adds
    :math:`N(0, \sigma^2 I)` and acts with the argmax of ``policy``. Seeded: the start states,
    the agent's noise and the attack's noise estimates come from three streams of ``seed``
    per block of ``batch_size`` episodes, so a clean and an attacked run with the same
    ``seed`` start from the same states and draw the same agent noise.

    Returns
    -------
    Episodes
    """
    check_model(policy, "policy")
    n_episodes = check_positive_int(n_episodes, "n_episodes")
    sigma = float(check_nonneg(sigma, "sigma", allow_tensor=False))
    if np.ndim(eps) == 0 and not isinstance(eps, torch.Tensor):
        eps_all = np.full(n_episodes, float(check_nonneg(eps, "eps", allow_tensor=False)))
    else:
        eps_all = eps.double().cpu().numpy() if isinstance(eps, torch.Tensor) else np.asarray(eps, dtype=np.float64)
    if eps_all.shape != (n_episodes,) or np.isnan(eps_all).any() or (eps_all < 0).any():
        raise ValueError(f"eps must be one budget >= 0 or an array of shape ({n_episodes},) of them")
    check_choice(attack, "attack", ATTACKS)
    horizon = check_positive_int(horizon, "horizon")
    seed = check_seed(seed)
    batch_size = check_positive_int(batch_size, "batch_size")
    if not isinstance(record, bool):
        raise TypeError(f"record must be True or False, got {type(record).__name__}")
    rewards, spent, states, actions = [], [], [], []
    for block, start in enumerate(range(0, n_episodes, batch_size)):
        n = min(batch_size, n_episodes - start)
        eps_block = torch.from_numpy(eps_all[start:start + n]).float()
        env = CartPole(n, horizon=horizon)
        rng_noise, rng_attack = np.random.default_rng([seed, block, 1]), np.random.default_rng([seed, block, 2])
        obs = env.reset(seed=int(np.random.default_rng([seed, block, 0]).integers(2 ** 31)))
        total, used = np.zeros(n, dtype=np.int64), np.zeros(n)
        traj, acts = [env.state.copy()], []
        with eval_mode(policy), torch.no_grad():
            while env.alive.any():
                seen = torch.from_numpy(obs)
                attacked = torch.from_numpy(env.alive) & (eps_block > 0)
                if bool(attacked.any()):
                    targets = (seen[attacked, 0] > 0).long() if attack == "drift" else None
                    with torch.enable_grad():
                        seen = seen.clone()
                        seen[attacked] = margin_attack(policy, seen[attacked], eps_block[attacked], targets=targets,
                                                       sigma=sigma,
                                                    samples=attack_samples,
                                                    steps=attack_steps, seed=int(rng_attack.integers(2 ** 31)))
                    used += np.where(env.alive, ((seen - torch.from_numpy(obs)) ** 2).sum(1).double().numpy(), 0.0)
                noisy = seen + torch.from_numpy((sigma * rng_noise.standard_normal(obs.shape)).astype(np.float32))
                action = policy(noisy).argmax(1).numpy()
                obs, reward, _, _ = env.step(action)
                total += reward.astype(np.int64)
                if record:
                    traj.append(env.state.copy())
                    acts.append(action)
        rewards.append(total)
        spent.append(np.sqrt(used))
        if record:
            states.append(np.stack(traj))
            actions.append(np.stack(acts))
    out = dict(rewards=np.concatenate(rewards), spent=np.concatenate(spent), sigma=sigma,
               eps=float(eps_all[0]) if (eps_all == eps_all[0]).all() else eps_all, horizon=horizon,
               attack=attack if (eps_all > 0).any() else "none")
    if record:
        steps = max(s.shape[0] for s in states)
        pad = [np.concatenate([s, np.repeat(s[-1:], steps - s.shape[0], 0)]) for s in states]
        padded_actions = [np.concatenate([a, np.zeros((steps - 1 - a.shape[0], a.shape[1]), dtype=a.dtype)])
                          for a in actions]
        out.update(states=np.concatenate(pad, axis=1), actions=np.concatenate(padded_actions, axis=1))
    return Episodes(**out)


# --------------------------------------------------------------------------------------------
# the certificate
# --------------------------------------------------------------------------------------------

def episode_budget(per_step, horizon: int = HORIZON):
    r"""The whole-episode budget :math:`B = \epsilon\sqrt T` of a per-step budget :math:`\epsilon`
    over at most :math:`T` steps (the adversary of :func:`run_episodes` stays within it).

    >>> round(episode_budget(0.01, 200), 4)
    0.1414
    """
    horizon = check_positive_int(horizon, "horizon")
    arr = np.asarray(per_step, dtype=np.float64)
    if np.isnan(arr).any() or (arr < 0).any():
        raise ValueError("per_step must hold budgets >= 0")
    out = arr * math.sqrt(horizon)
    return float(out) if out.ndim == 0 else out


def _check_rewards(rewards, horizon: int) -> np.ndarray:
    if isinstance(rewards, torch.Tensor):
        rewards = rewards.detach().cpu().numpy()
    arr = np.asarray(rewards)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"rewards must hold numbers, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"rewards must be a non-empty 1-D array of episode rewards, got shape {arr.shape}")
    if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
        raise ValueError("rewards must be whole numbers (the certificate sums P[R > nu] over integers nu)")
    if arr.min() < 0 or arr.max() > horizon:
        raise ValueError(f"rewards must lie in [0, horizon = {horizon}], got values in [{arr.min():g}, {arr.max():g}]")
    return arr.astype(np.int64)


def survival_lower_bounds(rewards, *, horizon: int = HORIZON, alpha: float = DEFAULT_ALPHA,
                          bound: str = "clopper-pearson") -> np.ndarray:
    r"""Simultaneous lower bounds :math:`\underline p_\nu \le P[R > \nu]`, :math:`\nu = 0..T-1`,
    from i.i.d. episode rewards; all hold at once with probability at least :math:`1 - \alpha`.

    ``"clopper-pearson"``: :func:`robustlab.stats.clopper_pearson` of the count
    :math:`\#\{R_i > \nu\}` at :func:`robustlab.stats.bonferroni` ``(alpha, T)``.
    ``"dkw"``: :math:`\max(0, 1 - \hat F(\nu) - \epsilon)` from the DKW band of
    :func:`robustlab.stats.dkw_band` (one band for every threshold).

    >>> survival_lower_bounds([3, 3, 1], horizon=3, alpha=0.5, bound="dkw").round(3).tolist()
    [0.519, 0.186, 0.186]
    """
    horizon = check_positive_int(horizon, "horizon")
    alpha = check_probability(alpha, "alpha")
    check_choice(bound, "bound", BOUNDS)
    r = _check_rewards(rewards, horizon)
    nu = np.arange(horizon)
    if bound == "clopper-pearson":
        above = (r[None, :] > nu[:, None]).sum(1)
        return np.asarray(_stats.clopper_pearson(above, len(r), _stats.bonferroni(alpha, horizon)), dtype=np.float64)
    values, lower_cdf, upper_cdf = _stats.dkw_band(r.astype(np.float64), alpha)
    # F(nu) <= upper band at the last sample <= nu (the band is a step function of the samples)
    idx = np.searchsorted(values, nu, side="right") - 1
    eps = _stats.dkw_epsilon(len(r), alpha)
    cdf_upper = np.where(idx >= 0, upper_cdf[np.maximum(idx, 0)], min(1.0, eps))
    return np.clip(1.0 - cdf_upper, 0.0, 1.0)


def reward_bound(p_lower, budget, sigma: float):
    r"""The adaptive Neyman--Pearson reward bound
    :math:`\sum_\nu \Phi(\Phi^{-1}(\underline p_\nu) - B/\sigma)` for each budget :math:`B`.

    >>> round(reward_bound([0.9, 0.5], 0.0, 1.0), 6)    # B = 0: the sum of the p_nu
    1.4
    >>> round(reward_bound([0.9, 0.5], 1.0, 1.0), 4)
    0.7695
    """
    sigma = float(check_positive(sigma, "sigma"))
    p = np.asarray(p_lower, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"p_lower must be a non-empty 1-D array of probabilities, got shape {p.shape}")
    b = np.asarray(budget, dtype=np.float64)
    if np.isnan(b).any() or (b < 0).any():
        raise ValueError("budget must hold L2 budgets >= 0")
    z = _stats.normal_ppf(p)
    out = _stats.normal_cdf(z[None, :] - b.reshape(-1, 1) / sigma).sum(1)
    return float(out[0]) if b.ndim == 0 else out.reshape(b.shape)


@dataclasses.dataclass(frozen=True)
class RewardCertificate:
    r"""A policy-smoothing certificate: lower bounds on the expected total reward under attack.

    With probability at least :math:`1 - \alpha` over the clean episodes it was computed
    from, every adaptive adversary whose perturbations over an episode satisfy
    :math:`\sqrt{\sum_t\|\varepsilon_t\|_2^2} \le B` leaves the smoothed policy an expected
    total reward of at least ``reward[i]`` for ``B = budget[i]``, for all ``i`` at once.

    This is a bound on an expectation over episodes, not a per-input prediction, so it is
    not a :class:`robustlab.certificates.Certificate`; the budget plays the radius' part.

    Attributes
    ----------
    budget : numpy.ndarray
        Whole-episode L2 budgets :math:`B` (observation units).
    reward : numpy.ndarray
        :math:`\underline R(B)`, one per budget.
    p_lower : numpy.ndarray
        (horizon,) :math:`\underline p_\nu \le P_{\mathrm{clean}}[R > \nu]`.
    sigma, alpha, horizon, n_episodes, bound, clean_mean
        The settings and the clean episodes' mean reward.
    """

    budget: np.ndarray
    reward: np.ndarray
    p_lower: np.ndarray
    sigma: float
    alpha: float
    horizon: int
    n_episodes: int
    bound: str
    clean_mean: float
    method: str = "policy-smoothing"

    @property
    def per_step(self) -> np.ndarray:
        r"""The per-step budgets :math:`B / \sqrt T` that ``budget`` covers."""
        return self.budget / math.sqrt(self.horizon)

    def at(self, budget):
        """:math:`\\underline R(B)` at other budgets (the same :math:`\\underline p_\\nu`)."""
        return reward_bound(self.p_lower, budget, self.sigma)

    def survival(self, budget: float) -> np.ndarray:
        r"""(horizon,) certified :math:`P_{\mathrm{adv}}[R > \nu] \ge \Phi(\Phi^{-1}(\underline p_\nu) - B/\sigma)`."""
        budget = float(check_nonneg(budget, "budget", allow_tensor=False))
        return _stats.normal_cdf(_stats.normal_ppf(self.p_lower) - budget / self.sigma)

    def __repr__(self) -> str:
        return (f"RewardCertificate(sigma={self.sigma:g}, alpha={self.alpha:g}, {self.bound}, "
                f"{self.n_episodes} episodes, clean mean {self.clean_mean:.1f}, certified "
                f"{', '.join(f'{r:.1f} at B={b:g}' for b, r in zip(self.budget[:4], self.reward[:4]))}"
                f"{', ...' if len(self.budget) > 4 else ''})")


def certify_rewards(rewards, *, sigma: float, budget, horizon: int = HORIZON, alpha: float = DEFAULT_ALPHA,
                    bound: str = "clopper-pearson") -> RewardCertificate:
    r"""The reward certificate from the total rewards of clean episodes of the smoothed policy.

    :math:`\underline R(B) = \sum_{\nu=0}^{T-1} \Phi(\Phi^{-1}(\underline p_\nu) - B/\sigma)`
    with :math:`\underline p_\nu` from :func:`survival_lower_bounds`; see the module docstring.

    Parameters
    ----------
    rewards : array-like
        (N,) whole-number total rewards in [0, ``horizon``] of i.i.d. clean episodes.
    sigma : float
        The smoothing noise the episodes were played with (> 0).
    budget : float or array-like
        Whole-episode L2 budgets :math:`B \ge 0` (:func:`episode_budget` converts per-step ones).
    horizon : int
        :math:`T`, the episode cap (the largest possible reward).
    alpha : float
    bound : {"clopper-pearson", "dkw"}

    Returns
    -------
    RewardCertificate
    """
    sigma = float(check_positive(sigma, "sigma"))
    horizon = check_positive_int(horizon, "horizon")
    r = _check_rewards(rewards, horizon)
    p_lower = survival_lower_bounds(r, horizon=horizon, alpha=alpha, bound=bound)
    budgets = np.atleast_1d(np.asarray(budget, dtype=np.float64))
    if budgets.ndim != 1 or np.isnan(budgets).any() or (budgets < 0).any():
        raise ValueError("budget must be one L2 budget >= 0 or a 1-D array of them")
    return RewardCertificate(budgets, reward_bound(p_lower, budgets, sigma), p_lower, sigma, float(alpha), horizon,
                             len(r), bound, float(r.mean()))


def certify_policy(policy, *, sigma: float, budget, n_episodes: int = DEFAULT_EPISODES, horizon: int = HORIZON,
                   alpha: float = DEFAULT_ALPHA, bound: str = "clopper-pearson", seed: int = 0) -> RewardCertificate:
    """:func:`run_episodes` (clean, ``n_episodes``) then :func:`certify_rewards`.

    >>> cert = certify_policy(hand_policy(), sigma=0.1, budget=[0.0, 0.1], n_episodes=500)
    >>> cert.n_episodes, bool(cert.reward[0] > cert.reward[1] > 0)
    (500, True)
    """
    sigma = float(check_positive(sigma, "sigma"))
    episodes = run_episodes(policy, n_episodes, sigma=sigma, horizon=horizon, seed=seed)
    return certify_rewards(episodes.rewards, sigma=sigma, budget=budget, horizon=horizon, alpha=alpha, bound=bound)


def plot_certified_reward(curves, *, attacked=None, per_step: bool = True, ax=None):
    """Certified expected reward against the budget, one curve per certificate.

    Parameters
    ----------
    curves : dict
        ``label -> RewardCertificate``.
    attacked : dict, optional
        ``label -> (per_step_budgets, mean_rewards)`` drawn as markers (attacked episodes).
    per_step : bool
        Put the per-step budget :math:`B/\\sqrt T` on the x axis (else :math:`B`).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    if not isinstance(curves, dict) or not curves or not all(isinstance(c, RewardCertificate) for c in curves.values()):
        raise TypeError("curves must be a non-empty dict label -> RewardCertificate")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    for k, (label, cert) in enumerate(curves.items()):
        ax.plot(cert.per_step if per_step else cert.budget, cert.reward, color=f"C{k}", label=label)
    for k, (label, (xs, ys)) in enumerate((attacked or {}).items()):
        xs = np.asarray(xs, dtype=np.float64)
        ax.plot(xs if per_step else xs * math.sqrt(next(iter(curves.values())).horizon), ys, "o--",
                color=f"C{k}", ms=4, alpha=0.8, label=label)
    ax.set_xlabel("per-step L2 budget eps (B = eps sqrt T)" if per_step else "episode L2 budget B")
    ax.set_ylabel("expected total reward")
    ax.set_ylim(0, 1.05 * max(c.horizon for c in curves.values()))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax
