"""Vector stores side by side: FAISS (``ProductIndex``), Qdrant (local mode) and Milvus Lite behind
the package's ``VectorStore`` protocol, and the Ray Data embedding pipeline against one process.

1. The catalog: 618 shop photos (EfficientNet-Lite0, 1280-d), queried with the held-out customer
   photos, with and without filters: load time, query latency p50/p95 (one query at a time),
   recall@10 against FAISS exact search, and whether every result passes the filter and every
   query gets ``min(k, allowed)`` results.
2. The same at ``--n`` synthetic vectors (default 100,000; 128-d PCA of the catalog's
   distribution, as in ``bench_ann.py``), each with a random category (50% / 5% / 0.5%).
3. Embedding ``--ray-images`` shop photos: one process (``encode_images``) against the local Ray
   Data pipeline (2 actors of one thread), Ray's start-up included and excluded.

Qdrant's and Milvus Lite's *local* modes are measured: they are what runs on this machine, not
their servers (Qdrant's local mode searches in Python; Milvus Lite runs a small Milvus in-process).

    python benchmarks/bench_stores.py                  # catalog, 100k, Ray
    python benchmarks/bench_stores.py --n 20000 --skip-ray
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from typing import Sequence

os.environ.setdefault(
    "OMP_WAIT_POLICY", "PASSIVE"
)  # before faiss loads OpenMP: the cores are shared

import faiss
import numpy as np
import pandas as pd

from image_search import Filters
from image_search.features import fit_pca
from image_search.stores import BackendUnavailableError, open_store
from image_search.stores.filters import Attributes
from image_search.synthetic import near_copy_embeddings as synthetic_embeddings

from _common import header, latency, peak_rss_gb, real_embeddings, table

K = 10
ENGINES = {"faiss": "{d}/f.index", "qdrant": ":memory:", "milvus": "{d}/m.db"}


def run_engines(
    engines: Sequence[str],
    x: np.ndarray,
    ids: list[str],
    attrs: Attributes,
    queries: np.ndarray,
    filters: dict[str, Filters | None],
    n_slow: int,
    title: str,
) -> pd.DataFrame:
    """Load the same vectors into each engine and time single queries per filter."""
    folder = tempfile.mkdtemp(prefix="bench_stores_")
    allowed = {
        name: set(np.array(ids)[attrs.mask(f)]) if f else set(ids) for name, f in filters.items()
    }
    rows, truth = [], {}
    try:
        for kind, where in ENGINES.items():
            if kind not in engines and kind != "faiss":  # FAISS exact search is the reference
                continue
            t = time.perf_counter()
            store = open_store(kind, where.format(d=folder), "bench", x.shape[1], create=True)
            for s in range(0, len(ids), 50_000):
                store.add(
                    ids[s : s + 50_000],
                    x[s : s + 50_000],
                    attrs.take(np.arange(s, min(s + 50_000, len(ids)))),
                )
            store.save()  # Milvus flushes: sealed segments search ~10x faster than unflushed rows
            load_s = time.perf_counter() - t
            faiss.omp_set_num_threads(1)
            for name, f in filters.items():
                q = queries if kind == "faiss" else queries[:n_slow]
                times, got = [], []
                store.search(q[0], K, f)  # warm-up (and the cached selection for FAISS)
                for vec in q:
                    t = time.perf_counter()
                    got.append(store.search(vec, K, f)[1][0])
                    times.append(time.perf_counter() - t)
                if kind == "faiss":
                    truth[name] = got
                lat = latency(times)
                want = min(K, len(allowed[name]))
                rows.append(
                    {
                        "data": title,
                        "engine": kind,
                        "filter": name,
                        "queries": len(q),
                        "load s": load_s,
                        "p50 ms": lat.p50,
                        "p95 ms": lat.p95,
                        "recall@10 vs FAISS exact": float(
                            np.mean(
                                [
                                    len(set(g) & set(w)) / max(len(w), 1)
                                    for g, w in zip(got, truth[name], strict=False)
                                ]
                            )
                        ),
                        "filter correct": all(set(g) <= allowed[name] for g in got),
                        "all rows min(k, allowed)": all(len(g) == want for g in got),
                    }
                )
                print(rows[-1], flush=True)
            store.close()
            del store
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return pd.DataFrame(rows)


def ray_section(catalog, n_images: int) -> pd.DataFrame:
    from image_search import load_encoder
    from image_search.pipeline import ray_embed

    paths = [catalog.icon_path(i) for i in catalog.ids[:n_images]]
    enc = load_encoder("efficientnet-lite0")
    enc.encode_images(paths[:4])  # warm-up
    t = time.perf_counter()
    single = enc.encode_images(paths, batch_size=16)
    single_s = time.perf_counter() - t
    rows = [
        {
            "pipeline": "one process, encode_images (batch 16, default threads)",
            "images": len(paths),
            "wall s": single_s,
            "images/s": len(paths) / single_s,
            "max |diff| vs one process": 0.0,
        }
    ]
    try:
        import ray

        t = time.perf_counter()
        got = ray_embed(
            "efficientnet-lite0", paths, batch_size=16, actors=2
        )  # starts and stops Ray
        cold_s = time.perf_counter() - t
        rows.append(
            {
                "pipeline": "Ray Data, 2 actors x 1 thread, local runtime start-up included",
                "images": len(paths),
                "wall s": cold_s,
                "images/s": len(paths) / cold_s,
                "max |diff| vs one process": float(np.abs(got - single).max()),
            }
        )
        t = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        start_s = time.perf_counter() - t
        try:
            t = time.perf_counter()
            got = ray_embed(
                "efficientnet-lite0", paths, batch_size=16, actors=2
            )  # runtime already up
            warm_s = time.perf_counter() - t
        finally:
            ray.shutdown()
        rows.append(
            {
                "pipeline": f"Ray Data, runtime already started ({start_s:.1f} s to start it)",
                "images": len(paths),
                "wall s": warm_s,
                "images/s": len(paths) / warm_s,
                "max |diff| vs one process": float(np.abs(got - single).max()),
            }
        )
    except BackendUnavailableError as e:
        rows.append(
            {
                "pipeline": f"Ray Data: did not run ({e})",
                "images": len(paths),
                "wall s": float("nan"),
                "images/s": float("nan"),
                "max |diff| vs one process": float("nan"),
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100_000, help="synthetic vectors (default 100,000)")
    ap.add_argument(
        "--dim", type=int, default=128, help="PCA dimension of the synthetic vectors (default 128)"
    )
    ap.add_argument("--queries", type=int, default=200, help="queries per filter for FAISS")
    ap.add_argument(
        "--slow-queries", type=int, default=50, help="queries per filter for Qdrant and Milvus"
    )
    ap.add_argument("--ray-images", type=int, default=96, help="images embedded in section 3")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument(
        "--engines", default="faiss,qdrant,milvus", help="engines to compare with FAISS"
    )
    ap.add_argument("--ray-only", action="store_true", help="only section 3")
    args = ap.parse_args()
    header(f"bench_stores: the catalog, {args.n:,} synthetic vectors ({args.dim}-d), Ray Data")

    catalog, _, icons, train, test, _ = real_embeddings()
    if args.ray_only:
        table(
            ray_section(catalog, args.ray_images),
            "3. Embedding shop photos: one process vs Ray Data",
        )
        return
    attrs = Attributes.from_catalog(catalog)
    cats = catalog.categories
    filters = {
        "none": None,
        f"category {cats[0]}": Filters(categories=(cats[0],)),
        "category + price <= 150 + in stock": Filters(
            categories=cats[1:3], max_price=150.0, in_stock=True
        ),
    }
    q = test[: args.queries]
    df1 = run_engines(
        args.engines.split(","),
        icons,
        catalog.ids,
        attrs,
        q,
        filters,
        args.slow_queries,
        "catalog (618, 1280-d)",
    )
    table(
        df1, "1. The catalog: 618 products, 1280-d EfficientNet-Lite0, customer-photo queries, k=10"
    )

    proj = fit_pca(np.vstack([icons, train]), args.dim).apply
    x = synthetic_embeddings(proj(np.vstack([icons, train])), args.n, noise=0.5, seed=0)
    u = np.random.default_rng(0).random(args.n)
    category = np.select([u < 0.005, u < 0.055, u < 0.555], ["c05", "c5", "c50"], "other")
    syn = Attributes(
        category,
        np.full(args.n, ""),
        np.full(args.n, 10.0),
        np.ones(args.n, bool),
        np.ones(args.n, bool),
    )
    filters = {
        "none": None,
        "50%": Filters(categories=("c50",)),
        "5%": Filters(categories=("c5",)),
        "0.5%": Filters(categories=("c05",)),
    }
    df2 = run_engines(
        args.engines.split(","),
        x,
        [f"p{i}" for i in range(args.n)],
        syn,
        proj(test)[: args.queries],
        filters,
        args.slow_queries,
        f"synthetic ({args.n:,}, {args.dim}-d)",
    )
    table(df2, f"2. {args.n:,} synthetic products, {args.dim}-d, k=10")

    if not args.skip_ray:
        table(
            ray_section(catalog, args.ray_images),
            "3. Embedding shop photos: one process vs Ray Data (2 cores)",
        )
    print(
        f"load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}; "
        f"peak RSS {peak_rss_gb():.1f} GB"
    )


if __name__ == "__main__":
    main()
