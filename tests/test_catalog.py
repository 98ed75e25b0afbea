from pathlib import Path

import pytest
from PIL import Image

from image_search import load_catalog


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
