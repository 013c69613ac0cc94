import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from fakedata import write_cifar10, write_mnist  # noqa: E402

import robustlab as rl  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory, monkeypatch):
    """Every test starts from the quick profile, a private model cache and no progress bars."""
    for var in ("ROBUSTLAB_PROFILE", "ROBUSTLAB_SMOKE", "ROBUSTLAB_DATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(tmp_path_factory.getbasetemp() / "rlcache"))
    monkeypatch.setenv("ROBUSTLAB_PROGRESS", "0")
    rl.config._state.update(profile=None, cache_dir=None, data_dir=None, progress=None)
    yield
    rl.config._state.update(profile=None, cache_dir=None, data_dir=None, progress=None)


@pytest.fixture(autouse=True)
def _one_thread():
    """The test models are tiny: one thread is as fast as two, and it does not stall when
    another process shares the machine's two cores (notebook kernels run in their own
    processes and keep torch's default)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _close_figures():
    """Close the figures a test drew (pyplot keeps every open figure alive otherwise)."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture(scope="session")
def fake_data_root(tmp_path_factory):
    """A torchvision data root holding small MNIST, Fashion-MNIST and CIFAR-10 files."""
    root = tmp_path_factory.mktemp("tvdata")
    write_mnist(root)
    write_mnist(root, folder="FashionMNIST")
    write_cifar10(root)
    return root


@pytest.fixture(scope="session")
def built_book():
    """The book's HTML in _build/html, built (warnings as errors) if it is not there yet."""
    html = REPO / "_build" / "html"
    if not (html / "index.html").exists():
        cmd = [shutil.which("jupyter-book") or "jupyter-book", "build", str(REPO), "-W", "-n", "--keep-going"]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return html


@pytest.fixture
def skip_cifar_md5(monkeypatch):
    """Let torchvision accept the fake CIFAR-10 files: only the MD5 comparison is replaced."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return rl.models.build("mlp", "digits", width=2)


@pytest.fixture(scope="session")
def digits():
    return rl.data.load("digits")
