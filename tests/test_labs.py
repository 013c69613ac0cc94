"""The labs: sources pass their own tests, released versions fail them, labs/ is what
nbgrader generates from solutions/, and autograding gives each kind of submission the
grade it deserves within bounded time, even when a submission raises or never ends.

Notebook executions and grading runs are marked ``slow``; the static checks of the lab
sources, the argument checks and the command line parsing are fast.
"""

from __future__ import annotations

import copy
import csv
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import nbformat
import pytest
import torch

import robustlab as rl
from robustlab import grading
from robustlab.__main__ import main

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO / "solutions"
LABS = REPO / "labs"
LAB_IDS = grading.find_labs(SOLUTIONS)

GRADING_TIMEOUT = 15  # seconds per cell in the grading round trip
ROUND_TRIP_LIMIT = 300  # seconds for grading four students, the endless loop included
CSV_COLUMNS = ["assignment", "duedate", "timestamp", "student_id", "last_name", "first_name", "email",
               "raw_score", "late_submission_penalty", "score", "max_score"]


# --------------------------------------------------------------------------- helpers


def notebooks(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.ipynb"))


def nbgrader_meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def graded_cells(nb) -> list:
    return [c for c in nb.cells if nbgrader_meta(c).get("grade") and c.cell_type == "code"]


def answer_cells(nb) -> list:
    return [c for c in nb.cells if nbgrader_meta(c).get("solution") and c.cell_type == "code"]


def kernel_env(**overrides) -> dict:
    """The environment of a notebook kernel in these tests: quick profile, no progress bars,
    a private model cache, one thread (tiny models; avoids oversubscribing a busy machine)."""
    env = dict(os.environ)
    env.pop("NBGRADER_EXECUTION", None)
    env.update(ROBUSTLAB_PROFILE="quick", ROBUSTLAB_PROGRESS="0", OMP_NUM_THREADS="1")
    env.pop("ROBUSTLAB_SMOKE", None)
    env.update(overrides)
    return env


def execute(path: Path, workdir: Path, *, allow_errors: bool, env: dict, timeout: int = 300):
    """Execute a notebook with nbclient in ``workdir`` and return the executed notebook."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(workdir)}})
    client.execute(env=env)
    return nb


def errors_of(cell) -> list:
    return [o for o in cell.get("outputs", []) if o.output_type == "error"]


def text_of(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def with_answers(base, solution, grade_ids) -> nbformat.NotebookNode:
    """``base`` with the answer cells ``grade_ids`` replaced by the solution's code."""
    nb = copy.deepcopy(base)
    answers = {nbgrader_meta(c)["grade_id"]: c.source for c in answer_cells(solution)}
    for cell in answer_cells(nb):
        if nbgrader_meta(cell)["grade_id"] in grade_ids:
            cell.source = answers[nbgrader_meta(cell)["grade_id"]]
    return nb


def points(nb, test_ids=None) -> float:
    return float(sum(nbgrader_meta(c)["points"] for c in graded_cells(nb)
                     if test_ids is None or nbgrader_meta(c)["grade_id"] in test_ids))


# --------------------------------------------------------------------------- static checks of the sources


def test_there_are_labs():
    assert "lab0" in LAB_IDS, f"solutions/ should hold lab0, found {LAB_IDS}"


@pytest.mark.parametrize("lab", LAB_IDS)
def test_lab_sources_use_nbgrader_markup(lab):
    """Every lab has at least four graded test cells, each with visible asserts and hidden
    tests, answer cells with solution markers, and unique, valid nbgrader metadata."""
    for path in notebooks(SOLUTIONS / lab):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        metas = [nbgrader_meta(c) for c in nb.cells if nbgrader_meta(c)]
        ids = [m["grade_id"] for m in metas]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate grade_id"
        assert all(m["schema_version"] == 3 for m in metas), f"{path.name}: nbgrader metadata must be schema 3"
        tests = graded_cells(nb)
        assert len(tests) >= 4, f"{path.name}: at least four graded test cells, found {len(tests)}"
        for cell in tests:
            meta = nbgrader_meta(cell)
            assert meta["locked"] and not meta["solution"] and meta["points"] > 0, f"{meta['grade_id']}: bad metadata"
            visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
            assert "assert " in visible, f"{meta['grade_id']}: no visible assert"
            assert "### BEGIN HIDDEN TESTS" in cell.source and "### END HIDDEN TESTS" in cell.source, \
                f"{meta['grade_id']}: no hidden tests"
        answers = answer_cells(nb)
        assert len(answers) >= len(tests)
        for cell in answers:
            assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source, \
                f"{nbgrader_meta(cell)['grade_id']}: answer cell without solution markers"
            assert not nbgrader_meta(cell)["locked"] and not nbgrader_meta(cell)["grade"]
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name}: outputs stored"


# --------------------------------------------------------------------------- executing the notebooks


@pytest.mark.slow
@pytest.mark.parametrize("lab", LAB_IDS)
def test_lab_sources_run_under_the_full_profile(lab, tmp_path, fake_data_root):
    """The full profile (MNIST through torchvision) on small stand-in files, shortened."""
    env = kernel_env(ROBUSTLAB_PROFILE="full", ROBUSTLAB_SMOKE="1", ROBUSTLAB_DATA=str(fake_data_root),
                     ROBUSTLAB_CACHE=str(tmp_path / "cache"))
    for path in notebooks(SOLUTIONS / lab):
        nb = execute(path, tmp_path, allow_errors=False, env=env)
        assert "'full'" in "".join(text_of(c) for c in nb.cells if c.cell_type == "code"), \
            "the notebook did not run under the full profile"


@pytest.mark.slow
@pytest.mark.parametrize("lab", LAB_IDS)
def test_released_labs_fail_their_tests(lab, tmp_path):
    env = kernel_env(ROBUSTLAB_CACHE=str(tmp_path / "cache"))
    released = notebooks(LABS / lab)
    assert [p.name for p in released] == [p.name for p in notebooks(SOLUTIONS / lab)]
    for path in released:
        text = path.read_text()
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, f"{path}: solutions or hidden tests leaked"
        nb = execute(path, tmp_path, allow_errors=True, env=env)
        for cell in answer_cells(nb):
            assert "YOUR CODE HERE" in cell.source
        tests = graded_cells(nb)
        assert len(tests) >= 4
        for cell in tests:
            assert errors_of(cell), f"{path.name}: {nbgrader_meta(cell)['grade_id']} passes on the blank lab"


AUTOGRADE_LIMIT = 60  # seconds: autograding one student's lab on a CPU, nbgrader's own steps included


@pytest.mark.slow
@pytest.mark.parametrize("lab", LAB_IDS)
def test_autograding_one_solution_takes_under_a_minute_and_gives_full_marks(lab, tmp_path):
    """The solution passes its own tests, visible and hidden, as the grader runs them (this is
    the one run of each lab's solution under the quick profile)."""
    subs = tmp_path / "submissions" / "student"
    subs.mkdir(parents=True)
    for path in notebooks(SOLUTIONS / lab):
        (subs / path.name).write_bytes(path.read_bytes())
    expected = sum(points(nbformat.read(p, as_version=4)) for p in notebooks(SOLUTIONS / lab))
    start = time.perf_counter()
    rows = grading.autograde(tmp_path / "submissions", lab=lab, out=None, source=SOLUTIONS)
    elapsed = time.perf_counter() - start
    print(f"{lab}: autograded in {elapsed:.1f} s, score {rows[0]['score']} / {rows[0]['max_score']}")
    lost = {cell: got for cell, got in rows[0]["cells"].items() if got[0] != got[1]}
    assert not lost, f"{lab}: the solution loses points in {lost} ({rows[0]['status']})"
    assert rows[0]["score"] == rows[0]["max_score"] == expected, rows[0]["status"]
    assert elapsed < AUTOGRADE_LIMIT, f"autograding {lab} took {elapsed:.0f} s"


@pytest.mark.slow
def test_labs_folder_is_what_release_generates(tmp_path):
    regenerated = tmp_path / "labs"
    written = grading.release(source=SOLUTIONS, release=regenerated)
    assert sorted(p.name for p in written) == LAB_IDS
    committed = sorted(p.name for p in LABS.iterdir() if p.is_dir())
    assert committed == LAB_IDS, "labs/ must hold exactly the labs of solutions/: run `python -m robustlab labs release`"
    for lab in LAB_IDS:
        assert [p.name for p in notebooks(LABS / lab)] == [p.name for p in notebooks(regenerated / lab)]
        for path in notebooks(LABS / lab):
            mine, fresh = nbformat.read(path, as_version=4), nbformat.read(regenerated / lab / path.name, as_version=4)
            assert len(mine.cells) == len(fresh.cells), f"{lab}/{path.name} is stale: run `python -m robustlab labs release`"
            for a, b in zip(mine.cells, fresh.cells):
                assert (a.cell_type, a.source, nbgrader_meta(a)) == (b.cell_type, b.source, nbgrader_meta(b)), \
                    f"{lab}/{path.name} is stale at cell {a.get('id')}: run `python -m robustlab labs release`"
            assert mine.metadata == fresh.metadata
        # regenerating is deterministic: the same bytes
        for path in notebooks(regenerated / lab):
            assert path.read_bytes() == (LABS / lab / path.name).read_bytes(), f"{lab}/{path.name} differs byte-wise"


# --------------------------------------------------------------------------- autograding


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade four students of lab0 at once: the solution, the blank lab, a partly solved lab
    (under another file name) and one that raises in one answer and loops forever in another."""
    root = tmp_path_factory.mktemp("grading")
    name = "getting-started.ipynb"
    solution = nbformat.read(SOLUTIONS / "lab0" / name, as_version=4)
    blank = nbformat.read(LABS / "lab0" / name, as_version=4)
    partial_answers = {"distances", "project-linf"}
    partial = with_answers(blank, solution, partial_answers)
    broken = copy.deepcopy(solution)
    for cell in answer_cells(broken):
        if nbgrader_meta(cell)["grade_id"] == "project-linf":
            cell.source = "while True:\n    pass"
        elif nbgrader_meta(cell)["grade_id"] == "project-l2":
            cell.source = 'raise RuntimeError("this answer raises")'

    subs = root / "submissions"
    layout = {
        "full": (subs / "full" / "lab0" / name, solution),  # SUBMISSIONS/<student>/<lab>/<notebook>
        "blank": (subs / "blank" / name, blank),  # SUBMISSIONS/<student>/<notebook>
        "partial": (subs / "partial" / "getting-started (1).ipynb", partial),  # renamed by the student
        "broken": (subs / "broken" / name, broken),
    }
    for path, nb in layout.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = grading.autograde(subs, lab="lab0", out=root / "out" / "grades.csv", course_dir=root / "course",
                                 timeout=GRADING_TIMEOUT, source=SOLUTIONS)
    elapsed = time.perf_counter() - start
    expected = {
        "full": points(solution),
        "blank": 0.0,
        "partial": points(solution, {"test-distances", "test-project-linf"}),
        "broken": points(solution) - points(solution, {"test-project-linf", "test-project-l2"}),
    }
    print(f"\ngrading round trip: {elapsed:.1f} s; scores "
          + ", ".join(f"{r['student_id']} {r['score']}/{r['max_score']}" for r in rows))
    return {"rows": {r["student_id"]: r for r in rows}, "elapsed": elapsed, "root": root, "expected": expected,
            "warnings": [w for w in caught if issubclass(w.category, grading.GradingWarning)],
            "max": points(solution)}


def autograded(graded, student):
    path = graded["root"] / "course" / "autograded" / student / "lab0" / "getting-started.ipynb"
    return nbformat.read(path, as_version=4)


@pytest.mark.slow
def test_every_student_is_graded(graded):
    assert sorted(graded["rows"]) == ["blank", "broken", "full", "partial"]
    for row in graded["rows"].values():
        assert row["assignment"] == "lab0"
        assert row["max_score"] == graded["max"]


@pytest.mark.slow
def test_the_solution_gets_full_marks(graded):
    assert graded["rows"]["full"]["score"] == graded["max"] == graded["expected"]["full"]


@pytest.mark.slow
def test_the_blank_lab_gets_zero(graded):
    assert graded["rows"]["blank"]["score"] == 0.0


@pytest.mark.slow
def test_a_partial_submission_gets_the_points_of_its_solved_parts(graded):
    score = graded["rows"]["partial"]["score"]
    assert 0.0 < score < graded["max"]
    assert score == graded["expected"]["partial"]
    assert any("getting-started (1).ipynb" in str(w.message) for w in graded["warnings"]), \
        "a renamed notebook is graded with a warning"


@pytest.mark.slow
def test_a_submission_that_raises_and_loops_forever_still_gets_its_grade(graded):
    assert graded["rows"]["broken"]["score"] == graded["expected"]["broken"]
    cells = {c.get("id"): c for c in autograded(graded, "broken").cells}
    looped = {e.ename for e in errors_of(cells["project-linf"])}
    assert looped & {"CellTimeoutError", "KeyboardInterrupt"}, f"the endless loop was not interrupted: {looped}"
    assert errors_of(cells["project-l2"])[0].ename == "RuntimeError"
    assert not errors_of(cells["test-fgsm"]), "the cells after the interrupted one still ran"


@pytest.mark.slow
def test_each_student_gets_a_status(graded):
    rows = graded["rows"]
    assert rows["full"]["status"] == "graded" and rows["blank"]["status"] == "graded"
    assert "timed out in cell project-linf" in rows["broken"]["status"]
    assert "graded 'getting-started (1).ipynb' as 'getting-started.ipynb'" in rows["partial"]["status"]
    assert rows["partial"]["cells"]["test-distances"] == (2.0, 2.0)
    assert rows["partial"]["cells"]["test-fgsm"] == (0.0, 2.0)


@pytest.mark.slow
def test_grading_runs_in_bounded_time(graded):
    # one interrupted cell costs GRADING_TIMEOUT; everything else is seconds per student
    assert graded["elapsed"] < ROUND_TRIP_LIMIT, f"grading took {graded['elapsed']:.0f} s"


@pytest.mark.slow
def test_graded_runs_use_the_quick_profile_and_nbgrader_marks_them(graded):
    cells = {c.get("id"): c for c in autograded(graded, "full").cells}
    assert "profile 'quick'" in text_of(cells["setup"])
    assert "skipped while grading" in text_of(cells["standard-model"]), "NBGRADER_EXECUTION is set while grading"


@pytest.mark.slow
def test_grades_csv_has_nbgraders_columns(graded):
    with open(graded["root"] / "out" / "grades.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == CSV_COLUMNS + ["status", "cells"]
        scores = {row["student_id"]: float(row["score"]) for row in reader}
    assert scores == {s: r["score"] for s, r in graded["rows"].items()}


@pytest.mark.slow
def test_the_course_directory_is_kept(graded):
    course = graded["root"] / "course"
    assert (course / "gradebook.db").is_file() and (course / "nbgrader_config.py").is_file()
    assert "c.Execute.timeout = 15" in (course / "nbgrader_config.py").read_text()
    assert (course / "robustlab-grading.log").is_file()
    assert (course / "summary-lab0.txt").is_file() and (course / "reports" / "lab0.json").is_file()
    assert (course / "autograded" / "broken" / "lab0" / "getting-started.ipynb").is_file()


# --------------------------------------------------------------------------- argument checks and the CLI


def test_autograde_names_a_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="submissions"):
        grading.autograde(tmp_path / "missing", lab="lab0", out=None, source=SOLUTIONS)


def test_autograde_names_an_unknown_lab(tmp_path):
    with pytest.raises(ValueError, match="lab: unknown lab 'lab99'"):
        grading.autograde(tmp_path, lab="lab99", out=None, source=SOLUTIONS)


def test_autograde_refuses_empty_submissions(tmp_path):
    (tmp_path / "alice").mkdir()
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "loose.ipynb")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", grading.GradingWarning)
        with pytest.raises(ValueError, match="submissions: no student submissions.*loose.ipynb"):
            grading.autograde(tmp_path, lab="lab0", out=None, source=SOLUTIONS)


@pytest.mark.parametrize("timeout, error", [(0, ValueError), (-5, ValueError), ("10", TypeError), (float("inf"), ValueError)])
def test_autograde_checks_the_timeout(tmp_path, timeout, error):
    (tmp_path / "alice").mkdir()
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "alice" / "x.ipynb")
    with pytest.raises(error, match="timeout"):
        grading.autograde(tmp_path, lab="lab0", out=None, timeout=timeout, source=SOLUTIONS)


def test_release_names_unknown_labs_and_folders(tmp_path):
    with pytest.raises(ValueError, match="labs: unknown lab 'nope'"):
        grading.release(source=SOLUTIONS, release=tmp_path, labs=["nope"])
    with pytest.raises(ValueError, match="source: folder not found"):
        grading.release(source=tmp_path / "missing", release=tmp_path)


def test_cli_reports_errors(tmp_path, capsys):
    assert main(["labs", "release", "nope", "--source", str(SOLUTIONS), "--release", str(tmp_path)]) == 2
    assert "unknown lab 'nope'" in capsys.readouterr().err
    assert main(["labs", "autograde", str(tmp_path / "none"), "--lab", "lab0", "--source", str(SOLUTIONS)]) == 2
    assert "submissions: folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["labs", "autograde", str(tmp_path)])  # --lab is required


def test_cli_autograde_prints_a_table(tmp_path, monkeypatch, capsys):
    calls = {}

    def fake_autograde(submissions, **kwargs):
        calls.update(kwargs, submissions=submissions)
        return [{"student_id": "alice", "score": 10.0, "max_score": 10.0, "status": "graded"},
                {"student_id": "bob", "score": 4.0, "max_score": 10.0, "status": "timed out in cell fgsm"}]

    monkeypatch.setattr(grading, "autograde", fake_autograde)
    status = main(["labs", "autograde", "subs", "--lab", "lab0", "--out", "g.csv", "--timeout", "20",
                   "--course-dir", "course", "--jobs", "3", "--total-timeout", "100", "--memory-mb", "1000",
                   "--output-kb", "0", "--sandbox", "none", "--lms", "l.csv"])
    assert status == 0
    assert calls == {"submissions": "subs", "lab": "lab0", "out": "g.csv", "course_dir": "course",
                     "timeout": 20.0, "source": "solutions", "jobs": 3, "total_timeout": 100.0,
                     "limits": {**grading.DEFAULT_LIMITS, "memory_mb": 1000.0, "output_kb": None},
                     "sandbox": "none", "kernel": None, "lms": "l.csv"}
    out = capsys.readouterr().out
    assert "alice" in out and "10.0" in out and "bob" in out and "4.0" in out and "timed out in cell fgsm" in out


def test_cli_warmup_trains_the_profiles_standard_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(rl.config._state, "profile", None)
    monkeypatch.setitem(rl.config._state, "cache_dir", None)
    seen = {}

    def fake_trained_model():
        seen["profile"], seen["cache"] = rl.profile().name, rl.cache_dir()
        return rl.train.Trained(torch.nn.Linear(1, 1), rl.train.History(test_acc=[0.5], from_cache=True))

    monkeypatch.setattr(rl.train, "trained_model", fake_trained_model)
    assert main(["warmup", "--chapter", "1", "--profile", "full", "--cache-dir", str(tmp_path)]) == 0  # chapter 1: the standard model
    assert seen == {"profile": "full", "cache": tmp_path}
    assert "loaded from the cache" in capsys.readouterr().out


@pytest.mark.slow
def test_python_dash_m_robustlab_runs():
    proc = subprocess.run([sys.executable, "-m", "robustlab", "--help"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and "labs" in proc.stdout and "warmup" in proc.stdout
