import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

import robustlab as rl  # noqa: E402
from robustlab.widgets.training import DeltaBallDemo, LinearClassifier, fit_linear, worst_perturbation  # noqa: E402


@pytest.fixture(scope="module")
def demo():
    return DeltaBallDemo()


def _ball_boundary(center, eps, norm, k=720):
    """Points of the ball whose worst case a linear score attains: the vertices of the
    Linf and L1 balls (a linear function's minimum over a polytope is at a vertex), and
    a dense ring of the L2 ball."""
    if norm == "linf":
        d = torch.tensor([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=torch.float64)
    elif norm == "l1":
        d = torch.tensor([[1, 0], [-1, 0], [0, 1], [0, -1]], dtype=torch.float64)
    else:
        t = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
        d = torch.stack([t.cos(), t.sin()], 1)
    return center.double()[:, None, :] + eps * d[None]


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_the_robust_accuracy_is_what_brute_force_over_each_ball_finds(demo, norm):
    x, y = demo.data
    for eps in (0.0, 0.05, 0.12):
        out = demo.update(eps, norm)
        for name in ("standard", "robust"):
            clf = out[name]
            ring = _ball_boundary(x, eps, norm)  # (n, m, 2)
            right = (clf.predict(ring.reshape(-1, 2)).reshape(ring.shape[:2]) == y[:, None]).all(1)
            if norm == "l2":  # the sampled ring can only miss a crossing by a sliver of the radius
                close = clf.robust_margin(x, y, eps, norm).abs() < 1e-4 * float(clf.w.norm())
                assert torch.equal(right[~close], out[f"robust_mask_{name}"][~close])
            else:
                assert torch.equal(right, out[f"robust_mask_{name}"]), (norm, eps, name)
            assert out[f"robust_acc_{name}"] == pytest.approx(float(right.double().mean()), abs=0.03 if norm == "l2" else 0)
            assert out[f"train_acc_{name}"] == float((clf.predict(x) == y).double().mean())


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_the_worst_perturbation_is_the_exact_inner_maximiser_for_a_linear_score(norm):
    g = torch.Generator().manual_seed(0)
    w, ypm = torch.randn(2, generator=g, dtype=torch.float64), torch.tensor([1.0, -1.0], dtype=torch.float64)
    x = torch.rand(2, 2, generator=g, dtype=torch.float64)
    clf = LinearClassifier(w, 0.3)
    delta = worst_perturbation(w, ypm, 0.2, norm)
    assert torch.allclose(rl.norms.lp_norm(delta, norm), torch.full((2,), 0.2, dtype=torch.float64))
    worst = ypm * clf.score(x + delta)
    sampled = (ypm[:, None] * clf.score(_ball_boundary(x, 0.2, norm, k=3600).reshape(-1, 2)).reshape(2, -1)).min(1).values
    assert torch.all(worst <= sampled + 1e-12), "no point of the ball does worse than the closed form"
    assert torch.allclose(worst, clf.robust_margin(x, (ypm > 0).long(), 0.2, norm))


def test_training_follows_the_gradient_of_the_robust_loss_danskin():
    """One step of fit_linear from its start equals one Adam step on the closed-form robust
    loss differentiated by autograd (the gradient at the inner maximiser is the gradient)."""
    x, y = rl.data.linearly_separable(30, seed=1)
    for norm in ("linf", "l2", "l1"):
        one = fit_linear(x, y, eps=0.1, norm=norm, steps=1, lr=0.1, seed=3)
        g = torch.Generator().manual_seed(3)
        w = (0.01 * torch.randn(2, generator=g, dtype=torch.float64)).requires_grad_(True)
        b = torch.zeros((), dtype=torch.float64, requires_grad=True)
        ypm = 2.0 * y.double() - 1.0
        loss = torch.nn.functional.softplus(-(ypm * (x.double() @ w + b)
                                              - 0.1 * rl.norms.lp_norm(w[None], {"linf": "l1", "l2": "l2", "l1": "linf"}[norm])[0]))
        opt = torch.optim.Adam([w, b], lr=0.1)
        loss.mean().backward()
        opt.step()
        assert torch.allclose(one.w, w.detach(), atol=1e-9) and one.b == pytest.approx(float(b.detach()), abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_below_half_the_gap_adversarial_training_keeps_every_ball_on_its_side(seed):
    """The data leave an empty gap of width 0.2 around a line, so a linear classifier with
    L2 margin 0.1 exists: at every radius below it, adversarial training must find one
    whose margin is at least the radius."""
    demo = DeltaBallDemo(40, margin=0.2, seed=seed)
    for eps in (0.02, 0.05, 0.08):
        out = demo.update(eps, "l2")
        assert out["robust_acc_robust"] == 1.0 and out["margin_robust"] >= eps, (seed, eps)


def test_beyond_the_gap_adversarial_training_trades_clean_for_robust_accuracy(demo):
    """On the demo's data at Linf radius 0.15 no linear classifier keeps every ball whole;
    the adversarially trained one gives up clean points to keep more balls than the
    standard one does, and its robust logistic loss is the lower one."""
    out = demo.update(0.15, "linf")
    assert out["robust_acc_robust"] > out["robust_acc_standard"]
    assert out["train_acc_robust"] < out["train_acc_standard"] == 1.0
    x, y = demo.data

    def robust_loss(clf):
        return float(torch.nn.functional.softplus(-clf.robust_margin(x, y, 0.15, "linf")).mean())

    assert robust_loss(out["robust"]) < robust_loss(out["standard"])


def test_update_reuses_each_fit_and_is_fast(demo):
    import time

    start = time.perf_counter()
    demo.update(0.07, "l1")
    first = time.perf_counter() - start
    assert demo.robust_classifier(0.07, "l1") is demo.robust_classifier(0.07, "l1")
    assert first < 2.0, f"one fit took {first:.2f} s"


def test_snapshot_draws_one_panel_per_radius(demo):
    fig = demo.snapshot((0.0, 0.1, 0.15), norm="l2")
    assert len(fig.axes) == 3
    titles = [ax.get_title() for ax in fig.axes]
    assert all("l2" in t for t in titles) and "ε = 0.10" in titles[1]
    assert len(fig.axes[2].patches) == demo.data.x.shape[0], "one ball per training point"
    assert len(fig.axes[0].patches) == 0, "no balls at radius 0"
    matplotlib.pyplot.close(fig)


def test_widget_builds_and_redraws_with_each_control(demo, monkeypatch):
    calls = []
    update = demo.update
    monkeypatch.setattr(demo, "update", lambda *a, **k: calls.append(a) or update(*a, **k))
    box = demo.widget(eps_max=0.2)
    eps, norm = box.children[0].children
    assert eps.max == 0.2 and list(norm.options) == ["linf", "l2", "l1"]
    assert calls == [(0.05, "linf")], "the widget draws its initial state once"
    eps.value = 0.12
    assert calls[-1] == (0.12, "linf")
    norm.value = "l1"
    assert calls[-1] == (0.12, "l1") and len(calls) == 3
    matplotlib.pyplot.close("all")


def test_arguments_are_checked(demo):
    with pytest.raises(ValueError, match="eps must be >= 0"):
        demo.update(-0.1)
    with pytest.raises(ValueError, match="norm must be one of"):
        demo.update(0.1, "l0")
    with pytest.raises(ValueError, match="eps_values must hold"):
        demo.snapshot(())
    with pytest.raises(ValueError, match="margin must be in"):
        DeltaBallDemo(margin=0.7)
    with pytest.raises(ValueError, match="y must hold labels in"):
        fit_linear(torch.rand(3, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="steps must be"):
        fit_linear(torch.rand(3, 2), torch.tensor([0, 1, 1]), steps=0)
