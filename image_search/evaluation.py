"""Offline evaluation of a searcher: run held-out customer photos through it, score the rankings,
and time single queries. Chapter 09 introduces it; chapters 07 and 12 reuse :func:`evaluate`.

It takes a searcher as an argument and never imports the online path (``searcher``, ``reranker``).
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from .catalog import Catalog
from .encoders import encode_paths
from .metrics import RetrievalReport, retrieval_report

if TYPE_CHECKING:
    from .searcher import Searcher, SearchResults, Timings


def product_types(catalog: Catalog) -> Mapping[str, str] | None:
    """Each product's type (``Product.type``), or ``None`` when the catalog has none. Chapter 07."""
    types = {p.id: getattr(p, "type", None) for p in catalog.products}
    return types if all(types.values()) else None


def evaluate(
    searcher: "Searcher",
    paths: Sequence[Path],
    true_ids: Sequence[str],
    k: int = 10,
    progress: bool = True,
) -> tuple[RetrievalReport, list["SearchResults"]]:
    """Run every query photo through the searcher (embeddings cached) and score the rankings:
    exact-product recall, MRR, category precision and, when the catalog has product types, type
    precision and graded NDCG. Chapter 09."""
    embeddings = encode_paths(searcher.encoder, paths, progress=progress)
    results = [searcher.search(embedding=e, k=k) for e in embeddings]
    category_of = {p.id: p.category for p in searcher.catalog.products}
    ks = tuple(x for x in (1, 5, 10) if x <= k)
    report = retrieval_report(
        [r.ids for r in results],
        true_ids,
        category_of,
        ks=ks,
        type_of=product_types(searcher.catalog),
    )
    return report, results


def median_timings(
    searcher: "Searcher", paths: Sequence[Path], k: int = 10, warmup: int = 3
) -> "Timings":
    """Median per-stage latency (decode, embed, ANN, re-rank) of single-image queries, after
    ``warmup`` untimed ones. Chapter 09."""
    if not paths:
        raise ValueError("median_timings needs at least one query photo")
    for p in paths[:warmup]:
        searcher.search(p, k=k)
    timings = [searcher.search(p, k=k).timings for p in paths]
    return replace(
        timings[0],
        **{
            f.name: float(np.median([getattr(t, f.name) for t in timings]))
            for f in fields(timings[0])
        },
    )


__all__ = ["product_types", "evaluate", "median_timings"]
