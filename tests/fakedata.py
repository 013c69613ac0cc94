"""Small data sets written in torchvision's own on-disk formats.

MNIST, Fashion-MNIST and CIFAR-10 cannot be downloaded in the test environment, so the
tests write small stand-ins in exactly the layout torchvision reads: IDX files under
``<root>/MNIST/raw`` (and ``FashionMNIST/raw``), pickled batches under
``<root>/cifar-10-batches-py``. The images are scikit-learn's digits scaled up to the
real sizes, so models trained on them learn something.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _upscaled_digits(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(bunch.target), size=n, replace=n > len(bunch.target))
    x = torch.from_numpy(bunch.images[idx].astype(np.float32) / 16.0)[:, None]
    inner = size - 2 * (size // 7)
    x = F.interpolate(x, size=(inner, inner), mode="bilinear", align_corners=False)
    pad = (size - inner) // 2
    x = F.pad(x, (pad, size - inner - pad, pad, size - inner - pad))
    images = (x[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return images, bunch.target[idx].astype(np.uint8)


def _write_idx(path: Path, array: np.ndarray) -> None:
    type_code = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, type_code, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(root, *, n_train: int = 600, n_test: int = 200, folder: str = "MNIST") -> Path:
    """Write IDX files as torchvision's MNIST (or ``folder="FashionMNIST"``) expects them."""
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = _upscaled_digits(n, 28, seed)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return Path(root)


def write_cifar10(root, *, n_per_batch: int = 100, n_test: int = 100) -> Path:
    """Write the pickled batches of torchvision's CIFAR-10 layout (five training batches).

    torchvision checks these files against the real archive's MD5 sums; tests that load
    them replace that check (and only that check) by an existence test.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)

    def batch(n, seed):
        gray, labels = _upscaled_digits(n, 32, seed)
        tint = rng.uniform(0.6, 1.0, size=(n, 3, 1, 1))
        rgb = (gray[:, None].astype(np.float64) * tint).astype(np.uint8)  # (n, 3, 32, 32)
        return {"data": rgb.reshape(n, 3 * 32 * 32), "labels": labels.astype(int).tolist(), "batch_label": "fake"}

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(n_per_batch, 10 + i), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(n_test, 20), f)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": n_per_batch, "num_vis": 3072}, f)
    return Path(root)
