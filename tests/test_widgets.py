import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

import robustlab as rl  # noqa: E402


@pytest.fixture(scope="module")
def explorer():
    model, _ = rl.train.trained_model("digits", "cnn", progress=False)
    _, test = rl.data.load("digits")
    return rl.widgets.AttackExplorer(model, test.x[:5], test.y[:5], class_names=rl.data.info("digits").classes)


def test_explorer_update_attacks_the_chosen_input_within_budget(explorer):
    clean = explorer.update(0.0, "linf", "pgd", index=2)
    assert torch.equal(clean["x_adv"], clean["x"]) and clean["pred"] == clean["pred_adv"]
    for norm, eps in (("linf", 0.3), ("l2", 2.0)):
        out = explorer.update(eps, norm, "pgd", index=2)
        assert out["distance"] <= eps + 1e-5
        assert torch.equal(out["x"], explorer.x[2])
        assert out["probs_adv"].sum().item() == pytest.approx(1.0, abs=1e-5)
    strong = explorer.update(0.3, "linf", "pgd", index=2)
    assert strong["pred_adv"] != int(explorer.y[2]), "PGD at eps 0.3 fools the standard digits model"


def test_explorer_snapshot_draws_one_row_per_budget(explorer):
    fig = explorer.snapshot((0.0, 0.2), index=1)
    assert len(fig.axes) == 8
    titles = [ax.get_title() for ax in fig.axes]
    assert any("ε = 0.20" in t for t in titles)


def test_explorer_widget_builds_and_redraws(explorer, monkeypatch):
    calls = []
    update = explorer.update
    monkeypatch.setattr(explorer, "update", lambda *a, **k: calls.append(a) or update(*a, **k))
    box = explorer.widget(eps_max=0.4)
    (index, eps), (attack, norm) = box.children[0].children, box.children[1].children
    assert index.max == explorer.x.shape[0] - 1 and eps.max == 0.4
    assert calls == [(0.1, "linf", "pgd", 0)], "the widget draws its initial state once"
    eps.value, norm.value, index.value = 0.25, "l2", 3  # every control change redraws with the new values
    assert calls[-1] == (0.25, "l2", "pgd", 3) and len(calls) == 4
    attack.value = "fgsm"  # FGSM with L2 is refused with a message, not an exception
    assert len(calls) == 4
    norm.value = "linf"
    assert calls[-1] == (0.25, "linf", "fgsm", 3)


def test_explorer_arguments_are_checked(explorer):
    with pytest.raises(ValueError, match="index must be in"):
        explorer.update(0.1, index=10)
    with pytest.raises(ValueError, match="norm must be one of"):
        explorer.update(0.1, norm="l1")
    with pytest.raises(ValueError, match="attack 'fgsm' is an Linf attack"):
        explorer.update(0.1, norm="l2", attack="fgsm")
    with pytest.raises(ValueError, match="eps must be >= 0"):
        explorer.update(-0.1)
    with pytest.raises(ValueError, match="eps_values must hold"):
        explorer.snapshot(())
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        rl.widgets.AttackExplorer("model", explorer.x, explorer.y)
