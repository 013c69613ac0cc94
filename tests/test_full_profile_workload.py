"""The full profile's workload sizes: the Profile fields, the benchmark that counts them, the book's table."""

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest

import robustlab as rl

ROOT = Path(__file__).resolve().parent.parent
CHAPTER_NUMBERS = sorted(p.name[:2] for p in (ROOT / "book").glob("[0-9][0-9]-*.ipynb"))


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("full_profile_workload", ROOT / "benchmarks" / "full_profile_workload.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_profile_fields_exist_and_the_quick_sizes_are_unchanged():
    names = {f.name for f in dataclasses.fields(rl.config.Profile)}
    assert {"n_certify", "n_smoothing"} <= names
    quick, full = rl.config.PROFILES["quick"], rl.config.PROFILES["full"]
    assert (quick.n_certify, quick.n_smoothing) == (100, 1_000)  # the sizes chapter 7 always had under quick
    assert (full.n_certify, full.n_smoothing) == (500, 10_000)


def test_smoke_caps_the_smoothing_sizes(monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_SMOKE", "1")
    monkeypatch.setenv("ROBUSTLAB_PROFILE", "full")
    monkeypatch.setitem(rl.config._state, "profile", None)
    p = rl.profile()
    assert (p.n_certify, p.n_smoothing) == (16, 100)


def test_benchmark_counts_the_full_profile_sizes(bench):
    assert bench.FULL == rl.config.PROFILES["full"]
    full = rl.config.PROFILES["full"]
    _, rel = bench.relative_costs()
    items = dict((what, fe) for what, fe, _ in bench.workload(rel)["07"])
    certify = [fe for what, fe in items.items() if what.startswith("CERTIFY on 4 models")]
    assert certify == [4 * full.n_certify * (100 + full.n_smoothing)]


def test_every_chapter_is_estimated_at_minutes_on_a_gpu(bench):
    minutes = bench.gpu_minutes()
    assert set(minutes) == set(CHAPTER_NUMBERS), "every chapter of book/ needs a workload in the benchmark"
    for ch, (cold, warm) in minutes.items():
        assert 0 <= warm <= cold <= 10, (ch, cold, warm)
    # the sizes were chosen for this: the certification chapter at most 5 minutes with its models cached
    assert minutes["07"][1] <= 5


def test_the_books_table_is_the_benchmarks_output(bench):
    text = (ROOT / "book" / "intro.md").read_text(encoding="utf-8")
    section = text.split("(sec-full-profile-time)=", 1)[1]
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \| ([^|]+) \|", section, flags=re.M)
    assert [f"{int(ch):02d}" for ch, _, _ in rows] == CHAPTER_NUMBERS

    def shown(v):
        return "< 0.1" if v < 0.05 else f"{v:.1f}"

    minutes = bench.gpu_minutes()
    for ch, cold, warm in rows:
        assert (cold.strip(), warm.strip()) == tuple(shown(v) for v in minutes[f"{int(ch):02d}"]), ch


def test_chapter_5_counts_the_measured_bound_costs(bench):
    fresh = bench.bound_costs(reps=1)
    recorded = bench.MEASURED_BOUND_COSTS
    assert set(fresh) == set(recorded)
    # the dual network carries one column per hidden unit: a dual step costs far more than an IBP step
    assert fresh["dual_step"] > 10 * fresh["ibp_step"] > 10
    # (how close a fresh measurement comes to the recorded one depends on the machine's load:
    # the benchmark prints both side by side; a test does not time it)
    _, rel = bench.relative_costs()
    items = {what: fe for what, fe, _ in bench.workload(rel)["05"]}
    dual = [fe for what, fe in items.items() if what.startswith("train the dual MLP")]
    recipe = rl.certify.bounds.DUAL_RECIPES["full"]
    bound_epochs = recipe["epochs"] - recipe["warmup_epochs"]
    assert dual == [pytest.approx(bench.N_TRAIN * bench.FB * rel["mlp16"]
                                  * (recipe["warmup_epochs"] + bound_epochs * recorded["dual_step"]))]
