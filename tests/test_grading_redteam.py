"""The red-team suite of the grader: one hostile submission per attack class, each graded with
the real grading run, none earning a point it should not, each reported in its status.

Most attacks are made on a tiny lab written here (two answers, 2 + 3 points, hidden tests
against a given helper), so that one grading run of every submission, two at a time, takes
a minute or two; one attack is made on a real lab (Lab 1). The attacks that the sandbox
stops (reading the instructor's files, writing outside the submission's folder, the
network, processes outliving the kernel) are skipped, with the reason, where bubblewrap
cannot run; the others run everywhere.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import socket
import sqlite3
import subprocess
import threading
import warnings
from pathlib import Path

import nbformat
import pytest

from robustlab import grading
from robustlab.grading.prepare import check_code, rebuild

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO / "solutions"
LABS = REPO / "labs"
SANDBOX = grading.sandbox_available()
needs_sandbox = pytest.mark.skipif(SANDBOX is None, reason="bubblewrap (bwrap) with user namespaces is not available "
                                                            "here: the sandbox's attacks are not tested")
SECRET = "s3cr3t-instructor-value-7f1c"
HIDDEN = "SECRET-HIDDEN-MARKER"
MAX = 5.0


# --------------------------------------------------------------------------- the tiny lab


def _cell(source, grade_id, kind, points=None):
    cell = nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source)
    meta = {"grade": kind == "test", "grade_id": grade_id, "locked": kind in ("given", "test", "md"),
            "schema_version": 3, "solution": kind == "answer"}
    if points:
        meta["points"] = points
    cell.metadata["nbgrader"] = meta
    cell.id = grade_id
    return cell


DOUBLE = "def double(x):\n    return 2 * np.asarray(x, dtype=float)"
SQUARE = "def square(x):\n    return np.asarray(x, dtype=float) ** 2"


def tiny_source() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        _cell("# A tiny lab", "intro", "md"),
        _cell("import numpy as np\n\ndef reference(x):\n    return 2 * np.asarray(x, dtype=float)", "setup", "given"),
        _cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * np.asarray(x, dtype=float)\n    ### END SOLUTION",
              "double", "answer"),
        _cell("assert np.allclose(double([1, 2]), [2, 4])\n### BEGIN HIDDEN TESTS\n"
              f"assert np.allclose(double(np.arange(5.0)), reference(np.arange(5.0)))  # {HIDDEN}\n"
              "### END HIDDEN TESTS", "test-double", "test", 2),
        _cell("def square(x):\n    ### BEGIN SOLUTION\n    return np.asarray(x, dtype=float) ** 2\n    ### END SOLUTION",
              "square", "answer"),
        _cell("assert np.allclose(square([3]), [9])\n### BEGIN HIDDEN TESTS\n"
              f"assert np.allclose(square(np.arange(4.0)), np.arange(4.0) ** 2)  # {HIDDEN}\n"
              "### END HIDDEN TESTS", "test-square", "test", 3),
    ]
    return nb


def tiny_blank() -> nbformat.NotebookNode:
    """The student version, as nbgrader releases it (stubs, no hidden tests)."""
    nb = tiny_source()
    for cell in nb.cells:
        meta = cell.metadata["nbgrader"]
        if meta["solution"]:
            cell.source = cell.source.split("### BEGIN SOLUTION")[0] + "    # YOUR CODE HERE\n    raise NotImplementedError()"
        elif meta["grade"]:
            cell.source = cell.source.split("### BEGIN HIDDEN TESTS")[0].rstrip()
    return nb


def answered(double=None, square=None) -> nbformat.NotebookNode:
    nb = tiny_blank()
    for cell in nb.cells:
        gid = cell.metadata["nbgrader"]["grade_id"]
        if gid == "double" and double is not None:
            cell.source = double
        if gid == "square" and square is not None:
            cell.source = square
    return nb


def plus(nb, *sources, at=2) -> nbformat.NotebookNode:
    """``nb`` with student cells holding ``sources`` inserted at position ``at``."""
    nb = copy.deepcopy(nb)
    for offset, source in enumerate(sources):
        nb.cells.insert(at + offset, nbformat.v4.new_code_cell(source))
    return nb


# --------------------------------------------------------------------------- the submissions


def _probe_files(course: Path, victim: str) -> str:
    targets = {"source": str(REPO / "solutions"), "gradebook": str(course / "gradebook.db"),
               "other": str(course / "submitted" / victim), "instructor": str(course.parent / "instructor-secret.txt"),
               "course_source": str(course / "source")}
    return (f"import os\nfor name, path in {targets!r}.items():\n"
            "    try:\n        found = os.listdir(path) if os.path.isdir(path) else open(path, 'rb').read(10)\n"
            "        print('READ-OK', name)\n"
            "    except OSError as err:\n        print('READ-FAILED', name, type(err).__name__)\n")


def _write_files(course: Path, victim: str) -> str:
    targets = {"gradebook": str(course / "gradebook.db"), "other": str(course / "autograded" / victim / "tiny" / "x.txt"),
               "grades": str(course / "grades.csv"), "cache": os.path.expanduser("~/.cache/robustlab/poison.txt"),
               "source": str(REPO / "solutions" / "poison.txt")}
    return (f"for name, path in {targets!r}.items():\n"
            "    try:\n        with open(path, 'a') as fh:\n            fh.write('poison')\n"
            "        print('WRITE-OK', name)\n"
            "    except OSError as err:\n        print('WRITE-FAILED', name, type(err).__name__)\n")


def submissions(course: Path, port: int) -> dict:
    """{student: (notebook, extra files, expected score)}."""
    full = answered(DOUBLE, SQUARE)
    blank = tiny_blank()
    stub = "def double(x):\n    return np.zeros(0)"
    subs = {
        # honest cases
        "full": (full, {}, MAX),
        "blank": (blank, {}, 0.0),
        "partial": (answered(DOUBLE), {}, 2.0),
        "warns": (answered("import warnings\n" + DOUBLE + "\nwarnings.warn('a library warning on stderr')", SQUARE),
                  {}, MAX),
        "loops": (answered(DOUBLE, "while True:\n    pass"), {}, 2.0),
        "dies": (answered(DOUBLE, "import os\nos.kill(os.getpid(), 9)"), {}, 2.0),
        "hangs": (answered(DOUBLE, "total = sum(range(10 ** 12))  # no signal is checked in here"), {}, 2.0),
        "memory": (answered(DOUBLE, "blob = bytearray(3 << 30)\n" + SQUARE), {}, 2.0),
        "floods": (plus(full, "print('x' * 3_000_000)"), {}, MAX),
        # tampering with the kernel
        "input-transformer": (plus(blank, "get_ipython().input_transformers_post.append(lambda lines: ['pass\\n'])"),
                              {}, 0.0),
        "ast-transformer": (plus(blank, "import ast\nclass Nop(ast.NodeTransformer):\n"
                                        "    def visit_Assert(self, node):\n        return ast.Pass()\n"
                                        "get_ipython().ast_transformers.append(Nop())"), {}, 0.0),
        "event-hook": (plus(blank, "ip = get_ipython()\nip.events.register('pre_run_cell', lambda info: None)"), {}, 0.0),
        "shell-method": (plus(blank, "get_ipython().showtraceback = lambda *a, **k: None"), {}, 0.0),
        "magic": (plus(blank, "%%capture\nprint('hidden')"), {}, 0.0),
        "settrace": (plus(blank, "import sys\nsys.settrace(lambda *a: None)"), {}, 0.0),
        "builtins": (plus(blank, "import builtins\nbuiltins.AssertionError = Warning"), {}, 0.0),
        "numpy": (answered(stub + "\nnp.allclose = lambda *a, **k: True"), {}, 0.0),
        "numpy-alias": (answered(stub, "m = [np][0]\nm.allclose = lambda *a, **k: True\n" + "def square(x):\n    return 0"),
                        {}, 0.0),
        "given-helper": (plus(answered(stub), "def reference(x):\n    return np.zeros(0)"), {}, 0.0),
        "always-equal": (answered("class Anything:\n    def __eq__(self, other):\n        return True\n"
                                  "def double(x):\n    return Anything()"), {}, 0.0),
        # tampering with the notebook
        "edited-tests": (_edit_tests(blank, "pass"), {}, 0.0),
        "deleted-tests": (_drop_tests(blank), {}, 0.0),
        "forged-metadata": (_forge_metadata(blank), {}, 0.0),
        "unknown-metadata": (_unknown_metadata(full), {}, MAX),
        "kernel-changed": (_kernel_changed(full), {}, MAX),
        "extra-files": (blank, {"numpy.py": "allclose = lambda *a, **k: True\n", "timestamp.txt": "2000-01-01 00:00:00\n"},
                        0.0),
        "environment": (plus(blank, "import os\nprint(sorted(os.environ.items()))"), {}, 0.0),
    }
    if SANDBOX is None:  # without a sandbox these would really read and write the instructor's files
        return subs
    subs.update({
        # what the sandbox stops
        "reads": (plus(blank, _probe_files(course, "full")), {}, 0.0),
        "writes": (plus(blank, _write_files(course, "full")), {}, 0.0),
        "network": (plus(blank, "import urllib.request\ntry:\n"
                                f"    urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=3)\n"
                                "    print('NET-OK')\nexcept OSError as err:\n    print('NET-FAILED', err)"), {}, 0.0),
        "outlives": (plus(blank, "import os\nos.system('nohup sleep 4321 >/dev/null 2>&1 &')"), {}, 0.0),
    })
    return subs


def _edit_tests(nb, source):
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.metadata["nbgrader"]["grade"]:
            cell.source = source
    return nb


def _drop_tests(nb):
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if not c.metadata["nbgrader"]["grade"]]
    return nb


def _forge_metadata(nb):
    """Answer cells marked as graded with 100 points, and a copy-pasted test cell."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        meta = cell.metadata["nbgrader"]
        if meta["solution"]:
            meta.update(grade=True, points=100, locked=True)
    nb.cells.append(copy.deepcopy(nb.cells[3]))
    return nb


def _unknown_metadata(nb):
    nb = copy.deepcopy(nb)
    bonus = nbformat.v4.new_code_cell("assert True")
    bonus.metadata["nbgrader"] = {"grade": True, "grade_id": "bonus", "locked": True, "points": 50,
                                  "schema_version": 3, "solution": False}
    nb.cells.append(bonus)
    return nb


def _kernel_changed(nb):
    nb = copy.deepcopy(nb)
    nb.metadata["kernelspec"] = {"name": "bash", "display_name": "Bash", "language": "bash"}
    return nb


class _Listener:
    """A TCP server on localhost that records whether anything connected."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self.stop = True
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture(scope="module")
def redteam(tmp_path_factory):
    root = tmp_path_factory.mktemp("redteam")
    source = root / "source"
    (source / "tiny").mkdir(parents=True)
    nbformat.write(tiny_source(), source / "tiny" / "tiny.ipynb")
    course = root / "course"
    (root / "instructor-secret.txt").write_text(SECRET)
    listener = _Listener()
    subs = submissions(course, listener.port)
    folder = root / "submissions"
    for student, (nb, files, _) in subs.items():
        (folder / student).mkdir(parents=True)
        nbformat.write(nb, folder / student / "tiny.ipynb")
        for name, text in files.items():
            (folder / student / name).write_text(text)
    os.environ["ROBUSTLAB_REDTEAM_SECRET"] = SECRET
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rows = grading.autograde(folder, lab="tiny", source=source, course_dir=course, out=root / "grades.csv",
                                     lms=root / "lms.csv", timeout=12, jobs=2, limits={"memory_mb": 2048})
    finally:
        os.environ.pop("ROBUSTLAB_REDTEAM_SECRET", None)
        listener.close()
    sleepers = subprocess.run(["pgrep", "-f", "sleep 4321"], capture_output=True, text=True).stdout.split()
    yield {"rows": {r["student_id"]: r for r in rows}, "expected": {s: v[2] for s, v in subs.items()},
           "course": course, "root": root, "folder": folder, "source": source, "listener": listener,
           "sleepers": sleepers,
           "warnings": [w for w in caught if issubclass(w.category, grading.GradingWarning)]}
    for pid in sleepers:  # never leave one behind, even when the test fails
        subprocess.run(["kill", pid], capture_output=True)


def graded_nb(redteam, student) -> nbformat.NotebookNode:
    return nbformat.read(redteam["course"] / "autograded" / student / "tiny" / "tiny.ipynb", as_version=4)


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") + out.get("evalue", "") + "".join(out.get("traceback", [])))
            parts.append(json.dumps(out.get("data", {})))
    return "\n".join(parts)


# --------------------------------------------------------------------------- scores and statuses


@pytest.mark.slow
def test_every_submission_is_graded_with_the_points_it_deserves(redteam):
    scores = {s: r["score"] for s, r in redteam["rows"].items()}
    assert scores == redteam["expected"], {s: (scores.get(s), e, redteam["rows"].get(s, {}).get("status"))
                                           for s, e in redteam["expected"].items() if scores.get(s) != e}
    assert all(r["max_score"] == MAX for r in redteam["rows"].values()), "forged metadata changed the maximum"


@pytest.mark.slow
@pytest.mark.parametrize("student, words", [
    ("full", "graded"), ("warns", "graded"),
    ("loops", "timed out in cell square"), ("dies", "kernel died in cell square"),
    ("hangs", "kernel did not answer after the timeout in cell square"), ("memory", "out of memory in cell square"),
    ("floods", "output truncated in cell"),
    ("input-transformer", "tampering detected in cell"), ("ast-transformer", "tampering detected in cell"),
    ("event-hook", "tampering detected in cell"), ("shell-method", "tampering detected in cell"),
    ("magic", "tampering detected in cell"), ("settrace", "tampering detected in cell"),
    ("builtins", "tampering detected in cell"), ("numpy", "tampering detected in cell double"),
    ("numpy-alias", "tampering detected in cell test-square (changed: numpy.allclose"),
    ("given-helper", "rebinds reference"), ("always-equal", "defines the method __eq__"),
    ("edited-tests", "cell 'test-double' was edited"), ("deleted-tests", "test 'test-double' was missing"),
    ("forged-metadata", "duplicate grading metadata 'test-double'"), ("unknown-metadata", "unknown grading metadata 'bonus'"),
    ("kernel-changed", "the notebook's kernel was changed"), ("extra-files", "extra files ignored: numpy.py, timestamp.txt"),
])
def test_each_submission_is_reported(redteam, student, words):
    status = redteam["rows"][student]["status"]
    assert words in status, status
    if words == "graded":
        assert status == "graded"


@pytest.mark.slow
def test_the_grades_csv_and_lms_csv(redteam):
    with open(redteam["root"] / "grades.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["student_id"]: r["status"] for r in rows} == {s: r["status"] for s, r in redteam["rows"].items()}
    assert next(r for r in rows if r["student_id"] == "partial")["cells"] == "test-double=2/2; test-square=0/3"
    with open(redteam["root"] / "lms.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        lms = list(reader)
    assert reader.fieldnames == ["student_id", "last_name", "first_name", "email", "tiny"]
    assert {r["student_id"]: float(r["tiny"]) for r in lms} == redteam["expected"]
    summary = (redteam["course"] / "summary-tiny.txt").read_text()
    assert "kernel died in cell square" in summary and "sandbox:" in summary


@pytest.mark.slow
def test_the_gradebook_is_intact_and_nbgrader_can_read_it(redteam):
    con = sqlite3.connect(redteam["course"] / "gradebook.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    out = redteam["root"] / "again.csv"
    env = dict(os.environ, JUPYTER_PATH=str(redteam["course"] / "jupyter"))
    subprocess.run([os.sys.executable, "-m", "nbgrader", "export", "--to", str(out)], cwd=redteam["course"],
                   env=env, check=True, capture_output=True)
    with open(out, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(redteam["expected"])


@pytest.mark.slow
def test_the_guard_catches_what_the_static_check_lets_through(redteam):
    # the alias is invisible to the static check: the guard in the kernel sees numpy.allclose replaced
    assert check_code("m = [np][0]\nm.allclose = lambda *a, **k: True", protected={"np"}) == []
    cells = {c.get("id"): c for c in graded_nb(redteam, "numpy-alias").cells}
    assert "tampering detected" in outputs_text(nbformat.v4.new_notebook(cells=[cells["test-square"]]))


# --------------------------------------------------------------------------- the sandbox


@pytest.mark.slow
@needs_sandbox
def test_a_kernel_reads_nothing_of_the_instructor_or_other_students(redteam):
    text = outputs_text(graded_nb(redteam, "reads"))
    assert "READ-OK" not in text, text
    assert text.count("READ-FAILED") == 5


@pytest.mark.slow
@needs_sandbox
def test_a_kernel_writes_nothing_outside_its_folder(redteam):
    text = outputs_text(graded_nb(redteam, "writes"))
    assert "WRITE-OK" not in text, text
    assert not (REPO / "solutions" / "poison.txt").exists()
    assert not (redteam["course"] / "autograded" / "full" / "tiny" / "x.txt").exists()
    assert not Path(os.path.expanduser("~/.cache/robustlab/poison.txt")).exists(), "the shared model cache was written"


@pytest.mark.slow
@needs_sandbox
def test_a_kernel_has_no_network(redteam):
    assert "NET-FAILED" in outputs_text(graded_nb(redteam, "network"))
    assert redteam["listener"].connections == 0


@pytest.mark.slow
def test_a_kernel_gets_a_whitelisted_environment(redteam):
    text = outputs_text(graded_nb(redteam, "environment"))
    assert "ROBUSTLAB_PROFILE" in text, "the environment was not printed"
    assert SECRET not in text and "ROBUSTLAB_REDTEAM_SECRET" not in text
    assert "NBGRADER_EXECUTION" in text


@pytest.mark.slow
@needs_sandbox
def test_no_process_outlives_its_kernel(redteam):
    assert redteam["sleepers"] == [], "a process started by a graded kernel is still running"


# --------------------------------------------------------------------------- feedback


@pytest.mark.slow
def test_feedback_carries_no_hidden_tests_and_no_environment(redteam, tmp_path):
    written = grading.feedback(redteam["course"], "tiny", out=tmp_path / "feedback")
    assert sorted(p.parent.name for p in written) == sorted(redteam["expected"])
    for path in written:
        html = path.read_text()
        assert HIDDEN not in html and "BEGIN HIDDEN TESTS" not in html, f"{path}: hidden tests in the feedback"
        assert SECRET not in html
    partial = (tmp_path / "feedback" / "partial" / "tiny.html").read_text()
    assert "NotImplementedError" in partial


# --------------------------------------------------------------------------- parallel = one at a time


@pytest.mark.slow
def test_parallel_grading_gives_the_same_scores_as_one_at_a_time(redteam, tmp_path):
    honest = ["full", "blank", "partial", "warns"]
    folder = tmp_path / "subs"
    for student in honest:
        (folder / student).mkdir(parents=True)
        (folder / student / "tiny.ipynb").write_bytes((redteam["folder"] / student / "tiny.ipynb").read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", grading.GradingWarning)
        rows = grading.autograde(folder, lab="tiny", source=redteam["source"], out=None, timeout=12, jobs=1)
    one = {r["student_id"]: (r["score"], r["cells"]) for r in rows}
    two = {s: (redteam["rows"][s]["score"], redteam["rows"][s]["cells"]) for s in honest}
    assert one == two


@pytest.mark.slow
def test_a_failure_of_nbgrader_itself_is_retried_alone(redteam, tmp_path, monkeypatch):
    """A grading run that nbgrader fails once (as under contention for the gradebook) is run
    again alone and the student keeps the grade; one that fails every time is reported as such."""
    import robustlab.grading as grading_module

    real = grading_module._grade_student
    calls = []

    def flaky(course, lab, student, env, hard_limit):
        calls.append(student)
        if student == "full" and calls.count("full") == 1 or student == "partial":
            return {"events": [], "failed": True, "timed_out": False, "errors": ["database is locked"], "seconds": 0.1}
        return real(course, lab, student, env, hard_limit)

    monkeypatch.setattr(grading_module, "_grade_student", flaky)
    folder = tmp_path / "subs"
    for student in ("full", "partial"):
        (folder / student).mkdir(parents=True)
        (folder / student / "tiny.ipynb").write_bytes((redteam["folder"] / student / "tiny.ipynb").read_bytes())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = grading.autograde(folder, lab="tiny", source=redteam["source"], out=None, timeout=12, jobs=2)
    rows = {r["student_id"]: r for r in rows}
    assert sorted(calls) == ["full", "full", "partial", "partial"]
    assert rows["full"]["score"] == MAX and rows["full"]["status"] == "graded"
    assert "nbgrader failed" in rows["partial"]["status"]
    assert any("the submissions of ['partial']" in str(w.message) for w in caught
               if issubclass(w.category, grading.GradingWarning))


@pytest.mark.slow
def test_a_deep_course_folder_and_a_long_student_id_are_graded(redteam, tmp_path):
    """The kernels' IPC sockets live in a short runtime folder: a socket path has a limit of about
    107 bytes, which a runtime folder inside this course folder would pass."""
    course = tmp_path / ("a-course-folder-nested-deeply-" * 3) / "course"
    student = "a-student-with-a-rather-long-identifier"
    (tmp_path / "subs" / student).mkdir(parents=True)
    (tmp_path / "subs" / student / "tiny.ipynb").write_bytes((redteam["folder"] / "full" / "tiny.ipynb").read_bytes())
    assert len(str(course / ".runtime" / student / "kernel-0123456789ab-ipc-4")) > 107
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", grading.GradingWarning)
        rows = grading.autograde(tmp_path / "subs", lab="tiny", source=redteam["source"], course_dir=course, out=None,
                                 timeout=12, jobs=1)
    assert (rows[0]["score"], rows[0]["status"]) == (MAX, "graded")


# --------------------------------------------------------------------------- a real lab


@pytest.mark.slow
def test_an_attack_on_a_real_lab_earns_nothing(tmp_path):
    """Lab 1 handed in blank, with numpy's and torch's comparisons replaced through aliases (which
    only the guard sees) and robustlab's reference attack replaced (which the static check sees)."""
    name = "attacks.ipynb"
    nb = nbformat.read(LABS / "lab1" / name, as_version=4)
    nb.cells.insert(3, nbformat.v4.new_code_cell("t = [torch][0]\nt.allclose = lambda *a, **k: True\n"
                                                 "t.equal = lambda *a, **k: True"))
    nb.cells.insert(4, nbformat.v4.new_code_cell("rl.attacks.fgsm = lambda *a, **k: None"))
    (tmp_path / "subs" / "mallory").mkdir(parents=True)
    nbformat.write(nb, tmp_path / "subs" / "mallory" / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", grading.GradingWarning)
        rows = grading.autograde(tmp_path / "subs", lab="lab1", source=SOLUTIONS, out=None, timeout=30, jobs=1)
    assert rows[0]["score"] == 0.0
    assert "tampering detected" in rows[0]["status"] and "protected name rl" in rows[0]["status"]
    assert "torch.allclose" in rows[0]["status"]


# --------------------------------------------------------------------------- the static check and the rebuild


@pytest.mark.parametrize("lab", grading.find_labs(SOLUTIONS))
def test_no_honest_solution_is_flagged(lab):
    """Every lab's solution passes the static check: the check costs honest students nothing."""
    from robustlab.grading import _instructor_info

    for path in sorted((SOLUTIONS / lab).glob("*.ipynb")):
        source = json.loads(path.read_text())
        info = _instructor_info(source)
        released = json.loads((LABS / lab / path.name).read_text())
        result = rebuild(source, released, protected=info["protected"], imports=info["imports"])
        assert result.flagged == {}, result.flagged


@pytest.mark.parametrize("code", [
    "exec('x = 1')", "eval('1')", "globals()['np'] = None", "setattr(np, 'allclose', print)", "np.__dict__",
    "import gc", "from sys import settrace", "import importlib", "import ctypes", "import threading",
    "import pickle", "torch.load('m.pt')", "np.load('a.npy', allow_pickle=True)", "type('A', (), {})",
    "getattr(np, '__dict__')", "x = (lambda: 0).__globals__", "import signal", "import atexit",
    "def f():\n    global np\n    np = None", "!ls", "%run other.py",
])
def test_the_static_check_flags(code):
    assert check_code(code, protected={"np", "torch"}, imports={"np": "numpy", "torch": "torch"})


@pytest.mark.parametrize("code", [
    "import numpy as np\nx = np.zeros(3)\nx[0] = 1", "def f(model):\n    model.fc.weight.data = 0\n    return model",
    "class Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n    def forward(self, x):\n        return x",
    "%time y = 1", "for i in range(3):\n    pass", "import math, os\nprint(os.getcwd())",
])
def test_the_static_check_passes(code):
    assert check_code(code, protected={"np", "torch"}, imports={"np": "numpy", "torch": "torch"}) == []


def test_check_code_checks_its_argument():
    with pytest.raises(TypeError, match="source"):
        check_code(None)


def test_rebuild_refuses_what_is_not_a_notebook():
    with pytest.raises(ValueError, match="submitted"):
        rebuild({"cells": "no"}, tiny_blank())
