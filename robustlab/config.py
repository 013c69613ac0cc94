"""Profiles and settings: one switch moves every chapter and lab from the CPU to a GPU.

A *profile* names the data set and model size that chapters and labs use:

``"quick"`` (the default)
    scikit-learn's bundled 8x8 handwritten digits, small models, seconds per cell on a
    laptop CPU, no download.
``"full"``
    MNIST (and CIFAR-10 where a chapter asks for it) through torchvision, larger models,
    meant for a GPU (Colab, a cluster).

Choose it with the environment variable ``ROBUSTLAB_PROFILE`` before Python starts, or
with :func:`set_profile` at the top of a notebook. ``ROBUSTLAB_SMOKE=1`` shortens every
training run of a profile to a few batches; the test suite uses it to run the full
profile on small files.

Other settings, each with an environment variable and a function:

* ``ROBUSTLAB_CACHE`` / :func:`set_cache_dir`: where trained models are cached
  (default ``~/.cache/robustlab``).
* ``ROBUSTLAB_DATA`` / :func:`set_data_dir`: where torchvision data sets live
  (default ``<cache>/data``).
* ``ROBUSTLAB_PROGRESS=0`` / :func:`set_progress`: switch progress bars off.
* ``ROBUSTLAB_THREADS`` / :func:`set_threads`: how many threads torch computes with on
  the CPU (see :func:`threads`). The quick profile's models are tiny, so it defaults to
  one thread: a second thread saves nothing on them, and two processes that each run two
  threads on a 2-core machine slow down several-fold. The full profile keeps torch's
  default. The setting is applied (``torch.set_num_threads``) when robustlab is imported
  and again by :func:`set_profile` and :func:`set_threads`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from ._validate import check_choice, check_positive_int

__all__ = [
    "Profile",
    "PROFILES",
    "profile",
    "set_profile",
    "cache_dir",
    "set_cache_dir",
    "data_dir",
    "set_data_dir",
    "progress_enabled",
    "set_progress",
    "progress_bar",
    "smoke",
    "threads",
    "set_threads",
    "DEFAULT_EPS",
    "default_eps",
]


@dataclasses.dataclass(frozen=True)
class Profile:
    """The data set and model sizes chapters and labs use.

    Attributes
    ----------
    name : str
        ``"quick"`` or ``"full"``.
    dataset : str
        The default data set (see :func:`robustlab.data.load`).
    arch : str
        The default architecture for that data set (see :func:`robustlab.models.build`).
    width : int
        Base channel width of the default model.
    epochs : int
        Training epochs for the chapters' standard models.
    batch_size : int
        Training batch size.
    lr : float
        Learning rate (Adam) for the standard models.
    n_eval : int
        How many test inputs chapters attack or certify.
    smoke : bool
        Whether training is cut to a few batches (tests of the full profile on small files).
    n_certify : int
        How many test inputs randomized smoothing certifies (chapter 7).
    n_smoothing : int
        Noise samples ``n`` per input of smoothing's CERTIFY and PREDICT (chapter 7); the
        full profile's sizes keep each chapter to minutes on one GPU (see
        ``benchmarks/full_profile_workload.py``).
    """

    name: str
    dataset: str
    arch: str
    width: int
    epochs: int
    batch_size: int
    lr: float
    n_eval: int
    smoke: bool = False
    n_certify: int = 100
    n_smoothing: int = 1_000


PROFILES = {
    "quick": Profile("quick", dataset="digits", arch="cnn", width=16, epochs=30, batch_size=64, lr=2e-3, n_eval=360),
    "full": Profile("full", dataset="mnist", arch="cnn", width=32, epochs=8, batch_size=128, lr=1e-3, n_eval=1000,
                    n_certify=500, n_smoothing=10_000),
}

#: The default Linf radii (pixel units) of the course, per data set; the one table of them.
#: ``"attack"``: the threat model of attacks and adversarial training (chapters 2-4, Labs 1-2):
#: the published radii (MNIST 0.3, CIFAR-10 8/255) and 0.2 for the 8x8 digits.
#: ``"certified"``: the radius certified training (IBP) certifies (chapter 6, Lab 3): smaller,
#: because a sound bound is much looser than an attack.
DEFAULT_EPS = {
    "attack": {"digits": 0.2, "mnist": 0.3, "fashion_mnist": 0.1, "cifar10": 8 / 255},
    "certified": {"digits": 0.1, "mnist": 0.1, "fashion_mnist": 0.1, "cifar10": 2 / 255},
}


def default_eps(use: str = "attack", dataset: str | None = None) -> float:
    """The default Linf radius (pixel units) of ``use`` (a key of :data:`DEFAULT_EPS`) on ``dataset``.

    ``dataset`` defaults to the profile's data set.

    >>> default_eps("attack", "mnist"), default_eps("certified", "mnist")
    (0.3, 0.1)
    """
    check_choice(use, "use", DEFAULT_EPS)
    name = profile().dataset if dataset is None else dataset
    check_choice(name, "dataset", DEFAULT_EPS[use])
    return DEFAULT_EPS[use][name]


_state: dict = {"profile": None, "cache_dir": None, "data_dir": None, "progress": None, "threads": None}

# Torch threads per profile when neither set_threads nor ROBUSTLAB_THREADS says otherwise
# (None: torch's own default, which follows OMP_NUM_THREADS or the number of cores).
DEFAULT_THREADS = {"quick": 1, "full": None}
_TORCH_DEFAULT_THREADS = torch.get_num_threads()  # before robustlab changes it


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def smoke() -> bool:
    """Whether ``ROBUSTLAB_SMOKE`` asks for shortened training (used by the tests)."""
    return _env_flag("ROBUSTLAB_SMOKE", False)


def profile() -> Profile:
    """The active profile: set by :func:`set_profile`, else ``ROBUSTLAB_PROFILE``, else ``"quick"``.

    >>> import robustlab as rl
    >>> rl.profile().name in ("quick", "full")
    True
    """
    name = _state["profile"] or os.environ.get("ROBUSTLAB_PROFILE", "quick").strip() or "quick"
    check_choice(name, "profile (ROBUSTLAB_PROFILE)", PROFILES)
    p = PROFILES[name]
    if smoke():
        p = dataclasses.replace(p, epochs=1, n_eval=min(p.n_eval, 64), smoke=True,
                                n_certify=min(p.n_certify, 16), n_smoothing=min(p.n_smoothing, 100))
    return p


def set_profile(name: str) -> Profile:
    """Switch every later call to the profile ``name`` (``"quick"`` or ``"full"``) and return it."""
    check_choice(name, "name", PROFILES)
    _state["profile"] = name
    apply_threads()
    return profile()


def cache_dir() -> Path:
    """Directory of the trained-model cache (created on demand)."""
    path = _state["cache_dir"] or os.environ.get("ROBUSTLAB_CACHE") or Path.home() / ".cache" / "robustlab"
    return Path(path).expanduser()


def set_cache_dir(path) -> Path:
    """Cache trained models under ``path`` from now on (``None`` restores the default)."""
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    _state["cache_dir"] = None if path is None else Path(path).expanduser()
    return cache_dir()


def data_dir() -> Path:
    """Root directory of torchvision data sets (``ROBUSTLAB_DATA``, else ``<cache>/data``)."""
    path = _state["data_dir"] or os.environ.get("ROBUSTLAB_DATA") or cache_dir() / "data"
    return Path(path).expanduser()


def set_data_dir(path) -> Path:
    """Look for (and download) torchvision data sets under ``path`` (``None``: default)."""
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    _state["data_dir"] = None if path is None else Path(path).expanduser()
    return data_dir()


def progress_enabled(progress: bool | None = None) -> bool:
    """Resolve a function's ``progress`` argument against the global switch."""
    if progress is not None:
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be True, False or None, got {type(progress).__name__}")
        return progress
    if _state["progress"] is not None:
        return _state["progress"]
    return _env_flag("ROBUSTLAB_PROGRESS", True)


def set_progress(enabled: bool) -> None:
    """Switch progress bars on or off for every later call (``ROBUSTLAB_PROGRESS=0`` does the same)."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False, got {type(enabled).__name__}")
    _state["progress"] = enabled


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "batch"):
    """A tqdm bar (notebook-aware) for long work; ``enabled=False`` gives a silent one."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, unit=unit)


def threads() -> int:
    """How many threads torch computes with on the CPU under robustlab's settings.

    :func:`set_threads`, else ``ROBUSTLAB_THREADS`` (a positive integer), else the active
    profile's default: 1 for ``"quick"``, torch's own default for ``"full"``.

    >>> import robustlab as rl
    >>> rl.config.threads() >= 1
    True
    """
    if _state["threads"] is not None:
        return _state["threads"]
    value = os.environ.get("ROBUSTLAB_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"ROBUSTLAB_THREADS must be a positive integer, got {value!r}")
        return int(value)
    default = DEFAULT_THREADS[profile().name]
    return _TORCH_DEFAULT_THREADS if default is None else default


def set_threads(n: int | None) -> int:
    """Compute with ``n`` torch threads from now on (``None``: back to the default) and return the count.

    >>> import robustlab as rl
    >>> rl.set_threads(1)
    1
    >>> rl.set_threads(0)
    Traceback (most recent call last):
    ...
    ValueError: n must be an integer >= 1, got 0
    >>> _ = rl.set_threads(None)
    """
    _state["threads"] = None if n is None else check_positive_int(n, "n")
    return apply_threads()


def apply_threads() -> int:
    """Set torch's thread count to :func:`threads` (robustlab does this on import) and return it."""
    n = threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


try:
    apply_threads()
except ValueError as err:  # a bad ROBUSTLAB_THREADS or ROBUSTLAB_PROFILE: say so, but let the import succeed
    import warnings

    warnings.warn(f"robustlab could not apply its thread setting: {err}", RuntimeWarning, stacklevel=2)
