"""The pure functions of ``data/build_catalog.py`` (imported without running the renderer)."""

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bc():
    path = ROOT / "data" / "build_catalog.py"
    spec = importlib.util.spec_from_file_location("build_catalog", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_catalog", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name, tags, expected",
    [
        ("Chair", "Seat", "chair"),
        ("Armchair ottoman", "Seat", "armchair"),
        ("Corner sofa", "Couch;Seat", "sofa"),
        ("Desk lamp", "", "lamp"),
        ("Desk", "Table", "desk"),
        ("Coffee table", "", "table"),
        ("Bedside table", "Nightstand", "cabinet"),
        ("Bed", "", "bed"),
        ("Futon couch", "Sofa;Seat", "sofa"),
        ("Table tennis bat", "Game;Sport", "sports equipment"),
        ("Table tennis", "Game;Sport", "toy or game"),
        ("Table fan", "Appliance", "small appliance"),
        ("Tablet", "Electronics", "electronics"),
        ("Toilet paper dispenser", "", "bathroom accessory"),
        ("Toilets unit", "", "toilet"),
        ("Towel rack", "", "rack or hanger"),
        ("Paper towel holder", "", "kitchenware"),
        ("Sink cabinet", "Cupboard", "sink"),
        ("Washbasin", "", "sink"),
        ("Shower curtain", "", "curtain"),
        ("Letter tray", "", "stationery"),
        ("Sushi tray", "", "tableware"),
        ("Cup cake", "Food", "food"),
        ("Coffee cup", "Drink", "cup or glass"),
        ("Glass table", "Dining", "table"),
        ("Sunglasses", "", "accessory"),
        ("Open cardboard box", "", "container"),
        ("Piano bench", "Music", "stool"),
        ("Grand piano", "Music", "musical instrument"),
        ("Dustbin", "Trash", "container"),  # by its tag: no rule knows the name
    ],
)
def test_product_type_rules(bc, name, tags, expected):
    assert bc.product_type("some-id", name, tags) == expected


def test_product_type_overrides_and_unknowns(bc):
    assert bc.product_type("scopia-chaussette", "Socket", "SCPTS;Clothes") == "clothing"
    assert bc.product_type("other-id", "Socket", "SCPTS;Clothes") == "socket"
    with pytest.raises(ValueError, match="no product type for 'x'.*add a rule or an override"):
        bc.product_type("x", "Thingamajig", "Gizmo")


def test_every_override_and_rule_names_a_known_type(bc):
    rule_types = {t for t, _ in bc.TYPE_RULES}
    assert set(bc.TYPE_OVERRIDES.values()) <= rule_types
    assert 25 <= len(rule_types) <= 45


def test_committed_types_follow_the_rules(bc):
    """products.csv was written by these rules: a rule change without `make catalog` fails here."""
    with open(ROOT / "data" / "catalog" / "products.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    wrong = [
        (r["id"], r["type"])
        for r in rows
        if bc.product_type(r["id"], r["name"], r["tags"]) != r["type"]
    ]
    assert wrong == []


def test_box_from_mask_is_right_bottom_exclusive(bc):
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    mask[7, 10] = True
    assert bc.box_from_mask(mask) == (3, 2, 11, 8)
    assert bc.box_from_mask(np.ones((4, 4), bool)) == (0, 0, 4, 4)
    with pytest.raises(ValueError, match="empty mask"):
        bc.box_from_mask(np.zeros((4, 4), bool))


def test_downsample_mask_keeps_pixels_at_least_half_covered(bc):
    covered = np.zeros((4, 4), bool)
    covered[0, 0:2] = True  # top-left block: 2 of 4
    covered[0, 2] = True  # top-right block: 1 of 4
    covered[2:4, 2:4] = True  # bottom-right block: 4 of 4
    assert bc.downsample_mask(covered, 2).tolist() == [[True, False], [False, True]]


def test_square_crop_centres_the_box_with_a_margin(bc):
    assert bc.square_crop((10, 20, 30, 60), 0.1) == (-4, 16, 44, 64)  # side 40 * 1.2 = 48
    left, top, right, bottom = bc.square_crop((0, 0, 7, 3), 0.0)
    assert right - left == bottom - top == 7


@pytest.mark.parametrize(
    "rgb, name",
    [
        ((0.05, 0.05, 0.05), "black"),
        ((0.95, 0.95, 0.95), "white"),
        ((0.5, 0.5, 0.52), "grey"),
        ((0.9, 0.1, 0.1), "red"),
        ((0.5, 0.25, 0.1), "brown"),
        ((0.1, 0.7, 0.2), "green"),
        ((0.1, 0.2, 0.9), "blue"),
        ((0.9, 0.85, 0.6), "beige"),
    ],
)
def test_colour_names(bc, rgb, name):
    assert bc._colour_name(*rgb) == name


def test_dominant_colour_ignores_transparent_and_white_pixels(bc):
    icon = np.zeros((20, 20, 4), np.uint8)
    icon[:, :10] = (20, 40, 220, 255)  # blue object
    icon[:, 10:14] = (255, 255, 255, 255)  # white background pixels
    icon[:, 14:] = (230, 20, 20, 0)  # transparent: not the product
    name, hex_ = bc.dominant_colour(Image.fromarray(icon, "RGBA"))
    assert (name, hex_) == ("blue", "#1428dc")


def test_parse_properties_handles_continuations_and_escapes(bc):
    text = "# comment\nname#1=Caf\\u00e9 \\\n   chair\ntags#1 : Seat, Wood\nempty#1=\n"
    expected = {"name#1": "Café chair", "tags#1": "Seat, Wood", "empty#1": ""}
    assert bc.parse_properties(text) == expected


def _items(bc, n_per_category):
    return [
        bc.Item(
            id=f"{c[:3].lower()}-{i}",
            name="x",
            category=c,
            tags="",
            width=1,
            depth=1,
            height=1,
            creator="",
            licence="CC0-1.0",
            source="s",
            icon="i",
            model="m",
            rotation=None,
        )
        for c in bc.SHOP_CATEGORIES
        for i in range(n_per_category)
    ]


def test_splits_are_seeded_stratified_and_disjoint(bc):
    items = _items(bc, 10)
    split = bc.assign_splits(items)
    assert split == bc.assign_splits(list(reversed(items)))
    for c in bc.SHOP_CATEGORIES:
        assert sum(split[i.id] == "test" for i in items if i.category == c) == 3
    assert set(split.values()) == {"train", "test"}


def test_business_fields_are_seeded_by_id(bc):
    a, b = _items(bc, 2)[:2]
    assert bc.business_fields(a) == bc.business_fields(a) != bc.business_fields(b)
    assert bc.business_fields(a)["price"] > 0


def test_backgrounds_are_deterministic(bc):
    one = [np.asarray(bc.background(np.random.default_rng(s), 32)) for s in range(8)]
    two = [np.asarray(bc.background(np.random.default_rng(s), 32)) for s in range(8)]
    assert all(x.shape == (32, 32, 4) and np.array_equal(x, y) for x, y in zip(one, two))


# --------------------------------------------------------------------------- the real-photo set
@pytest.fixture(scope="module")
def brp():
    path = ROOT / "data" / "build_real_photos.py"
    spec = importlib.util.spec_from_file_location("build_real_photos", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rcc(files: dict[str, bytes], compress: set[str]) -> bytes:
    """A version-2 Qt resource file holding ``files`` (paths one folder deep), built by hand."""
    import struct
    import zlib

    folders = sorted({p.split("/")[0] for p in files})
    names, name_at = b"", {}
    for n in ["", *folders, *(p.split("/")[1] for p in files)]:
        if n not in name_at:
            name_at[n] = len(names)
            names += struct.pack(">HI", len(n), 0) + n.encode("utf-16-be")
    payload, data_at = b"", {}
    for p, blob in files.items():
        body = struct.pack(">I", len(blob)) + zlib.compress(blob) if p in compress else blob
        data_at[p] = len(payload)
        payload += struct.pack(">I", len(body)) + body
    entries = [struct.pack(">IHII", 0, 2, len(folders), 1) + b"\0" * 8]
    children = [sorted(q for q in files if q.startswith(f + "/")) for f in folders]
    first = 1 + len(folders)
    for f, kids in zip(folders, children):
        entries.append(struct.pack(">IHII", name_at[f], 2, len(kids), first) + b"\0" * 8)
        first += len(kids)
    for kids in children:
        for q in kids:
            flags = 1 if q in compress else 0
            name = name_at[q.split("/")[1]]
            entries.append(struct.pack(">IHHHI", name, flags, 0, 0, data_at[q]) + b"\0" * 8)
    tree = b"".join(entries)
    header = 20
    offsets = (header, header + len(tree), header + len(tree) + len(payload))
    return b"qres" + struct.pack(">IIII", 2, *offsets) + tree + payload + names


def test_read_rcc_unpacks_plain_and_zlib_entries(brp):
    files = {"a/x.txt": b"hello", "a/y.bin": bytes(range(50)) * 3, "b/z.txt": b"zz"}
    assert brp.read_rcc(_rcc(files, compress={"a/y.bin"})) == files
    with pytest.raises(ValueError, match="not a Qt resource file"):
        brp.read_rcc(b"PK\x03\x04")


def test_gcompris_credits_reads_each_block(brp):
    readme = (
        "Copyright: Ann\nSource: https://x/a.jpg\nLicense: CC0-1.0\nFiles:\nchair.webp\n\n"
        "Copyright: Bob\nSource: https://x/b.jpg\nLicense: Public Domain\nFiles:\n"
        "cup.webp\nmug.webp\n"
    )
    assert brp.gcompris_credits(readme) == {
        "chair.webp": ("Ann", "CC0-1.0", "https://x/a.jpg"),
        "cup.webp": ("Bob", "Public Domain", "https://x/b.jpg"),
        "mug.webp": ("Bob", "Public Domain", "https://x/b.jpg"),
    }


def test_to_photo_composites_on_white_and_downsizes(brp):
    import io

    im = Image.new("RGBA", (600, 300), (255, 0, 0, 0))
    im.paste((0, 0, 255, 255), (0, 0, 300, 300))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    photo = brp.to_photo(buf.getvalue())
    assert photo.size == (256, 128) and photo.mode == "RGB"
    assert photo.getpixel((250, 64)) == (255, 255, 255) and photo.getpixel((10, 64)) == (0, 0, 255)


def test_real_photo_set_is_typed_attributed_and_small(bc):
    from image_search.catalog import real_photos
    from image_search.images import load_image

    paths, types = real_photos()
    assert 20 <= len(paths) <= 60 and len(set(paths)) == len(paths)
    assert set(types) <= {t for t, _ in bc.TYPE_RULES} and len(set(types)) >= 10
    with open(ROOT / "data" / "real_photos" / "real_photos.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    licences = ("CC0-1.0", "Public Domain", "CC-BY-SA-3.0")
    assert all(r["licence"] in licences and r["source_package"] for r in rows)
    assert not any("tuxpaint" in r["source_package"] for r in rows)
    attribution = (ROOT / "data" / "real_photos" / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for path in paths:
        assert max(load_image(path).size) <= 256 and f"| {path.name} |" in attribution
