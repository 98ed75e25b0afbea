import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_search import load_catalog
from image_search.catalog import (
    UNSPECIFIED,
    DuplicatePair,
    duplicate_groups,
    hash_duplicates,
    load_catalog_csv,
    near_duplicates,
    perceptual_hashes,
)
from image_search.errors import CatalogError, ImageSearchError


def test_catalog_is_complete(catalog):
    assert len(catalog) == 618
    assert len(set(catalog.ids)) == len(catalog)
    assert set(catalog.categories) == {
        "Bathroom",
        "Bedroom",
        "Kitchen",
        "Lights",
        "Living room",
        "Miscellaneous",
        "Office",
    }
    for pid in catalog.ids[::37]:
        assert catalog.icon_path(pid).is_file()
        views = catalog.view_paths(pid)
        assert len(views) >= 4 and all(v.is_file() for v in views)
        with Image.open(views[0]) as im:
            assert im.size == (128, 128) and im.mode == "RGB"


def test_every_product_has_a_type(catalog):
    assert 25 <= len(catalog.types) <= 45 and list(catalog.types) == sorted(catalog.types)
    assert {p.type for p in catalog.products} == set(catalog.types)
    assert set(catalog.types).isdisjoint(catalog.categories)  # a kind of object, not a room
    expected = {"chair", "armchair", "sofa", "table", "bed", "lamp", "toilet", "sink", "plant"}
    assert expected <= set(catalog.types)
    sizes = catalog.frame["type"].value_counts()
    assert sizes.min() >= 2  # no single-product type


def test_shop_photos_icon_first_then_studio_renders(catalog):
    for pid in catalog.ids[::53]:
        photos = catalog.shop_photo_paths(pid)
        assert photos[0] == catalog.icon_path(pid)
        assert [p.name for p in photos[1:]] == [f"{pid}_{n}.jpg" for n in range(len(photos) - 1)]
        assert len(photos) >= 5 and all(p.parent.name == "shop" for p in photos[1:])
        with Image.open(photos[1]) as im:
            assert im.size == (128, 128) and im.mode == "RGB"
        assert not set(photos) & set(catalog.view_paths(pid))


def test_object_box_is_the_masks_box(catalog):
    for pid in catalog.ids[::41]:
        for view in catalog.view_paths(pid):
            mask = catalog.object_mask(view)
            assert mask.shape == (128, 128) and mask.dtype == bool and mask.any()
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            assert catalog.object_box(view) == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
            assert catalog.object_box(view) == catalog.object_box(view.relative_to(catalog.root))


def test_shop_photos_are_filled_by_the_object(catalog):
    """Studio shots are cropped to the object with a small margin: its box spans the frame."""
    for pid in catalog.ids[::29]:
        for photo in catalog.shop_photo_paths(pid)[1:]:
            left, top, right, bottom = catalog.object_box(photo)
            assert 0 <= left < right <= 128 and 0 <= top < bottom <= 128
            assert max(right - left, bottom - top) >= 100


def test_object_box_and_mask_errors(catalog):
    with pytest.raises(CatalogError, match="no object box"):
        catalog.object_box(catalog.icon_path(catalog.ids[0]))
    with pytest.raises(CatalogError, match="no object mask"):
        catalog.object_mask(catalog.shop_photo_paths(catalog.ids[0])[1])
    with pytest.raises(CatalogError, match="not in the catalog folder"):
        catalog.object_box("/tmp/elsewhere/views/x_0.jpg")


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
    assert list(catalog.frame.columns[:3]) == ["name", "category", "type"]
    assert len(catalog.frame) == len(catalog)
    with pytest.raises(KeyError, match="unknown product"):
        catalog["no-such-product"]


def test_every_product_is_attributed(catalog):
    text = (catalog.root / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert all(f"| {pid} |" in text for pid in catalog.ids)


def test_missing_catalog_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="make catalog"):
        load_catalog(tmp_path)


# --------------------------------------------------------------------------- fingerprint
def _small_copy(catalog, folder: Path, n: int = 3) -> Path:
    """The first ``n`` products of the book's catalog, with their shop photos, in ``folder``."""
    ids = catalog.ids[:n]
    for sub in ("icons", "shop"):
        (folder / sub).mkdir(parents=True)
    with open(catalog.root / "products.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    lines = [",".join(f'"{c}"' for c in r) for r in rows[: n + 1]]
    (folder / "products.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for pid in ids:
        for path in catalog.shop_photo_paths(pid):
            shutil.copy(path, folder / path.parent.name / path.name)
    return folder


def test_fingerprint_is_stable_and_sees_an_image_change(catalog, tmp_path):
    root = _small_copy(catalog, tmp_path / "cat")
    first = load_catalog(root).fingerprint()
    assert len(first) == 64 and load_catalog(root).fingerprint() == first
    moved = shutil.copytree(root, tmp_path / "elsewhere")  # the folder's place does not matter
    assert load_catalog(moved).fingerprint() == first
    shop = load_catalog(root).shop_photo_paths(catalog.ids[1])[2]
    data = bytearray(shop.read_bytes())
    data[-3] ^= 1  # one bit of one studio photo
    shop.write_bytes(bytes(data))
    assert load_catalog(root).fingerprint() != first


# --------------------------------------------------------------------------- validation on load
def _with_row(catalog, tmp_path, **changes) -> Path:
    """The first three rows of products.csv with ``changes`` applied to the second product."""
    with open(catalog.root / "products.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:3]
    rows[1].update(changes)
    with open(tmp_path / "products.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path


@pytest.mark.parametrize("price", ["nan", "inf", "-inf", "1e400", "-5", "abc", ""])
def test_bad_prices_are_refused_naming_line_and_column(catalog, tmp_path, price):
    with pytest.raises(CatalogError, match=r"products.csv line 3, column 'price'") as e:
        load_catalog(_with_row(catalog, tmp_path, price=price))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "text, value",
    [
        ("True", True),
        ("true", True),
        ("YES", True),
        ("1", True),
        ("False", False),
        ("false", False),
        ("no", False),
        ("0", False),
    ],
)
def test_in_stock_spellings(catalog, tmp_path, text, value):
    assert load_catalog(_with_row(catalog, tmp_path, in_stock=text)).products[1].in_stock is value


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"in_stock": "maybe"}, r"line 3, column 'in_stock': 'maybe' is not one of"),
        ({"category": " "}, r"line 3, column 'category': empty"),
        ({"type": ""}, r"line 3, column 'type': empty"),
        ({"width_cm": "wide"}, r"line 3, column 'width_cm': 'wide' is not a number"),
    ],
)
def test_bad_values_are_refused(catalog, tmp_path, changes, message):
    with pytest.raises(CatalogError, match=message):
        load_catalog(_with_row(catalog, tmp_path, **changes))


def test_duplicate_ids_are_refused(catalog, tmp_path):
    message = rf"line 3, column 'id': duplicate id '{catalog.ids[0]}' \(first on line 2\)"
    with pytest.raises(CatalogError, match=message):
        load_catalog(_with_row(catalog, tmp_path, id=catalog.ids[0]))


def test_an_old_catalog_without_types_is_refused(catalog, tmp_path):
    root = _with_row(catalog, tmp_path)
    with open(root / "products.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    col = rows[0].index("type")
    text = "\n".join(",".join(r[:col] + r[col + 1 :]) for r in rows)
    (root / "products.csv").write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError, match="missing required column.*'type'"):
        load_catalog(root)


def test_catalog_error_is_the_packages_error():
    assert issubclass(CatalogError, ImageSearchError) and issubclass(CatalogError, ValueError)


# --------------------------------------------------------------------------- a shop's own catalog
def _image(path: Path, colour=(200, 30, 30), fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path, format=fmt)
    return path


def _csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_user_catalog_by_file_names_and_images_column(tmp_path):
    img = tmp_path / "img"
    _image(img / "lamp-1.jpg")
    for name in ("sofa_2.webp", "sofa_10.png", "sofa.png", "sofa_1.jpg"):
        _image(img / name)
    _image(img / "more" / "cup-a.jpg")
    _image(img / "cup-b.png")
    _image(img / "unrelated.jpg")
    csv_path = _csv(
        tmp_path / "products.csv",
        "ID,Name,Images\nlamp-1,Desk lamp,\nsofa,Sofa,\ncup,Cup,more/cup-a.jpg; cup-b.png\n",
    )
    cat = load_catalog_csv(csv_path, img)
    assert cat.ids == ["lamp-1", "sofa", "cup"]
    names = {
        pid: [p.relative_to(img.resolve()).as_posix() for p in cat.shop_photo_paths(pid)]
        for pid in cat.ids
    }
    assert names == {
        "lamp-1": ["lamp-1.jpg"],
        "sofa": ["sofa.png", "sofa_1.jpg", "sofa_2.webp", "sofa_10.png"],
        "cup": ["more/cup-a.jpg", "cup-b.png"],
    }
    assert cat.icon_path("sofa").name == "sofa.png" and cat.view_paths("sofa") == []
    p = cat["cup"]
    assert (p.category, p.type, p.brand, p.in_stock) == (UNSPECIFIED, UNSPECIFIED, "", True)
    assert math.isnan(p.price)
    assert cat.types == (UNSPECIFIED,) and len(cat.fingerprint()) == 64


def test_user_catalog_optional_columns(tmp_path):
    _image(tmp_path / "a.jpg")
    _image(tmp_path / "b.jpg")
    csv_path = _csv(
        tmp_path / "c.csv",
        "\ufeffid,name,category,type,price,in_stock,brand\n"
        "a,Chair A,Dining,chair,12.50,Yes,Acme\n"
        "b,Lamp B,Lights,lamp,,0,\n",
    )
    cat = load_catalog_csv(csv_path, tmp_path)
    a, b = cat["a"], cat["b"]
    assert (a.category, a.type, a.price, a.in_stock) == ("Dining", "chair", 12.5, True)
    assert a.brand == "Acme"
    assert (b.type, b.in_stock, b.brand) == ("lamp", False, "") and math.isnan(b.price)
    assert cat.types == ("chair", "lamp") and cat.categories == ("Dining", "Lights")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"c.csv is empty"),
        ("id,name\n", r"c.csv has a header but no products"),
        (
            "id;name;price\na;A;3\n",
            r"c.csv line 1: the header is one column containing semicolons; the file must be "
            r"comma-sep",
        ),
        ("id\tname\na\tA\n", r"c.csv line 1: the header is one column containing tabs"),
        (
            "id,title\na,A\n",
            r"c.csv line 1: missing required column\(s\) 'name' \(the header has 'id', 'title'\)",
        ),
        (
            "id,name\na,A\nb,B\na,C\n",
            r"c.csv line 4, column 'id': duplicate id 'a' \(first on line 2\)",
        ),
        (
            "id,name,price\na,A,1\nb,B,cheap\n",
            r"c.csv line 3, column 'price': 'cheap' is not a number",
        ),
        (
            "id,name,price\na,A,-2\n",
            r"c.csv line 2, column 'price': '-2' is not a finite number ≥ 0",
        ),
        ("id,name,in_stock\na,A,perhaps\n", r"c.csv line 2, column 'in_stock'"),
        ("id,name,category\na,A,\n", r"c.csv line 2, column 'category': empty"),
        ("id,name\n,A\n", r"c.csv line 2, column 'id': empty"),
        ("id,name\na,A,extra\n", r"c.csv line 2: 3 fields, the header has 2"),
        (
            "id,name,images\na,A,../secret.jpg\n",
            r"c.csv line 2, column 'images': '../secret.jpg' is outside the images folder",
        ),
        (
            "id,name,images\na,A,/etc/passwd\n",
            r"c.csv line 2, column 'images': '/etc/passwd' is outside the images folder",
        ),
    ],
)
def test_user_catalog_errors_name_line_and_column(tmp_path, text, message):
    _image(tmp_path / "img" / "a.jpg")
    _image(tmp_path / "img" / "b.jpg")
    _image(tmp_path / "secret.jpg")
    with pytest.raises(CatalogError, match=message) as e:
        load_catalog_csv(_csv(tmp_path / "c.csv", text), tmp_path / "img")
    assert "\n" not in str(e.value)


def test_user_catalog_that_is_not_utf8(tmp_path):
    _image(tmp_path / "a.jpg")
    latin1 = _csv(tmp_path / "c.csv", "id,name\na,Caf\u00e9 chair\n", encoding="latin-1")
    message = r"c.csv line 2: not UTF-8 \(byte 0xe9 at offset 13\); save the file as UTF-8"
    with pytest.raises(CatalogError, match=message):
        load_catalog_csv(latin1, tmp_path)


def test_user_catalog_reports_every_missing_or_unreadable_image_at_once(tmp_path):
    img = tmp_path / "img"
    _image(img / "ok.jpg")
    (img / "broken.jpg").write_bytes(b"this is not a JPEG")
    _image(img / "listed.png")
    (img / "p7_1.png").write_bytes(b"")
    rows = "".join(f"p{i},Product {i},\n" for i in range(4))
    text = f"id,name,images\nok,Fine,\nbroken,Broken,\n{rows}q,Q,listed.png;gone.jpg\np7,P7,\n"
    with pytest.raises(CatalogError) as e:
        load_catalog_csv(_csv(tmp_path / "c.csv", text), img)
    message = str(e.value)
    assert message.startswith("c.csv: 7 missing or unreadable image(s)") and "\n" not in message
    for part in (
        "line 4: no image for id 'p0'",
        "line 5: no image for id 'p1'",
        "line 8: gone.jpg not found",
        "… and 2 more",
    ):
        assert part in message
    with pytest.raises(CatalogError, match="line 3: broken.jpg: not an image"):
        load_catalog_csv(_csv(tmp_path / "d.csv", "id,name\nok,Fine\nbroken,Broken\n"), img)
    with pytest.raises(CatalogError, match="images folder .* does not exist"):
        load_catalog_csv(tmp_path / "d.csv", tmp_path / "nowhere")


def test_user_catalog_refuses_a_symlink_out_of_the_images_folder(tmp_path):
    img = tmp_path / "img"
    _image(tmp_path / "outside.jpg")
    img.mkdir()
    (img / "a.jpg").symlink_to(tmp_path / "outside.jpg")
    message = r"c.csv line 2, image file: 'a.jpg' is outside the images folder"
    with pytest.raises(CatalogError, match=message):
        load_catalog_csv(_csv(tmp_path / "c.csv", "id,name\na,A\n"), img)


# --------------------------------------------------------------------- near-duplicates (chapter 04)
def test_near_duplicates_finds_only_close_pairs_sorted():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 16)).astype(np.float32)
    x = np.vstack(
        [base, base[0] + 0.01 * rng.normal(size=16), base[2] * 3.0]
    )  # e ≈ a; f = c scaled
    pairs = near_duplicates(["a", "b", "c", "d", "e", "f"], x, threshold=0.99)
    assert [(p.id_a, p.id_b) for p in pairs] == [("c", "f"), ("a", "e")]
    assert (
        pairs[0].similarity == pytest.approx(1.0, abs=1e-5)
        and pairs[1].similarity < pairs[0].similarity
    )
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
    pairs = [
        DuplicatePair("a", "b", 0.99),
        DuplicatePair("b", "c", 0.98),
        DuplicatePair("x", "y", 0.97),
    ]
    assert duplicate_groups(pairs) == [("a", "b", "c"), ("x", "y")]
    assert duplicate_groups([]) == []
    links = [("m", "z"), ("d", "e"), ("k", "m"), ("b", "k"), ("e", "f"), ("p", "q"), ("a", "b")]
    pairs = [DuplicatePair(a, b, 0.9) for a, b in links]
    assert duplicate_groups(pairs) == [("a", "b", "k", "m", "z"), ("d", "e", "f"), ("p", "q")]


def test_catalog_has_the_variants_chapter_04_reports(catalog):
    """The wall plugs of one series are near-identical in the default encoder's embedding."""
    from image_search import encode_paths, load_encoder

    ids = ["scopia-plug-typea-whites", "scopia-plug-typeb-whites", "blend-swap-cc-0-ammobox"]
    x = encode_paths(
        load_encoder("colour-histogram"), [catalog.icon_path(i) for i in ids], progress=False
    )
    hashes = perceptual_hashes([catalog.icon_path(i) for i in ids])
    assert ("scopia-plug-typea-whites", "scopia-plug-typeb-whites") in {
        (p.id_a, p.id_b) for p in hash_duplicates(ids, hashes, 10)
    }
    assert near_duplicates(ids, x, 0.9)[0].id_a == "scopia-plug-typea-whites"
