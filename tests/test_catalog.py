from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_search import load_catalog
from image_search.catalog import (DuplicatePair, duplicate_groups, hash_duplicates, near_duplicates,
                                  perceptual_hashes)


def test_catalog_is_complete(catalog):
    assert len(catalog) == 618
    assert len(set(catalog.ids)) == len(catalog)
    assert set(catalog.categories) == {"Bathroom", "Bedroom", "Kitchen", "Lights", "Living room", "Miscellaneous", "Office"}
    for pid in catalog.ids[::37]:
        assert catalog.icon_path(pid).is_file()
        views = catalog.view_paths(pid)
        assert len(views) >= 4 and all(v.is_file() for v in views)
        with Image.open(views[0]) as im:
            assert im.size == (128, 128) and im.mode == "RGB"


def test_splits_are_by_product(catalog):
    train, test = {p.id for p in catalog.split("train")}, {p.id for p in catalog.split("test")}
    assert train and test and not train & test
    assert train | test == set(catalog.ids)
    paths, ids = catalog.queries("test")
    assert len(paths) == 4 * len(test) and set(ids) == test
    assert all(Path(p).name.startswith(i + "_") for p, i in zip(paths, ids))
    with pytest.raises(ValueError):
        catalog.split("validation")


def test_product_fields(catalog):
    p = catalog[catalog.ids[0]]
    assert p.price > 0 and isinstance(p.in_stock, bool) and p.licence in ("CC-BY-3.0", "CC0-1.0")
    assert p.colour in p.text and p.category.lower() in p.text
    assert sum(q.in_stock for q in catalog.products) / len(catalog) == pytest.approx(0.85, abs=0.05)
    with pytest.raises(KeyError, match="unknown product"):
        catalog["no-such-product"]


def test_every_product_is_attributed(catalog):
    text = (catalog.root / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert all(f"| {pid} |" in text for pid in catalog.ids)


def test_missing_catalog_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="make catalog"):
        load_catalog(tmp_path)


# --------------------------------------------------------------------------- near-duplicates (chapter 04)
def test_near_duplicates_finds_only_close_pairs_sorted():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 16)).astype(np.float32)
    x = np.vstack([base, base[0] + 0.01 * rng.normal(size=16), base[2] * 3.0])  # e ≈ a; f = c scaled
    pairs = near_duplicates(["a", "b", "c", "d", "e", "f"], x, threshold=0.99)
    assert [(p.id_a, p.id_b) for p in pairs] == [("c", "f"), ("a", "e")]
    assert pairs[0].similarity == pytest.approx(1.0, abs=1e-5) and pairs[1].similarity < pairs[0].similarity
    assert all(isinstance(p, DuplicatePair) for p in pairs)
    assert near_duplicates(["a", "b", "c", "d", "e", "f"], x, threshold=1.01) == []


def test_near_duplicates_checks_shapes():
    with pytest.raises(ValueError, match="one embedding row per id"):
        near_duplicates(["a", "b"], np.ones((3, 4)))


def test_perceptual_hash_matches_a_resized_copy_not_another_image(tmp_path):
    rng = np.random.default_rng(1)
    img = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).resize((128, 128))
    other = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).resize((128, 128))
    paths = []
    for name, im in [("orig", img), ("small", img.resize((90, 90))), ("other", other)]:
        paths.append(tmp_path / f"{name}.png")
        im.save(paths[-1])
    hashes = perceptual_hashes(paths)
    assert hashes.shape == (3, 64) and hashes.dtype == bool
    pairs = hash_duplicates(["orig", "small", "other"], hashes, max_distance=4)
    assert [(p.id_a, p.id_b) for p in pairs] == [("orig", "small")]


def test_duplicate_groups_joins_chains():
    pairs = [DuplicatePair("a", "b", 0.99), DuplicatePair("b", "c", 0.98), DuplicatePair("x", "y", 0.97)]
    assert duplicate_groups(pairs) == [("a", "b", "c"), ("x", "y")]
    assert duplicate_groups([]) == []


def test_catalog_has_the_variants_chapter_04_reports(catalog):
    """The wall plugs of one series are near-identical in the default encoder's embedding."""
    from image_search import encode_paths, load_encoder

    ids = ["scopia-plug-typea-whites", "scopia-plug-typeb-whites", "blend-swap-cc-0-ammobox"]
    x = encode_paths(load_encoder("colour-histogram"), [catalog.icon_path(i) for i in ids], progress=False)
    hashes = perceptual_hashes([catalog.icon_path(i) for i in ids])
    assert ("scopia-plug-typea-whites", "scopia-plug-typeb-whites") in {(p.id_a, p.id_b) for p in hash_duplicates(ids, hashes, 10)}
    assert near_duplicates(ids, x, 0.9)[0].id_a == "scopia-plug-typea-whites"
