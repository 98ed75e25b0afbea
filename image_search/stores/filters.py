"""Attribute filters and the filterable attributes they test, as numpy columns.

A store keeps each product's filterable attributes (category, type, price, stock) beside its
vectors and turns a :class:`Filters` into an allow-list inside the engine: a FAISS bitmap, a Qdrant
payload filter or a Milvus expression. Chapter 02 defines the filters; chapter 12 scales them.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from ..errors import InvalidRequestError

if TYPE_CHECKING:
    from ..catalog import Catalog, Product


def _names(value, field: str) -> tuple[str, ...] | None:
    """A set of non-empty names as a sorted tuple (duplicates dropped): 20,000 copies of one
    category cost one entry."""
    if value is None:
        return None
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
        isinstance(c, str) and c for c in value
    ):
        shown = repr(value) if len(repr(value)) < 120 else repr(value)[:117] + "..."
        raise InvalidRequestError(f"{field} must be names (non-empty strings), not {shown}")
    if not value:
        raise InvalidRequestError(f"{field} is empty: give at least one name, or None for all")
    return tuple(sorted(set(value)))


@dataclass(frozen=True)
class Filters:
    """Attribute pre-filters, applied inside the ANN search (chapter 02): the room ``categories``,
    the product ``types`` (chair, lamp, ...), a price range and stock. ``None`` means "any"."""

    categories: tuple[str, ...] | None = None
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool | None = None
    types: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "categories", _names(self.categories, "categories"))
        object.__setattr__(self, "types", _names(self.types, "types"))
        for name in ("min_price", "max_price"):
            v = getattr(self, name)
            if v is not None and (
                not isinstance(v, numbers.Real)
                or isinstance(v, (bool, np.bool_))
                or not math.isfinite(v)
                or v < 0
            ):
                raise InvalidRequestError(f"{name} must be a finite number ≥ 0, not {v!r}")
        if self.in_stock is not None:
            if not isinstance(self.in_stock, (bool, np.bool_)):
                raise InvalidRequestError(
                    f"in_stock must be True, False or None, not {self.in_stock!r}"
                )
            object.__setattr__(self, "in_stock", bool(self.in_stock))
        if (
            self.min_price is not None
            and self.max_price is not None
            and self.min_price > self.max_price
        ):
            raise InvalidRequestError(
                f"price range is inverted: min_price {self.min_price} > max_price {self.max_price}"
            )

    @property
    def active(self) -> bool:
        return any(
            v is not None
            for v in (self.categories, self.types, self.min_price, self.max_price, self.in_stock)
        )

    def check(self, catalog: Catalog) -> None:
        """Refuse categories or types the catalog lacks (a typo would silently match nothing)."""
        for field, known in (("categories", catalog.categories), ("types", catalog.types)):
            asked = getattr(self, field)
            unknown = sorted(set(asked) - set(known)) if asked is not None else []
            if unknown:
                more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
                raise InvalidRequestError(
                    f"unknown {field} {unknown[:5]}{more}; known: {list(known)}"
                )

    def allowed_ids(self, catalog: Catalog) -> list[str] | None:
        """Ids of the catalog's products that pass, or ``None`` when nothing is filtered."""
        if not self.active:
            return None
        self.check(catalog)
        attrs = Attributes.from_catalog(catalog)
        return [catalog.products[i].id for i in np.flatnonzero(attrs.mask(self))]

    def accepts(self, p: Product) -> bool:
        """Whether one product passes (the scalar version of :meth:`Attributes.mask`)."""
        return (
            (self.categories is None or p.category in self.categories)
            and (self.types is None or p.type in self.types)
            and (self.min_price is None or p.price >= self.min_price)
            and (self.max_price is None or p.price <= self.max_price)
            and (self.in_stock is None or p.in_stock == self.in_stock)
        )


@dataclass(frozen=True)
class Attributes:
    """Filterable attributes of ``n`` products as numpy columns (row ``i`` is the ``i``-th product
    given): ``category`` and ``type`` (str), ``price`` (float64) and ``in_stock`` (bool). A row
    with ``known`` False (a product added without attributes) passes no active filter."""

    category: np.ndarray
    type: np.ndarray
    price: np.ndarray
    in_stock: np.ndarray
    known: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.known)
        for name, dtype in (
            ("category", str),
            ("type", str),
            ("price", np.float64),
            ("in_stock", bool),
            ("known", bool),
        ):
            col = np.asarray(getattr(self, name), dtype=dtype)
            if col.shape != (n,):
                raise InvalidRequestError(
                    f"attribute column {name} has shape {col.shape}, expected ({n},)"
                )
            object.__setattr__(self, name, col)

    def __len__(self) -> int:
        return len(self.known)

    @classmethod
    def of(cls, products: Iterable[Product | None]) -> "Attributes":
        """The attributes of products (``None`` for a product whose attributes are unknown)."""
        rows = [
            (p.category, p.type, p.price, p.in_stock, True)
            if p is not None
            else ("", "", np.nan, False, False)
            for p in products
        ]
        cols = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
        return cls(*(np.array(c) for c in cols)) if rows else cls.unknown(0)

    @classmethod
    def from_catalog(cls, catalog: Catalog, ids: Sequence[str] | None = None) -> "Attributes":
        """The attributes of the catalog's products (``ids``: these, in this order; an id the
        catalog does not know gets unknown attributes). Chapter 12."""
        if ids is None:
            return cls.of(catalog.products)
        return cls.of(catalog[i] if i in catalog else None for i in ids)

    @classmethod
    def unknown(cls, n: int) -> "Attributes":
        return cls(
            np.full(n, "", dtype=str),
            np.full(n, "", dtype=str),
            np.full(n, np.nan),
            np.zeros(n, bool),
            np.zeros(n, bool),
        )

    def take(self, rows: np.ndarray) -> "Attributes":
        return Attributes(
            self.category[rows],
            self.type[rows],
            self.price[rows],
            self.in_stock[rows],
            self.known[rows],
        )

    def mask(self, filters: Filters) -> np.ndarray:
        """Which rows pass ``filters`` (vectorised: one numpy pass per active field)."""
        if not filters.active:
            return np.ones(len(self), dtype=bool)
        ok = self.known.copy()
        if filters.categories is not None:
            ok &= np.isin(self.category, filters.categories)
        if filters.types is not None:
            ok &= np.isin(self.type, filters.types)
        with np.errstate(invalid="ignore"):  # NaN prices (unknown) fail every bound
            if filters.min_price is not None:
                ok &= self.price >= filters.min_price
            if filters.max_price is not None:
                ok &= self.price <= filters.max_price
        if filters.in_stock is not None:
            ok &= self.in_stock == filters.in_stock
        return ok

    def rows(self) -> list[dict]:
        """One payload dict per known row (what Qdrant and Milvus store beside a vector)."""
        return [
            {"category": str(c), "type": str(t), "price": float(p), "in_stock": bool(s)}
            if k
            else {}
            for c, t, p, s, k in zip(
                self.category, self.type, self.price, self.in_stock, self.known, strict=True
            )
        ]


__all__ = ["Filters", "Attributes"]
