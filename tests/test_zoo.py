import json
import re
import time
from pathlib import Path

import pytest
import torch

import robustlab as rl
from robustlab import zoo
from robustlab.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def smoke(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBUSTLAB_SMOKE", "1")
    rl.config.set_cache_dir(tmp_path / "cache")
    return tmp_path / "cache"


def test_every_recipe_builds_under_smoke_quickly_and_then_loads_from_the_cache(smoke):
    start = time.perf_counter()
    first = zoo.warm(out=None)
    seconds = time.perf_counter() - start
    assert [r.name for r in first] == list(zoo.RECIPES)
    assert all(r.trained and r.files >= 1 for r in first), [r for r in first if not r.trained]
    assert seconds < 120, f"warming every recipe under ROBUSTLAB_SMOKE took {seconds:.0f} s"
    again = zoo.warm(out=None)
    assert not any(r.trained for r in again), [r.name for r in again if r.trained]
    assert all(r.seconds >= 0 for r in again)


def test_the_notebooks_calls_load_what_the_recipes_trained(smoke):
    zoo.warm(chapter=7, out=None)
    # chapter 7 asks for these with the same arguments: nothing trains again
    assert rl.train.trained_model().history.from_cache
    assert all(rl.training.robust_model(method="noise", sigma=s).history.from_cache for s in (0.12, 0.25, 0.5))
    zoo.warm(chapter=5, out=None)
    assert rl.certify.bounds.ibp_trained_model(eps=0.1).history.from_cache  # chapter 5's eps_train


def test_warmup_chapter_trains_exactly_that_chapters_recipes_and_prints_times(smoke, capsys):
    assert main(["warmup", "--chapter", "7"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if re.match(r"^\S+\s+(trained|loaded)", line)]
    assert [line.split()[0] for line in rows] == zoo.names(chapter=7) == ["standard", "noise-0.12", "noise-0.25",
                                                                          "noise-0.5"]
    assert all(re.search(r"\d+\.\d s$", line) and "trained" in line for line in rows)
    assert re.match(r"done in \d+\.\d s", out[-1])
    files = {p.name for p in (smoke / "models").glob("*.pt")}
    assert len(files) == 4, "exactly the chapter's four models were trained"
    assert main(["warmup", "--lab", "3"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if re.match(r"^\S+\s+(trained|loaded)", line)]
    assert [line.split()[0] for line in rows] == ["noise-0.25-mlp", "ibp"]
    assert len({p.name for p in (smoke / "models").glob("*.pt")} - files) == 2
    assert main(["warmup", "--chapter", "7"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if re.match(r"^\S+\s+(trained|loaded)", line)]
    assert all("loaded from the cache" in line for line in rows)


def test_warmup_list_names_every_recipe_and_trains_nothing(smoke, capsys):
    assert main(["warmup", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines if not line.startswith(" ")] == list(zoo.RECIPES)
    assert "used by: chapter 5, chapter 15, lab3" in "\n".join(lines)
    assert not smoke.exists() or not any(smoke.rglob("*.pt"))


def test_every_chapter_and_lab_that_trains_has_recipes():
    for chapter in (1, 2, 3, 4, 5, 6, 7, 8, 10):
        assert zoo.names(chapter=chapter), chapter
    for lab in range(5):
        assert zoo.names(lab=lab), lab
    assert zoo.names(chapter=9) == [] and zoo.names(lab=5) == []  # they train nothing through the cache


def _notebook_code(path):
    nb = json.loads(path.read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def test_lab2_recipe_is_the_labs_own():
    code = _notebook_code(ROOT / "solutions" / "lab2" / "adversarial-training.ipynb")
    for var, fn in (("LAB_RECIPE", zoo.lab2_recipe), ("TRAIN_EPS", zoo.lab2_train_eps)):
        m = re.search(rf"^{var} = (\{{.*?\}})\[prof\.name\]", code, re.M)
        assert m, f"{var} not found in Lab 2"
        table = eval(m.group(1), {"dict": dict})  # a literal table of the lab's settings
        for name in ("quick", "full"):
            rl.set_profile(name)
            assert fn() == table[name]


def test_zoo_arguments_are_checked():
    with pytest.raises(ValueError, match="name must be one of"):
        zoo.recipe("nope")
    with pytest.raises(ValueError, match="chapter or lab, not both"):
        zoo.recipes(chapter=1, lab=1)
    with pytest.raises(ValueError, match="chapter"):
        zoo.recipes(chapter=0)
    with pytest.raises(TypeError, match="train_fn must be callable"):
        zoo.profile_model(None)


def test_profile_model_is_the_one_factory(smoke):
    seen = {}

    def train_fn(model, train, test):
        seen.update(model=model, n=len(train.y), training=model.training)
        return "history"

    trained = zoo.profile_model(train_fn, "digits", "mlp", width=1, seed=3, device="cpu")
    assert trained.history == "history" and trained.model is seen["model"] and not trained.model.training
    assert seen["n"] == len(rl.data.load("digits")[0].y)
    fresh = rl.models.build("mlp", "digits", width=1, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(fresh.parameters(), trained.model.parameters()))
