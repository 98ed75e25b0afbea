"""The whole book as one PDF (`make pdf`): every page of the built HTML printed by headless
Chromium.

No TeX and no downloaded browser: Debian's `chromium` and `chromedriver` (the same ones the book
checks use) print each page of `_toc.yml`, in reading order, as the reader's "print to PDF" would
(the theme's print style hides the navigation and opens the folded answers); `pypdf` merges the
pages, adds an outline entry per chapter with its notebook under it, and turns links between the
book's pages into links inside the PDF.

    .venv/bin/python book/build_pdf.py [--html _build/html] [--out _build/book.pdf]
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import io
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1400",
]
# On paper nothing scrolls: long code lines and outputs wrap, wide tables shrink to the page.
PRINT_CSS = """
@media print {
  pre { white-space: pre-wrap !important; overflow-wrap: anywhere; overflow: visible !important; }
  .highlight, .cell_output, .output, .table-wrapper { overflow: visible !important; }
  .cell_output table { font-size: 0.72em; }
}
"""
A4 = {
    "paperWidth": 8.27,
    "paperHeight": 11.69,
    "marginTop": 0.5,
    "marginBottom": 0.5,
    "marginLeft": 0.5,
    "marginRight": 0.5,
    "printBackground": True,
}


@dataclass(frozen=True)
class Entry:
    """One page of `_toc.yml`: its docname (e.g. "book/09_end_to_end") and its depth (0 =
    chapter)."""

    docname: str
    depth: int


def toc_entries(toc_file: Path) -> list[Entry]:
    """The root page and every `file` entry of `_toc.yml`, in reading order."""
    toc = yaml.safe_load(toc_file.read_text())
    entries = [Entry(Path(toc["root"]).with_suffix("").as_posix(), 0)]

    def walk(items: list, depth: int) -> None:
        for item in items or []:
            if "file" in item:
                entries.append(Entry(Path(item["file"]).with_suffix("").as_posix(), depth))
            walk(item.get("sections", []), depth + 1)
            walk(item.get("chapters", []), depth)

    for part in toc.get("parts", []) or []:
        walk(part.get("chapters", []), 0)
    walk(toc.get("chapters", []), 0)
    return entries


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _serve(html: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(html))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _browser():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        sys.exit(
            f"build_pdf: {', '.join(missing)} missing: run `make browser-deps` "
            "(apt-get install chromium chromium-driver)"
        )
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not download a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(120)
    return driver


def print_page(driver, url: str) -> tuple[bytes, str]:
    """One page as PDF bytes, once its images and formulas are in, and its title."""
    driver.get(url)
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "document.querySelectorAll('img[loading=lazy]').forEach(i => { i.loading = 'eager'; });"
        "const images = Array.from(document.images).map(i => i.complete ? null"
        "  : new Promise(r => { i.onload = i.onerror = r; }));"
        "const math = window.MathJax && MathJax.startup ? MathJax.startup.promise : null;"
        "Promise.all([...images, math]).then(() => done(true), () => done(false));"
    )
    driver.execute_script(
        "window.dispatchEvent(new Event('beforeprint'));"  # the theme opens the folded answers
        "const style = document.createElement('style'); style.textContent = arguments[0];"
        "document.head.appendChild(style);",
        PRINT_CSS,
    )
    title = driver.execute_script(  # as numbered in the table of contents, else the page's h1
        "const a = document.querySelector('.bd-docs-nav a.current');"
        "const h = document.querySelector('article h1');"
        "return (a && a.innerText.trim())"
        " || (h ? h.innerText.replace(/#$/, '').trim() : document.title);"
    )
    pdf = base64.b64decode(driver.execute_cdp_cmd("Page.printToPDF", A4)["data"])
    return pdf, title


def _internal_links(writer, base: str, first_page: dict[str, int]) -> tuple[int, int]:
    """Links to the book's own pages jump inside the PDF; other links to the local server
    (downloads, the index) are dropped, since they would point at a server that is gone. Returns
    (kept, dropped)."""
    from pypdf.generic import ArrayObject, DictionaryObject, NameObject, NullObject

    moved = dropped = 0
    for page in writer.pages:
        annotations = page.get("/Annots")
        if not annotations:
            continue
        kept = ArrayObject()
        for ref in annotations:
            annotation = ref.get_object()
            uri = (
                annotation.get("/A", {}).get("/URI")
                if annotation.get("/Subtype") == "/Link"
                else None
            )
            if uri is None or not str(uri).startswith(base):
                kept.append(ref)
                continue
            path = urlsplit(str(uri)).path.lstrip("/").removesuffix(".html") or "index"
            if path in first_page:
                target = writer.pages[first_page[path]].indirect_reference
                annotation[NameObject("/A")] = DictionaryObject(
                    {
                        NameObject("/S"): NameObject("/GoTo"),
                        NameObject("/D"): ArrayObject(
                            [target, NameObject("/XYZ"), NullObject(), NullObject(), NullObject()]
                        ),
                    }
                )
                kept.append(ref)
                moved += 1
            else:
                dropped += 1
        page[NameObject("/Annots")] = kept
    return moved, dropped


def build_pdf(html: Path, out: Path, toc_file: Path = REPO / "_toc.yml") -> int:
    """Print every page of `toc_file` from the built `html` into one PDF at `out`; returns its
    pages."""
    from pypdf import PdfReader, PdfWriter

    if not (html / "index.html").exists():
        sys.exit(f"build_pdf: no book in {html}: run `make book` first")
    entries = toc_entries(toc_file)
    server, base = _serve(html)
    driver = _browser()
    writer = PdfWriter()
    first_page: dict[str, int] = {}
    parents: dict[int, object] = {}
    start = time.perf_counter()
    try:
        for entry in entries:
            pdf, title = print_page(driver, f"{base}/{entry.docname}.html")
            first_page[entry.docname] = len(writer.pages)
            writer.append(PdfReader(io.BytesIO(pdf)), import_outline=False)
            parents[entry.depth] = writer.add_outline_item(
                title=title,
                page_number=first_page[entry.docname],
                parent=parents.get(entry.depth - 1),
            )
            print(
                f"  {entry.docname}: {len(writer.pages) - first_page[entry.docname]} pages",
                flush=True,
            )
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
    root = entries[0].docname
    first_page.setdefault("index", first_page[root])  # index.html redirects to the root page
    moved, dropped = _internal_links(writer, base, first_page)
    writer.page_mode = "/UseOutlines"
    writer.add_metadata(
        {"/Title": book_title(), "/Creator": "book/build_pdf.py (Chromium + pypdf)"}
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".pdf.tmp")
    with tmp.open("wb") as f:
        writer.write(f)
    tmp.replace(out)
    print(
        f"{out}: {len(writer.pages)} pages from {len(entries)} HTML pages in "
        f"{time.perf_counter() - start:.0f} s; {moved} links between pages kept inside the PDF, "
        f"{dropped} links to the local server dropped"
    )
    return len(writer.pages)


def book_title() -> str:
    """The book's title, from _config.yml."""
    return yaml.safe_load((REPO / "_config.yml").read_text()).get("title", "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--html", type=Path, default=REPO / "_build" / "html", help="the built book (make book)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "_build" / "book.pdf")
    parser.add_argument("--toc", type=Path, default=REPO / "_toc.yml")
    args = parser.parse_args(argv)
    build_pdf(args.html, args.out, args.toc)


if __name__ == "__main__":
    main()
