"""Throughput of the grader: students per hour per core, and what a 300-student lab costs.

Grades N copies of a lab's solution (each a separate student, so each gets its own nbgrader
run in its own sandboxed kernel) with ``python -m robustlab labs autograde``'s function, once
with one worker and once with two, and prints for each lab

* the wall time of the grading runs (nbgrader's generate_assignment and export included)
  and of the per-student part alone,
* the speed-up of two workers over one, and whether both gave the same scores,
* students per hour per core (from the one-worker run, per-student part),
* the extrapolated wall time of a 300-student lab on 2 and on 16 cores (one worker per
  core, assuming the per-student cost stays what one worker measured here: an upper bound
  of the speed where cores are shared with other work, as on a busy laptop).

    python benchmarks/grading_throughput.py [--labs lab1 lab3] [--copies 2] [--timeout 60]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
import warnings
from pathlib import Path

from robustlab import grading

REPO = Path(__file__).resolve().parents[1]


def grade(lab: str, copies: int, jobs: int, timeout: float) -> tuple[float, float, dict]:
    with tempfile.TemporaryDirectory(prefix="robustlab-bench-") as tmp:
        subs = Path(tmp) / "subs"
        for i in range(copies):
            for path in sorted((REPO / "solutions" / lab).glob("*.ipynb")):
                dest = subs / f"student{i:03d}" / path.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(path.read_bytes())
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", grading.GradingWarning)
            rows = grading.autograde(subs, lab=lab, source=REPO / "solutions", out=None, course_dir=Path(tmp) / "c",
                                     timeout=timeout, jobs=jobs)
        wall = time.perf_counter() - start
        report = json.loads((Path(tmp) / "c" / "reports" / f"{lab}.json").read_text())
    scores = {r["student_id"]: (r["score"], r["max_score"], r["status"]) for r in rows}
    return wall, report["seconds"], scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labs", nargs="+", default=["lab1", "lab3"])
    parser.add_argument("--copies", type=int, default=2, help="students per run (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=60, help="per-cell timeout (default: %(default)s)")
    args = parser.parse_args()
    print(f"sandbox: {'bubblewrap' if grading.sandbox_available() else 'none'}")
    for lab in args.labs:
        wall1, part1, scores1 = grade(lab, args.copies, 1, args.timeout)
        wall2, part2, scores2 = grade(lab, args.copies, 2, args.timeout)
        same = {s: v[:2] for s, v in scores1.items()} == {s: v[:2] for s, v in scores2.items()}
        full = all(v[0] == v[1] and v[2] == "graded" for v in scores1.values())
        per_student = part1 / args.copies  # seconds of one core per student
        per_hour = 3600 / per_student
        print(f"{lab}: {args.copies} students: 1 worker {wall1:.0f} s ({part1:.0f} s grading), "
              f"2 workers {wall2:.0f} s ({part2:.0f} s grading); speed-up {part1 / part2:.2f}x; "
              f"same scores: {same}; full marks and status 'graded': {full}")
        print(f"{lab}: {per_student:.1f} s per student on one core = {per_hour:.0f} students per hour per core")
        for cores in (2, 16):
            minutes = math.ceil(300 / cores) * per_student / 60
            print(f"{lab}: 300 students on {cores} cores: about {minutes:.0f} min "
                  f"({300 * per_student / 3600:.1f} core-hours)")


if __name__ == "__main__":
    main()
