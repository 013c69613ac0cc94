import os

import pytest
import torch

import robustlab as rl
from robustlab import cache


@pytest.fixture
def cache_dir(tmp_path):
    return rl.config.set_cache_dir(tmp_path)  # conftest restores the setting after the test


def test_same_configuration_same_key_in_any_order():
    x = torch.arange(12.0).view(3, 4)
    assert cache.key({"a": 1, "b": [1, 2]}, x) == cache.key({"b": [1, 2], "a": 1}, x.clone())
    assert len(cache.key({}, x)) == cache.KEY_LENGTH


@pytest.mark.parametrize("change", ["setting", "value", "one byte", "shape", "dtype", "order", "extra tensor"])
def test_any_change_of_data_or_setting_gives_a_new_key(change):
    x, y = torch.rand(5, 1, 2, 2, generator=torch.Generator().manual_seed(0)), torch.arange(5)
    settings = {"lr": 0.1, "epochs": 3}
    base = cache.key(settings, x, y)
    x2 = x.clone()
    x2.view(-1).view(torch.uint8)[7] ^= 1  # flip one bit of one float
    changed = {
        "setting": lambda: cache.key({**settings, "seed": 0}, x, y),
        "value": lambda: cache.key({**settings, "lr": 0.10000001}, x, y),
        "one byte": lambda: cache.key(settings, x2, y),
        "shape": lambda: cache.key(settings, x.view(5, 4), y),
        "dtype": lambda: cache.key(settings, x.double(), y),
        "order": lambda: cache.key(settings, y, x),
        "extra tensor": lambda: cache.key(settings, x, y, torch.zeros(0)),
    }[change]()
    assert changed != base


def test_entry_is_a_file_under_the_kind(cache_dir):
    path = cache.entry("models", {"a": 1}, torch.zeros(2))
    assert path.parent == cache_dir / "models" and path.name == cache.key({"a": 1}, torch.zeros(2)) + ".pt"
    with pytest.raises(ValueError, match="kind"):
        cache.entry("../elsewhere", {})
    with pytest.raises(TypeError, match="settings must be a dict"):
        cache.key([1, 2])
    with pytest.raises(TypeError, match="JSON-serializable"):
        cache.key({"f": object()})


def test_store_then_load_round_trips(cache_dir):
    path = cache.entry("models", {"a": 1})
    assert cache.load(path) is None
    blob = {"state_dict": {"w": torch.arange(3.0)}, "history": {"loss": [0.5]}}
    assert cache.store(path, blob) == path
    back = cache.load(path)
    assert torch.equal(back["state_dict"]["w"], blob["state_dict"]["w"]) and back["history"] == blob["history"]
    assert os.listdir(path.parent) == [path.name], "no temporary file is left behind"
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask, "readable as a file written by open()"


class _Boom:
    """Pickling it fails half-way through torch.save, after some bytes were written."""

    def __reduce__(self):
        raise RuntimeError("disk full")


def test_a_write_that_fails_half_way_leaves_nothing_that_loads(cache_dir):
    path = cache.entry("models", {"a": 2})
    with pytest.raises(RuntimeError, match="disk full"):
        cache.store(path, {"big": torch.zeros(10_000), "then": _Boom()})
    assert not path.exists() and os.listdir(path.parent) == []
    assert cache.load(path) is None
    # an existing entry survives a failed overwrite unchanged
    cache.store(path, {"v": torch.ones(2)})
    with pytest.raises(RuntimeError):
        cache.store(path, {"v": torch.zeros(2), "then": _Boom()})
    assert torch.equal(cache.load(path)["v"], torch.ones(2))
    assert os.listdir(path.parent) == [path.name]


def test_a_truncated_file_never_loads(cache_dir):
    path = cache.entry("models", {"a": 3})
    cache.store(path, {"w": torch.arange(1000.0)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # what a non-atomic writer killed mid-way leaves
    with pytest.warns(RuntimeWarning, match="unreadable cache file"):
        assert cache.load(path) is None


def test_fit_and_ensembles_go_through_the_cache(cache_dir, digits):
    train, test = digits
    model = rl.models.build("mlp", "digits", width=1)
    train = rl.data.subset(train, 64)
    rl.train.fit(model, train, epochs=1, progress=False, cache=True)
    files = list((cache_dir / "models").glob("*.pt"))
    assert len(files) == 1
    blob = cache.load(files[0])
    assert set(blob) == {"state_dict", "history", "settings"}
    ens = rl.poisoning.train_dpa(train, 2, width=1, epochs=1, device="cpu", progress=False, cache=True)
    files = list((cache_dir / "ensembles").glob("*.pt"))
    assert len(files) == 1 and set(cache.load(files[0])) == {"params", "buffers", "history"}
    again = rl.poisoning.train_dpa(train, 2, width=1, epochs=1, device="cpu", progress=False, cache=True)
    x = test.x[:8]
    assert torch.equal(ens.certify(x).counts, again.certify(x).counts)


def test_fingerprint_is_short_and_content_addressed():
    a = cache.fingerprint(torch.zeros(3), torch.ones(2))
    assert len(a) == 12 and a == cache.fingerprint(torch.zeros(3), torch.ones(2))
    assert a != cache.fingerprint(torch.ones(2), torch.zeros(3))
    with pytest.raises(TypeError, match="t must be a torch.Tensor"):
        cache.fingerprint([0.0])


def test_a_result_entry_is_keyed_by_the_model_its_weights_the_data_and_the_settings(cache_dir):
    model = torch.nn.Linear(3, 2)
    x, y = torch.rand(4, 3), torch.tensor([0, 1, 0, 1])
    path = cache.result_entry("demo", {"eps": 0.1}, model, x, y)
    assert path.parent.name == "curves"
    assert path == cache.result_entry("demo", {"eps": 0.1}, model, x.clone(), y.clone())
    other_weights = torch.nn.Linear(3, 2)
    others = [cache.result_entry("other", {"eps": 0.1}, model, x, y),
              cache.result_entry("demo", {"eps": 0.2}, model, x, y),
              cache.result_entry("demo", {"eps": 0.1}, other_weights, x, y),
              cache.result_entry("demo", {"eps": 0.1}, torch.nn.Sequential(model), x, y),
              cache.result_entry("demo", {"eps": 0.1}, model, x + 1e-3, y),
              cache.result_entry("demo", {"eps": 0.1}, model, x, 1 - y),
              cache.result_entry("demo", {"eps": 0.1}, model, x, y, format=2)]
    assert len({path, *others}) == 8
