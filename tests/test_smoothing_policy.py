"""Policy smoothing (Kumar, Levine and Feizi): the reward certificate is never beaten by an attacker.

Soundness is checked three ways: on small MDPs whose optimal adaptive attacker is found by
dynamic programming (the certificate must stay below the optimal attacked reward, and a
certificate that confused the per-step and the episode budget must not), on a one-step
episode where the bound is attained exactly, and on CartPole against the package's attack.
The vectorized CartPole is checked step for step against Gymnasium's.
"""

import dataclasses
import math

import matplotlib

matplotlib.use("Agg")

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from scipy.stats import binom, norm  # noqa: E402

import robustlab as rl  # noqa: E402
from robustlab.smoothing import policy as P  # noqa: E402


# ------------------------------------------------------------------------------------------
# the environment
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("controller", ["random", "hand"])
def test_vectorized_cartpole_steps_exactly_like_gymnasium(controller):
    horizon = 60
    for seed in range(4):
        gym_env = gymnasium.make("CartPole-v1", max_episode_steps=horizon)
        gym_obs, _ = gym_env.reset(seed=seed)
        env = P.CartPole(1, horizon=horizon)
        obs = env.reset(seed=seed)
        assert np.array_equal(obs[0], gym_obs), "row 0 starts where gymnasium's reset(seed) does"
        rng = np.random.default_rng(seed)
        done = False
        while not done:
            if controller == "random":
                action = int(rng.integers(2))
            else:
                action = int(gym_obs[2] + 0.5 * gym_obs[3] > 0)
            gym_obs, gym_r, gym_term, gym_trunc, _ = gym_env.step(action)
            obs, r, term, trunc = env.step(np.array([action]))
            assert np.array_equal(obs[0], gym_obs)
            assert (r[0], bool(term[0]), bool(trunc[0])) == (gym_r, gym_term, gym_trunc)
            done = gym_term or gym_trunc
        assert not env.alive[0]
        _, r, term, trunc = env.step(np.array([0]))
        assert r[0] == 0 and not term[0] and not trunc[0], "a finished episode earns nothing more"


def test_batched_environments_step_independently():
    starts = np.random.default_rng(3).uniform(-0.05, 0.05, size=(5, 4))
    batch = P.CartPole(5, horizon=30)
    batch.reset(states=starts)
    singles = [P.CartPole(1, horizon=30) for _ in range(5)]
    for i, e in enumerate(singles):
        e.reset(states=starts[i:i + 1])
    rng = np.random.default_rng(0)
    for _ in range(30):
        a = rng.integers(2, size=5)
        obs, r, term, trunc = batch.step(a)
        for i, e in enumerate(singles):
            o1, r1, t1, tr1 = e.step(a[i:i + 1])
            assert np.array_equal(obs[i], o1[0]) and r[i] == r1[0] and term[i] == t1[0] and trunc[i] == tr1[0]


# ------------------------------------------------------------------------------------------
# soundness against the optimal adaptive attacker (dynamic programming)
# ------------------------------------------------------------------------------------------
# The MDP: the observation is a constant x > 0 and the agent acts a_t = 1[x - e_t + noise > 0]
# (the attacker lowers the observation by e_t >= 0, sum_t e_t^2 <= B^2). "survival": reward 1
# per action 1 and the episode ends at the first action 0 (like CartPole, the reward is the
# episode's length); "count": reward = number of actions 1 over T steps. The attacker's state is
# (t, remaining squared budget), which the DP discretizes into K equal parts; every spend on
# the grid is within budget, so the DP value is attained by a valid attacker.

X, SIGMA, T = 0.5, 0.5, 6


def optimal_attacked_reward(B, *, survival, T=T, K=400):
    d = B ** 2 / K
    p = norm.cdf((X - np.sqrt(np.arange(K + 1) * d)) / SIGMA)
    s, k = np.arange(K + 1)[:, None], np.arange(K + 1)[None, :]
    value = np.zeros(K + 1)
    for _ in range(T):
        rest = value[np.clip(s - k, 0, K)]
        step = p[k] * (1 + rest) if survival else p[k] + rest
        value = np.where(k <= s, step, np.inf).min(1)
    return value[K]


def clean_survival(survival, T=T):
    p = norm.cdf(X / SIGMA)
    return p ** (np.arange(T) + 1) if survival else binom.sf(np.arange(T), T, p)


@pytest.mark.parametrize("survival", [True, False])
def test_exact_certificate_never_exceeds_the_optimal_adaptive_attack(survival):
    p_clean = clean_survival(survival)
    for B in (0.1, 0.3, 0.6, 1.0, 2.0):
        optimum = optimal_attacked_reward(B, survival=survival)
        assert P.reward_bound(p_clean, B, SIGMA) <= optimum + 1e-9
        # the test is sharp: spending B as if it were a per-step budget over-certifies
        assert P.reward_bound(p_clean, B / math.sqrt(T), SIGMA) > optimum + 1e-3


def test_the_bound_is_attained_on_a_one_step_episode():
    for B in (0.2, 0.7, 1.5):
        optimum = optimal_attacked_reward(B, survival=True, T=1, K=50)
        assert optimum == pytest.approx(norm.cdf((X - B) / SIGMA), abs=1e-12)
        assert P.reward_bound(clean_survival(True, T=1), B, SIGMA) == pytest.approx(optimum, abs=1e-12)


def simulate_chain(n, rng, *, survival):
    """Rewards of n clean episodes of the smoothed agent in the MDP above."""
    acts = (X + SIGMA * rng.standard_normal((n, T)) > 0)
    if survival:
        return np.where(acts.all(1), T, np.argmin(acts, axis=1))
    return acts.sum(1)


@pytest.mark.parametrize("bound", P.BOUNDS)
@pytest.mark.parametrize("survival", [True, False])
def test_estimated_certificate_stays_below_the_optimal_attack(bound, survival):
    rng = np.random.default_rng(7)
    budgets = np.array([0.0, 0.3, 1.0, 2.0])
    optimum = np.array([optimal_attacked_reward(B, survival=survival) if B > 0 else
                        clean_survival(survival).sum() for B in budgets])
    exact = P.reward_bound(clean_survival(survival), budgets, SIGMA)
    for rep in range(5):
        cert = P.certify_rewards(simulate_chain(4000, rng, survival=survival), sigma=SIGMA, budget=budgets,
                                 horizon=T, alpha=0.05, bound=bound)
        assert (cert.reward <= optimum + 1e-9).all()
        assert (cert.reward <= exact + 1e-9).all(), "at alpha = 0.05 an estimate above the exact bound is rare"
        if bound == "clopper-pearson":
            assert (cert.reward >= exact - 0.6).all(), "and 4000 episodes get close to it"


@pytest.mark.parametrize("bound", P.BOUNDS)
def test_survival_bounds_fail_at_most_alpha_often(bound):
    # rewards Bin(T, 0.6): the simultaneous bounds on P[R > nu] all hold in >= 1 - alpha of the runs
    rng = np.random.default_rng(11)
    truth = binom.sf(np.arange(10), 10, 0.6)
    fails = sum(bool((P.survival_lower_bounds(rng.binomial(10, 0.6, 100), horizon=10, alpha=0.2,
                                                bound=bound) > truth + 1e-12).any()) for _ in range(300))
    assert fails / 300 <= 0.2 + 3 * math.sqrt(0.2 * 0.8 / 300)


# ------------------------------------------------------------------------------------------
# CartPole: the attack within the budget against the certificate
# ------------------------------------------------------------------------------------------

def test_linear_attack_is_the_analytic_optimum_and_within_eps():
    pi = P.LinearPolicy([0.3, 1.0, 2.0, 1.5], 0.01)
    obs = torch.randn(64, 4) * 0.05
    eps = torch.rand(64) * 0.05
    adv = P.margin_attack(pi, obs, eps, steps=3)
    assert bool(((adv - obs).norm(dim=1) <= eps).all())
    w = pi.weight.detach()
    m = pi.margin(obs).detach()
    expected = obs - (torch.sign(m) * eps)[:, None] * w / w.norm()
    assert torch.allclose(adv, expected, atol=1e-5)
    flipped = pi(adv).argmax(1) != pi(obs).argmax(1)
    assert torch.equal(flipped, m.abs() < eps * w.norm() * (1 - 1e-4)) or \
        bool((flipped == (m.abs() < eps * w.norm())).float().mean() > 0.98)
    # targeted at "push right": the margin never goes down
    adv_t = P.margin_attack(pi, obs, eps, targets=torch.ones(64, dtype=torch.int64), sigma=0.2, samples=4)
    assert bool((pi.margin(adv_t) >= m - 1e-6).all())


@pytest.fixture(scope="module")
def cartpole_policy():
    # the chapter's policy: linear, fitted under sigma = 0.2 noise by the cross-entropy method
    return P.fit_policy(0.2)


def test_fitted_policy_balances_under_noise(cartpole_policy):
    ep = P.run_episodes(cartpole_policy, 300, sigma=0.2, seed=1)
    random_policy = P.LinearPolicy([0.0, 0.0, 0.0, 0.0], 0.0)
    assert ep.mean > 150 > P.run_episodes(random_policy, 300, sigma=0.2, seed=1).mean


def test_attacks_within_budget_never_beat_the_certificate_on_cartpole(cartpole_policy):
    sigma, alpha = 0.2, 0.05
    per_step = np.array([0.005, 0.01, 0.03, 0.1])
    cert = P.certify_policy(cartpole_policy, sigma=sigma, budget=P.episode_budget(per_step), n_episodes=3000,
                            alpha=alpha, seed=2)
    assert cert.reward[0] > 150, "the certificate is not vacuous at the smallest budget"
    n = 200
    for attack in P.ATTACKS:
        # every budget in one vectorized run: n episodes per budget
        run = P.run_episodes(cartpole_policy, n * len(per_step), sigma=sigma, eps=np.repeat(per_step, n),
                             attack=attack, seed=3, attack_steps=1, attack_samples=1)
        for i, (B, certified) in enumerate(zip(cert.budget, cert.reward)):
            ep = dataclasses.replace(run, rewards=run.rewards[i * n:(i + 1) * n], spent=run.spent[i * n:(i + 1) * n])
            assert (ep.spent <= B * (1 + 1e-6)).all(), "the attacker stays within the episode budget"
            # the attacked survival P[R > nu] is above the certified one at every threshold,
            # up to the sampling error of 200 episodes (a one-sided Clopper-Pearson upper bound)
            above = (ep.rewards[None, :] > np.arange(cert.horizon)[:, None]).sum(1)
            upper = rl.stats.clopper_pearson(above, len(ep.rewards), alpha / cert.horizon, side="upper")
            assert (upper >= cert.survival(B) - 1e-12).all()
            assert ep.mean >= certified - 3 * ep.rewards.std() / math.sqrt(len(ep.rewards))
    strong = P.run_episodes(cartpole_policy, 200, sigma=sigma, eps=0.2, seed=3, attack_steps=1, attack_samples=1)
    assert strong.mean < cert.clean_mean - 30, "the attack is a real one: a large budget does bring the pole down"


def test_certificate_shrinks_with_the_budget_and_grows_with_sigma():
    rewards = np.full(2000, 200)
    small = P.certify_rewards(rewards, sigma=0.1, budget=[0.0, 0.1, 0.5], alpha=0.05)
    large = P.certify_rewards(rewards, sigma=0.4, budget=[0.0, 0.1, 0.5], alpha=0.05)
    assert np.all(np.diff(small.reward) < 0) and np.all(large.reward[1:] > small.reward[1:])
    assert small.reward[0] == pytest.approx(200 * rl.stats.clopper_pearson(2000, 2000, 0.05 / 200))
    dkw = P.certify_rewards(rewards, sigma=0.1, budget=0.0, alpha=0.05, bound="dkw")
    assert dkw.reward[0] == pytest.approx(200 * (1 - rl.stats.dkw_epsilon(2000, 0.05)))
    assert small.at(0.1) == pytest.approx(small.reward[1]) and small.per_step[1] == pytest.approx(0.1 / math.sqrt(200))


def test_episodes_are_seeded(cartpole_policy):
    a = P.run_episodes(cartpole_policy, 50, sigma=0.2, eps=0.05, seed=4, attack_steps=1, horizon=60)
    b = P.run_episodes(cartpole_policy, 50, sigma=0.2, eps=0.05, seed=4, attack_steps=1, horizon=60)
    assert np.array_equal(a.rewards, b.rewards) and a.attack == "drift"
    rec = P.run_episodes(cartpole_policy, 3, sigma=0.2, seed=4, record=True, horizon=60)
    assert rec.states.shape == (rec.rewards.max() + 1, 3, 4) and rec.actions.shape == (rec.rewards.max(), 3)


def test_per_episode_budgets_play_like_separate_runs(cartpole_policy):
    eps = np.repeat([0.0, 0.05, 0.2], 20)
    together = P.run_episodes(cartpole_policy, 60, sigma=0.2, eps=eps, seed=5, attack_steps=1, horizon=80)
    assert (together.spent <= eps * math.sqrt(80) * (1 + 1e-6)).all() and (together.spent[:20] == 0).all()
    assert together.spent[40:].min() > together.spent[20:40].max(), "each episode spends its own budget"
    single = P.run_episodes(cartpole_policy, 60, sigma=0.2, eps=0.0, seed=5, horizon=80)
    assert np.array_equal(together.rewards[:20], single.rewards[:20]), "unattacked episodes are the clean ones"


def test_fit_policy_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path))
    first = P.fit_policy(0.1, iterations=2, population=8, episodes=2, elite=2)
    assert len(list((tmp_path / "models").glob("*.pt"))) == 1
    again = P.fit_policy(0.1, iterations=2, population=8, episodes=2, elite=2)
    assert torch.equal(first.weight, again.weight) and float(first.bias.detach()) == float(again.bias.detach())


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="sigma must be > 0"):
        P.certify_rewards([200, 200], sigma=0.0, budget=0.1)
    with pytest.raises(ValueError, match="budget must"):
        P.certify_rewards([200, 200], sigma=0.2, budget=-0.1)
    with pytest.raises(ValueError, match=r"rewards must lie in \[0, horizon = 200\]"):
        P.certify_rewards([201], sigma=0.2, budget=0.1)
    with pytest.raises(ValueError, match="whole numbers"):
        P.certify_rewards([1.5], sigma=0.2, budget=0.1)
    with pytest.raises(ValueError, match="bound must be one of"):
        P.certify_rewards([10], sigma=0.2, budget=0.1, bound="hoeffding")
    with pytest.raises(ValueError, match="alpha must be a probability"):
        P.certify_rewards([10], sigma=0.2, budget=0.1, alpha=1.0)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        P.margin_attack(P.hand_policy(), torch.zeros(2, 4), -0.1)
    with pytest.raises(ValueError, match="eps must be a number or a tensor of shape"):
        P.margin_attack(P.hand_policy(), torch.zeros(2, 4), torch.ones(3))
    with pytest.raises(ValueError, match="obs must be a finite"):
        P.margin_attack(P.hand_policy(), torch.zeros(4), 0.1)
    with pytest.raises(ValueError, match=r"eps must be one budget >= 0 or an array of shape \(2,\)"):
        P.run_episodes(P.hand_policy(), 2, sigma=0.1, eps=[0.1, 0.1, 0.1])
    with pytest.raises(TypeError, match="eps must be a real number"):
        P.run_episodes(P.hand_policy(), 2, sigma=0.1, eps=True)
    with pytest.raises(ValueError, match="attack must be one of"):
        P.run_episodes(P.hand_policy(), 2, sigma=0.1, eps=0.1, attack="push")
    with pytest.raises(TypeError, match="policy must be a torch.nn.Module"):
        P.run_episodes(lambda o: o, 2, sigma=0.1)
    with pytest.raises(ValueError, match="elite must be <= population"):
        P.fit_policy(0.1, population=4, elite=5)
    with pytest.raises(ValueError, match="weight must hold 4 finite numbers"):
        P.LinearPolicy([1.0, 2.0])
    env = P.CartPole(2)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.array([0, 1]))
    env.reset()
    with pytest.raises(ValueError, match=r"action must be an array of shape \(2,\)"):
        env.step(np.array([0, 2]))
    with pytest.raises(ValueError, match=r"states must be a finite array of shape \(2, 4\)"):
        env.reset(states=np.zeros((3, 4)))


# ------------------------------------------------------------------------------------------
# the widget
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def explorer():
    return rl.widgets.PolicySmoothingExplorer(P.hand_policy(), sigmas=(0.1, 0.2), eps_values=(0.0, 0.05),
                                              n_episodes=300, n_attacked=30, horizon=50)


def test_widget_reports_the_certificate_and_the_attack(explorer):
    out = explorer.update(0.2, 0.05, t=5)
    cert = P.certify_policy(P.hand_policy(), sigma=0.2, budget=P.episode_budget(0.05, 50), n_episodes=300,
                            horizon=50)
    assert out["certified"] == pytest.approx(float(cert.reward[0]))
    assert out["attacked_mean"] == P.run_episodes(P.hand_policy(), 30, sigma=0.2, eps=0.05, seed=1, horizon=50,
                                                  attack_steps=1).mean
    assert out["t"] == 5 and np.array_equal(out["state"], explorer.episode(0.2, 0.05).states[5, 0])
    assert explorer.update(0.2, 0.05)["t"] == out["episode_reward"], "t defaults to the last step"


def test_widget_snapshot_and_live_redraw(explorer, monkeypatch):
    fig = explorer.snapshot([(0.1, 0.0), (0.2, 0.05)])
    assert len(fig.axes) == 6 and any("certified" in ax.get_title() for ax in fig.axes)
    calls = []
    update = explorer.update
    monkeypatch.setattr(explorer, "update", lambda *a, **k: calls.append(a) or update(*a, **k))
    box = explorer.widget()
    sigma, eps = box.children[0].children
    play, t = box.children[1].children
    assert len(calls) == 1
    eps.value = 0.05
    play.value = 10
    assert calls[-1] == (0.2, 0.05, 10) and len(calls) == 3
    with pytest.raises(ValueError, match="sigma must be one of"):
        update(0.3, 0.0)
    with pytest.raises(ValueError, match="settings must hold"):
        explorer.snapshot(())
