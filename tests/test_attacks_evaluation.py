"""Robust accuracy over a data set, and the gradient-masking checklist: it must pass an
honest model and flag models whose gradients were made useless."""

import pytest
import torch

import robustlab as rl

A = rl.attacks


class Quantised(torch.nn.Module):
    """Rounds its input to 16 grey levels before the classifier: the digits (multiples of
    1/16) are unchanged, but the gradient through the rounding is zero everywhere."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(torch.round(x * 16) / 16)


class Saturated(torch.nn.Module):
    """Multiplies the logits by 1000: the softmax saturates, so the cross-entropy gradient
    of a confidently classified input is exactly zero in float32; predictions are unchanged."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(x) * 1000.0


@pytest.fixture(scope="module")
def standard(digits):
    model, _ = rl.train.trained_model("digits", "cnn", progress=False)
    return model, digits[1]


# ----------------------------------------------------------------------------- robust_accuracy


def test_robust_accuracy_agrees_with_a_manual_computation(standard):
    model, test = standard
    x, y = test.x[:100], test.y[:100]
    eps = torch.linspace(0.0, 0.2, 100)
    x_adv = A.fgsm(model, x, y, eps=eps)  # deterministic and per sample: batching cannot matter
    clean, adv = rl.train.predict(model, x), rl.train.predict(model, x_adv)
    manual = float(((clean == y) & (adv == y)).float().mean())
    assert 0.2 < manual < 0.95, "the test needs a mix of robust and non-robust inputs"
    got = A.robust_accuracy(model, (x, y), A.fgsm, eps=eps, batch_size=7, progress=False)
    assert got == pytest.approx(manual, abs=1e-9)


def test_robust_accuracy_counts_only_inputs_that_are_right_both_clean_and_attacked(standard):
    model, test = standard
    x, y = test.x[:80], test.y[:80]
    wrong = (y + 1) % 10
    identity = lambda m, xb, yb: xb  # noqa: E731
    assert A.robust_accuracy(model, (x, y), identity, progress=False) == pytest.approx(rl.train.evaluate(model, (x, y)))
    assert A.robust_accuracy(model, (x, wrong), identity, progress=False) <= 0.05
    # an "attack" that hands back a correctly classified input cannot rescue a clean mistake
    seen = []

    def record(m, xb, yb, **kw):
        seen.append(len(xb))
        return xb

    A.robust_accuracy(model, (x, y), record, batch_size=32, progress=False)
    assert sum(seen) == int((rl.train.predict(model, x) == y).sum()), "only correctly classified inputs are attacked"


def test_robust_accuracy_slices_per_sample_targets_with_the_batches(standard):
    model, test = standard
    x, y = test.x[:64], test.y[:64]
    t = (y + 3) % 10
    got = []

    def check_targets(m, xb, yb, *, targets, eps):
        got.append(bool(((yb + 3) % 10 == targets).all()))
        return A.fgsm(m, xb, yb, eps=eps, targets=targets)

    A.robust_accuracy(model, (x, y), check_targets, targets=t, eps=0.1, batch_size=10, progress=False)
    assert got and all(got)


def test_robust_accuracy_shows_a_progress_bar_that_can_be_switched_off(standard, capsys):
    model, test = standard
    data = (test.x[:40], test.y[:40])
    A.robust_accuracy(model, data, A.fgsm, eps=0.1, batch_size=10, progress=True, desc="fgsm bar")
    assert "fgsm bar" in capsys.readouterr().err
    A.robust_accuracy(model, data, A.fgsm, eps=0.1, batch_size=10, progress=False, desc="fgsm bar")
    assert "fgsm bar" not in capsys.readouterr().err


def test_robust_accuracy_arguments_are_checked(tiny_model):
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    with pytest.raises(TypeError, match=r"data must be a Split or an \(x, y\) pair"):
        A.robust_accuracy(tiny_model, x, A.fgsm, eps=0.1)
    with pytest.raises(ValueError, match=r"data.x must have values in \[0, 1\]"):
        A.robust_accuracy(tiny_model, (x + 1, y), A.fgsm, eps=0.1)
    with pytest.raises(TypeError, match="attack must be callable"):
        A.robust_accuracy(tiny_model, (x, y), "pgd", eps=0.1)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        A.robust_accuracy(tiny_model, (x, y), A.fgsm, eps=0.1, batch_size=0)
    everything_right = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4, bias=False))
    with torch.no_grad():
        everything_right[1].weight.zero_()
    yy = torch.zeros(4, dtype=torch.int64)  # all-zero logits predict class 0
    with pytest.raises(TypeError, match="attack must return x_adv as a tensor"):
        A.robust_accuracy(everything_right, (x, yy), A.square, eps=0.1, queries=2, return_queries=True)


# ----------------------------------------------------------------------------- checklist


def test_the_checklist_passes_the_honest_standard_model(standard):
    model, test = standard
    report = A.gradient_masking_checklist(model, test, eps=0.1, steps=(10, 50), queries=500, progress=False)
    assert report.passed, report.table()
    assert report.clean_accuracy > 0.95
    assert 0.2 < report["more steps"].numbers["PGD-50"] < 0.8, "eps 0.1 is neither trivial nor hopeless"
    assert report["unbounded"].numbers["accuracy"] == 0.0


@pytest.mark.parametrize("mask", [Quantised, Saturated], ids=["quantised input", "saturated softmax"])
def test_the_checklist_flags_gradient_masking(standard, mask):
    model, test = standard
    masked = mask(model)
    data = (test.x[:120], test.y[:120])
    assert rl.train.evaluate(masked, data) == rl.train.evaluate(model, data), "masking must not change predictions"
    report = A.gradient_masking_checklist(masked, data, eps=0.1, steps=(10, 50), queries=300, progress=False)
    assert not report.passed
    assert "black box" in report.failed, report.table()
    assert "unbounded" in report.failed, report.table()
    # the white-box attack looks strong only because it fails; the black box sees through it
    assert report["black box"].numbers["square"] < report["black box"].numbers["best PGD"] - 0.3


def test_the_checklist_report_is_readable(standard):
    model, test = standard
    report = A.gradient_masking_checklist(Quantised(model), (test.x[:40], test.y[:40]), eps=0.2, steps=(2, 4),
                                          restarts=2, queries=50, progress=False)
    text = repr(report)
    assert text == report.table()
    for check in report.checks:
        assert check.name in text and ("pass" if check.passed else "FAIL") in str(check)
    assert ("=> passed" in text) == report.passed
    assert [c.name for c in report.checks] == ["more steps", "unbounded", "black box", "restarts"]
    with pytest.raises(KeyError, match="no check named 'speed'"):
        report["speed"]


@pytest.mark.parametrize("tolerance", [0.0, 0.03, 1.0])
def test_every_checklist_verdict_follows_from_its_numbers(standard, tolerance):
    model, test = standard
    report = A.gradient_masking_checklist(Quantised(model), (test.x[:60], test.y[:60]), eps=0.3, steps=(3, 6),
                                          restarts=3, queries=60, tolerance=tolerance, progress=False)
    n = report["more steps"].numbers
    assert report["more steps"].passed == (n["PGD-6"] <= n["PGD-3"] + tolerance)
    assert report["unbounded"].passed == (report["unbounded"].numbers["accuracy"] <= tolerance)
    n = report["black box"].numbers
    assert report["black box"].passed == (n["square"] >= n["best PGD"] - tolerance)
    n = report["restarts"].numbers
    assert report["restarts"].passed == (n["x3 restarts"] >= n["PGD-3"] - tolerance)
    if tolerance == 1.0:
        assert report.passed, "with a tolerance of 100 points nothing can fail"
    if tolerance == 0.0:  # restarts and the black box break inputs PGD cannot: each shows up
        assert {"unbounded", "black box", "restarts"} <= set(report.failed) and not report.passed


def test_checklist_arguments_are_checked(tiny_model):
    data = (torch.rand(4, 1, 8, 8), torch.arange(4))
    with pytest.raises(ValueError, match=r"steps must be increasing \(fewer, more\)"):
        A.gradient_masking_checklist(tiny_model, data, eps=0.1, steps=(50, 10))
    with pytest.raises(TypeError, match=r"steps must be a pair \(fewer, more\)"):
        A.gradient_masking_checklist(tiny_model, data, eps=0.1, steps=10)
    with pytest.raises(ValueError, match="restarts must be >= 2"):
        A.gradient_masking_checklist(tiny_model, data, eps=0.1, restarts=1)
    with pytest.raises(ValueError, match="norm must be one of"):
        A.gradient_masking_checklist(tiny_model, data, eps=0.1, norm="l0")
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        A.gradient_masking_checklist(tiny_model, data, eps=0.1, tolerance=-0.01)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        A.gradient_masking_checklist(tiny_model, data, eps=-0.1)
