import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

import robustlab as rl  # noqa: E402
from robustlab.smoothing import l1 as L1  # noqa: E402


class NearestMean(torch.nn.Module):
    """Classify by the nearest class mean of the training digits (no training needed)."""

    def __init__(self, train):
        super().__init__()
        x = train.x.flatten(1)
        self.means = torch.nn.Parameter(torch.stack([x[train.y == c].mean(0) for c in range(10)]))

    def forward(self, x):
        return -torch.cdist(x.flatten(1), self.means) ** 2


LAM, Q = L1.lam_from_sigma(0.5), 16


@pytest.fixture(scope="module")
def explorer():
    train, test = rl.data.load("digits")
    model = NearestMean(train).eval()
    return rl.widgets.DSSNExplorer(model, test.x[:12], test.y[:12], lam=LAM, q=Q)


def test_update_reports_the_dssn_certificate_of_the_input(explorer):
    cert = L1.certify_dssn(explorer.model, explorer.x, lam=LAM, q=Q)
    assert explorer.n_offsets == L1.n_offsets(LAM, Q) == 27
    for i in range(len(explorer.y)):
        out = explorer.update(i, 0)
        assert torch.equal(out["counts"], cert.counts[i]), "the widget's votes are certify_dssn's"
        assert out["prediction"] == int(cert.prediction[i])
        assert out["certificate_radius"] == pytest.approx(float(cert.radius[i]))
        assert out["radius_steps"] == int(cert.radius_steps[i])
        assert int(out["counts"].sum()) == 27 and out["runner_up"] != out["prediction"]
    assert float((cert.prediction == explorer.y).float().mean()) > 0.5, "nearest means vote mostly right on split digits"


def test_split_images_are_the_offsets_representations_and_wrap_around(explorer):
    out = explorer.update(3, 26)
    assert out["offsets"] == [26, 0, 1]
    family = L1.SplitFamily.dssn(LAM, Q)
    for o, img in zip(out["offsets"], out["split_images"]):
        assert torch.equal(img, family.represent(explorer.x[3:4], o)[0])
        with torch.no_grad():
            assert int(explorer.model(img[None]).argmax(1)) == int(out["votes"][o])


def test_snapshot_and_widget_redraw_cheaply(explorer, monkeypatch):
    fig = explorer.snapshot([(0, 0), (5, 10)])
    assert len(fig.axes) == 2 * (explorer.shown + 3)
    assert any("radius" in ax.get_title() for ax in fig.axes)
    calls = []
    update = explorer.update
    monkeypatch.setattr(explorer, "update", lambda *a, **k: calls.append(a) or update(*a, **k))
    box = explorer.widget()
    index, offset = box.children[0].children
    assert calls == [(0, 0)]
    index.value = 4
    offset.value = 7
    assert calls[-1] == (4, 7) and len(calls) == 3


def test_arguments_are_checked(explorer):
    with pytest.raises(ValueError, match="index must be below the number of inputs 12"):
        explorer.update(12, 0)
    with pytest.raises(ValueError, match="offset must be below the number of offsets L = 27"):
        explorer.update(0, 27)
    with pytest.raises(ValueError, match="settings must hold"):
        explorer.snapshot(())
    with pytest.raises(ValueError, match="x must lie on the quantization grid"):
        rl.widgets.DSSNExplorer(explorer.model, explorer.x * 0.99 + 0.005, explorer.y, lam=LAM, q=Q)
    with pytest.raises(ValueError, match="y has 3 labels but the batch has 12"):
        rl.widgets.DSSNExplorer(explorer.model, explorer.x, explorer.y[:3], lam=LAM, q=Q)
