"""The one certificate result (robustlab.certificates): validation, the certified-accuracy
convention (correct, not abstained, radius >= r), slicing, joining, and the plot."""

import numpy as np
import pytest
import torch

from robustlab.certificates import ABSTAIN, UNITS, Certificate, certified_accuracy, plot_certified_accuracy


def make(prediction=(3, ABSTAIN, 1, 2), radius=(0.5, 0.0, 0.2, 0.0), **kw):
    args = dict(unit=UNITS["l2"], method="demo", alpha=0.01,
                stats={"score": torch.tensor([0.9, 0.4, 0.7, 0.6], dtype=torch.float64), "sigma": 0.25})
    args.update(kw)
    return Certificate(torch.tensor(prediction), torch.tensor(radius, dtype=torch.float64), **args)


def test_certified_accuracy_counts_correct_not_abstained_inputs_with_radius_at_least_r():
    radii = torch.tensor([0.0, 0.3, 0.5, 0.9, 2.0], dtype=torch.float64)
    correct = torch.tensor([False, True, True, True, False])
    acc = certified_accuracy(radii, correct, at=[0.0, 0.3, 0.31, 0.5, 0.9, 1.0])
    assert acc.tolist() == [0.6, 0.6, 0.4, 0.4, 0.2, 0.0], "radius >= r counts, radius < r does not"
    cert = Certificate(torch.tensor([ABSTAIN, 1, 2, 3, 4]), radii.where(torch.arange(5) > 0, 0.0), UNITS["l2"], "demo")
    y = torch.tensor([0, 1, 2, 3, 0])
    assert cert.correct(y).tolist() == correct.tolist()
    assert np.array_equal(cert.certified_accuracy(y, at=[0.0, 0.5]), [0.6, 0.4])
    assert cert.certified_accuracy(y) == pytest.approx(0.6) and isinstance(cert.certified_accuracy(y, 0.3), float)
    # an abstention is never correct, even when its (unreported) class would be the label
    assert not Certificate(torch.tensor([ABSTAIN]), torch.zeros(1), UNITS["l2"], "demo").correct(torch.tensor([0])).any()
    # a method that always predicts: at radius 0 the certified accuracy is the plain accuracy
    always = Certificate(torch.tensor([0, 1, 1]), torch.tensor([0.0, 0.0, 0.4]), UNITS["linf"], "det")
    assert always.certified_accuracy(torch.tensor([0, 1, 0])) == pytest.approx(2 / 3)
    assert always.certified_at(0.4).tolist() == [False, False, True]
    # brute force on random certificates
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        pred = torch.randint(-1, 3, (20,), generator=gen)
        radius = torch.where(pred == ABSTAIN, 0.0, torch.rand(20, generator=gen).double().round(decimals=1))
        y = torch.randint(0, 3, (20,), generator=gen)
        cert = Certificate(pred, radius, UNITS["l2"], "demo", alpha=0.1)
        for r in (0.0, 0.1, 0.5, 1.0):
            brute = sum(int(p == t and p != ABSTAIN and rad >= r) for p, t, rad in
                        zip(pred.tolist(), y.tolist(), radius.tolist())) / 20
            assert cert.certified_accuracy(y, r) == pytest.approx(brute)


def test_statistics_read_as_attributes_and_settings_stay_whole():
    cert = make()
    assert cert.sigma == 0.25 and torch.equal(cert.score, cert.stats["score"])
    assert cert.abstained.tolist() == [False, True, False, False] and len(cert) == 4
    assert not cert.deterministic and Certificate(torch.tensor([0]), torch.zeros(1), UNITS["l0"], "d").deterministic
    with pytest.raises(AttributeError, match="no attribute or statistic 'missing'"):
        cert.missing
    assert "demo" in repr(cert) and "alpha=0.01" in repr(cert)


def test_slicing_indexes_the_per_input_statistics():
    cert = make()
    part = cert[1:3]
    assert part.prediction.tolist() == [ABSTAIN, 1] and part.radius.tolist() == [0.0, 0.2]
    assert part.score.tolist() == [0.4, 0.7] and part.sigma == 0.25 and part.alpha == 0.01
    masked = cert[cert.radius > 0]
    assert masked.prediction.tolist() == [3, 1] and masked.score.tolist() == [0.9, 0.7]
    assert cert[torch.tensor([3, 0])].prediction.tolist() == [2, 3]
    with pytest.raises(IndexError, match="1-D subset"):
        cert[0]


def test_cat_joins_batches_of_one_method():
    cert = make()
    joined = Certificate.cat([cert[:2], cert[2:]])
    assert torch.equal(joined.prediction, cert.prediction) and torch.equal(joined.radius, cert.radius)
    assert torch.equal(joined.score, cert.score) and joined.sigma == 0.25
    with pytest.raises(ValueError, match="one method with the same unit, alpha and statistics"):
        Certificate.cat([cert, make(alpha=0.05)])
    with pytest.raises(ValueError, match="one method"):
        Certificate.cat([cert, make(unit=UNITS["linf"])])
    with pytest.raises(TypeError, match="non-empty sequence of Certificate"):
        Certificate.cat([])


def test_tensors_are_kept_on_the_cpu():
    cert = Certificate(torch.tensor([1]), torch.tensor([0.5]), UNITS["l2"], "demo",
                       stats={"t": torch.ones(1, requires_grad=True)})
    assert cert.prediction.device.type == "cpu" and not cert.t.requires_grad


def test_validation_errors_name_the_problem():
    l2 = UNITS["l2"]
    with pytest.raises(TypeError, match="prediction must be an int64 tensor"):
        Certificate(torch.tensor([1.0]), torch.tensor([0.5]), l2, "demo")
    with pytest.raises(TypeError, match="prediction must be an int64 tensor"):
        Certificate(torch.tensor([[1]]), torch.tensor([[0.5]]), l2, "demo")
    with pytest.raises(ValueError, match="radius must be a tensor of the shape of prediction"):
        Certificate(torch.tensor([1, 2]), torch.tensor([0.5]), l2, "demo")
    with pytest.raises(ValueError, match="radius must be >= 0"):
        Certificate(torch.tensor([1]), torch.tensor([-0.1]), l2, "demo")
    with pytest.raises(ValueError, match="radius contains NaN"):
        Certificate(torch.tensor([1]), torch.tensor([float("nan")]), l2, "demo")
    with pytest.raises(TypeError, match="radius must hold numbers"):
        Certificate(torch.tensor([1]), torch.tensor([True]), l2, "demo")
    with pytest.raises(ValueError, match="radius must be 0 where the method abstains"):
        Certificate(torch.tensor([ABSTAIN]), torch.tensor([0.3]), l2, "demo")
    with pytest.raises(ValueError, match="class indices >= 0 or ABSTAIN"):
        Certificate(torch.tensor([-2]), torch.tensor([0.0]), l2, "demo")
    with pytest.raises(ValueError, match="unit must be one of"):
        Certificate(torch.tensor([1]), torch.tensor([0.5]), "metres", "demo")
    with pytest.raises(TypeError, match="method must be a non-empty string"):
        Certificate(torch.tensor([1]), torch.tensor([0.5]), l2, "")
    with pytest.raises(ValueError, match=r"alpha must be a probability in \(0, 1\)"):
        Certificate(torch.tensor([1]), torch.tensor([0.5]), l2, "demo", alpha=1.5)
    with pytest.raises(TypeError, match="stats must be a mapping"):
        Certificate(torch.tensor([1]), torch.tensor([0.5]), l2, "demo", stats=[1])
    with pytest.raises(ValueError, match="must not reuse the names"):
        Certificate(torch.tensor([1]), torch.tensor([0.5]), l2, "demo", stats={"radius": 1})
    with pytest.raises(ValueError, match="correct must have the shape of radii"):
        certified_accuracy([0.1, 0.2], [True])
    with pytest.raises(TypeError, match="correct must be a boolean array"):
        certified_accuracy([0.1], [1])
    with pytest.raises(ValueError, match="at must hold radii >= 0"):
        certified_accuracy([0.1], [True], at=[-1])
    with pytest.raises(ValueError, match="y has 2 labels but the batch has 4 inputs"):
        make().correct(torch.tensor([1, 2]))


def test_plot_draws_one_curve_per_setting_in_the_certificates_unit():
    import matplotlib

    matplotlib.use("Agg")
    radii, correct = np.array([0.1, 0.5, 1.0]), np.array([True, True, False])
    ax = plot_certified_accuracy({"a": (radii, correct), "b": (radii, ~correct)},
                                 reference={"paper": ([0.25, 0.5], [0.6, 0.43])})
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b", "paper"]
    assert ax.get_lines()[0].get_ydata()[0] == pytest.approx(2 / 3)
    cert = make()
    ax = plot_certified_accuracy({"cert": (cert, torch.tensor([3, 0, 1, 0]))})
    assert "L2 pixels" in ax.get_xlabel() and ax.get_lines()[0].get_ydata()[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="different units"):
        plot_certified_accuracy({"a": (cert, torch.zeros(4, dtype=torch.long)),
                                 "b": (make(unit=UNITS["linf"]), torch.zeros(4, dtype=torch.long))})
