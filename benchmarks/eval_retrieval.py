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
  embedding; rows say whether the index photos are cropped the same way
  (``load_encoder("product-search")``
  embeds both) or left whole;
* **+ crop (SCDA)** (``--all``): the same with the unsupervised SCDA localiser;
* **all**: ``load_encoder("product-search")`` on the queries, every shop photo embedded whole by
  its base encoder (``--all`` adds the row with the shop photos cropped too).

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
from image_search.localizer import LocalizedEncoder, load_localizer, models_manifest  # noqa: E402
from image_search.metrics import retrieval_report  # noqa: E402
from image_search.stores import indexed_photos  # noqa: E402
from image_search.training import localizer_ious  # noqa: E402

from _common import header, machine, table, time_each  # noqa: E402

TARGETS = {"R@1": 0.80, "R@10": 0.95, "type P@10": 0.80, "latency ms": 50.0}


def rank(
    query_vectors: np.ndarray,
    index_vectors: np.ndarray,
    owners: np.ndarray,
    ids: list[str],
    k: int = 10,
) -> list[list[str]]:
    """Top-k product ids per query, each product scored by its best indexed photo."""
    sims = query_vectors @ index_vectors.T
    best = np.full((len(sims), len(ids)), -np.inf, dtype=np.float32)
    for j in range(sims.shape[1]):
        np.maximum(best[:, owners[j]], sims[:, j], out=best[:, owners[j]])
    top = np.argsort(-best, axis=1, kind="stable")[:, :k]
    return [[ids[j] for j in row] for row in top]


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
    trained_on = set(models_manifest()["models"]["localizer"]["train_ids"])
    assert not trained_on & set(truth), "a held-out product was used to train the localiser"

    lite0 = load_encoder("efficientnet-lite0")
    search = load_encoder("product-search")
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

    q_full, q_crop = vectors(lite0, queries), vectors(search, queries)
    i_full, i_crop = vectors(lite0, icons), vectors(search, icons)
    s_full = vectors(lite0, shop_paths)
    ablation = [
        ("base: full frame, icon only", q_full, i_full, icon_owner),
        ("+ multi-photo (every shop photo)", q_full, s_full, shop_owner),
        ("+ crop (query only), icon only", q_crop, i_full, icon_owner),
        ("+ crop (query and index), icon only", q_crop, i_crop, icon_owner),
    ]
    if args.all:
        q_scda = vectors(LocalizedEncoder(lite0, load_localizer("scda"), search.margin), queries)
        ablation.append(("+ crop (SCDA, query only) + multi-photo", q_scda, s_full, shop_owner))
        ablation.append(
            (
                "+ crop (query and index) + multi-photo",
                q_crop,
                vectors(search, shop_paths),
                shop_owner,
            )
        )
    ablation.append(("all: crop (query only) + multi-photo", q_crop, s_full, shop_owner))
    rows = []
    for name, q, index, owners in ablation:
        r = retrieval_report(rank(q, index, owners, ids), truth, type_of=type_of)
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
    best = rows[-1]
    targets = pd.DataFrame(
        [
            {
                "metric": "exact-product Recall@1",
                "target": ">= 0.80",
                "measured": f"{best['R@1']:.3f}",
            },
            {
                "metric": "exact-product Recall@10",
                "target": ">= 0.95",
                "measured": f"{best['R@10']:.3f}",
            },
            {
                "metric": "type precision@10",
                "target": ">= 0.80",
                "measured": f"{best['type P@10']:.3f} (ceiling {best['type P@10 ceiling']:.3f})",
            },
            {
                "metric": "median single-query latency",
                "target": "<= 50 ms",
                "measured": f"{latencies['product-search'].p50:.1f} ms "
                f"(p95 {latencies['product-search'].p95:.1f}; "
                f"base {latencies['base'].p50:.1f}; {len(sample)} queries; load average "
                f"{os.getloadavg()[0]:.1f})",
            },
        ]
    )
    table(
        targets,
        "Targets: the last ablation row (product-search queries, every shop photo embedded whole)",
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
