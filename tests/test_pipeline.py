"""Offline indexing (chapter 12): embeddings come from the cache when an image is unchanged, Ray
Data embeds exactly what the single process does, and a bad Ray address fails fast."""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import pytest

from image_search import InvalidRequestError
from image_search.encoders import EmbeddingCache, file_checksum, load_encoder
from image_search.pipeline import embed_paths, index_catalog, ray_embed
from image_search.stores import BackendUnavailableError, open_store


def test_only_new_or_changed_images_are_embedded(catalog, tmp_path):
    from PIL import Image

    from image_search.encoders import ColourHistogramEncoder

    enc = ColourHistogramEncoder()
    paths, marker = (
        [],
        tuple(os.urandom(3)),
    )  # images no earlier test has put in the session's cache
    for pid in catalog.ids[:6]:
        paths.append(tmp_path / f"{pid}.png")
        img = Image.open(catalog.icon_path(pid)).convert("RGB")
        img.putpixel((1, 1), marker)
        img.save(paths[-1])
    x, computed = embed_paths(enc, paths[:4])
    x_again, again = embed_paths(enc, paths)
    assert again == 2 and np.array_equal(x_again[:4], x)  # the two new images only
    from PIL import Image

    img = Image.open(paths[0]).convert("RGB")
    img.putpixel((5, 5), (255, 0, 255))
    img.save(paths[0])  # a seller uploads a new photo: new checksum
    _, changed = embed_paths(enc, paths)
    assert changed == 1 and file_checksum(paths[0]) in EmbeddingCache.of(enc).get(
        [file_checksum(paths[0])]
    )
    with pytest.raises(InvalidRequestError, match="engine"):
        embed_paths(enc, paths, engine="spark")


def test_index_catalog_reports_what_it_did(catalog, tmp_path):
    from image_search.encoders import ColourHistogramEncoder

    enc = ColourHistogramEncoder()
    store = open_store("faiss", tmp_path / "c.index", enc.name, enc.dim, create=True)
    first = index_catalog(store, catalog, enc, progress=False)
    assert (first.products, first.added, first.updated, first.removed) == (618, 618, 0, 0)
    again = index_catalog(store, catalog, enc, progress=False)
    assert (again.added, again.updated, again.removed, again.embedded) == (0, 0, 0, 0)
    assert (tmp_path / "c.index").exists() and store.catalog_fingerprint
    ivf = open_store(
        "faiss", tmp_path / "ivf.index", enc.name, enc.dim, factory="IVF4096,Flat", create=True
    )
    with pytest.raises(InvalidRequestError, match="at least 4,096 training vectors, got 3,090"):
        index_catalog(ivf, catalog, enc, progress=False)


def test_a_ray_address_nobody_answers_is_refused_within_seconds(catalog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.perf_counter()
    with pytest.raises(
        BackendUnavailableError, match=f"no Ray cluster answers at 127.0.0.1:{port}"
    ):
        ray_embed(
            "colour-histogram", [catalog.icon_path(catalog.ids[0])], address=f"127.0.0.1:{port}"
        )
    assert time.perf_counter() - t < 10
    with pytest.raises(InvalidRequestError, match="host:port"):
        ray_embed("colour-histogram", [catalog.icon_path(catalog.ids[0])], address="not an address")


def test_ray_data_embeds_what_the_single_process_embeds(catalog):
    """One local Ray runtime (about 10 s to start on 2 idle cores): two actors, batches of 4."""
    paths = [catalog.icon_path(i) for i in catalog.ids[:12]]
    got = ray_embed("efficientnet-lite0", paths, batch_size=4, actors=2)
    want = load_encoder("efficientnet-lite0").encode_images(paths)
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-4


def test_the_incremental_indexer_reads_the_shipped_embeddings(catalog, monkeypatch):
    """A fresh machine indexes the book's catalog from data/embeddings: nothing is re-embedded."""
    enc = load_encoder("efficientnet-lite0")
    paths = [catalog.icon_path(i) for i in catalog.ids[:20]]
    monkeypatch.setattr(enc, "encode_images", lambda *a, **k: pytest.fail("re-embedded"))
    x, computed = embed_paths(enc, paths)
    assert computed == 0 and x.shape == (20, enc.dim)
