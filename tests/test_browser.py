"""Open the built book in a real browser (headless Chromium) and look at it as a reader would.

Every page of the book's table of contents is loaded from ``_build/html`` over a loopback
HTTP server. A page fails if it is blank, shows a Python traceback, has math that MathJax
did not typeset (or typeset with an error), or has an image that did not load.

In CI (``CI`` set) a missing browser is a failure; elsewhere the test is skipped with a
message saying how to install it. If the book has not been built yet, it is built first.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
HTML = REPO / "_build" / "html"
pytestmark = pytest.mark.slow


def _browser_paths():
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return chrome, driver


def book_pages() -> list[str]:
    """HTML paths of every page in _toc.yml, plus the root index.html."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        for key in ("chapters", "sections"):
            for entry in node.get(key, []) or []:
                if "file" in entry:
                    files.append(entry["file"])
                walk(entry)
        for part in node.get("parts", []) or []:
            walk(part)

    walk(toc)
    return ["index.html"] + [str(Path(f).with_suffix(".html")) for f in files]


@pytest.fixture(scope="module")
def server(built_book):
    handler = functools.partial(_QuietHandler, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    chrome, driver_path = _browser_paths()
    if chrome is None or driver_path is None:
        message = ("no Chromium browser and chromedriver found (Debian: apt-get install chromium chromium-driver); "
                   "the browser test of the built book is skipped")
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: " + message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    profile = tempfile.mkdtemp(prefix="rl-chrome-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", f"--user-data-dir={profile}", "--window-size=1280,1600"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    drv.set_page_load_timeout(60)
    drv.set_script_timeout(60)
    yield drv
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


# Waits for MathJax (if the page loads it) to finish typesetting, then reports what a reader sees.
INSPECT = r"""
const done = arguments[arguments.length - 1];
function report() {
  const imgs = Array.from(document.images).map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0}));
  const mathNodes = Array.from(document.querySelectorAll('.math, span.math, div.math'));
  const unrendered = mathNodes.filter(n => !n.querySelector('mjx-container') && !n.closest('mjx-container')).map(n => n.textContent.slice(0, 80));
  const main = document.querySelector('main') || document.body;
  done({
    text: main.innerText,
    title: document.title,
    images: imgs,
    mathCount: mathNodes.length,
    mjxCount: document.querySelectorAll('mjx-container').length,
    mathErrors: document.querySelectorAll('mjx-merror').length,
    unrendered: unrendered,
    mathjaxLoaded: typeof window.MathJax !== 'undefined' && !!(window.MathJax.startup),
    tracebacks: document.querySelectorAll('.output.traceback, .output.error, .cell_output .traceback').length,
  });
}
if (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) {
  window.MathJax.startup.promise.then(report, report);
} else if (document.querySelector('.math')) {
  // MathJax is still loading: give it a moment, then report whatever is there
  setTimeout(() => {
    if (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) {
      window.MathJax.startup.promise.then(report, report);
    } else { report(); }
  }, 3000);
} else { report(); }
"""


@pytest.mark.parametrize("page", book_pages())
def test_page_renders_for_a_reader(page, server, browser, tmp_path_factory):
    browser.get(f"{server}/{page}")
    seen = browser.execute_async_script(INSPECT)
    shot = tmp_path_factory.mktemp("screens") / (page.replace("/", "_") + ".png")
    browser.save_screenshot(str(shot))
    text = seen["text"]
    assert len(text.strip()) > 300, f"{page} looks blank ({len(text.strip())} characters of text)"
    assert "Traceback (most recent call last)" not in text and seen["tracebacks"] == 0, f"{page} shows a Python traceback"
    assert "Error" not in seen["title"], seen["title"]
    broken = [i["src"] for i in seen["images"] if not i["ok"]]
    assert not broken, f"{page} has images that did not load: {broken}"
    if seen["mathCount"]:
        assert seen["mathjaxLoaded"], f"{page} has math but MathJax did not load (is it served offline?)"
        assert not seen["unrendered"], f"{page} has math that was not typeset: {seen['unrendered'][:3]}"
        assert seen["mathErrors"] == 0, f"{page} has {seen['mathErrors']} MathJax errors"
    for raw in ("$$", "\\begin{", "\\frac{"):
        assert raw not in text, f"{page} shows raw TeX ({raw!r}) as text"


def test_the_chapter_pages_have_figures(server, browser):
    chapters = [p for p in book_pages() if p.startswith("book/") and "intro" not in p]
    assert chapters, "the table of contents lists no chapter"
    for page in chapters:
        browser.get(f"{server}/{page}")
        seen = browser.execute_async_script(INSPECT)
        assert len(seen["images"]) >= 3, f"{page} shows only {len(seen['images'])} images"
        assert seen["mathCount"] > 0 and seen["mjxCount"] > 0, f"{page} has no typeset math"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
