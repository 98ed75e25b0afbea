"""The product catalog: products, their shop photos (icons) and customer photos (views).

Chapter 04 tells how the catalog was made; ``data/build_catalog.py`` rebuilds it.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

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
        creator=row["creator"], licence=row["licence"])
