"""Result grids and plots for the notebooks (matplotlib). Chapter 09."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt

from .catalog import Catalog
from .images import ImageLike, load_image
from .searcher import SearchResults


def image_grid(images: Sequence[ImageLike], titles: Sequence[str] | None = None, ncols: int = 6,
               size: float = 1.6, title: str | None = None):
    """A grid of images with optional captions; returns the matplotlib figure."""
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.35)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, im in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(load_image(im))
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def result_grid(queries: Sequence[ImageLike], results: Sequence[SearchResults], catalog: Catalog,
                true_ids: Sequence[str] | None = None, k: int = 5, size: float = 1.5):
    """One row per query: the query photo, then its top-``k`` shop photos with name, price and
    score; the true product (when known) is framed in green, others in grey."""
    fig, axes = plt.subplots(len(queries), k + 1, figsize=((k + 1) * size, len(queries) * (size + 0.45)), squeeze=False)
    for row, (query, res) in enumerate(zip(queries, results)):
        axes[row, 0].imshow(load_image(query))
        axes[row, 0].set_title("query" + (f"\n{catalog[true_ids[row]].name[:18]}" if true_ids else ""), fontsize=7)
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
            ax.set_title(f"{p.name[:16]}\n€{p.price:.0f} · {res.scores[col]:.2f}", fontsize=6.5)
        axes[row, 0].axis("off")
    fig.tight_layout()
    return fig


def metric_curves(ks: Sequence[int], curves: dict[str, Sequence[float]], ylabel: str = "value",
                  title: str | None = None):
    """Line plot of metric-vs-k curves (one line per name)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, ys in curves.items():
        ax.plot(list(ks), list(ys), marker="o", label=name)
    ax.set_xlabel("k")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def latency_bars(stage_ms: dict[str, float], budget_ms: float | None = None, title: str | None = None):
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


__all__ = ["image_grid", "result_grid", "metric_curves", "latency_bars"]
