"""Retrieval quality on a shopper's photo (issue 12): the localiser's IoU, the ablation and the
targets.

Queries: the 744 customer photos of the 186 **held-out** products (no trained part saw them: the
localiser's manifest lists its train products and this script checks it). Index: all 618 products,
searched exactly (NumPy inner products on L2-normalised vectors); a product with several indexed
photos scores its best photo (max aggregation). Every embedding goes through
``embeddings.encode_paths`` (cached by the encoder's fingerprint), as the online path does.

Rows of the ablation:

* **base**: EfficientNet-Lite0 on the full frame, the icon only;
* **+ multi-photo**: every shop photo indexed (``stores.indexed_photos``: the icon and 4 studio
  shots);
* **+ crop**: the query cropped to the trained localiser's best box (square, shipped margin) before
  embedding by the frozen EfficientNet-Lite0; rows say whether the index photos are cropped the
  same way or left whole;
* **+ crop (SCDA)** (``--all``): the same with the unsupervised SCDA localiser;
* **crop + multi-photo**: cropped queries, every shop photo embedded whole (``--all`` adds the
  row with the shop photos cropped too);
* **+ query tower**: ``load_encoder("product-search")``, the default: the same crops embedded by
  Lite0 with its shipped fine-tuned top (``make models``, ``training.build_query_tower``: trained
  on the **train** products only) into the frozen index; the fine-tune of issue 12, part 4;
* **+ head**: chapter 06's InfoNCE projection head (``training.train_projection_head``) trained
  here, seeded, in seconds, on the **train** products' cropped customer photos and shop photos
  (nine photos per product, any two a positive pair) on frozen features; its output size is
  chosen on a validation split of the train products (``training.validation_split``), never on
  the test products;
* **+ type consensus**: the re-ranker's ``RerankConfig(type_weight=w)`` as the searcher applies
  it: the top 50 candidates, plus the best 50 of the type they vote for, re-ranked by
  ``reranker.type_consensus``; ``w`` is chosen on the train products' customer photos, and a
  sweep shows the trade-off on the test photos.

Paired bootstrap (1,000 resamples of the 186 held-out products, all photos of a drawn product
together): 95% intervals of each row's difference from the "crop + multi-photo" row (frozen
Lite0 on both sides).

Columns: exact-product Recall@1 and @10, type precision@10 with its ceiling
(``min(10, products of the type) / 10`` averaged over queries) and graded NDCG@10; then the median
single-query latency (decode + localiser + crop + embed + exact search over every shop photo, one
query at a time) with the load average. Localiser IoU: best box vs ``boxes.csv``, trained vs SCDA
vs the full frame, on the held-out customer photos and on the held-out products' studio shop photos.

    nice -n 10 .venv/bin/python benchmarks/eval_retrieval.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from image_search import load_catalog, load_encoder  # noqa: E402
from image_search.embeddings import encode_paths  # noqa: E402
from image_search.features import best_photo_scores  # noqa: E402
from image_search.localizer import LocalizedEncoder, load_localizer, models_manifest  # noqa: E402
from image_search.metrics import retrieval_report  # noqa: E402
from image_search.reranker import type_consensus  # noqa: E402
from image_search.stores import indexed_photos  # noqa: E402
from image_search.training import (  # noqa: E402
    HeadConfig,
    localizer_ious,
    train_projection_head,
    validation_split,
)

from _common import header, machine, table, time_each  # noqa: E402

TARGETS = {"R@1": 0.80, "R@10": 0.95, "type P@10": 0.80, "latency ms": 50.0}


METRICS = ("R@1", "R@10", "type P@10")
TYPE_WEIGHTS = (0.1, 0.2, 0.5, 1.0, 2.0)  # RerankConfig.type_weight values tried
CANDIDATES = 50  # what the searcher re-ranks (Searcher.candidates)


def rank(
    query_vectors: np.ndarray,
    index_vectors: np.ndarray,
    owners: np.ndarray,
    ids: list[str],
    k: int = 10,
    type_weight: float = 0.0,
    types: np.ndarray | None = None,
) -> list[list[str]]:
    """Top-k product ids per query, each product scored by its best indexed photo; with
    ``type_weight``, the top 50 re-ranked by type consensus as ``Reranker`` does."""
    best = best_photo_scores(query_vectors, index_vectors, owners)
    out, n = [], max(k, CANDIDATES)
    for row in best:
        cand = np.argsort(-row, kind="stable")[:n]
        score = row[cand]
        if type_weight:  # as Searcher: add the voted type's best n, then re-rank
            kind = types[cand][np.argmax(type_consensus(types[cand], row[cand]))]
            same = np.flatnonzero(types == kind)
            more = same[np.argsort(-row[same], kind="stable")][:n]
            cand = np.concatenate([cand, np.setdiff1d(more, cand)])
            score = row[cand] + type_weight * type_consensus(types[cand], row[cand])
        out.append([ids[j] for j in cand[np.argsort(-score, kind="stable")][:k]])
    return out


def per_query(ranked: list[list[str]], truth: list[str], type_of: dict) -> np.ndarray:
    """(queries, 3): hit@1, hit@10 and type precision@10 of each query."""
    return np.array(
        [
            (r[0] == t, t in r[:10], np.mean([type_of[p] == type_of[t] for p in r[:10]]))
            for r, t in zip(ranked, truth)
        ],
        dtype=float,
    )


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, truth: list[str], n: int = 1000, seed: int = 0
) -> np.ndarray:
    """95% intervals (2, 3) of mean(a) - mean(b) per column, resampling products (all photos of a
    drawn product together)."""
    groups = pd.Series(range(len(truth))).groupby(np.asarray(truth)).apply(list).tolist()
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        rows = np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))])
        diffs.append(a[rows].mean(0) - b[rows].mean(0))
    return np.percentile(diffs, [2.5, 97.5], axis=0)


def trained_head(catalog, search, lite0, s_full: np.ndarray, owners: np.ndarray):
    """Chapter 06's InfoNCE head on the train products' cropped customer photos and shop photos,
    its output size chosen on a validation split of the train products (searched among every
    product, as the test photos are). Returns the head's ``project``."""

    def groups(pids):
        views = encode_paths(search, [p for i in pids for p in catalog.view_paths(i)], False)
        shop = encode_paths(lite0, [p for i in pids for p in indexed_photos(catalog, i)], False)
        return np.concatenate(
            [views.reshape(len(pids), -1, search.dim), shop.reshape(len(pids), -1, lite0.dim)], 1
        )

    fit, val = validation_split(catalog)
    val_groups = groups(val)
    n_views = len(catalog.view_paths(val[0]))
    val_q, val_truth = (
        val_groups[:, :n_views].reshape(-1, search.dim),
        list(np.repeat(val, n_views)),
    )
    rows = []
    for dim in (256, 512):
        head = train_projection_head(groups(fit), HeadConfig(dim=dim))
        ranked = rank(head.project(val_q), head.project(s_full), owners, catalog.ids)
        r = retrieval_report(ranked, val_truth)
        rows.append({"head dim": dim, "val R@1": r.recall[1], "val R@10": r.recall[10]})
    table(pd.DataFrame(rows), f"Head size on {len(val)} validation (train-split) products", ".3f")
    dim = max(rows, key=lambda r: (r["val R@1"], r["val R@10"]))["head dim"]
    train_ids = [p.id for p in catalog.split("train")]
    return train_projection_head(groups(train_ids), HeadConfig(dim=dim)).project


def type_sweep(q, index, owners, ids, truth, types, type_of) -> pd.DataFrame:
    """R@1, R@10 and type P@10 of these queries at each ``TYPE_WEIGHTS`` value (and 0)."""
    rows = []
    for w in (0.0, *TYPE_WEIGHTS):
        r = retrieval_report(rank(q, index, owners, ids, 10, w, types), truth, type_of=type_of)
        rows.append(
            {
                "type_weight": w,
                "R@1": r.recall[1],
                "R@10": r.recall[10],
                "type P@10": r.type_precision[10],
            }
        )
    return pd.DataFrame(rows)


def choose_type_weight(q, index, owners, ids, truth, types, type_of) -> float:
    """The smallest ``TYPE_WEIGHTS`` value whose type precision@10 on these (train) queries
    reaches the 0.80 target, else the largest; prints the sweep."""
    sweep = type_sweep(q, index, owners, ids, truth, types, type_of)
    table(sweep, f"Type consensus on {len(truth)} train customer photos", ".3f")
    ok = sweep["type_weight"][sweep["type P@10"] >= TARGETS["type P@10"]].tolist()
    return min(ok) if ok else TYPE_WEIGHTS[-1]


def iou_row(name: str, ious: np.ndarray) -> dict:
    return {
        "localiser": name,
        "mean IoU": ious.mean(),
        "median IoU": np.median(ious),
        "IoU >= 0.5": np.mean(ious >= 0.5),
        "IoU >= 0.7": np.mean(ious >= 0.7),
    }


def localiser_table(catalog, queries, truth) -> None:
    trained, scda = load_localizer("trained"), load_localizer("scda")
    test_shop = [
        p
        for i in sorted(set(truth))
        for p in catalog.shop_photo_paths(i)
        if p.parent.name == "shop"
    ]  # the studio shots (boxes.csv has no box for icons)
    rows = []
    for split, paths in (("customer photos", queries), ("shop photos", test_shop)):
        full = np.array(
            [
                (b[2] - b[0]) * (b[3] - b[1]) / (w * h)  # IoU of the whole image with the box
                for b, (w, h) in ((catalog.object_box(p), _size(p)) for p in paths)
            ]
        )
        for name, loc in (("trained", trained), ("SCDA (Wei et al. 2017)", scda)):
            rows.append(
                {
                    "photos": f"{split} ({len(paths)})",
                    **iou_row(name, localizer_ious(loc, catalog, paths)),
                }
            )
        rows.append({"photos": f"{split} ({len(paths)})", **iou_row("full frame", full)})
    table(
        pd.DataFrame(rows), "Localiser IoU on the held-out products (best box vs boxes.csv)", ".3f"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--all",
        action="store_true",
        help="also the SCDA-crop row and the row with every shop photo cropped (about 4,000 more "
        "crops to embed: tens of minutes on a busy 2-core machine)",
    )
    parser.add_argument("--no-iou", action="store_true", help="skip the localiser IoU table")
    args = parser.parse_args()
    header("Retrieval on customer photos: localiser, multi-photo index, targets (issue 12)")
    catalog = load_catalog()
    ids = catalog.ids
    type_of = {p.id: p.type for p in catalog.products}
    queries, truth = catalog.queries("test")
    for model in ("localizer", "query_top"):
        trained_on = set(models_manifest()["models"][model]["train_ids"])
        assert not trained_on & set(truth), f"a held-out product was used to train the {model}"

    lite0 = load_encoder("efficientnet-lite0")
    search = load_encoder("product-search")
    crop = LocalizedEncoder(lite0, search.localizer, search.margin)  # frozen Lite0 on the crop
    icons = [catalog.icon_path(i) for i in ids]
    shop = [(n, p) for n, i in enumerate(ids) for p in indexed_photos(catalog, i)]
    shop_owner, shop_paths = np.array([n for n, _ in shop]), [p for _, p in shop]
    icon_owner = np.arange(len(ids))

    def vectors(encoder, paths):
        t = time.perf_counter()
        out = encode_paths(encoder, paths, progress=False)
        print(
            f"  {encoder.name}: {len(paths)} photos embedded or read from the cache in "
            f"{time.perf_counter() - t:.0f} s",
            flush=True,
        )
        return out

    q_full, q_crop, q_tuned = (
        vectors(lite0, queries),
        vectors(crop, queries),
        vectors(search, queries),
    )
    i_full, i_crop = vectors(lite0, icons), vectors(crop, icons)
    s_full = vectors(lite0, shop_paths)
    ablation = [
        ("base: full frame, icon only", q_full, i_full, icon_owner),
        ("+ multi-photo (every shop photo)", q_full, s_full, shop_owner),
        ("+ crop (query only), icon only", q_crop, i_full, icon_owner),
        ("+ crop (query and index), icon only", q_crop, i_crop, icon_owner),
    ]
    if args.all:
        q_scda = vectors(LocalizedEncoder(lite0, load_localizer("scda"), crop.margin), queries)
        ablation.append(("+ crop (SCDA, query only) + multi-photo", q_scda, s_full, shop_owner))
        ablation.append(
            (
                "+ crop (query and index) + multi-photo",
                q_crop,
                vectors(crop, shop_paths),
                shop_owner,
            )
        )
    ablation.append(("crop (query only) + multi-photo", q_crop, s_full, shop_owner))
    ablation.append(("+ query tower: product-search (default)", q_tuned, s_full, shop_owner))
    types = np.array([type_of[i] for i in ids])
    train_q, train_truth = catalog.queries("train")
    w = choose_type_weight(
        vectors(crop, train_q), s_full, shop_owner, ids, train_truth, types, type_of
    )
    project = trained_head(catalog, crop, lite0, s_full, shop_owner)
    h_q, h_index = project(q_crop), project(s_full)
    runs = [(*row, 0.0) for row in ablation] + [
        (f"product-search + type consensus (w={w:g})", q_tuned, s_full, shop_owner, w),
        ("crop + multi-photo + head (frozen)", h_q, h_index, shop_owner, 0.0),
        (f"... + head + type consensus (w={w:g})", h_q, h_index, shop_owner, w),
    ]
    rows, per = [], {}
    for name, q, index, owners, weight in runs:
        ranked = rank(q, index, owners, ids, 10, weight, types)
        r = retrieval_report(ranked, truth, type_of=type_of)
        per[name] = per_query(ranked, truth, type_of)
        rows.append(
            {
                "pipeline": name,
                "R@1": r.recall[1],
                "R@10": r.recall[10],
                "type P@10": r.type_precision[10],
                "type P@10 ceiling": r.type_precision_ceiling[10],
                "NDCG@10": r.ndcg,
            }
        )
    table(
        pd.DataFrame(rows),
        f"Ablation: {len(queries)} held-out customer photos, all {len(ids)} products",
        ".3f",
    )
    frozen = ablation[-2][0]
    diffs = []
    for name in per:
        lo, hi = paired_bootstrap(per[name], per[frozen], truth)
        diffs.append(
            {"pipeline": name}
            | {f"{m} diff (95% CI)": f"[{a:+.3f}, {b:+.3f}]" for m, a, b in zip(METRICS, lo, hi)}
        )
    table(pd.DataFrame(diffs), f"Paired bootstrap against '{frozen}' (by product)")
    table(
        type_sweep(q_tuned, s_full, shop_owner, ids, truth, types, type_of),
        "The trade-off on the test photos (product-search)",
        ".3f",
    )

    sample = queries[::25]
    latencies = {}
    for name, encoder, index, owners in (
        ("base", lite0, i_full, icon_owner),
        ("product-search", search, s_full, shop_owner),
    ):
        latencies[name] = time_each(
            lambda p, e=encoder, i=index, o=owners: rank(e.encode_images([p]), i, o, ids), sample
        )
    print(f"Latency measured under: {machine()}\n")
    best = rows[len(ablation) - 1]  # the default pipeline
    full = rows[len(ablation)]  # with type consensus
    targets = pd.DataFrame(
        [
            {"metric": "exact-product Recall@1", "target": ">= 0.80"}
            | {row["pipeline"]: f"{row['R@1']:.3f}" for row in (best, full)},
            {"metric": "exact-product Recall@10", "target": ">= 0.95"}
            | {row["pipeline"]: f"{row['R@10']:.3f}" for row in (best, full)},
            {"metric": "type precision@10", "target": ">= 0.80"}
            | {
                row["pipeline"]: f"{row['type P@10']:.3f} (ceiling {row['type P@10 ceiling']:.3f})"
                for row in (best, full)
            },
            {
                "metric": "median single-query latency",
                "target": "<= 50 ms",
                best["pipeline"]: f"{latencies['product-search'].p50:.1f} ms "
                f"(p95 {latencies['product-search'].p95:.1f}; "
                f"base {latencies['base'].p50:.1f}; {len(sample)} queries; load average "
                f"{os.getloadavg()[0]:.1f})",
                full["pipeline"]: "not timed (adds a 50-candidate vote and a filtered search)",
            },
        ]
    )
    table(
        targets,
        "Targets: the default pipeline (product-search queries, every shop photo embedded whole) "
        "and with type consensus",
    )
    real_photo_table(catalog)
    if not args.no_iou:
        localiser_table(catalog, queries, truth)


def real_photo_table(catalog) -> None:
    """Type hit@5 on the real-photo sanity set (``data/real_photos``): does a top-5 product have
    the photographed type? Cross-domain transfer from the rendered catalog to photographs."""
    from image_search import Searcher
    from image_search.catalog import real_photos

    paths, types = real_photos()
    rows = []
    for name in ("efficientnet-lite0", "product-search"):
        searcher = Searcher.from_catalog(name, catalog=catalog, progress=False)
        hits = [
            any(p.type == t for p in searcher.search(path, k=5).products)
            for path, t in zip(paths, types)
        ]
        rows.append({"encoder": name, "photos": len(paths), "type hit@5": np.mean(hits)})
    table(
        pd.DataFrame(rows),
        "Real photos (data/real_photos): a top-5 product of the photographed type",
        ".3f",
    )


def _size(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


if __name__ == "__main__":
    main()
