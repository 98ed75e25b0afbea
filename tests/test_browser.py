"""The rendered book in a real browser: Debian's headless Chromium driven by Selenium.

Serves the HTML built by book_build.py (the same build as tests/test_book.py) from a local
http.server on 127.0.0.1, opens the intro and every page of `_toc.yml`, and checks what a reader
sees: a title, every image decoded (naturalWidth > 0), formulas typeset by the book's own MathJax,
folded interview answers that open on click, copy buttons on code, no severe console errors, no
request leaving 127.0.0.1 (the book works offline), and a clean print of the first chapter.
Screenshots go to _build/screenshots/ (the top of each page, its first figure, its first formula,
the intro's reading routes) with the first chapter's PDF.

Chromium and chromedriver come from Debian (`make browser-deps` installs them as root); Selenium
Manager is never asked to download a browser or driver.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest
from book_build import SCREENSHOTS, Page, built_book, toc_pages

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PAGES = toc_pages()
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]
# Requests the browser makes by itself, not the page: the book has no favicon.
IGNORED_CONSOLE = ("favicon.ico",)

os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not download anything


def chrome(window: str = "1280,1400", script_timeout: float | None = 60):
    """Debian's headless Chromium through Selenium, with the browser console logged: the driver
    of every browser test (the book, the search page, JupyterLab)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--window-size={window}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    if script_timeout is not None:
        driver.set_script_timeout(script_timeout)
    return driver


def _require_chromium() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not missing:
        return
    reason = (
        f"{', '.join(missing)} missing: run `make browser-deps` "
        "(apt-get install chromium chromium-driver)"
    )
    if os.environ.get("CI"):
        pytest.fail(reason + " — CI must run the browser checks")
    pytest.skip(reason)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def site():
    """Base URL of the built book served on 127.0.0.1 (an ephemeral port)."""
    _require_chromium()
    build = built_book()
    if not build.html.joinpath("index.html").exists():
        pytest.fail(f"the book did not build:\n{build.log[-4000:]}")
    handler = functools.partial(_QuietHandler, directory=str(build.html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(site):
    driver = chrome()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    slugs = tuple(page.slug for page in PAGES)
    for old in [
        *SCREENSHOTS.glob("*.png"),
        *SCREENSHOTS.glob("*.pdf"),
    ]:  # only this run's pictures of the
        if old.name.startswith(slugs):  # book (other tests add their own)
            old.unlink()
    yield driver
    driver.quit()


def _open(browser, site: str, page: Page) -> None:
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(f"{site}/{page.docname}.html")
    browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "document.querySelectorAll('img[loading=lazy]').forEach(i => { i.loading = 'eager'; });"
        "const imgs = Array.from(document.images);"
        "Promise.all(imgs.map(i => i.complete ? null"
        " : new Promise(r => {i.onload = i.onerror = r;})))"
        ".then(() => done(true));"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.docname)
def test_page_renders_in_chromium(browser, site, page: Page):
    _open(browser, site, page)
    browser.save_screenshot(str(SCREENSHOTS / f"{page.slug}.png"))  # first, so a failure has one
    title = browser.title.strip()
    h1 = browser.execute_script(
        "const h = document.querySelector('article h1, main h1'); return h ? h.innerText : '';"
    ).strip()
    assert title and h1, f"{page.docname}: title={title!r} h1={h1!r}"

    broken = browser.execute_script(
        "return Array.from(document.images)"
        ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));"
    )
    assert not broken, f"{page.docname}: images that did not load: {broken}"

    n_math = browser.execute_script("return document.querySelectorAll('article .math').length;")
    if n_math:
        typeset = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "if (!window.MathJax || !MathJax.startup) { done(-1); return; }"
            "MathJax.startup.promise"
            ".then(() => done(document.querySelectorAll('article mjx-container').length))"
            ".catch(e => done('error: ' + e));"
        )
        assert typeset == n_math, f"{page.docname}: {n_math} formulas, MathJax typeset {typeset}"
        errors = browser.execute_script("return document.querySelectorAll('mjx-merror').length;")
        assert errors == 0, f"{page.docname}: {errors} formulas with TeX errors"

    code_blocks = browser.execute_script(
        "return document.querySelectorAll('article div.highlight pre').length;"
    )
    if code_blocks:
        buttons = browser.execute_script(
            "return document.querySelectorAll('article button.copybtn').length;"
        )
        assert buttons >= code_blocks, (
            f"{page.docname}: {code_blocks} code blocks, {buttons} copy buttons"
        )

    severe = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and not any(s in entry["message"] for s in IGNORED_CONSOLE)
    ]
    assert not severe, f"{page.docname}: console errors:\n" + "\n".join(severe)
    outside = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith(arguments[0]) && !n.startsWith('data:'));",
        site,
    )
    assert not outside, f"{page.docname}: requests leave the book (it must work offline): {outside}"

    has_figure = browser.execute_script(
        "const i = document.querySelector('article .cell_output img');"
        "if (!i) return false; i.scrollIntoView({block: 'center'}); return true;"
    )
    if has_figure:
        browser.save_screenshot(str(SCREENSHOTS / f"{page.slug}-figure.png"))
    if n_math and browser.execute_script(
        "const m = Array.from(document.querySelectorAll('article mjx-container'))"
        ".find(e => !e.closest('.toggle-hidden, .toggle-details:not([open])'));"
        "if (!m) return false; m.scrollIntoView({block: 'center'}); return true;"
    ):
        browser.save_screenshot(str(SCREENSHOTS / f"{page.slug}-math.png"))
    if page.is_root and browser.execute_script(
        "const s = document.getElementById('how-to-use-this-book');"
        "if (!s) return false; s.scrollIntoView({block: 'start'}); return true;"
    ):
        browser.save_screenshot(str(SCREENSHOTS / f"{page.slug}-how-to-use.png"))


@pytest.mark.parametrize("page", [p for p in PAGES if not p.is_notebook], ids=lambda p: p.docname)
def test_dropdown_answers_fold_and_open(browser, site, page: Page):
    _open(browser, site, page)
    n = browser.execute_script(
        "return document.querySelectorAll('article .admonition.dropdown').length;"
    )
    if not n:
        pytest.skip("no dropdown admonitions on this page")
    before, after = browser.execute_script(
        "const d = document.querySelector('article .admonition.dropdown');"
        "const body = Array.from(d.children).find(c => !c.classList.contains('admonition-title'));"
        "const shown = () => body.offsetParent !== null && body.getBoundingClientRect().height > 0;"
        "const hidden = !shown();"
        "d.querySelector('.admonition-title').click();"
        "return [hidden, shown()];"
    )
    assert before, f"{page.docname}: the first dropdown answer is not folded"
    assert after, f"{page.docname}: the first dropdown answer does not open on click"


def test_first_chapter_prints_cleanly_to_pdf(browser, site):
    """Printing (the download menu's PDF button calls window.print) hides the navigation and opens
    the folded answers; the first chapter's PDF is saved beside the screenshots."""
    import base64
    import re

    from selenium.webdriver.common.print_page_options import PrintOptions

    chapter = next(p for p in PAGES if p.is_chapter)
    _open(browser, site, chapter)
    browser.execute_script("window.dispatchEvent(new Event('beforeprint'));")
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        hidden = browser.execute_script(
            "return ['.bd-sidebar-primary', '.bd-sidebar-secondary', '.bd-header-article']"
            ".map(s => document.querySelector(s))"
            ".filter(e => e && getComputedStyle(e).display !== 'none')"
            ".map(e => e.className);"
        )
        assert not hidden, f"navigation still printed: {hidden}"
        folded = browser.execute_script(
            "return document.querySelectorAll('article .toggle-hidden').length;"
        )
        assert folded == 0, f"{folded} dropdown answers stay folded in print"
        options = PrintOptions()
        options.background = True
        pdf = base64.b64decode(browser.print_page(options))
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    assert pdf.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page\b", pdf))
    assert 1 <= pages <= 40, f"{pages} PDF pages"
    (SCREENSHOTS / f"{chapter.slug}.pdf").write_bytes(pdf)
