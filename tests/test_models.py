import pytest
import torch

import robustlab as rl


def test_normalize_standardizes_each_channel():
    norm = rl.models.Normalize((0.5, 0.25), (0.5, 0.25))
    x = torch.tensor([0.5, 0.25]).view(1, 2, 1, 1).expand(3, 2, 4, 4)
    assert torch.allclose(norm(x), torch.zeros(3, 2, 4, 4))
    assert torch.allclose(norm(torch.ones(1, 2)), torch.tensor([[1.0, 3.0]]))
    with pytest.raises(ValueError, match="std must be > 0"):
        rl.models.Normalize((0.0,), (0.0,))
    with pytest.raises(ValueError, match="same length"):
        rl.models.Normalize((0.0, 0.1), (1.0,))


@pytest.mark.parametrize("arch", rl.models.ARCHS)
@pytest.mark.parametrize("dataset", ["digits", "mnist", "cifar10"])
def test_every_architecture_maps_pixels_to_logits(arch, dataset):
    model = rl.models.build(arch, dataset, width=4)
    assert isinstance(next(iter(model.modules())), torch.nn.Module)
    first = model[0] if isinstance(model, torch.nn.Sequential) else model.normalize
    assert isinstance(first, rl.models.Normalize)  # normalization lives inside the model
    meta = rl.data.info(dataset)
    out = model.eval()(torch.rand(3, *meta.shape))
    assert out.shape == (3, meta.n_classes)


def test_build_is_seeded_and_follows_the_profile(monkeypatch):
    a, b = rl.models.build(seed=1), rl.models.build(seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert isinstance(a, rl.models.SmallCNN)
    monkeypatch.setenv("ROBUSTLAB_PROFILE", "full")
    full = rl.models.build()
    assert full(torch.rand(1, 1, 28, 28)).shape == (1, 10)
    assert isinstance(rl.models.build(dataset="cifar10", width=4), rl.models.ResNet)


def test_build_refuses_unknown_arguments_by_name():
    with pytest.raises(ValueError, match="arch must be one of"):
        rl.models.build("vit", "digits")
    with pytest.raises(ValueError, match="name must be one of"):
        rl.models.build("cnn", "imagenet")
    with pytest.raises(ValueError, match="width"):
        rl.models.build("cnn", "digits", width=0)


def test_devices():
    assert rl.models.best_device().type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        assert rl.models.best_device().type in ("cpu", "mps")
    model = rl.models.build("mlp", "digits", width=1)
    assert rl.models.device_of(model) == torch.device("cpu")
    assert rl.models.device_of(torch.nn.ReLU()) == torch.device("cpu")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        rl.models.device_of("model")
