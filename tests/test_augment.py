"""Tests of the image corruptions of chapter 10."""

import numpy as np
import pytest
from PIL import Image

from image_search.augment import KINDS, corrupt


@pytest.fixture(scope="module")
def icon(catalog):
    return Image.open(catalog.icon_path(catalog.ids[0])).convert("RGB")


@pytest.mark.parametrize("kind", KINDS)
def test_zero_strength_is_identity(icon, kind):
    assert np.array_equal(np.asarray(corrupt(icon, kind, 0.0)), np.asarray(icon))


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_same_size_and_changes_image(icon, kind):
    a, b = corrupt(icon, kind, 0.7, seed=3), corrupt(icon, kind, 0.7, seed=3)
    assert a.size == icon.size and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(icon))


@pytest.mark.parametrize("kind", KINDS)
def test_stronger_means_further_from_original(icon, kind):
    ref = np.asarray(icon, dtype=np.float32)
    dist = [
        np.abs(np.asarray(corrupt(icon, kind, s, seed=1), dtype=np.float32) - ref).mean()
        for s in (0.2, 1.0)
    ]
    assert dist[1] > dist[0]


def test_bad_arguments(icon):
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(icon, "fog", 0.5)
    with pytest.raises(ValueError, match="strength"):
        corrupt(icon, "blur", 1.5)


def test_occlusion_covers_about_the_asked_area():
    white = Image.new("RGB", (100, 100), (255, 255, 255))
    out = np.asarray(corrupt(white, "occlusion", 0.5, seed=0))
    covered = (out.min(axis=2) < 255).mean()
    assert 0.2 < covered < 0.4  # 0.6 * 0.5 = 0.3 of the area


def test_encode_corrupted_caches(tmp_path, monkeypatch, catalog):
    from image_search.augment import encode_corrupted
    from image_search.encoders import ColourHistogramEncoder

    class Counting(ColourHistogramEncoder):
        calls = 0

        def encode_images(self, images, batch_size=32, progress=False):
            Counting.calls += len(images)
            return super().encode_images(images, batch_size=batch_size, progress=progress)

    monkeypatch.setenv("IMAGE_SEARCH_CACHE", str(tmp_path))
    enc = Counting()
    paths = [catalog.icon_path(i) for i in catalog.ids[:3]]
    a = encode_corrupted(enc, paths, "blur", 0.5, seed=0)
    assert (
        a.shape == (3, enc.dim)
        and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
        and Counting.calls == 3
    )
    assert not np.allclose(a, ColourHistogramEncoder().encode_images(paths))  # really corrupted
    np.testing.assert_array_equal(encode_corrupted(enc, paths, "blur", 0.5, seed=0), a)
    assert Counting.calls == 3  # all three from the cache
    expected = ColourHistogramEncoder().encode_images(
        [corrupt(p, "blur", 0.5, seed=i) for i, p in enumerate(paths)]
    )
    np.testing.assert_allclose(a, expected, atol=1e-6)  # image i has seed + i
    encode_corrupted(enc, paths[:2], "blur", 0.5, seed=10)
    encode_corrupted(enc, paths, "blur", 0.7, seed=0)
    assert Counting.calls == 3 + 2 + 3  # new seeds, new strength: new keys
