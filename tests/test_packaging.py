"""The install story: pyproject.toml, environment.yml, the README's Quickstart and CI agree."""

import re
import sys
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
CONDA_TO_PYPI = {"pytorch": "torch"}


def _split(req: str):
    req = req.strip()
    m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$", req)
    name = m.group(1).lower().replace("_", "-")
    spec = ",".join(sorted(s.strip() for s in m.group(3).replace(" ", "").split(",") if s.strip()))
    return name, spec


def _pyproject_requirements():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta["optional-dependencies"].values():
        reqs += [r for r in extra if not r.startswith("robustlab")]
    return dict(_split(r) for r in reqs)


def _environment_requirements():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for r in dep["pip"]:
                if r.startswith("-e"):
                    continue
                name, spec = _split(r)
                out[name] = spec
        else:
            name, spec = _split(dep)
            if name in ("python", "pip"):
                continue
            out[CONDA_TO_PYPI.get(name, name)] = spec
    return out


def test_environment_yml_and_pyproject_name_the_same_dependencies():
    py, env = _pyproject_requirements(), _environment_requirements()
    assert sorted(py) == sorted(env), (set(py) ^ set(env))
    assert py == env, {k: (py[k], env[k]) for k in py if py[k] != env.get(k)}


def test_environment_yml_installs_the_package_itself():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip


def test_dev_extra_pulls_in_book_and_labs():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "robustlab[book,labs]" in meta["optional-dependencies"]["dev"]


def _quickstart(text=None):
    """The commands of the Quickstart block, read as .ci/run and newcomer-check read them: the first
    fenced block after the first heading that contains "Quickstart", without comment and blank lines."""
    text = (REPO / "README.md").read_text() if text is None else text
    lines = text.splitlines()
    heading = next(i for i, ln in enumerate(lines) if re.match(r"#+ .*[Qq]uickstart", ln))
    start = next(i for i in range(heading + 1, len(lines)) if lines[i].startswith("```"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    return [ln for ln in lines[start + 1:end] if ln.strip() and not ln.lstrip().startswith("#")]


def test_quickstart_is_the_first_block_after_the_first_quickstart_heading():
    text = ("# robustlab\n\n```bash\nnot this\n```\n\n## Quickstart\n\nRun:\n\n```bash\n# build\nfirst\n\nsecond\n```\n\n"
            "## Later\n\nThe Quickstart above is what CI runs.\n\n```bash\nlater block\n```\n\n"
            "## Quickstart on a GPU\n\n```bash\nthird\n```\n")
    assert _quickstart(text) == ["first", "second"]


def test_readme_quickstart_has_two_commands_build_then_test():
    cmds = _quickstart()
    assert len(cmds) == 2
    assert "jupyter-book build" in cmds[0] and ".[book]" in cmds[0]
    assert "pytest" in cmds[1] and ".[dev]" in cmds[1]
    assert "--no-deps" in cmds[1] and "torchattacks" in cmds[1]  # the comparison test's yardstick


def test_ci_runs_the_readme_quickstart():
    ci = (REPO / ".ci" / "run").read_text()
    assert "Quickstart" in ci and "README.md" in ci


def test_the_licenses_the_readme_and_pyproject_claim_are_in_the_repository():
    mit = (REPO / "LICENSE").read_text()
    assert mit.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in mit
    text = (REPO / "LICENSE-TEXT.md").read_text()
    assert "CC BY 4.0" in text and "creativecommons.org/licenses/by/4.0" in text
    readme = (REPO / "README.md").read_text()
    assert "[LICENSE](LICENSE)" in readme and "[LICENSE-TEXT.md](LICENSE-TEXT.md)" in readme
    assert re.search(r'license\s*=\s*\{\s*text\s*=\s*"MIT"', (REPO / "pyproject.toml").read_text())
