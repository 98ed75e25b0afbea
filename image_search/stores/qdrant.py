"""Qdrant as a :class:`~image_search.stores.VectorStore`: local mode in a folder (no server, exact
brute force), or a Qdrant server at an ``http(s)://`` URL with the same client calls. One point per
photo, with the product id, attributes and digest as payload; a search under a payload filter
fetches ``k`` times the most photos any product has and keeps each product's best photo (exact for
the max, as in FAISS; Qdrant's ``query_points_groups`` does the same on a server but is about 20
times slower than a plain query in local mode). Chapter 12."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import IndexMismatchError, InvalidRequestError
from . import (
    BackendUnavailableError,
    check_batch,
    check_queries,
    collection_name,
    is_url,
    representatives,
)
from .filters import Attributes, Filters

FORMAT = 1
_NAMESPACE = uuid.UUID("5d0c3a52-1f8e-4a57-9a35-2b3c7b6f4e10")
_BATCH = 1024


def _client_module():
    try:
        import qdrant_client
        from qdrant_client import models
    except ImportError:
        raise BackendUnavailableError(
            "the qdrant store needs qdrant-client: pip install qdrant-client==1.20.0"
        ) from None
    return qdrant_client, models


class QdrantStore:
    """Product vectors in a Qdrant collection (``products_<encoder>``). ``location``: a folder for
    Qdrant's local mode, ``":memory:"`` (local mode, not persisted), or a server URL. ``exact``: on
    a server, search by brute force instead of HNSW (local mode always does).

    Local mode is for development: it searches in Python, commits every point to SQLite on its own
    (about 25 ms per point on this machine's disk) and stores points *pickled*, so, as with index
    files, never open a Qdrant folder from an untrusted source. Chapter 12."""

    def __init__(
        self,
        location: str | Path,
        encoder: str,
        dim: int,
        metric: str = "ip",
        create: bool = False,
        timeout: float = 10.0,
        exact: bool = False,
    ) -> None:
        qdrant_client, self._m = _client_module()
        if metric not in ("ip", "l2"):
            raise InvalidRequestError(f"metric must be 'ip' or 'l2', not {metric!r}")
        self.location, self.encoder, self.dim, self.metric = (
            str(location),
            encoder,
            int(dim),
            metric,
        )
        self.collection, self.exact, self.path = collection_name(encoder), exact, None
        try:
            if is_url(location):
                self.client = qdrant_client.QdrantClient(
                    url=str(location), timeout=max(1, int(timeout)), check_compatibility=False
                )
            elif str(location) == ":memory:":
                self.client = qdrant_client.QdrantClient(location=":memory:")
            else:
                Path(location).mkdir(parents=True, exist_ok=True)
                self.client = qdrant_client.QdrantClient(path=str(location))
            exists = self.client.collection_exists(self.collection)
        except Exception as e:  # connection refused, timeout, a folder locked by another process...
            raise BackendUnavailableError(
                f"cannot open the Qdrant store at {location}: {_one_line(e)}"
            ) from None
        if not exists and not create:
            self.client.close()
            raise FileNotFoundError(
                f"no Qdrant collection {self.collection} at {location}: build it with "
                f"`python -m image_search index --store qdrant --store-uri {location}`"
            )
        if exists and create:
            self.client.delete_collection(self.collection)
        if not exists or create:
            distance = self._m.Distance.DOT if metric == "ip" else self._m.Distance.EUCLID
            self.client.create_collection(
                self.collection,
                vectors_config=self._m.VectorParams(size=self.dim, distance=distance),
                metadata=self._metadata(""),
            )
            if is_url(
                location
            ):  # payload indexes make filters fast on a server (local mode ignores them)
                for field, schema in (
                    ("product", "keyword"),
                    ("category", "keyword"),
                    ("type", "keyword"),
                    ("price", "float"),
                    ("in_stock", "bool"),
                    ("photo", "integer"),
                ):
                    self.client.create_payload_index(self.collection, field, field_schema=schema)
        meta = self.client.get_collection(self.collection).config.metadata or {}
        for what, want in (("encoder", encoder), ("dim", self.dim), ("metric", metric)):
            if meta.get(what) != want:
                self.client.close()
                raise IndexMismatchError(
                    f"the Qdrant collection {self.collection} at {location} was built with "
                    f"{what} {meta.get(what)!r}, not {want!r}: rebuild it"
                )
        self.catalog_fingerprint = str(meta.get("catalog_fingerprint", ""))
        self.max_photos = int(meta.get("max_photos", 1))

    def _metadata(self, fingerprint: str) -> dict:
        return {
            "format": FORMAT,
            "encoder": self.encoder,
            "dim": self.dim,
            "metric": self.metric,
            "catalog_fingerprint": fingerprint,
            "max_photos": getattr(self, "max_photos", 1),
        }

    # ----------------------------------------------------------------- contents
    def _count(self, flt=None) -> int:
        return int(self.client.count(self.collection, count_filter=flt, exact=True).count)

    def _is(self, field: str, values) -> object:
        m = self._m
        if isinstance(values, (list, tuple, set)):
            return m.FieldCondition(key=field, match=m.MatchAny(any=list(values)))
        return m.FieldCondition(key=field, match=m.MatchValue(value=values))

    def __len__(self) -> int:
        return self._count(self._m.Filter(must=[self._is("photo", 0)]))

    def __contains__(self, product_id: object) -> bool:
        return isinstance(product_id, str) and bool(self._present([product_id]))

    def _present(self, products: Sequence[str]) -> list[str]:
        """Which of ``products`` the store holds: a lookup of their first photos' point ids (a
        ``MatchAny`` filter would test every point against the whole list in local mode)."""
        out = []
        for s in range(0, len(products), _BATCH):
            keys = [_key(pid, 0) for pid in products[s : s + _BATCH]]
            out += [
                p.payload["product"]
                for p in self.client.retrieve(self.collection, keys, with_payload=["product"])
            ]
        return out

    def _points(self, products: Sequence[str]) -> list:
        """The points of ``products`` (every photo), looked up by id."""
        out = []
        keys = [_key(pid, j) for pid in products for j in range(self.max_photos)]
        for s in range(0, len(keys), _BATCH):
            out += self.client.retrieve(
                self.collection,
                keys[s : s + _BATCH],
                with_payload=["product", "photo"],
                with_vectors=True,
            )
        return out

    @property
    def vector_count(self) -> int:
        return self._count()

    def _scroll(self, flt=None, vectors: bool = False, fields=("product",)):
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.collection,
                scroll_filter=flt,
                limit=_BATCH,
                offset=offset,
                with_payload=list(fields),
                with_vectors=vectors,
            )
            yield from points
            if offset is None:
                return

    @property
    def ids(self) -> list[str]:
        """Product ids, sorted."""
        return sorted(
            p.payload["product"] for p in self._scroll(self._m.Filter(must=[self._is("photo", 0)]))
        )

    def digests(self) -> dict[str, str]:
        return {
            p.payload["product"]: p.payload.get("digest", "")
            for p in self._scroll(
                self._m.Filter(must=[self._is("photo", 0)]), fields=("product", "digest")
            )
        }

    def add(
        self,
        ids: Sequence[str],
        embeddings: np.ndarray,
        attributes: Attributes | None = None,
        digests: Sequence[str] | None = None,
    ) -> None:
        """Add products, one point per row (repeat an id for each photo); a product already present
        is an error."""
        ids, x, attributes, digests = check_batch(ids, embeddings, self.dim, attributes, digests)
        present = self._present(list(dict.fromkeys(ids))) if self._count() else []
        if present:
            raise InvalidRequestError(
                f"ids already in the store (use update): {sorted(present)[:5]}"
            )
        first = {pid: j for j, pid in reversed(list(enumerate(ids)))}
        rows, photo, seen = attributes.rows(), [], {}
        for pid in ids:
            photo.append(seen.get(pid, 0))
            seen[pid] = photo[-1] + 1
        payloads = [
            {"product": pid, "photo": j, "digest": digests[first[pid]], **rows[first[pid]]}
            for pid, j in zip(ids, photo, strict=True)
        ]
        keys = [_key(pid, j) for pid, j in zip(ids, photo, strict=True)]
        if max(seen.values()) > self.max_photos:  # an upper bound of photos per product
            self.max_photos = max(seen.values())
            self.client.update_collection(
                self.collection, metadata=self._metadata(self.catalog_fingerprint)
            )
        for s in range(0, len(ids), _BATCH):
            self.client.upsert(
                self.collection,
                points=self._m.Batch(
                    ids=keys[s : s + _BATCH],
                    vectors=x[s : s + _BATCH].tolist(),
                    payloads=payloads[s : s + _BATCH],
                ),
                wait=True,
            )

    def remove(self, ids: Iterable[str]) -> int:
        """Remove products (all their photos); returns how many were present."""
        ids = [ids] if isinstance(ids, str) else list(dict.fromkeys(ids))
        present = self._present(ids)
        if present:
            keys = [p.id for p in self._points(present)]
            for s in range(0, len(keys), _BATCH):
                self.client.delete(
                    self.collection,
                    points_selector=self._m.PointIdsList(points=keys[s : s + _BATCH]),
                    wait=True,
                )
        return len(present)

    def update(
        self,
        ids: Sequence[str],
        embeddings: np.ndarray,
        attributes: Attributes | None = None,
        digests: Sequence[str] | None = None,
    ) -> None:
        ids, x, attributes, digests = check_batch(ids, embeddings, self.dim, attributes, digests)
        self.remove(ids)
        self.add(ids, x, attributes, digests)

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """One representative vector per product (mean of its photos, renormalised)."""
        ids = list(ids)
        got: dict[str, list[tuple[int, list[float]]]] = {}
        for p in self._points(list(dict.fromkeys(ids))):
            got.setdefault(p.payload["product"], []).append((p.payload["photo"], p.vector))
        missing = [i for i in ids if i not in got]
        if missing:
            raise KeyError(f"unknown product id: {missing[0]!r}")
        stacked = [np.array([v for _, v in sorted(got[i])], np.float32) for i in ids]
        return representatives(
            np.concatenate(stacked) if stacked else np.zeros((0, self.dim), np.float32),
            [len(v) for v in stacked],
        )

    # ----------------------------------------------------------------- search
    def query_filter(self, filters: Filters | None):
        """A :class:`Filters` as a Qdrant payload filter (``None`` when nothing is filtered)."""
        if filters is None or not filters.active:
            return None
        m, must = self._m, []
        for field, values in (("category", filters.categories), ("type", filters.types)):
            if values is not None:
                must.append(self._is(field, list(values)))
        if filters.min_price is not None or filters.max_price is not None:
            must.append(
                m.FieldCondition(
                    key="price", range=m.Range(gte=filters.min_price, lte=filters.max_price)
                )
            )
        if filters.in_stock is not None:
            must.append(self._is("in_stock", bool(filters.in_stock)))
        return m.Filter(must=must)

    def search(
        self, query_embeddings: np.ndarray, k: int, filters: Filters | None = None
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Top-``k`` distinct products per query, each scored by its best photo, filtered inside
        Qdrant (over-fetching only for the photos: ``k`` x the most photos a product has).
        Same shapes as :meth:`ProductIndex.search <image_search.indexer.ProductIndex.search>`."""
        q = check_queries(query_embeddings, k, self.dim)
        flt = self.query_filter(filters)
        params = self._m.SearchParams(exact=True) if self.exact else None
        rows = []
        for vec in q:
            res = self.client.query_points(
                self.collection,
                query=vec.tolist(),
                limit=int(k) * self.max_photos,
                query_filter=flt,
                search_params=params,
                with_payload=["product"],
            )
            best: dict[str, float] = {}
            for point in res.points:  # best first: a product's first point is its best photo
                best.setdefault(point.payload["product"], point.score)
            rows.append(list(best.items())[: int(k)])
        width = max((len(r) for r in rows), default=0)
        scores = np.full((len(rows), width), -np.inf, np.float32)
        for i, r in enumerate(rows):
            scores[i, : len(r)] = [
                s if self.metric == "ip" else -s * s for _, s in r
            ]  # as FAISS: -squared L2
        return scores, [[pid for pid, _ in r] for r in rows]

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | Path | None = None) -> str:
        """Record the catalog fingerprint in the collection's metadata (points are persisted as they
        are written). Returns the location."""
        self.client.update_collection(
            self.collection, metadata=self._metadata(self.catalog_fingerprint)
        )
        return self.location

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "QdrantStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _key(product_id: str, photo: int) -> str:
    """The point id of a product's photo (a UUID derived from both)."""
    return str(uuid.uuid5(_NAMESPACE, f"{product_id}\0{photo}"))


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__
