import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

# One thread per process, decided for the whole suite: the test models are tiny, tests run
# in parallel worker processes (pytest-xdist, one per core), and every notebook kernel and
# grading process started by a test inherits this environment. Two processes with two
# threads each on a 2-core machine ran the quick profile's training 4x slower than with one.
os.environ.update(ROBUSTLAB_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

from fakedata import write_cifar10, write_mnist  # noqa: E402

import robustlab as rl  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# The model cache the book build used: the same settings resolved from the environment this
# test run started in (ROBUSTLAB_CACHE, else the default ~/.cache/robustlab). Read before any
# fixture points ROBUSTLAB_CACHE at a private folder.
BOOK_MODEL_CACHE = rl.config.cache_dir()


def _shared_tmp(tmp_path_factory) -> Path:
    """A temporary folder shared by every worker of this run (pytest-xdist gives each worker
    its own base folder inside the run's folder)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory, monkeypatch):
    """Every test starts from the quick profile, the run's private model cache (shared by the
    workers; cache writes are atomic), no progress bars and one torch thread."""
    for var in ("ROBUSTLAB_PROFILE", "ROBUSTLAB_SMOKE", "ROBUSTLAB_DATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ROBUSTLAB_CACHE", str(_shared_tmp(tmp_path_factory) / "rlcache"))
    monkeypatch.setenv("ROBUSTLAB_PROGRESS", "0")
    monkeypatch.setenv("ROBUSTLAB_THREADS", "1")
    rl.config._state.update(profile=None, cache_dir=None, data_dir=None, progress=None, threads=None)
    yield
    rl.config._state.update(profile=None, cache_dir=None, data_dir=None, progress=None, threads=None)


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread in every test, restored if a test changed it (see the top of this file)."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


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
def run_tmp(tmp_path_factory) -> Path:
    """A temporary folder of this test run, shared by its xdist workers."""
    return _shared_tmp(tmp_path_factory)


@pytest.fixture(scope="session")
def book_model_cache() -> Path:
    """The model cache the book build trained into (see BOOK_MODEL_CACHE): tests that execute
    a chapter or lab give it to the kernel, so models the build trained are loaded, not retrained."""
    return BOOK_MODEL_CACHE


@pytest.fixture(scope="session")
def full_smoke_cache(run_tmp) -> Path:
    """One model cache for every full-profile smoke execution of this test run (chapters and
    labs, all workers): notebooks that use the same model train it once."""
    return run_tmp / "full-smoke-cache"


@pytest.fixture(scope="session")
def built_book():
    """The book's HTML in _build/html, built (warnings as errors) if it is not there yet.
    Parallel workers take a lock, so the book is built once."""
    from filelock import FileLock

    html = REPO / "_build" / "html"
    (REPO / "_build").mkdir(exist_ok=True)
    with FileLock(str(REPO / "_build" / ".build.lock")):
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


# --------------------------------------------------------------------------- parallel runs and timing


def pytest_addoption(parser):
    parser.addoption("--reexecute-chapters", action="store_true", default=False,
                     help="execute every chapter under the quick profile even where the book build's "
                          "jupyter-cache holds it executed (tests/test_notebooks.py)")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core this process may run on (xdist's own count prefers
    physical cores, which would leave a hyperthreaded 2-vCPU machine with one worker)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items):
    """Keep the tests that share a module- or class-scoped fixture on one xdist worker
    (``--dist loadgroup``), so an expensive fixture (a grading round trip, a browser, a
    trained model) is set up once; every other test is handed to whichever worker is free."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        scopes = {defs[-1].scope for defs in info.name2fixturedefs.values() if defs}
        if scopes & {"module", "class", "package"}:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


_file_seconds: dict = defaultdict(float)
_file_tests: dict = defaultdict(int)
_session_start = time.perf_counter()


def pytest_runtest_logreport(report):
    """Add up setup, call and teardown seconds per test file (on the controller with xdist)."""
    path = report.nodeid.split("::")[0]
    _file_seconds[path] += report.duration
    if report.when == "call" or (report.when == "setup" and report.skipped):
        _file_tests[path] += 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _file_seconds or hasattr(config, "workerinput"):
        return
    wall = time.perf_counter() - _session_start
    total = sum(_file_seconds.values())
    tr = terminalreporter
    tr.write_sep("=", "seconds per test file (setup + call + teardown)")
    for path, seconds in sorted(_file_seconds.items(), key=lambda kv: -kv[1]):
        tr.write_line(f"{seconds:9.1f} s  {_file_tests[path]:5d} tests  {path}")
    workers = getattr(config.option, "numprocesses", None) or 0
    tr.write_line(f"{total:9.1f} s in tests, {wall:.1f} s wall clock"
                  + (f" on {workers} workers" if workers else ""))
