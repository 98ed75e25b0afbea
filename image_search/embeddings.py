"""Embeddings of image files: an on-disk cache keyed by the encoder's fingerprint and each image's
checksum, and the catalog's canonical embeddings shipped with the data (``data/embeddings/``).

Every machine starts from the same shipped vectors, so a number measured on them reproduces on any
CPU; the cache holds what is computed here. Both are keyed by the encoder's *fingerprint* (weights,
preprocessing, backend, library versions), so a changed model never returns stale vectors. The cache
is best effort: a damaged file is discarded and recomputed with one warning, and a cache that cannot
be written (read-only, full disk) is kept in memory. Chapter 09 introduces it; chapter 12 uses it
for incremental indexing.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import UnsafePathError
from .paths import atomic_write, atomic_write_bytes, cache_dir, read_regular, safe_name

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "data" / "embeddings"
MAX_CACHE_BYTES = 8 * 2**30  # a cache file larger than this is refused as damaged
_DIGEST_BYTES = 8  # per-entry SHA-256 prefix binding each key to its vector


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32. Chapter 05."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def file_checksum(path: str | Path) -> str:
    """SHA-256 of a file's bytes: the cache key of its embedding. Chapter 12."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint_of(encoder) -> str:
    """The encoder's fingerprint: its ``fingerprint`` attribute, or ``name-dim`` for an encoder
    written without one (then a changed model under the same name is not detected)."""
    return getattr(encoder, "fingerprint", "") or f"{encoder.name}-{encoder.dim}"


def encode_paths(
    encoder,
    paths: Sequence[str | Path],
    batch_size: int = 32,
    progress: bool = True,
    use_cache: bool = True,
) -> np.ndarray:
    """Embed image files, ``(n, dim)`` float32 unit rows: each image's vector comes from the
    shipped canonical embeddings or the cache when its checksum is there for this encoder's
    fingerprint, and is computed (then cached) otherwise. Chapter 09."""
    paths = [Path(p) for p in paths]
    if not use_cache:
        return encoder.encode_images(paths, batch_size=batch_size, progress=progress)
    return EmbeddingCache.of(encoder).fetch(
        [file_checksum(p) for p in paths],
        lambda missing: encoder.encode_images(
            [paths[i] for i in missing], batch_size=batch_size, progress=progress
        ),
    )


# --------------------------------------------------------------------------- the cache
_MEMORY: dict[Path, dict[str, np.ndarray]] = {}  # entries that could not be written to disk
_WARNED: set[tuple[Path, str]] = set()


def _warn_once(path: Path, what: str, message: str) -> None:
    if (path, what) not in _WARNED:
        _WARNED.add((path, what))
        log.warning(message)


@dataclass(frozen=True)
class EmbeddingCache:
    """A ``.npz`` file of image checksum -> vector for one encoder fingerprint. Each entry carries a
    digest binding its key to its vector, so a damaged or shuffled file is detected and
    discarded."""

    name: str
    dim: int
    fingerprint: str = ""

    @classmethod
    def of(cls, encoder, variant: str = "") -> "EmbeddingCache":
        """The cache of an encoder (``variant`` names derived vectors, e.g. of corrupted images)."""
        suffix = f"+{variant}" if variant else ""
        return cls(encoder.name + suffix, encoder.dim, fingerprint_of(encoder) + suffix)

    @property
    def path(self) -> Path:
        fp = hashlib.sha256(self.fingerprint.encode()).hexdigest()[:12]
        return cache_dir() / "embeddings" / f"{safe_name(self.name)}-{self.dim}-{fp}.npz"

    def _read(self) -> dict[str, np.ndarray]:
        path = self.path
        stored: dict[str, np.ndarray] = {}
        try:
            stored = _read_entries(path, self.dim)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnsafePathError) as e:
            _warn_once(
                path, "read", f"embedding cache {path} is damaged ({e}); its vectors are recomputed"
            )
        return {**stored, **_MEMORY.get(path, {})}

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The vectors of those ``keys`` that are cached or shipped."""
        stored = self._read()
        found = {k: stored[k] for k in keys if k in stored}
        missing = [k for k in keys if k not in found]
        if missing:
            found.update(shipped_vectors(self.fingerprint, self.dim, missing))
        return found

    def fetch(self, keys: Sequence[str], compute: Callable[[list[int]], np.ndarray]) -> np.ndarray:
        """The vectors of ``keys`` in order, ``(len(keys), dim)`` float32: cached or shipped ones
        are read, the rest come from ``compute(indices of the missing keys)`` and are cached."""
        keys = list(keys)
        found = self.get(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            new = np.asarray(compute(missing), dtype=np.float32)
            if new.shape != (len(missing), self.dim):
                raise ValueError(
                    f"the encoder returned shape {new.shape} for {len(missing)} images of dim "
                    f"{self.dim}"
                )
            self.put([keys[i] for i in missing], new)
            found.update({keys[i]: new[j] for j, i in enumerate(missing)})
        return (
            np.stack([found[k] for k in keys]).astype(np.float32)
            if keys
            else np.zeros((0, self.dim), np.float32)
        )

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Add entries. Best effort: when the file cannot be written (read-only folder, full disk)
        the entries are kept in memory for this process, with one warning."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if not keys:
            return
        path = self.path
        stored = self._read()
        stored.update(zip(keys, vectors))
        try:
            atomic_write(path, lambda f: _write_entries(f, stored))
            _MEMORY.pop(path, None)
        except OSError as e:
            _warn_once(
                path,
                "write",
                f"cannot write the embedding cache {path} ({e.strerror or e}); "
                "keeping its vectors in memory for this session",
            )
            _MEMORY.setdefault(path, {}).update(zip(keys, vectors))


def _digests(keys: Sequence[str], vectors: np.ndarray) -> np.ndarray:
    out = np.empty((len(keys), _DIGEST_BYTES), dtype=np.uint8)
    for i, (k, v) in enumerate(zip(keys, vectors)):
        out[i] = np.frombuffer(
            hashlib.sha256(k.encode() + v.tobytes()).digest()[:_DIGEST_BYTES], np.uint8
        )
    return out


def _write_entries(f, stored: dict[str, np.ndarray]) -> None:
    keys = list(stored)
    vectors = np.stack([stored[k] for k in keys]).astype(np.float32)
    np.savez(f, keys=np.array(keys, dtype=str), vectors=vectors, digests=_digests(keys, vectors))


def _read_entries(path: Path, dim: int) -> dict[str, np.ndarray]:
    """Read and check a cache file; any problem raises ``ValueError`` (or an ``OSError``)."""
    data = read_regular(path, MAX_CACHE_BYTES)
    arrays = _read_npz(data, {"keys": "U", "vectors": "f4", "digests": "u1"})
    keys, vectors, digests = arrays["keys"], arrays["vectors"], arrays["digests"]
    n = len(keys)
    if keys.ndim != 1 or vectors.shape != (n, dim) or digests.shape != (n, _DIGEST_BYTES):
        raise ValueError(
            f"shapes {keys.shape}, {vectors.shape}, {digests.shape} do not fit {n} entries of dim "
            f"{dim}"
        )
    if not np.isfinite(vectors).all():
        raise ValueError("vectors hold NaN or inf")
    key_list = keys.tolist()
    if len(set(key_list)) != n:
        raise ValueError("duplicate keys")
    if not np.array_equal(_digests(key_list, vectors), digests):
        raise ValueError("keys and vectors do not match their digests")
    return dict(zip(key_list, vectors))


def _read_npz(data: bytes, expected: dict[str, str]) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed ``.npz`` held in ``data``, each checked against its declared
    shape and dtype kind *before* anything is allocated (a forged header cannot ask for 95 GiB)."""
    out = {}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for name, kind in expected.items():
            info = z.getinfo(f"{name}.npy")
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{name} is compressed")
            raw = z.read(info)  # the CRC-32 is checked here
            buf = io.BytesIO(raw)
            version = np.lib.format.read_magic(buf)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"{name} has npy format version {version}")
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(buf)
            if fortran or dtype.hasobject or not dtype.str.lstrip("<>|=").startswith(kind):
                raise ValueError(f"{name} has dtype {dtype.str}, expected {kind}")
            body = len(raw) - buf.tell()
            if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != body:
                raise ValueError(f"{name} declares shape {shape} but holds {body} bytes")
            out[name] = np.frombuffer(raw, dtype=dtype, offset=buf.tell()).reshape(shape)
    return out


# --------------------------------------------------------------------- shipped canonical embeddings
@dataclass(frozen=True)
class ShippedEmbeddings:
    """One canonical embedding set in ``data/embeddings/``: ``<stem>.npy`` (one row per image) and
    ``<stem>.json`` (the encoder, its fingerprint and what it is made of, and each row's image path
    and checksum). Made by ``make embeddings``. Chapter 09."""

    manifest: dict
    vectors: np.ndarray  # float32 unit rows

    @property
    def keys(self) -> list[str]:
        return [sha for _, sha in self.manifest["images"]]


@functools.lru_cache(maxsize=8)
def _load_shipped(stem: str, mtime: float) -> ShippedEmbeddings:
    manifest = json.loads((SHIPPED_DIR / f"{stem}.json").read_text())
    raw = np.load(SHIPPED_DIR / f"{stem}.npy", allow_pickle=False)
    if raw.shape != (len(manifest["images"]), manifest["dim"]) or not np.isfinite(raw).all():
        raise ValueError(
            f"data/embeddings/{stem}.npy does not match its manifest: rebuild it with `make "
            "embeddings`"
        )
    return ShippedEmbeddings(manifest, l2_normalize(raw))


def shipped_sets() -> list[ShippedEmbeddings]:
    """Every canonical embedding set shipped with the data."""
    out = []
    for manifest in sorted(SHIPPED_DIR.glob("*.json")):
        out.append(_load_shipped(manifest.stem, manifest.stat().st_mtime))
    return out


def shipped_vectors(fingerprint: str, dim: int, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The shipped vectors of those ``keys`` (image checksums) made by an encoder with this
    fingerprint; empty when no shipped set matches."""
    if not SHIPPED_DIR.is_dir():
        return {}
    wanted = set(keys)
    out: dict[str, np.ndarray] = {}
    for s in shipped_sets():
        if s.manifest["fingerprint"] == fingerprint and s.manifest["dim"] == dim:
            for row, key in enumerate(s.keys):
                if key in wanted:
                    out[key] = s.vectors[row]
    return out


def write_shipped(
    encoder,
    paths: Sequence[Path],
    root: Path,
    folder: Path = SHIPPED_DIR,
    dtype: str = "float16",
    progress: bool = True,
) -> Path:
    """Embed ``paths`` (computed here, never read from a cache) and write them as a canonical set
    named after the encoder: ``<name>.npy`` in ``dtype`` and ``<name>.json``. ``root`` makes the
    manifest's paths relative. ``make embeddings`` calls it. Chapter 09."""
    paths = [Path(p) for p in paths]
    vectors = encoder.encode_images(paths, progress=progress)
    manifest = {
        "encoder": encoder.name,
        "dim": int(encoder.dim),
        "fingerprint": fingerprint_of(encoder),
        "fingerprint_parts": getattr(encoder, "fingerprint_parts", {}),
        "dtype": dtype,
        "count": len(paths),
        "made_by": "make embeddings",
        "images": [[str(p.relative_to(root)), file_checksum(p)] for p in paths],
    }
    stem = safe_name(encoder.name)
    buf = io.BytesIO()
    np.save(buf, vectors.astype(dtype))
    atomic_write_bytes(folder / f"{stem}.npy", buf.getvalue())
    atomic_write_bytes(folder / f"{stem}.json", (json.dumps(manifest, indent=1) + "\n").encode())
    _load_shipped.cache_clear()
    return folder / f"{stem}.npy"


def catalog_image_paths(catalog) -> list[Path]:
    """Every image of the catalog, in a fixed order: each product's shop photos, then its customer
    photos."""
    shop = getattr(catalog, "shop_photo_paths", None)
    out: list[Path] = []
    for pid in catalog.ids:
        out += list(shop(pid)) if shop else [catalog.icon_path(pid)]
        out += catalog.view_paths(pid)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the shipped canonical embedding sets (``make embeddings``; arguments: encoder
    names)."""
    import argparse

    from .catalog import load_catalog
    from .encoders import CANONICAL_ENCODERS, load_encoder

    p = argparse.ArgumentParser(prog="make embeddings", description=main.__doc__)
    p.add_argument("encoders", nargs="*", default=list(CANONICAL_ENCODERS))
    args = p.parse_args(argv)
    catalog = load_catalog()
    paths = catalog_image_paths(catalog)
    for name in args.encoders:
        out = write_shipped(load_encoder(name), paths, catalog.root.parents[1])
        print(f"{name}: {len(paths)} images -> {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return 0


__all__ = [
    "l2_normalize",
    "file_checksum",
    "fingerprint_of",
    "encode_paths",
    "EmbeddingCache",
    "ShippedEmbeddings",
    "shipped_sets",
    "shipped_vectors",
    "write_shipped",
    "catalog_image_paths",
]
