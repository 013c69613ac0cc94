import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import robustlab as rl  # noqa: E402
from robustlab import shift as S  # noqa: E402
from robustlab.smoothing.sampling import GaussianNoise, UniformNoise  # noqa: E402

N = 400
RANDS = {"Gaussian": GaussianNoise(0.5), "uniform": UniformNoise(0.5 * math.sqrt(3))}


@pytest.fixture(scope="module")
def data():
    train, test = rl.data.load("digits")
    torch.manual_seed(0)
    model = rl.models.build("mlp", "digits", width=4, seed=0)
    rl.train.fit(model, train, epochs=2, lr=3e-3, progress=False)
    return model.eval(), test.x[:40], test.y[:40]


@pytest.fixture(scope="module")
def explorer(data):
    model, x, y = data
    return rl.widgets.ShiftExplorer(model, x, y, randomizations=RANDS, eps_max=1.5, steps=7, n=N, n_show=3)


def test_the_bound_is_rl_shifts_bound_of_certify_shifts_accuracy(explorer, data):
    model, x, y = data
    for family, space in (("brightness", S.Brightness()), ("translation", S.Translation())):
        for rand, noise in RANDS.items():
            cert = S.certify_shift(model, x, y, space, noise, explorer.eps_values, n=N, alpha=0.001)
            for eps in (0.0, 0.37, 1.0):
                out = explorer.update(family, rand, eps)
                assert out["accuracy_lower"] == cert.accuracy_lower
                for bound in S.BOUNDS:
                    assert out[bound] == S.shift_bound(cert.accuracy_lower, eps, noise, bound)
                    assert out[f"metric_{bound}"] == S.shift_metric(noise, bound)
            # the drawn curve, on the grid, is the certificate itself
            on_grid = S.shift_bound(out["accuracy_lower"], explorer.eps_values, noise, "hellinger")
            assert np.allclose(on_grid, cert.accuracy, atol=1e-12)
            assert np.allclose(np.interp(explorer.eps_values, out["curve_eps"], out["curve_hellinger"]),
                               cert.accuracy, atol=2e-3)
    # the model is better than chance, and a larger shift certifies less
    a = explorer.update("brightness", "Gaussian", 0.0)
    assert a["accuracy_lower"] > 0.3 and a["hellinger"] == a["accuracy_lower"]
    assert explorer.update("brightness", "Gaussian", 1.0)["hellinger"] < explorer.update(
        "brightness", "Gaussian", 0.5)["hellinger"] < a["hellinger"]


def test_the_shown_digits_are_shifted_by_eps(explorer, data):
    _, x, _ = data
    out = explorer.update("brightness", "Gaussian", 0.5)
    assert torch.equal(out["inputs"], x[:3])
    assert torch.allclose(out["shifted"], x[:3] ** (2.0 ** -0.5))
    assert not torch.allclose(out["randomized"], out["shifted"])
    out = explorer.update("translation", "uniform", 1.0)  # a whole pixel to the right: a circular shift
    base = S.Translation().apply(x[:3], torch.zeros(2))
    assert torch.allclose(out["shifted"], torch.roll(base, 1, -1), atol=1e-5)
    # the third row is T(x, theta + delta): the randomization applied to the shifted digit
    delta = explorer._draws[("translation", "uniform")]
    assert torch.allclose(out["randomized"], S.Translation().apply(out["shifted"], delta), atol=1e-5)
    assert float(delta.abs().max()) <= 0.5 * math.sqrt(3)


def _markers(fig):
    return {ln.get_gid(): float(ln.get_ydata()[0]) for ax in fig.axes for ln in ax.get_lines()
            if (ln.get_gid() or "").startswith("marker-")}


def test_snapshot_plots_the_bound_at_each_setting(explorer):
    fig = explorer.snapshot([("brightness", "Gaussian", 0.5)])
    assert len(fig.axes) == 2
    assert _markers(fig) == pytest.approx({f"marker-{b}": explorer.update("brightness", "Gaussian", 0.5)[b]
                                           for b in S.BOUNDS}, abs=0)
    fig = explorer.snapshot()
    assert len(fig.axes) == 4 and "translation" in fig.axes[2].get_title()


def test_every_control_redraws_with_its_new_value(explorer, monkeypatch):
    import robustlab.widgets._live as live_mod

    figures = []
    render = live_mod.render

    def recording_render(draw):
        def recorded():
            fig = draw()
            figures.append(_markers(fig))
            return fig
        return render(recorded)

    monkeypatch.setattr(live_mod, "render", recording_render)
    calls = []
    update = explorer.update
    monkeypatch.setattr(explorer, "update", lambda *a, **k: calls.append(a) or update(*a, **k))
    box = explorer.widget()
    family, rand = box.children[0].children
    (eps,) = box.children[1].children
    out = box.children[-1]
    assert calls == [("brightness", "Gaussian", eps.value)] and len(out.outputs) == 1
    family.value = "translation"
    assert calls[-1] == ("translation", "Gaussian", eps.value)
    rand.value = "uniform"
    assert calls[-1] == ("translation", "uniform", eps.value)
    eps.value = 1.0
    assert calls[-1] == ("translation", "uniform", 1.0) and len(calls) == 4
    assert figures[-1]["marker-tv"] == update("translation", "uniform", 1.0)["tv"]
    assert figures[-1] != figures[-2]
    assert out.outputs[-1]["output_type"] == "display_data", "each redraw shows the new figure"


def test_arguments_are_checked(explorer, data):
    model, x, y = data
    with pytest.raises(ValueError, match="family must be one of"):
        explorer.update("rotation", "Gaussian", 0.5)
    with pytest.raises(ValueError, match="randomization must be one of"):
        explorer.update("brightness", "Laplace", 0.5)
    with pytest.raises(ValueError, match="eps"):
        explorer.update("brightness", "Gaussian", -0.1)
    with pytest.raises(ValueError, match="settings must hold"):
        explorer.snapshot([])
    with pytest.raises(ValueError, match="settings must hold"):
        explorer.snapshot([("brightness", 0.5)])
    with pytest.raises(ValueError, match="n_show must be at most the 40 inputs"):
        rl.widgets.ShiftExplorer(model, x, y, n=10, n_show=41)
    with pytest.raises(ValueError, match="eps_max"):
        rl.widgets.ShiftExplorer(model, x, y, n=10, eps_max=0.0)
    with pytest.raises(ValueError, match="steps must be at least 2"):
        rl.widgets.ShiftExplorer(model, x, y, n=10, steps=1)
    with pytest.raises(TypeError, match="randomizations must map names"):
        rl.widgets.ShiftExplorer(model, x, y, n=10, randomizations={"Laplace": 0.5})
    with pytest.raises(ValueError, match="y has 3 labels but the batch has 40"):
        rl.widgets.ShiftExplorer(model, x, y[:3], n=10)
    cert = S.certify_shift(model, x, y, S.Brightness(), GaussianNoise(0.25), [0.0], n=10)
    with pytest.raises(ValueError, match=r"certificates\[\('brightness', 'Gaussian'\)\] was computed with"):
        rl.widgets.ShiftExplorer(model, x, y, n=10, certificates={("brightness", "Gaussian"): cert})
    with pytest.raises(TypeError, match="must be a ShiftCertificate"):
        rl.widgets.ShiftExplorer(model, x, y, n=10, certificates={("brightness", "Gaussian"): 0.9})


def test_given_certificates_are_used_as_they_are(data):
    model, x, y = data
    cert = S.certify_shift(model, x, y, S.Brightness(), GaussianNoise(0.5), [0.0, 1.0], n=50, seed=3)
    demo = rl.widgets.ShiftExplorer(model, x, y, n=20, certificates={("brightness", "Gaussian"): cert})
    out = demo.update("brightness", "Gaussian", 1.0)
    assert out["accuracy_lower"] == cert.accuracy_lower and out["n"] == 50
    assert out["hellinger"] == pytest.approx(float(cert.accuracy[1]), abs=1e-12)
    assert demo.update("translation", "Gaussian", 0.0)["n"] == 20
