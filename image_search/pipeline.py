"""Offline indexing: embed a catalog's photos, in this process or distributed with Ray Data, and
write them into a vector store, incrementally. Chapter 12.

Both engines share the embedding cache (keyed by encoder and image checksum): only new or changed
images are embedded, and a re-index changes only the products whose photos or attributes changed
(their digest). ``engine="ray"`` runs Ray Data's ``map_batches`` with a pool of actors that each
load the encoder once: on a local Ray runtime by default, on a cluster when ``ray_address`` is given
(every node then needs this package and the model weights installed).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .catalog import Catalog
from .encoders import EmbeddingCache, Encoder, file_checksum, load_encoder
from .errors import InvalidRequestError
from .stores import (
    BackendUnavailableError,
    VectorStore,
    catalog_fingerprint,
    indexed_photos,
    product_digest,
)
from .stores.filters import Attributes

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class IndexReport:
    """What an :func:`index_catalog` run did."""

    products: int  # in the store afterwards
    added: int  # products new to the store
    updated: int  # products whose photos or attributes changed
    removed: int  # products no longer in the catalog
    embedded: int  # images actually embedded (the rest came from the embedding cache)


def embed_paths(
    encoder: Encoder,
    paths: Sequence[str | Path],
    engine: str = "local",
    ray_address: str | None = None,
    batch_size: int = 16,
    actors: int = 2,
    progress: bool = False,
) -> tuple[np.ndarray, int]:
    """Embeddings of image files, ``(len(paths), dim)``, and how many were computed: the rest come
    from the embedding cache. ``engine="ray"`` embeds the missing ones with Ray Data (``actors``
    actors of one CPU and one thread each). Chapter 12."""
    if engine not in ENGINES:
        raise InvalidRequestError(f"engine must be one of {list(ENGINES)}, not {engine!r}")
    paths = [Path(p) for p in paths]
    computed = []

    def compute(missing: list[int]) -> np.ndarray:
        todo = [paths[i] for i in missing]
        computed.append(len(todo))
        if engine == "local":
            return encoder.encode_images(todo, batch_size=batch_size, progress=progress)
        return ray_embed(
            encoder.name, todo, address=ray_address, batch_size=batch_size, actors=actors
        )

    x = EmbeddingCache.of(encoder).fetch([file_checksum(p) for p in paths], compute)
    return x, sum(computed)


class _Embed:
    """A Ray Data actor: loads the encoder once, then embeds batches of image paths."""

    def __init__(self, encoder: str, threads: int = 1) -> None:
        self.encoder = load_encoder(encoder, threads=threads)

    def __call__(self, batch: dict) -> dict:
        paths = [str(p) for p in batch["path"]]
        return {
            "row": batch["row"],
            "embedding": self.encoder.encode_images(paths, batch_size=len(paths)),
        }


def ray_embed(
    encoder: str,
    paths: Sequence[str | Path],
    address: str | None = None,
    batch_size: int = 16,
    actors: int = 2,
    num_cpus: int = 2,
) -> np.ndarray:
    """Embed image files with Ray Data: ``map_batches`` over a pool of ``actors`` that each hold the
    encoder (loaded by name). Starts a local Ray runtime (``num_cpus``, no dashboard) unless Ray is
    already running or ``address`` names a cluster, and shuts down only what it started. An
    unreachable address is refused within seconds. Chapter 12."""
    try:
        import ray
    except ImportError:
        raise BackendUnavailableError(
            "the ray engine needs Ray Data: pip install 'ray[data]==2.60.0'"
        ) from None
    if not paths:
        raise InvalidRequestError("no images to embed")
    if address not in (None, "auto", "local"):
        _check_reachable(address)
    started = not ray.is_initialized()
    if started:
        _start_ray(ray, address, num_cpus)
    try:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items([{"row": i, "path": str(p)} for i, p in enumerate(paths)])
        ds = ds.map_batches(
            _Embed,
            fn_constructor_kwargs={"encoder": encoder},
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=actors),  # `concurrency=` is deprecated
            num_cpus=1,
        )
        rows = ds.take_all()
    except Exception as e:  # a worker's error arrives wrapped in Ray's exception types
        cause = getattr(e, "cause", None) or e
        raise InvalidRequestError(
            f"Ray embedding failed: {type(cause).__name__}: {_one_line(cause)}"
        ) from None
    finally:
        if started:
            ray.shutdown()
    out = np.zeros((len(paths), len(rows[0]["embedding"])), np.float32)
    for r in rows:
        out[int(r["row"])] = r["embedding"]
    return out


def _start_ray(ray, address: str | None, num_cpus: int, attempts: int = 3) -> None:
    """``ray.init``, retried for a local runtime: on a loaded machine Ray's agents can miss the
    raylet's fixed 15 s start-up window, and a second try starts faster (warm file cache)."""
    logging.getLogger("ray").setLevel(logging.ERROR)
    for _attempt in range(1 if address else attempts):
        try:
            ray.init(
                address=address,
                num_cpus=None if address else num_cpus,
                include_dashboard=False,
                logging_level="ERROR",
                log_to_driver=False,
            )
            return
        except Exception as e:  # Ray raises bare Exception when its node does not come up in time
            ray.shutdown()
            error = e
    where = address or f"a local runtime ({attempts} tries; its agents must start within 15 s)"
    raise BackendUnavailableError(
        f"cannot start or join Ray at {where}: {_one_line(error)}"
    ) from None


def index_catalog(
    store: VectorStore,
    catalog: Catalog,
    encoder: Encoder,
    photos: Callable[[str], Sequence[Path]] | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    progress: bool = True,
) -> IndexReport:
    """Bring ``store`` up to date with the catalog: remove products no longer there, (re-)embed and
    add the products whose photos or attributes changed (by digest), record the catalog
    fingerprint and save. ``photos(product_id)`` lists a product's images (default:
    :func:`~image_search.stores.indexed_photos`, every shop photo). Chapter 12."""
    if store.encoder != encoder.name or store.dim != encoder.dim:
        raise InvalidRequestError(
            f"the store holds {store.encoder} ({store.dim}-d) vectors, "
            f"not {encoder.name} ({encoder.dim}-d)"
        )
    photos = photos or (lambda pid: indexed_photos(catalog, pid))
    paths = {pid: [Path(p) for p in photos(pid)] for pid in catalog.ids}
    sums = {pid: [file_checksum(p) for p in ps] for pid, ps in paths.items()}
    attrs = Attributes.from_catalog(catalog)
    wanted = {pid: product_digest(sums[pid], attrs, row) for row, pid in enumerate(catalog.ids)}
    stored = store.digests()
    gone = [pid for pid in stored if pid not in wanted]
    changed = [pid for pid in stored if pid in wanted and stored[pid] != wanted[pid]]
    new = [pid for pid in catalog.ids if pid not in stored]
    redo = set(changed) | set(new)
    todo = [pid for pid in catalog.ids if pid in redo]
    owners = [pid for pid in todo for _ in paths[pid]]
    if owners and not getattr(
        store, "is_trained", True
    ):  # an empty IVF/PQ FAISS index: enough to train?
        store.check_training_size(len(owners))  # before minutes of embedding
    store.remove(gone + changed)
    embedded = 0
    if owners:
        x, embedded = embed_paths(
            encoder, [p for pid in todo for p in paths[pid]], engine, ray_address, progress=progress
        )
        store.add(
            owners, x, Attributes.from_catalog(catalog, owners), [wanted[pid] for pid in owners]
        )
    store.catalog_fingerprint = catalog_fingerprint(
        catalog, [p for pid in catalog.ids for p in paths[pid]]
    )
    store.save()
    return IndexReport(len(store), len(new), len(changed), len(gone), embedded)


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """Refuse a Ray address whose host:port does not accept a TCP connection (Ray itself would keep
    retrying for a minute)."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidRequestError(f"a Ray address is host:port or ray://host:port, not {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise BackendUnavailableError(
            f"no Ray cluster answers at {address}: {e.strerror or e}"
        ) from None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


__all__ = ["ENGINES", "IndexReport", "embed_paths", "ray_embed", "index_catalog"]
