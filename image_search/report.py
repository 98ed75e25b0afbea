"""Read the key numbers of the book's committed notebooks, so the summary chapter quotes them
instead of retyping them. Chapter 11."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MARKER = "# NBVAL_CHECK_OUTPUT"


def _text(output: dict) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    data = output.get("data", {})
    text = data.get("text/plain", "")
    return "".join(text) if isinstance(text, list) else text


def cell_outputs(notebook_path: str | Path, checked_only: bool = False) -> list[str]:
    """The text output of each code cell of a notebook (stdout and plain-text results joined),
    only of cells whose first line is ``# NBVAL_CHECK_OUTPUT`` when ``checked_only``."""
    import nbformat

    nb = nbformat.read(str(notebook_path), as_version=4)
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if checked_only and not cell.source.lstrip().startswith(MARKER):
            continue
        out.append("".join(_text(o) for o in cell.get("outputs", [])))
    return out


def checked_outputs(notebook_path: str | Path) -> list[str]:
    """The outputs of a notebook's ``# NBVAL_CHECK_OUTPUT`` cells, in order. Chapter 11."""
    return cell_outputs(notebook_path, checked_only=True)


@dataclass(frozen=True)
class Headline:
    """One number of the book: where it comes from and how to find it in the outputs."""

    what: str
    notebook: str           # file name in the notebooks folder
    pattern: str            # regex with one group: the number
    checked_only: bool = True


def find_number(outputs: list[str], pattern: str) -> str | None:
    """The first match of ``pattern``'s group in the outputs, or ``None``."""
    for text in outputs:
        m = re.search(pattern, text, flags=re.MULTILINE)
        if m:
            return m.group(1)
    return None


def headline_rows(headlines: list[Headline], notebooks_dir: str | Path) -> list[tuple[str, str, str]]:
    """``(what, value, notebook)`` per headline; the value says ``missing`` when the notebook or
    the number is not there (yet)."""
    rows = []
    for h in headlines:
        path = Path(notebooks_dir) / h.notebook
        if not path.is_file():
            rows.append((h.what, "missing: notebook not found", h.notebook))
            continue
        value = find_number(cell_outputs(path, h.checked_only), h.pattern)
        rows.append((h.what, value if value is not None else "missing: not in its outputs", h.notebook))
    return rows


__all__ = ["MARKER", "cell_outputs", "checked_outputs", "Headline", "find_number", "headline_rows"]
