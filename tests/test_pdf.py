"""`make pdf`: the whole book as one PDF, printed by Debian's headless Chromium (no TeX).

Runs book/build_pdf.py, as `make pdf` does, on the book that book_build.py builds once per test
session, then reads the PDF back with pypdf: an outline entry for every page of `_toc.yml` in
reading order, each page's title (taken from its source, not from the PDF tool) in the text of the
page its entry points to, at least one image per figure of each notebook, and no link left pointing
at the temporary local server. The PDF is kept as _build/screenshots/book.pdf.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from book_build import REPO, SCREENSHOTS, built_book, notebook_figures, toc_pages
from test_browser import _require_chromium

PAGES = toc_pages()


def _source_title(page) -> str:
    """The page's `# ` heading, from its Markdown file or its notebook's first Markdown cell."""
    if page.is_notebook:
        cells = json.loads(page.source.read_text())["cells"]
        text = next("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    else:
        text = page.source.read_text()
    return next(line[2:].strip() for line in text.splitlines() if line.startswith("# "))


def _squash(text: str) -> str:
    """Compare text without whitespace, Markdown marks, case, or Sphinx's smart quotes and
    dashes."""
    for fancy, plain in {"’": "'", "‘": "'", "“": '"', "”": '"', "–": "--", "—": "---"}.items():
        text = text.replace(fancy, plain)
    return re.sub(r"[\s`*]+", "", text).casefold()


def _outline(reader) -> list[tuple[int, str, int]]:
    """(depth, title, first page) of every outline entry, in order."""
    entries = []

    def walk(items, depth):
        for item in items:
            if isinstance(item, list):
                walk(item, depth + 1)
            else:
                entries.append((depth, item.title, reader.get_destination_page_number(item)))

    walk(reader.outline, 0)
    return entries


def _images(page) -> int:
    """Image XObjects drawn on a PDF page (directly or inside a form XObject)."""

    def count(resources) -> int:
        n = 0
        for ref in (resources or {}).get("/XObject", {}).values():
            xobject = ref.get_object()
            if xobject.get("/Subtype") == "/Image":
                n += 1
            elif xobject.get("/Subtype") == "/Form":
                n += count(xobject.get("/Resources"))
        return n

    return count(page.get("/Resources"))


@pytest.fixture(scope="module")
def pdf(tmp_path_factory):
    from pypdf import PdfReader

    _require_chromium()
    build = built_book()
    if not build.html.joinpath("index.html").exists():
        pytest.fail(f"the book did not build:\n{build.log[-4000:]}")
    out = tmp_path_factory.mktemp("pdf") / "book.pdf"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "book" / "build_pdf.py"),
            "--html",
            str(build.html),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    print(proc.stdout.splitlines()[-1])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(out, SCREENSHOTS / "book.pdf")
    return PdfReader(out)


def test_outline_lists_every_page_in_reading_order(pdf):
    outline = _outline(pdf)
    assert len(outline) == len(PAGES), [title for _, title, _ in outline]
    for (depth, title, _), page in zip(outline, PAGES):
        assert depth == (0 if page.is_chapter or page.is_root else 1), (title, page.docname)
    starts = [start for _, _, start in outline]
    assert starts[0] == 0 and starts == sorted(set(starts)), (
        f"pages do not follow the table of contents: {starts}"
    )
    assert len(pdf.pages) > len(PAGES)


@pytest.mark.parametrize("index", range(len(PAGES)), ids=[p.docname for p in PAGES])
def test_every_page_title_is_printed_where_the_outline_points(pdf, index):
    page = PAGES[index]
    title = _source_title(page)
    start = _outline(pdf)[index][2]
    text = pdf.pages[start].extract_text()
    assert _squash(title) in _squash(text), (
        f"{page.docname}: {title!r} not on PDF page {start + 1}:\n{text[:500]}"
    )


def test_every_notebook_figure_is_an_image_in_the_pdf(pdf):
    starts = [start for _, _, start in _outline(pdf)] + [len(pdf.pages)]
    short = {}
    for i, page in enumerate(PAGES):
        if page.is_notebook:
            images = sum(_images(pdf.pages[p]) for p in range(starts[i], starts[i + 1]))
            if images < notebook_figures(page):
                short[page.docname] = (images, notebook_figures(page))
    assert not short, f"(images in the PDF, figures in the notebook): {short}"
    assert sum(notebook_figures(p) for p in PAGES if p.is_notebook) > 0


def test_links_between_pages_stay_inside_the_pdf(pdf):
    internal, to_server = 0, []
    for page in pdf.pages:
        for ref in page.get("/Annots") or []:
            action = ref.get_object().get("/A") or {}
            if action.get("/S") == "/GoTo":
                internal += 1
            elif str(action.get("/URI", "")).startswith(("http://127.0.0.1", "http://localhost")):
                to_server.append(action["/URI"])
    assert internal > 0, "no link between the book's pages survived"
    assert not to_server, f"links to the temporary local server: {to_server[:5]}"
