"""Every chapter executes, under the quick profile and under the full profile (MNIST in
torchvision's on-disk format, written small by the tests, with ROBUSTLAB_SMOKE=1 so
training is a few batches), so the GPU path cannot rot unseen. (Lab sources are executed
under both profiles by tests/test_labs.py.)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((REPO / "book").glob("*.ipynb"))
NOTEBOOKS = CHAPTERS
pytestmark = pytest.mark.slow


# The chapters' models are tiny: one thread per kernel is as fast on a quiet machine and
# avoids torch's threads oversubscribing the cores when other processes are busy (which
# slowed chapter executions down by a factor of 5-20 in measurements on a 2-core machine).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

PROBE = "import robustlab as _rl\nprint('active profile:', _rl.profile().name, _rl.data.info().name)"


def execute(path: Path, env: dict, timeout: int = 600) -> tuple[nbformat.NotebookNode, float]:
    """Execute a notebook in a fresh kernel with ``env`` set; a last cell reports the profile."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment of this process
    try:
        start = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        return nb, time.perf_counter() - start
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _errors(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]


def test_there_is_something_to_execute():
    assert CHAPTERS, "book/ holds no chapter notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_executes_under_the_quick_profile(path, tmp_path):
    nb, seconds = execute(path, {"ROBUSTLAB_PROFILE": "quick", "ROBUSTLAB_CACHE": str(tmp_path / "cache"),
                                 "ROBUSTLAB_PROGRESS": "0", **ONE_THREAD})
    assert not _errors(nb)
    assert "active profile: quick digits" in str(nb.cells[-1].outputs)
    print(f"{path.name}: executed in {seconds:.1f} s (quick profile, cold cache)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_executes_under_the_full_profile_on_small_files(path, tmp_path, fake_data_root):
    nb, seconds = execute(path, {"ROBUSTLAB_PROFILE": "full", "ROBUSTLAB_SMOKE": "1",
                                 "ROBUSTLAB_DATA": str(fake_data_root), "ROBUSTLAB_CACHE": str(tmp_path / "cache"),
                                 "ROBUSTLAB_PROGRESS": "0", **ONE_THREAD})
    assert not _errors(nb)
    assert "active profile: full mnist" in str(nb.cells[-1].outputs)
    print(f"{path.name}: executed in {seconds:.1f} s (full profile, smoke)")
