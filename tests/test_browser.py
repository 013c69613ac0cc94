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


def load(browser, url: str) -> str:
    """Open ``url``, follow any redirect (the root index.html is one) and wait until the
    landing page has loaded; returns the final URL."""
    import time

    browser.get(url)
    deadline, last = time.monotonic() + 20, None
    while time.monotonic() < deadline:
        state = browser.execute_script("return document.body ? document.readyState : 'loading'")
        current = browser.current_url
        if state == "complete" and current == last:
            return current
        last = current
        time.sleep(0.3)
    raise AssertionError(f"{url} did not finish loading (last at {last})")


@pytest.mark.parametrize("page", book_pages())
def test_page_renders_for_a_reader(page, server, browser, tmp_path_factory):
    final = load(browser, f"{server}/{page}")
    if page == "index.html":  # the root page sends the reader to the landing page
        assert final.endswith(book_pages()[1]), f"index.html leads to {final}"
    seen = browser.execute_async_script(INSPECT)
    shot = tmp_path_factory.mktemp("screens") / (page.replace("/", "_") + ".png")
    browser.save_screenshot(str(shot))
    assert not problems(seen), f"{page}: {problems(seen)} (screenshot {shot})"


def problems(seen: dict) -> list[str]:
    """What a reader would see wrong on a page, from the INSPECT report."""
    found = []
    text = seen["text"]
    if len(text.strip()) <= 300:
        found.append(f"blank page ({len(text.strip())} characters of text)")
    if "Traceback (most recent call last)" in text or seen["tracebacks"]:
        found.append("a Python traceback is shown")
    broken = [i["src"] for i in seen["images"] if not i["ok"]]
    if broken:
        found.append(f"images did not load: {broken}")
    if seen["mathCount"]:
        if not seen["mathjaxLoaded"]:
            found.append("math present but MathJax did not load")
        if seen["unrendered"]:
            found.append(f"math not typeset: {seen['unrendered'][:3]}")
        if seen["mathErrors"]:
            found.append(f"{seen['mathErrors']} MathJax errors")
    for raw in ("$$", "\\begin{", "\\frac{"):
        if raw in text:
            found.append(f"raw TeX {raw!r} shown as text")
    return found


def test_the_checks_catch_a_broken_page(browser, tmp_path):
    """The inspection must flag a page with a traceback, a missing image and untypeset math."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<html><body><main><h1>Broken</h1>"
        + "<p>" + "Some words of a chapter. " * 20 + "</p>"
        + "<pre>Traceback (most recent call last):\n  File ...\nValueError: boom</pre>"
        + '<img src="missing.png" alt="missing">'
        + '<span class="math notranslate nohighlight">\\(x^2\\)</span>'
        + "<p>$$\\frac{a}{b}$$</p></main></body></html>"
    )
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        load(browser, f"http://127.0.0.1:{httpd.server_address[1]}/broken.html")
        found = " | ".join(problems(browser.execute_async_script(INSPECT)))
    finally:
        httpd.shutdown()
    for expected in ("traceback", "images did not load", "MathJax did not load", "math not typeset", "raw TeX"):
        assert expected in found, f"the browser check missed: {expected} (it found: {found})"


def test_the_chapter_pages_have_figures(server, browser):
    chapters = [p for p in book_pages() if p.startswith("book/") and "intro" not in p]
    assert chapters, "the table of contents lists no chapter"
    for page in chapters:
        load(browser, f"{server}/{page}")
        seen = browser.execute_async_script(INSPECT)
        assert len(seen["images"]) >= 3, f"{page} shows only {len(seen['images'])} images"
        assert seen["mathCount"] > 0 and seen["mjxCount"] > 0, f"{page} has no typeset math"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
