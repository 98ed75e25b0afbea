"""Index files: one uncompressed zip holding a manifest, the product ids, numpy arrays (labels,
attributes, vector signatures) and the serialised FAISS index. Saved atomically; loaded only after
every declared size has been checked against the bytes actually there, with FAISS's own
deserialisation limits set to the blob's length, and verified against the FAISS index's own ids and
vectors. Chapter 08.

The checksum and the signatures detect *damage* (a truncated copy, a flipped bit, a bug that swapped
two labels), not *tampering*: whoever can write the file can recompute them. Never load an index
file from an untrusted source.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import threading
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import faiss
import numpy as np

from ..errors import IndexMismatchError
from ..paths import atomic_write, read_regular

FORMAT_VERSION = 2
MAX_INDEX_BYTES = 16 * 2**30  # refuse larger files rather than exhaust memory
ARRAYS = (
    "photos",
    "labels",
    "next_label",
    "tombstones",
    "category",
    "type",
    "price",
    "in_stock",
    "known",
    "digest",
    "signatures",
)
MEMBERS = ("manifest.json", "ids.json", *(f"{a}.npy" for a in ARRAYS), "index.faiss")


@dataclass(frozen=True)
class IndexManifest:
    """What an index file holds and was built with; checked on load."""

    format_version: int
    encoder: str
    dim: int
    metric: str
    factory: str
    count: int  # products
    vectors: int  # vectors (a product has one per photo)
    faiss_version: str
    catalog_fingerprint: str  # of the catalog it indexes ("" when not built from one)
    checksum: str  # SHA-256 of every other member: detects damage, not tampering


@dataclass(frozen=True)
class IndexFile:
    """The parts of an index file, checked and decoded (the FAISS blob not yet deserialised)."""

    manifest: IndexManifest
    ids: list[str]
    arrays: dict[str, np.ndarray]
    blob: memoryview


def checksum(members: dict[str, bytes | memoryview]) -> str:
    """SHA-256 over every member but the manifest, in a fixed order, with names and lengths."""
    h = hashlib.sha256()
    for name in MEMBERS[1:]:
        data = members[name]
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def pack(
    header: dict, ids: list[str], arrays: dict[str, np.ndarray], blob: bytes
) -> tuple[IndexManifest, dict[str, bytes]]:
    """The members of an index file and its manifest (built once); ``header`` holds the manifest's
    fields but the format version and the checksum."""
    members: dict[str, bytes] = {"ids.json": json.dumps(ids).encode()}
    for name in ARRAYS:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
        members[f"{name}.npy"] = buf.getvalue()
    members["index.faiss"] = blob
    manifest = IndexManifest(format_version=FORMAT_VERSION, checksum=checksum(members), **header)
    members["manifest.json"] = json.dumps(asdict(manifest), indent=1).encode()
    return manifest, members


def save(path: str | Path, members: dict[str, bytes]) -> Path:
    """Write the members of an index file as one uncompressed zip, atomically
    (:func:`image_search.paths.atomic_write`: a device or FIFO target is refused, the old file
    survives any failure). Returns the path written."""

    def write(f) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
            for name in MEMBERS:
                z.writestr(name, members[name])

    return atomic_write(path, write)


def load(path: str | Path, max_bytes: int = MAX_INDEX_BYTES) -> IndexFile:
    """Read and check an index file: a regular file of at most ``max_bytes``, an uncompressed zip
    whose members fit in it, a known format, the checksum, arrays whose headers match their bytes.
    Raises :class:`IndexMismatchError` (or ``FileNotFoundError``) naming the problem."""
    data = read_regular(path, max_bytes)
    members = _members(data, path)
    try:
        raw = json.loads(bytes(members["manifest.json"]))
        names = {f.name for f in fields(IndexManifest)}
        if not isinstance(raw, dict) or set(raw) != names:
            raise ValueError(f"manifest fields {sorted(raw) if isinstance(raw, dict) else raw!r}")
        manifest = IndexManifest(**raw)
    except (ValueError, TypeError) as e:
        raise IndexMismatchError(
            f"{path} is not a readable index file (bad manifest: {e})"
        ) from None
    if manifest.format_version != FORMAT_VERSION:
        raise IndexMismatchError(
            f"{path}: format version {manifest.format_version}, expected {FORMAT_VERSION}: "
            "rebuild the index"
        )
    if checksum(members) != manifest.checksum:
        raise IndexMismatchError(f"{path} is corrupted: checksum mismatch")
    try:
        ids = json.loads(bytes(members["ids.json"]))
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise ValueError("ids.json is not a list of product ids")
        arrays = {name: _npy(members[f"{name}.npy"], name) for name in ARRAYS}
    except ValueError as e:
        raise IndexMismatchError(f"{path} is not a readable index file ({e})") from None
    return IndexFile(manifest, ids, arrays, members["index.faiss"])


def _members(data: bytes, path) -> dict[str, memoryview]:
    """The zip's members as views of ``data`` (no copy), after checking that each is stored
    uncompressed and lies inside the file: nothing is allocated from a size the file declares."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:  # reads only the central directory
            infos = z.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise IndexMismatchError(f"{path} is not a readable index file ({e})") from None
    names = [i.filename for i in infos]
    if sorted(names) != sorted(MEMBERS):
        raise IndexMismatchError(
            f"{path} is not an index file of format {FORMAT_VERSION}: members {names[:12]}"
        )
    out, view = {}, memoryview(data)
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise IndexMismatchError(
                f"{path}: compressed member {info.filename} (never written by save; a zip bomb?)"
            )
        off = info.header_offset
        if off + 30 > len(data) or data[off : off + 4] != b"PK\x03\x04":
            raise IndexMismatchError(f"{path}: member {info.filename} points outside the file")
        name_len, extra_len = struct.unpack_from("<HH", data, off + 26)
        start = off + 30 + name_len + extra_len
        if start + info.file_size > len(data):
            raise IndexMismatchError(
                f"{path}: member {info.filename} declares {info.file_size:,} bytes, "
                f"more than the file holds"
            )
        out[info.filename] = view[start : start + info.file_size]
    return out


def _npy(buf: memoryview, name: str) -> np.ndarray:
    """A 1-D numeric or string ``.npy`` array whose header must match its length (no pickle)."""
    f = io.BytesIO(buf)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"{name}.npy has npy version {version}")
    if len(shape) != 1 or dtype.kind not in "iufbU" or dtype.hasobject:
        raise ValueError(f"{name}.npy holds {dtype} of shape {shape}, expected a 1-D array")
    body = buf[f.tell() :]
    if shape[0] * dtype.itemsize != len(body):
        raise ValueError(
            f"{name}.npy declares {shape[0]:,} x {dtype.itemsize} bytes but holds {len(body):,}"
        )
    return np.frombuffer(body, dtype=dtype).copy()


_LIMITS = threading.Lock()


def deserialize(blob: memoryview, dim: int, vectors_stored: int, path) -> faiss.Index:
    """The FAISS index in ``blob``, after checking its header (dimension and vector count as the
    manifest says, at least one byte per vector in the blob), with FAISS's per-array and per-loop
    deserialisation limits set to the blob's length: a crafted size fails at once instead of
    allocating gigabytes (a 20 KB crafted IVF file used to take 55 s and 13.6 GB)."""
    if len(blob) < 20:
        raise IndexMismatchError(f"{path}: the FAISS index is {len(blob)} bytes, too short")
    fourcc = bytes(blob[:4])
    d, ntotal = struct.unpack_from("<iq", blob, 4)
    if d != dim or ntotal != vectors_stored:
        raise IndexMismatchError(
            f"{path} is inconsistent: the FAISS header ({fourcc!r}) declares {ntotal:,} vectors "
            f"of dimension {d}, the manifest {vectors_stored:,} of dimension {dim}"
        )
    if ntotal > len(blob):
        raise IndexMismatchError(
            f"{path}: the FAISS header declares {ntotal:,} vectors in {len(blob):,} bytes"
        )
    with _LIMITS:  # process-wide FAISS settings: set, read, restore under one lock
        before = (
            faiss.get_deserialization_vector_byte_limit(),
            faiss.get_deserialization_loop_limit(),
        )
        faiss.set_deserialization_vector_byte_limit(len(blob) + 64)
        faiss.set_deserialization_loop_limit(len(blob) + 64)
        try:
            return faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        except (RuntimeError, MemoryError) as e:
            raise IndexMismatchError(
                f"{path} is not a readable index file ({_last_line(e)})"
            ) from None
        finally:
            faiss.set_deserialization_vector_byte_limit(before[0])
            faiss.set_deserialization_loop_limit(before[1])


def stored_labels(index: faiss.Index) -> np.ndarray:
    """Every label the FAISS index holds, read from the index itself: the id map of an
    ``IndexIDMap2``, or the ids in an IVF index's inverted lists."""
    if isinstance(index, faiss.IndexIDMap2):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        raise IndexMismatchError(
            f"unexpected FAISS index type {type(faiss.downcast_index(index)).__name__}"
        )
    lists = ivf.invlists
    out = []
    for lst in range(ivf.nlist):
        n = lists.list_size(lst)
        if n:
            ptr = lists.get_ids(lst)
            out.append(faiss.rev_swig_ptr(ptr, n).astype(np.int64))
            lists.release_ids(lst, ptr)
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def signatures(index: faiss.Index, labels: np.ndarray, batch: int = 65_536) -> np.ndarray:
    """One number per vector that binds a label to the vector FAISS stores under it: the stored
    (decoded) vector projected on a fixed random direction. Swapping two products' labels in the
    id map changes their signatures, so a load catches it (unless the two vectors are identical,
    when the swap changes no result)."""
    direction = np.random.default_rng(20_260_608).standard_normal(index.d)
    out = np.empty(len(labels), np.float64)
    for s in range(0, len(labels), batch):
        x = index.reconstruct_batch(np.ascontiguousarray(labels[s : s + batch], dtype=np.int64))
        out[s : s + batch] = x.astype(np.float64) @ direction
    return out


def _last_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[-1][:200] if text else type(e).__name__


__all__ = [
    "FORMAT_VERSION",
    "IndexManifest",
    "IndexFile",
    "pack",
    "save",
    "load",
    "deserialize",
    "stored_labels",
    "signatures",
    "checksum",
]
