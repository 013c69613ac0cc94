import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import robustlab as rl  # noqa: E402
from robustlab.lipschitz import conv as C  # noqa: E402


@pytest.fixture(scope="module")
def explorer():
    return rl.widgets.ConvBoundExplorer()


def unrolled_norm(K, n, mode):
    d = K.shape[1] * n * n
    eye = torch.eye(d, dtype=K.dtype).view(d, K.shape[1], n, n)
    p = K.shape[2] // 2
    out = F.conv2d(F.pad(eye, (p,) * 4, mode="circular"), K) if mode == "circular" else F.conv2d(eye, K, padding=p)
    return float(torch.linalg.matrix_norm(out.flatten(1).T, ord=2))


def test_update_reports_the_bound_and_the_exact_norms_of_the_blended_kernel(explorer):
    for name in explorer.kernels:
        for mix in (0.0, 0.4, 1.0):
            out = explorer.update(name, mix, 8)
            K = explorer.kernel(name, mix)
            assert out["bound"] == pytest.approx(C.conv_sv_bound(K).value)
            assert out["zeros"] == pytest.approx(unrolled_norm(K, 8, "zeros"), rel=1e-8)
            assert out["circular"] == pytest.approx(unrolled_norm(K, 8, "circular"), rel=1e-8)
            assert out["bound"] >= out["circular"] * (1 - 1e-10) and out["bound"] >= out["zeros"] * (1 - 1e-10)
        assert explorer.update(name, 1.0)["bound"] == pytest.approx(explorer.update(name, 1.0)["circular"], rel=1e-10)
        assert explorer.update(name, 0.0)["bound"] > 1.05 * explorer.update(name, 0.0)["circular"]
    taps = explorer.update("random 3x3", 1.0)["tap_norms"]
    assert taps.shape == (3, 3) and abs(taps.max() - taps.min()) < 1e-12, "equal taps at blend 1"


def test_snapshot_and_widget_redraw_cheaply(explorer, monkeypatch):
    fig = explorer.snapshot()
    assert len([ax for ax in fig.axes if "bound" in ax.get_title()]) == 3
    calls = []
    update = explorer.update
    monkeypatch.setattr(explorer, "update", lambda *a, **k: calls.append(a) or update(*a, **k))
    box = explorer.widget()
    name, mix, n = box.children[0].children
    assert len(calls) == 1
    mix.value = 0.5
    n.value = 10
    assert calls[-1] == ("random 3x3", 0.5, 10) and len(calls) == 3


def test_user_kernels_and_arguments_are_checked(explorer):
    demo = rl.widgets.ConvBoundExplorer({"one": torch.ones(2, 2, 3, 3)})
    assert demo.update("one")["bound"] == pytest.approx(demo.update("one")["circular"])
    with pytest.raises(ValueError, match="name must be one of"):
        explorer.update("nope")
    with pytest.raises(ValueError, match="mix must be in"):
        explorer.update("random 3x3", 1.5)
    with pytest.raises(ValueError, match="n must be at least the kernel size 5"):
        explorer.update("random 5x5", 0.0, 4)
    with pytest.raises(ValueError, match="must be square and odd"):
        rl.widgets.ConvBoundExplorer({"even": torch.ones(1, 1, 2, 2)})
    with pytest.raises(ValueError, match="kernels must be a non-empty dict"):
        rl.widgets.ConvBoundExplorer({})
    with pytest.raises(ValueError, match="settings must hold"):
        explorer.snapshot(())
