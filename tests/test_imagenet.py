"""Natural images for chapter 1: scikit-learn's photographs and torchvision's ImageNet classifiers.

Everything here runs offline: the classifier is built with ``pretrained=False`` (the same
architecture, random weights), and a download attempt fails the test.
"""

import pytest
import torch
import torchvision

import robustlab as rl


@pytest.fixture
def no_download(monkeypatch):
    """Make any attempt by torchvision to fetch weights fail loudly."""
    calls = []

    def refuse(url, *args, **kwargs):
        calls.append(url)
        raise RuntimeError(f"download attempted: {url}")

    import torchvision.models._api as weights_api

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(weights_api, "load_state_dict_from_url", refuse)  # what WeightsEnum.get_state_dict calls
    return calls


def test_sample_photographs_shape_range_and_names():
    photos = rl.data.sample_photographs()
    assert photos.names == ("china", "flower")
    assert tuple(photos.x.shape) == (2, 3, 224, 224) and photos.x.dtype == torch.float32
    assert float(photos.x.min()) >= 0.0 and float(photos.x.max()) <= 1.0
    # two different, non-constant colour images
    assert float((photos.x[0] - photos.x[1]).abs().mean()) > 0.05
    assert all(float(img.std()) > 0.05 for img in photos.x)


def test_sample_photographs_is_the_central_square_of_the_file():
    from sklearn.datasets import load_sample_images

    raw = torch.from_numpy(load_sample_images().images[0]).permute(2, 0, 1).float() / 255.0  # (3, 427, 640)
    h, w = raw.shape[1:]
    left = (w - h) // 2
    small = rl.data.sample_photographs(h).x[0]  # resizing a square to its own size changes nothing
    assert torch.allclose(small, raw[:, :, left:left + h], atol=1e-6)


@pytest.mark.parametrize("size", [0, -3, 2.5, "224"])
def test_sample_photographs_rejects_bad_size(size):
    with pytest.raises((ValueError, TypeError), match="size"):
        rl.data.sample_photographs(size)


def test_imagenet_classes_from_the_weights_metadata():
    names = rl.models.imagenet_classes()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names == tuple(torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"])
    with pytest.raises(ValueError, match="arch"):
        rl.models.imagenet_classes("vgg")


def test_imagenet_classifier_offline_has_normalize_first(no_download):
    model = rl.models.imagenet_classifier(pretrained=False)
    assert not no_download
    assert not model.training
    norm, net = model
    assert isinstance(norm, rl.models.Normalize) and isinstance(net, torchvision.models.ResNet)
    preprocess = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    assert torch.allclose(norm.mean, torch.tensor(preprocess.mean))
    assert torch.allclose(norm.std, torch.tensor(preprocess.std))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        manual = net((x - norm.mean.view(1, 3, 1, 1)) / norm.std.view(1, 3, 1, 1))
        assert torch.allclose(model(x), manual, atol=1e-5)
    assert model(x).shape == (2, 1000)


def test_imagenet_classifier_pretrained_asks_for_the_weights(no_download):
    with pytest.raises(RuntimeError, match="download attempted"):
        rl.models.imagenet_classifier(pretrained=True)
    assert no_download == [torchvision.models.ResNet18_Weights.DEFAULT.url]


def test_imagenet_classifier_rejects_bad_arguments():
    with pytest.raises(ValueError, match="arch"):
        rl.models.imagenet_classifier("alexnet", pretrained=False)
    with pytest.raises(TypeError, match="pretrained"):
        rl.models.imagenet_classifier(pretrained="yes")


def test_chapter_code_path_attacks_the_photographs_offline(no_download):
    """What chapter 1 runs under the full profile, with random weights and small images."""
    torch.manual_seed(0)
    model = rl.models.imagenet_classifier(pretrained=False)
    classes = rl.models.imagenet_classes()
    x = rl.data.sample_photographs(64).x
    y = rl.train.predict(model, x)  # attack the model's own clean answers
    eps = 2 / 255
    x_fgsm = rl.attacks.fgsm(model, x, y, eps=eps)
    x_pgd = rl.attacks.pgd(model, x, y, eps=eps, steps=3, seed=0)
    for x_adv in (x_fgsm, x_pgd):
        assert x_adv.shape == x.shape
        assert float((x_adv - x).abs().max()) <= eps + 1e-6
        assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    top = rl.train.predict_proba(model, torch.cat([x, x_pgd])).topk(5, dim=1)
    assert top.indices.shape == (4, 5)
    assert [classes[int(i)] for i in top.indices[0]][0] == classes[int(y[0])]
    # the PGD iterate raises the loss of the clean answer on both photographs
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert bool((ce(model(x_pgd), y, reduction="none") > ce(model(x), y, reduction="none")).all())
    assert not no_download
