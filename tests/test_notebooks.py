"""Every chapter executes, under the quick profile and under the full profile (MNIST in
torchvision's on-disk format, written small by the tests, with ROBUSTLAB_SMOKE=1 so
training is a few batches), so the GPU path cannot rot unseen. (Lab sources are executed
under both profiles by tests/test_labs.py.)

The book build (Quickstart command 1) already executes every chapter under the quick
profile, from a cold model cache. The quick-profile test does not do that work twice: it
reads the chapter as the build executed it from the build's jupyter-cache
(``_build/.jupyter_cache``), where myst-nb keeps a notebook only if it ran without an
error, and checks it there. It executes the chapter itself when there is no build, when the
chapter's code changed since the build (jupyter-cache matches notebooks by a hash of their
code cells, the same match the build makes), when a file of the package is newer than the
build's execution, when the executed notebook does not show the quick profile, or when
``--reexecute-chapters`` is given; such an execution uses the build's model cache.
The full-profile smoke runs share one model cache between chapters.
"""

from __future__ import annotations

import os
import re
import time
from datetime import timezone
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((REPO / "book").glob("*.ipynb"))
NOTEBOOKS = CHAPTERS
pytestmark = pytest.mark.slow

_EXECUTE = (yaml.safe_load((REPO / "_config.yml").read_text()) or {}).get("execute", {})
JUPYTER_CACHE = REPO / (_EXECUTE.get("cache") or "_build/.jupyter_cache")  # Jupyter Book's default

# The chapters' models are tiny: one thread per kernel is as fast on a quiet machine and
# avoids torch's threads oversubscribing the cores when other processes are busy (which
# slowed chapter executions down by a factor of 5-20 in measurements on a 2-core machine).
# robustlab's own setting (ROBUSTLAB_THREADS) covers torch; these cover NumPy's BLAS.
ONE_THREAD = {"ROBUSTLAB_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

PROBE = "import robustlab as _rl\nprint('active profile:', _rl.profile().name, _rl.data.info().name)"
# Every chapter prints its profile near the top ("profile 'quick', data set 'digits', ...").
PROFILE_LINE = re.compile(r"\bprofile '(\w+)'")


class _TimedClient(NotebookClient):
    """A NotebookClient that keeps the time of the kernel's start and shutdown and of every
    step between cells, which the cells' own timings do not see."""

    phases: dict
    marks: list

    def _mark(self, what: str) -> None:
        self.marks.append((time.perf_counter(), what))

    async def async_start_new_kernel(self, **kwargs):
        start = time.perf_counter()
        try:
            return await super().async_start_new_kernel(**kwargs)
        finally:
            self.phases["kernel launch"] = time.perf_counter() - start

    async def async_start_new_kernel_client(self):
        start = time.perf_counter()
        try:
            return await super().async_start_new_kernel_client()
        finally:
            self.phases["kernel start"] = time.perf_counter() - start

    async def async_wait_for_reply(self, msg_id, cell=None):
        start = time.perf_counter()
        try:
            return await super().async_wait_for_reply(msg_id, cell)
        finally:
            self.phases["kernel info"] = self.phases.get("kernel info", 0.0) + time.perf_counter() - start

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        self._mark(f"cell {cell_index} start")
        try:
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        finally:
            self._mark(f"cell {cell_index} end")

    async def _async_cleanup_kernel(self):
        start = time.perf_counter()
        try:
            return await super()._async_cleanup_kernel()
        finally:
            self.phases["kernel shutdown"] = self.phases.get("kernel shutdown", 0.0) + time.perf_counter() - start

    def longest_steps(self, k: int = 3) -> str:
        """The ``k`` longest intervals between consecutive marks, as text."""
        steps = [(b[0] - a[0], f"{a[1]} -> {b[1]}") for a, b in zip(self.marks, self.marks[1:])]
        return ", ".join(f"{what} {dt:.1f} s" for dt, what in sorted(steps, reverse=True)[:k])


def _cell_seconds(nb) -> float:
    from datetime import datetime

    total = 0.0
    for c in nb.cells:
        t = c.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in t and "shell.execute_reply" in t:
            start, end = (datetime.fromisoformat(t[key].replace("Z", "+00:00"))
                          for key in ("iopub.execute_input", "shell.execute_reply"))
            total += (end - start).total_seconds()
    return total


def execute(path: Path, env: dict, timeout: int = 600) -> tuple[nbformat.NotebookNode, float]:
    """Execute a notebook in a fresh kernel with ``env`` added to this process's environment;
    a last cell reports the profile. Where the execution took a minute longer than its cells
    (a kernel slow to start, answer or stop), a warning says where the time went."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    start = time.perf_counter()
    client = _TimedClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.phases, client.marks = {}, []
    client.execute(env={**os.environ, **env})
    seconds = time.perf_counter() - start
    cells = _cell_seconds(nb)
    if seconds - cells > 60:
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in client.phases.items())
        import warnings
        warnings.warn(f"{path.name}: executed in {seconds:.0f} s, its cells in {cells:.0f} s ({phases}; the "
                      f"longest steps as the client saw them: {client.longest_steps()})", RuntimeWarning, stacklevel=2)
    return nb, seconds


def _errors(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]


def _stream_text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.output_type == "stream")


def _package_mtime() -> float:
    return max(p.stat().st_mtime for p in (REPO / "robustlab").rglob("*.py"))


def executed_by_the_book_build(path: Path, jupyter_cache: Path = JUPYTER_CACHE, package_mtime: float | None = None):
    """``(notebook, seconds, None)`` for the chapter as the book build executed it, or
    ``(None, None, reason)`` when that execution cannot stand for this test."""
    if not (jupyter_cache / "global.db").is_file():
        return None, None, "no book build (no jupyter-cache)"
    from jupyter_cache import get_cache

    cache = get_cache(str(jupyter_cache))
    try:
        record = cache.match_cache_notebook(nbformat.read(path, as_version=4))
    except KeyError:
        return None, None, "the book build's jupyter-cache holds no execution of its current code"
    created = record.created if record.created.tzinfo else record.created.replace(tzinfo=timezone.utc)
    if created.timestamp() < (_package_mtime() if package_mtime is None else package_mtime):
        return None, None, "the package changed since the book build executed it"
    # read the executed notebook where jupyter-cache keeps it (get_cache_bundle would also write
    # an access time to the cache's database, which parallel workers would contend for)
    executed = jupyter_cache / "executed" / record.hashkey / "base.ipynb"
    if not executed.is_file():
        return None, None, "the jupyter-cache lost the executed notebook"
    nb = nbformat.read(executed, as_version=4)
    profiles = set(PROFILE_LINE.findall(_stream_text(nb)))
    if profiles != {"quick"}:
        return None, None, f"the build's execution does not show the quick profile (it shows {sorted(profiles)})"
    return nb, record.data.get("execution_seconds"), None


def _slowest_cells(nb, k: int = 3) -> str:
    """The ``k`` slowest cells of an executed notebook (nbclient records each cell's timing)."""
    from datetime import datetime

    times = []
    for i, c in enumerate(nb.cells):
        t = c.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in t and "shell.execute_reply" in t:
            start, end = (datetime.fromisoformat(t[key].replace("Z", "+00:00"))
                          for key in ("iopub.execute_input", "shell.execute_reply"))
            times.append(((end - start).total_seconds(), i))
    return ", ".join(f"cell {i}: {s:.1f} s" for s, i in sorted(times, reverse=True)[:k])


def test_there_is_something_to_execute():
    assert CHAPTERS, "book/ holds no chapter notebook"


def test_a_build_execution_stands_only_for_the_same_code_under_the_quick_profile(tmp_path):
    """The lookup in a jupyter-cache written as myst-nb writes it: found for the same code,
    refused for changed code, another profile, or a package newer than the execution."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    def chapter(name, code, printed):
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                "language": "python"}})
        nb.cells = [nbformat.v4.new_markdown_cell("# A chapter"), nbformat.v4.new_code_cell(code)]
        nbformat.write(nb, tmp_path / name)
        executed = nbformat.v4.new_notebook(metadata=nb.metadata)
        executed.cells = [nbformat.v4.new_code_cell(code, outputs=[
            nbformat.v4.new_output("stream", name="stdout", text=printed)])]
        return executed

    cache_dir = tmp_path / "jupyter_cache"
    cache = get_cache(str(cache_dir))
    for name, code, printed in [("quick.ipynb", "print(1)", "profile 'quick', data set 'digits'\n"),
                                ("full.ipynb", "print(2)", "profile 'full', data set 'mnist'\n")]:
        executed = chapter(name, code, printed)
        cache.cache_notebook_bundle(CacheBundleIn(executed, str(tmp_path / name), data={"execution_seconds": 1.5}),
                                    check_validity=False)
    past = time.time() - 3600

    nb, seconds, reason = executed_by_the_book_build(tmp_path / "quick.ipynb", cache_dir, package_mtime=past)
    assert reason is None and seconds == 1.5 and "profile 'quick'" in _stream_text(nb)
    assert executed_by_the_book_build(tmp_path / "full.ipynb", cache_dir, past)[2].startswith(
        "the build's execution does not show the quick profile")
    assert "changed" in executed_by_the_book_build(tmp_path / "quick.ipynb", cache_dir, time.time() + 3600)[2]
    chapter("quick.ipynb", "print(1)  # edited", "")
    assert "no execution of its current code" in executed_by_the_book_build(tmp_path / "quick.ipynb", cache_dir,
                                                                             past)[2]
    assert "no book build" in executed_by_the_book_build(tmp_path / "quick.ipynb", tmp_path / "none", past)[2]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_executes_under_the_quick_profile(path, book_model_cache, request):
    if request.config.getoption("--reexecute-chapters"):
        nb, seconds, reason = None, None, "--reexecute-chapters"
    else:
        nb, seconds, reason = executed_by_the_book_build(path)
    if nb is not None:
        assert not _errors(nb)
        print(f"{path.name}: executed by the book build in {seconds or 0:.1f} s without errors "
              "under the quick profile (read from its jupyter-cache)")
        return
    nb, seconds = execute(path, {"ROBUSTLAB_PROFILE": "quick", "ROBUSTLAB_CACHE": str(book_model_cache),
                                 "ROBUSTLAB_PROGRESS": "0", **ONE_THREAD})
    assert not _errors(nb)
    assert "active profile: quick digits" in str(nb.cells[-1].outputs)
    print(f"{path.name}: executed in {seconds:.1f} s (quick profile; {reason}; model cache {book_model_cache}); "
          f"slowest {_slowest_cells(nb)}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_executes_under_the_full_profile_on_small_files(path, fake_data_root, full_smoke_cache):
    nb, seconds = execute(path, {"ROBUSTLAB_PROFILE": "full", "ROBUSTLAB_SMOKE": "1",
                                 "ROBUSTLAB_DATA": str(fake_data_root), "ROBUSTLAB_CACHE": str(full_smoke_cache),
                                 "ROBUSTLAB_PROGRESS": "0", **ONE_THREAD})
    assert not _errors(nb)
    assert "active profile: full mnist" in str(nb.cells[-1].outputs)
    print(f"{path.name}: executed in {seconds:.1f} s (full profile, smoke); slowest {_slowest_cells(nb)}")
