"""The built website as a reader's browser shows it: each page of ``_toc.yml`` in headless Chromium.

Runs after ``tests/test_book.py`` (both are ``site`` tests, which ``conftest.py`` moves to the end
of the run) on the pages that build wrote to ``_build/html``. For each page it checks, on the
rendered DOM:

* math is typeset: MathJax produced an ``mjx-container`` for every math element Sphinx wrote, and
  no raw ``$$``, ``\\[`` or ``\\(`` is left in the text outside code blocks;
* every image loaded (``naturalWidth > 0``): figures, frames of the kernel-free scrubbers, logos;
* every image has alt text: not missing, not empty, and not a file path (what Sphinx writes when a
  figure has none: ``_images/<hash>.png``); this covers the players' frames and the images the
  widget manager has rendered by then. Only an image hidden from everyone (``display: none`` on
  the image itself, or ``aria-hidden="true"``) is exempt;
* no figure shows the book's own number ("Fig. 16"), which readers would take for the paper's
  (``_static/figures.css`` hides them; captions name the paper figure instead);
* every ipywidget whose state the page embeds was rendered by the widget manager;
* the browser logged no console error and no uncaught exception, and no local file failed to load.

A full-page screenshot of each page goes to ``_build/screenshots/`` (the CI artifact). A second test
moves the slider of a kernel-free scrubber (matplotlib's ``to_jshtml``) and checks that the shown
frame changes.

Offline, the CDN files the pages load (MathJax 3, RequireJS, the ipywidgets HTML manager, the
Font Awesome sheet of matplotlib's players) cannot be fetched. The browser gets the same versions
from npm instead (``tests/browser/package.json``, installed when missing into the git-ignored
``tests/browser/node_modules``): every request to those CDN addresses is answered from the local
copy, and the local server drops the subresource-integrity hash of ``require.js``, whose npm copy
is not byte-identical to the minified cdnjs file. Any other request that would leave the machine
is blocked and fails the test.

Chromium is the system browser (Debian's ``chromium``; or ``$LEAFKIT_CHROMIUM``), driven by
Playwright; no browser is ever downloaded. Without Chromium, npm or a built site the tests skip with
the reason, unless ``LEAFKIT_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where they fail instead.
``LEAFKIT_SITE=<book folder>`` points the test at another book's ``_toc.yml`` and ``_build/html``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(os.environ.get("LEAFKIT_SITE", ROOT)).resolve()
HTML = SITE / "_build" / "html"
SCREENSHOTS = SITE / "_build" / "screenshots"
ASSETS = Path(__file__).resolve().parent / "browser"  # package.json of the local CDN copies
NODE_MODULES = ASSETS / "node_modules"
REQUIRED = os.environ.get("LEAFKIT_REQUIRE_BROWSER") == "1"

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync",
                  "--disable-quic"]
# CDN prefix the pages load from -> folder or file in node_modules (versions pinned in package.json)
CDN_COPIES = {
    "https://cdn.jsdelivr.net/npm/mathjax@3/": "mathjax/",
    "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.4/require.min.js":
        "requirejs/require.js",
    "https://cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager@1.0.6/":
        "@jupyter-widgets/html-manager/",
    "https://maxcdn.bootstrapcdn.com/font-awesome/4.4.0/": "font-awesome/",  # to_jshtml buttons
}
# Console errors that come from the site's third-party stack, not from this book, and do not change
# what a reader sees. Each is matched narrowly, printed by the test, and listed with its cause.
KNOWN_UPSTREAM = {
    r"^uncaught: Identifier 'THEBE_JS_URL' has already been declared":
        "sphinx-thebe 0.3 adds its config script twice under jupyter-book 1.0; the second copy "
        "is a no-op (Thebe is not used by this book)",
    r"^console: Got invalid theme mode: \. Resetting to auto\.":
        "pydata-sphinx-theme logs this on a first visit when sphinx-book-theme sets no default "
        "mode; it then picks the light/dark mode of the system, as intended",
    r"^uncaught: Cannot read properties of undefined \(reading 'Queue'\)":
        "the ipywidgets HTML manager calls MathJax 2's MathJax.Hub.Queue to typeset widget "
        "labels; the book loads MathJax 3, so labels with TeX stay untypeset (plain labels are "
        "unaffected)",
    r"^(?!.*/_offline).*127\.0\.0\.1:\d+/(?:[\w-]+/)*@jupyter-widgets/(?:[\w.-]+/)*"
    r"[0-9a-f]{20}\.(?:woff2?|ttf|eot|svg)\b":
        "html-manager 1.0.6 resolves its icon fonts against the page instead of the CDN; widget "
        "icons (e.g. of a Play button) are missing, sliders and labels are unaffected",
}
PAGE_TIMEOUT_MS = 60_000
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def toc_pages() -> list[str]:
    """The pages a reader can reach: index.html and every ``file:`` of ``_toc.yml``, in order."""
    toc = SITE / "_toc.yml"
    if not toc.is_file():
        return ["index.html"]
    files = re.findall(r"^\s*(?:root|-\s*file):\s*(\S+)", toc.read_text(), re.M)
    return ["index.html", *dict.fromkeys(f"{f.removesuffix('.md')}.html" for f in files)]


def unavailable(reason: str):
    """Skip with the reason; in CI (``LEAFKIT_REQUIRE_BROWSER=1``) fail instead."""
    if REQUIRED:
        pytest.fail(f"browser test required but cannot run: {reason}")
    pytest.skip(reason)


def without_sri(html: str) -> str:
    """Drop the subresource-integrity hashes of the CDN scripts the test replaces by npm copies
    (the npm ``require.js`` is not byte-identical to cdnjs's minified file)."""
    def strip(tag: re.Match) -> str:
        text = tag.group(0)
        if any(cdn in text for cdn in CDN_COPIES):
            text = re.sub(r'\s(?:integrity|crossorigin)="[^"]*"', "", text)
        return text
    return re.sub(r"<script\b[^>]*>", strip, html)


def local_copy(url: str) -> Path | None:
    """The npm copy of a CDN file the pages load, or None when the URL is not a known CDN file."""
    for cdn, local in CDN_COPIES.items():
        if url.startswith(cdn):
            rest = url[len(cdn):].split("?")[0].split("#")[0]
            path = (NODE_MODULES / local / rest).resolve()
            return path if path.is_file() and NODE_MODULES in path.parents else None
    return None


class SiteHandler(SimpleHTTPRequestHandler):
    """Serves _build/html as GitHub Pages would, minus the SRI hashes of the replaced CDN files."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        path = self.path.split("?")[0].split("#")[0]
        local = Path(self.translate_path(path + ("index.html" if path.endswith("/") else "")))
        if local.suffix != ".html" or not local.is_file():
            return super().do_GET()
        body = without_sri(local.read_text(encoding="utf-8")).encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture(scope="session")
def site_url():
    """http://127.0.0.1:<port>/ serving the built book, CDN scripts from local npm copies."""
    if not (HTML / "index.html").is_file():
        unavailable(f"no built site at {HTML} (run tests/test_book.py or jupyter-book build first)")
    if not (NODE_MODULES / "mathjax" / "es5" / "tex-mml-chtml.js").is_file():
        npm = shutil.which("npm")
        if npm is None:
            unavailable("npm is not installed: cannot install local MathJax / widget manager")
        proc = subprocess.run([npm, "ci" if (ASSETS / "package-lock.json").is_file() else "install",
                               "--ignore-scripts", "--no-audit", "--no-fund"],
                              cwd=ASSETS, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            unavailable(f"npm could not install tests/browser/package.json:\n{proc.stderr[-2000:]}")
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)  # this run's screenshots and checks only
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SiteHandler, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def browser_context():
    """A fresh headless Chromium profile (system browser driven by Playwright)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -r requirements.txt)")
    names = ["chromium", "chromium-browser", "google-chrome"]
    executable = os.environ.get("LEAFKIT_CHROMIUM") or next(filter(None, map(shutil.which, names)),
                                                            None)
    if executable is None:
        unavailable("no Chromium found (Debian: apt-get install chromium; or set LEAFKIT_CHROMIUM)")
    with tempfile.TemporaryDirectory(prefix="leafkit-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900}, service_workers="block")
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        yield context
        context.close()


class PageVisit:
    """One page opened in the browser, with everything it logged and every request it tried."""

    def __init__(self, context, url: str):
        self.errors: list[str] = []
        self.blocked: list[str] = []
        self.page = context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.on("requestfailed", lambda r: self.errors.append(
            f"failed to load {r.url}: {r.failure}"))
        self.page.on("response", lambda r: r.status >= 400 and not r.url.endswith("/favicon.ico")
                     and self.errors.append(f"HTTP {r.status}: {r.url}"))
        self.page.route(re.compile(r"^(?!http://127\.0\.0\.1[:/]).*"), self._route)
        response = self.page.goto(url, wait_until="load")
        assert response is not None and response.ok, f"{url}: HTTP {response and response.status}"
        source = (HTML / url.split("/", 3)[3]).read_text(encoding="utf-8")
        redirect = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', source, re.I)
        if redirect:  # index.html forwards to the root chapter, as GitHub Pages serves it
            self.page.wait_for_url(re.compile(re.escape(redirect.group(1)) + "$"))
            self.page.wait_for_load_state("load")

    def _console(self, message):
        where = message.location.get("url", "")
        if message.type == "error" and not where.endswith("/favicon.ico"):  # the site has none
            self.errors.append(f"console: {message.text} ({where})")

    def _route(self, route):
        """CDN files come from the npm copies; any other request leaving the machine is recorded
        and aborted."""
        url = route.request.url
        if url.startswith(("data:", "blob:")):
            return route.continue_()
        local = local_copy(url)
        if local is not None:
            return route.fulfill(path=local, headers={"Access-Control-Allow-Origin": "*"})
        self.blocked.append(url)
        return route.abort()

    def problems(self) -> list[str]:
        """Browser errors, minus the known upstream ones (printed, with their cause)."""
        found, known = [], set()
        for error in self.errors:
            why = next((why for rx, why in KNOWN_UPSTREAM.items() if re.search(rx, error)), None)
            if why is None:
                found.append(error)
            else:
                known.add(why)
        for why in sorted(known):
            print(f"  known upstream issue: {why}")
        return found

    def close(self):
        self.page.close()


def wait_for_math(page) -> dict:
    """Wait until MathJax has typeset the page; count math elements before and after."""
    source_math = page.locator("div.math, span.math").count()
    if source_math:
        try:
            page.wait_for_function("() => window.MathJax && MathJax.startup"
                                   " && MathJax.startup.promise")
        except Exception as error:  # noqa: BLE001 (a timeout: say what it means)
            raise AssertionError(f"MathJax never started ({source_math} formulas)") from error
        page.evaluate("() => MathJax.startup.promise")
    typeset = page.locator("mjx-container").count()
    raw = page.evaluate(r"""() => {
        const main = document.querySelector('main') || document.body;
        const copy = main.cloneNode(true);
        copy.querySelectorAll('pre, code, script, style, .highlight, mjx-container')
            .forEach(e => e.remove());
        const text = copy.textContent;
        return ['$$', '\\[', '\\('].filter(d => text.includes(d));
    }""")
    return {"source": source_math, "typeset": typeset, "raw": raw}


RENDERED_VIEWS = """sel => [...document.querySelectorAll(sel)].filter(s => {
    const area = s.previousElementSibling;  // html-manager inserts div.widget-subarea before it
    return area && area.classList.contains('widget-subarea')
        && area.querySelector('.jupyter-widgets');
}).length"""


def wait_for_widgets(page) -> tuple[int, int]:
    """Widget views the page embeds, and how many of them the widget manager rendered."""
    selector = f'script[type="{WIDGET_VIEW}"]'
    views = page.locator(selector).count()
    if views:
        try:
            page.wait_for_function(f"sel => ({RENDERED_VIEWS})(sel) >= {views}", arg=selector)
        except Exception:  # noqa: BLE001 (a timeout: reported by the count below)
            pass
    return views, page.evaluate(RENDERED_VIEWS, selector)


def broken_images(page) -> list[str]:
    """Images that failed to load, after waiting for every image to finish (lazy ones included)."""
    page.evaluate("""() => Promise.all([...document.images].map(img => {
        img.loading = 'eager';
        return img.complete ? null : new Promise(r => { img.onload = img.onerror = r; });
    }))""")
    return page.evaluate("""() => [...document.images]
        .filter(img => img.getAttribute('src') && !(img.complete && img.naturalWidth > 0))
        .map(img => img.getAttribute('src').slice(0, 120))""")


IMAGES_WITHOUT_ALT = r"""() => [...document.images]
    .filter(img => getComputedStyle(img).display !== 'none'
                   && img.getAttribute('aria-hidden') !== 'true')
    .map(img => {
        const src = (img.getAttribute('src') || '').slice(0, 80);
        const alt = img.getAttribute('alt');
        if (alt === null) return `no alt: ${src}`;
        const text = alt.trim();
        if (!text) return `empty alt: ${src}`;
        if (/\.(png|svg|jpe?g|gif)$/i.test(text) || text.startsWith('_images/')
            || text.includes('/'))
            return `alt looks like a file path (${text.slice(0, 60)}): ${src}`;
        return null;
    })
    .filter(problem => problem !== null)"""


VISIBLE_FIGURE_NUMBERS = """() => [...document.querySelectorAll('figure .caption-number')]
    .filter(e => getComputedStyle(e).display !== 'none').map(e => e.textContent.trim())"""


def images_without_alt(page) -> list[str]:
    """Images a reader can see whose alt text is missing, empty or a file path (call it after the
    widgets have rendered, so that their images are in the DOM)."""
    return page.evaluate(IMAGES_WITHOUT_ALT)


def record_checks(page_path: str, counts: dict) -> None:
    """Add one page's counts to ``_build/screenshots/checks.json`` (what the run looked at)."""
    summary_file = SCREENSHOTS / "checks.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    summary[page_path] = counts
    summary_file.write_text(json.dumps(summary, indent=1))
    print(f"{page_path}: {counts}")


@pytest.mark.site
@pytest.mark.parametrize("page_path", toc_pages())
def test_page_renders_in_browser(page_path, site_url, browser_context):
    assert (HTML / page_path).is_file(), f"{page_path} is in _toc.yml but was not built"
    visit = PageVisit(browser_context, site_url + page_path)
    try:
        page = visit.page
        math = wait_for_math(page)
        views, rendered = wait_for_widgets(page)
        broken = broken_images(page)
        no_alt = images_without_alt(page)
        figure_numbers = page.evaluate(VISIBLE_FIGURE_NUMBERS)
        page.wait_for_load_state("networkidle")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / page_path.replace("/", "__").replace(".html", ".png"),
                        full_page=True)
        errors = visit.problems()
        record_checks(page_path, {
            "formulas": math["source"], "typeset": math["typeset"], "raw_tex": math["raw"],
            "images": page.evaluate("() => document.images.length"), "broken_images": broken,
            "images_without_alt": no_alt, "widgets": views, "widgets_rendered": rendered,
            "errors": len(errors),
            "known_upstream_errors": len(visit.errors) - len(errors)})
        assert math["typeset"] >= math["source"], \
            f"MathJax typeset {math['typeset']} of {math['source']} formulas"
        assert not math["raw"], f"raw TeX delimiters left in the page text: {math['raw']}"
        assert not broken, f"images that did not load: {broken}"
        assert not no_alt, "images without alt text:\n" + "\n".join(no_alt)
        assert not figure_numbers, f"the book's own figure numbers are visible: {figure_numbers}"
        assert rendered == views, f"only {rendered} of {views} widgets rendered"
        assert not visit.blocked, f"requests that tried to leave the machine: {visit.blocked}"
        assert not errors, "browser errors:\n" + "\n".join(errors)
    finally:
        visit.close()


def scrubber_pages() -> list[str]:
    """Pages holding a kernel-free scrubber (matplotlib's to_jshtml slider)."""
    return [p for p in toc_pages()
            if (HTML / p).is_file() and "anim-slider" in (HTML / p).read_text()]


@pytest.mark.site
def test_kernel_free_scrubber_moves(site_url, browser_context):
    """Stepping a path's slider in the browser, with no kernel, shows another frame."""
    pages = scrubber_pages()
    if not pages:
        assert (HTML / "index.html").is_file(), "no built site"
        pytest.fail("no page of the book has a kernel-free scrubber (to_jshtml animation)")
    for page_path in pages:
        visit = PageVisit(browser_context, site_url + page_path)
        try:
            sliders = visit.page.locator("input.anim-slider")
            for i in range(sliders.count()):
                slider = sliders.nth(i)
                frame = slider.locator("xpath=ancestor::div[contains(@class,'animation')][1]//img")
                slider.scroll_into_view_if_needed()
                before = frame.get_attribute("src")
                last = int(slider.get_attribute("max"))
                assert last >= 1, f"{page_path}: scrubber {i} has a single frame"
                slider.focus()
                visit.page.keyboard.press("End")  # a reader dragging the slider to the last frame
                assert slider.input_value() == str(last)
                after = frame.get_attribute("src")
                assert after != before, f"{page_path}: scrubber {i} did not change its frame"
                assert frame.evaluate("img => img.complete && img.naturalWidth > 0")
            print(f"{page_path}: {sliders.count()} scrubbers moved")
            errors = visit.problems()
            assert not errors, "browser errors:\n" + "\n".join(errors)
        finally:
            visit.close()
