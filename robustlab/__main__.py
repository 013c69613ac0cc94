"""The ``robustlab`` command line (``python -m robustlab`` or the ``robustlab`` script).

Subcommands::

    robustlab labs release [LAB ...] [--source DIR] [--release DIR]
        Regenerate the student versions labs/<lab>/ from solutions/<lab>/ with nbgrader
        (every lab when none is named).

    robustlab labs autograde SUBMISSIONS --lab LAB [--out grades.csv] [--lms lms.csv]
                             [--course-dir DIR] [--jobs N] [--timeout S] [--total-timeout S]
                             [--memory-mb M] [--cpu-s S] [--processes N] [--file-mb M]
                             [--output-kb K] [--sandbox auto|bwrap|none] [--kernel NAME]
                             [--feedback] [--source DIR]
        Grade SUBMISSIONS/<student>/<notebook>.ipynb (or SUBMISSIONS/<student>/<lab>/...)
        with nbgrader, each submission on its own in a sandboxed kernel, N at a time; write
        the grades CSV (with a status per submission), the LMS CSV, and print the summary.

    robustlab labs feedback --course-dir DIR --lab LAB [--out DIR]
        Write each graded student's feedback (HTML, without hidden tests).

    robustlab warmup [--chapter N | --lab N] [--list] [--profile quick|full] [--cache-dir DIR]
        Train and cache every trained model the chapters and labs use (the recipes of
        robustlab.zoo), or one chapter's or lab's, printing what was trained or loaded
        from the cache and how long each took; --list only lists the recipes.

See :mod:`robustlab.grading` for what release and autograde do.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``robustlab`` command."""
    parser = argparse.ArgumentParser(
        prog="robustlab",
        description="Course tools of robustlab: release and autograde the labs, warm the model cache.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    labs = commands.add_parser("labs", help="release and autograde the nbgrader labs",
                               description="Release, autograde and return the nbgrader labs.")
    lab_commands = labs.add_subparsers(dest="labs_command", metavar="ACTION", required=True)

    rel = lab_commands.add_parser(
        "release", help="regenerate the student versions of the labs",
        description="Regenerate RELEASE/<lab>/ from SOURCE/<lab>/ with nbgrader generate_assignment.",
    )
    rel.add_argument("labs", nargs="*", metavar="LAB", help="labs to release (default: every lab in --source)")
    rel.add_argument("--source", default="solutions", metavar="DIR", help="lab sources (default: %(default)s)")
    rel.add_argument("--release", default="labs", metavar="DIR", help="student versions (default: %(default)s)")

    from .grading import DEFAULT_LIMITS, DEFAULT_TIMEOUT, DEFAULT_TOTAL_TIMEOUT

    grade = lab_commands.add_parser(
        "autograde", help="grade students' submissions of a lab",
        description=(
            "Grade the submissions of one lab with nbgrader. SUBMISSIONS holds one folder per student "
            "(its name is the student id) with the lab's notebook in it, either directly "
            "(SUBMISSIONS/<student>/<notebook>.ipynb) or in a folder named after the lab "
            "(SUBMISSIONS/<student>/<lab>/<notebook>.ipynb)."
        ),
    )
    grade.add_argument("submissions", metavar="SUBMISSIONS", help="folder of student folders")
    grade.add_argument("--lab", required=True, help="lab id, e.g. lab0")
    grade.add_argument("--out", default="grades.csv", metavar="CSV", help="grades file to write (default: %(default)s)")
    grade.add_argument("--course-dir", default="nbgrader-course", metavar="DIR",
                       help="nbgrader's course directory, kept: gradebook, graded notebooks, log, reports "
                            "(default: %(default)s)")
    grade.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                       help="seconds one cell may run before it is interrupted (default: %(default)s)")
    grade.add_argument("--source", default="solutions", metavar="DIR", help="lab sources (default: %(default)s)")
    grade.add_argument("--lms", default="lms.csv", metavar="CSV",
                       help="LMS file to write: one row per student, one column per lab (default: %(default)s)")
    grade.add_argument("--jobs", type=int, default=None, metavar="N",
                       help="submissions graded at a time (default: one per core)")
    grade.add_argument("--total-timeout", type=float, default=DEFAULT_TOTAL_TIMEOUT, metavar="S",
                       help="seconds one notebook may run in all (default: %(default)s)")
    for key, unit in (("memory_mb", "MiB of address space"), ("cpu_s", "CPU seconds"),
                      ("processes", "processes"), ("file_mb", "MiB per file written"),
                      ("output_kb", "KiB of output kept per cell")):
        grade.add_argument("--" + key.replace("_", "-"), type=float, default=DEFAULT_LIMITS[key], metavar="X",
                           help=f"limit of a graded kernel: {unit} (default: %(default)s; 0: none)")
    grade.add_argument("--sandbox", choices=("auto", "bwrap", "none"), default="auto",
                       help="isolation of the graded kernels (default: %(default)s: bubblewrap where it works)")
    grade.add_argument("--kernel", default=None, metavar="NAME",
                       help="grade with this kernel spec of yours (e.g. a container kernel) instead of the sandbox")
    grade.add_argument("--feedback", action="store_true",
                       help="also write each student's feedback (COURSE_DIR/feedback/<student>/<lab>/)")

    fb = lab_commands.add_parser(
        "feedback", help="write each graded student's feedback",
        description="Write each graded student's feedback for a lab with nbgrader generate_feedback "
                    "(HTML, without hidden tests), from a course directory that autograde filled.",
    )
    fb.add_argument("--course-dir", required=True, metavar="DIR", help="the course directory of autograde")
    fb.add_argument("--lab", required=True, help="lab id, e.g. lab0")
    fb.add_argument("--out", default=None, metavar="DIR", help="also copy the feedback to DIR/<student>/")

    warm = commands.add_parser(
        "warmup", help="train and cache the models of the chapters and labs",
        description="Train (or load from the cache) every trained model the chapters and labs use, "
                    "the recipes of robustlab.zoo, so that a lecture on any chapter starts warm.",
    )
    which = warm.add_mutually_exclusive_group()
    which.add_argument("--chapter", type=int, default=None, metavar="N", help="only chapter N's models")
    which.add_argument("--lab", type=int, default=None, metavar="N", help="only lab N's models")
    warm.add_argument("--list", action="store_true", help="list the recipes (with their chapters) and train nothing")
    warm.add_argument("--profile", choices=("quick", "full"), default=None,
                      help="profile to warm (default: the active one, ROBUSTLAB_PROFILE or quick)")
    warm.add_argument("--cache-dir", default=None, metavar="DIR",
                      help="model cache (default: ROBUSTLAB_CACHE or ~/.cache/robustlab)")
    return parser


def _release(args) -> int:
    from . import grading

    written = grading.release(source=args.source, release=args.release, labs=args.labs or None)
    for path in written:
        print(f"released {path}")
    return 0


def _autograde(args) -> int:
    from . import grading

    limits = {key: (getattr(args, key) or None) for key in grading.DEFAULT_LIMITS}
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", grading.GradingWarning)
        rows = grading.autograde(args.submissions, lab=args.lab, out=args.out, course_dir=args.course_dir,
                                 timeout=args.timeout, source=args.source, jobs=args.jobs,
                                 total_timeout=args.total_timeout, limits=limits, sandbox=args.sandbox,
                                 kernel=args.kernel, lms=args.lms)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    width = max([len("student")] + [len(row["student_id"]) for row in rows])
    print(f"{'student':<{width}}  {'score':>6}  {'max':>6}  status")
    for row in rows:
        print(f"{row['student_id']:<{width}}  {row['score']:>6.1f}  {row['max_score']:>6.1f}  {row.get('status', '')}")
    print(f"{len(rows)} submission(s) of {args.lab} graded in {time.perf_counter() - start:.0f} s; "
          f"grades in {args.out}, LMS file {args.lms}")
    if args.feedback:
        written = grading.feedback(args.course_dir, args.lab)
        print(f"feedback for {len(written)} notebook(s) in {args.course_dir}/feedback")
    return 0


def _feedback(args) -> int:
    from . import grading

    written = grading.feedback(args.course_dir, args.lab, out=args.out)
    for path in written:
        print(f"feedback {path}")
    return 0


def _warmup(args) -> int:
    from . import config, zoo

    if args.profile is not None:
        config.set_profile(args.profile)
    if args.cache_dir is not None:
        config.set_cache_dir(args.cache_dir)
    prof = config.profile()
    todo = zoo.recipes(chapter=args.chapter, lab=args.lab)
    if args.list:
        for r in todo:
            used = ", ".join(f"chapter {c}" if isinstance(c, int) else c for c in r.chapters)
            print(f"{r.name:16s} {r.what}\n{'':16s} used by: {used}")
        return 0
    scope = f"chapter {args.chapter}" if args.chapter is not None else f"lab {args.lab}" if args.lab is not None \
        else "every chapter and lab"
    print(f"profile {prof.name!r} ({prof.dataset}), {scope}: {len(todo)} model(s), cache {config.cache_dir()}")
    start = time.perf_counter()
    zoo.warm(only=[r.name for r in todo], out=lambda line: print(line, flush=True))
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def main(argv=None) -> int:
    """Run the ``robustlab`` command with ``argv`` (default: ``sys.argv[1:]``); return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "warmup":
        handler = _warmup
    elif args.labs_command == "release":
        handler = _release
    elif args.labs_command == "feedback":
        handler = _feedback
    else:
        handler = _autograde
    from .grading import GradingError

    try:
        return handler(args)
    except (ValueError, TypeError, GradingError) as err:
        print(f"robustlab: error: {err}", file=sys.stderr)
        return 2 if not isinstance(err, GradingError) else 1


if __name__ == "__main__":
    sys.exit(main())
