import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

import robustlab as rl  # noqa: E402
from robustlab import perceptual as P  # noqa: E402

BUDGETS = (0.0, 0.2, 0.4)


@pytest.fixture(scope="module")
def explorer():
    train, test = rl.data.load("digits")
    model = rl.models.build("cnn", "digits", width=4, seed=0)
    rl.train.fit(model, train, epochs=3, lr=3e-3, progress=False)
    net = rl.models.build("cnn", "digits", width=4, seed=1)
    dist = P.LPIPS(net.eval().requires_grad_(False))
    return rl.widgets.PerceptualBudgetExplorer(model.eval(), dist, test.x[:6], test.y[:6], budgets=BUDGETS,
                                               steps=5, rounds=2)


def test_update_shows_inputs_within_the_budget_and_matches_the_attack(explorer):
    assert explorer.budgets == BUDGETS
    for b in BUDGETS:
        out = explorer.update(b)
        assert bool((out["lpips_adv"] <= b + 1e-6).all()) and bool((out["lpips_noise"] <= b + 1e-6).all())
        assert torch.allclose(out["lpips_adv"], explorer.lpips(explorer.x, out["adversarial"]), atol=1e-5)
        again = P.lpa(explorer.model, explorer.x, explorer.y, eps=b, lpips=explorer.lpips, steps=5, rounds=2)
        assert torch.allclose(out["adversarial"], again), "the widget shows lpa's output"
        with torch.no_grad():
            assert torch.equal(out["pred_adv"], explorer.model(out["adversarial"]).argmax(1))
    zero = explorer.update(0.0)
    assert torch.equal(zero["adversarial"], explorer.x) and torch.equal(zero["pred_adv"], zero["pred_clean"])
    assert int((explorer.update(0.4)["pred_adv"] != explorer.y).sum()) >= int((zero["pred_adv"] != explorer.y).sum())


def test_snapshot_and_widget_redraw_from_the_precomputed_results(explorer, monkeypatch):
    fig = explorer.snapshot()
    assert len(fig.axes) == 2 * 3 * 6
    assert any("LPA" in ax.get_title() for ax in fig.axes)
    calls = []
    update = explorer.update
    monkeypatch.setattr(explorer, "update", lambda *a, **k: calls.append(a) or update(*a, **k))
    box = explorer.widget()
    (slider,) = box.children[0].children
    assert calls == [(0.2,)]
    slider.value = 0.4
    assert calls[-1] == (0.4,) and len(calls) == 2


def test_arguments_are_checked(explorer):
    with pytest.raises(ValueError, match=r"budget must be one of \[0.0, 0.2, 0.4\]"):
        explorer.update(0.3)
    with pytest.raises(TypeError, match="lpips must be a robustlab.perceptual.LPIPS"):
        rl.widgets.PerceptualBudgetExplorer(explorer.model, "self", explorer.x, explorer.y)
    with pytest.raises(ValueError, match="budgets"):
        rl.widgets.PerceptualBudgetExplorer(explorer.model, explorer.lpips, explorer.x, explorer.y, budgets=(-1.0,))
    with pytest.raises(ValueError, match="y has 2 labels but the batch has 6"):
        rl.widgets.PerceptualBudgetExplorer(explorer.model, explorer.lpips, explorer.x, explorer.y[:2])
