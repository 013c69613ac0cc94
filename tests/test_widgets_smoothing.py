import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

import robustlab as rl  # noqa: E402
from robustlab.smoothing import gaussian as G  # noqa: E402


class NearestMean(torch.nn.Module):
    """Classify a digit by the nearest class mean of the training set (no training needed):
    logits -||x - mu_c||^2."""

    def __init__(self, train):
        super().__init__()
        x = train.x.flatten(1)
        self.means = torch.nn.Parameter(torch.stack([x[train.y == c].mean(0) for c in range(10)]))

    def forward(self, x):
        return -torch.cdist(x.flatten(1), self.means) ** 2


@pytest.fixture(scope="module")
def explorer():
    train, test = rl.data.load("digits")
    model = NearestMean(train).eval()
    return rl.widgets.SmoothingExplorer(model, test.x[:24], test.y[:24], n0=50, alpha=0.001)


def test_update_reports_the_certificates_of_every_input(explorer):
    out = explorer.update(0.25, 1000)
    cert = out["certificate"]
    assert len(cert) == 24 and cert.sigma == 0.25 and cert.n == 1000
    assert out["abstain_rate"] == pytest.approx(float((cert.prediction == G.ABSTAIN).float().mean()))
    assert out["max_radius"] == pytest.approx(G.max_radius(1000, 0.001, 0.25))
    assert bool((out["radii"] <= out["max_radius"] + 1e-12).all()), "no radius beats the ceiling n samples allow"
    assert out["certified_accuracy"][0.0] > 0.7, "the smoothed nearest-mean classifier gets most digits right"
    values = list(out["certified_accuracy"].values())
    assert values == sorted(values, reverse=True)
    # the same input certified alone with its own seed gives the same certificate
    alone = G.certify(explorer.models[None], explorer.x[5:6], sigma=0.25, n0=50, n=1000, alpha=0.001, seed=5)
    assert torch.equal(alone.radius, cert.radius[5:6])


def test_more_samples_raise_the_ceiling_and_more_noise_abstains_more(explorer):
    few, many = explorer.update(0.25, 100), explorer.update(0.25, 10_000)
    assert many["max_radius"] > few["max_radius"]
    assert many["radii"].max() > few["max_radius"], "with 10,000 samples some radius passes the 100-sample ceiling"
    loud = explorer.update(1.0, 1000)
    assert loud["abstain_rate"] > explorer.update(0.25, 1000)["abstain_rate"]


def test_snapshot_draws_one_row_per_setting(explorer):
    fig = explorer.snapshot([(0.25, 100), (0.5, 1000)])
    assert len(fig.axes) == 4
    titles = [ax.get_title() for ax in fig.axes]
    assert any("σ = 0.5, n = 1,000" in t for t in titles)


def test_widget_builds_and_redraws_with_every_control(explorer, monkeypatch):
    calls = []
    update = explorer.update
    monkeypatch.setattr(explorer, "update", lambda *a, **k: calls.append(a) or update(*a, **k))
    box = explorer.widget(n_choices=(100, 1000))
    sigma, n = box.children[0].children
    assert calls == [(0.25, 1000)], "the widget draws its initial state once"
    sigma.value = 0.5
    assert calls[-1] == (0.5, 1000)
    n.value = 100
    assert calls[-1] == (0.5, 100) and len(calls) == 3


def test_a_dict_of_noise_trained_models_offers_only_their_sigmas():
    train, test = rl.data.load("digits")
    model = NearestMean(train).eval()
    demo = rl.widgets.SmoothingExplorer({0.5: model, 0.25: model}, test.x[:4], test.y[:4], n0=10)
    assert demo.sigmas == [0.25, 0.5]
    with pytest.raises(ValueError, match=r"sigma must be one of the trained noise levels \[0.25, 0.5\]"):
        demo.update(0.3, 100)
    box = demo.widget(n_choices=(100,))
    assert list(box.children[0].children[0].options) == [0.25, 0.5]


def test_arguments_are_checked(explorer):
    with pytest.raises(ValueError, match="sigma must be > 0"):
        explorer.update(0.0, 100)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        explorer.update(0.25, 0)
    with pytest.raises(ValueError, match="settings must hold"):
        explorer.snapshot(())
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        rl.widgets.SmoothingExplorer("model", explorer.x, explorer.y)
    with pytest.raises(ValueError, match="y has 3 labels but the batch has 24"):
        rl.widgets.SmoothingExplorer(explorer.models[None], explorer.x, explorer.y[:3])
    with pytest.raises(ValueError, match=r"alpha must be a probability in \(0, 1\)"):
        rl.widgets.SmoothingExplorer(explorer.models[None], explorer.x, explorer.y, alpha=2.0)
