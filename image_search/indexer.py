"""A FAISS index of product embeddings, addressed by product id (one vector per photo, several
photos per product), filtered inside the search, saved with a manifest.

Chapter 08 compares index types; chapter 09 builds the catalog index; chapter 12 scales the filters.
The id map lives in :mod:`.stores.idmap`, the file format in :mod:`.stores.persistence`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import faiss
import numpy as np

from .errors import IndexMismatchError, InvalidRequestError
from .stores import check_batch, persistence, representatives
from .stores.filters import Attributes, Filters
from .stores.idmap import IdMap, Selection
from .stores.persistence import IndexManifest

METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
AGGREGATES = ("max", "sum")
EXACT_MAX_VECTORS = 4096  # a filter allowing at most this many vectors, or at most 10% of the
EXACT_MAX_FRACTION = 0.1  # index if they fit in 32 MiB of float32, is answered by an exact
EXACT_MAX_BYTES = 32 * 2**20  # scan of them (a cached FAISS Flat of the allowed vectors)
CACHE_ENTRIES = 64  # selections remembered per distinct Filters
CACHE_BYTES = 256 * 2**20  # float copies of allowed vectors kept for exact search, at most


class ProductIndex:
    """FAISS index from a factory string (``Flat``, ``IVF256,Flat``, ``HNSW32``, ``IVF256,PQ32x8``…)
    whose vectors belong to products: a product has one vector per photo. Add, remove and update by
    product id; search with :class:`Filters` applied inside FAISS; results are distinct products.
    Safe to search from many threads at once (writers wait for searches to finish). Chapter 09.
    """

    def __init__(
        self,
        dim: int,
        encoder: str,
        factory: str = "Flat",
        metric: str = "ip",
        *,
        faiss_index: faiss.Index | None = None,
    ) -> None:
        """``faiss_index``: wrap an index already built with ``factory`` (as :meth:`load` does)."""
        if metric not in METRICS:
            raise InvalidRequestError(f"metric must be one of {list(METRICS)}, not {metric!r}")
        if not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise InvalidRequestError(f"dim must be a positive integer, not {dim!r}")
        self.dim, self.encoder, self.factory, self.metric = int(dim), encoder, factory, metric
        # of the catalog it indexes: set by build_index and index_catalog, saved in the manifest
        self.catalog_fingerprint = ""
        self.path: Path | None = None  # the file it was loaded from or is saved to by default
        if faiss_index is None:
            try:
                inner = faiss.index_factory(self.dim, factory, METRICS[metric])
            except RuntimeError as e:
                raise InvalidRequestError(
                    f"bad FAISS factory string {factory!r}: {_last_line(e)}"
                ) from None
            if _native_ids(inner):
                # IVF stores ids itself and removes by id; an IndexIDMap over it would renumber
                # positions the IVF lists never see, and mix up products after a removal.
                faiss.extract_index_ivf(inner).set_direct_map_type(faiss.DirectMap.Hashtable)
                faiss_index = inner
            else:
                faiss_index = faiss.IndexIDMap2(inner)
        elif not (isinstance(faiss_index, faiss.IndexIDMap2) or _native_ids(faiss_index)):
            raise IndexMismatchError(f"unexpected FAISS index type {type(faiss_index).__name__}")
        self.index = faiss_index
        self._map = IdMap()
        self._lock = _ReadWriteLock()
        self._cache = _SelectionCache()

    @property
    def removal(self) -> str:
        """How :meth:`remove` works for this index type: ``"physical"`` (Flat, PQ, SQ: rows are
        dropped), ``"native"`` (IVF: removed by id from the inverted lists) or ``"tombstone"``
        (HNSW and other graphs, which cannot delete: the vector stays stored but is excluded from
        every search; rebuild the index when many are tombstoned). Chapter 08."""
        if not isinstance(self.index, faiss.IndexIDMap2):
            return "native"
        return (
            "physical"
            if isinstance(faiss.downcast_index(self.index.index), faiss.IndexFlatCodes)
            else "tombstone"
        )

    # ----------------------------------------------------------------- contents
    def __len__(self) -> int:
        """Number of products (not vectors: see :attr:`vector_count`)."""
        return len(self._map)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self._map

    @property
    def ids(self) -> list[str]:
        """Product ids in the order they were added."""
        with self._lock.read():
            return self._map.ids

    @property
    def vector_count(self) -> int:
        """Number of vectors (photos) of the products in the index."""
        return self._map.vectors

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    @property
    def has_attributes(self) -> bool:
        """Whether every product has filterable attributes (else filters never pass it)."""
        with self._lock.read():
            return bool(self._map.attributes.known[self._map.alive].all())

    def min_training_vectors(self) -> int:
        """How many vectors :meth:`train` needs: the IVF list count, and 2^bits per PQ codebook."""
        need = 1
        for part in _parts(self.index):
            if isinstance(part, faiss.IndexIVF):
                need = max(need, int(part.nlist))
            pq = getattr(part, "pq", None)
            if pq is not None:
                need = max(need, int(pq.ksub))
        return need

    def train(self, embeddings: np.ndarray) -> None:
        """Train the index (IVF centroids, PQ codebooks) on a sample of embeddings."""
        x = self._check(embeddings)
        with self._lock.write():
            self._train(x)

    def check_training_size(self, n: int) -> None:
        """Refuse, with a clear message, to train on fewer vectors than the index type needs."""
        need = self.min_training_vectors()
        if n < need:
            raise InvalidRequestError(
                f"a {self.factory} index needs at least {need:,} training vectors, got {n:,}: "
                f"use fewer IVF lists (about sqrt(n), e.g. IVF{max(1, int(np.sqrt(n)))}) or "
                "fewer PQ bits, or train on more vectors"
            )

    def _train(self, x: np.ndarray) -> None:
        self.check_training_size(len(x))
        self.index.train(x)

    def add(
        self,
        ids: Sequence[str],
        embeddings: np.ndarray,
        attributes: Attributes | None = None,
        digests: Sequence[str] | None = None,
    ) -> None:
        """Add products: row ``j`` of ``embeddings`` is a photo of product ``ids[j]`` (repeat an id
        for each of its photos). ``attributes`` make the products filterable, ``digests`` record
        what their vectors were made from (:func:`~image_search.stores.product_digest`); both have
        one row per embedding row, and a product's first row counts. A product already present is
        an error (use :meth:`update`)."""
        ids, x, attributes, digests = check_batch(ids, embeddings, self.dim, attributes, digests)
        with self._lock.write():
            self._add(ids, x, attributes, digests)

    def _add(
        self, ids: list[str], x: np.ndarray, attributes: Attributes, digests: list[str]
    ) -> None:
        present = [i for i in dict.fromkeys(ids) if i in self._map]
        if present:
            raise InvalidRequestError(f"ids already in the index (use update): {present[:5]}")
        if not self.index.is_trained:
            self._train(x)
        labels = np.arange(self._map.next_label, self._map.next_label + len(ids), dtype=np.int64)
        self.index.add_with_ids(
            x, labels
        )  # FAISS first: if it fails, the id map still describes FAISS
        self._map.add(ids, labels, attributes, digests)

    def remove(self, ids: Iterable[str]) -> int:
        """Remove products (all their vectors) by id; unknown ids are ignored. Returns how many
        products were removed."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        with self._lock.write():
            return self._remove(ids)

    def _remove(self, ids: list[str]) -> int:
        present = [i for i in dict.fromkeys(ids) if i in self._map]
        if not present:
            return 0
        if (
            self.removal != "tombstone"
        ):  # FAISS first: if it fails, the id map still describes FAISS
            labels = np.concatenate([self._map.labels_of(i) for i in present])
            removed = self.index.remove_ids(labels)
            if removed != len(labels):
                raise RuntimeError(
                    f"FAISS removed {removed} of {len(labels)} vectors: the index is inconsistent"
                )
        self._map.remove(present, tombstone=self.removal == "tombstone")
        return len(present)

    def update(
        self,
        ids: Sequence[str],
        embeddings: np.ndarray,
        attributes: Attributes | None = None,
        digests: Sequence[str] | None = None,
    ) -> None:
        """Replace all the vectors of products (adding those not yet present)."""
        ids, x, attributes, digests = check_batch(
            ids, embeddings, self.dim, attributes, digests
        )  # before removing
        with self._lock.write():
            self._remove(ids)
            self._add(ids, x, attributes, digests)

    def digests(self) -> dict[str, str]:
        """Each product's digest, as given to :meth:`add` ("" when none was)."""
        with self._lock.read():
            return self._map.digests()

    def set_attributes(self, ids: Sequence[str], attributes: Attributes) -> None:
        """Replace the filterable attributes of products in the index (vectors untouched)."""
        ids = list(ids)
        if len(attributes) != len(ids):
            raise InvalidRequestError(f"{len(ids)} ids for {len(attributes)} attribute rows")
        with self._lock.write():
            unknown = [i for i in ids if i not in self._map]
            if unknown:
                raise KeyError(f"unknown product ids: {unknown[:5]}")
            self._map.set_attributes(ids, attributes)

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """One representative vector per product, ``(len(ids), dim)``: the mean of its stored
        vectors, renormalised to unit length (a product with one vector gets it unchanged). The
        re-ranker compares products with it (MMR, near-duplicates). Exact for Flat, IVF-Flat and
        HNSW; decoded (approximate) for PQ and SQ."""
        ids = list(ids)
        with self._lock.read():
            unknown = [i for i in ids if i not in self._map]
            if unknown:
                raise KeyError(f"unknown product id: {unknown[0]!r}")
            groups = [self._map.labels_of(i) for i in ids]
            flat = np.concatenate(groups) if groups else np.zeros(0, np.int64)
            stored = (
                self.index.reconstruct_batch(flat)
                if len(flat)
                else np.zeros((0, self.dim), np.float32)
            )
        return representatives(stored, [len(g) for g in groups])

    # ----------------------------------------------------------------- search
    def search(
        self,
        query_embeddings: np.ndarray,
        k: int,
        filters: Filters | None = None,
        *,
        allowed: Iterable[str] | None = None,
        params: dict[str, int] | None = None,
        aggregate: str = "max",
        top_m: int = 2,
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Top-``k`` distinct products per query: ``(scores (n, min(k, len)), ids)``, best first.

        ``filters`` (and ``allowed``, a set of product ids) restrict the search inside FAISS (an
        ``IDSelectorBitmap`` built from the attribute columns and cached per distinct
        :class:`Filters`); a filter that allows few vectors (at most 4,096, or at most 10% of the
        index when they fit in 32 MiB of float32: 65,536 at 128-d, 6,553 at 1280-d) is answered by
        an exact scan of a cached float copy of the allowed vectors, so every index type returns
        ``min(k, allowed products)`` results. ``params`` sets ``nprobe`` or ``efSearch``; a row an
        approximate search leaves short is searched again wider, then exactly.

        A product scores the ``max`` of its vectors' scores (exact: the search fetches ``k`` times
        the most photos any product has), or with ``aggregate="sum"`` the sum of its best
        ``top_m`` vectors' scores among that same pool (approximate: a product whose best photos
        all rank below the pool is missed). A row holds fewer than ``k`` ids when fewer products
        qualify (its scores are padded with ``-inf``). Chapter 12.
        """
        q = self._check(query_embeddings)
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise InvalidRequestError(f"k must be an integer of at least 1, not {k!r}")
        if aggregate not in AGGREGATES:
            raise InvalidRequestError(
                f"aggregate must be one of {list(AGGREGATES)}, not {aggregate!r}"
            )
        if not isinstance(top_m, (int, np.integer)) or isinstance(top_m, bool) or top_m < 1:
            raise InvalidRequestError(f"top_m must be an integer of at least 1, not {top_m!r}")
        if filters is not None and not isinstance(filters, Filters):
            raise InvalidRequestError(f"filters must be a Filters, not {type(filters).__name__}")
        allowed = (
            None if allowed is None else ({allowed} if isinstance(allowed, str) else set(allowed))
        )
        with self._lock.read():
            chosen = self._selection(filters, allowed)
            products = chosen.selection.products if chosen else len(self._map)
            vectors = chosen.selection.vectors if chosen else self._map.vectors
            k_out = min(int(k), products)
            if k_out == 0:
                return np.zeros((len(q), 0), np.float32), [[] for _ in range(len(q))]
            fetch = min(int(k) * self._map.max_photos(), vectors)
            if chosen is not None and chosen.exact:
                scores, labels = self._exact(q, fetch, chosen)
            else:
                scores, labels = self._approximate(q, fetch, chosen, params or {})
            rows = self._map.rows_of(labels)
            return self._aggregate(scores, rows, k_out, aggregate, int(top_m))

    def _selection(self, filters: Filters | None, allowed: set[str] | None) -> "_Chosen | None":
        """What a search may return, or ``None`` for every live vector with no selector needed."""
        if (
            allowed is None
            and (filters is None or not filters.active)
            and not len(self._map.tombstones)
        ):
            return None
        key = (filters if filters is not None and filters.active else None, self._map.version)
        if allowed is None:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
        chosen = _Chosen(self._map.select(filters, allowed), self.dim, self._map.vectors)
        if allowed is None:
            self._cache.put(key, chosen)
        return chosen

    def _faiss_search(self, q: np.ndarray, k: int, params) -> tuple[np.ndarray, np.ndarray]:
        """The one call into FAISS's search (tests instrument it to prove searches overlap)."""
        return self.index.search(q, k, params=params)

    def _approximate(self, q, fetch, chosen, params) -> tuple[np.ndarray, np.ndarray]:
        selector = chosen.selector() if chosen is not None else None
        nprobe, ef = int(params.get("nprobe", 16)), int(params.get("efSearch", 64))
        D, I = self._faiss_search(q, fetch, self._search_params(selector, nprobe, ef))
        scores = self._scores(D, I)
        for _ in range(3):  # rows an ANN search left short (selective filters): search them wider
            short = (I >= 0).sum(axis=1) < fetch
            if not short.any():
                return scores, I
            nprobe, ef = nprobe * 4, max(ef * 4, fetch)
            D2, I2 = self._faiss_search(q[short], fetch, self._search_params(selector, nprobe, ef))
            scores[short], I[short] = self._scores(D2, I2), I2
        short = (I >= 0).sum(axis=1) < fetch
        if short.any():  # still short: scan every allowed vector
            scores[short], I[short] = self._exact(q[short], fetch, chosen)
        return scores, I

    def _exact(self, q, fetch, chosen) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over the allowed vectors (their stored, possibly decoded, values): a cached
        FAISS Flat index of them for a selective filter, else chunks reconstructed on the fly."""
        if chosen is not None and chosen.exact:
            flat, labels = chosen.flat(self.index, METRICS[self.metric], self._cache)
            D, I = flat.search(q, fetch)
            return self._scores(D, I), np.where(I >= 0, labels[np.maximum(I, 0)], -1)
        labels = chosen.labels() if chosen is not None else self._map.live_labels()
        best_s = np.full((len(q), 0), -np.inf, np.float32)
        best_l = np.zeros((len(q), 0), np.int64)
        for s in range(0, len(labels), 65_536):
            part = labels[s : s + 65_536]
            flat = faiss.IndexFlat(self.dim, METRICS[self.metric])
            flat.add(self.index.reconstruct_batch(part))
            D, I = flat.search(q, min(fetch, len(part)))
            best_s = np.concatenate([best_s, self._scores(D, I)], axis=1)
            best_l = np.concatenate([best_l, np.where(I >= 0, part[np.maximum(I, 0)], -1)], axis=1)
        order = np.argsort(-best_s, axis=1, kind="stable")[:, :fetch]
        return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_l, order, 1)

    def _scores(self, D: np.ndarray, I: np.ndarray) -> np.ndarray:
        """FAISS distances as scores, higher is better (-inf where FAISS found nothing)."""
        return np.where(I >= 0, -D if self.metric == "l2" else D, -np.inf).astype(np.float32)

    def _aggregate(self, scores, rows, k, how, top_m) -> tuple[np.ndarray, list[list[str]]]:
        out_s = np.full((len(rows), k), -np.inf, np.float32)
        out_ids: list[list[str]] = []
        for r in range(len(rows)):
            ok = rows[r] >= 0
            hit_rows, hit_scores = rows[r][ok], scores[r][ok]
            order = np.argsort(-hit_scores, kind="stable")
            hit_rows, hit_scores = hit_rows[order], hit_scores[order]
            if how == "max":
                _, first = np.unique(hit_rows, return_index=True)
                first = np.sort(first)[:k]
                picked, best = hit_rows[first], hit_scores[first]
            else:
                total: dict[int, float] = {}
                seen: dict[int, int] = {}
                for row, s in zip(hit_rows.tolist(), hit_scores.tolist(), strict=True):
                    if seen.get(row, 0) < top_m:
                        seen[row] = seen.get(row, 0) + 1
                        total[row] = total.get(row, 0.0) + s
                ranked = sorted(total.items(), key=lambda t: -t[1])[:k]
                picked = np.array([t[0] for t in ranked], np.int64)
                best = np.array([t[1] for t in ranked], np.float32)
            out_s[r, : len(best)] = best
            out_ids.append([self._map.id_of_row(int(i)) for i in picked])
        return out_s, out_ids

    def _search_params(self, selector, nprobe: int, ef: int):
        inner = faiss.downcast_index(
            self.index.index if isinstance(self.index, faiss.IndexIDMap2) else self.index
        )
        base = inner.base_index if isinstance(inner, faiss.IndexRefine) else inner
        if isinstance(base, faiss.IndexPreTransform):
            base = faiss.downcast_index(base.index)
        if isinstance(base, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
        if isinstance(base, faiss.IndexIVF):
            return faiss.SearchParametersIVF(sel=selector, nprobe=min(nprobe, base.nlist))
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def _check(self, embeddings: np.ndarray) -> np.ndarray:
        try:
            x = np.asarray(embeddings, dtype=np.float32)
        except (TypeError, ValueError):
            raise InvalidRequestError(
                f"embeddings must be numbers, not {type(embeddings).__name__}"
            ) from None
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InvalidRequestError(
                f"embeddings must have shape (n, {self.dim}), not {np.shape(embeddings)}"
            )
        if not np.isfinite(x).all():
            raise InvalidRequestError("embeddings hold NaN or inf")
        return np.ascontiguousarray(x)

    # ----------------------------------------------------------------- persistence
    def _pack(self) -> tuple[IndexManifest, dict[str, bytes]]:
        with self._lock.read():
            ids, arrays = self._map.to_arrays()
            arrays["signatures"] = persistence.signatures(self.index, arrays["labels"])
            blob = faiss.serialize_index(self.index).tobytes()
        header = dict(
            encoder=self.encoder,
            dim=self.dim,
            metric=self.metric,
            factory=self.factory,
            count=len(ids),
            vectors=len(arrays["labels"]),
            faiss_version=faiss.__version__,
            catalog_fingerprint=self.catalog_fingerprint,
        )
        return persistence.pack(header, ids, arrays, blob)

    def manifest(self) -> IndexManifest:
        """What :meth:`save` would write in the manifest now."""
        return self._pack()[0]

    def save(self, path: str | Path | None = None) -> Path:
        """Write the index, its ids, attributes and manifest to one file, atomically (an existing
        device, FIFO or folder at ``path`` is refused; the old file survives any failure). Without
        ``path``: the file it was loaded from or opened at."""
        if path is None and self.path is None:
            raise InvalidRequestError("save needs a path: this index was not loaded from a file")
        return persistence.save(path if path is not None else self.path, self._pack()[1])

    def close(self) -> None:
        """Nothing to release (the :class:`~image_search.stores.VectorStore` protocol has it)."""

    @classmethod
    def load(
        cls,
        path: str | Path,
        encoder: str | None = None,
        dim: int | None = None,
        metric: str | None = None,
        max_bytes: int = persistence.MAX_INDEX_BYTES,
    ) -> "ProductIndex":
        """Read an index saved by :meth:`save`, refusing one that is damaged, larger than
        ``max_bytes``, not a regular file, or built with another encoder, dimension or metric than
        those given. The checks detect damage, not tampering: never load an index file from an
        untrusted source. Chapter 08."""
        stored = persistence.load(path, max_bytes)
        m = stored.manifest
        for what, want, got in (
            ("encoder", encoder, m.encoder),
            ("dim", dim, m.dim),
            ("metric", metric, m.metric),
        ):
            if want is not None and want != got:
                raise IndexMismatchError(
                    f"{path} was built with {what} {got!r}, not {want!r}: rebuild the index"
                )
        if m.metric not in METRICS or not isinstance(m.dim, int) or m.dim <= 0:
            raise IndexMismatchError(
                f"{path}: the manifest's metric {m.metric!r} or dim {m.dim!r} is invalid"
            )
        try:
            idmap = IdMap.from_arrays(stored.ids, stored.arrays)
        except (ValueError, KeyError, IndexError) as e:
            raise IndexMismatchError(f"{path} is inconsistent: {e}; rebuild the index") from None
        faiss_index = persistence.deserialize(
            stored.blob, m.dim, idmap.vectors + len(idmap.tombstones), path
        )
        index = cls(m.dim, m.encoder, m.factory, m.metric, faiss_index=faiss_index)
        index._map, index.catalog_fingerprint, index.path = idmap, m.catalog_fingerprint, Path(path)
        index._verify(path, m, stored.arrays)
        return index

    def _verify(self, path, manifest: IndexManifest, arrays: dict[str, np.ndarray]) -> None:
        """After a load: the FAISS index and the id map describe exactly the same vectors."""
        m = self._map
        problem = None
        if self.index.metric_type != METRICS[manifest.metric]:
            problem = (
                f"the FAISS index uses metric {self.index.metric_type}, "
                f"the manifest says {manifest.metric!r}"
            )
        elif self.index.d != self.dim:
            problem = f"the FAISS index has dimension {self.index.d}, the manifest says {self.dim}"
        elif manifest.count != len(m) or manifest.vectors != m.vectors:
            problem = (
                f"the manifest counts {manifest.count} products and {manifest.vectors} vectors, "
                f"the id map {len(m)} and {m.vectors}"
            )
        elif self.removal != "tombstone" and len(m.tombstones):
            problem = "tombstones in an index that deletes physically"
        else:
            stored = np.sort(persistence.stored_labels(self.index))
            if not np.array_equal(stored, np.union1d(m.live_labels(), m.tombstones)):
                problem = "the FAISS ids do not match the product ids"
            elif len(arrays["signatures"]) != len(arrays["labels"]) or not np.allclose(
                persistence.signatures(self.index, arrays["labels"]),
                arrays["signatures"],
                rtol=0,
                atol=1e-5,
            ):
                problem = (
                    "the id map does not bind each product to its stored vectors (swapped labels?)"
                )
        if problem:
            raise IndexMismatchError(f"{path} is inconsistent: {problem}; rebuild the index")


# --------------------------------------------------------------------------- selections
class _Chosen:
    """A cached selection: the allowed labels' mask, FAISS selector and, for an exact search, a
    FAISS Flat index holding a float copy of the allowed vectors."""

    def __init__(self, selection: Selection, dim: int, vectors: int) -> None:
        self.selection = selection
        self.exact = selection.vectors <= max(
            EXACT_MAX_VECTORS, min(EXACT_MAX_BYTES // (4 * dim), int(EXACT_MAX_FRACTION * vectors))
        )
        self._bits = self._selector = self._labels = self._flat = None
        self._lock = threading.Lock()

    def labels(self) -> np.ndarray:
        if self._labels is None:
            self._labels = np.flatnonzero(self.selection.mask)
        return self._labels

    def selector(self):
        with self._lock:
            if self._selector is None:
                self._bits = np.packbits(self.selection.mask, bitorder="little")
                self._selector = faiss.IDSelectorBitmap(len(self._bits), faiss.swig_ptr(self._bits))
            return self._selector

    def flat(
        self, index: faiss.Index, metric: int, cache: "_SelectionCache"
    ) -> tuple[faiss.Index, np.ndarray]:
        """A Flat index of the allowed vectors (row ``i`` is label ``labels()[i]``)."""
        with self._lock:
            if self._flat is None:
                labels = self.labels()
                flat = faiss.IndexFlat(index.d, metric)
                if len(labels):
                    flat.add(index.reconstruct_batch(labels))
                self._flat = flat
                cache.charge()
            return self._flat, self.labels()

    @property
    def nbytes(self) -> int:
        return 0 if self._flat is None else self._flat.ntotal * self._flat.d * 4


class _SelectionCache:
    """Least-recently-used selections per (Filters, index version), bounded in entries and in the
    bytes of their float copies."""

    def __init__(self, entries: int = CACHE_ENTRIES, budget: int = CACHE_BYTES) -> None:
        self._items: OrderedDict = OrderedDict()
        self._entries, self._budget = entries, budget
        self._lock = threading.Lock()

    def get(self, key) -> _Chosen | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key, chosen: _Chosen) -> None:
        with self._lock:
            stale = [
                k for k in self._items if k[1] != key[1]
            ]  # another index version: never hit again
            for k in stale:
                del self._items[k]
            self._items[key] = chosen
            self._evict()

    def charge(self) -> None:
        """Evict old entries now that one holds a float copy."""
        with self._lock:
            self._evict()

    def _evict(self) -> None:
        while len(self._items) > self._entries or (
            len(self._items) > 1 and sum(c.nbytes for c in self._items.values()) > self._budget
        ):
            self._items.popitem(last=False)


class _ReadWriteLock:
    """Many searches at once, or one writer: a writer waits for running searches and new searches
    wait for a waiting writer (FAISS is safe for concurrent readers, not for a reader and a
    writer)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = self._writers_waiting = 0
        self._writer = False

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def _native_ids(inner) -> bool:
    """IVF indexes (optionally behind a pre-transform such as OPQ) keep and remove their own ids."""
    top = faiss.downcast_index(inner)
    return (
        isinstance(top, (faiss.IndexIVF, faiss.IndexPreTransform))
        and faiss.try_extract_index_ivf(inner) is not None
    )


def _parts(index) -> Iterator:
    """The FAISS indexes nested in ``index`` (id map, pre-transform, refine, HNSW storage)."""
    part = faiss.downcast_index(index)
    yield part
    for attr in ("index", "base_index", "refine_index", "storage"):
        child = getattr(part, attr, None)
        if isinstance(child, faiss.Index):
            yield from _parts(child)


def _last_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[-1][:200] if text else type(e).__name__
