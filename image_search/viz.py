"""Result grids and plots for the notebooks (matplotlib). Chapter 09.

Captions wrap at word boundaries to the width of their image, so no name is cut mid-word and no
caption runs into its neighbour; a name too long for its lines ends with "…" after a whole word.
"""

from __future__ import annotations

import textwrap
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from .catalog import Catalog
from .features import top_k
from .images import ImageLike, load_image
from .searcher import SearchResults, Timings

CHAR_WIDTH = 0.65  # a generous average character width of matplotlib's default font, in ems


def caption(text: str, width: int, max_lines: int = 2) -> str:
    """``text`` wrapped at word boundaries into at most ``max_lines`` lines of at most ``width``
    characters (a single longer word keeps its line); when it does not fit, the last line ends
    with "…" after a whole word. Existing line breaks are kept. Chapter 09."""
    wrap = textwrap.TextWrapper(width, break_long_words=False, break_on_hyphens=False)
    lines = [ln for part in str(text).split("\n") for ln in (wrap.wrap(part) or [""])]
    if len(lines) <= max_lines:
        return "\n".join(lines)
    words = lines[max_lines - 1].split()
    while len(words) > 1 and len(" ".join(words)) + 1 > width:
        words.pop()
    while len(words) > 1 and not any(c.isalnum() for c in words[-1]):  # no "-…": end on a word
        words.pop()
    return "\n".join(lines[: max_lines - 1] + [" ".join(words) + "…"])


def _chars(size_in: float, fontsize: float) -> int:
    """How many characters of ``fontsize`` points fit across ``size_in`` inches."""
    return max(4, int(size_in * 72 / (CHAR_WIDTH * fontsize)))


def image_grid(
    images: Sequence[ImageLike],
    titles: Sequence[str] | None = None,
    ncols: int = 6,
    size: float = 1.6,
    title: str | None = None,
):
    """A grid of images with optional captions (wrapped to three lines); returns the figure.
    Chapter 02."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fontsize = 7
    height = nrows * (size + 0.4) + (0.3 if title else 0)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(ncols * size, height), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for i, im in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(load_image(im))
        if titles is not None:
            ax.set_title(caption(titles[i], _chars(size, fontsize), 3), fontsize=fontsize)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def result_grid(
    queries: Sequence[ImageLike],
    results: Sequence[SearchResults],
    catalog: Catalog,
    true_ids: Sequence[str] | None = None,
    k: int = 5,
    size: float = 1.5,
):
    """One row per query: the query photo, then its top-``k`` shop photos with name (two lines at
    most, wrapped at words), price and score; the true product (when known) is framed in green,
    others in grey. Chapter 02."""
    fontsize = 6.5
    width = _chars(size, fontsize)
    fig, axes = plt.subplots(
        len(queries),
        k + 1,
        figsize=((k + 1) * size, len(queries) * (size + 0.55)),
        squeeze=False,
        layout="constrained",
    )
    for row, (query, res) in enumerate(zip(queries, results)):
        axes[row, 0].imshow(load_image(query))
        name = f"\n{caption(catalog[true_ids[row]].name, width, 2)}" if true_ids else ""
        axes[row, 0].set_title("query" + name, fontsize=fontsize)
        axes[row, 0].axis("off")
        for col in range(k):
            ax = axes[row, col + 1]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(res.ids):
                ax.axis("off")
                continue
            p = res.products[col]
            ax.imshow(load_image(catalog.icon_path(p.id)))
            hit = true_ids is not None and p.id == true_ids[row]
            for spine in ax.spines.values():
                spine.set_edgecolor("#2ca02c" if hit else "#bbbbbb")
                spine.set_linewidth(3 if hit else 1)
            meta = f"€{p.price:.0f} · {res.scores[col]:.2f}"
            ax.set_title(f"{caption(p.name, width, 2)}\n{meta}", fontsize=fontsize)
    return fig


def exact_search(
    query_embeddings: np.ndarray,
    index_embeddings: np.ndarray,
    index_ids: Sequence[str],
    catalog: Catalog,
    k: int = 10,
) -> list[SearchResults]:
    """Brute-force search returning :class:`~image_search.searcher.SearchResults`, to show in
    :func:`result_grid` without building an index (the rankings of
    :func:`~image_search.features.exact_retrieval`). Chapter 05."""
    q = np.asarray(query_embeddings, dtype=np.float32)
    x = np.asarray(index_embeddings, dtype=np.float32)
    out = []
    for row, top in zip(q @ x.T, top_k(q, x, k)):
        ids = tuple(index_ids[j] for j in top)
        products = tuple(catalog[i] for i in ids)
        out.append(SearchResults(ids, row[top].astype(np.float32), products, Timings()))
    return out


def latency_bars(
    stage_ms: dict[str, float], budget_ms: float | None = None, title: str | None = None
):
    """Horizontal bar of the median time per query stage, with an optional budget line."""
    fig, ax = plt.subplots(figsize=(5.5, 2.4))
    left = 0.0
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (stage, ms) in enumerate(stage_ms.items()):
        ax.barh([0], [ms], left=left, color=colours[i % len(colours)], label=f"{stage} {ms:.1f} ms")
        left += ms
    if budget_ms:
        ax.axvline(budget_ms, color="red", linestyle="--", label=f"budget {budget_ms:.0f} ms")
    ax.set_yticks([])
    ax.set_xlabel("milliseconds per query")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


__all__ = ["caption", "image_grid", "result_grid", "exact_search", "latency_bars"]
