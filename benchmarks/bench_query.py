"""The query path, one customer photo at a time: decode → embed → ANN → re-rank, p50 and p95 of
each stage and end to end, against the catalog index (618 products, Flat) and against a 1M-product
index.

The 1M index is the 618 real shop photos plus 999,382 synthetic vectors at the encoder's 1280-d,
drawn from ``image_search.synthetic.fit_realistic`` fitted on the train products (``--data
near-copy``: the older near-copy generator) behind the index chosen by ``bench_ann.py``: PCA to
128-d inside FAISS (the searcher still sends 1280-d queries), L2 normalisation, IVF-Flat. The
re-ranker looks every candidate up in the catalog: each synthetic vector borrows the attributes of a
real product (round robin), so the re-rank stage does exactly the per-candidate work it does in
production; the products it returns for the 1M index are therefore not meaningful, only its timings
are.

    python benchmarks/bench_query.py                 # 300 queries, 1M index, 3 passes
    python benchmarks/bench_query.py --n 100000 --repeats 1     # quicker
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from image_search import ProductIndex, Searcher, load_catalog
from image_search.catalog import Catalog
from image_search.encoders import encode_paths
from image_search.synthetic import fit_realistic, near_copy_embeddings
from image_search.training import catalog_features

from _common import header, latency, median_range, peak_rss_gb, table


@dataclass(frozen=True)
class VariantCatalog(Catalog):
    """The catalog, where an id ``"<product id>~v<n>"`` (a synthetic variant) resolves to its
    product."""

    def __getitem__(self, product_id: str) -> object:
        return super().__getitem__(product_id.split("~", 1)[0])

    def __contains__(self, product_id: object) -> bool:
        return isinstance(product_id, str) and super().__contains__(product_id.split("~", 1)[0])


def run_queries(searcher: Searcher, queries: list[bytes], warmup: int = 5) -> pd.DataFrame:
    for q in queries[:warmup]:
        searcher.search(q, k=10)
    rows = []
    for q in queries:
        t = time.perf_counter()
        r = searcher.search(q, k=10)
        wall = (time.perf_counter() - t) * 1000
        rows.append(
            {
                "decode": r.timings.decode_ms,
                "embed": r.timings.embed_ms,
                "ANN": r.timings.ann_ms,
                "re-rank": r.timings.rerank_ms,
                "end to end": wall,
            }
        )
    return pd.DataFrame(rows)


def big_index(
    catalog: Catalog, encoder, n: int, factory: str, data: str
) -> tuple[ProductIndex, float]:
    icons = encode_paths(encoder, [catalog.icon_path(i) for i in catalog.ids], progress=False)
    train = catalog_features(
        catalog, encoder, [p.id for p in catalog.split("train")]
    )  # (432, 5, 1280)
    if data == "realistic":
        model = fit_realistic(train)
        draw = lambda m, seed: model.sample(m, seed=seed)  # noqa: E731
    else:
        real = train.reshape(-1, train.shape[-1])
        draw = lambda m, seed: near_copy_embeddings(real, m, noise=0.5, seed=seed)  # noqa: E731
    t = time.perf_counter()
    index = ProductIndex(encoder.dim, encoder.name, factory=factory)
    index.train(draw(100_000, 1))  # PCA + IVF centroids (FAISS wants >= 39 x 2048 points)
    index.add(catalog.ids, icons)
    chunk, done, ids = 200_000, 0, catalog.ids
    while done < n - len(ids):
        b = min(chunk, n - len(ids) - done)
        x = draw(b, 100 + done // chunk)
        index.add([f"{ids[(done + j) % len(ids)]}~v{done + j}" for j in range(b)], x)
        done += b
    return index, time.perf_counter() - t


def summary(passes: list[pd.DataFrame], label: str) -> list[dict]:
    """Per stage: p50 and p95 of each pass over the queries, as the median and min-max over
    passes."""
    rows = []
    for col in passes[0].columns:
        lat = [latency(df[col] / 1000) for df in passes]
        p50, p95 = [x.p50 for x in lat], [x.p95 for x in lat]
        rows.append(
            {
                "index": label,
                "stage": col,
                "p50 ms": float(np.median(p50)),
                "p50 min-max": median_range(p50, ".2f").split(" ")[1].strip("()"),
                "p95 ms": float(np.median(p95)),
                "p95 min-max": median_range(p95, ".2f").split(" ")[1].strip("()"),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--n", type=int, default=1_000_000, help="products in the big index (default 1M)"
    )
    ap.add_argument(
        "--queries", type=int, default=300, help="test customer photos to time (at least 200)"
    )
    ap.add_argument(
        "--factory", default="PCA128,L2norm,IVF2048,Flat", help="FAISS factory of the big index"
    )
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument(
        "--data",
        default="realistic",
        choices=["realistic", "near-copy"],
        help="synthetic generator",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="passes over the queries (p50/p95 per pass: median, min-max)",
    )
    args = ap.parse_args()
    header(
        f"bench_query: single-query latency, {args.queries} customer photos, catalog index and "
        f"{args.n:,}-product index"
    )

    catalog = load_catalog()
    paths, _ = catalog.queries("test")
    rng = np.random.default_rng(0)
    picked = rng.choice(len(paths), size=min(args.queries, len(paths)), replace=False)
    queries = [
        paths[i].read_bytes() for i in picked
    ]  # a service receives bytes: decode is PIL only

    small = Searcher.from_catalog("efficientnet-lite0", progress=False)  # the whole frame
    backend = "ONNX Runtime" if getattr(small.encoder, "onnx", None) is not None else "PyTorch"
    print(
        f"encoder {small.encoder.name} ({backend}), catalog index {small.index.factory} over "
        f"{len(small.index)} products",
        flush=True,
    )
    df_small = [run_queries(small, queries) for _ in range(args.repeats)]

    variants = VariantCatalog(catalog.root, catalog.products)
    index, build_s = big_index(catalog, small.encoder, args.n, args.factory, args.data)
    print(
        f"built {args.factory} over {len(index):,} products in {build_s:.0f} s; peak RSS "
        f"{peak_rss_gb():.1f} GB",
        flush=True,
    )
    big = Searcher(index, variants, small.encoder)
    if "IVF" in args.factory:
        search = index.search
        index.search = lambda q, k, filters=None, **kw: search(
            q, k, filters, **{**kw, "params": kw.get("params") or {"nprobe": args.nprobe}}
        )
    df_big = [run_queries(big, queries) for _ in range(args.repeats)]

    rows = summary(df_small, f"catalog ({len(small.index)}, Flat)") + summary(
        df_big, f"{len(index):,}, {args.factory}"
    )
    table(
        pd.DataFrame(rows),
        f"1. Per-stage latency, one query at a time (ms): median (min-max) over {args.repeats} "
        "passes",
        floatfmt=".2f",
    )
    e2e = [r for r in rows if r["index"] != rows[0]["index"] and r["stage"] == "end to end"][0]
    embed = np.median([df["embed"].median() / df["end to end"].median() for df in df_big])
    print(
        f"- end-to-end p95 at {len(index):,} products: {e2e['p95 ms']:.1f} ms (min-max "
        f"{e2e['p95 min-max']}; target <= 50 ms: {'met' if e2e['p95 ms'] <= 50 else 'not met'}); "
        f"p50 {e2e['p50 ms']:.1f} ms. The embed stage is {embed:.0%} of the median query."
    )
    print(f"\npeak RSS {peak_rss_gb():.1f} GB")


if __name__ == "__main__":
    main()
