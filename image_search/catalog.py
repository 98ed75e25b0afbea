"""The product catalog: products, their shop photos (icons) and customer photos (views).

Chapter 04 tells how the catalog was made; ``data/build_catalog.py`` rebuilds it.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "data" / "catalog"


def catalog_root() -> Path:
    """The catalog folder: ``$IMAGE_SEARCH_CATALOG`` or ``data/catalog`` beside the package."""
    return Path(os.environ.get("IMAGE_SEARCH_CATALOG", DEFAULT_ROOT)).expanduser().resolve()


@dataclass(frozen=True)
class Product:
    """One row of ``products.csv``. ``price``, ``in_stock`` and ``brand`` are synthetic."""

    id: str
    name: str
    category: str
    tags: tuple[str, ...]
    width_cm: float
    depth_cm: float
    height_cm: float
    colour: str
    colour_hex: str
    split: str
    price: float
    in_stock: bool
    brand: str
    creator: str
    licence: str
    type: str = ""  # the kind of object (chair, lamp, ...): the "right kind" relevance grade, a filter

    @property
    def text(self) -> str:
        """A short description built from name, colour, category and tags (used for text search)."""
        tags = ", ".join(self.tags)
        return f"{self.colour} {self.name.lower()}, {self.category.lower()}" + (f", {tags.lower()}" if tags else "")


@dataclass(frozen=True)
class Catalog:
    """All products with paths to their images. Load it with :func:`load_catalog` (chapter 09)."""

    root: Path
    products: tuple[Product, ...]

    def __len__(self) -> int:
        return len(self.products)

    def __getitem__(self, product_id: str) -> Product:
        try:
            return self._by_id[product_id]
        except KeyError:
            raise KeyError(f"unknown product id: {product_id!r}") from None

    def __contains__(self, product_id: object) -> bool:
        return product_id in self._by_id

    @cached_property
    def _by_id(self) -> dict[str, Product]:
        return {p.id: p for p in self.products}

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.products]

    @cached_property
    def categories(self) -> tuple[str, ...]:
        return tuple(sorted({p.category for p in self.products}))

    @cached_property
    def types(self) -> tuple[str, ...]:
        return tuple(sorted({p.type for p in self.products if p.type}))

    @cached_property
    def frame(self) -> pd.DataFrame:
        """The products as a DataFrame indexed by id."""
        return pd.read_csv(self.root / "products.csv", keep_default_na=False).set_index("id")

    def icon_path(self, product_id: str) -> Path:
        """The catalogue photo ("shop photo") of a product."""
        return self.root / "icons" / f"{self[product_id].id}.png"

    def view_paths(self, product_id: str) -> list[Path]:
        """The rendered "customer photos" of a product, in order."""
        return sorted((self.root / "views").glob(f"{self[product_id].id}_*.jpg"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))

    def split(self, name: str) -> list[Product]:
        """Products of the ``train`` or ``test`` split (no product is in both)."""
        if name not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {name!r}")
        return [p for p in self.products if p.split == name]

    def queries(self, split: str = "test") -> tuple[list[Path], list[str]]:
        """Customer photos of a split's products and the product id each one shows."""
        paths, ids = [], []
        for p in self.split(split):
            for path in self.view_paths(p.id):
                paths.append(path)
                ids.append(p.id)
        return paths, ids


def load_catalog(root: str | Path | None = None) -> Catalog:
    """Read ``products.csv`` of the catalog folder (default :func:`catalog_root`). Chapter 09."""
    root = Path(root).expanduser().resolve() if root is not None else catalog_root()
    csv_path = root / "products.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"no catalog at {root}: expected {csv_path} (run `make catalog`)")
    with open(csv_path, newline="", encoding="utf-8") as f:
        products = tuple(_product(row) for row in csv.DictReader(f))
    return Catalog(root=root, products=products)


def _product(row: dict[str, str]) -> Product:
    return Product(
        id=row["id"], name=row["name"], category=row["category"],
        tags=tuple(t for t in row["tags"].split(";") if t),
        width_cm=float(row["width_cm"]), depth_cm=float(row["depth_cm"]), height_cm=float(row["height_cm"]),
        colour=row["colour"], colour_hex=row["colour_hex"], split=row["split"],
        price=float(row["price"]), in_stock=row["in_stock"] == "True", brand=row["brand"],
        creator=row["creator"], licence=row["licence"], type=row.get("type", ""))


# --------------------------------------------------------------------------- near-duplicates (chapter 04)
@dataclass(frozen=True)
class DuplicatePair:
    """Two products whose images look (nearly) the same; ``id_a < id_b``. Chapter 04."""

    id_a: str
    id_b: str
    similarity: float  # cosine similarity of embeddings, or 1 - Hamming distance / bits for hashes


def near_duplicates(ids: Sequence[str], embeddings: np.ndarray, threshold: float = 0.95) -> list[DuplicatePair]:
    """Every pair of items whose L2-normalised embeddings have cosine similarity ``>= threshold``,
    most similar first. Exact (all pairs, ``n²/2`` dot products): fine for thousands of items; use an
    ANN index's range search beyond that. Chapter 04."""
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) != len(ids):
        raise ValueError(f"need one embedding row per id: {len(ids)} ids, embeddings of shape {x.shape}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sims = x @ x.T
    rows, cols = np.nonzero(np.triu(sims >= threshold, k=1))
    return _sorted_pairs((ids[i], ids[j], float(sims[i, j])) for i, j in zip(rows, cols))


def perceptual_hashes(paths: Sequence[str | Path], hash_size: int = 8) -> np.ndarray:
    """DCT perceptual hash (``imagehash.phash``) of each image as a ``(n, hash_size²)`` bool array. Chapter 04."""
    import imagehash
    from PIL import Image

    out = np.empty((len(paths), hash_size * hash_size), dtype=bool)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            out[i] = imagehash.phash(im.convert("RGB"), hash_size=hash_size).hash.ravel()
    return out


def hash_duplicates(ids: Sequence[str], hashes: np.ndarray, max_distance: int = 4) -> list[DuplicatePair]:
    """Pairs whose perceptual hashes differ in at most ``max_distance`` bits; ``similarity`` is
    ``1 - distance / bits``. Chapter 04."""
    h = np.asarray(hashes, dtype=bool)
    if h.ndim != 2 or len(h) != len(ids):
        raise ValueError(f"need one hash row per id: {len(ids)} ids, hashes of shape {h.shape}")
    hi = h.astype(np.int32)
    distance = hi @ (1 - hi).T + (1 - hi) @ hi.T  # Hamming distance of every pair
    rows, cols = np.nonzero(np.triu(distance <= max_distance, k=1))
    bits = h.shape[1]
    return _sorted_pairs((ids[i], ids[j], 1.0 - float(distance[i, j]) / bits) for i, j in zip(rows, cols))


def duplicate_groups(pairs: Sequence[DuplicatePair]) -> list[tuple[str, ...]]:
    """Connected groups of items linked by duplicate pairs (sorted ids; largest group first). Chapter 04."""
    parent: dict[str, str] = {}

    def root(a: str) -> str:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for p in pairs:
        ra, rb = root(p.id_a), root(p.id_b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = {}
    for a in parent:
        groups.setdefault(root(a), []).append(a)
    return sorted((tuple(sorted(g)) for g in groups.values()), key=lambda g: (-len(g), g))


def _sorted_pairs(triples) -> list[DuplicatePair]:
    pairs = [DuplicatePair(*sorted((a, b)), s) for a, b, s in triples]
    return sorted(pairs, key=lambda p: (-round(p.similarity, 6), p.id_a, p.id_b))
