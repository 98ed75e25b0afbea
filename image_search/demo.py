"""End to end: index the catalog, query with held-out customer photos, report quality and speed.

Chapter 09 walks through it; ``python -m image_search demo`` runs it from a terminal. The
evaluation helpers it uses live in :mod:`image_search.evaluation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .evaluation import evaluate, median_timings
from .localizer import PIPELINE
from .metrics import RetrievalReport
from .paths import atomic_write
from .searcher import Searcher, Timings


@dataclass(frozen=True)
class DemoReport:
    """What the demo measured."""

    encoder: str
    report: RetrievalReport
    median: Timings  # median ms per stage over single-image queries
    n_timed: int
    grid_path: Path | None

    queries: str = "held-out customer photos"

    def headline(self) -> str:
        """Recall@1, Recall@10 and (when the catalog has product types) type precision@10."""
        r = self.report
        line = f"Recall@1 {r.recall[1]:.3f}, Recall@10 {r.recall[10]:.3f}"
        if 10 in r.type_precision:
            line += (
                f", type P@10 {r.type_precision[10]:.3f}"
                f" (ceiling {r.type_precision_ceiling[10]:.3f})"
            )
        return line + f" on {r.n_queries} {self.queries}"

    def __str__(self) -> str:
        m = self.median
        return (
            f"{self.headline()}\nencoder {self.encoder}: {self.report}\n"
            f"median latency over {self.n_timed} single queries: decode {m.decode_ms:.1f} ms, "
            f"embed {m.embed_ms:.1f} ms, ANN {m.ann_ms:.2f} ms, re-rank {m.rerank_ms:.2f} ms, "
            f"total {m.total_ms:.1f} ms"
            + (f"\nresult grid: {self.grid_path}" if self.grid_path else "")
        )


def run_demo(
    encoder: str = PIPELINE,
    out: Path | None = None,
    n_timed: int = 50,
    n_grid: int = 6,
    progress: bool = True,
    searcher: Searcher | None = None,
) -> DemoReport:
    """Index the catalog (or use ``searcher``), evaluate on the test split's customer photos, time
    single queries, and (with ``out``) save a result grid PNG. A shop's own catalog has no customer
    photos: its products' catalogue photos are the queries then, a sanity check (each should find
    itself first). Chapter 09."""
    searcher = searcher or Searcher.from_catalog(encoder, progress=progress)
    paths, true_ids = searcher.catalog.queries("test")
    what = "held-out customer photos"
    if not paths:
        true_ids = searcher.catalog.ids
        paths, what = (
            [searcher.catalog.icon_path(i) for i in true_ids],
            "catalogue photos (a sanity check)",
        )
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
        fig = result_grid(
            [paths[i] for i in pick],
            [results[i] for i in pick],
            searcher.catalog,
            [true_ids[i] for i in pick],
        )
        grid_path = atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=110))
    return DemoReport(searcher.encoder.name, report, median, len(timed), grid_path, what)


__all__ = ["DemoReport", "run_demo"]
