import math

import pytest
import torch

import robustlab as rl


def test_digits_are_float_images_in_the_unit_interval(digits):
    train, test = digits
    for split in (train, test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 8, 8)
        assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
    assert train.x.shape[0] + test.x.shape[0] == 1797
    assert test.x.shape[0] == rl.data.DIGITS_TEST_SIZE


def test_digits_split_is_fixed_stratified_and_disjoint(digits):
    train, test = digits
    again_train, again_test = rl.data.load("digits")
    assert torch.equal(train.x, again_train.x) and torch.equal(test.y, again_test.y)
    counts = torch.bincount(test.y, minlength=10)
    assert int(counts.min()) >= 34 and int(counts.max()) <= 38  # about 36 per class
    rows_train = {tuple(r) for r in train.x.flatten(1).tolist()}
    overlap = sum(tuple(r) in rows_train for r in test.x.flatten(1).tolist())
    assert overlap <= 5  # a handful of identical images exist in the raw data set


def test_digits_normalization_statistics_match_the_training_split(digits):
    train, _ = digits
    meta = rl.data.info("digits")
    assert meta.mean[0] == pytest.approx(float(train.x.mean()), abs=1e-3)
    assert meta.std[0] == pytest.approx(float(train.x.std()), abs=1e-3)


def test_default_data_set_follows_the_profile(monkeypatch, fake_data_root):
    assert rl.data.info().name == "digits"
    monkeypatch.setenv("ROBUSTLAB_PROFILE", "full")
    monkeypatch.setenv("ROBUSTLAB_DATA", str(fake_data_root))
    train, test = rl.data.load()
    assert train.x.shape[1:] == (1, 28, 28)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_family_loads_through_torchvision(fake_data_root, name, folder):
    train, test = rl.data.load(name, root=fake_data_root, download=False)
    assert train.x.shape == (600, 1, 28, 28) and test.x.shape == (200, 1, 28, 28)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert 0.0 <= float(train.x.min()) and float(train.x.max()) <= 1.0
    assert float(train.x.max()) > 0.9  # bytes were scaled by 1/255, not left as 0..255 or squashed
    assert (fake_data_root / folder / "raw").is_dir()


def test_cifar10_loads_through_torchvision(fake_data_root, skip_cifar_md5):
    train, test = rl.data.load("cifar10", root=fake_data_root, download=False)
    assert train.x.shape == (500, 3, 32, 32) and test.x.shape == (100, 3, 32, 32)
    assert 0.0 <= float(train.x.min()) and float(train.x.max()) <= 1.0
    assert set(train.y.unique().tolist()) <= set(range(10))


def test_cifar10_channels_are_not_scrambled(fake_data_root, skip_cifar_md5):
    # the pickles store (N, 3*32*32) row-major per channel; torchvision makes (N, 32, 32, 3)
    import pickle

    with open(fake_data_root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f)["data"].reshape(-1, 3, 32, 32)
    _, test = rl.data.load("cifar10", root=fake_data_root, download=False)
    assert torch.allclose(test.x, torch.from_numpy(raw).float() / 255)


def test_missing_files_give_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="could not load 'mnist' from root"):
        rl.data.load("mnist", root=tmp_path, download=False)


def test_smoke_setting_subsamples(monkeypatch, fake_data_root):
    monkeypatch.setenv("ROBUSTLAB_SMOKE", "1")
    train, test = rl.data.load("mnist", root=fake_data_root, download=False)
    assert train.x.shape[0] == rl.data.SMOKE_TRAIN  # 600 cut to 512
    assert test.x.shape[0] == 200  # fewer than SMOKE_TEST: all kept


def test_unknown_data_set_is_refused_by_name():
    with pytest.raises(ValueError, match="name must be one of"):
        rl.data.load("imagenet")
    with pytest.raises(ValueError, match="name must be one of"):
        rl.data.info("svhn")
    with pytest.raises(TypeError, match="download"):
        rl.data.load("digits", download="yes")


def test_subset_is_seeded_and_bounded(digits):
    train, _ = digits
    a = rl.data.subset(train, 50, seed=3)
    b = rl.data.subset(train, 50, seed=3)
    assert torch.equal(a.x, b.x) and a.x.shape[0] == 50
    assert rl.data.subset(train, 10**6).x.shape[0] == train.x.shape[0]
    with pytest.raises(ValueError, match="n must be"):
        rl.data.subset(train, 0)


def test_gaussian_mixture_has_the_stated_means():
    x, y = rl.data.gaussian_mixture(20000, 4, mu_norm=2.0, sigma=0.5, seed=1)
    theta = torch.full((4,), 2.0 / math.sqrt(4))
    assert torch.allclose(x[y == 1].mean(0), theta, atol=0.03)
    assert torch.allclose(x[y == 0].mean(0), -theta, atol=0.03)
    assert float(x[y == 1].std(0).mean()) == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="sigma"):
        rl.data.gaussian_mixture(10, 2, sigma=0.0)
    with pytest.raises(ValueError, match="mu_norm"):
        rl.data.gaussian_mixture(10, 2, mu_norm=-1.0)


def test_linearly_separable_points_keep_the_margin():
    x, y = rl.data.linearly_separable(500, margin=0.2, seed=4)
    assert x.shape == (500, 2) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert 0 < int(y.sum()) < 500
    # a linear classifier separates them perfectly: check with the least-squares direction
    from sklearn.svm import LinearSVC

    clf = LinearSVC(C=100.0, max_iter=20000).fit(x.numpy(), y.numpy())
    assert clf.score(x.numpy(), y.numpy()) == 1.0
    with pytest.raises(ValueError, match="margin"):
        rl.data.linearly_separable(10, margin=0.7)


def test_concentric_spheres_lie_on_their_radii():
    x, y = rl.data.concentric_spheres(400, 50, r_inner=1.0, r_outer=1.3, seed=0)
    r = x.norm(dim=1)
    assert torch.allclose(r[y == 0], torch.ones(1), atol=1e-5)
    assert torch.allclose(r[y == 1], torch.full((1,), 1.3), atol=1e-5)
    assert int(y.sum()) == 200
    with pytest.raises(ValueError, match="r_outer"):
        rl.data.concentric_spheres(10, 3, r_inner=2.0, r_outer=1.0)


def test_shift_moves_images_and_fills_with_black():
    x = torch.arange(1, 10, dtype=torch.float32).view(1, 1, 3, 3) / 10
    down = rl.data.shift(x, dy=1)
    assert torch.equal(down[0, 0, 0], torch.zeros(3)) and torch.equal(down[0, 0, 1:], x[0, 0, :2])
    left = rl.data.shift(x, dx=-2)
    assert torch.equal(left[0, 0, :, 0], x[0, 0, :, 2]) and float(left[0, 0, :, 1:].abs().sum()) == 0
    assert torch.equal(rl.data.shift(x), x)
    assert torch.equal(rl.data.shift(rl.data.shift(x, 1, 1), -1, -1)[..., :2, :2], x[..., :2, :2])
    with pytest.raises(ValueError, match="dy must be smaller than the image"):
        rl.data.shift(x, dy=3)
    with pytest.raises(TypeError, match="dx must be an integer"):
        rl.data.shift(x, dx=0.5)
    with pytest.raises(ValueError, match=r"x must be a batch of images of shape \(B, C, H, W\)"):
        rl.data.shift(torch.rand(3, 9))
