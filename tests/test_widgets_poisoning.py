import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

import robustlab as rl  # noqa: E402
from robustlab import poisoning as P  # noqa: E402


@pytest.fixture(scope="module")
def demo():
    return rl.widgets.PoisoningExplorer("digits", target=0, epochs=20, n_test=200, seed=0)


def test_the_backdoor_works_at_a_high_poison_rate_and_not_without_poison(demo):
    clean, poisoned = demo.backdoor(0.0), demo.backdoor(0.2)
    assert clean["n_poisoned"] == 0 and clean["success"] < 0.2
    assert poisoned["success"] > 0.7 > clean["success"], (clean["success"], poisoned["success"])
    assert poisoned["clean_accuracy"] > 0.9 and clean["clean_accuracy"] > 0.9, "the backdoor keeps clean accuracy"
    _, mask = P.backdoor(demo.train, 0.2, 0, seed=0)
    assert poisoned["n_poisoned"] == int(mask.sum())
    assert poisoned["success"] == P.backdoor_success(demo.backdoor_model(0.2), demo.test, 0), "computed by poisoning"
    assert demo.backdoor_model(0.2) is demo.backdoor_model(0.2), "models are cached"


def test_dpa_certificates_are_the_ensembles_own_and_shrink_with_the_poison_size(demo):
    k = 6
    votes = demo.ensemble(k).votes(demo.test.x)
    cert = P.certify_dpa(votes, 10)
    out = demo.certificates(k, 0)
    assert torch.equal(out["radius"], cert.radius), "radii recomputed from the base models' votes"
    assert out["certified_accuracy"] == out["clean_accuracy"] == cert.certified_accuracy(demo.test.y, at=0)
    accs = [demo.certificates(k, r)["certified_accuracy"] for r in range(k)]
    assert all(a >= b for a, b in zip(accs, accs[1:])), "certified accuracy cannot grow with the poison size"
    assert int(out["radius"].max()) <= k // 2, "one poisoned sample moves one vote, a gap of at most k"
    assert demo.certificates(k, k // 2 + 1)["certified_accuracy"] == 0.0
    both = demo.update(0.2, k, 1)
    assert both["backdoor"] == demo.backdoor(0.2) and both["dpa"]["poison_size"] == 1


def test_snapshot_draws_the_attack_and_the_certificate(demo):
    fig = demo.snapshot(rates=(0.0, 0.2), ks=(6,))
    a, b = fig.axes
    assert [line.get_label() for line in a.get_lines()] == ["clean accuracy", "backdoor success"]
    assert b.get_legend_handles_labels()[1] == ["k = 6"]
    assert b.get_xlabel().startswith("poison size")


def test_widget_builds_and_redraws_with_every_control(demo, monkeypatch):
    calls = []
    update = demo.update
    monkeypatch.setattr(demo, "update", lambda *a, **kw: calls.append(a) or update(*a, **kw))
    box = demo.widget(rates=(0.0, 0.2), ks=(6,), max_poison=4)
    rate, k, size = box.children[0].children
    assert calls == [(0.2, 6, 1)], "the widget draws its initial state once"
    rate.value = 0.0
    size.value = 3
    assert calls[-2:] == [(0.0, 6, 1), (0.0, 6, 3)] and size.max == 4


def test_arguments_are_checked(demo):
    with pytest.raises(ValueError, match="rate must be in"):
        demo.backdoor(0.7)
    with pytest.raises(TypeError, match="rate must be a real number"):
        demo.backdoor("high")
    with pytest.raises(ValueError, match="poison_size must be"):
        demo.certificates(6, -1)
    with pytest.raises(ValueError, match="target must be a class index"):
        rl.widgets.PoisoningExplorer("digits", target=10)
    with pytest.raises(ValueError, match="arch must be one of"):
        rl.widgets.PoisoningExplorer("digits", arch="resnet")
    with pytest.raises(ValueError, match="ks must hold"):
        demo.snapshot(ks=())
