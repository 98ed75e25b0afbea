"""The numbers the book quotes, glued from the notebook that measured them, each with the tolerance
within which a re-run on another machine must reproduce it.

A notebook calls :func:`glue` for every number its chapter quotes; the chapter shows it with a
myst-nb role, e.g. ``{glue:text}`../notebooks/09_end_to_end.ipynb::r1:.3f```, so the prose always
says what the notebook printed. The last cell of each notebook calls :func:`check_glued`: under
nbval (CI) it compares every number of this run with the one committed in the notebook file, within
the tolerance declared where it was glued, and fails with a table of the differences. Timings are
glued with ``tol=None`` and never compared. Chapter 07 explains how tolerances are chosen;
chapter 11 collects the headline numbers with :func:`glued`.
"""

from __future__ import annotations

import ast
import json
import math
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path

GLUE_PREFIX = "application/papermill.record/"  # what myst-nb's own glue() uses for display=False
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
RECORD_ENV = (
    "IMAGE_SEARCH_GLUE_RECORD"  # set to 1 by `make execute`: record new numbers, compare nothing
)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

TIMING: None = (
    None  # the tolerance of a timing: never compared (a machine's speed is not a regression)
)


def rate_tol(n: int, flips: int = 3) -> float:
    """The tolerance of a share of ``n`` items (a recall over ``n`` queries, an accuracy over ``n``
    products): ``flips / n``, i.e. that many items may change sides of a decision boundary when
    another CPU's float kernels move a score in its last bits."""
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    return flips / n


@dataclass(frozen=True)
class Glued:
    """One glued number: its value and tolerance (``tol`` absolute plus ``rel`` relative; ``tol``
    ``None``: never compared)."""

    name: str
    value: float | int | str | bool
    tol: float | None = 0.0
    rel: float = 0.0

    def matches(self, committed: float | int | str | bool) -> bool:
        if self.tol is None:
            return True
        if isinstance(self.value, str) or isinstance(committed, str):
            return self.value == committed
        if math.isnan(float(self.value)) or math.isnan(float(committed)):
            return math.isnan(float(self.value)) and math.isnan(float(committed))
        return abs(float(self.value) - float(committed)) <= self.tol + self.rel * abs(
            float(committed)
        )


_RUN: dict[str, Glued] = {}  # what this kernel glued, by name


def glue(
    name: str, value, tol: float | None = 0.0, rel: float = 0.0, display: bool = False
) -> None:
    """Glue ``value`` into the notebook under ``name`` for the chapter to quote, and record its
    tolerance: ``tol`` absolute plus ``rel`` relative (``0``: must reproduce exactly, as counts do;
    ``rate_tol(n)`` for a share of ``n`` queries; ``TIMING`` (``None``) for a time, never
    compared). A matplotlib figure is glued for a ``{glue:figure}`` with a caption (never
    compared). Chapter 07."""
    from IPython.display import display as ipy_display

    if not _NAME.match(name):
        raise ValueError(
            f"glue name {name!r}: use letters, digits and _ (a myst-nb role has to quote it)"
        )
    if _is_figure(value):
        from myst_nb import glue as myst_glue

        _RUN[name] = Glued(name, "<figure>", None)
        myst_glue(name, value, display=display)
        return
    value = _plain(value)
    if tol is not None and (tol < 0 or rel < 0):
        raise ValueError("tolerances must not be negative")
    _RUN[name] = Glued(name, value, tol, rel)
    text = repr(value)
    bundle = {GLUE_PREFIX + "text/plain": text}
    if display:
        bundle["text/plain"] = f"{name} = {text}"
    metadata = {
        "scrapbook": {"name": name, "mime_prefix": GLUE_PREFIX},
        "image_search": {"tol": tol, "rel": rel},
    }
    ipy_display(bundle, raw=True, metadata=metadata)


def _is_figure(value) -> bool:
    return type(value).__name__ == "Figure" and hasattr(value, "savefig")


def _plain(value):
    """A Python number, bool or string (numpy scalars converted), so that ``repr`` reads back."""
    if isinstance(value, (bool, str)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"glue a number, bool or string, not {type(value).__name__}")


def glued(notebook: str | Path) -> dict[str, Glued]:
    """The numbers glued in a committed notebook file (a name, or a path), with their tolerances."""
    path = Path(notebook)
    if not path.is_absolute() and not path.exists():
        path = NOTEBOOKS / path
    nb = json.loads(path.read_text(encoding="utf-8"))
    out = {}
    for cell in nb["cells"]:
        for output in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            meta = output.get("metadata", {})
            if "scrapbook" not in meta:
                continue
            name = meta["scrapbook"]["name"]
            text = output["data"].get(meta["scrapbook"].get("mime_prefix", "") + "text/plain", "")
            text = "".join(text) if isinstance(text, list) else text
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text
            tol = meta.get("image_search", {})
            out[name] = Glued(name, value, tol.get("tol", 0.0), tol.get("rel", 0.0))
    return out


@dataclass(frozen=True)
class Difference:
    """A glued number that did not reproduce."""

    name: str
    committed: object
    new: object
    tolerance: str


def differences(committed: dict[str, Glued], current: dict[str, Glued]) -> list[Difference]:
    """Every number of ``current`` outside its tolerance of ``committed``, and every name glued in
    one but not the other."""
    out = []
    for name in sorted(committed.keys() | current.keys()):
        old, new = committed.get(name), current.get(name)
        if new is None:
            out.append(Difference(name, old.value, "not glued in this run", "-"))
        elif old is None:
            out.append(Difference(name, "not in the committed notebook", new.value, "-"))
        elif not new.matches(old.value):
            tol = f"±{new.tol:g}" + (f" +{new.rel:g} rel" if new.rel else "")
            out.append(Difference(name, old.value, new.value, tol))
    return out


def check_glued(notebook: str) -> None:
    """Compare what this kernel glued with the numbers committed in ``notebooks/<notebook>``; raise
    ``AssertionError`` with a table of the differences. With ``IMAGE_SEARCH_GLUE_RECORD=1`` (``make
    execute``, which rewrites the committed numbers) nothing is compared. Chapter 07."""
    current = dict(_RUN)
    if os.environ.get(RECORD_ENV, "0") == "1":
        print(f"{len(current)} numbers glued (recording: not compared)")
        return
    diffs = differences(glued(notebook), current)
    if diffs:
        rows = [("name", "committed", "new", "tolerance")] + [
            (d.name, _fmt(d.committed), _fmt(d.new), d.tolerance) for d in diffs
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        table = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
        raise AssertionError(
            f"{len(diffs)} of {len(current)} glued numbers of {notebook} do not reproduce:\n{table}"
        )
    timings = sum(1 for g in current.values() if g.tol is None)
    print(
        f"all {len(current)} glued numbers reproduce the committed ones within their tolerances "
        f"({timings} timings shown, not compared)"
    )


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


__all__ = [
    "TIMING",
    "rate_tol",
    "Glued",
    "glue",
    "glued",
    "Difference",
    "differences",
    "check_glued",
]
