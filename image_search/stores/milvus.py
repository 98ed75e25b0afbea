"""Milvus as a :class:`~image_search.stores.VectorStore`: a Milvus Lite ``.db`` file (no server),
or a Milvus server at an ``http(s)://`` URI with the same client calls. One row per photo with the
product id, attributes and digest as scalar fields; a search groups rows by product
(``group_by_field``, the best photo's score) under a filter expression. Chapter 12."""

from __future__ import annotations

import json
import logging
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
MAX_ID = 1024  # characters of a product id
_BATCH = 1000
_PROPERTY = "image_search.manifest"
# Milvus Lite has no server timestamp for iterators; pymilvus warns on every query_iterator call.
logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)


def _client_class():
    try:
        from pymilvus import DataType, MilvusClient
    except ImportError:
        raise BackendUnavailableError(
            "the milvus store needs pymilvus (and milvus-lite for a local file): "
            "pip install pymilvus==3.0.2 milvus-lite==3.2.2"
        ) from None
    return MilvusClient, DataType


def _quote(value: str) -> str:
    """A string literal of Milvus's expression language."""
    return json.dumps(value, ensure_ascii=False)


def _is_in(field: str, values: Iterable[str]) -> str:
    return f"{field} in [{', '.join(_quote(v) for v in values)}]"


class MilvusStore:
    """Product vectors in a Milvus collection (``products_<encoder>``). ``location``: a Milvus Lite
    ``.db`` file, or a server URI. ``index_type``: ``FLAT`` (exact, the default) or any Milvus
    index (``HNSW``, ``IVF_FLAT``...). Chapter 12."""

    def __init__(
        self,
        location: str | Path,
        encoder: str,
        dim: int,
        metric: str = "ip",
        create: bool = False,
        timeout: float = 10.0,
        index_type: str = "FLAT",
    ) -> None:
        MilvusClient, DataType = _client_class()
        if metric not in ("ip", "l2"):
            raise InvalidRequestError(f"metric must be 'ip' or 'l2', not {metric!r}")
        self.location, self.encoder, self.dim, self.metric = (
            str(location),
            encoder,
            int(dim),
            metric,
        )
        self.collection, self.timeout, self.path = collection_name(encoder), float(timeout), None
        self._metric = "IP" if metric == "ip" else "L2"
        try:
            if not is_url(location):
                Path(location).parent.mkdir(parents=True, exist_ok=True)
            self.client = MilvusClient(str(location), timeout=self.timeout)
            exists = self.client.has_collection(self.collection)
        except Exception as e:  # connection refused, timeout, a Lite file another process holds...
            raise BackendUnavailableError(
                f"cannot open the Milvus store at {location}: {_one_line(e)}"
            ) from None
        if not exists and not create:
            self.client.close()
            raise FileNotFoundError(
                f"no Milvus collection {self.collection} at {location}: build it with "
                f"`python -m image_search index --store milvus --store-uri {location}`"
            )
        if exists and create:
            self.client.drop_collection(self.collection)
        if not exists or create:
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=MAX_ID + 16)
            schema.add_field("product", DataType.VARCHAR, max_length=MAX_ID)
            schema.add_field("photo", DataType.INT32)
            for name in ("category", "type", "digest"):
                schema.add_field(name, DataType.VARCHAR, max_length=512)
            schema.add_field("price", DataType.DOUBLE)
            schema.add_field("in_stock", DataType.BOOL)
            schema.add_field("known", DataType.BOOL)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
            params = self.client.prepare_index_params()
            params.add_index("vector", index_type=index_type, metric_type=self._metric)
            self.client.create_collection(
                self.collection, schema=schema, index_params=params, consistency_level="Strong"
            )
            self._write_manifest("")
        self.client.load_collection(self.collection)
        props = self.client.describe_collection(self.collection).get("properties", {}) or {}
        try:
            meta = json.loads(props.get(_PROPERTY, "{}"))
        except ValueError:
            meta = {}
        for what, want in (("encoder", encoder), ("dim", self.dim), ("metric", metric)):
            if meta.get(what) != want:
                self.client.close()
                raise IndexMismatchError(
                    f"the Milvus collection {self.collection} at {location} was built with "
                    f"{what} {meta.get(what)!r}, not {want!r}: rebuild it"
                )
        self.catalog_fingerprint = str(meta.get("catalog_fingerprint", ""))

    def _write_manifest(self, fingerprint: str) -> None:
        meta = {
            "format": FORMAT,
            "encoder": self.encoder,
            "dim": self.dim,
            "metric": self.metric,
            "catalog_fingerprint": fingerprint,
        }
        self.client.alter_collection_properties(
            self.collection, properties={_PROPERTY: json.dumps(meta)}
        )

    # ----------------------------------------------------------------- contents
    def _count(self, expr: str = "") -> int:
        rows = self.client.query(self.collection, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def __len__(self) -> int:
        return self._count("photo == 0")

    def __contains__(self, product_id: object) -> bool:
        return isinstance(product_id, str) and self._count(f"product == {_quote(product_id)}") > 0

    @property
    def vector_count(self) -> int:
        return self._count()

    def _rows(self, expr: str, fields: list[str]) -> list[dict]:
        it = self.client.query_iterator(
            self.collection, batch_size=_BATCH, filter=expr, output_fields=fields
        )
        out = []
        try:
            while batch := it.next():
                out.extend(batch)
        finally:
            it.close()
        return out

    @property
    def ids(self) -> list[str]:
        """Product ids, sorted."""
        return sorted(r["product"] for r in self._rows("photo == 0", ["product"]))

    def digests(self) -> dict[str, str]:
        return {r["product"]: r["digest"] for r in self._rows("photo == 0", ["product", "digest"])}

    def add(
        self,
        ids: Sequence[str],
        embeddings: np.ndarray,
        attributes: Attributes | None = None,
        digests: Sequence[str] | None = None,
    ) -> None:
        """Add products, one row per photo (repeat an id for each photo); a product already present
        is an error."""
        ids, x, attributes, digests = check_batch(ids, embeddings, self.dim, attributes, digests)
        too_long = [i for i in ids if len(i) > MAX_ID]
        if too_long:
            raise InvalidRequestError(
                f"product ids longer than {MAX_ID} characters: {too_long[0][:40]!r}..."
            )
        products = (
            list(dict.fromkeys(ids)) if self._count() else []
        )  # an empty store holds none of them
        for s in range(0, len(products), _BATCH):
            present = self.client.query(
                self.collection,
                filter=_is_in("product", products[s : s + _BATCH]),
                output_fields=["product"],
                limit=5,
            )
            if present:
                raise InvalidRequestError(
                    f"ids already in the store (use update): "
                    f"{sorted({r['product'] for r in present})[:5]}"
                )
        first = {pid: j for j, pid in reversed(list(enumerate(ids)))}
        a = attributes
        rows, seen = [], {}
        for j, pid in enumerate(ids):
            f = first[pid]
            photo = seen.get(pid, 0)
            seen[pid] = photo + 1
            rows.append(
                {
                    "key": f"{photo}:{pid}",
                    "product": pid,
                    "photo": photo,
                    "category": str(a.category[f]),
                    "type": str(a.type[f]),
                    "digest": digests[f],
                    "price": float(a.price[f]) if a.known[f] else 0.0,
                    "in_stock": bool(a.in_stock[f]),
                    "known": bool(a.known[f]),
                    "vector": x[j].tolist(),
                }
            )
        for s in range(0, len(rows), _BATCH):
            self.client.insert(self.collection, rows[s : s + _BATCH])

    def remove(self, ids: Iterable[str]) -> int:
        """Remove products (all their photos); returns how many were present."""
        ids = [ids] if isinstance(ids, str) else list(dict.fromkeys(ids))
        removed = 0
        for s in range(0, len(ids), _BATCH):
            expr = _is_in("product", ids[s : s + _BATCH])
            n = self._count(f"({expr}) and photo == 0")
            if n:
                self.client.delete(self.collection, filter=expr)
                removed += n
        return removed

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
        for s in range(0, len(ids), _BATCH):
            for r in self._rows(
                _is_in("product", ids[s : s + _BATCH]), ["product", "photo", "vector"]
            ):
                got.setdefault(r["product"], []).append((r["photo"], r["vector"]))
        missing = [i for i in ids if i not in got]
        if missing:
            raise KeyError(f"unknown product id: {missing[0]!r}")
        stacked = [np.array([v for _, v in sorted(got[i])], np.float32) for i in ids]
        return representatives(
            np.concatenate(stacked) if stacked else np.zeros((0, self.dim), np.float32),
            [len(v) for v in stacked],
        )

    # ----------------------------------------------------------------- search
    @staticmethod
    def expression(filters: Filters | None) -> str:
        """A :class:`Filters` as a Milvus filter expression ("" when nothing is filtered)."""
        if filters is None or not filters.active:
            return ""
        parts = ["known == true"]
        for field, values in (("category", filters.categories), ("type", filters.types)):
            if values is not None:
                parts.append(_is_in(field, values))
        if filters.min_price is not None:
            parts.append(f"price >= {float(filters.min_price)!r}")
        if filters.max_price is not None:
            parts.append(f"price <= {float(filters.max_price)!r}")
        if filters.in_stock is not None:
            parts.append(f"in_stock == {'true' if filters.in_stock else 'false'}")
        return " and ".join(parts)

    def search(
        self, query_embeddings: np.ndarray, k: int, filters: Filters | None = None
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Top-``k`` distinct products per query, each scored by its best photo, filtered inside
        Milvus. Same shapes as
        :meth:`ProductIndex.search <image_search.indexer.ProductIndex.search>`."""
        q = check_queries(query_embeddings, k, self.dim)
        res = self.client.search(
            self.collection,
            data=q.tolist(),
            limit=int(k),
            filter=self.expression(filters),
            output_fields=["product"],
            group_by_field="product",
            group_size=1,
            search_params={"metric_type": self._metric},
        )
        rows = [[(h["entity"]["product"], float(h["distance"])) for h in hits] for hits in res]
        width = max((len(r) for r in rows), default=0)
        scores = np.full((len(rows), width), -np.inf, np.float32)
        for i, r in enumerate(rows):
            scores[i, : len(r)] = [s if self.metric == "ip" else -s for _, s in r]
        return scores, [[pid for pid, _ in r] for r in rows]

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | Path | None = None) -> str:
        """Flush the rows and record the catalog fingerprint in the collection's properties.
        Call it after adding: Milvus Lite searched 100,000 unflushed rows about 10 times slower
        than flushed ones here (3 s against 0.25 s a query). Returns the location."""
        self.client.flush(self.collection)
        self._write_manifest(self.catalog_fingerprint)
        return self.location

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "MilvusStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__
