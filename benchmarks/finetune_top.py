"""Fine-tuning the top of the backbone (issue 12, part 4): EfficientNet-Lite0's last block and its
1280-channel head convolution, trained on the **train** products' cropped customer photos against
their shop photos, measured on the 744 held-out customer photos against the frozen network. Two
ways: **both sides** (this script trains it: queries and shop photos go through the tuned top, so
the whole catalog must be re-embedded) and the **query tower** that ``product-search`` ships
(``make models``, ``training.build_query_tower``: only the query side is tuned, against the
index's frozen vectors; loaded here, not trained).

The frozen trunk (stem and blocks 0-5) runs once per photo and its output (192 x 7 x 7 at 224 px)
is cached with a mirrored copy, the augmentation; training then runs only the top (block 6, the
head convolution and its batch norm, kept in eval mode) with chapter 06's symmetric InfoNCE loss
(``training.info_nce_loss``, temperature 0.05): each step pairs one crop and one shop photo of each
of 64 products, in-batch negatives, seeded, one thread. The number of epochs is chosen on a
validation split of the train products (``training.validation_split``); the final model trains on
all 432 train products. Queries are cropped by the shipped localiser as ``product-search`` does;
the index holds every shop photo, a product scores its best photo, exact search.

Output: the validation table, the test ablation (frozen vs fine-tuned) and paired bootstrap
intervals by product, as ``eval_retrieval.py`` prints them. The trunk features take about half an
hour on 2 busy cores the first time (cached in the cache folder), training about two minutes.

    nice -n 10 .venv/bin/python benchmarks/finetune_top.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_retrieval import METRICS, paired_bootstrap, per_query, rank  # noqa: E402

from image_search import load_catalog, load_encoder  # noqa: E402
from image_search.encoders import with_weights  # noqa: E402
from image_search.images import load_image  # noqa: E402
from image_search.localizer import LocalizedEncoder, shipped_tensors  # noqa: E402
from image_search.metrics import retrieval_report  # noqa: E402
from image_search.paths import cache_dir  # noqa: E402
from image_search.stores import indexed_photos  # noqa: E402
from image_search.training import (  # noqa: E402
    info_nce_loss,
    query_top,
    query_top_vectors,
    set_seed,
    top_inputs,
    validation_split,
)

from _common import header, table  # noqa: E402

EPOCHS = (5, 10, 20)  # tried on the validation split


def trunk_features(catalog, lite0, search, shop_paths) -> dict[str, np.ndarray]:
    """Block-6 inputs (float16) of the train and test crops, the shop photos, and mirrored copies
    of what training sees; cached by the encoder's and the localiser's fingerprints."""
    from PIL import ImageOps

    path = cache_dir() / "finetune" / f"trunk6-{search.fingerprint[:16]}.npz"
    if path.is_file():
        with np.load(path) as d:
            return {k: d[k] for k in d.files}

    def feats(images):
        return top_inputs(images, lite0.preprocess).astype(np.float16)

    def crops(paths):
        images = [load_image(p) for p in paths]
        return [im.crop(b.as_tuple()) for im, b in zip(images, search.crop_boxes(images))]

    t = time.perf_counter()
    train_crops, shop = crops(catalog.queries("train")[0]), [load_image(p) for p in shop_paths]
    out = {
        "train": feats(train_crops),
        "train_flip": feats([ImageOps.mirror(im) for im in train_crops]),
        "test": feats(crops(catalog.queries("test")[0])),
        "shop": feats(shop),
        "shop_flip": feats([ImageOps.mirror(im) for im in shop]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    print(f"  trunk features computed in {time.perf_counter() - t:.0f} s", flush=True)
    return out


def train(model, feats, train_owner, shop_owner, products, epochs, lr=1e-4, batch=64, seed=0):
    """Fine-tune a fresh copy of the top on ``products`` (catalog row numbers)."""
    import torch
    import torch.nn.functional as F

    set_seed(seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    top = query_top(model)
    opt = torch.optim.AdamW(top.parameters(), lr=lr, weight_decay=1e-4)
    crops = {p: np.flatnonzero(train_owner == p) for p in products}
    shots = {p: np.flatnonzero(shop_owner == p) for p in products}
    products = np.asarray(products)

    def side(name, rows, flip):
        x = np.where(flip[:, None, None, None], feats[f"{name}_flip"][rows], feats[name][rows])
        return F.normalize(top(torch.from_numpy(x.astype(np.float32))).mean((2, 3)), dim=1)

    for _ in range(epochs):
        top.train()
        for m in top.modules():  # batch norm keeps its ImageNet statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        for b in np.array_split(rng.permutation(products), max(1, len(products) // batch)):
            a = np.array([rng.choice(crops[p]) for p in b])
            s = np.array([rng.choice(shots[p]) for p in b])
            za = side("train", a, rng.random(len(b)) < 0.5)
            zs = side("shop", s, rng.random(len(b)) < 0.5)
            loss = info_nce_loss(za, zs, 0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return top.eval()


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    header("Fine-tuning the top of the backbone on train products (issue 12, part 4)")
    catalog = load_catalog()
    ids, pos = catalog.ids, {p: i for i, p in enumerate(catalog.ids)}
    type_of = {p.id: p.type for p in catalog.products}
    lite0, search = load_encoder("efficientnet-lite0"), load_encoder("product-search")
    search = LocalizedEncoder(lite0, search.localizer, search.margin)  # crops; Lite0 unchanged
    shop = [(pos[i], p) for i in ids for p in indexed_photos(catalog, i)]
    shop_owner = np.array([o for o, _ in shop])
    feats = trunk_features(catalog, lite0, search, [p for _, p in shop])
    train_truth, truth = catalog.queries("train")[1], catalog.queries("test")[1]
    train_owner = np.array([pos[i] for i in train_truth])

    fit, val = validation_split(catalog)
    on_val = np.isin(train_owner, [pos[i] for i in val])
    rows = []
    for epochs in EPOCHS:
        top = train(lite0.model, feats, train_owner, shop_owner, [pos[i] for i in fit], epochs)
        r = retrieval_report(
            rank(
                query_top_vectors(top, feats["train"][on_val]),
                query_top_vectors(top, feats["shop"]),
                shop_owner,
                ids,
            ),
            list(np.asarray(train_truth)[on_val]),
        )
        rows.append({"epochs": epochs, "val R@1": r.recall[1], "val R@10": r.recall[10]})
    table(pd.DataFrame(rows), f"Epochs on {len(val)} validation (train-split) products", ".3f")
    epochs = max(rows, key=lambda r: (r["val R@1"], r["val R@10"]))["epochs"]

    t = time.perf_counter()
    all_train = [pos[p.id] for p in catalog.split("train")]
    frozen = query_top(lite0.model)
    both = train(lite0.model, feats, train_owner, shop_owner, all_train, epochs)
    print(f"  final training {time.perf_counter() - t:.0f} s", flush=True)
    tensors, entry = shipped_tensors("query_top")
    shipped = query_top(with_weights(lite0, tensors, "query").model)
    runs = {  # name: (the top of the query side, the top of the shop side)
        "frozen (crop + multi-photo)": (frozen, frozen),
        f"both sides fine-tuned, {epochs} epochs": (both, both),
        f"query tower (shipped product-search, {entry['epochs']} epochs)": (shipped, frozen),
    }
    out, per = [], {}
    for name, (q_top, shop_top) in runs.items():
        q, index = (
            query_top_vectors(q_top, feats["test"]),
            query_top_vectors(shop_top, feats["shop"]),
        )
        ranked = rank(q, index, shop_owner, ids)
        r = retrieval_report(ranked, truth, type_of=type_of)
        per[name] = per_query(ranked, truth, type_of)
        out.append(
            {
                "model": name,
                "R@1": r.recall[1],
                "R@10": r.recall[10],
                "type P@10": r.type_precision[10],
            }
        )
    table(
        pd.DataFrame(out), f"{len(truth)} held-out customer photos, all {len(ids)} products", ".3f"
    )
    names = list(per)
    for name in names[1:]:
        lo, hi = paired_bootstrap(per[name], per[names[0]], truth)
        print(
            f"Paired bootstrap, {name} minus frozen (by product, 95%): "
            + ", ".join(f"{m} [{a:+.3f}, {b:+.3f}]" for m, a, b in zip(METRICS, lo, hi))
        )


if __name__ == "__main__":
    main()
