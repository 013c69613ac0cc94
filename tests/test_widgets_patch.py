import time

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

import robustlab as rl  # noqa: E402
from robustlab.smoothing import ablation as SA  # noqa: E402
from robustlab.smoothing import patch as SP  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    _, test = rl.data.load("digits")
    return test.x[:6], test.y[:6]


@pytest.fixture(scope="module")
def explorer(digits):
    x, y = digits
    model = SP.build_base("mlp", "digits", width=2, seed=0).eval()
    return rl.widgets.PatchVoteExplorer(model, x, y, kind="column", size=2, steps=3)


def test_the_clean_certificate_is_the_package_certificate(explorer, digits):
    x, _ = digits
    cert = SP.certify(explorer.model, x, kind="column", size=2, progress=False)
    assert torch.equal(explorer.clean.radius, cert.radius)
    assert torch.equal(explorer.clean.counts, cert.counts)


@pytest.mark.parametrize("content", rl.widgets.PatchVoteExplorer.CONTENTS)
def test_a_patch_changes_only_its_square_and_no_more_bands_than_delta(explorer, digits, content):
    x, _ = digits
    out = explorer.update(index=2, row=3, col=5, side=2, content=content)
    outside = ~explorer.patch_mask(3, 5, 2)[0]
    assert torch.equal(out["image"][outside], x[2][outside]), "the patch leaves the rest of the image alone"
    assert 0 <= float(out["image"].min()) and float(out["image"].max()) <= 1
    assert out["bands_hit"] <= out["delta"] == SP.votes_affected("column", 2, 2, x.shape)
    assert out["bands_hit"] == 3  # columns 5, 6 meet bands starting at 4, 5 and 6
    assert out["covered"] == (2 <= out["certified_side"])
    expected = SP.predict(explorer.model, out["image"][None], size=2)[0]
    assert out["prediction"] == int(expected)


class InkVote(torch.nn.Module):
    """A band votes 1 if the mean of its kept pixels is above 0.3, else 0 (patches can flip it)."""

    def forward(self, z):
        values, kept = z[:, :1], z[:, :1] + z[:, 1:2]
        ink = values.flatten(1).sum(1) / kept.flatten(1).sum(1).clamp_min(1)
        return 20 * torch.stack([0.3 - ink, ink - 0.3], 1)


def test_inside_the_certified_side_no_content_changes_the_prediction(digits):
    x = torch.cat([torch.full((2, 1, 8, 8), 0.1), torch.full((2, 1, 8, 8), 0.6), digits[0][:2]])
    demo = rl.widgets.PatchVoteExplorer(InkVote(), x, torch.zeros(6, dtype=torch.long), size=2, theta=None,
                                        steps=5)
    certified = [(i, int(r)) for i, r in enumerate(demo.clean.radius.tolist()) if r >= 1]
    assert certified, "some digits are certified"
    changed = False
    for index, radius in certified:
        for content in demo.CONTENTS:
            for row, col in [(0, 0), (3, 4), (7, 7)]:
                out = demo.update(index, row, col, radius, content)
                assert out["covered"] and not out["changed"]
                beyond = demo.update(index, row, col, min(8, radius + 3), content)
                changed |= beyond["changed"] and not beyond["covered"]
    assert changed, "a larger patch does change some prediction (the check is not vacuous)"


def test_a_corner_past_the_edge_is_moved_back_inside(explorer):
    out = explorer.update(index=0, row=7, col=7, side=3, content="black")
    assert (out["row"], out["col"]) == (5, 5)


def test_arguments_are_checked(explorer):
    with pytest.raises(ValueError, match="index must be below"):
        explorer.update(index=6)
    with pytest.raises(ValueError, match="side must be at most 8"):
        explorer.update(side=9)
    with pytest.raises(ValueError, match="content"):
        explorer.update(content="glitter")


def test_snapshot_and_widget_draw_and_redraw(explorer, monkeypatch):
    fig = explorer.snapshot([(0, 1, 1, 1, "white"), (1, 2, 2, 2, "noise")])
    assert len(fig.axes) == 4
    calls = []
    update = explorer.update
    monkeypatch.setattr(explorer, "update", lambda *a: calls.append(a) or update(*a))
    box = explorer.widget()
    (image, fill), (row, col, side) = (r.children for r in box.children[:2])
    assert calls == [(0, 0, 0, 2, "white")]
    col.value = 4
    side.value = 3
    fill.value = "black"
    assert calls[-1] == (0, 0, 4, 3, "black") and len(calls) == 4


def test_block_smoothing_counts_the_blocks(digits):
    x, y = digits
    model = SP.build_base("mlp", "digits", width=2, seed=1).eval()
    start = time.perf_counter()
    demo = rl.widgets.PatchVoteExplorer(model, x, y, kind="block", size=4, steps=2)
    out = demo.update(index=0, row=2, col=2, side=2, content="adversarial")
    assert time.perf_counter() - start < 2.0, "the explorer starts and redraws fast"
    assert out["bands_hit"] <= out["delta"] == 25 and out["counts"].sum() <= 64 * 10


@pytest.fixture(scope="module")
def budget(digits):
    x, y = digits
    model = SA.build("mlp", "digits", width=2, seed=0).eval()
    certs = {k: SA.certify(model, x, k=k, n0=20, n=200, progress=False) for k in (5, 20)}
    return rl.widgets.AblationBudgetExplorer(certs, x, y), certs


def test_the_budget_explorer_reports_the_certificates_it_was_given(budget, digits):
    demo, certs = budget
    _, y = digits
    out = demo.update(k=5, index=3)
    assert out["certified_accuracy"] == certs[5].certified_accuracy(y, demo.radii).tolist()
    assert out["radius"] == int(certs[5].radius[3]) and out["max_radius"] == SA.max_radius(64, 5)
    assert int(out["kept"].sum()) == 5 and out["kept"].shape == (8, 8)
    assert out["needed"] == sorted(out["needed"]), "more pixels need a larger bound"
    assert out["needed"][0] == pytest.approx(0.5 + 5 / 64)
    assert demo.radii[-1] > max(SA.max_radius(64, k) for k in (5, 20))
    with pytest.raises(ValueError, match=r"one of the certified budgets \[5, 20\]"):
        demo.update(k=10)


def test_the_budget_explorer_snapshot_and_widget(budget, monkeypatch):
    demo, _ = budget
    assert len(demo.snapshot().axes) == 4
    calls = []
    update = demo.update
    monkeypatch.setattr(demo, "update", lambda *a: calls.append(a) or update(*a))
    box = demo.widget()
    k, image = box.children[0].children
    k.value = 20
    image.value = 2
    assert calls == [(5, 0), (20, 0), (20, 2)]


def test_the_budget_explorer_rejects_other_certificates(digits):
    x, y = digits
    cert = rl.certificates.Certificate(torch.zeros(6, dtype=torch.long), torch.zeros(6), "L2 pixels", "gaussian")
    with pytest.raises(TypeError, match="randomized-ablation Certificate"):
        rl.widgets.AblationBudgetExplorer({5: cert}, x, y)
