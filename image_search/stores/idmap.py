"""The product table of a FAISS index: product ids, the FAISS labels of their vectors (one per
photo) and their filterable attributes as numpy columns aligned with the labels. Chapter 12."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .filters import Attributes, Filters


@dataclass(frozen=True)
class Selection:
    """The FAISS labels a filter allows: a boolean mask over labels, and how many products and
    vectors pass."""

    mask: np.ndarray  # bool, one entry per label ever issued
    products: int
    vectors: int


class IdMap:
    """Product ids ↔ FAISS labels (several labels per product, never reused) plus each product's
    attributes. A row per product ever added; a removed product's row stays, dead. Not
    thread-safe: :class:`~image_search.indexer.ProductIndex` mutates it under its write lock."""

    def __init__(self) -> None:
        self._row: dict[str, int] = {}  # live product id -> row
        self._ids: list[str] = []  # row -> product id
        self._labels: list[np.ndarray] = []  # row -> labels of its vectors
        self.owner = np.zeros(0, np.int64)  # label -> row, -1 once removed
        self.alive = np.zeros(0, bool)  # row -> still in the index
        self.attributes = Attributes.unknown(0)
        self.digest = np.zeros(0, dtype=str)  # row -> digest of what its vectors were made from
        self.tombstones = np.zeros(
            0, np.int64
        )  # labels removed from the table but still stored in FAISS
        self.version = 0  # bumped by every change (invalidates cached selections)
        self._stats: tuple[int, int, int, np.ndarray] | None = (
            None  # version, vectors, max photos, live labels
        )

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self._row

    @property
    def ids(self) -> list[str]:
        """Live product ids in the order they were added."""
        return [self._ids[r] for r in np.flatnonzero(self.alive)]

    @property
    def next_label(self) -> int:
        return len(self.owner)

    def _stat(self) -> tuple[int, int, int, np.ndarray]:
        """Counts derived from the labels, computed once per version (searches read them often)."""
        stats = self._stats
        if stats is None or stats[0] != self.version:
            live = np.flatnonzero(self.owner >= 0)
            counts = np.bincount(self.owner[live], minlength=len(self.alive))
            stats = (self.version, len(live), int(counts.max()) if len(counts) else 0, live)
            self._stats = stats
        return stats

    @property
    def vectors(self) -> int:
        """Live vectors (tombstones excluded)."""
        return self._stat()[1]

    def labels_of(self, product_id: str) -> np.ndarray:
        return self._labels[self._row[product_id]]

    def product_of(self, labels: np.ndarray) -> list[str]:
        return [self._ids[r] for r in self.owner[labels]]

    def rows_of(self, labels: np.ndarray) -> np.ndarray:
        """The row of each label (-1 for a label FAISS padded with or a removed one)."""
        labels = np.asarray(labels, np.int64)
        rows = np.full(labels.shape, -1, np.int64)
        ok = (labels >= 0) & (labels < len(self.owner))
        rows[ok] = self.owner[labels[ok]]
        return rows

    def digests(self) -> dict[str, str]:
        return {self._ids[r]: str(self.digest[r]) for r in np.flatnonzero(self.alive)}

    def id_of_row(self, row: int) -> str:
        return self._ids[row]

    def max_photos(self) -> int:
        """The most vectors any live product has (the over-fetch factor of a max search)."""
        return self._stat()[2]

    def live_labels(self) -> np.ndarray:
        return self._stat()[3]

    def select(self, filters: Filters | None = None, allowed: set[str] | None = None) -> Selection:
        """The labels whose products pass ``filters`` and are in ``allowed`` (when given),
        over the attribute columns. Chapter 12."""
        rows_ok = self.alive.copy()
        if filters is not None and filters.active:
            rows_ok &= self.attributes.mask(filters)
        if allowed is not None:
            keep = np.zeros(len(rows_ok), bool)
            keep[[self._row[i] for i in allowed if i in self._row]] = True
            rows_ok &= keep
        mask = np.append(rows_ok, False)[self.owner]  # owner -1 picks the trailing False
        return Selection(mask, int(rows_ok.sum()), int(mask.sum()))

    # ------------------------------------------------------------------ changing
    def add(
        self, ids: list[str], labels: np.ndarray, attributes: Attributes, digests: list[str]
    ) -> None:
        """Record vectors just added to FAISS: ``ids[j]`` owns ``labels[j]``; an id may repeat
        (one row per photo). ``attributes`` and ``digests`` have one row per vector; a product's
        first row counts."""
        assert len(labels) and labels[0] == self.next_label and not any(i in self._row for i in ids)
        products = list(dict.fromkeys(ids))
        first = {pid: j for j, pid in reversed(list(enumerate(ids)))}
        start = len(self._ids)
        for r, pid in enumerate(products, start):
            self._row[pid] = r
        self._ids.extend(products)
        row_of_vector = np.fromiter((self._row[pid] for pid in ids), np.int64, len(ids))
        order = np.argsort(row_of_vector, kind="stable")
        split = np.searchsorted(row_of_vector[order], np.arange(start, start + len(products) + 1))
        self._labels.extend(labels[order[split[j] : split[j + 1]]] for j in range(len(products)))
        self.owner = np.concatenate([self.owner, row_of_vector])
        self.alive = np.concatenate([self.alive, np.ones(len(products), bool)])
        firsts = np.array([first[pid] for pid in products], np.int64)
        self.attributes = _concat(self.attributes, attributes.take(firsts))
        self.digest = np.concatenate([self.digest, np.array(digests, dtype=str)[firsts]])
        self.version += 1

    def remove(self, ids: list[str], tombstone: bool) -> np.ndarray:
        """Forget products; returns their vectors' labels (kept as tombstones when FAISS cannot
        delete them)."""
        rows = [self._row.pop(i) for i in ids]
        labels = np.concatenate([self._labels[r] for r in rows]) if rows else np.zeros(0, np.int64)
        self.owner[labels] = -1
        self.alive[rows] = False
        if tombstone:
            self.tombstones = np.union1d(self.tombstones, labels)
        self.version += 1
        return labels

    def set_attributes(self, ids: list[str], attributes: Attributes) -> None:
        rows = np.array([self._row[i] for i in ids], np.int64)
        cols = {
            f: getattr(self.attributes, f).copy()
            for f in ("category", "type", "price", "in_stock", "known")
        }
        width = {
            f: max(cols[f].dtype.itemsize, getattr(attributes, f).dtype.itemsize)
            for f in ("category", "type")
        }
        for f in ("category", "type"):
            cols[f] = cols[f].astype(f"<U{max(width[f] // 4, 1)}")
        for f in cols:
            cols[f][rows] = getattr(attributes, f)
        self.attributes = Attributes(**cols)
        self.version += 1

    # ------------------------------------------------------------------ persistence
    def to_arrays(self) -> tuple[list[str], dict[str, np.ndarray]]:
        """The live products (ids, and numpy arrays: their labels, attributes, tombstones)."""
        live = np.flatnonzero(self.alive)
        counts = np.array([len(self._labels[r]) for r in live], np.int64)
        labels = (
            np.concatenate([self._labels[r] for r in live]) if len(live) else np.zeros(0, np.int64)
        )
        a = self.attributes.take(live)
        return [self._ids[r] for r in live], {
            "photos": counts,
            "labels": labels.astype(np.int64),
            "next_label": np.array([self.next_label]),
            "tombstones": self.tombstones,
            "category": a.category,
            "type": a.type,
            "price": a.price,
            "in_stock": a.in_stock,
            "known": a.known,
            "digest": self.digest[live],
        }

    @classmethod
    def from_arrays(cls, ids: list[str], arrays: dict[str, np.ndarray]) -> "IdMap":
        """Inverse of :meth:`to_arrays`; ``ValueError`` when the arrays do not fit together."""
        kinds = {
            "photos": "i",
            "labels": "i",
            "next_label": "i",
            "tombstones": "i",
            "category": "U",
            "type": "U",
            "price": "f",
            "in_stock": "b",
            "known": "b",
            "digest": "U",
        }
        for name, kind in kinds.items():
            if arrays[name].dtype.kind != kind:
                raise ValueError(f"{name} holds {arrays[name].dtype}")
        if len(arrays["next_label"]) != 1 or not all(
            len(arrays[n]) == len(ids)
            for n in ("category", "type", "price", "in_stock", "known", "digest")
        ):
            raise ValueError("the attribute columns do not have one row per product")
        counts, labels, next_label = (
            arrays["photos"],
            arrays["labels"],
            int(arrays["next_label"][0]),
        )
        if (
            len(counts) != len(ids)
            or len(set(ids)) != len(ids)
            or (len(counts) and counts.min() < 1)
        ):
            raise ValueError("the product list and the photo counts do not match")
        if next_label < 0 or counts.sum() != len(labels) or len(np.unique(labels)) != len(labels):
            raise ValueError("the labels are not one per vector")
        tomb = arrays["tombstones"]
        if (len(labels) and (labels.min() < 0 or labels.max() >= next_label)) or (
            len(tomb)
            and (tomb.min() < 0 or tomb.max() >= next_label or np.isin(tomb, labels).any())
        ):
            raise ValueError("a label is out of range or both live and removed")
        m = cls()
        m._ids = list(ids)
        m._row = {pid: r for r, pid in enumerate(ids)}
        bounds = np.concatenate([[0], np.cumsum(counts)])
        m._labels = [labels[bounds[r] : bounds[r + 1]] for r in range(len(ids))]
        m.owner = np.full(next_label, -1, np.int64)
        m.owner[labels] = np.repeat(np.arange(len(ids)), counts)
        m.alive = np.ones(len(ids), bool)
        m.tombstones = tomb.astype(np.int64)
        m.attributes = Attributes(
            arrays["category"], arrays["type"], arrays["price"], arrays["in_stock"], arrays["known"]
        )
        m.digest = arrays["digest"]
        return m


def _concat(a: Attributes, b: Attributes) -> Attributes:
    return Attributes(
        *(
            np.concatenate([getattr(a, f), getattr(b, f)])
            for f in ("category", "type", "price", "in_stock", "known")
        )
    )


__all__ = ["IdMap", "Selection"]
