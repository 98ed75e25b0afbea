"""A FAISS index of product embeddings, addressed by product id, saved with a manifest.

Chapter 08 compares index types; chapter 09 builds the catalog index.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import faiss
import numpy as np

from .errors import IndexMismatchError, InvalidRequestError

FORMAT_VERSION = 1
METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


@dataclass(frozen=True)
class IndexManifest:
    """What an index file holds and was built with; checked on load."""

    format_version: int
    encoder: str
    dim: int
    metric: str
    factory: str
    count: int
    faiss_version: str
    checksum: str  # SHA-256 of the serialised FAISS index followed by the ids


class ProductIndex:
    """FAISS index from a factory string (``Flat``, ``IVF256,Flat``, ``HNSW32``, ``IVF256,PQ32x8``…)
    whose rows are product ids. Add, remove and update by id; search with an optional allow-list
    of ids applied inside the ANN search. Chapter 09."""

    def __init__(self, dim: int, encoder: str, factory: str = "Flat", metric: str = "ip") -> None:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {list(METRICS)}, not {metric!r}")
        if dim <= 0:
            raise ValueError(f"dim must be positive, not {dim}")
        self.dim, self.encoder, self.factory, self.metric = int(dim), encoder, factory, metric
        try:
            inner = faiss.index_factory(self.dim, factory, METRICS[metric])
        except RuntimeError as e:
            raise ValueError(f"bad FAISS factory string {factory!r}: {str(e).splitlines()[-1]}") from None
        if _native_ids(inner):
            # IVF stores ids itself and removes by id; an IndexIDMap over it would renumber
            # positions the IVF lists never see, and mix up products after a removal.
            faiss.extract_index_ivf(inner).set_direct_map_type(faiss.DirectMap.Hashtable)
            self.index = inner
        else:
            self.index = faiss.IndexIDMap2(inner)
        self._label: dict[str, int] = {}   # product id -> FAISS label
        self._id: dict[int, str] = {}      # FAISS label -> product id
        self._deleted: set[int] = set()    # labels removed from a graph index (HNSW) but still stored
        self._next = 0
        self._lock = threading.RLock()

    @property
    def removal(self) -> str:
        """How :meth:`remove` works for this index type: ``"physical"`` (Flat, PQ, SQ: rows are
        dropped), ``"native"`` (IVF: removed by id from the inverted lists) or ``"tombstone"``
        (HNSW and other graphs, which cannot delete: the vector stays stored but is excluded from
        every search; rebuild the index when many are tombstoned). Chapter 08."""
        if not isinstance(self.index, faiss.IndexIDMap2):
            return "native"
        return "physical" if isinstance(faiss.downcast_index(self.index.index), faiss.IndexFlatCodes) else "tombstone"

    # ----------------------------------------------------------------- contents
    def __len__(self) -> int:
        return len(self._label)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self._label

    @property
    def ids(self) -> list[str]:
        """Product ids in the order they were added."""
        return sorted(self._label, key=self._label.__getitem__)

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def train(self, embeddings: np.ndarray) -> None:
        """Train the index (IVF centroids, PQ codebooks) on a sample of embeddings."""
        self.index.train(self._check(embeddings))

    def add(self, ids: Sequence[str], embeddings: np.ndarray) -> None:
        """Add products; an id already present is an error (use :meth:`update`)."""
        ids, x = self._check_ids(ids, embeddings)
        with self._lock:
            present = [i for i in ids if i in self._label]
            if present:
                raise ValueError(f"ids already in the index (use update): {present[:5]}")
            if not self.index.is_trained:
                self.index.train(x)
            labels = np.arange(self._next, self._next + len(ids), dtype=np.int64)
            self.index.add_with_ids(x, labels)
            for pid, lab in zip(ids, labels.tolist()):
                self._label[pid], self._id[lab] = lab, pid
            self._next += len(ids)

    def remove(self, ids: Iterable[str]) -> int:
        """Remove products by id (unknown ids are ignored); returns how many were removed."""
        if isinstance(ids, str):
            ids = [ids]
        with self._lock:
            labels = sorted(self._label[i] for i in set(ids) if i in self._label)
            if not labels:
                return 0
            if self.removal == "tombstone":
                self._deleted.update(labels)
            else:  # FAISS first: if it fails, the id mapping is still that of the stored vectors
                removed = self.index.remove_ids(np.array(labels, dtype=np.int64))
                if removed != len(labels):
                    raise RuntimeError(f"FAISS removed {removed} of {len(labels)} vectors: the index is inconsistent")
            for lab in labels:
                del self._label[self._id.pop(lab)]
            return len(labels)

    def update(self, ids: Sequence[str], embeddings: np.ndarray) -> None:
        """Replace the vectors of products (adding those not yet present)."""
        ids, x = self._check_ids(ids, embeddings)  # validate everything before removing anything
        with self._lock:
            self.remove(ids)
            self.add(ids, x)

    def _check_ids(self, ids: Sequence[str], embeddings: np.ndarray) -> tuple[list[str], np.ndarray]:
        ids = [ids] if isinstance(ids, str) else list(ids)
        x = self._check(embeddings)
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} embeddings")
        if not all(isinstance(i, str) and i for i in ids):
            raise ValueError("product ids must be non-empty strings")
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate ids in one add")
        return ids, x

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of products (exact for Flat/HNSW, approximate for PQ)."""
        with self._lock:
            out = np.zeros((len(ids), self.dim), dtype=np.float32)
            for row, pid in enumerate(ids):
                out[row] = self.index.reconstruct(self._label[pid])
            return out

    # ----------------------------------------------------------------- search
    def search(self, query_embeddings: np.ndarray, k: int, allowed: Iterable[str] | None = None,
               params: dict[str, int] | None = None) -> tuple[np.ndarray, list[list[str]]]:
        """Top-``k`` products per query: ``(scores (n, k'), ids)``, best first.

        ``allowed`` restricts the search to those product ids inside FAISS (an ``IDSelector``),
        so a filter never needs over-fetching. ``params`` sets ``nprobe`` or ``efSearch``.
        A row holds fewer than ``k`` ids when fewer products qualify (its scores are padded with
        ``-inf``).
        """
        q = self._check(query_embeddings)
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise InvalidRequestError(f"k must be an integer of at least 1, not {k!r}")
        if isinstance(allowed, str):
            allowed = [allowed]
        with self._lock:
            selector = None
            if allowed is not None:
                labels = np.array(sorted(self._label[i] for i in set(allowed) if i in self._label), dtype=np.int64)
                if len(labels) == 0:
                    return np.zeros((len(q), 0), np.float32), [[] for _ in range(len(q))]
                selector = faiss.IDSelectorBatch(labels)
            elif self._deleted:  # tombstoned vectors are never returned
                keep = faiss.IDSelectorBatch(np.array(sorted(self._deleted), dtype=np.int64))
                selector = faiss.IDSelectorNot(keep)
                selector.keep_alive = keep  # the C++ selector points at it
            k_eff = min(k, len(self._label)) if self._label else 0
            if k_eff == 0:
                return np.zeros((len(q), 0), np.float32), [[] for _ in range(len(q))]
            D, I = self.index.search(q, k_eff, params=self._search_params(selector, params or {}))
            ids = [[self._id[lab] for lab in row if lab >= 0] for row in I.tolist()]
        scores = np.where(I >= 0, -D if self.metric == "l2" else D, -np.inf)  # higher is better
        return scores.astype(np.float32), ids

    def _search_params(self, selector, params: dict[str, int]):
        inner = faiss.downcast_index(self.index.index if isinstance(self.index, faiss.IndexIDMap2) else self.index)
        base = inner.base_index if isinstance(inner, faiss.IndexRefine) else inner
        if isinstance(base, faiss.IndexPreTransform):
            base = faiss.downcast_index(base.index)
        if isinstance(base, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(sel=selector, efSearch=int(params.get("efSearch", 64)))
        if isinstance(base, faiss.IndexIVF):
            return faiss.SearchParametersIVF(sel=selector, nprobe=int(params.get("nprobe", 16)))
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def _check(self, embeddings: np.ndarray) -> np.ndarray:
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InvalidRequestError(f"embeddings must have shape (n, {self.dim}), not {np.shape(embeddings)}")
        if not np.isfinite(x).all():
            raise InvalidRequestError("embeddings hold NaN or inf")
        return np.ascontiguousarray(x)

    # ----------------------------------------------------------------- persistence
    def manifest(self) -> IndexManifest:
        return IndexManifest(FORMAT_VERSION, self.encoder, self.dim, self.metric, self.factory,
                             len(self), faiss.__version__, self._checksum(*self._payload()))

    def _payload(self) -> tuple[bytes, bytes]:
        with self._lock:
            blob = faiss.serialize_index(self.index).tobytes()
            ids = json.dumps({"labels": self._label, "next": self._next, "deleted": sorted(self._deleted)},
                             sort_keys=True).encode()
        return blob, ids

    @staticmethod
    def _checksum(blob: bytes, ids: bytes) -> str:
        return hashlib.sha256(blob + b"\0" + ids).hexdigest()

    def save(self, path: str | Path) -> Path:
        """Write the index, its ids and manifest to one zip file, atomically (temp file, fsync, rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob, ids = self._payload()
        manifest = IndexManifest(FORMAT_VERSION, self.encoder, self.dim, self.metric, self.factory,
                                 len(self), faiss.__version__, self._checksum(blob, ids))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
                    z.writestr("manifest.json", json.dumps(asdict(manifest), indent=1))
                    z.writestr("ids.json", ids)
                    z.writestr("index.faiss", blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)  # make the rename itself durable
        return path

    @classmethod
    def load(cls, path: str | Path, encoder: str | None = None, dim: int | None = None,
             metric: str | None = None) -> "ProductIndex":
        """Read an index saved by :meth:`save`, refusing one that is damaged or was built with
        another encoder, dimension or metric than those given."""
        path = Path(path)
        try:
            with zipfile.ZipFile(path) as z:
                if any(info.compress_type != zipfile.ZIP_STORED for info in z.infolist()):
                    raise ValueError("compressed members (save() never writes them; a zip bomb?)")
                manifest = IndexManifest(**json.loads(z.read("manifest.json")))
                ids, blob = z.read("ids.json"), z.read("index.faiss")
        except FileNotFoundError:
            raise
        except (zipfile.BadZipFile, KeyError, TypeError, ValueError, OSError, EOFError) as e:
            raise IndexMismatchError(f"{path} is not a readable index file ({e})") from None
        if manifest.format_version != FORMAT_VERSION:
            raise IndexMismatchError(f"{path}: format version {manifest.format_version}, expected {FORMAT_VERSION}")
        for what, want, got in (("encoder", encoder, manifest.encoder), ("dim", dim, manifest.dim),
                                ("metric", metric, manifest.metric)):
            if want is not None and want != got:
                raise IndexMismatchError(f"{path} was built with {what} {got!r}, not {want!r}: rebuild the index")
        if cls._checksum(blob, ids) != manifest.checksum:
            raise IndexMismatchError(f"{path} is corrupted: checksum mismatch")
        index = cls.__new__(cls)
        index.dim, index.encoder, index.factory, index.metric = manifest.dim, manifest.encoder, manifest.factory, manifest.metric
        try:
            index.index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
            meta = json.loads(ids)
            index._label = {str(k): int(v) for k, v in meta["labels"].items()}
            index._deleted = {int(v) for v in meta.get("deleted", [])}
            index._next = int(meta["next"])
        except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as e:
            raise IndexMismatchError(f"{path} is not a readable index file ({_first_line(e)})") from None
        index._id = {v: k for k, v in index._label.items()}
        index._lock = threading.RLock()
        index._verify(path, manifest)
        return index

    def _verify(self, path: Path, manifest: IndexManifest) -> None:
        """After a load: the FAISS index and the id mapping describe exactly the same vectors."""
        live = set(self._id)
        problem = None
        if len(live) != len(self._label) or live & self._deleted:
            problem = "the id mapping is not one-to-one"
        elif manifest.metric not in METRICS or self.index.metric_type != METRICS[manifest.metric]:
            problem = f"the FAISS index uses metric {self.index.metric_type}, the manifest says {manifest.metric!r}"
        elif self.index.d != self.dim:
            problem = f"the FAISS index has dimension {self.index.d}, the manifest says {self.dim}"
        elif manifest.count != len(self._label):
            problem = f"the manifest counts {manifest.count} products, the ids file {len(self._label)}"
        elif self.index.ntotal != len(live) + len(self._deleted):
            problem = f"the index holds {self.index.ntotal} vectors for {len(live)} ids"
        elif isinstance(self.index, faiss.IndexIDMap2):
            stored = faiss.vector_to_array(self.index.id_map)
            if set(stored.tolist()) != live | self._deleted or (len(stored) and stored.max() >= self._next):
                problem = "the FAISS ids do not match the product ids"
        elif faiss.try_extract_index_ivf(self.index) is None:
            problem = "unexpected FAISS index type"
        if problem:
            raise IndexMismatchError(f"{path} is inconsistent: {problem}; rebuild the index")


def _native_ids(inner) -> bool:
    """IVF indexes (optionally behind a pre-transform such as OPQ) keep and remove their own ids."""
    top = faiss.downcast_index(inner)
    return isinstance(top, (faiss.IndexIVF, faiss.IndexPreTransform)) and faiss.try_extract_index_ivf(inner) is not None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[-1][:200] if text else type(e).__name__


def synthetic_embeddings(real: np.ndarray, n: int, noise: float = 0.5, seed: int = 0,
                         batch: int = 65_536) -> np.ndarray:
    """``n`` unit vectors drawn to match the distribution of ``real`` embeddings, for scale tests.

    Each is a random real vector plus Gaussian noise shaped like the real data's spread (its
    principal components, scaled by ``noise``), renormalised: clusters around real products, like
    the colour and size variants of a large catalog. Chapters 08 and 12, and the benchmarks.
    """
    real = np.asarray(real, dtype=np.float32)
    if real.ndim != 2 or len(real) < 2:
        raise ValueError(f"need a 2-D array of at least two real embeddings, not shape {real.shape}")
    rng = np.random.default_rng(seed)
    centred = real - real.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    scale = (s / np.sqrt(len(real) - 1) * noise).astype(np.float32)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for start in range(0, n, batch):
        b = min(batch, n - start)
        z = rng.standard_normal((b, len(scale)), dtype=np.float32) * scale
        x = real[rng.integers(0, len(real), b)] + z @ vt
        out[start:start + b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out
