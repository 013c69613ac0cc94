"""The on-disk cache of trained models and ensembles: content-addressed, written atomically.

An artefact is stored under a *key* made of its full configuration: a JSON-able dict of
every setting (sorted, so the order of the entries does not matter) and the bytes,
shapes and dtypes of the tensors it depends on (initial weights, training data). The
same configuration always gives the same key; any change of a setting or of one byte of
the data gives another. Files live in ``cache_dir()/KIND/KEY.pt`` (KIND is ``"models"``
for :func:`robustlab.train.fit`, ``"ensembles"`` for the partition ensembles of
:mod:`robustlab.poisoning`), where ``cache_dir()`` is :func:`robustlab.config.cache_dir`
(``ROBUSTLAB_CACHE``, default ``~/.cache/robustlab``).

:func:`store` writes to a temporary file in the same folder and renames it over the
target with :func:`os.replace`, which is atomic: a reader sees the old file, the new
one, or none, never a half-written one (two processes warming the same entry both
succeed, the last rename wins). :func:`load` returns ``None`` for a missing entry, and
also for an unreadable one (a file truncated by something else), which is then trained
again and overwritten.

Examples
--------
>>> import torch
>>> a = key({"epochs": 3, "lr": 0.1}, torch.arange(4))
>>> a == key({"lr": 0.1, "epochs": 3}, torch.arange(4))
True
>>> a == key({"lr": 0.1, "epochs": 3}, torch.arange(4) + 1)
False
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch

from . import config

__all__ = ["KEY_LENGTH", "hash_tensor", "fingerprint", "key", "entry", "result_entry", "load", "store"]

KEY_LENGTH = 32  # hex digits of the SHA-256 kept in a file name


def hash_tensor(h, t: torch.Tensor) -> None:
    """Feed a tensor's shape, dtype and bytes into the hash object ``h`` (device-independent)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be a torch.Tensor, got {type(t).__name__}")
    t = t.detach().cpu().contiguous()
    h.update(str((tuple(t.shape), str(t.dtype))).encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def _digest(settings: dict, tensors):
    if not isinstance(settings, dict):
        raise TypeError(f"settings must be a dict of the configuration, got {type(settings).__name__}")
    try:
        text = json.dumps(settings, sort_keys=True)
    except TypeError as err:
        raise TypeError(f"settings must be JSON-serializable (numbers, strings, lists, dicts): {err}") from None
    h = hashlib.sha256(text.encode())
    for t in tensors:
        hash_tensor(h, t)
    return h


def fingerprint(*tensors: torch.Tensor, length: int = 12) -> str:
    """A short hex digest of tensors' shapes, dtypes and bytes (``length`` hex digits)."""
    h = hashlib.sha256()
    for t in tensors:
        hash_tensor(h, t)
    return h.hexdigest()[:length]


def key(settings: dict, *tensors: torch.Tensor) -> str:
    """The cache key of a configuration: SHA-256 of the sorted JSON of ``settings``, then of each tensor.

    ``settings`` must be JSON-serializable; ``tensors`` are hashed in order, on the CPU,
    with their shapes and dtypes (a float32 and a float64 copy of the same data differ).
    """
    return _digest(settings, tensors).hexdigest()[:KEY_LENGTH]


def entry(kind: str, settings: dict, *tensors: torch.Tensor) -> Path:
    """The file of a configuration: ``cache_dir()/kind/key(settings, *tensors).pt``."""
    if not isinstance(kind, str) or not kind or "/" in kind or kind.startswith("."):
        raise ValueError(f"kind must be a plain folder name such as 'models', got {kind!r}")
    return config.cache_dir() / kind / f"{key(settings, *tensors)}.pt"


def result_entry(what: str, settings: dict, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                 *, format: int = 1) -> Path:
    """The file of a computation's result on ``model`` and the data ``(x, y)`` (an evaluation, a
    table of distances): ``curves/`` under a key of ``what``, ``format``, the model's ``repr``
    and weights, the data and ``settings``. A model whose behaviour depends on attributes its
    ``repr`` does not show would share a key with its twin: show them in the ``repr``."""
    tensors = [*model.state_dict().values(), x.detach().cpu(), y.detach().cpu()]
    return entry("curves", {"what": what, "format": format, "model": repr(model), **settings}, *tensors)


def load(path, *, map_location=None):
    """The object stored at ``path``, or ``None`` when there is none or it cannot be read.

    Loads with ``torch.load(..., weights_only=True)`` (tensors, numbers, strings, lists,
    dicts), tensors onto ``map_location``. An unreadable file warns and counts as missing.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        warnings.warn(f"ignoring the unreadable cache file {path} ({type(err).__name__}: {err}); it will be rebuilt",
                      RuntimeWarning, stacklevel=2)
        return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def store(path, obj) -> Path:
    """Write ``obj`` to ``path`` atomically (a temporary file in the same folder, then :func:`os.replace`).

    Tensors are saved as they are: move them to the CPU first so that the file loads on
    any machine. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # the permissions a plain open() would give, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
