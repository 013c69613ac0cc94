import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

import robustlab as rl  # noqa: E402
from robustlab import robuststats as rs  # noqa: E402


@pytest.fixture
def demo():
    return rl.widgets.EpsBumpExplorer(n=800, width=0.0, seed=3)


def test_update_moves_the_mean_with_the_bump_but_not_the_median(demo):
    near, far = demo.update(0.1, 10.0), demo.update(0.1, 1000.0)
    assert far["estimates"]["mean"] - near["estimates"]["mean"] == pytest.approx(0.1 * 990, rel=1e-9)
    assert far["estimates"]["median"] == pytest.approx(near["estimates"]["median"])
    assert far["scales"]["std"] > 250 and far["scales"]["mad"] == pytest.approx(near["scales"]["mad"])
    assert int(far["is_outlier"].sum()) == 80 and (far["x"][far["is_outlier"]] == 1000.0).all()
    assert far["estimates"]["median"] == pytest.approx(float(rs.median(far["x"]))), "computed by robuststats"
    clean = demo.update(0.0, 1000.0)
    assert not clean["is_outlier"].any() and abs(clean["estimates"]["mean"]) < 0.15


def test_snapshot_draws_one_panel_per_setting(demo):
    fig = demo.snapshot(((0.0, 5.0), (0.2, 30.0), (0.3, 30.0)))
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 4 and titles[3] == "", "three panels and one blank"
    assert titles[1].startswith("ε = 0.20, bump at 30")
    labels = fig.axes[1].get_legend_handles_labels()[1]
    assert any(lab.startswith("median") for lab in labels) and any(lab.startswith("mean") for lab in labels)


def test_widget_builds_and_redraws_with_every_slider(demo, monkeypatch):
    calls = []
    update = demo.update
    monkeypatch.setattr(demo, "update", lambda *a, **k: calls.append(a) or update(*a, **k))
    box = demo.widget(location_max=40.0)
    rate, location = box.children[0].children
    assert location.max == 40.0 and location.min == -40.0
    assert calls == [(0.1, 10.0)], "the widget draws its initial state once"
    rate.value = 0.3
    location.value = -20.0
    assert calls[-2:] == [(0.3, 10.0), (0.3, -20.0)] and len(calls) == 3


def test_arguments_are_checked(demo):
    with pytest.raises(ValueError, match="rate must be <= 0.49"):
        demo.update(0.6, 1.0)
    with pytest.raises(ValueError, match="rate must be >= 0"):
        demo.update(-0.1, 1.0)
    with pytest.raises(TypeError, match="location must be a real number"):
        demo.update(0.1, "far")
    with pytest.raises(ValueError, match="settings must hold"):
        demo.snapshot(())
    with pytest.raises(ValueError, match="trim must satisfy"):
        rl.widgets.EpsBumpExplorer(trim=0.6)
