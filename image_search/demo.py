"""End to end: index the catalog, query with held-out customer photos, report quality and speed.

Chapter 09 walks through it; ``python -m image_search demo`` runs it from a terminal.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .encoders import DEFAULT_ENCODER, encode_paths
from .metrics import RetrievalReport, retrieval_report
from .searcher import Searcher, SearchResults, Timings


@dataclass(frozen=True)
class DemoReport:
    """What the demo measured."""

    encoder: str
    report: RetrievalReport
    median: Timings          # median ms per stage over single-image queries
    n_timed: int
    grid_path: Path | None

    def __str__(self) -> str:
        m = self.median
        return (f"encoder {self.encoder}: {self.report}\n"
                f"median latency over {self.n_timed} single queries: decode {m.decode_ms:.1f} ms, "
                f"embed {m.embed_ms:.1f} ms, ANN {m.ann_ms:.2f} ms, re-rank {m.rerank_ms:.2f} ms, "
                f"total {m.total_ms:.1f} ms" + (f"\nresult grid: {self.grid_path}" if self.grid_path else ""))


def evaluate(searcher: Searcher, paths: Sequence[Path], true_ids: Sequence[str], k: int = 10,
             progress: bool = True) -> tuple[RetrievalReport, list[SearchResults]]:
    """Run every query photo through the searcher (embeddings cached) and score the rankings. Chapter 09."""
    embeddings = encode_paths(searcher.encoder, paths, progress=progress)
    results = [searcher.search(embedding=e, k=k) for e in embeddings]
    category_of = {p.id: p.category for p in searcher.catalog.products}
    ks = tuple(x for x in (1, 5, 10) if x <= k)
    return retrieval_report([r.ids for r in results], true_ids, category_of, ks=ks), results


def median_timings(searcher: Searcher, paths: Sequence[Path], k: int = 10, warmup: int = 3) -> Timings:
    """Median per-stage latency of single-image queries (decode, embed, ANN, re-rank)."""
    for p in paths[:warmup]:
        searcher.search(p, k=k)
    t = [searcher.search(p, k=k).timings for p in paths]
    return Timings(*(float(np.median([getattr(x, f) for x in t])) for f in ("decode_ms", "embed_ms", "ann_ms", "rerank_ms")))


def run_demo(encoder: str = DEFAULT_ENCODER, out: Path | None = None, n_timed: int = 50,
             n_grid: int = 6, progress: bool = True) -> DemoReport:
    """Index the catalog, evaluate on the test split's customer photos, time single queries,
    and (with ``out``) save a result grid PNG."""
    searcher = Searcher.from_catalog(encoder, progress=progress)
    paths, true_ids = searcher.catalog.queries("test")
    report, results = evaluate(searcher, paths, true_ids, progress=progress)
    rng = np.random.default_rng(0)
    timed = [paths[i] for i in rng.choice(len(paths), size=min(n_timed, len(paths)), replace=False)]
    median = median_timings(searcher, timed)
    grid_path = None
    if out is not None:
        import matplotlib

        matplotlib.use("Agg")
        from .viz import result_grid

        pick = rng.choice(len(paths), size=min(n_grid, len(paths)), replace=False)
        fig = result_grid([paths[i] for i in pick], [results[i] for i in pick], searcher.catalog,
                          [true_ids[i] for i in pick])
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
        grid_path = out
    return DemoReport(searcher.encoder.name, report, median, len(timed), grid_path)
