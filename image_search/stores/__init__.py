"""Vector stores: where the product vectors live and are searched with filters. Chapter 12.

One protocol, :class:`VectorStore`, covers what the searcher and the indexing pipeline need; three
engines implement it:

* ``faiss``: :class:`~image_search.indexer.ProductIndex`, in memory, saved to one file (default);
* ``qdrant``: :class:`~image_search.stores.qdrant.QdrantStore`, Qdrant's local mode in a folder, or
  a Qdrant server at an ``http(s)://`` URL;
* ``milvus``: :class:`~image_search.stores.milvus.MilvusStore`, a Milvus Lite ``.db`` file, or a
  Milvus server at an ``http(s)://`` URI.

Every engine stores one vector per photo with the product's id, filterable attributes and digest,
applies :class:`Filters` inside its own search (a FAISS bitmap, a Qdrant payload filter, a Milvus
expression: never by over-fetching) and returns distinct products, each scored by its best photo.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import BackendUnavailableError  # noqa: F401 (re-exported: stores raise it)
from .filters import Attributes, Filters

if TYPE_CHECKING:
    from ..catalog import Catalog

STORES = ("faiss", "qdrant", "milvus")


@runtime_checkable
class VectorStore(Protocol):
    """What the searcher and the indexing pipeline need from a vector store. Chapter 12."""

    encoder: str
    dim: int
    metric: str
    catalog_fingerprint: str

    def __len__(self) -> int: ...  # products
    def __contains__(self, product_id: object) -> bool: ...
    @property
    def ids(self) -> list[str]: ...
    @property
    def vector_count(self) -> int: ...
    def add(
        self,
        ids: Sequence[str],
        embeddings: np.ndarray,
        attributes: Attributes | None = None,
        digests: Sequence[str] | None = None,
    ) -> None: ...
    def remove(self, ids: Iterable[str]) -> int: ...
    def search(
        self, query_embeddings: np.ndarray, k: int, filters: Filters | None = None
    ) -> tuple[np.ndarray, list[list[str]]]: ...
    def vectors(self, ids: Sequence[str]) -> np.ndarray: ...
    def digests(self) -> dict[str, str]: ...
    def save(self, path: str | Path | None = None) -> object: ...
    def close(self) -> None: ...


def open_store(
    kind: str,
    location: str | Path,
    encoder: str,
    dim: int,
    metric: str = "ip",
    factory: str = "Flat",
    create: bool = False,
    timeout: float = 10.0,
) -> VectorStore:
    """Open (or with ``create``, start empty) the store of ``kind`` at ``location``: an index file
    (faiss), a folder or ``http(s)://`` URL (qdrant), a ``.db`` file or ``http(s)://`` URI
    (milvus). A store built with another encoder, dimension or metric is refused; a missing client
    library or a server that does not answer within ``timeout`` seconds is a
    :class:`BackendUnavailableError`. Chapter 12."""
    if kind == "faiss":
        from ..indexer import ProductIndex

        if create:
            index = ProductIndex(dim, encoder, factory=factory, metric=metric)
            index.path = Path(location)
            return index
        return ProductIndex.load(location, encoder=encoder, dim=dim, metric=metric)
    if kind == "qdrant":
        from .qdrant import QdrantStore

        return QdrantStore(location, encoder, dim, metric, create=create, timeout=timeout)
    if kind == "milvus":
        from .milvus import MilvusStore

        return MilvusStore(location, encoder, dim, metric, create=create, timeout=timeout)
    raise ValueError(f"store must be one of {list(STORES)}, not {kind!r}")


def is_url(location: str | Path) -> bool:
    return str(location).startswith(("http://", "https://", "tcp://", "grpc://"))


def collection_name(encoder: str) -> str:
    """The collection of an encoder's vectors (letters, digits and ``_`` only, as Milvus wants)."""
    return "products_" + "".join(c if c.isalnum() else "_" for c in encoder)


def representatives(vectors: np.ndarray, groups: Sequence[int]) -> np.ndarray:
    """One vector per product from its photos' vectors (``groups[i]`` rows each, in order): the
    mean, renormalised to unit length; a product with one vector keeps it unchanged."""
    out = np.empty((len(groups), vectors.shape[1]), np.float32)
    start = 0
    for row, n in enumerate(groups):
        v = vectors[start : start + n]
        start += n
        if n == 1:
            out[row] = v[0]
        else:
            mean = v.mean(axis=0)
            out[row] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return out


def product_digest(checksums: Sequence[str], attributes: Attributes, row: int) -> str:
    """What a product's entry in a store depends on: its photos' checksums and its attributes. An
    incremental re-index re-embeds a product whose digest changed. Chapter 12."""
    a = attributes
    part = [
        list(checksums),
        str(a.category[row]),
        str(a.type[row]),
        float(a.price[row]),
        bool(a.in_stock[row]),
        bool(a.known[row]),
    ]
    return hashlib.sha256(json.dumps(part).encode()).hexdigest()[:32]


def indexed_photos(catalog: Catalog, product_id: str) -> list[Path]:
    """The photos of a product that an index holds by default: every shop photo (the catalogue
    photo and the studio shots; a shop's own catalog: all its images), one vector each, so a
    customer's photo from any angle meets a shop photo from a similar one. Chapter 09."""
    return list(catalog.shop_photo_paths(product_id))


def catalog_fingerprint(catalog: Catalog, paths: Sequence[str | Path] | None = None) -> str:
    """SHA-256 of what an index of the catalog depends on: the product ids, the checksums of the
    indexed images (``paths``, default :func:`indexed_photos`) and the filterable attributes. A
    store whose manifest holds another fingerprint is stale. Chapter 09."""
    from ..encoders import file_checksum

    paths = (
        paths if paths is not None else [p for i in catalog.ids for p in indexed_photos(catalog, i)]
    )
    attrs = Attributes.from_catalog(catalog)
    h = hashlib.sha256()
    for part in (
        catalog.ids,
        [file_checksum(p) for p in paths],
        attrs.category.tolist(),
        attrs.type.tolist(),
        attrs.price.tolist(),
        attrs.in_stock.tolist(),
    ):
        h.update(json.dumps(part).encode())
    return h.hexdigest()


def check_queries(query_embeddings: np.ndarray, k: int, dim: int) -> np.ndarray:
    """Validate a search: finite ``(n, dim)`` queries (one 1-D query is one row) and ``k >= 1``."""
    from ..errors import InvalidRequestError

    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise InvalidRequestError(f"k must be an integer of at least 1, not {k!r}")
    q = np.asarray(query_embeddings, dtype=np.float32) if np.ndim(query_embeddings) else None
    if q is None or q.ndim not in (1, 2) or q.shape[-1] != dim or not np.isfinite(q).all():
        raise InvalidRequestError(
            f"query embeddings must be finite, of shape (n, {dim}), "
            f"not {np.shape(query_embeddings)}"
        )
    return np.ascontiguousarray(q[None, :] if q.ndim == 1 else q)


def check_batch(
    ids: Sequence[str],
    embeddings: np.ndarray,
    dim: int,
    attributes: Attributes | None,
    digests: Sequence[str] | None,
) -> tuple[list[str], np.ndarray, Attributes, list[str]]:
    """Validate an ``add``: one id, attribute row and digest per finite ``dim``-wide row."""
    from ..errors import InvalidRequestError

    ids = [ids] if isinstance(ids, str) else list(ids)
    try:
        x = np.asarray(embeddings, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidRequestError(
            f"embeddings must be numbers, not {type(embeddings).__name__}"
        ) from None
    x = x[None, :] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[1] != dim:
        raise InvalidRequestError(
            f"embeddings must have shape (n, {dim}), not {np.shape(embeddings)}"
        )
    if not np.isfinite(x).all():
        raise InvalidRequestError("embeddings hold NaN or inf")
    if len(ids) != len(x):
        raise InvalidRequestError(f"{len(ids)} ids for {len(x)} embeddings")
    if not all(isinstance(i, str) and i for i in ids):
        raise InvalidRequestError("product ids must be non-empty strings")
    attributes = Attributes.unknown(len(ids)) if attributes is None else attributes
    if not isinstance(attributes, Attributes) or len(attributes) != len(ids):
        raise InvalidRequestError(f"attributes must be an Attributes with {len(ids)} rows")
    digests = [""] * len(ids) if digests is None else [str(d) for d in digests]
    if len(digests) != len(ids):
        raise InvalidRequestError(f"{len(ids)} ids for {len(digests)} digests")
    return ids, np.ascontiguousarray(x), attributes, digests


__all__ = [
    "STORES",
    "VectorStore",
    "BackendUnavailableError",
    "open_store",
    "catalog_fingerprint",
    "indexed_photos",
    "product_digest",
    "representatives",
    "Attributes",
    "Filters",
]
