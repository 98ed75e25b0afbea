"""Tests of image_search.features: exact retrieval, PCA/whitening, crops, concatenation."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import unit_vectors
from image_search.encoders import RawPixelEncoder
from image_search.features import (Crop, CropEncoder, exact_retrieval, exact_search, fit_pca, top_k,
                                   weighted_concat)


def test_top_k_and_exact_retrieval():
    x = unit_vectors(20, 8)
    assert top_k(x, x, 3)[:, 0].tolist() == list(range(20))
    report, rankings = exact_retrieval(x[:5], ["a", "b", "c", "d", "e"], x, list("abcdefghijklmnopqrst"), ks=(1, 3))
    assert report.recall[1] == 1.0 and len(rankings[0]) == 3
    with pytest.raises(ValueError):
        exact_retrieval(x[:5], ["a"], x, list("abcdefghijklmnopqrst"))


def test_exact_search_returns_results(catalog):
    x = unit_vectors(len(catalog), 8)
    res = exact_search(x[:2], x, catalog.ids, catalog, k=4)
    assert res[0].ids[0] == catalog.ids[0] and len(res[1]) == 4
    assert res[0].scores[0] == pytest.approx(1.0, abs=1e-5)


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
    assert Crop(0.5, 0.0, 1.0).box(100, 100) == (0, 50, 50, 100)   # clipped into the image
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
