"""Rebuild ``data/catalog/`` from the Debian package ``sweethome3d-furniture``.

Run it with ``make catalog`` (which installs the Debian package, OSMesa and the
rendering libraries first). The output is deterministic for a given package
version: every random choice is drawn from a generator seeded by the product id.

What it writes (see ``data/catalog/DATACARD.md`` for the column docs):

* ``products.csv``: one row per shop product (categories in ``SHOP_CATEGORIES``), with
  its ``type`` (``TYPE_RULES``).
* ``icons/<id>.png``: the catalogue icon (the first shop photo), composited on white.
* ``shop/<id>_<n>.jpg``: clean studio renders of the 3D model from the ``SHOP_ANGLES``
  (the other shop photos).
* ``views/<id>_<n>.jpg``: ``N_VIEWS`` rendered "customer photos" of the 3D model
  with a random viewpoint, elevation, lighting, scale, position and background.
* ``views_masks/<id>.png``: the object masks of a product's views, side by side (1 bit).
* ``boxes.csv``: the object's box in every view and shop photo.
* ``ATTRIBUTION.md``: creator and licence of every item (CC-BY-3.0 needs it).
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import io
import math
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SOURCE_DIR = Path("/usr/share/sweethome3d/furniture")
OUT_DIR = Path(__file__).resolve().parent / "catalog"
SHOP_CATEGORIES = (
    "Bathroom",
    "Bedroom",
    "Kitchen",
    "Lights",
    "Living room",
    "Miscellaneous",
    "Office",
)
LICENCES = {"BlendSwap-CC-0": "CC0-1.0"}  # every other .sh3f file is CC-BY-3.0
N_VIEWS = 4
SIZE = 128
# Shop photos: (azimuth, elevation) in degrees of each studio shot (front, three-quarter left and
# right, a higher three-quarter view), jittered a little per product; the object fills the frame
# but for SHOP_MARGIN of its size on each side; light plain backgrounds.
SHOP_ANGLES = ((0, 8), (-40, 15), (40, 15), (25, 45))
SHOP_FOV = 30
SHOP_MARGIN = 0.06
SHOP_SUPERSAMPLE = 3
SHOP_BACKGROUNDS = ((255, 255, 255), (244, 244, 244), (250, 247, 241))
SHOP_QUALITY = 88
TEST_FRACTION = 0.3
# Product types (the kind of object; the catalogue's category is the room). Ordered: the first rule
# whose regular expression is found in the lower-cased name wins (then the same over the tags), so
# specific names come before the broad rules that would also match them ("desk lamp" is a lamp,
# "bedside table" a cabinet, "table tennis bat" sports equipment). Every product's type was checked
# by hand against its name, tags and icon; TYPE_OVERRIDES fixes the few that a name gets wrong.
TYPE_RULES = (
    # specific names first
    ("lamp", r"lamp|light|lantern|chandelier|fluorescent"),
    (
        "bathroom accessory",
        r"toilet (brush|paper)|(?<!paper )towel(?! rack)|soap|sponge|comb|brush|cosmetic"
        r"|lip ?stick|medicine box",
    ),
    ("rack or hanger", r"hanger|towel rack|clothes (horse|rack)"),
    ("container", r"clothes basket|cardboard box"),
    ("curtain", r"curtain|blind"),
    ("sink", r"sink|washbasin|vanity|lavatory"),
    (
        "cabinet",
        r"cabinet|drawer|dresser|bedside|nightstand|tv stand|island$|locker|chest$|changing table",
    ),
    (
        "safety equipment",
        r"extinguisher|emergency|\bcone\b|smoke detector|cctv|surveillance|intercom|number lock"
        r"|\bsafe\b",
    ),
    (
        "toy or game",
        r"toy|teddy|doll|rocking horse|car model|biplane|xylophone|rubik|puzzle|chessboard"
        r"|card game|dart|pool table|football table|table tennis$|flipper",
    ),
    ("sports equipment", r"ball\b|racket|bat$|fitness|treadmill|bike|abdominal|punching"),
    (
        "food",
        r"cup cake|bread$|butter|hamburger|hot dog|cake|apples|steak|chicken|fries"
        r"|with (fruits|salad)",
    ),
    (
        "small appliance",
        r"small oven|\bfan\b|toaster|blender|mixer|coffee (maker|machine|brewer)|sandwich"
        r"|fryer|scale|grill|microwave",
    ),
    (
        "electronics",
        r"\btv\b|television|projector|dvd|laptop|imac|ibook|tablet|printer|phone|speaker|stereo"
        r"|radio|mp3|amplifier|camera|playstation|joystick|thermometer|remote control",
    ),
    ("musical instrument", r"guitar|piano(?! bench)|keyboard"),
    # furniture
    ("armchair", r"armchair|fotel"),
    ("sofa", r"sofa|couch"),
    ("stool", r"stool|\bbench"),
    ("chair", r"chair|seat|puff"),
    ("desk", r"desk|technical table"),
    ("table", r"table|workbench|island extension"),
    ("bed", r"\bbed\b|bunk|crib|futon|mattress|sleeping bag"),
    ("wardrobe", r"wardrobe|closet|cupboard"),
    ("shelves", r"shel|bookcase"),
    # bathroom and the house
    ("toilet", r"toilets? unit|urinal|bidet|potty"),
    ("bathtub or shower", r"^bath$|bathtub|island bath|shower"),
    ("rug", r"rug|carpet|mat$|tatami"),
    (
        "plant",
        r"plant|flower|tulip|lily|orchid|cactus|bamboo|ficus|yucca|bonsai|christmas tree"
        r"|spathiphyllum",
    ),
    ("heater", r"radiator|furnace|heater|fireplace|wood logs"),
    ("building element", r"railing|fence|chimney"),
    (
        "large appliance",
        r"fridge|refrigerator|freezer|washing machine|dryer|air conditioning|water cooler",
    ),
    ("cooker", r"oven|stove|cooktop|cooker|\bhob\b|hood"),
    ("socket", r"plug|socket"),
    ("switch", r"switch|dimmer"),
    # kitchen and table
    ("bottle", r"bottle|flacon|milk"),
    (
        "kitchenware",
        r"pan\b|knife stand|kitchen knife|chopping|utensil|tools?$|spice|paper towel|oil servers"
        r"|bread box|coffee press|kettle|boiler|squeezer",
    ),
    (
        "tableware",
        r"plate|bowl|(?<!letter )tray$|fork|spoon|knife|cutlery|creamer|sugar|salt|teapot"
        r"|jar$|pottery|ashtray|hashtray",
    ),
    ("cup or glass", r"\bcup\b|mug|glass$"),
    # personal things
    ("shoes", r"shoe|bootie|slipper|mocassin|sneaker"),
    (
        "clothing",
        r"skirt|trousers|dress$|jacket|suit$|short$|\bcap\b|hat$|sock|glove|clothes|helmet",
    ),
    ("accessory", r"bag$|backpack|suitcase|briefcase|glasses|watch|ring$|keys|umbrella|bill\b"),
    (
        "tool",
        r"hammer|saw$|drill|screwdriver|pliers|grinder|shovel|tape measure|mower|ladder|broom",
    ),
    (
        "stationery",
        r"pencil|\bpen|marker|ruler|stapler|scissors|calendar|letter tray|tape$|book$|newspaper"
        r"|white ?board",
    ),
    ("decoration", r"vase|frame|clock|candle|deer|aquarium|gift|screen"),
    ("container", r"box|crate|barrel|trunc?k|container|pallet|\bbin\b|dustbin|trash|basket|basin"),
)
TYPE_OVERRIDES = {
    "scopia-chaussette": "clothing",  # "Socket": a sock (French "chaussette")
    "scopia-office-box": "cabinet",  # "Box": a unit of lockable compartments
    "scopia-office-furniture1": "cabinet",  # "Bookcase": a closed low office cabinet
    "scopia-cooker": "small appliance",  # "Cooker": a countertop rice cooker
    "scopia-contemp-living-room": "cabinet",  # a living-room wall unit around a TV
    "scopia-wooden-office-alder-table": "desk",  # the Office "Wooden ... table"s are L-shaped desks
    "scopia-wooden-office-pear-table": "desk",
    "scopia-wooden-office-pear-table-rect": "desk",
    "scopia-wooden-office-teak-table": "desk",
}
BRANDS = (
    "Nordhem",
    "Casaluce",
    "Oakline",
    "Brightwood",
    "Maison Vert",
    "Kobo",
    "Ferro&Co",
    "Lumio",
)
PRICE_MEDIAN = {
    "Bathroom": 180,
    "Bedroom": 320,
    "Kitchen": 150,
    "Lights": 60,
    "Living room": 260,
    "Miscellaneous": 40,
    "Office": 140,
}
# Named colours for the dominant-colour attribute: (name, hue range in degrees) for saturated
# pixels; unsaturated pixels are black, grey or white by value.
HUES = (
    ("red", 0, 15),
    ("orange", 15, 40),
    ("yellow", 40, 70),
    ("green", 70, 170),
    ("blue", 170, 260),
    ("purple", 260, 300),
    ("pink", 300, 345),
    ("red", 345, 360),
)


# --------------------------------------------------------------------------- parsing
def parse_properties(text: str) -> dict[str, str]:
    """Parse a Java ``.properties`` file (continuations, ``\\uXXXX`` escapes, ``=``/``:``)."""
    logical, buf = [], ""
    for raw in text.splitlines():
        line = raw.lstrip() if not buf else raw.lstrip()
        if not buf and (not line or line[0] in "#!"):
            continue
        backslashes = len(line) - len(line.rstrip("\\"))
        if backslashes % 2 == 1:
            buf += line[:-1]
            continue
        logical.append(buf + line)
        buf = ""
    if buf:
        logical.append(buf)
    out = {}
    for line in logical:
        m = re.match(r"((?:\\.|[^=:\s\\])*)\s*[=:\s]\s*(.*)$", line)
        if m:
            out[_unescape(m.group(1))] = _unescape(m.group(2))
    return out


def _unescape(s: str) -> str:
    s = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), s)
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), s)


@dataclass(frozen=True)
class Item:
    """One furniture item as the catalogue describes it."""

    id: str
    name: str
    category: str
    tags: str
    width: float
    depth: float
    height: float
    creator: str
    licence: str
    source: str
    icon: str
    model: str
    rotation: tuple[float, ...] | None


def read_items(sh3f: Path) -> list[Item]:
    """All items of one ``.sh3f`` archive."""
    with zipfile.ZipFile(sh3f) as z:
        props = parse_properties(z.read("PluginFurnitureCatalog.properties").decode("latin-1"))
    items = []
    n = 1
    while f"id#{n}" in props:
        p = {k[: -len(f"#{n}")]: v for k, v in props.items() if k.endswith(f"#{n}")}
        rot = tuple(float(x) for x in p["modelRotation"].split()) if "modelRotation" in p else None
        raw_id = p["id"]
        items.append(
            Item(
                id=re.sub(r"[^a-z0-9]+", "-", raw_id.lower()).strip("-"),
                name=p.get("name")
                or raw_id.split("#")[-1].replace("_", " ").replace("-", " ").capitalize(),
                category=p["category"],
                tags=";".join(
                    t.strip()
                    for t in p.get("tags", "").split(",")
                    if t.strip() and t.strip() != "Blend Swap"
                ),
                width=float(p["width"]),
                depth=float(p["depth"]),
                height=float(p["height"]),
                creator=p.get("creator", "").strip(),
                licence=LICENCES.get(sh3f.stem, "CC-BY-3.0"),
                source=sh3f.name,
                icon=p["icon"].lstrip("/"),
                model=p["model"].lstrip("/"),
                rotation=rot,
            )
        )
        n += 1
    return items


# --------------------------------------------------------------------------- attributes
def dominant_colour(icon: Image.Image) -> tuple[str, str]:
    """Name and hex of the most common colour of the product's pixels (alpha > 0, not white)."""
    rgba = np.asarray(icon.convert("RGBA"), dtype=np.float32) / 255
    px = rgba[..., :3][rgba[..., 3] > 0.5]
    px = px[px.min(axis=1) < 0.97] if len(px) else px
    if len(px) == 0:
        return "white", "#ffffff"
    names = np.array([_colour_name(*p) for p in px])
    top = Counter(names).most_common(1)[0][0]
    mean = px[names == top].mean(axis=0)
    return top, "#" + "".join(f"{int(round(c * 255)):02x}" for c in mean)


def _colour_name(r: float, g: float, b: float) -> str:
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    if v < 0.2:
        return "black"
    if s < 0.18:
        return "white" if v > 0.85 else "grey"
    deg = h * 360
    name = next(n for n, lo, hi in HUES if lo <= deg < hi)
    if name in ("orange", "red") and v < 0.6:
        return "brown"
    if name == "yellow" and s < 0.45:
        return "beige"
    return name


def product_type(product_id: str, name: str, tags: str) -> str:
    """The kind of product: ``TYPE_OVERRIDES`` first, then the first of the ordered ``TYPE_RULES``
    whose pattern is found in the lower-cased name, then the first that matches one of the tags
    (``;``-separated). A product that matches nothing is an error: add a rule or an override."""
    if product_id in TYPE_OVERRIDES:
        return TYPE_OVERRIDES[product_id]
    for text in (name.lower(), *(t for t in tags.lower().split(";") if t)):
        for type_, pattern in TYPE_RULES:
            if re.search(pattern, text):
                return type_
    raise ValueError(
        f"no product type for {product_id!r} ({name!r}, tags {tags!r}): add a rule or an override"
    )


def business_fields(item: Item) -> dict[str, object]:
    """Synthetic price, stock and brand, drawn from a generator seeded by the product id."""
    rng = _rng(item.id, "business")
    price = PRICE_MEDIAN[item.category] * math.exp(rng.normal(0, 0.5))
    return {
        "price": round(price, 2),
        "in_stock": bool(rng.random() < 0.85),
        "brand": BRANDS[int(rng.integers(len(BRANDS)))],
    }


def _rng(product_id: str, purpose: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{product_id}/{purpose}".encode()))


def assign_splits(items: list[Item]) -> dict[str, str]:
    """Train/test split by product, stratified by category, seeded (no product in both)."""
    split = {}
    for cat in SHOP_CATEGORIES:
        ids = sorted(i.id for i in items if i.category == cat)
        rng = np.random.default_rng(zlib.crc32(cat.encode()))
        test = set(rng.permutation(ids)[: round(len(ids) * TEST_FRACTION)])
        split.update({i: "test" if i in test else "train" for i in ids})
    return split


# --------------------------------------------------------------------------- rendering
def load_model(model_dir: Path, obj_name: str, item: Item):
    """Load the OBJ as a trimesh scene: upright (catalogue rotation), sized, centred, unit
    height."""
    import trimesh

    scene = trimesh.load(model_dir / obj_name, force="scene", process=False)
    meshes = []
    for geom_name, mesh in scene.geometry.items():
        for node in scene.graph.geometry_nodes.get(geom_name, []):
            m = mesh.copy()
            m.apply_transform(scene.graph.get(node)[0])
            meshes.append(_fix_visual(m))
    if item.rotation is not None:
        rot = np.eye(4)
        rot[:3, :3] = np.array(item.rotation).reshape(3, 3)
        for m in meshes:
            m.apply_transform(rot)
    lo = np.min([m.bounds[0] for m in meshes], axis=0)
    hi = np.max([m.bounds[1] for m in meshes], axis=0)
    extent = np.maximum(hi - lo, 1e-6)
    target = np.array(
        [item.width, item.height, item.depth]
    )  # Sweet Home 3D: x width, y height, z depth
    scale = target / extent / target.max()
    tf = np.diag([*scale, 1.0])
    tf[:3, 3] = -(lo + hi) / 2 * scale
    for m in meshes:
        m.apply_transform(tf)
    return meshes


def _fix_visual(mesh):
    """Keep MTL colours; a texture without UVs falls back to the material's diffuse colour."""
    import trimesh

    vis = mesh.visual
    if vis.kind == "texture" or isinstance(vis, trimesh.visual.TextureVisuals):
        mat = vis.material
        has_uv = vis.uv is not None and len(vis.uv) == len(mesh.vertices)
        image = getattr(mat, "image", None) or getattr(mat, "baseColorTexture", None)
        if not has_uv or image is None:
            colour = getattr(mat, "diffuse", None)
            if colour is None:
                colour = getattr(mat, "main_color", np.array([200, 200, 200, 255]))
            mesh.visual = trimesh.visual.ColorVisuals(
                mesh, face_colors=np.tile(np.asarray(colour, np.uint8), (len(mesh.faces), 1))
            )
    return mesh


def _pyrender():
    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")  # CPU rendering without a display
    import pyrender

    return pyrender


def _scene_mesh(meshes):
    """One pyrender mesh with every part as a primitive, opaque parts first, in a fixed order.

    pyrender keeps separate meshes in a set and draws them in its iteration order (memory
    addresses), which made transparent and coplanar parts render differently from run to run."""
    pyrender = _pyrender()
    parts = [pyrender.Mesh.from_trimesh(m, smooth=False) for m in meshes]
    parts.sort(key=lambda p: p.is_transparent)  # stable: opaque parts first, then transparent ones
    return pyrender.Mesh(primitives=[prim for p in parts for prim in p.primitives])


def _render(
    renderer, mesh, camera_pose, lights, ambient: float, bg=(0, 0, 0)
) -> tuple[np.ndarray, np.ndarray]:
    """RGB and object coverage (bool) of one render; lights are ``(direction, colour, intensity)``.

    OSMesa has no framebuffer objects, so no alpha channel: the depth buffer is the mask."""
    pyrender = _pyrender()
    scene = pyrender.Scene(bg_color=[*(c / 255 for c in bg), 0], ambient_light=[ambient] * 3)
    scene.add(mesh)
    scene.add(pyrender.PerspectiveCamera(yfov=math.radians(camera_pose[1])), pose=camera_pose[0])
    for direction, colour, intensity in lights:
        scene.add(
            pyrender.DirectionalLight(color=colour, intensity=intensity),
            pose=_look_at(direction, np.zeros(3)),
        )
    rgb, depth = renderer.render(scene)
    return rgb, depth > 0


def render_views(
    meshes, item: Item, n_views: int = N_VIEWS, size: int = SIZE
) -> list[tuple[Image.Image, np.ndarray]]:
    """``n_views`` customer-style photos, each with the object's mask: random view, light, scale,
    position and background."""
    pyrender = _pyrender()
    mesh = _scene_mesh(meshes)
    rng = _rng(item.id, "views")
    out = []
    renderer = pyrender.OffscreenRenderer(size * 2, size * 2)  # 2x supersampling
    try:
        for _ in range(n_views):
            azimuth = math.radians(rng.uniform(-75, 75) + (180 if rng.random() < 0.1 else 0))
            elevation = math.radians(rng.uniform(0, 40))
            distance = rng.uniform(1.5, 2.6)
            target = np.array([rng.uniform(-0.15, 0.15), rng.uniform(-0.1, 0.1), 0.0])
            eye = target + distance * _direction(azimuth, elevation)
            light_dir = np.array(
                [rng.uniform(-1, 1), rng.uniform(0.3, 1.5), rng.uniform(-0.2, 1.2)]
            )
            light = (light_dir, _warmth(rng), rng.uniform(2.0, 5.0))
            rgb, covered = _render(renderer, mesh, (_look_at(eye, target), 40), [light], 0.25)
            alpha = np.where(covered, 255, 0).astype(np.uint8)
            fg = Image.fromarray(np.dstack([rgb, alpha])).resize((size, size), Image.LANCZOS)
            bg = background(rng, size)
            bg.alpha_composite(fg)
            out.append((bg.convert("RGB"), downsample_mask(covered, 2)))
    finally:
        renderer.delete()
    return out


def render_shop_photos(
    meshes, item: Item, size: int = SIZE
) -> list[tuple[Image.Image, np.ndarray]]:
    """Clean studio photos from the ``SHOP_ANGLES``, each with the object's mask: a light plain
    background, soft key and fill light, the object filling the frame with a ``SHOP_MARGIN``."""
    pyrender = _pyrender()
    mesh = _scene_mesh(meshes)
    rng = _rng(item.id, "shop")
    radius = float(max(np.linalg.norm(m.vertices, axis=1).max() for m in meshes))
    distance = radius / math.sin(math.radians(SHOP_FOV / 2)) * 1.02  # the whole model is in view
    ss = SHOP_SUPERSAMPLE
    out = []
    renderer = pyrender.OffscreenRenderer(size * ss, size * ss)
    try:
        for azimuth, elevation in SHOP_ANGLES:
            az = math.radians(azimuth + rng.uniform(-5, 5))
            el = math.radians(elevation + rng.uniform(-3, 3))
            bg = SHOP_BACKGROUNDS[int(rng.integers(len(SHOP_BACKGROUNDS)))]
            key = (np.array([-0.6, 1.0, 0.9]), np.ones(3), rng.uniform(2.0, 2.6))
            fill = (np.array([0.8, 0.4, 0.7]), np.ones(3), rng.uniform(0.8, 1.2))
            rim = (np.array([0.0, 0.6, -1.0]), np.ones(3), 0.6)
            pose = _look_at(distance * _direction(az, el), np.zeros(3))
            rgb, covered = _render(renderer, mesh, (pose, SHOP_FOV), [key, fill, rim], 0.3, bg)
            left, top, right, bottom = square_crop(box_from_mask(covered), SHOP_MARGIN)
            pad = max(0, -left, -top, right - covered.shape[1], bottom - covered.shape[0])
            canvas = Image.new("RGB", (rgb.shape[1] + 2 * pad, rgb.shape[0] + 2 * pad), bg)
            canvas.paste(Image.fromarray(rgb), (pad, pad))
            crop = (left + pad, top + pad, right + pad, bottom + pad)
            photo = canvas.crop(crop).resize((size, size), Image.LANCZOS)
            mask_img = Image.new("L", canvas.size, 0)
            mask_img.paste(Image.fromarray(covered.astype(np.uint8) * 255), (pad, pad))
            mask = np.asarray(mask_img.crop(crop).resize((size, size), Image.BOX)) >= 128
            out.append((photo, mask))
    finally:
        renderer.delete()
    return out


def _direction(azimuth: float, elevation: float) -> np.ndarray:
    """Unit vector from the origin towards a camera at ``azimuth`` (0 = the front, +z) and
    ``elevation`` (radians)."""
    return np.array(
        [
            math.sin(azimuth) * math.cos(elevation),
            math.sin(elevation),
            math.cos(azimuth) * math.cos(elevation),
        ]
    )


# --------------------------------------------------------------------------- masks and boxes
def downsample_mask(covered: np.ndarray, factor: int) -> np.ndarray:
    """Shrink a supersampled coverage mask: a pixel is object when at least half its
    ``factor`` x ``factor`` block is."""
    h, w = covered.shape
    blocks = covered.reshape(h // factor, factor, w // factor, factor)
    return blocks.mean(axis=(1, 3)) >= 0.5


def box_from_mask(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` in pixels of the mask's true pixels (right/bottom
    exclusive)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        raise ValueError("empty mask: the object is not in the picture")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def square_crop(box: tuple[int, int, int, int], margin: float) -> tuple[int, int, int, int]:
    """A square around ``box``, centred on it, its side the box's longer side plus ``margin`` of it
    on each side. It may extend past the image (the caller pads)."""
    left, top, right, bottom = box
    side = max(right - left, bottom - top)
    side = max(1, int(round(side * (1 + 2 * margin))))
    cx, cy = (left + right) / 2, (top + bottom) / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    return x0, y0, x0 + side, y0 + side


def _warmth(rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform(-1, 1)  # -1 cool daylight .. +1 warm tungsten
    return np.clip(np.array([1.0 + 0.15 * t, 1.0, 1.0 - 0.25 * t]), 0, 1)


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    forward = eye - target
    forward /= np.linalg.norm(forward)
    right = np.cross([0.0, 1.0, 0.0], forward)
    if np.linalg.norm(right) < 1e-6:
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, up, forward, eye
    return pose


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A room-like colour: a random colour pulled halfway towards a random grey."""
    return 0.5 * rng.uniform(30, 245, 3) + 0.5 * rng.uniform(60, 230)


def background(rng: np.random.Generator, size: int) -> Image.Image:
    """A plain, gradient, noise or cluttered background, like a room behind a shopper's photo."""
    kind = rng.choice(["plain", "gradient", "noise", "clutter"])
    base = _muted(rng)
    if kind == "plain":
        arr = np.broadcast_to(base, (size, size, 3))
    elif kind == "gradient":
        other = _muted(rng)
        t = np.linspace(0, 1, size)[:, None, None]
        arr = np.broadcast_to(base * (1 - t) + other * t, (size, size, 3))
    elif kind == "noise":
        arr = base + rng.normal(0, 25, (size, size, 1)) + rng.normal(0, 8, (size, size, 3))
    else:
        img = Image.new("RGB", (size, size), tuple(int(c) for c in base))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(4, 10))):
            x0, y0 = rng.uniform(-size / 4, size, 2)
            w, h = rng.uniform(size / 8, size / 2, 2)
            fill = tuple(int(c) for c in _muted(rng))
            (draw.rectangle if rng.random() < 0.6 else draw.ellipse)(
                [x0, y0, x0 + w, y0 + h], fill=fill
            )
        arr = np.asarray(img.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float64)
    return Image.fromarray(np.ascontiguousarray(np.clip(arr, 0, 255).astype(np.uint8))).convert(
        "RGBA"
    )


# --------------------------------------------------------------------------- main
def build(out_dir: Path = OUT_DIR, limit: int | None = None) -> None:
    """Rebuild the catalog into ``out_dir`` (atomically replaced at the end)."""
    from tqdm import tqdm

    archives = sorted(SOURCE_DIR.glob("*.sh3f"))
    if not archives:
        raise SystemExit(f"no .sh3f files in {SOURCE_DIR}: apt-get install sweethome3d-furniture")
    items = sorted(
        (i for a in archives for i in read_items(a) if i.category in SHOP_CATEGORIES),
        key=lambda i: i.id,
    )
    ids = [i.id for i in items]
    assert len(set(ids)) == len(ids), "product ids must be unique"
    splits = assign_splits(items)  # of every product, so that --limit keeps each product's split
    items = items[:limit] if limit else items
    tmp_out = Path(tempfile.mkdtemp(prefix="catalog-", dir=out_dir.parent))
    for sub in ("icons", "views", "views_masks", "shop"):
        (tmp_out / sub).mkdir()
    rows, boxes = [], []
    zips = {a.name: zipfile.ZipFile(a) for a in archives}
    for item in tqdm(items, desc="rendering", unit="product"):
        z = zips[item.source]
        icon = Image.open(io.BytesIO(z.read(item.icon))).convert("RGBA")
        colour, colour_hex = dominant_colour(icon)
        shop = Image.new("RGBA", icon.size, (255, 255, 255, 255))
        shop.alpha_composite(icon)
        shop.convert("RGB").resize((SIZE, SIZE), Image.LANCZOS).save(
            tmp_out / "icons" / f"{item.id}.png", optimize=True
        )
        with tempfile.TemporaryDirectory() as model_tmp:
            prefix = item.model.rsplit("/", 1)[0] + "/"
            for name in z.namelist():
                if name.startswith(prefix) and not name.endswith("/"):
                    dest = Path(model_tmp) / name[len(prefix) :]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(z.read(name))
            meshes = load_model(Path(model_tmp), item.model[len(prefix) :], item)
        views = render_views(meshes, item)
        for v, (img, mask) in enumerate(views):
            img.save(tmp_out / "views" / f"{item.id}_{v}.jpg", quality=90, optimize=True)
            boxes.append((f"views/{item.id}_{v}.jpg", *box_from_mask(mask)))
        # one tiny 1-bit PNG per product, its views' masks side by side (2,472 files would take
        # 4 KiB of disk each for about 250 bytes of data)
        Image.fromarray(np.hstack([mask for _, mask in views])).save(
            tmp_out / "views_masks" / f"{item.id}.png", optimize=True
        )
        for v, (img, mask) in enumerate(render_shop_photos(meshes, item)):
            img.save(tmp_out / "shop" / f"{item.id}_{v}.jpg", quality=SHOP_QUALITY, optimize=True)
            boxes.append((f"shop/{item.id}_{v}.jpg", *box_from_mask(mask)))
        rows.append(
            {
                "id": item.id,
                "name": item.name,
                "category": item.category,
                "type": product_type(item.id, item.name, item.tags),
                "tags": item.tags,
                "width_cm": item.width,
                "depth_cm": item.depth,
                "height_cm": item.height,
                "colour": colour,
                "colour_hex": colour_hex,
                "split": splits[item.id],
                **business_fields(item),
                "creator": item.creator,
                "licence": item.licence,
                "source": item.source,
            }
        )
    with open(tmp_out / "products.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(tmp_out / "boxes.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(("file", "left", "top", "right", "bottom"))
        writer.writerows(boxes)
    write_attribution(tmp_out / "ATTRIBUTION.md", rows)
    if (out_dir / "DATACARD.md").exists():
        shutil.copy(out_dir / "DATACARD.md", tmp_out / "DATACARD.md")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp_out.rename(out_dir)
    print(f"wrote {len(rows)} products to {out_dir}")


def write_attribution(path: Path, rows: list[dict]) -> None:
    """Per-item credit, as CC-BY-3.0 requires."""
    lines = [
        "# Attribution",
        "",
        "Products, icons and 3D models come from the Debian package `sweethome3d-furniture` 1.8-1",
        "(Sweet Home 3D furniture libraries, eTeks and contributors). The icons are copied; the",
        "`views/` and `shop/` photos (and the `views_masks/`) are renderings of the 3D models made",
        "by `data/build_catalog.py`.",
        "Items marked CC-BY-3.0 are licensed under the Creative Commons Attribution 3.0 Unported",
        "licence (https://creativecommons.org/licenses/by/3.0/); items marked CC0-1.0 are in the",
        "public domain. Changes: icons composited on white and resized; models re-rendered.",
        "",
        "| id | name | creator | licence |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['id']} | {r['name']} | {r['creator'] or 'unknown'} | {r['licence']} |" for r in rows
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument(
        "--limit", type=int, default=None, help="only the first N products (for a quick look)"
    )
    args = parser.parse_args()
    build(args.out, args.limit)
