import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from scipy.stats import norm  # noqa: E402

import robustlab as rl  # noqa: E402


@pytest.fixture
def explorer():
    return rl.widgets.TradeoffExplorer(d=100, p=0.9)


@pytest.mark.parametrize("eps, eta, p, d", [(0.0, 0.3, 0.9, 100), (0.25, 0.3, 0.9, 100), (0.6, 0.3, 0.9, 100),
                                            (0.5, 0.1, 0.7, 400), (0.9, 0.5, 0.55, 9)])
def test_accuracies_are_the_gaussian_closed_forms(explorer, eps, eta, p, d):
    """Averaging the d non-robust features gives N(eta y, 1/d): accuracy Phi(eta sqrt d), and
    the worst Linf shift eps lowers the mean to eta - eps. x1 alone is right with probability p
    as long as the adversary cannot flip it (eps < 1)."""
    out = explorer.update(eps, eta, p, d)
    assert out["standard_clean"] == pytest.approx(norm.cdf(eta * math.sqrt(d)), abs=1e-9)
    assert out["standard_robust"] == pytest.approx(norm.cdf((eta - eps) * math.sqrt(d)), abs=1e-9)
    assert out["robust_clean"] == pytest.approx(p, abs=1e-12)
    assert out["robust_robust"] == pytest.approx(p, abs=1e-12)
    assert (out["eps"], out["eta"], out["p"], out["d"]) == (eps, eta, p, d)
    assert out["theorem_applies"] == (eps >= 2 * eta)


def test_a_mixture_is_the_accuracy_of_sampled_data_under_the_exact_attack(explorer):
    eps, eta, p, d = 0.4, 0.3, 0.8, 25
    out = explorer.update(eps, eta, p, d)
    k = 10
    lam = float(out["mix_weight"][k])
    w = torch.cat([torch.tensor([lam]), torch.full((d,), (1 - lam) / d)])
    x, y = rl.features.tsipras_data(200000, d, p=p, eta=eta, seed=0)
    ypm = (2 * y - 1).float()
    x_adv = x - eps * ypm[:, None] * w.sign()  # the worst Linf perturbation of a linear classifier
    for data, key in ((x, "mix_clean"), (x_adv, "mix_robust")):
        sampled = ((data @ w) * ypm > 0).float().mean().item()
        assert float(out[key][k]) == pytest.approx(sampled, abs=0.005), key


def test_no_mixture_beats_the_theorem_and_the_robust_feature_attains_it(explorer):
    for p in (0.6, 0.75, 0.9, 0.97):
        for eps_factor in (2.0, 2.5, 3.0):
            out = explorer.update(eps_factor * 0.3, 0.3, p, 100)
            assert out["theorem_applies"]
            bound = rl.features.tsipras_bound(out["mix_robust"], p)
            assert bool((out["mix_clean"] <= bound + 1e-9).all()), (p, eps_factor)
            # the standard classifier's robust accuracy respects the cap the theorem gives it
            assert out["standard_robust"] <= out["robust_cap"] + 1e-12
            # the robust feature alone sits exactly on the bound: clean p at robust p
            assert out["robust_clean"] == pytest.approx(float(rl.features.tsipras_bound(out["robust_robust"], p)))
    below = explorer.update(0.2, 0.3, 0.9, 100)
    assert not below["theorem_applies"] and math.isnan(below["robust_cap"])
    # below 2 eta a mixture can be more accurate *and* more robust than x1 alone: no trade-off is forced
    assert float((below["mix_clean"] - rl.features.tsipras_bound(below["mix_robust"], 0.9)).max()) > 0.01


def test_the_robust_feature_falls_only_when_the_adversary_can_flip_it(explorer):
    assert explorer.update(0.99, 0.3, 0.9, 100)["robust_robust"] == pytest.approx(0.9)
    assert explorer.update(1.01, 0.3, 0.9, 100)["robust_robust"] == 0.0


def test_snapshot_draws_two_panels_per_setting(explorer):
    fig = explorer.snapshot()
    assert len(fig.axes) == 8
    titles = [ax.get_title() for ax in fig.axes]
    assert "ε = 0.60, η = 0.30, d = 100, p = 0.70" in titles
    assert titles.count("ε < 2η: the theorem does not apply") == 2, "eps = 0 and eps = eta are below 2 eta"
    assert titles.count("ε ≥ 2η: the theorem forbids the shaded region") == 2
    fig = explorer.snapshot([dict(eps=0.3, d=400)])
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "ε = 0.30, η = 0.30, d = 400, p = 0.90"


def test_widget_builds_and_redraws_with_every_control(explorer, monkeypatch):
    calls = []
    update = explorer.update
    monkeypatch.setattr(explorer, "update", lambda *a, **k: calls.append(a) or update(*a, **k))
    box = explorer.widget(eps_max=0.8)
    (eps, eta), (d, p) = box.children[0].children, box.children[1].children
    assert eps.max == 0.8 and d.value == 100
    assert calls == [(0.6, 0.3, 0.9, 100)], "the widget draws its initial state once"
    eps.value = 0.45
    assert calls[-1] == (0.45, 0.3, 0.9, 100)
    eta.value = 0.2
    assert calls[-1] == (0.45, 0.2, 0.9, 100)
    d.value = 400
    assert calls[-1] == (0.45, 0.2, 0.9, 400)
    p.value = 0.75
    assert calls[-1] == (0.45, 0.2, 0.75, 400) and len(calls) == 5


def test_arguments_are_checked(explorer):
    with pytest.raises(ValueError, match="eps must be >= 0"):
        explorer.update(-0.1)
    with pytest.raises(ValueError, match=r"p must be in \[0.5, 1\)"):
        explorer.update(0.1, p=1.0)
    with pytest.raises(ValueError, match="eta must be > 0"):
        explorer.update(0.1, eta=0.0)
    with pytest.raises(ValueError, match="d must be an integer >= 1"):
        explorer.update(0.1, d=0)
    with pytest.raises(ValueError, match="n_mix must be an integer >= 2"):
        rl.widgets.TradeoffExplorer(n_mix=1)
    with pytest.raises(ValueError, match="settings must hold at least one"):
        explorer.snapshot([])
    with pytest.raises(TypeError, match="settings must be dicts"):
        explorer.snapshot([0.1])
    with pytest.raises(ValueError, match="eps_max must be > 0"):
        explorer.widget(eps_max=0.0)
