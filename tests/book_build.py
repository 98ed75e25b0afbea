"""Build the book once per test session and describe it from `_toc.yml`.

Used by tests/test_book.py (static HTML checks) and tests/test_browser.py (headless Chromium):
both ask `built_book()`, which builds into a temporary folder the first time and then returns
the same result, so a `pytest tests` run builds the book once.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "_build" / "screenshots"
# A chapter author can check a private table of contents: BOOK_TOC=/tmp/toc_me.yml pytest
# tests/test_book.py
TOC = Path(os.environ.get("BOOK_TOC") or REPO / "_toc.yml").resolve()


@dataclass(frozen=True)
class Page:
    """One page of `_toc.yml`: its source file (without suffix) and its role."""

    docname: str  # e.g. "book/09_end_to_end", "notebooks/09_end_to_end"
    is_chapter: bool  # a top-level entry under `chapters:` (or the parts' chapters)
    is_root: bool

    @property
    def source(self) -> Path:
        for suffix in (".md", ".ipynb", ".rst"):
            if (REPO / f"{self.docname}{suffix}").exists():
                return REPO / f"{self.docname}{suffix}"
        return REPO / self.docname

    @property
    def is_notebook(self) -> bool:
        return self.source.suffix == ".ipynb"

    @property
    def slug(self) -> str:
        return self.docname.replace("/", "__")


@dataclass(frozen=True)
class Build:
    returncode: int
    log: str
    seconds: float
    html: Path  # the HTML folder (may be incomplete when returncode != 0)


def _strip(file: str) -> str:
    for suffix in (".md", ".ipynb", ".rst"):
        if file.endswith(suffix):
            return file[: -len(suffix)]
    return file


def toc_pages(toc_file: Path = TOC) -> list[Page]:
    """Every page named in `_toc.yml`, root first, in reading order (`glob`/`url` entries
    skipped)."""
    toc = yaml.safe_load(toc_file.read_text())
    pages = [Page(_strip(toc["root"]), is_chapter=False, is_root=True)]

    def walk(entries: list, top: bool) -> None:
        for entry in entries or []:
            if "file" in entry:
                pages.append(Page(_strip(entry["file"]), is_chapter=top, is_root=False))
            walk(entry.get("sections", []), top=False)
            for part_key in ("chapters", "parts"):
                walk(entry.get(part_key, []), top=(part_key == "chapters"))

    walk(toc.get("chapters", []), top=True)
    for part in toc.get("parts", []) or []:
        walk(part.get("chapters", []), top=True)
    return pages


def html_path(html: Path, page: Page) -> Path:
    return html / f"{page.docname}.html"


def notebook_figures(page: Page) -> int:
    """How many outputs of the notebook render as an image in HTML (myst-nb's mime priority)."""
    nb = json.loads(page.source.read_text())
    rich_first = ("application/vnd.jupyter.widget-view+json", "application/javascript", "text/html")
    images = ("image/svg+xml", "image/png", "image/jpeg", "image/gif")
    count = 0
    for cell in nb["cells"]:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell["cell_type"] != "code" or tags & {"remove-output", "remove-cell"}:
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if any(m in data for m in rich_first):
                continue
            count += any(m in data for m in images)
    return count


@functools.lru_cache(maxsize=1)
def built_book() -> Build:
    """Build the whole book strictly (-W -n) into a temporary folder, once per process."""
    out = Path(tempfile.mkdtemp(prefix="book_test_"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    jb = Path(sys.executable).parent / "jupyter-book"
    cmd = [
        str(jb),
        "build",
        str(REPO),
        "--path-output",
        str(out),
        "--toc",
        str(TOC),
        "-W",
        "-n",
        "--keep-going",
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    log = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)  # Sphinx colours its messages
    return Build(proc.returncode, log, seconds, out / "_build" / "html")
