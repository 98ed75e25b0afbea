"""The product catalog: products, their shop photos and the customer photos (views).

Chapter 04 tells how the catalog was made; ``data/build_catalog.py`` rebuilds it. The book's catalog
lives in ``data/catalog``; :func:`load_catalog_csv` reads a shop's own CSV and images instead.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import CatalogError, ImageSearchError

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "data" / "catalog"
UNSPECIFIED = "unspecified"  # category and type of a user's product when its CSV has no such column
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
_COLUMNS = (
    "id",
    "name",
    "category",
    "type",
    "tags",
    "width_cm",
    "depth_cm",
    "height_cm",
    "colour",
    "colour_hex",
    "split",
    "price",
    "in_stock",
    "brand",
    "creator",
    "licence",
)
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def catalog_root() -> Path:
    """The catalog folder: ``$IMAGE_SEARCH_CATALOG`` or ``data/catalog`` beside the package."""
    return Path(os.environ.get("IMAGE_SEARCH_CATALOG", DEFAULT_ROOT)).expanduser().resolve()


@dataclass(frozen=True)
class Product:
    """One product. ``category`` is the room (a facet), ``type`` the kind of object (chair,
    lamp, …). In the book's catalog ``price``, ``in_stock`` and ``brand`` are synthetic; a user's
    catalog may leave out the optional fields (see :func:`load_catalog_csv`): an unknown price or
    size is NaN."""

    id: str
    name: str
    category: str = UNSPECIFIED
    type: str = UNSPECIFIED
    tags: tuple[str, ...] = ()
    width_cm: float = math.nan
    depth_cm: float = math.nan
    height_cm: float = math.nan
    colour: str = ""
    colour_hex: str = ""
    split: str = ""
    price: float = math.nan
    in_stock: bool = True
    brand: str = ""
    creator: str = ""
    licence: str = ""

    @property
    def text(self) -> str:
        """A short description built from name, colour, category and tags (used for text search)."""
        tags = ", ".join(self.tags)
        text = f"{self.colour} {self.name.lower()}, {self.category.lower()}".strip()
        return text + (f", {tags.lower()}" if tags else "")


@dataclass(frozen=True)
class Catalog:
    """All products with paths to their images. Load it with :func:`load_catalog` (chapter 09) or
    :func:`load_catalog_csv`. ``images`` lists each product's shop photos for a user's catalog; the
    book's catalog finds them by its folder layout (``icons/``, ``shop/``, ``views/``)."""

    root: Path
    products: tuple[Product, ...]
    images: Mapping[str, tuple[Path, ...]] | None = field(default=None, repr=False)

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
        """The room facets, sorted."""
        return tuple(sorted({p.category for p in self.products}))

    @cached_property
    def types(self) -> tuple[str, ...]:
        """The kinds of product (chair, lamp, sofa, …), sorted. Chapter 04."""
        return tuple(sorted({p.type for p in self.products}))

    @cached_property
    def frame(self) -> pd.DataFrame:
        """The products as a DataFrame indexed by id."""
        rows = [asdict(p) for p in self.products]
        return pd.DataFrame(rows, columns=list(_COLUMNS)).set_index("id")

    def icon_path(self, product_id: str) -> Path:
        """The catalogue photo of a product (its first shop photo)."""
        if self.images is not None:
            return self.images[self[product_id].id][0]
        return self.root / "icons" / f"{self[product_id].id}.png"

    def shop_photo_paths(self, product_id: str) -> list[Path]:
        """Every photo the shop has of a product, what gets indexed: the catalogue icon first, then
        the studio renders (``shop/<id>_<n>.jpg``) in order. Chapter 04."""
        if self.images is not None:
            return list(self.images[self[product_id].id])
        return [self.icon_path(product_id), *self._shop.get(product_id, [])]

    def view_paths(self, product_id: str) -> list[Path]:
        """The rendered "customer photos" of a product, in order (none for a user's catalog)."""
        return list(self._views.get(self[product_id].id, []))

    @cached_property
    def _shop(self) -> dict[str, list[Path]]:
        return _numbered_files(self.root / "shop") if self.images is None else {}

    @cached_property
    def _views(self) -> dict[str, list[Path]]:
        return _numbered_files(self.root / "views") if self.images is None else {}

    def object_box(self, photo_path: str | Path) -> tuple[int, int, int, int]:
        """The box ``(left, top, right, bottom)`` in pixels (right and bottom exclusive) of the
        product in one of its rendered photos (a view or a studio shot), from ``boxes.csv``.
        Chapter 04."""
        key = self._relative(photo_path)
        try:
            return self._boxes[key]
        except KeyError:
            raise CatalogError(
                f"no object box for {key}: boxes.csv lists the catalog's views and shop photos"
            ) from None

    def object_mask(self, view_path: str | Path) -> np.ndarray:
        """The product's mask (bool, height x width) in one of its customer photos, from
        ``views_masks/<id>.png`` (the masks of a product's views side by side). Chapter 04."""
        key = self._relative(view_path)
        m = re.fullmatch(r"views/(.+)_(\d+)\.jpg", key)
        mask_file = self.root / "views_masks" / f"{m.group(1)}.png" if m else None
        if mask_file is None or not mask_file.is_file():
            raise CatalogError(f"no object mask for {key}: masks exist for the catalog's views")
        from PIL import Image

        with Image.open(mask_file) as im:
            masks = np.asarray(im.convert("1"))
        size = masks.shape[0]
        return masks[:, int(m.group(2)) * size : (int(m.group(2)) + 1) * size].copy()

    def _relative(self, path: str | Path) -> str:
        p = Path(path)
        if p.is_absolute():
            try:
                p = p.resolve().relative_to(self.root)
            except ValueError:
                raise CatalogError(f"{path} is not in the catalog folder {self.root}") from None
        return p.as_posix()

    @cached_property
    def _boxes(self) -> dict[str, tuple[int, int, int, int]]:
        path = self.root / "boxes.csv"
        if not path.is_file():
            raise CatalogError(f"no object boxes at {path} (run `make catalog`)")
        with open(path, newline="", encoding="utf-8") as f:
            return {
                r["file"]: (int(r["left"]), int(r["top"]), int(r["right"]), int(r["bottom"]))
                for r in csv.DictReader(f)
            }

    def fingerprint(self) -> str:
        """SHA-256 over the sorted product ids and the SHA-256 of every shop photo of each (what an
        index holds), so that a saved index can be tied to the catalog it was built from."""
        h = hashlib.sha256()
        for pid in sorted(self.ids):
            h.update(pid.encode() + b"\0")
            for path in self.shop_photo_paths(pid):
                h.update(hashlib.sha256(Path(path).read_bytes()).digest())
        return h.hexdigest()

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


def _numbered_files(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[tuple[int, Path]]] = {}
    if folder.is_dir():
        for path in folder.iterdir():
            m = re.fullmatch(r"(.+)_(\d+)", path.stem)
            if m and path.suffix.lower() in IMAGE_EXTENSIONS:
                found.setdefault(m.group(1), []).append((int(m.group(2)), path))
    return {pid: [p for _, p in sorted(paths)] for pid, paths in found.items()}


# --------------------------------------------------------------------------- the book's catalog
def load_catalog(root: str | Path | None = None) -> Catalog:
    """Read ``products.csv`` of the catalog folder (default :func:`catalog_root`), checking every
    row (:class:`~image_search.errors.CatalogError` names the line and column). Chapter 09."""
    root = Path(root).expanduser().resolve() if root is not None else catalog_root()
    csv_path = root / "products.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"no catalog at {root}: expected {csv_path} (run `make catalog`)")
    rows = _read_rows(csv_path, required=_COLUMNS)
    products = tuple(_product(row, line, csv_path.name) for line, row in rows)
    _check_unique(products, [line for line, _ in rows], csv_path.name)
    return Catalog(root=root, products=products)


def _product(row: dict[str, str], line: int, source: str) -> Product:
    where = f"{source} line {line}"
    return Product(
        id=_text(row, "id", where),
        name=_text(row, "name", where),
        category=_text(row, "category", where),
        type=_text(row, "type", where),
        tags=tuple(t for t in row["tags"].split(";") if t),
        width_cm=_number(row, "width_cm", where),
        depth_cm=_number(row, "depth_cm", where),
        height_cm=_number(row, "height_cm", where),
        colour=row["colour"],
        colour_hex=row["colour_hex"],
        split=row["split"],
        price=_number(row, "price", where),
        in_stock=_boolean(row, "in_stock", where),
        brand=row["brand"],
        creator=row["creator"],
        licence=row["licence"],
    )


def real_photos(root: str | Path | None = None) -> tuple[list[Path], list[str]]:
    """The real-photo sanity set (``data/real_photos``, rebuilt by ``data/build_real_photos.py``):
    photographs of household products from openly licensed Debian packages and the product type
    each one shows, for a check of how renders-trained search carries over to photos. Chapter 07."""
    root = Path(root) if root is not None else DEFAULT_ROOT.parent / "real_photos"
    with open(root / "real_photos.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [root / r["file"] for r in rows], [r["type"] for r in rows]


# --------------------------------------------------------------------------- a shop's own catalog
def load_catalog_csv(
    csv_path: str | Path, images_dir: str | Path, progress: bool = False
) -> Catalog:
    """Read a shop's own catalog: a UTF-8, comma-separated CSV with a header row, and a folder of
    images.

    Columns (names are case-insensitive; other columns are ignored):

    | column | required | meaning |
    | --- | --- | --- |
    | `id` | yes | unique product id |
    | `name` | yes | product name |
    | `category` | no | a facet such as the room or department (default `unspecified`) |
    | `type` | no | the kind of product: chair, lamp, … (default `unspecified`) |
    | `price` | no | a number ≥ 0; empty means unknown (NaN: never passes a price filter) |
    | `in_stock` | no | true/false, yes/no or 1/0, any case; empty means true |
    | `brand` | no | brand name (default empty) |
    | `images` | no | the product's image files, `;`-separated, relative to the images folder |

    A product without an `images` cell has the files ``<id>.jpg`` (or ``.jpeg``, ``.png``,
    ``.webp``) and ``<id>_<n>.<ext>`` of the images folder, that order, ``n`` ascending. Every image
    is decoded once with :func:`~image_search.images.load_image` to check it. Anything wrong raises
    a one-line :class:`~image_search.errors.CatalogError` naming the line and column; missing and
    unreadable images are reported all together. Chapter 04.
    """
    csv_path, images_dir = Path(csv_path), Path(images_dir)
    name = csv_path.name
    if not images_dir.is_dir():
        raise CatalogError(f"images folder {images_dir} does not exist or is not a folder")
    images_dir = images_dir.resolve()
    rows = _read_rows(csv_path, required=("id", "name"))
    convention = _convention_files(images_dir)
    products, images, problems = [], {}, []
    for line, row in rows:
        where = f"{name} line {line}"
        p = Product(
            id=_text(row, "id", where),
            name=_text(row, "name", where),
            category=_text(row, "category", where) if "category" in row else UNSPECIFIED,
            type=_text(row, "type", where) if "type" in row else UNSPECIFIED,
            price=_number(row, "price", where, empty=math.nan) if "price" in row else math.nan,
            in_stock=_boolean(row, "in_stock", where, empty=True) if "in_stock" in row else True,
            brand=row.get("brand", "").strip(),
        )
        paths, missing = _images_of(p.id, row.get("images", ""), images_dir, convention, where)
        products.append(p)
        images[p.id] = tuple(paths)
        problems += missing
    lines = [line for line, _ in rows]
    _check_unique(products, lines, name)
    problems += _unreadable(images, lines, images_dir, progress)
    if problems:
        total = sum(len(v) for v in images.values())
        more = f"; … and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise CatalogError(
            f"{name}: {len(problems)} missing or unreadable image(s) of {total} "
            "listed: " + "; ".join(problems[:5]) + more
        )
    return Catalog(root=images_dir, products=tuple(products), images=images)


def _images_of(
    product_id: str, cell: str, images_dir: Path, convention: Mapping[str, list[Path]], where: str
) -> tuple[list[Path], list[str]]:
    """A product's image files (its ``images`` cell, else the file-name convention) and the
    problems found (missing files)."""
    line = where.rsplit(" ", 1)[1]
    parts = [part.strip() for part in cell.split(";") if part.strip()]
    if parts:
        paths = [_inside(images_dir, part, f"{where}, column 'images'") for part in parts]
        gone = [
            f"line {line}: {part} not found"
            for part, path in zip(parts, paths)
            if not path.is_file()
        ]
        return paths, gone
    paths = [
        _inside(images_dir, path.name, f"{where}, image file")
        for path in convention.get(product_id, [])
    ]
    if paths:
        return paths, []
    pid = product_id
    return [], [f"line {line}: no image for id {pid!r} ({pid}.jpg, {pid}_1.png, …)"]


def _convention_files(images_dir: Path) -> dict[str, list[Path]]:
    """``<id>.<ext>`` then ``<id>_<n>.<ext>`` (n ascending) of the images folder, by id."""
    plain = {
        path.stem: path
        for path in sorted(images_dir.iterdir())
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
    }
    out = {pid: [path] for pid, path in plain.items()}
    for pid, paths in _numbered_files(images_dir).items():
        out.setdefault(pid, []).extend(p for p in paths if p.is_file())
    return out


def _inside(images_dir: Path, relative: str, where: str) -> Path:
    """``relative`` resolved under ``images_dir``; a path that leaves the folder is refused."""
    path = (images_dir / relative).resolve()
    if Path(relative).is_absolute() or not path.is_relative_to(images_dir):
        raise CatalogError(f"{where}: {relative!r} is outside the images folder {images_dir}")
    return path


def _unreadable(
    images: Mapping[str, tuple[Path, ...]], lines: list[int], images_dir: Path, progress: bool
) -> list[str]:
    from tqdm.auto import tqdm

    from .images import load_image

    problems = []
    todo = [
        (line, path)
        for line, paths in zip(lines, images.values())
        for path in paths
        if path.is_file()
    ]
    for line, path in tqdm(todo, desc="checking images", unit="image", disable=not progress):
        try:
            load_image(path)
        except ImageSearchError as e:
            problems.append(f"line {line}: {path.relative_to(images_dir)}: {e}")
    return problems


# --------------------------------------------------------------------------- checks shared by both
def _read_rows(csv_path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """The rows of a UTF-8 CSV with their line numbers; the header is checked (encoding, delimiter,
    required columns) and every row must have the header's number of fields."""
    name = csv_path.name
    try:
        data = csv_path.read_bytes()
    except OSError as e:
        raise CatalogError(f"cannot read {csv_path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise CatalogError(
            f"{name} line {line}: not UTF-8 (byte 0x{data[e.start]:02x} at offset "
            f"{e.start}); save the file as UTF-8"
        ) from None
    if not text.strip():
        raise CatalogError(f"{name} is empty: expected a header row and one row per product")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in next(reader)]
    if len(header) == 1:
        for sep, label in ((";", "semicolons"), ("\t", "tabs"), ("|", "'|'")):
            if sep in header[0]:
                raise CatalogError(
                    f"{name} line 1: the header is one column containing {label}; "
                    "the file must be comma-separated"
                )
    missing = [c for c in required if c not in header]
    if missing:
        raise CatalogError(
            f"{name} line 1: missing required column(s) "
            f"{', '.join(map(repr, missing))} "
            f"(the header has {', '.join(map(repr, header))})"
        )
    rows = []
    for fields in reader:
        line = reader.line_num
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise CatalogError(
                f"{name} line {line}: {len(fields)} fields, the header has {len(header)}"
            )
        rows.append((line, dict(zip(header, fields))))
    if not rows:
        raise CatalogError(f"{name} has a header but no products")
    return rows


def _text(row: dict[str, str], column: str, where: str) -> str:
    value = row[column].strip()
    if not value:
        raise CatalogError(f"{where}, column {column!r}: empty")
    return value


def _number(row: dict[str, str], column: str, where: str, empty: float | None = None) -> float:
    """A finite number ≥ 0 (``empty`` stands for an empty cell when given)."""
    text = row[column].strip()
    if not text and empty is not None:
        return empty
    try:
        value = float(text)
    except ValueError:
        raise CatalogError(f"{where}, column {column!r}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise CatalogError(f"{where}, column {column!r}: {text!r} is not a finite number ≥ 0")
    return value


def _boolean(row: dict[str, str], column: str, where: str, empty: bool | None = None) -> bool:
    text = row[column].strip().lower()
    if not text and empty is not None:
        return empty
    if text not in _BOOLEANS:
        raise CatalogError(
            f"{where}, column {column!r}: {row[column]!r} is not one of true/false, yes/no, 1/0"
        )
    return _BOOLEANS[text]


def _check_unique(products: Sequence[Product], lines: Sequence[int], source: str) -> None:
    first: dict[str, int] = {}
    for p, line in zip(products, lines):
        if p.id in first:
            raise CatalogError(
                f"{source} line {line}, column 'id': duplicate id {p.id!r} "
                f"(first on line {first[p.id]})"
            )
        first[p.id] = line


# --------------------------------------------------------------------- near-duplicates (chapter 04)
@dataclass(frozen=True)
class DuplicatePair:
    """Two products whose images look (nearly) the same; ``id_a < id_b``. Chapter 04."""

    id_a: str
    id_b: str
    similarity: float  # cosine similarity of embeddings, or 1 - Hamming distance / bits for hashes


def near_duplicates(
    ids: Sequence[str], embeddings: np.ndarray, threshold: float = 0.95
) -> list[DuplicatePair]:
    """Every pair of items whose L2-normalised embeddings have cosine similarity ``>= threshold``,
    most similar first. Exact (all pairs, ``n²/2`` dot products): fine for thousands of items; use
    an ANN index's range search beyond that. Chapter 04."""
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) != len(ids):
        raise ValueError(
            f"need one embedding row per id: {len(ids)} ids, embeddings of shape {x.shape}"
        )
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sims = x @ x.T
    rows, cols = np.nonzero(np.triu(sims >= threshold, k=1))
    return _sorted_pairs((ids[i], ids[j], float(sims[i, j])) for i, j in zip(rows, cols))


def perceptual_hashes(paths: Sequence[str | Path], hash_size: int = 8) -> np.ndarray:
    """DCT perceptual hash (``imagehash.phash``) of each image as a ``(n, hash_size²)`` bool array.
    Chapter 04."""
    import imagehash
    from PIL import Image

    out = np.empty((len(paths), hash_size * hash_size), dtype=bool)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            out[i] = imagehash.phash(im.convert("RGB"), hash_size=hash_size).hash.ravel()
    return out


def hash_duplicates(
    ids: Sequence[str], hashes: np.ndarray, max_distance: int = 4
) -> list[DuplicatePair]:
    """Pairs whose perceptual hashes differ in at most ``max_distance`` bits; ``similarity`` is
    ``1 - distance / bits``. Chapter 04."""
    h = np.asarray(hashes, dtype=bool)
    if h.ndim != 2 or len(h) != len(ids):
        raise ValueError(f"need one hash row per id: {len(ids)} ids, hashes of shape {h.shape}")
    hi = h.astype(np.int32)
    distance = hi @ (1 - hi).T + (1 - hi) @ hi.T  # Hamming distance of every pair
    rows, cols = np.nonzero(np.triu(distance <= max_distance, k=1))
    bits = h.shape[1]
    return _sorted_pairs(
        (ids[i], ids[j], 1.0 - float(distance[i, j]) / bits) for i, j in zip(rows, cols)
    )


def duplicate_groups(pairs: Sequence[DuplicatePair]) -> list[tuple[str, ...]]:
    """Connected groups of items linked by duplicate pairs (sorted ids; largest group first).
    Chapter 04."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids = sorted({i for p in pairs for i in (p.id_a, p.id_b)})
    index = {pid: k for k, pid in enumerate(ids)}
    rows, cols = [index[p.id_a] for p in pairs], [index[p.id_b] for p in pairs]
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(ids), len(ids)))
    _, labels = connected_components(graph, directed=False)
    groups: dict[int, list[str]] = {}
    for pid, label in zip(ids, labels):
        groups.setdefault(int(label), []).append(pid)
    return sorted((tuple(g) for g in groups.values()), key=lambda g: (-len(g), g))


def _sorted_pairs(triples) -> list[DuplicatePair]:
    pairs = [DuplicatePair(*sorted((a, b)), s) for a, b, s in triples]
    return sorted(pairs, key=lambda p: (-round(p.similarity, 6), p.id_a, p.id_b))
