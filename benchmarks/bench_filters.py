"""Filtered queries at scale: ``ProductIndex.search(q, 10, Filters(...))`` on Flat, IVF-Flat and
HNSW with filters that allow 50%, 5% and 0.5% of the products: latency p50/p95 (one query at a
time, one FAISS thread, the selection cached after the first query of each filter), the first
("cold") query that builds the selection, how many results each query got, and recall@10 against
an exact filtered search.

The vectors are synthetic variants of the catalog's EfficientNet-Lite0 embeddings
(``synthetic_embeddings``) at a reduced dimension (``--dim``, default 128, a centred PCA of the
1280-d features as in ``bench_ann.py``: 1M x 1280 float32 would be 5 GB before any index); the
queries are the held-out customer photos projected the same way. Each product gets a random
category: ``c50`` (50%), ``c5`` (5%), ``c05`` (0.5%) or ``other``, so the filter
``Filters(categories=("c5",))`` allows 5% of the index.

    python benchmarks/bench_filters.py               # 1M products (the issue's scale)
    python benchmarks/bench_filters.py --n 100000    # quick run
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault(
    "OMP_WAIT_POLICY", "PASSIVE"
)  # before faiss loads OpenMP: the cores are shared

import faiss
import numpy as np
import pandas as pd

from image_search import Filters, ProductIndex
from image_search.features import fit_pca
from image_search.stores.filters import Attributes
from image_search.synthetic import near_copy_embeddings as synthetic_embeddings

from _common import header, latency, peak_rss_gb, real_embeddings, table

K = 10
SELECTIVITY = {"c50": 0.5, "c5": 0.05, "c05": 0.005}


def attributes(n: int, seed: int = 0) -> Attributes:
    u = np.random.default_rng(seed).random(n)
    category = np.select([u < 0.005, u < 0.055, u < 0.555], ["c05", "c5", "c50"], "other")
    return Attributes(
        category, np.full(n, ""), np.full(n, 10.0), np.ones(n, bool), np.ones(n, bool)
    )


def exact_filtered(x: np.ndarray, mask: np.ndarray, q: np.ndarray) -> list[set[int]]:
    allowed = np.flatnonzero(mask)
    out = []
    for s in range(0, len(q), 16):
        sims = q[s : s + 16] @ x[allowed].T
        top = np.argpartition(-sims, K - 1, axis=1)[:, :K]
        out.extend(set(allowed[row].tolist()) for row in top)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=1_000_000, help="products (default 1M)")
    ap.add_argument("--dim", type=int, default=128, help="PCA dimension (default 128)")
    ap.add_argument(
        "--queries", type=int, default=200, help="queries timed one at a time per filter"
    )
    ap.add_argument("--only", default=None, help="only the factories whose name contains this")
    args = ap.parse_args()
    nlist = 1 << int(round(np.log2(4 * np.sqrt(args.n))))  # about 4 sqrt(n) lists
    factories = {
        "Flat": ("Flat", {}),
        f"IVF{nlist},Flat": (f"IVF{nlist},Flat", {"nprobe": 16}),
        "HNSW32": ("HNSW32", {"efSearch": 64}),
    }
    if args.only:
        factories = {k: v for k, v in factories.items() if args.only in k}
    header(f"bench_filters: {args.n:,} products, {args.dim}-d, k={K}")

    catalog, _, icons, train, test, _ = real_embeddings()
    proj = fit_pca(np.vstack([icons, train]), args.dim).apply
    x = synthetic_embeddings(proj(np.vstack([icons, train])), args.n, noise=0.5, seed=0)
    q = proj(test)[: args.queries]
    attrs = attributes(args.n)
    ids = [f"p{i}" for i in range(args.n)]
    truth = {c: exact_filtered(x, attrs.mask(Filters(categories=(c,))), q) for c in SELECTIVITY}
    print(
        f"{args.n:,} x {args.dim} vectors, {len(q)} queries; allowed products: "
        + ", ".join(
            f"{c} {int(attrs.mask(Filters(categories=(c,))).sum()):,}" for c in SELECTIVITY
        ),
        flush=True,
    )

    rows = []
    for name, (factory, params) in factories.items():
        faiss.omp_set_num_threads(2)
        t = time.perf_counter()
        index = ProductIndex(args.dim, "synthetic", factory=factory)
        if not index.is_trained:
            index.train(
                x[np.random.default_rng(1).choice(args.n, min(args.n, 100_000), replace=False)]
            )
        index.add(ids, x, attrs)
        build_s = time.perf_counter() - t
        faiss.omp_set_num_threads(1)  # a serving process answers one query per core
        for label, f in [("none", None)] + [
            (f"{c} ({s:.1%})", Filters(categories=(c,))) for c, s in SELECTIVITY.items()
        ]:
            t = time.perf_counter()
            index.search(q[:1], K, f, params=params)  # builds and caches the selection
            cold_ms = (time.perf_counter() - t) * 1000
            times, counts, hits = [], [], []
            for j in range(len(q)):
                t = time.perf_counter()
                _, got = index.search(q[j], K, f, params=params)
                times.append(time.perf_counter() - t)
                counts.append(len(got[0]))
                if f is not None:
                    want = truth[f.categories[0]][j]
                    hits.append(len({int(i[1:]) for i in got[0]} & want) / K)
            lat = latency(times)
            chosen = index._selection(f, None) if f is not None else None
            rows.append(
                {
                    "index": name,
                    "filter": label,
                    "path": "exact scan" if chosen and chosen.exact else "ANN",
                    "p50 ms": lat.p50,
                    "p95 ms": lat.p95,
                    "cold ms": cold_ms,
                    "results min": min(counts),
                    "results mean": float(np.mean(counts)),
                    "recall@10 vs exact": float(np.mean(hits)) if hits else float("nan"),
                    "build s": build_s,
                }
            )
            print(rows[-1], flush=True)
        del index
    df = pd.DataFrame(rows)
    table(
        df,
        f"Filtered queries, {args.n:,} products ({args.dim}-d), k={K}, "
        "one query at a time, 1 FAISS thread",
    )
    worst = df[df["filter"] != "none"].groupby("index")["p95 ms"].max()
    print("worst filtered p95 per index (target <= 50 ms):", worst.round(1).to_dict())
    print(
        f"load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}; "
        f"peak RSS {peak_rss_gb():.1f} GB"
    )


if __name__ == "__main__":
    main()
