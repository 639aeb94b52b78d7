"""The built book, read in a real browser (headless Chromium driven by Playwright).

Builds the HTML with warnings as errors (in the profile of the environment: CI uses
``smoke``), then opens every page and checks what a reader would meet: no console errors,
figures that are images with a size and alt text, no traceback or error output, no
markup left unrendered in the prose (a backtick, a ``{glue:...}`` role), internal links that
resolve, launch buttons that point at the chapter's notebook on the configured
repository and branch, and a search that finds "GroupNorm". Screenshots of every page go
to ``artifacts/screenshots/``.

Needs Debian's ``chromium`` (``/usr/bin/chromium``, or ``$CHROMIUM``) and the
``playwright`` package; skipped without them unless ``NORMLAB_REQUIRE_BROWSER=1`` (CI).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
DATA = os.environ.get("NORMLAB_DATA")
REQUIRED = os.environ.get("NORMLAB_REQUIRE_BROWSER") == "1"
#: Prose elements, and what in their text is markup that did not render (inline code shows
#: no backticks; a glued value that carries them, or a role MyST did not parse, does).
PROSE = "article p, article li, article td, article th, article figcaption"
UNRENDERED = re.compile(r"`|\{(glue|doc|numref|cite)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None

missing = [what for what, ok in (("chromium", Path(CHROMIUM).exists()),
                                 ("playwright", sync_playwright is not None),
                                 ("NORMLAB_DATA", bool(DATA))) if not ok]
if missing and REQUIRED:
    raise RuntimeError(f"NORMLAB_REQUIRE_BROWSER=1 but {', '.join(missing)} missing")
pytestmark = pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Build the book once for this module; returns the HTML folder."""
    out = tmp_path_factory.mktemp("book")
    # From stored results and facts only: a chapter that trains or evaluates a model fails
    # the build (CI's reproduce stores them first).
    env = {**os.environ, "NORMLAB_DATA": DATA, "NORMLAB_TRAIN": "never"}
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    subprocess.run([str(jupyter_book), "build", str(ROOT), "--path-output",
                    str(out), "-W", "-n", "--keep-going"], check=True, env=env, cwd=ROOT)
    return out / "_build" / "html"


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def pages(site: Path) -> list[Path]:
    return sorted((site / "book").glob("*.html")) + [site / "index.html"]


def test_every_page_reads_cleanly(site, browser):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    shots = ROOT / "artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    problems = []
    for page_path in pages(site):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        messages = []
        page.on("console", lambda m, log=messages: m.type == "error" and log.append(m.text))
        page.on("pageerror", lambda e, log=messages: log.append(str(e)))
        page.goto(page_path.as_uri(), wait_until="load")
        name = page_path.stem
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
        # the closed network blocks CDN scripts (MathJax, ...): those are not page errors
        errors = [e for e in messages if "net::ERR" not in e and "Failed to load resource" not in e]
        if errors:
            problems.append(f"{name}: console errors {errors}")
        if page.query_selector("article .math") and not page.query_selector("script[src*='mathjax']"):
            problems.append(f"{name}: has equations but does not load MathJax")
        text = page.inner_text("article") if page.query_selector("article") else ""
        if ("Traceback (most recent call last)" in text
                or page.query_selector(".output.traceback, .output.error")):
            problems.append(f"{name}: shows a traceback or an error output")
        for prose in page.eval_on_selector_all(PROSE, "es => es.map(e => e.innerText)"):
            if UNRENDERED.search(prose):
                problems.append(f"{name}: unrendered markup in {prose[:80]!r}")
        for img in page.query_selector_all("article img"):
            size = img.evaluate("i => [i.naturalWidth, i.naturalHeight, i.complete]")
            if not (size[2] and size[0] > 0 and size[1] > 0):
                problems.append(f"{name}: image {img.get_attribute('src')} did not load")
            if not (img.get_attribute("alt") or "").strip():
                problems.append(f"{name}: image {img.get_attribute('src')} has no alt text")
        for href in page.eval_on_selector_all("a[href]", "as => as.map(a => a.getAttribute('href'))"):
            if urlparse(href).scheme or href.startswith(("#", "mailto:")):
                continue
            target = Path(urlparse(urljoin(page.url, href)).path)  # index.html redirects
            if not target.exists():
                problems.append(f"{name}: broken link {href}")
        if page_path.parent.name == "book" and (site / "_sources" / "book" / f"{name}.ipynb").exists():
            launch = page.eval_on_selector_all(
                "a[href*='colab'], a[href*='binder']", "as => as.map(a => a.href)")
            repo = urlparse(config["url"]).path.strip("/")
            want = f"{config['branch']}"
            if not launch or not all(repo in u and want in u and f"book/{name}.ipynb" in u for u in launch):
                problems.append(f"{name}: launch buttons {launch} do not point at book/{name}.ipynb "
                                f"on {repo}@{want}")
        page.close()
    assert not problems, "\n".join(problems)


def test_search_finds_groupnorm(site, browser):
    page = browser.new_page()
    page.goto((site / "search.html").as_uri() + "?q=GroupNorm", wait_until="load")
    page.wait_for_selector("#search-results li", timeout=15000)
    titles = page.eval_on_selector_all("#search-results li a", "as => as.map(a => a.textContent)")
    assert "Normalization from scratch" in titles, titles  # it explains GroupNorm(1, C)
    page.close()
