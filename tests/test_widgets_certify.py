import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

import robustlab as rl  # noqa: E402


@pytest.fixture(scope="module")
def explorer():
    model, _ = rl.train.trained_model("digits", "mlp", width=4, progress=False)
    _, test = rl.data.load("digits")
    return rl.widgets.BoundsExplorer(model, test.x[:4], test.y[:4], alpha_steps=10)


def test_bounds_sit_below_the_attack_and_tighten_from_ibp_to_dual(explorer):
    for eps in (0.0, 0.02, 0.08):
        out = explorer.update(eps, index=1)
        assert (out["ibp"] <= out["attack"] + 1e-4).all() and (out["dual"] <= out["attack"] + 1e-4).all()
        if out["certified"]["ibp"] or out["certified"]["dual"]:
            assert out["certified"]["attack"], "a certified input cannot be broken by the attack"
    clean = explorer.update(0.0, index=1)
    assert torch.allclose(clean["ibp"], clean["attack"], atol=1e-4), "at eps 0 the bounds are the margins"
    wide = explorer.update(0.2, index=1)
    assert not wide["certified"]["ibp"] and not wide["certified"]["dual"]


def test_snapshot_draws_one_panel_per_radius(explorer):
    fig = explorer.snapshot((0.0, 0.05), index=0)
    assert len(fig.axes) == 2
    assert any("ε = 0.050" in ax.get_title() for ax in fig.axes)


def test_widget_builds_and_redraws_with_its_values(explorer, monkeypatch):
    calls = []
    update = explorer.update
    monkeypatch.setattr(explorer, "update", lambda *a, **k: calls.append(a) or update(*a, **k))
    box = explorer.widget(eps_max=0.2)
    index, eps = box.children[0].children
    assert eps.max == 0.2 and index.max == explorer.x.shape[0] - 1
    assert calls == [(0.05, 0)]
    eps.value, index.value = 0.1, 2
    assert calls[-1] == (0.1, 2) and len(calls) == 3


def test_arguments_are_checked(explorer):
    with pytest.raises(ValueError, match="index must be in"):
        explorer.update(0.1, index=9)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        explorer.update(-0.1)
    with pytest.raises(TypeError, match="Conv2d"):
        rl.widgets.BoundsExplorer(rl.models.build("cnn", "digits", width=2), explorer.x, explorer.y)
