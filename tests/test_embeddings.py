"""The embedding cache (best effort, self-checking) and the shipped canonical embeddings."""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile

import numpy as np
import pytest

from image_search import embeddings as E
from image_search import load_encoder


@pytest.fixture
def enc():
    return load_encoder("colour-histogram")


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("IMAGE_SEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(E, "_MEMORY", {})
    monkeypatch.setattr(E, "_WARNED", set())
    return tmp_path / "cache"


@pytest.fixture
def paths(catalog):
    return [catalog.icon_path(i) for i in catalog.ids[:4]]


def _counting(enc, monkeypatch):
    calls = []
    real = enc.encode_images
    monkeypatch.setattr(
        enc, "encode_images", lambda images, **k: calls.append(len(images)) or real(images, **k)
    )
    return calls


def _rewrite(path, **changes):
    """Rewrite members of a cache file (keys, vectors, digests) as a damaged or forged file
    would."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    np.savez(path, **arrays)


def test_a_cached_entry_is_read_back_not_recomputed(enc, cache, paths, monkeypatch):
    first = E.encode_paths(enc, paths, progress=False)
    calls = _counting(enc, monkeypatch)
    assert np.array_equal(E.encode_paths(enc, paths, progress=False), first)
    assert calls == []  # a cache that never hit would recompute here


def _damage_cases(path: "os.PathLike", vectors: np.ndarray) -> dict:
    raw = path.read_bytes()
    flip = bytearray(raw)
    flip[len(raw) // 2] ^= 0xFF
    return {
        "truncated": lambda: path.write_bytes(raw[: len(raw) // 2]),
        "bit flip": lambda: path.write_bytes(bytes(flip)),
        "huge declared shape": lambda: _forge_shape(path, (10**9, vectors.shape[1])),
        "2-D keys": lambda: _rewrite(path, keys=np.array([["a", "b"]] * len(vectors))),
        "wrong width": lambda: _rewrite(path, vectors=np.zeros((len(vectors), 3), np.float32)),
        "NaN vectors": lambda: _rewrite(path, vectors=np.full_like(vectors, np.nan)),
        "shuffled vectors": lambda: _rewrite(path, vectors=vectors[::-1].copy()),
        "a FIFO": lambda: (path.unlink(), os.mkfifo(path)),
    }


def _forge_shape(path, shape):
    """Replace the vectors member's npy header so that it declares ``shape`` (95 GiB)."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    members["vectors.npy"] = header.getvalue() + b"\0" * 64
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for n, data in members.items():
            z.writestr(n, data)


@pytest.mark.parametrize(
    "damage",
    [
        "truncated",
        "bit flip",
        "huge declared shape",
        "2-D keys",
        "wrong width",
        "NaN vectors",
        "shuffled vectors",
        "a FIFO",
    ],
)
def test_a_damaged_cache_is_discarded_and_recomputed_with_one_warning(
    enc, cache, paths, damage, monkeypatch, caplog
):
    truth = E.encode_paths(enc, paths, progress=False)
    path = E.EmbeddingCache.of(enc).path
    _damage_cases(path, truth)[damage]()
    calls = _counting(enc, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="image_search.embeddings"):
        again = E.encode_paths(enc, paths, progress=False)
        E.encode_paths(enc, paths, progress=False)
    np.testing.assert_allclose(again, truth, atol=1e-6)
    assert calls == [len(paths)]  # recomputed once, then cached again
    assert len([r for r in caplog.records if "is damaged" in r.getMessage()]) == 1


def test_a_read_only_cache_folder_is_kept_in_memory(enc, cache, paths, monkeypatch, caplog):
    if os.geteuid() == 0:  # root ignores permissions: simulate the failure instead

        def read_only(*a, **k):
            raise PermissionError(13, "Read-only file system")

        monkeypatch.setattr(E, "atomic_write", read_only)
    else:
        (cache / "embeddings").mkdir(parents=True)
        (cache / "embeddings").chmod(0o555)
    calls = _counting(enc, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="image_search.embeddings"):
        first = E.encode_paths(enc, paths, progress=False)
        again = E.encode_paths(enc, paths, progress=False)
    assert np.array_equal(first, again) and calls == [len(paths)]  # no recomputation on the retry
    assert (
        len([r for r in caplog.records if "cannot write the embedding cache" in r.getMessage()])
        == 1
    )


def test_a_full_disk_leaves_no_temporary_files(enc, cache, paths, monkeypatch):
    real_savez = np.savez

    def full(f, **arrays):
        real_savez(f, **arrays)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    E.encode_paths(enc, paths, progress=False)
    folder = cache / "embeddings"
    assert not folder.exists() or not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_the_cache_key_includes_the_fingerprint(enc, cache, paths, monkeypatch):
    E.encode_paths(enc, paths, progress=False)
    monkeypatch.setattr(type(enc), "fingerprint", property(lambda self: "another model"))
    calls = _counting(enc, monkeypatch)
    E.encode_paths(enc, paths, progress=False)
    assert calls == [len(paths)]  # a changed model never reads the old vectors


def test_shipped_vectors_are_used_when_the_fingerprint_matches(
    enc, cache, paths, monkeypatch, tmp_path, catalog
):
    folder = tmp_path / "shipped"
    monkeypatch.setattr(E, "SHIPPED_DIR", folder)
    E.write_shipped(enc, paths[:3], catalog.root.parents[1], folder=folder, progress=False)
    manifest = json.loads((folder / "colour-histogram.json").read_text())
    assert manifest["fingerprint"] == enc.fingerprint and manifest["count"] == 3
    shipped = E.shipped_sets()[0].vectors
    calls = _counting(enc, monkeypatch)
    out = E.encode_paths(enc, paths, progress=False)
    assert calls == [1]  # only the image that is not shipped
    np.testing.assert_allclose(out[:3], shipped, atol=0)


def test_the_default_encoder_reads_the_shipped_catalog_embeddings(catalog):
    """The canonical set in data/embeddings is what a fresh machine starts from: its fingerprint is
    the default encoder's and every image it covers still has the committed bytes."""
    sets = [s for s in E.shipped_sets() if s.manifest["encoder"] == "efficientnet-lite0"]
    assert sets, "data/embeddings has no efficientnet-lite0 set: run `make embeddings`"
    manifest = sets[0].manifest
    assert manifest["fingerprint"] == load_encoder().fingerprint, (
        "the shipped embeddings were made by another model, preprocessing, backend or library "
        "version: run `make embeddings`"
    )
    root = catalog.root.parents[1]
    paths = E.catalog_image_paths(catalog)
    assert [p for p, _ in manifest["images"]] == [str(p.relative_to(root)) for p in paths]
    assert all(E.file_checksum(root / p) == sha for p, sha in manifest["images"])
