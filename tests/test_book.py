"""The book's structure: configuration, table of contents, clean chapter sources, launch links."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((REPO / "_config.yml").read_text())
CHAPTERS = sorted((REPO / "book").glob("*.ipynb"))


def _toc_files():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        for part in node.get("parts", []) or []:
            walk(part)
        for key in ("chapters", "sections"):
            for entry in node.get(key, []) or []:
                if "file" in entry:
                    files.append(entry["file"])
                walk(entry)

    walk(toc)
    return files


def test_execution_is_cached_with_a_cell_timeout_and_no_errors_allowed():
    ex = CONFIG["execute"]
    assert ex["execute_notebooks"] == "cache"
    assert 0 < int(ex["timeout"]) <= 1800
    assert not ex.get("allow_errors", False)
    assert CONFIG.get("only_build_toc_files") is True


def test_math_is_served_offline_and_citations_come_from_bibtex():
    assert "sphinx-mathjax-offline" in CONFIG["sphinx"]["extra_extensions"]
    for bib in CONFIG["bibtex_bibfiles"]:
        assert (REPO / bib).is_file(), bib


def test_launch_buttons_are_configured_from_the_repository():
    repo = CONFIG["repository"]
    assert repo["url"].startswith("https://github.com/")
    assert "colab.research.google.com" in CONFIG["launch_buttons"]["colab_url"]
    assert CONFIG["launch_buttons"]["binderhub_url"].startswith("https://")
    assert CONFIG["html"].get("use_download_button", True)


def test_every_chapter_is_in_the_toc_and_every_toc_entry_exists():
    files = _toc_files()
    for f in files:
        matches = [p for p in REPO.glob(f + ".*") if p.suffix in (".md", ".ipynb")] + ([REPO / f] if (REPO / f).suffix else [])
        assert any(m.is_file() for m in matches), f"_toc.yml names {f}, which does not exist"
    for ch in CHAPTERS:
        assert str(ch.relative_to(REPO).with_suffix("")) in files, f"{ch.name} is not in _toc.yml"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_sources_are_committed_clean_and_use_the_package(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        f"{path.name} carries outputs; the book executes chapters at build time"
    source = "\n".join("".join(c["source"]) for c in code)
    assert "import robustlab as rl" in source
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.slow
@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_launch_and_download_links_open_this_chapter(path, built_book):
    page = built_book / path.relative_to(REPO).with_suffix(".html")
    html = page.read_text()
    hrefs = set(re.findall(r'href="([^"]+)"', html))
    rel = path.relative_to(REPO).as_posix()
    repo = urlparse(CONFIG["repository"]["url"]).path.strip("/")
    branch = CONFIG["repository"].get("branch", "main")

    colab = [h for h in hrefs if "colab.research.google.com" in h]
    assert colab == [f"https://colab.research.google.com/github/{repo}/blob/{branch}/{rel}"], colab

    binder = [h for h in hrefs if h.startswith(CONFIG["launch_buttons"]["binderhub_url"].rstrip("/"))]
    assert len(binder) == 1, binder
    b = urlparse(binder[0])
    assert b.path == f"/v2/gh/{repo}/{branch}", binder[0]
    assert unquote(b.query).endswith(rel), binder[0]

    # the download button offers the .ipynb source, which the build copies next to the page
    downloads = [h for h in hrefs if h.endswith(".ipynb") and "colab" not in h and "binder" not in h and not h.startswith("http")]
    assert downloads, "no .ipynb download link"
    for h in downloads:
        target = (page.parent / h).resolve()
        assert target.is_file(), f"download link {h} points nowhere"
        assert json.loads(target.read_text())["cells"], "the downloaded notebook is empty"
