import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

import robustlab as rl  # noqa: E402
from robustlab.smoothing import dp  # noqa: E402


@pytest.fixture
def explorer():
    gen = torch.Generator().manual_seed(0)
    runner = torch.rand(40, generator=gen, dtype=torch.float64) * 0.4
    top = runner + torch.rand(40, generator=gen, dtype=torch.float64) * (1 - 2 * runner)
    return rl.widgets.DPConditionExplorer(top, runner)


def test_update_marks_exactly_the_points_the_proposition_certifies(explorer):
    for eps, delta in ((0.0, 0.0), (0.3, 1e-3), (1.0, 0.05)):
        out = explorer.update(eps, delta, L=0.2)
        assert torch.equal(out["certified"], dp.robustness_condition(explorer.top, explorer.runner_up, eps, delta))
        assert out["fraction"] == pytest.approx(float(out["certified"].double().mean()))
        grid = out["runner_up_grid"]
        assert out["boundary"].tolist() == pytest.approx((math.exp(2 * eps) * grid + (1 + math.exp(eps)) * delta).tolist())
    fractions = [explorer.update(e, 1e-3)["fraction"] for e in (0.0, 0.2, 0.5, 1.0, 2.0)]
    assert fractions == sorted(fractions, reverse=True), "a larger eps certifies fewer inputs"


def test_update_reports_the_noise_of_both_mechanisms(explorer):
    out = explorer.update(0.5, 1e-5, L=0.2)
    assert out["laplace_scale"] == pytest.approx(dp.laplace_scale(0.5, 0.2))
    assert out["gaussian_sigma"] == pytest.approx(dp.gaussian_sigma(0.5, 1e-5, 0.2))
    assert explorer.update(1.5, 1e-5)["gaussian_sigma"] is None, "the Gaussian mechanism needs eps <= 1"
    assert explorer.update(0.5, 0.0)["gaussian_sigma"] is None, "and delta > 0"
    scaled = rl.widgets.DPConditionExplorer(sensitivity=3.0).update(0.5, 1e-5, L=0.2)
    assert scaled["laplace_scale"] == pytest.approx(3 * out["laplace_scale"])
    assert math.isnan(scaled["fraction"])


def test_from_certificate_uses_its_bounds():
    net = dp.build("mlp", "digits", norm="l2", width=2)
    cert = dp.certify(net, torch.rand(5, 1, 8, 8), n=100, progress=False)
    demo = rl.widgets.DPConditionExplorer.from_certificate(cert)
    assert torch.equal(demo.top, cert.lower_top) and torch.equal(demo.runner_up, cert.upper_runner_up)


def test_snapshot_draws_one_panel_per_setting(explorer):
    fig = explorer.snapshot(((0.1, 0.0), (1.0, 0.05)), L=0.1)
    assert len(fig.axes) == 2
    titles = [ax.get_title() for ax in fig.axes]
    assert "ε = 0.1, δ = 0" in titles[0] and "certified" in titles[1] and "Gaussian σ" in titles[1]


def test_widget_builds_and_redraws(explorer, monkeypatch):
    calls = []
    update = explorer.update
    monkeypatch.setattr(explorer, "update", lambda *a, **k: calls.append(a) or update(*a, **k))
    box = explorer.widget(eps_max=1.5)
    eps, log_delta, radius = box.children[0].children
    assert eps.max == 1.5
    assert calls == [(0.5, 1e-5, 0.1)], "the widget draws its initial state once"
    eps.value, log_delta.value, radius.value = 1.0, -2.0, 0.3
    assert len(calls) == 4 and calls[-1] == pytest.approx((1.0, 0.01, 0.3))


def test_arguments_are_checked(explorer):
    with pytest.raises(ValueError, match="eps must be >= 0"):
        explorer.update(-0.1)
    with pytest.raises(ValueError, match=r"delta must be a probability in \[0, 1\)"):
        explorer.update(0.1, delta=1.5)
    with pytest.raises(ValueError, match="top and runner_up must be given together"):
        rl.widgets.DPConditionExplorer(torch.ones(2))
    with pytest.raises(ValueError, match="top must hold expected scores"):
        rl.widgets.DPConditionExplorer(torch.tensor([1.5]), torch.tensor([0.1]))
    with pytest.raises(ValueError, match="settings must hold"):
        explorer.snapshot(())
    with pytest.raises(TypeError, match="cert must be a PixelDP Certificate"):
        rl.widgets.DPConditionExplorer.from_certificate("cert")
