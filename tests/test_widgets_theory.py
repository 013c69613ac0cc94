import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

import robustlab as rl  # noqa: E402


@pytest.fixture(scope="module")
def explorer():
    return rl.widgets.ConcentrationExplorer(n=3000, seed=0)


def test_update_agrees_with_the_exact_measure_and_the_samples(explorer):
    for d in (3, 50, 2000):
        out = explorer.update(d, mu=0.05, eps=0.15)
        assert out["exact"] == pytest.approx(rl.theory.cap_neighbourhood_measure(0.05, 0.15, d))
        assert abs(out["estimate"] - out["exact"]) < 4.5 * out["stderr"] + 1e-3
        assert out["t_eps"] < out["t"] and out["typical"] == pytest.approx(1 / math.sqrt(d))
    # a fixed eps covers more of the sphere in higher dimension
    grow = [explorer.update(d, mu=0.05, eps=0.15)["exact"] for d in (3, 50, 2000)]
    assert grow == sorted(grow) and grow[-1] > 0.999 and grow[0] < 0.2
    # eps = 0 leaves the cap itself
    assert explorer.update(20, mu=0.05, eps=0.0)["exact"] == pytest.approx(0.05)


def test_samples_are_drawn_once_per_dimension(explorer):
    a = explorer.update(40, mu=0.1, eps=0.1)["x1"]
    b = explorer.update(40, mu=0.3, eps=0.5)["x1"]
    assert a is b and a.shape == (3000,)


def test_snapshot_draws_one_row_per_dimension(explorer):
    fig = explorer.snapshot((3, 300), mu=0.01, eps=0.2)
    assert len(fig.axes) == 4
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("d = 3:") and titles[2].startswith("d = 300:")


def test_widget_builds_and_redraws(explorer, monkeypatch):
    calls = []
    update = explorer.update
    monkeypatch.setattr(explorer, "update", lambda *a, **k: calls.append(a) or update(*a, **k))
    box = explorer.widget()
    dim, mu, eps = box.children[0].children
    assert calls == [(10, 0.01, 0.2)], "the widget draws its initial state once"
    dim.value = 500
    assert calls[-1] == (500, 0.01, 0.2)
    eps.value = 0.35
    assert calls[-1] == (500, 0.01, 0.35)
    mu.value = 0.1
    assert calls[-1][0] == 500 and calls[-1][1] == pytest.approx(0.1) and len(calls) == 4


def test_arguments_are_checked(explorer):
    with pytest.raises(ValueError, match="d must be an integer >= 2"):
        explorer.update(1)
    with pytest.raises(ValueError, match=r"mu must be a probability in \(0, 1\)"):
        explorer.update(10, mu=0.0)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        explorer.update(10, eps=-0.1)
    with pytest.raises(ValueError, match="d_values must hold"):
        explorer.snapshot(())
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        rl.widgets.ConcentrationExplorer(n=0)
