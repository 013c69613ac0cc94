import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

import robustlab as rl  # noqa: E402


def test_images_draws_one_panel_per_image_with_titles():
    x = torch.rand(5, 1, 8, 8)
    fig = rl.plot.images(x, titles=list("abcde"), ncols=3, suptitle="digits")
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 5 and len(fig.axes) == 6
    assert [ax.get_title() for ax in shown] == list("abcde")
    assert shown[0].images[0].get_array().shape == (8, 8)


def test_images_shows_colour_images_as_rgb():
    fig = rl.plot.images(torch.rand(2, 3, 4, 4))
    assert fig.axes[0].images[0].get_array().shape == (4, 4, 3)


def test_adversarial_examples_shows_clean_perturbation_and_adversarial_rows():
    x = torch.rand(4, 1, 8, 8) * 0.8
    x_adv = x + 0.1
    fig = rl.plot.adversarial_examples(x, x_adv, [1, 2, 3, 4], [7, 2, 3, 1],
                                       confidence=torch.full((4,), 0.9), confidence_adv=torch.full((4,), 0.6))
    titles = [ax.get_title() for ax in fig.axes]
    assert "pred 1 (90%)" in titles and "pred 7 (60%)" in titles
    assert sum(t.startswith("perturbation") for t in titles) == 4


def test_plot_arguments_are_checked():
    with pytest.raises(ValueError, match="titles must have one entry per image"):
        rl.plot.images(torch.rand(3, 1, 8, 8), titles=["a"])
    with pytest.raises(ValueError, match="x must be batch-first"):
        rl.plot.images(torch.rand(8, 8))
    with pytest.raises(ValueError, match="x and x_adv must have the same shape"):
        rl.plot.adversarial_examples(torch.rand(2, 1, 8, 8), torch.rand(3, 1, 8, 8), [0, 0], [0, 0])
    with pytest.raises(ValueError, match=r"x_adv must have values in \[0, 1\]"):
        rl.plot.adversarial_examples(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8) + 2, [0, 0], [0, 0])
