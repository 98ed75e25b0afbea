"""Tests of image_search.features: exact retrieval, PCA/whitening, crops, concatenation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from image_search.encoders import RawPixelEncoder, l2_normalize
from image_search.features import (
    Crop,
    CropEncoder,
    best_photo_scores,
    exact_retrieval,
    fit_pca,
    multi_crop_embeddings,
    top_k,
    weighted_concat,
)

from conftest import unit_vectors


def test_top_k_and_exact_retrieval():
    x = unit_vectors(20, 8)
    assert top_k(x, x, 3)[:, 0].tolist() == list(range(20))
    report, rankings = exact_retrieval(
        x[:5], ["a", "b", "c", "d", "e"], x, list("abcdefghijklmnopqrst"), ks=(1, 3)
    )
    assert report.recall[1] == 1.0 and len(rankings[0]) == 3
    with pytest.raises(ValueError):
        exact_retrieval(x[:5], ["a"], x, list("abcdefghijklmnopqrst"))
    types = {c: "vowel" if c in "aeiou" else "consonant" for c in "abcdefghijklmnopqrst"}
    typed, _ = exact_retrieval(
        x[:5], list("abcde"), x, list("abcdefghijklmnopqrst"), ks=(1,), type_of=types
    )
    assert typed.type_precision[1] == 1.0 and typed.ndcg is not None


def test_pca_keeps_variance_order_and_whitening_equalises():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) * np.array([10, 5, 2, 1, 0.5, 0.1])
    pca = fit_pca(x, 3)
    assert pca.dim == 3 and np.all(np.diff(pca.variances) <= 0)
    assert pca.variances[0] == pytest.approx(100, rel=0.2)
    out = pca.apply(x)
    assert out.shape == (500, 3) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    white = fit_pca(x, 3, whiten=True, eps=0.0)
    z = (x - white.mean) @ white.components.T / np.sqrt(white.variances)
    assert np.allclose(z.std(axis=0, ddof=1), 1, atol=1e-3)
    np.testing.assert_array_equal(fit_pca(x, 3).components, pca.components)  # deterministic signs
    with pytest.raises(ValueError):
        fit_pca(x, 7)


def test_crop_boxes_stay_inside_and_crop_encoder_differs():
    assert Crop(1.0).box(100, 80) == (0, 0, 100, 80)
    assert Crop(0.5).box(100, 100) == (25, 25, 75, 75)
    assert Crop(0.5, 0.0, 1.0).box(100, 100) == (0, 50, 50, 100)  # clipped into the image
    with pytest.raises(ValueError):
        Crop(0)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    enc = CropEncoder(RawPixelEncoder(), Crop(0.5))
    assert enc.name != RawPixelEncoder().name and enc.dim == RawPixelEncoder().dim
    assert not np.allclose(enc.encode_images([img]), RawPixelEncoder().encode_images([img]))


def test_weighted_concat_is_weighted_cosine():
    a, b = unit_vectors(5, 4, seed=1), unit_vectors(5, 3, seed=2)
    out = weighted_concat([(a, 1.0), (b, 0.5)])
    expected = ((a[0] @ a[1]) * 1.0 + (b[0] @ b[1]) * 0.25) / 1.25
    assert out[0] @ out[1] == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError):
        weighted_concat([(a, 1.0), (b[:2], 1.0)])


def test_fit_pca_agrees_with_scikit_learn_up_to_sign():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12)) + rng.normal(size=12)
    ours = fit_pca(x, 5)
    theirs = PCA(5, svd_solver="full").fit(x)
    signs = np.sign(np.sum(ours.components * theirs.components_, axis=1))
    np.testing.assert_allclose(ours.components, signs[:, None] * theirs.components_, atol=1e-5)
    np.testing.assert_allclose(ours.variances, theirs.explained_variance_, rtol=1e-5)
    np.testing.assert_allclose(ours.mean, theirs.mean_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.apply(x), l2_normalize(theirs.transform(x) * signs), atol=1e-5)
    white = PCA(5, svd_solver="full", whiten=True).fit(x)
    np.testing.assert_allclose(
        fit_pca(x, 5, whiten=True, eps=0.0).apply(x),
        l2_normalize(white.transform(x) * signs),
        atol=1e-4,
    )


class CountingEncoder(RawPixelEncoder):
    """Raw pixels that count the images they embed (to see the cache work)."""

    def __init__(self, name):
        super().__init__()
        self.name, self.calls = name, 0

    def encode_images(self, images, batch_size=32, progress=False):
        self.calls += len(images)
        return super().encode_images(images, batch_size=batch_size, progress=progress)


def test_multi_crop_embeddings_is_the_weighted_mean_of_crops_and_cached(
    catalog, tmp_path, monkeypatch
):
    monkeypatch.setenv("IMAGE_SEARCH_CACHE", str(tmp_path))
    paths = [catalog.view_paths(i)[0] for i in catalog.ids[:4]]
    enc = CountingEncoder("raw-pixels-counting")
    crops = [Crop(1.0), Crop(0.6, 0.4, 0.6)]
    out = multi_crop_embeddings(enc, paths, crops, weights=[1.0, 3.0])
    full = RawPixelEncoder().encode_images(paths)
    cropped = RawPixelEncoder().encode_images(
        [crops[1](Image.open(p).convert("RGB")) for p in paths]
    )
    np.testing.assert_allclose(out, l2_normalize(full + 3 * cropped), atol=1e-5)
    assert out.shape == (4, enc.dim) and enc.calls == 8
    np.testing.assert_allclose(
        multi_crop_embeddings(enc, paths, crops, weights=[1.0, 3.0]), out, atol=1e-6
    )
    assert enc.calls == 8  # both crops came from the on-disk cache
    np.testing.assert_allclose(multi_crop_embeddings(enc, paths, crops[:1]), full, atol=1e-5)
    with pytest.raises(ValueError, match="at least one crop"):
        multi_crop_embeddings(enc, paths, [])
    with pytest.raises(ValueError, match="weights"):
        multi_crop_embeddings(enc, paths, crops, weights=[1.0])


def test_a_product_with_several_photos_scores_its_best_one():
    index = np.eye(4, dtype=np.float32)  # photos 0, 1 of product a; 2 of product b; 3 of product c
    queries = np.array([[0, 1, 0, 0], [0.9, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float32)
    scores = best_photo_scores(queries, index, [0, 0, 1, 2])
    assert scores.shape == (3, 3) and scores[1].tolist() == pytest.approx([0.9, 1.0, 0.0])
    report, rankings = exact_retrieval(queries, list("aac"), index, list("aabc"), ks=(1, 2))
    assert (report.recall[1], report.recall[2]) == (2 / 3, 1.0)
    assert rankings[1] == ["b", "a"]  # each product once, by its best photo
    with pytest.raises(ValueError, match="owners"):
        best_photo_scores(queries, index, [0, 1])
