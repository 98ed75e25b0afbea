"""The rendered book: a strict build, then checks of its HTML, driven by `_toc.yml`.

The book is built once (see book_build.py) into a temporary folder with
`jupyter-book build . --path-output TMP -W -n --keep-going`; every check below reads that HTML,
so a chapter added to `_toc.yml` is checked without touching this file.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from book_build import Build, Page, built_book, html_path, notebook_figures, toc_pages
from bs4 import BeautifulSoup

PAGES = toc_pages()
NOTEBOOKS = [p for p in PAGES if p.is_notebook]
CHAPTERS = [p for p in PAGES if p.is_chapter]
BUILD_LIMIT_S = 120


@pytest.fixture(scope="module")
def book() -> Build:
    build = built_book()
    if not build.html.joinpath("index.html").exists():
        pytest.fail(f"the book did not build:\n{build.log[-4000:]}")
    return build


@pytest.fixture(scope="module")
def soups(book: Build) -> dict[Path, BeautifulSoup]:
    """Every HTML page the build wrote (the toc pages, genindex, search, the redirect index)."""
    return {
        p: BeautifulSoup(p.read_text(encoding="utf-8"), "html.parser")
        for p in sorted(book.html.rglob("*.html"))
        if "_static" not in p.parts and "_sources" not in p.parts
    }


def _soup(soups: dict[Path, BeautifulSoup], book: Build, page: Page) -> BeautifulSoup:
    path = html_path(book.html, page)
    assert path in soups, f"{page.docname} from _toc.yml was not rendered ({path})"
    return soups[path]


def _article(soup: BeautifulSoup):
    return soup.select_one("article.bd-article") or soup.select_one("main") or soup


def _local(url: str) -> bool:
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc and not url.startswith(("#", "data:"))


def _target(page_file: Path, url: str) -> Path:
    path = unquote(urlsplit(url).path)
    return (page_file.parent / path).resolve()


def test_build_is_strict_clean_and_fast(book: Build):
    warnings = [line for line in book.log.splitlines() if re.search(r"WARNING|ERROR", line)]
    assert book.returncode == 0, "build failed (warnings are errors):\n" + "\n".join(warnings[:40])
    assert not warnings, "\n".join(warnings[:40])
    assert book.seconds < BUILD_LIMIT_S, f"book build took {book.seconds:.0f} s"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.docname)
def test_toc_page_rendered_with_title(book: Build, soups, page: Page):
    soup = _soup(soups, book, page)
    h1 = _article(soup).find("h1")
    assert h1 is not None and h1.get_text(strip=True), f"{page.docname} has no h1 title"
    assert soup.title and soup.title.get_text(strip=True)


def test_index_redirects_to_intro(book: Build):
    index = book.html.joinpath("index.html").read_text()
    assert f"{PAGES[0].docname}.html" in index


def test_no_broken_internal_links_or_resources(book: Build, soups):
    """Every local href/src (pages, anchors, images, scripts, styles, downloads) resolves."""
    ids: dict[Path, set[str]] = {}
    broken = []
    for page_file, soup in soups.items():
        refs = [(a["href"], "a") for a in soup.find_all("a", href=True)]
        refs += [(t["src"], t.name) for t in soup.find_all(["img", "script", "source"], src=True)]
        refs += [(t["href"], "link") for t in soup.find_all("link", href=True)]
        for url, kind in refs:
            rel = page_file.relative_to(book.html)
            if url.startswith("#"):
                frag, target = url[1:], page_file
            elif _local(url):
                target, frag = _target(page_file, url), urlsplit(url).fragment
                if not target.exists():
                    broken.append(f"{rel}: <{kind}> {url} (no such file)")
                    continue
            else:
                continue
            if frag and target.suffix == ".html" and target in soups:
                if target not in ids:
                    ids[target] = {t["id"] for t in soups[target].find_all(id=True)}
                    ids[target] |= {
                        t["name"] for t in soups[target].find_all("a", attrs={"name": True})
                    }
                if unquote(frag) not in ids[target]:
                    broken.append(f"{rel}: <{kind}> {url} (no anchor #{frag})")
    assert not broken, "\n".join(sorted(set(broken))[:60])


def test_every_image_exists_and_is_not_empty(book: Build, soups):
    missing = []
    for page_file, soup in soups.items():
        for img in soup.find_all("img"):
            src = img.get("src", "")
            if not src or not _local(src):
                missing.append(f"{page_file.name}: img src={src!r} is not a local file")
                continue
            target = _target(page_file, src)
            if not target.is_file() or target.stat().st_size == 0:
                missing.append(f"{page_file.name}: {src}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("page", NOTEBOOKS, ids=lambda p: p.docname)
def test_notebook_page_shows_its_figures(book: Build, soups, page: Page):
    expected = notebook_figures(page)
    soup = _soup(soups, book, page)
    shown = [img for img in _article(soup).select(".cell_output img")]
    assert len(shown) == expected, (
        f"{page.docname}: {expected} figures in the notebook, {len(shown)} in the page"
    )
    for img in shown:
        assert _target(html_path(book.html, page), img["src"]).is_file()


def test_intro_links_to_every_chapter(book: Build, soups):
    intro = html_path(book.html, PAGES[0])
    body = _article(_soup(soups, book, PAGES[0]))
    linked = {_target(intro, a["href"]) for a in body.find_all("a", href=True) if _local(a["href"])}
    missing = [c.docname for c in CHAPTERS if html_path(book.html, c).resolve() not in linked]
    assert not missing, f"intro does not link to: {missing}"


def test_intro_has_reading_routes(book: Build, soups):
    body = _article(_soup(soups, book, PAGES[0]))
    headings = [h.get_text(" ", strip=True) for h in body.find_all(["h2", "h3"])]
    for wanted in ("How to use this book", "Route 1", "Route 2"):
        assert any(wanted in h for h in headings), f"intro lacks {wanted!r}: {headings}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.docname)
def test_reader_comfort(book: Build, soups, page: Page):
    """Download button for the page's own source, copy buttons, chapter numbers, no CDN scripts."""
    soup = _soup(soups, book, page)
    page_file = html_path(book.html, page)
    download = soup.select_one("a.btn-download-source-button")
    assert download is not None, "no download button"
    assert download["href"].endswith(page.source.name), download["href"]
    assert _target(page_file, download["href"]).is_file()
    assert soup.select_one(".btn-download-pdf-button"), "no print-to-PDF button"
    assert any("copybutton" in s.get("src", "") for s in soup.find_all("script")), "no copy buttons"
    for script in soup.find_all("script", src=True):
        assert _local(script["src"]), f"external script {script['src']}: the book must work offline"
    assert not soup.find("a", href=re.compile("executablebooks/jupyter-book")), (
        "placeholder repo link"
    )
    if not page.is_root:
        title = _article(soup).find("h1")
        assert title.select_one(".section-number"), f"{page.docname}: chapter number missing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.docname)
def test_math_uses_the_local_mathjax(book: Build, soups, page: Page):
    soup = _soup(soups, book, page)
    if not _article(soup).select(".math"):
        pytest.skip("no math on this page")
    srcs = [s["src"] for s in soup.find_all("script", src=True) if "mathjax" in s["src"].lower()]
    assert srcs, "page has math but loads no MathJax"
    for src in srcs:
        assert _local(src) and _target(html_path(book.html, page), src).is_file(), src


def test_design_docs_have_checkpoint_dropdowns_and_bibliography(book: Build, soups):
    """Chapter design documents fold their interview answers and end with their references."""
    problems = []
    for page in CHAPTERS:
        if page.is_notebook or not re.match(r"book/\d\d_", page.docname):
            continue
        body = _article(_soup(soups, book, page))
        if body.find(string=re.compile("Interview checkpoint")) and not body.select(
            ".admonition.dropdown"
        ):
            problems.append(f"{page.docname}: checkpoint answers are not dropdowns")
        cites = re.search(r"\{cite[:p}t]", page.source.read_text())
        if cites and not body.select(".citation, .bibtex, dl.citation, div.citation"):
            problems.append(f"{page.docname}: cites sources but renders no bibliography")
    assert not problems, "\n".join(problems)
