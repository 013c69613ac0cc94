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


def test_dtype_of_reads_the_floating_parameters():
    model = rl.models.build("mlp", "digits", width=1)
    assert rl.models.dtype_of(model) == torch.float32
    assert rl.models.dtype_of(model.double()) == torch.float64
    assert rl.models.dtype_of(torch.nn.ReLU()) == torch.float32
    emb = torch.nn.Embedding(3, 2).to(torch.float16)
    assert rl.models.dtype_of(emb) == torch.float16
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        rl.models.dtype_of(None)


def test_eval_mode_restores_every_submodule_also_on_error():
    model = rl.models.build("resnet", "cifar10", width=2).train()
    bn = model.stem[1]
    bn.eval()  # a mixed state must come back exactly
    before = [m.training for m in model.modules()]
    with rl.models.eval_mode(model) as m:
        assert m is model
        assert not any(mod.training for mod in model.modules())
    assert [m.training for m in model.modules()] == before
    with pytest.raises(RuntimeError, match="boom"):
        with rl.models.eval_mode(model):
            raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == before
    model.eval()
    with rl.models.eval_mode(model):
        pass
    assert not model.training


def test_to_model_and_to_input_state_where_tensors_live():
    model = rl.models.build("mlp", "digits", width=1).double()
    x, y = rl.models.to_model(model, torch.rand(2, 1, 8, 8), torch.tensor([1, 2]))
    assert x.dtype == torch.float64 and y.dtype == torch.int64
    assert rl.models.to_model(model, torch.rand(2)).dtype == torch.float64  # one tensor: no tuple
    out = rl.models.to_input(torch.zeros(2), torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.int64))
    assert [t.device.type for t in out] == ["cpu", "cpu"] and out[1].dtype == torch.int64
    with pytest.raises(TypeError, match=r"tensors\[1\]"):
        rl.models.to_model(model, x, [1, 2])
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        rl.models.to_input([0.0], x)


@pytest.mark.parametrize("arch,dataset,width", [("mlp", "digits", 1), ("cnn", "digits", 16), ("resnet", "cifar10", 2)])
def test_split_features_head_recomposes_the_model(arch, dataset, width):
    model = rl.models.build(arch, dataset, width=width).eval()
    g, head = rl.models.split_features_head(model)
    x = torch.rand(3, *rl.data.info(dataset).shape)
    assert torch.allclose(head(g(x)), model(x), atol=1e-6)
    lin = head if isinstance(head, torch.nn.Linear) else head[-1]
    assert isinstance(lin, torch.nn.Linear) and g(x).shape == (3, lin.in_features)
    assert any(p is q for p in g.parameters() for q in model.parameters())  # shared, not copied
    with pytest.raises(ValueError, match="linear layer"):
        rl.models.split_features_head(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    with pytest.raises(TypeError, match="nn.Sequential or a robustlab ResNet"):
        rl.models.split_features_head(torch.nn.ReLU())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_lp_distance_mixes_devices_and_returns_on_the_first_inputs_device():
    x = torch.rand(4, 1, 8, 8)
    d = rl.norms.lp_distance(x.cuda(), x + 0.1, "linf")
    assert d.device.type == "cuda" and torch.allclose(d.cpu(), torch.full((4,), 0.1), atol=1e-6)
